//! Running a set of probe instances now (on demand), honouring concurrency limits and
//! `depends_on`: a child waits for its parents on the same target and is recorded STANDBY, with
//! the reason, when none of them is up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gridprobe_config::{did_you_mean, Config, Defaults, ProbeInstance};
use gridprobe_probes::registry::BuiltProbes;
use gridprobe_probes::{Outcome, ProbeResult, Status, Trigger};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::execute::{run_with_retries, split_reported, ResultLabels};

/// Concurrency limits: overall, per site and per probe kind. A run holds one permit of each.
#[derive(Debug)]
pub struct Limits {
    global: Arc<Semaphore>,
    site_limit: usize,
    sites: Mutex<HashMap<String, Arc<Semaphore>>>,
    kinds: HashMap<String, Arc<Semaphore>>,
}

/// The permits a running probe holds; released on drop.
#[derive(Debug)]
pub struct Permits {
    _global: OwnedSemaphorePermit,
    _site: OwnedSemaphorePermit,
    _kind: Option<OwnedSemaphorePermit>,
}

impl Limits {
    /// Limits from the `[defaults]` table.
    pub fn from_defaults(d: &Defaults) -> Self {
        Limits {
            global: Arc::new(Semaphore::new(d.concurrency.max(1) as usize)),
            site_limit: d.site_concurrency.max(1) as usize,
            sites: Mutex::new(HashMap::new()),
            kinds: d
                .kind_concurrency
                .iter()
                .map(|(k, n)| (k.clone(), Arc::new(Semaphore::new((*n).max(1) as usize))))
                .collect(),
        }
    }

    /// Waits for a slot: one permit of the kind (when it has a limit), of the site and of the
    /// whole service. Never holds one while waiting for another (a run waiting for a busy site
    /// held its kind slot, so runs of that kind on other sites waited for nothing): it waits for
    /// the limit that was full, then tries to take the others at once, and on failure gives
    /// everything back and waits for the next full one. `None` when the limits were closed.
    pub async fn acquire(&self, site: &str, kind: &str) -> Option<Permits> {
        let site_sem = {
            let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
            // Looked up by `&str` first: the site's name is copied only the first time.
            match sites.get(site) {
                Some(s) => s.clone(),
                None => sites
                    .entry(site.to_string())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.site_limit)))
                    .clone(),
            }
        };
        // Narrowest first: kind, site, global.
        let mut sems: Vec<Arc<Semaphore>> = Vec::with_capacity(3);
        let has_kind = match self.kinds.get(kind) {
            Some(s) => {
                sems.push(s.clone());
                true
            }
            None => false,
        };
        sems.push(site_sem);
        sems.push(self.global.clone());
        let mut blocked_on: Option<usize> = None;
        loop {
            let mut held: Vec<Option<OwnedSemaphorePermit>> = vec![None, None, None];
            if let Some(i) = blocked_on {
                // The one wait: for the limit that was full. Taking its permit is not holding
                // it while waiting; the others are only tried.
                held[i] = Some(sems[i].clone().acquire_owned().await.ok()?);
            }
            let mut full = None;
            for (i, sem) in sems.iter().enumerate() {
                if held[i].is_some() {
                    continue;
                }
                match sem.clone().try_acquire_owned() {
                    Ok(p) => held[i] = Some(p),
                    Err(tokio::sync::TryAcquireError::NoPermits) => {
                        full = Some(i);
                        break;
                    }
                    Err(tokio::sync::TryAcquireError::Closed) => return None,
                }
            }
            if let Some(i) = full {
                // Give back what was taken (dropping `held`) and wait for the full one.
                blocked_on = Some(i);
                continue;
            }
            let mut it = held.into_iter().flatten();
            let kind_permit = if has_kind { it.next() } else { None };
            let (Some(site_permit), Some(global)) = (it.next(), it.next()) else {
                return None;
            };
            return Some(Permits {
                _global: global,
                _site: site_permit,
                _kind: kind_permit,
            });
        }
    }
}

/// Which instances a user asked for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Site name.
    pub site: Option<String>,
    /// Service host name.
    pub service: Option<String>,
    /// Metric (full or short name).
    pub probe: Option<String>,
}

/// A selection that names nothing in the configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    /// No such site.
    #[error("no site named `{name}`{hint}")]
    UnknownSite {
        /// What was asked.
        name: String,
        /// " (did you mean ...?)" or a list.
        hint: String,
    },
    /// No such host.
    #[error("no service with host name `{name}`{hint}")]
    UnknownService {
        /// What was asked.
        name: String,
        /// Hint.
        hint: String,
    },
    /// No such probe.
    #[error("no probe named `{name}`{hint}")]
    UnknownProbe {
        /// What was asked.
        name: String,
        /// Hint.
        hint: String,
    },
    /// The names exist but select nothing together.
    #[error("the selection matches no probe instance: {0}")]
    Empty(String),
}

fn hint<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str> + Clone) -> String {
    match did_you_mean(got, candidates.clone()) {
        Some(best) => format!(" (did you mean `{best}`?)"),
        None => {
            let all: Vec<&str> = candidates.into_iter().take(10).collect();
            if all.is_empty() {
                String::new()
            } else {
                format!(" (known: {})", all.join(", "))
            }
        }
    }
}

/// The instances matching a selection, with the parents they depend on added (a child cannot
/// be judged without its parents' results).
pub fn select(config: &Config, sel: &Selection) -> Result<Vec<ProbeInstance>, SelectError> {
    if let Some(site) = &sel.site {
        if config.site_index(site).is_none() {
            return Err(SelectError::UnknownSite {
                name: site.clone(),
                hint: hint(site, config.sites.iter().map(|s| s.name.as_str())),
            });
        }
    }
    if let Some(host) = &sel.service {
        let hosts = config
            .sites
            .iter()
            .flat_map(|s| s.services.iter().map(|v| v.hostname.as_str()));
        if !hosts.clone().any(|h| h == host) {
            return Err(SelectError::UnknownService {
                name: host.clone(),
                hint: hint(host, hosts),
            });
        }
    }
    let probe_index = match &sel.probe {
        Some(p) => {
            let i = config
                .probe_index(p)
                .ok_or_else(|| SelectError::UnknownProbe {
                    name: p.clone(),
                    hint: hint(p, config.probes.iter().map(|p| p.short.as_str())),
                })?;
            // A bundle's metric is measured by running its job.
            let owner = config.probes[i]
                .reported_by
                .as_deref()
                .and_then(|m| config.probe_index(m));
            Some(owner.unwrap_or(i))
        }
        None => None,
    };
    // A bundle's metrics are not run themselves: their job's run reports them.
    let all: Vec<ProbeInstance> = config
        .instances()
        .into_iter()
        .filter(|i| config.probes[i.probe].reported_by.is_none())
        .collect();
    let matches = |i: &ProbeInstance| {
        let site = &config.sites[i.site];
        sel.site.as_ref().is_none_or(|s| &site.name == s)
            && sel
                .service
                .as_ref()
                .is_none_or(|h| &site.services[i.service].hostname == h)
            && probe_index.is_none_or(|p| i.probe == p)
    };
    let mut chosen: Vec<bool> = all.iter().map(matches).collect();
    if !chosen.iter().any(|c| *c) {
        return Err(SelectError::Empty(
            "no probe applies to the selected services (check the probes' flavours)".into(),
        ));
    }
    // Add parents, transitively.
    let parents = parent_map(config, &all);
    let mut stack: Vec<usize> = (0..all.len()).filter(|i| chosen[*i]).collect();
    while let Some(i) = stack.pop() {
        for &p in &parents[i] {
            if !chosen[p] {
                chosen[p] = true;
                stack.push(p);
            }
        }
    }
    Ok(all
        .into_iter()
        .zip(chosen)
        .filter_map(|(inst, c)| c.then_some(inst))
        .collect())
}

/// For each instance, the indices (in `instances`) of the instances it depends on: the parent
/// probe on the same service when it applies there, otherwise on every service of the site.
pub fn parent_map(config: &Config, instances: &[ProbeInstance]) -> Vec<Vec<usize>> {
    instances
        .iter()
        .map(|inst| {
            let def = &config.probes[inst.probe];
            let mut parents = Vec::new();
            for dep in &def.depends_on {
                let Some(dp) = config.probe_index(dep) else {
                    continue;
                };
                let same_service: Vec<usize> = instances
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| {
                        o.probe == dp && o.site == inst.site && o.service == inst.service
                    })
                    .map(|(j, _)| j)
                    .collect();
                if same_service.is_empty() {
                    parents.extend(
                        instances
                            .iter()
                            .enumerate()
                            .filter(|(_, o)| o.probe == dp && o.site == inst.site)
                            .map(|(j, _)| j),
                    );
                } else {
                    parents.extend(same_service);
                }
            }
            parents
        })
        .collect()
}

/// What happened to one instance in a batch.
#[derive(Debug, Clone)]
pub struct InstanceRun {
    /// The instance.
    pub instance: ProbeInstance,
    /// Every attempt, in order; the last is the hard state.
    pub attempts: Vec<ProbeResult>,
}

impl InstanceRun {
    /// The final (hard) result.
    pub fn last(&self) -> Option<&ProbeResult> {
        self.attempts.last()
    }
}

/// Progress of a batch, for progress lines.
#[derive(Debug, Clone)]
pub enum Event {
    /// An instance got its slot and started.
    Started(usize),
    /// An instance finished with its final result.
    Finished(usize, Box<ProbeResult>),
}

type Verdict = Option<(Status, String)>;

/// Runs the instances now and returns one [`InstanceRun`] per instance, in the same order, each
/// followed by one per metric its run reports (a worker-node bundle's, `[[probe.bundle]]`).
pub async fn run_batch(
    config: Arc<Config>,
    probes: Arc<BuiltProbes>,
    instances: Vec<ProbeInstance>,
    trigger: Trigger,
    limits: Arc<Limits>,
    cancel: CancellationToken,
    on_event: Arc<dyn Fn(Event) + Send + Sync>,
) -> Vec<InstanceRun> {
    run_batch_with(
        config, probes, instances, trigger, limits, cancel, on_event, None,
    )
    .await
}

/// As [`run_batch`]; with `remote` (`serve`), the instances of agent-run sites go to their
/// agents (`Some(None)`: `serve` has no dispatcher, they are recorded UNKNOWN with why).
#[allow(clippy::too_many_arguments)]
pub async fn run_batch_with(
    config: Arc<Config>,
    probes: Arc<BuiltProbes>,
    instances: Vec<ProbeInstance>,
    trigger: Trigger,
    limits: Arc<Limits>,
    cancel: CancellationToken,
    on_event: Arc<dyn Fn(Event) + Send + Sync>,
    remote: Option<Option<Arc<dyn crate::remote::RemoteExecutor>>>,
) -> Vec<InstanceRun> {
    let parents = parent_map(&config, &instances);
    let (senders, receivers): (Vec<_>, Vec<_>) = instances
        .iter()
        .map(|_| tokio::sync::watch::channel::<Verdict>(None))
        .unzip();
    let mut tasks = Vec::with_capacity(instances.len());
    for (idx, (inst, tx)) in instances.iter().cloned().zip(senders).enumerate() {
        let parent_rx: Vec<_> = parents[idx].iter().map(|p| receivers[*p].clone()).collect();
        let parent_names: Vec<String> = parents[idx]
            .iter()
            .map(|p| {
                let pi = &instances[*p];
                format!(
                    "{} on {}",
                    config.probes[pi.probe].short,
                    config.sites[pi.site].services[pi.service].hostname
                )
            })
            .collect();
        let config = config.clone();
        let probes = probes.clone();
        let limits = limits.clone();
        let cancel = cancel.clone();
        let on_event = on_event.clone();
        let route = match &remote {
            Some(r) => crate::agent::Route::of(r.clone(), &config, &inst),
            None => crate::agent::Route::Local,
        };
        tasks.push(tokio::spawn(async move {
            let def = &config.probes[inst.probe];
            let site = &config.sites[inst.site];
            let svc = &site.services[inst.service];
            let labels = ResultLabels {
                metric: def.metric.clone(),
                kind: def.kind.clone(),
                vo: config.vo.clone(),
                site: site.name.clone(),
                hostname: svc.hostname.clone(),
                flavour: svc.flavour.clone(),
            };
            // Wait for every parent's verdict; the child runs if any parent is up.
            let mut verdicts = Vec::new();
            for (mut rx, name) in parent_rx.into_iter().zip(&parent_names) {
                let v = match rx.wait_for(Option::is_some).await {
                    Ok(v) => v.clone(),
                    Err(_) => Some((Status::Unknown, "parent run was lost".to_string())),
                };
                if let Some((status, summary)) = v {
                    verdicts.push((name.clone(), status, summary));
                }
            }
            let now = std::time::SystemTime::now();
            let attempts = if !verdicts.is_empty() && !verdicts.iter().any(|(_, s, _)| s.is_up()) {
                let reason = verdicts
                    .iter()
                    .map(|(n, s, summary)| format!("{n} is {s}: {summary}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                let outcome = Outcome::standby(format!("not run: dependency {reason}"))
                    .with_details(format!("depends_on not satisfied:\n{reason}"));
                vec![labels.result(outcome, now, Default::default(), 1, trigger)]
            } else if !route.is_local() {
                on_event(Event::Started(idx));
                route
                    .run(crate::remote::RemoteRun {
                        config: &config,
                        instance: &inst,
                        labels: &labels,
                        trigger,
                        run_id: crate::agent::wire::on_demand_run_id(
                            gridprobe_probes::outcome::unix_ms(now),
                        ),
                        interrupt: &cancel,
                    })
                    .await
            } else if let Some(probe) = probes.get(inst.probe).cloned() {
                let Some(_permits) = limits.acquire(&site.name, &def.kind).await else {
                    return finish(idx, inst, Vec::new(), tx, &on_event);
                };
                on_event(Event::Started(idx));
                let make_ctx = || probes.context_for(&config, &inst, cancel.clone());
                run_with_retries(
                    probe,
                    make_ctx,
                    &labels,
                    inst.retries,
                    inst.retry_interval,
                    trigger,
                    &cancel,
                    |_| {},
                )
                .await
            } else {
                let outcome =
                    Outcome::unknown(format!("probe `{}` could not be built", def.metric));
                vec![labels.result(outcome, now, Default::default(), 1, trigger)]
            };
            finish(idx, inst, attempts, tx, &on_event)
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for (task, inst) in tasks.into_iter().zip(instances) {
        match task.await {
            // The run's own cell, then one per metric it reports (a bundle's).
            Ok(run) => {
                let cells = split_reported(&config, run.attempts);
                for (i, attempts) in cells.into_iter().enumerate() {
                    let probe = match attempts.first() {
                        Some(a) if i > 0 => config.probe_index(&a.metric),
                        _ => Some(run.instance.probe),
                    };
                    if let Some(probe) = probe {
                        out.push(InstanceRun {
                            instance: ProbeInstance {
                                probe,
                                ..run.instance.clone()
                            },
                            attempts,
                        });
                    }
                }
            }
            // The task body has no panicking paths; keep the instance visible all the same.
            Err(e) => {
                tracing::error!(error = %e, "batch task failed");
                out.push(InstanceRun {
                    instance: inst,
                    attempts: vec![],
                });
            }
        }
    }
    out
}

fn finish(
    idx: usize,
    instance: ProbeInstance,
    attempts: Vec<ProbeResult>,
    tx: tokio::sync::watch::Sender<Verdict>,
    on_event: &Arc<dyn Fn(Event) + Send + Sync>,
) -> InstanceRun {
    let verdict = attempts
        .last()
        .map(|r| (r.outcome.status, r.outcome.summary.clone()))
        .unwrap_or((Status::Unknown, "not run (shutting down)".into()));
    if let Some(last) = attempts.last() {
        on_event(Event::Finished(idx, Box::new(last.clone())));
    }
    let _ = tx.send(Some(verdict));
    InstanceRun { instance, attempts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(kind_limit: u32, site_limit: u32) -> Limits {
        let mut d = Defaults {
            site_concurrency: site_limit,
            ..Defaults::default()
        };
        d.kind_concurrency.insert("k".into(), kind_limit);
        Limits::from_defaults(&d)
    }

    /// Issue 13: a run waiting for a full site held its kind slot, so a run of the same kind
    /// on another site waited for nothing.
    #[tokio::test]
    async fn a_run_waiting_for_a_full_site_does_not_hold_its_kind_slot() {
        let limits = Arc::new(limits(1, 1));
        // Site A is saturated by a run of another kind.
        let busy = limits.acquire("A", "other").await.expect("site A");
        let waiting = tokio::spawn({
            let limits = Arc::clone(&limits);
            async move { limits.acquire("A", "k").await.is_some() }
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "site A is full: the run waits");
        // A run of kind `k` on site B gets its slots at once.
        let b = tokio::time::timeout(Duration::from_secs(5), limits.acquire("B", "k"))
            .await
            .expect("site B waited for site A")
            .expect("permits");
        drop(b);
        drop(busy);
        // And the waiting run gets its slots once site A and the kind are free.
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting run never ran")
            .expect("task");
        assert!(got);
    }

    #[tokio::test]
    async fn every_limit_still_holds() {
        let limits = Arc::new(limits(1, 2));
        let first = limits.acquire("A", "k").await.expect("first");
        // The kind limit of 1 holds across sites.
        let second =
            tokio::time::timeout(Duration::from_millis(200), limits.acquire("B", "k")).await;
        assert!(second.is_err(), "kind limit exceeded");
        drop(first);
        let _again = tokio::time::timeout(Duration::from_secs(5), limits.acquire("B", "k"))
            .await
            .expect("free again")
            .expect("permits");
        // The site limit of 2 holds for kinds without a limit.
        let _x = limits.acquire("C", "x").await.expect("x");
        let _y = limits.acquire("C", "y").await.expect("y");
        let third =
            tokio::time::timeout(Duration::from_millis(200), limits.acquire("C", "z")).await;
        assert!(third.is_err(), "site limit exceeded");
    }
}
