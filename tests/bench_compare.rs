//! The compare benchmark's harness (`benches/compare.rs`, code in `benches/common/`) builds and
//! completes a tiny run: a few hundred probes per side of the pairs it measures itself (HTTP
//! probes against blackbox_exporter and against bare reqwest, plugin probes against a bare
//! process loop), with a row for each. Nothing is timed or compared here: the figures belong to
//! `bash bench/compare`.
//!
//! Needs the nginx and blackbox_exporter that `scripts/services/benchtools.sh` keeps running
//! (`GRIDPROBE_TEST_BENCH_TARGET`, `GRIDPROBE_TEST_BENCH_BLACKBOX`), wrk
//! (`GRIDPROBE_TEST_WRK`) and the Nagios plugins (`GRIDPROBE_TEST_PLUGINS`). Under CI
//! (`CI=true`) a missing one fails the test instead of skipping it.

#[path = "../benches/common/mod.rs"]
mod bench;

use std::path::PathBuf;

use bench::pairs::{parse_wrk, run, Settings, TABLE_HEAD};

/// A variable of the test environment, or `None` (outside CI) when unset.
fn env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{var} is not set: run the tests after `eval \"$(bash scripts/test-env.sh)\"` \
                 (scripts/services/benchtools.sh)"
            );
            eprintln!("note: {var} not set (eval \"$(bash scripts/test-env.sh)\"); test not run");
            None
        }
    }
}

/// A program that must exist; a missing one fails the test under CI.
fn program(path: PathBuf) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} not found (scripts/services/benchtools.sh installs it)",
        path.display()
    );
    eprintln!(
        "note: {} not installed; test not run outside CI",
        path.display()
    );
    None
}

#[test]
fn tiny_run_prints_every_pair() {
    let Some(target) = env("GRIDPROBE_TEST_BENCH_TARGET") else {
        return;
    };
    let Some(blackbox) = env("GRIDPROBE_TEST_BENCH_BLACKBOX") else {
        return;
    };
    let Some(wrk) = program(PathBuf::from(
        std::env::var("GRIDPROBE_TEST_WRK").unwrap_or_else(|_| "/usr/bin/wrk".into()),
    )) else {
        return;
    };
    let plugins = std::env::var("GRIDPROBE_TEST_PLUGINS")
        .unwrap_or_else(|_| "/usr/lib/nagios/plugins".to_string());
    let Some(plugin) = program(PathBuf::from(plugins).join("check_dummy")) else {
        return;
    };
    let settings = Settings {
        probes: 300,
        plugin_runs: 300,
        rounds: 1,
        target: Some(target),
        blackbox: Some(blackbox),
        wrk,
        plugin,
        plugin_args: vec!["0".into(), "ok".into()],
        wrk_seconds: Some(1),
        dashboard_sites: 10,
        dashboard_seconds: 1,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pairs: Vec<String> = ["http", "limit", "plugin"].map(String::from).to_vec();
    let rows = run(&rt, &settings, &pairs).expect("known pairs");

    let names: Vec<&str> = rows.iter().map(|r| r.pair.as_str()).collect();
    assert_eq!(
        names,
        ["HTTP probes", "HTTP probes vs limit", "plugin probes"]
    );
    let table: Vec<String> = rows.iter().map(|r| r.markdown()).collect();
    for (row, line) in rows.iter().zip(&table) {
        assert_eq!(row.failed, None, "{line}");
        // One sample per side (one round), each a positive rate, and a ratio to report.
        assert_eq!((row.a.len(), row.b.len()), (1, 1), "{line}");
        assert!(row.a[0] > 0.0 && row.b[0] > 0.0, "{line}");
        assert!(row.ratio().is_some_and(f64::is_finite), "{line}");
        assert!(row.met().is_some(), "{line}");
        assert_eq!(line.matches('|').count(), 9, "eight columns: {line}");
        assert!(line.contains("/s ("), "median (min – max): {line}");
    }
    assert_eq!(
        TABLE_HEAD.lines().next().map(|h| h.matches('|').count()),
        Some(9)
    );
}

#[test]
fn unknown_pair_is_refused() {
    let settings = Settings {
        probes: 1,
        plugin_runs: 1,
        rounds: 1,
        target: None,
        blackbox: None,
        wrk: PathBuf::from("wrk"),
        plugin: PathBuf::from("/nonexistent"),
        plugin_args: Vec::new(),
        wrk_seconds: None,
        dashboard_sites: 1,
        dashboard_seconds: 1,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let err = run(&rt, &settings, &["htpp".to_string()]).expect_err("unknown pair");
    assert!(err.to_string().contains("unknown pair"), "{err}");
}

#[test]
fn parses_wrk_reports() {
    let w = parse_wrk(
        "Running 5s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n  \
         Latency Distribution\n     50%    1.50ms\n     99%  250.00us\n  \
         16389 requests in 5.00s, 2.06MB read\n  \
         Socket errors: connect 0, read 2, write 0, timeout 1\n  \
         Non-2xx or 3xx responses: 3\nRequests/sec:   3277.43\n",
    )
    .expect("parses");
    assert_eq!(
        (w.requests, w.errors, w.non_2xx, w.p50_ms, w.p99_ms),
        (16389, 3, 3, Some(1.5), Some(0.25))
    );
    assert!((w.per_second - 3277.43).abs() < 1e-9);
    assert!(parse_wrk("nothing useful").is_err());
}
