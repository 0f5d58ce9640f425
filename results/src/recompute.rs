//! Recomputations, ARGO's model: an operator-approved correction of the figures over a past
//! period, for the whole VO or some sites, services (flavours) or metrics. It either
//! *excludes* the time (EXCLUDED: neither up nor known, skipped by AND and OR) or *forces* a
//! status on it. The request, and every step of its life cycle (who, when), is kept for ever:
//!
//! ```text
//! pending ──approve──▶ approved ──(at once)──▶ applied ──revoke──▶ revoked
//!    └────reject───▶ rejected
//! ```
//!
//! Figures are computed from the stored results at read time with the applied recomputations
//! laid over each metric's timeline ([`overlays_for`]), never written into the stored results
//! or the per-day caches: a recomputation touching a cached day therefore never leaves a stale
//! figure, and a revoke takes effect at the next read.

use std::collections::BTreeSet;
use std::ops::Range;

use gridprobe_config::{did_you_mean, Config, Role};
use gridprobe_probes::Status;
use serde::{Deserialize, Serialize};

use crate::availability::{AStatus, Ms};

/// Which cells a recomputation touches: a cell matches when its site, flavour and metric are
/// each in the list given (an empty list matches all). All three empty: the whole VO.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Sites (empty: every site).
    #[serde(default)]
    pub sites: Vec<String>,
    /// Service flavours (empty: every flavour).
    #[serde(default)]
    pub flavours: Vec<String>,
    /// Full metric names (empty: every metric).
    #[serde(default)]
    pub metrics: Vec<String>,
}

impl Scope {
    /// Whether the scope covers a cell (its site, flavour and full metric name).
    pub fn matches(&self, site: &str, flavour: &str, metric: &str) -> bool {
        let within = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        within(&self.sites, site)
            && within(&self.flavours, flavour)
            && within(&self.metrics, metric)
    }

    /// Whether two scopes share at least one possible cell.
    pub fn intersects(&self, other: &Scope) -> bool {
        let meet = |a: &[String], b: &[String]| {
            a.is_empty() || b.is_empty() || a.iter().any(|x| b.contains(x))
        };
        meet(&self.sites, &other.sites)
            && meet(&self.flavours, &other.flavours)
            && meet(&self.metrics, &other.metrics)
    }

    /// Whether it is the whole VO.
    pub fn is_whole_vo(&self) -> bool {
        self.sites.is_empty() && self.flavours.is_empty() && self.metrics.is_empty()
    }

    /// Short description (`whole VO`, `sites A, B; metrics m`).
    pub fn describe(&self) -> String {
        if self.is_whole_vo() {
            return "whole VO".into();
        }
        let mut parts = Vec::new();
        for (name, list) in [
            ("sites", &self.sites),
            ("flavours", &self.flavours),
            ("metrics", &self.metrics),
        ] {
            if !list.is_empty() {
                parts.push(format!("{name} {}", list.join(", ")));
            }
        }
        parts.join("; ")
    }
}

/// What a recomputation does to the time it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Change {
    /// The time counts as EXCLUDED: neither up nor known; aggregation skips it.
    Exclude,
    /// The time counts as this status (e.g. OK when the monitoring was at fault).
    Force {
        /// OK, WARNING, CRITICAL or UNKNOWN.
        status: Status,
    },
}

impl Change {
    /// The availability status the covered time takes.
    pub fn status(self) -> AStatus {
        match self {
            Change::Exclude => AStatus::Excluded,
            Change::Force { status } => AStatus::from_probe(status),
        }
    }

    /// `exclude` or `force OK`.
    pub fn describe(self) -> String {
        match self {
            Change::Exclude => "exclude".into(),
            Change::Force { status } => format!("force {}", status.name()),
        }
    }
}

/// A recomputation as requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecomputationRequest {
    /// Start of the period (inclusive, ms since the epoch).
    pub start_ms: Ms,
    /// End of the period (exclusive).
    pub end_ms: Ms,
    /// Why (required).
    pub reason: String,
    /// Who asked (a token's name, or the CLI user).
    pub requester: String,
    /// Which cells.
    #[serde(flatten)]
    pub scope: Scope,
    /// What it does.
    #[serde(flatten)]
    pub change: Change,
}

/// Where a recomputation is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for an operator.
    Pending,
    /// Approved, about to be applied.
    Approved,
    /// Refused by an operator.
    Rejected,
    /// In every figure.
    Applied,
    /// Was applied, taken back: no longer in any figure.
    Revoked,
}

impl State {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Applied => "applied",
            State::Revoked => "revoked",
        }
    }
}

/// One step of the life cycle; the first is always `requested`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Asked for.
    Requested,
    /// An operator approved it.
    Approved,
    /// An operator refused it.
    Rejected,
    /// Taken into the figures.
    Applied,
    /// Taken back out.
    Revoked,
}

impl StepKind {
    /// Lower-case name, as stored.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Requested => "requested",
            StepKind::Approved => "approved",
            StepKind::Rejected => "rejected",
            StepKind::Applied => "applied",
            StepKind::Revoked => "revoked",
        }
    }

    /// From its stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            StepKind::Requested,
            StepKind::Approved,
            StepKind::Rejected,
            StepKind::Applied,
            StepKind::Revoked,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// A recorded step: what, who, when, and an optional note (why rejected or revoked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What happened.
    pub step: StepKind,
    /// Who did it.
    pub by: String,
    /// When (ms since the epoch).
    pub at_ms: Ms,
    /// Free text (may be empty).
    #[serde(default)]
    pub note: String,
}

/// A stored recomputation with its whole history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recomputation {
    /// Store-assigned id.
    pub id: i64,
    /// The request.
    #[serde(flatten)]
    pub request: RecomputationRequest,
    /// Where it is now (from its last step).
    pub state: State,
    /// Every step, oldest first.
    pub steps: Vec<Step>,
}

impl Recomputation {
    /// Builds one from its stored parts, deriving the state from the steps.
    pub fn from_parts(id: i64, request: RecomputationRequest, steps: Vec<Step>) -> Self {
        let state = steps
            .iter()
            .try_fold(None, |s: Option<State>, step| {
                advance(s, step.step).map(Some)
            })
            .ok()
            .flatten()
            .unwrap_or(State::Pending);
        Recomputation {
            id,
            request,
            state,
            steps,
        }
    }

    /// Whether its figures count now.
    pub fn is_applied(&self) -> bool {
        self.state == State::Applied
    }

    /// Whether it overlaps a period.
    pub fn overlaps(&self, period: &Range<Ms>) -> bool {
        self.request.start_ms < period.end && period.start < self.request.end_ms
    }

    /// The last step of a kind (e.g. who approved it).
    pub fn last_step(&self, kind: StepKind) -> Option<&Step> {
        self.steps.iter().rev().find(|s| s.step == kind)
    }
}

/// The state after a step, or why the step is not allowed there. `None` is "not yet requested".
pub fn advance(state: Option<State>, step: StepKind) -> Result<State, String> {
    use StepKind as K;
    match (state, step) {
        (None, K::Requested) => Ok(State::Pending),
        (Some(State::Pending), K::Approved) => Ok(State::Approved),
        (Some(State::Pending), K::Rejected) => Ok(State::Rejected),
        (Some(State::Approved), K::Applied) => Ok(State::Applied),
        (Some(State::Approved | State::Applied), K::Revoked) => Ok(State::Revoked),
        (None, _) => Err("the recomputation was never requested".into()),
        (Some(s), k) => Err(format!(
            "it is {}: {}",
            s.name(),
            match k {
                K::Approved | K::Rejected =>
                    "only a pending recomputation can be approved or rejected",
                K::Revoked => "only an approved or applied recomputation can be revoked",
                K::Applied => "only an approved recomputation can be applied",
                K::Requested => "it was already requested",
            }
        )),
    }
}

/// The applied recomputations of a list that overlap a period, oldest first.
pub fn applied_in<'a>(all: &'a [Recomputation], period: &Range<Ms>) -> Vec<&'a Recomputation> {
    all.iter()
        .filter(|r| r.is_applied() && r.overlaps(period))
        .collect()
}

/// The overrides a cell (site, flavour, full metric name) gets from applied recomputations:
/// `(span, status)`, for [`crate::availability::overlay_statuses`].
pub fn overlays_for(
    cell: (&str, &str, &str),
    applied: &[&Recomputation],
) -> Vec<(Range<Ms>, AStatus)> {
    applied
        .iter()
        .filter(|r| r.request.scope.matches(cell.0, cell.1, cell.2))
        .map(|r| {
            (
                r.request.start_ms..r.request.end_ms,
                r.request.change.status(),
            )
        })
        .collect()
}

/// Checks a request before it is stored, and normalises it (metric short names → full
/// names). Refuses, with the reason: an empty reason or requester, an empty or future period,
/// forcing STANDBY, an unknown site, flavour or metric, and a forced status that contradicts
/// another live (pending, approved or applied) recomputation over the same time and cells.
pub fn validate(
    request: &mut RecomputationRequest,
    config: &Config,
    now_ms: Ms,
    existing: &[Recomputation],
) -> Result<(), String> {
    request.reason = request.reason.trim().to_string();
    if request.reason.is_empty() {
        return Err(
            "a recomputation needs a reason: say why the figures are wrong \
                    (e.g. `the CE probe failed on our proxy, not on the site`)"
                .into(),
        );
    }
    if request.requester.trim().is_empty() {
        return Err("a recomputation needs a requester".into());
    }
    if request.end_ms <= request.start_ms {
        return Err("the period of a recomputation must end after it starts".into());
    }
    if request.end_ms > now_ms {
        return Err(format!(
            "the period ends in the future ({}): only past time can be recomputed",
            gridprobe_config::time::format_utc(request.end_ms)
        ));
    }
    if let Change::Force {
        status: Status::Standby,
    } = request.change
    {
        return Err("STANDBY cannot be forced: force OK, WARNING, CRITICAL or UNKNOWN".into());
    }
    let unknown = |what: &str, name: &str, known: &[&str]| {
        let hint = did_you_mean(name, known.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        format!("unknown {what} `{name}`{hint}")
    };
    let sites: Vec<&str> = config.sites.iter().map(|s| s.name.as_str()).collect();
    for s in &request.scope.sites {
        if !sites.contains(&s.as_str()) {
            return Err(unknown("site", s, &sites));
        }
    }
    let flavours: BTreeSet<&str> = config
        .sites
        .iter()
        .flat_map(|s| s.services.iter().map(|v| v.flavour.as_str()))
        .collect();
    let flavours: Vec<&str> = flavours.into_iter().collect();
    for f in &request.scope.flavours {
        if !flavours.contains(&f.as_str()) {
            return Err(unknown("flavour", f, &flavours));
        }
    }
    let metric_names: Vec<&str> = config
        .probes
        .iter()
        .flat_map(|p| [p.metric.as_str(), p.short.as_str()])
        .collect();
    for m in &mut request.scope.metrics {
        match config.probe_index(m) {
            Some(i) => *m = config.probes[i].metric.clone(),
            None => return Err(unknown("metric", m, &metric_names)),
        }
    }
    if let Change::Force { status } = request.change {
        let span = request.start_ms..request.end_ms;
        for other in existing {
            if !matches!(
                other.state,
                State::Pending | State::Approved | State::Applied
            ) {
                continue;
            }
            if let Change::Force { status: theirs } = other.request.change {
                if theirs != status
                    && other.overlaps(&span)
                    && other.request.scope.intersects(&request.scope)
                {
                    return Err(format!(
                        "contradicts recomputation {} ({}, force {} on {} from {} to {}): \
                         the same time cannot be forced to two statuses; revoke or reject \
                         it first, or narrow the period or the scope",
                        other.id,
                        other.state.name(),
                        theirs.name(),
                        other.request.scope.describe(),
                        gridprobe_config::time::format_utc(other.request.start_ms),
                        gridprobe_config::time::format_utc(other.request.end_ms),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether a role may request a recomputation with this scope: operators for anything, site
/// admins only for their own sites (the scope must name sites, all of them theirs).
pub fn may_request(role: &Role, scope: &Scope) -> Result<(), String> {
    match role {
        Role::Operator => Ok(()),
        Role::SiteAdmin(own) => {
            if scope.sites.is_empty() {
                return Err(
                    "a site admin may request recomputations for their own sites only: name \
                     them (`sites`)"
                        .into(),
                );
            }
            match scope.sites.iter().find(|s| !own.contains(s)) {
                Some(s) => Err(format!(
                    "a site admin may request recomputations for their own sites only; `{s}` \
                     is not one of them"
                )),
                None => Ok(()),
            }
        }
    }
}

/// The steps an operator's decision records: approving applies at once (figures are computed
/// at read time, so there is nothing to wait for), rejecting and revoking are one step each.
pub fn decision_steps(decision: StepKind, by: &str, at_ms: Ms, note: &str) -> Vec<Step> {
    let step = |kind| Step {
        step: kind,
        by: by.to_string(),
        at_ms,
        note: note.to_string(),
    };
    match decision {
        StepKind::Approved => vec![
            step(StepKind::Approved),
            Step {
                step: StepKind::Applied,
                by: "gridprobe".into(),
                at_ms,
                note: String::new(),
            },
        ],
        other => vec![step(other)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CONFIG: &str = r#"
vo = "v"
[[site]]
name = "T2_A"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce1"
[[site]]
name = "T2_B"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce2"
[[probe]]
metric = "org.v.ce-job"
kind = "tcp"
flavours = ["CE"]
"#;

    fn request(change: Change, sites: &[&str]) -> RecomputationRequest {
        RecomputationRequest {
            start_ms: 1_000,
            end_ms: 2_000,
            reason: "probe host broken".into(),
            requester: "alice".into(),
            scope: Scope {
                sites: sites.iter().map(|s| s.to_string()).collect(),
                ..Scope::default()
            },
            change,
        }
    }

    fn config() -> Config {
        let l = gridprobe_config::load_str(Path::new("v.toml"), CONFIG);
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        l.config
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let c = config();
        let ok = Change::Force { status: Status::Ok };
        let mut r = request(ok, &["T2_A"]);
        r.reason = "  ".into();
        assert!(validate(&mut r, &c, 10_000, &[])
            .unwrap_err()
            .contains("needs a reason"));
        let mut r = request(ok, &["T2_A"]);
        let err = validate(&mut r, &c, 1_500, &[]).unwrap_err();
        assert!(err.contains("in the future"), "{err}");
        let mut r = request(ok, &["T2_AA"]);
        let err = validate(&mut r, &c, 10_000, &[]).unwrap_err();
        assert_eq!(err, "unknown site `T2_AA` (did you mean `T2_A`?)");
        let mut r = request(ok, &[]);
        r.scope.metrics = vec!["ce-jbo".into()];
        let err = validate(&mut r, &c, 10_000, &[]).unwrap_err();
        assert!(err.starts_with("unknown metric `ce-jbo`"), "{err}");
        let mut r = request(ok, &[]);
        r.scope.metrics = vec!["ce-job".into()];
        validate(&mut r, &c, 10_000, &[]).expect("short name accepted");
        assert_eq!(r.scope.metrics, ["org.v.ce-job"], "normalised");
        let mut r = request(
            Change::Force {
                status: Status::Standby,
            },
            &[],
        );
        assert!(validate(&mut r, &c, 10_000, &[]).is_err());
    }

    #[test]
    fn contradictory_forced_statuses_are_refused_and_compatible_ones_pass() {
        let c = config();
        let ok = Change::Force { status: Status::Ok };
        let crit = Change::Force {
            status: Status::Critical,
        };
        let steps = vec![Step {
            step: StepKind::Requested,
            by: "alice".into(),
            at_ms: 0,
            note: String::new(),
        }];
        let existing = vec![Recomputation::from_parts(
            7,
            request(ok, &["T2_A"]),
            steps.clone(),
        )];
        let mut r = request(crit, &[]);
        let err = validate(&mut r, &c, 10_000, &existing).unwrap_err();
        assert!(
            err.starts_with("contradicts recomputation 7 (pending"),
            "{err}"
        );
        // Same status, another site, or a later period: no contradiction.
        validate(&mut request(ok, &[]), &c, 10_000, &existing).expect("same status");
        validate(&mut request(crit, &["T2_B"]), &c, 10_000, &existing).expect("other site");
        let mut later = request(crit, &["T2_A"]);
        later.start_ms = 2_000;
        later.end_ms = 3_000;
        validate(&mut later, &c, 10_000, &existing).expect("adjacent period");
        // A rejected one contradicts nothing.
        let mut rejected = steps;
        rejected.push(Step {
            step: StepKind::Rejected,
            by: "op".into(),
            at_ms: 1,
            note: String::new(),
        });
        let gone = vec![Recomputation::from_parts(
            7,
            request(ok, &["T2_A"]),
            rejected,
        )];
        validate(&mut request(crit, &[]), &c, 10_000, &gone).expect("rejected");
    }

    #[test]
    fn life_cycle_allows_only_its_transitions() {
        let s = advance(None, StepKind::Requested).expect("request");
        assert_eq!(s, State::Pending);
        assert!(advance(Some(s), StepKind::Applied).is_err());
        assert!(advance(Some(s), StepKind::Revoked).is_err());
        let a = advance(Some(s), StepKind::Approved).expect("approve");
        let applied = advance(Some(a), StepKind::Applied).expect("apply");
        let err = advance(Some(applied), StepKind::Approved).unwrap_err();
        assert!(err.starts_with("it is applied"), "{err}");
        assert_eq!(
            advance(Some(applied), StepKind::Revoked),
            Ok(State::Revoked)
        );
        let r = advance(Some(s), StepKind::Rejected).expect("reject");
        assert!(advance(Some(r), StepKind::Revoked).is_err());
        assert_eq!(
            decision_steps(StepKind::Approved, "op", 5, "")
                .iter()
                .map(|s| s.step)
                .collect::<Vec<_>>(),
            [StepKind::Approved, StepKind::Applied]
        );
    }

    #[test]
    fn site_admins_request_for_their_own_sites_only() {
        let admin = Role::SiteAdmin(vec!["T2_A".into()]);
        let scope = |s: &[&str]| Scope {
            sites: s.iter().map(|x| x.to_string()).collect(),
            ..Scope::default()
        };
        assert!(may_request(&admin, &scope(&["T2_A"])).is_ok());
        assert!(may_request(&admin, &scope(&["T2_A", "T2_B"])).is_err());
        assert!(may_request(&admin, &scope(&[])).is_err());
        assert!(may_request(&Role::Operator, &scope(&[])).is_ok());
    }

    #[test]
    fn the_request_serialises_flat() {
        let r = request(Change::Force { status: Status::Ok }, &["T2_A"]);
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["action"], "force");
        assert_eq!(v["status"], "OK");
        assert_eq!(v["sites"][0], "T2_A");
        let back: RecomputationRequest = serde_json::from_value(v).expect("back");
        assert_eq!(back, r);
    }
}
