//! `gridprobe import contacts`: GOCDB site contacts into an include file of
//! `[[site_contacts]]` tables. Every page is read and checked first; the file is written only
//! when the whole answer is valid (all or nothing), and only sites of the configuration are
//! kept.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use gridprobe_config::gocdb_contacts::{self, GENERATED_MARK};

use super::import::{plural, read_pages, same_file, write_atomically};

/// Default name of the generated include file, next to the main configuration.
pub const DEFAULT_OUTPUT: &str = "gocdb-contacts.toml";
/// `gridprobe import contacts`' arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The answer: a file path, a file:// URL or an http(s):// URL.
    #[arg(value_name = "FILE|URL")]
    pub source: String,
    /// The VO's main TOML file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// The include file to write [default: gocdb-contacts.toml next to the main file].
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Keep only contacts with this GOCDB role (repeatable, e.g. "Site Administrator");
    /// default: every role.
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Replace an output file that was not written by this command.
    #[arg(long)]
    pub force: bool,
}

/// Imports the contacts.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.config.is_file() {
        bail!(
            "{}: no such configuration file; --config names the VO's main TOML file",
            args.config.display()
        );
    }
    // Only the site names are needed; the configuration may not be valid yet (e.g. it
    // includes the file this import is about to write).
    let config = gridprobe_config::load(&args.config).config;
    if config.sites.is_empty() {
        bail!(
            "{} declares no [[site]]: the contacts of which sites should be kept?",
            args.config.display()
        );
    }
    let config_dir = args
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| config_dir.join(DEFAULT_OUTPUT));
    if same_file(&output, &args.config) {
        bail!(
            "{} is the main configuration: the import writes an include file beside it (see --output)",
            output.display()
        );
    }
    match std::fs::read_to_string(&output) {
        Ok(t) if !t.starts_with(GENERATED_MARK) && !args.force => bail!(
            "{} exists and was not written by `gridprobe import contacts`; it is left as it is\n  \
             = help: choose another --output, or pass --force to rewrite it",
            output.display()
        ),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", output.display())),
    }

    // Every page is read and checked before the file is touched: all or nothing.
    let source = args.source.as_str();
    let sites = read_pages(
        source,
        |text| gocdb_contacts::parse(text).map(|p| (p.sites, p.next_page)),
        "nothing was imported\n  = help: import from the URL (pages are followed)",
    )?;

    let configured: Vec<&str> = config.sites.iter().map(|s| s.name.as_str()).collect();
    let generated_at = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let rendered = gocdb_contacts::render(&sites, &configured, &args.roles, source, &generated_at);
    write_atomically(&output, &rendered.text)?;
    let addresses: usize = rendered.written.iter().map(|(_, n)| n).sum();
    println!(
        "wrote {}: {} address{} for {} site{}",
        output.display(),
        addresses,
        if addresses == 1 { "" } else { "es" },
        rendered.written.len(),
        plural(rendered.written.len())
    );
    if !rendered.unknown_sites.is_empty() {
        println!(
            "  {} GOCDB site{} not in the configuration left out: {}",
            rendered.unknown_sites.len(),
            plural(rendered.unknown_sites.len()),
            rendered.unknown_sites.join(", ")
        );
    }
    let loaded = gridprobe_config::load(&args.config);
    let included = (0..)
        .map_while(|i| loaded.config.sources.file(i))
        .skip(1)
        .any(|f| same_file(&f.path, &output));
    if !included {
        let relative = output
            .strip_prefix(config_dir)
            .unwrap_or(&output)
            .display()
            .to_string();
        println!(
            "  note: {} does not include this file yet: add \"{relative}\" to its `include`",
            args.config.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if loaded.diagnostics.is_empty() {
        println!(
            "  included by {}; the configuration is valid with it",
            args.config.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprint!("{}", loaded.diagnostics);
    Ok(ExitCode::from(1))
}
