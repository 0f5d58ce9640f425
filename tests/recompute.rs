//! End-to-end tests of `gridprobe recompute` and of `gridprobe report` applying what it
//! records: the life cycle from the command line, refusals with their reasons, and the figures
//! before, during and after an applied recomputation.

mod common;

use common::{gridprobe, insert_into_sqlite, json, lhcb_tcp_result, texts};
use gridprobe_probes::{Outcome, Status};

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

[[probe]]
metric = "org.lhcb.CE-job"
kind = "tcp"
flavours = ["CE"]
  [probe.params]
  port = 9619
"#;

fn setup() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("dir");
    let config = common::write_file(dir.path(), "lhcb.toml", CONFIG);
    let store = dir.path().join("lhcb.sqlite");
    // One day: CRITICAL 00-06, OK after.
    let rows: Vec<_> = (0..24)
        .map(|h| {
            let outcome = if h < 6 {
                Outcome {
                    status: Status::Critical,
                    summary: "job failed".into(),
                    details: String::new(),
                    perfdata: vec![],
                }
            } else {
                Outcome::ok("job done")
            };
            lhcb_tcp_result(
                "ce1.example.org",
                "CE",
                "org.lhcb.CE-job",
                DAY + h * H,
                outcome,
            )
        })
        .collect();
    insert_into_sqlite(&store, &rows);
    let store = store.to_str().expect("utf-8").to_string();
    (dir, config, store)
}

fn availability(config: &str, store: &str) -> (f64, serde_json::Value) {
    let r = json(&[
        "report",
        "--config",
        config,
        "--store",
        store,
        "--period",
        "2026-10-05",
        "--format",
        "json",
    ]);
    let a = r["sites"][0]["figures"]["availability"]
        .as_f64()
        .expect("a figure");
    (a, r["recomputations"].clone())
}

#[test]
fn request_approve_revoke_changes_the_report_and_keeps_the_history() {
    let (_dir, config, store) = setup();
    let base = ["recompute", "--config", &config, "--store", &store];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        let out = gridprobe(&args);
        let (stdout, stderr) = texts(&out);
        (out.status.code(), stdout, stderr)
    };
    assert_eq!(availability(&config, &store).0, 18.0 / 24.0);

    let (code, stdout, stderr) = run(&[
        "request",
        "--period",
        "2026-10-05T00:00..2026-10-05T06:00",
        "--reason",
        "the CE probe's proxy had expired",
        "--site",
        "LCG.EXAMPLE.org",
        "--metric",
        "CE-job",
        "--force",
        "ok",
        "--by",
        "site-admin",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "recomputation 1 is pending");
    assert_eq!(availability(&config, &store).0, 18.0 / 24.0, "pending");

    let (code, stdout, _) = run(&["approve", "1", "--by", "operator"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout.trim(), "recomputation 1 is applied");
    let (a, applied) = availability(&config, &store);
    assert_eq!(a, 1.0);
    assert_eq!(applied[0]["id"], 1);
    assert_eq!(applied[0]["reason"], "the CE probe's proxy had expired");

    // Approving again is refused with the reason; revoking needs a note.
    let (code, _, stderr) = run(&["approve", "1"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("refused: recomputation 1 cannot be approved: it is applied"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["revoke", "1", "--note", " "]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("a note is required"), "{stderr}");
    let (code, _, _) = run(&[
        "revoke",
        "1",
        "--note",
        "the proxy was the site's own",
        "--by",
        "op2",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(availability(&config, &store).0, 18.0 / 24.0);

    let list = json(&[
        "recompute",
        "--config",
        &config,
        "--store",
        &store,
        "list",
        "--format",
        "json",
    ]);
    let steps: Vec<(String, String)> = list[0]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or("").to_string(),
                s["by"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("requested".to_string(), "site-admin".to_string()),
            ("approved".into(), "operator".into()),
            ("applied".into(), "gridprobe".into()),
            ("revoked".into(), "op2".into()),
        ]
    );
    assert_eq!(list[0]["state"], "revoked");
    assert_eq!(
        list[0]["metrics"][0], "org.lhcb.CE-job",
        "short name stored in full"
    );
    let (code, stdout, _) = run(&["list"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("revoked") && stdout.contains("force OK"),
        "{stdout}"
    );
}

#[test]
fn bad_requests_are_refused_with_their_reason() {
    let (_dir, config, store) = setup();
    let request = |extra: &[&str]| {
        let mut args = vec![
            "recompute",
            "--config",
            &config,
            "--store",
            &store,
            "request",
        ];
        args.extend_from_slice(extra);
        let out = gridprobe(&args);
        let (_, stderr) = texts(&out);
        (out.status.code(), stderr)
    };
    let day = ["--period", "2026-10-05"];
    let cases: [(&[&str], &str); 5] = [
        (&["--reason", "", "--exclude"], "needs a reason"),
        (
            &["--reason", "x", "--exclude", "--site", "LCG.EXAMPLE.orgg"],
            "unknown site `LCG.EXAMPLE.orgg` (did you mean `LCG.EXAMPLE.org`?)",
        ),
        (
            &["--reason", "x", "--exclude", "--metric", "CE-jb"],
            "unknown metric `CE-jb`",
        ),
        (
            &["--reason", "x", "--force", "maybe"],
            "unknown status `maybe`",
        ),
        (&["--reason", "x"], "--exclude"),
    ];
    for (extra, want) in cases {
        let mut args = day.to_vec();
        args.extend_from_slice(extra);
        let (code, stderr) = request(&args);
        assert_ne!(code, Some(0), "{args:?}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    let (code, stderr) = request(&["--period", "2099-01-01", "--reason", "x", "--exclude"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("in the future"), "{stderr}");
    // Contradictory forced statuses over the same time.
    let (code, stderr) = request(&["--period", "2026-10-05", "--reason", "x", "--force", "OK"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = request(&[
        "--period",
        "2026-10-05T12",
        "--reason",
        "y",
        "--force",
        "CRITICAL",
        "--site",
        "LCG.EXAMPLE.org",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("contradicts recomputation 1 (pending"),
        "{stderr}"
    );
}
