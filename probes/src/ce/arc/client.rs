//! The HTTPS client of A-REX's REST interface (version 1.0, under `<endpoint>/rest/1.0`):
//! reqwest over the probes' own rustls configuration, so that a grid proxy (RFC 3820) can be
//! presented, and every call bounded by a deadline and the run's cancellation.

use std::path::Path;
use std::time::Instant;

use reqwest::{Method, RequestBuilder};
use tokio_util::sync::CancellationToken;

use super::super::BackendError;
use super::parse::{self, excerpt, JobEntry};
use crate::credentials::Secret;

/// Why A-REX may refuse gridprobe's TLS handshake outright: ARC 6.14 to 6.x offer one curve,
/// secp521r1, for the key exchange by default, which rustls (with ring) does not have.
const HANDSHAKE_HINT: &str = "no TLS key exchange in common: ARC 6.14 to 6.x offer only \
    secp521r1 unless [arex/ws] sets tlscurve=prime256v1";

/// Largest answer of a job operation or control file read.
const ANSWER_LIMIT: usize = 1 << 20;

/// An HTTP answer: status, A-REX's reason phrase (it puts its messages there) and body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub reason: String,
    pub body: Vec<u8>,
    /// The body was longer than the limit and was cut there (downloads only).
    pub cut: bool,
}

impl Answer {
    /// "HTTP 403 User can't be assigned configuration", with the body's start when it says more.
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("HTTP {}", self.status);
        if !self.reason.is_empty() {
            s.push(' ');
            s.push_str(&self.reason);
        }
        if !self.body.iter().all(u8::is_ascii_whitespace) {
            s.push_str(": ");
            s.push_str(&excerpt(&self.body));
        }
        s
    }
}

/// A-REX's REST interface at one endpoint.
#[derive(Clone)]
pub(crate) struct Rest {
    http: reqwest::Client,
    /// `https://host:port/arex`, as configured.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer` when the probe's credential is a token.
    bearer: Option<std::sync::Arc<Secret>>,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("endpoint", &self.endpoint)
            .field("bearer", &self.bearer.is_some())
            .finish()
    }
}

impl Rest {
    /// A client for `endpoint` over `tls` (trust anchors and client certificate already in it).
    pub(crate) fn new(
        endpoint: &str,
        tls: rustls::ClientConfig,
        bearer: Option<Secret>,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {}", error_words(&e)))?;
        Ok(Rest {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            bearer: bearer.map(std::sync::Arc::new),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/rest/1.0/{path}", self.endpoint)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self
            .http
            .request(method, self.url(path))
            .header("accept", "application/json");
        if let Some(token) = &self.bearer {
            r = r.bearer_auth(token.expose());
        }
        r
    }

    /// Sends `req`; `what` names the operation in errors. The body is read up to `limit`:
    /// a longer one is an error, or cut there with `cut_long`.
    async fn send(
        &self,
        what: &str,
        req: RequestBuilder,
        deadline: Instant,
        cancel: &CancellationToken,
        limit: usize,
        cut_long: bool,
    ) -> Result<Answer, BackendError> {
        let started = Instant::now();
        let call = async {
            let mut resp = req.send().await.map_err(|e| {
                let what = format!("{what} at {}", self.endpoint);
                let reason = error_words(&e);
                let fault = if e.is_connect() {
                    crate::net::io_connection_fault(&e)
                } else {
                    None
                };
                if reason.contains("HandshakeFailure") {
                    BackendError::Unsupported {
                        what,
                        reason: format!("{HANDSHAKE_HINT} ({reason})"),
                    }
                } else if let Some(fault) = fault {
                    BackendError::Unreachable {
                        what,
                        reason,
                        fault,
                    }
                } else {
                    BackendError::Remote { what, reason }
                }
            })?;
            let status = resp.status().as_u16();
            let reason = resp
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
                .or_else(|| resp.status().canonical_reason().map(str::to_string))
                .unwrap_or_default();
            let mut body = Vec::new();
            let mut cut = false;
            while let Some(chunk) = resp.chunk().await.map_err(|e| BackendError::Remote {
                what: format!("{what} at {}", self.endpoint),
                reason: format!("reading the answer: {}", error_words(&e)),
            })? {
                let room = limit.saturating_sub(body.len());
                if chunk.len() > room {
                    if !cut_long {
                        return Err(BackendError::Invalid(format!(
                            "{what}: A-REX's answer is larger than {limit} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk[..room]);
                    cut = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer {
                status,
                reason,
                body,
                cut,
            })
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(BackendError::Cancelled),
            r = tokio::time::timeout_at(deadline.into(), call) => match r {
                Ok(r) => r,
                Err(_) => Err(BackendError::TimedOut {
                    program: format!("A-REX ({what})"),
                    after: started.elapsed(),
                }),
            },
        }
    }

    /// An error for an answer with an unexpected HTTP status.
    fn refused(&self, what: &str, a: &Answer) -> BackendError {
        let mut reason = a.describe();
        if a.status == 401 || a.status == 403 {
            reason.push_str(
                " (A-REX does not admit the credential gridprobe presented: the site's \
                 authorisation, or the credential's VO)",
            );
        }
        BackendError::Remote {
            what: format!("{what} at {}", self.endpoint),
            reason,
        }
    }

    /// `POST jobs?action=new` with the job description; the one entry A-REX created.
    pub(crate) async fn create(
        &self,
        description: &str,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<JobEntry, BackendError> {
        let what = "job submission";
        let req = self
            .request(Method::POST, "jobs?action=new")
            .header("content-type", "application/rsl")
            .body(description.to_string());
        let a = self
            .send(what, req, deadline, cancel, ANSWER_LIMIT, false)
            .await?;
        if a.status != 201 && a.status != 200 {
            return Err(self.refused(what, &a));
        }
        let entries = parse::job_entries(&a.body).map_err(BackendError::Invalid)?;
        let Some(e) = entries.into_iter().next() else {
            return Err(BackendError::Invalid(format!(
                "A-REX created no job: {}",
                excerpt(&a.body)
            )));
        };
        if e.code != 201 || e.id.is_empty() {
            return Err(BackendError::Remote {
                what: format!("{what} at {}", self.endpoint),
                reason: format!("A-REX refused the job ({} {})", e.code, e.reason),
            });
        }
        Ok(e)
    }

    /// `POST jobs?action=ACTION` for `ids`: one entry per job.
    pub(crate) async fn action(
        &self,
        action: &str,
        ids: &[&str],
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Vec<JobEntry>, BackendError> {
        let what = format!("job {action}");
        let list: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({ "id": id }))
            .collect();
        let req = self
            .request(Method::POST, &format!("jobs?action={action}"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "job": list }).to_string());
        let a = self
            .send(&what, req, deadline, cancel, ANSWER_LIMIT, false)
            .await?;
        if !(200..300).contains(&a.status) {
            return Err(self.refused(&what, &a));
        }
        parse::job_entries(&a.body).map_err(BackendError::Invalid)
    }

    /// The ids of the authenticated user's jobs (`GET jobs`).
    pub(crate) async fn list(
        &self,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, BackendError> {
        let req = self.request(Method::GET, "jobs");
        let a = self
            .send("job list", req, deadline, cancel, ANSWER_LIMIT, false)
            .await?;
        if a.status != 200 {
            return Err(self.refused("job list", &a));
        }
        let entries = parse::job_entries(&a.body).map_err(BackendError::Invalid)?;
        Ok(entries
            .into_iter()
            .map(|e| e.id)
            .filter(|i| !i.is_empty())
            .collect())
    }

    /// A file of the job's control directory (`status`, `failed`, `diag`, `local`); `None`
    /// when A-REX has none (404).
    pub(crate) async fn control(
        &self,
        id: &str,
        name: &str,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let what = format!("job {name} file");
        let req = self.request(
            Method::GET,
            &format!("jobs/{}/diagnose/{name}", segment(id)),
        );
        let a = self
            .send(&what, req, deadline, cancel, ANSWER_LIMIT, false)
            .await?;
        match a.status {
            200 => Ok(Some(a.body)),
            404 => Ok(None),
            _ => Err(self.refused(&what, &a)),
        }
    }

    /// Uploads `from` as `name` into the job's session directory.
    pub(crate) async fn upload(
        &self,
        id: &str,
        name: &str,
        from: &Path,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<(), BackendError> {
        let what = format!("upload of {name}");
        let bytes = tokio::fs::read(from)
            .await
            .map_err(|e| BackendError::Spawn {
                program: what.clone(),
                reason: format!("cannot read {}: {e}", from.display()),
            })?;
        let req = self
            .request(
                Method::PUT,
                &format!("jobs/{}/session/{}", segment(id), segment(name)),
            )
            .header("content-type", "application/octet-stream")
            .body(bytes);
        let a = self
            .send(&what, req, deadline, cancel, ANSWER_LIMIT, false)
            .await?;
        if !(200..300).contains(&a.status) {
            return Err(self.refused(&what, &a));
        }
        Ok(())
    }

    /// The regular files at the top of the job's session directory.
    pub(crate) async fn session_files(
        &self,
        id: &str,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, BackendError> {
        let what = "session directory listing";
        let req = self.request(Method::GET, &format!("jobs/{}/session/", segment(id)));
        let a = self
            .send(what, req, deadline, cancel, ANSWER_LIMIT, false)
            .await?;
        if a.status != 200 {
            return Err(self.refused(what, &a));
        }
        parse::listed_files(&a.body).map_err(BackendError::Invalid)
    }

    /// Downloads `name` from the session directory into `to`, at most `limit` bytes; whether
    /// the file was longer.
    pub(crate) async fn download(
        &self,
        id: &str,
        name: &str,
        to: &Path,
        limit: usize,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<bool, BackendError> {
        let what = format!("download of {name}");
        let path = format!("jobs/{}/session/{}", segment(id), segment(name));
        let req = self.request(Method::GET, &path);
        let a = self.send(&what, req, deadline, cancel, limit, true).await?;
        if a.status != 200 {
            return Err(self.refused(&what, &a));
        }
        let (body, cut) = (a.body, a.cut);
        tokio::fs::write(to, &body)
            .await
            .map_err(|e| BackendError::Spawn {
                program: what,
                reason: format!("cannot write {}: {e}", to.display()),
            })?;
        Ok(cut)
    }
}

/// A path segment: job ids and file names percent-encoded.
fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A reqwest error in words, without the URL (the caller names the endpoint), causes included.
pub(crate) fn error_words(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut top = e.to_string();
    if let Some(url) = e.url() {
        top = top.replace(&format!(" for url ({url})"), "");
    }
    parts.push(top);
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        source = s.source();
    }
    let text = parts.join(": ");
    if text.contains("Connection refused") {
        return format!("connection refused ({text})");
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::outcome::{ConnectionFault, Outcome};

    /// A TLS client configuration with `roots` and, when given, a client certificate.
    pub(crate) fn tls(roots: &[u8], client: Option<(&[u8], &[u8])>) -> rustls::ClientConfig {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let mut store = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(roots) {
            store.add(c.expect("CA PEM")).expect("CA");
        }
        let b = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store);
        match client {
            Some((cert, key)) => {
                let chain: Vec<_> = CertificateDer::pem_slice_iter(cert)
                    .map(|c| c.expect("cert PEM"))
                    .collect();
                let key = PrivateKeyDer::from_pem_slice(key).expect("key PEM");
                b.with_client_auth_cert(chain, key).expect("client cert")
            }
            None => b.with_no_client_auth(),
        }
    }

    /// A CE nobody listens for is marked as a connection fault (so a failing self-check turns
    /// it UNKNOWN), and so is its outcome; a refusal by the CE itself is not.
    #[tokio::test]
    async fn an_unreachable_ce_is_a_connection_fault() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let rest = Rest::new(
            &format!("https://127.0.0.1:{port}/arex"),
            tls(b"", None),
            None,
        )
        .expect("client");
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let e = rest
            .create("&(executable=x)", deadline, &CancellationToken::new())
            .await
            .expect_err("nobody listens");
        assert!(
            matches!(
                e,
                BackendError::Unreachable {
                    fault: ConnectionFault::Connect,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("connection refused"), "{e}");
        let o = crate::ce::state::with_fault(Outcome::critical("x"), &e);
        assert_eq!(o.connection_fault, Some(ConnectionFault::Connect));
        let refused = BackendError::Remote {
            what: "create".into(),
            reason: "403 Forbidden".into(),
        };
        let o = crate::ce::state::with_fault(Outcome::critical("x"), &refused);
        assert_eq!(o.connection_fault, None);
    }

    #[test]
    fn a_token_goes_as_bearer_and_paths_are_encoded() {
        let rest = Rest::new(
            "https://ce.example.org:443/arex/",
            tls(b"", None),
            Some(Secret::for_tests("tok-123")),
        )
        .expect("client");
        let req = rest
            .request(
                Method::GET,
                &format!("jobs/{}/session/{}", segment("a/b"), segment("x y")),
            )
            .build()
            .expect("request");
        assert_eq!(
            req.url().as_str(),
            "https://ce.example.org/arex/rest/1.0/jobs/a%2Fb/session/x%20y"
        );
        let auth = req.headers().get("authorization").expect("authorization");
        assert_eq!(auth.to_str().ok(), Some("Bearer tok-123"));
        assert!(!format!("{rest:?}").contains("tok-123"));
    }
}
