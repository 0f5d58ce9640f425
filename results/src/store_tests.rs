//! The store contract: one test body, two backends. Every test of [`ResultStore`] semantics is
//! an async fn taking a [`Backend`]; `both_backends!` instantiates it once on a SQLite file and
//! once on PostgreSQL (a schema of its own in the database of `GRIDPROBE_TEST_PG`, dropped
//! afterwards). Backend-specific behaviour (SQLite's file handling, PostgreSQL's connection
//! errors) is tested next to each backend's own helpers below or in `sqlite/tests.rs`.
//!
//! Without `GRIDPROBE_TEST_PG` the PostgreSQL instances print a note and pass, except under
//! `CI=true`, where a missing server is a failure: CI must run the whole contract.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use gridprobe_config::Downtime;
use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Status, Trigger};

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::store::{
    CellFilter, CellKey, HistoryQuery, NewResult, ResultStore, StoreError, StoreEvent,
    StoredResult, DEFAULT_HISTORY_LIMIT,
};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A result of `metric` on the `flavour` service of `site`, started at `started_at_ms`.
pub(crate) fn result(site: &str, flavour: &str, metric: &str, started_at_ms: i64) -> ProbeResult {
    ProbeResult {
        metric: metric.into(),
        kind: "tcp".into(),
        vo: "ops".into(),
        site: site.into(),
        hostname: format!(
            "{}.{}.example.org",
            flavour.to_lowercase(),
            site.to_lowercase()
        ),
        flavour: flavour.into(),
        started_at_ms,
        duration_ms: 12,
        outcome: Outcome::ok("connected"),
        attempt: 1,
        trigger: Trigger::Scheduled,
    }
}

/// A hard (final) result.
pub(crate) fn hard(r: ProbeResult) -> NewResult {
    NewResult {
        result: r,
        is_final: true,
    }
}

/// Retry attempt `n`, not final.
pub(crate) fn attempt(mut r: ProbeResult, n: u32) -> NewResult {
    r.attempt = n;
    NewResult {
        result: r,
        is_final: false,
    }
}

/// A result with another status.
pub(crate) fn with_status(mut r: ProbeResult, status: Status, summary: &str) -> ProbeResult {
    r.outcome = Outcome {
        status,
        summary: summary.into(),
        details: String::new(),
        perfdata: Vec::new(),
        connection_fault: None,
        reported: Vec::new(),
        agent_run: None,
    };
    r
}

pub(crate) fn times(rows: &[StoredResult]) -> Vec<i64> {
    rows.iter().map(|r| r.result.started_at_ms).collect()
}

fn ids_of(rows: &[StoredResult]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

// ---------------------------------------------------------------------------------------------
// The two backends

/// A store under test, with what it needs to stay alive (temporary file or schema).
pub(crate) struct Backend {
    store: Arc<dyn ResultStore>,
    kind: Kind,
}

enum Kind {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
        store: SqliteStore,
    },
    Postgres {
        store: PgStore,
        scratch: Box<pg::Scratch>,
    },
}

impl Backend {
    /// A fresh SQLite store in a temporary file (WAL mode, as deployed).
    pub(crate) fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("results.sqlite");
        let store = SqliteStore::open(&path).expect("SQLite store opens");
        Backend {
            store: Arc::new(store.clone()),
            kind: Kind::Sqlite {
                _dir: dir,
                path,
                store,
            },
        }
    }

    /// A fresh PostgreSQL store in a schema of its own, or `None` (with a note) when no server
    /// is configured outside CI.
    pub(crate) async fn postgres(test: &str) -> Option<Backend> {
        let scratch = pg::Scratch::new(test).await?;
        let store = PgStore::open_config(scratch.config(), 4)
            .await
            .expect("PostgreSQL store opens");
        Some(Backend {
            store: Arc::new(store.clone()),
            kind: Kind::Postgres {
                store,
                scratch: Box::new(scratch),
            },
        })
    }

    /// Number of stored results.
    pub(crate) async fn count(&self) -> u64 {
        match &self.kind {
            Kind::Sqlite { store, .. } => store.count().await.expect("count"),
            Kind::Postgres { store, .. } => store.count().await.expect("count"),
        }
    }

    /// A second, independent handle on the same data (another connection or pool), as a second
    /// process would have.
    pub(crate) async fn reopen(&self) -> Arc<dyn ResultStore> {
        match &self.kind {
            Kind::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).expect("reopen")),
            Kind::Postgres { scratch, .. } => Arc::new(
                PgStore::open_config(scratch.config(), 4)
                    .await
                    .expect("reopen"),
            ),
        }
    }
}

impl Deref for Backend {
    type Target = dyn ResultStore;

    fn deref(&self) -> &Self::Target {
        self.store.as_ref()
    }
}

/// Instantiates each listed contract test for both backends: `on_sqlite::NAME` and
/// `on_postgres::NAME`.
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::sqlite()).await;
                }
            )+
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = super::Backend::postgres(stringify!($name)).await else {
                        return;
                    };
                    super::$name(backend).await;
                }
            )+
        }
    };
}

both_backends!(
    result_with_perfdata_round_trips,
    text_round_trips_whole,
    latest_is_the_newest_final_result_per_cell,
    latest_ties_in_one_batch_go_to_the_later_row,
    history_filters_orders_and_limits,
    history_pages_with_the_before_cursor,
    history_filters_by_status_and_non_ok,
    retention_deletes_in_chunks_and_keeps_latest,
    events_round_trip_oldest_first,
    timelines_lead_with_the_prior_result_and_follow_filters,
    downtimes_are_replaced_per_source,
    reader_proceeds_while_another_handle_writes,
    concurrent_writers_on_the_same_cells_agree,
    insert_once_stores_each_message_id_once,
    run_timelines_equal_the_results_folded_also_from_cached_days,
    a_usable_store_says_it_can_be_written,
    recomputations_keep_every_step_and_refuse_bad_transitions,
    a_recomputation_over_cached_days_changes_the_figures_at_once,
    acks_are_shared_kept_once_and_end_by_id_or_expiry,
    sent_notifications_are_kept_once_newest_first,
    notify_state_changes_only_from_the_version_read,
);

// ---------------------------------------------------------------------------------------------
// The contract

async fn result_with_perfdata_round_trips(store: Backend) {
    let mut perf = Perfdatum::new("time to connect", 0.25, "s");
    perf.warn = Some("1".into());
    perf.crit = Some("@2:5".into());
    perf.min = Some(0.0);
    perf.max = Some(10.0);
    let mut r = result("SITE-A", "CE", "org.example.Connect", 1_000);
    r.outcome = Outcome::critical("refused")
        .with_details("line 1\nline 2 with 'quotes' and \u{e9}")
        .with_perfdata(vec![perf, Perfdatum::new("size", 3.0, "B")]);
    r.attempt = 2;
    r.trigger = Trigger::OnDemand;
    r.duration_ms = 1234;
    let ids = store
        .insert(&[attempt(r.clone(), 2), hard(r.clone())])
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
    let got = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        got,
        StoredResult {
            id: ids[0],
            is_final: false,
            result: r.clone()
        }
    );
    let got = store.get(ids[1]).await.unwrap().unwrap();
    assert!(got.is_final);
    assert_eq!(got.result, r);
    assert_eq!(store.get(ids[1] + 100).await.unwrap(), None);
    assert!(store.insert(&[]).await.unwrap().is_empty());
}

async fn text_round_trips_whole(store: Backend) {
    let mut r = result("SITE-Ü", "CE", "org.example.Ünïcode", 5);
    r.outcome = Outcome::warning("ça marche à moitié — 50 % ✓ 🚀")
        .with_details("tab\tnewline\n\"double\" 'single' back\\slash; DROP TABLE results;--");
    r.kind = "nagios".into();
    r.duration_ms = u64::try_from(i64::MAX).unwrap();
    let ids = store.insert(&[hard(r.clone())]).await.unwrap();
    assert_eq!(store.get(ids[0]).await.unwrap().unwrap().result, r);
    let latest = store
        .latest(&CellFilter {
            site: Some("SITE-Ü".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].result, r);
}

async fn latest_is_the_newest_final_result_per_cell(store: Backend) {
    let a = |t| result("SITE-A", "CE", "org.example.Ping", t);
    let mut other_vo = result("SITE-B", "SRM", "org.example.Ping", 50);
    other_vo.vo = "atlas".into();
    store
        .insert(&[hard(a(100)), hard(a(300)), hard(other_vo.clone())])
        .await
        .unwrap();
    // A newer retry attempt and an older (out of order) hard result change nothing.
    store.insert(&[attempt(a(400), 1)]).await.unwrap();
    store.insert(&[hard(a(200))]).await.unwrap();
    let all = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(times(&all), vec![300, 50]);
    assert!(all.iter().all(|r| r.is_final));

    let by_site = CellFilter {
        site: Some("SITE-B".into()),
        ..Default::default()
    };
    assert_eq!(times(&store.latest(&by_site).await.unwrap()), vec![50]);
    let by_vo = CellFilter {
        vo: Some("ops".into()),
        ..Default::default()
    };
    assert_eq!(times(&store.latest(&by_vo).await.unwrap()), vec![300]);
    let by_flavour = CellFilter {
        flavour: Some("SRM".into()),
        vo: Some("atlas".into()),
        site: Some("SITE-B".into()),
    };
    assert_eq!(store.latest(&by_flavour).await.unwrap()[0].result, other_vo);
    let none = CellFilter {
        flavour: Some("XROOTD".into()),
        ..Default::default()
    };
    assert!(store.latest(&none).await.unwrap().is_empty());

    // A newer hard result takes over; a same-time one inserted later wins too.
    store.insert(&[hard(a(500))]).await.unwrap();
    let ids = store.insert(&[hard(a(500))]).await.unwrap();
    let all = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(all[0].id, ids[0]);

    // Cells come in (site, host, flavour, metric) byte order, upper case before lower.
    store
        .insert(&[
            hard(result("site-c", "CE", "m", 1)),
            hard(result("SITE-C", "CE", "m", 1)),
            hard(result("SITE-A", "CE", "a.first", 1)),
        ])
        .await
        .unwrap();
    let cells: Vec<CellKey> = store
        .latest(&CellFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|r| CellKey::of(&r.result))
        .collect();
    let mut sorted = cells.clone();
    sorted.sort();
    assert_eq!(cells, sorted);
    assert_eq!(cells.len(), 5);
}

async fn latest_ties_in_one_batch_go_to_the_later_row(store: Backend) {
    let a = |t| result("SITE-A", "CE", "org.example.Ping", t);
    let b = |t| result("SITE-B", "CE", "org.example.Ping", t);
    // Interleaved cells; in each cell the last of the equal newest starts must win, and ids
    // grow in input order within a cell.
    let batch = vec![
        hard(a(10)),
        hard(b(7)),
        hard(a(10)),
        attempt(b(9), 1),
        hard(b(7)),
        hard(a(3)),
    ];
    let ids = store.insert(&batch).await.unwrap();
    assert!(ids[0] < ids[2] && ids[2] < ids[5]);
    assert!(ids[1] < ids[3] && ids[3] < ids[4]);
    let latest = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(ids_of(&latest), vec![ids[2], ids[4]]);
    // A later batch with the same start wins over both.
    let again = store.insert(&[hard(a(10))]).await.unwrap();
    let latest = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(latest[0].id, again[0]);
}

async fn history_filters_orders_and_limits(store: Backend) {
    let mut batch = Vec::new();
    for t in 0..150 {
        batch.push(hard(result("SITE-A", "CE", "org.example.Ping", t * 10)));
    }
    batch.push(attempt(result("SITE-A", "CE", "org.example.Ping", 5), 1));
    batch.push(hard(result("SITE-A", "CE", "org.example.Other", 7)));
    batch.push(hard(result("SITE-B", "CE", "org.example.Ping", 8)));
    // Same start time: the later id comes first.
    batch.push(hard(result("SITE-C", "CE", "org.example.Ping", 1)));
    batch.push(hard(result("SITE-C", "CE", "org.example.Ping", 1)));
    let ids = store.insert(&batch).await.unwrap();

    // Limit 0 means the default.
    let all = store.history(&HistoryQuery::default()).await.unwrap();
    assert_eq!(all.len(), DEFAULT_HISTORY_LIMIT);
    assert_eq!(all[0].result.started_at_ms, 1490);
    assert!(all
        .windows(2)
        .all(|w| w[0].result.started_at_ms >= w[1].result.started_at_ms));

    let ping_a = HistoryQuery {
        site: Some("SITE-A".into()),
        hostname: Some("ce.site-a.example.org".into()),
        metric: Some("org.example.Ping".into()),
        since_ms: Some(0),
        until_ms: Some(30),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        times(&store.history(&ping_a).await.unwrap()),
        vec![20, 10, 0]
    );
    let with_attempts = HistoryQuery {
        include_attempts: true,
        ..ping_a.clone()
    };
    let rows = store.history(&with_attempts).await.unwrap();
    assert_eq!(times(&rows), vec![20, 10, 5, 0]);
    assert!(!rows[2].is_final);
    let limited = HistoryQuery {
        limit: 2,
        ..with_attempts
    };
    assert_eq!(times(&store.history(&limited).await.unwrap()), vec![20, 10]);

    let site_c = HistoryQuery {
        site: Some("SITE-C".into()),
        ..Default::default()
    };
    let rows = store.history(&site_c).await.unwrap();
    let n = ids.len();
    assert_eq!(ids_of(&rows), vec![ids[n - 1], ids[n - 2]]);
    let other = HistoryQuery {
        metric: Some("org.example.Other".into()),
        ..Default::default()
    };
    assert_eq!(times(&store.history(&other).await.unwrap()), vec![7]);
    let nobody = HistoryQuery {
        site: Some("SITE-Z".into()),
        ..Default::default()
    };
    assert!(store.history(&nobody).await.unwrap().is_empty());
}

async fn history_pages_with_the_before_cursor(store: Backend) {
    // Three cells, many equal start times across them, retry attempts in between.
    let mut batch = Vec::new();
    for t in 0..40 {
        for site in ["SITE-A", "SITE-B", "SITE-C"] {
            batch.push(hard(result(site, "CE", "m", t / 3)));
        }
        if t % 7 == 0 {
            batch.push(attempt(result("SITE-A", "CE", "m", t / 3), 1));
        }
    }
    store.insert(&batch).await.unwrap();
    for include_attempts in [false, true] {
        let whole = store
            .history(&HistoryQuery {
                include_attempts,
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(whole.len(), if include_attempts { 126 } else { 120 });
        let mut paged = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .history(&HistoryQuery {
                    include_attempts,
                    before,
                    limit: 7,
                    ..Default::default()
                })
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            before = Some((last.result.started_at_ms, last.id));
            assert!(page.len() <= 7);
            paged.extend(page);
        }
        assert_eq!(ids_of(&paged), ids_of(&whole));
        // Newest first, ties by id, newest first too.
        assert!(paged.windows(2).all(|w| {
            (w[0].result.started_at_ms, w[0].id) > (w[1].result.started_at_ms, w[1].id)
        }));
    }
    // The cursor combines with a cell and a time window.
    let one_cell = HistoryQuery {
        site: Some("SITE-B".into()),
        since_ms: Some(3),
        until_ms: Some(10),
        limit: 5,
        ..Default::default()
    };
    let first = store.history(&one_cell).await.unwrap();
    assert_eq!(times(&first), vec![9, 9, 9, 8, 8]);
    let last = first.last().unwrap();
    let second = store
        .history(&HistoryQuery {
            before: Some((last.result.started_at_ms, last.id)),
            ..one_cell.clone()
        })
        .await
        .unwrap();
    assert_eq!(times(&second), vec![8, 7, 7, 7, 6]);
    assert!(second
        .iter()
        .all(|r| r.result.site == "SITE-B" && r.id != last.id));
}

async fn history_filters_by_status_and_non_ok(store: Backend) {
    let cell = |t, status, summary| with_status(result("SITE-A", "CE", "m", t), status, summary);
    store
        .insert(&[
            hard(cell(1, Status::Ok, "fine")),
            hard(cell(2, Status::Critical, "refused")),
            attempt(cell(3, Status::Critical, "refused again"), 1),
            hard(cell(3, Status::Warning, "slow")),
            hard(cell(4, Status::Unknown, "timeout")),
            hard(cell(5, Status::Ok, "fine")),
            hard(cell(6, Status::Critical, "refused")),
        ])
        .await
        .unwrap();
    let non_ok = store
        .history(&HistoryQuery {
            non_ok_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(times(&non_ok), vec![6, 4, 3, 2]);
    let critical = HistoryQuery {
        status: Some(Status::Critical),
        ..Default::default()
    };
    assert_eq!(times(&store.history(&critical).await.unwrap()), vec![6, 2]);
    let with_attempts = HistoryQuery {
        include_attempts: true,
        ..critical.clone()
    };
    let rows = store.history(&with_attempts).await.unwrap();
    assert_eq!(times(&rows), vec![6, 3, 2]);
    assert_eq!(rows[1].result.outcome.summary, "refused again");
    let since = HistoryQuery {
        since_ms: Some(3),
        non_ok_only: true,
        status: Some(Status::Unknown),
        ..Default::default()
    };
    assert_eq!(times(&store.history(&since).await.unwrap()), vec![4]);
    let ok = HistoryQuery {
        status: Some(Status::Ok),
        non_ok_only: true,
        ..Default::default()
    };
    assert!(store.history(&ok).await.unwrap().is_empty());
}

async fn retention_deletes_in_chunks_and_keeps_latest(store: Backend) {
    let metrics = ["m1", "m2", "m3", "m4", "m5"];
    let mut batch = Vec::new();
    for t in 0..5_000 {
        for m in metrics {
            batch.push(hard(result("SITE-A", "CE", m, t)));
        }
    }
    // Retry attempts newer than the hard results are not `latest` and may go.
    batch.push(attempt(result("SITE-A", "CE", "m1", 6_000), 1));
    store.insert(&batch).await.unwrap();
    assert_eq!(store.delete_before(100).await.unwrap(), 500);
    assert_eq!(store.count().await, 25_001 - 500);
    // More than one chunk, everything old except each cell's latest.
    assert_eq!(store.delete_before(10_000).await.unwrap(), 25_001 - 500 - 5);
    let latest = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(times(&latest), vec![4_999; 5]);
    assert_eq!(store.count().await, 5);
    assert_eq!(store.delete_before(10_000).await.unwrap(), 0);
    // The kept rows are whole, and the store goes on.
    assert_eq!(store.get(latest[0].id).await.unwrap().unwrap(), latest[0]);
    store
        .insert(&[hard(result("SITE-A", "CE", "m1", 20_000))])
        .await
        .unwrap();
    assert_eq!(store.delete_before(30_000).await.unwrap(), 1);
    assert_eq!(store.count().await, 5);
}

async fn insert_once_stores_each_message_id_once(store: Backend) {
    let keyed = |id: &str, t: i64| {
        (
            id.to_string(),
            hard(result("SITE-A", "CE", "org.example.M", t)),
        )
    };
    let first = store
        .insert_once(&[keyed("a", 1), keyed("b", 2), keyed("a", 1)])
        .await
        .unwrap();
    assert_eq!((first.inserted, first.duplicates), (2, 1));
    // A replay of the same batch (a crash before the spool's acknowledgement) and a new one.
    let again = store
        .insert_once(&[keyed("a", 1), keyed("b", 2), keyed("c", 3)])
        .await
        .unwrap();
    assert_eq!((again.inserted, again.duplicates), (1, 2));
    let rows = store
        .history(&HistoryQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(times(&rows), vec![3, 2, 1]);
    // Retention forgets the ids of deleted results, not of a cell's kept latest.
    assert_eq!(store.delete_before(3).await.unwrap(), 2);
    let after = store.insert_once(&[keyed("c", 3)]).await.unwrap();
    assert_eq!(after.duplicates, 1);
}

async fn events_round_trip_oldest_first(store: Backend) {
    for (at_ms, kind) in [(30, "c"), (10, "a"), (20, "b"), (20, "b2")] {
        store
            .record_event(&StoreEvent {
                at_ms,
                kind: kind.into(),
                message: format!("event {kind}: 3 results dropped"),
            })
            .await
            .unwrap();
    }
    let kinds: Vec<String> = store
        .events(15)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    // Equal times keep their recording order.
    assert_eq!(kinds, vec!["b", "b2", "c"]);
    let all = store.events(i64::MIN).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].message, "event a: 3 results dropped");
    assert!(store.events(31).await.unwrap().is_empty());
}

async fn timelines_lead_with_the_prior_result_and_follow_filters(store: Backend) {
    let st = |site, flavour, t, status| {
        with_status(result(site, flavour, "org.example.Ping", t), status, "x")
    };
    let mut other_vo = st("SITE-B", "CE", 150, Status::Critical);
    other_vo.vo = "atlas".into();
    store
        .insert(&[
            // SITE-A CE: two before the period (the later leads), three inside, one after.
            hard(st("SITE-A", "CE", 10, Status::Critical)),
            hard(st("SITE-A", "CE", 90, Status::Warning)),
            hard(st("SITE-A", "CE", 100, Status::Ok)),
            attempt(st("SITE-A", "CE", 120, Status::Critical), 1),
            hard(st("SITE-A", "CE", 130, Status::Critical)),
            hard(st("SITE-A", "CE", 199, Status::Ok)),
            hard(st("SITE-A", "CE", 200, Status::Unknown)),
            // SITE-A SRM: only before the period.
            hard(st("SITE-A", "SRM", 50, Status::Ok)),
            // SITE-B CE: only inside, from another VO (timelines ignore the VO filter).
            hard(other_vo),
            // SITE-C CE: only after the period.
            hard(st("SITE-C", "CE", 300, Status::Ok)),
        ])
        .await
        .unwrap();
    let all = store
        .timelines(100, 200, &CellFilter::default())
        .await
        .unwrap();
    let keys: Vec<(String, String)> = all
        .iter()
        .map(|(k, _)| (k.site.clone(), k.flavour.clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("SITE-A".to_string(), "CE".to_string()),
            ("SITE-A".to_string(), "SRM".to_string()),
            ("SITE-B".to_string(), "CE".to_string()),
            ("SITE-C".to_string(), "CE".to_string()),
        ]
    );
    assert_eq!(
        all[0].1,
        vec![
            (90, Status::Warning),
            (100, Status::Ok),
            (130, Status::Critical),
            (199, Status::Ok)
        ]
    );
    assert_eq!(all[1].1, vec![(50, Status::Ok)]);
    assert_eq!(all[2].1, vec![(150, Status::Critical)]);
    assert!(all[3].1.is_empty());
    assert_eq!(all[0].0.hostname, "ce.site-a.example.org");
    assert_eq!(all[0].0.metric, "org.example.Ping");

    let srm = store
        .timelines(
            100,
            200,
            &CellFilter {
                flavour: Some("SRM".into()),
                vo: Some("nobody".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(srm.len(), 1);
    assert_eq!(srm[0].0.flavour, "SRM");
    // A site filter (read cell by cell) gives exactly that site's part of the whole.
    let site_a = store
        .timelines(
            100,
            200,
            &CellFilter {
                site: Some("SITE-A".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(site_a, all[..2].to_vec());
    let site_b = store
        .timelines(
            0,
            1_000,
            &CellFilter {
                site: Some("SITE-B".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(site_b.len(), 1);
    assert_eq!(site_b[0].1, vec![(150, Status::Critical)]);
    // An empty period still lists the cells with what held before it.
    let later = store
        .timelines(5_000, 6_000, &CellFilter::default())
        .await
        .unwrap();
    assert_eq!(later.len(), 4);
    assert_eq!(later[0].1, vec![(200, Status::Unknown)]);
}

async fn downtimes_are_replaced_per_source(store: Backend) {
    let dt = |id: &str, host: Option<&str>, start, end| Downtime {
        id: id.into(),
        site: Some("SITE-A".into()),
        hostname: host.map(str::to_string),
        flavour: host.map(|_| "CE".to_string()),
        start_ms: start,
        end_ms: end,
        scheduled: true,
        outage: true,
        reason: format!("maintenance {id}"),
        source: "gocdb".into(),
    };
    let mut site_wide = dt("200", None, 50, 500);
    site_wide.outage = false;
    site_wide.scheduled = false;
    site_wide.hostname = None;
    site_wide.flavour = None;
    let first = vec![
        dt("100", Some("ce1.example.org"), 100, 200),
        dt("100", Some("ce2.example.org"), 100, 200),
        site_wide.clone(),
    ];
    store.replace_downtimes("gocdb", &first).await.unwrap();
    let mut config_dt = dt("config:1:0", Some("ce1.example.org"), 0, 1_000);
    config_dt.source = "manual".into();
    store
        .replace_downtimes("manual", std::slice::from_ref(&config_dt))
        .await
        .unwrap();

    let all = store.downtimes(i64::MIN, i64::MAX).await.unwrap();
    let mut got: Vec<(i64, &str, Option<&str>)> = all
        .iter()
        .map(|d| (d.start_ms, d.id.as_str(), d.hostname.as_deref()))
        .collect();
    // Ordered by (start, id); rows equal in both come in no particular order.
    assert!(got.windows(2).all(|w| (w[0].0, w[0].1) <= (w[1].0, w[1].1)));
    got.sort();
    assert_eq!(
        got,
        vec![
            (0, "config:1:0", Some("ce1.example.org")),
            (50, "200", None),
            (100, "100", Some("ce1.example.org")),
            (100, "100", Some("ce2.example.org")),
        ]
    );
    assert_eq!(all[1], site_wide);
    assert_eq!(all[0], config_dt);
    // Overlap with [since, until): ends after since, starts before until.
    let window = store.downtimes(200, 300).await.unwrap();
    assert_eq!(
        window.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        vec!["config:1:0", "200"]
    );

    // A replacement of one source leaves the other alone; duplicates (same id, host, flavour)
    // keep the first row and take the last times.
    let mut dup = dt("300", Some("ce1.example.org"), 600, 700);
    dup.reason = "first".into();
    let mut dup2 = dt("300", Some("ce1.example.org"), 650, 750);
    dup2.reason = "second".into();
    store
        .replace_downtimes("gocdb", &[dup.clone(), dup2])
        .await
        .unwrap();
    let all = store.downtimes(i64::MIN, i64::MAX).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], config_dt);
    assert_eq!((all[1].start_ms, all[1].end_ms), (650, 750));
    assert_eq!(all[1].reason, "first");
    // Replacing with nothing empties the source.
    store.replace_downtimes("gocdb", &[]).await.unwrap();
    assert_eq!(
        store.downtimes(i64::MIN, i64::MAX).await.unwrap(),
        vec![config_dt]
    );
}

async fn reader_proceeds_while_another_handle_writes(store: Backend) {
    let writer = store.reopen().await;
    let write = tokio::spawn(async move {
        for b in 0..50 {
            let batch: Vec<NewResult> = (0..200)
                .map(|i| hard(result("SITE-A", "CE", &format!("m{i}"), b)))
                .collect();
            writer.insert(&batch).await.unwrap();
        }
    });
    let mut reads = 0;
    while !write.is_finished() {
        store.latest(&CellFilter::default()).await.unwrap();
        store
            .history(&HistoryQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        reads += 1;
    }
    write.await.unwrap();
    assert!(reads > 0);
    assert_eq!(store.count().await, 10_000);
    let latest = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(latest.len(), 200);
    assert!(latest.iter().all(|r| r.result.started_at_ms == 49));
}

async fn concurrent_writers_on_the_same_cells_agree(store: Backend) {
    // Two handles (two processes' worth) write interleaved batches over the same cells, each
    // batch in its own cell order; nothing deadlocks or is lost, and `latest` is the newest.
    let mut tasks = Vec::new();
    for w in 0..2i64 {
        let handle = store.reopen().await;
        tasks.push(tokio::spawn(async move {
            for b in 0..20i64 {
                let mut batch: Vec<NewResult> = (0..30)
                    .map(|i| {
                        hard(result(
                            &format!("SITE-{}", i % 5),
                            "CE",
                            &format!("m{i}"),
                            b * 2 + w,
                        ))
                    })
                    .collect();
                if (b + w) % 2 == 1 {
                    batch.reverse();
                }
                handle.insert(&batch).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.count().await, 2 * 20 * 30);
    let latest = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(latest.len(), 30);
    assert!(latest.iter().all(|r| r.result.started_at_ms == 39));
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: schema, connection errors, what SQLite has no equivalent for.

/// Runs a PostgreSQL-only test body on a fresh scratch schema (skipped as the contract is).
macro_rules! postgres_only {
    ($($name:ident),+ $(,)?) => {
        mod postgres_only {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(scratch) = super::pg::Scratch::new(stringify!($name)).await else {
                        return;
                    };
                    super::$name(scratch).await;
                }
            )+
        }
    };
}

postgres_only!(
    pg_schema_is_created_once_under_concurrent_opens,
    pg_newer_schema_is_refused,
    pg_nul_characters_are_stored_as_replacement,
    pg_import_keeps_ids_and_moves_the_sequence,
    pg_cells_deleted_behind_the_cache_heal_on_retry,
    pg_connection_errors_name_host_port_and_database,
    pg_sslmode_require_verifies_the_server_certificate,
);

async fn pg_schema_is_created_once_under_concurrent_opens(scratch: pg::Scratch) {
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let config = scratch.config();
            tokio::spawn(async move { PgStore::open_config(config, 1).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().expect("every concurrent open succeeds"));
    }
    for s in &stores {
        assert_eq!(
            s.schema_version().await.unwrap(),
            crate::postgres::SCHEMA_VERSION
        );
    }
    let admin = scratch.admin().await;
    let n: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM {}.gridprobe_schema", scratch.schema()),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // Reopening an up-to-date schema changes nothing and keeps the data.
    stores[0]
        .insert(&[hard(result("SITE-A", "CE", "m", 1))])
        .await
        .unwrap();
    let again = PgStore::open_config(scratch.config(), 1).await.unwrap();
    assert_eq!(again.count().await.unwrap(), 1);
    assert!(
        again.location().starts_with("postgresql://"),
        "{}",
        again.location()
    );
}

async fn pg_newer_schema_is_refused(scratch: pg::Scratch) {
    PgStore::open_config(scratch.config(), 1).await.unwrap();
    let admin = scratch.admin().await;
    admin
        .execute(
            &format!(
                "UPDATE {}.gridprobe_schema SET version = 99",
                scratch.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    match PgStore::open_config(scratch.config(), 1).await {
        Err(StoreError::TooNew {
            found, supported, ..
        }) => {
            assert_eq!(found, 99);
            assert_eq!(supported, crate::postgres::SCHEMA_VERSION);
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
}

async fn pg_nul_characters_are_stored_as_replacement(scratch: pg::Scratch) {
    let store = PgStore::open_config(scratch.config(), 1).await.unwrap();
    let mut r = result("SITE-A", "CE", "m", 1);
    r.outcome = Outcome::critical("bad\0output").with_details("binary\0\0junk");
    let ids = store.insert(&[hard(r.clone())]).await.unwrap();
    let got = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(got.result.outcome.summary, "bad\u{fffd}output");
    assert_eq!(got.result.outcome.details, "binary\u{fffd}\u{fffd}junk");
    // A NUL in a cell name maps to the same cell every time.
    let mut odd = result("SITE\0X", "CE", "m", 2);
    odd.hostname = "h".into();
    store.insert(&[hard(odd.clone())]).await.unwrap();
    odd.started_at_ms = 3;
    store.insert(&[hard(odd)]).await.unwrap();
    let latest = store
        .latest(&CellFilter {
            site: Some("SITE\0X".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(times(&latest), vec![3]);
    assert_eq!(latest[0].result.site, "SITE\u{fffd}X");
}

async fn pg_import_keeps_ids_and_moves_the_sequence(scratch: pg::Scratch) {
    let store = PgStore::open_config(scratch.config(), 2).await.unwrap();
    assert_eq!(store.last_result_id().await.unwrap(), None);
    let rows: Vec<StoredResult> = [
        (7, true, 10),
        (9, false, 30),
        (12, true, 20),
        (40, true, 20),
    ]
    .into_iter()
    .map(|(id, is_final, t)| StoredResult {
        id,
        is_final,
        result: result("SITE-A", "CE", "m", t),
    })
    .collect();
    store.import_results(&rows).await.unwrap();
    assert_eq!(store.last_result_id().await.unwrap(), Some(40));
    for r in &rows {
        assert_eq!(store.get(r.id).await.unwrap().as_ref(), Some(r));
    }
    // Latest: the newest final start, ties to the later row (id 40).
    let latest = store.latest(&CellFilter::default()).await.unwrap();
    assert_eq!(ids_of(&latest), vec![40]);
    // New results continue after the copied ids.
    let new = store
        .insert(&[hard(result("SITE-A", "CE", "m", 50))])
        .await
        .unwrap();
    assert!(new[0] > 40, "{new:?}");
    // A copy of lower ids never moves the sequence back.
    store
        .import_results(&[StoredResult {
            id: 3,
            is_final: true,
            result: result("SITE-B", "CE", "m", 1),
        }])
        .await
        .unwrap();
    let newer = store
        .insert(&[hard(result("SITE-A", "CE", "m", 60))])
        .await
        .unwrap();
    assert!(newer[0] > new[0]);
    // The same id twice is refused, and nothing of that batch stays.
    let err = store
        .import_results(&[
            StoredResult {
                id: 1_000,
                is_final: true,
                result: result("SITE-C", "CE", "m", 1),
            },
            rows[0].clone(),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Query(_)), "{err}");
    assert_eq!(store.get(1_000).await.unwrap(), None);
}

async fn pg_cells_deleted_behind_the_cache_heal_on_retry(scratch: pg::Scratch) {
    let store = PgStore::open_config(scratch.config(), 1).await.unwrap();
    store
        .insert(&[hard(result("SITE-A", "CE", "m", 1))])
        .await
        .unwrap();
    let admin = scratch.admin().await;
    admin
        .batch_execute(&format!(
            "TRUNCATE {s}.results, {s}.cells",
            s = scratch.schema()
        ))
        .await
        .unwrap();
    // The cached cell id is gone: the first write fails (the writer retries), the next one
    // resolves the cell again.
    let batch = [hard(result("SITE-A", "CE", "m", 2))];
    let first = store.insert(&batch).await;
    assert!(matches!(first, Err(StoreError::Query(_))), "{first:?}");
    store.insert(&batch).await.unwrap();
    assert_eq!(
        times(&store.latest(&CellFilter::default()).await.unwrap()),
        vec![2]
    );
}

async fn pg_connection_errors_name_host_port_and_database(scratch: pg::Scratch) {
    let base = scratch.config();
    let host = match base.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let port = base.get_ports().first().copied().unwrap_or(5432);
    let user = base.get_user().unwrap_or("postgres").to_string();
    let config = |port: u16, dbname: &str| {
        let mut c = tokio_postgres::Config::new();
        c.host(&host).port(port).user(&user).dbname(dbname);
        c
    };

    // Nothing listens on port 1.
    let err = PgStore::open_config(config(1, "test"), 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{host}:1")), "{err}");
    assert!(err.contains("connection refused"), "{err}");

    // A database that does not exist.
    let missing = config(port, "gridprobe_no_such_database");
    let err = PgStore::open_config(missing, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{host}:{port}")), "{err}");
    assert!(
        err.contains("database `gridprobe_no_such_database` does not exist"),
        "{err}"
    );

    // A connection string that is not one.
    let err = PgStore::open("postgresql://u:secret@[::1", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid connection string"), "{err}");
    assert!(!err.contains("secret"), "{err}");

    // Wrong password, when the machine has a password-only role (scripts/services).
    if let Ok(url) = std::env::var("GRIDPROBE_TEST_PG_AUTH") {
        let err = PgStore::open(&url, Some("wrong-password".into()))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("authentication failed for user"), "{err}");
        assert!(err.contains("PGPASSWORD"), "{err}");
        assert!(!err.contains("wrong-password"), "{err}");
        let err = PgStore::open(&url, None).await.unwrap_err().to_string();
        assert!(err.contains("asks for a password"), "{err}");
    }
}

async fn pg_sslmode_require_verifies_the_server_certificate(scratch: pg::Scratch) {
    let ssl: String = scratch
        .admin()
        .await
        .query_one("SHOW ssl", &[])
        .await
        .unwrap()
        .get(0);
    if ssl != "on" {
        eprintln!("note: the test server has ssl = {ssl}; TLS not checked");
        return;
    }
    // Local servers have a self-signed certificate (Debian's snakeoil, for `localhost`): with
    // `require` it must be refused, not silently accepted as libpq's `require` would.
    let mut config = scratch.config();
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let err = PgStore::open_config(config, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("TLS handshake"), "{err}");
    assert!(err.contains("certificate"), "{err}");
}

/// Scratch schemas on the test server.
pub(crate) mod pg {
    use super::*;

    static SEQ: AtomicUsize = AtomicUsize::new(0);
    static SWEPT: AtomicBool = AtomicBool::new(false);
    const PREFIX: &str = "gp_t_";

    /// The test server's connection string, or `None` (with a note) when it is not configured;
    /// under CI a missing server fails the test instead.
    pub(crate) fn conninfo(test: &str) -> Option<String> {
        match std::env::var("GRIDPROBE_TEST_PG") {
            Ok(s) if !s.trim().is_empty() => Some(s),
            _ => {
                let ci = std::env::var("CI")
                    .map(|v| !v.is_empty() && v != "false" && v != "0")
                    .unwrap_or(false);
                assert!(
                    !ci,
                    "GRIDPROBE_TEST_PG is not set: under CI the PostgreSQL store tests must run \
                     (scripts/test-env.sh starts the server and exports it)"
                );
                eprintln!(
                    "note: {test}: GRIDPROBE_TEST_PG is not set, PostgreSQL part skipped \
                     (eval \"$(scripts/test-env.sh databases)\" to run it)"
                );
                None
            }
        }
    }

    /// A schema of its own on the test server, dropped when this is dropped (also when the
    /// test panics).
    pub(crate) struct Scratch {
        admin: tokio_postgres::Config,
        schema: String,
    }

    impl Scratch {
        pub(crate) async fn new(test: &str) -> Option<Scratch> {
            let conninfo = conninfo(test)?;
            let admin: tokio_postgres::Config = conninfo
                .parse()
                .unwrap_or_else(|e| panic!("GRIDPROBE_TEST_PG={conninfo:?} does not parse: {e}"));
            let mut name = format!(
                "{PREFIX}{}_{}_{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed),
                test.to_ascii_lowercase()
            );
            name.truncate(63);
            let scratch = Scratch {
                admin,
                schema: name,
            };
            let client = scratch.admin().await;
            if !SWEPT.swap(true, Ordering::Relaxed) {
                sweep_stale(&client).await;
            }
            client
                .batch_execute(&format!("CREATE SCHEMA {}", scratch.schema))
                .await
                .expect("create the scratch schema");
            Some(scratch)
        }

        /// The schema's name.
        pub(crate) fn schema(&self) -> &str {
            &self.schema
        }

        /// The store's connection settings: the server's, tables in the scratch schema.
        pub(crate) fn config(&self) -> tokio_postgres::Config {
            let mut c = self.admin.clone();
            c.options(format!("-c search_path={}", self.schema));
            c
        }

        /// A plain connection to the server (default search path).
        pub(crate) async fn admin(&self) -> tokio_postgres::Client {
            let (client, connection) = self
                .admin
                .connect(tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| {
                    panic!("GRIDPROBE_TEST_PG is set but the server does not answer: {e:?}")
                });
            tokio::spawn(connection);
            client
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let admin = self.admin.clone();
            let schema = self.schema.clone();
            // A thread with its own runtime: Drop cannot await, and the test's runtime may be
            // unwinding. A lock timeout keeps a leftover session from hanging the run.
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async move {
                    let (client, connection) = admin.connect(tokio_postgres::NoTls).await.ok()?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                        ))
                        .await
                        .ok()
                })
            })
            .join();
            if !matches!(dropped, Ok(Some(()))) {
                eprintln!("note: scratch schema {} was not dropped", self.schema);
            }
        }
    }

    /// Drops scratch schemas of test processes that are gone (killed runs leave them).
    async fn sweep_stale(client: &tokio_postgres::Client) {
        let Ok(rows) = client
            .query(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'gp\\_t\\_%'",
                &[],
            )
            .await
        else {
            return;
        };
        for row in rows {
            let name: String = row.get(0);
            let pid = name[PREFIX.len()..].split('_').next().unwrap_or("");
            if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await;
            }
        }
    }
}

async fn a_usable_store_says_it_can_be_written(store: Backend) {
    // `/healthz` answers 503 when this fails; a fresh store of either backend must pass.
    store.check_writable().await.unwrap();
    store.check_writable().await.unwrap();
    // And the check leaves no transaction open behind it: writing still works.
    store
        .insert(&[hard(result("SITE-A", "CE", "m1", 1))])
        .await
        .unwrap();
}

async fn run_timelines_equal_the_results_folded_also_from_cached_days(store: Backend) {
    const MIN: i64 = 60_000;
    const DAY: i64 = 86_400_000;
    // Four closed days of 2024, every 15 minutes, statuses in long runs; SITE-A CE stays OK
    // through a 3-hour hole on day 1 (a run whose inner gap is wider than most merge gaps),
    // SITE-B CE flaps every hour.
    let day0 = 19_800 * DAY;
    let st = |site, flavour, t, status| {
        with_status(result(site, flavour, "org.example.Ping", t), status, "x")
    };
    let mut batch = Vec::new();
    for k in 0..(4 * 96) {
        let t = day0 + k * 15 * MIN + (k % 7) * 1_000;
        let in_hole = (96 + 40..96 + 52).contains(&k);
        if !in_hole {
            let a = if (200..230).contains(&k) {
                Status::Critical
            } else {
                Status::Ok
            };
            batch.push(hard(st("SITE-A", "CE", t, a)));
        }
        let b = if (k / 4) % 2 == 0 {
            Status::Warning
        } else {
            Status::Unknown
        };
        batch.push(hard(st("SITE-B", "CE", t, b)));
        // Retry attempts never count.
        if k % 50 == 0 {
            batch.push(attempt(st("SITE-B", "CE", t + 1, Status::Critical), 1));
        }
    }
    store.insert(&batch).await.unwrap();

    let check = |what: &'static str, since: i64, until: i64, filter: CellFilter| {
        let store = &store;
        async move {
            for gap in [0, 20 * MIN, 2 * 60 * MIN, 6 * 60 * MIN] {
                let want: Vec<crate::store::CellRuns> = store
                    .timelines(since, until, &filter)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(k, points)| (k, crate::store::runs_of(&points, gap)))
                    .collect();
                // Twice: the first call may fill a cache that the second reads.
                for round in 0..2 {
                    let got = store
                        .run_timelines(since, until, &filter, gap)
                        .await
                        .unwrap();
                    assert_eq!(got, want, "{what}, merge gap {gap} ms, round {round}");
                }
            }
        }
    };
    let all = CellFilter::default;
    check("whole days", day0 + DAY, day0 + 3 * DAY, all()).await;
    check(
        "parts of days",
        day0 + 5 * 3_600_000,
        day0 + 4 * DAY - 7,
        all(),
    )
    .await;
    let site_b = CellFilter {
        site: Some("SITE-B".into()),
        ..Default::default()
    };
    check("one site", day0, day0 + 4 * DAY, site_b).await;
    // A period starting in SITE-A's hole: its last result before the period is over two
    // hours old, SITE-B's a few minutes (the two ways a store may find the leading result).
    check(
        "from inside a hole",
        day0 + DAY + 12 * 3_600_000,
        day0 + 3 * DAY,
        all(),
    )
    .await;

    // A late result in a day already read (a spool replay): the answer follows it.
    store
        .insert(&[hard(st(
            "SITE-A",
            "CE",
            day0 + DAY + 41 * 15 * MIN,
            Status::Critical,
        ))])
        .await
        .unwrap();
    check("after a late result", day0, day0 + 4 * DAY, all()).await;
    // Retention cutting into day 1: the answer follows it too.
    store.delete_before(day0 + DAY + 3_600_000).await.unwrap();
    check("after retention", day0, day0 + 4 * DAY, all()).await;
}

fn recomputation_request(
    start_ms: i64,
    end_ms: i64,
    change: crate::recompute::Change,
) -> crate::recompute::RecomputationRequest {
    crate::recompute::RecomputationRequest {
        start_ms,
        end_ms,
        reason: "the probe's proxy expired, not the site".into(),
        requester: "site-admin-a".into(),
        scope: crate::recompute::Scope {
            sites: vec!["SITE-A".into()],
            ..Default::default()
        },
        change,
    }
}

async fn recomputations_keep_every_step_and_refuse_bad_transitions(store: Backend) {
    use crate::recompute::{decision_steps, Change, State, StepKind};
    let ok = Change::Force { status: Status::Ok };
    let a = store
        .add_recomputation(&recomputation_request(0, 1_000, ok), 5_000)
        .await
        .unwrap();
    let b = store
        .add_recomputation(&recomputation_request(0, 2_000, Change::Exclude), 6_000)
        .await
        .unwrap();
    assert_eq!(a.state, State::Pending);
    assert!(b.id > a.id);
    let approved = store
        .recomputation_steps(a.id, &decision_steps(StepKind::Approved, "op", 7_000, ""))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(approved.state, State::Applied);
    // Approving twice, or applying a pending one, is refused and writes nothing.
    let err = store
        .recomputation_steps(a.id, &decision_steps(StepKind::Approved, "op", 8_000, ""))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.contains("it is applied"), "{err}");
    let err = store
        .recomputation_steps(b.id, &decision_steps(StepKind::Revoked, "op", 8_000, ""))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.contains("it is pending"), "{err}");
    let err = store
        .recomputation_steps(999_999, &decision_steps(StepKind::Rejected, "op", 1, ""))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, "no recomputation 999999");
    store
        .recomputation_steps(
            b.id,
            &decision_steps(StepKind::Rejected, "op", 9_000, "dup"),
        )
        .await
        .unwrap()
        .unwrap();
    store
        .recomputation_steps(
            a.id,
            &decision_steps(StepKind::Revoked, "op2", 10_000, "wrong"),
        )
        .await
        .unwrap()
        .unwrap();
    // Everything is kept, in order, also for another handle.
    let all = store.reopen().await.recomputations().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].request, recomputation_request(0, 1_000, ok));
    let steps: Vec<(StepKind, &str, i64)> = all[0]
        .steps
        .iter()
        .map(|s| (s.step, s.by.as_str(), s.at_ms))
        .collect();
    assert_eq!(
        steps,
        [
            (StepKind::Requested, "site-admin-a", 5_000),
            (StepKind::Approved, "op", 7_000),
            (StepKind::Applied, "gridprobe", 7_000),
            (StepKind::Revoked, "op2", 10_000),
        ]
    );
    assert_eq!(all[0].state, State::Revoked);
    assert_eq!(all[0].steps[3].note, "wrong");
    assert_eq!(all[1].state, State::Rejected);
    // Retention never deletes them.
    store.delete_before(i64::MAX / 2).await.unwrap();
    assert_eq!(store.recomputations().await.unwrap().len(), 2);
}

async fn a_recomputation_over_cached_days_changes_the_figures_at_once(store: Backend) {
    use crate::recompute::{decision_steps, Change, StepKind};
    use crate::report::{from_store, Period};
    const H: i64 = 3_600_000;
    const DAY: i64 = 24 * H;
    let config = gridprobe_config::load_str(
        std::path::Path::new("ops.toml"),
        r#"vo = "ops"
[defaults]
interval = "1h"
timeout = "1m"
[[site]]
name = "SITE-A"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce.site-a.example.org"
[[probe]]
metric = "org.example.Ping"
kind = "tcp"
flavours = ["CE"]
"#,
    );
    assert!(config.diagnostics.is_empty(), "{}", config.diagnostics);
    let config = config.config;
    // Two closed days of 2024, hourly: CRITICAL 00-12, OK 12-24 each day.
    let day0 = 19_800 * DAY;
    let mut batch = Vec::new();
    for h in 0..48 {
        let status = if h % 24 < 12 {
            Status::Critical
        } else {
            Status::Ok
        };
        batch.push(hard(with_status(
            result("SITE-A", "CE", "org.example.Ping", day0 + h * H),
            status,
            "x",
        )));
    }
    store.insert(&batch).await.unwrap();
    let period = Period {
        start_ms: day0,
        end_ms: day0 + 2 * DAY,
        label: "two days".into(),
    };
    let availability = || async {
        let r = from_store(
            store.store.as_ref(),
            &config,
            None,
            &period,
            &CellFilter::default(),
            0.9,
        )
        .await
        .unwrap();
        (
            r.sites[0].figures,
            r.recomputations.iter().map(|r| r.id).collect::<Vec<_>>(),
        )
    };
    // 24 h up of 48 known; this read also fills the per-day cache.
    let (f, applied) = availability().await;
    assert_eq!((f.up_ms, f.known_ms, f.excluded_ms), (24 * H, 48 * H, 0));
    assert!(applied.is_empty());

    // Force OK over day 0's outage: 36 h up of 48.
    let force = store
        .add_recomputation(
            &recomputation_request(day0, day0 + 12 * H, Change::Force { status: Status::Ok }),
            day0 + 3 * DAY,
        )
        .await
        .unwrap();
    let (f, applied) = availability().await;
    assert_eq!(f.up_ms, 24 * H, "a pending recomputation changes nothing");
    assert!(applied.is_empty());
    store
        .recomputation_steps(force.id, &decision_steps(StepKind::Approved, "op", 1, ""))
        .await
        .unwrap()
        .unwrap();
    let (f, applied) = availability().await;
    assert_eq!((f.up_ms, f.known_ms), (36 * H, 48 * H));
    assert_eq!(f.availability, Some(0.75));
    assert_eq!(applied, [force.id]);

    // Exclude day 1's outage as well: 36 h up of 36 known, 12 h excluded.
    let exclude = store
        .add_recomputation(
            &recomputation_request(day0 + DAY, day0 + DAY + 12 * H, Change::Exclude),
            day0 + 3 * DAY,
        )
        .await
        .unwrap();
    store
        .recomputation_steps(exclude.id, &decision_steps(StepKind::Approved, "op", 2, ""))
        .await
        .unwrap()
        .unwrap();
    let (f, applied) = availability().await;
    assert_eq!(
        (f.up_ms, f.known_ms, f.excluded_ms),
        (36 * H, 36 * H, 12 * H)
    );
    assert_eq!(f.availability, Some(1.0));
    assert_eq!(f.unknown_fraction, 0.0);
    assert_eq!(applied, [force.id, exclude.id]);

    // Revoking the forced OK brings day 0's outage back: 24 h up of 36 known.
    store
        .recomputation_steps(force.id, &decision_steps(StepKind::Revoked, "op", 3, ""))
        .await
        .unwrap()
        .unwrap();
    let (f, applied) = availability().await;
    assert_eq!(
        (f.up_ms, f.known_ms, f.excluded_ms),
        (24 * H, 36 * H, 12 * H)
    );
    assert_eq!(applied, [exclude.id]);
}

// ---------------------------------------------------------------------------------------------
// The notification engine's tables

fn ack(id: &str, site: &str, created_ms: i64, expires_ms: Option<i64>) -> crate::notify::Ack {
    crate::notify::Ack {
        id: id.into(),
        site: site.into(),
        hostname: Some("se.example.org".into()),
        metric: None,
        comment: "disk replaced tomorrow — ünïcode".into(),
        author: "jane".into(),
        created_ms,
        expires_ms,
        sticky: true,
        status: Some("CRITICAL".into()),
    }
}

async fn acks_are_shared_kept_once_and_end_by_id_or_expiry(store: Backend) {
    let other = store.reopen().await;
    let a = ack("a", "S1", 10, None);
    let b = ack("b", "S2", 5, Some(100));
    assert_eq!(store.add_acks(&[a.clone(), b.clone()], 0).await.unwrap(), 2);
    // Another process sees them, oldest first, exactly as written.
    assert_eq!(other.acks(50).await.unwrap(), vec![b.clone(), a.clone()]);
    // An id already stored is kept as it was; an ack expired on arrival is not stored.
    let mut changed = a.clone();
    changed.comment = "other".into();
    let late = ack("c", "S1", 1, Some(40));
    assert_eq!(other.add_acks(&[changed, late], 50).await.unwrap(), 0);
    assert_eq!(store.acks(50).await.unwrap(), vec![b.clone(), a.clone()]);
    // Expired ones are not in force, and adding forgets them.
    assert_eq!(store.acks(100).await.unwrap(), vec![a.clone()]);
    store.add_acks(&[], 100).await.unwrap();
    assert_eq!(store.acks(0).await.unwrap(), vec![a.clone()]);
    // Removal by id, counted.
    let ids = vec!["a".to_string(), "nope".to_string()];
    assert_eq!(other.remove_acks(&ids).await.unwrap(), 1);
    assert!(store.acks(0).await.unwrap().is_empty());
}

fn sent(id: &str, site: &str, sent_ms: i64) -> crate::notify::SentNotification {
    crate::notify::SentNotification {
        id: id.into(),
        channel: "mail".into(),
        recipient: "admin@example.org".into(),
        site: site.into(),
        subject: "[gridprobe ops] S1: 2 changes".into(),
        event: "problem".into(),
        status: "CRITICAL".into(),
        cells: 2,
        created_ms: sent_ms - 1,
        sent_ms,
    }
}

async fn sent_notifications_are_kept_once_newest_first(store: Backend) {
    let other = store.reopen().await;
    let batch = [
        sent("x1@h", "S1", 10),
        sent("x2@h", "S2", 30),
        sent("x3@h", "S1", 20),
    ];
    assert_eq!(store.record_notifications(&batch).await.unwrap(), 3);
    // The same id again (a redelivery, or the other instance) is not a second entry.
    assert_eq!(
        other
            .record_notifications(&[sent("x1@h", "S1", 99)])
            .await
            .unwrap(),
        0
    );
    let ids = |v: Vec<crate::notify::SentNotification>| -> Vec<String> {
        v.into_iter().map(|n| n.id).collect()
    };
    assert_eq!(
        ids(other.notifications(None, 10).await.unwrap()),
        vec!["x2@h", "x3@h", "x1@h"]
    );
    assert_eq!(
        ids(other.notifications(Some("S1"), 10).await.unwrap()),
        vec!["x3@h", "x1@h"]
    );
    assert_eq!(
        ids(store.notifications(None, 1).await.unwrap()),
        vec!["x2@h"]
    );
    assert_eq!(store.notifications(None, 10).await.unwrap()[2], batch[0]);
    assert!(other.notification_recorded("x3@h").await.unwrap());
    assert!(!other.notification_recorded("x4@h").await.unwrap());
}

async fn notify_state_changes_only_from_the_version_read(store: Backend) {
    use crate::notify::StatePut;
    let other = store.reopen().await;
    let put = |key: &str, value: &str, expected: Option<i64>| StatePut {
        key: key.into(),
        value: value.into(),
        expected,
    };
    // First writes: one per key wins.
    let got = store
        .put_notify_state(&[put("cell/a", "1", None), put("cell/b", "1", None)])
        .await
        .unwrap();
    assert_eq!(got, vec![Some(1), Some(1)]);
    assert_eq!(
        other
            .put_notify_state(&[put("cell/a", "x", None)])
            .await
            .unwrap(),
        vec![None],
        "a second first write loses"
    );
    // Two instances deciding from version 1: one wins, the other is told and changes nothing.
    let (pa, pb) = ([put("cell/a", "2", Some(1))], [put("cell/a", "3", Some(1))]);
    let a = store.put_notify_state(&pa);
    let b = other.put_notify_state(&pb);
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        [a[0], b[0]].iter().filter(|v| **v == Some(2)).count(),
        1,
        "{a:?} {b:?}"
    );
    assert!(a[0].is_none() || b[0].is_none(), "{a:?} {b:?}");
    let winner = if a[0].is_some() { "2" } else { "3" };
    let rows = other.notify_state("cell/").await.unwrap();
    let view: Vec<(String, String, i64)> = rows
        .into_iter()
        .map(|e| (e.key, e.value, e.version))
        .collect();
    assert_eq!(
        view,
        vec![
            ("cell/a".into(), winner.into(), 2),
            ("cell/b".into(), "1".into(), 1)
        ]
    );
    // Prefixes are literal (no LIKE wildcards), keys read one by one.
    store
        .put_notify_state(&[put("site/x_%", "good", None), put("sitex", "?", None)])
        .await
        .unwrap();
    let keys = |v: Vec<crate::notify::StateEntry>| -> Vec<String> {
        v.into_iter().map(|e| e.key).collect()
    };
    assert_eq!(
        keys(store.notify_state("site/x_").await.unwrap()),
        vec!["site/x_%"]
    );
    assert_eq!(
        keys(store.notify_state("site/x%").await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        keys(
            store
                .notify_state_of(&["cell/b".into(), "nope".into(), "sitex".into()])
                .await
                .unwrap()
        ),
        vec!["cell/b", "sitex"]
    );
}
