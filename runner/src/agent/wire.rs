//! What centre and agents say to each other over the broker: subject and stream names, the
//! work message (one run of one probe instance), heartbeats, and run ids.
//!
//! A work message carries the instance as a small configuration of its own (the VO, the site
//! with the one service, the probe with its resolved timeout, retries and parameters), which the
//! agent reads with the same loader and builds with the same probe kinds as `serve` would. So
//! the agent holds no topology, and every check a configuration gets (ranges, parameters,
//! placeholders) applies to what it is sent.

use gridprobe_config::time::format_duration;
use gridprobe_config::{Config, ProbeInstance};
use gridprobe_probes::Trigger;
use serde::{Deserialize, Serialize};

/// `schema` of a work message.
pub const WORK_SCHEMA: &str = "gridprobe.work.v1";
/// `schema` of a heartbeat.
pub const HEARTBEAT_SCHEMA: &str = "gridprobe.heartbeat.v1";
/// Largest work message or heartbeat read; anything larger is refused unread.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The durable consumer the agents of a site share on its work stream.
pub const AGENTS_CONSUMER: &str = "agents";
/// The centre's durable consumer on the results stream.
pub const CENTRE_CONSUMER: &str = "centre";

/// A name as one NATS subject token and stream-name part: ASCII letters, digits and `-` stay,
/// every other byte becomes `_XX` (hex), so distinct names never share a token and no site
/// name can add tokens or wildcards to a subject.
pub fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The subjects and streams under one prefix (`[agents] prefix`, `gridprobe agent --prefix`).
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix` (dot-separated subject tokens, checked by the config loader or
    /// the agent's argument parser).
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where the centre puts a site's runs.
    pub fn work_subject(&self, site: &str) -> String {
        format!("{}.work.{}", self.prefix, token(site))
    }

    /// The work-queue stream of a site.
    pub fn work_stream(&self, site: &str) -> String {
        format!("{}_WORK_{}", token(&self.prefix), token(site))
    }

    /// Where a site's agents publish results.
    pub fn results_subject(&self, site: &str) -> String {
        format!("{}.results.{}", self.prefix, token(site))
    }

    /// Every site's results.
    pub fn results_filter(&self) -> String {
        format!("{}.results.*", self.prefix)
    }

    /// The stream of results.
    pub fn results_stream(&self) -> String {
        format!("{}_RESULTS", token(&self.prefix))
    }

    /// Where a site's agents send heartbeats.
    pub fn heartbeat_subject(&self, site: &str) -> String {
        format!("{}.heartbeat.{}", self.prefix, token(site))
    }

    /// Every site's heartbeats.
    pub fn heartbeat_filter(&self) -> String {
        format!("{}.heartbeat.*", self.prefix)
    }

    /// The reply-subject prefix of a site's agents: their broker user may subscribe to this
    /// only, so no agent reads another site's work from the replies to its pulls.
    pub fn agent_inbox(&self, site: &str) -> String {
        format!("_GP_INBOX.{}.{}", token(&self.prefix), token(site))
    }

    /// The site token of a subject under `kind` (`results`, `heartbeat`), if it is one.
    pub fn site_token_of<'a>(&self, kind: &str, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(self.prefix.as_str())?;
        let rest = rest.strip_prefix('.')?.strip_prefix(kind)?;
        let tok = rest.strip_prefix('.')?;
        (!tok.is_empty() && !tok.contains('.')).then_some(tok)
    }
}

/// One run handed to a site's agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    /// [`WORK_SCHEMA`].
    pub schema: String,
    /// The run: `s-…` for a scheduled slot (the same slot always gets the same id), `d-…` for
    /// an on-demand run. Results carry it back; the centre keeps one result per id.
    pub run_id: String,
    /// Site, service host, flavour and full metric name of the cell (checked by the agent
    /// against what it builds, and by the centre against what comes back).
    pub site: String,
    /// Service host name.
    pub hostname: String,
    /// Service flavour.
    pub flavour: String,
    /// Full metric name.
    pub metric: String,
    /// Scheduled or on demand.
    pub trigger: Trigger,
    /// When the centre handed it over (ms since the epoch).
    pub dispatched_ms: i64,
    /// After this (ms since the epoch) the centre no longer waits for it: an agent that gets
    /// it later drops it instead of running a stale check.
    pub expires_ms: i64,
    /// The `[[credential]]` the probe uses, by name: the agent has its own (`--credentials`).
    #[serde(default)]
    pub credential: Option<String>,
    /// The instance as a configuration (TOML): `vo`, one `[[site]]` with one service, one
    /// `[[probe]]` with resolved `timeout`, `retries`, `retry_interval` and its `params`.
    pub config: String,
}

/// Why a work message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is larger than the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// Not the expected JSON.
    #[error("not a gridprobe message: {0}")]
    Decode(String),
    /// Decoded, but unusable.
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl Work {
    /// The JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain strings, numbers and an enum: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a work message from the broker (outside input: bounded, checked).
    pub fn from_json(bytes: &[u8]) -> Result<Work, WireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let w: Work =
            serde_json::from_slice(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
        if w.schema != WORK_SCHEMA {
            return Err(WireError::Invalid(format!(
                "schema `{}`, expected `{WORK_SCHEMA}`",
                w.schema
            )));
        }
        for (name, v) in [
            ("run_id", &w.run_id),
            ("site", &w.site),
            ("hostname", &w.hostname),
            ("flavour", &w.flavour),
            ("metric", &w.metric),
        ] {
            if v.trim().is_empty() || v.len() > 1024 || v.chars().any(char::is_control) {
                return Err(WireError::Invalid(format!(
                    "`{name}` must be a non-empty name of at most 1024 bytes on one line"
                )));
            }
        }
        Ok(w)
    }
}

/// An agent's sign of life, every few seconds on `PREFIX.heartbeat.SITE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// [`HEARTBEAT_SCHEMA`].
    pub schema: String,
    /// The agent's site.
    pub site: String,
    /// The agent's name (`--name`).
    pub name: String,
    /// gridprobe version of the agent.
    pub version: String,
    /// When the agent started (ms since the epoch).
    pub started_ms: i64,
    /// When this heartbeat was sent (ms since the epoch, the agent's clock).
    pub sent_ms: i64,
    /// Runs it is running now.
    pub inflight: u32,
    /// Runs it finished since it started.
    pub runs_done: u64,
}

impl Heartbeat {
    /// The JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a heartbeat (outside input: bounded, checked).
    pub fn from_json(bytes: &[u8]) -> Result<Heartbeat, WireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let h: Heartbeat =
            serde_json::from_slice(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
        if h.schema != HEARTBEAT_SCHEMA {
            return Err(WireError::Invalid(format!("schema `{}`", h.schema)));
        }
        for v in [&h.site, &h.name, &h.version] {
            if v.trim().is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
                return Err(WireError::Invalid(
                    "site, name and version must be non-empty single lines of at most 256 bytes"
                        .into(),
                ));
            }
        }
        Ok(h)
    }
}

/// The run id of a scheduled slot: the same cell and slot always give the same id, so a
/// centre that restarts (or two that share a schedule) hand JetStream the same message id.
pub fn slot_run_id(
    site: &str,
    hostname: &str,
    flavour: &str,
    metric: &str,
    slot_ms: i64,
) -> String {
    let h = gridprobe_results::coordination::stable_hash(&[site, hostname, flavour, metric]);
    format!("s-{h:016x}-{slot_ms}")
}

/// A fresh run id for an on-demand run.
pub fn on_demand_run_id(now_ms: i64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("d-{now_ms}-{}-{n}", std::process::id())
}

/// The configuration text of one instance (see [`Work::config`]).
pub fn instance_config(config: &Config, inst: &ProbeInstance) -> Result<String, String> {
    use toml::{Table, Value};
    let site = config.sites.get(inst.site).ok_or("no such site")?;
    let svc = site.services.get(inst.service).ok_or("no such service")?;
    let def = config.probes.get(inst.probe).ok_or("no such probe")?;
    let mut service = Table::new();
    service.insert("flavour".into(), Value::String(svc.flavour.clone()));
    service.insert("hostname".into(), Value::String(svc.hostname.clone()));
    if let Some(e) = &svc.endpoint {
        service.insert("endpoint".into(), Value::String(e.to_string()));
    }
    if !svc.tags.is_empty() {
        service.insert(
            "tags".into(),
            Value::Array(svc.tags.iter().cloned().map(Value::String).collect()),
        );
    }
    if !svc.params.is_empty() {
        let params: Table = svc
            .params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        service.insert("params".into(), Value::Table(params));
    }
    service.insert("production".into(), Value::Boolean(svc.production));
    let mut s = Table::new();
    s.insert("name".into(), Value::String(site.name.clone()));
    s.insert("tier".into(), Value::Integer(i64::from(site.tier)));
    s.insert("service".into(), Value::Array(vec![Value::Table(service)]));
    let mut probe = Table::new();
    probe.insert("metric".into(), Value::String(def.metric.clone()));
    probe.insert("kind".into(), Value::String(def.kind.clone()));
    probe.insert(
        "flavours".into(),
        Value::Array(vec![Value::String(svc.flavour.clone())]),
    );
    for (key, d) in [
        ("interval", inst.interval),
        ("timeout", inst.timeout),
        ("retry_interval", inst.retry_interval),
        ("freshness", inst.freshness),
    ] {
        probe.insert(key.into(), Value::String(format_duration(d)));
    }
    probe.insert("retries".into(), Value::Integer(i64::from(inst.retries)));
    if let Some(v) = &def.params.value {
        let params = <Value as serde::Deserialize>::deserialize(toml::de::ValueDeserializer::from(
            v.clone(),
        ))
        .map_err(|e| format!("cannot copy the probe's params: {e}"))?;
        probe.insert("params".into(), params);
    }
    // A job's worker-node bundle travels with it. A staged script is named by its absolute
    // path here, where the centre read it; the agent must hold the same file there (as it
    // holds the plugins a `nagios` probe runs), else its run is UNKNOWN with the reason.
    let mut bundle = Vec::new();
    for child in config
        .probes
        .iter()
        .filter(|p| p.reported_by.as_deref() == Some(def.metric.as_str()))
    {
        let Some(v) = &child.params.value else {
            continue;
        };
        let mut entry = <Table as serde::Deserialize>::deserialize(
            toml::de::ValueDeserializer::from(v.clone()),
        )
        .map_err(|e| format!("cannot copy the bundle metric {}: {e}", child.metric))?;
        if let Some(Value::String(script)) = entry.get("script") {
            let dir = config
                .sources
                .file(child.params.file)
                .and_then(|f| f.path.parent().map(std::path::Path::to_path_buf))
                .unwrap_or_default();
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            let absolute = dir.join(script).to_string_lossy().into_owned();
            entry.insert("script".into(), Value::String(absolute));
        }
        bundle.push(Value::Table(entry));
    }
    if !bundle.is_empty() {
        probe.insert("bundle".into(), Value::Array(bundle));
    }
    let mut root = Table::new();
    root.insert("vo".into(), Value::String(config.vo.clone()));
    root.insert("site".into(), Value::Array(vec![Value::Table(s)]));
    root.insert("probe".into(), Value::Array(vec![Value::Table(probe)]));
    toml::to_string(&root).map_err(|e| format!("cannot write the instance: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn tokens_are_one_token_and_distinct() {
        assert_eq!(token("T2_DE.DESY"), "T2_5FDE_2EDESY");
        assert_ne!(token("A.B"), token("A_B"));
        assert_ne!(token("a b"), token("a_20b"));
        assert_eq!(token("LCG-x9"), "LCG-x9");
        for t in [token("a.*>"), token("ü ")] {
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        }
        let n = Names::new("gridprobe.lhcb");
        assert_eq!(n.work_subject("S.1"), "gridprobe.lhcb.work.S_2E1");
        assert_eq!(n.work_stream("S.1"), "gridprobe_2Elhcb_WORK_S_2E1");
        assert_eq!(
            n.site_token_of("results", "gridprobe.lhcb.results.S_2E1"),
            Some("S_2E1")
        );
        assert_eq!(
            n.site_token_of("results", "gridprobe.lhcb.results.a.b"),
            None
        );
        assert_eq!(n.site_token_of("results", "other.results.a"), None);
    }

    #[test]
    fn bad_work_is_an_error_not_a_panic() {
        assert!(Work::from_json(b"nope").is_err());
        assert!(Work::from_json(b"{}").is_err());
        assert!(matches!(
            Work::from_json(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
            Err(WireError::TooLarge(_))
        ));
        let w = Work {
            schema: WORK_SCHEMA.into(),
            run_id: "s-1".into(),
            site: "S".into(),
            hostname: "h".into(),
            flavour: "F".into(),
            metric: "m".into(),
            trigger: Trigger::Scheduled,
            dispatched_ms: 1,
            expires_ms: 2,
            credential: None,
            config: String::new(),
        };
        assert_eq!(Work::from_json(&w.to_json()), Ok(w.clone()));
        let mut bad = w.clone();
        bad.site = "a\nb".into();
        assert!(Work::from_json(&bad.to_json()).is_err());
        let mut bad = w;
        bad.schema = "x".into();
        assert!(Work::from_json(&bad.to_json()).is_err());
    }

    #[test]
    fn the_instance_config_reads_back_as_the_same_instance() {
        let text = r#"
vo = "t"
[defaults]
timeout = "7s"
retries = 2
[[site]]
name = "S.1"
tier = 1
executor = "agent"
  [[site.service]]
  flavour = "SRV"
  hostname = "h.example.org"
  endpoint = "tcp://h.example.org:9"
  params = { port = "9" }
  [[site.service]]
  flavour = "OTHER"
  hostname = "o.example.org"
[agents]
url = "nats://127.0.0.1:4222"
[[probe]]
metric = "org.t.tcp"
kind = "tcp"
flavours = ["SRV"]
retry_interval = "2s"
  [probe.params]
  expect = "hello {hostname}"
"#;
        let loaded = gridprobe_config::load_str(Path::new("/tmp/t.toml"), text);
        assert!(loaded.diagnostics.is_empty(), "{}", loaded.diagnostics);
        let config = loaded.config;
        let inst = config.instances()[0].clone();
        let mini = instance_config(&config, &inst).expect("config");
        let back = gridprobe_config::load_str(Path::new("/tmp/work.toml"), &mini);
        assert!(back.diagnostics.is_empty(), "{}\n{mini}", back.diagnostics);
        let insts = back.config.instances();
        assert_eq!(insts.len(), 1);
        let b = &insts[0];
        assert_eq!(
            (b.timeout, b.retries, b.retry_interval),
            (inst.timeout, inst.retries, inst.retry_interval)
        );
        let svc = &back.config.sites[0].services[0];
        assert_eq!(svc.hostname, "h.example.org");
        assert_eq!(svc.params.get("port").map(String::as_str), Some("9"));
        assert!(mini.contains("hello {hostname}"), "{mini}");
        assert_eq!(back.config.sites[0].name, "S.1");
    }

    /// A job's worker-node bundle goes with it, a staged script by its absolute path, so the
    /// agent's run reports every bundle metric.
    #[test]
    fn a_bundle_travels_with_its_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("wn")).expect("mkdir");
        std::fs::write(dir.path().join("wn/check.sh"), "#!/bin/sh\necho OK\n").expect("write");
        let text = r#"
vo = "t"
[[site]]
name = "S"
tier = 2
executor = "agent"
  [[site.service]]
  flavour = "CE"
  hostname = "ce.example.org"
[agents]
url = "nats://127.0.0.1:4222"
[[probe]]
metric = "org.t.WN-bundle"
kind = "job"
flavours = ["CE"]
  [probe.params]
  backend = "slurm"
  [[probe.bundle]]
  metric = "org.t.WN-check"
  script = "wn/check.sh"
  [[probe.bundle]]
  metric = "org.t.WN-disk"
  command = "/usr/lib/nagios/plugins/check_disk"
  args = ["-w", "10%"]
"#;
        let path = dir.path().join("gridprobe.toml");
        let loaded = gridprobe_config::load_str(&path, text);
        assert!(loaded.diagnostics.is_empty(), "{}", loaded.diagnostics);
        let config = loaded.config;
        let inst = config.instances()[0].clone();
        let mini = instance_config(&config, &inst).expect("config");
        let back = gridprobe_config::load_str(Path::new("work-s-1.toml"), &mini);
        assert!(back.diagnostics.is_empty(), "{}\n{mini}", back.diagnostics);
        let reported: Vec<&str> = back
            .config
            .probes
            .iter()
            .filter_map(|p| p.reported_by.as_ref().map(|_| p.metric.as_str()))
            .collect();
        assert_eq!(reported, ["org.t.WN-check", "org.t.WN-disk"]);
        let script = std::fs::canonicalize(dir.path().join("wn/check.sh")).expect("canon");
        assert!(mini.contains(&*script.to_string_lossy()), "{mini}");
    }
}
