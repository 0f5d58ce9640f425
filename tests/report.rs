//! End-to-end tests of `gridprobe report` and `gridprobe reasons` over a store filled with the
//! worked example of docs/availability.md.

mod common;

use common::{gridprobe, insert_into_sqlite, json, lhcb_tcp_result, texts};
use gridprobe_probes::{Outcome, Status};
use gridprobe_results::NewResult;

const H: i64 = 3_600_000;
/// 2026-10-05 00:00:00 UTC.
const DAY: i64 = 1_791_158_400_000;

const CONFIG: &str = r#"
vo = "lhcb"
[defaults]
interval = "1h"
timeout = "10m"

[[site]]
name = "LCG.EXAMPLE.org"
tier = 1
  [[site.service]]
  flavour = "CE"
  hostname = "ce1.example.org"
  [[site.service]]
  flavour = "CE"
  hostname = "ce2.example.org"
  [[site.service]]
  flavour = "SE"
  hostname = "se1.example.org"

[[probe]]
metric = "org.lhcb.CE-job"
kind = "tcp"
flavours = ["CE"]
freshness = "2h 10m"
  [probe.params]
  port = 9619
[[probe]]
metric = "org.lhcb.SE-put"
kind = "tcp"
flavours = ["SE"]
freshness = "2h 10m"
  [probe.params]
  port = 2880

[[profile]]
name = "lhcb_critical"
critical = { CE = ["CE-job"], SE = ["SE-put"] }

[[downtime]]
service = "ce2.example.org"
start = "2026-10-05 08:00"
end = "2026-10-05 14:00"
classification = "scheduled"
reason = "kernel upgrade"
"#;

fn result(
    host: &str,
    flavour: &str,
    metric: &str,
    hour: i64,
    status: Status,
    summary: &str,
) -> NewResult {
    lhcb_tcp_result(
        host,
        flavour,
        metric,
        DAY + hour * H,
        Outcome::new(status, summary),
    )
}

fn fill(store_path: &std::path::Path) {
    let mut rows = Vec::new();
    for h in 0..24 {
        let (st, summary) = if (6..12).contains(&h) {
            (
                Status::Critical,
                format!(
                    "TCP connect failed: connection refused on ce1.example.org:{}",
                    9000 + h
                ),
            )
        } else {
            (Status::Ok, "TCP connect OK".to_string())
        };
        rows.push(result(
            "ce1.example.org",
            "CE",
            "org.lhcb.CE-job",
            h,
            st,
            &summary,
        ));
        rows.push(result(
            "ce2.example.org",
            "CE",
            "org.lhcb.CE-job",
            h,
            Status::Ok,
            "TCP connect OK",
        ));
        if h <= 18 {
            rows.push(result(
                "se1.example.org",
                "SE",
                "org.lhcb.SE-put",
                h,
                Status::Ok,
                "put OK",
            ));
        }
    }
    insert_into_sqlite(store_path, &rows);
}

#[test]
fn month_day_report_matches_the_worked_example() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vo.toml");
    std::fs::write(&config, CONFIG).expect("write");
    let config = config.to_str().expect("utf-8").to_string();
    let store = dir.path().join("r.sqlite");
    fill(&store);
    let store = store.to_str().expect("utf-8");

    let r = json(&[
        "report",
        "--config",
        &config,
        "--store",
        store,
        "--period",
        "2026-10-05",
        "--format",
        "json",
    ]);
    let site = &r["sites"][0];
    let avail = site["figures"]["availability"]
        .as_f64()
        .expect("availability");
    let expected = (16.0 * 60.0 + 10.0) / (20.0 * 60.0 + 10.0);
    assert!(
        (avail - expected).abs() < 1e-9,
        "site availability {avail}, expected {expected}"
    );
    let ce2 = &site["flavours"][0]["instances"][1];
    assert_eq!(ce2["hostname"], "ce2.example.org");
    assert!(
        (ce2["figures"]["availability"].as_f64().unwrap_or(0.0) - 0.75).abs() < 1e-9,
        "{ce2}"
    );
    assert!(
        (ce2["figures"]["reliability"].as_f64().unwrap_or(0.0) - 1.0).abs() < 1e-9,
        "{ce2}"
    );

    // Table at instance level, and CSV.
    let out = gridprobe(&[
        "report",
        "--config",
        &config,
        "--store",
        store,
        "--period",
        "2026-10-05",
        "--level",
        "instance",
    ]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("ce2.example.org"), "{stdout}");
    assert!(
        stdout.contains("75.0%") && stdout.contains("100.0%") && stdout.contains("25.0%"),
        "{stdout}"
    );
    let out = gridprobe(&[
        "report",
        "--config",
        &config,
        "--store",
        store,
        "--period",
        "2026-10-05",
        "--format",
        "csv",
    ]);
    let (stdout, _) = texts(&out);
    assert!(
        stdout.starts_with("site,tier,availability,reliability"),
        "{stdout}"
    );
    assert!(stdout.contains("LCG.EXAMPLE.org,1,0.801653"), "{stdout}");

    // A month with almost no data: n/a, not a number.
    let r = json(&[
        "report", "--config", &config, "--store", store, "--period", "2026-10", "--format", "json",
    ]);
    assert!(r["sites"][0]["figures"]["availability"].is_null(), "{r}");
}

#[test]
fn bad_periods_and_sites_are_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vo.toml");
    std::fs::write(&config, CONFIG).expect("write");
    let store = dir.path().join("r.sqlite");
    fill(&store);
    let (config, store) = (
        config.to_str().expect("utf-8"),
        store.to_str().expect("utf-8"),
    );
    let out = gridprobe(&[
        "report",
        "--config",
        config,
        "--store",
        store,
        "--period",
        "last october",
    ]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("a month (2026-10)") && stderr.contains("24h"),
        "{stderr}"
    );
    let out = gridprobe(&[
        "report",
        "--config",
        config,
        "--store",
        store,
        "--period",
        "24h",
        "--site",
        "LCG.EXAMPLE.or",
    ]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("did you mean `LCG.EXAMPLE.org`?"),
        "{stderr}"
    );
    let out = gridprobe(&[
        "report",
        "--config",
        config,
        "--store",
        store,
        "--period",
        "24h",
        "--profile",
        "x",
    ]);
    let (_, stderr) = texts(&out);
    assert!(
        stderr.contains("no profile named `x` (known: lhcb_critical)"),
        "{stderr}"
    );
}

#[test]
fn reasons_group_the_same_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vo.toml");
    std::fs::write(&config, CONFIG).expect("write");
    let store = dir.path().join("r.sqlite");
    fill(&store);
    let (config, store) = (
        config.to_str().expect("utf-8"),
        store.to_str().expect("utf-8"),
    );
    // The fixture's results are from 2026-10-05; look back far enough from today.
    let r = json(&[
        "reasons", "--config", config, "--store", store, "--since", "3650d", "--format", "json",
    ]);
    let first = &r[0];
    assert_eq!(
        first["reason"], "TCP connect failed: connection refused on <host>",
        "{r}"
    );
    assert_eq!(first["count"], 6);
    assert_eq!(first["sites"][0], "LCG.EXAMPLE.org");
}
