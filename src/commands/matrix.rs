//! `gridprobe matrix`: today's availability matrix from the store.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use comfy_table::{Cell, Color};
use gridprobe_results::matrix::{build_matrix, CellState, Matrix, MatrixFilter};
use gridprobe_results::CellFilter;

use super::args::{OutputFormat, StoreArgs};
use super::open_store_for;
use crate::render::{colour_stdout, status_colour, table};

/// `gridprobe matrix`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this VO (must be the configuration's).
    #[arg(long)]
    pub vo: Option<String>,
    /// Only this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only services of this flavour.
    #[arg(long)]
    pub flavour: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Prints the matrix.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        config: config_path,
        store: store_args,
        vo,
        site,
        flavour,
        format,
    } = args;
    let Some((config, store)) = open_store_for(&config_path, store_args.flag())? else {
        return Ok(ExitCode::from(1));
    };
    if let Some(vo) = &vo {
        if vo != &config.vo {
            eprintln!(
                "error: --vo {vo} does not match the configuration, which describes vo `{}`",
                config.vo
            );
            return Ok(ExitCode::from(1));
        }
    }
    if let Some(s) = &site {
        if !super::known_site(&config, s) {
            return Ok(ExitCode::from(1));
        }
    }
    if let Some(f) = &flavour {
        if !super::known_flavour(&config, f) {
            return Ok(ExitCode::from(1));
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let latest = runtime.block_on(store.latest(&CellFilter {
        vo: Some(config.vo.clone()),
        site: site.clone(),
        flavour: flavour.clone(),
    }))?;
    let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
    let matrix = build_matrix(&config, &latest, now, &MatrixFilter { site, flavour });
    if matrix.sites.is_empty() {
        eprintln!("error: the filters select no service instance");
        return Ok(ExitCode::from(1));
    }
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&matrix)?),
        OutputFormat::Csv => print_csv(&matrix)?,
        OutputFormat::Table => print_table(&matrix),
    }
    Ok(ExitCode::SUCCESS)
}

/// `3m`, `2h`, `5d`: the age of a cell, briefly.
pub fn age(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn state_colour(state: CellState) -> Color {
    match state {
        CellState::Current(s) => status_colour(s),
        CellState::Missing | CellState::NoResult => Color::DarkGrey,
    }
}

fn print_table(m: &Matrix) {
    let colour = colour_stdout();
    let mut t = table(colour);
    let mut header = vec![Cell::new("site / service")];
    header.extend(m.columns.iter().map(|c| Cell::new(&c.short)));
    t.set_header(header);
    let paint = |text: String, state: CellState| {
        let cell = Cell::new(text);
        if colour {
            cell.fg(state_colour(state))
        } else {
            cell
        }
    };
    for site in &m.sites {
        let mut row = vec![Cell::new(format!("{} (T{})", site.site, site.tier))];
        row.extend(site.summary.iter().map(|s| match s {
            Some(state) => paint(state.token().to_string(), *state),
            None => Cell::new(""),
        }));
        t.add_row(row);
        for inst in &site.instances {
            let mut row = vec![Cell::new(format!("  {} ({})", inst.hostname, inst.flavour))];
            row.extend(inst.cells.iter().map(|c| match c {
                None => Cell::new(""),
                Some(cell) => {
                    let text = match cell.age_seconds {
                        Some(a) => format!("{} {}", cell.state.token(), age(a)),
                        None => cell.state.token().to_string(),
                    };
                    paint(text, cell.state)
                }
            }));
            t.add_row(row);
        }
    }
    crate::render::keep_words_whole(&mut t);
    println!("{t}");
    println!("cells: status and age of the latest result; `missing` = older than its freshness window; `na` = no result; site rows show the best instance");
}

fn print_csv(m: &Matrix) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "site,tier,hostname,flavour,metric,state,last_status,age_seconds,result_id,summary"
    )?;
    for site in &m.sites {
        for inst in &site.instances {
            for cell in inst.cells.iter().flatten() {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{}",
                    csv(&site.site),
                    site.tier,
                    csv(&inst.hostname),
                    csv(&inst.flavour),
                    csv(&cell.metric),
                    cell.state.token(),
                    cell.last_status.map(|s| s.name()).unwrap_or(""),
                    cell.age_seconds.map(|a| a.to_string()).unwrap_or_default(),
                    cell.result_id.map(|a| a.to_string()).unwrap_or_default(),
                    csv(cell.summary.as_deref().unwrap_or("")),
                )?;
            }
        }
    }
    Ok(())
}

/// Quotes a CSV field when it needs it (RFC 4180).
pub fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
