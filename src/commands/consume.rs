//! `gridprobe consume`: the central side of publishing. Subscribes to every `[[publish]]`
//! broker of the configuration (a durable queue bound to the exchange for AMQP, a durable
//! JetStream consumer for NATS, a client-individual SUBSCRIBE for STOMP) and writes each result into the store once per message id,
//! acknowledging only after the store has it. SIGTERM / Ctrl-C stops cleanly: a batch not yet
//! written is not acknowledged, so the broker delivers it again later.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use gridprobe_broker::ConsumeStats;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::args::StoreArgs;
use super::{load_checked, report_diagnostics};
use crate::store_open;

/// `gridprobe consume`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file (its `[[publish]]` tables name the brokers).
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs until a termination signal.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config_path = args.config.as_path();
    let store_flag = args.store.flag();
    let checked = load_checked(config_path);
    if !checked.diagnostics.is_empty() {
        report_diagnostics(&checked.diagnostics);
        return Ok(ExitCode::from(1));
    }
    let config = checked.config;
    if config.publish.targets.is_empty() {
        eprintln!(
            "error: {} has no [[publish]] table: nothing to consume from",
            config_path.display()
        );
        eprintln!("  = help: add e.g.\n[[publish]]\nkind = \"amqp\"\nurl = \"amqp://gridprobe@mq.example.org:5672/%2f\"\npassword_env = \"GRIDPROBE_AMQP_PASSWORD\"");
        return Ok(ExitCode::from(1));
    }
    // A STOMP target publishing to many destinations needs the one `gridprobe consume` reads.
    for t in &config.publish.targets {
        if let gridprobe_config::publish::PublishKind::Stomp(s) = &t.kind {
            if let Err(e) = gridprobe_broker::stomp::subscription(s) {
                eprintln!("error: [[publish]] {}: {e}", t.name);
                return Ok(ExitCode::from(1));
            }
        }
    }
    let location = match store_open::locate(store_flag, &config.server, &config.vo) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = store_open::open_store(&location, &config.server)
            .await
            .context("the result store could not be opened")?;
        // Deduplication is what makes at-least-once delivery safe to store: refuse a backend
        // that cannot do it rather than store redeliveries twice.
        if let Err(gridprobe_results::StoreError::Unsupported(what)) = store.insert_once(&[]).await {
            eprintln!("error: the result store {location} does not support {what}, which `consume` needs");
            return Ok(ExitCode::from(1));
        }
        let stats = Arc::new(ConsumeStats::default());
        let shutdown = CancellationToken::new();
        println!(
            "gridprobe consuming for vo {} into {location}",
            config.vo
        );
        let task = tokio::spawn({
            let (targets, stats, shutdown) =
                (config.publish.targets.clone(), stats.clone(), shutdown.clone());
            async move {
                gridprobe_broker::consume(
                    &targets,
                    store,
                    stats,
                    shutdown,
                    Arc::new(|line: String| println!("  {line}")),
                )
                .await;
            }
        });
        let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        shutdown.cancel();
        let _ = task.await;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        eprintln!(
            "gridprobe consume: stopped: {} received, {} stored, {} duplicates dropped, {} malformed dropped",
            load(&stats.received),
            load(&stats.stored),
            load(&stats.duplicates),
            load(&stats.malformed)
        );
        Ok(ExitCode::SUCCESS)
    })
}
