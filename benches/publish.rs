//! End-to-end publish throughput with confirms, to the machine's RabbitMQ and NATS JetStream
//! (`GRIDPROBE_TEST_AMQP`, `GRIDPROBE_TEST_NATS`, from scripts/services/brokers.sh), through the
//! same relay `gridprobe serve` uses: results handed to the publisher until the broker has
//! confirmed (AMQP publisher confirms) or acknowledged (JetStream) every one. Also: the replay
//! of a full spool after an outage, and the spool's own fsynced append rate.
//!
//! ```text
//! cargo bench --bench publish                 # 20,000 messages per figure
//! cargo bench --bench publish -- --quick      # 2,000
//! ```
//!
//! Figures are reported, never asserted. Each run uses its own exchange/queue and stream and
//! deletes them afterwards.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridprobe_broker::spawn_publishers;
use gridprobe_config::publish::{PasswordSource, PublishKind, PublishTarget};
use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Trigger};
use gridprobe_results::{NewResult, ResultMessage, Spool, SpoolConfig, WriterStats};

fn result(i: usize) -> NewResult {
    NewResult {
        result: ProbeResult {
            metric: format!("org.bench.M{}", i % 50),
            kind: "nagios".into(),
            vo: "bench".into(),
            site: format!("SITE-{}", i % 100),
            hostname: format!("ce{}.example.org", i % 400),
            flavour: "CE".into(),
            started_at_ms: 1_700_000_000_000 + i as i64,
            duration_ms: 1200,
            outcome: Outcome::ok("OK - all fine, 12 jobs in 3 queues")
                .with_details("line one of the plugin output\nline two\nline three")
                .with_perfdata(vec![Perfdatum::new("time", 1.2, "s")]),
            attempt: 1,
            trigger: Trigger::Scheduled,
        },
        is_final: true,
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{nanos}")
}

async fn wait_written(stats: &WriterStats, n: u64, limit: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + limit;
    while stats.written.load(Ordering::Relaxed) < n {
        if Instant::now() > end {
            bail!(
                "only {} of {n} confirmed after {limit:?} ({} errors)",
                stats.written.load(Ordering::Relaxed),
                stats.write_errors.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Live: results sent as fast as they come, timed until the last is confirmed.
async fn live(target: &PublishTarget, n: usize, tmp: &Path) -> anyhow::Result<f64> {
    let pubs = spawn_publishers(
        std::slice::from_ref(target),
        "bench",
        &tmp.join("live"),
        4 << 30,
        None,
    )?;
    let p = &pubs.list[0];
    let stats = p.handle.stats();
    // Warm-up: connect and declare outside the timing.
    p.handle.send(result(usize::MAX / 2));
    wait_written(&stats, 1, Duration::from_secs(30)).await?;
    let start = Instant::now();
    for i in 0..n {
        p.handle.send(result(i));
    }
    wait_written(&stats, n as u64 + 1, Duration::from_secs(600)).await?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    pubs.finish().await;
    Ok(rate)
}

/// Replay: a spool holding `n` results (as after an outage) published on start.
async fn replay(target: &PublishTarget, n: usize, tmp: &Path) -> anyhow::Result<f64> {
    let root = tmp.join("replay");
    {
        let dir = gridprobe_broker::publish::spool_dir(&root, &target.name);
        let (mut spool, _) = Spool::open(&dir, SpoolConfig::default())?;
        let records: Vec<Vec<u8>> = (0..n)
            .map(|i| ResultMessage::new("bench", &result(i)).to_json())
            .collect();
        for chunk in records.chunks(1000) {
            spool.append(chunk)?;
        }
    }
    let start = Instant::now();
    let pubs = spawn_publishers(std::slice::from_ref(target), "bench", &root, 4 << 30, None)?;
    let stats = pubs.list[0].handle.stats();
    wait_written(&stats, n as u64, Duration::from_secs(600)).await?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    pubs.finish().await;
    Ok(rate)
}

/// The spool alone: appends of `batch` records, each batch fsynced.
fn spool_rate(n: usize, batch: usize, tmp: &Path) -> anyhow::Result<f64> {
    let (mut spool, _) = Spool::open(&tmp.join(format!("raw-{batch}")), SpoolConfig::default())?;
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| ResultMessage::new("bench", &result(i)).to_json())
        .collect();
    let start = Instant::now();
    for chunk in records.chunks(batch) {
        spool.append(chunk)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn amqp_cleanup(url: &str, exchange: &str, queue: &str) {
    if let Ok(conn) = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
    {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
                .await;
            let _ = ch
                .exchange_delete(
                    exchange.into(),
                    lapin::options::ExchangeDeleteOptions::default(),
                )
                .await;
        }
    }
}

async fn run(n: usize) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    println!(
        "publish benchmark: {n} messages per figure (~{} bytes each)",
        ResultMessage::new("bench", &result(1)).to_json().len()
    );
    for batch in [1, 100] {
        let count = if batch == 1 { n.min(2000) } else { n };
        println!(
            "  spool append, fsync per batch of {batch:>3}: {:>9.0} results/s",
            spool_rate(count, batch, tmp.path())?
        );
    }
    match std::env::var("GRIDPROBE_TEST_AMQP") {
        Ok(url) if !url.is_empty() => {
            let exchange = unique("gridprobe.bench.");
            let queue = format!("{exchange}.q");
            // A queue bound to the exchange, so messages are routed and stored (as in use).
            let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
                .await
                .context("connecting to RabbitMQ")?;
            let ch = conn.create_channel().await?;
            ch.exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await?;
            ch.queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await?;
            ch.queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                lapin::options::QueueBindOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await?;
            let mut u = url::Url::parse(&url)?;
            let pw = u.password().map(str::to_string);
            let _ = u.set_password(None);
            let password = match pw {
                Some(p) => {
                    let f = tmp.path().join("pw");
                    std::fs::write(&f, p)?;
                    PasswordSource::File(f)
                }
                None => PasswordSource::None,
            };
            let target = PublishTarget {
                name: "rabbit".into(),
                url: u.to_string(),
                password,
                kind: PublishKind::Amqp {
                    exchange: exchange.clone(),
                    exchange_type: "topic".into(),
                    declare: true,
                    routing_key: "{vo}.{site}.{metric}".into(),
                    queue: queue.clone(),
                    binding_key: "#".into(),
                },
            };
            let l = live(&target, n, tmp.path()).await;
            let r = replay(&target, n, tmp.path()).await;
            amqp_cleanup(&url, &exchange, &queue).await;
            println!(
                "  RabbitMQ, publisher confirms, live:       {:>9.0} messages/s",
                l?
            );
            println!(
                "  RabbitMQ, publisher confirms, spool replay: {:>7.0} messages/s",
                r?
            );
        }
        _ => println!("  RabbitMQ: GRIDPROBE_TEST_AMQP not set, skipped"),
    }
    match std::env::var("GRIDPROBE_TEST_NATS") {
        Ok(url) if !url.is_empty() => {
            let stream = unique("GPBENCH");
            let target = PublishTarget {
                name: "nats".into(),
                url: url.clone(),
                password: PasswordSource::None,
                kind: PublishKind::Nats {
                    subject: format!("{}.{{vo}}.{{site}}", stream.to_lowercase()),
                    stream: stream.clone(),
                    stream_max_age: Some(Duration::from_secs(3600)),
                    consumer: "bench".into(),
                },
            };
            let l = live(&target, n, tmp.path()).await;
            let r = replay(&target, n, tmp.path()).await;
            if let Ok(client) = async_nats::connect(&url).await {
                let _ = async_nats::jetstream::new(client)
                    .delete_stream(&stream)
                    .await;
            }
            println!(
                "  NATS JetStream, acknowledged, live:       {:>9.0} messages/s",
                l?
            );
            println!(
                "  NATS JetStream, acknowledged, spool replay: {:>7.0} messages/s",
                r?
            );
        }
        _ => println!("  NATS: GRIDPROBE_TEST_NATS not set, skipped"),
    }
    Ok(())
}

fn main() -> ExitCode {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 2_000 } else { 20_000 };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(n)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
