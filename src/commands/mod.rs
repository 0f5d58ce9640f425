//! One module per subcommand.

pub mod ack;
pub mod agent;
pub mod args;
pub mod check;
pub mod consume;
pub mod credentials;
pub mod import;
pub mod import_contacts;
pub mod matrix;
pub mod migrate_store;
pub mod notify;
pub mod probes;
pub mod problems;
pub mod recompute;
pub mod report;
pub mod results;
pub mod run;
pub mod serve;
pub mod token;
pub mod trends;

use std::path::Path;
use std::sync::Arc;

use gridprobe_config::{Config, Diagnostics};
use gridprobe_probes::registry::{build_all, BuiltProbes};
use gridprobe_results::ResultStore;

use crate::store_open;

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

/// Loads a valid configuration and opens its existing result store for reading (SQLite file
/// or PostgreSQL, see `store_open`). Prints the problem and returns `None` when either cannot
/// be had.
pub fn open_store_for(
    config_path: &Path,
    store_flag: Option<&str>,
) -> anyhow::Result<Option<(Config, Arc<dyn ResultStore>)>> {
    let checked = load_checked(config_path);
    if !checked.diagnostics.is_empty() {
        report_diagnostics(&checked.diagnostics);
        return Ok(None);
    }
    let config = checked.config;
    let location = match store_open::locate(store_flag, &config.server, &config.vo) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(None);
        }
    };
    if let store_open::Location::Sqlite(path) = &location {
        if !path.exists() {
            eprintln!(
                "error: no result store at {}: nothing has been recorded for vo {} yet",
                path.display(),
                config.vo
            );
            eprintln!(
                "  = help: start `gridprobe serve --config {}` (or pass --store PATH)",
                config_path.display()
            );
            return Ok(None);
        }
    }
    // Opening only checks the server and the schema on a connection of its own; the pool
    // connects again in the command's runtime, so this short-lived one is enough here.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(store_open::open_store(&location, &config.server)) {
        Ok(store) => Ok(Some((config, store))),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(None)
        }
    }
}

/// ` (did you mean `X`?)` when a candidate is close to `got`, else nothing.
pub fn hint<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    gridprobe_config::did_you_mean(got, candidates)
        .map(|b| format!(" (did you mean `{b}`?)"))
        .unwrap_or_default()
}

/// Whether the configuration has this site; prints a precise error (with a hint) when not.
pub fn known_site(config: &Config, site: &str) -> bool {
    if config.site_index(site).is_some() {
        return true;
    }
    let h = hint(site, config.sites.iter().map(|s| s.name.as_str()));
    eprintln!("error: no site named `{site}`{h}");
    false
}

/// Whether some service of the configuration has this flavour; prints a precise error (with a
/// hint) when not.
pub fn known_flavour(config: &Config, flavour: &str) -> bool {
    let flavours: std::collections::BTreeSet<&str> = config
        .sites
        .iter()
        .flat_map(|s| s.services.iter().map(|v| v.flavour.as_str()))
        .collect();
    if flavours.contains(flavour) {
        return true;
    }
    let h = hint(flavour, flavours.iter().copied());
    eprintln!("error: no service of flavour `{flavour}`{h}");
    false
}

/// Whether the configuration has a service with this host name; prints a precise error (with
/// a hint) when not.
pub fn known_service(config: &Config, hostname: &str) -> bool {
    let hosts = config
        .sites
        .iter()
        .flat_map(|s| s.services.iter().map(|v| v.hostname.as_str()));
    if hosts.clone().any(|h| h == hostname) {
        return true;
    }
    let h = hint(hostname, hosts);
    eprintln!("error: no service with host name `{hostname}`{h}");
    false
}
