//! End-to-end tests of the data probes (`storage`, `conddb`) through the built binary, against
//! the real servers started by `scripts/test-env.sh`: nginx WebDAV, xrootd, PostgreSQL and
//! MariaDB. Under CI (`CI=true`) a missing server fails the tests instead of skipping them.

mod common;

use std::path::Path;

use common::{gridprobe, texts};

/// The address of a test server from the environment, or `None` (outside CI) when unset.
fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{var} is not set: run the tests after `eval \"$(bash scripts/test-env.sh)\"`"
            );
            eprintln!("note: {var} not set (eval \"$(bash scripts/test-env.sh)\"); test not run");
            None
        }
    }
}

/// Every server address these tests need, or `None` outside CI when one is missing.
struct Servers {
    webdav: String,
    xrootd: String,
    pg: String,
    mysql: String,
}

fn servers() -> Option<Servers> {
    Some(Servers {
        webdav: service("GRIDPROBE_TEST_WEBDAV")?,
        xrootd: service("GRIDPROBE_TEST_XROOTD")?,
        pg: service("GRIDPROBE_TEST_PG")?,
        mysql: service("GRIDPROBE_TEST_MYSQL")?,
    })
}

fn run_json(config: &str, extra: &[&str]) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let mut args = vec!["run", "--config", config, "--format", "json"];
    args.extend_from_slice(extra);
    let out = gridprobe(&args);
    let (stdout, stderr) = texts(&out);
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("json ({e}):\n{stdout}\n{stderr}"));
    (out.status.code(), items, stderr)
}

/// The result of `metric` on service `hostname`.
fn result<'a>(
    items: &'a [serde_json::Value],
    metric: &str,
    hostname: &str,
) -> &'a serde_json::Value {
    items
        .iter()
        .map(|i| &i["result"])
        .find(|r| r["metric"] == metric && r["hostname"] == hostname)
        .unwrap_or_else(|| panic!("no result for {metric} on {hostname} in {items:?}"))
}

fn summary(r: &serde_json::Value) -> &str {
    r["summary"].as_str().unwrap_or("")
}

fn labels(r: &serde_json::Value) -> Vec<String> {
    r["perfdata"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["label"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write config");
    path.to_str().expect("utf-8").to_string()
}

#[test]
fn storage_and_conddb_against_the_local_servers() {
    let Some(s) = servers() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let table = format!("gridprobe_e2e_{}", std::process::id());
    let sqlite = dir.path().join("cond.db");
    let config = write(
        dir.path(),
        "vo.toml",
        &format!(
            r#"
vo = "test"
[defaults]
interval = "1h"
timeout = "20s"
retries = 0

[[site]]
name = "T2_LOCAL"
tier = 2
  [[site.service]]
  flavour = "WEBDAV"
  hostname = "127.0.0.1"
  endpoint = "{webdav}/data/"
  [[site.service]]
  flavour = "WEBDAV"
  hostname = "readonly.localhost"
  endpoint = "{webdav}/readonly/"
  [[site.service]]
  flavour = "XROOTD"
  hostname = "127.0.0.1"
  endpoint = "{xrootd}//data/"
  [[site.service]]
  flavour = "CONDDB"
  hostname = "postgresql.localhost"
  endpoint = "{pg}"
  [[site.service]]
  flavour = "CONDDB"
  hostname = "mariadb.localhost"
  endpoint = "{mysql}"
  [[site.service]]
  flavour = "CONDDB"
  hostname = "sqlite.localhost"
  endpoint = "sqlite://{sqlite}"

[[probe]]
metric = "org.test.SE-webdav"
kind = "storage"
flavours = ["WEBDAV"]
  [probe.params]
  test_area = "gridprobe-e2e/"

[[probe]]
metric = "org.test.SE-xrootd"
kind = "storage"
flavours = ["XROOTD"]
  [probe.params]
  test_area = "gridprobe-e2e/"
  server_checksum = "require"

[[probe]]
metric = "org.test.CONDDB"
kind = "conddb"
flavours = ["CONDDB"]
  [probe.params]
  query = "SELECT max(inserted_at) FROM {table}"
  warn_age = "1h"
"#,
            webdav = s.webdav,
            xrootd = s.xrootd,
            pg = s.pg,
            mysql = s.mysql,
            sqlite = sqlite.display(),
        ),
    );
    // The same conditions table in the three SQL databases.
    rusqlite::Connection::open(&sqlite)
        .and_then(|db| {
            db.execute_batch(&format!(
                "CREATE TABLE {table} (inserted_at TEXT); \
                 INSERT INTO {table} VALUES (datetime('now', '-5 minutes'));"
            ))
        })
        .expect("SQLite set up");
    let pg_setup = std::process::Command::new("psql")
        .args([
            &s.pg,
            "-qAtX",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!(
                "CREATE TABLE {table} (inserted_at timestamptz); \
                 INSERT INTO {table} VALUES (now() - interval '5 minutes')"
            ),
        ])
        .status()
        .expect("psql runs");
    assert!(pg_setup.success(), "PostgreSQL set up");
    let my_url = url_parts(&s.mysql);
    let my_setup = std::process::Command::new("mariadb")
        .args([
            "-h",
            &my_url.0,
            "-P",
            &my_url.1,
            "-u",
            &my_url.2,
            &my_url.3,
            "-e",
            &format!(
                "CREATE TABLE {table} (inserted_at DATETIME); \
                 INSERT INTO {table} VALUES (UTC_TIMESTAMP() - INTERVAL 5 MINUTE)"
            ),
        ])
        .status()
        .expect("mariadb runs");
    assert!(my_setup.success(), "MariaDB set up");

    let check = gridprobe(&["check", &config]);
    assert_eq!(check.status.code(), Some(0), "{}", texts(&check).1);

    let (code, items, stderr) = run_json(&config, &[]);

    // Clean up before asserting, so that a failure leaves no tables behind.
    let _ = std::process::Command::new("psql")
        .args([&s.pg, "-qAtX", "-c", &format!("DROP TABLE {table}")])
        .status();
    let _ = std::process::Command::new("mariadb")
        .args([
            "-h",
            &my_url.0,
            "-P",
            &my_url.1,
            "-u",
            &my_url.2,
            &my_url.3,
            "-e",
            &format!("DROP TABLE {table}"),
        ])
        .status();

    // The read-only area makes the run CRITICAL; everything else is OK.
    assert_eq!(code, Some(2), "{items:?}\n{stderr}");
    let webdav = result(&items, "org.test.SE-webdav", "127.0.0.1");
    assert_eq!(webdav["status"], "OK", "{webdav}");
    assert!(
        summary(webdav).starts_with("WebDAV round trip of 1024 bytes"),
        "{webdav}"
    );
    assert_eq!(
        labels(webdav),
        ["put", "stat", "get", "checksum", "list", "delete", "gone", "total", "size"]
    );
    let readonly = result(&items, "org.test.SE-webdav", "readonly.localhost");
    assert_eq!(readonly["status"], "CRITICAL", "{readonly}");
    assert!(
        summary(readonly).starts_with(&format!(
            "put failed: HTTP 403 Forbidden on {}/readonly/gridprobe-e2e/gridprobe-SE-webdav-",
            s.webdav
        )),
        "{readonly}"
    );
    let xrootd = result(&items, "org.test.SE-xrootd", "127.0.0.1");
    assert_eq!(xrootd["status"], "OK", "{xrootd}");
    assert!(
        summary(xrootd).starts_with("XRootD round trip of 1024 bytes"),
        "{xrootd}"
    );
    assert!(
        xrootd["details"]
            .as_str()
            .unwrap_or("")
            .contains("matches the file"),
        "{xrootd}"
    );
    for (host, backend) in [
        ("postgresql.localhost", "PostgreSQL"),
        ("mariadb.localhost", "MariaDB/MySQL"),
        ("sqlite.localhost", "SQLite"),
    ] {
        let r = result(&items, "org.test.CONDDB", host);
        assert_eq!(r["status"], "OK", "{r}");
        assert!(summary(r).contains("(5.0 min old); 1 row in"), "{r}");
        assert!(summary(r).contains(&format!("from {backend} ")), "{r}");
        assert_eq!(labels(r), ["connect", "query", "total", "rows", "age"]);
    }
}

#[test]
fn grid_local_sample_is_green_with_the_local_servers() {
    let Some(s) = servers() else { return };
    // The sample names the scripts' default addresses.
    let defaults = [
        (&s.webdav, "http://127.0.0.1:18481"),
        (&s.xrootd, "root://127.0.0.1:11094"),
        (&s.pg, "postgresql://postgres@127.0.0.1:5432/test"),
        (&s.mysql, "mysql://root@127.0.0.1:3306/test"),
    ];
    if defaults.iter().any(|(got, want)| got.as_str() != *want) {
        eprintln!("note: test servers on other addresses than the sample's; test not run");
        return;
    }
    let (code, items, stderr) = run_json("config/examples/grid-local.toml", &[]);
    for item in &items {
        let r = &item["result"];
        assert_eq!(r["status"], "OK", "{r}");
    }
    assert_eq!(items.len(), 4, "{items:?}");
    assert_eq!(code, Some(0), "{stderr}");
}

/// Splits `mysql://user@host:port/db` into host, port, user, database.
fn url_parts(url: &str) -> (String, String, String, String) {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let (auth, rest) = rest.split_once('@').unwrap_or(("root", rest));
    let (hostport, db) = rest.split_once('/').unwrap_or((rest, "test"));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    (host.into(), port.into(), auth.into(), db.into())
}
