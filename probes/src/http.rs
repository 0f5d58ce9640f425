//! `http` probe kind: one HTTP/1.1 request over HTTP or HTTPS, timed phase by phase (DNS,
//! connect, TLS, time to first byte, total), with checks on the status, the body and the server
//! certificate's remaining lifetime.
//!
//! The connection is made by hand (the shared transport in [`crate::net`], then hyper's HTTP/1
//! handshake) because a client such as reqwest hides the phases an operator needs to see.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use gridprobe_config::{Config, Diagnostic, ProbeDef};
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, HOST, LOCATION, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use regex::bytes::Regex;
use serde::Deserialize;
use url::Url;

use crate::kind::{ParamDefault, ParamDoc};
use crate::net::http::{
    fetch, is_credential, status_text, Progress, Response, Trace, USER_AGENT_VALUE,
};
use crate::net::tls::{self, tls_params, CertInfo, TlsSettings};
use crate::net::{strip_brackets, Timings};
use crate::outcome::{fmt_secs, quote_bytes, seconds, Outcome, Perfdatum, Status};
use crate::params::{check_template, compile_regex};
use crate::{placeholders, Probe, ProbeContext, SharedProbe};

/// Config kind name.
pub const NAME: &str = "http";
/// One-line description.
pub const SUMMARY: &str = "HTTP(S) request with per-phase timings, status and body checks, and \
                           server certificate expiry";

/// Methods a probe may use.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PROPFIND",
];
/// Default of `max_body`.
const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Largest `max_body` accepted: the body is held in memory.
const MAX_MAX_BODY: u64 = 256 * 1024 * 1024;
/// Redirects followed at most with `follow_redirects`.
const MAX_REDIRECTS: usize = 5;
/// Body bytes shown in the details.
const DETAIL_BODY: usize = 4096;
/// Parameters.
pub const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "url",
        ty: "string",
        default: ParamDefault::Value(
            "the service endpoint (davs:// read as https://), else https://{hostname}/",
        ),
        description: "URL to request, http or https; placeholders are expanded",
    },
    ParamDoc {
        name: "path",
        ty: "string",
        default: ParamDefault::Optional,
        description: "Appended to the default URL (the endpoint's path keeps its place in front); \
                      not allowed together with `url`. Placeholders are expanded. Optional",
    },
    ParamDoc {
        name: "method",
        ty: "string",
        default: ParamDefault::Value("GET"),
        description: "GET, HEAD, POST, PUT, DELETE, OPTIONS or PROPFIND",
    },
    ParamDoc {
        name: "expect_status",
        ty: "[integer]",
        default: ParamDefault::Value("any 2xx (200 to 299)"),
        description: "Status codes that count as OK, e.g. [200, 207]; any other is CRITICAL",
    },
    ParamDoc {
        name: "body_regex",
        ty: "string",
        default: ParamDefault::Optional,
        description: "Regular expression (Rust regex syntax, on raw bytes) the body must match, \
                      else CRITICAL. Only the first `max_body` bytes are searched. Optional",
    },
    ParamDoc {
        name: "forbid_regex",
        ty: "string",
        default: ParamDefault::Optional,
        description: "Regular expression the body must not match, else CRITICAL. Optional",
    },
    ParamDoc {
        name: "headers",
        ty: "table",
        default: ParamDefault::Value("{}"),
        description: "Extra request headers, name = value; values expand placeholders and may \
                      replace Host or User-Agent (default gridprobe/VERSION)",
    },
    ParamDoc {
        name: "body",
        ty: "string",
        default: ParamDefault::Optional,
        description: "Request body, e.g. for POST or PROPFIND; placeholders are expanded (write \
                      {{ and }} for literal braces). Optional",
    },
    tls::DOC_TLS_VERIFY,
    tls::DOC_CA_FILE,
    tls::DOC_CLIENT_CERT,
    tls::DOC_CLIENT_KEY,
    tls::DOC_CERT_WARN_DAYS,
    tls::DOC_CERT_CRIT_DAYS,
    ParamDoc {
        name: "max_body",
        ty: "integer",
        default: ParamDefault::Value("1048576"),
        description: "Most body bytes read (and searched by the regexes); the rest is not read",
    },
    ParamDoc {
        name: "follow_redirects",
        ty: "bool",
        default: ParamDefault::Value("false"),
        description: "Follow up to 5 redirects (301, 302, 303, 307, 308); the checks apply to \
                      the last response, the certificate checks to every HTTPS hop",
    },
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpParams {
    url: Option<String>,
    path: Option<String>,
    method: Option<String>,
    expect_status: Option<Vec<u16>>,
    body_regex: Option<String>,
    forbid_regex: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    tls_verify: Option<bool>,
    ca_file: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    cert_warn_days: Option<u32>,
    cert_crit_days: Option<u32>,
    max_body: Option<u64>,
    follow_redirects: Option<bool>,
}

/// Builds the probe.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    let p: HttpParams = crate::params::read(def, config)?;
    let err = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
    let mut errors = Vec::new();

    for (key, value) in [("url", &p.url), ("path", &p.path), ("body", &p.body)] {
        if let Some(v) = value {
            errors.extend(check_template(def, config, key, v));
        }
    }
    let mut fixed_url = None;
    if let Some(url) = &p.url {
        // Without placeholders the URL can be checked now rather than per instance.
        if placeholders::names(url).is_ok_and(|n| n.is_empty()) {
            match parse_target(url) {
                // Without any brace (not even an escaped one) expanding changes nothing: the
                // URL is the same for every instance and is parsed once, not on every run.
                Ok(u) if !url.contains(['{', '}']) => fixed_url = Some(u),
                Ok(_) => {}
                Err(e) => {
                    errors.push(err("url", e).with_help(
                        "write a full URL such as \"https://host.example.org:8443/path\"",
                    ))
                }
            }
        }
        if p.path.is_some() {
            errors.push(
                err("path", "`path` cannot be combined with `url`".into())
                    .with_help("put the path into `url`, or drop `url` to append `path` to the service endpoint"),
            );
        }
    }

    let method_text = p.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
    let method = if METHODS.contains(&method_text.as_str()) {
        Method::from_bytes(method_text.as_bytes()).ok()
    } else {
        None
    };
    if method.is_none() {
        let got = p.method.as_deref().unwrap_or_default();
        let d = err("method", format!("unsupported method `{got}`"))
            .with_suggestion(got, METHODS.iter().copied());
        let d = if d.help.is_none() {
            d.with_help(format!("use one of {}", METHODS.join(", ")))
        } else {
            d
        };
        errors.push(d);
    }

    if let Some(codes) = &p.expect_status {
        if codes.is_empty() {
            errors.push(err(
                "expect_status",
                "`expect_status` is empty: no response could be OK".into(),
            ));
        }
        if let Some(bad) = codes.iter().find(|c| !(100..=599).contains(*c)) {
            errors.push(err(
                "expect_status",
                format!("{bad} is not an HTTP status code (100 to 599)"),
            ));
        }
    }

    let mut regex = |key: &str, pattern: &Option<String>| match pattern {
        Some(re) => compile_regex(def, config, key, re)
            .map_err(|d| errors.push(d))
            .ok(),
        None => None,
    };
    let body_regex = regex("body_regex", &p.body_regex);
    let forbid_regex = regex("forbid_regex", &p.forbid_regex);
    if p.body_regex.is_some() && method_text == "HEAD" {
        errors.push(err(
            "body_regex",
            "`body_regex` can never match: responses to HEAD have no body".into(),
        ));
    }

    let mut headers = Vec::new();
    for (name, value) in &p.headers {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => headers.push((h, value.clone())),
            Err(_) => errors.push(err(
                "headers",
                format!("`{name}` is not a valid HTTP header name"),
            )),
        }
        errors.extend(check_template(def, config, "headers", value));
    }

    let max_body = match p.max_body {
        None => DEFAULT_MAX_BODY,
        Some(n) if (1..=MAX_MAX_BODY).contains(&n) => n as usize,
        Some(n) => {
            errors.push(err(
                "max_body",
                format!("`max_body` must be between 1 and {MAX_MAX_BODY}, not {n}"),
            ));
            DEFAULT_MAX_BODY
        }
    };

    // TLS settings are checked even for an http:// URL: the scheme may differ per instance.
    let tls = TlsSettings::read(def, config, tls_params!(p), &mut errors);

    match (method, tls) {
        (Some(method), Some(tls)) if errors.is_empty() => Ok(Arc::new(HttpProbe {
            url: p.url,
            fixed_url,
            path: p.path,
            method,
            expect_status: p.expect_status,
            body_regex,
            forbid_regex,
            headers,
            body: p.body,
            tls,
            max_body,
            follow_redirects: p.follow_redirects.unwrap_or(false),
        })),
        _ => Err(errors),
    }
}

/// A built `http` probe.
#[derive(Debug)]
struct HttpProbe {
    /// URL template.
    url: Option<String>,
    /// `url` parsed, when it has no brace at all (then it is the same for every instance).
    fixed_url: Option<Url>,
    /// Path template, appended to the endpoint.
    path: Option<String>,
    method: Method,
    expect_status: Option<Vec<u16>>,
    body_regex: Option<Regex>,
    forbid_regex: Option<Regex>,
    /// Header names with value templates.
    headers: Vec<(HeaderName, String)>,
    /// Body template.
    body: Option<String>,
    tls: TlsSettings,
    max_body: usize,
    follow_redirects: bool,
}

impl HttpProbe {
    /// The URL for one instance.
    fn target_url(&self, ctx: &ProbeContext) -> Result<Url, String> {
        let svc = &ctx.service;
        if let Some(url) = &self.fixed_url {
            return Ok(url.clone());
        }
        if let Some(template) = &self.url {
            return parse_target(&placeholders::expand(template, ctx)?)
                .map_err(|e| format!("`url`: {e}"));
        }
        let base = match &svc.endpoint {
            Some(e) => {
                let text = e.to_string();
                // WebDAV endpoints are HTTP(S) under another scheme name.
                if let Some(rest) = text.strip_prefix("davs://") {
                    format!("https://{rest}")
                } else if let Some(rest) = text.strip_prefix("dav://") {
                    format!("http://{rest}")
                } else {
                    text
                }
            }
            None if svc.hostname.contains(':') => {
                format!("https://[{}]/", strip_brackets(&svc.hostname))
            }
            None => format!("https://{}/", svc.hostname),
        };
        let mut url = parse_target(&base).map_err(|e| {
            format!(
                "service {} ({}) endpoint: {e}; set `url` for this probe",
                svc.hostname, svc.flavour
            )
        })?;
        if let Some(path) = &self.path {
            let path = placeholders::expand(path, ctx)?;
            let joined = format!(
                "{}/{}",
                url.path().trim_end_matches('/'),
                path.trim_start_matches('/')
            );
            match joined.split_once('?') {
                Some((p, q)) => {
                    url.set_path(p);
                    url.set_query(Some(q));
                }
                None => url.set_path(&joined),
            }
        }
        Ok(url)
    }

    /// Header values for one instance.
    fn header_values(&self, ctx: &ProbeContext) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        self.headers
            .iter()
            .map(|(name, template)| {
                let value = placeholders::expand(template, ctx)?;
                HeaderValue::from_str(&value)
                    .map(|v| (name.clone(), v))
                    .map_err(|_| format!("header `{name}`: `{value}` is not a valid header value"))
            })
            .collect()
    }

    /// Builds the request for `url`.
    fn request(
        &self,
        url: &Url,
        method: &Method,
        body: Option<&str>,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Request<Full<Bytes>>, String> {
        let host = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let mut req = Request::builder()
            .method(method.clone())
            .uri(target)
            .header(HOST, authority)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_string())))
            .map_err(|e| format!("cannot build the request for {url}: {e}"))?;
        for (name, value) in headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        Ok(req)
    }

    fn status_expected(&self, code: u16) -> bool {
        match &self.expect_status {
            Some(codes) => codes.contains(&code),
            None => (200..300).contains(&code),
        }
    }

    fn expected_text(&self) -> String {
        match self.expect_status.as_deref() {
            None => "2xx".to_string(),
            Some([one]) => one.to_string(),
            Some(codes) => {
                let texts: Vec<String> = codes.iter().map(u16::to_string).collect();
                format!("one of {}", texts.join(", "))
            }
        }
    }

    /// The outcome of a completed exchange.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        url: &Url,
        resp: &Response,
        progress: &Progress,
        timings: &Timings,
        total: Duration,
        certs: &[(String, CertInfo)],
        redirects: usize,
        log: String,
    ) -> Outcome {
        let status = resp.parts.status;
        let mut problems: Vec<(Status, String)> = Vec::new();
        if !self.status_expected(status.as_u16()) {
            let mut m = format!(
                "{} (expected {})",
                status_text(status),
                self.expected_text()
            );
            if status.is_redirection() {
                if let Some(loc) = resp.parts.headers.get(LOCATION) {
                    let _ = write!(m, ", Location: {}", String::from_utf8_lossy(loc.as_bytes()));
                }
            }
            problems.push((Status::Critical, m));
        }
        let searched = if resp.truncated {
            format!(" in the first {} bytes", resp.body.len())
        } else {
            String::new()
        };
        if let Some(re) = &self.body_regex {
            if !re.is_match(&resp.body) {
                problems.push((
                    Status::Critical,
                    format!("body does not match /{}/{searched}", re.as_str()),
                ));
            }
        }
        if let Some(re) = &self.forbid_regex {
            if let Some(m) = re.find(&resp.body) {
                problems.push((
                    Status::Critical,
                    format!(
                        "body matches forbidden /{}/: {}",
                        re.as_str(),
                        quote_bytes(m.as_bytes(), 60)
                    ),
                ));
            }
        }
        for (who, cert) in certs {
            problems.extend(self.tls.expiry_problem(cert, who));
        }

        let mut ok_text = format!("{} in {}", status_text(status), fmt_secs(total));
        match redirects {
            0 => {}
            1 => ok_text.push_str(" after 1 redirect"),
            n => {
                let _ = write!(ok_text, " after {n} redirects");
            }
        }
        // Worst first, so the summary leads with what made the status.
        problems.sort_by_key(|(s, _)| std::cmp::Reverse(s.exit_rank()));
        let outcome = match problems.first() {
            None => Outcome::ok(ok_text.clone()),
            Some((worst, _)) => {
                let texts: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
                Outcome::new(*worst, format!("{} on {url}", texts.join("; ")))
            }
        };

        let shown = &resp.body[..resp.body.len().min(DETAIL_BODY)];
        // Sized for everything written below, so that it is allocated once.
        let mut details = String::with_capacity(
            ok_text.len() + url.as_str().len() + log.len() + shown.len() + 96,
        );
        let _ = write!(details, "{ok_text} ({url})\n{log}");
        let _ = write!(
            details,
            "\nbody: {} bytes{}",
            resp.body.len(),
            if resp.truncated {
                " (cut at max_body; the rest was not read)"
            } else {
                ""
            }
        );
        if !shown.is_empty() {
            let _ = write!(
                details,
                ", first {}:\n{}",
                shown.len(),
                String::from_utf8_lossy(shown)
            );
        }

        // dns, connect, tls, ttfb, total, size, cert_days_left at most.
        let mut perfdata = Vec::with_capacity(7);
        perfdata.extend(timings.perfdata());
        perfdata.extend(progress.ttfb.map(|d| seconds("ttfb", d)));
        perfdata.push(seconds("total", total));
        perfdata.push(Perfdatum::new("size", resp.body.len() as f64, "B"));
        perfdata.extend(cert_perfdatum(&self.tls, certs));
        outcome.with_details(details).with_perfdata(perfdata)
    }
}

#[async_trait]
impl Probe for HttpProbe {
    async fn run(&self, ctx: &ProbeContext) -> Outcome {
        if ctx.cancel.is_cancelled() {
            return Outcome::unknown("cancelled before start");
        }
        let mut url = match self.target_url(ctx) {
            Ok(u) => u,
            Err(e) => return Outcome::unknown(e),
        };
        let mut headers = match self.header_values(ctx) {
            Ok(h) => h,
            Err(e) => return Outcome::unknown(e),
        };
        let mut body = match self.body.as_deref().map(|b| placeholders::expand(b, ctx)) {
            Some(Err(e)) => return Outcome::unknown(e),
            Some(Ok(b)) => Some(b),
            None => None,
        };
        let mut method = self.method.clone();
        let start = Instant::now();
        // Sized for a plain exchange (about ten lines), so that it is not regrown line by line.
        let mut log = String::with_capacity(1024);
        let mut certs = Vec::new();
        let mut redirects = 0;
        loop {
            let mut timings = Timings::default();
            let mut progress = Progress::default();
            let req = match self.request(&url, &method, body.as_deref(), &headers) {
                Ok(r) => r,
                Err(e) => return Outcome::unknown(e).with_details(log),
            };
            let fetched = fetch(
                ctx,
                &url,
                req,
                &self.tls,
                self.max_body,
                &mut progress,
                Trace {
                    timings: &mut timings,
                    log: &mut log,
                    certs: &mut certs,
                },
            )
            .await;
            let resp = match fetched {
                Ok(r) => r,
                Err(f) => {
                    let mut perfdata = timings.perfdata();
                    perfdata.extend(progress.ttfb.map(|d| seconds("ttfb", d)));
                    perfdata.push(seconds("total", start.elapsed()));
                    perfdata.extend(cert_perfdatum(&self.tls, &certs));
                    return f
                        .outcome(ctx, url.as_str())
                        .with_details(log)
                        .with_perfdata(perfdata);
                }
            };
            let status = resp.parts.status;
            let location = resp
                .parts
                .headers
                .get(LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
            let follow = self.follow_redirects
                && matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
                && location.is_some();
            if !follow {
                return self.judge(
                    &url,
                    &resp,
                    &progress,
                    &timings,
                    start.elapsed(),
                    &certs,
                    redirects,
                    log,
                );
            }
            let location = location.unwrap_or_default();
            if redirects == MAX_REDIRECTS {
                return Outcome::critical(format!(
                    "more than {MAX_REDIRECTS} redirects, the last to {location} on {url}"
                ))
                .with_details(log);
            }
            let next = match url
                .join(&location)
                .map_err(|e| e.to_string())
                .and_then(|u| parse_target(u.as_str()))
            {
                Ok(u) => u,
                Err(e) => {
                    return Outcome::critical(format!(
                        "{} redirects to unusable Location `{location}` ({e}) on {url}",
                        status_text(status)
                    ))
                    .with_details(log)
                }
            };
            let _ = writeln!(log, "{} redirects to {next}\n", status_text(status));
            // As browsers do: 303 always, and 301/302 after a POST, continue with a plain GET.
            if status == StatusCode::SEE_OTHER
                || (method == Method::POST && matches!(status.as_u16(), 301 | 302))
            {
                method = Method::GET;
                body = None;
            }
            // Credentials are for the origin they were configured for, not wherever it points.
            if next.origin() != url.origin() {
                headers.retain(|(name, _)| !is_credential(name));
            }
            redirects += 1;
            url = next;
        }
    }

    fn check_instance(&self, ctx: &ProbeContext) -> Result<(), String> {
        self.target_url(ctx)?;
        self.header_values(ctx)?;
        if let Some(body) = &self.body {
            placeholders::expand(body, ctx)?;
        }
        Ok(())
    }
}

/// Parses a URL and checks that this kind can request it.
fn parse_target(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("invalid URL `{text}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "URL `{text}` has scheme `{}`, but the http kind speaks only http and https",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL `{text}` has no host"));
    }
    Ok(url)
}

/// `cert_days_left` for the certificate that expires first.
fn cert_perfdatum(tls: &TlsSettings, certs: &[(String, CertInfo)]) -> Option<Perfdatum> {
    certs
        .iter()
        .map(|(_, c)| c.days_left())
        .min_by(|a, b| a.total_cmp(b))
        .map(|days| tls.days_perfdatum(days))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    use super::*;
    use crate::test_support::{build_with, context, line_of, TestCa};

    /// A small HTTP/1.1 server; `hit` fires when /slow is requested.
    struct Server {
        port: u16,
        hit: Arc<Notify>,
    }

    async fn server(tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hit = Arc::new(Notify::new());
        let h = hit.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (tls, h) = (tls.clone(), h.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(sock).await {
                                respond(s, h).await;
                            }
                        }
                        None => respond(sock, h).await,
                    }
                });
            }
        });
        Server { port, hit }
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    async fn respond<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, hit: Arc<Notify>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        // Read the request body too: closing with unread data would reset the connection.
        while buf.len() < head_end + length {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (status, extra, body): (&str, &str, Vec<u8>) = match path.as_str() {
            "/ok" => ("200 OK", "", b"grid service ready\n".to_vec()),
            "/down" => ("503 Service Unavailable", "", b"maintenance".to_vec()),
            "/error" => ("200 OK", "", b"status: ERROR disk full\n".to_vec()),
            "/big" => ("200 OK", "", vec![b'x'; 10_000]),
            "/redirect" => ("302 Found", "Location: /ok\r\n", Vec::new()),
            "/loop" => ("302 Found", "Location: /loop\r\n", Vec::new()),
            "/echo" => ("200 OK", "", buf.clone()),
            "/slow" => {
                hit.notify_one();
                tokio::time::sleep(Duration::from_secs(30)).await;
                ("200 OK", "", b"too late".to_vec())
            }
            _ => ("404 Not Found", "", b"no such page".to_vec()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        );
        let _ = s.write_all(response.as_bytes()).await;
        let _ = s.write_all(&body).await;
        let _ = s.shutdown().await;
    }

    fn probe(params: &str) -> SharedProbe {
        crate::test_support::built(build, NAME, params)
    }

    fn ctx() -> ProbeContext {
        context("127.0.0.1", None, Duration::from_secs(5))
    }

    fn labels(o: &Outcome) -> Vec<&str> {
        crate::test_support::perf_labels(o)
    }

    fn perf(o: &Outcome, label: &str) -> f64 {
        o.perfdata
            .iter()
            .find(|p| p.label == label)
            .map(|p| p.value)
            .unwrap_or(f64::NAN)
    }

    #[test]
    fn params_are_documented() {
        crate::kind::assert_params_documented::<HttpParams>(PARAMS);
    }

    #[tokio::test]
    async fn ok_with_endpoint_and_path() {
        let srv = server(None).await;
        let p = probe("path = 'ok'\nbody_regex = 'service ready'");
        let endpoint = format!("http://127.0.0.1:{}/", srv.port);
        let ctx = context("127.0.0.1", Some(&endpoint), Duration::from_secs(5));
        assert_eq!(p.check_instance(&ctx), Ok(()));
        let o = p.run(&ctx).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.starts_with("HTTP 200 OK in "), "{}", o.summary);
        assert!(o.summary.ends_with(" s"), "{}", o.summary);
        assert_eq!(labels(&o), ["dns", "connect", "ttfb", "total", "size"]);
        assert_eq!(perf(&o, "size"), 19.0);
        assert!(o.details.contains("> GET /ok HTTP/1.1"), "{}", o.details);
        assert!(o.details.contains("< HTTP/1.1 200 OK"), "{}", o.details);
        assert!(o.details.contains("grid service ready"), "{}", o.details);
    }

    #[tokio::test]
    async fn resolves_localhost() {
        let srv = server(None).await;
        let p = probe(&format!("url = 'http://localhost:{}/ok'", srv.port));
        let o = p.run(&ctx()).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.details.contains("resolved localhost to"), "{}", o.details);
    }

    #[tokio::test]
    async fn unexpected_status_is_critical() {
        let srv = server(None).await;
        let url = format!("http://127.0.0.1:{}/down", srv.port);
        let o = probe(&format!("url = '{url}'")).run(&ctx()).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!("HTTP 503 Service Unavailable (expected 2xx) on {url}")
        );

        let o = probe(&format!("url = '{url}'\nexpect_status = [503]"))
            .run(&ctx())
            .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(
            o.summary.starts_with("HTTP 503 Service Unavailable in"),
            "{}",
            o.summary
        );
    }

    #[tokio::test]
    async fn slow_response_times_out_in_time() {
        let srv = server(None).await;
        let url = format!("http://127.0.0.1:{}/slow", srv.port);
        let p = probe(&format!("url = '{url}'"));
        let timeout = Duration::from_millis(600);
        let start = Instant::now();
        let o = p.run(&context("127.0.0.1", None, timeout)).await;
        let took = start.elapsed();
        assert!(took < timeout + Duration::from_millis(900), "took {took:?}");
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!("timeout after 600ms during HTTP request (waiting for the response headers) on {url}")
        );
        assert_eq!(labels(&o), ["dns", "connect", "total"]);
    }

    #[tokio::test]
    async fn cancel_stops_the_request() {
        let srv = server(None).await;
        let p = probe(&format!("url = 'http://127.0.0.1:{}/slow'", srv.port));
        let ctx = context("127.0.0.1", None, Duration::from_secs(30));
        let (cancel, hit) = (ctx.cancel.clone(), srv.hit.clone());
        tokio::spawn(async move {
            hit.notified().await;
            cancel.cancel();
        });
        let o = p.run(&ctx).await;
        assert_eq!(o.status, Status::Unknown, "{o:?}");
        assert!(
            o.summary.starts_with("cancelled during HTTP request"),
            "{}",
            o.summary
        );
    }

    #[tokio::test]
    async fn body_regex_and_forbid_regex() {
        let srv = server(None).await;
        let ok = format!("http://127.0.0.1:{}/ok", srv.port);
        let o = probe(&format!("url = '{ok}'\nbody_regex = '(?i)READY'"))
            .run(&ctx())
            .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");

        let o = probe(&format!("url = '{ok}'\nbody_regex = 'degraded'"))
            .run(&ctx())
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(o.summary, format!("body does not match /degraded/ on {ok}"));

        let error = format!("http://127.0.0.1:{}/error", srv.port);
        let o = probe(&format!("url = '{error}'\nforbid_regex = 'ERROR[^\\n]*'"))
            .run(&ctx())
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!("body matches forbidden /ERROR[^\\n]*/: \"ERROR disk full\" on {error}")
        );
    }

    #[tokio::test]
    async fn body_is_bounded_by_max_body() {
        let srv = server(None).await;
        let p = probe(&format!(
            "url = 'http://127.0.0.1:{}/big'\nmax_body = 1000\nbody_regex = 'y'",
            srv.port
        ));
        let o = p.run(&ctx()).await;
        assert_eq!(perf(&o, "size"), 1000.0);
        assert!(
            o.summary
                .starts_with("body does not match /y/ in the first 1000 bytes"),
            "{}",
            o.summary
        );
        assert!(o.details.contains("cut at max_body"), "{}", o.details);
    }

    #[tokio::test]
    async fn sends_method_headers_and_body() {
        let srv = server(None).await;
        let p = probe(&format!(
            "url = 'http://127.0.0.1:{}/echo'\nmethod = 'post'\nbody = 'vo={{vo}}'\n\
             headers = {{ X-Site = '{{site}}', Authorization = 'Bearer secret' }}\n\
             body_regex = '(?si)^post /echo http/1.1\\r\\n.*user-agent: gridprobe/.*x-site: lcg.cern.ch.*vo=lhcb$'",
            srv.port
        ));
        let o = p.run(&ctx()).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(
            o.details.contains("> authorization: [hidden]"),
            "{}",
            o.details
        );
        assert!(
            !o.details.contains("> authorization: Bearer"),
            "{}",
            o.details
        );
    }

    #[tokio::test]
    async fn redirects_followed_only_when_asked() {
        let srv = server(None).await;
        let url = format!("http://127.0.0.1:{}/redirect", srv.port);
        let o = probe(&format!("url = '{url}'")).run(&ctx()).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!("HTTP 302 Found (expected 2xx), Location: /ok on {url}")
        );

        let o = probe(&format!("url = '{url}'\nfollow_redirects = true"))
            .run(&ctx())
            .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.ends_with("after 1 redirect"), "{}", o.summary);

        let looping = format!("http://127.0.0.1:{}/loop", srv.port);
        let o = probe(&format!("url = '{looping}'\nfollow_redirects = true"))
            .run(&ctx())
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with("more than 5 redirects"),
            "{}",
            o.summary
        );
    }

    #[tokio::test]
    async fn closed_port_is_connection_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/");
        let o = probe(&format!("url = '{url}'")).run(&ctx()).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!("TCP connect failed: connection refused on {url}")
        );
    }

    #[tokio::test]
    async fn dns_failure_names_the_phase() {
        let p = probe("url = 'https://no-such-host.invalid/'");
        let o = p
            .run(&context("127.0.0.1", None, Duration::from_secs(3)))
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        // Without a resolver in reach the lookup may time out instead of failing.
        assert!(
            o.summary
                .starts_with("DNS lookup of no-such-host.invalid failed")
                || o.summary.starts_with("timeout after 3s during DNS lookup"),
            "{}",
            o.summary
        );
        assert!(
            o.summary.ends_with("on https://no-such-host.invalid/"),
            "{}",
            o.summary
        );
    }

    #[tokio::test]
    async fn https_verification_and_ca_file() {
        let ca = TestCa::new();
        let srv = server(Some(ca.acceptor(90))).await;
        let url = format!("https://127.0.0.1:{}/ok", srv.port);

        let o = probe(&format!("url = '{url}'")).run(&ctx()).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary
                .starts_with("TLS handshake failed: certificate verify failed: unknown issuer"),
            "{}",
            o.summary
        );
        assert!(o.summary.contains("gridprobe test CA"), "{}", o.summary);
        assert!(o.summary.ends_with(&format!("on {url}")), "{}", o.summary);

        let o = probe(&format!("url = '{url}'\nca_file = '{}'", ca.ca_pem_path()))
            .run(&ctx())
            .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert_eq!(
            labels(&o),
            [
                "dns",
                "connect",
                "tls",
                "ttfb",
                "total",
                "size",
                "cert_days_left"
            ]
        );
        assert!((89.0..=90.0).contains(&perf(&o, "cert_days_left")), "{o:?}");
        assert!(o.details.contains("TLS TLSv1_3"), "{}", o.details);

        // Without verification the certificate is accepted but still inspected.
        let o = probe(&format!("url = '{url}'\ntls_verify = false"))
            .run(&ctx())
            .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(
            o.details.contains("issuer: CN=gridprobe test CA"),
            "{}",
            o.details
        );
    }

    #[tokio::test]
    async fn https_wrong_name_is_named() {
        let ca = TestCa::new();
        let srv = server(Some(ca.acceptor_for(&["se.example.org"], 90))).await;
        let url = format!("https://127.0.0.1:{}/ok", srv.port);
        let o = probe(&format!("url = '{url}'\nca_file = '{}'", ca.ca_pem_path()))
            .run(&ctx())
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary
                .starts_with("TLS handshake failed: certificate verify failed:"),
            "{}",
            o.summary
        );
        assert!(
            o.summary
                .contains("certificate is not valid for 127.0.0.1 (valid for: se.example.org)"),
            "{}",
            o.summary
        );
    }

    #[tokio::test]
    async fn client_certificate_from_one_proxy_file() {
        let ca = TestCa::new();
        let srv = server(Some(ca.acceptor_requiring_client_cert())).await;
        let url = format!("https://127.0.0.1:{}/ok", srv.port);
        let ca_file = ca.ca_pem_path();
        let proxy = ca.client_pem();
        let with_proxy = format!(
            "url = '{url}'\nca_file = '{ca_file}'\nclient_cert = '{proxy}'\nclient_key = '{proxy}'"
        );
        let o = probe(&with_proxy).run(&ctx()).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");

        let o = probe(&format!("url = '{url}'\nca_file = '{ca_file}'"))
            .run(&ctx())
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with(
                "TLS session failed: server sent TLS alert CertificateRequired (does the server \
                 require or reject a client certificate?)"
            ),
            "{}",
            o.summary
        );
    }

    #[tokio::test]
    async fn certificate_expiry_thresholds() {
        let ca = TestCa::new();
        let ca_file = ca.ca_pem_path();
        let soon = server(Some(ca.acceptor(2))).await;
        let url = format!("https://127.0.0.1:{}/ok", soon.port);
        let o = probe(&format!("url = '{url}'\nca_file = '{ca_file}'"))
            .run(&ctx())
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with(&format!(
                "certificate of 127.0.0.1:{} expires in 1.",
                soon.port
            )),
            "{}",
            o.summary
        );
        let days = o
            .perfdata
            .iter()
            .find(|p| p.label == "cert_days_left")
            .expect("cert_days_left");
        assert_eq!(
            days.to_string(),
            format!("cert_days_left={};14:;3:", days.value)
        );

        let later = server(Some(ca.acceptor(10))).await;
        let url = format!("https://127.0.0.1:{}/ok", later.port);
        let o = probe(&format!("url = '{url}'\nca_file = '{ca_file}'"))
            .run(&ctx())
            .await;
        assert_eq!(o.status, Status::Warning, "{o:?}");
        assert!(o.summary.contains("expires in 9."), "{}", o.summary);

        let o = probe(&format!(
            "url = '{url}'\nca_file = '{ca_file}'\ncert_warn_days = 7"
        ))
        .run(&ctx())
        .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
    }

    #[test]
    fn default_url_and_instance_checks() {
        let p = probe("");
        let no_endpoint = context("se.example.org", None, Duration::from_secs(5));
        assert_eq!(p.check_instance(&no_endpoint), Ok(()));

        let p = probe("url = 'https://{hostname}:{param.port}/'");
        let err = p.check_instance(&no_endpoint).unwrap_err();
        assert!(err.contains("no parameter `port`"), "{err}");

        let p = probe("path = '/dpm/{vo}/'");
        let davs = context(
            "se.example.org",
            Some("davs://se.example.org:2880/"),
            Duration::from_secs(5),
        );
        assert_eq!(p.check_instance(&davs), Ok(()));
        let srm = context(
            "se.example.org",
            Some("srm://se.example.org:8446/srm"),
            Duration::from_secs(5),
        );
        let err = p.check_instance(&srm).unwrap_err();
        assert!(
            err.contains("scheme `srm`") && err.contains("set `url`"),
            "{err}"
        );
    }

    #[test]
    fn build_errors_point_at_their_keys() {
        let params = "url = 'https://{hostname}/'\nbody_regex = 'ok('";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert_eq!(ds.len(), 1, "{ds:?}");
        assert_eq!(
            ds[0].location.as_ref().map(|l| l.line),
            Some(line_of(NAME, params, "body_regex"))
        );
        assert!(
            ds[0]
                .message
                .starts_with("invalid regular expression in `body_regex`"),
            "{}",
            ds[0].message
        );

        let params = "forbid_regex = '[z-a]'\nmethod = 'GETT'";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert_eq!(ds.len(), 2, "{ds:?}");
        assert_eq!(
            ds[0].location.as_ref().map(|l| l.line),
            Some(line_of(NAME, params, "method"))
        );
        assert_eq!(ds[0].help.as_deref(), Some("did you mean `GET`?"));
        assert_eq!(
            ds[1].location.as_ref().map(|l| l.line),
            Some(line_of(NAME, params, "forbid_regex"))
        );

        let params = "url = 'ftp://x/'\npath = '/a'";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert_eq!(ds.len(), 2, "{ds:?}");
        assert!(ds[0].message.contains("scheme `ftp`"), "{}", ds[0].message);
        assert_eq!(
            ds[1].location.as_ref().map(|l| l.line),
            Some(line_of(NAME, params, "path"))
        );

        let params = "client_cert = '/tmp/proxy'\nexpect_status = [200, 99]";
        let ds = build_with(build, NAME, params).unwrap_err();
        let messages: Vec<&str> = ds.iter().map(|d| d.message.as_str()).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("99 is not an HTTP status code")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("`client_cert` needs `client_key`")),
            "{messages:?}"
        );

        let params = "nosuch = 1";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert!(ds[0].message.contains("nosuch"), "{}", ds[0].message);
    }
}
