//! What the notification engine remembers of each cell, and the decisions it takes on each hard
//! result: when a state becomes hard for a rule (N consecutive results or a duration), when it
//! recovers, when a reminder is due, and when a cell flaps (Nagios's method). Pure: no I/O, no
//! clock (times are passed in), so every rule is tested here.

use std::collections::{HashMap, VecDeque};

use gridprobe_config::notify::{Level, Rule};
use gridprobe_probes::Status;
use gridprobe_results::CellKey;

/// Results kept for flap detection (Nagios: 21, so 20 possible changes).
pub const FLAP_HISTORY: usize = 21;
/// Results needed before a cell can be judged flapping (two results are one change: 100 %).
pub const FLAP_MIN_HISTORY: usize = 10;
/// A cell starts flapping above this percentage of weighted state changes.
pub const FLAP_HIGH: f64 = 50.0;
/// And stops flapping below this one.
pub const FLAP_LOW: f64 = 25.0;

/// What happened to a cell, for one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The hard state became a problem (or a different problem).
    Problem,
    /// Back to a state below the rule's level.
    Recovery,
    /// Still a problem, not acknowledged, `repeat` since the last message.
    Reminder,
    /// The cell started flapping: its changes are not notified one by one.
    FlappingStarted,
    /// The cell stopped flapping.
    FlappingStopped,
    /// The site's 24-hour status changed (good, degraded, failed).
    SiteStatus,
    /// The daily digest: a problem still present.
    Digest,
}

impl EventKind {
    /// A word for subjects and the API.
    pub fn word(self) -> &'static str {
        match self {
            EventKind::Problem => "problem",
            EventKind::Recovery => "recovery",
            EventKind::Reminder => "reminder",
            EventKind::FlappingStarted => "flapping started",
            EventKind::FlappingStopped => "flapping stopped",
            EventKind::SiteStatus => "site status",
            EventKind::Digest => "still broken",
        }
    }
}

/// One decision: a rule has something to say about a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The rule's index in the configuration.
    pub rule: usize,
    /// The cell.
    pub cell: CellKey,
    /// What happened.
    pub kind: EventKind,
    /// Its status now.
    pub status: Status,
    /// The result's summary.
    pub summary: String,
    /// Since when the cell has this status (ms).
    pub since_ms: i64,
    /// When it was decided (ms).
    pub at_ms: i64,
}

/// Per rule: what was last notified for a cell.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct RuleTrack {
    /// The problem status last notified; `None` while nothing is notified as broken.
    notified: Option<Status>,
    /// When the last message about it was decided (ms).
    last_sent_ms: i64,
}

/// What the engine knows of one cell (kept in the store, see `shared`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CellTrack {
    /// The last status counted (never UNKNOWN or STANDBY).
    pub status: Status,
    /// The last summary.
    pub summary: String,
    /// Consecutive results with `status`.
    pub streak: u32,
    /// Since when (ms).
    pub since_ms: i64,
    /// The last statuses, oldest first.
    history: VecDeque<Status>,
    /// Whether the cell is flapping.
    pub flapping: bool,
    rules: HashMap<usize, RuleTrack>,
}

/// Nagios's flap percentage: state changes over the history, the newer ones weighing more
/// (0.8 for the oldest change to 1.2 for the newest).
pub fn flap_percent(history: &VecDeque<Status>) -> f64 {
    let n = history.len();
    if n < 2 {
        return 0.0;
    }
    let changes = n - 1;
    let mut weighted = 0.0;
    for (i, pair) in history.iter().zip(history.iter().skip(1)).enumerate() {
        if pair.0 != pair.1 {
            let w = if changes > 1 {
                0.8 + 0.4 * i as f64 / (changes - 1) as f64
            } else {
                1.0
            };
            weighted += w;
        }
    }
    weighted * 100.0 / changes as f64
}

fn is_problem(level: Level, status: Status) -> bool {
    match level {
        Level::Critical => status == Status::Critical,
        Level::Warning => matches!(status, Status::Warning | Status::Critical),
    }
}

/// What a cell's context says: is it in a downtime now, is its problem acknowledged.
pub trait Context {
    /// Whether a downtime (or maintenance) covers the cell at `at_ms`.
    fn in_downtime(&self, cell: &CellKey, at_ms: i64) -> bool;
    /// Whether the cell's problem is acknowledged.
    fn acknowledged(&self, cell: &CellKey) -> bool;
}

/// The engine's memory of every cell.
#[derive(Debug, Default)]
pub struct Tracker {
    cells: HashMap<CellKey, CellTrack>,
}

impl Tracker {
    /// Every cell's track, for saving.
    pub fn save(&self) -> Vec<(CellKey, CellTrack)> {
        self.cells
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A tracker from what [`Tracker::save`] returned.
    pub fn restore(saved: Vec<(CellKey, CellTrack)>) -> Tracker {
        Tracker {
            cells: saved.into_iter().collect(),
        }
    }

    /// Replaces a cell's track (`None`: forgets it), e.g. with what another instance wrote.
    pub fn set(&mut self, cell: &CellKey, track: Option<CellTrack>) {
        match track {
            Some(t) => {
                self.cells.insert(cell.clone(), t);
            }
            None => {
                self.cells.remove(cell);
            }
        }
    }

    /// A cell's track.
    pub fn get(&self, cell: &CellKey) -> Option<&CellTrack> {
        self.cells.get(cell)
    }

    /// Every cell's track.
    pub fn iter(&self) -> impl Iterator<Item = (&CellKey, &CellTrack)> {
        self.cells.iter()
    }

    /// Counts a hard result. UNKNOWN (the monitoring's own failure) and STANDBY (not run on
    /// purpose) change nothing. `rules` are the rules with their indexes that cover the cell.
    pub fn observe(
        &mut self,
        cell: &CellKey,
        status: Status,
        summary: &str,
        at_ms: i64,
        rules: &[(usize, &Rule)],
        ctx: &dyn Context,
    ) -> Vec<Event> {
        if matches!(status, Status::Unknown | Status::Standby) {
            return Vec::new();
        }
        let track = self.cells.entry(cell.clone()).or_insert_with(|| CellTrack {
            status,
            summary: String::new(),
            streak: 0,
            since_ms: at_ms,
            history: VecDeque::new(),
            flapping: false,
            rules: HashMap::new(),
        });
        if track.status == status {
            track.streak = track.streak.saturating_add(1);
        } else {
            track.status = status;
            track.streak = 1;
            track.since_ms = at_ms;
        }
        track.summary = summary.to_string();
        track.history.push_back(status);
        while track.history.len() > FLAP_HISTORY {
            track.history.pop_front();
        }
        let pct = flap_percent(&track.history);
        let mut flap_event = None;
        if !track.flapping && pct > FLAP_HIGH && track.history.len() >= FLAP_MIN_HISTORY {
            track.flapping = true;
            flap_event = Some(EventKind::FlappingStarted);
        } else if track.flapping && pct < FLAP_LOW {
            track.flapping = false;
            flap_event = Some(EventKind::FlappingStopped);
        }
        let downtime = ctx.in_downtime(cell, at_ms);
        let mut out = Vec::new();
        for (idx, rule) in rules {
            let rt = track.rules.entry(*idx).or_default();
            let event = |kind| Event {
                rule: *idx,
                cell: cell.clone(),
                kind,
                status,
                summary: summary.to_string(),
                since_ms: track.since_ms,
                at_ms,
            };
            if let Some(kind) = flap_event {
                if !downtime {
                    out.push(event(kind));
                    rt.last_sent_ms = at_ms;
                }
                if kind == EventKind::FlappingStarted {
                    continue;
                }
            }
            if track.flapping {
                continue;
            }
            let problem = is_problem(rule.level, status);
            let elapsed = u64::try_from(at_ms.saturating_sub(track.since_ms)).unwrap_or(0);
            let hard = track.streak >= rule.after
                || rule
                    .after_duration
                    .is_some_and(|d| u128::from(elapsed) >= d.as_millis());
            if problem && hard && rt.notified != Some(status) {
                // In a downtime nothing is sent, and nothing is marked sent: a problem that
                // outlasts the downtime is notified at its next result.
                if !downtime {
                    out.push(event(EventKind::Problem));
                    rt.notified = Some(status);
                    rt.last_sent_ms = at_ms;
                }
            } else if !problem && rt.notified.is_some() {
                rt.notified = None;
                if rule.recovery && !downtime {
                    out.push(event(EventKind::Recovery));
                    rt.last_sent_ms = at_ms;
                }
            }
        }
        out
    }

    /// The daily digest of a rule: every covered cell not OK now, with its status and since.
    pub fn digest(
        &self,
        rule: usize,
        covers: &dyn Fn(&CellKey) -> bool,
        now_ms: i64,
    ) -> Vec<Event> {
        let mut out: Vec<Event> = self
            .cells
            .iter()
            .filter(|(k, t)| t.status != Status::Ok && covers(k))
            .map(|(k, t)| Event {
                rule,
                cell: k.clone(),
                kind: EventKind::Digest,
                status: t.status,
                summary: t.summary.clone(),
                since_ms: t.since_ms,
                at_ms: now_ms,
            })
            .collect();
        out.sort_by(|a, b| (&a.cell, a.since_ms).cmp(&(&b.cell, b.since_ms)));
        out
    }

    /// Reminders due at `now_ms`: problems notified, unacknowledged, outside downtimes, not
    /// flapping, `repeat` after the last message.
    pub fn reminders(&mut self, now_ms: i64, rules: &[Rule], ctx: &dyn Context) -> Vec<Event> {
        let mut out = Vec::new();
        for (cell, track) in &mut self.cells {
            if track.flapping {
                continue;
            }
            for (idx, rt) in &mut track.rules {
                let Some(notified) = rt.notified else {
                    continue;
                };
                let Some(repeat) = rules.get(*idx).and_then(|r| r.repeat) else {
                    continue;
                };
                let due = u128::try_from(now_ms.saturating_sub(rt.last_sent_ms))
                    .is_ok_and(|e| e >= repeat.as_millis());
                if !due || ctx.acknowledged(cell) || ctx.in_downtime(cell, now_ms) {
                    continue;
                }
                rt.last_sent_ms = now_ms;
                out.push(Event {
                    rule: *idx,
                    cell: cell.clone(),
                    kind: EventKind::Reminder,
                    status: notified,
                    summary: track.summary.clone(),
                    since_ms: track.since_ms,
                    at_ms: now_ms,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    struct Ctx {
        downtime: Cell<bool>,
        acked: Cell<bool>,
    }
    impl Context for Ctx {
        fn in_downtime(&self, _: &CellKey, _: i64) -> bool {
            self.downtime.get()
        }
        fn acknowledged(&self, _: &CellKey) -> bool {
            self.acked.get()
        }
    }
    fn ctx() -> Ctx {
        Ctx {
            downtime: Cell::new(false),
            acked: Cell::new(false),
        }
    }

    fn rule(after: u32) -> Rule {
        Rule {
            channel: "mail".into(),
            sites: vec![],
            tiers: vec![],
            flavours: vec![],
            level: Level::Critical,
            to: vec![],
            contacts: true,
            after,
            after_duration: None,
            repeat: Some(Duration::from_secs(3600)),
            recovery: true,
            group: Duration::from_secs(0),
            site_status: false,
            digest_minute: None,
            spans: Default::default(),
        }
    }

    fn cell() -> CellKey {
        CellKey {
            site: "S".into(),
            hostname: "h".into(),
            flavour: "SRM".into(),
            metric: "m".into(),
        }
    }

    fn kinds(ev: &[Event]) -> Vec<EventKind> {
        ev.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn a_problem_is_hard_after_n_results_and_recovers_once() {
        let r = rule(3);
        let rules = [(0, &r)];
        let c = ctx();
        let mut t = Tracker::default();
        let mut seen = vec![];
        for (i, s) in [
            Status::Ok,
            Status::Critical,
            Status::Critical,
            Status::Unknown, // the monitoring's own failure: neither counted nor breaking the run
            Status::Critical,
            Status::Critical,
            Status::Standby,
            Status::Ok,
            Status::Ok,
        ]
        .into_iter()
        .enumerate()
        {
            seen.push(kinds(&t.observe(
                &cell(),
                s,
                "x",
                i as i64 * 1000,
                &rules,
                &c,
            )));
        }
        let flat: Vec<_> = seen
            .iter()
            .enumerate()
            .filter(|(_, k)| !k.is_empty())
            .collect();
        assert_eq!(
            flat,
            vec![
                (4, &vec![EventKind::Problem]),
                (7, &vec![EventKind::Recovery])
            ]
        );
    }

    #[test]
    fn unknown_never_notifies_and_a_duration_also_makes_a_state_hard() {
        let mut r = rule(100);
        r.after_duration = Some(Duration::from_secs(60));
        let rules = [(0, &r)];
        let c = ctx();
        let mut t = Tracker::default();
        for i in 0..10 {
            assert!(t
                .observe(&cell(), Status::Unknown, "cred", i * 1000, &rules, &c)
                .is_empty());
        }
        assert!(t
            .observe(&cell(), Status::Critical, "x", 0, &rules, &c)
            .is_empty());
        assert!(t
            .observe(&cell(), Status::Critical, "x", 30_000, &rules, &c)
            .is_empty());
        assert_eq!(
            kinds(&t.observe(&cell(), Status::Critical, "x", 61_000, &rules, &c)),
            vec![EventKind::Problem]
        );
    }

    #[test]
    fn downtimes_suppress_and_the_problem_is_told_after_them() {
        let r = rule(1);
        let rules = [(0, &r)];
        let c = ctx();
        c.downtime.set(true);
        let mut t = Tracker::default();
        assert!(t
            .observe(&cell(), Status::Critical, "x", 0, &rules, &c)
            .is_empty());
        assert!(t
            .reminders(10_000_000, std::slice::from_ref(&r), &c)
            .is_empty());
        c.downtime.set(false);
        assert_eq!(
            kinds(&t.observe(&cell(), Status::Critical, "x", 1000, &rules, &c)),
            vec![EventKind::Problem]
        );
    }

    #[test]
    fn reminders_repeat_until_acknowledged() {
        let r = rule(1);
        let rules = [(0, &r)];
        let c = ctx();
        let mut t = Tracker::default();
        t.observe(&cell(), Status::Critical, "x", 0, &rules, &c);
        let all = [r.clone()];
        assert!(t.reminders(3_599_000, &all, &c).is_empty());
        assert_eq!(
            kinds(&t.reminders(3_600_000, &all, &c)),
            vec![EventKind::Reminder]
        );
        assert!(t.reminders(3_601_000, &all, &c).is_empty());
        c.acked.set(true);
        assert!(t.reminders(9_000_000, &all, &c).is_empty());
    }

    #[test]
    fn a_flapping_cell_notifies_once_not_on_every_change() {
        let r = rule(1);
        let rules = [(0, &r)];
        let c = ctx();
        let mut t = Tracker::default();
        let mut all = vec![];
        for i in 0..30 {
            let s = if i % 2 == 0 {
                Status::Ok
            } else {
                Status::Critical
            };
            all.extend(kinds(&t.observe(&cell(), s, "x", i * 1000, &rules, &c)));
        }
        let started = all
            .iter()
            .filter(|k| **k == EventKind::FlappingStarted)
            .count();
        assert_eq!(started, 1, "{all:?}");
        // Before flapping was detected a few changes were told; after it, none.
        let after: Vec<_> = all
            .iter()
            .skip_while(|k| **k != EventKind::FlappingStarted)
            .skip(1)
            .collect();
        assert!(after.is_empty(), "{all:?}");
        assert!(t.get(&cell()).unwrap().flapping);
        // Steady again: it stops flapping once, then tells the state it settled in.
        let mut calm = vec![];
        for i in 30..60 {
            calm.extend(kinds(&t.observe(
                &cell(),
                Status::Critical,
                "x",
                i * 1000,
                &rules,
                &c,
            )));
        }
        assert_eq!(
            calm,
            vec![EventKind::FlappingStopped, EventKind::Problem],
            "{calm:?}"
        );
    }

    #[test]
    fn a_restored_tracker_does_not_tell_a_problem_again() {
        let r = rule(1);
        let rules = [(0, &r)];
        let c = ctx();
        let mut t = Tracker::default();
        assert_eq!(
            t.observe(&cell(), Status::Critical, "x", 0, &rules, &c)
                .len(),
            1
        );
        let json = serde_json::to_string(&t.save()).unwrap();
        let mut t = Tracker::restore(serde_json::from_str(&json).unwrap());
        assert!(t
            .observe(&cell(), Status::Critical, "x", 1000, &rules, &c)
            .is_empty());
        assert_eq!(
            kinds(&t.observe(&cell(), Status::Ok, "x", 2000, &rules, &c)),
            vec![EventKind::Recovery]
        );
    }

    #[test]
    fn the_digest_lists_what_is_not_ok() {
        let r = rule(5);
        let rules = [(0, &r)];
        let c = ctx();
        let mut t = Tracker::default();
        t.observe(&cell(), Status::Warning, "slow", 7, &rules, &c);
        let mut ok = cell();
        ok.hostname = "fine".into();
        t.observe(&ok, Status::Ok, "", 7, &rules, &c);
        let d = t.digest(0, &|_| true, 100);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].kind, d[0].status, d[0].since_ms),
            (EventKind::Digest, Status::Warning, 7)
        );
        assert!(t.digest(0, &|_| false, 100).is_empty());
    }

    #[test]
    fn flap_percent_weighs_recent_changes_more() {
        let h = |v: &[Status]| v.iter().copied().collect::<VecDeque<_>>();
        assert_eq!(flap_percent(&h(&[Status::Ok; 21])), 0.0);
        let mut old = vec![Status::Ok; 21];
        old[0] = Status::Critical;
        let mut new = vec![Status::Ok; 21];
        new[20] = Status::Critical;
        assert!(flap_percent(&h(&new)) > flap_percent(&h(&old)));
    }
}
