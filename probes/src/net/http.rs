//! HTTP/1.1 over the shared connection: one request and its response per connection, the body
//! bounded, the exchange logged with credentials hidden. The `http` kind and every kind that
//! speaks HTTP (WebDAV storage, FTS, Frontier, CVMFS) go through [`fetch`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use url::Url;

use super::tls::{self, CertInfo, TlsSettings};
use super::{host_port, open, strip_brackets, Failure, Stream, Timings};
use crate::ProbeContext;

/// Sent as `User-Agent` unless the `headers` table sets one.
pub(crate) const USER_AGENT_VALUE: &str = concat!("gridprobe/", env!("CARGO_PKG_VERSION"));

/// Offered in the TLS handshake: this client speaks HTTP/1.1 only.
const ALPN: &[&[u8]] = &[b"http/1.1"];
/// Phase names of the exchange, for timeout messages.
const PHASE_REQUEST: &str = "HTTP request (waiting for the response headers)";
const PHASE_BODY: &str = "HTTP body read";

/// One response, with at most `max_body` bytes of its body.
pub(crate) struct Response {
    /// Status, version and headers.
    pub parts: hyper::http::response::Parts,
    /// The body, cut at `max_body`.
    pub body: Vec<u8>,
    /// Whether the body was longer than `max_body`.
    pub truncated: bool,
}

/// How far one exchange got, readable after a timeout.
#[derive(Default)]
pub(crate) struct Progress {
    /// The phase the exchange is in, for timeout messages.
    pub phase: &'static str,
    /// Time to the response headers.
    pub ttfb: Option<Duration>,
}

/// What one or more exchanges leave behind for the outcome: connection phase timings, the
/// exchange log (credentials hidden) and each server certificate with its `host:port`.
pub(crate) struct Trace<'a> {
    /// The connection phases of this exchange.
    pub timings: &'a mut Timings,
    /// Lines appended for the details.
    pub log: &'a mut String,
    /// Server certificates seen, one per TLS connection.
    pub certs: &'a mut Vec<(String, CertInfo)>,
}

/// One request/response on a new connection to `url` (HTTP or HTTPS with `tls`), the body read
/// up to `max_body` bytes. Records how far the exchange got in `progress` (readable after a
/// timeout) and the connection, the exchange and the server certificate in `trace`. Shared by
/// every kind that speaks HTTP.
pub(crate) async fn fetch(
    ctx: &ProbeContext,
    url: &Url,
    req: Request<Full<Bytes>>,
    tls: &TlsSettings,
    max_body: usize,
    progress: &mut Progress,
    trace: Trace<'_>,
) -> Result<Response, Failure> {
    let https = url.scheme() == "https";
    let host = strip_brackets(url.host_str().unwrap_or_default());
    let port = url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    let tls = https.then_some((tls, ALPN));
    let req = with_credential_token(ctx, url, req);
    let Trace {
        timings,
        log,
        certs,
    } = trace;
    let _ = writeln!(log, "{} {url}", req.method());
    let opened = open(ctx, host, port, tls, timings, log).await?;
    if let Some(cert) = opened.cert {
        certs.push((host_port(host, port), cert));
    }
    let _ = writeln!(log, "> {} {} {:?}", req.method(), req.uri(), req.version());
    for (name, value) in req.headers() {
        let _ = writeln!(log, "> {name}: {}", shown_header(name, value));
    }
    let result = ctx
        .bounded(exchange(opened.stream, req, max_body, https, progress))
        .await;
    match result {
        Err(stop) => Err(Failure::Stopped(stop, progress.phase)),
        Ok(Err(msg)) => Err(Failure::Critical(msg)),
        Ok(Ok(resp)) => {
            let _ = writeln!(
                log,
                "< {:?} {}",
                resp.parts.version,
                status_text(resp.parts.status).trim_start_matches("HTTP ")
            );
            for (name, value) in &resp.parts.headers {
                let _ = writeln!(log, "< {name}: {}", shown_header(name, value));
            }
            Ok(resp)
        }
    }
}

/// The request with `Authorization: Bearer` from the probe's `[[credential]]`, when it is a
/// token, the request carries no authorization of its own, and it goes to the service's own
/// host (its hostname or endpoint): a token is never sent to another host.
fn with_credential_token(
    ctx: &ProbeContext,
    url: &Url,
    mut req: Request<Full<Bytes>>,
) -> Request<Full<Bytes>> {
    if req.headers().contains_key(hyper::header::AUTHORIZATION) {
        return req;
    }
    let Some(token) = ctx.bearer_token() else {
        return req;
    };
    let host = url.host_str().map(strip_brackets);
    let own = host.is_some_and(|h| {
        h.eq_ignore_ascii_case(strip_brackets(&ctx.service.hostname))
            || ctx
                .service
                .endpoint
                .as_ref()
                .and_then(|e| e.host_str())
                .is_some_and(|e| h.eq_ignore_ascii_case(strip_brackets(e)))
    });
    if !own {
        return req;
    }
    if let Ok(mut value) =
        hyper::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
    {
        value.set_sensitive(true);
        req.headers_mut()
            .insert(hyper::header::AUTHORIZATION, value);
    }
    req
}

/// [`fetch`] for kinds that keep neither the connection timings nor the progress of the
/// exchange, only its log and the server certificates (a timeout still names its phase in the
/// [`Failure`]).
pub(crate) async fn fetch_logged(
    ctx: &ProbeContext,
    url: &Url,
    req: Request<Full<Bytes>>,
    tls: &TlsSettings,
    max_body: usize,
    log: &mut String,
    certs: &mut Vec<(String, CertInfo)>,
) -> Result<Response, Failure> {
    let mut timings = Timings::default();
    let mut progress = Progress::default();
    let trace = Trace {
        timings: &mut timings,
        log,
        certs,
    };
    fetch(ctx, url, req, tls, max_body, &mut progress, trace).await
}

/// Sends `req` over `stream` and reads the response, its body bounded at `max_body`.
async fn exchange(
    stream: Stream,
    req: Request<Full<Bytes>>,
    max_body: usize,
    https: bool,
    progress: &mut Progress,
) -> Result<Response, String> {
    progress.phase = PHASE_REQUEST;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP setup failed: {}", error_chain(&e)))?;
    // The connection is driven here rather than spawned, so that a timeout or cancel drops it
    // with everything else.
    let mut conn = std::pin::pin!(conn);
    let work = async {
        let sent = Instant::now();
        let resp = sender.send_request(req).await.map_err(|e| {
            // TLS bytes where HTTP was expected: the usual sign of http:// to an HTTPS port.
            let hint = if !https && e.is_parse() {
                " (is this an HTTPS port?)"
            } else {
                ""
            };
            match tls_cause(&e) {
                // With TLS 1.3 the server judges the client certificate after the handshake,
                // so its refusal arrives here.
                Some(cause) => format!("TLS session failed: {cause}"),
                None => format!("no valid HTTP response: {}{hint}", error_chain(&e)),
            }
        })?;
        progress.ttfb = Some(sent.elapsed());
        progress.phase = PHASE_BODY;
        let (parts, mut incoming) = resp.into_parts();
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| {
                format!(
                    "{} but reading the body failed after {} bytes: {}",
                    status_text(parts.status),
                    body.len(),
                    error_chain(&e)
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let room = max_body - body.len();
            if data.len() > room {
                body.extend_from_slice(&data[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&data);
        }
        Ok(Response {
            parts,
            body,
            truncated,
        })
    };
    let mut work = std::pin::pin!(work);
    let mut conn_done = false;
    loop {
        tokio::select! {
            r = &mut work => return r,
            // The request side reports any connection error itself.
            _ = &mut conn, if !conn_done => conn_done = true,
        }
    }
}

/// `HTTP 503 Service Unavailable`.
pub(crate) fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Headers that carry credentials.
pub(crate) fn is_credential(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    )
}

/// A header value for the details, with credentials hidden. Borrowed when the value is UTF-8
/// (nearly always), so that logging an exchange's headers copies nothing.
pub(crate) fn shown_header<'a>(name: &HeaderName, value: &'a HeaderValue) -> Cow<'a, str> {
    if is_credential(name) {
        Cow::Borrowed("[hidden]")
    } else {
        String::from_utf8_lossy(value.as_bytes())
    }
}

/// The error and its sources, joined: hyper's own text is often just "error reading a body".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

/// The TLS error behind an HTTP error, described, if there is one.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return Some(tls::describe_handshake_error(io, None));
            }
        }
        current = err.source();
    }
    None
}
