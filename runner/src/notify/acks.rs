//! Acknowledgements: a known problem (a cell, a service or a whole site) with a comment, an
//! author and an optional expiry. They live in the result store (`ResultStore::add_acks`), so
//! `gridprobe ack`, the API, the dashboard and every `serve` of a shared schedule see the same
//! ones; [`AckStore`] keeps the engine's copy, re-read every [`REFRESH`] and after each change
//! made through it. An `acks.json` of an older release is moved into the store once
//! ([`migrate_file`]).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridprobe_probes::Status;
use gridprobe_results::{CellKey, ResultStore, StoreError};

pub use gridprobe_results::notify::Ack;

/// How often `serve` re-reads the acknowledgements (those made through another instance or
/// `gridprobe ack` take effect within this).
pub const REFRESH: Duration = Duration::from_secs(2);

/// Errors reading or writing acknowledgements.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// The store refused.
    #[error("acknowledgements: {0}")]
    Store(#[from] StoreError),
    /// An older release's `acks.json` could not be moved into the store.
    #[error("acknowledgements file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The acknowledgements in the store, with a copy for synchronous readers (the engine's
/// decisions, the matrix).
#[derive(Debug)]
pub struct AckStore {
    store: Arc<dyn ResultStore>,
    cache: Mutex<Vec<Ack>>,
}

impl AckStore {
    /// The acks of a store (the copy is empty until [`AckStore::refresh`]).
    pub fn new(store: Arc<dyn ResultStore>) -> AckStore {
        AckStore {
            store,
            cache: Mutex::new(Vec::new()),
        }
    }

    /// Re-reads the acks in force from the store; returns them.
    pub async fn refresh(&self, now_ms: i64) -> Result<Vec<Ack>, AckError> {
        let acks = self.store.acks(now_ms).await?;
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = acks.clone();
        Ok(acks)
    }

    /// The acks as last read (expired ones included until the next refresh).
    pub fn all(&self) -> Vec<Ack> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The acks in force that cover a cell, as last read.
    pub fn covering(&self, cell: &CellKey, now_ms: i64) -> Vec<Ack> {
        self.all()
            .into_iter()
            .filter(|a| a.active(now_ms) && a.covers(cell))
            .collect()
    }

    /// Stores an ack (and forgets expired ones).
    pub async fn add(&self, ack: Ack, now_ms: i64) -> Result<(), AckError> {
        self.store.add_acks(&[ack], now_ms).await?;
        self.refresh(now_ms).await?;
        Ok(())
    }

    /// Ends acks by id; returns how many there were.
    pub async fn remove(&self, ids: &[String], now_ms: i64) -> Result<usize, AckError> {
        let n = self.store.remove_acks(ids).await?;
        self.refresh(now_ms).await?;
        Ok(n)
    }

    /// The acks a cell's new status ends (see [`ending`]), as last read.
    pub fn ending(
        &self,
        cell: &CellKey,
        status: Status,
        now_ms: i64,
        still_broken: &dyn Fn(&Ack) -> bool,
    ) -> Vec<String> {
        ending(&self.covering(cell, now_ms), status, still_broken)
    }
}

/// Of the acks covering a cell, those its new status ends: recovery ends every ack covering
/// only that cell (and wider ones once `still_broken` finds nothing else broken in their
/// scope); a different problem status ends a non-sticky cell ack.
pub fn ending(
    covering: &[Ack],
    status: Status,
    still_broken: &dyn Fn(&Ack) -> bool,
) -> Vec<String> {
    covering
        .iter()
        .filter(|a| {
            if status == Status::Ok {
                !still_broken(a)
            } else {
                let cell_scope = a.hostname.is_some() && a.metric.is_some();
                cell_scope && !a.sticky && a.status.as_deref().is_some_and(|s| s != status.name())
            }
        })
        .map(|a| a.id.clone())
        .collect()
}

/// Moves an older release's `<dir>/acks.json` into the store (ids already there are kept),
/// then renames it `acks.json.migrated`, so it is read once and stays for the operator to
/// look at. Returns how many acks were new.
pub async fn migrate_file(
    store: &dyn ResultStore,
    dir: &Path,
    now_ms: i64,
) -> Result<usize, AckError> {
    let path = dir.join("acks.json");
    let file_err = |reason: String| AckError::File {
        path: path.display().to_string(),
        reason,
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(file_err(e.to_string())),
    };
    let acks: Vec<Ack> = serde_json::from_slice(&bytes).map_err(|e| {
        file_err(format!(
            "not what gridprobe wrote ({e}); move it away to start"
        ))
    })?;
    let added = store.add_acks(&acks, now_ms).await?;
    std::fs::rename(&path, dir.join("acks.json.migrated")).map_err(|e| file_err(e.to_string()))?;
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridprobe_results::SqliteStore;

    fn cell(h: &str, m: &str) -> CellKey {
        CellKey {
            site: "S".into(),
            hostname: h.into(),
            flavour: "SRM".into(),
            metric: m.into(),
        }
    }

    fn ack(id: &str, h: Option<&str>, m: Option<&str>, sticky: bool) -> Ack {
        Ack {
            id: id.into(),
            site: "S".into(),
            hostname: h.map(str::to_string),
            metric: m.map(str::to_string),
            comment: "known".into(),
            author: "jane".into(),
            created_ms: 0,
            expires_ms: Some(1000),
            sticky,
            status: Some("CRITICAL".into()),
        }
    }

    #[test]
    fn acks_end_on_recovery_and_change_unless_sticky() {
        let all = [
            ack("c", Some("h"), Some("m"), false),
            ack("s", Some("h"), Some("m2"), true),
            ack("site", None, None, false),
        ];
        let nothing_else = |_: &Ack| false;
        let covering =
            |c: &CellKey| -> Vec<Ack> { all.iter().filter(|a| a.covers(c)).cloned().collect() };
        assert_eq!(
            ending(&covering(&cell("h", "m")), Status::Warning, &nothing_else),
            vec!["c"]
        );
        assert!(ending(&covering(&cell("h", "m2")), Status::Warning, &nothing_else).is_empty());
        let other_broken = |a: &Ack| a.hostname.is_none();
        assert_eq!(
            ending(&covering(&cell("h", "m2")), Status::Ok, &other_broken),
            vec!["s"]
        );
    }

    #[tokio::test]
    async fn an_older_acks_file_moves_into_the_store_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ResultStore> =
            Arc::new(SqliteStore::open(&dir.path().join("s.sqlite")).unwrap());
        let list = vec![
            ack("c", Some("h"), Some("m"), false),
            ack("site", None, None, true),
        ];
        std::fs::write(
            dir.path().join("acks.json"),
            serde_json::to_vec(&list).unwrap(),
        )
        .unwrap();
        assert_eq!(
            migrate_file(store.as_ref(), dir.path(), 10).await.unwrap(),
            2
        );
        assert_eq!(
            migrate_file(store.as_ref(), dir.path(), 10).await.unwrap(),
            0
        );
        assert!(dir.path().join("acks.json.migrated").exists());
        let acks = AckStore::new(store.clone());
        assert_eq!(acks.refresh(10).await.unwrap(), list);
        assert_eq!(acks.covering(&cell("h", "m"), 10).len(), 2);
        assert_eq!(acks.covering(&cell("h", "m"), 1000).len(), 0, "expired");
        assert_eq!(acks.remove(&["c".into()], 10).await.unwrap(), 1);
        assert_eq!(acks.all().len(), 1);
        std::fs::write(dir.path().join("acks.json"), b"{not json").unwrap();
        let e = migrate_file(store.as_ref(), dir.path(), 10)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("acks.json"), "{e}");
    }
}
