//! `gridprobe results`: the history of one cell, or one result whole.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use comfy_table::Cell;
use gridprobe_config::time::format_duration;
use gridprobe_results::{HistoryQuery, StoredResult};

use super::args::{OutputFormat, StoreArgs};
use super::open_store_for;
use crate::render::{colour_stdout, status_cell, table};

/// `gridprobe results`'s arguments: what to show.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Site of the cell.
    #[arg(long)]
    pub site: Option<String>,
    /// Service host name.
    #[arg(long, value_name = "HOST")]
    pub service: Option<String>,
    /// Probe (full metric or short name).
    #[arg(long, value_name = "METRIC")]
    pub probe: Option<String>,
    /// How far back, e.g. 30m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// At most this many results.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Include retried attempts, not only recorded (hard) states.
    #[arg(long)]
    pub attempts: bool,
    /// One result by id, whole: full output and perfdata.
    #[arg(long, conflicts_with_all = ["site", "service", "probe"])]
    pub id: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Formats ms since the epoch as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn timestamp(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Prints history or one result.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some((config, store)) = open_store_for(&args.config, args.store.flag())? else {
        return Ok(ExitCode::from(1));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(id) = args.id {
        return match runtime.block_on(store.get(id))? {
            Some(r) => {
                print_one(&r, args.format)?;
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("error: no result with id {id} in the store");
                Ok(ExitCode::from(1))
            }
        };
    }
    let Some(site) = args.site else {
        eprintln!("error: name a cell with --site (and optionally --service and --probe), or one result with --id");
        return Ok(ExitCode::from(2));
    };
    if !super::known_site(&config, &site) {
        return Ok(ExitCode::from(1));
    }
    if let Some(host) = &args.service {
        if !super::known_service(&config, host) {
            return Ok(ExitCode::from(1));
        }
    }
    let metric = match &args.probe {
        Some(p) => match config.probe_index(p) {
            Some(i) => Some(config.probes[i].metric.clone()),
            None => {
                let hint = super::hint(p, config.probes.iter().map(|x| x.short.as_str()));
                eprintln!("error: no probe named `{p}`{hint}");
                return Ok(ExitCode::from(1));
            }
        },
        None => None,
    };
    let since = match gridprobe_config::parse_duration(&args.since) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --since: {e}; write a duration back from now such as 30m, 24h or 7d");
            return Ok(ExitCode::from(2));
        }
    };
    let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
    let history = runtime.block_on(store.history(&HistoryQuery {
        site: Some(site.clone()),
        hostname: args.service.clone(),
        metric,
        since_ms: Some(now - i64::try_from(since.as_millis()).unwrap_or(i64::MAX)),
        until_ms: None,
        include_attempts: args.attempts,
        limit: args.limit,
        ..Default::default()
    }))?;
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&history)?),
        OutputFormat::Csv => {
            println!("id,started_at,site,hostname,flavour,metric,status,attempt,final,duration_ms,summary");
            for r in &history {
                let x = &r.result;
                println!(
                    "{},{},{},{},{},{},{},{},{},{},{}",
                    r.id,
                    timestamp(x.started_at_ms),
                    super::matrix::csv(&x.site),
                    super::matrix::csv(&x.hostname),
                    super::matrix::csv(&x.flavour),
                    super::matrix::csv(&x.metric),
                    x.outcome.status.name(),
                    x.attempt,
                    r.is_final,
                    x.duration_ms,
                    super::matrix::csv(&x.outcome.summary)
                );
            }
        }
        OutputFormat::Table => {
            if history.is_empty() {
                println!("no results for that cell in the last {}", args.since);
                return Ok(ExitCode::SUCCESS);
            }
            let colour = colour_stdout();
            let mut t = table(colour);
            t.set_header([
                "id",
                "started (UTC)",
                "status",
                "probe",
                "service",
                "try",
                "took",
                "summary",
            ]);
            for r in &history {
                let x = &r.result;
                t.add_row(vec![
                    Cell::new(r.id),
                    Cell::new(timestamp(x.started_at_ms)),
                    status_cell(x.outcome.status, colour),
                    Cell::new(gridprobe_config::short_metric_name(&x.metric)),
                    Cell::new(format!("{} ({})", x.hostname, x.flavour)),
                    Cell::new(if r.is_final {
                        x.attempt.to_string()
                    } else {
                        format!("{} (retried)", x.attempt)
                    }),
                    Cell::new(format_duration(Duration::from_millis(x.duration_ms))),
                    Cell::new(&x.outcome.summary),
                ]);
            }
            crate::render::keep_words_whole(&mut t);
            println!("{t}");
            println!(
                "newest first; `gridprobe results --config {} --id N` shows one result whole",
                args.config.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_one(r: &StoredResult, format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let x = &r.result;
    println!("result {}", r.id);
    println!("  metric:   {} ({})", x.metric, x.kind);
    println!(
        "  service:  {} ({}) at {}, vo {}",
        x.hostname, x.flavour, x.site, x.vo
    );
    println!("  started:  {}", timestamp(x.started_at_ms));
    println!(
        "  took:     {}",
        format_duration(Duration::from_millis(x.duration_ms))
    );
    println!(
        "  status:   {}{}",
        x.outcome.status.name(),
        if r.is_final {
            ""
        } else {
            " (a retried attempt, not the recorded state)"
        }
    );
    println!(
        "  attempt:  {} ({})",
        x.attempt,
        // `on_demand` reads as two words here.
        x.trigger.name().replace('_', " ")
    );
    println!("  summary:  {}", x.outcome.summary);
    if !x.outcome.perfdata.is_empty() {
        println!("  perfdata:");
        for p in &x.outcome.perfdata {
            println!("    {p}");
        }
    }
    if !x.outcome.details.is_empty() {
        println!("  output:");
        for line in x.outcome.details.lines() {
            println!("    {line}");
        }
    }
    Ok(())
}
