//! Wiring of `serve`'s notifications: the engine (its memory, acks and history in the result
//! store) and its outboxes under `<spool_dir>/notify/`, following the serve state's
//! configuration reloads (channels included).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use gridprobe_config::Config;
use gridprobe_results::ResultStore;
use gridprobe_runner::notify::{self, Notifier};
use gridprobe_runner::state::ServeState;
use tokio::sync::watch;

/// The notification directory: `<spool_dir>/notify`.
pub fn dir(spool_root: &std::path::Path) -> PathBuf {
    spool_root.join("notify")
}

/// Starts the engine when the configuration has channels; returns it with the sender that
/// keeps its configuration current (see [`follow_reloads`]).
pub async fn start(
    config: &Arc<Config>,
    spool_root: &std::path::Path,
    instance: &str,
    store: Arc<dyn ResultStore>,
) -> anyhow::Result<Option<(Notifier, watch::Sender<Arc<Config>>)>> {
    if config.notify.channels.is_empty() {
        return Ok(None);
    }
    let (tx, rx) = watch::channel(config.clone());
    let n = notify::start(rx, &dir(spool_root), instance.to_string(), store)
        .await
        .map_err(anyhow::Error::msg)
        .context(
            "notifications could not start (the result store must be writable, and [server] spool_dir a writable directory)",
        )?;
    Ok(Some((n, tx)))
}

/// Passes every reloaded configuration on to the engine; ends with the serve state.
pub fn follow_reloads(shared: &ServeState, tx: watch::Sender<Arc<Config>>) {
    let mut plans = shared.subscribe();
    tokio::spawn(async move {
        while plans.changed().await.is_ok() {
            let config = plans.borrow().config.clone();
            if tx.send(config).is_err() {
                break;
            }
        }
    });
}
