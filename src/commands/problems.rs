//! `gridprobe problems`: what is not OK now, for shifters: site, service, probe, since when,
//! acknowledged, in a downtime, flapping; sorted by tier and age.

use std::path::PathBuf;
use std::process::ExitCode;

use gridprobe_probes::outcome::unix_ms;
use gridprobe_runner::notify::problems::problems;
use gridprobe_runner::notify::shared::flapping_cells;

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
    let now = unix_ms(std::time::SystemTime::now());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (acks, flapping) = runtime.block_on(async {
        let acks = store.acks(now).await?;
        let flapping = flapping_cells(store.as_ref()).await?;
        Ok::<_, gridprobe_results::StoreError>((acks, flapping))
    })?;
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
