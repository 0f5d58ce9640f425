//! The self-check of the monitoring host (`[server.self_check]`): reference names that must
//! resolve and endpoints that must accept a TCP connection, checked in a task of their own
//! every `interval` (never in the scheduler's way). While a check fails, a CRITICAL that failed
//! at connection level ([`gridprobe_probes::ConnectionFault`]: DNS, TCP connect, a timeout in
//! those phases, a TLS handshake broken at the transport) is recorded UNKNOWN "monitoring host
//! problem: <reason>", its original summary and details kept in the details
//! ([`SelfCheckState::reclassify`], called by `ServeState::record`). Everything else, nagios
//! plugins included (their output cannot tell a local failure from the site's), is recorded
//! as measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use gridprobe_config::self_check::SelfCheck;
use gridprobe_probes::outcome::{bound_details, bound_summary};
use gridprobe_probes::{ProbeResult, Status};
use tokio_util::sync::CancellationToken;

/// Prefix of the summary of a reclassified result.
pub const SUMMARY_PREFIX: &str = "monitoring host problem: ";

/// One reference's last check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// `resolve` or `connect`.
    pub kind: &'static str,
    /// The name or `host:port`.
    pub target: String,
    /// `None` when it passed, else why not.
    pub error: Option<String>,
}

/// What the last round found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Whether `[server.self_check]` is configured.
    pub configured: bool,
    /// Why the host is failing (every failed check), `None` while it passes.
    pub failing: Option<String>,
    /// Since when it fails (ms since the epoch).
    pub failing_since_ms: Option<i64>,
    /// When the last round ended (ms since the epoch).
    pub last_check_ms: Option<i64>,
    /// Each reference's last check.
    pub checks: Vec<CheckResult>,
}

/// The self-check's state, shared by its task, the recording path, `/healthz` and `/metrics`.
#[derive(Debug, Default)]
pub struct SelfCheckState {
    snapshot: RwLock<Snapshot>,
    /// Rounds that found the host failing.
    pub failed_rounds: AtomicU64,
    /// Rounds run.
    pub rounds: AtomicU64,
    /// Results recorded UNKNOWN instead of CRITICAL.
    pub reclassified: AtomicU64,
}

impl SelfCheckState {
    /// The last round's findings.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why the host fails now, if it does.
    pub fn failing(&self) -> Option<String> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .failing
            .clone()
    }

    fn set(&self, configured: bool, checks: Vec<CheckResult>, now_ms: i64) {
        let reasons: Vec<String> = checks.iter().filter_map(|c| c.error.clone()).collect();
        let mut s = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        let failing = (!reasons.is_empty()).then(|| reasons.join("; "));
        match (&s.failing, &failing) {
            (None, Some(r)) => {
                tracing::warn!(reason = %r, "self-check: the monitoring host cannot probe; connection failures are recorded UNKNOWN");
                s.failing_since_ms = Some(now_ms);
            }
            (Some(_), None) => {
                tracing::info!("self-check: the monitoring host probes again");
                s.failing_since_ms = None;
            }
            _ => {}
        }
        s.configured = configured;
        s.failing = failing;
        s.last_check_ms = configured.then_some(now_ms);
        s.checks = checks;
    }

    /// While the host fails, turns the connection-level CRITICALs among `attempts` into
    /// UNKNOWN "monitoring host problem: <reason>", keeping what was measured in the details.
    pub fn reclassify(&self, attempts: &mut [ProbeResult]) {
        let Some(reason) = self.failing() else {
            return;
        };
        for r in attempts.iter_mut() {
            let o = &mut r.outcome;
            let Some(fault) = o.connection_fault else {
                continue;
            };
            if o.status != Status::Critical {
                continue;
            }
            let details = format!(
                "Recorded UNKNOWN instead of CRITICAL: the self-check of the monitoring host fails ({reason}), and this probe failed at connection level ({fault:?}), which that can cause.\nOriginal summary: {}\n\n{}",
                o.summary, o.details
            );
            o.status = Status::Unknown;
            o.summary = bound_summary(&format!("{SUMMARY_PREFIX}{reason}"));
            o.details = bound_details(details);
            self.reclassified.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs the self-check every interval of the current configuration until `shutdown`; a
/// configuration without `[server.self_check]` clears the state (reloads apply at the next
/// round).
pub async fn run(
    state: std::sync::Arc<SelfCheckState>,
    config: impl Fn() -> Option<SelfCheck> + Send + 'static,
    shutdown: CancellationToken,
) {
    loop {
        let wait = match config() {
            None => {
                state.set(false, Vec::new(), now_ms());
                Duration::from_secs(5)
            }
            Some(cfg) => {
                let checks = tokio::select! {
                    c = round(&cfg) => c,
                    _ = shutdown.cancelled() => return,
                };
                state.rounds.fetch_add(1, Ordering::Relaxed);
                if checks.iter().any(|c| c.error.is_some()) {
                    state.failed_rounds.fetch_add(1, Ordering::Relaxed);
                }
                state.set(true, checks, now_ms());
                cfg.interval
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Every check of one round, concurrently, each under the timeout.
pub async fn round(cfg: &SelfCheck) -> Vec<CheckResult> {
    let resolves = cfg.resolve.iter().map(|name| async move {
        let error =
            match tokio::time::timeout(cfg.timeout, tokio::net::lookup_host((name.as_str(), 0)))
                .await
            {
                Err(_) => Some(format!("DNS lookup of {name} timed out")),
                Ok(Err(e)) => Some(format!("DNS lookup of {name} failed: {}", short(&e))),
                Ok(Ok(mut addrs)) => addrs
                    .next()
                    .is_none()
                    .then(|| format!("DNS lookup of {name} returned no address")),
            };
        CheckResult {
            kind: "resolve",
            target: name.clone(),
            error,
        }
    });
    let connects = cfg.connect.iter().map(|(host, port)| async move {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let error = match tokio::time::timeout(
            cfg.timeout,
            tokio::net::TcpStream::connect((host.as_str(), *port)),
        )
        .await
        {
            Err(_) => Some(format!("TCP connect to {target} timed out")),
            Ok(Err(e)) => Some(format!("TCP connect to {target} failed: {}", short(&e))),
            Ok(Ok(_)) => None,
        };
        CheckResult {
            kind: "connect",
            target,
            error,
        }
    });
    let (mut a, b) = futures::join!(
        futures::future::join_all(resolves),
        futures::future::join_all(connects)
    );
    a.extend(b);
    a
}

/// An I/O error without the "(os error N)" tail.
fn short(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => return "connection refused".into(),
        K::ConnectionReset => return "connection reset by peer".into(),
        K::HostUnreachable => return "host unreachable".into(),
        K::NetworkUnreachable => return "network unreachable".into(),
        K::TimedOut => return "timed out".into(),
        _ => {}
    }
    let text = e.to_string();
    let text = text
        .strip_prefix("failed to lookup address information: ")
        .unwrap_or(&text);
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridprobe_probes::{ConnectionFault, Outcome, Trigger};

    fn result(outcome: Outcome) -> ProbeResult {
        ProbeResult {
            metric: "m".into(),
            kind: "tcp".into(),
            vo: "vo".into(),
            site: "S".into(),
            hostname: "h".into(),
            flavour: "f".into(),
            started_at_ms: 0,
            duration_ms: 0,
            outcome,
            attempt: 1,
            trigger: Trigger::Scheduled,
        }
    }

    #[tokio::test]
    async fn a_failing_host_turns_connection_criticals_unknown() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cfg = SelfCheck {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
            resolve: vec!["localhost".into()],
            connect: vec![("127.0.0.1".into(), port)],
        };
        let state = SelfCheckState::default();
        state.set(true, round(&cfg).await, 1);
        assert_eq!(state.failing(), None);
        let crit = Outcome::critical("TCP connect failed: connection refused on h:1")
            .with_connection_fault(ConnectionFault::Connect);
        let mut rs = vec![result(crit.clone())];
        state.reclassify(&mut rs);
        assert_eq!(rs[0].outcome.status, Status::Critical);

        drop(listener);
        state.set(true, round(&cfg).await, 2);
        let reason = state.failing().expect("failing");
        assert!(reason.contains("connection refused"), "{reason}");
        let mut rs = vec![
            result(crit),
            result(Outcome::critical("HTTP 500 on h")),
            result(Outcome::ok("fine")),
        ];
        state.reclassify(&mut rs);
        assert_eq!(rs[0].outcome.status, Status::Unknown);
        assert!(rs[0].outcome.summary.starts_with(SUMMARY_PREFIX));
        assert!(rs[0]
            .outcome
            .details
            .contains("Original summary: TCP connect failed"));
        assert_eq!(
            rs[1].outcome.status,
            Status::Critical,
            "the service's answer stays"
        );
        assert_eq!(rs[2].outcome.status, Status::Ok);
        assert_eq!(state.reclassified.load(Ordering::Relaxed), 1);
        assert_eq!(state.snapshot().failing_since_ms, Some(2));
    }
}
