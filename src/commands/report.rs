//! `gridprobe report` (availability and reliability over a period) and `gridprobe reasons`
//! (top failure reasons).

use std::path::PathBuf;
use std::process::ExitCode;

use comfy_table::Cell;
use gridprobe_results::availability::Figures;
use gridprobe_results::report::{parse_period, Report};
use gridprobe_results::{CellFilter, HistoryQuery};
use std::io::IsTerminal;

use super::args::{OutputFormat, StoreArgs};
use super::open_store_for;
use crate::render::{colour_stdout, table};

/// Which rows a report shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    /// One row per site (and per tier).
    Site,
    /// One row per flavour of each site.
    Flavour,
    /// One row per service instance.
    Instance,
}

/// `0.973` → `97.3%`; `None` → `n/a`.
fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

/// A row of figures, for table and CSV.
fn figure_cells(f: &Figures) -> [String; 4] {
    [
        pct(f.availability),
        pct(f.reliability),
        pct(Some(f.maintenance)),
        pct(Some(f.unknown_fraction)),
    ]
}

/// `gridprobe report --format`: the shared formats plus the monthly report's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// A table for people (coloured on a terminal).
    Table,
    /// JSON: the monthly report (each site with its targets verdict and per-day figures).
    Json,
    /// CSV: one row per site (with the targets verdicts) or per flavour / instance.
    Csv,
    /// One HTML file with per-day strips (inline SVG), to open or attach.
    Html,
    /// A PDF drawn by gridprobe (write it with --output, or redirect standard output).
    Pdf,
}

/// `gridprobe report`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// A month (2026-10), day (2026-10-05), hour (2026-10-05T14), the last 24h / 7d / 30d,
    /// or a range (2026-10-01..2026-10-15); UTC.
    #[arg(long)]
    pub period: String,
    /// Rows: per site, per flavour or per service instance.
    #[arg(long, value_enum, default_value_t = Level::Site)]
    pub level: Level,
    /// Availability profile (default: the first in the configuration).
    #[arg(long)]
    pub profile: Option<String>,
    /// Only this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Figures are n/a when more than this fraction of the period is unknown.
    #[arg(long, default_value_t = 0.9)]
    pub unknown_threshold: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Write to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `gridprobe reasons`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ReasonsArgs {
    /// The VO's main TOML file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// How far back, e.g. 24h or 7d.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// At most this many reasons.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Prints the report.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        config,
        store,
        period,
        level,
        profile,
        site,
        unknown_threshold,
        format,
        output,
    } = args;
    let (config_path, store_flag) = (config.as_path(), store.flag());
    if format == ReportFormat::Pdf && output.is_none() && std::io::stdout().is_terminal() {
        eprintln!("error: a PDF is not for a terminal: write it with --output FILE, or redirect standard output");
        return Ok(ExitCode::from(2));
    }
    let (period_text, profile, site) = (period.as_str(), profile.as_deref(), site.as_deref());
    if !(0.0..=1.0).contains(&unknown_threshold) {
        eprintln!("error: --unknown-threshold must be between 0 and 1, got {unknown_threshold}");
        return Ok(ExitCode::from(2));
    }
    let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
    let period = match parse_period(period_text, now) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --period: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let Some((config, store)) = open_store_for(config_path, store_flag)? else {
        return Ok(ExitCode::from(1));
    };
    if let Some(s) = site {
        if !super::known_site(&config, s) {
            return Ok(ExitCode::from(1));
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let filter = CellFilter {
        vo: None,
        site: site.map(str::to_string),
        flavour: None,
    };
    if format != ReportFormat::Table && !(format == ReportFormat::Csv && level != Level::Site) {
        let computed = runtime.block_on(gridprobe_results::monthly::from_store(
            store.as_ref(),
            &config,
            profile,
            &period,
            &filter,
            unknown_threshold,
            now,
        ));
        let mut report = match computed {
            Ok(r) => r,
            Err(gridprobe_results::report::ReportError::Store(e)) => return Err(e.into()),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        if let Some(s) = site {
            report.keep_site(s);
        }
        let bytes = match format {
            ReportFormat::Json => {
                let mut v = serde_json::to_vec_pretty(&report)?;
                v.push(b'\n');
                v
            }
            ReportFormat::Csv => gridprobe_results::monthly::to_csv(&report).into_bytes(),
            ReportFormat::Html => gridprobe_runner::report::html::standalone(&report).into_bytes(),
            ReportFormat::Pdf | ReportFormat::Table => {
                gridprobe_runner::report::pdf::render(&report)
            }
        };
        return write_out(output.as_deref(), &bytes);
    }
    let computed = runtime.block_on(gridprobe_results::report::from_store(
        store.as_ref(),
        &config,
        profile,
        &period,
        &filter,
        unknown_threshold,
    ));
    let mut report = match computed {
        Ok(r) => r,
        Err(gridprobe_results::report::ReportError::Store(e)) => return Err(e.into()),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(s) = site {
        report.sites.retain(|r| r.site == s);
    }
    if let Some(path) = output.as_deref() {
        // The table and the per-flavour CSV as text into the file.
        let text = if format == ReportFormat::Csv {
            csv_text(&report, level)
        } else {
            let mut t = String::new();
            for l in table_lines(&report, level, false) {
                t.push_str(&l);
                t.push('\n');
            }
            t
        };
        return write_out(Some(path), text.as_bytes());
    }
    match format {
        ReportFormat::Csv => print!("{}", csv_text(&report, level)),
        _ => {
            for l in table_lines(&report, level, colour_stdout()) {
                println!("{l}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a document to the file, or to standard output.
fn write_out(path: Option<&std::path::Path>, bytes: &[u8]) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    match path {
        Some(p) => {
            if let Err(e) = std::fs::write(p, bytes) {
                eprintln!("error: cannot write {}: {e}", p.display());
                return Ok(ExitCode::from(1));
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
                if crate::output::is_broken_pipe(&e) {
                    return Ok(ExitCode::from(crate::output::BROKEN_PIPE_EXIT));
                }
                return Err(e.into());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rows(report: &Report, level: Level) -> Vec<(Vec<String>, Figures)> {
    let mut out = Vec::new();
    for s in &report.sites {
        match level {
            Level::Site => out.push((vec![s.site.clone(), s.tier.to_string()], s.figures)),
            Level::Flavour => {
                for f in &s.flavours {
                    out.push((
                        vec![s.site.clone(), s.tier.to_string(), f.flavour.clone()],
                        f.figures,
                    ));
                }
            }
            Level::Instance => {
                for f in &s.flavours {
                    for i in &f.instances {
                        out.push((
                            vec![
                                s.site.clone(),
                                s.tier.to_string(),
                                f.flavour.clone(),
                                i.hostname.clone(),
                            ],
                            i.figures,
                        ));
                    }
                }
            }
        }
    }
    out
}

fn key_headers(level: Level) -> Vec<&'static str> {
    match level {
        Level::Site => vec!["site", "tier"],
        Level::Flavour => vec!["site", "tier", "flavour"],
        Level::Instance => vec!["site", "tier", "flavour", "service"],
    }
}

/// The table output, line by line (coloured only when it goes to a terminal).
fn table_lines(report: &Report, level: Level, colour: bool) -> Vec<String> {
    let mut out = vec![format!(
        "vo {}: availability and reliability for {} ({} to {} UTC), profile {}",
        report.vo,
        report.period.label,
        gridprobe_config::time::format_utc(report.period.start_ms),
        gridprobe_config::time::format_utc(report.period.end_ms),
        report.profile
    )];
    let mut t = table(colour);
    let mut header = key_headers(level);
    header.extend(["availability", "reliability", "maintenance", "unknown"]);
    t.set_header(header);
    for (keys, f) in rows(report, level) {
        let mut row: Vec<Cell> = keys.into_iter().map(Cell::new).collect();
        row.extend(figure_cells(&f).into_iter().map(Cell::new));
        t.add_row(row);
    }
    crate::render::keep_words_whole(&mut t);
    out.push(t.to_string());
    if level == Level::Site && !report.tiers.is_empty() {
        let mut t = table(colour);
        t.set_header([
            "tier",
            "sites",
            "availability (mean)",
            "reliability (mean)",
            "availability (weighted)",
            "reliability (weighted)",
        ]);
        for tier in &report.tiers {
            t.add_row([
                format!("Tier-{}", tier.tier),
                tier.sites.to_string(),
                pct(tier.availability),
                pct(tier.reliability),
                pct(tier.weighted_availability),
                pct(tier.weighted_reliability),
            ]);
        }
        crate::render::keep_words_whole(&mut t);
        out.push(t.to_string());
    }
    if level == Level::Site && !report.federations.is_empty() {
        let mut t = table(colour);
        t.set_header([
            "federation",
            "sites",
            "availability (weighted)",
            "reliability (weighted)",
            "availability (mean)",
            "reliability (mean)",
        ]);
        for f in &report.federations {
            t.add_row([
                f.federation.clone(),
                f.sites.len().to_string(),
                pct(f.availability),
                pct(f.reliability),
                pct(f.plain_availability),
                pct(f.plain_reliability),
            ]);
        }
        crate::render::keep_words_whole(&mut t);
        out.push(t.to_string());
    }
    // Say which corrections the figures include: an operator must be able to defend them.
    for r in &report.recomputations {
        out.push(format!(
            "applied recomputation {}: {} {} from {} to {} UTC ({})",
            r.id,
            r.request.change.describe(),
            r.request.scope.describe(),
            gridprobe_config::time::format_utc(r.request.start_ms),
            gridprobe_config::time::format_utc(r.request.end_ms),
            r.request.reason
        ));
    }
    out.push(format!(
        "availability = up / (period - unknown); reliability = up / (period - unknown - scheduled downtime); \
         n/a when more than {:.0}% of the period is unknown (docs/availability.md)",
        report.unknown_threshold * 100.0
    ));
    out
}

/// The per-flavour and per-instance CSV (the per-site one is `monthly::to_csv`).
fn csv_text(report: &Report, level: Level) -> String {
    let mut header: Vec<&str> = key_headers(level);
    header.extend([
        "availability",
        "reliability",
        "maintenance",
        "unknown_fraction",
        "period_start",
        "period_end",
    ]);
    let mut out = header.join(",");
    out.push('\n');
    let num = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    for (keys, f) in rows(report, level) {
        let keys: Vec<String> = keys.iter().map(|k| super::matrix::csv(k)).collect();
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            keys.join(","),
            num(f.availability),
            num(f.reliability),
            num(Some(f.maintenance)),
            num(Some(f.unknown_fraction)),
            report.period.start_ms,
            report.period.end_ms
        ));
    }
    out
}

/// Prints the top failure reasons since a time.
pub fn reasons(args: ReasonsArgs) -> anyhow::Result<ExitCode> {
    let ReasonsArgs {
        config,
        store,
        since,
        limit,
        format,
    } = args;
    let (config_path, store_flag, since) = (config.as_path(), store.flag(), since.as_str());
    let since_d = match gridprobe_config::parse_duration(since) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --since: {e}; write a duration back from now such as 30m, 24h or 7d");
            return Ok(ExitCode::from(2));
        }
    };
    let Some((_config, store)) = open_store_for(config_path, store_flag)? else {
        return Ok(ExitCode::from(1));
    };
    let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let failures = runtime.block_on(store.history(&HistoryQuery {
        since_ms: Some(now - i64::try_from(since_d.as_millis()).unwrap_or(i64::MAX)),
        non_ok_only: true,
        limit: 1_000_000,
        ..Default::default()
    }))?;
    let mut reasons = gridprobe_results::reasons::group(&failures);
    reasons.truncate(limit);
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&reasons)?),
        OutputFormat::Csv => {
            println!("count,sites,status,reason,example_id");
            for r in &reasons {
                println!(
                    "{},{},{},{},{}",
                    r.count,
                    super::matrix::csv(&r.sites.join(" ")),
                    r.status.name(),
                    super::matrix::csv(&r.reason),
                    r.example_id
                );
            }
        }
        OutputFormat::Table => {
            if reasons.is_empty() {
                println!("no failures in the last {since}");
                return Ok(ExitCode::SUCCESS);
            }
            let colour = colour_stdout();
            let mut t = table(colour);
            t.set_header([
                "results",
                "sites",
                "status",
                "reason",
                "example (result id)",
            ]);
            for r in &reasons {
                let sites = if r.sites.len() > 4 {
                    format!("{} sites: {}, …", r.sites.len(), r.sites[..3].join(", "))
                } else {
                    r.sites.join(", ")
                };
                t.add_row(vec![
                    Cell::new(r.count),
                    Cell::new(sites),
                    crate::render::status_cell(r.status, colour),
                    Cell::new(&r.reason),
                    Cell::new(format!("{} ({})", r.example, r.example_id)),
                ]);
            }
            crate::render::keep_words_whole(&mut t);
            println!("{t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
