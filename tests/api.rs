//! End-to-end tests of the JSON API of `gridprobe serve`: reads, errors, tokens and on-demand
//! runs, over real HTTP.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{call, script, wait_until, Serve, StoppableHttp};

const OPERATOR: &str = "operator-secret-token";
const CERN_ADMIN: &str = "cern-admin-secret-token";

fn config(dir: &Path, web_port: u16) -> String {
    let slow = script(dir, "slow.sh", "sleep 3\necho 'SLOW OK - done'\nexit 0");
    let hash = |t: &str| gridprobe_runner::access::sha256_hex(t);
    let text = format!(
        r#"
vo = "e2e"
[defaults]
interval = "1h"
timeout = "20s"
[server]
startup_spread = "1s"
shutdown_grace = "1s"
[access]
runs_per_hour = 3
  [[access.token]]
  name = "operators"
  sha256 = "{op}"
  role = "operator"
  [[access.token]]
  name = "cern-admins"
  sha256 = "{cern}"
  role = "site-admin"
  sites = ["LCG.CERN.ch"]

[[site]]
name = "LCG.CERN.ch"
tier = 0
  [[site.service]]
  flavour = "WEB"
  hostname = "127.0.0.1"
  endpoint = "http://127.0.0.1:{web_port}/"
  [[site.service]]
  flavour = "CE"
  hostname = "ce.cern.local"
[[site]]
name = "LCG.RAL.uk"
tier = 1
  [[site.service]]
  flavour = "CE"
  hostname = "ce.ral.local"

[[probe]]
metric = "org.e2e.web"
kind = "http"
flavours = ["WEB"]
[[probe]]
metric = "org.e2e.CE-slow"
kind = "nagios"
flavours = ["CE"]
  [probe.params]
  command = "{slow}"
"#,
        op = hash(OPERATOR),
        cern = hash(CERN_ADMIN),
        slow = slow.display()
    );
    let path = dir.join("vo.toml");
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8").to_string()
}

#[test]
fn api_reads_errors_tokens_and_on_demand_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = StoppableHttp::start("hello");
    let config = config(dir.path(), web.port);
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&config, store.to_str().expect("utf-8"));
    let addr = serve.http_addr();

    // Reads.
    assert!(
        wait_until(Duration::from_secs(15), || {
            let (code, m) = call(&addr, "GET", "/api/v1/matrix", None, None);
            code == 200 && m["sites"][0]["instances"][0]["cells"][0]["state"] == "OK"
        }),
        "matrix never showed the web cell OK:\n{}",
        serve.output()
    );
    let (code, sites) = call(&addr, "GET", "/api/v1/sites", None, None);
    assert_eq!(code, 200);
    assert_eq!(sites[0]["name"], "LCG.CERN.ch");
    let (code, site) = call(&addr, "GET", "/api/v1/sites/LCG.CERN.ch", None, None);
    assert_eq!(code, 200, "{site}");
    assert_eq!(site["services"][0]["flavour"], "WEB");
    let (code, page) = call(
        &addr,
        "GET",
        "/api/v1/results?site=LCG.CERN.ch&probe=web&limit=1",
        None,
        None,
    );
    assert_eq!(code, 200, "{page}");
    let id = page["results"][0]["id"].as_i64().expect("id");
    let (code, one) = call(&addr, "GET", &format!("/api/v1/results/{id}"), None, None);
    assert_eq!((code, one["metric"].as_str()), (200, Some("org.e2e.web")));
    let (code, av) = call(
        &addr,
        "GET",
        "/api/v1/availability?period=24h&level=instance",
        None,
        None,
    );
    assert_eq!(code, 200, "{av}");
    let (code, _) = call(&addr, "GET", "/api/v1/reasons?since=1h", None, None);
    assert_eq!(code, 200);
    let (code, trends) = call(&addr, "GET", "/api/v1/trends?period=24h", None, None);
    assert_eq!(code, 200, "{trends}");
    assert!(trends["cells"].as_u64().is_some_and(|n| n >= 1), "{trends}");
    assert!(trends["by_site"].is_array(), "{trends}");
    let (code, spec) = call(&addr, "GET", "/api/openapi.json", None, None);
    assert_eq!(code, 200);
    for path in [
        "/api/v1/sites",
        "/api/v1/sites/{site}",
        "/api/v1/matrix",
        "/api/v1/results",
        "/api/v1/results/{id}",
        "/api/v1/availability",
        "/api/v1/reasons",
        "/api/v1/trends",
        "/api/v1/runs",
        "/api/v1/runs/{id}",
        "/api/v1/notifications",
        "/api/v1/problems",
        "/api/v1/acks",
        "/api/v1/agents",
    ] {
        assert!(spec["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    // Without [agents]: an empty answer that says so.
    let (code, agents) = call(&addr, "GET", "/api/v1/agents", None, None);
    assert_eq!(code, 200, "{agents}");
    assert_eq!(agents["configured"], false, "{agents}");
    assert_eq!(agents["agents"], serde_json::json!([]), "{agents}");

    // Errors name what is wrong.
    let (code, e) = call(&addr, "GET", "/api/v1/results?limt=5", None, None);
    assert_eq!(code, 400);
    assert_eq!(e["error"], "invalid parameter `limt`");
    assert!(
        e["detail"]
            .as_str()
            .unwrap_or("")
            .contains("did you mean `limit`?"),
        "{e}"
    );
    let (code, e) = call(&addr, "GET", "/api/v1/results?status=PURPLE", None, None);
    assert_eq!(
        (code, e["error"].as_str()),
        (400, Some("invalid parameter `status`"))
    );
    let (code, e) = call(
        &addr,
        "GET",
        "/api/v1/availability?period=october",
        None,
        None,
    );
    assert_eq!(
        (code, e["error"].as_str()),
        (400, Some("invalid parameter `period`"))
    );
    let (code, e) = call(&addr, "GET", "/api/v1/sites/LCG.CERN.c", None, None);
    assert_eq!(code, 404);
    assert!(
        e["detail"]
            .as_str()
            .unwrap_or("")
            .contains("did you mean `LCG.CERN.ch`?"),
        "{e}"
    );
    let (code, _) = call(&addr, "GET", "/api/v1/results/999999", None, None);
    assert_eq!(code, 404);

    // Starting runs needs a token; a site admin only at their site.
    let body = r#"{"site": "LCG.CERN.ch", "probe": "CE-slow"}"#;
    let (code, _) = call(&addr, "POST", "/api/v1/runs", None, Some(body));
    assert_eq!(code, 401);
    let (code, _) = call(&addr, "POST", "/api/v1/runs", Some("wrong"), Some(body));
    assert_eq!(code, 401);
    let (code, e) = call(
        &addr,
        "POST",
        "/api/v1/runs",
        Some(CERN_ADMIN),
        Some(r#"{"site": "LCG.RAL.uk"}"#),
    );
    assert_eq!(code, 403, "{e}");
    let (code, e) = call(
        &addr,
        "POST",
        "/api/v1/runs",
        Some(OPERATOR),
        Some(r#"{"site": "LCG.CERN.ch", "colour": "red"}"#),
    );
    assert_eq!(code, 400, "{e}");
    assert!(
        e["detail"]
            .as_str()
            .unwrap_or("")
            .contains("unknown field `colour`"),
        "{e}"
    );
    let (code, _) = call(
        &addr,
        "POST",
        "/api/v1/runs",
        Some(OPERATOR),
        Some(&format!(r#"{{"site": "{}"}}"#, "x".repeat(20_000))),
    );
    assert_eq!(code, 413);
    let (code, e) = call(
        &addr,
        "POST",
        "/api/v1/runs",
        Some(OPERATOR),
        Some(r#"{"site": "LCG.CERN.ch", "probe": "nope"}"#),
    );
    assert_eq!(code, 404, "{e}");

    // Wait for the scheduled run of the slow probe to end (while it runs, a run is 409 too).
    // 45 s: a catch-up run due within 30 s of the next slot waits for it (`first_due`).
    assert!(wait_until(Duration::from_secs(45), || {
        let (_, page) = call(
            &addr,
            "GET",
            "/api/v1/results?site=LCG.CERN.ch&probe=CE-slow",
            None,
            None,
        );
        page["results"].as_array().is_some_and(|a| !a.is_empty())
    }));
    // A run: 202, then a second on the same cell is 409 while it is in flight.
    let (code, started) = call(&addr, "POST", "/api/v1/runs", Some(CERN_ADMIN), Some(body));
    assert_eq!(code, 202, "{started}");
    let run_id = started["id"].as_u64().expect("run id");
    let (code, e) = call(&addr, "POST", "/api/v1/runs", Some(OPERATOR), Some(body));
    assert_eq!(code, 409, "{e}");
    let finished = wait_until(Duration::from_secs(30), || {
        let (_, r) = call(&addr, "GET", &format!("/api/v1/runs/{run_id}"), None, None);
        r["state"] == "finished"
    });
    assert!(finished, "run never finished:\n{}", serve.output());
    let (_, r) = call(&addr, "GET", &format!("/api/v1/runs/{run_id}"), None, None);
    assert_eq!(r["results"][0]["status"], "OK", "{r}");
    assert_eq!(r["results"][0]["trigger"], "on_demand");
    assert_eq!(r["started_by"], "cern-admins");
    // It is in the store, marked on demand.
    assert!(wait_until(Duration::from_secs(10), || {
        let (_, page) = call(
            &addr,
            "GET",
            "/api/v1/results?site=LCG.CERN.ch&probe=CE-slow&limit=10",
            None,
            None,
        );
        page["results"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["trigger"] == "on_demand"))
    }));

    // runs_per_hour = 3: after the CE run, two more runs at the site pass, the next is refused.
    let web_body = r#"{"site": "LCG.CERN.ch", "probe": "web"}"#;
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..5 {
        let (code, r) = call(
            &addr,
            "POST",
            "/api/v1/runs",
            Some(OPERATOR),
            Some(web_body),
        );
        match code {
            202 => {
                accepted += 1;
                let id = r["id"].as_u64().expect("id");
                assert!(wait_until(Duration::from_secs(15), || {
                    call(&addr, "GET", &format!("/api/v1/runs/{id}"), None, None).1["state"]
                        == "finished"
                }));
            }
            429 => {
                refused = Some(r);
                break;
            }
            other => panic!("unexpected {other}: {r}"),
        }
    }
    assert_eq!(accepted, 2);
    let refused = refused.expect("the fourth run was not refused");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or("")
            .contains("runs_per_hour"),
        "{refused}"
    );
}
