//! The HTTP listener of `gridprobe serve`, hardened against clients that hold connections:
//!
//! - a cap on open connections, derived from the descriptor limit (raised at start within the
//!   hard limit), so that at least half of the descriptors stay free for probes: a flood of
//!   idle connections can no longer make every probe fail with "Too many open files";
//! - a deadline for the request head ([`Limits::header_timeout`]) and an idle timeout for the
//!   rest (no byte read or written while no handler runs);
//! - one request per connection, whose head is read and checked here before hyper sees it, so
//!   that a refusal (malformed, too long, too slow) is the documented JSON `{error, detail}`
//!   instead of hyper's empty answer;
//! - with `[server] tls_cert`, HTTPS (rustls): the handshake has the header deadline too, and
//!   each request carries the connection's [`ConnInfo`] (the verified client certificate).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::x509::subject::ConnInfo;

/// The most connections served at once, whatever the descriptor limit.
pub const MAX_CONNECTIONS: usize = 1024;
/// Descriptors always left to probes, the store, spools and brokers.
pub const RESERVED_DESCRIPTORS: u64 = 256;
/// The descriptor soft limit asked for at start (when the hard limit allows it).
pub const WANTED_DESCRIPTORS: u64 = 65_536;

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time for the whole request head to arrive (408 after it).
    pub header_timeout: Duration,
    /// A connection with no byte read or written for this long while no handler runs is
    /// closed (a client that stops sending its body or stops reading the answer).
    pub idle_timeout: Duration,
    /// Longest request head (request line and headers), in bytes (431 beyond).
    pub max_head: usize,
    /// Longest request target, in bytes (414 beyond).
    pub max_uri: usize,
    /// Largest request body (413 beyond), checked here against `Content-Length`.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_head: 16 * 1024,
            max_uri: 8 * 1024,
            max_body: crate::api::MAX_BODY,
        }
    }
}

impl Limits {
    /// The default limits with the connection cap fitted to a descriptor limit: at most half
    /// of the descriptors, and never the last [`RESERVED_DESCRIPTORS`].
    pub fn for_descriptors(nofile: u64) -> Limits {
        let usable = (nofile / 2).min(nofile.saturating_sub(RESERVED_DESCRIPTORS));
        Limits {
            max_connections: usize::try_from(usable)
                .unwrap_or(MAX_CONNECTIONS)
                .clamp(4, MAX_CONNECTIONS),
            ..Limits::default()
        }
    }
}

/// Raises the soft limit of open files towards [`WANTED_DESCRIPTORS`], within the hard limit,
/// and returns the soft limit in force (`None` if it cannot be read).
pub fn raise_descriptor_limit() -> Option<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().ok()?;
    let wanted = WANTED_DESCRIPTORS.min(hard).max(soft);
    if wanted > soft {
        match rlimit::Resource::NOFILE.set(wanted, hard) {
            Ok(()) => return Some(wanted),
            Err(e) => tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit"),
        }
    }
    Some(soft)
}

/// Serves `router` on `listener` within `limits` until `shutdown` fires; connections in flight
/// then get a few seconds to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_tls(listener, router, limits, None, shutdown).await
}

/// [`serve`], over TLS with `tls`.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    tracker.spawn(connection(
                        stream,
                        acceptor.clone(),
                        router.clone(),
                        limits,
                        permit,
                        shutdown.clone(),
                    ));
                }
                // Over TLS a plain-text answer would be noise: the connection is just closed.
                Err(_) if acceptor.is_some() => drop(stream),
                Err(_) => refuse_busy(stream),
            },
            Err(e) => {
                // Out of descriptors (or a connection reset before accept): wait a little
                // rather than spin, and say so once in a while.
                if last_accept_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(error = %e, "http: accepting a connection failed");
                    last_accept_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::debug!("http: connections still open at shutdown are dropped");
    }
    Ok(())
}

/// At the connection cap: a 503 if the socket takes it at once, then close.
fn refuse_busy(stream: TcpStream) {
    let reply = error_reply(
        503,
        "too many connections",
        "the server is at its connection limit; retry shortly",
        &[("retry-after", "1")],
    );
    let _ = stream.try_write(&reply);
}

/// The bytes of a JSON error answer that closes the connection.
fn error_reply(status: u16, error: &str, detail: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = serde_json::json!({ "error": error, "detail": detail }).to_string();
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Why a request head was not handed on.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The client closed (or reset) the connection first: nothing to answer.
    Closed,
    /// Answer with this status, error and detail, then close.
    Refuse(u16, &'static str, String),
}

/// Reads until the request head is complete and checks it; returns every byte read (the head
/// and whatever part of the body came with it), for hyper to parse again.
async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    limits: &Limits,
) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = io.read(&mut chunk).await.map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if check_head(&buf, limits)? {
            return Ok(buf);
        }
    }
}

/// Whether `buf` holds a complete, acceptable request head (`Ok(false)`: read on).
fn check_head(buf: &[u8], limits: &Limits) -> Result<bool, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(buf);
    if let Some(path) = req.path {
        if path.len() > limits.max_uri {
            return Err(uri_too_long(limits));
        }
    }
    match parsed {
        Ok(httparse::Status::Partial) => {
            let line_done = buf.contains(&b'\n');
            if !line_done && buf.len() > limits.max_uri {
                return Err(uri_too_long(limits));
            }
            if buf.len() > limits.max_head {
                return Err(head_too_large(limits));
            }
            Ok(false)
        }
        Ok(httparse::Status::Complete(len)) => {
            if len > limits.max_head {
                return Err(head_too_large(limits));
            }
            check_framing(req.headers, limits)?;
            Ok(true)
        }
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::Refuse(
            431,
            "request header fields too large",
            format!("more than {} header fields", headers.len()),
        )),
        Err(e) => Err(HeadError::Refuse(
            400,
            "malformed request",
            format!("the request head is not HTTP/1.1: {e}"),
        )),
    }
}

fn uri_too_long(limits: &Limits) -> HeadError {
    HeadError::Refuse(
        414,
        "URI too long",
        format!("the request target is longer than {} bytes", limits.max_uri),
    )
}

fn head_too_large(limits: &Limits) -> HeadError {
    HeadError::Refuse(
        431,
        "request header fields too large",
        format!(
            "the request line and headers are longer than {} bytes",
            limits.max_head
        ),
    )
}

/// Body framing that hyper would refuse with an empty 400, refused here with a reason; and a
/// declared body over the limit, refused before it is sent.
fn check_framing(headers: &[httparse::Header<'_>], limits: &Limits) -> Result<(), HeadError> {
    let bad = |detail: &str| HeadError::Refuse(400, "malformed request", detail.to_string());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| bad("Content-Length must be a decimal number of bytes"))?;
            if length.is_some_and(|l| l != v) {
                return Err(bad("conflicting Content-Length headers"));
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = std::str::from_utf8(h.value).unwrap_or("");
            let last = v.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") || chunked {
                return Err(bad("only `Transfer-Encoding: chunked` is accepted"));
            }
            chunked = true;
        }
    }
    if chunked && length.is_some() {
        return Err(bad(
            "Content-Length and Transfer-Encoding together are ambiguous; send one",
        ));
    }
    if length.is_some_and(|l| l > limits.max_body as u64) {
        return Err(HeadError::Refuse(
            413,
            "request body too large",
            format!("request bodies are limited to {} bytes", limits.max_body),
        ));
    }
    Ok(())
}

/// Writes a JSON error and closes, giving up after a second on a client that does not read.
async fn answer_and_close(mut stream: Io, status: u16, error: &str, detail: &str) {
    let reply = error_reply(status, error, detail, &[]);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    })
    .await;
}

/// One connection: its head under the header deadline, then one request through hyper under
/// the idle timeout.
async fn connection(
    tcp: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    limits: Limits,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let (mut stream, info) = match acceptor {
        None => (Io::Plain(tcp), ConnInfo::default()),
        Some(acceptor) => {
            let handshake = tokio::select! {
                h = tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)) => h,
                _ = shutdown.cancelled() => return,
            };
            match handshake {
                Ok(Ok(tls)) => {
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(crate::x509::peer_of);
                    let info = ConnInfo { tls: true, peer };
                    (Io::Tls(Box::new(tls)), info)
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "http: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    let head = tokio::select! {
        h = tokio::time::timeout(limits.header_timeout, read_head(&mut stream, &limits)) => h,
        _ = shutdown.cancelled() => return,
    };
    let prefix = match head {
        Ok(Ok(prefix)) => prefix,
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::Refuse(status, error, detail))) => {
            answer_and_close(stream, status, error, &detail).await;
            return;
        }
        Err(_) => {
            let detail = format!(
                "the request head did not arrive within {} s",
                limits.header_timeout.as_secs()
            );
            answer_and_close(stream, 408, "request timeout", &detail).await;
            return;
        }
    };
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        prefix,
        pos: 0,
        activity: activity.clone(),
    });
    let busy = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let guard = busy.busy();
        let router = router.clone();
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(info.clone());
        async move {
            let resp = router.oneshot(req).await;
            drop(guard);
            resp
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(false)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut tick = tokio::time::interval(limits.idle_timeout / 4);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "http: connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tick.tick() => {
                if activity.idle_for() > limits.idle_timeout {
                    tracing::debug!("http: closing a connection idle for {:?}", limits.idle_timeout);
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are being handled.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    handlers: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            handlers: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long nothing moved; zero while a handler runs (it may compute for a while).
    fn idle_for(&self) -> Duration {
        if self.handlers.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    fn busy(self: &Arc<Self>) -> HandlerGuard {
        self.handlers.fetch_add(1, Ordering::Relaxed);
        HandlerGuard(self.clone())
    }
}

/// A running handler; its end counts as activity.
struct HandlerGuard(Arc<Activity>);

impl Drop for HandlerGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.handlers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection as hyper sees it: the bytes already read first, then the socket; every
/// byte moved is activity.
struct Tracked {
    inner: Io,
    prefix: Vec<u8>,
    pos: usize,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.pos..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection's byte stream, plain or TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, data),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(head: &str) -> Result<bool, HeadError> {
        check_head(head.as_bytes(), &Limits::default())
    }

    fn status(r: Result<bool, HeadError>) -> u16 {
        match r {
            Ok(true) => 200,
            Ok(false) => 0,
            Err(HeadError::Refuse(s, _, _)) => s,
            Err(HeadError::Closed) => 1,
        }
    }

    #[test]
    fn heads_are_checked_before_hyper() {
        assert_eq!(status(check("GET / HTTP/1.1\r\nHost: x\r\n\r\n")), 200);
        assert_eq!(status(check("GET / HTTP/1.1\r\nHost: x\r\n")), 0, "partial");
        assert_eq!(status(check("GET /\x01 HTTP/1.1\r\n\r\n")), 400);
        assert_eq!(status(check("NOT HTTP AT ALL\r\n\r\n")), 400);
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(check(&long)), 414);
        let long_partial = format!("GET /{}", "a".repeat(9000));
        assert_eq!(status(check(&long_partial)), 414);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(17_000));
        assert_eq!(status(check(&big)), 431);
        let many: String = (0..70).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(status(check(&format!("GET / HTTP/1.1\r\n{many}\r\n"))), 431);
        for framing in [
            "Content-Length: 12x",
            "Content-Length: -1",
            "Content-Length: 3\r\nContent-Length: 4",
            "Transfer-Encoding: gzip",
            "Transfer-Encoding: chunked\r\nContent-Length: 4",
        ] {
            let head = format!("POST / HTTP/1.1\r\n{framing}\r\n\r\n");
            assert_eq!(status(check(&head)), 400, "{framing}");
        }
        assert_eq!(
            status(check("POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")),
            413
        );
    }

    #[test]
    fn the_connection_cap_leaves_descriptors_to_probes() {
        assert_eq!(Limits::for_descriptors(1024).max_connections, 512);
        assert_eq!(Limits::for_descriptors(256).max_connections, 4);
        assert_eq!(Limits::for_descriptors(300).max_connections, 44);
        assert_eq!(Limits::for_descriptors(65_536).max_connections, 1024);
        assert_eq!(Limits::for_descriptors(0).max_connections, 4);
    }
}
