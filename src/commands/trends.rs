//! `gridprobe trends`: over a period, the cells that flap most, the longest CRITICAL and
//! UNKNOWN stretches, per site and per metric (`results::trends`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use gridprobe_config::time::{format_duration, format_utc};
use gridprobe_results::report::parse_period;
use gridprobe_results::trends::{CellTrend, GroupTrend, Stretch, DEFAULT_LIMIT, MAX_LIMIT};
use gridprobe_results::CellFilter;

use super::args::{table_or_json, OutputFormat, StoreArgs};
use super::open_store_for;
use crate::render::{colour_stdout, table};

/// `gridprobe trends`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The period, in any form `report` takes (2026-11, 7d, 2026-11-01..2026-11-15); UTC.
    #[arg(long, default_value = "7d")]
    pub period: String,
    /// Only this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Entries per list (1 to 1000).
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    pub limit: usize,
    /// Output format.
    #[arg(long, value_parser = table_or_json(), default_value = "table")]
    pub format: OutputFormat,
}

/// `3h20m`, from milliseconds.
fn dur(ms: i64) -> String {
    format_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

fn stretch(s: &Option<Stretch>) -> String {
    match s {
        Some(s) => format!(
            "{} from {}{}",
            dur(s.duration_ms),
            format_utc(s.start_ms),
            if s.ongoing { " (ongoing)" } else { "" }
        ),
        None => "-".into(),
    }
}

fn cell_table(title: &str, cells: &[CellTrend], colour: bool) {
    println!("{title}");
    if cells.is_empty() {
        println!("  none");
        return;
    }
    let mut t = table(colour);
    t.set_header([
        "site",
        "service",
        "metric",
        "changes",
        "longest CRITICAL",
        "longest UNKNOWN",
    ]);
    for c in cells {
        t.add_row([
            c.cell.site.clone(),
            format!("{} {}", c.cell.hostname, c.cell.flavour),
            c.cell.metric.clone(),
            c.changes.to_string(),
            stretch(&c.longest_critical),
            stretch(&c.longest_unknown),
        ]);
    }
    crate::render::keep_words_whole(&mut t);
    println!("{t}");
}

fn group_table(title: &str, what: &str, groups: &[GroupTrend], colour: bool) {
    println!("{title}");
    let mut t = table(colour);
    t.set_header([
        what,
        "cells",
        "changes",
        "longest CRITICAL",
        "longest UNKNOWN",
    ]);
    for g in groups {
        t.add_row([
            g.name.clone(),
            g.cells.to_string(),
            g.changes.to_string(),
            dur(g.longest_critical_ms),
            dur(g.longest_unknown_ms),
        ]);
    }
    crate::render::keep_words_whole(&mut t);
    println!("{t}");
}

/// Prints the trends.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        config,
        store,
        period,
        site,
        limit,
        format,
    } = args;
    if !(1..=MAX_LIMIT).contains(&limit) {
        eprintln!("error: --limit must be between 1 and {MAX_LIMIT}, got {limit}");
        return Ok(ExitCode::from(2));
    }
    let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
    let period = match parse_period(&period, now) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --period: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let Some((config, store)) = open_store_for(config.as_path(), store.flag())? else {
        return Ok(ExitCode::from(1));
    };
    if let Some(s) = site.as_deref() {
        if !super::known_site(&config, s) {
            return Ok(ExitCode::from(1));
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let filter = CellFilter {
        site,
        ..Default::default()
    };
    let trends = runtime.block_on(gridprobe_results::trends::from_store(
        store.as_ref(),
        &config,
        &period,
        &filter,
        limit,
    ))?;
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&trends)?),
        _ => {
            let colour = colour_stdout();
            println!(
                "vo {}: trends for {} ({} to {} UTC), {} cells with results",
                config.vo,
                trends.period.label,
                format_utc(trends.period.start_ms),
                format_utc(trends.period.end_ms),
                trends.cells
            );
            cell_table(
                "Most flapping cells (status changes)",
                &trends.flapping,
                colour,
            );
            cell_table("Longest CRITICAL", &trends.longest_critical, colour);
            cell_table("Longest UNKNOWN", &trends.longest_unknown, colour);
            group_table("Per site", "site", &trends.by_site, colour);
            group_table("Per metric", "metric", &trends.by_metric, colour);
        }
    }
    Ok(ExitCode::SUCCESS)
}
