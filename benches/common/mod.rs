//! Code shared by the bench binaries (`mod common;`) and by `tests/bench_compare.rs`, which
//! includes it by path to run the compare harness in a tiny mode: building a plan from generated
//! TOML, running the real scheduler until the writer has stored a number of results, the
//! dashboard's 1,000-site VO, small statistics and the machine description.

// Each bench binary uses only part of this module.
#![allow(dead_code)]

pub mod pairs;
pub mod stream;
pub mod vo;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridprobe_results::{
    spawn_writer, CellFilter, ResultStore, SqliteStore, StoredResult, WriterConfig,
};
use gridprobe_runner::metrics::Metrics;
use gridprobe_runner::schedule::run_scheduler;
use gridprobe_runner::state::Plan;
use gridprobe_runner::state::ServeState;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Loads generated configuration text and builds its probes, as `serve` does at start-up.
pub fn plan(text: &str) -> anyhow::Result<Plan> {
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

/// `n` CE services, `per_site` per site, as TOML `[[site]]` tables: one probe instance each
/// when a single probe applies to the CE flavour.
pub fn ce_topology(n: usize, per_site: usize) -> String {
    let per_site = per_site.max(1);
    let mut s = String::with_capacity(n * 90);
    for i in 0..n {
        let (site, svc) = (i / per_site, i % per_site);
        if svc == 0 {
            let _ = writeln!(s, "[[site]]\nname = \"SITE-{site:04}\"\ntier = 2");
        }
        let _ = writeln!(
            s,
            "  [[site.service]]\n  flavour = \"CE\"\n  hostname = \"ce{svc:03}.site{site:04}.example.org\""
        );
    }
    s
}

/// A configuration in which `n` instances of one probe are all due at once (1 ms spread) and
/// none is due again within the run, limited by `concurrency` overall only: the site limit is
/// far above any site's size, and no kind limit is set. The interval is the longest allowed
/// (31 days): an entry whose slot falls within 30 s after the start waits for that slot
/// instead of running at once (the scheduler's `first_due` margin), which with a 1 h interval
/// held back about 1 entry in 120 and so every run until its slot (runs of 20,000 probes took
/// 30 s); at 31 days that is about 1 entry in 90,000.
pub fn burst_config(n: usize, concurrency: usize, probe: &str) -> String {
    format!(
        r#"vo = "bench"
[defaults]
interval = "31d"
timeout = "60s"
retries = 0
concurrency = {concurrency}
site_concurrency = 100000

[server]
startup_spread = "1ms"
shutdown_grace = "5s"

{probe}

{}"#,
        ce_topology(n, 100)
    )
}

/// What one scheduler run measured.
pub struct SchedRun {
    /// From starting the scheduler until the writer had stored `n` results.
    pub elapsed: Duration,
    /// Mean time a run waited for its concurrency permits.
    pub mean_queue_wait_ms: f64,
    /// The latest result of every cell, for the caller's checks.
    pub latest: Vec<StoredResult>,
}

/// Runs the real scheduler, wired as `gridprobe serve` wires it (`ServeState` with the metrics
/// observer, the batching writer, an in-memory `SqliteStore`), until the writer has stored `n`
/// results, then stops it. Fails when a result is missing or `bad` rejects a cell's latest.
pub async fn scheduler_run(
    plan: Plan,
    n: usize,
    bad: impl Fn(&StoredResult) -> bool,
) -> anyhow::Result<SchedRun> {
    let store = Arc::new(SqliteStore::open_in_memory()?);
    let (writer, writer_task) = spawn_writer(store.clone(), WriterConfig::default());
    let written = writer.stats();
    let shared = ServeState::new(plan, writer, vec![Metrics::new()]);
    let stats = shared.stats.clone();
    let shutdown = CancellationToken::new();
    // Kept open, as in serve: a closed reload channel is not what the scheduler normally sees.
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let limit = Duration::from_secs(120) + Duration::from_millis(n as u64 * 10);

    let started = Instant::now();
    let scheduler = tokio::spawn(run_scheduler(
        shared.clone(),
        HashMap::new(),
        reload_rx,
        shutdown.clone(),
    ));
    while written.written.load(Ordering::Relaxed) < n as u64 {
        if scheduler.is_finished() || started.elapsed() > limit {
            shutdown.cancel();
            bail!(
                "only {} of {n} results written after {:.1}s",
                written.written.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    scheduler.await.context("scheduler task")?;
    // The writer flushes and ends once its last handle, the one in `shared`, is gone.
    drop(shared);
    writer_task.await.context("writer task")?;

    let stored = store.count().await?;
    let latest = store.latest(&CellFilter::default()).await?;
    let failed: Vec<_> = latest.iter().filter(|r| bad(r)).collect();
    // `stored` may exceed `n` by a few: an entry whose epoch-aligned slot falls within the run
    // rightly runs a second time.
    if stored < n as u64 || latest.len() != n || !failed.is_empty() {
        bail!(
            "{stored} results stored for {} cells, {} failed (first: {:?})",
            latest.len(),
            failed.len(),
            failed
                .first()
                .map(|r| (&r.result.outcome.status, &r.result.outcome.summary))
        );
    }
    let runs = stats.runs_started.load(Ordering::Relaxed).max(1);
    Ok(SchedRun {
        elapsed,
        mean_queue_wait_ms: stats.queue_wait_ms_total.load(Ordering::Relaxed) as f64 / runs as f64,
        latest,
    })
}

/// Median, smallest and largest of some samples.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

impl Spread {
    /// `None` without samples.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let mid = s.len() / 2;
        let median = if s.len() % 2 == 1 {
            s[mid]
        } else {
            (s[mid - 1] + s[mid]) / 2.0
        };
        Some(Spread {
            median,
            min: s[0],
            max: s[s.len() - 1],
        })
    }
}

/// p-th percentile (0–100, nearest rank) of sorted durations, in ms.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Events per second.
pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A command's trimmed standard output, if it ran and succeeded.
pub fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Cores (nproc), CPU model, memory (/proc/meminfo) and kernel (uname -r).
pub fn hardware() -> String {
    let cores = command_output("nproc", &[]).unwrap_or_else(|| "?".into());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<f64>().ok())
        })
        .map_or("? GiB".into(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let kernel = command_output("uname", &["-r"]).unwrap_or_else(|| "?".into());
    format!("{cores} cores ({model}), {mem} RAM, Linux {kernel}")
}

/// [`hardware`] and the load average.
pub fn machine() -> String {
    format!("{}, load average {}", hardware(), load_average())
}

/// An environment variable parsed as a number, or `default` when it is not set.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v} is not a valid number")),
        Err(_) => Ok(default),
    }
}

/// The first three fields of /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Where generated stores are kept between runs: `GRIDPROBE_BENCH_DATA`, or
/// `~/.cache/gridprobe-bench` (created).
pub fn data_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = match std::env::var_os("GRIDPROBE_BENCH_DATA") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/gridprobe-bench"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A counter of this process's `/proc/self/io` (`wchar`: bytes passed to write(2), what SQLite
/// hands its WAL and database; `write_bytes`: bytes sent to storage); 0 where not available.
pub fn proc_io(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A bench binary's `main`: `run` on a two-worker runtime (the machine the figures are stated
/// for), its error printed with its causes.
pub fn run_main(
    run: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
