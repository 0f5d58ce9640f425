//! [`ScheduleCoordinator`] on PostgreSQL: the membership leases and slot claims of several
//! `serve` instances sharing one store (tables of migration 3 in `postgres/schema.rs`).
//!
//! Lease times come from the database's clock, so instances on hosts whose clocks disagree
//! still agree on who is alive. Claims are one `INSERT … ON CONFLICT DO NOTHING` per batch:
//! the primary key (cell, slot) decides the winner, with no lock held between statements.

use async_trait::async_trait;

use super::connect::query_err;
use super::rows::pg_text;
use super::PgStore;
use crate::coordination::{Membership, ScheduleCoordinator, SlotClaim};
use crate::store::StoreError;

/// The database's clock in ms since the epoch, as SQL.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

#[async_trait]
impl ScheduleCoordinator for PgStore {
    async fn heartbeat(&self, member: &str, lease_ms: i64) -> Result<Membership, StoreError> {
        let client = self.client().await?;
        let renew = client
            .prepare_cached(&format!(
                "INSERT INTO schedule_members (member, started_at_ms, expires_at_ms) \
                 VALUES ($1, {DB_NOW_MS}, {DB_NOW_MS} + $2) \
                 ON CONFLICT (member) DO UPDATE SET expires_at_ms = excluded.expires_at_ms"
            ))
            .await
            .map_err(query_err)?;
        client
            .execute(&renew, &[&pg_text(member), &lease_ms])
            .await
            .map_err(query_err)?;
        let live = client
            .prepare_cached(&format!(
                "SELECT member, {DB_NOW_MS} FROM schedule_members \
                 WHERE expires_at_ms > {DB_NOW_MS} ORDER BY member"
            ))
            .await
            .map_err(query_err)?;
        let rows = client.query(&live, &[]).await.map_err(query_err)?;
        let mut view = Membership::default();
        for row in rows {
            view.members.push(row.try_get(0).map_err(query_err)?);
            view.now_ms = row.try_get(1).map_err(query_err)?;
        }
        Ok(view)
    }

    async fn claim(&self, member: &str, claims: &[SlotClaim]) -> Result<Vec<bool>, StoreError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let texts = |f: fn(&SlotClaim) -> &str| -> Vec<String> {
            claims.iter().map(|c| pg_text(f(c)).into_owned()).collect()
        };
        let sites = texts(|c| &c.cell.site);
        let hosts = texts(|c| &c.cell.hostname);
        let flavours = texts(|c| &c.cell.flavour);
        let metrics = texts(|c| &c.cell.metric);
        let slots: Vec<i64> = claims.iter().map(|c| c.slot_ms).collect();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "INSERT INTO schedule_slots \
                   (site, hostname, flavour, metric, slot_ms, member, claimed_at_ms) \
                 SELECT k.site, k.hostname, k.flavour, k.metric, k.slot_ms, $6, {DB_NOW_MS} \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
                   WITH ORDINALITY AS k (site, hostname, flavour, metric, slot_ms, i) \
                 ORDER BY k.i \
                 ON CONFLICT DO NOTHING \
                 RETURNING site, hostname, flavour, metric, slot_ms"
            ))
            .await
            .map_err(query_err)?;
        let won = client
            .query(
                &stmt,
                &[
                    &sites,
                    &hosts,
                    &flavours,
                    &metrics,
                    &slots,
                    &pg_text(member),
                ],
            )
            .await
            .map_err(query_err)?;
        let mut won_keys = std::collections::HashSet::with_capacity(won.len());
        for row in &won {
            let key: (String, String, String, String, i64) = (
                row.try_get(0).map_err(query_err)?,
                row.try_get(1).map_err(query_err)?,
                row.try_get(2).map_err(query_err)?,
                row.try_get(3).map_err(query_err)?,
                row.try_get(4).map_err(query_err)?,
            );
            won_keys.insert(key);
        }
        // A claim repeated within the batch wins once: the first occurrence takes it.
        let mut out = Vec::with_capacity(claims.len());
        for i in 0..claims.len() {
            let key = (
                sites[i].clone(),
                hosts[i].clone(),
                flavours[i].clone(),
                metrics[i].clone(),
                slots[i],
            );
            out.push(won_keys.remove(&key));
        }
        Ok(out)
    }

    async fn leave(&self, member: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM schedule_members WHERE member = $1",
                &[&pg_text(member)],
            )
            .await
            .map_err(query_err)?;
        Ok(())
    }

    async fn prune_claims(&self, before_ms: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM schedule_slots WHERE claimed_at_ms < $1",
                &[&before_ms],
            )
            .await
            .map_err(query_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CellKey;
    use crate::store_tests::pg::Scratch;

    fn claim(site: &str, slot_ms: i64) -> SlotClaim {
        SlotClaim {
            cell: CellKey {
                site: site.into(),
                hostname: "ce.example.org".into(),
                flavour: "CE".into(),
                metric: "org.example.Ping".into(),
            },
            slot_ms,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leases_expire_and_each_slot_is_won_once() {
        let Some(scratch) = Scratch::new("leases_and_claims").await else {
            return;
        };
        let a = PgStore::open_config(scratch.config(), 2).await.unwrap();
        let b = PgStore::open_config(scratch.config(), 2).await.unwrap();

        // Membership: both live; a lease that runs out drops its member; leave is immediate.
        a.heartbeat("a", 60_000).await.unwrap();
        let view = b.heartbeat("b", 60_000).await.unwrap();
        assert_eq!(view.members, ["a", "b"]);
        assert!(view.now_ms > 1_600_000_000_000, "{}", view.now_ms);
        b.heartbeat("b", 1).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let view = a.heartbeat("a", 60_000).await.unwrap();
            if view.members == ["a"] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "b's 1 ms lease never ran out"
            );
            tokio::task::yield_now().await;
        }
        a.leave("a").await.unwrap();
        assert!(b.heartbeat("b", 60_000).await.unwrap().members == ["b"]);

        // Claims: the first claim of a slot wins, repeats (in the batch or later) lose.
        let won = a
            .claim(
                "a",
                &[claim("S1", 1000), claim("S2", 1000), claim("S1", 1000)],
            )
            .await
            .unwrap();
        assert_eq!(won, [true, true, false]);
        let won = b
            .claim(
                "b",
                &[claim("S1", 1000), claim("S1", 2000), claim("S\0x", 1000)],
            )
            .await
            .unwrap();
        assert_eq!(won, [false, true, true]);

        // Racing instances: every slot is won exactly once.
        let slots: Vec<SlotClaim> = (0..200).map(|i| claim("RACE", i)).collect();
        let (ra, rb) = tokio::join!(a.claim("a", &slots), b.claim("b", &slots));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(
            ra.iter().zip(&rb).all(|(x, y)| x ^ y),
            "a slot won twice or never"
        );

        assert_eq!(a.prune_claims(i64::MAX).await.unwrap(), 204);
    }
}
