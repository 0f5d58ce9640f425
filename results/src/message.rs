//! The result message: one probe attempt as JSON, in the spirit of the ETF messages WLCG
//! monitoring consumed (metric, service flavour, host, site, VO, status, summary, details,
//! perfdata, `%Y-%m-%dT%H:%M:%SZ` timestamp, the monitoring instance), plus what gridprobe needs
//! to rebuild the result exactly (start and duration in ms, attempt, final, trigger, kind) and a
//! stable `message_id` so that consumers drop the duplicates at-least-once delivery brings.
//!
//! The same encoding is what the durable spools hold, so a spooled result and a published one
//! are the same bytes.

use gridprobe_probes::outcome::Reported;
use gridprobe_probes::outcome::{bound_details, bound_summary};
use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Status, Trigger};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::NewResult;

/// Value of the `schema` field of messages this gridprobe writes.
pub const SCHEMA: &str = "gridprobe.result.v1";

/// One result as published (and spooled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    /// Message format, [`SCHEMA`].
    pub schema: String,
    /// Stable id: the same attempt always gets the same id ([`message_id`]).
    pub message_id: String,
    /// The gridprobe instance that ran the probe (`[server] instance`, default the host name).
    pub gridprobe_instance: String,
    /// Full metric name.
    pub metric: String,
    /// Service flavour (one message per flavour).
    pub service_flavour: String,
    /// Service host name.
    pub hostname: String,
    /// Site name.
    pub site: String,
    /// Virtual organisation.
    pub vo: String,
    /// OK, WARNING, CRITICAL, UNKNOWN or STANDBY.
    pub status: Status,
    /// One line, at most 256 characters.
    pub summary: String,
    /// The full output (at most 64 KiB).
    pub details: String,
    /// Performance data.
    #[serde(default)]
    pub perfdata: Vec<Perfdatum>,
    /// Start of the attempt, UTC, `%Y-%m-%dT%H:%M:%SZ`.
    pub timestamp: String,
    /// Start of the attempt, ms since the epoch (the exact value).
    pub started_at_ms: i64,
    /// Run time, ms.
    pub duration_ms: u64,
    /// Attempt number, 1 for the first.
    pub attempt: u32,
    /// Whether this attempt is the hard state of its run.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Scheduled or on demand.
    pub trigger: Trigger,
    /// Probe kind.
    pub kind: String,
    /// The dispatched run this attempt belongs to, when a site agent ran it
    /// ([`gridprobe_probes::Outcome::agent_run`]); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_run: Option<String>,
    /// The further metrics this attempt measured (a worker-node bundle's plugins,
    /// [`gridprobe_probes::Outcome::reported`]), carried when a site agent ran it so that the
    /// centre records each as its own cell; absent otherwise (a local run splits them before
    /// publishing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reported: Vec<ReportedMessage>,
}

/// Most further metrics one message may carry: far above any bundle, small enough that a
/// hostile message cannot make the centre build unbounded cells.
pub const MAX_REPORTED: usize = 1_000;

/// One further metric in [`ResultMessage::reported`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedMessage {
    /// Full metric name.
    pub metric: String,
    /// Its status.
    pub status: Status,
    /// One line.
    pub summary: String,
    /// Its output.
    #[serde(default)]
    pub details: String,
    /// Its performance data.
    #[serde(default)]
    pub perfdata: Vec<Perfdatum>,
}

/// A message that cannot be turned back into a result.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Not JSON, or a field missing or of the wrong type.
    #[error("not a gridprobe result message: {0}")]
    Decode(String),
    /// Decoded, but a value is unusable.
    #[error("invalid result message {id}: {reason}")]
    Invalid {
        /// The message id (may be empty).
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// The stable id of one attempt: SHA-256 over the instance, the cell, the start time and the
/// attempt number, as 32 hex digits. A result replayed from a spool or redelivered by a broker
/// keeps its id, which is what consumers deduplicate on.
pub fn message_id(instance: &str, r: &ProbeResult) -> String {
    let mut h = Sha256::new();
    for part in [
        instance,
        &r.site,
        &r.hostname,
        &r.flavour,
        &r.metric,
        &r.started_at_ms.to_string(),
        &r.attempt.to_string(),
    ] {
        // Length-prefixed, so that no two different tuples hash the same bytes.
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// `%Y-%m-%dT%H:%M:%SZ` for ms since the epoch.
pub fn etf_timestamp(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

impl ResultMessage {
    /// The message of a result recorded by `instance`.
    pub fn new(instance: &str, r: &NewResult) -> Self {
        let p = &r.result;
        ResultMessage {
            schema: SCHEMA.to_string(),
            message_id: message_id(instance, p),
            gridprobe_instance: instance.to_string(),
            metric: p.metric.clone(),
            service_flavour: p.flavour.clone(),
            hostname: p.hostname.clone(),
            site: p.site.clone(),
            vo: p.vo.clone(),
            status: p.outcome.status,
            summary: p.outcome.summary.clone(),
            details: p.outcome.details.clone(),
            perfdata: p.outcome.perfdata.clone(),
            timestamp: etf_timestamp(p.started_at_ms),
            started_at_ms: p.started_at_ms,
            duration_ms: p.duration_ms,
            attempt: p.attempt,
            is_final: r.is_final,
            trigger: p.trigger,
            kind: p.kind.clone(),
            agent_run: p.outcome.agent_run.as_deref().map(String::from),
            reported: p
                .outcome
                .reported
                .iter()
                .map(|r| ReportedMessage {
                    metric: r.metric.clone(),
                    status: r.outcome.status,
                    summary: r.outcome.summary.clone(),
                    details: r.outcome.details.clone(),
                    perfdata: r.outcome.perfdata.clone(),
                })
                .collect(),
        }
    }

    /// The JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and enums cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a message; unknown fields are ignored so newer producers stay readable.
    pub fn from_json(bytes: &[u8]) -> Result<Self, MessageError> {
        serde_json::from_slice(bytes).map_err(|e| MessageError::Decode(e.to_string()))
    }

    /// The result to store. Text is bounded as if a probe had produced it; an empty cell
    /// name, a negative time or attempt 0 is refused.
    pub fn to_new_result(&self) -> Result<NewResult, MessageError> {
        let invalid = |reason: &str| MessageError::Invalid {
            id: self.message_id.clone(),
            reason: reason.to_string(),
        };
        if self.message_id.trim().is_empty() {
            return Err(invalid("empty message_id"));
        }
        for (name, v) in [
            ("site", &self.site),
            ("hostname", &self.hostname),
            ("service_flavour", &self.service_flavour),
            ("metric", &self.metric),
            ("vo", &self.vo),
        ] {
            if v.trim().is_empty() {
                return Err(invalid(&format!("empty {name}")));
            }
        }
        if self.started_at_ms < 0 {
            return Err(invalid("negative started_at_ms"));
        }
        if self.attempt == 0 {
            return Err(invalid("attempt 0 (attempts count from 1)"));
        }
        if self.reported.len() > MAX_REPORTED {
            return Err(invalid(&format!(
                "{} reported metrics (at most {MAX_REPORTED})",
                self.reported.len()
            )));
        }
        if self.reported.iter().any(|r| r.metric.trim().is_empty()) {
            return Err(invalid("a reported metric without a name"));
        }
        let reported = self
            .reported
            .iter()
            .map(|r| Reported {
                metric: r.metric.clone(),
                outcome: received(r.status, &r.summary, &r.details, &r.perfdata),
            })
            .collect();
        Ok(NewResult {
            result: ProbeResult {
                metric: self.metric.clone(),
                kind: self.kind.clone(),
                vo: self.vo.clone(),
                site: self.site.clone(),
                hostname: self.hostname.clone(),
                flavour: self.service_flavour.clone(),
                started_at_ms: self.started_at_ms,
                duration_ms: self.duration_ms,
                outcome: Outcome {
                    reported,
                    agent_run: self.agent_run.as_deref().map(Box::from),
                    ..received(self.status, &self.summary, &self.details, &self.perfdata)
                },
                attempt: self.attempt,
                trigger: self.trigger,
            },
            is_final: self.is_final,
        })
    }
}

/// An outcome read from a message: its text bounded as if a probe had produced it.
fn received(status: Status, summary: &str, details: &str, perfdata: &[Perfdatum]) -> Outcome {
    Outcome {
        status,
        summary: bound_summary(summary),
        details: bound_details(details.to_string()),
        perfdata: perfdata.to_vec(),
        connection_fault: None,
        reported: Vec::new(),
        agent_run: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewResult {
        NewResult {
            result: ProbeResult {
                metric: "org.lhcb.CE-lhcb-install".into(),
                kind: "nagios".into(),
                vo: "lhcb".into(),
                site: "LCG.CERN.ch".into(),
                hostname: "ce01.cern.ch".into(),
                flavour: "ARC-CE".into(),
                started_at_ms: 1_700_000_000_123,
                duration_ms: 250,
                outcome: Outcome::warning("slow")
                    .with_details("line 1\nline 2")
                    .with_perfdata(vec![Perfdatum::new("time", 0.25, "s")]),
                attempt: 2,
                trigger: Trigger::Scheduled,
            },
            is_final: true,
        }
    }

    #[test]
    fn round_trip_keeps_the_result_exactly() {
        let m = ResultMessage::new("gp-1", &sample());
        assert_eq!(m.timestamp, "2023-11-14T22:13:20Z");
        let back = ResultMessage::from_json(&m.to_json()).expect("decode");
        assert_eq!(back, m);
        assert_eq!(back.to_new_result().expect("valid"), sample());
        let v: serde_json::Value = serde_json::from_slice(&m.to_json()).expect("json");
        for key in [
            "metric",
            "service_flavour",
            "hostname",
            "site",
            "vo",
            "status",
            "summary",
            "details",
            "perfdata",
            "timestamp",
            "gridprobe_instance",
            "message_id",
            "final",
            "attempt",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        assert_eq!(v["status"], "WARNING");
    }

    #[test]
    fn ids_are_stable_and_distinguish_attempts_and_instances() {
        let a = sample();
        let id = message_id("gp-1", &a.result);
        assert_eq!(id.len(), 32);
        assert_eq!(id, message_id("gp-1", &a.result));
        let mut b = a.clone();
        b.result.attempt = 3;
        assert_ne!(id, message_id("gp-1", &b.result));
        assert_ne!(id, message_id("gp-2", &a.result));
        // Length prefixes: moving a character between fields changes the id.
        let mut c = a.clone();
        c.result.site = "LCG.CERN.c".into();
        c.result.hostname = "hce01.cern.ch".into();
        assert_ne!(id, message_id("gp-1", &c.result));
    }

    /// A site agent's run id survives the message and so the spool (replayed from it), and
    /// messages of local runs do not carry the field at all.
    #[test]
    fn an_agent_run_id_round_trips() {
        let plain = ResultMessage::new("gp-1", &sample()).to_json();
        assert!(!String::from_utf8_lossy(&plain).contains("agent_run"));
        let mut r = sample();
        r.result.outcome.agent_run = Some("s-00ff-1700".into());
        let m = ResultMessage::new("agent-1", &r);
        let back = ResultMessage::from_json(&m.to_json()).expect("decode");
        assert_eq!(back.agent_run.as_deref(), Some("s-00ff-1700"));
        assert_eq!(back.to_new_result().expect("valid"), r);
    }

    /// A bundle's plugin results ride with the job's result when an agent ran it (the centre
    /// splits them into cells), are absent from other messages, and are bounded.
    #[test]
    fn reported_metrics_round_trip_and_are_bounded() {
        let plain = ResultMessage::new("gp-1", &sample()).to_json();
        assert!(!String::from_utf8_lossy(&plain).contains("reported"));
        let mut r = sample();
        r.result.outcome.agent_run = Some("s-1".into());
        r.result.outcome.reported = vec![Reported {
            metric: "org.lhcb.WN-cvmfs".into(),
            outcome: Outcome::critical("lhcb.cern.ch not mounted"),
        }];
        let m =
            ResultMessage::from_json(&ResultMessage::new("agent-1", &r).to_json()).expect("decode");
        assert_eq!(m.reported.len(), 1);
        assert_eq!(m.to_new_result().expect("valid"), r);
        let mut big = m.clone();
        big.reported = vec![m.reported[0].clone(); MAX_REPORTED + 1];
        let e = big.to_new_result().expect_err("too many");
        assert!(e.to_string().contains("reported metrics"), "{e}");
        let mut blank = m;
        blank.reported[0].metric = " ".into();
        assert!(blank.to_new_result().is_err());
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        assert!(ResultMessage::from_json(b"not json").is_err());
        assert!(ResultMessage::from_json(b"{}").is_err());
        let mut m = ResultMessage::new("gp-1", &sample());
        m.site = " ".into();
        let e = m.to_new_result().expect_err("empty site");
        assert!(e.to_string().contains("empty site"), "{e}");
        let mut m = ResultMessage::new("gp-1", &sample());
        m.summary = "x".repeat(1000);
        let r = m.to_new_result().expect("bounded");
        assert_eq!(r.result.outcome.summary.chars().count(), 256);
    }
}
