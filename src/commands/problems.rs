//! `gridprobe problems`: what is not OK now, for shifters: site, service, probe, since when,
//! acknowledged, in a downtime, flapping; sorted by tier and age.

use std::path::PathBuf;
use std::process::ExitCode;

use gridprobe_probes::outcome::unix_ms;
use gridprobe_runner::notify::acks::AckStore;
use gridprobe_runner::notify::problems::{problems, read_flapping};

use super::args::{OutputFormat, StoreArgs};

/// `gridprobe problems`' arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Output format.
    #[arg(long, value_parser = super::args::table_or_json(), default_value = "table")]
    pub format: OutputFormat,
}

/// Prints the problems.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some((config, store)) = super::open_store_for(&args.config, args.store.flag())? else {
        return Ok(ExitCode::from(1));
    };
    let location = match crate::store_open::locate(args.store.flag(), &config.server, &config.vo) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let dir = crate::notify_start::dir(&crate::relays::spool_root(&config, &location));
    let acks = AckStore::new(&dir);
    let flapping = read_flapping(&dir);
    let now = unix_ms(std::time::SystemTime::now());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let list = runtime.block_on(problems(&config, store.as_ref(), &acks, &flapping, now))?;
    if args.format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no problems: every cell is OK (or STANDBY)");
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = crate::render::table(crate::render::colour_stdout());
    t.set_header([
        "tier", "site", "service", "probe", "status", "since", "ack", "downtime", "flapping",
        "summary",
    ]);
    for p in &list {
        t.add_row(vec![
            p.tier.to_string(),
            p.site.clone(),
            format!("{} {}", p.flavour, p.hostname),
            p.metric.clone(),
            p.status.clone(),
            gridprobe_config::time::format_utc(p.since_ms),
            p.ack.clone().unwrap_or_default(),
            if p.downtime { "yes" } else { "" }.to_string(),
            if p.flapping { "yes" } else { "" }.to_string(),
            p.summary.clone(),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}
