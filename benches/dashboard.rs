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

mod common;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::vo::{config_text, fill, site_name, HOUR};
use common::{env_or, percentile_ms};
use gridprobe_probes::outcome::unix_ms;
use gridprobe_results::matrix::{build_matrix, MatrixFilter};
use gridprobe_results::{spawn_writer, CellFilter, ResultStore, SqliteStore, WriterConfig};
use gridprobe_runner::http::{router, HttpState};
use tower::ServiceExt;

/// p99 target of the issue, server side.
const TARGET_MS: f64 = 200.0;

struct Opts {
    sites: usize,
    renders: usize,
    history_hours: i64,
}

fn opts() -> anyhow::Result<Opts> {
    let quick = std::env::args().any(|a| a == "--quick");
    Ok(Opts {
        sites: env_or("GRIDPROBE_BENCH_SITES", if quick { 100 } else { 1000 })?,
        renders: env_or("GRIDPROBE_BENCH_RENDERS", if quick { 20 } else { 100 })?.max(1),
        history_hours: env_or("GRIDPROBE_BENCH_HISTORY_HOURS", 24)?,
    })
}

struct Stats {
    p50: f64,
    p99: f64,
}

fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort();
    Stats {
        p50: percentile_ms(&times, 50.0),
        p99: percentile_ms(&times, 99.0),
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
    let plan = common::plan(&config_text(opts.sites))?;
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
    let rows = fill(&store, &plan, opts.history_hours, now).await?;
    println!(
        "store: {rows} results written in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    let store_dyn: Arc<dyn ResultStore> = store.clone();
    let (writer, _writer_task) = spawn_writer(store_dyn.clone(), WriterConfig::default());
    let (reload, _reload_rx) = tokio::sync::mpsc::channel(1);
    let app = router(HttpState {
        shared: gridprobe_runner::state::ServeState::new(plan, writer, vec![]),
        store: store_dyn.clone(),
        reload,
        metrics: gridprobe_runner::metrics::Metrics::new(),
        runs: gridprobe_runner::ondemand::RunManager::new(),
        notify: None,
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
    common::run_main(run(opts))
}
