//! Connecting: DNS lookup, TCP connect to each address in turn, the TLS handshake, each phase
//! timed and logged, and the failure of an attempt in words (`Failure`, `io_reason`).

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use gridprobe_config::time::format_duration;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::tls::{self, CertInfo, TlsSettings};
use crate::outcome::{fmt_secs, seconds, ConnectionFault, Outcome, Perfdatum};
use crate::{ProbeContext, Stop};

/// Phase names, as they appear in "timeout after 5s during <phase> on <target>".
pub(crate) const PHASE_DNS: &str = "DNS lookup";
/// TCP connect phase.
pub(crate) const PHASE_CONNECT: &str = "TCP connect";
/// TLS handshake phase.
pub(crate) const PHASE_TLS: &str = "TLS handshake";

/// How a probe attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Deadline or cancellation, during the named phase.
    Stopped(Stop, &'static str),
    /// The service failed (CRITICAL); one line without the target.
    Critical(String),
    /// The connection failed before the service could answer (DNS, TCP connect, the TLS
    /// transport): CRITICAL, marked so that a failing monitoring host can be told apart.
    Connection(ConnectionFault, String),
    /// The probe could not decide, e.g. an unreadable local file (UNKNOWN).
    Unknown(String),
}

impl Failure {
    /// Where the connection failed, when it failed before the service could answer (DNS,
    /// connect, TLS transport, or a timeout in one of those phases); kinds that build their own
    /// outcome carry it on, so the self-check can tell a failing monitoring host apart.
    pub(crate) fn connection_fault(&self) -> Option<ConnectionFault> {
        match self {
            Failure::Connection(fault, _) => Some(*fault),
            Failure::Stopped(Stop::Timeout, phase)
                if matches!(*phase, PHASE_DNS | PHASE_CONNECT | PHASE_TLS) =>
            {
                Some(ConnectionFault::Timeout)
            }
            _ => None,
        }
    }

    /// The outcome, naming `target` (the URL or host:port).
    pub(crate) fn outcome(self, ctx: &ProbeContext, target: &str) -> Outcome {
        let fault = self.connection_fault();
        match self {
            Failure::Stopped(Stop::Timeout, phase) => {
                let o = Outcome::critical(format!(
                    "timeout after {} during {phase} on {target}",
                    format_duration(ctx.timeout)
                ));
                match fault {
                    Some(fault) => o.with_connection_fault(fault),
                    None => o,
                }
            }
            Failure::Stopped(Stop::Cancelled, phase) => {
                Outcome::unknown(format!("cancelled during {phase} on {target}"))
            }
            Failure::Critical(m) => Outcome::critical(format!("{m} on {target}")),
            Failure::Connection(fault, m) => {
                Outcome::critical(format!("{m} on {target}")).with_connection_fault(fault)
            }
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
            let found = ctx
                .bounded(tokio::net::lookup_host((host, port)))
                .await
                .map_err(|s| Failure::Stopped(s, PHASE_DNS))?;
            let elapsed = start.elapsed();
            timings.dns = Some(elapsed);
            let addrs: Vec<SocketAddr> = found
                .map_err(|e| {
                    Failure::Connection(
                        ConnectionFault::Dns,
                        format!("DNS lookup of {host} failed: {}", dns_reason(&e)),
                    )
                })?
                .collect();
            if addrs.is_empty() {
                return Err(Failure::Connection(
                    ConnectionFault::Dns,
                    format!("DNS lookup of {host} returned no address"),
                ));
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
            match ctx
                .bounded(tokio::time::timeout(share, TcpStream::connect(*addr)))
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
            ctx.bounded(TcpStream::connect(*addr))
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
        return Err(Failure::Connection(ConnectionFault::Connect, msg));
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
    let proxy = ctx.proxy_file();
    let (config, slot) = settings
        .client_config_for(alpn, proxy.as_deref())
        .map_err(Failure::Unknown)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| Failure::Unknown(format!("`{host}` cannot be a TLS server name: {e}")))?;
    let start = Instant::now();
    let handshake = ctx
        .bounded(tokio_rustls::TlsConnector::from(config).connect(name, tcp))
        .await;
    let cert = slot.info();
    if let Some(c) = &cert {
        let _ = writeln!(log, "server certificate: {}", c.describe());
    }
    let handshake = handshake.map_err(|s| Failure::Stopped(s, PHASE_TLS))?;
    let elapsed = start.elapsed();
    timings.tls = Some(elapsed);
    match handshake {
        Err(e) => {
            let msg = format!(
                "TLS handshake failed: {}",
                tls::describe_handshake_error(&e, cert.as_ref())
            );
            // A certificate or an alert is the server's answer; only a broken transport
            // (reset, closed, aborted) may be the monitoring host's network.
            if transport_error(&e) {
                Err(Failure::Connection(ConnectionFault::TlsTransport, msg))
            } else {
                Err(Failure::Critical(msg))
            }
        }
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

/// Whether a handshake error is the socket's (reset, closed, aborted, unreachable) rather
/// than TLS's (a certificate, an alert, a protocol error: rustls reports those as
/// `InvalidData` or `Other` wrapping its own error).
fn transport_error(e: &io::Error) -> bool {
    e.get_ref().is_none_or(|inner| !inner.is::<rustls::Error>())
        && matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::TimedOut
        )
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

/// The connection-level fault behind a client library's error (a database driver's, say), when
/// its chain of sources holds an I/O error of the connection itself: a refused, unreachable or
/// timed-out connect, or a name that did not resolve. Errors from the service (a refused login,
/// a bad query) give `None`.
pub(crate) fn io_connection_fault(
    e: &(dyn std::error::Error + 'static),
) -> Option<ConnectionFault> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::AddrNotAvailable => Some(ConnectionFault::Connect),
                io::ErrorKind::TimedOut => Some(ConnectionFault::Timeout),
                _ if io.to_string().contains("failed to lookup address") => {
                    Some(ConnectionFault::Dns)
                }
                _ => None,
            };
        }
        source = s.source();
    }
    None
}

fn dns_reason(e: &io::Error) -> String {
    let text = io_reason(e);
    text.strip_prefix("failed to lookup address information: ")
        .map(str::to_string)
        .unwrap_or(text)
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
