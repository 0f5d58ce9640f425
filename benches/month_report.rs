//! A month availability report over a store the size of a large VO, against the cost of the
//! data's own scan: 1,000 service instances × 10 metrics × 30 days at one result every 15
//! minutes (28.8 million results), the report as `gridprobe report --period 2026-09` computes
//! it (`report::from_store` on the SQLite store), and, as the baseline, one SQL aggregate of the
//! same rows (`SELECT cell, status, count(*) … GROUP BY cell, status`, through the time index
//! or as a full scan, whichever is faster), which computes a much simpler figure (shares of
//! results, not time-weighted AND/OR of timelines).
//!
//! ```text
//! cargo bench --bench month_report              # 28.8 M results (generated once, then reused)
//! cargo bench --bench month_report -- --quick   # 100 instances (2.9 M results)
//! ```
//!
//! Environment: `GRIDPROBE_BENCH_INSTANCES` (default 1000), `GRIDPROBE_BENCH_DATA` (directory
//! of the generated store; default `~/.cache/gridprobe-bench`, as the other benches'),
//! `GRIDPROBE_BENCH_ROUNDS` (default 3).
//!
//! The data is generated through the store's own `insert` (so it has the store's real schema
//! and indexes) and kept: a later run with the same size and schema reuses it. Statuses persist
//! like real ones (each result keeps the previous status with probability 0.97, otherwise draws
//! from 85% OK, 6% WARNING, 5% CRITICAL, 2% UNKNOWN, 2% STANDBY), and start times carry 0–3 s of
//! jitter after their slot.
//!
//! A second measurement takes the same month with what a VO's monthly process adds: 24 applied
//! recomputations (whole-VO exclusions, forced OK on a site, excluded metrics, one a day) and
//! every site in one of 20 federations with a weight, so the report also computes the weighted
//! federation and tier means (`RESULT month_report_recomputed a_s=… b_s=…`, against the same
//! aggregate).
//!
//! Printed: the generation rate, the first report (which also fills the store's per-day cache
//! of closed days), the steady-state report (what `serve` and the CLI pay once the days are
//! closed), the aggregate, and a final `RESULT month_report a_s=… b_s=…` line (steady state vs
//! aggregate, median seconds) that `bench/compare` reads. Targets (report ≤ 2 s, ≤ 3 × the
//! aggregate) are reported, never asserted.
//!
//! With `GRIDPROBE_TEST_PG` (a server URL), the same data goes once into a PostgreSQL schema of
//! its own (`gridprobe_bench_month_<instances>_…`, kept and reused like the file; written
//! through `PgStore::insert` with the two secondary indexes of `results` dropped during the
//! fill and rebuilt from their own definitions after, ≈ 10 × faster), the same
//! report runs on `PgStore` (first report builds its per-day cache, then steady state), and a
//! `RESULT month_report_pg a_s=… b_s=… first_s=…` line compares it with the SQLite steady state
//! of the same run (targets: ≤ 2 s and ≤ 1.5 × SQLite). The two reports must be identical.

mod common;

use common::env_or;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridprobe_probes::{Outcome, ProbeResult, Status, Trigger};
use gridprobe_results::report::{self, parse_period};
use gridprobe_results::{CellFilter, NewResult, PgStore, ResultStore, SqliteStore};

const DAY_MS: i64 = 86_400_000;
const STEP_MS: i64 = 15 * 60_000;
const METRICS: usize = 10;
/// 2026-09-01T00:00:00Z: the month reported.
const MONTH_START_MS: i64 = 1_788_220_800_000;
/// Results start a day early, so the month's first hours have a preceding result.
const DAYS: i64 = 31;
const TARGET_S: f64 = 2.0;
const TARGET_RATIO: f64 = 3.0;
/// Bumped when the generated data changes, so an old data file is not reused.
const GENERATOR_VERSION: u32 = 1;

/// The VO: `instances` services (half CEs, half SEs, two of each per site), 10 probes per
/// flavour, every 15 minutes.
fn config_text(instances: usize, weighted: bool) -> String {
    let mut t = String::from("vo = \"bench\"\n[defaults]\ninterval = \"15m\"\ntimeout = \"5m\"\n");
    for site in 0..instances.div_ceil(4) {
        t.push_str(&format!(
            "\n[[site]]\nname = \"{}\"\ntier = {}\n",
            site_name(site),
            if site < 10 { 1 } else { 2 }
        ));
        if weighted {
            t.push_str(&format!(
                "federation = \"FED_{:02}\"\nweight = {}\n",
                site % 20,
                100 + site % 7 * 50
            ));
        }
        for (flavour, n) in [("CE", 2), ("SE", 2)] {
            for k in 0..n {
                if site * 4 + if flavour == "CE" { k } else { 2 + k } >= instances {
                    continue;
                }
                t.push_str(&format!(
                    "  [[site.service]]\n  flavour = \"{flavour}\"\n  hostname = \"{}\"\n",
                    host_name(site, flavour, k)
                ));
            }
        }
    }
    for flavour in ["CE", "SE"] {
        for m in 0..METRICS {
            t.push_str(&format!(
                "\n[[probe]]\nmetric = \"org.bench.{flavour}-{m}\"\nkind = \"tcp\"\nflavours = [\"{flavour}\"]\n  [probe.params]\n  port = 9\n"
            ));
        }
    }
    t
}

fn site_name(i: usize) -> String {
    format!("T2_BENCH_{i:04}")
}

fn host_name(site: usize, flavour: &str, k: usize) -> String {
    format!("{}{k}.site{site:04}.example.org", flavour.to_lowercase())
}

/// xorshift64*: deterministic data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn draw_status(rng: &mut Rng) -> Status {
    match rng.below(100) {
        0..=84 => Status::Ok,
        85..=90 => Status::Warning,
        91..=95 => Status::Critical,
        96..=97 => Status::Unknown,
        _ => Status::Standby,
    }
}

/// Fills the stores with every cell's results over `DAYS` days, in time order (as `serve`
/// would), in transactions of 50,000; each batch goes into every store at once (the SQLite file
/// and the PostgreSQL schema are filled in one pass when both are missing).
async fn generate(
    stores: &[&dyn ResultStore],
    config: &gridprobe_config::Config,
) -> anyhow::Result<u64> {
    let instances = config.instances();
    let cells: Vec<(String, String, String, String)> = instances
        .iter()
        .map(|i| {
            let site = &config.sites[i.site];
            let svc = &site.services[i.service];
            (
                site.name.clone(),
                svc.hostname.clone(),
                svc.flavour.clone(),
                config.probes[i.probe].metric.clone(),
            )
        })
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut status: Vec<Status> = cells.iter().map(|_| Status::Ok).collect();
    let steps = DAYS * DAY_MS / STEP_MS;
    let start = MONTH_START_MS - DAY_MS;
    let mut batch = Vec::with_capacity(50_000);
    let mut written = 0u64;
    let began = Instant::now();
    for step in 0..steps {
        for (c, (site, hostname, flavour, metric)) in cells.iter().enumerate() {
            if rng.below(100) >= 97 {
                status[c] = draw_status(&mut rng);
            }
            let st = status[c];
            batch.push(NewResult {
                result: ProbeResult {
                    metric: metric.clone(),
                    kind: "tcp".into(),
                    vo: "bench".into(),
                    site: site.clone(),
                    hostname: hostname.clone(),
                    flavour: flavour.clone(),
                    started_at_ms: start + step * STEP_MS + rng.below(3000) as i64,
                    duration_ms: 3 + rng.below(40),
                    outcome: Outcome::new(st, format!("{} connect to port 9", st.name())),
                    attempt: 1,
                    trigger: Trigger::Scheduled,
                },
                is_final: true,
            });
            if batch.len() == 50_000 {
                insert_all(stores, &batch).await?;
                written += batch.len() as u64;
                batch.clear();
            }
        }
        if step % (steps / 10).max(1) == 0 && step > 0 {
            eprintln!(
                "   generating: {:>3}% ({} results, {:.0}/s)",
                step * 100 / steps,
                written,
                written as f64 / began.elapsed().as_secs_f64()
            );
        }
    }
    if !batch.is_empty() {
        insert_all(stores, &batch).await?;
        written += batch.len() as u64;
    }
    Ok(written)
}

/// One batch into every store, concurrently.
async fn insert_all(stores: &[&dyn ResultStore], batch: &[NewResult]) -> anyhow::Result<()> {
    match stores {
        [a, b] => {
            let (x, y) = tokio::join!(a.insert(batch), b.insert(batch));
            x?;
            y?;
        }
        _ => {
            for s in stores {
                s.insert(batch).await?;
            }
        }
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    common::Spread::of(v).map_or(f64::NAN, |s| s.median)
}

/// The baseline: one aggregate over the month's rows, in SQLite itself (the bundled sqlite3
/// library, on the same file). The per-cell column of the store's schema is found, not
/// assumed, so the aggregate follows schema changes.
fn aggregate(
    path: &Path,
    since: i64,
    until: i64,
    full_scan: bool,
) -> anyhow::Result<(Duration, usize)> {
    let conn = rusqlite::Connection::open(path)?;
    let mut cols = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('results')")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            cols.push(r.get::<_, String>(0)?);
        }
    }
    let cell = if cols.iter().any(|c| c == "cell_id") {
        "cell_id".to_string()
    } else {
        "site, hostname, flavour, metric".to_string()
    };
    // The planner goes through the time index; on a month of most of the table a plain scan
    // is faster. Both are tried, and the faster is the baseline.
    let hint = if full_scan { " NOT INDEXED" } else { "" };
    let sql = format!(
        "SELECT {cell}, status, count(*) FROM results{hint} \
         WHERE started_at_ms >= ?1 AND started_at_ms < ?2 AND final = 1 GROUP BY {cell}, status"
    );
    let began = Instant::now();
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([since, until])?;
    let mut n = 0;
    while rows.next()?.is_some() {
        n += 1;
    }
    Ok((began.elapsed(), n))
}

async fn run() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let instances: usize = env_or("GRIDPROBE_BENCH_INSTANCES", if quick { 100 } else { 1000 })?;
    let rounds: usize = env_or("GRIDPROBE_BENCH_ROUNDS", 3)?.max(1);
    if instances == 0 {
        bail!("GRIDPROBE_BENCH_INSTANCES must be at least 1");
    }
    let text = config_text(instances, false);
    let loaded = gridprobe_config::load_str(Path::new("bench.toml"), &text);
    if !loaded.diagnostics.is_empty() {
        bail!("bench config rejected:\n{}", loaded.diagnostics);
    }
    let config = loaded.config;
    let dir = common::data_dir()?;
    let path = dir.join(format!(
        "month-{instances}-v{GENERATOR_VERSION}-s{}.sqlite",
        gridprobe_results::sqlite::SCHEMA_VERSION
    ));
    let ready = dir.join(format!(
        "{}.complete",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("month")
    ));
    let cells = config.instances().len();
    println!(
        "month report: {instances} service instances × {METRICS} metrics = {cells} cells, {DAYS} days every 15 min"
    );
    let mut pg = match std::env::var("GRIDPROBE_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(pg_connect(&url, instances).await?),
        _ => None,
    };
    if !ready.exists() {
        for stale in [
            path.clone(),
            path.with_extension("sqlite-wal"),
            path.with_extension("sqlite-shm"),
        ] {
            let _ = std::fs::remove_file(stale);
        }
        let store = SqliteStore::open(&path)?;
        // PostgreSQL's schema, when it is missing too, fills in the same pass.
        let pg_fill = match &pg {
            Some(p) if !p.complete => Some(pg_fill_begin(p).await?),
            _ => None,
        };
        let mut targets: Vec<&dyn ResultStore> = vec![&store];
        if let Some((pg_store, _)) = &pg_fill {
            targets.push(pg_store);
        }
        let began = Instant::now();
        let n = generate(&targets, &config).await?;
        let took = began.elapsed();
        println!(
            "   generated {n} results in {:.1}s ({:.0} results/s through SqliteStore::insert{})",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            if pg_fill.is_some() {
                " and PgStore::insert at once"
            } else {
                ""
            }
        );
        drop(store);
        if let (Some((pg_store, indexes)), Some(p)) = (pg_fill, pg.as_mut()) {
            drop(pg_store);
            pg_fill_end(p, &indexes).await?;
        }
        std::fs::write(&ready, n.to_string())?;
    } else {
        println!("   reusing {}", path.display());
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("   store file: {:.2} GB", size as f64 / 1e9);

    let period = parse_period("2026-09", MONTH_START_MS + 40 * DAY_MS)
        .map_err(|e| anyhow::anyhow!("period: {e}"))?;
    // Every run starts with no cached days, so that the first report measures building them.
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch("DELETE FROM report_days; DELETE FROM cell_day_runs;")
            .context("clearing the per-day cache (is the data file of an older schema?)")?;
    }
    let store = SqliteStore::open(&path)?;
    let mut report_times = Vec::new();
    let mut first = None;
    for round in 0..=rounds {
        let began = Instant::now();
        let r =
            report::from_store(&store, &config, None, &period, &CellFilter::default(), 0.9).await?;
        let took = began.elapsed().as_secs_f64();
        let known: usize = r
            .sites
            .iter()
            .filter(|s| s.figures.availability.is_some())
            .count();
        if known != r.sites.len() || r.sites.is_empty() {
            bail!(
                "the report has figures for {known} of {} sites: the data is not what was generated",
                r.sites.len()
            );
        }
        if round == 0 {
            println!(
                "   first report (fills the per-day cache): {took:.2}s  ({} sites, mean availability {:.4})",
                r.sites.len(),
                r.sites.iter().filter_map(|s| s.figures.availability).sum::<f64>() / r.sites.len() as f64
            );
            first = Some(took);
        } else {
            println!("   report:    {took:.3}s");
            report_times.push(took);
        }
    }
    // The monthly report (`report --format html|pdf|csv|json`, `/reports/{period}`): the same
    // read, the month and each of its days computed from it.
    let mut monthly_times = Vec::new();
    for _ in 0..rounds {
        let began = Instant::now();
        let m = gridprobe_results::monthly::from_store(
            &store,
            &config,
            None,
            &period,
            &CellFilter::default(),
            0.9,
            MONTH_START_MS + 40 * DAY_MS,
        )
        .await?;
        let took = began.elapsed().as_secs_f64();
        if m.sites.first().map(|s| s.days.len()) != Some(30) {
            bail!("the monthly report has no 30 days per site");
        }
        println!("   monthly report (with per-day strips): {took:.3}s");
        monthly_times.push(took);
    }
    let mut agg_times = Vec::new();
    let (planned, groups) = aggregate(&path, period.start_ms, period.end_ms, false)?;
    let (scanned, _) = aggregate(&path, period.start_ms, period.end_ms, true)?;
    println!(
        "   aggregate through the time index: {:.3}s, as a full scan: {:.3}s  ({groups} groups)",
        planned.as_secs_f64(),
        scanned.as_secs_f64()
    );
    let full_scan = scanned < planned;
    agg_times.push(planned.min(scanned).as_secs_f64());
    for _ in 1..rounds {
        let (took, _) = aggregate(&path, period.start_ms, period.end_ms, full_scan)?;
        println!("   aggregate: {:.3}s", took.as_secs_f64());
        agg_times.push(took.as_secs_f64());
    }
    let a = median(&mut report_times);
    let b = median(&mut agg_times);
    let sqlite_report =
        report::from_store(&store, &config, None, &period, &CellFilter::default(), 0.9).await?;
    let pg = match pg.as_mut() {
        Some(p) => Some(postgres_rounds(p, &config, rounds, &period, &sqlite_report).await?),
        None => {
            println!("   GRIDPROBE_TEST_PG not set: no PostgreSQL rows");
            None
        }
    };
    println!();
    println!("| measurement | seconds (median of {rounds}) | target | met? |");
    println!("|---|---:|---|---|");
    println!(
        "| month report, steady state | {a:.3} | ≤ {TARGET_S} s | {} |",
        if a <= TARGET_S { "yes" } else { "no" }
    );
    println!(
        "| month report, first (fills the day cache) | {:.3} | | |",
        first.unwrap_or(f64::NAN)
    );
    let c = median(&mut monthly_times);
    println!(
        "| monthly report with per-day strips, steady state | {c:.3} | ≤ {TARGET_S} s | {} |",
        if c <= TARGET_S { "yes" } else { "no" }
    );
    println!("| one GROUP BY aggregate (sqlite) | {b:.3} | | |");
    println!(
        "| ratio report ÷ aggregate | {:.2} | ≤ {TARGET_RATIO} | {} |",
        a / b,
        if a / b <= TARGET_RATIO { "yes" } else { "no" }
    );
    println!(
        "RESULT month_report a_s={a:.4} b_s={b:.4} first_s={:.4}",
        first.unwrap_or(f64::NAN)
    );

    // The same month with recomputations and weights applied (steady state: the days are
    // cached, the recomputations are laid over the cached runs at read time).
    let weighted =
        gridprobe_config::load_str(Path::new("bench.toml"), &config_text(instances, true));
    if !weighted.diagnostics.is_empty() {
        bail!("weighted bench config rejected:\n{}", weighted.diagnostics);
    }
    let weighted = weighted.config;
    let applied = add_recomputations(&store, &path, &weighted, instances).await?;
    let mut recomputed_times = Vec::new();
    for _ in 0..rounds {
        let began = Instant::now();
        let r = report::from_store(
            &store,
            &weighted,
            None,
            &period,
            &CellFilter::default(),
            0.9,
        )
        .await?;
        let took = began.elapsed().as_secs_f64();
        if r.recomputations.len() != applied || r.federations.len() != 20.min(r.sites.len()) {
            bail!(
                "the report applied {} of {applied} recomputations, {} federations",
                r.recomputations.len(),
                r.federations.len()
            );
        }
        println!(
            "   report with {applied} recomputations and weights: {took:.3}s (weighted Tier-2 availability {:.4})",
            r.tiers
                .iter()
                .find(|t| t.tier == 2)
                .and_then(|t| t.weighted_availability)
                .unwrap_or(f64::NAN)
        );
        recomputed_times.push(took);
    }
    let c = median(&mut recomputed_times);
    println!(
        "| month report with {applied} recomputations and weights, steady state | {c:.3} | ≤ {TARGET_S} s | {} |",
        if c <= TARGET_S { "yes" } else { "no" }
    );
    println!("RESULT month_report_recomputed a_s={c:.4} b_s={b:.4}");
    if let Some((pg_steady, pg_first)) = pg {
        println!(
            "| month report on PostgreSQL, steady state | {pg_steady:.3} | ≤ {TARGET_S} s, ≤ {PG_TARGET_RATIO} × SQLite | {} |",
            if pg_steady <= TARGET_S && pg_steady <= PG_TARGET_RATIO * a { "yes" } else { "no" }
        );
        println!("| month report on PostgreSQL, first (fills the day cache) | {pg_first:.3} | | |");
        println!("RESULT month_report_pg a_s={pg_steady:.4} b_s={a:.4} first_s={pg_first:.4}");
    }
    Ok(())
}

/// PostgreSQL steady state over SQLite's, at most this (target).
const PG_TARGET_RATIO: f64 = 1.5;

/// The PostgreSQL side of the bench: its kept schema, and whether the data is in it.
struct PgBench {
    admin: tokio_postgres::Client,
    schema: String,
    store_config: tokio_postgres::Config,
    complete: bool,
}

/// Connects to `url` and finds the bench schema of this size and schema version.
async fn pg_connect(url: &str, instances: usize) -> anyhow::Result<PgBench> {
    let admin_config: tokio_postgres::Config = url.parse().context("GRIDPROBE_TEST_PG")?;
    let (admin, connection) = admin_config
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to GRIDPROBE_TEST_PG")?;
    tokio::spawn(connection);
    let schema = format!(
        "gridprobe_bench_month_{instances}_v{GENERATOR_VERSION}_s{}",
        gridprobe_results::postgres::SCHEMA_VERSION
    );
    let complete: bool = admin
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{schema}.bench_complete")],
        )
        .await?
        .get(0);
    let mut store_config = admin_config;
    store_config.options(format!("-c search_path={schema}"));
    Ok(PgBench {
        admin,
        schema,
        store_config,
        complete,
    })
}

/// The secondary indexes of the bench schema's `results`: (name, definition).
async fn pg_indexes(pg: &PgBench) -> anyhow::Result<Vec<(String, String)>> {
    Ok(pg
        .admin
        .query(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 \
             AND tablename = 'results' AND indexname <> 'results_pkey' ORDER BY indexname",
            &[&pg.schema],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Starts filling the bench schema: created afresh by `PgStore` itself, then the secondary
/// indexes of `results` dropped. The store's own `insert` then writes every row (cells, ids,
/// `latest`, the day cache's generations: exactly what `serve` would leave); maintained row by
/// row, the per-cell index scatters and the fill ran at 10–16 k results/s (≈ 45 min for
/// 28.8 M). [`pg_fill_end`] rebuilds the indexes from their own definitions: the same entries,
/// packed as after a `REINDEX`. Returns the store and the dropped indexes.
async fn pg_fill_begin(pg: &PgBench) -> anyhow::Result<(PgStore, Vec<(String, String)>)> {
    let schema = &pg.schema;
    pg.admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await?;
    let store = PgStore::open_config(pg.store_config.clone(), 4).await?;
    let indexes = pg_indexes(pg).await?;
    if indexes.is_empty() {
        bail!("no secondary indexes on {schema}.results: has the store's schema changed?");
    }
    for (name, _) in &indexes {
        pg.admin
            .batch_execute(&format!("DROP INDEX {schema}.{name}"))
            .await?;
    }
    Ok((store, indexes))
}

/// Ends the fill: rebuilds the dropped indexes (and checks they are the store's again),
/// vacuums and analyses `results` (as autovacuum would have), and marks the schema complete.
async fn pg_fill_end(pg: &mut PgBench, indexes: &[(String, String)]) -> anyhow::Result<()> {
    let schema = &pg.schema;
    let began = Instant::now();
    pg.admin
        .batch_execute("SET maintenance_work_mem = '512MB'")
        .await?;
    for (_, def) in indexes {
        pg.admin.batch_execute(def).await?;
    }
    let rebuilt = pg_indexes(pg).await?;
    if rebuilt != indexes {
        bail!("the rebuilt indexes of {schema}.results differ from the store's: {rebuilt:?}");
    }
    // Separate calls: VACUUM refuses to run in the implicit transaction of a batch.
    pg.admin
        .batch_execute(&format!("VACUUM ANALYZE {schema}.results"))
        .await?;
    pg.admin
        .batch_execute(&format!("CREATE TABLE {schema}.bench_complete ()"))
        .await?;
    println!(
        "   PostgreSQL: rebuilt {} indexes and vacuumed in {:.1}s",
        indexes.len(),
        began.elapsed().as_secs_f64()
    );
    pg.complete = true;
    Ok(())
}

/// The same month on PostgreSQL: fills the bench schema if it is not yet, clears the per-day
/// cache, runs the report `rounds + 1` times (the first builds the cache) and checks it equals
/// SQLite's. Returns the steady state's median and the first report, in seconds.
async fn postgres_rounds(
    pg: &mut PgBench,
    config: &gridprobe_config::Config,
    rounds: usize,
    period: &report::Period,
    sqlite_report: &report::Report,
) -> anyhow::Result<(f64, f64)> {
    let schema = pg.schema.clone();
    if !pg.complete {
        let (store, indexes) = pg_fill_begin(pg).await?;
        let began = Instant::now();
        let n = generate(&[&store], config).await?;
        let took = began.elapsed();
        println!(
            "   PostgreSQL: generated {n} results in {:.1}s ({:.0} results/s through PgStore::insert, secondary indexes off)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
        drop(store);
        pg_fill_end(pg, &indexes).await?;
    } else {
        println!("   PostgreSQL: using schema {schema}");
    }
    pg.admin
        .batch_execute(&format!(
            "DELETE FROM {schema}.report_days; DELETE FROM {schema}.cell_day_runs"
        ))
        .await?;
    let store = PgStore::open_config(pg.store_config.clone(), 4).await?;
    let mut times = Vec::new();
    let mut first = f64::NAN;
    for round in 0..=rounds {
        let began = Instant::now();
        let r =
            report::from_store(&store, config, None, period, &CellFilter::default(), 0.9).await?;
        let took = began.elapsed().as_secs_f64();
        if serde_json::to_string(&r)? != serde_json::to_string(sqlite_report)? {
            bail!("the PostgreSQL report differs from SQLite's");
        }
        if round == 0 {
            println!("   PostgreSQL first report (fills the per-day cache): {took:.2}s");
            first = took;
        } else {
            println!("   PostgreSQL report: {took:.3}s");
            times.push(took);
        }
    }
    Ok((median(&mut times), first))
}

/// Stores and approves 24 recomputations over the month, one a day from 02:00 to 08:00:
/// whole-VO exclusions, forced OK on one site, excluded metrics, in turn (earlier ones of a
/// previous run are cleared first). Returns how many are applied.
async fn add_recomputations(
    store: &SqliteStore,
    path: &Path,
    config: &gridprobe_config::Config,
    instances: usize,
) -> anyhow::Result<usize> {
    use gridprobe_results::recompute::{Change, RecomputationRequest, Scope, StepKind};
    use gridprobe_results::recompute_flow;
    {
        let conn = rusqlite::Connection::open(path)?;
        conn.execute_batch("DELETE FROM recomputation_steps; DELETE FROM recomputations;")?;
    }
    let now = MONTH_START_MS + 40 * DAY_MS;
    let sites = instances.div_ceil(4);
    let mut applied = 0;
    for k in 0..24i64 {
        let start_ms = MONTH_START_MS + k * DAY_MS + 2 * 3_600_000;
        let (scope, change) = match k % 3 {
            0 => (Scope::default(), Change::Exclude),
            1 => (
                Scope {
                    sites: vec![site_name(usize::try_from(k).unwrap_or(0) % sites)],
                    ..Scope::default()
                },
                Change::Force { status: Status::Ok },
            ),
            _ => (
                Scope {
                    metrics: vec![format!("org.bench.CE-{}", k % 10)],
                    ..Scope::default()
                },
                Change::Exclude,
            ),
        };
        let request = RecomputationRequest {
            start_ms,
            end_ms: start_ms + 6 * 3_600_000,
            reason: format!("bench recomputation {k}"),
            requester: "bench".into(),
            scope,
            change,
        };
        let r = recompute_flow::request(store, config, request, now)
            .await?
            .map_err(|e| anyhow::anyhow!("request refused: {e}"))?;
        recompute_flow::decide(store, r.id, StepKind::Approved, "bench", "", now)
            .await?
            .map_err(|e| anyhow::anyhow!("approval refused: {e}"))?;
        applied += 1;
    }
    Ok(applied)
}

fn main() -> ExitCode {
    common::run_main(run())
}
