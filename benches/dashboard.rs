//! The dashboard's morning table (`GET /`) on a VO of 100,000 schedule entries (1,000 sites of
//! sixteen CEs and four SEs, five probes per service: `benches/common/vo.rs`), measured two ways:
//!
//! 1. In process, through the service's whole router (`gridprobe_runner::http::router` with
//!    `tower::ServiceExt::oneshot`: store reads, matrix, site statuses, HTML, middleware; not
//!    the network). Renders (the page cache emptied before each request,
//!    `dashboard::forget_rendered_pages`) are reported apart from cached pages, p50 and p99,
//!    with a baseline measured on the same store in the same run: what a render cost before
//!    the in-memory latest states, `store.latest` + `build_matrix` (no HTML).
//! 2. A real `gridprobe serve` on the same store file (`CARGO_BIN_EXE_gridprobe`), once per
//!    round: the time from its start to the first `GET /` showing site statuses, then its RSS
//!    after sustained use: four clients requesting matrix pages (every filter combination, so
//!    that most are renders) and site pages for `GRIDPROBE_BENCH_LOAD_SECONDS`, while serve
//!    runs its own 100,000 entries; the largest VmRSS over the 2 s after.
//!
//! ```text
//! cargo bench --bench dashboard                 # 1,000 sites (100,000 entries), 24 h of hourly history
//! cargo bench --bench dashboard -- --quick      # 100 sites (10,000 entries), smoke run
//! ```
//!
//! Environment: `GRIDPROBE_BENCH_SITES` (default 1000), `GRIDPROBE_BENCH_RENDERS` (default 100),
//! `GRIDPROBE_BENCH_HISTORY_HOURS` (hourly results per cell before the latest; default 24),
//! `GRIDPROBE_BENCH_ROUNDS` (serve rounds; default 1), `GRIDPROBE_BENCH_LOAD_SECONDS` (default
//! 20). Besides the table, one `RESULT dashboard ...` line and one `RESULT dashboard_serve ...`
//! line per round are printed for `bench/compare`. Targets (renders p99 < 100 ms, first
//! statuses < 2 s, RSS ≤ 150 MB) are reported, never asserted.

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

/// p99 target of a render (page cache empty) at 100,000 entries.
const RENDER_TARGET_MS: f64 = 100.0;
/// p99 target of a cached page.
const CACHED_TARGET_MS: f64 = 200.0;
/// First site statuses after start-up.
const STATUSES_TARGET_S: f64 = 2.0;
/// RSS after sustained use.
const RSS_TARGET_MB: f64 = 150.0;

struct Opts {
    sites: usize,
    renders: usize,
    history_hours: i64,
    rounds: usize,
    load_seconds: u64,
}

fn opts() -> anyhow::Result<Opts> {
    let quick = std::env::args().any(|a| a == "--quick");
    Ok(Opts {
        sites: env_or("GRIDPROBE_BENCH_SITES", if quick { 100 } else { 1000 })?,
        renders: env_or("GRIDPROBE_BENCH_RENDERS", if quick { 20 } else { 100 })?.max(1),
        history_hours: env_or("GRIDPROBE_BENCH_HISTORY_HOURS", 24)?,
        rounds: env_or("GRIDPROBE_BENCH_ROUNDS", 1)?.max(1),
        load_seconds: env_or("GRIDPROBE_BENCH_LOAD_SECONDS", if quick { 5 } else { 20 })?.max(1),
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

/// `n` requests of `uri`; with `render`, the page cache is emptied before each, so that every
/// request renders.
async fn times(
    app: &axum::Router,
    uri: &str,
    n: usize,
    render: bool,
) -> anyhow::Result<(Stats, usize)> {
    let mut t = Vec::with_capacity(n);
    let mut size = 0;
    for _ in 0..n {
        if render {
            gridprobe_runner::dashboard::forget_rendered_pages();
        }
        let (d, s) = get(app, uri).await?;
        t.push(d);
        size = s;
    }
    Ok((stats(t), size))
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

async fn run(opts: Opts) -> anyhow::Result<()> {
    let text = config_text(opts.sites);
    let plan = common::plan(&text)?;
    let config = plan.config.clone();
    let cells = config.instances().len();
    let dir = tempfile::tempdir()?;
    let store_path = dir.path().join("bench.sqlite");
    let store = Arc::new(SqliteStore::open(&store_path)?);
    let now = unix_ms(std::time::SystemTime::now());
    println!("machine: {}", common::machine());
    println!(
        "== dashboard: {} sites, {} probes, {} schedule entries (cells), {} h of hourly history; {} renders",
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
    let (writer, writer_task) = spawn_writer(store_dyn.clone(), WriterConfig::default());
    let (reload, _reload_rx) = tokio::sync::mpsc::channel(1);
    let started = Instant::now();
    let state = HttpState {
        shared: gridprobe_runner::state::ServeState::new(plan, writer, vec![]),
        store: store_dyn.clone(),
        reload,
        metrics: gridprobe_runner::metrics::Metrics::new(),
        runs: gridprobe_runner::ondemand::RunManager::new(),
        notify: None,
    };
    gridprobe_runner::dashboard::prepare(&state);
    let app = router(state);

    // The statuses are computed in the background from the start (`dashboard::prepare`, as
    // serve does): the first page showing them.
    let (cold, _) = get(&app, "/").await?;
    loop {
        let (_, body) = get_body(&app, "/").await?;
        if !String::from_utf8_lossy(&body).contains("ss-pending") {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("site statuses not computed within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statuses_ready = started.elapsed();

    // Where the time of the old render went, for the record, and the baseline: the store's
    // latest results read whole and the full matrix built (no HTML), as every render did
    // before the in-memory latest states.
    let filter = CellFilter {
        vo: Some(config.vo.clone()),
        ..CellFilter::default()
    };
    let mut parts: [Vec<Duration>; 5] = Default::default();
    let baseline_runs = opts.renders.min(20);
    for _ in 0..baseline_runs {
        let now = unix_ms(std::time::SystemTime::now());
        let t = Instant::now();
        let latest = store_dyn.latest(&filter).await?;
        parts[0].push(t.elapsed());
        let t2 = Instant::now();
        let _m = build_matrix(&config, &latest, now, &MatrixFilter::default());
        parts[1].push(t2.elapsed());
        parts[4].push(t.elapsed());
        drop(latest);
        let t = Instant::now();
        let changes = store_dyn.latest_changes(0).await?;
        parts[2].push(t.elapsed());
        let t = Instant::now();
        let _ = store_dyn.latest_changes(changes.mark).await?;
        parts[3].push(t.elapsed());
    }
    let [latest_t, build_t, full_changes_t, delta_t, _] = parts.clone().map(|v| stats(v).p50);
    let baseline = stats(std::mem::take(&mut parts[4]));
    let t = Instant::now();
    let period_cells = store_dyn
        .run_timelines(
            now - 24 * HOUR,
            now,
            &CellFilter::default(),
            gridprobe_results::report::merge_gap_ms(&config),
        )
        .await?;
    let runs_t = t.elapsed().as_secs_f64() * 1000.0;
    drop(period_cells);

    let (render, html_size) = times(&app, "/", opts.renders, true).await?;
    let (cached, _) = times(&app, "/", opts.renders, false).await?;
    let (tier, _) = times(&app, "/?tier=1", opts.renders.min(20), true).await?;
    let (flavour, _) = times(&app, "/?flavour=SE", opts.renders.min(20), true).await?;
    let (site, _) = times(
        &app,
        &format!("/sites/{}", site_name(1)),
        opts.renders.min(20),
        false,
    )
    .await?;
    let (reasons, _) = times(&app, "/reasons", opts.renders.min(10), false).await?;

    println!();
    println!("| measurement | p50 ms | p99 ms | size |");
    println!("|---|---:|---:|---:|");
    println!(
        "| baseline (the render before): store.latest + build_matrix, {baseline_runs} runs | {:.1} | {:.1} | |",
        baseline.p50, baseline.p99
    );
    println!(
        "| `GET /` first request (site statuses being computed; waits ≤ 150 ms) | {:.1} | | |",
        cold.as_secs_f64() * 1000.0
    );
    println!(
        "| site statuses shown, from the router's creation (24 h report of every site) | {:.1} | | |",
        statuses_ready.as_secs_f64() * 1000.0
    );
    println!(
        "| `GET /` rendered (page cache emptied before each) | {:.1} | {:.1} | {:.1} MB |",
        render.p50,
        render.p99,
        html_size as f64 / 1e6
    );
    println!(
        "| `GET /` cached | {:.1} | {:.1} | |",
        cached.p50, cached.p99
    );
    println!(
        "| `GET /?tier=1` rendered | {:.1} | {:.1} | |",
        tier.p50, tier.p99
    );
    println!(
        "| `GET /?flavour=SE` rendered | {:.1} | {:.1} | |",
        flavour.p50, flavour.p99
    );
    println!(
        "| `GET /sites/{{site}}` | {:.1} | {:.1} | |",
        site.p50, site.p99
    );
    println!(
        "| `GET /reasons` (24 h) | {:.1} | {:.1} | |",
        reasons.p50, reasons.p99
    );
    println!(
        "| parts (p50): store.latest {latest_t:.1}, build_matrix {build_t:.1}; latest_changes whole {full_changes_t:.1}, since the last {delta_t:.1}; 24 h run timelines {runs_t:.1} | | | |"
    );
    println!();
    println!(
        "target: rendered GET / p99 < {RENDER_TARGET_MS:.0} ms: {} ({:.1} ms; baseline {:.1} ms)",
        met(render.p99 < RENDER_TARGET_MS),
        render.p99,
        baseline.p99
    );
    println!(
        "target: cached GET / p99 ≤ {CACHED_TARGET_MS:.0} ms: {} ({:.1} ms)",
        met(cached.p99 <= CACHED_TARGET_MS),
        cached.p99
    );
    println!(
        "RESULT dashboard entries={cells} render_p50={:.2} render_p99={:.2} cached_p50={:.2} cached_p99={:.2} tier_p99={:.2} baseline_p99={:.2} inprocess_statuses_s={:.3}",
        render.p50,
        render.p99,
        cached.p50,
        cached.p99,
        tier.p99,
        baseline.p99,
        statuses_ready.as_secs_f64()
    );
    drop(app);
    writer_task.abort();
    drop(store_dyn);
    drop(store);

    // 2. A real serve on the same store.
    let serve_config = dir.path().join("vo.toml");
    std::fs::write(&serve_config, &text)?;
    for round in 0..opts.rounds {
        let r = serve::run_round(
            &serve_config,
            &store_path,
            cells,
            opts.sites,
            opts.load_seconds,
        )?;
        println!(
            "serve round {}: ready (healthz, {cells} entries) after {:.2} s; first site statuses shown after {:.2} s; RSS idle {:.1} MB, after {} page loads ({} matrix) in {} s by 4 clients {:.1} MB (peak {:.1} MB); load average {}",
            round + 1,
            r.ready_s,
            r.statuses_s,
            r.idle_mb,
            r.loads,
            r.matrix_loads,
            opts.load_seconds,
            r.rss_mb,
            r.hwm_mb,
            common::load_average()
        );
        println!(
            "target: first statuses < {STATUSES_TARGET_S:.0} s: {}; RSS ≤ {RSS_TARGET_MB:.0} MB: {}",
            met(r.statuses_s < STATUSES_TARGET_S),
            met(r.rss_mb <= RSS_TARGET_MB)
        );
        println!(
            "RESULT dashboard_serve entries={cells} statuses_s={:.3} rss_mb={:.1} idle_mb={:.1} hwm_mb={:.1} loads={}",
            r.statuses_s, r.rss_mb, r.idle_mb, r.hwm_mb, r.loads
        );
    }
    println!("machine after: load average {}", common::load_average());
    Ok(())
}

/// `gridprobe serve` started on the bench's store, measured from the outside.
mod serve {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context};

    use super::site_name;

    /// What one round measured.
    pub struct Round {
        pub ready_s: f64,
        pub statuses_s: f64,
        pub idle_mb: f64,
        pub rss_mb: f64,
        pub hwm_mb: f64,
        pub loads: usize,
        pub matrix_loads: usize,
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

    fn mb_of(pid: u32, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<f64>().ok())
            .map(|kb| kb * 1024.0 / 1e6)
            .with_context(|| format!("no {field} in /proc/{pid}/status"))
    }

    /// GET over a fresh connection: status code and body.
    fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status")?;
        Ok((code, body.to_string()))
    }

    pub fn run_round(
        config: &Path,
        store: &Path,
        entries: usize,
        sites: usize,
        load_seconds: u64,
    ) -> anyhow::Result<Round> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("serve.log");
        let log_tail = || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_gridprobe"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--store")
            .arg(store)
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
        let stdout = serve.0.stdout.take().context("serve stdout")?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = started + Duration::from_secs(300);
        let addr = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(url) = line.trim().strip_prefix("http:") {
                        let addr = url
                            .trim()
                            .strip_prefix("http://")
                            .and_then(|u| u.strip_suffix("/healthz"))
                            .with_context(|| format!("unexpected health URL {url:?}"))?;
                        break addr.to_string();
                    }
                }
                Err(_) => bail!(
                    "gridprobe serve printed no health URL (exit: {:?}); its log:\n{}",
                    serve.0.try_wait().ok().flatten(),
                    log_tail()
                ),
            }
        };
        // Start-up to the first page that shows site statuses.
        let mut ready_s = None;
        let statuses_s = loop {
            if ready_s.is_none() {
                let health = get(&addr, "/healthz").map(|(_, b)| b).unwrap_or_default();
                if health
                    .replace(' ', "")
                    .contains(&format!("\"entries\":{entries}"))
                {
                    ready_s = Some(started.elapsed().as_secs_f64());
                }
            }
            let (code, body) = get(&addr, "/")?;
            if code != 200 {
                bail!("GET /: HTTP {code}; serve log:\n{}", log_tail());
            }
            if !body.contains("ss-pending") {
                break started.elapsed().as_secs_f64();
            }
            if Instant::now() > deadline || serve.0.try_wait()?.is_some() {
                bail!("no site statuses within 300 s; serve log:\n{}", log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let ready_s = ready_s.unwrap_or(statuses_s);
        let mut idle_mb: f64 = 0.0;
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(250));
            idle_mb = idle_mb.max(mb_of(pid, "VmRSS")?);
        }

        // Sustained use: matrix pages under every filter combination (most are renders: the
        // page cache keeps a page at most 5 s, and serve's own results invalidate it after
        // 1 s) and site pages, four clients at once.
        let mut paths: Vec<String> = vec!["/".into()];
        for t in 0..=3 {
            paths.push(format!("/?tier={t}"));
            for f in ["CE", "SE"] {
                paths.push(format!("/?tier={t}&flavour={f}"));
            }
        }
        paths.push("/?flavour=CE".into());
        paths.push("/?flavour=SE".into());
        let matrix_paths = paths.len();
        for i in 0..8 {
            paths.push(format!("/sites/{}", site_name((i * 97 + 1) % sites.max(1))));
        }
        let paths = Arc::new(paths);
        let stop = Arc::new(AtomicBool::new(false));
        let (loads, matrix_loads) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let next = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (paths, stop, loads, matrix_loads, next, addr) = (
                    paths.clone(),
                    stop.clone(),
                    loads.clone(),
                    matrix_loads.clone(),
                    next.clone(),
                    addr.clone(),
                );
                std::thread::spawn(move || -> anyhow::Result<()> {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed) % paths.len();
                        let (code, _) = get(&addr, &paths[i])?;
                        if code != 200 {
                            bail!("GET {}: HTTP {code}", paths[i]);
                        }
                        loads.fetch_add(1, Ordering::Relaxed);
                        if i < matrix_paths {
                            matrix_loads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        let load_end = Instant::now() + Duration::from_secs(load_seconds);
        let mut peak_under_load: f64 = 0.0;
        while Instant::now() < load_end {
            std::thread::sleep(Duration::from_millis(200));
            peak_under_load = peak_under_load.max(mb_of(pid, "VmRSS")?);
        }
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join()
                .map_err(|_| anyhow::anyhow!("a load client panicked"))??;
        }
        let loads = loads.load(Ordering::Relaxed);
        let matrix_loads = matrix_loads.load(Ordering::Relaxed);
        if matrix_loads < 30 {
            bail!("only {matrix_loads} matrix pages loaded in {load_seconds} s: fewer than 30");
        }
        let mut rss_mb: f64 = 0.0;
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(250));
            rss_mb = rss_mb.max(mb_of(pid, "VmRSS")?);
        }
        let hwm_mb = mb_of(pid, "VmHWM")?;
        println!("   RSS under load (sampled every 200 ms): largest {peak_under_load:.1} MB");
        let pid_t = libc::pid_t::try_from(pid).context("pid out of range")?;
        // SAFETY: kill only sends a signal, to the child this function started and still owns.
        unsafe { libc::kill(pid_t, libc::SIGTERM) };
        let stop_deadline = Instant::now() + Duration::from_secs(30);
        while serve.0.try_wait()?.is_none() && Instant::now() < stop_deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Round {
            ready_s,
            statuses_s,
            idle_mb,
            rss_mb,
            hwm_mb,
            loads,
            matrix_loads,
        })
    }
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
