//! Writing: batches encoded off the writing thread and inserted grouped by cell (ids cached
//! once committed), `insert_once` by message id, events, downtimes and retention.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use gridprobe_config::Downtime;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::days;
use super::rows::query_err;
use crate::store::{InsertedOnce, NewResult, StoreError, StoreEvent};

/// Rows deleted per retention transaction, so a big purge never holds the write lock long.
const DELETE_CHUNK: i64 = 10_000;

const INSERT_RESULT: &str = "INSERT INTO results (cell_id, started_at_ms, duration_ms, \
     attempt, final, vo, kind, status, summary, details, perfdata, \"trigger\") \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

// `>=`: of two results with the same start, the one inserted later wins. `first_ms` only ever
// goes down (the walks over the hours rely on no final result starting before it); `min` of
// a NULL (unknown) stays NULL.
const UPSERT_LATEST: &str = "INSERT INTO latest (cell_id, result_id, started_at_ms, first_ms) \
     VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (cell_id) DO UPDATE SET \
     result_id = CASE WHEN excluded.started_at_ms >= latest.started_at_ms \
         THEN excluded.result_id ELSE latest.result_id END, \
     started_at_ms = max(excluded.started_at_ms, latest.started_at_ms), \
     first_ms = min(excluded.first_ms, latest.first_ms)";

/// Cell ids already committed to the store, by cell (the one-string key of
/// [`EncodedRow::cell`]: one heap string to compare per lookup, not four). Cells are never
/// deleted, so an entry stays true; an id is added only once the transaction that created it
/// has committed (a rolled-back insert could hand the same id to another cell later).
pub(super) type CellCache = HashMap<Box<str>, i64>;

/// Cells a transaction looked up or created (same key), for the [`CellCache`] once it has
/// committed.
type NewCells = HashMap<Box<str>, i64>;

/// Locks the connection (or the cell cache); a panic in another operation leaves SQLite itself
/// consistent (its transaction is rolled back on drop), and the cache only ever holds
/// committed cells, so a poisoned mutex is simply taken over.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A range of [`Encoded::text`].
#[derive(Debug, Clone, Copy)]
struct Span(usize, usize);

/// A batch encoded for the blocking pool: the text of every row back to back in one string,
/// the rest in fixed-size rows. Building it replaces a deep copy of the batch (a dozen
/// allocations per result, and as many frees after the write) with one allocation, and
/// encodes the perfdata JSON on the way.
#[derive(Debug, Default)]
pub(super) struct Encoded {
    text: String,
    rows: Vec<EncodedRow>,
}

#[derive(Debug)]
struct EncodedRow {
    /// The cell as one string, `len:site len:hostname len:flavour len:metric` (lengths in
    /// bytes, so it is unambiguous whatever the names hold): the key of the [`CellCache`].
    cell: Span,
    /// Site, host name, flavour and metric (inside `cell`).
    names: [Span; 4],
    /// The cell's id when the cache knew it at encoding (off the writing thread).
    cell_id: Option<i64>,
    vo: Span,
    kind: Span,
    summary: Span,
    details: Span,
    perfdata: Span,
    started_at_ms: i64,
    duration_ms: i64,
    attempt: i64,
    is_final: bool,
    status: &'static str,
    trigger: &'static str,
}

impl Encoded {
    pub(super) fn new<'a>(
        results: impl Iterator<Item = &'a NewResult> + Clone,
        cache: &Mutex<CellCache>,
    ) -> Result<Self, StoreError> {
        // One allocation for the text: its size is known but for the perfdata JSON.
        let (mut rows, mut bytes) = (0, 0);
        for new in results.clone() {
            let r = &new.result;
            rows += 1;
            bytes += [
                &r.site,
                &r.hostname,
                &r.flavour,
                &r.metric,
                &r.vo,
                &r.kind,
                &r.outcome.summary,
                &r.outcome.details,
            ]
            .iter()
            .map(|s| s.len())
            .sum::<usize>()
                + 24
                + 64 * r.outcome.perfdata.len();
        }
        let mut enc = Encoded {
            text: String::with_capacity(bytes),
            rows: Vec::with_capacity(rows),
        };
        let mut json: Vec<u8> = Vec::with_capacity(256);
        for new in results {
            enc.push(new, &mut json)?;
        }
        // Committed cells' ids, looked up here: the lookups (a cache miss or two each) then
        // overlap with the writing of the previous chunk.
        let cache = lock(cache);
        for row in &mut enc.rows {
            row.cell_id = cache.get(&enc.text[row.cell.0..row.cell.1]).copied();
        }
        Ok(enc)
    }

    fn push(&mut self, new: &NewResult, json: &mut Vec<u8>) -> Result<(), StoreError> {
        let r = &new.result;
        let start = self.text.len();
        let mut names = [Span(0, 0); 4];
        for (name, s) in names
            .iter_mut()
            .zip([&r.site, &r.hostname, &r.flavour, &r.metric])
        {
            let mut digits = [0u8; 20];
            let mut n = s.len();
            let mut i = digits.len();
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for d in &digits[i..] {
                self.text.push(char::from(*d));
            }
            self.text.push(':');
            *name = self.add(s);
        }
        let cell = Span(start, self.text.len());
        json.clear();
        serde_json::to_writer(&mut *json, &r.outcome.perfdata)
            .map_err(|e| StoreError::Query(format!("cannot encode perfdata: {e}")))?;
        let json = std::str::from_utf8(json)
            .map_err(|e| StoreError::Query(format!("cannot encode perfdata: {e}")))?;
        let row = EncodedRow {
            cell,
            names,
            cell_id: None,
            vo: self.add(&r.vo),
            kind: self.add(&r.kind),
            summary: self.add(&r.outcome.summary),
            details: self.add(&r.outcome.details),
            perfdata: self.add(json),
            started_at_ms: r.started_at_ms,
            duration_ms: i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
            attempt: i64::from(r.attempt),
            is_final: new.is_final,
            status: r.outcome.status.name(),
            trigger: r.trigger.name(),
        };
        self.rows.push(row);
        Ok(())
    }

    fn add(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        Span(start, self.text.len())
    }

    fn str(&self, s: Span) -> &str {
        &self.text[s.0..s.1]
    }

    /// The cell's names, ordered as [`crate::store::CellKey`] orders.
    fn names(&self, row: &EncodedRow) -> (&str, &str, &str, &str) {
        let [a, b, c, d] = row.names;
        (self.str(a), self.str(b), self.str(c), self.str(d))
    }
}

/// Results encoded per hand-over to the blocking pool (see [`crate::ResultStore::insert`]).
const ENCODE_CHUNK: usize = 1000;

/// Writes a batch in one transaction, its chunks as they arrive (`None` ends the batch; a
/// closed channel before it abandons the batch, which is rolled back).
///
/// Each chunk's rows are inserted grouped by cell, in cell id order (a stable sort, so each
/// cell keeps its input order and its id order): consecutive inserts then land on the same
/// pages of the cell index, which is most of the cost of a large batch, and `latest` is
/// updated once per cell and chunk rather than once per row. Ids are returned in input order.
fn insert_chunks(
    conn: &mut Connection,
    cells: &Mutex<CellCache>,
    chunks: &std::sync::mpsc::Receiver<Option<Encoded>>,
) -> Result<Vec<i64>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    let mut created = NewCells::new();
    let mut ids = Vec::new();
    loop {
        match chunks.recv() {
            Ok(Some(chunk)) => {
                let all: Vec<usize> = (0..chunk.rows.len()).collect();
                ids.extend(insert_rows(&tx, &mut created, &chunk, &all)?);
            }
            Ok(None) => break,
            Err(_) => {
                return Err(StoreError::Query(
                    "result batch abandoned before it was complete".into(),
                ))
            }
        }
    }
    tx.commit().map_err(query_err)?;
    lock(cells).extend(created);
    Ok(ids)
}

/// Writes the results whose message ids are not stored yet, in one transaction; see
/// [`crate::ResultStore::insert_once`]. `message_ids` go with `batch`'s rows.
pub(super) fn insert_once_all(
    conn: &mut Connection,
    cells: &Mutex<CellCache>,
    message_ids: &[String],
    batch: &Encoded,
) -> Result<InsertedOnce, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    let mut fresh: Vec<usize> = Vec::with_capacity(message_ids.len());
    {
        // Claiming the id first also drops a repeat inside the batch itself.
        let mut claim = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO message_ids (message_id, result_id, started_at_ms) \
                 VALUES (?1, 0, ?2)",
            )
            .map_err(query_err)?;
        for (i, (id, row)) in message_ids.iter().zip(&batch.rows).enumerate() {
            if claim
                .execute(params![id, row.started_at_ms])
                .map_err(query_err)?
                == 1
            {
                fresh.push(i);
            }
        }
    }
    let mut created = NewCells::new();
    let ids = insert_rows(&tx, &mut created, batch, &fresh)?;
    {
        let mut link = tx
            .prepare_cached("UPDATE message_ids SET result_id = ?2 WHERE message_id = ?1")
            .map_err(query_err)?;
        for (&i, id) in fresh.iter().zip(&ids) {
            link.execute(params![message_ids[i], id])
                .map_err(query_err)?;
        }
    }
    tx.commit().map_err(query_err)?;
    lock(cells).extend(created);
    Ok(InsertedOnce {
        inserted: fresh.len(),
        duplicates: message_ids.len() - fresh.len(),
    })
}

/// The cell id of each of `rows` (in order). Ids the cache knew at encoding come with the
/// rows; the others are looked up or created here and added to `created` (the transaction's
/// cells, cached once it has committed).
fn resolve_cells(
    tx: &rusqlite::Transaction<'_>,
    created: &mut NewCells,
    batch: &Encoded,
    rows: &[usize],
) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut missing: Vec<usize> = Vec::new();
    for (at, &i) in rows.iter().enumerate() {
        let row = &batch.rows[i];
        match row
            .cell_id
            .or_else(|| created.get(batch.str(row.cell)).copied())
        {
            Some(id) => ids.push(id),
            None => {
                ids.push(0);
                missing.push(at);
            }
        }
    }
    if missing.is_empty() {
        return Ok(ids);
    }
    // New cells in key order, so the cells of a site get adjacent ids.
    let mut keys: Vec<&EncodedRow> = missing.iter().map(|&at| &batch.rows[rows[at]]).collect();
    keys.sort_unstable_by(|a, b| batch.names(a).cmp(&batch.names(b)));
    keys.dedup_by(|a, b| batch.names(a) == batch.names(b));
    {
        let mut select = tx
            .prepare_cached(
                "SELECT id FROM cells \
                 WHERE site = ?1 AND hostname = ?2 AND flavour = ?3 AND metric = ?4",
            )
            .map_err(query_err)?;
        // A plain insert: under this transaction's write lock nobody else can create the cell
        // between the SELECT and here, and a conflict would be an error, never a wrong id.
        // (Not `RETURNING id`: SQLite builds and drops a temporary b-tree for every such
        // statement, which measured as 6% of an ingest that creates many cells.)
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO cells (site, hostname, flavour, metric) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(query_err)?;
        for row in keys {
            let (site, hostname, flavour, metric) = batch.names(row);
            let args = params![site, hostname, flavour, metric];
            // Another store on the file (or process) may have created it already.
            let id = match select
                .query_row(args, |r| r.get(0))
                .optional()
                .map_err(query_err)?
            {
                Some(id) => id,
                None => {
                    insert.execute(args).map_err(query_err)?;
                    tx.last_insert_rowid()
                }
            };
            created.insert(batch.str(row.cell).into(), id);
        }
    }
    for at in missing {
        let cell = batch.str(batch.rows[rows[at]].cell);
        ids[at] = *created
            .get(cell)
            .ok_or_else(|| StoreError::Query("cell lookup lost a cell".into()))?;
    }
    Ok(ids)
}

/// Inserts `rows` of the batch inside the caller's transaction; returns their ids (in the
/// order of `rows`). Cells it creates are added to `created`.
fn insert_rows(
    tx: &rusqlite::Transaction<'_>,
    created: &mut NewCells,
    batch: &Encoded,
    rows: &[usize],
) -> Result<Vec<i64>, StoreError> {
    let cells = resolve_cells(tx, created, batch, rows)?;
    // Positions in `rows`, in cell id order.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&at| cells[at]);
    let mut ids = vec![0i64; rows.len()];
    {
        let mut insert = tx.prepare_cached(INSERT_RESULT).map_err(query_err)?;
        let mut upsert = tx.prepare_cached(UPSERT_LATEST).map_err(query_err)?;
        // The newest final result of the cell being inserted: (position, id, start), and
        // the start of its earliest.
        let mut best: Option<(usize, i64, i64)> = None;
        let mut first: i64 = i64::MAX;
        let mut write_latest =
            |best: Option<(usize, i64, i64)>, first: i64| -> Result<(), StoreError> {
                if let Some((at, id, started_at_ms)) = best {
                    upsert
                        .execute(params![cells[at], id, started_at_ms, first])
                        .map_err(query_err)?;
                }
                Ok(())
            };
        for (pos, &at) in order.iter().enumerate() {
            let r = &batch.rows[rows[at]];
            if pos > 0 && cells[order[pos - 1]] != cells[at] {
                write_latest(best.take(), first)?;
                first = i64::MAX;
            }
            insert
                .execute(params![
                    cells[at],
                    r.started_at_ms,
                    r.duration_ms,
                    r.attempt,
                    i64::from(r.is_final),
                    batch.str(r.vo),
                    batch.str(r.kind),
                    r.status,
                    batch.str(r.summary),
                    batch.str(r.details),
                    batch.str(r.perfdata),
                    r.trigger,
                ])
                .map_err(query_err)?;
            let id = tx.last_insert_rowid();
            ids[at] = id;
            // `>=`: of equal start times the later one wins, as in UPSERT_LATEST.
            if r.is_final && best.is_none_or(|(_, _, t)| r.started_at_ms >= t) {
                best = Some((at, id, r.started_at_ms));
            }
            if r.is_final {
                first = first.min(r.started_at_ms);
            }
        }
        write_latest(best, first)?;
    }
    // Late results of a closed day: the day's cached runs are rebuilt on the next report.
    days::invalidate(
        tx,
        rows.iter()
            .map(|&row| &batch.rows[row])
            .filter(|r| r.is_final)
            .map(|r| r.started_at_ms),
        gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now()),
    )?;
    Ok(ids)
}

/// Inserts a batch in one transaction (see [`crate::ResultStore::insert`]): encoded here chunk
/// by chunk while the blocking pool writes the chunks already encoded.
pub(super) async fn insert(
    conn: &Arc<Mutex<Connection>>,
    cells: &Arc<Mutex<CellCache>>,
    results: &[NewResult],
) -> Result<Vec<i64>, StoreError> {
    if results.is_empty() {
        return Ok(Vec::new());
    }
    // The blocking pool needs owned data: the batch is encoded chunk by chunk, each chunk
    // handed over as soon as it is ready, so that encoding the rest here overlaps with
    // writing the first ones there (one transaction all the same).
    let (chunks, received) = std::sync::mpsc::channel::<Option<Encoded>>();
    let (conn, cache) = (Arc::clone(conn), Arc::clone(cells));
    let writing =
        tokio::task::spawn_blocking(move || insert_chunks(&mut lock(&conn), &cache, &received));
    let mut encoded = Ok(());
    for chunk in results.chunks(ENCODE_CHUNK) {
        match Encoded::new(chunk.iter(), cells) {
            // A closed channel: the writing side failed already, and says why below.
            Ok(chunk) => {
                if chunks.send(Some(chunk)).is_err() {
                    break;
                }
            }
            Err(e) => {
                encoded = Err(e);
                break;
            }
        }
    }
    if encoded.is_ok() {
        let _ = chunks.send(None);
    }
    // Without the `None`, dropping the sender abandons (rolls back) the batch.
    drop(chunks);
    let written = writing
        .await
        .map_err(|e| StoreError::Query(format!("result store task failed: {e}")))?;
    encoded?;
    written
}

/// Deletes results started before `cutoff_ms` but each cell's latest, in chunks (see
/// [`crate::ResultStore::delete_before`]), then their message ids and cached days.
pub(super) async fn delete_before(
    conn: &Arc<Mutex<Connection>>,
    cutoff_ms: i64,
) -> Result<u64, StoreError> {
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || {
        let mut total = 0u64;
        loop {
            // Lock per chunk so other operations of this process interleave with a purge.
            let mut guard = lock(&conn);
            let tx = guard
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(query_err)?;
            let n = tx
                .prepare_cached(
                    "DELETE FROM results WHERE id IN (SELECT r.id FROM results r \
                     WHERE r.started_at_ms < ?1 AND NOT EXISTS (SELECT 1 FROM latest l \
                     WHERE l.cell_id = r.cell_id AND l.result_id = r.id) LIMIT ?2)",
                )
                .and_then(|mut stmt| stmt.execute(params![cutoff_ms, DELETE_CHUNK]))
                .map_err(query_err)?;
            tx.commit().map_err(query_err)?;
            total += n as u64;
            if (n as i64) < DELETE_CHUNK {
                // The message ids of deleted results go too (a cell's kept latest keeps
                // its id, so a late redelivery of it is still recognised).
                guard
                    .prepare_cached(
                        "DELETE FROM message_ids WHERE started_at_ms < ?1 AND NOT EXISTS \
                         (SELECT 1 FROM results r WHERE r.id = message_ids.result_id)",
                    )
                    .and_then(|mut stmt| stmt.execute(params![cutoff_ms]))
                    .map_err(query_err)?;
                days::forget_before(&guard, cutoff_ms)?;
                return Ok(total);
            }
        }
    })
    .await
    .map_err(|e| StoreError::Query(format!("result store task failed: {e}")))?
}

/// Records a store event.
pub(super) fn record_event(conn: &Connection, event: &StoreEvent) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO store_events (at_ms, kind, message) VALUES (?1, ?2, ?3)")
        .and_then(|mut stmt| stmt.execute(params![event.at_ms, event.kind, event.message]))
        .map_err(query_err)?;
    Ok(())
}

/// Replaces the downtimes of one source, in one transaction.
pub(super) fn replace_downtimes(
    conn: &mut Connection,
    source: &str,
    downtimes: &[Downtime],
) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    tx.execute("DELETE FROM downtimes WHERE source = ?1", [source])
        .map_err(query_err)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO downtimes (source, id, site, hostname, flavour, start_ms, \
                 end_ms, scheduled, outage, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (source, id, hostname, flavour) DO UPDATE SET \
                 start_ms = excluded.start_ms, end_ms = excluded.end_ms",
            )
            .map_err(query_err)?;
        for d in downtimes {
            stmt.execute(params![
                source,
                d.id,
                d.site,
                d.hostname,
                d.flavour,
                d.start_ms,
                d.end_ms,
                d.scheduled,
                d.outage,
                d.reason
            ])
            .map_err(query_err)?;
        }
    }
    tx.commit().map_err(query_err)
}
