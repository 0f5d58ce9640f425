//! One relay per `[[publish]]` target, each with its own spool under
//! `<spool_dir>/publish-<name>/`.

use std::path::Path;
use std::sync::Arc;

use gridprobe_config::publish::{PublishKind, PublishTarget};
use gridprobe_results::{
    spawn_relay, ResultStore, Spool, SpoolConfig, Target, WriterConfig, WriterHandle,
};

use crate::BrokerError;

/// A running publisher.
#[derive(Debug)]
pub struct Publisher {
    /// The target's name.
    pub name: String,
    /// `amqp`, `nats` or `stomp`.
    pub kind: &'static str,
    /// Where results are sent (also its counters).
    pub handle: WriterHandle,
    /// The relay task (ends after every handle is dropped and it has flushed).
    pub task: tokio::task::JoinHandle<()>,
}

/// The running publishers.
#[derive(Debug, Default)]
pub struct Publishers {
    /// One per target, in configuration order.
    pub list: Vec<Publisher>,
}

impl Publishers {
    /// Drops the handles and waits for every relay to flush (or spool) what it holds.
    pub async fn finish(self) {
        for p in self.list {
            let Publisher {
                name, handle, task, ..
            } = p;
            drop(handle);
            if let Err(e) = task.await {
                tracing::error!(publisher = %name, error = %e, "publisher task failed");
            }
        }
    }
}

/// The spool directory of a target.
pub fn spool_dir(spool_root: &Path, target: &str) -> std::path::PathBuf {
    spool_root.join(format!("publish-{target}"))
}

/// Starts a relay for every target. Spools are opened here, so an unusable spool directory is
/// an error at start, not a silent loss later; `events` (the result store) is where drops and
/// a full spool are recorded.
pub fn spawn_publishers(
    targets: &[PublishTarget],
    instance: &str,
    spool_root: &Path,
    spool_max_bytes: u64,
    events: Option<Arc<dyn ResultStore>>,
) -> Result<Publishers, BrokerError> {
    let mut list = Vec::new();
    for t in targets {
        let dir = spool_dir(spool_root, &t.name);
        let (spool, report) = Spool::open(
            &dir,
            SpoolConfig {
                max_bytes: spool_max_bytes,
                ..SpoolConfig::default()
            },
        )
        .map_err(|source| BrokerError::Spool {
            target: t.name.clone(),
            source,
        })?;
        if report.records > 0 {
            tracing::info!(publisher = %t.name, records = report.records, spool = %dir.display(), "spooled results from an earlier run will be published first");
        }
        let target: Arc<dyn Target> = match &t.kind {
            PublishKind::Amqp { .. } => crate::amqp::AmqpTarget::new(t.clone(), instance),
            PublishKind::Nats { .. } => crate::nats::NatsTarget::new(t.clone(), instance),
            PublishKind::Stomp(_) => crate::stomp::StompTarget::new(t.clone(), instance),
        };
        let cfg = WriterConfig {
            batch_size: 500,
            instance: instance.to_string(),
            ..WriterConfig::default()
        };
        let (handle, task) = spawn_relay(target, events.clone(), true, cfg, Some(spool));
        list.push(Publisher {
            name: t.name.clone(),
            kind: t.kind.name(),
            handle,
            task,
        });
    }
    Ok(Publishers { list })
}
