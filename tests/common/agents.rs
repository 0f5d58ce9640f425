//! Helpers of the site-agent tests (tests/agents.rs over NATS JetStream, tests/agents_rabbitmq.rs
//! over RabbitMQ): `gridprobe agent` as a real process, serve's API and metrics, a slow plugin
//! that counts its starts, and the centre's configuration.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{http_client, write_file};

/// The agent-run site of the tests.
pub const SITE: &str = "T2_AGENT";

/// The centre's configuration: [`SITE`] runs on agents through `url` (the centre's user,
/// `password` in a file); `extra` adds sites or probes.
pub fn centre_config(
    dir: &Path,
    url: &str,
    password: &str,
    site_service: &str,
    probe: &str,
    extra: &str,
) -> String {
    let pw = write_file(dir, "centre.pw", password);
    format!(
        r#"
vo = "e2e"
[defaults]
interval = "1h"
timeout = "6s"
[server]
startup_spread = "1s"
shutdown_grace = "2s"

[agents]
url = "{url}"
password_file = "{pw}"
no_agent_after = "5s"
grace = "1s"

[[site]]
name = "{SITE}"
tier = 2
executor = "agent"
{site_service}
{probe}
{extra}
"#
    )
}

/// A running `gridprobe agent` (optionally inside a network namespace).
pub struct Agent {
    /// The process.
    pub child: Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Agent {
    /// Starts `gridprobe agent` of [`SITE`] on `broker` (a URL with the agent's user), its
    /// password in a file, a spool in `dir`, heartbeats every second, two runs at once.
    pub fn start(
        broker: &str,
        password: &str,
        dir: &Path,
        name: &str,
        netns: Option<&str>,
    ) -> Agent {
        let pw = write_file(dir, &format!("{name}.pw"), password);
        let spool = dir.join(format!("{name}.spool"));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(super::bin());
                c
            }
            None => Command::new(super::bin()),
        };
        cmd.args([
            "agent",
            "--broker",
            broker,
            "--site",
            SITE,
            "--name",
            name,
            "--password-file",
            &pw,
            "--spool-dir",
            spool.to_str().expect("utf-8"),
            "--heartbeat",
            "1s",
            "--concurrency",
            "2",
        ])
        .env("GRIDPROBE_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("agent starts");
        let output = super::collect_output(&mut child);
        Agent { child, output }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        super::output_of(&self.output)
    }

    /// Kills it with SIGKILL.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A JSON answer of serve's API (null when there is none).
pub fn get_json(addr: &str, path: &str) -> serde_json::Value {
    http_client()
        .get(format!("http://{addr}{path}"))
        .send()
        .and_then(|r| r.text())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// The site's final results, newest first.
pub fn results(addr: &str, site: &str) -> Vec<serde_json::Value> {
    get_json(addr, &format!("/api/v1/results?site={site}&limit=50"))["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// serve's `/metrics`.
pub fn metrics(addr: &str) -> String {
    http_client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// A metric's value (first series whose line starts with `prefix`).
pub fn metric(addr: &str, prefix: &str) -> Option<f64> {
    metrics(addr)
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A plugin that takes `secs` seconds, leaving a mark per start in `marks`.
pub fn slow_plugin(dir: &Path, secs: u32) -> PathBuf {
    let marks = dir.join("marks");
    super::script(
        dir,
        "slow.sh",
        &format!(
            "echo start >> {marks}\nsleep {secs}\necho 'OK - finished after {secs}s'\nexit 0",
            marks = marks.display()
        ),
    )
}

/// How many times the slow plugin started.
pub fn starts(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("marks"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// A `nagios` probe running `plugin` on the SRV services.
pub fn nagios_probe(plugin: &Path) -> String {
    format!(
        "[[probe]]\nmetric = \"org.e2e.slow\"\nkind = \"nagios\"\nflavours = [\"SRV\"]\n  [probe.params]\n  command = \"{}\"\n",
        plugin.display()
    )
}

/// A service of the agent-run site that the centre never contacts itself.
pub const LOCAL_SERVICE: &str =
    "  [[site.service]]\n  flavour = \"SRV\"\n  hostname = \"srv.example.org\"\n";
