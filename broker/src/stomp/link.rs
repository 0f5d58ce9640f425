//! One STOMP 1.2 connection: TCP (TLS over rustls for `stomp+ssl://` and `stomps://`), the
//! CONNECT / CONNECTED exchange with heart-beats negotiated, a reader task that decodes frames
//! and enforces the broker's heart-beats, and a writer shared with a heart-beat task.
//!
//! Heart-beats (STOMP 1.2 §heart-beating): gridprobe offers `heartbeat` both ways. It sends an
//! end-of-line whenever it has been silent for the negotiated period (the larger of its offer
//! and what the broker wants), and gives up on a broker silent for twice the period the broker
//! promised, so a half-open connection is noticed even while no batch is in flight.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use gridprobe_config::publish::{PublishTarget, StompSettings};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::frame::{Decoder, Frame, Item, Limits};

/// How long TCP, TLS and the CONNECT exchange may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long writing one batch of frames may block before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames decoded but not yet taken by the publisher or consumer.
const QUEUE: usize = 1024;

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

struct Writer {
    half: WriteHalf<Box<dyn Io>>,
    /// When gridprobe last wrote anything (a frame or a heart-beat).
    last: Instant,
}

/// Where a STOMP URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
    /// The URL's user name: the CONNECT frame's `login`.
    pub(crate) login: Option<String>,
}

/// Reads `stomp://[login@]host[:port]`, `stomp+ssl://…` or `stomps://…` (default ports 61613
/// and 61614).
pub(crate) fn endpoint(url: &str) -> Result<Endpoint, String> {
    let u = url::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    let tls = match u.scheme() {
        "stomp" => false,
        "stomp+ssl" | "stomps" => true,
        other => return Err(format!("not a STOMP URL (scheme {other})")),
    };
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("the URL names no host")?
        // IPv6 literals come bracketed; connecting wants them bare.
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let login = match u.username() {
        "" => None,
        user => Some(
            percent_decode(user)
                .ok_or("the user name in the URL is not valid percent-encoded UTF-8")?,
        ),
    };
    Ok(Endpoint {
        host,
        port: u.port().unwrap_or(if tls { 61614 } else { 61613 }),
        tls,
        login,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The two heart-beat periods after negotiation (zero: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeartBeats {
    /// gridprobe sends something at least this often.
    pub(crate) send_every: Duration,
    /// The broker promised to send something at least this often.
    pub(crate) expect_every: Duration,
}

/// Negotiates heart-beats: ours `cx,cy` (both `offer`) against the broker's `sx,sy`.
pub(crate) fn negotiate(offer: Duration, broker: Option<&str>) -> Result<HeartBeats, String> {
    let (sx, sy) = match broker {
        None => (0, 0),
        Some(text) => {
            let (a, b) = text
                .split_once(',')
                .ok_or_else(|| format!("invalid heart-beat header `{text}` from the broker"))?;
            let parse = |v: &str| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("invalid heart-beat header `{text}` from the broker"))
            };
            (parse(a)?, parse(b)?)
        }
    };
    // Millisecond counts up to u64::MAX from the broker: saturate rather than overflow.
    let ours = u64::try_from(offer.as_millis()).unwrap_or(u64::MAX);
    let period = |a: u64, b: u64| {
        if a == 0 || b == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(a.max(b))
        }
    };
    Ok(HeartBeats {
        send_every: period(ours, sy),
        expect_every: period(ours, sx),
    })
}

/// An open, logged-in STOMP connection.
pub(crate) struct Link {
    writer: Arc<Mutex<Writer>>,
    frames: mpsc::Receiver<Result<Frame, String>>,
    tasks: Vec<JoinHandle<()>>,
    /// The broker's `server` header (or `unknown`).
    pub(crate) server: String,
    /// The negotiated heart-beats.
    pub(crate) heartbeats: HeartBeats,
    /// Hidden from anything the broker says back.
    passcode: Option<String>,
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Link {
    /// Writes frames in one go (a batch is one write and one flush).
    pub(crate) async fn send(&self, frames: &[Frame]) -> Result<(), String> {
        let mut bytes = Vec::new();
        for f in frames {
            bytes.extend_from_slice(&f.encode());
        }
        let mut w = self.writer.lock().await;
        let work = async {
            w.half.write_all(&bytes).await?;
            w.half.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, work).await {
            Ok(Ok(())) => {
                w.last = Instant::now();
                Ok(())
            }
            Ok(Err(e)) => Err(format!("cannot write to the broker: {e}")),
            Err(_) => Err(format!(
                "writing to the broker blocked for {WRITE_TIMEOUT:?}"
            )),
        }
    }

    /// The next frame from the broker; `Err` when the connection is gone (closed, broken, or
    /// silent past its heart-beat).
    pub(crate) async fn next(&mut self) -> Result<Frame, String> {
        match self.frames.recv().await {
            Some(r) => r,
            None => Err("the connection to the broker is closed".into()),
        }
    }

    /// Whether the reader has already reported the connection gone (closed, broken, silent
    /// past its heart-beat) while nobody was waiting; frames left over from an earlier batch
    /// are dropped on the way (their receipt ids are never reused).
    pub(crate) fn is_broken(&mut self) -> bool {
        loop {
            match self.frames.try_recv() {
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "the idle STOMP connection is gone; reconnecting");
                    return true;
                }
                Err(mpsc::error::TryRecvError::Empty) => return false,
                Err(mpsc::error::TryRecvError::Disconnected) => return true,
            }
        }
    }

    /// The text of an ERROR frame, with the passcode hidden if the broker echoed it.
    pub(crate) fn error_text(&self, f: &Frame) -> String {
        error_text(f, self.passcode.as_deref())
    }

    /// Says goodbye (DISCONNECT with a receipt, waiting briefly for it), then closes.
    pub(crate) async fn close(mut self) {
        let bye = Frame::new("DISCONNECT").header("receipt", "gridprobe-bye");
        if self.send(&[bye]).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(f) = self.next().await {
                    if f.command == "RECEIPT" {
                        break;
                    }
                }
            })
            .await;
        }
        let mut w = self.writer.lock().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), w.half.shutdown()).await;
    }
}

/// An ERROR frame in words: its `message` header and the start of its body, with the passcode
/// (if any) masked.
pub(crate) fn error_text(f: &Frame, passcode: Option<&str>) -> String {
    let mut text = f.get("message").unwrap_or("no message").to_string();
    let body: String = String::from_utf8_lossy(&f.body)
        .chars()
        .take(300)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let body = body.trim();
    if !body.is_empty() && body != text {
        text.push_str(": ");
        text.push_str(body);
    }
    match passcode {
        Some(p) if !p.is_empty() => text.replace(p, "***"),
        _ => text,
    }
}

/// The TLS client configuration: the system's roots plus `ca_file`.
fn tls_config(settings: &StompSettings) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = &settings.ca_file {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let mut added = 0usize;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| format!("ca_file {}: invalid PEM: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: unusable certificate: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "ca_file {}: no PEM certificate in it",
                path.display()
            ));
        }
    }
    if roots.is_empty() {
        return Err("no trusted CA certificate (system store empty, no ca_file)".into());
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// Opens the transport (TCP, then TLS when the URL says so).
async fn open(ep: &Endpoint, settings: &StompSettings) -> Result<Box<dyn Io>, String> {
    let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", ep.host, ep.port))?;
    let _ = tcp.set_nodelay(true);
    if !ep.tls {
        return Ok(Box::new(tcp));
    }
    let config = tls_config(settings)?;
    let name = ServerName::try_from(ep.host.clone())
        .map_err(|e| format!("`{}` is not a TLS server name: {e}", ep.host))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {}:{} failed: {e}", ep.host, ep.port))?;
    Ok(Box::new(tls))
}

/// Connects and logs in; the reader and heart-beat tasks run until the link is dropped.
pub(crate) async fn connect(
    target: &PublishTarget,
    settings: &StompSettings,
) -> Result<Link, String> {
    let ep = endpoint(&target.url)?;
    let passcode = target.password.read()?;
    let max_frame = usize::try_from(settings.max_frame_bytes).unwrap_or(usize::MAX);
    let work = async {
        let io = open(&ep, settings).await?;
        let (mut read, mut write) = tokio::io::split(io);
        let offer = settings.heartbeat.as_millis();
        let mut hello = Frame::new("CONNECT")
            .header("accept-version", "1.2")
            .header("host", settings.virtual_host.as_str())
            .header("heart-beat", format!("{offer},{offer}"));
        if let Some(login) = &ep.login {
            hello = hello.header("login", login.as_str());
        }
        if let Some(p) = &passcode {
            hello = hello.header("passcode", p.as_str());
        }
        write
            .write_all(&hello.encode())
            .await
            .map_err(|e| format!("cannot write to the broker: {e}"))?;
        write
            .flush()
            .await
            .map_err(|e| format!("cannot write to the broker: {e}"))?;
        let mut decoder = Decoder::new(Limits {
            max_frame,
            ..Limits::default()
        });
        let mut buf = BytesMut::with_capacity(8192);
        let answer = loop {
            match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
                Some(Item::Frame(f)) => break f,
                Some(Item::HeartBeat) => continue,
                None => {}
            }
            let n = read
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("reading the broker's answer: {e}"))?;
            if n == 0 {
                return Err::<_, String>(
                    "the broker closed the connection before answering CONNECT".into(),
                );
            }
        };
        Ok((read, write, decoder, buf, answer))
    };
    let (read, write, decoder, buf, answer) = tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .map_err(|_| {
        format!(
            "connecting to {}:{} timed out after {CONNECT_TIMEOUT:?}",
            ep.host, ep.port
        )
    })??;
    match answer.command.as_str() {
        "CONNECTED" => {}
        "ERROR" => {
            return Err(format!(
                "the broker refused the connection: {}",
                error_text(&answer, passcode.as_deref())
            ))
        }
        other => return Err(format!("the broker answered CONNECT with {other}")),
    }
    let version = answer.get("version").unwrap_or("1.0");
    if version != "1.2" {
        return Err(format!(
            "the broker speaks STOMP {version}; gridprobe needs 1.2"
        ));
    }
    let heartbeats = negotiate(settings.heartbeat, answer.get("heart-beat"))?;
    let server = answer.get("server").unwrap_or("unknown").to_string();
    let writer = Arc::new(Mutex::new(Writer {
        half: write,
        last: Instant::now(),
    }));
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut tasks = vec![tokio::spawn(read_loop(
        read,
        decoder,
        buf,
        heartbeats.expect_every,
        tx,
    ))];
    if !heartbeats.send_every.is_zero() {
        tasks.push(tokio::spawn(beat_loop(
            writer.clone(),
            heartbeats.send_every,
        )));
    }
    Ok(Link {
        writer,
        frames: rx,
        tasks,
        server,
        heartbeats,
        passcode,
    })
}

/// Decodes frames into the channel; ends with an `Err` item when the broker closes, breaks the
/// protocol, or stays silent for twice its heart-beat period.
async fn read_loop(
    mut read: ReadHalf<Box<dyn Io>>,
    mut decoder: Decoder,
    mut buf: BytesMut,
    expect_every: Duration,
    tx: mpsc::Sender<Result<Frame, String>>,
) {
    let window = expect_every.saturating_mul(2);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Item::Frame(f))) => {
                    if tx.send(Ok(f)).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Item::HeartBeat)) => {}
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(format!("protocol error: {e}"))).await;
                    return;
                }
            }
        }
        let read = read.read_buf(&mut buf);
        let n = if window.is_zero() {
            read.await
        } else {
            match tokio::time::timeout(window, read).await {
                Ok(r) => r,
                Err(_) => {
                    let _ = tx
                        .send(Err(format!(
                            "no heart-beat from the broker for {window:?} (it promised one every {expect_every:?})"
                        )))
                        .await;
                    return;
                }
            }
        };
        match n {
            Ok(0) => {
                let _ = tx
                    .send(Err("the broker closed the connection".into()))
                    .await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Err(format!("reading from the broker: {e}"))).await;
                return;
            }
        }
    }
}

/// Sends an end-of-line whenever gridprobe has been silent for `every`.
async fn beat_loop(writer: Arc<Mutex<Writer>>, every: Duration) {
    // Checking twice per period keeps the gap under `every` without a write per check.
    let mut tick = tokio::time::interval(every / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut w = writer.lock().await;
        if w.last.elapsed() < every / 2 {
            continue;
        }
        let beat = async {
            w.half.write_all(b"\n").await?;
            w.half.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, beat).await {
            Ok(Ok(())) => w.last = Instant::now(),
            // The reader notices a dead connection; nothing more to do here.
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = endpoint("stomp+ssl://gp%40cern@mq.example.org").expect("valid");
        assert_eq!(
            e,
            Endpoint {
                host: "mq.example.org".into(),
                port: 61614,
                tls: true,
                login: Some("gp@cern".into())
            }
        );
        let e = endpoint("stomp://[::1]:1234").expect("valid");
        assert_eq!((e.host.as_str(), e.port, e.tls), ("::1", 1234, false));
        assert!(endpoint("amqp://x").is_err());
    }

    #[test]
    fn heart_beats_are_negotiated() {
        let ten = Duration::from_secs(10);
        let hb = negotiate(ten, Some("5000,20000")).expect("valid");
        assert_eq!(hb.send_every, Duration::from_secs(20));
        assert_eq!(hb.expect_every, ten);
        let hb = negotiate(ten, Some("0,0")).expect("valid");
        assert!(hb.send_every.is_zero() && hb.expect_every.is_zero());
        let hb = negotiate(ten, None).expect("valid");
        assert!(hb.send_every.is_zero());
        let hb = negotiate(ten, Some("18446744073709551615,1")).expect("no overflow");
        assert_eq!(hb.expect_every, Duration::from_millis(u64::MAX));
        assert!(negotiate(ten, Some("x,1")).is_err());
        assert!(negotiate(ten, Some("100")).is_err());
    }

    #[test]
    fn broker_errors_never_show_the_passcode() {
        let f = Frame::new("ERROR")
            .header("message", "Access refused for user 'gp'")
            .body(b"login gp passcode s3cret refused\n".to_vec());
        let t = error_text(&f, Some("s3cret"));
        assert!(!t.contains("s3cret"), "{t}");
        assert!(t.contains("Access refused"), "{t}");
    }

    /// A broker that promises heart-beats and then goes silent is given up within twice the
    /// period, and gridprobe's own heart-beats reach it meanwhile.
    #[tokio::test]
    async fn a_silent_broker_is_detected_and_heart_beats_are_sent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.contains(&0) {
                let n = s.read(&mut buf).await.expect("read");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"CONNECTED\nversion:1.2\nheart-beat:1000,1000\n\n\0")
                .await
                .expect("write");
            // Silent from now on; count the client's heart-beats for 2.5 s.
            let mut beats = 0;
            let end = Instant::now() + Duration::from_millis(2500);
            while let Ok(Ok(n)) = tokio::time::timeout_at(end, s.read(&mut buf)).await {
                if n == 0 {
                    break;
                }
                beats += buf[..n].iter().filter(|&&b| b == b'\n').count();
            }
            beats
        });
        let target = PublishTarget {
            name: "t".into(),
            url: format!("stomp://127.0.0.1:{port}"),
            password: gridprobe_config::publish::PasswordSource::None,
            kind: gridprobe_config::publish::PublishKind::Nats {
                subject: String::new(),
                stream: String::new(),
                stream_max_age: None,
                consumer: String::new(),
            },
        };
        let settings = StompSettings {
            destination: "/queue/x".into(),
            subscribe: None,
            virtual_host: "/".into(),
            heartbeat: Duration::from_secs(1),
            receipt_timeout: Duration::from_secs(5),
            max_frame_bytes: 1 << 20,
            ca_file: None,
        };
        let started = Instant::now();
        let mut link = connect(&target, &settings).await.expect("connects");
        assert_eq!(link.heartbeats.expect_every, Duration::from_secs(1));
        let e = link.next().await.expect_err("silence is an error");
        assert!(e.contains("no heart-beat from the broker"), "{e}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        assert!(server.await.expect("server") >= 2, "heart-beats sent");
    }
}
