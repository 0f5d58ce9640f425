//! `gridprobe ack`: acknowledge a known problem (a cell, a service or a whole site) so that no
//! reminders are sent for it; `--list` shows the acknowledgements, `--remove ID` ends one. They
//! live in the result store, which every running `serve` re-reads.

use std::path::PathBuf;
use std::process::ExitCode;

use gridprobe_probes::outcome::unix_ms;
use gridprobe_runner::notify::acks::{migrate_file, Ack};

use super::args::StoreArgs;

/// `gridprobe ack`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The site.
    #[arg(long, required_unless_present_any = ["list", "remove"])]
    pub site: Option<String>,
    /// Only this service (host name); default: the whole site.
    #[arg(long, value_name = "HOSTNAME")]
    pub service: Option<String>,
    /// Only this metric (with --service: one cell).
    #[arg(long)]
    pub metric: Option<String>,
    /// Why (shown on the matrix and the problems view).
    #[arg(long, required_unless_present_any = ["list", "remove"])]
    pub comment: Option<String>,
    /// Who (default: $USER).
    #[arg(long)]
    pub author: Option<String>,
    /// Ends after this long (e.g. 4h, 2d); default: at recovery.
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<String>,
    /// Kept across WARNING↔CRITICAL changes.
    #[arg(long)]
    pub sticky: bool,
    /// List the acknowledgements in force.
    #[arg(long)]
    pub list: bool,
    /// End the acknowledgement with this id.
    #[arg(long, value_name = "ID")]
    pub remove: Option<String>,
}

/// Longest `--expires`: a year.
const EXPIRES: gridprobe_config::DurationRange = gridprobe_config::DurationRange::new(
    std::time::Duration::from_secs(60),
    std::time::Duration::from_secs(366 * 86_400),
);

/// Adds, lists or removes acknowledgements.
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let now = unix_ms(std::time::SystemTime::now());
    // An older release's acks file, before the first `serve` of this one moves it.
    runtime.block_on(migrate_file(store.as_ref(), &dir, now))?;
    if args.list {
        for a in runtime.block_on(store.acks(now))? {
            let until = a
                .expires_ms
                .map_or("recovery".to_string(), gridprobe_config::time::format_utc);
            println!(
                "{}  {}  by {} until {}{}: {}",
                a.id,
                a.scope(),
                a.author,
                until,
                if a.sticky { " (sticky)" } else { "" },
                a.comment
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = &args.remove {
        let found = runtime.block_on(store.remove_acks(std::slice::from_ref(id)))?;
        if found == 0 {
            eprintln!("error: no acknowledgement with id {id} (see gridprobe ack --list)");
            return Ok(ExitCode::from(1));
        }
        println!("acknowledgement {id} ended");
        return Ok(ExitCode::SUCCESS);
    }
    let site = args.site.unwrap_or_default();
    if !super::known_site(&config, &site) {
        eprintln!(
            "error: unknown site `{site}`{}",
            super::hint(&site, config.sites.iter().map(|s| s.name.as_str()))
        );
        return Ok(ExitCode::from(1));
    }
    if let Some(h) = &args.service {
        if !super::known_service(&config, h) {
            eprintln!("error: unknown service `{h}` at site {site}");
            return Ok(ExitCode::from(1));
        }
    }
    let expires_ms = match &args.expires {
        Some(e) => match gridprobe_config::parse_duration_in(e, EXPIRES) {
            Ok(d) => Some(now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
            Err(err) => {
                eprintln!("error: --expires {e}: {err:?} (1m to 366d, e.g. 4h or 2d)");
                return Ok(ExitCode::from(2));
            }
        },
        None => None,
    };
    let comment = args.comment.unwrap_or_default();
    if comment.trim().is_empty() || comment.len() > 1000 {
        eprintln!("error: --comment must say why, in at most 1000 characters");
        return Ok(ExitCode::from(2));
    }
    let author = args
        .author
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let id = format!("{now:x}-{:x}", std::process::id());
    let ack = Ack {
        id: id.clone(),
        site,
        hostname: args.service,
        metric: args.metric,
        comment,
        author,
        created_ms: now,
        expires_ms,
        sticky: args.sticky,
        status: None,
    };
    let scope = ack.scope();
    runtime.block_on(store.add_acks(&[ack], now))?;
    println!("acknowledged {scope} (id {id}); no reminders until it recovers or the ack ends");
    Ok(ExitCode::SUCCESS)
}
