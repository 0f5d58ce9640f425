//! Wiring of `gridprobe serve`'s relays: the store writer with its durable spool, and one
//! publisher per `[[publish]]` target, each with its own spool under the spool directory
//! (`[server] spool_dir`, default `<store>.spool/` next to the SQLite file, or next to the
//! default SQLite location for a PostgreSQL store).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use gridprobe_broker::Publishers;
use gridprobe_config::Config;
use gridprobe_results::{
    spawn_store_writer, ResultStore, Spool, SpoolConfig, WriterConfig, WriterHandle,
};

use crate::state_dir;
use crate::store_open::Location;

/// The name of this gridprobe in messages: `[server] instance`, else the host name.
pub fn instance_name(config: &Config) -> String {
    if let Some(i) = &config.publish.instance {
        return i.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gridprobe".into())
}

/// Where the spools live.
pub fn spool_root(config: &Config, store: &Location) -> PathBuf {
    if let Some(dir) = &config.publish.spool_dir {
        return dir.clone();
    }
    let base = match store {
        Location::Sqlite(path) => path.clone(),
        // Beside where the SQLite file would be by default (never `$GRIDPROBE_STORE`, which
        // may name this very PostgreSQL store); a spool an older release left under its old
        // name is kept.
        Location::Postgres(_) => return state_dir::existing_or_new(&config.vo, ".pg.spool"),
    };
    let mut s = base.into_os_string();
    s.push(".spool");
    PathBuf::from(s)
}

/// The running relays of a service.
pub struct Relays {
    /// The store writer.
    pub writer: WriterHandle,
    /// Its task.
    pub writer_task: tokio::task::JoinHandle<()>,
    /// The broker publishers.
    pub publishers: Publishers,
    /// The spool directory.
    pub spool_root: PathBuf,
    /// This instance's name.
    pub instance: String,
}

/// Opens the spools (an unusable spool directory stops the start with the reason) and starts
/// the store writer and the publishers; what earlier runs spooled is replayed first.
pub fn start(
    config: &Config,
    location: &Location,
    store: Arc<dyn ResultStore>,
) -> anyhow::Result<Relays> {
    let instance = instance_name(config);
    let root = spool_root(config, location);
    let spool_cfg = SpoolConfig {
        max_bytes: config.publish.spool_max_bytes,
        ..SpoolConfig::default()
    };
    let (spool, report) = Spool::open(&root.join("store"), spool_cfg).context(
        "the result spool could not be opened (set [server] spool_dir to a writable directory)",
    )?;
    if report.torn_bytes > 0 {
        eprintln!(
            "gridprobe: spool {}: cut a torn record at the end ({} bytes; a crash mid-write)",
            root.join("store").display(),
            report.torn_bytes
        );
    }
    if report.corrupt_bytes > 0 {
        eprintln!(
            "gridprobe: spool {}: skipped {} damaged records ({} bytes); the segments as found \
             are kept as {}",
            root.join("store").display(),
            report.damaged_records,
            report.corrupt_bytes,
            report
                .damaged_copies
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if report.records > 0 {
        eprintln!(
            "gridprobe: {} results spooled by an earlier run are written to the store first",
            report.records
        );
    }
    let cfg = WriterConfig {
        instance: instance.clone(),
        ..WriterConfig::default()
    };
    let (writer, writer_task) = spawn_store_writer(store.clone(), cfg, Some(spool));
    let publishers = gridprobe_broker::spawn_publishers(
        &config.publish.targets,
        &instance,
        &root,
        config.publish.spool_max_bytes,
        Some(store),
    )
    .context("a publisher could not start")?;
    for p in &publishers.list {
        let spooled = p.handle.stats().spooled.load(Ordering::Relaxed);
        if spooled > 0 {
            eprintln!(
                "gridprobe: {spooled} results spooled for publisher {} by an earlier run are published first",
                p.name
            );
        }
    }
    Ok(Relays {
        writer,
        writer_task,
        publishers,
        spool_root: root,
        instance,
    })
}

/// Waits for the publishers to flush (after every handle but theirs is dropped) and says what
/// stays spooled. Returns how many results were lost (neither delivered nor spooled).
pub async fn finish_publishers(publishers: Publishers) -> u64 {
    let stats: Vec<_> = publishers
        .list
        .iter()
        .map(|p| (p.name.clone(), p.handle.stats()))
        .collect();
    publishers.finish().await;
    let mut lost = 0;
    for (name, s) in stats {
        let spooled = s.spooled.load(Ordering::Relaxed);
        if spooled > 0 {
            eprintln!(
                "gridprobe: publisher {name}: {spooled} results stay spooled; they are published after the next start"
            );
        }
        lost += s.dropped.load(Ordering::Relaxed);
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spools_live_next_to_the_store_unless_configured() {
        let mut config = Config {
            vo: "lhcb".into(),
            ..Config::default()
        };
        let sqlite = Location::Sqlite(PathBuf::from("/var/lib/gp/lhcb.sqlite"));
        assert_eq!(
            spool_root(&config, &sqlite),
            PathBuf::from("/var/lib/gp/lhcb.sqlite.spool")
        );
        let pg = Location::Postgres("postgresql://gp@db/gp".into());
        let root = spool_root(&config, &pg);
        assert!(
            root.ends_with("gridprobe/lhcb.pg.spool"),
            "{}",
            root.display()
        );
        // The spool shares the store's file name stem: dots stay.
        let dotted = Config {
            vo: "vo.example.org".into(),
            ..Config::default()
        };
        let root = spool_root(&dotted, &pg);
        assert_eq!(
            root,
            state_dir::file_for("vo.example.org", ".sqlite").with_extension("pg.spool")
        );
        assert!(
            root.ends_with("gridprobe/vo.example.org.pg.spool"),
            "{}",
            root.display()
        );
        config.publish.spool_dir = Some(PathBuf::from("/srv/spool"));
        assert_eq!(spool_root(&config, &pg), PathBuf::from("/srv/spool"));
        config.publish.instance = Some("gp-1".into());
        assert_eq!(instance_name(&config), "gp-1");
    }
}
