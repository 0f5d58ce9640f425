//! `gridprobe check FILE`: validate a configuration and summarise it.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{load_checked, report_diagnostics};

/// `gridprobe check`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Exit 0 and a one-line summary when valid; exit 1 with every error otherwise.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.file.as_path();
    let checked = load_checked(path);
    if !checked.diagnostics.is_empty() {
        report_diagnostics(&checked.diagnostics);
        return Ok(ExitCode::from(1));
    }
    let c = &checked.config;
    // Warnings do not refuse the configuration: printed before the summary, on stderr.
    for w in c.credential_warnings() {
        eprintln!(
            "{}\n",
            w.to_string().replacen(": error: ", ": warning: ", 1)
        );
    }
    use crate::render::plural;
    println!(
        "{}: valid: vo {}, {}, {}, {} ({})",
        path.display(),
        c.vo,
        plural(c.sites.len(), "site"),
        plural(c.service_count(), "service"),
        plural(c.instances().len(), "probe instance"),
        plural(c.probes.len(), "probe"),
    );
    Ok(ExitCode::SUCCESS)
}
