//! SQLite-only behaviour: files, upgrades of old files, corrupt rows, the connection
//! mutex. The store contract shared with PostgreSQL is in `store_tests.rs`.

use gridprobe_probes::{Status, Trigger};
use rusqlite::{params, params_from_iter};

use super::rows::history_sql;
use super::schema::MIGRATIONS;
use super::*;
use crate::store::NewResult;
use crate::store_tests::{hard, result, times};

fn ids_of(rows: &[StoredResult]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

/// Inserts a row with raw SQL into a file of schema version 1 to 4 (before `cells`).
fn raw_insert_v1(
    conn: &Connection,
    site: &str,
    metric: &str,
    t: i64,
    status: &str,
    perf: &str,
) -> i64 {
    // The same host name as `result` gives, so both land in one cell.
    let host = format!("ce.{}.example.org", site.to_lowercase());
    conn.execute(
        "INSERT INTO results (vo, site, hostname, flavour, metric, kind, started_at_ms, \
         duration_ms, status, summary, details, perfdata, attempt, \"trigger\") \
         VALUES ('ops', ?1, ?6, 'CE', ?2, 'tcp', ?3, 10, ?4, 'summary', '', ?5, 1, \
         'scheduled')",
        params![site, metric, t, status, perf, host],
    )
    .unwrap();
    conn.last_insert_rowid()
}

/// Inserts a row with raw SQL into the current schema (for corrupt-data tests).
fn raw_insert(conn: &Connection, site: &str, metric: &str, t: i64, status: &str, perf: &str) {
    let host = format!("ce.{}.example.org", site.to_lowercase());
    conn.execute(
        "INSERT OR IGNORE INTO cells (site, hostname, flavour, metric) \
         VALUES (?1, ?2, 'CE', ?3)",
        params![site, host, metric],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO results (cell_id, vo, kind, started_at_ms, duration_ms, status, \
         summary, details, perfdata, attempt, \"trigger\", final) \
         SELECT id, 'ops', 'tcp', ?4, 10, ?5, 'summary', '', ?6, 1, 'scheduled', 1 \
         FROM cells WHERE site = ?1 AND hostname = ?2 AND flavour = 'CE' AND metric = ?3",
        params![site, host, metric, t, status, perf],
    )
    .unwrap();
}

#[tokio::test]
async fn version_1_file_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        raw_insert_v1(&conn, "SITE-A", "m1", 100, "OK", "[]");
        raw_insert_v1(&conn, "SITE-A", "m1", 300, "CRITICAL", "[]");
        raw_insert_v1(&conn, "SITE-A", "m1", 200, "WARNING", "[]");
        raw_insert_v1(
            &conn,
            "SITE-B",
            "m2",
            150,
            "UNKNOWN",
            r#"[{"label":"t","value":1.5,"uom":"s"}]"#,
        );
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let latest = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(times(&latest), vec![300, 150]);
    assert_eq!(latest[0].result.outcome.status, Status::Critical);
    assert_eq!(latest[1].result.outcome.perfdata[0].value, 1.5);
    let history = store.history(&HistoryQuery::default()).await.unwrap();
    assert_eq!(times(&history), vec![300, 200, 150, 100]);
    assert!(history.iter().all(|r| r.is_final));

    // The upgraded file takes new results, and opens again without migrating twice.
    store
        .insert(&[hard(result("SITE-A", "CE", "m1", 400))])
        .await
        .unwrap();
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    let latest = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(times(&latest), vec![400, 150]);
}

#[tokio::test]
async fn version_4_file_is_upgraded_keeping_ids_latest_and_message_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.db");
    let perf = r#"[{"label":"t","value":1.5,"uom":"s"}]"#;
    let (a100, a200, a300, a350, b150);
    {
        let conn = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        a100 = raw_insert_v1(&conn, "SITE-A", "m1", 100, "OK", "[]");
        // A gap in the ids (a row deleted), which must survive the rebuild.
        let gone = raw_insert_v1(&conn, "SITE-A", "m1", 120, "OK", "[]");
        b150 = raw_insert_v1(&conn, "SITE-B", "m2", 150, "UNKNOWN", perf);
        conn.execute("DELETE FROM results WHERE id = ?1", [gone])
            .unwrap();
        a300 = raw_insert_v1(&conn, "SITE-A", "m1", 300, "CRITICAL", "[]");
        a200 = raw_insert_v1(&conn, "SITE-A", "m1", 200, "WARNING", "[]");
        // A retry attempt, newer than the cell's latest hard result.
        a350 = raw_insert_v1(&conn, "SITE-A", "m1", 350, "WARNING", "[]");
        conn.execute(
            "UPDATE results SET final = 0, attempt = 2, \"trigger\" = 'on_demand' \
             WHERE id = ?1",
            [a350],
        )
        .unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO latest (site, hostname, flavour, metric, result_id, started_at_ms) \
             VALUES ('SITE-A', 'ce.site-a.example.org', 'CE', 'm1', {a300}, 300), \
                    ('SITE-B', 'ce.site-b.example.org', 'CE', 'm2', {b150}, 150); \
             INSERT INTO message_ids (message_id, result_id, started_at_ms) \
             VALUES ('msg-a300', {a300}, 300), ('msg-b150', {b150}, 150);"
        ))
        .unwrap();
    }
    assert!(b150 > a100 + 1, "the deleted row leaves a gap");

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    {
        let conn = lock(&store.conn);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let cells: i64 = conn
            .query_row("SELECT COUNT(*) FROM cells", [], |r| r.get(0))
            .unwrap();
        assert_eq!(cells, 2);
    }

    let latest = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(ids_of(&latest), vec![a300, b150]);
    assert_eq!(latest[0].result.outcome.status, Status::Critical);
    assert_eq!(latest[1].result.outcome.perfdata[0].value, 1.5);
    assert_eq!(latest[1].result.hostname, "ce.site-b.example.org");

    let history = store.history(&HistoryQuery::default()).await.unwrap();
    assert_eq!(ids_of(&history), vec![a300, a200, b150, a100]);
    let all = store
        .history(&HistoryQuery {
            include_attempts: true,
            ..HistoryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids_of(&all), vec![a350, a300, a200, b150, a100]);
    let retry = &all[0];
    assert!(!retry.is_final);
    assert_eq!(retry.result.attempt, 2);
    assert_eq!(retry.result.trigger, Trigger::OnDemand);
    let one_cell = store
        .history(&HistoryQuery {
            site: Some("SITE-A".into()),
            hostname: Some("ce.site-a.example.org".into()),
            metric: Some("m1".into()),
            before: Some((300, a300)),
            ..HistoryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids_of(&one_cell), vec![a200, a100]);
    let got = store.get(b150).await.unwrap().unwrap();
    assert_eq!(
        (got.result.vo.as_str(), got.result.kind.as_str()),
        ("ops", "tcp")
    );
    assert_eq!(got.result.metric, "m2");

    // The message ids still point at their rows: a redelivery is recognised.
    let mut again = hard(result("SITE-A", "CE", "m1", 300));
    again.result.outcome.status = Status::Critical;
    let outcome = store
        .insert_once(&[
            ("msg-a300".to_string(), again),
            (
                "msg-new".to_string(),
                hard(result("SITE-B", "CE", "m2", 400)),
            ),
        ])
        .await
        .unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (1, 1));
    // New rows join the old cells, with ids after the old ones.
    let id = store
        .insert(&[hard(result("SITE-A", "CE", "m1", 500))])
        .await
        .unwrap()[0];
    assert!(id > a350);
    let latest = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(times(&latest), vec![500, 400]);
    assert_eq!(
        lock(&store.conn)
            .query_row("SELECT COUNT(*) FROM cells", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        2
    );

    // Retention keeps each cell's latest, and the timelines read the cells by id.
    let timelines = store
        .timelines(0, 1_000, &CellFilter::default())
        .await
        .unwrap();
    let names: Vec<&str> = timelines.iter().map(|(k, _)| k.metric.as_str()).collect();
    assert_eq!(names, vec!["m1", "m2"]);
    assert_eq!(timelines[0].1.len(), 4);
    assert_eq!(store.delete_before(450).await.unwrap(), 5);
    let latest = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(times(&latest), vec![500, 400]);
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.count().await.unwrap(), 2);
}

#[tokio::test]
async fn a_rolled_back_batch_leaves_no_cell_id_behind() {
    let store = SqliteStore::open_in_memory().unwrap();
    lock(&store.conn)
        .execute_batch(
            "CREATE TEMP TRIGGER boom BEFORE INSERT ON results WHEN NEW.summary = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'boom (test)'); END;",
        )
        .unwrap();
    // The cell is created inside the transaction, then the row fails: all rolled back.
    let mut failing = hard(result("SITE-A", "CE", "m1", 1));
    failing.result.outcome.summary = "boom".into();
    let err = store.insert(&[failing]).await.unwrap_err().to_string();
    assert!(err.contains("boom (test)"), "{err}");
    lock(&store.conn)
        .execute_batch("DROP TRIGGER boom")
        .unwrap();
    // Another cell now gets the id the rolled-back one had; the first must not reuse it.
    store
        .insert(&[hard(result("SITE-B", "CE", "m2", 2))])
        .await
        .unwrap();
    store
        .insert(&[hard(result("SITE-A", "CE", "m1", 3))])
        .await
        .unwrap();
    let latest = store.latest(&CellFilter::default()).await.unwrap();
    let cells: Vec<(&str, &str, i64)> = latest
        .iter()
        .map(|r| {
            (
                r.result.site.as_str(),
                r.result.metric.as_str(),
                r.result.started_at_ms,
            )
        })
        .collect();
    assert_eq!(cells, vec![("SITE-A", "m1", 3), ("SITE-B", "m2", 2)]);
}

/// One cell's history and timelines read through the hour-led per-cell index, one hour per
/// execution (`(<hour>=? AND cell_id=?`, no scan of a whole hour), retention and ranges
/// through the time index.
#[test]
fn cell_queries_use_the_cell_index() {
    let store = SqliteStore::open_in_memory().unwrap();
    let conn = lock(&store.conn);
    let plan = |sql: &str| -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let n = stmt.parameter_count();
        let args: Vec<rusqlite::types::Value> =
            (0..n).map(|_| rusqlite::types::Value::Integer(1)).collect();
        let rows: Vec<String> = stmt
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.join("; ")
    };
    let (one_cell, _) = history_sql(&HistoryQuery {
        site: Some("S".into()),
        hostname: Some("h".into()),
        metric: Some("m".into()),
        before: Some((1, 1)),
        ..HistoryQuery::default()
    });
    let p = plan(&one_cell);
    assert!(
        p.contains("USING INDEX results_hour_cell (<expr>=? AND cell_id=?"),
        "{p}"
    );
    assert!(!p.contains("SCAN"), "{p}");
    let (one_site, _) = history_sql(&HistoryQuery {
        site: Some("S".into()),
        since_ms: Some(1),
        ..HistoryQuery::default()
    });
    let p = plan(&one_site);
    assert!(
        p.contains("USING INDEX results_hour_cell (<expr>=? AND cell_id=?"),
        "{p}"
    );
    assert!(!p.contains("SCAN"), "{p}");
    let (recent, _) = history_sql(&HistoryQuery {
        since_ms: Some(1),
        ..HistoryQuery::default()
    });
    let p = plan(&recent);
    assert!(p.contains("results_started"), "{p}");
    let p = plan(
        "SELECT started_at_ms, status FROM results \
         WHERE started_at_ms / 3600000 = ?1 AND cell_id = ?2 \
           AND started_at_ms >= ?3 AND started_at_ms < ?4 AND final = 1 \
         ORDER BY started_at_ms, id",
    );
    assert!(
        p.contains(
            "USING INDEX results_hour_cell (<expr>=? AND cell_id=? AND started_at_ms>? AND started_at_ms<?)"
        ),
        "{p}"
    );
    assert!(!p.contains("TEMP B-TREE"), "{p}");
    let p = plan(
        "SELECT started_at_ms, status FROM results \
         WHERE started_at_ms / 3600000 = ?1 AND cell_id = ?2 AND started_at_ms < ?3 \
           AND final = 1 \
         ORDER BY started_at_ms DESC, id DESC LIMIT 1",
    );
    assert!(
        p.contains("USING INDEX results_hour_cell (<expr>=? AND cell_id=? AND started_at_ms<?)"),
        "{p}"
    );
    assert!(!p.contains("TEMP B-TREE"), "{p}");
}

/// A file of version 7 (per-cell index on `(cell_id, started_at_ms)`) gets the hour-led index
/// and each cell's `first_ms`, and reads back the same.
#[tokio::test]
async fn version_7_files_get_the_hour_led_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v7.sqlite");
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &super::schema::MIGRATIONS[..7] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 7).unwrap();
        tx.execute_batch(
            "INSERT INTO cells (id, site, hostname, flavour, metric) VALUES
                 (1, 'S', 'h1', 'CE', 'm'), (2, 'S', 'h2', 'CE', 'm');
             INSERT INTO results (id, cell_id, started_at_ms, duration_ms, attempt, final, vo,
                 kind, status, summary, details, perfdata, \"trigger\") VALUES
                 (1, 1, 1000, 1, 1, 1, 'vo', 'tcp', 'OK', 'a', '', '[]', 'scheduled'),
                 (2, 1, 7201000, 1, 1, 1, 'vo', 'tcp', 'CRITICAL', 'b', '', '[]', 'scheduled'),
                 (3, 2, 5000000, 1, 1, 1, 'vo', 'tcp', 'OK', 'c', '', '[]', 'scheduled');
             INSERT INTO latest (cell_id, result_id, started_at_ms) VALUES
                 (1, 2, 7201000), (2, 3, 5000000);",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    {
        let conn = lock(&store.conn);
        let firsts: Vec<(i64, i64)> = conn
            .prepare("SELECT cell_id, first_ms FROM latest ORDER BY cell_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(firsts, vec![(1, 1000), (2, 5_000_000)]);
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'results' \
                 ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(indexes, vec!["results_hour_cell", "results_started"]);
    }
    let history = store
        .history(&HistoryQuery {
            site: Some("S".into()),
            hostname: Some("h1".into()),
            ..HistoryQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<i64> = history.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![2, 1]);
}

/// Paging through one cell's history crosses hours, empty stretches (a week without results)
/// and rows of other cells in the same hours, and returns every row once, newest first;
/// the timelines find the result before a period across the gap.
#[tokio::test]
async fn cell_history_walks_the_hours() {
    let store = SqliteStore::open_in_memory().unwrap();
    let day = 86_400_000i64;
    let base = 1_767_225_600_000i64;
    // Cell A every 25 minutes for 6 hours, then nothing for a week, then 3 more; cell B
    // every 10 minutes over the same first hours.
    let mut starts: Vec<i64> = (0..15).map(|i| base + i * 1_500_000).collect();
    starts.extend((0..3).map(|i| base + 7 * day + i * 600_000));
    let mut batch: Vec<NewResult> = starts
        .iter()
        .map(|&t| hard(result("SITE-A", "CE", "ma", t)))
        .collect();
    batch.extend((0..40).map(|i| hard(result("SITE-A", "CE", "mb", base + i * 600_000))));
    store.insert(&batch).await.unwrap();
    let mut seen: Vec<i64> = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .history(&HistoryQuery {
                site: Some("SITE-A".into()),
                hostname: Some("ce.site-a.example.org".into()),
                metric: Some("ma".into()),
                before,
                limit: 4,
                ..HistoryQuery::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        before = page.last().map(|r| (r.result.started_at_ms, r.id));
        seen.extend(page.iter().map(|r| r.result.started_at_ms));
    }
    let mut expected = starts.clone();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, expected);
    // Bounded by since/until inside the gap: nothing; around it: both sides.
    let q = |since: i64, until: i64| HistoryQuery {
        metric: Some("ma".into()),
        since_ms: Some(since),
        until_ms: Some(until),
        limit: 1000,
        ..HistoryQuery::default()
    };
    assert!(store
        .history(&q(base + day, base + 6 * day))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.history(&q(base, base + 8 * day)).await.unwrap().len(),
        18
    );
    // The period starting in the gap: cell A's last result before it still counts.
    let timelines = store
        .timelines(base + 3 * day, base + 8 * day, &CellFilter::default())
        .await
        .unwrap();
    let a = timelines.iter().find(|(k, _)| k.metric == "ma").unwrap();
    assert_eq!(a.1.first().map(|p| p.0), Some(base + 14 * 1_500_000));
    assert_eq!(a.1.len(), 4);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    match SqliteStore::open(&path) {
        Err(StoreError::TooNew {
            found, supported, ..
        }) => {
            assert_eq!(found, 99);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[test]
fn open_errors_name_the_path_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let not_db = dir.path().join("notes.txt");
    std::fs::write(&not_db, "these are notes, not a database\n".repeat(100)).unwrap();
    let err = SqliteStore::open(&not_db).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{msg}");
    assert!(msg.contains(&not_db.display().to_string()), "{msg}");
    assert!(msg.contains("file is not a database"), "{msg}");

    let err = SqliteStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("is a directory"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");

    // A parent that is a file cannot be created (this holds for root too).
    let under_file = not_db.join("sub").join("results.db");
    let err = SqliteStore::open(&under_file).unwrap_err().to_string();
    assert!(err.contains("cannot create directory"), "{err}");
    assert!(err.contains(&under_file.display().to_string()), "{err}");
}

#[tokio::test]
async fn open_creates_parent_directories_and_uses_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("results.db");
    let store = SqliteStore::open(&path).unwrap();
    assert!(path.is_file());
    assert_eq!(store.location(), path.display().to_string());
    let mode: String = lock(&store.conn)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let page: i64 = lock(&store.conn)
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(page, 16_384, "a new file gets the large pages");
    drop(store);
    // An existing file keeps its page size (changing it would need a VACUUM).
    let old = dir.path().join("old.db");
    rusqlite::Connection::open(&old)
        .and_then(|c| c.execute_batch("PRAGMA page_size = 4096; CREATE TABLE t (x);"))
        .unwrap();
    let store = SqliteStore::open(&old).unwrap();
    let page: i64 = lock(&store.conn)
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(page, 4096);
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    let store = SqliteStore::open_in_memory().unwrap();
    raw_insert(&lock(&store.conn), "SITE-A", "m1", 1, "BOGUS", "[]");
    let bad_status_id = lock(&store.conn).last_insert_rowid();
    raw_insert(&lock(&store.conn), "SITE-A", "m2", 2, "OK", "{not json");
    let bad_json_id = lock(&store.conn).last_insert_rowid();
    match store.get(bad_status_id).await {
        Err(StoreError::Query(m)) => {
            assert!(m.contains(&format!("result {bad_status_id}")), "{m}");
            assert!(m.contains("BOGUS"), "{m}");
        }
        other => panic!("expected a query error, got {other:?}"),
    }
    match store.get(bad_json_id).await {
        Err(StoreError::Query(m)) => {
            assert!(m.contains(&format!("result {bad_json_id}")), "{m}");
            assert!(m.contains("perfdata"), "{m}");
        }
        other => panic!("expected a query error, got {other:?}"),
    }
    assert!(store.history(&HistoryQuery::default()).await.is_err());
}

#[tokio::test]
async fn poisoned_connection_mutex_is_recovered() {
    let store = SqliteStore::open_in_memory().unwrap();
    let conn = Arc::clone(&store.conn);
    let _ = std::thread::spawn(move || {
        let _guard = conn.lock();
        panic!("poison the mutex (expected in this test)");
    })
    .join();
    assert!(store.conn.is_poisoned());
    store
        .insert(&[hard(result("SITE-A", "CE", "m1", 1))])
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_long_period_caches_only_the_days_that_hold_results() {
    use crate::day_runs::DAY_MS;
    let store = SqliteStore::open_in_memory().unwrap();
    let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
    let today = now.div_euclid(DAY_MS) * DAY_MS;
    // Results on three closed days, ten days back.
    for d in [10, 11, 13] {
        store
            .insert(&[hard(result("SITE-A", "CE", "m1", today - d * DAY_MS + 5))])
            .await
            .unwrap();
    }
    // A read over a hundred thousand days (the API refuses such periods; the store must
    // stay small anyway) builds and keeps only those three days.
    let runs = store
        .run_timelines(
            now - 100_000 * DAY_MS,
            now,
            &CellFilter::default(),
            DAY_MS * 2,
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    let count = |table: &str| -> i64 {
        lock(&store.conn)
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count("report_days"), 3);
    assert_eq!(count("cell_day_runs"), 3);
    // Read again (now from the cache): the same runs, and nothing new stored.
    let again = store
        .run_timelines(
            now - 100_000 * DAY_MS,
            now,
            &CellFilter::default(),
            DAY_MS * 2,
        )
        .await
        .unwrap();
    assert_eq!(again, runs);
    assert_eq!(count("report_days"), 3);
}

#[tokio::test]
async fn latest_changes_are_exactly_what_moved_since_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.db");
    let store = SqliteStore::open(&path).unwrap();
    let empty = store.latest_changes(0).await.unwrap();
    assert!(empty.complete && empty.cells.is_empty());
    store
        .insert(&[
            hard(result("SITE-A", "CE", "m1", 1_000)),
            hard(result("SITE-B", "CE", "m1", 1_000)),
        ])
        .await
        .unwrap();
    let all = store.latest_changes(empty.mark).await.unwrap();
    assert!(all.complete);
    assert_eq!(all.cells.len(), 2);
    assert_eq!(all.mark, all.cells.iter().map(|c| c.id).max().unwrap());
    assert_eq!(all.cells[0].summary, "connected");
    // Nothing new: nothing changed.
    let none = store.latest_changes(all.mark).await.unwrap();
    assert!(!none.complete && none.cells.is_empty());
    assert_eq!(none.mark, all.mark);
    // A newer result (from another connection, as another process), a late one and a retry
    // attempt: only the newer one moves a cell.
    let other = SqliteStore::open(&path).unwrap();
    let mut newer = result("SITE-A", "CE", "m1", 2_000);
    newer.outcome.status = Status::Critical;
    other
        .insert(&[
            hard(newer),
            hard(result("SITE-B", "CE", "m1", 500)),
            crate::store_tests::attempt(result("SITE-B", "CE", "m1", 3_000), 1),
        ])
        .await
        .unwrap();
    let moved = store.latest_changes(all.mark).await.unwrap();
    assert!(!moved.complete);
    assert_eq!(moved.cells.len(), 1, "{:?}", moved.cells);
    assert_eq!(moved.cells[0].key.site, "SITE-A");
    assert_eq!(moved.cells[0].status, Status::Critical);
    assert_eq!(moved.cells[0].started_at_ms, 2_000);
    // Retention keeps every latest: nothing moves.
    assert!(store.delete_before(10_000).await.unwrap() > 0);
    let after = store.latest_changes(moved.mark).await.unwrap();
    assert!(after.cells.is_empty());
    // The changes applied to the first answer give `latest`.
    let mut copy: std::collections::HashMap<crate::store::CellKey, i64> =
        all.cells.iter().map(|c| (c.key.clone(), c.id)).collect();
    copy.extend(moved.cells.iter().map(|c| (c.key.clone(), c.id)));
    let latest = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(latest.len(), copy.len());
    for r in latest {
        assert_eq!(copy.get(&crate::store::CellKey::of(&r.result)), Some(&r.id));
    }
}
