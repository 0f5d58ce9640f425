//! Reading the server's certificate, its key and a CA directory (`[server] tls_cert`,
//! `tls_key`, `client_ca_dir`): used when the configuration is checked (errors name the file)
//! and again when `serve` builds its TLS settings.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Most files read from a CA directory.
pub const MAX_CA_FILES: usize = 10_000;
/// Largest PEM file read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("`{}` is not a regular file", path.display()));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!(
            "`{}` is larger than {MAX_PEM_BYTES} bytes",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// The certificates of a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_bounded(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no certificate", path.display()));
    }
    Ok(certs)
}

/// A private key from a PEM file that only its owner may read (a key readable by the group or
/// by others is refused, as grid middleware does).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "the private key `{}` is readable by others (mode {mode:03o})",
            path.display()
        ));
    }
    let bytes = read_bounded(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("`{}` holds no PEM private key: {e}", path.display()))
}

/// Every CA certificate of a directory: hashed names (`*.0`, `*.1`, ...) as in
/// /etc/grid-security/certificates, or `*.pem`/`*.crt` files; CRLs (`*.r0`), signing policies
/// and the like are skipped. At least one is needed.
pub fn read_ca_dir(dir: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the directory `{}`: {e}", dir.display()))?;
    let mut out = Vec::new();
    let mut names: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    names.sort();
    for path in names.into_iter().take(MAX_CA_FILES) {
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        let wanted = ext == "pem" || ext == "crt" || ext.bytes().all(|b| b.is_ascii_digit());
        if !wanted || !path.is_file() {
            continue;
        }
        if let Ok(certs) = read_certs(&path) {
            out.extend(certs);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "the directory `{}` holds no CA certificate (`*.0` hashed names, `*.pem` or `*.crt`)",
            dir.display()
        ));
    }
    Ok(out)
}
