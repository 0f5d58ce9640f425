//! Running one probe attempt safely, and one instance with its retries.
//!
//! Invariant: a probe never blocks its caller. Each attempt runs in its own task, is cut at its
//! timeout (plus a short grace for the probe's own cleanup), and a panic becomes UNKNOWN.

use std::time::{Duration, Instant, SystemTime};

use gridprobe_config::time::format_duration;
use gridprobe_config::Config;
use gridprobe_probes::outcome::unix_ms;
use gridprobe_probes::{Outcome, ProbeContext, ProbeResult, SharedProbe, Status, Trigger};
use tokio_util::sync::CancellationToken;

/// Extra time a probe gets past its deadline to clean up (kill its processes, close sockets)
/// before the runner abandons it.
pub const CLEANUP_GRACE: Duration = Duration::from_secs(5);

/// Identity of the instance an attempt belongs to, copied into each result.
#[derive(Debug, Clone)]
pub struct ResultLabels {
    /// Full metric name.
    pub metric: String,
    /// Probe kind.
    pub kind: String,
    /// VO name.
    pub vo: String,
    /// Site name.
    pub site: String,
    /// Service host name.
    pub hostname: String,
    /// Service flavour.
    pub flavour: String,
}

impl ResultLabels {
    /// Wraps an outcome into a result record.
    pub fn result(
        &self,
        outcome: Outcome,
        started: SystemTime,
        duration: Duration,
        attempt: u32,
        trigger: Trigger,
    ) -> ProbeResult {
        ProbeResult {
            metric: self.metric.clone(),
            kind: self.kind.clone(),
            vo: self.vo.clone(),
            site: self.site.clone(),
            hostname: self.hostname.clone(),
            flavour: self.flavour.clone(),
            started_at_ms: unix_ms(started),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            outcome,
            attempt,
            trigger,
        }
    }
}

/// Runs one attempt: in its own task, bounded by the context's deadline plus
/// [`CLEANUP_GRACE`], with panics turned into UNKNOWN.
pub async fn run_attempt(probe: SharedProbe, ctx: ProbeContext) -> Outcome {
    // The monitoring's own failure is never the site's: a probe whose credential is not
    // valid is not run, and its result is UNKNOWN with the reason (excluded from availability).
    if let Some(reason) = ctx
        .credential
        .as_ref()
        .and_then(|c| c.unusable(SystemTime::now()))
    {
        return Outcome::unknown(reason);
    }
    let timeout = ctx.timeout;
    let hard_limit = ctx.remaining().saturating_add(CLEANUP_GRACE);
    // Cancellation is the probe's job (it owns its child processes and sockets); the runner
    // only enforces the hard limit.
    let mut task = tokio::spawn(async move { probe.run(&ctx).await });
    tokio::select! {
        joined = &mut task => match joined {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-text panic payload".into());
                tracing::error!(panic = %msg, "probe panicked");
                Outcome::unknown(format!("probe panicked: {msg}"))
            }
            Err(_) => Outcome::unknown("probe task was cancelled"),
        },
        _ = tokio::time::sleep(hard_limit) => {
            // Dropping the task drops the probe's future; probes clean up in Drop guards.
            task.abort();
            Outcome::unknown(format!(
                "probe did not return within its timeout of {} (and {} of grace); abandoned",
                format_duration(timeout),
                format_duration(CLEANUP_GRACE)
            ))
        }
    }
}

/// Runs an instance: the first attempt, then up to `retries` more after `retry_interval` while
/// the status is not OK. Every attempt is returned, in order; the last is the hard state.
/// Cancellation stops the retries (the attempt in flight ends as the probe decides).
#[allow(clippy::too_many_arguments)]
pub async fn run_with_retries(
    probe: SharedProbe,
    make_ctx: impl Fn() -> ProbeContext,
    labels: &ResultLabels,
    retries: u32,
    retry_interval: Duration,
    trigger: Trigger,
    cancel: &CancellationToken,
    mut on_attempt: impl FnMut(&ProbeResult),
) -> Vec<ProbeResult> {
    let mut out = Vec::new();
    for attempt in 1..=retries.saturating_add(1) {
        let started = SystemTime::now();
        let clock = Instant::now();
        let outcome = run_attempt(probe.clone(), make_ctx()).await;
        let result = labels.result(outcome, started, clock.elapsed(), attempt, trigger);
        on_attempt(&result);
        let status = result.outcome.status;
        out.push(result);
        if status == Status::Ok || status == Status::Standby || attempt > retries {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(retry_interval) => {}
            _ = cancel.cancelled() => break,
        }
    }
    out
}

/// Splits one run's attempts into the cells they measured: the run's own first, then one per
/// metric its probe reports (`[[probe.bundle]]`, in config order), each with the attempt's
/// time, number and service. A declared metric an attempt did not report is UNKNOWN with the
/// reason (STANDBY when the run itself was): the runner's own outcomes (a dependency down, a
/// credential expired, a probe abandoned) never carry reported metrics, yet they cover them.
pub fn split_reported(config: &Config, mut attempts: Vec<ProbeResult>) -> Vec<Vec<ProbeResult>> {
    let Some(metric) = attempts.first().map(|a| a.metric.clone()) else {
        return vec![attempts];
    };
    // Where the run happened, for the metrics turned off there (`override.<metric>`).
    let place = attempts.first().and_then(|a| {
        let site = config.sites.iter().find(|s| s.name == a.site)?;
        let svc = site
            .services
            .iter()
            .find(|v| v.hostname == a.hostname && v.flavour == a.flavour)?;
        Some((site, svc))
    });
    let children: Vec<&str> = config
        .probes
        .iter()
        .filter(|p| p.reported_by.as_deref() == Some(metric.as_str()))
        .filter(|p| {
            let off = |m: &std::collections::BTreeMap<String, gridprobe_config::Overrides>| {
                m.get(&p.metric)
                    .or_else(|| m.get(&p.short))
                    .is_some_and(|o| o.disabled)
            };
            !place.is_some_and(|(site, svc)| off(&site.overrides) || off(&svc.overrides))
        })
        .map(|p| p.metric.as_str())
        .collect();
    let mut cells: Vec<Vec<ProbeResult>> = vec![Vec::new(); children.len()];
    for a in &mut attempts {
        let mut reported = std::mem::take(&mut a.outcome.reported);
        for (child, cell) in children.iter().zip(cells.iter_mut()) {
            let outcome = match reported.iter().position(|r| r.metric == *child) {
                Some(i) => reported.swap_remove(i).outcome,
                None if a.outcome.status == Status::Standby => Outcome::standby(format!(
                    "{} is STANDBY: {}",
                    gridprobe_config::short_metric_name(&metric),
                    a.outcome.summary
                )),
                None => Outcome::unknown(format!(
                    "not reported by {}, which ended {}: {}",
                    gridprobe_config::short_metric_name(&metric),
                    a.outcome.status,
                    a.outcome.summary
                )),
            };
            cell.push(ProbeResult {
                metric: (*child).to_string(),
                outcome,
                ..a.clone()
            });
        }
        if !reported.is_empty() {
            tracing::debug!(
                metric,
                extra = reported.len(),
                "reported metrics not in the config"
            );
        }
    }
    let mut out = Vec::with_capacity(cells.len() + 1);
    out.push(attempts);
    out.extend(cells);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use gridprobe_probes::Probe;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[derive(Debug)]
    struct Panics;
    #[async_trait]
    impl Probe for Panics {
        async fn run(&self, _ctx: &ProbeContext) -> Outcome {
            panic!("boom at the probe")
        }
    }

    #[derive(Debug)]
    struct Hangs;
    #[async_trait]
    impl Probe for Hangs {
        async fn run(&self, _ctx: &ProbeContext) -> Outcome {
            std::future::pending::<()>().await;
            Outcome::ok("never")
        }
    }

    #[derive(Debug, Default)]
    struct FailsTwice(AtomicU32);
    #[async_trait]
    impl Probe for FailsTwice {
        async fn run(&self, _ctx: &ProbeContext) -> Outcome {
            if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
                Outcome::critical("not yet")
            } else {
                Outcome::ok("fine")
            }
        }
    }

    pub(crate) fn ctx(timeout: Duration) -> ProbeContext {
        ProbeContext {
            vo: "vo".into(),
            site: "SITE".into(),
            tier: 2,
            service: gridprobe_config::Service {
                flavour: "CE".into(),
                hostname: "ce.example.org".into(),
                endpoint: None,
                tags: vec![],
                params: Default::default(),
                overrides: Default::default(),
                production: true,
                span: gridprobe_config::Span {
                    file: 0,
                    range: 0..0,
                },
            },
            metric: "org.vo.test".into(),
            timeout,
            deadline: Instant::now() + timeout,
            cancel: CancellationToken::new(),
            credential: None,
        }
    }

    fn labels() -> ResultLabels {
        ResultLabels {
            metric: "org.vo.test".into(),
            kind: "test".into(),
            vo: "vo".into(),
            site: "SITE".into(),
            hostname: "ce.example.org".into(),
            flavour: "CE".into(),
        }
    }

    #[tokio::test]
    async fn panic_becomes_unknown_with_message() {
        let out = run_attempt(Arc::new(Panics), ctx(Duration::from_secs(5))).await;
        assert_eq!(out.status, Status::Unknown);
        assert!(out.summary.contains("boom at the probe"), "{}", out.summary);
    }

    #[tokio::test(start_paused = true)]
    async fn hung_probe_is_abandoned_after_timeout_and_grace() {
        let out = run_attempt(Arc::new(Hangs), ctx(Duration::from_secs(2))).await;
        assert_eq!(out.status, Status::Unknown);
        assert!(
            out.summary
                .contains("did not return within its timeout of 2s"),
            "{}",
            out.summary
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_ok_and_keeps_every_attempt() {
        let probe = Arc::new(FailsTwice::default());
        let results = run_with_retries(
            probe,
            || ctx(Duration::from_secs(5)),
            &labels(),
            3,
            Duration::from_secs(60),
            Trigger::OnDemand,
            &CancellationToken::new(),
            |_| {},
        )
        .await;
        let statuses: Vec<(u32, Status)> = results
            .iter()
            .map(|r| (r.attempt, r.outcome.status))
            .collect();
        assert_eq!(
            statuses,
            vec![
                (1, Status::Critical),
                (2, Status::Critical),
                (3, Status::Ok)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_limit() {
        let probe = Arc::new(FailsTwice::default());
        let results = run_with_retries(
            probe,
            || ctx(Duration::from_secs(5)),
            &labels(),
            1,
            Duration::from_secs(1),
            Trigger::Scheduled,
            &CancellationToken::new(),
            |_| {},
        )
        .await;
        assert_eq!(results.len(), 2);
        assert_eq!(results[1].outcome.status, Status::Critical);
    }

    /// Issue 13 item 7: the largest values a configuration can give never panic.
    #[tokio::test(start_paused = true)]
    async fn extreme_timeouts_retries_and_intervals_never_panic() {
        let far = Instant::now()
            .checked_add(Duration::from_secs(100 * 365 * 86_400))
            .expect("a century fits");
        let huge = || ProbeContext {
            timeout: Duration::MAX,
            deadline: far,
            ..ctx(Duration::from_secs(1))
        };
        let mut handled = 0;
        let out = run_attempt(Arc::new(FailsTwice::default()), huge()).await;
        assert_eq!(out.status, Status::Critical);
        handled += 1;
        assert!(!format_duration(Duration::MAX).is_empty());
        handled += 1;
        // Retries u32::MAX, an interval of Duration::MAX: ends at OK, or at cancellation.
        for (retries, interval) in [(u32::MAX, Duration::MAX), (u32::MAX, Duration::ZERO)] {
            let results = run_with_retries(
                Arc::new(FailsTwice::default()),
                huge,
                &labels(),
                retries,
                interval,
                Trigger::Scheduled,
                &CancellationToken::new(),
                |_| {},
            )
            .await;
            if interval.is_zero() {
                assert_eq!(results.len(), 3);
            }
            handled += 1;
        }
        assert_eq!(handled, 4);
    }

    /// A bundle job's attempt becomes its own cell and one per declared metric; a metric it
    /// did not report is UNKNOWN (STANDBY when the job was) with the reason.
    #[test]
    fn reported_metrics_become_cells_of_their_own() {
        let text = "vo = \"vo\"\n[[site]]\nname = \"SITE\"\ntier = 2\n  [[site.service]]\n  \
                    flavour = \"CE\"\n  hostname = \"ce.example.org\"\n\n[[probe]]\n\
                    metric = \"org.vo.test\"\nkind = \"job\"\nflavours = [\"CE\"]\n  \
                    [probe.params]\n  backend = \"local\"\n  [[probe.bundle]]\n  \
                    metric = \"org.vo.WN-a\"\n  command = \"/bin/true\"\n  [[probe.bundle]]\n  \
                    metric = \"org.vo.WN-b\"\n  command = \"/bin/true\"\n";
        let loaded = gridprobe_config::load_str(std::path::Path::new("t.toml"), text);
        assert!(loaded.diagnostics.is_empty(), "{}", loaded.diagnostics);
        let config = loaded.config;
        let now = SystemTime::now();
        let job = Outcome::ok("WN bundle: exit code 0").with_reported(vec![
            gridprobe_probes::Reported {
                metric: "org.vo.WN-b".into(),
                outcome: Outcome::critical("B is broken"),
            },
            gridprobe_probes::Reported {
                metric: "org.vo.not-declared".into(),
                outcome: Outcome::ok("ignored"),
            },
        ]);
        let attempts =
            vec![labels().result(job, now, Duration::from_secs(3), 1, Trigger::OnDemand)];
        let cells = split_reported(&config, attempts);
        let got: Vec<(&str, Status, &str, u32)> = cells
            .iter()
            .flatten()
            .map(|r| {
                (
                    r.metric.as_str(),
                    r.outcome.status,
                    r.outcome.summary.as_str(),
                    r.attempt,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("org.vo.test", Status::Ok, "WN bundle: exit code 0", 1),
                (
                    "org.vo.WN-a",
                    Status::Unknown,
                    "not reported by test, which ended OK: WN bundle: exit code 0",
                    1
                ),
                ("org.vo.WN-b", Status::Critical, "B is broken", 1),
            ]
        );
        assert!(cells[0][0].outcome.reported.is_empty());
        assert_eq!(cells[2][0].hostname, "ce.example.org");
        assert_eq!(cells[2][0].duration_ms, 3000);

        let standby = Outcome::standby("not run: dependency CE-ping is CRITICAL: down");
        let cells = split_reported(
            &config,
            vec![labels().result(standby, now, Duration::ZERO, 1, Trigger::Scheduled)],
        );
        assert_eq!(cells.len(), 3);
        assert_eq!(cells[1][0].outcome.status, Status::Standby);

        // A metric turned off on the service is neither an instance nor recorded.
        let off = text.replace(
            "hostname = \"ce.example.org\"\n",
            "hostname = \"ce.example.org\"\n  override.WN-a = { disabled = true }\n",
        );
        let loaded = gridprobe_config::load_str(std::path::Path::new("t.toml"), &off);
        assert!(loaded.diagnostics.is_empty(), "{}", loaded.diagnostics);
        let metrics: Vec<String> = loaded
            .config
            .instances()
            .iter()
            .map(|i| loaded.config.probes[i.probe].metric.clone())
            .collect();
        assert_eq!(metrics, ["org.vo.test", "org.vo.WN-b"]);
        let job = Outcome::ok("done");
        let split = split_reported(
            &loaded.config,
            vec![labels().result(job, now, Duration::ZERO, 1, Trigger::Scheduled)],
        );
        let metrics: Vec<&str> = split.iter().flatten().map(|r| r.metric.as_str()).collect();
        assert_eq!(metrics, ["org.vo.test", "org.vo.WN-b"]);
        assert_eq!(
            cells[1][0].outcome.summary,
            "test is STANDBY: not run: dependency CE-ping is CRITICAL: down"
        );
    }

    #[test]
    fn durations_read_briefly() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }
}
