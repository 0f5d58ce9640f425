//! `gridprobe run`: run the selected probe instances now and show the site × probe table, then
//! why each non-OK cell is what it is.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use comfy_table::Cell;
use gridprobe_config::time::format_duration;
use gridprobe_probes::{ProbeResult, Status, Trigger};
use gridprobe_runner::{run_batch, select, Event, InstanceRun, Limits, Selection};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::args::{table_or_json, OutputFormat};
use super::{load_checked, report_diagnostics};
use crate::render::{colour_stdout, status_cell, table};

/// Exit code when nothing could be run (bad config or selection): UNKNOWN, as in Nagios.
const CANNOT_RUN: u8 = 3;

/// `gridprobe run`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// Only this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only this service host name.
    #[arg(long, value_name = "HOST")]
    pub service: Option<String>,
    /// Only this probe (full metric or short name); the probes it depends on run too.
    #[arg(long, value_name = "METRIC")]
    pub probe: Option<String>,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = table_or_json())]
    pub format: OutputFormat,
}

/// Runs the selection; the exit code is the worst final status.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        config: path,
        site,
        service,
        probe,
        format,
    } = args;
    let path = path.as_path();
    let checked = load_checked(path);
    if !checked.diagnostics.is_empty() {
        report_diagnostics(&checked.diagnostics);
        return Ok(ExitCode::from(CANNOT_RUN));
    }
    let config = Arc::new(checked.config);
    let selection = Selection {
        site,
        service,
        probe,
    };
    let instances = match select(&config, &selection) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(CANNOT_RUN));
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let progress = progress_bar(instances.len() as u64);
    let bar = progress.clone();
    let on_event: Arc<dyn Fn(Event) + Send + Sync> = Arc::new(move |e| {
        if let Event::Finished(_, r) = e {
            bar.set_message(format!("{} {}", r.hostname, r.metric));
            bar.inc(1);
        }
    });
    let limits = Arc::new(Limits::from_defaults(&config.defaults));
    let mut probes = checked.probes;
    // The credentials the selected probes use are obtained once, before they run; a probe
    // whose credential cannot be had is recorded UNKNOWN with the reason.
    probes.credentials = super::credentials::manager(&config);
    let used: std::collections::BTreeSet<&str> = instances
        .iter()
        .filter_map(|i| config.probes[i.probe].credential.as_deref())
        .collect();
    runtime.block_on(probes.credentials.obtain(&used));
    let probes = Arc::new(probes);
    let cancel = CancellationToken::new();
    let runs = runtime.block_on(async {
        let batch = run_batch(
            config.clone(),
            probes,
            instances,
            Trigger::OnDemand,
            limits,
            cancel.clone(),
            on_event,
        );
        // Reveal the progress line only for runs that take more than a second.
        let reveal = {
            let progress = progress.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if std::io::stderr().is_terminal() {
                    progress.set_draw_target(ProgressDrawTarget::stderr());
                }
                std::future::pending::<Vec<InstanceRun>>().await
            }
        };
        // Every signal that ends `run` (Ctrl-C, SIGTERM from a service manager or `kill`,
        // SIGHUP from a closed terminal) cancels the probes: they kill their processes and
        // cancel their batch jobs, and the batch then completes.
        let ctrl_c = async {
            let name = stop_signal().await;
            eprintln!("interrupted ({name}): stopping probes in flight");
            cancel.cancel();
            std::future::pending::<Vec<InstanceRun>>().await
        };
        tokio::select! {
            runs = batch => runs,
            never = reveal => never,
            never = ctrl_c => never,
        }
    });
    progress.finish_and_clear();

    let worst = runs
        .iter()
        .filter_map(InstanceRun::last)
        .map(|r| r.outcome.status)
        .max_by_key(|s| s.exit_rank());
    match format {
        OutputFormat::Json => print_json(&runs)?,
        // `table_or_json` admits no CSV.
        OutputFormat::Table | OutputFormat::Csv => print_table(&config, &runs),
    }
    Ok(ExitCode::from(match worst {
        Some(Status::Standby) => 0,
        Some(s) => s.nagios_code().unwrap_or(CANNOT_RUN),
        None => CANNOT_RUN,
    }))
}

/// Waits for SIGINT, SIGTERM or SIGHUP and names it. A handler that cannot be installed only
/// leaves that signal's default action (the process ends without cancelling).
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let recv = |s: &mut Option<tokio::signal::unix::Signal>| {
        let s = s.take();
        async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = recv(&mut term) => "SIGTERM",
        _ = recv(&mut hup) => "SIGHUP",
    }
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {pos}/{len} probes  {wide_msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn print_json(runs: &[InstanceRun]) -> anyhow::Result<()> {
    let items: Vec<serde_json::Value> = runs
        .iter()
        .filter_map(|run| {
            let last = run.last()?;
            Some(serde_json::json!({
                "result": last,
                "attempts": run.attempts,
            }))
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&items)?);
    Ok(())
}

fn print_table(config: &gridprobe_config::Config, runs: &[InstanceRun]) {
    let colour = colour_stdout();
    // Columns: probes in config order, only those that ran.
    let mut columns: Vec<usize> = runs.iter().map(|r| r.instance.probe).collect();
    columns.sort_unstable();
    columns.dedup();
    // Rows: (site, service) in config order.
    let mut rows: BTreeMap<(usize, usize), BTreeMap<usize, &ProbeResult>> = BTreeMap::new();
    for run in runs {
        if let Some(last) = run.last() {
            rows.entry((run.instance.site, run.instance.service))
                .or_default()
                .insert(run.instance.probe, last);
        }
    }
    let mut t = table(colour);
    let mut header = vec![Cell::new("site"), Cell::new("service")];
    header.extend(columns.iter().map(|p| Cell::new(&config.probes[*p].short)));
    t.set_header(header);
    let mut previous_site = None;
    for ((si, vi), cells) in &rows {
        let site = &config.sites[*si];
        let svc = &site.services[*vi];
        // Name each site once, on its first row, as in the SAM table.
        let site_label = if previous_site == Some(*si) {
            ""
        } else {
            site.name.as_str()
        };
        previous_site = Some(*si);
        let mut row = vec![
            Cell::new(site_label),
            Cell::new(format!("{} ({})", svc.hostname, svc.flavour)),
        ];
        // An empty cell: the probe does not apply to this service (as in the SAM table).
        row.extend(columns.iter().map(|p| match cells.get(p) {
            Some(r) => status_cell(r.outcome.status, colour),
            None => Cell::new(""),
        }));
        t.add_row(row);
    }
    crate::render::keep_words_whole(&mut t);
    println!("{t}");

    let mut bad: Vec<&InstanceRun> = runs
        .iter()
        .filter(|r| r.last().is_some_and(|l| l.outcome.status != Status::Ok))
        .collect();
    bad.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.last().map(|l| l.outcome.status.exit_rank())),
            r.instance.site,
            r.instance.service,
            r.instance.probe,
        )
    });
    for run in bad {
        let Some(last) = run.last() else { continue };
        let def = &config.probes[run.instance.probe];
        println!();
        println!(
            "{} {} on {} ({}) at {}: {}",
            last.outcome.status.name(),
            def.short,
            last.hostname,
            last.flavour,
            last.site,
            last.outcome.summary
        );
        if run.attempts.len() > 1 {
            println!("  attempts: {}", run.attempts.len());
        }
        if last.outcome.status != Status::Standby {
            println!(
                "  took {} ({})",
                format_duration(Duration::from_millis(last.duration_ms)),
                def.metric
            );
        }
        for line in last.outcome.details.lines() {
            println!("  | {line}");
        }
        if !last.outcome.perfdata.is_empty() {
            let perf: Vec<String> = last
                .outcome
                .perfdata
                .iter()
                .map(|p| p.to_string())
                .collect();
            println!("  perfdata: {}", perf.join(" "));
        }
    }
}
