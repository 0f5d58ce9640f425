//! Acknowledgements: a known problem (a cell, a service or a whole site) with a comment, an
//! author and an optional expiry. Kept durably in `<spool_dir>/notify/acks.json` (written to a
//! temporary file, fsynced and renamed, under a `flock`), so `gridprobe ack`, the API and the
//! dashboard share them with a running `serve`, which re-reads the file when it changes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use gridprobe_probes::Status;
use gridprobe_results::CellKey;
use serde::{Deserialize, Serialize};

/// One acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Its id (for removal).
    pub id: String,
    /// The site.
    pub site: String,
    /// The service's host name; none: the whole site.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The metric; none: the whole service (or site).
    #[serde(default)]
    pub metric: Option<String>,
    /// Why.
    pub comment: String,
    /// Who.
    pub author: String,
    /// When (ms).
    pub created_ms: i64,
    /// Ends at (ms); none: at recovery.
    #[serde(default)]
    pub expires_ms: Option<i64>,
    /// Kept across WARNING↔CRITICAL (otherwise a change of problem status ends it).
    #[serde(default)]
    pub sticky: bool,
    /// The status acknowledged (for a cell): a non-sticky ack ends when it changes.
    #[serde(default)]
    pub status: Option<String>,
}

impl Ack {
    /// Whether the ack covers a cell.
    pub fn covers(&self, cell: &CellKey) -> bool {
        self.site == cell.site
            && self.hostname.as_deref().is_none_or(|h| h == cell.hostname)
            && self.metric.as_deref().is_none_or(|m| m == cell.metric)
    }

    /// Whether it is still in force at `now_ms`.
    pub fn active(&self, now_ms: i64) -> bool {
        self.expires_ms.is_none_or(|e| now_ms < e)
    }

    /// What it covers, in words.
    pub fn scope(&self) -> String {
        match (&self.hostname, &self.metric) {
            (Some(h), Some(m)) => format!("{} {h} {m}", self.site),
            (Some(h), None) => format!("{} {h}", self.site),
            (None, Some(m)) => format!("{} (every service) {m}", self.site),
            (None, None) => format!("{} (whole site)", self.site),
        }
    }
}

/// Errors reading or writing the acks file.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// The file system refused.
    #[error("acknowledgements file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not what gridprobe writes.
    #[error("acknowledgements file {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The acks file, cached while it does not change.
#[derive(Debug)]
pub struct AckStore {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, Vec<Ack>)>,
}

impl AckStore {
    /// The acks of the notification directory `dir`.
    pub fn new(dir: &Path) -> AckStore {
        AckStore {
            path: dir.join("acks.json"),
            cache: Mutex::new((None, Vec::new())),
        }
    }

    fn io(&self, source: std::io::Error) -> AckError {
        AckError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn read(&self) -> Result<Vec<Ack>, AckError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AckError::Damaged {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Every ack on file (expired ones included until the next change), re-read when the file
    /// changed.
    pub fn all(&self) -> Vec<Ack> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != mtime || mtime.is_none() {
            match self.read() {
                Ok(v) => *cache = (mtime, v),
                Err(e) => tracing::warn!(error = %e, "acknowledgements not re-read"),
            }
        }
        cache.1.clone()
    }

    /// The acks in force that cover a cell.
    pub fn covering(&self, cell: &CellKey, now_ms: i64) -> Vec<Ack> {
        self.all()
            .into_iter()
            .filter(|a| a.active(now_ms) && a.covers(cell))
            .collect()
    }

    /// Changes the file under its lock: `f` edits the list; expired acks are dropped.
    pub fn update(&self, now_ms: i64, f: impl FnOnce(&mut Vec<Ack>)) -> Result<Vec<Ack>, AckError> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let lock_path = self.path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io(e))?;
        // SAFETY: flock on a descriptor this function owns; released when `lock` is dropped.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(self.io(std::io::Error::last_os_error()));
        }
        let mut acks = self.read()?;
        acks.retain(|a| a.active(now_ms));
        f(&mut acks);
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&acks).map_err(|e| AckError::Damaged {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut file = std::fs::File::create(&tmp).map_err(|e| self.io(e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = (mtime, acks.clone());
        Ok(acks)
    }

    /// Ends the acks a cell's new status ends: recovery ends every ack covering only that cell
    /// (and wider ones once `still_broken` finds nothing else broken in their scope); a
    /// different problem status ends a non-sticky cell ack.
    pub fn on_status(
        &self,
        cell: &CellKey,
        status: Status,
        now_ms: i64,
        still_broken: &dyn Fn(&Ack) -> bool,
    ) {
        let covering = self.covering(cell, now_ms);
        let ends: Vec<String> = covering
            .iter()
            .filter(|a| {
                if status == Status::Ok {
                    !still_broken(a)
                } else {
                    let cell_scope = a.hostname.is_some() && a.metric.is_some();
                    cell_scope
                        && !a.sticky
                        && a.status.as_deref().is_some_and(|s| s != status.name())
                }
            })
            .map(|a| a.id.clone())
            .collect();
        if ends.is_empty() {
            return;
        }
        if let Err(e) = self.update(now_ms, |acks| acks.retain(|a| !ends.contains(&a.id))) {
            tracing::warn!(error = %e, "ended acknowledgements not written");
        } else {
            tracing::info!(cell = ?cell, ended = ends.len(), "acknowledgements ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn acks_end_on_recovery_expiry_and_change_unless_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let store = AckStore::new(dir.path());
        store
            .update(0, |a| {
                a.push(ack("c", Some("h"), Some("m"), false));
                a.push(ack("s", Some("h"), Some("m2"), true));
                a.push(ack("site", None, None, false));
            })
            .unwrap();
        assert_eq!(store.covering(&cell("h", "m"), 10).len(), 2);
        assert_eq!(store.covering(&cell("h", "m"), 1000).len(), 0, "expired");
        let nothing_else = |_: &Ack| false;
        store.on_status(&cell("h", "m"), Status::Warning, 10, &nothing_else);
        store.on_status(&cell("h", "m2"), Status::Warning, 10, &nothing_else);
        let ids: Vec<_> = store.all().into_iter().map(|a| a.id).collect();
        assert_eq!(ids, vec!["s", "site"]);
        let other_broken = |a: &Ack| a.hostname.is_none();
        store.on_status(&cell("h", "m2"), Status::Ok, 10, &other_broken);
        let ids: Vec<_> = store.all().into_iter().map(|a| a.id).collect();
        assert_eq!(ids, vec!["site"]);
        // A second store (another process) sees the file.
        assert_eq!(AckStore::new(dir.path()).all().len(), 1);
    }
}
