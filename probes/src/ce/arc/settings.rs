//! The `arc` backend's parameters: the endpoint (https only), trust anchors and the
//! credential, checked when the probe is built; the backend of one instance.

use std::time::{SystemTime, UNIX_EPOCH};

use gridprobe_config::{Config, Diagnostic, ProbeDef};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::super::{CeParams, CeSettings};
use super::{ArcCe, Rest};
use crate::net::tls::{fmt_unix, CertInfo, TlsParams, TlsSettings};
use crate::{placeholders, ProbeContext};

/// The endpoint used when neither `arc_url` nor the service's `endpoint` is set: A-REX's
/// default web service URL.
pub(crate) const DEFAULT_URL: &str = "https://{hostname}:443/arex";

/// Whether an endpoint template is visibly not https: it starts with a scheme that is not.
fn not_https(template: &str) -> bool {
    !template.starts_with('{') && !template.to_ascii_lowercase().starts_with("https://")
}

/// Checks the arc-only params of `def` (positions at their keys, or at the service whose
/// endpoint is not https); the TLS settings when they are sound.
pub(crate) fn check_params(
    def: &ProbeDef,
    config: &Config,
    p: &CeParams,
    errors: &mut Vec<Diagnostic>,
) -> Option<TlsSettings> {
    let err = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
    if let Some(url) = &p.arc_url {
        if not_https(url) {
            errors.push(
                err(
                    "arc_url",
                    format!("`arc_url` `{url}` is not https: A-REX's REST interface is reached over HTTPS only"),
                )
                .with_help("write it as https://HOST:PORT/arex"),
            );
        }
    }
    // Without `arc_url` (or with one that is the service's endpoint), each service's own
    // endpoint is the ARC endpoint: it must be https too.
    let uses_endpoint = p
        .arc_url
        .as_deref()
        .is_none_or(|u| u.trim().starts_with("{endpoint}"));
    if uses_endpoint {
        for site in &config.sites {
            for svc in &site.services {
                if !def.flavours.iter().any(|f| f == &svc.flavour) {
                    continue;
                }
                if let Some(url) = svc.endpoint.as_ref().filter(|u| u.scheme() != "https") {
                    errors.push(
                        config
                            .sources
                            .error(
                                &svc.span,
                                format!(
                                    "service {} ({}) at site {}: its endpoint `{url}` is the ARC \
                                     endpoint of probe {}, and it is not https",
                                    svc.hostname, svc.flavour, site.name, def.metric
                                ),
                            )
                            .with_help(
                                "give the service an https endpoint (https://HOST:443/arex), or \
                                 set the probe's `arc_url`",
                            ),
                    );
                }
            }
        }
    }
    if p.client_cert.is_none() && p.client_key.is_none() && def.credential.is_none() {
        errors.push(
            err(
                "backend",
                "the arc backend needs a credential: `client_cert` and `client_key`, or the \
                 probe's `credential` (a proxy or a token)"
                    .to_string(),
            )
            .with_help("A-REX admits no anonymous job submission"),
        );
    }
    let tls = TlsParams {
        ca_file: p.ca_file.clone(),
        client_cert: p.client_cert.clone(),
        client_key: p.client_key.clone(),
        ..TlsParams::default()
    };
    TlsSettings::read(def, config, tls, errors)
}

/// The first certificate of a PEM file, described; `None` when unreadable (the TLS set-up
/// says why).
fn client_cert_info(path: &std::path::Path) -> Option<CertInfo> {
    let first = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    CertInfo::parse(first.as_ref())
}

impl CeSettings {
    /// The A-REX endpoint of one instance: `arc_url`, else the service's endpoint, else the
    /// default; https only.
    pub(crate) fn arc_endpoint(&self, ctx: &ProbeContext) -> Result<url::Url, String> {
        let template = match (&self.arc_url, &ctx.service.endpoint) {
            (Some(t), _) => t.clone(),
            (None, Some(e)) => e.to_string(),
            (None, None) => DEFAULT_URL.to_string(),
        };
        let url = placeholders::expand(&template, ctx).map_err(|e| format!("in `arc_url`: {e}"))?;
        let parsed = url::Url::parse(&url).map_err(|e| format!("ARC endpoint `{url}`: {e}"))?;
        if parsed.scheme() != "https" {
            return Err(format!("ARC endpoint `{url}` is not https"));
        }
        Ok(parsed)
    }

    /// The A-REX client of one instance. Every error is the monitoring's own problem (an
    /// unreadable or expired credential, an endpoint that cannot be used), so the run is
    /// UNKNOWN, never CRITICAL for the site.
    pub(crate) fn arc_backend(&self, ctx: &ProbeContext) -> Result<ArcCe, String> {
        let parsed = self.arc_endpoint(ctx)?;
        let Some(tls) = &self.tls else {
            return Err("the arc backend has no TLS settings".to_string());
        };
        if let Some((cert, _)) = tls.client_files() {
            if let Some(info) = client_cert_info(cert) {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                if info.not_after_unix < now {
                    return Err(format!(
                        "monitoring credential problem: client certificate {} ({}) expired at {}",
                        cert.display(),
                        info.subject,
                        fmt_unix(info.not_after_unix)
                    ));
                }
            }
        }
        let proxy = ctx.proxy_file();
        let (config, _) = tls
            .client_config_for(&[b"http/1.1"], proxy.as_deref())
            .map_err(|e| format!("monitoring credential problem: {e}"))?;
        let queue = self
            .queue_template()
            .map(|q| placeholders::expand(q, ctx).map_err(|e| format!("in `queue`: {e}")))
            .transpose()?;
        let rest = Rest::new(
            parsed.as_str(),
            std::sync::Arc::unwrap_or_clone(config),
            ctx.bearer_token(),
        )?;
        Ok(ArcCe { rest, queue })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{build_with, line_of};

    fn errors(params: &str) -> Vec<Diagnostic> {
        match build_with(crate::ce::build, crate::ce::NAME, params) {
            Ok(p) => panic!("expected errors, built {p:?}"),
            Err(ds) => ds,
        }
    }

    #[test]
    fn arc_params_are_checked_at_their_keys() {
        let params = "backend = 'arc'\narc_url = 'http://ce.example.org:443/arex'\n\
                      client_cert = '/nonexistent/cert.pem'\nclient_key = '/nonexistent/key.pem'\n\
                      submit_args = ['-x']";
        let ds = errors(params);
        let messages: Vec<&str> = ds.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(ds.len(), 3, "{messages:?}");
        let at = |needle: &str| {
            let d = ds
                .iter()
                .find(|d| d.message.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in {messages:?}"));
            d.position().unwrap_or_default()
        };
        let line = line_of(crate::ce::NAME, params, "arc_url = ");
        assert_eq!(at("is not https"), format!("t.toml:{line}:11"));
        let line = line_of(crate::ce::NAME, params, "submit_args = ");
        assert_eq!(
            at("no meaning for the arc backend"),
            format!("t.toml:{line}:15")
        );
        assert!(at("client_cert").starts_with("t.toml:"));

        let ds = errors("backend = 'arc'");
        assert!(
            ds[0].message.contains("the arc backend needs a credential"),
            "{ds:?}"
        );
        let ds = errors("backend = 'slurm'\nca_file = '/etc/ssl/certs'");
        assert!(
            ds[0]
                .message
                .contains("`ca_file` applies to the arc backend only, not to slurm"),
            "{ds:?}"
        );
    }

    #[test]
    fn https_is_required_where_it_can_be_seen() {
        assert!(not_https("http://ce.example.org:443/arex"));
        assert!(not_https("gsiftp://ce.example.org:2811/jobs"));
        assert!(not_https("ce.example.org:443"));
        assert!(!not_https("https://{hostname}:443/arex"));
        assert!(!not_https("HTTPS://ce.example.org/arex"));
        assert!(!not_https("{endpoint}"));
    }
}
