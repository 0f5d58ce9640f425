//! Throughput and memory figures of gridprobe, each against a baseline measured in the same run:
//! ratios carry from machine to machine, absolute numbers much less so.
//!
//! ```text
//! cargo bench --bench throughput                      # full sizes (see BENCHMARKS.md)
//! cargo bench --bench throughput -- --quick           # smoke run, 2% of the sizes
//! cargo bench --bench throughput -- store mem         # only some pairs: sched, store, mem
//! ```
//!
//! Environment: `GRIDPROBE_BENCH_SCALE` (size multiplier; default 1, or 0.02 with `--quick`),
//! `GRIDPROBE_BENCH_QUICK=1` (as `--quick`), `GRIDPROBE_BENCH_ROUNDS` (times each pair is
//! measured, alternating which side goes first; the best of each side is kept; default 2, 1
//! with `--quick`), `GRIDPROBE_BENCH_ONLY` (comma-separated pairs).
//!
//! Targets are reported, never asserted: the process exits non-zero only when a run fails
//! outright (a probe or a write failed, `gridprobe serve` did not come up).

mod common;

use common::stream::{Stream, PER_SITE};
use common::{rate, thousands};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use gridprobe_probes::outcome::unix_ms;
use gridprobe_probes::Status;
use gridprobe_results::{spawn_writer, SqliteStore, WriterConfig};
use tokio::sync::Semaphore;

/// Full sizes, as specified for the figures in BENCHMARKS.md.
const SCHED_RUNS: usize = 20_000;
const STORE_ROWS: usize = 1_000_000;
const SERVE_ENTRIES: usize = 50_000;
/// Scale used by `--quick` when GRIDPROBE_BENCH_SCALE is not set.
const QUICK_SCALE: f64 = 0.02;

const CONCURRENCY: usize = 64;
const TRUE: &str = "/bin/true";

/// Targets.
const SCHED_RATIO_TARGET: f64 = 0.8;
const STORE_RATIO_TARGET: f64 = 0.7;
const STORE_RATE_TARGET: f64 = 200_000.0;
const RSS_TARGET_BYTES: u64 = 150_000_000;

/// The writer drops results beyond `max_pending` (100,000) even when the store is healthy, so
/// the feed keeps at most this many in flight; serve never produces a burst of a million.
const FEED_WINDOW: u64 = 20_000;
const FEED_CHUNK: usize = 1_000;

/// One line of the summary table.
struct Figure {
    pair: String,
    ours: String,
    baseline: String,
    ratio: Option<f64>,
    target: String,
    met: Option<bool>,
}

struct Opts {
    scale: f64,
    rounds: usize,
    only: Vec<String>,
}

impl Opts {
    fn wants(&self, pair: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == pair)
    }

    fn size(&self, full: usize, min: usize) -> usize {
        ((full as f64 * self.scale).round() as usize).max(min)
    }
}

const PAIRS: &[&str] = &["sched", "store", "mem"];

fn opts() -> anyhow::Result<Opts> {
    let mut quick = std::env::var("GRIDPROBE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let mut only: Vec<String> = std::env::var("GRIDPROBE_BENCH_ONLY")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            // cargo passes `--bench` to `harness = false` targets.
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "usage: cargo bench --bench throughput -- [--quick] [sched] [store] [mem]"
                );
                std::process::exit(0);
            }
            pair if PAIRS.contains(&pair) => only.push(pair.to_string()),
            other => eprintln!("note: ignoring argument {other:?}"),
        }
    }
    only.retain(|p| !p.is_empty());
    if let Some(bad) = only.iter().find(|p| !PAIRS.contains(&p.as_str())) {
        bail!("unknown pair {bad:?}; known: {}", PAIRS.join(", "));
    }
    let scale = match std::env::var("GRIDPROBE_BENCH_SCALE") {
        Ok(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .with_context(|| format!("GRIDPROBE_BENCH_SCALE={v:?} is not a positive number"))?,
        Err(_) if quick => QUICK_SCALE,
        Err(_) => 1.0,
    };
    let rounds = match std::env::var("GRIDPROBE_BENCH_ROUNDS") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|r| *r > 0)
            .with_context(|| format!("GRIDPROBE_BENCH_ROUNDS={v:?} is not a positive integer"))?,
        // Two rounds, alternating which side goes first, make a ratio robust to a neighbour's
        // burst on a shared machine; a smoke run needs one.
        Err(_) if quick => 1,
        Err(_) => 2,
    };
    Ok(Opts {
        scale,
        rounds,
        only,
    })
}

fn main() -> ExitCode {
    let opts = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // The same runtime as `gridprobe serve` builds: multi-threaded, one worker per core.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot build the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let machine = machine();
    println!("gridprobe throughput benchmark");
    println!("machine: {machine}");
    println!(
        "scale {} ({}), {} round(s) per pair\n",
        opts.scale,
        if opts.scale == 1.0 {
            "full sizes"
        } else {
            "scaled: targets are indicative only"
        },
        opts.rounds
    );

    let mut figures = Vec::new();
    let mut failures = Vec::new();
    let mut section = |name: &str, r: anyhow::Result<Vec<Figure>>| match r {
        Ok(f) => figures.extend(f),
        Err(e) => {
            eprintln!("FAILED: {name}: {e:#}\n");
            failures.push(name.to_string());
        }
    };
    if opts.wants("sched") {
        section("scheduler throughput", bench_scheduler(&runtime, &opts));
    }
    if opts.wants("store") {
        section("store ingest", bench_store(&runtime, &opts));
    }
    if opts.wants("mem") {
        section("serve memory", bench_memory(&opts));
    }

    println!("{}", table(&figures));
    println!("machine: {machine}");
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("failed outright: {}", failures.join(", "));
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Scheduler throughput

/// `n` instances of a `nagios` probe running `/bin/true`, all due at once, only the global
/// limit binding (as in the baseline).
fn scheduler_config(n: usize) -> String {
    common::burst_config(
        n,
        CONCURRENCY,
        &format!(
            "[[probe]]\nmetric = \"org.bench.true\"\nkind = \"nagios\"\nflavours = [\"CE\"]\n  [probe.params]\n  command = \"{TRUE}\""
        ),
    )
}

fn bench_scheduler(rt: &tokio::runtime::Runtime, opts: &Opts) -> anyhow::Result<Vec<Figure>> {
    let n = opts.size(SCHED_RUNS, CONCURRENCY);
    println!("== scheduler: {n} runs of {TRUE} (nagios kind) at concurrency {CONCURRENCY}");
    let setup = Instant::now();
    let plan = common::plan(&scheduler_config(n))?;
    let instances = plan.config.instances().len();
    if instances != n {
        bail!("generated configuration has {instances} instances, expected {n}");
    }
    println!(
        "   config loaded and probes built in {:.2}s (not timed)",
        setup.elapsed().as_secs_f64()
    );
    // Warms the page cache and the process table so that neither side pays for it.
    rt.block_on(spawn_baseline(CONCURRENCY * 4, CONCURRENCY))?;

    let (mut best_ours, mut best_base) = (Duration::MAX, Duration::MAX);
    for round in 0..opts.rounds {
        // Alternate the order so that drift on a shared machine does not favour one side.
        for ours in [round % 2 == 1, round % 2 == 0] {
            if ours {
                let run = rt.block_on(common::scheduler_run(plan.clone(), n, failed_run))?;
                println!(
                    "   gridprobe scheduler: {:>10} runs/s  ({:.2}s; mean wait for a slot {:.0} ms)",
                    thousands(rate(n, run.elapsed)),
                    run.elapsed.as_secs_f64(),
                    run.mean_queue_wait_ms
                );
                best_ours = best_ours.min(run.elapsed);
            } else {
                let elapsed = rt.block_on(spawn_baseline(n, CONCURRENCY))?;
                println!(
                    "   baseline spawn loop: {:>10} runs/s  ({:.2}s)",
                    thousands(rate(n, elapsed)),
                    elapsed.as_secs_f64()
                );
                best_base = best_base.min(elapsed);
            }
        }
    }
    let (ours, base) = (rate(n, best_ours), rate(n, best_base));
    let ratio = ours / base;
    println!("   ratio {ratio:.2} (target >= {SCHED_RATIO_TARGET})\n");
    Ok(vec![Figure {
        pair: format!(
            "scheduler: {} × /bin/true, concurrency {CONCURRENCY}",
            thousands(n as f64)
        ),
        ours: format!("{} runs/s", thousands(ours)),
        baseline: format!("{} runs/s (tokio spawn loop)", thousands(base)),
        ratio: Some(ratio),
        target: format!("≥ {SCHED_RATIO_TARGET}"),
        met: Some(ratio >= SCHED_RATIO_TARGET),
    }])
}

/// `/bin/true` prints nothing, which the nagios kind records as UNKNOWN "plugin printed
/// nothing (exit code 0)" (Nagios' convention): that is a complete run. Anything else (spawn
/// failure, timeout, signal) is not, and a benchmark of failing runs would measure the wrong
/// thing.
fn failed_run(r: &gridprobe_results::StoredResult) -> bool {
    let o = &r.result.outcome;
    o.status != Status::Ok && !o.summary.ends_with("(exit code 0)")
}

/// The floor: a plain tokio loop running `/bin/true` with its output piped, `concurrency` at a
/// time. Driven from a task, like the scheduler, so both use the runtime's workers only.
async fn spawn_baseline(n: usize, concurrency: usize) -> anyhow::Result<Duration> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        let mut failed = 0usize;
        let mut check = |done: Result<bool, tokio::task::JoinError>| {
            if !done.unwrap_or(false) {
                failed += 1;
            }
        };
        let started = Instant::now();
        for _ in 0..n {
            let permit = slots.clone().acquire_owned().await?;
            tasks.spawn(async move {
                let out = tokio::process::Command::new(TRUE)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .output()
                    .await;
                drop(permit);
                out.is_ok_and(|o| o.status.success())
            });
            while let Some(done) = tasks.try_join_next() {
                check(done);
            }
        }
        while let Some(done) = tasks.join_next().await {
            check(done);
        }
        let elapsed = started.elapsed();
        if failed > 0 {
            bail!("{failed} of {n} baseline runs of {TRUE} failed");
        }
        Ok(elapsed)
    })
    .await?
}

// ---------------------------------------------------------------------------------------------
// 2. Store ingest

/// The tables an insert touches, with their indexes, as the store's migrations leave them
/// (results/src/sqlite/schema.rs, migration 5). The run checks column by column and index by
/// index that the store's file has the same (see [`schema_matches`]).
const SCHEMA: &str = r#"
CREATE TABLE cells (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    hostname TEXT NOT NULL,
    flavour TEXT NOT NULL,
    metric TEXT NOT NULL,
    UNIQUE (site, hostname, flavour, metric)
);
CREATE TABLE results (
    id INTEGER PRIMARY KEY,
    cell_id INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    final INTEGER NOT NULL,
    vo TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    summary TEXT NOT NULL,
    details TEXT NOT NULL,
    perfdata TEXT NOT NULL,
    "trigger" TEXT NOT NULL
);
CREATE INDEX results_started ON results (started_at_ms);
CREATE INDEX results_hour_cell ON results (started_at_ms / 3600000, cell_id, started_at_ms);
CREATE TABLE latest (
    cell_id INTEGER PRIMARY KEY,
    result_id INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    first_ms INTEGER
) WITHOUT ROWID;
"#;
/// The tables [`schema_matches`] compares.
const INSERT_TABLES: &[&str] = &["cells", "results", "latest"];
const INSERT_CELL: &str =
    "INSERT INTO cells (site, hostname, flavour, metric) VALUES (?1, ?2, ?3, ?4)";
const INSERT_RESULT: &str = "INSERT INTO results (cell_id, started_at_ms, duration_ms, \
     attempt, final, vo, kind, status, summary, details, perfdata, \"trigger\") \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
// The same rows as the store writes: every final result also moves its cell's `latest` pointer.
const UPSERT_LATEST: &str = "INSERT INTO latest (cell_id, result_id, started_at_ms, first_ms) \
     VALUES (?1, ?2, ?3, ?3) \
     ON CONFLICT (cell_id) DO UPDATE SET \
     result_id = CASE WHEN excluded.started_at_ms >= latest.started_at_ms \
         THEN excluded.result_id ELSE latest.result_id END, \
     started_at_ms = max(excluded.started_at_ms, latest.started_at_ms), \
     first_ms = min(excluded.first_ms, latest.first_ms)";

/// The connection settings the SQLite store applies (`prepare` in results/src/sqlite/schema.rs),
/// mirrored by the baseline so that the ratio measures the store's path (writer, batches, one
/// transaction per batch) and not SQLite tuning both could share.
const STORE_PRAGMAS: &str = "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -65536; \
     PRAGMA wal_autocheckpoint = 10000; PRAGMA journal_size_limit = 67108864;";

fn bench_store(rt: &tokio::runtime::Runtime, opts: &Opts) -> anyhow::Result<Vec<Figure>> {
    let n = opts.size(STORE_ROWS, 1_000);
    let cells = opts.size(SERVE_ENTRIES, 100).min(n);
    let stream = Stream::new(cells, unix_ms(SystemTime::now()) - 30 * 86_400_000);
    println!(
        "== store ingest: {n} results over {cells} cells into a SQLite file in {}",
        std::env::temp_dir().display()
    );
    // The writer's transactions under a backlog, as in this run (see `WriterConfig`).
    let batch = WriterConfig::default().backlog_batch_size;
    let (mut best_ours, mut best_base) = (Duration::MAX, Duration::MAX);
    let mut schema_note = None;
    for round in 0..opts.rounds {
        for ours in [round % 2 == 1, round % 2 == 0] {
            let dir = tempfile::tempdir().context("temporary directory")?;
            if ours {
                let path = dir.path().join("store.sqlite");
                let wrote = written_bytes();
                let elapsed = rt.block_on(store_path(&path, n, &stream))?;
                println!(
                    "   writer -> SqliteStore:          {:>10} results/s  ({:.2}s, {})",
                    thousands(rate(n, elapsed)),
                    elapsed.as_secs_f64(),
                    per_result(written_bytes() - wrote, n)
                );
                best_ours = best_ours.min(elapsed);
                if schema_note.is_none() {
                    schema_note = Some(schema_matches(&path)?);
                }
            } else {
                let wrote = written_bytes();
                let elapsed = bare_sqlite(&dir.path().join("bare.sqlite"), n, &stream, None)?;
                println!(
                    "   bare rusqlite, one transaction: {:>10} results/s  ({:.2}s, {})",
                    thousands(rate(n, elapsed)),
                    elapsed.as_secs_f64(),
                    per_result(written_bytes() - wrote, n)
                );
                best_base = best_base.min(elapsed);
            }
        }
    }
    // Not a pair: the baseline again, committing as often as the writer does under this
    // backlog, to show what one transaction per batch costs by itself (see BENCHMARKS.md).
    let dir = tempfile::tempdir().context("temporary directory")?;
    let wrote = written_bytes();
    let per_batch = bare_sqlite(&dir.path().join("bare.sqlite"), n, &stream, Some(batch))?;
    let wrote = written_bytes() - wrote;
    drop(dir);
    println!(
        "   (diagnostic) bare rusqlite, commit every {batch}: {} results/s  ({:.2}s, {})",
        thousands(rate(n, per_batch)),
        per_batch.as_secs_f64(),
        per_result(wrote, n)
    );
    if let Some(Some(diff)) = &schema_note {
        println!("   WARNING: the baseline schema differs from the store's: {diff}");
    }
    let (ours, base) = (rate(n, best_ours), rate(n, best_base));
    let ratio = ours / base;
    println!(
        "   ratio {ratio:.2} (target >= {STORE_RATIO_TARGET}); absolute {} results/s (target >= {})\n",
        thousands(ours),
        thousands(STORE_RATE_TARGET)
    );
    Ok(vec![
        Figure {
            pair: format!(
                "store ingest: {} results, writer → SqliteStore (WAL file)",
                thousands(n as f64)
            ),
            ours: format!("{} results/s", thousands(ours)),
            baseline: format!("{} results/s (bare rusqlite, 1 tx)", thousands(base)),
            ratio: Some(ratio),
            target: format!("≥ {STORE_RATIO_TARGET}"),
            met: Some(ratio >= STORE_RATIO_TARGET),
        },
        Figure {
            pair: "store ingest, absolute".into(),
            ours: format!("{} results/s", thousands(ours)),
            baseline: format!(
                "{} results/s (bare rusqlite, commit every {batch}; diagnostic)",
                thousands(rate(n, per_batch))
            ),
            ratio: None,
            target: format!("≥ {}/s", thousands(STORE_RATE_TARGET)),
            met: Some(ours >= STORE_RATE_TARGET),
        },
    ])
}

/// The path of `gridprobe serve`: results handed to the batching writer, written by it to a
/// `SqliteStore` file; timed from the first hand-over until the writer reports all written.
async fn store_path(path: &Path, n: usize, stream: &Stream) -> anyhow::Result<Duration> {
    let store = Arc::new(SqliteStore::open(path)?);
    let (writer, writer_task) = spawn_writer(store.clone(), WriterConfig::default());
    let stats = writer.stats();
    let limit = Duration::from_secs(600);
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
        let dropped = stats.dropped.load(Ordering::Relaxed);
        if dropped > 0 || writer_task.is_finished() || started.elapsed() > limit {
            bail!(
                "writer stalled: {} written, {dropped} dropped, {} write errors",
                stats.written.load(Ordering::Relaxed),
                stats.write_errors.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    drop(writer);
    writer_task.await.context("writer task")?;
    let errors = stats.write_errors.load(Ordering::Relaxed);
    let stored = store.count().await?;
    if stored != n as u64 || errors > 0 {
        bail!("{stored} of {n} results stored, {errors} write errors");
    }
    Ok(elapsed)
}

/// The floor: the same rows (same tables, same indexes, same connection settings) with
/// prepared statements, in one transaction, or committing every `commit_every` rows. Cell ids
/// come from an array indexed by the stream's cell number, each cell inserted when it first
/// appears: no lookup could be cheaper.
fn bare_sqlite(
    path: &Path,
    n: usize,
    stream: &Stream,
    commit_every: Option<usize>,
) -> anyhow::Result<Duration> {
    use rusqlite::params;
    let mut conn = rusqlite::Connection::open(path)?;
    // As `SqliteStore::setup` does for a new file.
    conn.execute_batch("PRAGMA page_size = 16384")?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("the baseline could not enable WAL mode ({mode})");
    }
    conn.execute_batch(STORE_PRAGMAS)?;
    conn.execute_batch(SCHEMA)?;

    let every = commit_every.unwrap_or(n).max(1);
    let mut cell_ids = vec![0i64; stream.cells()];
    let mut perfdata: Vec<u8> = Vec::with_capacity(256);
    let started = Instant::now();
    let mut first = 0;
    while first < n {
        let last = (first + every).min(n);
        let tx = conn.transaction()?;
        {
            let mut insert_cell = tx.prepare_cached(INSERT_CELL)?;
            let mut insert = tx.prepare_cached(INSERT_RESULT)?;
            let mut upsert = tx.prepare_cached(UPSERT_LATEST)?;
            for i in first..last {
                let (cell, new, started_at_ms) = stream.row(i);
                let r = &new.result;
                if cell_ids[cell] == 0 {
                    insert_cell.execute(params![r.site, r.hostname, r.flavour, r.metric])?;
                    cell_ids[cell] = tx.last_insert_rowid();
                }
                let cell_id = cell_ids[cell];
                // Encoded per row, as the store must: the row holds JSON, the result a Vec.
                perfdata.clear();
                serde_json::to_writer(&mut perfdata, &r.outcome.perfdata)?;
                insert.execute(params![
                    cell_id,
                    started_at_ms,
                    i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
                    i64::from(r.attempt),
                    i64::from(new.is_final),
                    r.vo,
                    r.kind,
                    r.outcome.status.name(),
                    r.outcome.summary,
                    r.outcome.details,
                    std::str::from_utf8(&perfdata)?,
                    "scheduled",
                ])?;
                let id = tx.last_insert_rowid();
                upsert.execute(params![cell_id, id, started_at_ms])?;
            }
        }
        tx.commit()?;
        first = last;
    }
    let elapsed = started.elapsed();
    let stored: i64 = conn.query_row("SELECT COUNT(*) FROM results", [], |r| r.get(0))?;
    if stored != n as i64 {
        bail!("baseline stored {stored} of {n} rows");
    }
    Ok(elapsed)
}

/// Compares the tables an insert touches ([`INSERT_TABLES`]: columns with their types,
/// constraints and order, rowid or not, and every index with its columns) in the store file
/// with the baseline's; `Some(difference)` when they differ. Structure, not SQL text: the
/// store reaches its schema through migrations (a table rebuilt and renamed keeps a quoted
/// name in its `CREATE` text). Other tables (events, downtimes, ...) stay empty here.
fn schema_matches(store_file: &Path) -> anyhow::Result<Option<String>> {
    let schema = |conn: &rusqlite::Connection| -> rusqlite::Result<Vec<String>> {
        let mut out = Vec::new();
        for table in INSERT_TABLES {
            let mut stmt = conn.prepare(
                "SELECT type, ncol, wr, strict FROM pragma_table_list WHERE name = ?1 \
                 AND schema = 'main'",
            )?;
            for row in stmt.query_map([table], |r| {
                Ok(format!(
                    "{table}: {} of {} columns, without rowid {}, strict {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?
                ))
            })? {
                out.push(row?);
            }
            let mut stmt = conn.prepare(
                "SELECT cid, name, type, \"notnull\", dflt_value, pk \
                 FROM pragma_table_xinfo(?1) ORDER BY cid",
            )?;
            for row in stmt.query_map([table], |r| {
                Ok(format!(
                    "{table} column {} {} {} not null {} default {:?} pk {}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?
                ))
            })? {
                out.push(row?);
            }
            let mut stmt = conn.prepare(
                "SELECT il.name, il.\"unique\", il.origin, il.partial, ii.seqno, ii.name, \
                 ii.\"desc\", ii.coll, ii.key \
                 FROM pragma_index_list(?1) il JOIN pragma_index_xinfo(il.name) ii \
                 ORDER BY il.name, ii.seqno",
            )?;
            for row in stmt.query_map([table], |r| {
                Ok(format!(
                    "{table} index {} unique {} origin {} partial {}: #{} {:?} desc {} {:?} key {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, i64>(8)?
                ))
            })? {
                out.push(row?);
            }
        }
        Ok(out)
    };
    let store = schema(&rusqlite::Connection::open(store_file)?)?;
    let bare_conn = rusqlite::Connection::open_in_memory()?;
    bare_conn.execute_batch(SCHEMA)?;
    let bare = schema(&bare_conn)?;
    if store == bare {
        return Ok(None);
    }
    let only_store: Vec<_> = store.iter().filter(|s| !bare.contains(s)).collect();
    let only_bare: Vec<_> = bare.iter().filter(|s| !store.contains(s)).collect();
    Ok(Some(format!(
        "store only: {only_store:?}; baseline only: {only_bare:?}"
    )))
}

// ---------------------------------------------------------------------------------------------
// 3. Memory of `gridprobe serve`

fn serve_config(n: usize) -> String {
    // Slots spread over a day: the entries sit idle (about one tcp run every 2 s at 50,000).
    format!(
        r#"vo = "bench"
[defaults]
interval = "24h"
timeout = "10s"
retries = 0

[server]
startup_spread = "24h"

[[probe]]
metric = "org.bench.CE-tcp"
kind = "tcp"
flavours = ["CE"]
  [probe.params]
  host = "127.0.0.1"
  port = 9

{}"#,
        common::ce_topology(n, PER_SITE)
    )
}

fn bench_memory(opts: &Opts) -> anyhow::Result<Vec<Figure>> {
    let n = opts.size(SERVE_ENTRIES, 100);
    println!("== memory: gridprobe serve holding {n} schedule entries");
    let small = serve_rss(1)?;
    println!(
        "   serve with 1 entry:       VmRSS {:.1} MB (peak {:.1} MB)",
        mb(small.rss),
        mb(small.hwm)
    );
    let big = serve_rss(n)?;
    let per_entry = big.rss as f64 / n as f64;
    let marginal = big.rss.saturating_sub(small.rss) as f64 / (n - 1).max(1) as f64;
    println!(
        "   serve with {n} entries: VmRSS {:.1} MB (peak {:.1} MB), {:.0} B/entry overall, {:.0} B/entry above the 1-entry process; ready in {:.1}s",
        mb(big.rss),
        mb(big.hwm),
        per_entry,
        marginal,
        big.ready.as_secs_f64()
    );
    if let Some(note) = &big.stop_note {
        println!("   note: {note}");
    }
    let full = n == SERVE_ENTRIES;
    println!(
        "   target <= {:.0} MB at {SERVE_ENTRIES} entries{}\n",
        mb(RSS_TARGET_BYTES),
        if full {
            ""
        } else {
            " (not applicable: scaled)"
        }
    );
    Ok(vec![Figure {
        pair: format!(
            "serve RSS, {} idle schedule entries (tcp)",
            thousands(n as f64)
        ),
        ours: format!(
            "{:.1} MB ({:.2} KB/entry; {:.2} KB/entry marginal)",
            mb(big.rss),
            per_entry / 1000.0,
            marginal / 1000.0
        ),
        baseline: format!("{:.1} MB (serve, 1 entry)", mb(small.rss)),
        ratio: None,
        target: format!("≤ {:.0} MB", mb(RSS_TARGET_BYTES)),
        met: full.then_some(big.rss <= RSS_TARGET_BYTES),
    }])
}

struct Rss {
    /// Largest VmRSS seen while idle, bytes.
    rss: u64,
    /// VmHWM (peak RSS since start, including loading), bytes.
    hwm: u64,
    ready: Duration,
    stop_note: Option<String>,
}

/// Kills the serve process if the benchmark leaves early.
struct ServeProcess(Child);

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn serve_rss(n: usize) -> anyhow::Result<Rss> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let config = dir.path().join("vo.toml");
    std::fs::write(&config, serve_config(n))?;
    let log = dir.path().join("serve.log");
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_gridprobe"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--store")
        .arg(dir.path().join("results.sqlite"))
        .args(["--listen", "127.0.0.1:0"])
        .env("GRIDPROBE_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting gridprobe serve")?;
    let mut serve = ServeProcess(child);
    let pid = serve.0.id();
    let log_tail = |log: &PathBuf| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };

    // Reads stdout on a thread (and keeps draining it) until the health URL is printed.
    let stdout = serve.0.stdout.take().context("serve stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = started + Duration::from_secs(180);
    let addr = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(line) => {
                if let Some(url) = line.trim().strip_prefix("http:") {
                    let url = url.trim();
                    let addr = url
                        .strip_prefix("http://")
                        .and_then(|u| u.strip_suffix("/healthz"))
                        .with_context(|| format!("unexpected health URL {url:?}"))?;
                    break addr.to_string();
                }
            }
            Err(_) => bail!(
                "gridprobe serve printed no health URL (exit: {:?}); its log:\n{}",
                serve.0.try_wait().ok().flatten(),
                log_tail(&log)
            ),
        }
    };
    loop {
        let entries = get_json(&addr, "/healthz")
            .ok()
            .and_then(|v| v["entries"].as_u64());
        if entries == Some(n as u64) {
            break;
        }
        if Instant::now() > deadline || serve.0.try_wait()?.is_some() {
            bail!(
                "/healthz never reported {n} entries (last: {entries:?}); serve log:\n{}",
                log_tail(&log)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready = started.elapsed();
    // Idle for a moment: allocations of the start-up settle, a few probes run.
    let mut rss = 0;
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(250));
        rss = rss.max(proc_status_bytes(pid, "VmRSS")?);
    }
    let hwm = proc_status_bytes(pid, "VmHWM")?;

    let pid_t = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill only sends a signal, to the child this function started and still owns.
    unsafe { libc::kill(pid_t, libc::SIGTERM) };
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    let stop_note = loop {
        if let Some(status) = serve.0.try_wait()? {
            break (!status.success()).then(|| {
                format!(
                    "serve exited with {status} after SIGTERM; log:\n{}",
                    log_tail(&log)
                )
            });
        }
        if Instant::now() > stop_deadline {
            break Some("serve did not stop within 30 s of SIGTERM; killed".to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Rss {
        rss,
        hwm,
        ready,
        stop_note,
    })
}

/// A `kB` line of /proc/PID/status, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// GET over a fresh connection (HTTP/1.1, `Connection: close`), body parsed as JSON.
fn get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(serde_json::from_str(body)?)
}

// ---------------------------------------------------------------------------------------------
// Reporting

/// Bytes this process has passed to write(2) so far (`wchar`): what SQLite writes to its WAL
/// and database, the main cost of an insert.
fn written_bytes() -> u64 {
    common::proc_io("wchar")
}

fn per_result(bytes: u64, n: usize) -> String {
    format!(
        "{:.1} KB written per result",
        bytes as f64 / n as f64 / 1000.0
    )
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn table(figures: &[Figure]) -> String {
    let mut s = String::from(
        "| pair | gridprobe | baseline | ratio | target | met? |\n|---|---|---|---|---|---|\n",
    );
    for f in figures {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            f.pair,
            f.ours,
            f.baseline,
            f.ratio.map_or("—".into(), |r| format!("{r:.2}")),
            f.target,
            match f.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a (scaled)",
            }
        );
    }
    s
}

/// The machine ([`common::hardware`]) and where temp files go.
fn machine() -> String {
    format!("{}; temp files on {}", common::hardware(), temp_fs())
}

fn temp_fs() -> String {
    let tmp = std::env::temp_dir();
    let tmp = std::fs::canonicalize(&tmp).unwrap_or(tmp);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, at, ty) = (f.next()?, f.next()?, f.next()?);
            tmp.starts_with(at)
                .then(|| (at.len(), format!("{ty} ({dev})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown file system".into(), |(_, d)| d)
}
