//! Several `gridprobe serve` instances on one schedule.
//!
//! The instances share a database (PostgreSQL) that holds two things:
//! * a **membership lease** per instance, renewed every third of the lease period; an instance
//!   whose lease ran out (crashed, frozen, cut off) is no longer a member, and the others
//!   divide its entries among themselves;
//! * a **claim** per run: before an entry runs for a slot, the instance inserts the row
//!   `(cell, slot)`; the primary key lets exactly one instance win, so a slot runs once even
//!   while instances disagree about who owns what (a lease just expired, a member just joined).
//!
//! Who *should* run an entry is decided without the database: every instance ranks the live
//! members for the cell by a stable hash (rendezvous hashing, [`owner_of`]), so ownership is
//! balanced and only the dead member's entries move when it goes.

use async_trait::async_trait;

use crate::store::{CellKey, StoreError};

/// A member's view of the shared schedule, as the database reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    /// Live members (lease not expired), sorted.
    pub members: Vec<String>,
    /// The database's clock when the view was taken (ms since the epoch).
    pub now_ms: i64,
}

/// One slot to claim: the cell and the start of the interval the run belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotClaim {
    /// The schedule entry's cell.
    pub cell: CellKey,
    /// Start of the slot (ms since the epoch, aligned as the scheduler aligns slots).
    pub slot_ms: i64,
}

/// What several instances sharing one schedule need from their database.
#[async_trait]
pub trait ScheduleCoordinator: Send + Sync {
    /// Renews (or takes) `member`'s lease for `lease_ms` and returns the live members.
    async fn heartbeat(&self, member: &str, lease_ms: i64) -> Result<Membership, StoreError>;

    /// Claims slots for `member`; returns, for each claim in order, whether this member won
    /// it (false: another instance claimed the same slot first).
    async fn claim(&self, member: &str, claims: &[SlotClaim]) -> Result<Vec<bool>, StoreError>;

    /// Gives up `member`'s lease at once (clean shutdown), so the others take over its entries
    /// without waiting for the lease to run out.
    async fn leave(&self, member: &str) -> Result<(), StoreError>;

    /// Deletes claims older than `before_ms` (they only guard slots long past).
    async fn prune_claims(&self, before_ms: i64) -> Result<u64, StoreError>;
}

/// FNV-1a over the parts, each followed by a 0 byte: stable across builds and releases (unlike
/// std's hasher), which ownership needs since every instance must compute the same answer.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The member that owns a cell: the one with the highest hash of (member, cell). When a member
/// goes, only its cells move (each to the member ranked next for it).
pub fn owner_of<'m>(members: &'m [String], cell: &CellKey) -> Option<&'m str> {
    members
        .iter()
        .max_by_key(|m| {
            // Ties (practically impossible) go to the greater name, the same everywhere.
            (
                stable_hash(&[m, &cell.site, &cell.hostname, &cell.flavour, &cell.metric]),
                m.as_str(),
            )
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(i: usize) -> CellKey {
        CellKey {
            site: format!("SITE-{i}"),
            hostname: format!("ce{i}.example.org"),
            flavour: "CE".into(),
            metric: "org.example.Ping".into(),
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ownership_is_balanced_and_only_a_dead_members_cells_move() {
        let three = names(&["a:1", "b:2", "c:3"]);
        let two = names(&["a:1", "b:2"]);
        let mut counts = std::collections::HashMap::new();
        for i in 0..3000 {
            let before = owner_of(&three, &cell(i)).unwrap();
            *counts.entry(before).or_insert(0) += 1;
            let after = owner_of(&two, &cell(i)).unwrap();
            if before != "c:3" {
                assert_eq!(before, after, "cell {i} moved although its owner lives");
            }
        }
        for m in &three {
            let n = counts[m.as_str()];
            assert!((800..1200).contains(&n), "{m} owns {n} of 3000");
        }
    }

    #[test]
    fn no_members_no_owner() {
        assert_eq!(owner_of(&[], &cell(1)), None);
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        // Pinned: instances of different builds must agree on ownership and slot offsets.
        assert_eq!(stable_hash(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(&["a"]), 0x089b_e207_b544_f1e4);
    }
}
