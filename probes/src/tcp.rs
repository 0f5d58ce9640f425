//! `tcp` probe kind: connect to `host:port` (optionally over TLS), optionally send a string,
//! and match what comes back against a regular expression.
//!
//! This module also holds the transport the `http` kind builds on: DNS resolution, TCP connect
//! over the resolved addresses in order, the TLS handshake, and the deadline/cancel guard that
//! names the phase a timeout hit.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gridprobe_config::{Config, Diagnostic, ProbeDef};
use regex::bytes::Regex;
use rustls_pki_types::ServerName;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::outcome::{bound_summary, Outcome, Perfdatum};
use crate::registry::ParamDoc;
use crate::tls::{self, CertInfo, TlsParams, TlsSettings};
use crate::{placeholders, Probe, ProbeContext, SharedProbe};

/// Config kind name.
pub const NAME: &str = "tcp";
/// One-line description.
pub const SUMMARY: &str =
    "TCP (or TLS) connect to host:port, optionally send a string and match the reply with a regex";

/// Default of `read_limit`.
const DEFAULT_READ_LIMIT: usize = 64 * 1024;
/// Largest `read_limit` accepted: the reply is held in memory.
const MAX_READ_LIMIT: u64 = 16 * 1024 * 1024;
/// Received bytes quoted in a summary.
const QUOTE_BYTES: usize = 64;
/// Received bytes shown in the details.
const DETAIL_BYTES: usize = 4096;

/// Parameters.
pub const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "host",
        ty: "string",
        default: Some("{hostname}"),
        description: "Host name or IP address to connect to; placeholders are expanded",
    },
    ParamDoc {
        name: "port",
        ty: "integer",
        default: None,
        description: "TCP port. Required unless the service endpoint URL has a port or a scheme \
                      with a known one (http 80, https/davs 443, root/xroot 1094, gsiftp 2811, \
                      srm/httpg 8443, ldap 389, ldaps 636)",
    },
    ParamDoc {
        name: "send",
        ty: "string",
        default: None,
        description: "Sent after connecting (and the TLS handshake), as written: TOML escapes \
                      such as \\r\\n apply; placeholders are expanded. Optional",
    },
    ParamDoc {
        name: "expect",
        ty: "string",
        default: None,
        description: "Regular expression (Rust regex syntax, on raw bytes) that the reply must \
                      match; reading stops at the first match, at end of stream or at \
                      `read_limit`. Without it nothing is read",
    },
    ParamDoc {
        name: "tls",
        ty: "bool",
        default: Some("false"),
        description: "Do a TLS handshake after connecting, with the host as server name",
    },
    tls::DOC_TLS_VERIFY,
    tls::DOC_CA_FILE,
    tls::DOC_CLIENT_CERT,
    tls::DOC_CLIENT_KEY,
    tls::DOC_CERT_WARN_DAYS,
    tls::DOC_CERT_CRIT_DAYS,
    ParamDoc {
        name: "read_limit",
        ty: "integer",
        default: Some("65536"),
        description: "Most bytes of the reply read while looking for `expect`",
    },
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpParams {
    host: Option<String>,
    port: Option<u16>,
    send: Option<String>,
    expect: Option<String>,
    tls: Option<bool>,
    tls_verify: Option<bool>,
    ca_file: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    cert_warn_days: Option<u32>,
    cert_crit_days: Option<u32>,
    read_limit: Option<u64>,
}

/// Builds the probe.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    let p: TcpParams = def
        .params
        .deserialize(&config.sources)
        .map_err(|d| vec![d])?;
    let err = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
    let mut errors = Vec::new();

    let host = p.host.unwrap_or_else(|| "{hostname}".to_string());
    errors.extend(check_template(def, config, "host", &host));
    if let Some(send) = &p.send {
        errors.extend(check_template(def, config, "send", send));
    }
    if p.port == Some(0) {
        errors.push(err("port", "`port` must be between 1 and 65535".into()));
    }
    let expect = match &p.expect {
        Some(re) => match compile_regex(def, config, "expect", re) {
            Ok(re) => Some(re),
            Err(d) => {
                errors.push(d);
                None
            }
        },
        None => None,
    };
    let read_limit = match p.read_limit {
        None => DEFAULT_READ_LIMIT,
        Some(n) if (1..=MAX_READ_LIMIT).contains(&n) => n as usize,
        Some(n) => {
            errors.push(err(
                "read_limit",
                format!("`read_limit` must be between 1 and {MAX_READ_LIMIT}, not {n}"),
            ));
            DEFAULT_READ_LIMIT
        }
    };
    let tls_keys = [
        ("tls_verify", p.tls_verify.is_some()),
        ("ca_file", p.ca_file.is_some()),
        ("client_cert", p.client_cert.is_some()),
        ("client_key", p.client_key.is_some()),
        ("cert_warn_days", p.cert_warn_days.is_some()),
        ("cert_crit_days", p.cert_crit_days.is_some()),
    ];
    let tls = if p.tls.unwrap_or(false) {
        let params = TlsParams {
            tls_verify: p.tls_verify,
            ca_file: p.ca_file,
            client_cert: p.client_cert,
            client_key: p.client_key,
            cert_warn_days: p.cert_warn_days,
            cert_crit_days: p.cert_crit_days,
        };
        match TlsSettings::from_params(def, config, params) {
            Ok(s) => Some(s),
            Err(ds) => {
                errors.extend(ds);
                None
            }
        }
    } else {
        // A TLS setting without `tls = true` is a mistake, not something to ignore quietly.
        for (key, _) in tls_keys.iter().filter(|(_, set)| *set) {
            errors.push(
                err(key, format!("`{key}` has no effect without `tls = true`"))
                    .with_help("add `tls = true` or remove the key"),
            );
        }
        None
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(std::sync::Arc::new(TcpProbe {
        host,
        port: p.port,
        send: p.send,
        expect,
        tls,
        read_limit,
    }))
}

/// A built `tcp` probe.
#[derive(Debug)]
struct TcpProbe {
    /// Host template.
    host: String,
    port: Option<u16>,
    /// Template of what to send.
    send: Option<String>,
    expect: Option<Regex>,
    tls: Option<TlsSettings>,
    read_limit: usize,
}

impl TcpProbe {
    /// Host (without brackets) and port for one instance.
    fn target(&self, ctx: &ProbeContext) -> Result<(String, u16), String> {
        let host = placeholders::expand(&self.host, ctx)?;
        let host = strip_brackets(host.trim()).to_string();
        if host.is_empty() {
            return Err(format!(
                "`host` expands to an empty string for service {}",
                ctx.service.hostname
            ));
        }
        let svc = &ctx.service;
        let port = self
            .port
            .or_else(|| svc.endpoint.as_ref().and_then(|e| e.port().or_else(|| scheme_port(e.scheme()))))
            .ok_or_else(|| match &svc.endpoint {
                Some(e) => format!(
                    "no port for service {} ({}): set `port`, the endpoint {e} has none and its scheme `{}` has no known default",
                    svc.hostname, svc.flavour, e.scheme()
                ),
                None => format!(
                    "no port for service {} ({}): set `port`, or give the service an endpoint URL with a port",
                    svc.hostname, svc.flavour
                ),
            })?;
        Ok((host, port))
    }
}

#[async_trait]
impl Probe for TcpProbe {
    async fn run(&self, ctx: &ProbeContext) -> Outcome {
        if ctx.cancel.is_cancelled() {
            return Outcome::unknown("cancelled before start");
        }
        let (host, port) = match self.target(ctx) {
            Ok(t) => t,
            Err(e) => return Outcome::unknown(e),
        };
        let send = match self.send.as_deref().map(|s| placeholders::expand(s, ctx)) {
            Some(Err(e)) => return Outcome::unknown(e),
            Some(Ok(s)) => Some(s),
            None => None,
        };
        let who = host_port(&host, port);
        let mut timings = Timings::default();
        let mut log = String::new();
        let tls = self.tls.as_ref().map(|s| (s, &[][..]));
        let opened = match open(ctx, &host, port, tls, &mut timings, &mut log).await {
            Ok(o) => o,
            Err(f) => {
                return f
                    .outcome(ctx, &who)
                    .with_details(log)
                    .with_perfdata(timings.perfdata())
            }
        };
        let mut stream = opened.stream;
        let mut perfdata = timings.perfdata();
        let exchange_start = Instant::now();
        let fail = |f: Failure, log: String, perfdata: Vec<Perfdatum>| {
            f.outcome(ctx, &who)
                .with_details(log)
                .with_perfdata(perfdata)
        };

        if let Some(data) = &send {
            let sent = bounded(ctx, async {
                stream.write_all(data.as_bytes()).await?;
                stream.flush().await
            })
            .await;
            match sent {
                Err(stop) => return fail(Failure::Stopped(stop, PHASE_SEND), log, perfdata),
                Ok(Err(e)) => {
                    let f = Failure::Critical(format!(
                        "sending {} bytes failed: {}",
                        data.len(),
                        io_reason(&e)
                    ));
                    return fail(f, log, perfdata);
                }
                Ok(Ok(())) => {
                    let _ = writeln!(
                        log,
                        "sent {} bytes: {}",
                        data.len(),
                        quote_bytes(data.as_bytes(), DETAIL_BYTES)
                    );
                }
            }
        }

        let mut matched_in = None;
        if let Some(re) = &self.expect {
            let mut received = Vec::new();
            let read = bounded(
                ctx,
                read_until_match(&mut stream, re, self.read_limit, &mut received),
            )
            .await;
            let elapsed = exchange_start.elapsed();
            perfdata.push(seconds("response", elapsed));
            let _ = writeln!(
                log,
                "received {} bytes in {}: {}",
                received.len(),
                fmt_secs(elapsed),
                quote_bytes(&received, DETAIL_BYTES)
            );
            let got = if received.is_empty() {
                "nothing received".to_string()
            } else {
                format!("received {}", quote_bytes(&received, QUOTE_BYTES))
            };
            let problem = match read {
                Err(stop) => {
                    let mut o = fail(Failure::Stopped(stop, PHASE_READ), log, perfdata);
                    o.summary = bound_summary(&format!(
                        "{} ({got}, expected /{}/)",
                        o.summary,
                        re.as_str()
                    ));
                    return o;
                }
                Ok(Err(e)) => format!(
                    "reading the reply failed: {} ({got}, expected /{}/)",
                    io_reason(&e),
                    re.as_str()
                ),
                Ok(Ok(ReadEnd::Matched)) => {
                    matched_in = Some(elapsed);
                    String::new()
                }
                Ok(Ok(ReadEnd::Eof)) if received.is_empty() => {
                    format!(
                        "connection closed without a reply (expected /{}/)",
                        re.as_str()
                    )
                }
                Ok(Ok(ReadEnd::Eof)) => format!(
                    "unexpected reply {} (expected /{}/)",
                    quote_bytes(&received, QUOTE_BYTES),
                    re.as_str()
                ),
                Ok(Ok(ReadEnd::Limit)) => format!(
                    "unexpected reply {} (no match for /{}/ in the first {} bytes)",
                    quote_bytes(&received, QUOTE_BYTES),
                    re.as_str(),
                    self.read_limit
                ),
            };
            if matched_in.is_none() {
                return fail(Failure::Critical(problem), log, perfdata);
            }
        }

        let mut summary = format!(
            "TCP connect to {who} in {}",
            fmt_secs(timings.connect.unwrap_or_default())
        );
        if let Some(t) = timings.tls {
            let _ = write!(summary, ", TLS handshake in {}", fmt_secs(t));
        }
        if let Some(t) = matched_in {
            let _ = write!(summary, ", reply matched in {}", fmt_secs(t));
        }
        let mut outcome = Outcome::ok(summary.clone());
        if let (Some(settings), Some(cert)) = (&self.tls, &opened.cert) {
            perfdata.push(settings.days_perfdatum(cert.days_left()));
            if let Some((status, problem)) = settings.expiry_problem(cert, &who) {
                outcome = Outcome::new(status, format!("{problem}; {summary}"));
            }
        }
        outcome
            .with_details(format!("{summary}\n{log}"))
            .with_perfdata(perfdata)
    }

    fn check_instance(&self, ctx: &ProbeContext) -> Result<(), String> {
        self.target(ctx)?;
        if let Some(send) = &self.send {
            placeholders::expand(send, ctx)?;
        }
        Ok(())
    }
}

enum ReadEnd {
    Matched,
    Eof,
    Limit,
}

/// Reads until `re` matches what was received, the peer closes, or `limit` bytes arrived.
async fn read_until_match<S: AsyncRead + Unpin>(
    stream: &mut S,
    re: &Regex,
    limit: usize,
    buf: &mut Vec<u8>,
) -> io::Result<ReadEnd> {
    let mut chunk = vec![0u8; 4096];
    loop {
        if re.is_match(buf) {
            return Ok(ReadEnd::Matched);
        }
        if buf.len() >= limit {
            return Ok(ReadEnd::Limit);
        }
        let want = (limit - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]).await {
            Ok(0) => return Ok(ReadEnd::Eof),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A TLS peer that closes without close_notify has still ended its reply.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(ReadEnd::Eof),
            Err(e) => return Err(e),
        }
    }
}

/// Well-known ports of URL schemes met in grid endpoints.
fn scheme_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "http" | "dav" | "ws" => 80,
        "https" | "davs" | "wss" => 443,
        "root" | "xroot" | "roots" | "xroots" => 1094,
        "gsiftp" => 2811,
        "srm" | "httpg" => 8443,
        "ldap" => 389,
        "ldaps" => 636,
        "ftp" => 21,
        "ssh" => 22,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Transport shared with the `http` kind.

/// Phase names, as they appear in "timeout after 5s during <phase> on <target>".
pub(crate) const PHASE_DNS: &str = "DNS lookup";
/// TCP connect phase.
pub(crate) const PHASE_CONNECT: &str = "TCP connect";
/// TLS handshake phase.
pub(crate) const PHASE_TLS: &str = "TLS handshake";
const PHASE_SEND: &str = "send";
const PHASE_READ: &str = "reply read";

/// Why a bounded step did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The context's deadline passed.
    Timeout,
    /// The context's cancellation token fired.
    Cancelled,
}

/// Runs `fut` until it finishes, the deadline passes or the context is cancelled.
pub(crate) async fn bounded<F: Future>(ctx: &ProbeContext, fut: F) -> Result<F::Output, Stop> {
    let deadline = tokio::time::Instant::from_std(ctx.deadline);
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => Err(Stop::Cancelled),
        r = tokio::time::timeout_at(deadline, fut) => r.map_err(|_| Stop::Timeout),
    }
}

/// How a probe attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Deadline or cancellation, during the named phase.
    Stopped(Stop, &'static str),
    /// The service failed (CRITICAL); one line without the target.
    Critical(String),
    /// The probe could not decide, e.g. an unreadable local file (UNKNOWN).
    Unknown(String),
}

impl Failure {
    /// The outcome, naming `target` (the URL or host:port).
    pub(crate) fn outcome(self, ctx: &ProbeContext, target: &str) -> Outcome {
        match self {
            Failure::Stopped(Stop::Timeout, phase) => Outcome::critical(format!(
                "timeout after {} during {phase} on {target}",
                fmt_timeout(ctx.timeout)
            )),
            Failure::Stopped(Stop::Cancelled, phase) => {
                Outcome::unknown(format!("cancelled during {phase} on {target}"))
            }
            Failure::Critical(m) => Outcome::critical(format!("{m} on {target}")),
            Failure::Unknown(m) => Outcome::unknown(format!("{m} (probing {target})")),
        }
    }
}

/// Durations of the connection phases that completed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Timings {
    pub dns: Option<Duration>,
    pub connect: Option<Duration>,
    pub tls: Option<Duration>,
}

impl Timings {
    /// `dns`, `connect` and `tls` perfdata, for the phases that completed.
    pub(crate) fn perfdata(&self) -> Vec<Perfdatum> {
        [
            ("dns", self.dns),
            ("connect", self.connect),
            ("tls", self.tls),
        ]
        .into_iter()
        .filter_map(|(label, d)| d.map(|d| seconds(label, d)))
        .collect()
    }
}

/// A duration perfdatum in seconds, to the microsecond.
pub(crate) fn seconds(label: &str, d: Duration) -> Perfdatum {
    Perfdatum::new(label, d.as_micros() as f64 / 1e6, "s")
}

/// A connected stream, plain or TLS.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An open connection and, over TLS, the server certificate.
pub(crate) struct Opened {
    pub stream: Stream,
    pub cert: Option<CertInfo>,
}

/// Resolves `host`, connects to its addresses in order and, with `tls`, does the handshake
/// (offering the given ALPN protocols). Records each phase in `timings` and what happened in
/// `log`.
pub(crate) async fn open(
    ctx: &ProbeContext,
    host: &str,
    port: u16,
    tls: Option<(&TlsSettings, &[&[u8]])>,
    timings: &mut Timings,
    log: &mut String,
) -> Result<Opened, Failure> {
    let is_ip = host.parse::<IpAddr>().is_ok();
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => {
            timings.dns = Some(Duration::ZERO);
            vec![SocketAddr::new(ip, port)]
        }
        Err(_) => {
            let start = Instant::now();
            let found = bounded(ctx, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|s| Failure::Stopped(s, PHASE_DNS))?;
            let elapsed = start.elapsed();
            timings.dns = Some(elapsed);
            let addrs: Vec<SocketAddr> = found
                .map_err(|e| {
                    Failure::Critical(format!("DNS lookup of {host} failed: {}", dns_reason(&e)))
                })?
                .collect();
            if addrs.is_empty() {
                return Err(Failure::Critical(format!(
                    "DNS lookup of {host} returned no address"
                )));
            }
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            let _ = writeln!(
                log,
                "resolved {host} to {} in {}",
                list.join(", "),
                fmt_secs(elapsed)
            );
            addrs
        }
    };

    let start = Instant::now();
    let mut errors: Vec<(SocketAddr, String)> = Vec::new();
    let mut connected = None;
    for (i, addr) in addrs.iter().enumerate() {
        let left = addrs.len() - i;
        let attempt = Instant::now();
        let result = if left > 1 {
            // A fair share of the time left, so that one black-holed address (often a broken
            // IPv6 route) does not use up the whole timeout.
            let share = ctx.remaining() / left as u32;
            match bounded(ctx, tokio::time::timeout(share, TcpStream::connect(*addr)))
                .await
                .map_err(|s| Failure::Stopped(s, PHASE_CONNECT))?
            {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {}", fmt_secs(attempt.elapsed())),
                )),
            }
        } else {
            bounded(ctx, TcpStream::connect(*addr))
                .await
                .map_err(|s| Failure::Stopped(s, PHASE_CONNECT))?
        };
        match result {
            Ok(s) => {
                connected = Some((s, *addr));
                break;
            }
            Err(e) => {
                let reason = match e.kind() {
                    io::ErrorKind::TimedOut => e.to_string(),
                    _ => io_reason(&e),
                };
                let _ = writeln!(log, "connect to {addr} failed: {reason}");
                errors.push((*addr, reason));
            }
        }
    }
    let elapsed = start.elapsed();
    timings.connect = Some(elapsed);
    let Some((tcp, addr)) = connected else {
        let msg = match errors.as_slice() {
            [(_, reason)] if is_ip => format!("TCP connect failed: {reason}"),
            [(addr, reason)] => format!("TCP connect to {addr} failed: {reason}"),
            many => {
                let all: Vec<String> = many.iter().map(|(a, r)| format!("{a}: {r}")).collect();
                format!("TCP connect failed: {}", all.join("; "))
            }
        };
        return Err(Failure::Critical(msg));
    };
    // Requests are small and sent at once; Nagle would only add latency to the timings.
    let _ = tcp.set_nodelay(true);
    let _ = writeln!(log, "connected to {addr} in {}", fmt_secs(elapsed));

    let Some((settings, alpn)) = tls else {
        return Ok(Opened {
            stream: Stream::Plain(tcp),
            cert: None,
        });
    };
    let (config, slot) = settings.client_config(alpn).map_err(Failure::Unknown)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| Failure::Unknown(format!("`{host}` cannot be a TLS server name: {e}")))?;
    let start = Instant::now();
    let handshake = bounded(
        ctx,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await;
    let cert = slot.info();
    if let Some(c) = &cert {
        let _ = writeln!(log, "server certificate: {}", c.describe());
    }
    let handshake = handshake.map_err(|s| Failure::Stopped(s, PHASE_TLS))?;
    let elapsed = start.elapsed();
    timings.tls = Some(elapsed);
    match handshake {
        Err(e) => Err(Failure::Critical(format!(
            "TLS handshake failed: {}",
            tls::describe_handshake_error(&e, cert.as_ref())
        ))),
        Ok(s) => {
            let conn = s.get_ref().1;
            let _ = writeln!(
                log,
                "TLS {} {} in {}{}",
                conn.protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default(),
                conn.negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()))
                    .unwrap_or_default(),
                fmt_secs(elapsed),
                conn.alpn_protocol()
                    .map(|p| format!(", ALPN {}", String::from_utf8_lossy(p)))
                    .unwrap_or_default()
            );
            Ok(Opened {
                stream: Stream::Tls(Box::new(s)),
                cert,
            })
        }
    }
}

/// An I/O error in a few words, without the "(os error N)" tail.
pub(crate) fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        io::ErrorKind::ConnectionAborted => "connection aborted".into(),
        io::ErrorKind::HostUnreachable => "host unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::BrokenPipe => "connection closed by peer (broken pipe)".into(),
        io::ErrorKind::UnexpectedEof => "connection closed by peer".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}

fn dns_reason(e: &io::Error) -> String {
    let text = io_reason(e);
    text.strip_prefix("failed to lookup address information: ")
        .map(str::to_string)
        .unwrap_or(text)
}

/// `1.234 s`.
pub(crate) fn fmt_secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// A timeout as configured: `30s`, `0.5s`.
pub(crate) fn fmt_timeout(d: Duration) -> String {
    let text = format!("{:.3}", d.as_secs_f64());
    format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Bytes as an escaped, quoted string, cut after `max` bytes.
pub(crate) fn quote_bytes(b: &[u8], max: usize) -> String {
    let shown = &b[..b.len().min(max)];
    let more = if b.len() > max { "…" } else { "" };
    format!("\"{}\"{more}", shown.escape_ascii())
}

/// `host:port`, with IPv6 addresses in brackets.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `[::1]` → `::1`.
pub(crate) fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A positioned diagnostic when a placeholder template is malformed.
pub(crate) fn check_template(
    def: &ProbeDef,
    config: &Config,
    key: &str,
    template: &str,
) -> Option<Diagnostic> {
    placeholders::names(template).err().map(|e| {
        config
            .sources
            .error(&def.params.key_span(key), format!("`{key}`: {e}"))
            .with_help("placeholders look like {hostname} or {param.NAME}; write {{ and }} for literal braces")
    })
}

/// Parses the duration param `key` (`30s`, `1h`), or a positioned diagnostic; `None` when the
/// key is absent.
pub(crate) fn duration_param(
    def: &ProbeDef,
    config: &Config,
    key: &str,
    value: Option<&str>,
) -> Result<Option<Duration>, Diagnostic> {
    value
        .map(|v| {
            gridprobe_config::parse_duration(v).map_err(|e| {
                config
                    .sources
                    .error(&def.params.key_span(key), format!("`{key}`: {e}"))
                    .with_help("write a duration such as \"30s\", \"5m\" or \"1h 30m\"")
            })
        })
        .transpose()
}

/// Compiles the regex of `key`, or a positioned diagnostic with the parser's reason.
pub(crate) fn compile_regex(
    def: &ProbeDef,
    config: &Config,
    key: &str,
    pattern: &str,
) -> Result<Regex, Diagnostic> {
    Regex::new(pattern).map_err(|e| {
        // The parser's message spans lines (pattern, caret, reason); keep the reason.
        let text = e.to_string();
        let reason = text
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .unwrap_or(text.trim())
            .to_string();
        config
            .sources
            .error(
                &def.params.key_span(key),
                format!("invalid regular expression in `{key}`: {reason}"),
            )
            .with_help("the syntax is Rust's regex crate (like RE2/PCRE without look-around)")
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::outcome::Status;
    use crate::tls::test_support::{build_with, context, line_of, TestCa};

    fn probe(params: &str) -> SharedProbe {
        crate::tls::test_support::built(build, NAME, params)
    }

    fn labels(o: &Outcome) -> Vec<&str> {
        crate::tls::test_support::perf_labels(o)
    }

    /// A line echo server; with an acceptor it speaks TLS. A line starting with "quiet" gets no
    /// answer (the connection stays open); "bye" is echoed, then the server closes.
    async fn echo_server(tls: Option<tokio_rustls::TlsAcceptor>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(sock).await {
                                echo_lines(s).await;
                            }
                        }
                        None => echo_lines(sock).await,
                    }
                });
            }
        });
        port
    }

    async fn echo_lines<S: AsyncRead + AsyncWrite + Unpin>(s: S) {
        let mut s = BufReader::new(s);
        let mut line = String::new();
        while s.read_line(&mut line).await.unwrap_or(0) > 0 {
            if line.starts_with("quiet") {
                // Hold the connection without answering until the client gives up.
                let _ = s.read_line(&mut String::new()).await;
                return;
            }
            if s.get_mut().write_all(line.as_bytes()).await.is_err() {
                return;
            }
            let _ = s.get_mut().flush().await;
            if line.starts_with("bye") {
                let _ = s.get_mut().shutdown().await;
                return;
            }
            line.clear();
        }
    }

    async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").port()
    }

    #[test]
    fn params_are_documented() {
        crate::registry::assert_params_documented::<TcpParams>(PARAMS);
    }

    #[tokio::test]
    async fn send_and_expect_against_echo_server() {
        let port = echo_server(None).await;
        let p = probe(&format!(
            "port = {port}\nsend = \"ping grid\\n\"\nexpect = '^ping \\w+\\n'"
        ));
        let o = p
            .run(&context("127.0.0.1", None, Duration::from_secs(5)))
            .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(
            o.summary
                .starts_with(&format!("TCP connect to 127.0.0.1:{port} in ")),
            "{}",
            o.summary
        );
        assert!(o.summary.contains("reply matched"), "{}", o.summary);
        assert_eq!(labels(&o), ["dns", "connect", "response"]);
        assert!(o.details.contains("received 10 bytes"), "{}", o.details);
    }

    #[tokio::test]
    async fn port_comes_from_the_endpoint() {
        let port = echo_server(None).await;
        let p = probe("");
        let ctx = context(
            "127.0.0.1",
            Some(&format!("xroot://127.0.0.1:{port}/")),
            Duration::from_secs(5),
        );
        assert_eq!(p.check_instance(&ctx), Ok(()));
        let o = p.run(&ctx).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert_eq!(labels(&o), ["dns", "connect"]);
    }

    #[tokio::test]
    async fn unexpected_reply_is_quoted_escaped() {
        let port = echo_server(None).await;
        let p = probe(&format!(
            "port = {port}\nsend = \"HELLO\\t\\\"x\\\"\\nbye\\n\"\nexpect = '^OK'"
        ));
        let o = p
            .run(&context("127.0.0.1", None, Duration::from_secs(5)))
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!(
                r#"unexpected reply "HELLO\t\"x\"\nbye\n" (expected /^OK/) on 127.0.0.1:{port}"#
            )
        );
    }

    #[tokio::test]
    async fn expect_mismatch_at_read_limit() {
        let port = echo_server(None).await;
        let p = probe(&format!(
            "port = {port}\nsend = \"abcdefgh\\n\"\nexpect = 'zzz'\nread_limit = 4"
        ));
        let o = p
            .run(&context("127.0.0.1", None, Duration::from_secs(5)))
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with("unexpected reply \"abcd\""),
            "{}",
            o.summary
        );
        assert!(o.summary.contains("first 4 bytes"), "{}", o.summary);
    }

    #[tokio::test]
    async fn silent_server_times_out_in_reply_read() {
        let port = echo_server(None).await;
        let p = probe(&format!("port = {port}\nsend = \"quiet\\n\"\nexpect = 'x'"));
        let timeout = Duration::from_millis(600);
        let start = Instant::now();
        let o = p.run(&context("127.0.0.1", None, timeout)).await;
        let took = start.elapsed();
        assert!(took < timeout + Duration::from_millis(900), "took {took:?}");
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with(&format!(
                "timeout after 0.6s during reply read on 127.0.0.1:{port}"
            )),
            "{}",
            o.summary
        );
        assert!(o.summary.contains("nothing received"), "{}", o.summary);
    }

    #[tokio::test]
    async fn closed_port_is_connection_refused() {
        let port = closed_port().await;
        let p = probe(&format!("port = {port}"));
        let o = p
            .run(&context("127.0.0.1", None, Duration::from_secs(5)))
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!("TCP connect failed: connection refused on 127.0.0.1:{port}")
        );
        assert_eq!(labels(&o), ["dns", "connect"]);
    }

    #[tokio::test]
    async fn tls_with_ca_file_and_without() {
        let ca = TestCa::new();
        let port = echo_server(Some(ca.acceptor(90))).await;
        let ctx = context("127.0.0.1", None, Duration::from_secs(5));

        let trusted = probe(&format!(
            "port = {port}\ntls = true\nca_file = '{}'\nsend = \"hi\\n\"\nexpect = '^hi'",
            ca.ca_pem_path()
        ));
        let o = trusted.run(&ctx).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.contains("TLS handshake in"), "{}", o.summary);
        assert_eq!(
            labels(&o),
            ["dns", "connect", "tls", "response", "cert_days_left"]
        );
        assert!(o.details.contains("gridprobe test server"), "{}", o.details);

        let untrusted = probe(&format!("port = {port}\ntls = true"));
        let o = untrusted.run(&ctx).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary
                .starts_with("TLS handshake failed: certificate verify failed: unknown issuer"),
            "{}",
            o.summary
        );
    }

    #[tokio::test]
    async fn expiring_certificate_warns() {
        let ca = TestCa::new();
        let port = echo_server(Some(ca.acceptor(10))).await;
        let p = probe(&format!(
            "port = {port}\ntls = true\nca_file = '{}'",
            ca.ca_pem_path()
        ));
        let o = p
            .run(&context("127.0.0.1", None, Duration::from_secs(5)))
            .await;
        assert_eq!(o.status, Status::Warning, "{o:?}");
        assert!(
            o.summary
                .starts_with(&format!("certificate of 127.0.0.1:{port} expires in 9.")),
            "{}",
            o.summary
        );
    }

    #[tokio::test]
    async fn cancel_gives_unknown() {
        let port = echo_server(None).await;
        let p = probe(&format!("port = {port}"));
        let ctx = context("127.0.0.1", None, Duration::from_secs(5));
        ctx.cancel.cancel();
        let o = p.run(&ctx).await;
        assert_eq!(o.status, Status::Unknown);
        assert!(o.summary.starts_with("cancelled"), "{}", o.summary);
    }

    #[test]
    fn missing_port_is_reported_per_instance() {
        let p = probe("");
        let err = p
            .check_instance(&context("ce.example.org", None, Duration::from_secs(5)))
            .unwrap_err();
        assert!(err.contains("set `port`"), "{err}");
        let ctx = context(
            "ce.example.org",
            Some("https://ce.example.org/"),
            Duration::from_secs(5),
        );
        assert_eq!(p.check_instance(&ctx), Ok(()));
    }

    #[test]
    fn build_errors_point_at_their_keys() {
        let params = "port = 22\nexpect = 'SSH-(2'";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert_eq!(ds.len(), 1, "{ds:?}");
        let loc = ds[0].location.as_ref().expect("positioned");
        assert_eq!(loc.line, line_of(NAME, params, "expect ="));
        assert!(
            ds[0]
                .message
                .contains("invalid regular expression in `expect`"),
            "{}",
            ds[0].message
        );
        assert!(!ds[0].message.contains('\n'), "{}", ds[0].message);

        let params = "port = 22\nca_file = '/nonexistent/ca.pem'";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert!(
            ds[0].message.contains("no effect without `tls = true`"),
            "{}",
            ds[0].message
        );

        let params = "port = 22\ntls = true\nca_file = '/nonexistent/ca.pem'";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert_eq!(
            ds[0].location.as_ref().map(|l| l.line),
            Some(line_of(NAME, params, "ca_file"))
        );
        assert!(ds[0].message.contains("no such file"), "{}", ds[0].message);

        let params = "host = '{hostname'";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert_eq!(
            ds[0].location.as_ref().map(|l| l.line),
            Some(line_of(NAME, params, "host ="))
        );
    }
}
