//! Site agents end to end (`[[site]] executor = "agent"`, `gridprobe agent`): a real NATS
//! JetStream server of the test's own (so it can be stopped, and so its per-user permissions
//! are the ones docs/agents.md documents), `serve` and agents as real processes of the built
//! binary.
//!
//! - a site network only the agent reaches (a network namespace joined by a veth pair): the
//!   probe passes through the agent although the centre could not connect;
//! - an agent killed with SIGKILL mid-run: the run goes to another agent, one result per slot;
//! - the broker stopped while an agent runs: its result waits in the agent's spool and reaches
//!   the store once the broker is back;
//! - a result published for another site: dropped and counted; a site without agents: UNKNOWN
//!   "no agent of SITE since …".

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::agents::{
    get_json, metric, metrics, nagios_probe, results, slow_plugin, starts, Agent, LOCAL_SERVICE,
    SITE,
};
use common::nats_tls::{Nats, PASSWORD_AGENT, PASSWORD_CENTRE};
use common::{http_client, wait_until, write_file, Serve};

/// The centre's configuration: `SITE` runs on agents; `extra` adds sites or probes.
fn centre_config(dir: &Path, nats: &Nats, site_service: &str, probe: &str, extra: &str) -> String {
    common::agents::centre_config(
        dir,
        &nats.url("centre"),
        PASSWORD_CENTRE,
        site_service,
        probe,
        extra,
    )
}

/// A network namespace with a veth pair to the host: `host_ip` on this side, `ns_ip` inside.
struct SiteNet {
    ns: String,
    host_if: String,
    host_ip: String,
}

impl SiteNet {
    fn create() -> Option<SiteNet> {
        let pid = std::process::id();
        let ns = format!("gp-agent-{pid}");
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .is_ok_and(|s| s.success());
        common::required(
            ok.then_some(()),
            "network namespaces",
            "needs root and iproute2",
        )?;
        let host_if = format!("gpa{}h", pid % 100_000);
        let ns_if = format!("gpa{}n", pid % 100_000);
        let octet = pid % 250 + 1;
        let net = SiteNet {
            ns: ns.clone(),
            host_if: host_if.clone(),
            host_ip: format!("10.213.{octet}.1"),
        };
        let run = |args: &[&str]| {
            let s = Command::new("ip").args(args).status().expect("ip runs");
            assert!(s.success(), "ip {args:?}");
        };
        run(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        run(&["link", "set", &ns_if, "netns", &ns]);
        run(&[
            "addr",
            "add",
            &format!("10.213.{octet}.1/30"),
            "dev",
            &host_if,
        ]);
        run(&["link", "set", &host_if, "up"]);
        run(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("10.213.{octet}.2/30"),
            "dev",
            &ns_if,
        ]);
        run(&["netns", "exec", &ns, "ip", "link", "set", &ns_if, "up"]);
        run(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        Some(net)
    }
}

impl Drop for SiteNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A TCP service on 127.0.0.1:`port` inside the namespace (accepts and closes).
fn service_in(ns: &str, port: u16) -> Child {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "socat"])
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
        .arg("SYSTEM:true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat starts");
    assert!(
        wait_until(Duration::from_secs(10), || Command::new("ip")
            .args(["netns", "exec", ns, "socat", "-u", "OPEN:/dev/null"])
            .arg(format!("TCP:127.0.0.1:{port}"))
            .status()
            .is_ok_and(|s| s.success())),
        "the site's service did not come up"
    );
    child
}

/// The probe of the site network test: a TCP connect to the service's endpoint.
const TCP_PROBE: &str = r#"
[[probe]]
metric = "org.e2e.tcp"
kind = "tcp"
flavours = ["SRV"]
"#;

#[test]
fn an_agent_reaches_a_site_network_the_centre_cannot() {
    let Some(net) = SiteNet::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start_on(dir.path(), &net.host_ip, None) else {
        return;
    };
    // A port closed on this host: only inside the namespace does anything listen on it.
    let port = common::closed_port();
    let mut service = service_in(&net.ns, port);
    let service_toml = format!(
        "  [[site.service]]\n  flavour = \"SRV\"\n  hostname = \"127.0.0.1\"\n  endpoint = \"tcp://127.0.0.1:{port}\"\n"
    );
    let cfg = write_file(
        dir.path(),
        "vo.toml",
        &centre_config(dir.path(), &nats, &service_toml, TCP_PROBE, ""),
    );
    // The centre itself cannot reach the service.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&cfg, store.to_str().unwrap());
    let addr = serve.http_addr();
    let agent = Agent::start(
        &nats.url("agent-t2"),
        PASSWORD_AGENT,
        dir.path(),
        "inside",
        Some(&net.ns),
    );
    let ok = wait_until(Duration::from_secs(45), || {
        results(&addr, SITE).iter().any(|r| r["status"] == "OK")
    });
    assert!(
        ok,
        "no OK through the agent: {:?}\nserve:\n{}\nagent:\n{}",
        results(&addr, SITE),
        serve.output(),
        agent.output()
    );
    let agents = get_json(&addr, "/api/v1/agents");
    let list = agents["agents"].as_array().cloned().unwrap_or_default();
    assert!(
        list.iter()
            .any(|a| a["site"] == SITE && a["name"] == "inside" && a["alive"] == true),
        "{agents}"
    );
    assert!(metric(&addr, "gridprobe_agent_runs_dispatched_total").unwrap_or(0.0) >= 1.0);
    assert!(
        metrics(&addr).contains(&format!(
            "gridprobe_agent_last_seen_age_seconds{{agent=\"inside\",site=\"{SITE}\"}}"
        )),
        "{}",
        metrics(&addr)
    );
    let page = http_client()
        .get(format!("http://{addr}/agents"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    assert!(page.contains("inside") && page.contains(SITE), "{page}");
    // SIGTERM stops the agent cleanly.
    let mut agent = agent;
    let s = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(s.success());
    let mut code = None;
    wait_until(Duration::from_secs(40), || {
        code = agent.child.try_wait().ok().flatten().and_then(|s| s.code());
        code.is_some()
    });
    assert_eq!(code, Some(0), "{}", agent.output());
    assert!(
        agent
            .output()
            .contains("stopped after 1 runs (1 acknowledged"),
        "{}",
        agent.output()
    );
    let _ = service.kill();
    let _ = service.wait();
}

#[test]
fn a_killed_agents_run_goes_to_another_and_is_kept_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(dir.path(), None) else {
        return;
    };
    let plugin = slow_plugin(dir.path(), 3);
    let cfg = write_file(
        dir.path(),
        "vo.toml",
        &centre_config(dir.path(), &nats, LOCAL_SERVICE, &nagios_probe(&plugin), ""),
    );
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&cfg, store.to_str().unwrap());
    let addr = serve.http_addr();
    let mut first = Agent::start(
        &nats.url("agent-t2"),
        PASSWORD_AGENT,
        dir.path(),
        "first",
        None,
    );
    assert!(
        wait_until(Duration::from_secs(30), || starts(dir.path()) >= 1),
        "the run did not start:\n{}\n{}",
        serve.output(),
        first.output()
    );
    first.kill9();
    let second = Agent::start(
        &nats.url("agent-t2"),
        PASSWORD_AGENT,
        dir.path(),
        "second",
        None,
    );
    // Redelivered after AckWait (6 s timeout + 5 s cleanup + 1 s grace), run again, recorded.
    let ok = wait_until(Duration::from_secs(60), || {
        results(&addr, SITE).iter().any(|r| r["status"] == "OK")
    });
    assert!(
        ok,
        "no result after the kill:\n{}\n{}",
        serve.output(),
        second.output()
    );
    assert_eq!(starts(dir.path()), 2, "run once by each agent");
    let finals = results(&addr, SITE);
    assert_eq!(finals.len(), 1, "one result for the slot: {finals:?}");
    assert!(finals[0]["summary"]
        .as_str()
        .is_some_and(|s| s.contains("finished after 3s")));
}

/// An agent frozen (SIGSTOP) past its run's AckWait: the run goes to another agent, whose
/// result is recorded; when the frozen one wakes up and publishes too, its result is dropped
/// as a duplicate and counted: one result for the slot.
#[test]
fn a_late_duplicate_from_a_frozen_agent_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(dir.path(), None) else {
        return;
    };
    let plugin = slow_plugin(dir.path(), 2);
    let cfg = write_file(
        dir.path(),
        "vo.toml",
        &centre_config(dir.path(), &nats, LOCAL_SERVICE, &nagios_probe(&plugin), ""),
    );
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&cfg, store.to_str().unwrap());
    let addr = serve.http_addr();
    let first = Agent::start(
        &nats.url("agent-t2"),
        PASSWORD_AGENT,
        dir.path(),
        "frozen",
        None,
    );
    assert!(
        wait_until(Duration::from_secs(30), || starts(dir.path()) >= 1),
        "the run did not start:\n{}\n{}",
        serve.output(),
        first.output()
    );
    let pid = first.child.id().to_string();
    let signal = |sig: &str| {
        let s = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(s.success());
    };
    signal("-STOP");
    let second = Agent::start(
        &nats.url("agent-t2"),
        PASSWORD_AGENT,
        dir.path(),
        "awake",
        None,
    );
    let ok = wait_until(Duration::from_secs(60), || {
        results(&addr, SITE).iter().any(|r| r["status"] == "OK")
    });
    assert!(ok, "no result:\n{}\n{}", serve.output(), second.output());
    signal("-CONT");
    let dropped = wait_until(Duration::from_secs(30), || {
        metric(
            &addr,
            "gridprobe_agent_results_rejected_total{reason=\"duplicate\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    assert!(
        dropped,
        "the frozen agent's result was not counted as a duplicate:\n{}\n{}",
        metrics(&addr),
        first.output()
    );
    assert_eq!(starts(dir.path()), 2);
    let finals = results(&addr, SITE);
    assert_eq!(finals.len(), 1, "one result for the slot: {finals:?}");
}

#[test]
fn results_wait_in_the_agents_spool_while_the_broker_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut nats) = Nats::start(dir.path(), None) else {
        return;
    };
    let plugin = slow_plugin(dir.path(), 3);
    let cfg = write_file(
        dir.path(),
        "vo.toml",
        &centre_config(dir.path(), &nats, LOCAL_SERVICE, &nagios_probe(&plugin), ""),
    );
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&cfg, store.to_str().unwrap());
    let addr = serve.http_addr();
    let agent = Agent::start(
        &nats.url("agent-t2"),
        PASSWORD_AGENT,
        dir.path(),
        "only",
        None,
    );
    assert!(
        wait_until(Duration::from_secs(30), || starts(dir.path()) >= 1),
        "the run did not start:\n{}\n{}",
        serve.output(),
        agent.output()
    );
    nats.stop();
    // The run ends while the broker is away: its result goes to the agent's spool.
    let spooled = wait_until(Duration::from_secs(30), || {
        agent.output().contains("spooling them")
    });
    assert!(spooled, "nothing spooled:\n{}", agent.output());
    assert!(results(&addr, SITE).is_empty());
    nats.restart();
    let ok = wait_until(Duration::from_secs(60), || {
        results(&addr, SITE).iter().any(|r| r["status"] == "OK")
    });
    assert!(
        ok,
        "the spooled result did not arrive:\n{}\n{}",
        serve.output(),
        agent.output()
    );
    // The outage outlasted the run's AckWait, so the broker may have handed the run out again
    // (at least once); the centre keeps one result for the slot and counts the other.
    if starts(dir.path()) > 1 {
        let dropped = wait_until(Duration::from_secs(30), || {
            metric(
                &addr,
                "gridprobe_agent_results_rejected_total{reason=\"duplicate\"}",
            )
            .unwrap_or(0.0)
                >= 1.0
        });
        assert!(dropped, "{}\n{}", metrics(&addr), agent.output());
    }
    let finals = results(&addr, SITE);
    assert_eq!(finals.len(), 1, "one result for the slot: {finals:?}");
}

#[test]
fn results_for_another_site_are_dropped_and_sites_without_agents_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(dir.path(), None) else {
        return;
    };
    let plugin = slow_plugin(dir.path(), 0);
    let other = "[[site]]\nname = \"T2_OTHER\"\ntier = 2\nexecutor = \"agent\"\n  [[site.service]]\n  flavour = \"SRV\"\n  hostname = \"other.example.org\"\n";
    let cfg = write_file(
        dir.path(),
        "vo.toml",
        &centre_config(
            dir.path(),
            &nats,
            LOCAL_SERVICE,
            &nagios_probe(&plugin),
            other,
        ),
    );
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&cfg, store.to_str().unwrap());
    let addr = serve.http_addr();
    // No agent of T2_OTHER ever: after no_agent_after its cell is UNKNOWN, not CRITICAL.
    let unknown = wait_until(Duration::from_secs(30), || {
        results(&addr, "T2_OTHER").iter().any(|r| {
            r["status"] == "UNKNOWN"
                && r["summary"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("no agent of T2_OTHER since"))
        })
    });
    assert!(
        unknown,
        "{:?}\n{}",
        results(&addr, "T2_OTHER"),
        serve.output()
    );

    // The site's agent user forges a result for T2_OTHER on its own subject: dropped, counted.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let denied = runtime.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .user_and_password("agent-t2".into(), PASSWORD_AGENT.into())
            .custom_inbox_prefix("_GP_INBOX.gridprobe.T2_5FAGENT")
            .connect(nats.addr.as_str())
            .await
            .expect("connect as the agent");
        let js = async_nats::jetstream::new(client);
        let forged = serde_json::json!({
            "schema": "gridprobe.result.v1", "message_id": "forged-1",
            "gridprobe_instance": "rogue", "metric": "org.e2e.slow",
            "service_flavour": "SRV", "hostname": "other.example.org", "site": "T2_OTHER",
            "vo": "e2e", "status": "OK", "summary": "forged", "details": "",
            "timestamp": "2026-01-01T00:00:00Z", "started_at_ms": 1, "duration_ms": 1,
            "attempt": 1, "final": true, "trigger": "scheduled", "kind": "nagios",
            "agent_run": "s-forged"
        });
        let ack = js
            .publish("gridprobe.results.T2_5FAGENT", forged.to_string().into())
            .await
            .expect("publish");
        ack.await.expect("JetStream took the forged result");
        // Its own user cannot publish on the other site's subject at all.
        let other = tokio::time::timeout(Duration::from_secs(5), async {
            js.publish("gridprobe.results.T2_5FOTHER", forged.to_string().into())
                .await?
                .await
                .map_err(async_nats::Error::from)
        })
        .await;
        !matches!(other, Ok(Ok(_)))
    });
    assert!(denied, "the broker let an agent publish for another site");
    let counted = wait_until(Duration::from_secs(20), || {
        metric(
            &addr,
            "gridprobe_agent_results_rejected_total{reason=\"wrong_site\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    assert!(counted, "{}", metrics(&addr));
    assert!(
        !results(&addr, "T2_OTHER")
            .iter()
            .any(|r| r["summary"] == "forged"),
        "the forged result was recorded"
    );
}

#[test]
fn bad_agent_arguments_are_refused_without_echoing_secrets() {
    for (args, want) in [
        (
            vec![
                "--broker",
                "nats://agent:s3cret@127.0.0.1:4222",
                "--site",
                SITE,
            ],
            "holds a password",
        ),
        (
            vec!["--broker", "http://127.0.0.1:4222", "--site", SITE],
            "nats:// or tls:// (NATS JetStream), or amqp:// or amqps://",
        ),
        (
            vec![
                "--broker",
                "nats://127.0.0.1:4222",
                "--site",
                SITE,
                "--prefix",
                "a.*",
            ],
            "--prefix",
        ),
        (
            vec![
                "--broker",
                "nats://127.0.0.1:4222",
                "--site",
                SITE,
                "--concurrency",
                "0",
            ],
            "--concurrency must be between 1 and 10000",
        ),
        (
            vec![
                "--broker",
                "nats://127.0.0.1:4222",
                "--site",
                SITE,
                "--heartbeat",
                "99999999999999999999s",
            ],
            "--heartbeat",
        ),
        (
            vec!["--broker", "nats://127.0.0.1:4222", "--site", " "],
            "--site",
        ),
    ] {
        let mut all = vec!["agent"];
        all.extend(args.iter().copied());
        let out = common::gridprobe(&all);
        let (stdout, stderr) = common::texts(&out);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{args:?} accepted:\n{stdout}{stderr}"
        );
        assert!(stderr.contains(want), "{args:?}: no `{want}` in:\n{stderr}");
        assert!(
            !stderr.contains("s3cret") && !stdout.contains("s3cret"),
            "{stderr}"
        );
    }
}
