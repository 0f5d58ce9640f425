//! STOMP publishing end to end with the real binary against RabbitMQ's STOMP plugin (a private
//! node, scripts/services/stomp.sh): what `serve` publishes reaches a STOMP subscriber with the
//! ETF/ARGO fields and the STOMP headers; a broker that goes down and comes back gets every
//! spooled result, in order; `gridprobe consume` subscribes with client-individual ACKs and
//! builds the central matrix; configuration errors are positioned by `check`.
//!
//! The subscriber here is written from the STOMP 1.2 text, independently of gridprobe's own
//! framing module, so the two cannot share a misreading.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, closed_port, gridprobe, repo, texts, wait_until, Serve};

/// The test broker's URL (with its passcode, which the tests move to a file).
fn stomp_url() -> Option<url::Url> {
    let found = std::env::var("GRIDPROBE_TEST_STOMP_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| url::Url::parse(&v).ok());
    common::required(
        found,
        "GRIDPROBE_TEST_STOMP_URL (a RabbitMQ node with the STOMP plugin)",
        "scripts/test-env.sh stomp starts one and exports it",
    )
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    common::write_file(dir, name, body)
}

/// Two probes that give a CRITICAL result every second without touching the network.
fn probes() -> String {
    let port = closed_port();
    format!(
        r#"
vo = "e2e"
[defaults]
interval = "1s"
timeout = "500ms"
[server]
instance = "gp-stomp-e2e"
startup_spread = "1s"
shutdown_grace = "2s"

[[site]]
name = "T2_STOMP"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "127.0.0.1"

[[probe]]
metric = "org.e2e.stomp-a"
kind = "tcp"
flavours = ["CE"]
  [probe.params]
  port = {port}

[[probe]]
metric = "org.e2e.stomp-b"
kind = "tcp"
flavours = ["CE"]
  [probe.params]
  port = {port}
"#
    )
}

/// A `[[publish]]` table for the broker at `url` (port replaced by `port` when given), the
/// passcode in a file beside the configuration.
fn publish_table(dir: &Path, url: &url::Url, port: Option<u16>, destination: &str) -> String {
    std::fs::write(
        dir.join("stomp-passcode"),
        format!("{}\n", url.password().unwrap_or("")),
    )
    .expect("passcode file");
    format!(
        r#"
[[publish]]
name = "mq"
kind = "stomp"
url = "stomp://{}@{}:{}"
password_file = "stomp-passcode"
destination = "{destination}"
heartbeat = "2s"
receipt_timeout = "10s"
"#,
        url.username(),
        url.host_str().unwrap_or("127.0.0.1"),
        port.or(url.port()).unwrap_or(61613)
    )
}

/// A STOMP frame as read by [`Subscriber`].
#[derive(Debug)]
struct RawFrame {
    command: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A minimal STOMP 1.2 subscriber over a blocking socket (auto acknowledgement).
struct Subscriber {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n")
        .replace("\\r", "\r")
        .replace("\\c", ":")
        .replace("\\\\", "\\")
}

impl Subscriber {
    fn connect(url: &url::Url, port: u16) -> Subscriber {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the broker");
        let mut s = Subscriber {
            stream,
            buf: Vec::new(),
        };
        let hello = format!(
            "CONNECT\naccept-version:1.2\nhost:/\nlogin:{}\npasscode:{}\nheart-beat:0,0\n\n\0",
            url.username(),
            url.password().unwrap_or("")
        );
        s.stream.write_all(hello.as_bytes()).expect("CONNECT");
        let f = s
            .next(Duration::from_secs(10))
            .expect("an answer to CONNECT");
        assert_eq!(f.command, "CONNECTED", "{f:?}");
        s
    }

    fn send_raw(&mut self, frame: &str) {
        self.stream.write_all(frame.as_bytes()).expect("write");
    }

    fn subscribe(&mut self, destination: &str) {
        self.send_raw(&format!(
            "SUBSCRIBE\nid:t\ndestination:{destination}\nack:auto\n\n\0"
        ));
    }

    /// The next frame within `deadline`, heart-beats skipped.
    fn next(&mut self, deadline: Duration) -> Option<RawFrame> {
        let end = Instant::now() + deadline;
        loop {
            while self.buf.first().is_some_and(|&b| b == b'\n' || b == b'\r') {
                self.buf.remove(0);
            }
            if let Some(f) = self.parse() {
                return Some(f);
            }
            let left = end.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .expect("timeout");
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }

    fn parse(&mut self) -> Option<RawFrame> {
        let head_end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.lines();
        let command = lines.next()?.trim_end_matches('\r').to_string();
        let mut headers = BTreeMap::new();
        for line in lines {
            let (k, v) = line.trim_end_matches('\r').split_once(':')?;
            headers.entry(unescape(k)).or_insert_with(|| unescape(v));
        }
        let start = head_end + 2;
        let end = match headers.get("content-length") {
            Some(n) => start + n.parse::<usize>().ok()?,
            None => start + self.buf[start..].iter().position(|&b| b == 0)?,
        };
        if self.buf.len() <= end {
            return None;
        }
        let body = self.buf[start..end].to_vec();
        self.buf.drain(..=end);
        Some(RawFrame {
            command,
            headers,
            body,
        })
    }

    /// Every MESSAGE until the marker this sends to the same queue comes back: a queue read
    /// to its end without waiting on a clock.
    fn drain(&mut self, destination: &str) -> Vec<RawFrame> {
        let marker = format!("marker-{}", std::process::id());
        self.send_raw(&format!(
            "SEND\ndestination:{destination}\ncontent-type:text/plain\ncontent-length:{}\n\n{marker}\0",
            marker.len()
        ));
        let mut out = Vec::new();
        loop {
            let f = self
                .next(Duration::from_secs(30))
                .expect("the marker comes back");
            assert_eq!(f.command, "MESSAGE", "{f:?}");
            if f.body == marker.as_bytes() {
                return out;
            }
            out.push(f);
        }
    }
}

/// (metric, start, attempt) of every result in a store, and how many rows repeat one.
fn stored_keys(store: &str) -> (BTreeSet<(String, i64, i64)>, usize) {
    let Ok(conn) = rusqlite::Connection::open(store) else {
        return (BTreeSet::new(), 0);
    };
    let Ok(mut stmt) = conn.prepare(
        "SELECT c.metric, r.started_at_ms, r.attempt FROM results r JOIN cells c ON c.id = r.cell_id",
    ) else {
        return (BTreeSet::new(), 0);
    };
    let rows: Vec<(String, i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default();
    let n = rows.len();
    let set: BTreeSet<_> = rows.into_iter().collect();
    let dups = n - set.len();
    (set, dups)
}

fn message_key(v: &serde_json::Value) -> (String, i64, i64) {
    (
        v["metric"].as_str().unwrap_or("").to_string(),
        v["started_at_ms"].as_i64().unwrap_or(-1),
        v["attempt"].as_i64().unwrap_or(-1),
    )
}

fn spooled_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len().saturating_sub(8))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn serve_publishes_persistent_messages_with_etf_and_argo_fields() {
    let Some(url) = stomp_url() else {
        return;
    };
    let port = url.port().unwrap_or(61613);
    let dir = tempfile::tempdir().expect("tmp");
    let queue = format!("/queue/gpe2e.fields.{}", std::process::id());
    let cfg = write(
        dir.path(),
        "vo.toml",
        &format!(
            "{}{}",
            probes(),
            publish_table(dir.path(), &url, None, &queue)
        ),
    );
    let store = dir.path().join("site.sqlite");
    let mut serve = Serve::start(&cfg, store.to_str().expect("utf-8"));
    serve.wait_for("gridprobe serving vo e2e", Duration::from_secs(30));
    serve.wait_for("publish: stomp mq", Duration::from_secs(5));

    let mut sub = Subscriber::connect(&url, port);
    sub.subscribe(&queue);
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while seen.len() < 4 && Instant::now() < end {
        if let Some(f) = sub.next(Duration::from_secs(5)) {
            assert_eq!(f.command, "MESSAGE", "{f:?}");
            seen.push(f);
        }
    }
    assert!(seen.len() >= 4, "messages: {seen:?}\n{}", serve.output());
    for f in &seen {
        let h = &f.headers;
        assert_eq!(h.get("destination"), Some(&queue), "{h:?}");
        assert_eq!(
            h.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert_eq!(
            h.get("persistent").map(String::as_str),
            Some("true"),
            "{h:?}"
        );
        assert_eq!(h.get("site").map(String::as_str), Some("T2_STOMP"), "{h:?}");
        assert_eq!(
            h.get("status").map(String::as_str),
            Some("CRITICAL"),
            "{h:?}"
        );
        assert_eq!(h.get("vo").map(String::as_str), Some("e2e"), "{h:?}");
        let v: serde_json::Value = serde_json::from_slice(&f.body).expect("a JSON body");
        // ETF's metric result fields.
        for key in [
            "metric",
            "hostname",
            "service_flavour",
            "status",
            "summary",
            "details",
            "perfdata",
            "timestamp",
            "site",
            "vo",
            "message_id",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        assert!(
            v["metric"]
                .as_str()
                .is_some_and(|m| m.starts_with("org.e2e.stomp-")),
            "{v}"
        );
        assert_eq!(v["status"], "CRITICAL");
        assert_eq!(v["hostname"], "127.0.0.1");
        assert_eq!(h.get("metric").map(String::as_str), v["metric"].as_str());
        assert_eq!(
            h.get("gridprobe-message-id").map(String::as_str),
            v["message_id"].as_str()
        );
        // ARGO's names.
        assert_eq!(v["monitoring_host"], "gp-stomp-e2e");
        assert_eq!(v["service"], "CE");
        assert!(v["actual_data"].is_string(), "{v}");
        let ts = v["timestamp"].as_str().unwrap_or("");
        assert!(ts.len() == 20 && ts.ends_with('Z'), "{ts}");
    }
    serve.terminate_cleanly();
    let out = serve.output();
    assert!(out.contains("connected to the STOMP broker"), "{out}");
    assert!(
        !out.contains("gp-stomp-test-passcode"),
        "the passcode is never shown:\n{out}"
    );
}

#[test]
fn a_wrong_passcode_is_reported_without_echoing_it_and_results_are_spooled() {
    let Some(mut url) = stomp_url() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let _ = url.set_password(Some("wrong-passcode-4711"));
    let cfg = write(
        dir.path(),
        "vo.toml",
        &format!(
            "{}{}",
            probes(),
            publish_table(dir.path(), &url, None, "/queue/gpe2e.refused")
        ),
    );
    let store = dir.path().join("site.sqlite");
    let mut serve = Serve::start(&cfg, store.to_str().expect("utf-8"));
    let spool = dir.path().join("site.sqlite.spool").join("publish-mq");
    assert!(
        wait_until(Duration::from_secs(60), || spooled_bytes(&spool) > 1000),
        "nothing spooled:\n{}",
        serve.output()
    );
    assert!(
        wait_until(Duration::from_secs(30), || serve
            .output()
            .contains("the broker refused the connection")),
        "{}",
        serve.output()
    );
    serve.terminate_cleanly();
    assert!(
        !serve.output().contains("wrong-passcode-4711"),
        "the passcode is never shown:\n{}",
        serve.output()
    );
}

/// A RabbitMQ node of this test's own, stopped and started again (scripts/stomp-node.sh).
struct Node {
    dir: PathBuf,
    port: u16,
    dist: u16,
}

impl Node {
    fn run(&self, what: &str) {
        let out = Command::new("bash")
            .arg(repo().join("scripts/stomp-node.sh"))
            .args([
                what,
                self.dir.to_str().expect("utf-8"),
                &self.port.to_string(),
                &self.dist.to_string(),
            ])
            .output()
            .expect("stomp-node.sh runs");
        assert!(
            out.status.success(),
            "stomp-node.sh {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/stomp-node.sh"))
            .args([
                "stop",
                self.dir.to_str().unwrap_or("/nonexistent"),
                &self.port.to_string(),
                &self.dist.to_string(),
            ])
            .output();
    }
}

#[test]
fn broker_down_spools_and_replays_everything_in_order() {
    let Some(url) = stomp_url() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node {
        dir: dir.path().join("node"),
        port: closed_port(),
        dist: closed_port(),
    };
    node.run("start");
    let queue = format!("/queue/gpe2e.down.{}", std::process::id());
    let cfg = write(
        dir.path(),
        "vo.toml",
        &format!(
            "{}{}",
            probes(),
            publish_table(dir.path(), &url, Some(node.port), &queue)
        ),
    );
    let store = dir.path().join("site.sqlite");
    let store = store.to_str().expect("utf-8").to_string();
    let spool = dir.path().join("site.sqlite.spool").join("publish-mq");
    let mut serve = Serve::start(&cfg, &store);
    serve.wait_for("connected to the STOMP broker", Duration::from_secs(60));

    // The broker goes away: results pile up in the spool.
    node.run("stop");
    assert!(
        wait_until(Duration::from_secs(60), || spooled_bytes(&spool) > 3000),
        "nothing spooled while the broker was down:\n{}",
        serve.output()
    );
    // It comes back (same mnesia: the durable queue and its persistent messages survive).
    node.run("start");
    assert!(
        wait_until(Duration::from_secs(90), || spooled_bytes(&spool) == 0),
        "the spool was not replayed:\n{}",
        serve.output()
    );
    let after = stored_keys(&store).0.len();
    assert!(wait_until(Duration::from_secs(30), || stored_keys(&store)
        .0
        .len()
        > after + 2));
    serve.terminate_cleanly();
    assert_eq!(spooled_bytes(&spool), 0, "flushed at shutdown");

    let mut sub = Subscriber::connect(&url, node.port);
    sub.subscribe(&queue);
    let messages: Vec<serde_json::Value> = sub
        .drain(&queue)
        .iter()
        .map(|f| serde_json::from_slice(&f.body).expect("JSON"))
        .collect();
    let (stored, _) = stored_keys(&store);
    let mut ids = BTreeSet::new();
    let mut raw_duplicates = 0usize;
    let mut last: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut published = BTreeSet::new();
    for m in &messages {
        if !ids.insert(m["message_id"].as_str().unwrap_or("").to_string()) {
            // At-least-once: a batch whose receipts were lost in the outage is sent again;
            // consumers drop it by message_id.
            raw_duplicates += 1;
            continue;
        }
        let (metric, start, attempt) = message_key(m);
        if let Some(prev) = last.get(&metric) {
            assert!(
                (start, attempt) > *prev,
                "out of order for {metric}: {prev:?} then {:?}",
                (start, attempt)
            );
        }
        last.insert(metric.clone(), (start, attempt));
        published.insert((metric, start, attempt));
    }
    let missing: Vec<_> = stored.difference(&published).collect();
    assert!(
        missing.is_empty(),
        "{} of {} results never reached the broker: {missing:?}\n{}",
        missing.len(),
        stored.len(),
        serve.output()
    );
    assert!(
        raw_duplicates <= 500,
        "more duplicates ({raw_duplicates}) than one batch"
    );
    eprintln!(
        "{} results, {} messages ({raw_duplicates} resent after the outage)",
        stored.len(),
        messages.len()
    );
}

/// A running `gridprobe consume`.
struct Consume(Serve);

impl Consume {
    fn start(config: &str, store: &str) -> Consume {
        let mut cmd = Command::new(bin());
        cmd.args(["consume", "--config", config, "--store", store])
            .stdin(Stdio::null());
        Consume(Serve::from_command(cmd))
    }
}

#[test]
fn consume_from_stomp_stores_once_and_acknowledges_everything() {
    let Some(url) = stomp_url() else {
        return;
    };
    let port = url.port().unwrap_or(61613);
    let dir = tempfile::tempdir().expect("tmp");
    let queue = format!("/queue/gpe2e.consume.{}", std::process::id());
    let cfg = write(
        dir.path(),
        "vo.toml",
        &format!(
            "{}{}",
            probes(),
            publish_table(dir.path(), &url, None, &queue)
        ),
    );
    let site = dir.path().join("site.sqlite");
    let site = site.to_str().expect("utf-8").to_string();
    let central = dir.path().join("central.sqlite");
    let central = central.to_str().expect("utf-8").to_string();

    let mut serve = Serve::start(&cfg, &site);
    serve.wait_for("connected to the STOMP broker", Duration::from_secs(60));
    let mut consume = Consume::start(&cfg, &central);
    consume.0.wait_for("subscribed to", Duration::from_secs(30));
    assert!(
        wait_until(Duration::from_secs(60), || stored_keys(&central).0.len()
            >= 6),
        "nothing consumed:\nserve:\n{}\nconsume:\n{}",
        serve.output(),
        consume.0.output()
    );
    serve.terminate_cleanly();
    let (site_keys, _) = stored_keys(&site);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (c, _) = stored_keys(&central);
            site_keys.iter().all(|k| c.contains(k))
        }),
        "consume:\n{}",
        consume.0.output()
    );
    consume.0.terminate_cleanly();
    let (_, dups) = stored_keys(&central);
    assert_eq!(dups, 0, "a result stored twice centrally");

    // Every message was acknowledged: the queue holds nothing before a marker sent now.
    let mut sub = Subscriber::connect(&url, port);
    sub.subscribe(&queue);
    let left = sub.drain(&queue);
    assert!(
        left.is_empty(),
        "{} messages were not acknowledged",
        left.len()
    );

    let out = gridprobe(&[
        "matrix", "--config", &cfg, "--store", &central, "--format", "json",
    ]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("org.e2e.stomp-a") && stdout.contains("T2_STOMP"),
        "{stdout}"
    );
}

#[test]
fn stomp_errors_are_positioned_by_check() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write(
        dir.path(),
        "vo.toml",
        &format!(
            "{}{}",
            probes(),
            r#"
[[publish]]
kind = "stomp"
url = "stomp://gp:secret@mq.example.org"
destination = "results"
heartbeat = "1h"
max_frame_size = "1TiB"
subject = "x"
"#
        ),
    );
    let out = gridprobe(&["check", &cfg]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for want in [
        "vo.toml:34:7: error: the broker URL holds a password",
        "vo.toml:35:15: error: invalid STOMP destination `results`",
        "vo.toml:36:13: error: `heartbeat` must be between 1s and 10m",
        "vo.toml:37:18: error: `max_frame_size` must be between 64KiB and 256MiB",
        "vo.toml:38:11: error: `subject` is a setting of kind = \"nats\", not \"stomp\"",
    ] {
        assert!(stderr.contains(want), "missing `{want}` in:\n{stderr}");
    }
    assert!(!stderr.contains("secret"), "{stderr}");
}

#[test]
fn tls_with_the_brokers_ca_delivers_and_an_unknown_issuer_is_refused() {
    let Some(url) = stomp_url() else {
        return;
    };
    let tls = common::required(
        std::env::var("GRIDPROBE_TEST_STOMP_TLS_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .and_then(|v| url::Url::parse(&v).ok()),
        "GRIDPROBE_TEST_STOMP_TLS_URL (the STOMP node's TLS listener)",
        "scripts/test-env.sh stomp starts it and exports it",
    );
    let ca = common::required_path(
        "GRIDPROBE_TEST_STOMP_CA",
        None,
        "the STOMP node's test CA",
        "scripts/test-env.sh stomp makes it",
    );
    let (Some(tls), Some(ca)) = (tls, ca) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("stomp-passcode"),
        format!("{}\n", tls.password().unwrap_or("")),
    )
    .expect("passcode file");
    let queue = format!("/queue/gpe2e.tls.{}", std::process::id());
    let target = |name: &str, ca_line: &str| {
        format!(
            r#"
[[publish]]
name = "{name}"
kind = "stomp"
url = "stomp+ssl://{}@{}:{}"
password_file = "stomp-passcode"
destination = "{queue}"
{ca_line}
"#,
            tls.username(),
            tls.host_str().unwrap_or("127.0.0.1"),
            tls.port().unwrap_or(61614)
        )
    };
    let cfg = write(
        dir.path(),
        "vo.toml",
        &format!(
            "{}{}{}",
            probes(),
            target("trusted", &format!("ca_file = \"{}\"", ca.display())),
            target("untrusted", "")
        ),
    );
    let store = dir.path().join("site.sqlite");
    let mut serve = Serve::start(&cfg, store.to_str().expect("utf-8"));
    serve.wait_for("connected to the STOMP broker", Duration::from_secs(60));

    // What went over TLS is read back over the plain listener of the same broker.
    let mut sub = Subscriber::connect(&url, url.port().unwrap_or(61613));
    sub.subscribe(&queue);
    let f = sub
        .next(Duration::from_secs(30))
        .expect("a message published over TLS");
    assert_eq!(f.command, "MESSAGE", "{f:?}");
    let v: serde_json::Value = serde_json::from_slice(&f.body).expect("JSON");
    assert_eq!(v["site"], "T2_STOMP");

    let spool = dir
        .path()
        .join("site.sqlite.spool")
        .join("publish-untrusted");
    assert!(
        wait_until(Duration::from_secs(30), || serve
            .output()
            .contains("TLS handshake with")
            && spooled_bytes(&spool) > 0),
        "{}",
        serve.output()
    );
    serve.terminate_cleanly();
    let out = serve.output();
    assert!(
        out.contains("UnknownIssuer") || out.contains("unknown issuer"),
        "{out}"
    );
    assert!(!out.contains(tls.password().unwrap_or("-")), "{out}");
}

#[test]
fn consume_needs_one_destination_to_subscribe_to() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write(
        dir.path(),
        "vo.toml",
        &format!(
            "{}{}",
            probes(),
            "\n[[publish]]\nkind = \"stomp\"\ndestination = \"/topic/gp.{site}\"\n"
        ),
    );
    let store = dir.path().join("c.sqlite");
    let out = gridprobe(&[
        "consume",
        "--config",
        &cfg,
        "--store",
        store.to_str().expect("utf-8"),
    ]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("has placeholders: set `subscribe`"),
        "{stderr}"
    );
}
