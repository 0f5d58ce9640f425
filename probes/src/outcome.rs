//! The outcome model: SAM statuses with their Nagios numbers, performance data, and the result
//! record every layer after the probes passes along.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Longest summary kept (SAM/ETF messages carry at most 256 characters).
pub const SUMMARY_LIMIT: usize = 256;
/// Longest details text kept, in bytes.
pub const DETAILS_LIMIT: usize = 64 * 1024;
/// Appended where text was cut.
pub const TRUNCATION_MARKER: &str = "\n[... output truncated by gridprobe ...]";

/// The status of one probe run, as in the SAM table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Nagios 0: the service works.
    Ok,
    /// Nagios 1: works, but something needs attention.
    Warning,
    /// Nagios 2: does not work ("error" in SAM tables).
    Critical,
    /// Nagios 3: the probe could not decide.
    Unknown,
    /// Not run on purpose (dependency not OK, lock held, downtime); the summary says why.
    #[serde(rename = "STANDBY")]
    Standby,
}

impl Status {
    /// Every status, in Nagios order then standby.
    pub const ALL: [Status; 5] = [
        Status::Ok,
        Status::Warning,
        Status::Critical,
        Status::Unknown,
        Status::Standby,
    ];

    /// The Nagios return code, where one exists (standby has none).
    pub fn nagios_code(self) -> Option<u8> {
        match self {
            Status::Ok => Some(0),
            Status::Warning => Some(1),
            Status::Critical => Some(2),
            Status::Unknown => Some(3),
            Status::Standby => None,
        }
    }

    /// Status for a Nagios plugin exit code; anything outside 0–3 is not a valid plugin answer.
    pub fn from_nagios_code(code: i32) -> Option<Status> {
        match code {
            0 => Some(Status::Ok),
            1 => Some(Status::Warning),
            2 => Some(Status::Critical),
            3 => Some(Status::Unknown),
            _ => None,
        }
    }

    /// The SAM table token: ok, warn, error, unkn, stb.
    pub fn token(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warn",
            Status::Critical => "error",
            Status::Unknown => "unkn",
            Status::Standby => "stb",
        }
    }

    /// The upper-case name used in messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
            Status::Standby => "STANDBY",
        }
    }

    /// Parses a status name or SAM token, case-insensitively.
    pub fn parse(s: &str) -> Option<Status> {
        let s = s.trim().to_ascii_lowercase();
        Status::ALL
            .into_iter()
            .find(|st| st.token() == s || st.name().eq_ignore_ascii_case(&s))
            .or(match s.as_str() {
                "crit" | "critical" => Some(Status::Critical),
                "unknown" => Some(Status::Unknown),
                "standby" | "stb" => Some(Status::Standby),
                _ => None,
            })
    }

    /// The status whose [`Status::name`] is exactly `s`, as the result stores write it; unlike
    /// [`Status::parse`] (what a user types) no other spelling is accepted, so a corrupt stored
    /// value is an error rather than a guess.
    pub fn from_name(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.name() == s)
    }

    /// Whether a probe depending on this result may run (the service is up).
    pub fn is_up(self) -> bool {
        matches!(self, Status::Ok | Status::Warning)
    }

    /// Rank for "worst of" in exit codes: OK < WARNING < UNKNOWN < CRITICAL; standby is not a
    /// measurement and ranks lowest.
    pub fn exit_rank(self) -> u8 {
        match self {
            Status::Standby => 0,
            Status::Ok => 1,
            Status::Warning => 2,
            Status::Unknown => 3,
            Status::Critical => 4,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One performance-data item: `'label'=value[UOM];[warn];[crit];[min];[max]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Perfdatum {
    /// The label, unquoted.
    pub label: String,
    /// The measured value.
    pub value: f64,
    /// Unit of measure: "", s, ms, us, %, B, KB, MB, TB, c.
    pub uom: String,
    /// Warning range, as written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub warn: Option<String>,
    /// Critical range, as written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub crit: Option<String>,
    /// Minimum possible value.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub min: Option<f64>,
    /// Maximum possible value.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max: Option<f64>,
}

impl Perfdatum {
    /// A plain measurement with a unit.
    pub fn new(label: impl Into<String>, value: f64, uom: impl Into<String>) -> Self {
        Perfdatum {
            label: label.into(),
            value,
            uom: uom.into(),
            warn: None,
            crit: None,
            min: None,
            max: None,
        }
    }

    /// A duration in seconds.
    pub fn seconds(label: impl Into<String>, d: Duration) -> Self {
        Perfdatum::new(label, d.as_secs_f64(), "s")
    }
}

impl fmt::Display for Perfdatum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.label.contains([' ', '\'', '=']) {
            write!(f, "'{}'", self.label.replace('\'', "''"))?;
        } else {
            f.write_str(&self.label)?;
        }
        write!(f, "={}{}", self.value, self.uom)?;
        let fields = [
            self.warn.clone(),
            self.crit.clone(),
            self.min.map(|v| v.to_string()),
            self.max.map(|v| v.to_string()),
        ];
        let last = fields.iter().rposition(Option::is_some);
        if let Some(last) = last {
            for field in &fields[..=last] {
                write!(f, ";{}", field.as_deref().unwrap_or(""))?;
            }
        }
        Ok(())
    }
}

/// What a probe returns: a status with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The status.
    pub status: Status,
    /// One line, at most [`SUMMARY_LIMIT`] characters.
    pub summary: String,
    /// The full output, at most [`DETAILS_LIMIT`] bytes, marked where truncated.
    pub details: String,
    /// Parsed performance data.
    pub perfdata: Vec<Perfdatum>,
    /// Set on a CRITICAL that failed before the service answered (DNS, TCP connect, a timeout
    /// in those phases, the TLS transport): the one kind of failure the monitoring host's own
    /// network can cause. Only the recording path reads it (`[server] self_check`); it is not
    /// stored.
    #[serde(skip)]
    pub connection_fault: Option<ConnectionFault>,
    /// Results of further metrics this run measured (the plugins of a worker-node bundle,
    /// declared as `[[probe.bundle]]`), each recorded by the runner as a cell of its own with
    /// the same time, attempt and service. Not stored with this result.
    #[serde(skip)]
    pub reported: Vec<Reported>,
    /// Set by a site agent (`gridprobe agent`): the id of the dispatched run this attempt
    /// belongs to, so that the centre keeps one result per run (slot) however often the run
    /// was delivered. Carried in the result message (`agent_run`); not stored.
    #[serde(skip)]
    pub agent_run: Option<Box<str>>,
}

/// One further metric's outcome in [`Outcome::reported`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// The full metric name, as declared in `[[probe.bundle]]`.
    pub metric: String,
    /// What was measured for it.
    pub outcome: Outcome,
}

/// Where a connection-level failure happened (see [`Outcome::connection_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionFault {
    /// The name did not resolve (or resolved to nothing).
    Dns,
    /// No address accepted the TCP connection (refused, unreachable, no answer).
    Connect,
    /// The deadline passed during the DNS lookup, the TCP connect or the TLS handshake.
    Timeout,
    /// The TLS handshake broke at the transport (reset, closed), not on a certificate or an
    /// alert from the server.
    TlsTransport,
}

impl Outcome {
    /// An outcome with a summary; the summary is bounded and kept to one line.
    pub fn new(status: Status, summary: impl Into<String>) -> Self {
        Outcome {
            status,
            summary: bound_summary(&summary.into()),
            details: String::new(),
            perfdata: Vec::new(),
            connection_fault: None,
            reported: Vec::new(),
            agent_run: None,
        }
    }

    /// OK with a summary.
    pub fn ok(summary: impl Into<String>) -> Self {
        Outcome::new(Status::Ok, summary)
    }

    /// WARNING with a summary.
    pub fn warning(summary: impl Into<String>) -> Self {
        Outcome::new(Status::Warning, summary)
    }

    /// CRITICAL with a summary.
    pub fn critical(summary: impl Into<String>) -> Self {
        Outcome::new(Status::Critical, summary)
    }

    /// UNKNOWN with a summary.
    pub fn unknown(summary: impl Into<String>) -> Self {
        Outcome::new(Status::Unknown, summary)
    }

    /// STANDBY with the reason the probe was not run.
    pub fn standby(reason: impl Into<String>) -> Self {
        Outcome::new(Status::Standby, reason)
    }

    /// Sets the details, bounded at [`DETAILS_LIMIT`].
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = bound_details(details.into());
        self
    }

    /// Marks a connection-level failure (see [`Outcome::connection_fault`]).
    pub fn with_connection_fault(mut self, fault: ConnectionFault) -> Self {
        self.connection_fault = Some(fault);
        self
    }

    /// Adds the outcomes of further metrics (see [`Outcome::reported`]).
    pub fn with_reported(mut self, reported: Vec<Reported>) -> Self {
        self.reported.extend(reported);
        self
    }

    /// Adds performance data.
    pub fn with_perfdata(mut self, perfdata: Vec<Perfdatum>) -> Self {
        self.perfdata.extend(perfdata);
        self
    }
}

/// Keeps the first line of a summary, at most [`SUMMARY_LIMIT`] characters.
pub fn bound_summary(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim_end();
    if line.chars().count() <= SUMMARY_LIMIT {
        return line.to_string();
    }
    let mut out: String = line.chars().take(SUMMARY_LIMIT - 1).collect();
    out.push('…');
    out
}

/// Cuts details at [`DETAILS_LIMIT`] bytes on a character boundary, with a marker.
pub fn bound_details(mut s: String) -> String {
    if s.len() <= DETAILS_LIMIT {
        return s;
    }
    let mut cut = DETAILS_LIMIT - TRUNCATION_MARKER.len();
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(TRUNCATION_MARKER);
    s
}

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// By the scheduler.
    Scheduled,
    /// Asked for by a user (CLI or API).
    OnDemand,
}

impl Trigger {
    /// Every trigger.
    pub const ALL: [Trigger; 2] = [Trigger::Scheduled, Trigger::OnDemand];

    /// The snake-case name used in JSON and in the result stores: `scheduled`, `on_demand`.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Scheduled => "scheduled",
            Trigger::OnDemand => "on_demand",
        }
    }

    /// The trigger whose [`Trigger::name`] is exactly `s`.
    pub fn parse(s: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// One recorded probe result: what was measured, where, when and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Full metric name.
    pub metric: String,
    /// Probe kind that produced it.
    pub kind: String,
    /// Virtual organisation.
    pub vo: String,
    /// Site name.
    pub site: String,
    /// Service host name.
    pub hostname: String,
    /// Service flavour.
    pub flavour: String,
    /// Start time, milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// Run time, milliseconds.
    pub duration_ms: u64,
    /// Status, summary, details, perfdata.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Attempt number, 1 for the first.
    pub attempt: u32,
    /// Scheduled or on demand.
    pub trigger: Trigger,
}

/// Milliseconds since the Unix epoch for a system time (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A duration perfdatum in seconds, to the microsecond.
pub(crate) fn seconds(label: &str, d: Duration) -> Perfdatum {
    Perfdatum::new(label, d.as_micros() as f64 / 1e6, "s")
}

/// A measured time for logs and summaries: `1.234 s`.
pub(crate) fn fmt_secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Bytes as an escaped, quoted string, cut after `max` bytes.
pub(crate) fn quote_bytes(b: &[u8], max: usize) -> String {
    let shown = &b[..b.len().min(max)];
    let more = if b.len() > max { "…" } else { "" };
    format!("\"{}\"{more}", shown.escape_ascii())
}

/// How much of a time [`fmt_utc`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UtcPrecision {
    /// `2026-11-25 14:03 UTC`.
    Minutes,
    /// `2026-11-25 14:03:07 UTC`.
    Seconds,
    /// `2026-11-25 14:03:07.120 UTC`.
    Millis,
}

/// A time (ms since the Unix epoch) in UTC, for summaries and details: the crate's one UTC
/// formatter. Times jiff cannot represent (beyond year 9999) are shown as the raw number.
pub(crate) fn fmt_utc(ms: i64, precision: UtcPrecision) -> String {
    let format = match precision {
        UtcPrecision::Minutes => "%Y-%m-%d %H:%M UTC",
        UtcPrecision::Seconds => "%Y-%m-%d %H:%M:%S UTC",
        UtcPrecision::Millis => "%Y-%m-%d %H:%M:%S%.3f UTC",
    };
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime(format).to_string(),
        Err(_) => format!("{ms} ms since the epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_codes_follow_sam_and_nagios() {
        assert_eq!(Status::Critical.token(), "error");
        assert_eq!(Status::Standby.token(), "stb");
        assert_eq!(Status::Unknown.nagios_code(), Some(3));
        assert_eq!(Status::Standby.nagios_code(), None);
        assert_eq!(Status::from_nagios_code(4), None);
        assert_eq!(Status::parse("warn"), Some(Status::Warning));
        assert_eq!(Status::parse("CRITICAL"), Some(Status::Critical));
    }

    #[test]
    fn trigger_and_status_names_round_trip_exactly() {
        for t in Trigger::ALL {
            assert_eq!(Trigger::parse(t.name()), Some(t));
            // The names are the serde names, so JSON and the stores agree.
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
        }
        assert_eq!(Trigger::parse("on demand"), None);
        assert_eq!(Trigger::parse("Scheduled"), None);
        for st in Status::ALL {
            assert_eq!(Status::from_name(st.name()), Some(st));
        }
        // Stored names are exact: a token or another case is corrupt data, not a status.
        assert_eq!(Status::from_name("ok"), None);
        assert_eq!(Status::from_name("error"), None);
    }

    #[test]
    fn summary_is_one_bounded_line() {
        let long = "x".repeat(1000);
        assert_eq!(bound_summary(&long).chars().count(), SUMMARY_LIMIT);
        assert_eq!(bound_summary("first\nsecond"), "first");
    }

    #[test]
    fn details_are_bounded_with_marker() {
        let d = bound_details("é".repeat(DETAILS_LIMIT));
        assert!(d.len() <= DETAILS_LIMIT);
        assert!(d.ends_with(TRUNCATION_MARKER));
    }

    #[test]
    fn perfdatum_round_trips_through_display() {
        let mut p = Perfdatum::new("time to connect", 0.25, "s");
        p.warn = Some("1".into());
        assert_eq!(p.to_string(), "'time to connect'=0.25s;1");
    }

    #[test]
    fn utc_times_at_each_precision() {
        let ms = 1_764_081_993_120; // 2025-11-25 14:46:33.120 UTC
        assert_eq!(fmt_utc(ms, UtcPrecision::Minutes), "2025-11-25 14:46 UTC");
        assert_eq!(
            fmt_utc(ms, UtcPrecision::Seconds),
            "2025-11-25 14:46:33 UTC"
        );
        assert_eq!(
            fmt_utc(ms, UtcPrecision::Millis),
            "2025-11-25 14:46:33.120 UTC"
        );
        assert_eq!(
            fmt_utc(-86_400_000, UtcPrecision::Minutes),
            "1969-12-31 00:00 UTC"
        );
        assert_eq!(
            fmt_utc(i64::MAX, UtcPrecision::Seconds),
            format!("{} ms since the epoch", i64::MAX)
        );
    }
}
