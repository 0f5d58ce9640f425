//! The server's rustls settings: its certificate and key, and the client certificate
//! verifier over the CA directory (client certificates optional).

use std::sync::Arc;

use gridprobe_config::dn::ServerTls;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::verifier::GridClientVerifier;

/// rustls settings for `[server] tls_cert`/`tls_key`/`client_ca_dir` (files read now).
pub fn server_config(tls: &ServerTls) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = gridprobe_config::pem::read_certs(&tls.cert)?;
    let key = gridprobe_config::pem::read_key(&tls.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?;
    let builder = match &tls.client_ca_dir {
        None => builder.with_no_client_auth(),
        Some(dir) => {
            let mut roots = RootCertStore::empty();
            let mut rejected = 0usize;
            for ca in gridprobe_config::pem::read_ca_dir(dir)? {
                if roots.add(ca).is_err() {
                    rejected += 1;
                }
            }
            if rejected > 0 {
                tracing::warn!(rejected, dir = %dir.display(), "CA certificates that could not be used were skipped");
            }
            if roots.is_empty() {
                return Err(format!("no usable CA certificate in `{}`", dir.display()));
            }
            let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(Arc::new(GridClientVerifier::new(webpki)))
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("`{}` and `{}`: {e}", tls.cert.display(), tls.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
