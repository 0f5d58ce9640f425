//! The engine's memory in the result store, shared by every `serve` of a shared schedule:
//! one versioned entry per cell (`cell/<json key>`: its [`CellTrack`]), per site
//! (`site/<name>`: the 24-hour status last told) and per digest rule (`digest/<index>`: the
//! last day sent). Every change is a compare-and-set on the version the instance read, so a
//! decision (a problem, a recovery, a reminder, a site status change, a digest) is taken by
//! exactly one instance; the loser re-reads the entry and decides again from it.

use std::path::Path;

use gridprobe_results::notify::{StateEntry, StatePut};
use gridprobe_results::{CellKey, ResultStore, StoreError};

use super::state::{CellTrack, Tracker};

/// Key prefix of the cells' tracks.
pub const CELL: &str = "cell/";
/// Key prefix of the sites' last told statuses.
pub const SITE: &str = "site/";
/// Key prefix of the digests' last days.
pub const DIGEST: &str = "digest/";

/// A cell's key: its four names as a JSON array (any character allowed in a name).
pub fn cell_key(c: &CellKey) -> String {
    let parts = [&c.site, &c.hostname, &c.flavour, &c.metric];
    format!(
        "{CELL}{}",
        serde_json::to_string(&parts).unwrap_or_default()
    )
}

/// The cell of a `cell/` key.
pub fn parse_cell_key(key: &str) -> Option<CellKey> {
    let [site, hostname, flavour, metric]: [String; 4] =
        serde_json::from_str(key.strip_prefix(CELL)?).ok()?;
    Some(CellKey {
        site,
        hostname,
        flavour,
        metric,
    })
}

/// A cell entry's cell and track; `None` (logged) when it is not one.
pub fn decode(e: &StateEntry) -> Option<(CellKey, CellTrack)> {
    let cell = parse_cell_key(&e.key)?;
    match serde_json::from_str(&e.value) {
        Ok(t) => Some((cell, t)),
        Err(err) => {
            tracing::warn!(key = %e.key, error = %err, "unreadable notification state entry ignored");
            None
        }
    }
}

/// A track as stored.
pub fn encode(t: &CellTrack) -> String {
    serde_json::to_string(t).unwrap_or_default()
}

/// The cells flapping now, from the store (for `gridprobe problems`).
pub async fn flapping_cells(store: &dyn ResultStore) -> Result<Vec<CellKey>, StoreError> {
    Ok(store
        .notify_state(CELL)
        .await?
        .iter()
        .filter_map(decode)
        .filter(|(_, t)| t.flapping)
        .map(|(c, _)| c)
        .collect())
}

/// Moves an older release's `<dir>/state.json` (the engine's memory) into the store: a cell
/// the store already knows keeps what the store says. Renames it `state.json.migrated`.
pub async fn migrate_state(store: &dyn ResultStore, dir: &Path) -> Result<usize, String> {
    let path = dir.join("state.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    // Unreadable memory costs at most a repeated notification: start afresh.
    let saved: Vec<(CellKey, CellTrack)> = serde_json::from_slice(&bytes).unwrap_or_default();
    let tracker = Tracker::restore(saved);
    let puts: Vec<StatePut> = tracker
        .iter()
        .map(|(c, t)| StatePut {
            key: cell_key(c),
            value: encode(t),
            expected: None,
        })
        .collect();
    let mut added = 0;
    for chunk in puts.chunks(500) {
        added += store
            .put_notify_state(chunk)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?
            .iter()
            .filter(|v| v.is_some())
            .count();
    }
    std::fs::rename(&path, dir.join("state.json.migrated"))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // `flapping.json` is now read from the store.
    let _ = std::fs::remove_file(dir.join("flapping.json"));
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_keys_round_trip_any_name() {
        let c = CellKey {
            site: "T2/\"x\"".into(),
            hostname: "h%_".into(),
            flavour: "SRM".into(),
            metric: "a/b".into(),
        };
        assert_eq!(parse_cell_key(&cell_key(&c)), Some(c));
        assert_eq!(parse_cell_key("site/x"), None);
    }
}
