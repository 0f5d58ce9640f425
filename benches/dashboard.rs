//! Server render time of the dashboard's morning table (`GET /`) on a 1,000-site VO, against
//! baselines measured in the same run on the same store: reading the latest results and
//! building the matrix, and the same serialized to JSON (what `gridprobe matrix --format json`
//! and the matrix API pay). Ratios carry from machine to machine; absolute times much less.
//!
//! ```text
//! cargo bench --bench dashboard                 # 1,000 sites, 24 h of hourly history, 100 renders
//! cargo bench --bench dashboard -- --quick      # 100 sites, 20 renders (smoke run)
//! ```
//!
//! Environment: `GRIDPROBE_BENCH_SITES` (default 1000), `GRIDPROBE_BENCH_RENDERS` (default 100),
//! `GRIDPROBE_BENCH_HISTORY_HOURS` (hourly results per cell before the latest; default 24).
//!
//! Requests go through the service's whole router (`gridprobe_runner::http::router`) with
//! `tower::ServiceExt::oneshot`, so a figure is the server time of a request: store reads,
//! matrix, site statuses, HTML, middleware; not the network. The first request is reported on
//! its own: it computes the 24-hour site statuses that later requests reuse (see
//! `dashboard::STATUS_TTL`). The target (≤ 200 ms at p99) is reported, never asserted.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use gridprobe_probes::outcome::unix_ms;
use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Status, Trigger};
use gridprobe_results::matrix::{build_matrix, MatrixFilter};
use gridprobe_results::{
    spawn_writer, CellFilter, NewResult, ResultStore, SqliteStore, WriterConfig,
};
use gridprobe_runner::http::{router, HttpState};
use gridprobe_runner::schedule::Plan;
use tower::ServiceExt;

/// Probes per flavour: six on compute elements, four on storage: ~10 columns.
const CE_PROBES: [&str; 6] = [
    "CE-job-submit",
    "CE-lhcb-install",
    "CE-lhcb-os",
    "CE-lhcb-queues",
    "CE-lhcb-swarea",
    "CE-lhcb-conddb",
];
const SE_PROBES: [&str; 4] = ["SE-put", "SE-get", "SE-del", "SE-space"];
/// p99 target of the issue, server side.
const TARGET_MS: f64 = 200.0;
const HOUR: i64 = 3_600_000;

struct Opts {
    sites: usize,
    renders: usize,
    history_hours: i64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v} is not a valid number")),
        Err(_) => Ok(default),
    }
}

fn opts() -> anyhow::Result<Opts> {
    let quick = std::env::args().any(|a| a == "--quick");
    Ok(Opts {
        sites: env_or("GRIDPROBE_BENCH_SITES", if quick { 100 } else { 1000 })?,
        renders: env_or("GRIDPROBE_BENCH_RENDERS", if quick { 20 } else { 100 })?.max(1),
        history_hours: env_or("GRIDPROBE_BENCH_HISTORY_HOURS", 24)?,
    })
}

fn site_name(i: usize) -> String {
    format!("T{}_SITE{i:04}", tier_of(i))
}

/// One Tier-0, a few dozen Tier-1s, then Tier-2s and Tier-3s.
fn tier_of(i: usize) -> u8 {
    match i {
        0 => 0,
        i if i % 40 == 1 => 1,
        i if i % 3 == 0 => 3,
        _ => 2,
    }
}

/// The VO: every site has two CEs and one SE; ten sites are in a declared outage.
fn config_text(sites: usize) -> String {
    let mut t = String::from("vo = \"bench\"\n[defaults]\ninterval = \"1h\"\ntimeout = \"5m\"\n");
    for i in 0..sites {
        let name = site_name(i);
        let host = format!("site{i:04}.example.org");
        let _ = write!(
            t,
            "\n[[site]]\nname = \"{name}\"\ntier = {tier}\n\
             [[site.service]]\nflavour = \"CE\"\nhostname = \"ce01.{host}\"\n\
             [[site.service]]\nflavour = \"CE\"\nhostname = \"ce02.{host}\"\n\
             [[site.service]]\nflavour = \"SE\"\nhostname = \"se.{host}\"\n",
            tier = tier_of(i)
        );
    }
    for (flavour, probes) in [("CE", &CE_PROBES[..]), ("SE", &SE_PROBES[..])] {
        for p in probes {
            let _ = write!(
                t,
                "\n[[probe]]\nmetric = \"org.bench.{p}\"\nkind = \"nagios\"\nflavours = [\"{flavour}\"]\n\
                 [probe.params]\ncommand = \"/bin/true\"\n"
            );
        }
    }
    for i in (7..sites).step_by(sites.max(10) / 10) {
        let _ = write!(
            t,
            "\n[[downtime]]\nsite = \"{}\"\nstart = \"2000-01-01 00:00\"\nend = \"2999-01-01 00:00\"\n\
             classification = \"scheduled\"\nreason = \"bench outage\"\n",
            site_name(i)
        );
    }
    t
}

fn plan(text: &str) -> anyhow::Result<Plan> {
    let loaded = gridprobe_config::load_str(Path::new("bench.toml"), text);
    if !loaded.diagnostics.is_empty() {
        bail!(
            "generated configuration is invalid:\n{}",
            loaded.diagnostics
        );
    }
    let (probes, diagnostics) = gridprobe_probes::registry::build_all(&loaded.config);
    if !diagnostics.is_empty() {
        bail!("generated probes do not build:\n{diagnostics}");
    }
    Ok(Plan {
        config: Arc::new(loaded.config),
        probes: Arc::new(probes),
    })
}

/// A small deterministic generator (xorshift), so every run measures the same store.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Mostly OK, as a real morning: 85% OK, 6% WARNING, 5% CRITICAL, 2% UNKNOWN, 2% STANDBY.
    fn status(&mut self) -> Status {
        match self.next() % 100 {
            0..=84 => Status::Ok,
            85..=90 => Status::Warning,
            91..=95 => Status::Critical,
            96..=97 => Status::Unknown,
            _ => Status::Standby,
        }
    }
}

/// Fills the store: `history_hours` hourly results per cell, then the latest; every 50th site's
/// latest is three hours old (MISSING in the matrix).
async fn fill(store: &SqliteStore, plan: &Plan, opts: &Opts, now: i64) -> anyhow::Result<usize> {
    let config = &plan.config;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut batch = Vec::with_capacity(10_000);
    let mut total = 0;
    for hours_ago in (0..=opts.history_hours).rev() {
        for inst in config.instances() {
            let site = &config.sites[inst.site];
            let svc = &site.services[inst.service];
            let probe = &config.probes[inst.probe];
            let stale = inst.site % 50 == 3;
            if stale && hours_ago < 3 {
                continue;
            }
            let status = rng.status();
            let started = now - hours_ago * HOUR - 60_000 - (rng.next() % 600_000) as i64;
            let summary = format!(
                "{} {}: job {} finished in {} s on {}",
                probe.short,
                status.name(),
                rng.next() % 100_000,
                rng.next() % 300,
                svc.hostname
            );
            batch.push(NewResult {
                result: ProbeResult {
                    metric: probe.metric.clone(),
                    kind: "nagios".into(),
                    vo: config.vo.clone(),
                    site: site.name.clone(),
                    hostname: svc.hostname.clone(),
                    flavour: svc.flavour.clone(),
                    started_at_ms: started,
                    duration_ms: 1200,
                    outcome: Outcome::new(status, summary)
                        .with_details(format!(
                            "submitted to {}\nwaiting 12 s\nrunning\noutput: 412 lines\ncleanup done",
                            svc.hostname
                        ))
                        .with_perfdata(vec![Perfdatum::new("time", 41.5, "s")]),
                    attempt: 1,
                    trigger: Trigger::Scheduled,
                },
                is_final: true,
            });
            if batch.len() == batch.capacity() {
                total += store.insert(&batch).await?.len();
                batch.clear();
            }
        }
    }
    total += store.insert(&batch).await?.len();
    Ok(total)
}

/// p-th percentile (0–100) of sorted durations, in ms.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

struct Stats {
    p50: f64,
    p99: f64,
}

fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort();
    Stats {
        p50: percentile(&times, 50.0),
        p99: percentile(&times, 99.0),
    }
}

/// One GET through the router: server time and body size.
async fn get(app: &axum::Router, uri: &str) -> anyhow::Result<(Duration, usize)> {
    get_body(app, uri).await.map(|(d, b)| (d, b.len()))
}

/// One GET through the router: server time and body.
async fn get_body(app: &axum::Router, uri: &str) -> anyhow::Result<(Duration, axum::body::Bytes)> {
    let start = Instant::now();
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty())?)
        .await
        .context("router")?;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 256 << 20).await?;
    let elapsed = start.elapsed();
    if status != StatusCode::OK {
        bail!(
            "GET {uri}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(2000)])
        );
    }
    Ok((elapsed, body))
}

async fn times(app: &axum::Router, uri: &str, n: usize) -> anyhow::Result<(Stats, usize)> {
    let mut t = Vec::with_capacity(n);
    let mut size = 0;
    for _ in 0..n {
        let (d, s) = get(app, uri).await?;
        t.push(d);
        size = s;
    }
    Ok((stats(t), size))
}

async fn run(opts: Opts) -> anyhow::Result<()> {
    let plan = plan(&config_text(opts.sites))?;
    let config = plan.config.clone();
    let cells = config.instances().len();
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("bench.sqlite"))?);
    let now = unix_ms(std::time::SystemTime::now());
    println!(
        "== dashboard: {} sites, {} probes, {} cells, {} h of hourly history; {} renders",
        config.sites.len(),
        config.probes.len(),
        cells,
        opts.history_hours,
        opts.renders
    );
    let filled = Instant::now();
    let rows = fill(&store, &plan, &opts, now).await?;
    println!(
        "store: {rows} results written in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    let store_dyn: Arc<dyn ResultStore> = store.clone();
    let (writer, _writer_task) = spawn_writer(store_dyn.clone(), WriterConfig::default());
    let (reload, _reload_rx) = tokio::sync::mpsc::channel(1);
    let app = router(HttpState {
        shared: gridprobe_runner::service::Shared::new(plan, writer, vec![]),
        store: store_dyn.clone(),
        reload,
        metrics: gridprobe_runner::metrics::Metrics::new(),
        runs: gridprobe_runner::ondemand::RunManager::new(),
    });

    // Baseline and page alternate, after one warm-up each, so that neither gets a warmer cache
    // than the other. The first request of the page is timed on its own (site statuses).
    let filter = CellFilter {
        vo: Some(config.vo.clone()),
        ..CellFilter::default()
    };
    let baseline = || async {
        let start = Instant::now();
        let latest = store_dyn.latest(&filter).await?;
        let now = unix_ms(std::time::SystemTime::now());
        let m = build_matrix(&config, &latest, now, &MatrixFilter::default());
        let built = start.elapsed();
        let text = serde_json::to_string(&m)?;
        anyhow::Ok((built, start.elapsed(), text.len()))
    };
    // Where the time of a matrix goes, for the record (median of five).
    let mut parts: [Vec<Duration>; 4] = Default::default();
    for _ in 0..5 {
        let now = unix_ms(std::time::SystemTime::now());
        let t = Instant::now();
        let latest = store_dyn.latest(&filter).await?;
        parts[0].push(t.elapsed());
        let t = Instant::now();
        let _m = build_matrix(&config, &latest, now, &MatrixFilter::default());
        parts[1].push(t.elapsed());
        let t = Instant::now();
        let cells = store_dyn
            .timelines(now - 24 * HOUR, now, &CellFilter::default())
            .await?;
        parts[2].push(t.elapsed());
        let t = Instant::now();
        let period = gridprobe_results::report::Period {
            start_ms: now - 24 * HOUR,
            end_ms: now,
            label: "24h".into(),
        };
        gridprobe_results::report::compute(&config, None, &period, &cells, &[], 0.9)
            .map_err(|e| anyhow::anyhow!(e))?;
        parts[3].push(t.elapsed());
    }
    let [latest_t, build_t, timelines_t, report_t] = parts.map(|v| stats(v).p50);

    let (cold, _) = get(&app, "/").await?;
    // The statuses are computed in the background: measure pages once they are shown.
    let computed = Instant::now();
    loop {
        let (_, body) = get_body(&app, "/").await?;
        if !String::from_utf8_lossy(&body).contains("ss-pending") {
            break;
        }
        if computed.elapsed() > Duration::from_secs(120) {
            bail!("site statuses not computed within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statuses_ready = computed.elapsed() + cold;
    baseline().await?;
    let mut build = Vec::with_capacity(opts.renders);
    let mut json = Vec::with_capacity(opts.renders);
    let mut page = Vec::with_capacity(opts.renders);
    let (mut json_size, mut html_size) = (0, 0);
    for _ in 0..opts.renders {
        let (b, j, size) = baseline().await?;
        build.push(b);
        json.push(j);
        json_size = size;
        let (d, size) = get(&app, "/").await?;
        page.push(d);
        html_size = size;
    }
    let (build, json, html) = (stats(build), stats(json), stats(page));
    let (tier, _) = times(&app, "/?tier=1", opts.renders.min(20)).await?;
    let (site, _) = times(
        &app,
        &format!("/sites/{}", site_name(1)),
        opts.renders.min(20),
    )
    .await?;
    let (reasons, _) = times(&app, "/reasons", opts.renders.min(10)).await?;

    println!();
    println!("| measurement | p50 ms | p99 ms | size |");
    println!("|---|---:|---:|---:|");
    println!(
        "| baseline: latest + build_matrix | {:.1} | {:.1} | |",
        build.p50, build.p99
    );
    println!(
        "| baseline: latest + build_matrix + JSON | {:.1} | {:.1} | {:.1} MB |",
        json.p50,
        json.p99,
        json_size as f64 / 1e6
    );
    println!(
        "| `GET /` first request (site statuses start in the background; waits ≤ 150 ms) | {:.1} | | |",
        cold.as_secs_f64() * 1000.0
    );
    println!(
        "| site statuses shown after (24 h report of every site, then cached 60 s) | {:.1} | | |",
        statuses_ready.as_secs_f64() * 1000.0
    );
    println!(
        "| `GET /` | {:.1} | {:.1} | {:.1} MB |",
        html.p50,
        html.p99,
        html_size as f64 / 1e6
    );
    println!("| `GET /?tier=1` | {:.1} | {:.1} | |", tier.p50, tier.p99);
    println!(
        "| `GET /sites/{{site}}` | {:.1} | {:.1} | |",
        site.p50, site.p99
    );
    println!(
        "| `GET /reasons` (24 h) | {:.1} | {:.1} | |",
        reasons.p50, reasons.p99
    );
    println!(
        "| parts: store.latest {latest_t:.1}, build_matrix {build_t:.1}, 24 h timelines {timelines_t:.1}, 24 h report {report_t:.1} | | | |"
    );
    println!();
    println!(
        "ratio GET / ÷ JSON baseline (p50): {:.2}; GET / ÷ build baseline (p50): {:.2}",
        html.p50 / json.p50,
        html.p50 / build.p50
    );
    println!(
        "target: GET / p99 ≤ {TARGET_MS:.0} ms: {} ({:.1} ms)",
        if html.p99 <= TARGET_MS {
            "met"
        } else {
            "NOT met"
        },
        html.p99
    );
    Ok(())
}

fn main() -> ExitCode {
    let opts = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Two workers, as on the shared machines the service runs on.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
