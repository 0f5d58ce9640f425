//! Tests of the `conddb` kind; the PostgreSQL and MariaDB ones use the servers of `scripts/test-
//! env.sh`.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::test_support::test_service;
use crate::test_support::{build_with, context, line_of};

fn probe(params: &str) -> SharedProbe {
    crate::test_support::built(build, NAME, params)
}

fn ctx(timeout: Duration) -> ProbeContext {
    let mut c = context("127.0.0.1", None, timeout);
    c.metric = "org.test.CONDDB".into();
    c
}

/// Builds the probe from `params` and runs it once with `timeout`.
async fn outcome(params: &str, timeout: Duration) -> Outcome {
    probe(params).run(&ctx(timeout)).await
}

fn labels(o: &Outcome) -> Vec<&str> {
    crate::test_support::perf_labels(o)
}

/// A name no other test uses.
fn unique(what: &str) -> String {
    format!(
        "gridprobe_{what}_{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

#[test]
fn params_are_documented() {
    crate::kind::assert_params_documented::<CondDbParams>(PARAMS);
}

#[test]
fn only_single_reads_pass() {
    for ok in [
        "SELECT max(since) FROM iov WHERE tag = 'x; DROP TABLE iov'",
        "  with t as (select 1 as a) select a from t;",
        "select 1 -- then delete everything\n",
        "/* update */ SELECT \"insert\" FROM t",
        "SELECT $$;delete$$, created_at, updated_by, comment, lock FROM t",
        "VALUES (1)",
    ] {
        assert_eq!(check_read_only(ok), Ok(()), "{ok}");
    }
    for (bad, why) in [
        ("DELETE FROM iov", "not a `DELETE` statement"),
        ("SELECT 1; DROP TABLE x", "more than one statement"),
        ("select * into backup from iov", "uses `INTO`"),
        ("select * from iov for update", "uses `UPDATE`"),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "uses `DELETE`",
        ),
        ("SELECT 'open", "unclosed ' quote"),
        ("", "empty"),
    ] {
        let e = check_read_only(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn times_are_read_from_several_forms() {
    let want = 1_764_082_901_000; // 2025-11-25 15:01:41 UTC
    assert_eq!(parse_time_text("2025-11-25 15:01:41+00"), Ok(want));
    assert_eq!(parse_time_text("2025-11-25T15:01:41Z"), Ok(want));
    assert_eq!(parse_time_text("2025-11-25T16:01:41+01:00"), Ok(want));
    assert_eq!(parse_time_text("2025-11-25 15:01:41"), Ok(want));
    assert_eq!(parse_time_text("1764082901"), Ok(want));
    assert_eq!(parse_time_text("2025-11-25 15:01:41.5+00"), Ok(want + 500));
    assert!(parse_time_text("yesterday").is_err());
    for v in [
        1_764_082_901f64,
        1_764_082_901e3,
        1_764_082_901e6,
        1_764_082_901e9,
    ] {
        assert_eq!(unix_number_ms(v), want, "{v}");
    }
    assert_eq!(Cell::Int(1_764_082_901).time_ms(), Ok(want));
    assert!(Cell::Null.time_ms().is_err());
    assert!(Cell::Other("date".into())
        .time_ms()
        .unwrap_err()
        .contains("cast"));
}

#[test]
fn urls_choose_the_backend_and_never_hold_passwords() {
    let backend = |u: &str| parse_db_url(u).map(|(b, url)| (b, url.to_string()));
    assert_eq!(
        backend("mariadb://reader@db.example.org:3306/cond").map(|b| b.0),
        Ok(Backend::MySql)
    );
    assert_eq!(
        backend("frontier://frontier.example.org:8000/FrontierProd/Frontier"),
        Ok((
            Backend::Frontier,
            "http://frontier.example.org:8000/FrontierProd/Frontier".to_string()
        ))
    );
    assert_eq!(
        backend("sqlite:///var/lib/cond.db").map(|b| b.0),
        Ok(Backend::Sqlite)
    );
    let e = backend("postgresql://reader:secret@db/cond").unwrap_err();
    assert!(
        e.contains("holds a password") && !e.contains("secret"),
        "{e}"
    );
    assert!(backend("postgresql://db/cond?password=x").is_err());
    assert!(backend("oracle://db/cond")
        .unwrap_err()
        .contains("scheme `oracle`"));
}

#[test]
fn bad_input_is_reported_at_check_time_with_positions() {
    let params = "url = 'postgresql://reader@db.example.org/cond'\n\
                  query = 'UPDATE iov SET since = 0'";
    let ds = build_with(build, NAME, params).unwrap_err();
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(
        ds[0].location.as_ref().map(|l| l.line),
        Some(line_of(NAME, params, "query ="))
    );
    assert!(
        ds[0].message.contains("must be a read"),
        "{}",
        ds[0].message
    );

    let params = "url = 'mysql://root:pw@db.example.org/cond'\nquery = 'SELECT 1'\n\
                  password_env = 'X'\npassword_file = 'pw.txt'\nwarn_age = '2d'\n\
                  crit_age = '1d'";
    let ds = build_with(build, NAME, params).unwrap_err();
    let messages: Vec<&str> = ds.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(ds.len(), 3, "{messages:?}");
    assert!(
        messages.iter().any(|m| m.contains("holds a password")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("both set")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("above crit_age")),
        "{messages:?}"
    );

    // A query built from placeholders is checked per instance.
    let p = probe("url = 'sqlite:///x.db'\nquery = 'SELECT x FROM {param.table}'");
    let mut c = ctx(Duration::from_secs(5));
    c.service
        .params
        .insert("table".into(), "t; DROP TABLE t".into());
    assert!(p
        .check_instance(&c)
        .unwrap_err()
        .contains("more than one statement"));
    c.service.params.insert("table".into(), "iov".into());
    assert_eq!(p.check_instance(&c), Ok(()));
    // No url and no endpoint.
    let p = probe("query = 'SELECT 1'");
    let mut c = ctx(Duration::from_secs(5));
    c.service.endpoint = None;
    assert!(p
        .check_instance(&c)
        .unwrap_err()
        .contains("has no endpoint"));
}

// ---------------------------------------------------------------------------------------
// PostgreSQL (scripts/services/databases.sh)

async fn pg_admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn postgres_fresh_stale_missing_and_read_only() {
    let Some(url) = test_service("GRIDPROBE_TEST_PG") else {
        return;
    };
    let admin = pg_admin(&url).await;
    let table = unique("iov");
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (tag text, since bigint, inserted_at timestamptz);
             INSERT INTO {table} VALUES ('t', 1, now() - interval '10 minutes'),
                                         ('t', 2, now() - interval '3 days');
             CREATE SEQUENCE {table}_seq;"
        ))
        .await
        .expect("set up");
    let query = format!("SELECT max(inserted_at), count(*) FROM {table} WHERE tag = 't'");

    let o = outcome(
        &format!("url = '{url}'\nquery = \"{query}\"\nwarn_age = '1h'"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(o.summary.starts_with("newest payload "), "{}", o.summary);
    assert!(
        o.summary.contains("(10.0 min old); 1 row in"),
        "{}",
        o.summary
    );
    assert!(
        o.summary.ends_with(&format!("from PostgreSQL {url}")),
        "{}",
        o.summary
    );
    assert_eq!(labels(&o), ["connect", "query", "total", "rows", "age"]);

    let o = outcome(
        &format!("url = '{url}'\nquery = \"{query}\"\nwarn_age = '5m'"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Warning, "{o:?}");
    assert!(
        o.summary.contains("older than warn_age 5m"),
        "{}",
        o.summary
    );
    let o = outcome(&format!(
        "url = '{url}'\nquery = \"SELECT min(inserted_at) FROM {table}\"\nwarn_age = '1h'\ncrit_age = '1d'"
    ), Duration::from_secs(10)).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.contains("(3.0 days old), older than crit_age 1d"),
        "{}",
        o.summary
    );

    let o = outcome(
        &format!("url = '{url}'\nquery = 'SELECT since FROM gridprobe_nosuch_table'"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert_eq!(
        o.summary,
        format!("query failed: relation \"gridprobe_nosuch_table\" does not exist on {url}")
    );

    // Passes the lexical check, but writes: the read-only transaction refuses it.
    let o = outcome(
        &format!("url = '{url}'\nquery = \"SELECT nextval('{table}_seq')\""),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(o.summary.contains("read-only transaction"), "{}", o.summary);

    let o = outcome(
        &format!("url = '{url}'\nquery = \"SELECT since FROM {table} WHERE tag = 'none'\""),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("query returned 0 rows, expected at least 1"),
        "{}",
        o.summary
    );

    admin
        .batch_execute(&format!("DROP TABLE {table}; DROP SEQUENCE {table}_seq"))
        .await
        .expect("clean up");
}

#[tokio::test]
async fn postgres_password_from_env_or_file() {
    let Some(url) = test_service("GRIDPROBE_TEST_PG_AUTH") else {
        return;
    };
    // Exported by scripts/test-env.sh with the right password.
    assert!(std::env::var("GRIDPROBE_TEST_PG_AUTH_PASSWORD").is_ok());
    let o = outcome(&format!(
        "url = '{url}'\nquery = 'SELECT now()'\npassword_env = 'GRIDPROBE_TEST_PG_AUTH_PASSWORD'\nwarn_age = '1h'"
    ), Duration::from_secs(10)).await;
    assert_eq!(o.status, Status::Ok, "{o:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pw");
    std::fs::write(&file, "not-the-password\n").expect("write");
    let o = outcome(
        &format!(
            "url = '{url}'\nquery = 'SELECT now()'\npassword_file = '{}'",
            file.display()
        ),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert_eq!(
        o.summary,
        format!(
            "connection failed: password authentication failed for user \"gridprobe_auth\" on {url}"
        )
    );
    // The server answered: the site's failure, never reclassified by the self-check.
    assert_eq!(o.connection_fault, None);

    let o = outcome(
        &format!(
            "url = '{url}'\nquery = 'SELECT 1'\npassword_env = 'GRIDPROBE_TEST_NO_SUCH_VARIABLE'"
        ),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Unknown, "{o:?}");
    assert!(
        o.summary
            .contains("GRIDPROBE_TEST_NO_SUCH_VARIABLE is not set"),
        "{}",
        o.summary
    );
}

#[tokio::test]
async fn postgres_with_sslmode_require_speaks_tls() {
    let Some(url) = test_service("GRIDPROBE_TEST_PG") else {
        return;
    };
    let admin = pg_admin(&url).await;
    let ssl = admin
        .query_one("SHOW ssl", &[])
        .await
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_default();
    if ssl != "on" {
        eprintln!("note: the test PostgreSQL has ssl off; TLS test not run");
        return;
    }
    let tls_url = format!("{url}?sslmode=require");
    // Debian's server certificate is self-signed ("snakeoil"): verification must fail...
    let o = outcome(
        &format!("url = '{tls_url}'\nquery = 'SELECT 1'"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.starts_with("connection failed: "),
        "{}",
        o.summary
    );
    assert!(o.summary.contains("certificate"), "{}", o.summary);
    // ... and the connection is TLS when it is not verified.
    let o = outcome(&format!(
        "url = '{tls_url}'\nquery = 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'\ntls_verify = false"
    ), Duration::from_secs(10)).await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(o.details.contains("  'true'"), "{}", o.details);
}

#[tokio::test]
async fn postgres_query_past_the_timeout_is_cancelled_at_the_server() {
    let Some(url) = test_service("GRIDPROBE_TEST_PG") else {
        return;
    };
    let marker = unique("slow");
    let p = probe(&format!(
        "url = '{url}'\nquery = \"SELECT pg_sleep(60), '{marker}'\""
    ));
    let timeout = Duration::from_millis(1500);
    let start = Instant::now();
    let o = p.run(&ctx(timeout)).await;
    let took = start.elapsed();
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert_eq!(
        o.summary,
        format!("timeout after 1.5s during query; the query was cancelled at the server on {url}")
    );
    assert!(took < timeout + CANCEL_BUDGET, "took {took:?}");
    let admin = pg_admin(&url).await;
    let running = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
         AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    );
    let mut left = 1;
    for _ in 0..20 {
        left = admin
            .query_one(&running, &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .expect("pg_stat_activity");
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the query still runs at the server");
}

// ---------------------------------------------------------------------------------------
// MariaDB

async fn my_admin(url: &str) -> mysql_async::Conn {
    let opts =
        mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(url).expect("mysql url"))
            .prefer_socket(false);
    mysql_async::Conn::new(opts)
        .await
        .expect("connect to the test MariaDB")
}

#[tokio::test]
async fn mariadb_fresh_stale_missing_and_wrong_password() {
    use mysql_async::prelude::Queryable;
    let Some(url) = test_service("GRIDPROBE_TEST_MYSQL") else {
        return;
    };
    let mut admin = my_admin(&url).await;
    let table = unique("iov");
    admin
        .query_drop(format!(
            "CREATE TABLE {table} (tag VARCHAR(20), inserted_at DATETIME(3), ts TIMESTAMP NULL)"
        ))
        .await
        .expect("create");
    admin
        .query_drop(format!(
            "INSERT INTO {table} VALUES ('new', UTC_TIMESTAMP(3) - INTERVAL 10 MINUTE, NOW()),
                                        ('old', UTC_TIMESTAMP(3) - INTERVAL 3 DAY, NULL)"
        ))
        .await
        .expect("insert");

    let o = outcome(
        &format!(
            "url = '{url}'\nquery = \"SELECT max(inserted_at) FROM {table}\"\nwarn_age = '1h'"
        ),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(
        o.summary.contains("(10.0 min old); 1 row in"),
        "{}",
        o.summary
    );
    assert!(
        o.summary
            .contains("from MariaDB/MySQL mysql://root@127.0.0.1"),
        "{}",
        o.summary
    );

    // TIMESTAMP columns come back in UTC whatever the server's zone.
    let o = outcome(
        &format!(
            "url = '{url}'\nquery = \"SELECT ts FROM {table} WHERE tag = 'new'\"\nwarn_age = '1m'"
        ),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");

    let o = outcome(
        &format!(
            "url = '{url}'\nquery = \"SELECT min(inserted_at) FROM {table}\"\nwarn_age = '1d'"
        ),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Warning, "{o:?}");
    assert!(
        o.summary.contains("(3.0 days old), older than warn_age 1d"),
        "{}",
        o.summary
    );

    let o = outcome(
        &format!("url = '{url}'\nquery = 'SELECT 1 FROM gridprobe_nosuch'"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert_eq!(
        o.summary,
        format!("query failed: Table 'test.gridprobe_nosuch' doesn't exist on {url}")
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pw");
    std::fs::write(&file, "wrong").expect("write");
    let o = outcome(
        &format!(
            "url = '{url}'\nquery = 'SELECT 1'\npassword_file = '{}'",
            file.display()
        ),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("connection failed: Access denied for user 'root'@"),
        "{}",
        o.summary
    );
    assert!(o.summary.contains("(using password: YES)"), "{}", o.summary);
    assert_eq!(o.connection_fault, None);

    admin
        .query_drop(format!("DROP TABLE {table}"))
        .await
        .expect("drop");
    let _ = admin.disconnect().await;
}

#[tokio::test]
async fn mariadb_query_past_the_timeout_is_killed_at_the_server() {
    use mysql_async::prelude::Queryable;
    let Some(url) = test_service("GRIDPROBE_TEST_MYSQL") else {
        return;
    };
    let marker = unique("slow");
    let p = probe(&format!(
        "url = '{url}'\nquery = \"SELECT SLEEP(60), '{marker}'\""
    ));
    let timeout = Duration::from_millis(1500);
    let start = Instant::now();
    let o = p.run(&ctx(timeout)).await;
    let took = start.elapsed();
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert_eq!(
        o.summary,
        format!("timeout after 1.5s during query; the query was cancelled at the server on {url}")
    );
    assert!(took < timeout + CANCEL_BUDGET, "took {took:?}");
    let mut admin = my_admin(&url).await;
    let mut left = 1;
    for _ in 0..20 {
        left = admin
            .query_first::<i64, _>(format!(
                "SELECT count(*) FROM information_schema.processlist \
                 WHERE info LIKE '%{marker}%' AND id <> connection_id()"
            ))
            .await
            .expect("processlist")
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the query still runs at the server");
    let _ = admin.disconnect().await;
}

// ---------------------------------------------------------------------------------------
// SQLite

#[tokio::test]
async fn sqlite_file_fresh_stale_missing_and_interrupted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cond.db");
    {
        let db = rusqlite::Connection::open(&path).expect("create");
        let now = now_ms() / 1000;
        db.execute_batch(&format!(
            "CREATE TABLE iov (tag TEXT, since INTEGER, inserted TEXT);
             INSERT INTO iov VALUES ('fresh', {}, datetime('now', '-2 minutes')),
                                    ('old', {}, '2020-01-01 00:00:00');",
            now - 120,
            now - 10 * 86_400
        ))
        .expect("fill");
    }
    let url = format!("sqlite://{}", path.display());
    let o = outcome(
        &format!(
            "url = '{url}'\nquery = \"SELECT since FROM iov WHERE tag = 'fresh'\"\nwarn_age = '1h'"
        ),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(o.summary.contains("(2.0 min old)"), "{}", o.summary);

    let o = outcome(
        &format!(
            "url = '{url}'\nquery = 'SELECT max(since) FROM iov'\nwarn_age = '1m'\ncrit_age = '1d'"
        ),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(o.status, Status::Warning, "{o:?}");
    let o = outcome(
        &format!(
        "url = '{url}'\nquery = \"SELECT inserted FROM iov WHERE tag = 'old'\"\ncrit_age = '30d'"
    ),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.contains("newest payload 2020-01-01 00:00:00 UTC"),
        "{}",
        o.summary
    );

    let missing = format!("sqlite://{}/nosuch.db", dir.path().display());
    let o = outcome(
        &format!("url = '{missing}'\nquery = 'SELECT 1'"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.starts_with("connection failed: cannot open "),
        "{}",
        o.summary
    );
    assert!(
        !dir.path().join("nosuch.db").exists(),
        "a missing database must not be created"
    );

    let o = outcome(&format!(
        "url = '{url}'\nquery = 'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c'"
    ), Duration::from_millis(500)).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("timeout after 500ms during query; the query was cancelled at the server"),
        "{}",
        o.summary
    );
}

// ---------------------------------------------------------------------------------------
// Frontier, against an in-process server speaking its protocol.

/// Encodes rows as a Frontier servlet does: the column row, then the data rows.
fn blob(columns: &[(&str, &str)], rows: &[Vec<Cell>]) -> Vec<u8> {
    let mut b = Vec::new();
    let text = |b: &mut Vec<u8>, s: &str| {
        b.push(BLOB_ARRAY_BYTE);
        b.extend_from_slice(&(s.len() as i32).to_be_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    for (name, ty) in columns {
        text(&mut b, name);
        text(&mut b, ty);
    }
    b.push(BLOB_EOR);
    for row in rows {
        for cell in row {
            match cell {
                Cell::Time(ms) => {
                    b.push(BLOB_TIME);
                    b.extend_from_slice(&ms.to_be_bytes());
                }
                Cell::Int(i) => {
                    b.push(BLOB_INT8);
                    b.extend_from_slice(&i.to_be_bytes());
                }
                Cell::Text(t) => text(&mut b, t),
                _ => b.push(BLOB_NULL | BLOB_ARRAY_BYTE),
            }
        }
        b.push(BLOB_EOR);
    }
    b
}

fn frontier_decode_p1(p1: &str) -> String {
    let std: String = p1
        .chars()
        .map(|c| match c {
            '.' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let zipped = base64::engine::general_purpose::STANDARD
        .decode(std)
        .expect("p1 base64");
    let mut sql = String::new();
    flate2::read::ZlibDecoder::new(&zipped[..])
        .read_to_string(&mut sql)
        .expect("p1 zlib");
    sql
}

/// A Frontier server: answers `SELECT ... iov` with one fresh row, anything naming
/// `nosuch` with a Frontier error, `/down` with 503; records the SQL it received.
async fn frontier_server(seen: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let p1 = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("p1="))
                    .unwrap_or("");
                let has_id = head
                    .to_ascii_lowercase()
                    .contains("x-frontier-id: gridprobe");
                let (status, body) = if path.ends_with("/down") {
                    ("503 Service Unavailable", "down".to_string())
                } else if !query.starts_with("type=frontier_request:1:DEFAULT&encoding=BLOBzip&p1=")
                    || !has_id
                {
                    ("400 Bad Request", "bad request".to_string())
                } else {
                    let sql = frontier_decode_p1(p1);
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(sql.clone());
                    let (error, data, records) = if sql.contains("nosuch") {
                        (
                            r#"error="1" message="ORA-00942: table or view does not exist""#
                                .to_string(),
                            String::new(),
                            0,
                        )
                    } else {
                        let rows = vec![vec![
                            Cell::Time(now_ms() - 90_000),
                            Cell::Text("LHCBCOND-demo".into()),
                        ]];
                        let raw = blob(&[("SINCE", "TIMESTAMP"), ("TAG", "VARCHAR2")], &rows);
                        let mut z = flate2::write::ZlibEncoder::new(
                            Vec::new(),
                            flate2::Compression::default(),
                        );
                        std::io::Write::write_all(&mut z, &raw).expect("zip");
                        let data = base64::engine::general_purpose::STANDARD
                            .encode(z.finish().expect("zip"));
                        (r#"error="0" md5="0""#.to_string(), data, 1)
                    };
                    (
                        "200 OK",
                        format!(
                            "<?xml version=\"1.0\" encoding=\"US-ASCII\"?>\n<!DOCTYPE frontier SYSTEM \"http://frontier.fnal.gov/frontier.dtd\">\n\
                             <frontier version=\"3.41\" xmlversion=\"1.0\">\n <transaction payloads=\"1\">\n  \
                             <payload type=\"frontier_request\" version=\"1\" encoding=\"BLOBzip\">\n   <data>{data}</data>\n   \
                             <quality {error} records=\"{records}\" full_size=\"0\"/>\n  </payload>\n </transaction>\n</frontier>\n"
                        ),
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
                     Age: 42\r\nX-Cache: HIT from squid.example.org\r\nCache-Control: max-age=300\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

#[test]
fn frontier_encoding_round_trips() {
    let sql = "SELECT max(since) FROM iov WHERE tag = 'a+b/c'";
    let p1 = frontier_encode(sql);
    assert!(!p1.contains(['+', '/', '=']), "{p1}");
    assert_eq!(frontier_decode_p1(&p1), sql);
    let rows = vec![
        vec![Cell::Int(7), Cell::Null],
        vec![Cell::Text("x".into()), Cell::Time(5)],
    ];
    let b = blob(&[("A", "NUMBER"), ("B", "DATE")], &rows);
    let parsed = parse_blob(&b).expect("blob");
    assert_eq!(parsed.len(), 3);
    assert_eq!(parsed[1..], rows[..]);
    assert!(parse_blob(&[BLOB_INT8, 0, 0])
        .unwrap_err()
        .contains("cut short"));
    assert!(parse_blob(&[42])
        .unwrap_err()
        .contains("unknown field type 42"));
}

#[tokio::test]
async fn frontier_answers_errors_and_cache_headers() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = frontier_server(seen.clone()).await;
    let base = format!("frontier://127.0.0.1:{port}/FrontierProd/Frontier");
    let query = "SELECT since, tag FROM iov WHERE tag = 'LHCBCOND-demo'";
    let o = outcome(
        &format!("url = '{base}'\nquery = \"{query}\"\nwarn_age = '1h'"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(o.summary.contains("(90 s old); 1 row in"), "{}", o.summary);
    assert!(o.summary.ends_with("cache HIT, age 42 s"), "{}", o.summary);
    assert_eq!(
        labels(&o),
        ["connect", "query", "total", "rows", "cache_age", "age"]
    );
    assert!(o.details.contains("columns: SINCE, TAG"), "{}", o.details);
    assert_eq!(
        seen.lock().unwrap_or_else(|p| p.into_inner()).as_slice(),
        [query]
    );

    let o = outcome(
        &format!("url = '{base}'\nquery = 'SELECT x FROM nosuch'"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert_eq!(
        o.summary,
        format!(
            "query failed: Frontier error: ORA-00942: table or view does not exist on \
             http://127.0.0.1:{port}/FrontierProd/Frontier"
        )
    );

    let o = outcome(
        &format!("url = 'http://127.0.0.1:{port}/down'\nquery = 'SELECT 1 FROM dual'"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("query failed: HTTP 503 Service Unavailable on"),
        "{}",
        o.summary
    );
}

/// A database that cannot be reached is a connection-level failure (marked, so that a failing
/// monitoring host turns it UNKNOWN); PostgreSQL and MariaDB alike.
#[tokio::test]
async fn unreachable_database_is_marked_as_a_connection_fault() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    for url in [
        format!("postgresql://gridprobe@127.0.0.1:{port}/test"),
        format!("mysql://root@127.0.0.1:{port}/test"),
    ] {
        let o = outcome(
            &format!("url = '{url}'\nquery = 'SELECT 1'"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with("connection failed: "),
            "{}",
            o.summary
        );
        assert_eq!(
            o.connection_fault,
            Some(ConnectionFault::Connect),
            "{url}: {}",
            o.summary
        );
    }
}
