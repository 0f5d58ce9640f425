//! `tcp` probe kind: connect to `host:port` (optionally over TLS), optionally send a string,
//! and match what comes back against a regular expression.
//!
//! This module also holds the transport the `http` kind builds on: DNS resolution, TCP connect
//! over the resolved addresses in order, the TLS handshake, and the deadline/cancel guard that
//! names the phase a timeout hit.

use std::fmt::Write as _;
use std::io;
use std::time::Instant;

use async_trait::async_trait;
use gridprobe_config::{Config, Diagnostic, ProbeDef};
use regex::bytes::Regex;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::kind::{ParamDefault, ParamDoc};
use crate::net::tls::{self, tls_params, TlsSettings};
use crate::net::{host_port, io_reason, open, strip_brackets, Failure, Timings};
use crate::outcome::{bound_summary, fmt_secs, quote_bytes, seconds, Outcome, Perfdatum};
use crate::params::{check_template, compile_regex};
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

/// Phase names of the exchange, for timeout messages.
const PHASE_SEND: &str = "send";
const PHASE_READ: &str = "reply read";

/// Parameters.
pub const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "host",
        ty: "string",
        default: ParamDefault::Value("{hostname}"),
        description: "Host name or IP address to connect to; placeholders are expanded",
    },
    ParamDoc {
        name: "port",
        ty: "integer",
        default: ParamDefault::Optional,
        description: "TCP port. Required unless the service endpoint URL has a port or a scheme \
                      with a known one (http 80, https/davs 443, root/xroot 1094, gsiftp 2811, \
                      srm/httpg 8443, ldap 389, ldaps 636)",
    },
    ParamDoc {
        name: "send",
        ty: "string",
        default: ParamDefault::Optional,
        description: "Sent after connecting (and the TLS handshake), as written: TOML escapes \
                      such as \\r\\n apply; placeholders are expanded. Optional",
    },
    ParamDoc {
        name: "expect",
        ty: "string",
        default: ParamDefault::Optional,
        description: "Regular expression (Rust regex syntax, on raw bytes) that the reply must \
                      match; reading stops at the first match, at end of stream or at \
                      `read_limit`. Without it nothing is read",
    },
    ParamDoc {
        name: "tls",
        ty: "bool",
        default: ParamDefault::Value("false"),
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
        default: ParamDefault::Value("65536"),
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
    let p: TcpParams = crate::params::read(def, config)?;
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
        TlsSettings::read(def, config, tls_params!(p), &mut errors)
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
            let sent = ctx
                .bounded(async {
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
            let read = ctx
                .bounded(read_until_match(
                    &mut stream,
                    re,
                    self.read_limit,
                    &mut received,
                ))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::outcome::Status;
    use crate::test_support::{build_with, context, line_of, TestCa};

    fn probe(params: &str) -> SharedProbe {
        crate::test_support::built(build, NAME, params)
    }

    fn labels(o: &Outcome) -> Vec<&str> {
        crate::test_support::perf_labels(o)
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
        crate::kind::assert_params_documented::<TcpParams>(PARAMS);
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
                "timeout after 600ms during reply read on 127.0.0.1:{port}"
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
