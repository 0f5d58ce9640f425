//! `kind = "proxy"`: an RFC 3820 proxy with VOMS attributes, made by `voms-proxy-init`
//! (Debian `voms-clients`) from the robot certificate and key, written to
//! `<dir>/<name>.proxy` (mode 0600; replaced atomically, so a probe never reads half a file).

use std::path::Path;
use std::process::Stdio;
use std::time::SystemTime;

use gridprobe_config::credential::ProxySpec;

use super::{one_line, Material, Obtained};

pub(super) async fn obtain(
    name: &str,
    spec: &ProxySpec,
    dir: Option<&Path>,
) -> Result<Obtained, String> {
    let dir = dir.ok_or("a proxy needs a state directory to be written to")?;
    super::private_dir(dir)?;
    let tmp = dir.join(format!(".{name}.proxy.new"));
    let _ = std::fs::remove_file(&tmp);
    let valid = spec.valid.as_secs();
    let hours = valid / 3600;
    let minutes = (valid % 3600).div_ceil(60);
    let mut cmd = tokio::process::Command::new(&spec.command);
    cmd.arg("-cert")
        .arg(&spec.cert)
        .arg("-key")
        .arg(&spec.key)
        .arg("-out")
        .arg(&tmp)
        .arg("-valid")
        .arg(format!("{hours}:{minutes:02}"))
        .arg("-rfc")
        .arg("-quiet")
        .arg("-timeout")
        .arg("30");
    for voms in &spec.voms {
        cmd.arg("-voms").arg(voms);
    }
    if let Some(v) = &spec.vomses {
        cmd.arg("-vomses").arg(v);
    }
    // voms-proxy-init takes the directory of .lsc files from the environment only.
    if let Some(v) = &spec.vomsdir {
        cmd.env("X509_VOMS_DIR", v);
    }
    if let Some(v) = &spec.certdir {
        cmd.arg("-certdir").arg(v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .kill_on_drop(true);
    // Registered while waited for: the orphan reaper must leave its status alone.
    let spawned = crate::reaper::spawn_owned(|| cmd.spawn(), tokio::process::Child::id);
    let out = match spawned {
        Ok((child, owned)) => {
            let out = child.wait_with_output().await;
            drop(owned);
            out
        }
        Err(e) => Err(e),
    }
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "cannot run {}: not found (install voms-clients, or set command)",
                spec.command
            )
        } else {
            format!("cannot run {}: {e}", spec.command)
        }
    })?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        let mut said = String::from_utf8_lossy(&out.stderr).into_owned();
        if said.trim().is_empty() {
            said = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        return Err(format!(
            "{} failed ({}): {}",
            spec.command,
            out.status,
            one_line(&said)
        ));
    }
    let pem = std::fs::read(&tmp).map_err(|e| format!("{} wrote no proxy: {e}", spec.command))?;
    let until = super::file::pem_not_after(&pem)?;
    if until <= SystemTime::now() {
        let _ = std::fs::remove_file(&tmp);
        return Err("the new proxy has already expired (is the robot certificate expired?)".into());
    }
    let file = dir.join(format!("{name}.proxy"));
    std::fs::rename(&tmp, &file).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(Obtained {
        material: Material::Proxy { file },
        valid_until: Some(until),
    })
}
