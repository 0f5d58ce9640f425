//! `kind = "file"`: a proxy or token file kept fresh by something else. Its expiry is read
//! from the first certificate's notAfter (a PEM proxy) or the token's JWT `exp` claim (not
//! verified: gridprobe only needs to know when it stops working).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

use super::{Material, Obtained, Secret};

/// Largest credential file read: proxies and tokens are a few KiB.
const MAX_FILE: u64 = 1 << 20;

pub(super) async fn read(path: &Path) -> Result<Obtained, String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || read_sync(&path))
        .await
        .map_err(|e| format!("reading the credential file: {e}"))?
}

fn read_sync(path: &Path) -> Result<Obtained, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{} does not exist", path.display()),
        _ => format!("cannot read {}: {e}", path.display()),
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN CERTIFICATE-----") {
        let until = pem_not_after(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(Obtained {
            material: Material::Proxy {
                file: path.to_path_buf(),
            },
            valid_until: Some(until),
        });
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if token.contains(char::is_whitespace) {
        return Err(format!(
            "{} holds neither a PEM proxy nor one token on one line",
            path.display()
        ));
    }
    Ok(Obtained {
        valid_until: jwt_expiry(token),
        material: Material::Bearer {
            token: Secret(token.to_string()),
            file: Some(path.to_path_buf()),
        },
    })
}

/// The notAfter of the first certificate of a PEM file (a proxy's own certificate comes
/// first, and expires no later than those that signed it).
pub(crate) fn pem_not_after(pem: &[u8]) -> Result<SystemTime, String> {
    for item in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let item = item.map_err(|e| format!("not a PEM file: {e}"))?;
        if item.label != "CERTIFICATE" {
            continue;
        }
        let cert = item
            .parse_x509()
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        let secs = cert.validity().not_after.timestamp();
        let secs =
            u64::try_from(secs).map_err(|_| "certificate expired before 1970".to_string())?;
        return UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .ok_or_else(|| "certificate expiry out of range".to_string());
    }
    Err("no certificate in the file".into())
}

/// The `exp` claim of a JWT (seconds since the epoch), without verifying the token; `None`
/// for a token that is not a JWT or has no `exp`.
pub(crate) fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}
