//! What a cell shows: matrix state or current outage.

use super::*;

/// A cell as the dashboard colours it: the matrix state, or DOWNTIME when a current outage
/// covers the instance (whatever the last result said, as the SAM tables show it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shown {
    State(CellState),
    Downtime,
}

impl Shown {
    /// CSS class (colour).
    pub(super) fn class(self) -> &'static str {
        match self {
            Shown::Downtime => "st-dt",
            Shown::State(CellState::Current(s)) => match s {
                Status::Ok => "st-ok",
                Status::Warning => "st-warn",
                Status::Critical => "st-error",
                Status::Unknown => "st-unkn",
                Status::Standby => "st-stb",
            },
            Shown::State(CellState::Missing) => "st-missing",
            Shown::State(CellState::NoResult) => "st-na",
        }
    }

    /// The text in the cell: the SAM token, `dt` for a downtime.
    pub(super) fn token(self) -> &'static str {
        match self {
            Shown::Downtime => "dt",
            Shown::State(s) => s.token(),
        }
    }

    /// Upper-case name for tooltips.
    pub(super) fn name(self) -> &'static str {
        match self {
            Shown::Downtime => "DOWNTIME",
            Shown::State(CellState::Current(s)) => s.name(),
            Shown::State(CellState::Missing) => "MISSING",
            Shown::State(CellState::NoResult) => "NO RESULT",
        }
    }

    /// Best of a site's instances (redundancy: one good CE is enough), as the matrix ranks
    /// them, with a downtime below every measurement but above stale or absent results.
    pub(super) fn rank(self) -> u8 {
        match self {
            Shown::State(CellState::Current(Status::Ok)) => 8,
            Shown::State(CellState::Current(Status::Warning)) => 7,
            Shown::State(CellState::Current(Status::Critical)) => 6,
            Shown::State(CellState::Current(Status::Unknown)) => 5,
            Shown::State(CellState::Current(Status::Standby)) => 4,
            Shown::Downtime => 3,
            Shown::State(CellState::Missing) => 2,
            Shown::State(CellState::NoResult) => 1,
        }
    }
}

/// One rendered cell.
#[derive(Debug, Clone)]
pub(super) struct CellView {
    pub(super) shown: Shown,
    /// Latest result to link to.
    pub(super) result_id: Option<i64>,
    /// Tooltip: status, host, age, summary.
    pub(super) title: String,
    /// A mark beside the token: `✓` acknowledged, `~` flapping.
    pub(super) mark: Option<&'static str>,
}

impl CellView {
    pub(super) fn of(
        cell: &Cell,
        hostname: &str,
        downtime: Option<&Downtime>,
        instances: usize,
    ) -> Self {
        let shown = if downtime.is_some() {
            Shown::Downtime
        } else {
            Shown::State(cell.state)
        };
        let mut title = format!("{} · {hostname}", shown.name());
        if let Some(a) = cell.age_seconds {
            let _ = write!(title, " · {} ago", age(a));
        }
        if let Some(d) = downtime {
            let _ = write!(title, "\ndowntime until {}: {}", utc(d.end_ms), d.reason);
        }
        if cell.state == CellState::Missing {
            if let Some(s) = cell.last_status {
                let _ = write!(title, "\nlast result {s}, older than its freshness window");
            }
        }
        if let Some(s) = &cell.summary {
            let _ = write!(title, "\n{s}");
        }
        if instances > 1 {
            let _ = write!(title, "\n(best of {instances} instances)");
        }
        CellView {
            shown,
            result_id: cell.result_id,
            title,
            mark: None,
        }
    }

    /// Marks an acknowledged (with its comment in the tooltip) or flapping cell.
    pub(super) fn mark_notify(
        &mut self,
        notify: &crate::notify::NotifierView,
        key: &CellKey,
        now: i64,
    ) {
        if notify.is_flapping(key) {
            self.mark = Some("~");
            self.title.push_str("\nflapping");
        }
        if let Some(a) = notify.acks.covering(key, now).first() {
            self.mark = Some("✓");
            let _ = write!(self.title, "\nacknowledged by {}: {}", a.author, a.comment);
        }
    }
}

/// The current outage covering an instance, if any.
pub(super) fn outage_of<'a>(
    downtimes: &'a [Downtime],
    site: &str,
    hostname: &str,
    flavour: &str,
) -> Option<&'a Downtime> {
    downtimes
        .iter()
        .find(|d| d.outage && d.covers(site, hostname, flavour))
}

/// Downtimes overlapping `[since, until)`: the configuration's and the store's (imported).
pub(super) async fn downtimes_between(
    store: &dyn ResultStore,
    config: &Config,
    since: i64,
    until: i64,
) -> Result<Vec<Downtime>, StoreError> {
    let mut all = store.downtimes(since, until).await?;
    all.extend(
        config
            .downtimes
            .iter()
            .filter(|d| d.start_ms < until && d.end_ms > since)
            .cloned(),
    );
    Ok(all)
}
