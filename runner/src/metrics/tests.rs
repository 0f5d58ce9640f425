use super::*;
use std::path::Path;

use gridprobe_probes::{Outcome, Trigger};
use gridprobe_results::{spawn_writer, NewResult, SqliteStore, WriterConfig};

use crate::state::Plan;

const CONFIG: &str = r#"
vo = "v"
[defaults]
interval = "10m"
timeout = "1m"
[[site]]
name = "T1_A"
tier = 1
  [[site.service]]
  flavour = "CE"
  hostname = "ce1"
[[site]]
name = "T2_B"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce2"
[[probe]]
metric = "org.v.ce-job"
kind = "tcp"
flavours = ["CE"]
params = { port = 1 }
"#;

fn plan(text: &str) -> Plan {
    let l = gridprobe_config::load_str(Path::new("v.toml"), text);
    assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
    let (probes, diags) = gridprobe_probes::registry::build_all(&l.config);
    assert!(diags.is_empty(), "{diags}");
    Plan {
        config: Arc::new(l.config),
        probes: Arc::new(probes),
    }
}

fn result(site: &str, host: &str, status: Status, started_ms: i64) -> ProbeResult {
    ProbeResult {
        metric: "org.v.ce-job".into(),
        kind: "tcp".into(),
        vo: "v".into(),
        site: site.into(),
        hostname: host.into(),
        flavour: "CE".into(),
        started_at_ms: started_ms,
        duration_ms: 1500,
        outcome: Outcome::new(status, "summary"),
        attempt: 1,
        trigger: Trigger::Scheduled,
    }
}

/// The value of the one sample of `family` whose labels contain every `a="b"` in `labels`.
fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn service(plan: Plan, metrics: &Arc<Metrics>) -> (Arc<ServeState>, Arc<dyn ResultStore>) {
    let store: Arc<dyn ResultStore> = Arc::new(SqliteStore::open_in_memory().expect("store"));
    let (writer, _task) = spawn_writer(store.clone(), WriterConfig::default());
    let observers: Vec<Arc<dyn ResultObserver>> = vec![metrics.clone()];
    (ServeState::new(plan, writer, observers), store)
}

#[test]
fn names_cover_the_issue_and_expand_histograms() {
    let names = metric_names();
    for n in [
        "gridprobe_probe_status",
        "gridprobe_probe_duration_seconds_bucket",
        "gridprobe_probe_duration_seconds_sum",
        "gridprobe_probe_duration_seconds_count",
        "gridprobe_probe_last_run_timestamp_seconds",
        "gridprobe_probe_runs_total",
        "gridprobe_site_availability",
        "gridprobe_site_reliability",
        "gridprobe_site_status",
        "gridprobe_scheduler_queue_wait_seconds_total",
        "gridprobe_scheduler_inflight",
        "gridprobe_scheduler_entries",
        "gridprobe_store_write_errors_total",
        "gridprobe_store_dropped_total",
        "gridprobe_store_pending",
        "gridprobe_build_info",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    assert!(!names
        .iter()
        .any(|x| x == "gridprobe_probe_duration_seconds"));
    assert!(names.iter().all(|n| n.starts_with("gridprobe_")));
}

#[test]
fn encodings_follow_nagios_and_the_documented_site_codes() {
    assert_eq!(probe_status_value(Status::Ok), 0);
    assert_eq!(probe_status_value(Status::Warning), 1);
    assert_eq!(probe_status_value(Status::Critical), 2);
    assert_eq!(probe_status_value(Status::Unknown), 3);
    assert_eq!(probe_status_value(Status::Standby), 4);
    assert_eq!(site_status_value(SiteStatus::Good), 0);
    assert_eq!(site_status_value(SiteStatus::Failed), 2);
    assert_eq!(site_status_value(SiteStatus::Inactive), 4);
    assert_eq!(site_status_value(SiteStatus::New), 5);
}

#[tokio::test]
async fn cells_render_from_states_and_vanish_when_a_reload_removes_them() {
    let metrics = Metrics::new();
    let (shared, _store) = service(plan(CONFIG), &metrics);
    let now = unix_ms(SystemTime::now());
    shared.record(vec![result("T1_A", "ce1", Status::Critical, now - 1000)]);
    // Ancient: older than its freshness (2 × 10m + 1m), so stale.
    shared.record(vec![result(
        "T2_B",
        "ce2",
        Status::Standby,
        now - 3_600_000,
    )]);
    let text = metrics.render(&shared).expect("render");
    let a = [("site", "T1_A"), ("host", "ce1"), ("probe", "org.v.ce-job")];
    assert_eq!(
        sample(&text, "gridprobe_probe_status", &a),
        Some(2.0),
        "{text}"
    );
    assert_eq!(sample(&text, "gridprobe_probe_stale", &a), Some(0.0));
    let t = sample(&text, "gridprobe_probe_last_run_timestamp_seconds", &a).expect("ts");
    assert!((t - (now - 1000) as f64 / 1000.0).abs() < 0.01, "{t}");
    let b = [("site", "T2_B"), ("vo", "v"), ("flavour", "CE")];
    assert_eq!(sample(&text, "gridprobe_probe_status", &b), Some(4.0));
    assert_eq!(sample(&text, "gridprobe_probe_stale", &b), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "gridprobe_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    // Reload without T2_B: its series go at the next scrape, T1_A's stay.
    let smaller = CONFIG.replace("name = \"T2_B\"", "name = \"T2_C\"");
    shared.set_plan(plan(&smaller));
    let text = metrics.render(&shared).expect("render");
    assert!(!text.contains("T2_B"), "{text}");
    assert_eq!(sample(&text, "gridprobe_probe_status", &a), Some(2.0));
    // T2_C has no result yet: no series rather than a made-up status.
    assert!(!text.contains("site=\"T2_C\""), "{text}");
}

#[tokio::test]
async fn runs_attempts_and_durations_are_counted_as_recorded() {
    let metrics = Metrics::new();
    let (shared, _store) = service(plan(CONFIG), &metrics);
    let now = unix_ms(SystemTime::now());
    // One run of two attempts (a retry), then a STANDBY run.
    let mut first = result("T1_A", "ce1", Status::Unknown, now - 2000);
    first.attempt = 1;
    let mut second = result("T1_A", "ce1", Status::Ok, now - 1000);
    second.attempt = 2;
    shared.record(vec![first, second]);
    shared.record(vec![result("T2_B", "ce2", Status::Standby, now)]);
    let text = metrics.render(&shared).expect("render");
    let runs = |s| {
        sample(
            &text,
            "gridprobe_probe_runs_total",
            &[("kind", "tcp"), ("status", s)],
        )
    };
    assert_eq!(runs("OK"), Some(1.0), "{text}");
    assert_eq!(runs("STANDBY"), Some(1.0));
    assert_eq!(runs("UNKNOWN"), None);
    let attempts = |s| {
        sample(
            &text,
            "gridprobe_probe_attempts_total",
            &[("kind", "tcp"), ("status", s)],
        )
    };
    assert_eq!(attempts("UNKNOWN"), Some(1.0));
    assert_eq!(attempts("OK"), Some(1.0));
    // Two measured attempts of 1.5 s; the STANDBY result is not a measurement.
    assert_eq!(
        sample(
            &text,
            "gridprobe_probe_duration_seconds_count",
            &[("kind", "tcp")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "gridprobe_probe_duration_seconds_bucket",
            &[("kind", "tcp"), ("le", "1")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "gridprobe_probe_duration_seconds_bucket",
            &[("kind", "tcp"), ("le", "2.5")]
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn scheduler_and_store_counters_are_mirrored() {
    let metrics = Metrics::new();
    let (shared, _store) = service(plan(CONFIG), &metrics);
    shared.stats.entries.store(2, Ordering::Relaxed);
    shared.stats.inflight.store(1, Ordering::Relaxed);
    shared.stats.runs_finished.store(7, Ordering::Relaxed);
    shared.stats.skipped_late.store(3, Ordering::Relaxed);
    shared
        .stats
        .queue_wait_ms_total
        .store(1500, Ordering::Relaxed);
    let text = metrics.render(&shared).expect("render");
    assert_eq!(sample(&text, "gridprobe_scheduler_entries", &[]), Some(2.0));
    assert_eq!(
        sample(&text, "gridprobe_scheduler_inflight", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "gridprobe_scheduler_runs_finished_total", &[]),
        Some(7.0)
    );
    assert_eq!(
        sample(
            &text,
            "gridprobe_scheduler_skipped_total",
            &[("reason", "late")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "gridprobe_scheduler_queue_wait_seconds_total", &[]),
        Some(1.5)
    );
    // Counters follow their sources without double counting on the next scrape.
    shared.stats.runs_finished.store(9, Ordering::Relaxed);
    shared
        .stats
        .queue_wait_ms_total
        .store(2000, Ordering::Relaxed);
    let text = metrics.render(&shared).expect("render");
    assert_eq!(
        sample(&text, "gridprobe_scheduler_runs_finished_total", &[]),
        Some(9.0)
    );
    assert_eq!(
        sample(&text, "gridprobe_scheduler_queue_wait_seconds_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "gridprobe_store_write_errors_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "gridprobe_store_dropped_total", &[]),
        Some(0.0)
    );
}

#[tokio::test]
async fn site_figures_are_computed_in_the_background_once_scraped() {
    let metrics = Metrics::new();
    // A result stays current for a day here, so one result 10 hours ago covers the rest.
    let config = CONFIG.replace(
        "params = { port = 1 }",
        "params = { port = 1 }\nfreshness = \"1d\"",
    );
    let (shared, store) = service(plan(&config), &metrics);
    let now = unix_ms(SystemTime::now());
    // T1_A OK for the last 10 hours; T2_B never measured.
    store
        .insert(&[NewResult {
            result: result("T1_A", "ce1", Status::Ok, now - 10 * 3_600_000),
            is_final: true,
        }])
        .await
        .expect("insert");
    let shutdown = CancellationToken::new();
    let task = metrics.spawn_refresh(&shared, store.clone(), shutdown.clone());
    // Nothing is computed before anyone scrapes.
    tokio::task::yield_now().await;
    assert!(!metrics
        .render(&shared)
        .expect("render")
        .contains("gridprobe_site_status"));
    // The first scrape waits for the 24-hour figures.
    metrics.note_scrape().await;
    let text = metrics.render(&shared).expect("render");
    let a = [("site", "T1_A"), ("tier", "1"), ("window", "24h")];
    // MISSING for 14 hours (unknown, 58 % < the 90 % threshold), then OK: UP / KNOWN = 1.
    assert_eq!(
        sample(&text, "gridprobe_site_availability", &a),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "gridprobe_site_status", &[("site", "T1_A")]),
        Some(0.0),
        "{text}"
    );
    // No results at T2_B: inactive, and n/a figures are absent rather than 0.
    assert_eq!(
        sample(&text, "gridprobe_site_status", &[("site", "T2_B")]),
        Some(4.0)
    );
    assert_eq!(
        sample(&text, "gridprobe_site_availability", &[("site", "T2_B")]),
        None
    );
    // The 30-day window follows shortly after; there 97 % of the time is unknown, so its
    // figures are n/a (absent), but its refresh time shows it was computed.
    let mut month = None;
    for _ in 0..100 {
        let text = metrics.render(&shared).expect("render");
        month = sample(
            &text,
            "gridprobe_site_refresh_timestamp_seconds",
            &[("window", "30d")],
        );
        if month.is_some() {
            assert_eq!(
                sample(&text, "gridprobe_site_availability", &[("window", "30d")]),
                None,
                "{text}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(month.is_some(), "the 30-day figures were never computed");
    shutdown.cancel();
    task.await.expect("refresh task ends on shutdown");
}
