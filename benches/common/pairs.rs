//! The pairs `benches/compare.rs` measures itself, gridprobe (A) against a reference (B), each
//! side `rounds` times with the side that goes first alternating (A B, B A, ...), reported as
//! median and min–max of each side and the ratio of the medians:
//!
//! - `http`: the scheduler running `http` probes against a local nginx (a new connection per
//!   probe), concurrency 64, against blackbox_exporter's `http_2xx` module probing the same
//!   URL, driven by `wrk -c64 -t2` on its `/probe` endpoint (probes/s = wrk's requests/s).
//! - `limit`: the same A against a bare tokio + reqwest loop, a new connection per request
//!   (`pool_max_idle_per_host(0)`), concurrency 64.
//! - `plugin`: the scheduler running `nagios` probes of `check_dummy 0 ok` against a bare
//!   `tokio::process` loop running the same command with its output captured, concurrency 64.
//! - `dashboard`: no B; the server time of the dashboard's matrix page (`GET /`, the 1,000-site,
//!   100,000-entry VO of `benches/dashboard.rs`) while `wrk -c16 -t2` requests it over loopback.
//!
//! Every side checks what it measured: all A results OK, each B request successful, nginx's
//! `stub_status` counters showing one new connection per probe (A and the reqwest loop) and
//! one request per blackbox probe. A failed check fails the pair; targets are only reported.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridprobe_probes::outcome::unix_ms;
use gridprobe_probes::Status;
use gridprobe_results::{spawn_writer, ResultStore, SqliteStore, WriterConfig};
use gridprobe_runner::http::{router, HttpState};
use gridprobe_runner::state::Plan;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{burst_config, percentile_ms, plan, rate, scheduler_run, thousands, Spread};

/// Pair names, in the order they run.
pub const PAIRS: &[&str] = &["http", "limit", "plugin", "dashboard"];

/// Probes per side per round at full size.
pub const FULL_PROBES: usize = 20_000;
/// Probes per side per round with `--quick`: enough to exercise every path.
pub const QUICK_PROBES: usize = 300;
/// Plugin runs per side per round at full size: half the HTTP figure, because a run costs a
/// fork and exec (about 0.5 ms of CPU) and 10,000 already take about 5 s per side.
pub const FULL_PLUGIN_RUNS: usize = 10_000;
/// Concurrency of every pair but the dashboard's.
pub const CONCURRENCY: usize = 64;
/// Connections wrk keeps open on the dashboard page.
pub const DASHBOARD_CONNECTIONS: usize = 16;
/// blackbox_exporter's rate on the reference 2-core machine, only to size wrk's run so that B
/// measures about as many probes as A.
const BLACKBOX_EXPECTED_RATE: f64 = 3_300.0;

/// What to measure and against what.
#[derive(Debug, Clone)]
pub struct Settings {
    /// HTTP probes per side per round.
    pub probes: usize,
    /// Plugin runs per side per round.
    pub plugin_runs: usize,
    /// Rounds per pair.
    pub rounds: usize,
    /// The nginx URL the HTTP probes request (e.g. `http://127.0.0.1:18591/probe`); its
    /// `/nginx_status` must be nginx's `stub_status`.
    pub target: Option<String>,
    /// blackbox_exporter's base URL (e.g. `http://127.0.0.1:18592`).
    pub blackbox: Option<String>,
    /// The wrk program.
    pub wrk: PathBuf,
    /// The Nagios plugin run by the plugin pair, with its arguments.
    pub plugin: PathBuf,
    /// Arguments of the plugin.
    pub plugin_args: Vec<String>,
    /// Seconds of each wrk run against blackbox_exporter (default: about `probes` probes).
    pub wrk_seconds: Option<u64>,
    /// Sites of the dashboard VO.
    pub dashboard_sites: usize,
    /// Seconds of each wrk run against the dashboard.
    pub dashboard_seconds: u64,
}

impl Settings {
    /// Settings from the environment (see `benches/compare.rs`), full or quick sizes.
    pub fn from_env(quick: bool) -> anyhow::Result<Settings> {
        fn num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
                Err(_) => Ok(default),
            }
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let probes: usize = num(
            "GRIDPROBE_BENCH_PROBES",
            if quick { QUICK_PROBES } else { FULL_PROBES },
        )?;
        let plugin_runs: usize = num(
            "GRIDPROBE_BENCH_PLUGIN_RUNS",
            if quick {
                QUICK_PROBES
            } else {
                FULL_PLUGIN_RUNS
            },
        )?;
        let rounds: usize = num("GRIDPROBE_BENCH_ROUNDS", if quick { 1 } else { 3 })?;
        if probes == 0 || plugin_runs == 0 || rounds == 0 {
            bail!("GRIDPROBE_BENCH_PROBES, _PLUGIN_RUNS and _ROUNDS must be positive");
        }
        Ok(Settings {
            probes,
            plugin_runs,
            rounds,
            target: var("GRIDPROBE_BENCH_TARGET"),
            blackbox: var("GRIDPROBE_BENCH_BLACKBOX"),
            wrk: var("GRIDPROBE_BENCH_WRK").map_or_else(|| PathBuf::from("wrk"), PathBuf::from),
            plugin: var("GRIDPROBE_BENCH_PLUGIN").map_or_else(
                || PathBuf::from("/usr/lib/nagios/plugins/check_dummy"),
                PathBuf::from,
            ),
            plugin_args: vec!["0".into(), "ok".into()],
            wrk_seconds: var("GRIDPROBE_BENCH_WRK_SECONDS")
                .map(|v| {
                    v.parse::<u64>()
                        .ok()
                        .filter(|s| *s > 0)
                        .with_context(|| format!("GRIDPROBE_BENCH_WRK_SECONDS={v:?}"))
                })
                .transpose()?,
            dashboard_sites: num("GRIDPROBE_BENCH_SITES", if quick { 100 } else { 1000 })?,
            dashboard_seconds: num(
                "GRIDPROBE_BENCH_DASHBOARD_SECONDS",
                if quick { 2 } else { 10 },
            )?,
        })
    }

    fn target(&self) -> anyhow::Result<&str> {
        self.target.as_deref().context(
            "no HTTP target: set GRIDPROBE_BENCH_TARGET to the nginx URL (bench/compare does)",
        )
    }

    fn blackbox(&self) -> anyhow::Result<&str> {
        self.blackbox
            .as_deref()
            .map(|b| b.trim_end_matches('/'))
            .context(
            "no blackbox_exporter: set GRIDPROBE_BENCH_BLACKBOX to its URL (bench/compare does)",
        )
    }
}

/// How a side's samples are shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// Events per second (higher is better).
    PerSecond,
    /// Milliseconds (lower is better).
    Millis,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::PerSecond => format!("{}/s", thousands(v)),
            Unit::Millis => format!("{v:.1} ms"),
        }
    }

    fn bare(self, v: f64) -> String {
        match self {
            Unit::PerSecond => thousands(v),
            Unit::Millis => format!("{v:.1}"),
        }
    }

    /// `median (min – max)`, the unit on the median only.
    pub fn spread(self, s: &Spread) -> String {
        format!(
            "{} ({} – {})",
            self.show(s.median),
            self.bare(s.min),
            self.bare(s.max)
        )
    }
}

/// A pair's target.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// A's median at least this multiple of B's.
    RatioAtLeast(f64),
    /// A's median at most this many milliseconds.
    MillisAtMost(f64),
    /// Shown for context only.
    None,
}

/// One line of the comparison table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The pair's name (`HTTP probes`).
    pub pair: String,
    /// What A is.
    pub a_what: String,
    /// A's samples, one per round.
    pub a: Vec<f64>,
    /// What B is (empty when there is none).
    pub b_what: String,
    /// B's samples.
    pub b: Vec<f64>,
    /// Unit of both sides.
    pub unit: Unit,
    /// The target.
    pub target: Target,
    /// Why the pair has no figures (it failed).
    pub failed: Option<String>,
}

impl Row {
    /// A's median over B's, when both sides have samples.
    pub fn ratio(&self) -> Option<f64> {
        let (a, b) = (Spread::of(&self.a)?, Spread::of(&self.b)?);
        (b.median > 0.0).then(|| a.median / b.median)
    }

    /// Whether the target is met, when there is one and figures to judge.
    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::RatioAtLeast(x) => self.ratio().map(|r| r >= x),
            Target::MillisAtMost(ms) => Spread::of(&self.a).map(|a| a.median <= ms),
            Target::None => None,
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::RatioAtLeast(x) => format!("A ≥ {x} × B"),
            Target::MillisAtMost(ms) => format!("≤ {ms:.0} ms"),
            Target::None => "—".into(),
        }
    }

    /// The row in the table's markdown: pair, A, A median (min–max), B, B median (min–max),
    /// A/B, target, met.
    pub fn markdown(&self) -> String {
        let side = |v: &[f64]| Spread::of(v).map_or("—".into(), |s| self.unit.spread(&s));
        if let Some(why) = &self.failed {
            return format!(
                "| {} | {} | failed: {} | {} | — | — | {} | — |",
                self.pair,
                self.a_what,
                why.replace('|', "/").replace('\n', " "),
                if self.b_what.is_empty() {
                    "—"
                } else {
                    &self.b_what
                },
                self.target_text()
            );
        }
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.pair,
            self.a_what,
            side(&self.a),
            if self.b_what.is_empty() {
                "—"
            } else {
                &self.b_what
            },
            side(&self.b),
            self.ratio().map_or("—".into(), |r| format!("{r:.2}")),
            self.target_text(),
            match self.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            }
        )
    }
}

/// The table's header lines.
pub const TABLE_HEAD: &str = "| pair | A = gridprobe | A: median (min – max) | B = reference | \
     B: median (min – max) | A/B (medians) | target | met? |\n|---|---|---:|---|---:|---:|---|---|";

/// Runs the pairs named in `pairs`, in [`PAIRS`] order. A pair that fails outright becomes a
/// row with its reason; `Err` only for an unknown pair name.
pub fn run(rt: &Runtime, s: &Settings, pairs: &[String]) -> anyhow::Result<Vec<Row>> {
    if let Some(bad) = pairs.iter().find(|p| !PAIRS.contains(&p.as_str())) {
        bail!("unknown pair {bad:?}; known: {}", PAIRS.join(", "));
    }
    let wants = |p: &str| pairs.is_empty() || pairs.iter().any(|x| x == p);
    let mut rows = Vec::new();
    let mut add = |mut row: Row, result: anyhow::Result<(Vec<f64>, Vec<f64>)>| {
        match result {
            Ok((a, b)) => {
                row.a = a;
                row.b = b;
            }
            Err(e) => {
                eprintln!("FAILED: {}: {e:#}\n", row.pair);
                row.failed = Some(format!("{e:#}"));
            }
        }
        println!("{}\n", row.markdown());
        rows.push(row);
    };
    let sched =
        format!("scheduler, `http` kind, new connection per probe, concurrency {CONCURRENCY}");
    if wants("http") {
        add(
            row(
                "HTTP probes",
                &sched,
                &format!(
                    "blackbox_exporter `http_2xx` via `wrk -c{CONCURRENCY} -t2` on /probe (probe_success 1)"
                ),
                Unit::PerSecond,
                Target::RatioAtLeast(3.0),
            ),
            http_pair(rt, s, Reference::Blackbox),
        );
    }
    if wants("limit") {
        add(
            row(
                "HTTP probes vs limit",
                &sched,
                &format!(
                    "bare tokio + reqwest, new connection per request, concurrency {CONCURRENCY}"
                ),
                Unit::PerSecond,
                Target::RatioAtLeast(0.8),
            ),
            http_pair(rt, s, Reference::Reqwest),
        );
    }
    if wants("plugin") {
        let cmd = command_line(s);
        add(
            row(
                "plugin probes",
                &format!("scheduler, `nagios` kind, `{cmd}`, concurrency {CONCURRENCY}"),
                &format!(
                    "bare `tokio::process` loop, `{cmd}`, output captured, concurrency {CONCURRENCY}"
                ),
                Unit::PerSecond,
                Target::RatioAtLeast(0.8),
            ),
            plugin_pair(rt, s),
        );
    }
    if wants("dashboard") {
        let result = dashboard_under_wrk(rt, s);
        let (server, client) = match result {
            Ok((server, client)) => (Ok((server, Vec::new())), Ok((client, Vec::new()))),
            Err(e) => (Err(e), Err(anyhow::anyhow!("see the row above"))),
        };
        add(
            row(
                "dashboard",
                &format!(
                    "server time (p99) of `GET /`, {} sites ({} entries), under `wrk -c{DASHBOARD_CONNECTIONS} -t2`",
                    thousands(s.dashboard_sites as f64),
                    thousands((s.dashboard_sites * super::vo::ENTRIES_PER_SITE) as f64)
                ),
                "",
                Unit::Millis,
                Target::MillisAtMost(200.0),
            ),
            server,
        );
        add(
            row(
                "dashboard (client side)",
                &format!(
                    "wrk's latency (p99) of `GET /` at {DASHBOARD_CONNECTIONS} connections: queueing included"
                ),
                "",
                Unit::Millis,
                Target::None,
            ),
            client,
        );
    }
    Ok(rows)
}

fn row(pair: &str, a: &str, b: &str, unit: Unit, target: Target) -> Row {
    Row {
        pair: pair.into(),
        a_what: a.into(),
        a: Vec::new(),
        b_what: b.into(),
        b: Vec::new(),
        unit,
        target,
        failed: None,
    }
}

fn command_line(s: &Settings) -> String {
    let name = s.plugin.file_name().map_or_else(
        || s.plugin.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    std::iter::once(name)
        .chain(s.plugin_args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Measures A and B `rounds` times, alternating which goes first, after one small unrecorded
/// run of each (page cache, connection tables, the exporters' warm-up). Returns A's and B's
/// rates.
fn alternate(
    s: &Settings,
    mut a: impl FnMut(bool) -> anyhow::Result<f64>,
    mut b: impl FnMut(bool) -> anyhow::Result<f64>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    a(true)?;
    b(true)?;
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for round in 0..s.rounds {
        // A B in even rounds, B A in odd ones: drift on a shared machine favours neither side.
        for a_side in [round % 2 == 0, round % 2 == 1] {
            if a_side {
                xs.push(a(false)?);
            } else {
                ys.push(b(false)?);
            }
        }
    }
    Ok((xs, ys))
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[derive(Debug, Clone, Copy, PartialEq)]
enum Reference {
    Blackbox,
    Reqwest,
}

fn http_config(n: usize, target: &str) -> String {
    burst_config(
        n,
        CONCURRENCY,
        &format!(
            "[[probe]]\nmetric = \"org.bench.http\"\nkind = \"http\"\nflavours = [\"CE\"]\n  \
             [probe.params]\n  url = \"{target}\""
        ),
    )
}

fn http_pair(
    rt: &Runtime,
    s: &Settings,
    reference: Reference,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let target = s.target()?.to_string();
    let status_url = nginx_status_url(&target)?;
    let n = s.probes;
    let full = plan(&http_config(n, &target))?;
    let warm = plan(&http_config(n.min(500), &target))?;
    let blackbox = match reference {
        Reference::Blackbox => Some(s.blackbox()?.to_string()),
        Reference::Reqwest => None,
    };
    println!(
        "== {}: {n} http probes of {target} per side per round, {} round(s)",
        match reference {
            Reference::Blackbox => "HTTP probes: gridprobe vs blackbox_exporter",
            Reference::Reqwest => "HTTP probes: gridprobe vs bare reqwest",
        },
        s.rounds
    );
    alternate(
        s,
        |warmup| {
            let (plan, n) = if warmup {
                (&warm, n.min(500))
            } else {
                (&full, n)
            };
            gridprobe_http(rt, plan.clone(), n, &status_url, warmup)
        },
        |warmup| match &blackbox {
            Some(bb) => blackbox_wrk(s, bb, &target, &status_url, warmup),
            None => {
                let n = if warmup { n.min(500) } else { n };
                reqwest_loop(rt, &target, n, &status_url, warmup)
            }
        },
    )
}

/// A: the scheduler's `http` probes; checks every result is OK and that nginx accepted one new
/// connection per probe.
fn gridprobe_http(
    rt: &Runtime,
    plan: Plan,
    n: usize,
    status_url: &str,
    warmup: bool,
) -> anyhow::Result<f64> {
    let before = NginxCounters::read(status_url)?;
    let cpu = cpu_time();
    let run = rt.block_on(scheduler_run(plan, n, |r| {
        r.result.outcome.status != Status::Ok
    }))?;
    let cpu = cpu_time().saturating_sub(cpu);
    let after = NginxCounters::read(status_url)?;
    // A few entries may legitimately run twice (their slot falls within the run), and the
    // counter reads count themselves: at least one accepted connection per probe.
    let accepts = after.accepts - before.accepts;
    if accepts < n as u64 {
        bail!("nginx accepted {accepts} connections for {n} gridprobe http probes: connections were reused");
    }
    let r = rate(n, run.elapsed);
    println!(
        "   {} gridprobe scheduler, http: {:>8}/s  ({n} in {:.2}s; {accepts} connections; mean wait for a slot {:.0} ms; CPU {:.0} µs/probe in this process)",
        if warmup { "(warm-up)" } else { "A" },
        thousands(r),
        run.elapsed.as_secs_f64(),
        run.mean_queue_wait_ms,
        per_probe_us(cpu, n)
    );
    Ok(r)
}

/// B (limit): a bare tokio + reqwest loop, one new connection per request, `CONCURRENCY` at a
/// time; checks each response is 200 with a body, and nginx's accepted connections.
fn reqwest_loop(
    rt: &Runtime,
    target: &str,
    n: usize,
    status_url: &str,
    warmup: bool,
) -> anyhow::Result<f64> {
    let before = NginxCounters::read(status_url)?;
    let url = target.to_string();
    let cpu = cpu_time();
    let elapsed = rt.block_on(async move {
        // Driven from a task, like the scheduler, so both use the runtime's workers only.
        tokio::spawn(async move {
            // No idle connection is kept, so every request opens a new one, as a probe does.
            let client = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .context("reqwest client")?;
            let slots = Arc::new(Semaphore::new(CONCURRENCY));
            let mut tasks = tokio::task::JoinSet::new();
            let mut failed = 0usize;
            let mut first_error = None;
            let mut check = |done: Result<Result<(), String>, tokio::task::JoinError>| {
                let e = match done {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e,
                    Err(e) => e.to_string(),
                };
                failed += 1;
                first_error.get_or_insert(e);
            };
            let started = Instant::now();
            for _ in 0..n {
                let permit = slots.clone().acquire_owned().await?;
                let (client, url) = (client.clone(), url.clone());
                tasks.spawn(async move {
                    let result = async {
                        let resp = client.get(&url).send().await?.error_for_status()?;
                        let body = resp.bytes().await?;
                        Ok::<_, reqwest::Error>(body.len())
                    }
                    .await;
                    drop(permit);
                    match result {
                        Ok(len) if len > 0 => Ok(()),
                        Ok(_) => Err("empty body".to_string()),
                        Err(e) => Err(e.to_string()),
                    }
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
                bail!(
                    "{failed} of {n} reqwest requests failed (first: {})",
                    first_error.unwrap_or_default()
                );
            }
            Ok(elapsed)
        })
        .await?
    })?;
    let cpu = cpu_time().saturating_sub(cpu);
    let after = NginxCounters::read(status_url)?;
    let accepts = after.accepts - before.accepts;
    if accepts < n as u64 {
        bail!("nginx accepted {accepts} connections for {n} reqwest requests: connections were reused");
    }
    let r = rate(n, elapsed);
    println!(
        "   {} bare reqwest loop:          {:>8}/s  ({n} in {:.2}s; {accepts} connections; CPU {:.0} µs/request in this process)",
        if warmup { "(warm-up)" } else { "B" },
        thousands(r),
        elapsed.as_secs_f64(),
        per_probe_us(cpu, n)
    );
    Ok(r)
}

/// B: `wrk -c64 -t2` on blackbox_exporter's `/probe` of the target with the `http_2xx` module.
/// Checks a probe reports `probe_success 1` before and after, that wrk saw no error and no
/// non-2xx answer, and that nginx served at least one request per probe wrk counted.
fn blackbox_wrk(
    s: &Settings,
    blackbox: &str,
    target: &str,
    status_url: &str,
    warmup: bool,
) -> anyhow::Result<f64> {
    let encoded: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
    let url = format!("{blackbox}/probe?target={encoded}&module=http_2xx");
    let success = |when: &str| -> anyhow::Result<()> {
        let (code, body) = http_get(&url)?;
        if code != 200 || !body.lines().any(|l| l.trim() == "probe_success 1") {
            bail!(
                "blackbox_exporter probe {when} the run did not succeed (HTTP {code}):\n{}",
                body.lines()
                    .filter(|l| !l.starts_with('#'))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        Ok(())
    };
    success("before")?;
    let secs = if warmup {
        1
    } else {
        s.wrk_seconds
            .unwrap_or_else(|| (s.probes as f64 / BLACKBOX_EXPECTED_RATE).ceil().max(1.0) as u64)
    };
    let before = NginxCounters::read(status_url)?;
    let w = wrk(&s.wrk, CONCURRENCY, secs, &url)?;
    let after = NginxCounters::read(status_url)?;
    success("after")?;
    if w.errors > 0 || w.non_2xx > 0 {
        bail!(
            "wrk against blackbox_exporter: {} socket errors, {} non-2xx answers",
            w.errors,
            w.non_2xx
        );
    }
    let served = after.requests - before.requests;
    if served < w.requests {
        bail!(
            "nginx served {served} requests while wrk counted {} blackbox probes: probes failed",
            w.requests
        );
    }
    println!(
        "   {} blackbox_exporter (wrk):    {:>8}/s  ({} probes in {secs}s; nginx served {served})",
        if warmup { "(warm-up)" } else { "B" },
        thousands(w.per_second),
        w.requests,
    );
    Ok(w.per_second)
}

// ---------------------------------------------------------------------------------------------
// Plugins

fn plugin_pair(rt: &Runtime, s: &Settings) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    if !s.plugin.is_file() {
        bail!(
            "plugin {} not found (install monitoring-plugins-basic)",
            s.plugin.display()
        );
    }
    let args = s
        .plugin_args
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = |n: usize| {
        burst_config(
            n,
            CONCURRENCY,
            &format!(
                "[[probe]]\nmetric = \"org.bench.plugin\"\nkind = \"nagios\"\nflavours = [\"CE\"]\n  \
                 [probe.params]\n  command = {:?}\n  args = [{args}]",
                s.plugin.display().to_string()
            ),
        )
    };
    let n = s.plugin_runs;
    let warm_n = n.min(200);
    let (full, warm) = (plan(&config(n))?, plan(&config(warm_n))?);
    println!(
        "== plugin probes: {n} runs of {} per side per round, {} round(s)",
        command_line(s),
        s.rounds
    );
    alternate(
        s,
        |warmup| {
            let (plan, n) = if warmup { (&warm, warm_n) } else { (&full, n) };
            let cpu = cpu_time();
            let run = rt.block_on(scheduler_run(plan.clone(), n, |r| {
                r.result.outcome.status != Status::Ok
            }))?;
            let cpu = cpu_time().saturating_sub(cpu);
            let r = rate(n, run.elapsed);
            println!(
                "   {} gridprobe scheduler, nagios: {:>8}/s  ({n} in {:.2}s; mean wait for a slot {:.0} ms; CPU {:.0} µs/run in this process)",
                if warmup { "(warm-up)" } else { "A" },
                thousands(r),
                run.elapsed.as_secs_f64(),
                run.mean_queue_wait_ms,
                per_probe_us(cpu, n)
            );
            Ok(r)
        },
        |warmup| {
            let n = if warmup { warm_n } else { n };
            let cpu = cpu_time();
            let elapsed = rt.block_on(spawn_loop(
                s.plugin.clone(),
                s.plugin_args.clone(),
                n,
                CONCURRENCY,
            ))?;
            let cpu = cpu_time().saturating_sub(cpu);
            let r = rate(n, elapsed);
            println!(
                "   {} bare tokio::process loop:    {:>8}/s  ({n} in {:.2}s; CPU {:.0} µs/run in this process)",
                if warmup { "(warm-up)" } else { "B" },
                thousands(r),
                elapsed.as_secs_f64(),
                per_probe_us(cpu, n)
            );
            Ok(r)
        },
    )
}

/// The floor: a plain tokio loop running the plugin with stdout and stderr piped and read
/// (`output()`), `concurrency` at a time; each run must exit 0 and print something.
async fn spawn_loop(
    program: PathBuf,
    args: Vec<String>,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
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
            let (program, args) = (program.clone(), args.clone());
            tasks.spawn(async move {
                let out = tokio::process::Command::new(&program)
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .output()
                    .await;
                drop(permit);
                out.is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
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
            bail!("{failed} of {n} runs of {} failed", program.display());
        }
        Ok(elapsed)
    })
    .await?
}

// ---------------------------------------------------------------------------------------------
// Dashboard under wrk -c16

/// Serves the dashboard router on 127.0.0.1 over the 1,000-site VO's store and runs
/// `wrk -c16 -t2` on `GET /` once per round. Returns, per round, the p99 server time of the
/// requests (measured around the router, as `benches/dashboard.rs` does, but over the network
/// and 16 at a time) and wrk's p99 latency.
fn dashboard_under_wrk(rt: &Runtime, s: &Settings) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    rt.block_on(async {
        let plan = plan(&super::vo::config_text(s.dashboard_sites))?;
        let dir = tempfile::tempdir()?;
        let store = Arc::new(SqliteStore::open(&dir.path().join("bench.sqlite"))?);
        let now = unix_ms(std::time::SystemTime::now());
        let started = Instant::now();
        let rows = super::vo::fill(&store, &plan, 24, now).await?;
        println!(
            "== dashboard: {} sites, {} cells, {rows} results written in {:.1}s; wrk -c{DASHBOARD_CONNECTIONS} -t2 for {}s per round, {} round(s)",
            s.dashboard_sites,
            plan.config.instances().len(),
            started.elapsed().as_secs_f64(),
            s.dashboard_seconds,
            s.rounds
        );
        let store_dyn: Arc<dyn ResultStore> = store.clone();
        let (writer, _writer_task) = spawn_writer(store_dyn.clone(), WriterConfig::default());
        let (reload, _reload_rx) = tokio::sync::mpsc::channel(1);
        let times: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let recorded = times.clone();
        // Server time of each request: from the router receiving it to the response (the page
        // is rendered whole before it is sent).
        let app = router(HttpState {
            shared: gridprobe_runner::state::ServeState::new(plan, writer, vec![]),
            store: store_dyn,
            reload,
            metrics: gridprobe_runner::metrics::Metrics::new(),
            runs: gridprobe_runner::ondemand::RunManager::new(),
        notify: None,
        })
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let recorded = recorded.clone();
                async move {
                    let start = Instant::now();
                    let resp = next.run(req).await;
                    recorded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(start.elapsed());
                    resp
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        let result = async {
            let url = format!("http://{addr}/");
            // The site statuses are computed in the background after the first request; the
            // figures are of pages that show them.
            let waited = Instant::now();
            loop {
                let page = tokio::task::spawn_blocking({
                    let url = url.clone();
                    move || http_get(&url)
                })
                .await??;
                if page.0 != 200 {
                    bail!("GET {url}: HTTP {}", page.0);
                }
                if !page.1.contains("ss-pending") {
                    break;
                }
                if waited.elapsed() > Duration::from_secs(120) {
                    bail!("site statuses not computed within 120 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let (mut server_p99, mut client_p99) = (Vec::new(), Vec::new());
            for round in 0..s.rounds {
                times.lock().unwrap_or_else(|p| p.into_inner()).clear();
                let (wrk_path, url2, secs) = (s.wrk.clone(), url.clone(), s.dashboard_seconds);
                let w = tokio::task::spawn_blocking(move || {
                    wrk(&wrk_path, DASHBOARD_CONNECTIONS, secs, &url2)
                })
                .await??;
                let mut t = std::mem::take(&mut *times.lock().unwrap_or_else(|p| p.into_inner()));
                t.sort();
                if w.errors > 0 || w.non_2xx > 0 {
                    bail!("wrk on the dashboard: {} socket errors, {} non-2xx answers", w.errors, w.non_2xx);
                }
                let (p50, p99) = (percentile_ms(&t, 50.0), percentile_ms(&t, 99.0));
                println!(
                    "   round {}: {} requests ({:.1}/s); server time p50 {p50:.1} ms, p99 {p99:.1} ms; wrk latency p50 {:.1} ms, p99 {:.1} ms",
                    round + 1,
                    t.len(),
                    w.per_second,
                    w.p50_ms.unwrap_or(f64::NAN),
                    w.p99_ms.unwrap_or(f64::NAN)
                );
                if t.is_empty() {
                    bail!("no request completed in {secs}s");
                }
                server_p99.push(p99);
                client_p99.push(w.p99_ms.unwrap_or(f64::NAN));
            }
            Ok((server_p99, client_p99))
        }
        .await;
        stop.cancel();
        let _ = server.await;
        result
    })
}

// ---------------------------------------------------------------------------------------------
// Tools

/// CPU time (user + system) this process has used so far, all threads. The children a plugin
/// side spawns are not included: their own CPU is the same work on both sides.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn per_probe_us(cpu: Duration, n: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / n.max(1) as f64
}

/// What one wrk run reported.
#[derive(Debug, Default)]
pub struct Wrk {
    /// Requests completed.
    pub requests: u64,
    /// Requests per second over the run.
    pub per_second: f64,
    /// Socket errors (connect, read, write, timeout).
    pub errors: u64,
    /// Answers other than 2xx or 3xx.
    pub non_2xx: u64,
    /// Median latency (with `--latency`).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency (with `--latency`).
    pub p99_ms: Option<f64>,
}

/// Runs `wrk -t2 -cCONNECTIONS -dSECONDSs --latency URL` and parses its report.
fn wrk(program: &PathBuf, connections: usize, secs: u64, url: &str) -> anyhow::Result<Wrk> {
    let out = Command::new(program)
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--timeout",
            "30s",
            "--latency",
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} (install wrk)", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// Parses wrk's report.
pub fn parse_wrk(text: &str) -> anyhow::Result<Wrk> {
    let mut w = Wrk::default();
    let mut seen = (false, false);
    for line in text.lines().map(str::trim) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if line.contains(" requests in ") {
            w.requests = fields.first().context("request count")?.parse()?;
            seen.0 = true;
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            w.per_second = v.trim().parse()?;
            seen.1 = true;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            w.errors = v
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = v.trim().parse()?;
        } else if fields.len() == 2 && fields[0] == "50%" {
            w.p50_ms = latency_ms(fields[1]);
        } else if fields.len() == 2 && fields[0] == "99%" {
            w.p99_ms = latency_ms(fields[1]);
        }
    }
    if seen != (true, true) {
        bail!("no request count or rate");
    }
    Ok(w)
}

/// wrk's `1.23ms`, `456.00us`, `1.50s` in milliseconds.
fn latency_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = text.split_at(split);
    let v: f64 = num.parse().ok()?;
    match unit {
        "us" => Some(v / 1000.0),
        "ms" => Some(v),
        "s" => Some(v * 1000.0),
        "m" => Some(v * 60_000.0),
        _ => None,
    }
}

/// nginx's `stub_status` counters.
#[derive(Debug, Clone, Copy)]
struct NginxCounters {
    accepts: u64,
    requests: u64,
}

impl NginxCounters {
    fn read(url: &str) -> anyhow::Result<NginxCounters> {
        let (code, body) = http_get(url)?;
        if code != 200 {
            bail!("GET {url}: HTTP {code} (is it nginx's stub_status?)");
        }
        // "server accepts handled requests\n 16630948 16630948 31070465 \n"
        let numbers: Vec<u64> = body
            .lines()
            .skip_while(|l| !l.contains("accepts handled requests"))
            .nth(1)
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        match numbers[..] {
            [accepts, _handled, requests] => Ok(NginxCounters { accepts, requests }),
            _ => bail!("GET {url}: not nginx's stub_status:\n{body}"),
        }
    }
}

/// `/nginx_status` on the target's host and port.
fn nginx_status_url(target: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(target).with_context(|| format!("target URL {target:?}"))?;
    u.set_path("/nginx_status");
    u.set_query(None);
    Ok(u.to_string())
}

/// A plain-HTTP GET over a fresh connection (HTTP/1.0, so the body is neither chunked nor kept
/// alive): status code and body.
fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    let u = url::Url::parse(url).with_context(|| format!("URL {url:?}"))?;
    let host = u.host_str().context("URL without host")?;
    let port = u.port_or_known_default().context("URL without port")?;
    let mut s = TcpStream::connect((host, port)).with_context(|| format!("connect to {url}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let path = &u[url::Position::BeforePath..url::Position::AfterQuery];
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {url}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {:?}", head.lines().next()))?;
    Ok((code, body.to_string()))
}
