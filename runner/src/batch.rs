//! Running a set of probe instances now (on demand), honouring concurrency limits and
//! `depends_on`: a child waits for its parents on the same target and is recorded STANDBY, with
//! the reason, when none of them is up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gridprobe_config::{did_you_mean, Config, Defaults, ProbeInstance};
use gridprobe_probes::registry::{context_for, BuiltProbes};
use gridprobe_probes::{Outcome, ProbeResult, Status, Trigger};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::execute::{run_with_retries, ResultLabels};

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

    /// Waits for a slot. Permits are taken kind → site → global, narrowest first, so a run
    /// waiting on a busy site does not hold a global slot others could use.
    pub async fn acquire(&self, site: &str, kind: &str) -> Option<Permits> {
        let kind_permit = match self.kinds.get(kind) {
            Some(s) => Some(s.clone().acquire_owned().await.ok()?),
            None => None,
        };
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
        let site_permit = site_sem.acquire_owned().await.ok()?;
        let global = self.global.clone().acquire_owned().await.ok()?;
        Some(Permits {
            _global: global,
            _site: site_permit,
            _kind: kind_permit,
        })
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
        Some(p) => Some(
            config
                .probe_index(p)
                .ok_or_else(|| SelectError::UnknownProbe {
                    name: p.clone(),
                    hint: hint(p, config.probes.iter().map(|p| p.short.as_str())),
                })?,
        ),
        None => None,
    };
    let all = config.instances();
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

/// Runs the instances now and returns one [`InstanceRun`] per instance, in the same order.
pub async fn run_batch(
    config: Arc<Config>,
    probes: Arc<BuiltProbes>,
    instances: Vec<ProbeInstance>,
    trigger: Trigger,
    limits: Arc<Limits>,
    cancel: CancellationToken,
    on_event: Arc<dyn Fn(Event) + Send + Sync>,
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
            } else if let Some(probe) = probes.get(inst.probe).cloned() {
                let Some(_permits) = limits.acquire(&site.name, &def.kind).await else {
                    return finish(idx, inst, Vec::new(), tx, &on_event);
                };
                on_event(Event::Started(idx));
                let make_ctx = || context_for(&config, &inst, cancel.clone());
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
            Ok(run) => out.push(run),
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
