//! The monitoring host's own failures (`[server.self_check]`), end to end: while the host's
//! self-check fails, a site probe failing at connection level is recorded UNKNOWN
//! "monitoring host problem: …" (its original summary in the details); once the self-check
//! passes again, the same failure is the site's CRITICAL again.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{closed_port, http_client, wait_until, write_file, Serve};

fn config(reference: u16, site_port: u16) -> String {
    format!(
        r#"
vo = "e2e"
[defaults]
interval = "1s"
timeout = "500ms"
[server]
startup_spread = "1s"
shutdown_grace = "2s"
  [server.self_check]
  interval = "1s"
  timeout = "500ms"
  resolve = ["localhost"]
  connect = ["127.0.0.1:{reference}"]

[[site]]
name = "T2_E2E"
tier = 2
  [[site.service]]
  flavour = "SRV"
  hostname = "127.0.0.1"
  endpoint = "tcp://127.0.0.1:{site_port}"

[[probe]]
metric = "org.e2e.tcp"
kind = "tcp"
flavours = ["SRV"]
"#
    )
}

/// Final results of the cell, newest first.
fn results(addr: &str) -> Vec<serde_json::Value> {
    let url = format!("http://{addr}/api/v1/results?site=T2_E2E&limit=50");
    http_client()
        .get(url)
        .send()
        .and_then(|r| r.text())
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["results"].as_array().cloned())
        .unwrap_or_default()
}

fn health(addr: &str) -> serde_json::Value {
    http_client()
        .get(format!("http://{addr}/healthz"))
        .send()
        .and_then(|r| r.text())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Waits for a result newer than `after_ms` that satisfies `pred`; returns it.
fn wait_result(
    addr: &str,
    after_ms: i64,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut found = None;
    wait_until(Duration::from_secs(30), || {
        found = results(addr)
            .into_iter()
            .find(|r| r["started_at_ms"].as_i64().unwrap_or(0) > after_ms && pred(r));
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no such result; latest: {:#?}", results(addr).first()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn connection_failures_are_unknown_while_the_monitoring_host_fails() {
    let dir = tempfile::tempdir().unwrap();
    let reference = TcpListener::bind("127.0.0.1:0").unwrap();
    let ref_port = reference.local_addr().unwrap().port();
    let site_port = closed_port();
    let cfg = write_file(dir.path(), "vo.toml", &config(ref_port, site_port));
    let store = dir.path().join("r.sqlite");
    let mut serve = Serve::start(&cfg, store.to_str().unwrap());
    let addr = serve.http_addr();

    // The host is fine: the site's refused connection is the site's CRITICAL.
    let crit = wait_result(&addr, 0, |r| r["status"] == "CRITICAL");
    assert!(
        crit["summary"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{crit}"
    );
    assert_eq!(health(&addr)["self_check"]["state"], "ok");

    // The monitoring host loses its reference: UNKNOWN with the host's reason.
    drop(reference);
    let ok = wait_until(Duration::from_secs(20), || {
        health(&addr)["self_check"]["state"] == "failing"
    });
    assert!(ok, "self-check never failed: {}", health(&addr));
    let h = health(&addr);
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["self_check"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{ref_port}")),
        "{h}"
    );
    let since = now_ms();
    let unknown = wait_result(&addr, since, |r| r["final"] == true);
    assert_eq!(unknown["status"], "UNKNOWN", "{unknown}");
    let summary = unknown["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("monitoring host problem: TCP connect to 127.0.0.1:"),
        "{summary}"
    );
    let details = unknown["details"].as_str().unwrap();
    assert!(
        details.contains("Original summary: TCP connect failed: connection refused"),
        "{details}"
    );
    let metrics = http_client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("gridprobe_self_check_failing 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(
            |l| l.starts_with("gridprobe_self_check_reclassified_total ") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );

    // The reference is back: the site's own failure is CRITICAL again.
    let _back = TcpListener::bind(("127.0.0.1", ref_port)).unwrap();
    let ok = wait_until(Duration::from_secs(20), || {
        health(&addr)["self_check"]["state"] == "ok"
    });
    assert!(ok, "self-check never recovered: {}", health(&addr));
    let since = now_ms();
    let again = wait_result(&addr, since, |r| r["final"] == true);
    assert_eq!(again["status"], "CRITICAL", "{again}");
    serve.terminate_cleanly();
}

#[test]
fn bad_self_check_settings_are_positioned_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = config(1, 2);
    for (from, to, at, says) in [
        (
            "interval = \"1s\"",
            "interval = \"2h\"",
            "vo.toml:10:14",
            "between 1s and 1h",
        ),
        (
            "timeout = \"500ms\"",
            "timeout = \"5s\"",
            "vo.toml:11:13",
            "must be shorter than self_check.interval",
        ),
        (
            "resolve = [\"localhost\"]",
            "resolve = [\"local host\"]",
            "vo.toml:12:14",
            "is not a DNS name",
        ),
        (
            "connect = [\"127.0.0.1:1\"]",
            "connect = [\"127.0.0.1\"]",
            "vo.toml:13:14",
            "has no port",
        ),
        (
            "timeout = \"500ms\"",
            "timeuot = \"500ms\"",
            "vo.toml:11:3",
            "timeout",
        ),
    ] {
        assert!(base.contains(from), "{from}");
        let cfg = write_file(dir.path(), "vo.toml", &base.replace(from, to));
        let out = common::gridprobe(&["check", &cfg]);
        let (o, e) = common::texts(&out);
        let text = format!("{o}{e}");
        assert_eq!(out.status.code(), Some(1), "{to}: {text}");
        assert!(
            text.contains(at) && text.contains(says),
            "{to}: want {at} {says}\n{text}"
        );
    }
}

/// A network namespace of this test, deleted on drop.
struct Netns(String);

impl Netns {
    /// A fresh namespace with its loopback up; `None` (a note) where namespaces cannot be
    /// made (not root, no iproute2), which under CI is a failure.
    fn create() -> Option<Netns> {
        let name = format!("gp-selfcheck-{}", std::process::id());
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cannot create a network namespace (needs root and iproute2)"
            );
            eprintln!("note: no network namespace (needs root and iproute2); test not run");
            return None;
        }
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    fn exec(&self, args: &[&str]) {
        let status = std::process::Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "{args:?}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// The newest final result of the site's cell, read from the store (the service runs in a
/// namespace this test cannot reach over the network).
fn latest_from_store(cfg: &str, store: &str) -> Option<serde_json::Value> {
    let out = common::gridprobe(&[
        "results", "--config", cfg, "--store", store, "--site", "T2_E2E", "--since", "1h",
        "--limit", "1", "--format", "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let first = match &v {
        serde_json::Value::Array(a) => a.first().cloned(),
        other => other["results"].as_array().and_then(|a| a.first().cloned()),
    };
    first
}

#[test]
fn a_host_whose_network_goes_down_records_unknown_not_critical() {
    let Some(ns) = Netns::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Inside the namespace: serve listens on 8479, the self-check's reference is that
    // listener, and the site's port 9 is closed (refused while the network is up).
    let cfg = write_file(dir.path(), "vo.toml", &config(8479, 9));
    let store = dir.path().join("r.sqlite");
    let store = store.to_str().unwrap().to_string();
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &ns.0]).arg(common::bin()).args([
        "serve",
        "--config",
        &cfg,
        "--store",
        &store,
        "--listen",
        "127.0.0.1:8479",
    ]);
    let mut serve = Serve::from_command(cmd);
    serve.wait_for("/healthz", Duration::from_secs(30));

    let status_is = |want: &str, summary_has: &str| {
        wait_until(Duration::from_secs(30), || {
            latest_from_store(&cfg, &store).is_some_and(|r| {
                r["status"] == want
                    && r["summary"]
                        .as_str()
                        .is_some_and(|s| s.contains(summary_has))
            })
        })
    };
    assert!(
        status_is("CRITICAL", "connection refused"),
        "no CRITICAL: {:?}\n{}",
        latest_from_store(&cfg, &store),
        serve.output()
    );
    // The host's network goes down: the site is not blamed.
    ns.exec(&["ip", "link", "set", "lo", "down"]);
    assert!(
        status_is(
            "UNKNOWN",
            "monitoring host problem: TCP connect to 127.0.0.1:8479"
        ),
        "no UNKNOWN: {:?}\n{}",
        latest_from_store(&cfg, &store),
        serve.output()
    );
    // Back up: the site's own failure is CRITICAL again.
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    assert!(
        status_is("CRITICAL", "connection refused"),
        "no CRITICAL after recovery: {:?}\n{}",
        latest_from_store(&cfg, &store),
        serve.output()
    );
    serve.terminate_cleanly();
}
