//! `gridprobe notify test --channel NAME`: sends a test message through a channel now (not
//! through the outbox: a running `serve` owns that), to check its settings end to end.

use std::path::PathBuf;
use std::process::ExitCode;

use gridprobe_config::notify::ChannelKind;
use gridprobe_probes::outcome::unix_ms;
use gridprobe_runner::notify::message::{stable_id, Notification};
use gridprobe_runner::notify::send::Sender;

/// `gridprobe notify`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

/// What `gridprobe notify` does.
#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Send a test message through a channel.
    Test {
        /// The VO's main TOML file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The `[[notify]]` channel's name.
        #[arg(long)]
        channel: String,
        /// E-mail recipient (default: the `to` of the channel's rules).
        #[arg(long, value_name = "ADDRESS")]
        to: Vec<String>,
    },
}

/// Sends the test message; exits 1 when the server refused it.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Action::Test {
        config: path,
        channel,
        to,
    } = args.action;
    let checked = super::load_checked(&path);
    if !checked.diagnostics.is_empty() {
        super::report_diagnostics(&checked.diagnostics);
        return Ok(ExitCode::from(1));
    }
    let config = checked.config;
    let Some(ch) = config.notify.channel(&channel).cloned() else {
        eprintln!(
            "error: unknown channel `{channel}`{}",
            super::hint(
                &channel,
                config.notify.channels.iter().map(|c| c.name.as_str())
            )
        );
        return Ok(ExitCode::from(1));
    };
    let mut recipients = to;
    if let Some(bad) = recipients
        .iter()
        .find(|r| !gridprobe_config::notify::is_address(r))
    {
        eprintln!("error: `{bad}` is not an e-mail address");
        return Ok(ExitCode::from(2));
    }
    if matches!(ch.kind, ChannelKind::Email { .. }) {
        if recipients.is_empty() {
            recipients = config
                .notify
                .rules
                .iter()
                .filter(|r| r.channel == ch.name)
                .flat_map(|r| r.to.iter().cloned())
                .collect();
            recipients.sort();
            recipients.dedup();
        }
        if recipients.is_empty() {
            eprintln!("error: no recipient: give --to ADDRESS (the channel's rules have no `to`)");
            return Ok(ExitCode::from(2));
        }
    } else {
        recipients = vec![String::new()];
    }
    let instance = crate::relays::instance_name(&config);
    let now = unix_ms(std::time::SystemTime::now());
    let sender = Sender::new(ch.clone()).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut failed = false;
    for r in recipients {
        let n = Notification {
            id: stable_id(&instance, &["test", &ch.name, &r, &now.to_string()]),
            channel: ch.name.clone(),
            recipient: r.clone(),
            vo: config.vo.clone(),
            site: String::new(),
            subject: format!("[gridprobe {}] test message from {instance}", config.vo),
            text: format!(
                "This is a test of the {} channel `{}` of gridprobe {instance} (VO {}).\n",
                ch.kind.name(),
                ch.name,
                config.vo
            ),
            event: "test".into(),
            status: "OK".into(),
            items: Vec::new(),
            created_ms: now,
        };
        match runtime.block_on(sender.send(&n)) {
            Ok(()) => println!(
                "sent a test message through {} {}{}",
                ch.kind.name(),
                ch.name,
                if r.is_empty() {
                    String::new()
                } else {
                    format!(" to {r}")
                }
            ),
            Err(e) => {
                eprintln!("error: {} {}: {e}", ch.kind.name(), ch.name);
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
