//! What the notification engine keeps in the result store, so that several `serve` instances
//! on one shared schedule see the same acknowledgements, one history, and take each
//! notification decision once: [`Ack`]s, [`SentNotification`]s, and the engine's memory as
//! versioned key/value entries ([`StateEntry`], written with compare-and-set by
//! [`StatePut`]). The engine (runner) decides what the keys and values mean.

use serde::{Deserialize, Serialize};

use crate::store::CellKey;

/// An acknowledgement of a known problem: a cell, a service or a whole site, with a comment,
/// an author and an optional expiry.
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

/// One sent notification, as kept in the history and served by `/api/v1/notifications`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentNotification {
    /// The notification's stable id (unique: it hashes channel and recipient too).
    pub id: String,
    /// The channel.
    pub channel: String,
    /// The e-mail recipient, or empty.
    pub recipient: String,
    /// The site.
    pub site: String,
    /// The subject line.
    pub subject: String,
    /// What happened (`problem`, `recovery`, ...).
    pub event: String,
    /// The worst status.
    pub status: String,
    /// Cells in it.
    pub cells: usize,
    /// When it was decided (ms).
    pub created_ms: i64,
    /// When the server accepted it (ms).
    pub sent_ms: i64,
}

/// One entry of the engine's memory: its value and its version (1 when first written, one
/// more on every change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    /// The key.
    pub key: String,
    /// The value (JSON, the engine's business).
    pub value: String,
    /// Its version.
    pub version: i64,
}

/// A compare-and-set write of one entry: it happens only if the entry is still at `expected`
/// (`None`: only if it does not exist yet), so of two instances deciding from the same
/// version exactly one wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePut {
    /// The key.
    pub key: String,
    /// The new value.
    pub value: String,
    /// The version the writer read, or `None` when it read nothing.
    pub expected: Option<i64>,
}

/// Most history rows one query returns.
pub const MAX_NOTIFICATIONS: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_covers_its_scope_until_it_expires() {
        let cell = CellKey {
            site: "S".into(),
            hostname: "h".into(),
            flavour: "SRM".into(),
            metric: "m".into(),
        };
        let mut a = Ack {
            id: "1".into(),
            site: "S".into(),
            hostname: Some("h".into()),
            metric: None,
            comment: "c".into(),
            author: "a".into(),
            created_ms: 0,
            expires_ms: Some(10),
            sticky: false,
            status: None,
        };
        assert!(a.covers(&cell) && a.active(9) && !a.active(10));
        assert_eq!(a.scope(), "S h");
        a.metric = Some("other".into());
        assert!(!a.covers(&cell));
    }
}
