//! `gridprobe agent`: one site's agent.
//!
//! Workers (as many as `--concurrency`) each pull one run at a time from the site's work
//! queue, so a run waits in the broker, not in an agent's buffer, and the other agents of the
//! site take it when this one is busy. A run is read with the ordinary configuration loader and
//! built with the ordinary probe kinds, then run with the ordinary retries. Each attempt goes to
//! a relay with a durable spool (the same relay `serve` publishes with): when the broker is
//! away the results wait on disk and are published first when it is back. The run is
//! acknowledged only once its result has been published; a run that was not acknowledged
//! (agent killed, broker gone) is handed to an agent again after the consumer's AckWait, and
//! the centre keeps one result per run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gridprobe_probes::credentials::Credentials;
use gridprobe_probes::outcome::unix_ms;
use gridprobe_probes::{Outcome, ProbeResult};
use gridprobe_results::{
    spawn_relay, NewResult, ResultMessage, Spool, SpoolConfig, Target, WriterConfig, WriterHandle,
    WriterStats,
};
use tokio_util::sync::CancellationToken;

use super::link::{self, AgentLink, LinkSpec, WorkMessage};
use super::wire::{Heartbeat, Names, Work, HEARTBEAT_SCHEMA};
use crate::execute::{run_with_retries, ResultLabels};

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Broker URL (`nats://`, `tls://`, `amqp://` or `amqps://`, a user but no password in
    /// it).
    pub url: String,
    /// The user's password.
    pub password: Option<String>,
    /// Extra CA certificate for a `tls://` or `amqps://` broker.
    pub ca_file: Option<PathBuf>,
    /// Subject prefix (as the centre's `[agents] prefix`).
    pub prefix: String,
    /// The site whose work this agent takes.
    pub site: String,
    /// This agent's name (unique among the site's agents).
    pub name: String,
    /// Runs at once.
    pub concurrency: u32,
    /// The relay's spool directory (one agent per directory).
    pub spool_dir: PathBuf,
    /// Spool size bound in bytes.
    pub spool_max_bytes: u64,
    /// The agent's own `[[credential]]`s, when its probes need any (already started).
    pub credentials: Option<Arc<Credentials>>,
    /// How often heartbeats go out.
    pub heartbeat: Duration,
    /// How long runs in flight get to finish on shutdown.
    pub shutdown_grace: Duration,
}

/// What an agent did, for its last log line.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Runs in flight.
    pub inflight: AtomicU32,
    /// Runs finished.
    pub runs_done: AtomicU64,
    /// Runs acknowledged after their result was published.
    pub acked: AtomicU64,
    /// Work messages refused (undecodable, another site's, expired).
    pub refused: AtomicU64,
}

/// Publishes the agent's results for its site through the broker, waiting for the broker's
/// confirmation; each message carries the result's stable id.
struct ResultTarget {
    link: Arc<dyn AgentLink>,
    site: String,
    instance: String,
}

#[async_trait::async_trait]
impl Target for ResultTarget {
    fn name(&self) -> String {
        format!("agent results of {}", self.site)
    }

    async fn deliver(
        &self,
        batch: &[NewResult],
        ids: &[String],
        _replay: bool,
    ) -> Result<(), String> {
        let messages: Vec<(String, Vec<u8>)> = batch
            .iter()
            .zip(ids)
            .map(|(r, id)| {
                let mut m = ResultMessage::new(&self.instance, r);
                m.message_id = id.clone();
                (id.clone(), m.to_json())
            })
            .collect();
        self.link.publish_results(&messages).await
    }
}

/// Shared by the workers.
struct Agent {
    opts: AgentOptions,
    link: Arc<dyn AgentLink>,
    relay: WriterHandle,
    relay_stats: Arc<WriterStats>,
    /// Results handed to the relay so far, counting what the spool held at start.
    sent: AtomicU64,
    counters: Arc<AgentCounters>,
    started_ms: i64,
    /// Fired when runs in flight must stop (after the shutdown grace).
    interrupt: CancellationToken,
}

/// Runs an agent until `shutdown` fires; returns its counters.
pub async fn run_agent(
    opts: AgentOptions,
    shutdown: CancellationToken,
) -> Result<Arc<AgentCounters>, String> {
    let names = Names::new(&opts.prefix);
    let link = link::connect_agent(
        &LinkSpec {
            url: opts.url.clone(),
            password: opts.password.clone(),
            ca_file: opts.ca_file.clone(),
            client_name: format!("gridprobe agent {}/{}", opts.site, opts.name),
            inbox_prefix: None,
        },
        &names,
        &opts.site,
    )
    .await?;
    let (spool, report) = Spool::open(
        &opts.spool_dir,
        SpoolConfig {
            max_bytes: opts.spool_max_bytes,
            ..SpoolConfig::default()
        },
    )
    .map_err(|e| format!("spool {}: {e}", opts.spool_dir.display()))?;
    if report.records > 0 {
        tracing::info!(
            records = report.records,
            "results spooled earlier are published first"
        );
    }
    let target = Arc::new(ResultTarget {
        link: link.clone(),
        site: opts.site.clone(),
        instance: opts.name.clone(),
    });
    let (relay, relay_task) = spawn_relay(
        target,
        None,
        true,
        WriterConfig {
            batch_size: 100,
            instance: opts.name.clone(),
            ..WriterConfig::default()
        },
        Some(spool),
    );
    let relay_stats = relay.stats();
    let agent = Arc::new(Agent {
        link,
        sent: AtomicU64::new(relay_stats.spooled.load(Ordering::Relaxed)),
        relay,
        relay_stats,
        counters: Arc::default(),
        started_ms: unix_ms(SystemTime::now()),
        interrupt: CancellationToken::new(),
        opts,
    });
    let heartbeats = tokio::spawn(agent.clone().heartbeats(shutdown.clone()));
    let tracker = tokio_util::task::TaskTracker::new();
    for _ in 0..agent.opts.concurrency.max(1) {
        tracker.spawn(agent.clone().worker(shutdown.clone(), tracker.clone()));
    }
    tracing::info!(site = %agent.opts.site, agent = %agent.opts.name, concurrency = agent.opts.concurrency, "agent started");
    shutdown.cancelled().await;
    tracker.close();
    if tokio::time::timeout(agent.opts.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown grace over: interrupting runs in flight (they go to another agent)"
        );
        agent.interrupt.cancel();
        tracker.wait().await;
    }
    heartbeats.abort();
    let counters = agent.counters.clone();
    drop(agent);
    // The relay flushes what it holds, or spools it for the next start.
    if let Err(e) = relay_task.await {
        tracing::error!(error = %e, "result relay failed");
    }
    Ok(counters)
}

impl Agent {
    async fn heartbeats(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let hb = Heartbeat {
                schema: HEARTBEAT_SCHEMA.into(),
                site: self.opts.site.clone(),
                name: self.opts.name.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                started_ms: self.started_ms,
                sent_ms: unix_ms(SystemTime::now()),
                inflight: self.counters.inflight.load(Ordering::Relaxed),
                runs_done: self.counters.runs_done.load(Ordering::Relaxed),
            };
            if let Err(e) = self.link.heartbeat(hb.to_json()).await {
                tracing::debug!(error = %e, "heartbeat not sent");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.opts.heartbeat) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Takes and runs one run at a time until shutdown.
    async fn worker(
        self: Arc<Self>,
        shutdown: CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    ) {
        let mut work = self.link.work();
        while let Some(msg) = work.next(&shutdown).await {
            self.take(msg, &tracker).await;
        }
    }

    /// Runs one work message, publishes its result, and acknowledges it once published.
    async fn take(&self, msg: Box<dyn WorkMessage>, tracker: &tokio_util::task::TaskTracker) {
        let work = match Work::from_json(msg.payload()) {
            Ok(w) => w,
            Err(e) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "work message refused");
                msg.term().await;
                return;
            }
        };
        if work.site != self.opts.site {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(site = %work.site, "work for another site refused");
            msg.term().await;
            return;
        }
        let now = unix_ms(SystemTime::now());
        if work.expires_ms < now {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(run = %work.run_id, "expired run dropped (the centre no longer waits for it)");
            let _ = msg.ack().await;
            return;
        }
        self.counters.inflight.fetch_add(1, Ordering::Relaxed);
        let attempts = self.run_work(&work).await;
        self.counters.inflight.fetch_sub(1, Ordering::Relaxed);
        if self.interrupt.is_cancelled() {
            // Stopped half-way: not acknowledged, so another agent runs it.
            msg.release().await;
            return;
        }
        self.counters.runs_done.fetch_add(1, Ordering::Relaxed);
        let n = attempts.len();
        for (i, mut r) in attempts.into_iter().enumerate() {
            r.outcome.agent_run = Some(work.run_id.as_str().into());
            self.sent.fetch_add(1, Ordering::Relaxed);
            self.relay.send(NewResult {
                result: r,
                is_final: i + 1 == n,
            });
        }
        // Acknowledged once the relay has delivered up to this run's last result; meanwhile
        // the worker takes the next run.
        let mark = self.sent.load(Ordering::Relaxed);
        let stats = self.relay_stats.clone();
        let counters = self.counters.clone();
        let run_id = work.run_id.clone();
        let interrupt = self.interrupt.clone();
        let wait =
            Duration::from_millis(u64::try_from(work.expires_ms.saturating_sub(now)).unwrap_or(0))
                .max(Duration::from_secs(60));
        tracker.spawn(async move {
            let until = Instant::now() + wait;
            loop {
                let delivered = stats.written.load(Ordering::Relaxed)
                    + stats.unroutable.load(Ordering::Relaxed)
                    + stats.dropped.load(Ordering::Relaxed)
                    + stats.corrupt.load(Ordering::Relaxed);
                if delivered >= mark {
                    match msg.ack().await {
                        Ok(()) => {
                            counters.acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tracing::info!(run = %run_id, error = %e, "run not acknowledged (it may run again; the centre keeps one result)"),
                    }
                    return;
                }
                if Instant::now() > until || interrupt.is_cancelled() {
                    tracing::info!(run = %run_id, "result not published yet; the run stays unacknowledged");
                    msg.release().await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }

    /// Reads, builds and runs the instance of a work message.
    async fn run_work(&self, work: &Work) -> Vec<ProbeResult> {
        let started = SystemTime::now();
        let fail = |summary: String, details: String| {
            // The centre refuses a result without a VO or kind, so this one must carry them
            // even when the configuration could not be loaded.
            let (vo, kind) = vo_and_kind(&work.config);
            let labels = ResultLabels {
                metric: work.metric.clone(),
                kind,
                vo,
                site: work.site.clone(),
                hostname: work.hostname.clone(),
                flavour: work.flavour.clone(),
            };
            vec![labels.result(
                Outcome::unknown(summary).with_details(details),
                started,
                Duration::ZERO,
                1,
                work.trigger,
            )]
        };
        let path = PathBuf::from(format!("work-{}.toml", work.run_id));
        let loaded = gridprobe_config::load_str(&path, &work.config);
        if !loaded.diagnostics.is_empty() {
            return fail(
                format!("agent {} cannot read the run it was sent", self.opts.name),
                loaded.diagnostics.to_string(),
            );
        }
        let mut config = loaded.config;
        if let Some(p) = config.probes.first_mut() {
            p.credential = work.credential.clone();
        }
        let (mut built, diagnostics) = gridprobe_probes::registry::build_all(&config);
        if !diagnostics.is_empty() {
            return fail(
                format!(
                    "agent {} cannot build the probe it was sent",
                    self.opts.name
                ),
                diagnostics.to_string(),
            );
        }
        if let Some(c) = &self.opts.credentials {
            built.credentials = c.clone();
        }
        let instances = config.instances();
        let [inst] = instances.as_slice() else {
            return fail(
                format!(
                    "the run sent to agent {} is not one probe instance",
                    self.opts.name
                ),
                format!("{} instances", instances.len()),
            );
        };
        let site = &config.sites[inst.site];
        let svc = &site.services[inst.service];
        let def = &config.probes[inst.probe];
        if (
            site.name.as_str(),
            svc.hostname.as_str(),
            svc.flavour.as_str(),
            def.metric.as_str(),
        ) != (
            work.site.as_str(),
            work.hostname.as_str(),
            work.flavour.as_str(),
            work.metric.as_str(),
        ) {
            return fail(
                "the run's configuration is not the cell it names".into(),
                String::new(),
            );
        }
        if let Some(name) = &work.credential {
            if built.credentials.get(name).is_none() {
                return fail(
                    format!("agent {} has no credential `{name}`", self.opts.name),
                    "give the agent its [[credential]] tables with --credentials FILE".into(),
                );
            }
        }
        let Some(probe) = built.get(inst.probe).cloned() else {
            return fail("the probe could not be built".into(), String::new());
        };
        let labels = ResultLabels {
            metric: def.metric.clone(),
            kind: def.kind.clone(),
            vo: config.vo.clone(),
            site: site.name.clone(),
            hostname: svc.hostname.clone(),
            flavour: svc.flavour.clone(),
        };
        run_with_retries(
            probe,
            || built.context_for(&config, inst, self.interrupt.clone()),
            &labels,
            inst.retries,
            inst.retry_interval,
            work.trigger,
            &self.interrupt,
            |_| {},
        )
        .await
    }
}

/// The VO and the probe kind of a work message's configuration, read leniently (only the
/// failure path needs them, when the loader refused the text); `unknown` where absent.
fn vo_and_kind(config: &str) -> (String, String) {
    let table: toml::Table = toml::from_str(config).unwrap_or_default();
    let text = |v: Option<&toml::Value>| {
        v.and_then(toml::Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .unwrap_or("unknown")
            .to_string()
    };
    let kind = table
        .get("probe")
        .and_then(toml::Value::as_array)
        .and_then(|a| a.first())
        .and_then(|p| p.get("kind"));
    (text(table.get("vo")), text(kind))
}

#[cfg(test)]
mod tests {
    use super::vo_and_kind;

    #[test]
    fn failed_runs_carry_a_vo_and_kind_the_centre_accepts() {
        let text = "vo = \"e2e\"\n[[probe]]\nmetric = \"m\"\nkind = \"http\"\n";
        assert_eq!(vo_and_kind(text), ("e2e".into(), "http".into()));
        assert_eq!(
            vo_and_kind("not toml ["),
            ("unknown".into(), "unknown".into())
        );
    }
}
