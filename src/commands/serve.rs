//! `gridprobe serve`: the always-on service. Runs every probe instance on its schedule, records
//! every outcome, serves HTTP, reloads on SIGHUP or `POST /-/reload`, and stops cleanly on
//! SIGTERM / Ctrl-C without losing what was measured.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gridprobe_config::time::format_duration;
use gridprobe_config::ScheduleMode;
use gridprobe_results::{CellFilter, CellKey, PgStore, ResultStore};
use gridprobe_runner::http::{self, HttpState};
use gridprobe_runner::schedule::{run_scheduler_with, Coordination, ReloadRequest};
use gridprobe_runner::state::Plan;
use gridprobe_runner::state::ServeState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::args::StoreArgs;
use super::{load_checked, report_diagnostics};
use crate::store_open::{self, Location};

/// `gridprobe serve`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// HTTP listen address; default: [server] listen (127.0.0.1:8479).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// Runs the service until a termination signal.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config_path = args.config.as_path();
    let store_flag = args.store.flag();
    let listen_flag = args.listen.as_deref();
    let checked = load_checked(config_path);
    if !checked.diagnostics.is_empty() {
        report_diagnostics(&checked.diagnostics);
        return Ok(ExitCode::from(1));
    }
    let config = Arc::new(checked.config);
    let store_location = match store_open::locate(store_flag, &config.server, &config.vo) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let listen = listen_flag
        .map(str::to_string)
        .unwrap_or_else(|| config.server.listen.clone());
    // Before any descriptor is taken: the HTTP connection cap is fitted to this limit, so that
    // probes always keep descriptors of their own.
    let nofile = gridprobe_runner::http_conn::raise_descriptor_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // One credential manager for the life of the process: a reload keeps the credentials
    // it does not change (no new token is asked for).
    let mut probes = checked.probes;
    probes.credentials = super::credentials::manager(&config);
    runtime.block_on(serve(
        config_path.to_path_buf(),
        Plan {
            config,
            probes: Arc::new(probes),
        },
        store_location,
        listen,
        nofile,
    ))
}

async fn serve(
    config_path: PathBuf,
    plan: Plan,
    store_location: Location,
    listen: String,
    nofile: Option<u64>,
) -> anyhow::Result<ExitCode> {
    // A shared schedule is coordinated through the shared store, so it must be PostgreSQL.
    let shared_store = match (&plan.config.server.schedule, &store_location) {
        (ScheduleMode::Local, _) => None,
        (ScheduleMode::Shared, Location::Postgres(url)) => {
            let password = store_open::password(&plan.config.server).map_err(anyhow::Error::msg)?;
            Some(Arc::new(
                PgStore::open(url, password)
                    .await
                    .context("the result store could not be opened")?,
            ))
        }
        (ScheduleMode::Shared, Location::Sqlite(path)) => {
            eprintln!(
                "error: [server] schedule = \"shared\" needs a PostgreSQL store that every instance reaches, but the store is the SQLite file {}\n  help: set [server] store (or --store, or $GRIDPROBE_STORE) to postgresql://USER@HOST:PORT/DATABASE, or remove schedule = \"shared\"",
                path.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let store: Arc<dyn ResultStore> = match &shared_store {
        Some(pg) => pg.clone(),
        None => store_open::open_store(&store_location, &plan.config.server)
            .await
            .context("the result store could not be opened")?,
    };
    // Resume from what the store knows: last runs for the schedule, last states for depends_on.
    let latest = store
        .latest(&CellFilter::default())
        .await
        .context("reading the latest results from the store")?;
    // The store writer and the broker publishers, each with its durable spool; what an earlier
    // run spooled is replayed first.
    let crate::relays::Relays {
        writer,
        writer_task,
        publishers,
        spool_root,
        instance,
    } = crate::relays::start(&plan.config, &store_location, store.clone())?;
    let publish_observers: Vec<_> = publishers
        .list
        .iter()
        .map(|p| {
            std::sync::Arc::new(p.handle.clone())
                as Arc<dyn gridprobe_runner::state::ResultObserver>
        })
        .collect();
    let config = plan.config.clone();
    let metrics = gridprobe_runner::metrics::Metrics::new();
    for p in &publishers.list {
        metrics.watch_publisher(&p.name, p.handle.stats());
    }
    let mut observers: Vec<Arc<dyn gridprobe_runner::state::ResultObserver>> =
        vec![metrics.clone()];
    observers.extend(publish_observers);
    let notifier =
        crate::notify_start::start(&plan.config, &spool_root, &instance, store.clone()).await?;
    if let Some((n, _)) = &notifier {
        observers.push(n.observer.clone());
    }
    let shared = ServeState::new(plan, writer.clone(), observers);
    let (notify_view, notify_task) = match notifier {
        Some((n, tx)) => {
            crate::notify_start::follow_reloads(&shared, tx);
            metrics.watch_notify(n.view.clone());
            (Some(n.view), Some(n.task))
        }
        None => (None, None),
    };
    let mut last_runs = HashMap::new();
    for r in &latest {
        let key = CellKey::of(&r.result);
        shared.states.set(
            key.clone(),
            r.result.outcome.status,
            r.result.outcome.summary.clone(),
            r.result.started_at_ms,
        );
        last_runs.insert(key, r.result.started_at_ms);
    }

    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (set [server] listen or --listen to a free address)")
        })?;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(listen.clone());

    // HTTPS settings: the files were checked with the configuration, read again now.
    let tls = match &config.server.tls {
        None => None,
        Some(t) => Some(
            gridprobe_runner::x509::server_config(t)
                .map_err(|e| anyhow::anyhow!("[server] tls_cert/tls_key/client_ca_dir: {e}"))?,
        ),
    };
    let http_limits = nofile
        .map(gridprobe_runner::http_conn::Limits::for_descriptors)
        .unwrap_or_default();
    tracing::info!(
        open_files = nofile,
        max_connections = http_limits.max_connections,
        "http connection limit"
    );
    let shutdown = CancellationToken::new();
    // Agent-run sites: their runs go to the broker of [agents] (runner/src/agent/).
    let agents = match config.agents.clone() {
        Some(settings) => Some(
            gridprobe_runner::agent::centre::Dispatcher::start(settings, &shared, shutdown.clone())
                .await
                .map_err(|e| anyhow::anyhow!("[agents]: {e}"))?,
        ),
        None => None,
    };
    let credentials = plan_credentials(&shared);
    credentials.start(&shutdown);
    // Site availability for /metrics: computed in the background, only once scraped.
    let metrics_refresh = metrics.spawn_refresh(&shared, store.clone(), shutdown.clone());
    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let (http_reload_tx, mut http_reload_rx) =
        mpsc::channel::<oneshot::Sender<Result<String, String>>>(4);

    let instances = config.instances().len();
    let retention = config.server.retention;
    // The member name is unique per process: several instances may share a host name.
    let coordination = shared_store.map(|pg| Coordination {
        coordinator: pg,
        member: format!("{instance}:{}", std::process::id()),
        lease: config.server.schedule_lease,
        store: store.clone(),
    });
    let member = coordination.as_ref().map(|c| c.member.clone());
    // The monitoring host's self-check: its own task, reading the current plan each round.
    let self_check_task = {
        let plan = shared.subscribe();
        tokio::spawn(gridprobe_runner::selfcheck::run(
            shared.self_check.clone(),
            move || plan.borrow().config.server.self_check.clone(),
            shutdown.clone(),
        ))
    };
    let scheduler = tokio::spawn(run_scheduler_with(
        shared.clone(),
        last_runs,
        reload_rx,
        coordination,
        shutdown.clone(),
    ));
    let http_state = HttpState {
        shared: shared.clone(),
        store: store.clone(),
        reload: http_reload_tx,
        metrics,
        runs: gridprobe_runner::ondemand::RunManager::new(),
        notify: notify_view.clone(),
    };
    // The dashboard's site statuses and latest states are read now, not at the first visit.
    gridprobe_runner::dashboard::prepare(&http_state);
    let server = tokio::spawn(http::serve(
        listener,
        http::router(http_state),
        http_limits,
        tls,
        shutdown.clone(),
    ));
    // Both stores keep per-day runs (PostgreSQL: one builder per day across instances).
    let prepare_reports = Some(config.clone());
    let retention_task = tokio::spawn(retention_loop(
        store.clone(),
        prepare_reports,
        retention,
        shutdown.clone(),
    ));

    println!(
        "gridprobe serving vo {}: {} on {}",
        config.vo,
        crate::render::plural(instances, "probe instance"),
        crate::render::plural(config.sites.len(), "site")
    );
    println!("  results: {store_location}");
    println!("  spool:   {} (instance {instance})", spool_root.display());
    for t in &config.publish.targets {
        println!("  publish: {} {} ({})", t.kind.name(), t.name, t.url);
    }
    if let (Some(a), Some(_)) = (&config.agents, &agents) {
        let sites = config
            .sites
            .iter()
            .filter(|s| s.executor == gridprobe_config::agents::Executor::Agent)
            .count();
        println!(
            "  agents:  {} ({})",
            gridprobe_config::model::redact_url(&a.url),
            crate::render::plural(sites, "agent-run site")
        );
    }
    for c in &config.notify.channels {
        println!("  notify:  {} {}", c.kind.name(), c.name);
    }
    if let Some(member) = &member {
        println!(
            "  schedule: shared with the other instances on this store, as member {member} (lease {})",
            format_duration(config.server.schedule_lease)
        );
    }
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("  http:    {scheme}://{local}/healthz");
    println!(
        "  matrix:  gridprobe matrix --config {}   (fills within {} of start)",
        config_path.display(),
        format_duration(config.server.startup_spread + Duration::from_secs(5))
    );
    println!("  stop with Ctrl-C or SIGTERM; reload the configuration with SIGHUP");

    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("interrupt: shutting down"); break; }
            _ = sighup.recv() => {
                let outcome = reload(&config_path, &reload_tx, &credentials).await;
                if let Err(errors) = outcome {
                    eprintln!("reload rejected; the running schedule is kept:\n{errors}");
                }
            }
            Some(reply) = http_reload_rx.recv() => {
                let outcome = reload(&config_path, &reload_tx, &credentials).await;
                if let Err(errors) = &outcome {
                    eprintln!("reload rejected; the running schedule is kept:\n{errors}");
                }
                let _ = reply.send(outcome);
            }
        }
    }
    eprintln!(
        "gridprobe: shutting down (probes in flight get {} to finish)",
        format_duration(config.server.shutdown_grace)
    );
    shutdown.cancel();
    if let Err(e) = scheduler.await {
        tracing::error!(error = %e, "scheduler task failed");
    }
    let _ = retention_task.await;
    let _ = self_check_task.await;
    // Before the last `shared` goes: the refresh task must not keep the writer open.
    let _ = metrics_refresh.await;
    match server.await {
        Ok(Err(e)) => tracing::error!(error = %e, "http server failed"),
        Err(e) => tracing::error!(error = %e, "http server task failed"),
        Ok(Ok(())) => {}
    }
    // Every result has been handed to the writer; closing the last handle makes it flush.
    let stats = writer.stats();
    drop(writer);
    drop(shared);
    if let Err(e) = writer_task.await {
        tracing::error!(error = %e, "result writer task failed");
    }
    // The engine's last observer went with `shared`: it queues what it grouped, then ends.
    if let Some(task) = notify_task {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "notification task failed");
        }
    }
    // The publishers' last handles went with `shared`: they flush or spool, then end.
    let publish_dropped = crate::relays::finish_publishers(publishers).await;
    let spooled = stats.spooled.load(std::sync::atomic::Ordering::Relaxed);
    if spooled > 0 {
        eprintln!(
            "gridprobe: {spooled} results stay in the spool {}; they are written to {store_location} after the next start",
            spool_root.join("store").display()
        );
    }
    let pending = stats.pending.load(std::sync::atomic::Ordering::Relaxed)
        + stats.dropped.load(std::sync::atomic::Ordering::Relaxed)
        + publish_dropped;
    if pending > 0 {
        eprintln!(
            "gridprobe: {pending} results were lost (not written to {store_location}, or not published); see the log"
        );
        return Ok(ExitCode::from(1));
    }
    eprintln!("gridprobe: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Re-reads the configuration; a valid one replaces the schedule, an invalid one is rejected
/// with the same errors as `gridprobe check`.
/// The credential manager of the running plan.
fn plan_credentials(shared: &ServeState) -> Arc<gridprobe_probes::credentials::Credentials> {
    shared.plan().probes.credentials.clone()
}

async fn reload(
    config_path: &Path,
    scheduler: &mpsc::Sender<ReloadRequest>,
    credentials: &Arc<gridprobe_probes::credentials::Credentials>,
) -> Result<String, String> {
    let path = config_path.to_path_buf();
    let checked = tokio::task::spawn_blocking(move || load_checked(&path))
        .await
        .map_err(|e| format!("reload failed: {e}"))?;
    if !checked.diagnostics.is_empty() {
        let text = checked.diagnostics.to_string();
        tracing::error!(
            errors = checked.diagnostics.len(),
            "configuration reload rejected:\n{text}"
        );
        return Err(text);
    }
    let (tx, rx) = oneshot::channel();
    credentials.configure(&checked.config);
    let mut probes = checked.probes;
    probes.credentials = credentials.clone();
    let plan = Plan {
        config: Arc::new(checked.config),
        probes: Arc::new(probes),
    };
    scheduler
        .send((plan, tx))
        .await
        .map_err(|_| "the scheduler is stopping".to_string())?;
    let entries = rx
        .await
        .map_err(|_| "the scheduler is stopping".to_string())?;
    let summary = format!("configuration reloaded: {entries} schedule entries");
    tracing::info!("{summary}");
    eprintln!("gridprobe: {summary}");
    Ok(summary)
}

/// How long after start-up the month's days are first prepared.
const REPORTS_QUIET: Duration = Duration::from_secs(20);

/// Store upkeep, at start and then hourly: deletes raw results older than the retention
/// period; with `prepare_reports`, then (from [`REPORTS_QUIET`] after start-up) builds the
/// store's per-day runs of the last 31 days that are missing, so that a month report finds
/// them ready.
async fn retention_loop(
    store: Arc<dyn ResultStore>,
    prepare_reports: Option<Arc<gridprobe_config::Config>>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    let started = std::time::Instant::now();
    loop {
        let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
        let cutoff = now - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        match store.delete_before(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "retention: old results deleted"),
            Err(e) => tracing::error!(error = %e, "retention: delete failed"),
        }
        if let Some(config) = &prepare_reports {
            // Not in the first seconds: the dashboard's first site statuses read the same
            // store (one SQLite connection) and should not queue behind a month of days.
            let quiet = REPORTS_QUIET.saturating_sub(started.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(quiet) => {}
                _ = shutdown.cancelled() => return,
            }
            let month = 31 * 86_400_000;
            let all = CellFilter::default();
            let prepared = tokio::select! {
                r = store.run_timelines(
                    now - month,
                    now,
                    &all,
                    gridprobe_results::report::merge_gap_ms(config),
                ) => r,
                _ = shutdown.cancelled() => return,
            };
            if let Err(e) = prepared {
                tracing::warn!(error = %e, "preparing the last month for reports failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
