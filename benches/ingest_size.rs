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
//! Printed: per round and size the rate, then `RESULT ingest_size size=<stored> a=<rate>
//! b=<empty-store rate>` per non-empty size (medians), which `bench/compare` reads.

mod common;

use common::{env_or, rate, thousands};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Trigger};
use gridprobe_results::{spawn_writer, NewResult, SqliteStore, WriterConfig};

/// Cells per site, as in `throughput`.
const PER_SITE: usize = 100;
const INTERVAL_MS: i64 = 600_000;
/// 2026-01-01T00:00:00Z: where a pre-filled store's history starts.
const FILL_EPOCH_MS: i64 = 1_767_225_600_000;
/// Bumped when the pre-filled data changes, so an old file is not reused.
const FILL_VERSION: u32 = 1;
const FEED_WINDOW: u64 = 20_000;
const FEED_CHUNK: usize = 1_000;
const RATIO_TARGET: f64 = 0.8;
const RATE_TARGET: f64 = 150_000.0;

fn hostname(cell: usize) -> String {
    format!(
        "ce{:03}.site{:04}.example.org",
        cell % PER_SITE,
        cell / PER_SITE
    )
}

fn site(cell: usize) -> String {
    format!("SITE-{:04}", cell / PER_SITE)
}

/// The stream's result of `cell` at `started_at_ms` (the rows of `throughput -- store`).
fn result(cell: usize, started_at_ms: i64) -> NewResult {
    let hostname = hostname(cell);
    let secs = 0.000_150 + (cell % 997) as f64 * 1e-6;
    let summary = format!("TCP connect to {hostname}:2811 in {secs:.6}s");
    let details = format!(
        "{summary}\nresolved {hostname} to 192.0.2.{}\nconnected from 192.0.2.1:{}",
        cell % PER_SITE + 1,
        40_000 + cell % 20_000
    );
    NewResult {
        result: ProbeResult {
            metric: "org.bench.CE-gridftp".into(),
            kind: "tcp".into(),
            vo: "bench".into(),
            site: site(cell),
            hostname,
            flavour: "CE".into(),
            started_at_ms,
            duration_ms: 1,
            outcome: Outcome::ok(summary)
                .with_details(details)
                .with_perfdata(vec![Perfdatum::new("time", secs, "s")]),
            attempt: 1,
            trigger: Trigger::Scheduled,
        },
        is_final: true,
    }
}

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
            "INSERT INTO cells (id, site, hostname, flavour, metric) VALUES (?1, ?2, ?3, 'CE', 'org.bench.CE-gridftp')",
        )?;
        for cell in 0..cells {
            insert.execute(rusqlite::params![
                cell as i64 + 1,
                site(cell),
                hostname(cell)
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
        "INSERT INTO latest (cell_id, result_id, started_at_ms) \
         SELECT cell_id, max(id), max(started_at_ms) FROM results GROUP BY cell_id",
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

/// Writes `n` stream results after the newest stored one, through the writer as `serve`
/// does; returns the stored count before and the time taken.
async fn ingest(path: &Path, n: usize, cells: usize) -> anyhow::Result<(u64, Duration)> {
    let store = Arc::new(SqliteStore::open(path)?);
    let before = store.count().await?;
    let newest = {
        let conn = rusqlite::Connection::open(path)?;
        conn.query_row("SELECT max(started_at_ms) FROM results", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .unwrap_or(FILL_EPOCH_MS)
    };
    let epoch = newest - newest.rem_euclid(INTERVAL_MS) + INTERVAL_MS;
    let row = |i: usize| {
        let (cell, round) = (i % cells, (i / cells) as i64);
        result(
            cell,
            epoch + round * INTERVAL_MS + (cell as i64 * 7_919) % INTERVAL_MS,
        )
    };
    let (writer, writer_task) = spawn_writer(store.clone(), WriterConfig::default());
    let stats = writer.stats();
    let started = Instant::now();
    let mut next = 0;
    while next < n {
        if stats.pending.load(Ordering::Relaxed) < FEED_WINDOW {
            let end = (next + FEED_CHUNK).min(n);
            for i in next..end {
                writer.send(row(i));
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
    Ok((before, took))
}

/// Bytes this process has caused to be written to storage so far (`/proc/self/io`), to show
/// what a result costs in page writes (WAL and checkpoints); 0 where not available.
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds: usize = env_or("GRIDPROBE_BENCH_ROUNDS", 3)?.max(1);
    let cells: usize = env_or("GRIDPROBE_BENCH_CELLS", 50_000)?.max(1);
    let n: usize = env_or("GRIDPROBE_BENCH_N", if quick { 50_000 } else { 300_000 })?;
    let sizes: Vec<u64> = match std::env::var("GRIDPROBE_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().parse::<u64>().context("GRIDPROBE_BENCH_SIZES"))
            .collect::<Result<_, _>>()?,
        Err(_) if quick => vec![0, 1_000_000, 3_000_000],
        Err(_) => vec![0, 10_000_000, 30_000_000],
    };
    let dir = match std::env::var_os("GRIDPROBE_BENCH_DATA") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME")?).join(".cache/gridprobe-bench")
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
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
            let io_before = written_bytes();
            let (before, took) = ingest(&path, n, cells).await?;
            let per_result = written_bytes().saturating_sub(io_before) / n.max(1) as u64;
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
    let empty = empty_at.map(|i| median(&mut rates[i].clone()));
    let joined = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!();
    println!("| stored results | results/s (median) | ÷ empty store | target | met? |");
    println!("|---:|---:|---:|---|---|");
    for (i, size) in sizes.iter().enumerate() {
        let a = median(&mut rates[i].clone());
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
    Ok(())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
