//! Ingest against the store's size (issue 20): the same serve-like stream (as `throughput --
//! store`: `cells` cells every 10 minutes, handed to the batching writer, written to a
//! `SqliteStore` file) into an empty store and into stores that already hold 10 M and 30 M
//! results, alternating the sizes round by round so that the machine's load hits them alike.
//! The ratio of each size's rate to the empty store's, in the same run, is what the target
//! (≥ 0.8 × empty, and ≥ 150 k/s) is about.
//!
//! ```text
//! cargo bench --bench ingest_size                # sizes 0, 10 M, 30 M; 300,000 results each
//! cargo bench --bench ingest_size -- --quick     # sizes 0, 1 M, 3 M;   50,000 results each
//! ```
//!
//! Environment: `GRIDPROBE_BENCH_SIZES` (comma-separated stored results, e.g. `0,10000000`),
//! `GRIDPROBE_BENCH_DATA` (where the pre-filled stores are kept; default
//! `~/.cache/gridprobe-bench`), `GRIDPROBE_BENCH_ROUNDS` (default 3), `GRIDPROBE_BENCH_CELLS`
//! (default 50,000, as `throughput -- store`).
//!
//! A pre-filled store is made once per (size, cells, schema version) and reused: it is opened
//! with `SqliteStore::open` (the real schema and indexes), its results are written by one SQL
//! statement with the results indexes dropped and then rebuilt (minutes instead of the hours
//! the writer would take), 10 minutes apart per cell as the stream is, with short texts to
//! keep the file small (ingest cost grows with the indexes, not with the row width: rows are
//! appended in rowid order). Each run appends its results after the newest stored one, so the
//! store grows by the measured results per run; the size printed is the one measured.
//!
//! PostgreSQL, with `GRIDPROBE_TEST_PG` (a server URL): the same stream through the writer into
//! a `PgStore` (A) against a bare binary `COPY` of the same rows into the same table in one
//! transaction (B), at each of `GRIDPROBE_BENCH_PG_SIZES` (default `0,10000000`; `--quick`:
//! `0,1000000`), in schemas `gridprobe_bench_ingest_<size>_…` filled once by SQL like the
//! files and kept (the empty one is made afresh per measurement).
//!
//! Printed: per round and size the rate, then `RESULT ingest_size size=<stored> a=<rate>
//! b=<empty-store rate>` per non-empty size and `RESULT ingest_size_pg size=<stored>
//! a=<PgStore rate> b=<bare COPY rate>` per PostgreSQL size (every round's figure), which
//! `bench/compare` reads.

mod common;

use common::stream::{self, Stream, INTERVAL_MS, METRIC, PER_SITE};
use common::{data_dir, env_or, proc_io, rate, thousands, Spread};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridprobe_results::{spawn_writer, PgStore, ResultStore, SqliteStore, WriterConfig};

/// 2026-01-01T00:00:00Z: where a pre-filled store's history starts.
const FILL_EPOCH_MS: i64 = 1_767_225_600_000;
/// Bumped when the pre-filled data changes, so an old file is not reused.
const FILL_VERSION: u32 = 1;
const FEED_WINDOW: u64 = 20_000;
const FEED_CHUNK: usize = 1_000;
const RATIO_TARGET: f64 = 0.8;
const RATE_TARGET: f64 = 150_000.0;

/// Makes (once) a store holding `size` results over `cells` cells; returns its path.
fn prefilled(dir: &Path, size: u64, cells: usize) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!(
        "ingest-{size}-c{cells}-v{FILL_VERSION}-s{}.sqlite",
        gridprobe_results::sqlite::SCHEMA_VERSION
    ));
    let ready = path.with_extension("complete");
    if ready.exists() {
        println!("   reusing {}", path.display());
        return Ok(path);
    }
    for stale in [
        path.clone(),
        path.with_extension("sqlite-wal"),
        path.with_extension("sqlite-shm"),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    let began = Instant::now();
    // The real schema, made by the store.
    drop(SqliteStore::open(&path)?);
    let mut conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;",
    )?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO cells (id, site, hostname, flavour, metric) VALUES (?1, ?2, ?3, 'CE', ?4)",
        )?;
        for cell in 0..cells {
            insert.execute(rusqlite::params![
                cell as i64 + 1,
                stream::site(cell),
                stream::hostname(cell),
                METRIC
            ])?;
        }
    }
    // The results indexes, as the store made them: dropped for the bulk insert, rebuilt after.
    let indexes: Vec<(String, String)> = {
        let mut stmt = tx.prepare(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'results' \
             AND sql IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (name, _) in &indexes {
        tx.execute_batch(&format!("DROP INDEX {name}"))?;
    }
    tx.execute(
        "WITH RECURSIVE n (i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1) \
         INSERT INTO results (cell_id, started_at_ms, duration_ms, attempt, final, vo, kind, \
             status, summary, details, perfdata, \"trigger\") \
         SELECT i % ?2 + 1, ?3 + (i / ?2) * ?4 + ((i % ?2) * 7919) % ?4, 1, 1, 1, 'bench', \
             'tcp', 'OK', 'TCP connect in 0.000150s', '', '[]', 'scheduled' FROM n",
        rusqlite::params![size as i64, cells as i64, FILL_EPOCH_MS, INTERVAL_MS],
    )?;
    for (_, sql) in &indexes {
        tx.execute_batch(sql)?;
    }
    tx.execute(
        "INSERT INTO latest (cell_id, result_id, started_at_ms, first_ms) \
         SELECT cell_id, max(id), max(started_at_ms), min(started_at_ms) FROM results \
         GROUP BY cell_id",
        [],
    )?;
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    drop(conn);
    std::fs::write(&ready, size.to_string())?;
    println!(
        "   filled {} with {size} results in {:.0}s",
        path.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// The first round's start of a stream appended after `newest` (the store's newest start).
fn epoch_after(newest: Option<i64>) -> i64 {
    let newest = newest.unwrap_or(FILL_EPOCH_MS);
    newest - newest.rem_euclid(INTERVAL_MS) + INTERVAL_MS
}

/// Writes `n` stream results through the writer into `store`, as `serve` does; returns the
/// time taken.
async fn feed(store: Arc<dyn ResultStore>, stream: &Stream, n: usize) -> anyhow::Result<Duration> {
    let (writer, writer_task) = spawn_writer(store, WriterConfig::default());
    let stats = writer.stats();
    let started = Instant::now();
    let mut next = 0;
    while next < n {
        if stats.pending.load(Ordering::Relaxed) < FEED_WINDOW {
            let end = (next + FEED_CHUNK).min(n);
            for i in next..end {
                writer.send(stream.owned(i));
            }
            next = end;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    while stats.written.load(Ordering::Relaxed) < n as u64 {
        if stats.dropped.load(Ordering::Relaxed) > 0
            || writer_task.is_finished()
            || started.elapsed() > Duration::from_secs(1800)
        {
            bail!(
                "writer stalled: {} written, {} write errors",
                stats.written.load(Ordering::Relaxed),
                stats.write_errors.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    drop(writer);
    writer_task.await.context("writer task")?;
    Ok(took)
}

/// Writes `n` stream results after the newest stored one into the file; returns the stored
/// count before and the time taken.
async fn ingest(path: &Path, n: usize, cells: usize) -> anyhow::Result<(u64, Duration)> {
    let store = Arc::new(SqliteStore::open(path)?);
    let before = store.count().await?;
    let newest = {
        let conn = rusqlite::Connection::open(path)?;
        conn.query_row("SELECT max(started_at_ms) FROM results", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
    };
    let stream = Stream::new(cells, epoch_after(newest));
    let took = feed(store, &stream, n).await?;
    Ok((before, took))
}

fn median(v: &[f64]) -> f64 {
    Spread::of(v).map_or(f64::NAN, |s| s.median)
}

fn joined(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn sizes_from(var: &str, default: Vec<u64>) -> anyhow::Result<Vec<u64>> {
    match std::env::var(var) {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().parse::<u64>().with_context(|| var.to_string()))
            .collect(),
        Err(_) => Ok(default),
    }
}

async fn run() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds: usize = env_or("GRIDPROBE_BENCH_ROUNDS", 3)?.max(1);
    let cells: usize = env_or("GRIDPROBE_BENCH_CELLS", 50_000)?.max(1);
    let n: usize = env_or("GRIDPROBE_BENCH_N", if quick { 50_000 } else { 300_000 })?;
    let sizes = sizes_from(
        "GRIDPROBE_BENCH_SIZES",
        if quick {
            vec![0, 1_000_000, 3_000_000]
        } else {
            vec![0, 10_000_000, 30_000_000]
        },
    )?;
    let dir = data_dir()?;
    println!("== ingest at size: {n} results over {cells} cells per measurement, sizes {sizes:?}");
    let mut paths = Vec::new();
    for &size in &sizes {
        paths.push(if size == 0 {
            None
        } else {
            Some(prefilled(&dir, size, cells)?)
        });
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    let mut stored: Vec<u64> = vec![0; sizes.len()];
    for round in 0..rounds {
        // Alternate the order, so no size always comes first.
        let mut order: Vec<usize> = (0..sizes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let tmp = tempfile::tempdir()?;
            let path = match &paths[i] {
                Some(p) => p.clone(),
                None => tmp.path().join("empty.sqlite"),
            };
            let io_before = proc_io("write_bytes");
            let (before, took) = ingest(&path, n, cells).await?;
            let per_result = proc_io("write_bytes").saturating_sub(io_before) / n.max(1) as u64;
            let r = rate(n, took);
            println!(
                "   round {round}: {before:>11} stored: {:>8} results/s  ({:.2}s, {per_result} bytes written per result)",
                thousands(r),
                took.as_secs_f64()
            );
            rates[i].push(r);
            stored[i] = before;
        }
    }
    let empty_at = sizes.iter().position(|s| *s == 0);
    let empty = empty_at.map(|i| median(&rates[i]));
    println!();
    println!("| stored results | results/s (median) | ÷ empty store | target | met? |");
    println!("|---:|---:|---:|---|---|");
    for (i, size) in sizes.iter().enumerate() {
        let a = median(&rates[i]);
        let ratio = empty.map(|b| a / b);
        let met = a >= RATE_TARGET && (*size == 0 || ratio.is_some_and(|r| r >= RATIO_TARGET));
        println!(
            "| {} | {} | {} | ≥ {RATIO_TARGET} × empty, ≥ {}/s | {} |",
            thousands(stored[i] as f64),
            thousands(a),
            ratio.map_or("—".into(), |r| format!("{r:.2}")),
            thousands(RATE_TARGET),
            if met { "yes" } else { "no" }
        );
    }
    if let Some(e) = empty_at {
        for (i, size) in sizes.iter().enumerate() {
            if *size > 0 {
                println!(
                    "RESULT ingest_size size={} a={} b={}",
                    stored[i],
                    joined(&rates[i]),
                    joined(&rates[e])
                );
            }
        }
    }
    match std::env::var("GRIDPROBE_TEST_PG") {
        Ok(url) => {
            let sizes = sizes_from(
                "GRIDPROBE_BENCH_PG_SIZES",
                if quick {
                    vec![0, 1_000_000]
                } else {
                    vec![0, 10_000_000]
                },
            )?;
            pg::run(&url, &sizes, n, cells, rounds).await?;
        }
        Err(_) => println!("   GRIDPROBE_TEST_PG not set: no PostgreSQL rows"),
    }
    Ok(())
}

/// The PostgreSQL pair: `PgStore` through the writer against a bare binary COPY.
mod pg {
    use super::*;
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    use tokio_postgres::{Client, Config, NoTls};

    async fn connect(config: &Config) -> anyhow::Result<Client> {
        let (client, conn) = config
            .connect(NoTls)
            .await
            .context("connecting to GRIDPROBE_TEST_PG")?;
        tokio::spawn(conn);
        Ok(client)
    }

    fn schema_of(size: u64, cells: usize) -> String {
        format!(
            "gridprobe_bench_ingest_{size}_c{cells}_v{FILL_VERSION}_s{}",
            gridprobe_results::postgres::SCHEMA_VERSION
        )
    }

    /// The schema holding `size` results over `cells` cells (made once and kept; the empty
    /// one is made afresh), as connection settings.
    async fn prefilled(
        admin: &Client,
        base: &Config,
        size: u64,
        cells: usize,
    ) -> anyhow::Result<Config> {
        let schema = schema_of(size, cells);
        let mut config = base.clone();
        config.options(format!("-c search_path={schema}"));
        if size > 0 {
            let complete: bool = admin
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&format!("{schema}.bench_complete")],
                )
                .await?
                .get(0);
            if complete {
                return Ok(config);
            }
        }
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .await?;
        drop(PgStore::open_config(config.clone(), 1).await?);
        if size == 0 {
            return Ok(config);
        }
        if cells / PER_SITE >= 10_000 {
            bail!("at most {} cells", 10_000 * PER_SITE);
        }
        let began = Instant::now();
        let c = connect(&config).await?;
        // The stream's names (`stream::site`, `stream::hostname`), ids 1.. as in the files.
        c.execute(
            "INSERT INTO cells (id, site, hostname, flavour, metric) \
             SELECT g + 1, 'SITE-' || lpad((g / $2::bigint)::text, 4, '0'), \
                 'ce' || lpad((g % $2::bigint)::text, 3, '0') || '.site' \
                 || lpad((g / $2::bigint)::text, 4, '0') || '.example.org', 'CE', $3::text \
             FROM generate_series(0::bigint, $1::bigint - 1) g",
            &[&(cells as i64), &(PER_SITE as i64), &METRIC],
        )
        .await?;
        c.execute(
            "SELECT setval(pg_get_serial_sequence('cells', 'id'), $1::bigint)",
            &[&(cells as i64)],
        )
        .await?;
        let indexes: Vec<(String, String)> = c
            .query(
                "SELECT indexname::text, indexdef FROM pg_indexes \
                 WHERE schemaname = $1 AND tablename = 'results' \
                   AND indexname <> 'results_pkey'",
                &[&schema],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (name, _) in &indexes {
            c.batch_execute(&format!("DROP INDEX {name}")).await?;
        }
        c.execute(
            "INSERT INTO results (cell_id, started_at_ms, duration_ms, attempt, final, vo, \
                 kind, status, summary, details, perfdata, \"trigger\") \
             SELECT i % $2::bigint + 1, \
                 $3::bigint + (i / $2::bigint) * $4::bigint + ((i % $2::bigint) * 7919) % $4::bigint, \
                 1, 1, true, 'bench', 'tcp', 'OK', 'TCP connect in 0.000150s', '', '[]', \
                 'scheduled' \
             FROM generate_series(0::bigint, $1::bigint - 1) i",
            &[&(size as i64), &(cells as i64), &FILL_EPOCH_MS, &INTERVAL_MS],
        )
        .await?;
        for (_, def) in &indexes {
            c.batch_execute(def).await?;
        }
        c.execute(
            "INSERT INTO latest (cell_id, result_id, started_at_ms) \
             SELECT cell_id, max(id), max(started_at_ms) FROM results GROUP BY cell_id",
            &[],
        )
        .await?;
        // Separate calls: VACUUM refuses to run in a batch's implicit transaction.
        for table in ["results", "latest", "cells"] {
            admin
                .batch_execute(&format!("VACUUM ANALYZE {schema}.{table}"))
                .await?;
        }
        admin
            .batch_execute(&format!("CREATE TABLE {schema}.bench_complete ()"))
            .await?;
        println!(
            "   filled PostgreSQL schema {schema} with {size} results in {:.0}s",
            began.elapsed().as_secs_f64()
        );
        Ok(config)
    }

    /// The stored count and the newest start.
    async fn state(c: &Client) -> anyhow::Result<(u64, Option<i64>)> {
        let row = c
            .query_one("SELECT count(*), max(started_at_ms) FROM results", &[])
            .await?;
        Ok((u64::try_from(row.get::<_, i64>(0)).unwrap_or(0), row.get(1)))
    }

    /// A: the writer into a `PgStore` (4 connections).
    async fn store(config: &Config, n: usize, cells: usize) -> anyhow::Result<(u64, Duration)> {
        let (before, newest) = state(&connect(config).await?).await?;
        let store = Arc::new(PgStore::open_config(config.clone(), 4).await?);
        let stream = Stream::new(cells, epoch_after(newest));
        Ok((before, feed(store, &stream, n).await?))
    }

    /// B: the same rows in one binary COPY, one transaction.
    async fn bare_copy(config: &Config, n: usize, cells: usize) -> anyhow::Result<(u64, Duration)> {
        let mut c = connect(config).await?;
        let (before, newest) = state(&c).await?;
        let stream = Stream::new(cells, epoch_after(newest));
        let started = Instant::now();
        let tx = c.transaction().await?;
        let sink = tx
            .copy_in(
                "COPY results (cell_id, started_at_ms, duration_ms, attempt, final, vo, kind, \
                 status, summary, details, perfdata, \"trigger\") FROM STDIN (FORMAT binary)",
            )
            .await?;
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(
            sink,
            &[
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT4,
                Type::BOOL,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
            ],
        ));
        for i in 0..n {
            let (cell, template, at) = stream.row(i);
            let r = &template.result;
            let perfdata = serde_json::to_string(&r.outcome.perfdata)?;
            writer
                .as_mut()
                .write(&[
                    &(cell as i64 + 1),
                    &at,
                    &i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
                    &i32::try_from(r.attempt).unwrap_or(i32::MAX),
                    &template.is_final,
                    &r.vo,
                    &r.kind,
                    &r.outcome.status.name(),
                    &r.outcome.summary,
                    &r.outcome.details,
                    &perfdata,
                    &r.trigger.name(),
                ])
                .await?;
        }
        writer.as_mut().finish().await?;
        tx.commit().await?;
        Ok((before, started.elapsed()))
    }

    pub(super) async fn run(
        url: &str,
        sizes: &[u64],
        n: usize,
        cells: usize,
        rounds: usize,
    ) -> anyhow::Result<()> {
        let base: Config = url.parse().context("GRIDPROBE_TEST_PG")?;
        let admin = connect(&base).await?;
        println!("== PostgreSQL ingest at size: PgStore vs a bare COPY, sizes {sizes:?}");
        // (stored, A rates, B rates) per size.
        let mut figures: Vec<(u64, Vec<f64>, Vec<f64>)> =
            vec![(0, Vec::new(), Vec::new()); sizes.len()];
        for round in 0..rounds {
            for (i, &size) in sizes.iter().enumerate() {
                for copy_first in [round % 2 == 1, round % 2 == 0] {
                    let config = prefilled(&admin, &base, size, cells).await?;
                    let (before, took) = if copy_first {
                        bare_copy(&config, n, cells).await?
                    } else {
                        store(&config, n, cells).await?
                    };
                    let r = rate(n, took);
                    println!(
                        "   round {round}: {before:>11} stored: {:<10} {:>8} results/s  ({:.2}s)",
                        if copy_first { "bare COPY" } else { "PgStore" },
                        thousands(r),
                        took.as_secs_f64()
                    );
                    let f = &mut figures[i];
                    f.0 = before;
                    if copy_first {
                        f.2.push(r)
                    } else {
                        f.1.push(r)
                    }
                }
            }
        }
        println!();
        println!("| stored results | PgStore (median) | bare COPY (median) | ratio |");
        println!("|---:|---:|---:|---:|");
        for (stored, a, b) in &figures {
            println!(
                "| {} | {}/s | {}/s | {:.2} |",
                thousands(*stored as f64),
                thousands(median(a)),
                thousands(median(b)),
                median(a) / median(b)
            );
        }
        for (stored, a, b) in &figures {
            println!(
                "RESULT ingest_size_pg size={stored} a={} b={}",
                joined(a),
                joined(b)
            );
        }
        if sizes.contains(&0) {
            admin
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    schema_of(0, cells)
                ))
                .await?;
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    common::run_main(run())
}
