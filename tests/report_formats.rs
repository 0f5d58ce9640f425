//! End-to-end tests of the monthly report's formats (`gridprobe report --format
//! csv|json|html|pdf`, `--output`) over a month of results: one site meeting the targets, one
//! missing them. The PDF is turned into PNG pages by pdftoppm and back into text by pdftotext
//! (poppler-utils, `scripts/services/pdftools.sh`); under CI a missing tool fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{gridprobe, insert_into_sqlite, json, lhcb_tcp_result, texts};
use gridprobe_probes::{Outcome, Status};

const H: i64 = 3_600_000;
/// 2026-11-01 00:00:00 UTC.
const NOV: i64 = 1_793_491_200_000;

const CONFIG: &str = r#"
vo = "lhcb"
[defaults]
interval = "1h"
timeout = "10m"
[report]
targets = { availability = 80, reliability = 85, unknown = 10 }

[[site]]
name = "LCG.GOOD.org"
tier = 1
  [[site.service]]
  flavour = "CE"
  hostname = "ce.good.org"
[[site]]
name = "LCG.BAD.org"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce.bad.org"

[[probe]]
metric = "org.lhcb.CE-job"
kind = "tcp"
flavours = ["CE"]
freshness = "2h 10m"
  [probe.params]
  port = 9619

[[downtime]]
service = "ce.good.org"
start = "2026-11-10 00:00"
end = "2026-11-10 12:00"
classification = "scheduled"
reason = "kernel upgrade"
"#;

/// November 2026, hourly: the good site always OK; the bad one CRITICAL from 00:00 to 06:00
/// every day (75 % available, below the 80 % target).
fn setup() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vo.toml");
    std::fs::write(&config, CONFIG).expect("write");
    let store = dir.path().join("r.sqlite");
    let mut rows = Vec::new();
    for h in 0..30 * 24 {
        let t = NOV + h * H;
        let mut good = lhcb_tcp_result(
            "ce.good.org",
            "CE",
            "org.lhcb.CE-job",
            t,
            Outcome::new(Status::Ok, "ok"),
        );
        good.result.site = "LCG.GOOD.org".into();
        let status = if h % 24 < 6 {
            Status::Critical
        } else {
            Status::Ok
        };
        let mut bad = lhcb_tcp_result(
            "ce.bad.org",
            "CE",
            "org.lhcb.CE-job",
            t,
            Outcome::new(status, "tcp"),
        );
        bad.result.site = "LCG.BAD.org".into();
        rows.push(good);
        rows.push(bad);
    }
    insert_into_sqlite(&store, &rows);
    let s = |p: PathBuf| p.to_str().expect("utf-8").to_string();
    (dir, s(config), s(store))
}

fn report(config: &str, store: &str, format: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "report", "--config", config, "--store", store, "--period", "2026-11", "--format", format,
    ];
    args.extend(extra);
    let out = gridprobe(&args);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{format}: {stderr}");
    (stdout, stderr)
}

#[test]
fn csv_and_json_judge_each_site_against_the_targets() {
    let (_dir, config, store) = setup();
    let (csv, _) = report(&config, &store, "csv", &[]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[0].starts_with("site,tier,availability,reliability,maintenance,unknown_fraction"),
        "{csv}"
    );
    assert!(lines[0].ends_with("targets_met,federation,weight"), "{csv}");
    // 12 h of scheduled downtime in 720 h: availability 708/720, reliability 1.
    assert!(
        lines[1].starts_with("LCG.GOOD.org,1,0.983333,1.000000,0.016667,0.000000,"),
        "{csv}"
    );
    assert!(lines[1].ends_with(",yes,yes,yes,yes,,1"), "{csv}");
    assert!(
        lines[2].starts_with("LCG.BAD.org,2,0.750000,0.750000,"),
        "{csv}"
    );
    assert!(lines[2].ends_with(",no,no,yes,no,,1"), "{csv}");

    let v = json(&[
        "report", "--config", &config, "--store", &store, "--period", "2026-11", "--format", "json",
    ]);
    assert_eq!(v["targets"]["availability"], 0.8, "{v}");
    assert_eq!(v["sites"][0]["verdict"]["met"], true, "{v}");
    assert_eq!(v["sites"][1]["verdict"]["availability"], false, "{v}");
    let days = v["sites"][1]["days"].as_array().expect("days");
    assert_eq!(days.len(), 30);
    assert_eq!(days[0]["availability"], 0.75);
    assert_eq!(v["sites"][0]["days"][9]["maintenance"], 0.5, "{v}");
    assert_eq!(v["downtimes"][0]["reason"], "kernel upgrade");
    assert_eq!(v["tiers"][0]["name"], "Tier-1");
    // The plain report's fields are still there.
    assert_eq!(v["sites"][0]["flavours"][0]["flavour"], "CE");
}

#[test]
fn html_is_one_file_with_a_strip_per_site() {
    let (dir, config, store) = setup();
    let out = dir.path().join("report.html");
    let (stdout, _) = report(
        &config,
        &store,
        "html",
        &["--output", out.to_str().expect("utf-8")],
    );
    assert!(stdout.is_empty(), "{stdout}");
    let html = std::fs::read_to_string(&out).expect("html written");
    if let Ok(keep) = std::env::var("GRIDPROBE_KEEP_REPORT_HTML") {
        let _ = std::fs::copy(&out, keep);
    }
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<style>"), "standalone: its own stylesheet");
    assert!(!html.contains("<script"), "no script");
    assert!(html.contains("Availability report 2026-11 · lhcb"));
    assert!(html.contains("1 of 2 sites meet all targets"), "{html}");
    // One box per day per site.
    assert_eq!(html.matches("<rect x=").count(), 60, "{html}");
    assert!(html.contains("2026-11-01: availability 75.0%"), "{html}");
    // The missed figures are marked (coloured by the stylesheet).
    assert!(
        html.contains("<td class=\"num tgt tgt-miss\">75.0%</td>"),
        "{html}"
    );
    assert!(
        html.contains("<td class=\"num tgt tgt-ok\">98.3%</td>"),
        "{html}"
    );
    assert!(html.contains("kernel upgrade"));
    assert!(html.contains("How the figures are defined"));
    assert!(html.contains("availability &gt;= 80%, reliability &gt;= 85%, unknown &lt;= 10%"));
}

/// A poppler tool, or `None` (then the test is skipped, but fails under CI).
fn tool(var: &str, name: &str) -> Option<PathBuf> {
    common::required_path(
        var,
        Some(&format!("/usr/bin/{name}")),
        name,
        "scripts/test-env.sh pdftools installs poppler-utils",
    )
}

fn pages(dir: &Path) -> Vec<PathBuf> {
    let mut p: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    p.sort();
    p
}

#[test]
fn pdf_renders_to_pages_and_its_text_holds_the_figures() {
    let (Some(pdftoppm), Some(pdftotext)) = (
        tool("GRIDPROBE_TEST_PDFTOPPM", "pdftoppm"),
        tool("GRIDPROBE_TEST_PDFTOTEXT", "pdftotext"),
    ) else {
        return;
    };
    let (dir, config, store) = setup();
    let pdf = dir.path().join("report.pdf");
    report(
        &config,
        &store,
        "pdf",
        &["--output", pdf.to_str().expect("utf-8")],
    );
    let bytes = std::fs::read(&pdf).expect("pdf written");
    assert!(bytes.starts_with(b"%PDF-"), "not a PDF");
    // Standard output redirected: the same document.
    let out = gridprobe(&[
        "report", "--config", &config, "--store", &store, "--period", "2026-11", "--format", "pdf",
    ]);
    assert!(out.status.success());
    assert!(out.stdout.starts_with(b"%PDF-"));

    let png_dir = dir.path().join("png");
    std::fs::create_dir(&png_dir).expect("png dir");
    let status = Command::new(&pdftoppm)
        .args(["-png", "-r", "50"])
        .arg(&pdf)
        .arg(png_dir.join("page"))
        .status()
        .expect("pdftoppm runs");
    assert!(status.success(), "pdftoppm failed on the report");
    let pngs = pages(&png_dir);
    assert!(!pngs.is_empty(), "no page rendered");
    for p in &pngs {
        let png = std::fs::read(p).expect("png");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 1000, "{p:?}");
    }
    if let Ok(keep) = std::env::var("GRIDPROBE_KEEP_REPORT_PNG") {
        let _ = std::fs::copy(&pngs[0], keep);
    }

    let out = Command::new(&pdftotext)
        .args(["-layout"])
        .arg(&pdf)
        .arg("-")
        .output()
        .expect("pdftotext runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Availability report 2026-11",
        "1 of 2 sites meet all targets",
        "LCG.GOOD.org",
        "LCG.BAD.org",
        "98.3%",
        "75.0%",
        "missed",
        "kernel upgrade",
        "Tier-1",
        "How the figures are defined",
        "page 1 of",
    ] {
        assert!(
            text.contains(needle),
            "`{needle}` not in the PDF's text:\n{text}"
        );
    }
}

#[test]
fn the_plain_table_and_per_flavour_csv_are_unchanged() {
    let (_dir, config, store) = setup();
    let (table, _) = report(&config, &store, "table", &[]);
    assert!(
        table.contains("availability and reliability for 2026-11"),
        "{table}"
    );
    assert!(table.contains("75.0%"), "{table}");
    let (csv, _) = report(&config, &store, "csv", &["--level", "flavour"]);
    assert!(csv.starts_with("site,tier,flavour,availability"), "{csv}");
    assert!(csv.contains("LCG.BAD.org,2,CE,0.750000"), "{csv}");
}

#[test]
fn trends_name_the_flapping_site_and_its_longest_critical() {
    let (_dir, config, store) = setup();
    let v = json(&[
        "trends", "--config", &config, "--store", &store, "--period", "2026-11", "--format",
        "json", "--limit", "5",
    ]);
    // The bad site flips to CRITICAL at 00:00 and back at 06:00 each day: 59 changes (the
    // month starts CRITICAL), and its longest CRITICAL stretch is six hours.
    assert_eq!(v["flapping"][0]["site"], "LCG.BAD.org", "{v}");
    assert_eq!(v["flapping"][0]["changes"], 59, "{v}");
    assert_eq!(v["flapping"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        v["longest_critical"][0]["longest_critical"]["duration_ms"],
        6 * H,
        "{v}"
    );
    assert_eq!(v["by_site"][0]["name"], "LCG.BAD.org");
    assert_eq!(v["by_metric"][0]["name"], "org.lhcb.CE-job");
    assert_eq!(v["longest_unknown"].as_array().map(Vec::len), Some(0));
    let out = gridprobe(&[
        "trends", "--config", &config, "--store", &store, "--period", "2026-11",
    ]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Most flapping cells"), "{stdout}");
    assert!(stdout.contains("6h from 2026-11-01"), "{stdout}");
    let out = gridprobe(&[
        "trends", "--config", &config, "--store", &store, "--limit", "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn one_site_and_bad_outputs() {
    let (dir, config, store) = setup();
    let v = json(&[
        "report",
        "--config",
        &config,
        "--store",
        &store,
        "--period",
        "2026-11",
        "--format",
        "json",
        "--site",
        "LCG.BAD.org",
    ]);
    assert_eq!(v["sites"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["tiers"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["tiers"][0]["name"], "Tier-2", "{v}");
    // The good site's downtime is not the bad site's.
    assert_eq!(v["downtimes"].as_array().map(Vec::len), Some(0), "{v}");
    let missing = dir.path().join("no/such/dir/r.pdf");
    let out = gridprobe(&[
        "report",
        "--config",
        &config,
        "--store",
        &store,
        "--period",
        "2026-11",
        "--format",
        "pdf",
        "--output",
        missing.to_str().expect("utf-8"),
    ]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write") && stderr.contains("r.pdf"),
        "{stderr}"
    );
    let out = gridprobe(&[
        "report", "--config", &config, "--store", &store, "--period", "2026-11", "--format", "docx",
    ]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("pdf") && stderr.contains("html"),
        "{stderr}"
    );
}
