//! `gridprobe migrate-store`: copies the history of the embedded SQLite store (results with
//! their attempts and final flags, store events, imported downtimes) into a PostgreSQL store,
//! for a VO moving to a shared deployment.
//!
//! Results keep their ids (links to `results --id N` and the API stay valid) and are copied in
//! id order, i.e. the order they were recorded, in batches of one transaction each, so the
//! target's `latest` comes out exactly as the source's. That also makes the command
//! resumable and idempotent: the target is always a prefix of the source, so a second run
//! continues after the last result copied (copying what the source recorded meanwhile) and
//! copies nothing twice. A target holding results that are not such a prefix (another store's,
//! or ones `serve` wrote there) is refused: merging two histories is not this command's job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use gridprobe_config::StoreSpec;
use gridprobe_results::{CellFilter, PgStore, ResultStore, SqliteStore, StoreEvent};

use super::{load_checked, report_diagnostics};
use crate::store_open;

/// `gridprobe migrate-store`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file (its [server] store password settings are used).
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// The SQLite store to copy (sqlite:PATH); default: the VO's default file.
    #[arg(long, value_name = "sqlite:PATH")]
    pub from: Option<String>,
    /// The PostgreSQL store to fill (postgresql://USER@HOST:PORT/DB); default: [server]
    /// store.
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// Results per transaction.
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
}

/// Copies `from` (SQLite) into `to` (PostgreSQL); see the module documentation.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (config_path, from, to, batch) = (
        args.config.as_path(),
        args.from.as_deref(),
        args.to.as_deref(),
        args.batch,
    );
    let checked = load_checked(config_path);
    if !checked.diagnostics.is_empty() {
        report_diagnostics(&checked.diagnostics);
        return Ok(ExitCode::from(1));
    }
    let config = checked.config;
    let source = match from {
        Some(text) => match StoreSpec::parse(text).map_err(anyhow::Error::msg)? {
            StoreSpec::Sqlite(path) => path,
            StoreSpec::Postgres(_) => {
                bail!("--from must be an SQLite store (sqlite:PATH): the copy goes from the embedded store to PostgreSQL")
            }
        },
        // The VO's SQLite file, as serve used it before `store` named PostgreSQL.
        None => match config.server.store.as_deref().map(StoreSpec::parse) {
            Some(Ok(StoreSpec::Sqlite(path))) => path,
            _ => store_open::default_sqlite(&config.vo),
        },
    };
    let target = match to
        .map(str::to_string)
        .or_else(|| config.server.store.clone())
    {
        Some(text) => match StoreSpec::parse(&text).map_err(anyhow::Error::msg)? {
            StoreSpec::Postgres(url) => url,
            StoreSpec::Sqlite(_) => bail!(
                "--to must be a PostgreSQL URL (postgresql://USER@HOST:PORT/DATABASE), not `{text}`"
            ),
        },
        None => bail!(
            "name the target with --to postgresql://USER@HOST:PORT/DATABASE (or set [server] store to it)"
        ),
    };
    if !source.is_file() {
        bail!(
            "no SQLite store at {}: nothing to copy (name it with --from sqlite:PATH)",
            source.display()
        );
    }
    let password = store_open::password(&config.server).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(copy(&source, &target, password, batch.max(1)))
}

async fn copy(
    source_path: &Path,
    target_url: &str,
    password: Option<String>,
    batch: usize,
) -> anyhow::Result<ExitCode> {
    let source = SqliteStore::open(source_path)?;
    let target = PgStore::open(target_url, password).await?;
    let started = Instant::now();
    let total = source.count().await?;
    eprintln!(
        "migrate-store: {} → {} ({total} results in the source)",
        source.location(),
        target.location()
    );

    // Where to start: after the target's last result, if the target is a copy of ours so far.
    let mut after = 0i64;
    let mut already = 0u64;
    if let Some(last) = target.last_result_id().await? {
        let ours = source.get(last).await?;
        let theirs = target.get(last).await?;
        let is_prefix = matches!((&ours, &theirs), (Some(a), Some(b)) if a == b);
        if !is_prefix {
            eprintln!(
                "error: {} already holds {} results that are not a copy of {} (its result {last} \
                 differs or is not in the source); nothing was copied",
                target.location(),
                target.count().await?,
                source.location()
            );
            eprintln!(
                "  = help: migrate into an empty database (createdb), or drop its tables; \
                 migrate-store only fills an empty store or resumes its own copy"
            );
            return Ok(ExitCode::from(1));
        }
        already = target.count().await?;
        after = last;
        eprintln!("  resuming after result {last} ({already} results already copied)");
    }

    let mut copied = 0u64;
    let mut last_report = Instant::now();
    loop {
        let rows = source.results_after(after, batch).await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        target
            .import_results(&rows)
            .await
            .with_context(|| format!("copying the results after id {}", rows[0].id - 1))?;
        copied += rows.len() as u64;
        if last_report.elapsed().as_secs() >= 2 || rows.len() < batch {
            let done = already + copied;
            let pct = if total > 0 {
                (done as f64 * 100.0 / total as f64).min(100.0)
            } else {
                100.0
            };
            eprintln!(
                "  {done} / {total} results ({pct:.0}%), {:.0} results/s",
                copied as f64 / started.elapsed().as_secs_f64().max(1e-3)
            );
            last_report = Instant::now();
        }
    }

    // Events: those the target lacks (an event has no id of its own: compared whole).
    let mut present: HashMap<(i64, String, String), usize> = HashMap::new();
    for e in target.events(i64::MIN).await? {
        *present.entry((e.at_ms, e.kind, e.message)).or_default() += 1;
    }
    let mut events = 0u64;
    for e in source.events(i64::MIN).await? {
        let key = (e.at_ms, e.kind.clone(), e.message.clone());
        match present.get_mut(&key) {
            Some(n) if *n > 0 => *n -= 1,
            _ => {
                target.record_event(&e).await?;
                events += 1;
            }
        }
    }
    // Downtimes: each imported source replaced whole, as `import downtimes` does.
    let downtimes = source.downtimes(i64::MIN, i64::MAX).await?;
    let mut by_source: HashMap<&str, Vec<gridprobe_config::Downtime>> = HashMap::new();
    for d in &downtimes {
        by_source.entry(&d.source).or_default().push(d.clone());
    }
    for (name, rows) in &by_source {
        target.replace_downtimes(name, rows).await?;
    }
    target
        .record_event(&StoreEvent {
            at_ms: gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now()),
            kind: "migrated".into(),
            message: format!(
                "{copied} results, {events} events and {} downtimes copied from {}",
                downtimes.len(),
                source.location()
            ),
        })
        .await?;

    // Check: the same number of results and the same latest result in every cell.
    let (source_count, target_count) = (source.count().await?, target.count().await?);
    let source_latest = source.latest(&CellFilter::default()).await?;
    let target_latest = target.latest(&CellFilter::default()).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "copied {copied} results ({} already there), {events} events, {} downtimes from {} to {} in {secs:.1} s",
        already,
        downtimes.len(),
        source.location(),
        target.location()
    );
    println!(
        "  source: {source_count} results, {} cells; target: {target_count} results, {} cells",
        source_latest.len(),
        target_latest.len()
    );
    // Compared by id, time, status and flag: text may differ where PostgreSQL cannot hold a
    // NUL character (stored as U+FFFD).
    let brief = |rows: &[gridprobe_results::StoredResult]| -> Vec<_> {
        rows.iter()
            .map(|r| {
                (
                    r.id,
                    r.is_final,
                    r.result.started_at_ms,
                    r.result.outcome.status,
                )
            })
            .collect()
    };
    if source_count != target_count || brief(&source_latest) != brief(&target_latest) {
        eprintln!(
            "error: the copy differs from the source (was the source written to during the \
             copy?): run migrate-store again with `gridprobe serve` stopped"
        );
        return Ok(ExitCode::from(1));
    }
    println!("  the latest result of every cell agrees");
    Ok(ExitCode::SUCCESS)
}
