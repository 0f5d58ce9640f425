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
                Outcome::new(Status::Critical, "job failed")
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
    // The table says which corrections its figures include.
    let out = gridprobe(&[
        "report",
        "--config",
        &config,
        "--store",
        &store,
        "--period",
        "2026-10-05",
    ]);
    let (table, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        table.contains("applied recomputation 1: force OK sites LCG.EXAMPLE.org; metrics"),
        "{table}"
    );

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

/// `common::call` with a body that is always given.
fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    common::call(addr, method, path, token, Some(body))
}

#[test]
fn the_api_takes_requests_by_role_and_every_answer_says_what_it_applied() {
    const OPERATOR: &str = "operator-secret-token";
    const ADMIN: &str = "example-admin-secret-token";
    let (dir, _, store) = setup();
    let hash = gridprobe_runner::access::sha256_hex;
    let config = common::write_file(
        dir.path(),
        "serve.toml",
        &format!(
            "{CONFIG}\n[server]\nstartup_spread = \"1s\"\nshutdown_grace = \"1s\"\n\
             [[site]]\nname = \"LCG.OTHER.org\"\ntier = 2\n  [[site.service]]\n  flavour = \"CE\"\n  hostname = \"ce.other.org\"\n\
             [access]\n  [[access.token]]\n  name = \"operators\"\n  sha256 = \"{}\"\n  role = \"operator\"\n\
             [[access.token]]\n  name = \"example-admins\"\n  sha256 = \"{}\"\n  role = \"site-admin\"\n  sites = [\"LCG.EXAMPLE.org\"]\n",
            hash(OPERATOR),
            hash(ADMIN)
        ),
    );
    let serve = common::Serve::start(&config, &store);
    let addr = serve.http_addr();
    let body = |sites: &str| {
        format!(
            r#"{{"period": "2026-10-05T00:00..2026-10-05T06:00", "reason": "proxy expired", "sites": [{sites}], "action": "force", "status": "OK"}}"#
        )
    };
    let own = body("\"LCG.EXAMPLE.org\"");
    let (code, e) = call(&addr, "POST", "/api/v1/recomputations", None, &own);
    assert_eq!(code, 401, "{e}");
    let (code, e) = call(
        &addr,
        "POST",
        "/api/v1/recomputations",
        Some(ADMIN),
        &body("\"LCG.OTHER.org\""),
    );
    assert_eq!(code, 403, "{e}");
    assert!(
        e["detail"]
            .as_str()
            .unwrap_or("")
            .contains("`LCG.OTHER.org` is not one of them"),
        "{e}"
    );
    let (code, e) = call(
        &addr,
        "POST",
        "/api/v1/recomputations",
        Some(ADMIN),
        r#"{"period": "2099-01-01", "reason": "x", "sites": ["LCG.EXAMPLE.org"], "action": "exclude"}"#,
    );
    assert_eq!(code, 400);
    assert!(
        e["detail"].as_str().unwrap_or("").contains("in the future"),
        "{e}"
    );
    let (code, r) = call(&addr, "POST", "/api/v1/recomputations", Some(ADMIN), &own);
    assert_eq!(code, 201, "{r}");
    assert_eq!(
        (r["state"].as_str(), r["requester"].as_str()),
        (Some("pending"), Some("example-admins"))
    );
    let id = r["id"].as_i64().expect("id");

    // Site admins do not decide; operators do.
    let approve = format!("/api/v1/recomputations/{id}/approve");
    let (code, _) = call(&addr, "POST", &approve, Some(ADMIN), "");
    assert_eq!(code, 403);
    let (code, r) = call(&addr, "POST", &approve, Some(OPERATOR), "");
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["state"], "applied");
    let (code, e) = call(
        &addr,
        "POST",
        &format!("/api/v1/recomputations/{id}/reject"),
        Some(OPERATOR),
        r#"{"note": "late"}"#,
    );
    assert_eq!(code, 409, "{e}");
    let (code, _) = call(
        &addr,
        "POST",
        "/api/v1/recomputations/999/approve",
        Some(OPERATOR),
        "",
    );
    assert_eq!(code, 404);

    // The report over the day applies it and says so.
    let (code, av) = call(
        &addr,
        "GET",
        "/api/v1/availability?period=2026-10-05",
        None,
        "",
    );
    assert_eq!(code, 200, "{av}");
    assert_eq!(av["sites"][0]["figures"]["availability"], 1.0);
    assert_eq!(av["recomputations"][0]["id"], id);
    assert_eq!(av["sites"][0]["recomputations"][0], id);
    let (code, list) = call(
        &addr,
        "GET",
        "/api/v1/recomputations?state=applied",
        None,
        "",
    );
    assert_eq!(code, 200);
    assert_eq!(list["recomputations"].as_array().map(Vec::len), Some(1));
    let (code, e) = call(&addr, "GET", "/api/v1/recomputations?state=done", None, "");
    assert_eq!(code, 400, "{e}");

    // The dashboard lists it with its history.
    let (code, page) = call(&addr, "GET", "/recomputations", None, "");
    assert_eq!(code, 200);
    let page = page.as_str().unwrap_or("").to_string();
    assert!(
        page.contains("approved by operators") && page.contains("proxy expired"),
        "{page}"
    );

    let revoke = format!("/api/v1/recomputations/{id}/revoke");
    let (code, e) = call(&addr, "POST", &revoke, Some(OPERATOR), "");
    assert_eq!(code, 400, "{e}");
    let (code, r) = call(
        &addr,
        "POST",
        &revoke,
        Some(OPERATOR),
        r#"{"note": "the site's fault after all"}"#,
    );
    assert_eq!(code, 200, "{r}");
    let (_, av) = call(
        &addr,
        "GET",
        "/api/v1/availability?period=2026-10-05",
        None,
        "",
    );
    assert_eq!(av["sites"][0]["figures"]["availability"], 0.75);
    assert_eq!(av["recomputations"].as_array().map(Vec::len), Some(0));
}

#[test]
fn check_rejects_bad_groups_and_weights_at_their_lines() {
    let f = "tests/fixtures/broken/availability";
    let out = gridprobe(&["check", &format!("{f}/vo.toml")]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for line in [
        format!("{f}/pledges.csv:3:1: error: weight given for site `T2_AB`, which is not configured"),
        format!("{f}/vo.toml:28:71: error: group `compute` names flavour `HTCONDOR`, which no service offers"),
        format!("{f}/vo.toml:29:71: error: flavour `ARC-CE` is in two groups of profile `p`: `compute` and `storage`"),
    ] {
        assert!(
            stderr.lines().any(|l| l == line),
            "missing `{line}` in:\n{stderr}"
        );
    }
    assert!(stderr.contains("did you mean `T2_A`?"), "{stderr}");
    assert!(stderr.contains("3 errors found"), "{stderr}");
}
