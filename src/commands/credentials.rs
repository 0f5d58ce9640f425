//! `gridprobe credentials`: obtains (or reads) each `[[credential]]` once and shows its state
//! (valid until, last renewal, last error), never the secret. Also where `serve` and `run`
//! get their credential manager: its files live in `<state>/<vo>.credentials/`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use comfy_table::Cell;
use gridprobe_config::time::{format_utc, format_utc_ms};
use gridprobe_config::Config;
use gridprobe_probes::credentials::{CredentialState, Credentials};

use super::args::{table_or_json, OutputFormat};
use super::{load_checked, report_diagnostics};
use crate::render::{colour_stdout, table};

/// `gridprobe credentials`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = table_or_json())]
    pub format: OutputFormat,
}

/// The directory of a VO's credential files (tokens for plugins, proxies), mode 0700.
pub fn dir(config: &Config) -> PathBuf {
    crate::state_dir::file_for(&config.vo, ".credentials")
}

/// A credential manager for `config`, writing its files to [`dir`].
pub fn manager(config: &Config) -> Arc<Credentials> {
    Credentials::for_config(config, Some(dir(config)))
}

/// Obtains every credential once and prints their states; exit 0 when all are valid, 1
/// otherwise, 2 when the configuration is invalid.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let checked = load_checked(&args.config);
    if !checked.diagnostics.is_empty() {
        report_diagnostics(&checked.diagnostics);
        return Ok(ExitCode::from(2));
    }
    let config = checked.config;
    let creds = manager(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(creds.obtain_all());
    let states = creds.states();
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&states)?),
        OutputFormat::Table | OutputFormat::Csv => {
            if states.is_empty() {
                println!("no [[credential]] in {}", args.config.display());
            } else {
                println!("{}", render(&states, colour_stdout()));
            }
        }
    }
    Ok(if states.iter().all(|s| s.valid) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn render(states: &[CredentialState], colour: bool) -> comfy_table::Table {
    let mut t = table(colour);
    t.set_header([
        "credential",
        "kind",
        "valid",
        "valid until (UTC)",
        "last renewal (UTC)",
        "last error",
    ]);
    for s in states {
        t.add_row([
            Cell::new(&s.name),
            Cell::new(s.kind),
            Cell::new(if s.valid { "yes" } else { "NO" }),
            Cell::new(
                s.valid_until_ms
                    .map(format_utc)
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::new(
                s.last_renewal_ms
                    .map(format_utc_ms)
                    .unwrap_or_else(|| "never".into()),
            ),
            Cell::new(s.last_error.as_deref().unwrap_or("")),
        ]);
    }
    crate::render::keep_words_whole(&mut t);
    t
}
