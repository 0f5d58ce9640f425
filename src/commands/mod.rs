//! One module per subcommand.

pub mod check;
pub mod probes;
pub mod run;

use std::path::Path;

use gridprobe_config::{Config, Diagnostics};
use gridprobe_probes::registry::{build_all, BuiltProbes};

/// A configuration with its probes built, and every problem found by the config layer and by
/// the probe kinds together (one pass, all errors).
pub struct Checked {
    /// The configuration (possibly partial when there are diagnostics).
    pub config: Config,
    /// The built probes.
    pub probes: BuiltProbes,
    /// Every problem.
    pub diagnostics: Diagnostics,
}

/// Loads, validates and builds a configuration.
pub fn load_checked(path: &Path) -> Checked {
    let loaded = gridprobe_config::load(path);
    let mut diagnostics = loaded.diagnostics;
    // Probe kinds check their own parameters even when the config has other errors, so the
    // user sees everything at once.
    let (probes, probe_diagnostics) = build_all(&loaded.config);
    diagnostics.extend(probe_diagnostics.0);
    diagnostics.sort();
    Checked {
        config: loaded.config,
        probes,
        diagnostics,
    }
}

/// Prints diagnostics to stderr with a closing count.
pub fn report_diagnostics(diagnostics: &Diagnostics) {
    eprint!("{diagnostics}");
    let n = diagnostics.len();
    eprintln!(
        "\n{n} error{} found; the configuration was not accepted",
        if n == 1 { "" } else { "s" }
    );
}
