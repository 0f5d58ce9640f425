//! Runs of equal results per cell and closed day, kept in the PostgreSQL store: the cache that
//! SQLite keeps in `sqlite/days.rs` (same encoding, same answers), safe with several gridprobe
//! processes on one database.
//!
//! The first report that needs a closed day (or `serve`'s upkeep) builds it: it scans the
//! day's final results once, folds each cell's results into runs (`crate::day_runs`) and stores
//! them in `cell_day_runs`, marking the day built in `report_days`.
//!
//! Several instances:
//! * **one builder per day**: a builder holds a transaction-scoped advisory lock on the day
//!   (keyed by the schema and the day); a second one waits, then finds the day built and reads
//!   it.
//! * **no lost updates**: a day's row in `report_days` carries a `generation` that every late
//!   result bumps, in the transaction that writes the result ([`invalidate`]). A builder reads
//!   the generation before its scan and marks the day built *at that generation* only if it is
//!   still current when it commits (the marking upsert waits for a writer holding the row);
//!   a day whose generation moved is built again by the next report. A day is cached exactly
//!   when `built_generation = generation`.
//! * **retention**: builders hold a shared advisory lock of the schema, and [`forget_before`]
//!   takes it exclusively after the last deleted chunk, so a day built from results that
//!   retention was deleting is forgotten too.
//!
//! A report reads in one `REPEATABLE READ` snapshot: cells, the result before the period, raw
//! head and tail, and the cached days; a day that is not cached in that snapshot (a late result
//! landed since it was built) is folded from its results there and then.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::{Object, Transaction};
use futures::{pin_mut, TryStreamExt};
use gridprobe_probes::Status;
use tokio_postgres::types::ToSql;
use tokio_postgres::IsolationLevel;

use super::connect::query_err;
use super::rows::pg_opt;
use crate::day_runs::{
    closed_days, day_of, decode, encode, push_point, Assembly, DayRun, DAY_MS, SETTLE_MS,
};
use crate::store::{CellFilter, CellKey, CellRuns, StoreError};

/// The schema of the cache (a migration of `schema.rs`). Keyed by day first: a report reads a
/// range of days for every cell.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE report_days (
    day_ms BIGINT PRIMARY KEY,
    -- Bumped by every late result of the day (`days::invalidate`).
    generation BIGINT NOT NULL DEFAULT 0,
    -- The generation the day's `cell_day_runs` were built at; NULL: not built.
    built_generation BIGINT
);
CREATE TABLE cell_day_runs (
    day_ms BIGINT NOT NULL,
    cell_id BIGINT NOT NULL,
    runs BYTEA NOT NULL,
    PRIMARY KEY (day_ms, cell_id)
);
"#;

/// First key of the shared (builders) / exclusive (retention) advisory lock; the second is the
/// schema's hash, so stores in different schemas do not wait for each other.
const RETENTION_LOCK_CLASS: i32 = 0x6772;

/// The advisory lock of one day of this schema (a single 64-bit key: schema hash, day index).
const DAY_LOCK: &str = "SELECT pg_advisory_xact_lock(\
     (hashtext(coalesce(current_schema(), ''))::bigint << 32) | ($1::bigint & 4294967295))";

/// Every final result started in `[from, to)`, in time order.
const FINALS_IN_RANGE: &str = "SELECT cell_id, started_at_ms, status FROM results \
     WHERE started_at_ms >= $1 AND started_at_ms < $2 AND final \
     ORDER BY started_at_ms, id";

/// Marks the days of late results (final results starting in a closed day) as changed, inside
/// the writer's transaction: their cached runs are rebuilt by the next report that needs them.
/// This is the one place where the PostgreSQL cache is invalidated; anything else that changes
/// the results of a closed day (a recomputation, a repair) must call it in its transaction.
pub(crate) async fn invalidate(
    tx: &Transaction<'_>,
    starts: impl Iterator<Item = i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let open_from = day_of(now_ms.saturating_sub(SETTLE_MS));
    let mut days: Vec<i64> = starts.filter(|t| *t < open_from).map(day_of).collect();
    if days.is_empty() {
        return Ok(());
    }
    // Sorted: writers lock the rows in one order and cannot deadlock on them.
    days.sort_unstable();
    days.dedup();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO report_days (day_ms, generation) SELECT unnest($1::int8[]), 1 \
             ON CONFLICT (day_ms) DO UPDATE SET generation = report_days.generation + 1",
        )
        .await
        .map_err(query_err)?;
    tx.execute(&stmt, &[&days]).await.map_err(query_err)?;
    Ok(())
}

/// Drops cached days that retention cut into (`cutoff_ms` and before), after the results went:
/// waits for builders running now, whose days are dropped too.
pub(super) async fn forget_before(client: &mut Object, cutoff_ms: i64) -> Result<(), StoreError> {
    let first_kept = day_of(cutoff_ms).saturating_add(DAY_MS);
    let tx = client.transaction().await.map_err(query_err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))",
        &[&RETENTION_LOCK_CLASS],
    )
    .await
    .map_err(query_err)?;
    tx.execute("DELETE FROM report_days WHERE day_ms < $1", &[&first_kept])
        .await
        .map_err(query_err)?;
    tx.execute(
        "DELETE FROM cell_day_runs WHERE day_ms < $1",
        &[&first_kept],
    )
    .await
    .map_err(query_err)?;
    tx.commit().await.map_err(query_err)
}

/// The cached days of `[from, to)`.
async fn cached_days(
    client: &impl deadpool_postgres::GenericClient,
    from: i64,
    to: i64,
) -> Result<HashSet<i64>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT day_ms FROM report_days WHERE day_ms >= $1 AND day_ms < $2 \
             AND built_generation = generation",
        )
        .await
        .map_err(query_err)?;
    client
        .query(&stmt, &[&from, &to])
        .await
        .map_err(query_err)?
        .iter()
        .map(|r| r.try_get::<_, i64>(0).map_err(query_err))
        .collect()
}

/// The days of `[from, to)` (day starts) that hold at least one result, in order: one probe
/// of the time index per such day (a recursive query, one round trip), so an empty stretch of
/// any length costs nothing.
async fn data_days(
    client: &impl deadpool_postgres::GenericClient,
    from: i64,
    to: i64,
) -> Result<Vec<i64>, StoreError> {
    if from >= to {
        return Ok(Vec::new());
    }
    let stmt = client
        .prepare_cached(
            "WITH RECURSIVE d (t) AS ( \
                 SELECT (SELECT min(started_at_ms) FROM results \
                         WHERE started_at_ms >= $1 AND started_at_ms < $2) \
                 UNION ALL \
                 SELECT (SELECT min(started_at_ms) FROM results \
                         WHERE started_at_ms >= d.t - ((d.t % 86400000) + 86400000) % 86400000 \
                                                + 86400000 \
                           AND started_at_ms < $2) \
                 FROM d WHERE d.t IS NOT NULL) \
             SELECT t FROM d WHERE t IS NOT NULL",
        )
        .await
        .map_err(query_err)?;
    let mut days: Vec<i64> = client
        .query(&stmt, &[&from, &to])
        .await
        .map_err(query_err)?
        .iter()
        .map(|r| r.try_get::<_, i64>(0).map(day_of).map_err(query_err))
        .collect::<Result<_, _>>()?;
    days.dedup();
    Ok(days)
}

/// The closed days of `[since, until)` that hold results and are not cached (those a report
/// would fold from the results).
pub(super) async fn missing_days(
    client: &Object,
    since_ms: i64,
    until_ms: i64,
    now_ms: i64,
) -> Result<Vec<i64>, StoreError> {
    let (first_day, days_end) = closed_days(since_ms, until_ms, now_ms);
    if first_day >= days_end {
        return Ok(Vec::new());
    }
    let cached = cached_days(client, first_day, days_end).await?;
    Ok(data_days(client, first_day, days_end)
        .await?
        .into_iter()
        .filter(|d| !cached.contains(d))
        .collect())
}

/// Every cell's runs of one day, from the results (streamed: a day of a big VO is a million
/// rows).
async fn build_day(
    client: &impl deadpool_postgres::GenericClient,
    day_ms: i64,
) -> Result<HashMap<i64, Vec<DayRun>>, StoreError> {
    let mut days: HashMap<i64, Vec<DayRun>> = HashMap::new();
    scan_range(
        client,
        day_ms,
        day_ms.saturating_add(DAY_MS),
        |cell, t, st| push_point(days.entry(cell).or_default(), t, st),
    )
    .await?;
    Ok(days)
}

/// Every final result started in `[from, to)`, in time order, as (cell id, start, status).
async fn scan_range(
    client: &impl deadpool_postgres::GenericClient,
    from: i64,
    to: i64,
    mut each: impl FnMut(i64, i64, Status),
) -> Result<(), StoreError> {
    if from >= to {
        return Ok(());
    }
    let stmt = client
        .prepare_cached(FINALS_IN_RANGE)
        .await
        .map_err(query_err)?;
    let rows = client
        .query_raw(&stmt, [from, to])
        .await
        .map_err(query_err)?;
    pin_mut!(rows);
    while let Some(row) = rows.try_next().await.map_err(query_err)? {
        let cell: i64 = row.try_get(0).map_err(query_err)?;
        let t: i64 = row.try_get(1).map_err(query_err)?;
        let status: &str = row.try_get(2).map_err(query_err)?;
        if let Some(status) = Status::from_name(status) {
            each(cell, t, status);
        }
    }
    Ok(())
}

/// Builds and caches one closed day, as its only builder (see the module's notes). Returns
/// whether this call built it (false: it was built already, or has no final results).
pub(super) async fn cache_day(client: &mut Object, day_ms: i64) -> Result<bool, StoreError> {
    let tx = client.transaction().await.map_err(query_err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared($1, hashtext(coalesce(current_schema(), '')))",
        &[&RETENTION_LOCK_CLASS],
    )
    .await
    .map_err(query_err)?;
    let day_index = day_ms.div_euclid(DAY_MS);
    tx.execute(DAY_LOCK, &[&day_index])
        .await
        .map_err(query_err)?;
    // Read after the locks: another builder of this day has committed by now.
    let state = tx
        .query_opt(
            "SELECT generation, built_generation FROM report_days WHERE day_ms = $1",
            &[&day_ms],
        )
        .await
        .map_err(query_err)?;
    let generation: i64 = match &state {
        Some(row) => {
            let generation: i64 = row.try_get(0).map_err(query_err)?;
            let built: Option<i64> = row.try_get(1).map_err(query_err)?;
            if built == Some(generation) {
                tx.commit().await.map_err(query_err)?;
                return Ok(false);
            }
            generation
        }
        None => 0,
    };
    let built = build_day(&tx, day_ms).await?;
    if built.is_empty() {
        // A day without final results is not marked: a read over an empty stretch never
        // grows the store.
        tx.commit().await.map_err(query_err)?;
        return Ok(false);
    }
    let mut cells: Vec<i64> = Vec::with_capacity(built.len());
    let mut blobs: Vec<Vec<u8>> = Vec::with_capacity(built.len());
    for (cell, runs) in &built {
        cells.push(*cell);
        blobs.push(encode(day_ms, runs));
    }
    tx.execute("DELETE FROM cell_day_runs WHERE day_ms = $1", &[&day_ms])
        .await
        .map_err(query_err)?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO cell_day_runs (day_ms, cell_id, runs) \
             SELECT $1, * FROM unnest($2::int8[], $3::bytea[])",
        )
        .await
        .map_err(query_err)?;
    tx.execute(&insert, &[&day_ms, &cells, &blobs])
        .await
        .map_err(query_err)?;
    // Built at `generation`, if a late result has not moved it meanwhile (the upsert waits for
    // a writer holding the row, then sees its bump).
    let marked = tx
        .execute(
            "INSERT INTO report_days (day_ms, generation, built_generation) VALUES ($1, $2, $2) \
             ON CONFLICT (day_ms) DO UPDATE SET built_generation = excluded.built_generation \
             WHERE report_days.generation = excluded.generation",
            &[&day_ms, &generation],
        )
        .await
        .map_err(query_err)?;
    tx.commit().await.map_err(query_err)?;
    Ok(marked == 1)
}

/// How far before a period a report looks for each cell's last result in one scan (cells
/// with none in it are probed one by one): an hour holds a result of every cell probed at
/// least hourly.
const PRIOR_WINDOW_MS: i64 = 3_600_000;

/// `ResultStore::run_timelines` for PostgreSQL: closed days from the cache, the rest of the
/// period (and days not cached in this snapshot) from the results, all in one snapshot.
pub(super) async fn run_timelines(
    client: &mut Object,
    since_ms: i64,
    until_ms: i64,
    filter: &CellFilter,
    merge_gap_ms: i64,
    now_ms: i64,
) -> Result<Vec<CellRuns>, StoreError> {
    let merge_gap = merge_gap_ms.max(0);
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(query_err)?;
    // The cells with a final result (as `timelines` lists them), each led by its last final
    // result before the period. Most cells have one in the hour before the period: those come
    // from one scan of that hour through the time index (rows written together sit together
    // in the table); only the others take a probe of the per-cell index, whose heap fetch is
    // a random page read per cell (measured as most of a steady-state report at 10,000 cells).
    let cells_stmt = tx
        .prepare_cached(
            "WITH recent AS ( \
                 SELECT DISTINCT ON (cell_id) cell_id, started_at_ms, status FROM results \
                 WHERE started_at_ms >= $4 AND started_at_ms < $1 AND final \
                 ORDER BY cell_id, started_at_ms DESC, id DESC) \
             SELECT c.id, c.site, c.hostname, c.flavour, c.metric, \
                 coalesce(h.started_at_ms, p.started_at_ms), coalesce(h.status, p.status) \
             FROM latest l JOIN cells c ON c.id = l.cell_id \
             LEFT JOIN recent h ON h.cell_id = c.id LEFT JOIN LATERAL ( \
                 SELECT r.started_at_ms, r.status FROM results r \
                 WHERE h.cell_id IS NULL AND r.cell_id = c.id AND r.started_at_ms < $4 \
                   AND r.final \
                 ORDER BY r.started_at_ms DESC, r.id DESC LIMIT 1) p ON true \
             WHERE ($2::text IS NULL OR c.site = $2) AND ($3::text IS NULL OR c.flavour = $3) \
             ORDER BY c.site, c.hostname, c.flavour, c.metric",
        )
        .await
        .map_err(query_err)?;
    let (site, flavour) = (pg_opt(&filter.site), pg_opt(&filter.flavour));
    let recent_from = since_ms.saturating_sub(PRIOR_WINDOW_MS);
    let params: [&(dyn ToSql + Sync); 4] = [&since_ms, &site, &flavour, &recent_from];
    let mut cells: Vec<Assembly> = Vec::new();
    let mut slot: HashMap<i64, usize> = HashMap::new();
    for row in tx.query(&cells_stmt, &params).await.map_err(query_err)? {
        let id: i64 = row.try_get(0).map_err(query_err)?;
        let mut cell = Assembly {
            key: CellKey {
                site: row.try_get(1).map_err(query_err)?,
                hostname: row.try_get(2).map_err(query_err)?,
                flavour: row.try_get(3).map_err(query_err)?,
                metric: row.try_get(4).map_err(query_err)?,
            },
            runs: Vec::new(),
        };
        let prior_t: Option<i64> = row.try_get(5).map_err(query_err)?;
        let prior_status: Option<&str> = row.try_get(6).map_err(query_err)?;
        if let (Some(t), Some(st)) = (prior_t, prior_status.and_then(Status::from_name)) {
            cell.push(t, t, st, merge_gap);
        }
        slot.insert(id, cells.len());
        cells.push(cell);
    }

    let (first_day, days_end) = closed_days(since_ms, until_ms, now_ms);
    if first_day < days_end {
        read_raw(&tx, since_ms, first_day, &slot, &mut cells, merge_gap).await?;
        read_days(&tx, first_day, days_end, &slot, &mut cells, merge_gap).await?;
        read_raw(&tx, days_end, until_ms, &slot, &mut cells, merge_gap).await?;
    } else {
        read_raw(&tx, since_ms, until_ms, &slot, &mut cells, merge_gap).await?;
    }
    tx.commit().await.map_err(query_err)?;
    Ok(cells.into_iter().map(|a| (a.key, a.runs)).collect())
}

/// The final results of `[from, to)` from the results table, appended to their cells.
async fn read_raw(
    tx: &Transaction<'_>,
    from: i64,
    to: i64,
    slot: &HashMap<i64, usize>,
    cells: &mut [Assembly],
    merge_gap: i64,
) -> Result<(), StoreError> {
    scan_range(tx, from, to, |cell, t, st| {
        if let Some(&i) = slot.get(&cell) {
            cells[i].push(t, t, st, merge_gap);
        }
    })
    .await
}

/// The closed days `[from, to)`: cached runs, or the day folded from its results when it is
/// not cached in this snapshot. A run whose internal gap exceeds the merge gap is replaced by
/// that cell's results of the day.
async fn read_days(
    tx: &Transaction<'_>,
    from: i64,
    to: i64,
    slot: &HashMap<i64, usize>,
    cells: &mut [Assembly],
    merge_gap: i64,
) -> Result<(), StoreError> {
    let cached = cached_days(tx, from, to).await?;
    let mut days: Vec<i64> = cached.iter().copied().collect();
    days.extend(data_days(tx, from, to).await?);
    days.sort_unstable();
    days.dedup();
    let day_stmt = tx
        .prepare_cached("SELECT cell_id, runs FROM cell_day_runs WHERE day_ms = $1")
        .await
        .map_err(query_err)?;
    for day in days {
        let mut runs_of_day: Vec<(i64, Vec<DayRun>)> = Vec::new();
        if cached.contains(&day) {
            for row in tx.query(&day_stmt, &[&day]).await.map_err(query_err)? {
                let cell: i64 = row.try_get(0).map_err(query_err)?;
                if !slot.contains_key(&cell) {
                    continue;
                }
                let bytes: &[u8] = row.try_get(1).map_err(query_err)?;
                let runs = decode(day, bytes).ok_or_else(|| {
                    StoreError::Query(format!(
                        "corrupt cached runs of cell {cell} on day {day}: run \
                         `UPDATE report_days SET built_generation = NULL WHERE day_ms = {day}` \
                         to rebuild the day"
                    ))
                })?;
                runs_of_day.push((cell, runs));
            }
        } else {
            let built = build_day(tx, day).await?;
            runs_of_day.extend(built.into_iter().filter(|(c, _)| slot.contains_key(c)));
        }
        for (cell, runs) in runs_of_day {
            let Some(&i) = slot.get(&cell) else {
                continue;
            };
            if runs.iter().any(|r| r.max_gap > merge_gap) {
                read_cell_day(tx, cell, day, &mut cells[i], merge_gap).await?;
            } else {
                for r in runs {
                    cells[i].push(r.start, r.last, r.status, merge_gap);
                }
            }
        }
    }
    Ok(())
}

/// One cell's final results of one day, through the per-cell index.
async fn read_cell_day(
    tx: &Transaction<'_>,
    cell: i64,
    day: i64,
    into: &mut Assembly,
    merge_gap: i64,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT started_at_ms, status FROM results \
             WHERE cell_id = $1 AND started_at_ms >= $2 AND started_at_ms < $3 AND final \
             ORDER BY started_at_ms, id",
        )
        .await
        .map_err(query_err)?;
    let end = day.saturating_add(DAY_MS);
    for row in tx
        .query(&stmt, &[&cell, &day, &end])
        .await
        .map_err(query_err)?
    {
        let t: i64 = row.try_get(0).map_err(query_err)?;
        let status: &str = row.try_get(1).map_err(query_err)?;
        if let Some(st) = Status::from_name(status) {
            into.push(t, t, st, merge_gap);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::postgres::PgStore;
    use crate::store::ResultStore;
    use crate::store_tests::pg::Scratch;
    use crate::store_tests::{hard, result, with_status};

    const MIN: i64 = 60_000;
    /// A closed day of 2024.
    const DAY0: i64 = 19_800 * DAY_MS;

    /// Two cells, every 15 minutes over `days` closed days.
    async fn filled(test: &str, days: i64) -> Option<(Scratch, PgStore)> {
        let scratch = Scratch::new(test).await?;
        let store = PgStore::open_config(scratch.config(), 8).await.unwrap();
        let mut batch = Vec::new();
        for k in 0..(days * 96) {
            for site in ["SITE-A", "SITE-B"] {
                batch.push(hard(result(site, "CE", "m", DAY0 + k * 15 * MIN)));
            }
        }
        store.insert(&batch).await.unwrap();
        Some((scratch, store))
    }

    async fn folded(store: &PgStore, since: i64, until: i64) -> Vec<CellRuns> {
        store
            .timelines(since, until, &CellFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|(k, points)| (k, crate::store::runs_of(&points, 20 * MIN)))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_instances_build_each_day_once() {
        let Some((scratch, store)) = filled("build_each_day_once", 2).await else {
            return;
        };
        // Four instances ask for the same day at once: one builds it, the others wait for it
        // and find it built.
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let other = PgStore::open_config(scratch.config(), 2).await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut client = other.client().await.unwrap();
                cache_day(&mut client, DAY0).await.unwrap()
            }));
        }
        let mut built = 0;
        for t in tasks {
            built += usize::from(t.await.unwrap());
        }
        assert_eq!(built, 1, "exactly one builder");
        let client = store.client().await.unwrap();
        let days = missing_days(&client, DAY0, DAY0 + 2 * DAY_MS, i64::MAX / 2)
            .await
            .unwrap();
        assert_eq!(days, vec![DAY0 + DAY_MS], "day 0 is cached, day 1 not yet");
        // A report builds the rest, and answers as the results do.
        let got = store
            .run_timelines(DAY0, DAY0 + 2 * DAY_MS, &CellFilter::default(), 20 * MIN)
            .await
            .unwrap();
        assert_eq!(got, folded(&store, DAY0, DAY0 + 2 * DAY_MS).await);
        let days = missing_days(&client, DAY0, DAY0 + 2 * DAY_MS, i64::MAX / 2)
            .await
            .unwrap();
        assert!(days.is_empty(), "both days cached: {days:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_result_written_during_a_build_is_not_lost() {
        let Some((scratch, store)) = filled("late_result_during_build", 1).await else {
            return;
        };
        // A writer (another instance) has written a late CRITICAL result into the day and
        // invalidated it, but not committed yet.
        let mut writer = store.client().await.unwrap();
        let late = with_status(
            result("SITE-A", "CE", "m", DAY0 + 41 * 15 * MIN + 1),
            Status::Critical,
            "late",
        );
        let tx = writer.transaction().await.unwrap();
        let (cell,): (i64,) = {
            let row = tx
                .query_one("SELECT id FROM cells WHERE site = 'SITE-A'", &[])
                .await
                .unwrap();
            (row.get(0),)
        };
        tx.execute(
            "INSERT INTO results (cell_id, started_at_ms, duration_ms, attempt, final, vo, kind, \
             status, summary, details, perfdata, \"trigger\") \
             VALUES ($1, $2, 1, 1, true, 'ops', 'tcp', 'CRITICAL', 'late', '', '[]', 'scheduled')",
            &[&cell, &late.started_at_ms],
        )
        .await
        .unwrap();
        invalidate(&tx, [late.started_at_ms].into_iter(), i64::MAX / 2)
            .await
            .unwrap();

        // A builder scans the day (without the late result) and then waits for the writer's
        // row of `report_days`.
        let builder_store = PgStore::open_config(scratch.config(), 2).await.unwrap();
        let builder = tokio::spawn(async move {
            let mut client = builder_store.client().await.unwrap();
            cache_day(&mut client, DAY0).await.unwrap()
        });
        let watcher = scratch.admin().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                     AND query LIKE 'INSERT INTO report_days%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the builder never waited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tx.commit().await.unwrap();
        assert!(
            !builder.await.unwrap(),
            "a day built before the late result must not be marked built"
        );
        // The report follows the late result (and builds the day afresh).
        let got = store
            .run_timelines(DAY0, DAY0 + DAY_MS, &CellFilter::default(), 20 * MIN)
            .await
            .unwrap();
        let want = folded(&store, DAY0, DAY0 + DAY_MS).await;
        assert!(want[0].1.iter().any(|r| r.status == Status::Critical));
        assert_eq!(got, want);
        let client = store.client().await.unwrap();
        assert!(missing_days(&client, DAY0, DAY0 + DAY_MS, i64::MAX / 2)
            .await
            .unwrap()
            .is_empty());
    }
}
