//! End-to-end tests of the PostgreSQL store through the built binary: `gridprobe migrate-store`
//! copying an SQLite store filled through the `gridprobe_results` API (then compared query by
//! query), the CLI reading PostgreSQL, `serve` recording into it (and replaying a spool left
//! under the name older releases gave it), and the errors of bad store URLs and unreachable
//! servers.
//!
//! The tests needing a server use `GRIDPROBE_TEST_PG` (scripts/test-env.sh exports it), each in
//! a schema of its own that is dropped afterwards; without it they print a note and pass,
//! except under `CI=true`, where they fail.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pg::Pg;
use common::{gridprobe, json, texts, wait_until, web_config, Serve, StoppableHttp};
use gridprobe_config::Downtime;
use gridprobe_probes::{Outcome, ProbeResult, Status, Trigger};
use gridprobe_results::{
    CellFilter, HistoryQuery, NewResult, PgStore, ResultStore, SqliteStore, StoreEvent,
};

const SITES: [&str; 3] = ["SITE-A", "SITE-B", "SITE-C"];
const METRICS: [&str; 2] = ["org.e2e.Ping", "org.e2e.Port"];

fn config_text() -> String {
    let mut text =
        String::from("vo = \"e2e\"\n[defaults]\ninterval = \"10m\"\ntimeout = \"30s\"\n");
    for (i, site) in SITES.iter().enumerate() {
        text.push_str(&format!(
            "\n[[site]]\nname = \"{site}\"\ntier = {}\n  [[site.service]]\n  flavour = \"CE\"\n  \
             hostname = \"ce.{}.example.org\"\n",
            i + 1,
            site.to_lowercase()
        ));
    }
    for m in METRICS {
        text.push_str(&format!(
            "\n[[probe]]\nmetric = \"{m}\"\nkind = \"tcp\"\nflavours = [\"CE\"]\n  \
             [probe.params]\n  port = 9619\n"
        ));
    }
    text
}

fn write_config(dir: &Path, extra: &str) -> String {
    let path = dir.join("vo.toml");
    std::fs::write(&path, format!("{}{extra}", config_text())).expect("write config");
    path.to_str().expect("utf-8").to_string()
}

fn now_ms() -> i64 {
    gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now())
}

fn result(site: &str, metric: &str, t: i64, status: Status) -> ProbeResult {
    ProbeResult {
        metric: metric.into(),
        kind: "tcp".into(),
        vo: "e2e".into(),
        site: site.into(),
        hostname: format!("ce.{}.example.org", site.to_lowercase()),
        flavour: "CE".into(),
        started_at_ms: t,
        duration_ms: 15,
        outcome: Outcome::new(status, format!("{status:?} at {t}")).with_details("line\nline 2"),
        attempt: 1,
        trigger: Trigger::Scheduled,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Fills the SQLite store: every cell every 10 minutes over ~33 hours, some failures, retry
/// attempts, an out-of-order late result, events and downtimes of two sources.
async fn fill(store: &SqliteStore, from_ms: i64, rounds: i64) -> usize {
    let mut rows = Vec::new();
    for round in 0..rounds {
        for site in SITES {
            for metric in METRICS {
                let t = from_ms + round * 600_000;
                let failing = (round + site.len() as i64) % 7 == 0;
                if failing {
                    let mut first = result(site, metric, t, Status::Critical);
                    first.attempt = 1;
                    rows.push(NewResult {
                        result: first,
                        is_final: false,
                    });
                    let mut second = result(site, metric, t + 1_000, Status::Critical);
                    second.attempt = 2;
                    rows.push(NewResult {
                        result: second,
                        is_final: true,
                    });
                } else {
                    rows.push(NewResult {
                        result: result(site, metric, t, Status::Ok),
                        is_final: true,
                    });
                }
            }
        }
    }
    // A late hard result older than the newest: history has it, `latest` ignores it.
    rows.push(NewResult {
        result: result("SITE-A", METRICS[0], from_ms + 5, Status::Warning),
        is_final: true,
    });
    for chunk in rows.chunks(1_000) {
        store.insert(chunk).await.expect("fill");
    }
    rows.len()
}

fn downtimes() -> (Vec<Downtime>, Vec<Downtime>) {
    let dt = |id: &str, host: Option<&str>, source: &str| Downtime {
        id: id.into(),
        site: Some("SITE-B".into()),
        hostname: host.map(str::to_string),
        flavour: host.map(|_| "CE".to_string()),
        start_ms: now_ms() - 3_600_000,
        end_ms: now_ms() + 3_600_000,
        scheduled: true,
        outage: true,
        reason: format!("downtime {id}"),
        source: source.into(),
    };
    (
        vec![
            dt("1001", Some("ce.site-b.example.org"), "gocdb"),
            dt("1002", None, "gocdb"),
        ],
        vec![dt("x-1", Some("ce.site-b.example.org"), "other")],
    )
}

/// A matrix document without its ages (they move with the clock between two commands).
fn without_ages(mut v: serde_json::Value) -> serde_json::Value {
    match &mut v {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !k.contains("age") && !k.contains("generated") && k != "now_ms");
            for value in map.values_mut() {
                *value = without_ages(value.take());
            }
        }
        serde_json::Value::Array(items) => {
            for value in items.iter_mut() {
                *value = without_ages(value.take());
            }
        }
        _ => {}
    }
    v
}

/// Every history page of a query, following the cursor.
async fn all_pages(store: &dyn ResultStore, q: &HistoryQuery) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .history(&HistoryQuery {
                before,
                ..q.clone()
            })
            .await
            .expect("history");
        let Some(last) = page.last() else { break };
        before = Some((last.result.started_at_ms, last.id));
        ids.extend(page.iter().map(|r| r.id));
    }
    ids
}

#[test]
fn migrate_store_copies_history_resumes_and_refuses_foreign_targets() {
    let Some(pg) = Pg::new("migrate") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let sqlite_path = dir.path().join("results.sqlite");
    let from = format!("sqlite:{}", sqlite_path.display());
    let rt = runtime();
    let start = now_ms() - 200 * 600_000;
    let (gocdb, other) = downtimes();
    let filled = rt.block_on(async {
        let store = SqliteStore::open(&sqlite_path).expect("sqlite");
        let n = fill(&store, start, 200).await;
        for (i, kind) in ["results_dropped", "note", "results_dropped"]
            .iter()
            .enumerate()
        {
            store
                .record_event(&StoreEvent {
                    at_ms: start + i as i64,
                    kind: kind.to_string(),
                    message: format!("event {i}"),
                })
                .await
                .expect("event");
        }
        store.replace_downtimes("gocdb", &gocdb).await.expect("dt");
        store.replace_downtimes("other", &other).await.expect("dt");
        n
    });
    assert!(filled > 1_200, "{filled}");

    // Batches of 500: many transactions, progress lines, totals.
    let out = gridprobe(&[
        "migrate-store",
        "--config",
        &config,
        "--from",
        &from,
        "--to",
        &pg.url,
        "--batch",
        "500",
    ]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "copied {filled} results (0 already there), 3 events, 3 downtimes"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("the latest result of every cell agrees"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("{filled} / {filled} results (100%)")),
        "{stderr}"
    );

    // Both stores answer every query the same, ids included.
    rt.block_on(async {
        let sqlite = SqliteStore::open(&sqlite_path).expect("sqlite");
        let pg_store = PgStore::open(&pg.url, None).await.expect("pg");
        assert_eq!(pg_store.count().await.expect("count"), filled as u64);
        let latest = |s: &'static str| CellFilter {
            site: Some(s.into()),
            ..Default::default()
        };
        assert_eq!(
            sqlite.latest(&CellFilter::default()).await.expect("latest"),
            pg_store
                .latest(&CellFilter::default())
                .await
                .expect("latest")
        );
        assert_eq!(
            sqlite.latest(&latest("SITE-B")).await.expect("latest"),
            pg_store.latest(&latest("SITE-B")).await.expect("latest")
        );
        for q in [
            HistoryQuery {
                limit: 97,
                include_attempts: true,
                ..Default::default()
            },
            HistoryQuery {
                site: Some("SITE-A".into()),
                hostname: Some("ce.site-a.example.org".into()),
                metric: Some(METRICS[0].into()),
                limit: 50,
                ..Default::default()
            },
            HistoryQuery {
                non_ok_only: true,
                since_ms: Some(start + 3_600_000),
                limit: 20,
                ..Default::default()
            },
            HistoryQuery {
                status: Some(Status::Critical),
                include_attempts: true,
                limit: 33,
                ..Default::default()
            },
        ] {
            let (a, b) = (all_pages(&sqlite, &q).await, all_pages(&pg_store, &q).await);
            assert!(!a.is_empty());
            assert_eq!(a, b, "{q:?}");
        }
        let one = sqlite
            .history(&HistoryQuery::default())
            .await
            .expect("history")[0]
            .clone();
        assert_eq!(pg_store.get(one.id).await.expect("get"), Some(one));
        let period = (start - 1, now_ms());
        assert_eq!(
            sqlite
                .timelines(period.0, period.1, &CellFilter::default())
                .await
                .expect("timelines"),
            pg_store
                .timelines(period.0, period.1, &CellFilter::default())
                .await
                .expect("timelines")
        );
        let mut dts = pg_store
            .downtimes(i64::MIN, i64::MAX)
            .await
            .expect("downtimes");
        let mut want = sqlite
            .downtimes(i64::MIN, i64::MAX)
            .await
            .expect("downtimes");
        dts.sort_by(|a, b| (&a.source, &a.id).cmp(&(&b.source, &b.id)));
        want.sort_by(|a, b| (&a.source, &a.id).cmp(&(&b.source, &b.id)));
        assert_eq!(dts, want);
        let events = pg_store.events(i64::MIN).await.expect("events");
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            vec!["results_dropped", "note", "results_dropped", "migrated"]
        );
    });

    // The CLI reads the PostgreSQL store like the file.
    let matrix = json(&[
        "matrix", "--config", &config, "--store", &pg.url, "--format", "json",
    ]);
    let from_file = json(&[
        "matrix", "--config", &config, "--store", &from, "--format", "json",
    ]);
    assert_eq!(without_ages(matrix), without_ages(from_file));
    let history = json(&[
        "results", "--config", &config, "--store", &pg.url, "--site", "SITE-C", "--format", "json",
    ]);
    assert!(
        history.as_array().is_some_and(|a| !a.is_empty()),
        "{history}"
    );

    // A second run copies nothing; new results in the source are copied by the next one.
    let rerun = || {
        gridprobe(&[
            "migrate-store",
            "--config",
            &config,
            "--from",
            &from,
            "--to",
            &pg.url,
        ])
    };
    let out = rerun();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "copied 0 results ({filled} already there), 0 events"
        )),
        "{stdout}"
    );
    assert!(stderr.contains("resuming after result"), "{stderr}");
    let more = rt.block_on(async {
        let store = SqliteStore::open(&sqlite_path).expect("sqlite");
        fill(&store, now_ms() - 60_000, 1).await
    });
    let out = rerun();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("copied {more} results ({filled} already there)")),
        "{stdout}"
    );

    // A target that has results of its own is not a copy: refused, nothing written.
    rt.block_on(async {
        let pg_store = PgStore::open(&pg.url, None).await.expect("pg");
        pg_store
            .insert(&[NewResult {
                result: result("SITE-A", METRICS[1], now_ms(), Status::Ok),
                is_final: true,
            }])
            .await
            .expect("insert");
    });
    let out = rerun();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("are not a copy of"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn serve_records_into_postgres() {
    let Some(pg) = Pg::new("serve") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let web = StoppableHttp::start("hello");
    let config_path = dir.path().join("vo.toml");
    std::fs::write(&config_path, web_config(web.port)).expect("config");
    let config = config_path.to_str().expect("utf-8");
    let mut serve = Serve::start(config, &pg.url);
    serve.wait_for("gridprobe serving vo e2e", Duration::from_secs(30));
    assert!(
        serve.output().contains(&format!("results: {}", pg.url)),
        "{}",
        serve.output()
    );
    let recorded = wait_until(Duration::from_secs(20), || {
        let h = json(&[
            "results", "--config", config, "--store", &pg.url, "--site", "T2_E2E", "--format",
            "json",
        ]);
        h.as_array().is_some_and(|a| a.len() >= 3)
    });
    assert!(recorded, "no results in PostgreSQL:\n{}", serve.output());
    serve.signal("TERM");
    assert_eq!(
        serve.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        serve.output()
    );
    let m = json(&[
        "matrix", "--config", config, "--store", &pg.url, "--format", "json",
    ]);
    assert_eq!(
        m["sites"][0]["instances"][0]["cells"][0]["state"], "OK",
        "{m}"
    );
}

#[test]
fn bad_store_urls_and_unreachable_servers_fail_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");

    // A password in the URL: refused before any connection, and never echoed.
    let out = gridprobe(&[
        "matrix",
        "--config",
        &config,
        "--store",
        "postgresql://gp:hunter2@127.0.0.1:5432/gp",
    ]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("put the password in PGPASSWORD or [server] store_password_file"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");

    // The same in the configuration: a positioned error from `check`.
    let with_password = dir.path().join("pw.toml");
    std::fs::write(
        &with_password,
        format!(
            "{}\n[server]\nstore = \"postgresql://gp:hunter2@db/gp\"\n",
            config_text()
        ),
    )
    .expect("write");
    let out = gridprobe(&["check", with_password.to_str().expect("utf-8")]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("pw.toml:"), "{all}");
    assert!(all.contains("holds a password"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");

    // Nothing listens on port 1: the message names host and port, no panic, exit 1.
    for args in [
        vec![
            "matrix",
            "--config",
            &config,
            "--store",
            "postgresql://postgres@127.0.0.1:1/gp",
        ],
        vec![
            "import",
            "downtimes",
            "tests/fixtures/import/gocdb-downtimes.xml",
            "--config",
            &config,
            "--store",
            "postgresql://postgres@127.0.0.1:1/gp",
        ],
    ] {
        let out = gridprobe(&args);
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("postgresql://postgres@127.0.0.1:1/gp")
                && stderr.contains("connection refused by 127.0.0.1:1"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    // migrate-store: a missing source, a SQLite target.
    let out = gridprobe(&[
        "migrate-store",
        "--config",
        &config,
        "--from",
        "sqlite:/nonexistent/gridprobe.sqlite",
        "--to",
        "postgresql://postgres@127.0.0.1:1/gp",
    ]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no SQLite store at /nonexistent/gridprobe.sqlite"),
        "{stderr}"
    );
    let out = gridprobe(&[
        "migrate-store",
        "--config",
        &config,
        "--from",
        "sqlite:/nonexistent/gridprobe.sqlite",
        "--to",
        "/tmp/x.sqlite",
    ]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--to must be a PostgreSQL URL"), "{stderr}");
}

/// Before the state directory had one naming, the default spool of a PostgreSQL store was
/// `vo_example_org.pg.spool` (dots replaced) while the SQLite store was `vo.example.org.sqlite`.
/// Both now share the stem `vo.example.org`; a spool an older release left under the old name
/// is still used, so what it holds reaches the store after the upgrade.
#[test]
fn a_spool_left_under_the_old_name_is_replayed_after_an_upgrade() {
    use std::process::{Command, Stdio};

    use gridprobe_results::{ResultMessage, Spool, SpoolConfig};

    let Some(pg) = Pg::new("oldspool") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let old = state.join("gridprobe").join("vo_example_org.pg.spool");
    let new = state.join("gridprobe").join("vo.example.org.pg.spool");
    let config_path = dir.path().join("vo.toml");
    std::fs::write(
        &config_path,
        r#"
vo = "vo.example.org"
[defaults]
interval = "1h"
timeout = "500ms"
[server]
startup_spread = "1s"
shutdown_grace = "2s"

[[site]]
name = "T2_E2E"
tier = 2
  [[site.service]]
  flavour = "WEB"
  hostname = "127.0.0.1"
  endpoint = "http://127.0.0.1:9/"

[[probe]]
metric = "org.e2e.web"
kind = "http"
flavours = ["WEB"]
"#,
    )
    .expect("config");
    let config = config_path.to_str().expect("utf-8");

    // What an older release left in its spool when it stopped with the database unreachable.
    let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
    let mut spooled = result("T2_E2E", "org.e2e.web", now - 60_000, Status::Warning);
    spooled.vo = "vo.example.org".into();
    spooled.hostname = "127.0.0.1".into();
    spooled.flavour = "WEB".into();
    spooled.outcome = Outcome::new(Status::Warning, "spooled before the upgrade");
    let message = ResultMessage::new(
        "old-release",
        &NewResult {
            result: spooled,
            is_final: true,
        },
    );
    {
        let (mut spool, _) =
            Spool::open(&old.join("store"), SpoolConfig::default()).expect("old spool");
        spool.append(&[message.to_json()]).expect("append");
    }

    let child = Command::new(common::bin())
        .args(["serve", "--config", config, "--store", &pg.url])
        .args(["--listen", "127.0.0.1:0"])
        .env("XDG_STATE_HOME", &state)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let replayed = wait_until(Duration::from_secs(30), || {
        let h = json(&[
            "results", "--config", config, "--store", &pg.url, "--site", "T2_E2E", "--format",
            "json",
        ]);
        h.as_array().is_some_and(|a| {
            a.iter()
                .any(|r| r["summary"].as_str() == Some("spooled before the upgrade"))
        })
    });
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let out = child.wait_with_output().expect("serve exits");
    let (stdout, stderr) = texts(&out);
    assert!(
        replayed,
        "the old spool was not replayed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("1 results spooled by an earlier run are written to the store first"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(old.join("store").is_dir());
    assert!(
        !new.exists(),
        "a second spool was made at {}",
        new.display()
    );
}
