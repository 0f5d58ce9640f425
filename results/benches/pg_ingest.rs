//! Ingest through the PostgreSQL store, against a bare COPY of the same rows and against the
//! SQLite store: `cargo bench -p gridprobe-results --bench pg_ingest` with `GRIDPROBE_TEST_PG`
//! set (a scratch schema is created and dropped). Sizes: `GRIDPROBE_BENCH_RESULTS` results
//! (default 200 000) over 500 sites × 2 services × 10 metrics, written in batches of 1000 (the
//! writer's default), one transaction each, as `serve` does.

use std::time::Instant;

use futures::pin_mut;
use gridprobe_probes::{Outcome, ProbeResult, Status, Trigger};
use gridprobe_results::{NewResult, PgStore, ResultStore, SqliteStore};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

const BATCH: usize = 1000;

fn rows(n: usize) -> Vec<NewResult> {
    let cells: Vec<(String, String, String)> = (0..500)
        .flat_map(|s| {
            (0..2).flat_map(move |h| {
                (0..10).map(move |m| {
                    (
                        format!("SITE-{s:03}"),
                        format!("host{h}.site-{s:03}.example.org"),
                        format!("org.example.metric-{m}"),
                    )
                })
            })
        })
        .collect();
    (0..n)
        .map(|i| {
            let (site, host, metric) = &cells[i % cells.len()];
            let round = (i / cells.len()) as i64;
            let status = if i % 13 == 0 {
                Status::Critical
            } else {
                Status::Ok
            };
            NewResult {
                result: ProbeResult {
                    metric: metric.clone(),
                    kind: "tcp".into(),
                    vo: "bench".into(),
                    site: site.clone(),
                    hostname: host.clone(),
                    flavour: "CE".into(),
                    started_at_ms: 1_800_000_000_000 + round * 600_000 + (i % 600) as i64,
                    duration_ms: 42,
                    outcome: Outcome::new(status, "TCP connect to host:9619 in 0.012 s")
                        .with_details("connected\nbanner: none"),
                    attempt: 1,
                    trigger: Trigger::Scheduled,
                },
                is_final: true,
            }
        })
        .collect()
}

async fn admin(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("GRIDPROBE_TEST_PG answers");
    tokio::spawn(conn);
    client
}

/// The floor: the same rows, cell strings inline, COPY BINARY into a table without indexes,
/// one transaction per batch.
async fn bare_copy(client: &mut tokio_postgres::Client, rows: &[NewResult]) -> f64 {
    client
        .batch_execute(
            "CREATE TABLE bare (id BIGSERIAL PRIMARY KEY, site TEXT, hostname TEXT, \
             flavour TEXT, metric TEXT, started_at_ms BIGINT, duration_ms BIGINT, \
             attempt INTEGER, final BOOLEAN, vo TEXT, kind TEXT, status TEXT, summary TEXT, \
             details TEXT, perfdata TEXT, \"trigger\" TEXT)",
        )
        .await
        .expect("bare table");
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::INT4,
        Type::BOOL,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
    ];
    let start = Instant::now();
    for chunk in rows.chunks(BATCH) {
        let tx = client.transaction().await.expect("tx");
        let sink = tx
            .copy_in(
                "COPY bare (site, hostname, flavour, metric, started_at_ms, duration_ms, \
                 attempt, final, vo, kind, status, summary, details, perfdata, \"trigger\") \
                 FROM STDIN (FORMAT binary)",
            )
            .await
            .expect("copy");
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        for n in chunk {
            let r = &n.result;
            let duration = r.duration_ms as i64;
            let attempt = r.attempt as i32;
            writer
                .as_mut()
                .write(&[
                    &r.site,
                    &r.hostname,
                    &r.flavour,
                    &r.metric,
                    &r.started_at_ms,
                    &duration,
                    &attempt,
                    &n.is_final,
                    &r.vo,
                    &r.kind,
                    &r.outcome.status.name(),
                    &r.outcome.summary,
                    &r.outcome.details,
                    &"[]",
                    &"scheduled",
                ])
                .await
                .expect("row");
        }
        writer.finish().await.expect("finish");
        tx.commit().await.expect("commit");
    }
    start.elapsed().as_secs_f64()
}

async fn through_store(store: &dyn ResultStore, rows: &[NewResult]) -> f64 {
    let start = Instant::now();
    for chunk in rows.chunks(BATCH) {
        store.insert(chunk).await.expect("insert");
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    let Ok(conninfo) = std::env::var("GRIDPROBE_TEST_PG") else {
        eprintln!("GRIDPROBE_TEST_PG is not set: nothing to measure");
        return;
    };
    let n: usize = std::env::var("GRIDPROBE_BENCH_RESULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config: tokio_postgres::Config = conninfo.parse().expect("GRIDPROBE_TEST_PG parses");
    let schema = format!("gp_bench_{}", std::process::id());
    let rows = rows(n);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    rt.block_on(async {
        let mut client = admin(&config).await;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
                 SET search_path = {schema}"
            ))
            .await
            .expect("schema");
        let bare = bare_copy(&mut client, &rows).await;

        let mut store_config = config.clone();
        store_config.options(format!("-c search_path={schema}"));
        let store = PgStore::open_config(store_config, 4).await.expect("store");
        let pg = through_store(&store, &rows).await;
        // Once more into a store that already holds a history (cells cached, indexes large).
        let later: Vec<NewResult> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.result.started_at_ms += 100 * 86_400_000;
                r
            })
            .collect();
        let pg_again = through_store(&store, &later).await;

        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = SqliteStore::open(&dir.path().join("bench.sqlite")).expect("sqlite");
        let sq = through_store(&sqlite, &rows).await;

        let rate = |secs: f64| n as f64 / secs;
        println!(
            "ingest of {n} results in batches of {BATCH} (load average: {})",
            load.trim()
        );
        println!(
            "  bare COPY (no cells, no indexes):   {:>9.0} results/s",
            rate(bare)
        );
        println!(
            "  PgStore::insert (empty store):      {:>9.0} results/s  ({:.2} of bare COPY)",
            rate(pg),
            bare / pg
        );
        println!(
            "  PgStore::insert (after {n}):  {:>9.0} results/s  ({:.2} of bare COPY)",
            rate(pg_again),
            bare / pg_again
        );
        println!(
            "  SqliteStore::insert (WAL file):     {:>9.0} results/s",
            rate(sq)
        );
        client
            .batch_execute(&format!("RESET search_path; DROP SCHEMA {schema} CASCADE"))
            .await
            .expect("drop schema");
    });
}
