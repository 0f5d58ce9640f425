//! gridprobe side by side with reference tools (issue 9): HTTP probes against blackbox_exporter
//! and against a bare reqwest loop, plugin probes against a bare process loop, and the dashboard
//! page under `wrk -c16`. Each pair is measured `rounds` times alternately (A B, B A, ...) and
//! reported as median and min–max per side with the ratio of the medians; targets are reported,
//! never asserted. See `benches/common/pairs.rs` for what each side does and checks.
//!
//! `bench/compare` is the usual way in: it installs and starts nginx and blackbox_exporter on
//! loopback ports, runs this and the other benches, and writes the table into BENCHMARKS.md.
//!
//! ```text
//! cargo bench --bench compare -- [--quick] [http] [limit] [plugin] [dashboard]
//! ```
//!
//! Environment: `GRIDPROBE_BENCH_TARGET` (nginx URL the HTTP probes request; its
//! `/nginx_status` must be `stub_status`), `GRIDPROBE_BENCH_BLACKBOX` (blackbox_exporter's
//! URL), `GRIDPROBE_BENCH_WRK` (default `wrk`), `GRIDPROBE_BENCH_PLUGIN` (default
//! `/usr/lib/nagios/plugins/check_dummy`), `GRIDPROBE_BENCH_PROBES` (HTTP probes per side per
//! round; default 20,000, 300 with `--quick`), `GRIDPROBE_BENCH_PLUGIN_RUNS` (plugin runs per
//! side per round; default 10,000, 300 with `--quick`), `GRIDPROBE_BENCH_ROUNDS` (default 3, 1 with
//! `--quick`), `GRIDPROBE_BENCH_WRK_SECONDS` (each wrk run against blackbox_exporter; default
//! sized to about as many probes as A runs), `GRIDPROBE_BENCH_SITES` (dashboard VO; default
//! 1,000), `GRIDPROBE_BENCH_DASHBOARD_SECONDS` (each wrk run on the dashboard; default 10).
//!
//! Besides the human-readable table, every row is printed once more prefixed with `ROW ` for
//! `bench/compare` to pick up. The process exits non-zero when a pair failed outright.

mod common;

use std::process::ExitCode;

use common::pairs::{self, Settings, TABLE_HEAD};

fn main() -> ExitCode {
    let mut quick = std::env::var("GRIDPROBE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let mut only = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            // cargo passes `--bench` to `harness = false` targets.
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "usage: cargo bench --bench compare -- [--quick] [{}]",
                    pairs::PAIRS.join("] [")
                );
                return ExitCode::SUCCESS;
            }
            pair => only.push(pair.to_string()),
        }
    }
    let settings = match Settings::from_env(quick) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // The same runtime as `gridprobe serve` builds: multi-threaded, one worker per core.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot build the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("gridprobe compare benchmark");
    println!("machine: {}", common::machine());
    println!(
        "{} HTTP probes and {} plugin runs per side per round, {} round(s){}\n",
        settings.probes,
        settings.plugin_runs,
        settings.rounds,
        if quick {
            " (quick: figures indicative only)"
        } else {
            ""
        }
    );
    let rows = match pairs::run(&rt, &settings, &only) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    println!("{TABLE_HEAD}");
    for r in &rows {
        println!("{}", r.markdown());
    }
    println!();
    for r in &rows {
        println!("ROW {}", r.markdown());
    }
    println!("machine after: load average {}", common::load_average());
    if rows.iter().any(|r| r.failed.is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
