//! `gridprobe check FILE`: validate a configuration and summarise it.

use std::path::Path;
use std::process::ExitCode;

use super::{load_checked, report_diagnostics};

/// Exit 0 and a one-line summary when valid; exit 1 with every error otherwise.
pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let checked = load_checked(path);
    if !checked.diagnostics.is_empty() {
        report_diagnostics(&checked.diagnostics);
        return Ok(ExitCode::from(1));
    }
    let c = &checked.config;
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
