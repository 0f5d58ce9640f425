//! Site agents over RabbitMQ end to end (`[agents] url = "amqp://…"`, `gridprobe agent --broker
//! amqp://…`): a private RabbitMQ node (scripts/rabbitmq-node.sh), each test in a virtual host
//! of its own with the users and permissions of docs/agents.md, `serve` and agents as real
//! processes of the built binary.
//!
//! - one agent runs the site's probe; SIGTERM stops it cleanly;
//! - an agent killed with SIGKILL mid-run: the run goes to another agent, one result per slot;
//! - the broker killed while an agent runs (a node of the test's own), started again later: the result waits in the
//!   agent's spool and reaches the store once the broker is back, one result per slot;
//! - an agent publishing for another site: refused by the broker on another site's routing
//!   key, dropped and counted by the centre on its own key; the permissions keep it out of
//!   another site's queue, the results queue and the default exchange.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::agents::{
    centre_config, get_json, metric, metrics, nagios_probe, results, slow_plugin, starts, Agent,
    LOCAL_SERVICE, SITE,
};
use common::{wait_until, write_file, Serve};

const PASSWORD_CENTRE: &str = "centre-amqp-secret";
const PASSWORD_AGENT: &str = "agent-amqp-secret";

/// A virtual host with the users of docs/agents.md on a private RabbitMQ node: the node the
/// tests share (`GRIDPROBE_TEST_AGENTS_AMQP_NODE`), or one of the test's own that it may stop.
struct Rabbit {
    dir: PathBuf,
    port: u16,
    dist: u16,
    vhost: String,
    /// Appended to the user names (users are per node, tests run in parallel).
    suffix: String,
    /// A node of this test's own, stopped when done.
    own: bool,
}

impl Rabbit {
    fn node(&self, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let dist = self.dist.to_string();
        let mut all = vec![
            args[0],
            self.dir.to_str().expect("utf-8"),
            port.as_str(),
            dist.as_str(),
        ];
        all.extend_from_slice(&args[1..]);
        Command::new("bash")
            .arg(common::repo().join("scripts/rabbitmq-node.sh"))
            .args(&all)
            .output()
            .expect("rabbitmq-node.sh runs")
    }

    fn must(&self, args: &[&str]) -> String {
        let out = self.node(args);
        assert!(
            out.status.success(),
            "rabbitmq-node.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ctl(&self, args: &[&str]) -> String {
        let mut all = vec!["ctl", "--"];
        all.extend_from_slice(args);
        self.must(&all)
    }

    /// The node the tests share, a virtual host for this test.
    fn shared() -> Option<Rabbit> {
        let spec = common::required(
            std::env::var("GRIDPROBE_TEST_AGENTS_AMQP_NODE").ok(),
            "GRIDPROBE_TEST_AGENTS_AMQP_NODE (a private RabbitMQ node)",
            "eval \"$(scripts/test-env.sh agents-amqp)\" starts it",
        )?;
        let mut parts = spec.split(':');
        let (Some(dir), Some(port), Some(dist)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("GRIDPROBE_TEST_AGENTS_AMQP_NODE is DIR:PORT:DIST_PORT, found {spec}");
        };
        let r = Rabbit {
            dir: PathBuf::from(dir),
            port: port.parse().expect("port"),
            dist: dist.parse().expect("distribution port"),
            vhost: format!("gp-agents-{}", std::process::id()),
            suffix: format!("-{}", std::process::id()),
            own: false,
        };
        r.must(&["start"]);
        r.permissions();
        Some(r)
    }

    /// A node of this test's own (under `dir`), to be stopped and started again.
    fn own(dir: &Path) -> Option<Rabbit> {
        common::required(
            Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
                .exists()
                .then_some(()),
            "rabbitmq-server",
            "scripts/services/agents-amqp.sh installs it",
        )?;
        let free = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let r = Rabbit {
            dir: dir.join("rabbit"),
            port: free(),
            dist: free(),
            vhost: "gp-agents".into(),
            suffix: String::new(),
            own: true,
        };
        r.must(&["start"]);
        r.permissions();
        Some(r)
    }

    /// Runs the permission commands of docs/agents.md against this node, for this test's
    /// virtual host, users and passwords.
    fn permissions(&self) {
        let text = std::fs::read_to_string(common::repo().join("docs/agents.md")).expect("docs");
        let start = text
            .find("# --- rabbitmq permissions ---")
            .expect("the RabbitMQ example in docs/agents.md");
        let end = text[start..].find("```").expect("end of the example") + start;
        let mut script = format!(
            "set -euo pipefail\nrabbitmqctl() {{ bash '{}' ctl '{}' {} {} -- \"$@\"; }}\n",
            common::repo().join("scripts/rabbitmq-node.sh").display(),
            self.dir.display(),
            self.port,
            self.dist
        );
        for line in text[start..end].lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = line
                .replace("gridprobe-vo", &self.vhost)
                .replace("CENTRE_PASSWORD", PASSWORD_CENTRE)
                .replace("AGENT_PASSWORD", PASSWORD_AGENT)
                .replace(" centre ", &format!(" centre{} ", self.suffix))
                .replace(" agent-t2 ", &format!(" agent-t2{} ", self.suffix));
            script.push_str(&line);
            script.push('\n');
        }
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "the permission commands of docs/agents.md failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self, user: &str) -> String {
        format!(
            "amqp://{user}{}@127.0.0.1:{}/{}",
            self.suffix, self.port, self.vhost
        )
    }

    /// The URL with the password, for the test's own client.
    fn url_with_password(&self, user: &str, password: &str) -> String {
        format!(
            "amqp://{user}{}:{password}@127.0.0.1:{}/{}",
            self.suffix, self.port, self.vhost
        )
    }

    fn centre_config(&self, dir: &Path, probe: &str, extra: &str) -> String {
        centre_config(
            dir,
            &self.url("centre"),
            PASSWORD_CENTRE,
            LOCAL_SERVICE,
            probe,
            extra,
        )
    }

    fn agent(&self, dir: &Path, name: &str) -> Agent {
        Agent::start(&self.url("agent-t2"), PASSWORD_AGENT, dir, name, None)
    }

    fn queues(&self) -> String {
        self.ctl(&["list_queues", "-p", &self.vhost, "name", "messages"])
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        if self.own {
            let _ = self.node(&["stop"]);
        } else {
            let _ = self.node(&["ctl", "--", "delete_vhost", &self.vhost]);
            for user in ["centre", "agent-t2"] {
                let _ = self.node(&[
                    "ctl",
                    "--",
                    "delete_user",
                    &format!("{user}{}", self.suffix),
                ]);
            }
        }
    }
}

fn ok_results(addr: &str) -> bool {
    results(addr, SITE).iter().any(|r| r["status"] == "OK")
}

#[test]
fn an_agent_runs_the_sites_probe_through_rabbitmq() {
    let Some(rabbit) = Rabbit::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plugin = slow_plugin(dir.path(), 0);
    let cfg = write_file(
        dir.path(),
        "vo.toml",
        &rabbit.centre_config(dir.path(), &nagios_probe(&plugin), ""),
    );
    let check = common::gridprobe(&["check", &cfg]);
    assert!(check.status.success(), "{:?}", common::texts(&check));
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&cfg, store.to_str().unwrap());
    let addr = serve.http_addr();
    let mut agent = rabbit.agent(dir.path(), "only");
    let ok = wait_until(Duration::from_secs(45), || ok_results(&addr));
    assert!(
        ok,
        "no OK through the agent: {:?}\nserve:\n{}\nagent:\n{}",
        results(&addr, SITE),
        serve.output(),
        agent.output()
    );
    // The site's work queue is the one docs/agents.md names, and it is empty now.
    assert!(
        rabbit.queues().contains("gridprobe.work.T2_5FAGENT\t0"),
        "{}",
        rabbit.queues()
    );
    let alive = wait_until(Duration::from_secs(10), || {
        get_json(&addr, "/api/v1/agents")["agents"]
            .as_array()
            .is_some_and(|l| {
                l.iter()
                    .any(|a| a["site"] == SITE && a["name"] == "only" && a["alive"] == true)
            })
    });
    assert!(alive, "{}", get_json(&addr, "/api/v1/agents"));
    assert!(metric(&addr, "gridprobe_agent_runs_completed_total").unwrap_or(0.0) >= 1.0);
    assert_eq!(starts(dir.path()), 1);
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
    assert!(
        !serve.output().contains(PASSWORD_CENTRE) && !agent.output().contains(PASSWORD_AGENT),
        "a password was printed"
    );
}

#[test]
fn a_killed_agents_run_goes_to_another_and_is_kept_once() {
    let Some(rabbit) = Rabbit::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plugin = slow_plugin(dir.path(), 3);
    let cfg = write_file(
        dir.path(),
        "vo.toml",
        &rabbit.centre_config(dir.path(), &nagios_probe(&plugin), ""),
    );
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&cfg, store.to_str().unwrap());
    let addr = serve.http_addr();
    let mut first = rabbit.agent(dir.path(), "first");
    assert!(
        wait_until(Duration::from_secs(30), || starts(dir.path()) >= 1),
        "the run did not start:\n{}\n{}",
        serve.output(),
        first.output()
    );
    first.kill9();
    // RabbitMQ requeues the run when the killed agent's connection goes.
    let second = rabbit.agent(dir.path(), "second");
    let ok = wait_until(Duration::from_secs(60), || ok_results(&addr));
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

#[test]
fn results_wait_in_the_agents_spool_while_rabbitmq_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rabbit) = Rabbit::own(dir.path()) else {
        return;
    };
    let plugin = slow_plugin(dir.path(), 4);
    let cfg = write_file(
        dir.path(),
        "vo.toml",
        &rabbit.centre_config(dir.path(), &nagios_probe(&plugin), ""),
    );
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&cfg, store.to_str().unwrap());
    let addr = serve.http_addr();
    let agent = rabbit.agent(dir.path(), "only");
    assert!(
        wait_until(Duration::from_secs(30), || starts(dir.path()) >= 1),
        "the run did not start:\n{}\n{}",
        serve.output(),
        agent.output()
    );
    // An outage: the node killed, not shut down.
    rabbit.must(&["kill"]);
    assert!(std::net::TcpStream::connect(("127.0.0.1", rabbit.port)).is_err());
    // The run ends while the broker is away: its result goes to the agent's spool.
    let spooled = wait_until(Duration::from_secs(30), || {
        agent.output().contains("spooling them")
    });
    assert!(spooled, "nothing spooled:\n{}", agent.output());
    assert!(results(&addr, SITE).is_empty());
    rabbit.must(&["start"]);
    let ok = wait_until(Duration::from_secs(90), || ok_results(&addr));
    assert!(
        ok,
        "the spooled result did not arrive:\n{}\n{}",
        serve.output(),
        agent.output()
    );
    // The unacknowledged run was persisted and is handed out again after the restart; the
    // centre keeps one result for the slot and counts the other.
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
    assert!(finals[0]["summary"]
        .as_str()
        .is_some_and(|s| s.contains("finished after 4s")));
}

/// What the site's agent user may do, tried with a client of the test's own.
struct Tried {
    /// A forged result (naming T2_OTHER) published with its own site's routing key.
    forged_on_own_key: Result<(), String>,
    /// The same on T2_OTHER's routing key.
    on_other_key: Result<(), String>,
    /// Consuming T2_OTHER's work queue.
    other_queue: Result<(), String>,
    /// Consuming the centre's results queue.
    results_queue: Result<(), String>,
    /// Publishing work into its own queue through the default exchange.
    default_exchange: Result<(), String>,
}

fn try_as_agent(url: &str) -> Tried {
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let forged = serde_json::json!({
        "schema": "gridprobe.result.v1", "message_id": "forged-1",
        "gridprobe_instance": "rogue", "metric": "org.e2e.slow",
        "service_flavour": "SRV", "hostname": "other.example.org", "site": "T2_OTHER",
        "vo": "e2e", "status": "OK", "summary": "forged", "details": "",
        "timestamp": "2026-01-01T00:00:00Z", "started_at_ms": 1, "duration_ms": 1,
        "attempt": 1, "final": true, "trigger": "scheduled", "kind": "nagios",
        "agent_run": "s-forged"
    })
    .to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("connect as the agent");
        let publish = |exchange: &'static str, key: &'static str| {
            let conn = &conn;
            let body = forged.clone();
            async move {
                let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let confirm = ch
                    .basic_publish(
                        exchange.into(),
                        key.into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let c = tokio::time::timeout(Duration::from_secs(10), confirm)
                    .await
                    .map_err(|_| "no confirm".to_string())?
                    .map_err(|e| e.to_string())?;
                if c.is_nack() {
                    return Err("nack".to_string());
                }
                Ok(())
            }
        };
        let consume = |queue: &'static str| {
            let conn = &conn;
            async move {
                let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
                ch.basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
        };
        Tried {
            forged_on_own_key: publish("gridprobe.agents", "gridprobe.results.T2_5FAGENT").await,
            on_other_key: publish("gridprobe.agents", "gridprobe.results.T2_5FOTHER").await,
            other_queue: consume("gridprobe.work.T2_5FOTHER").await,
            results_queue: consume("gridprobe.results").await,
            default_exchange: publish("", "gridprobe.work.T2_5FAGENT").await,
        }
    })
}

#[test]
fn an_agent_cannot_take_or_answer_another_sites_work() {
    let Some(rabbit) = Rabbit::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plugin = slow_plugin(dir.path(), 0);
    let other = "[[site]]\nname = \"T2_OTHER\"\ntier = 2\nexecutor = \"agent\"\n  [[site.service]]\n  flavour = \"SRV\"\n  hostname = \"other.example.org\"\n";
    let cfg = write_file(
        dir.path(),
        "vo.toml",
        &rabbit.centre_config(dir.path(), &nagios_probe(&plugin), other),
    );
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&cfg, store.to_str().unwrap());
    let addr = serve.http_addr();
    // No agent of T2_OTHER ever: its first run makes its queue, then it is UNKNOWN.
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
    assert!(
        rabbit.queues().contains("gridprobe.work.T2_5FOTHER"),
        "{}",
        rabbit.queues()
    );

    let tried = try_as_agent(&rabbit.url_with_password("agent-t2", PASSWORD_AGENT));
    assert_eq!(
        tried.forged_on_own_key,
        Ok(()),
        "its own routing key is allowed"
    );
    for (what, r) in [
        ("publish on another site's routing key", &tried.on_other_key),
        ("consume another site's work queue", &tried.other_queue),
        ("consume the centre's results queue", &tried.results_queue),
        (
            "publish through the default exchange",
            &tried.default_exchange,
        ),
    ] {
        let e = r.as_ref().expect_err(what);
        assert!(e.contains("ACCESS_REFUSED"), "{what}: {e}");
    }
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
fn amqp_broker_arguments_are_checked_without_echoing_secrets() {
    let out = common::gridprobe(&[
        "agent",
        "--broker",
        "amqp://agent:s3cret@127.0.0.1:5672/vh",
        "--site",
        SITE,
    ]);
    let (stdout, stderr) = common::texts(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("holds a password"), "{stderr}");
    assert!(!stderr.contains("s3cret") && !stdout.contains("s3cret"));
    // The configuration's check is positioned and names both brokers.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(
        dir.path(),
        "vo.toml",
        "vo = \"e2e\"\n[agents]\nurl = \"amqp://c:s3cret@127.0.0.1/vh\"\n[[site]]\nname = \"S\"\ntier = 2\nexecutor = \"agent\"\n",
    );
    let out = common::gridprobe(&["check", &cfg]);
    let (stdout, stderr) = common::texts(&out);
    let all = format!("{stdout}{stderr}");
    assert_ne!(out.status.code(), Some(0));
    assert!(all.contains("vo.toml:3:7"), "{all}");
    assert!(all.contains("holds a password"), "{all}");
    assert!(!all.contains("s3cret"), "{all}");
}
