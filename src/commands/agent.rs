//! `gridprobe agent`: a site agent. It holds no topology: it connects out to the VO's broker,
//! takes its site's runs from the site's work queue, runs them with the same probe kinds as
//! `serve`, and publishes the results back (spooled on disk while the broker is away). The
//! machinery is `gridprobe_runner::agent::worker`; this module reads the arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use gridprobe_config::time::{parse_duration_in, DurationRange};
use gridprobe_runner::agent::wire::token;
use gridprobe_runner::agent::worker::{run_agent, AgentOptions};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// `--heartbeat`: 1s to 10 minutes.
const HEARTBEAT: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(600));
/// `--shutdown-grace`: 1s to 1 hour.
const SHUTDOWN_GRACE: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(3600));
/// `--concurrency`.
const CONCURRENCY: std::ops::RangeInclusive<u32> = 1..=10_000;
/// Default spool bound: 1 GiB.
const SPOOL_MAX_BYTES: u64 = 1 << 30;

/// `gridprobe agent`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's broker: nats://USER@host:4222 (tls://USER@host:4222 for TLS), or RabbitMQ as
    /// amqp://USER@host:5672/VHOST (amqps:// for TLS). No password in it: see --password-file
    /// and --password-env.
    #[arg(long, value_name = "URL")]
    pub broker: String,
    /// The site whose runs this agent takes (its name in the VO's configuration).
    #[arg(long, value_name = "SITE")]
    pub site: String,
    /// This agent's name, unique among the site's agents (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// File holding the broker user's password (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the broker user's password.
    #[arg(long, value_name = "VAR", default_value = "GRIDPROBE_AGENT_PASSWORD")]
    pub password_env: String,
    /// Extra CA certificate (PEM) for a tls:// or amqps:// broker with a private CA.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Subject prefix, as the centre's [agents] prefix.
    #[arg(long, value_name = "PREFIX", default_value = "gridprobe")]
    pub prefix: String,
    /// Runs at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub concurrency: u32,
    /// Spool directory for results the broker has not taken yet (default: in the state
    /// directory, one per site and name).
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// A TOML file with the agent's own [[credential]] tables (and `vo`), for probes that
    /// name a credential.
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Time between heartbeats.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub heartbeat: String,
    /// Time runs in flight get to finish on SIGTERM; runs cut short are run by another agent.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub shutdown_grace: String,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "agent".into())
}

fn one_line(what: &str, v: &str) -> anyhow::Result<()> {
    if v.trim().is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
        anyhow::bail!("{what} must be a non-empty name of at most 256 bytes on one line");
    }
    Ok(())
}

/// Runs until SIGTERM / SIGINT.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    one_line("--site", &args.site)?;
    let name = args.name.clone().unwrap_or_else(host_name);
    one_line("--name", &name)?;
    if !args.prefix.split('.').all(|t| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }) {
        anyhow::bail!("--prefix must be NATS subject tokens (letters, digits, `_`, `-`, separated by dots), found `{}`", args.prefix);
    }
    if !CONCURRENCY.contains(&args.concurrency) {
        anyhow::bail!(
            "--concurrency must be between {} and {}, found {}",
            CONCURRENCY.start(),
            CONCURRENCY.end(),
            args.concurrency
        );
    }
    let heartbeat = parse_duration_in(&args.heartbeat, HEARTBEAT)
        .map_err(|e| anyhow::anyhow!("--heartbeat: {e}"))?;
    let shutdown_grace = parse_duration_in(&args.shutdown_grace, SHUTDOWN_GRACE)
        .map_err(|e| anyhow::anyhow!("--shutdown-grace: {e}"))?;
    let url = url::Url::parse(&args.broker).map_err(|e| {
        anyhow::anyhow!(
            "--broker `{}`: {e}",
            gridprobe_config::model::redact_url(&args.broker)
        )
    })?;
    if !matches!(url.scheme(), "nats" | "tls" | "amqp" | "amqps") {
        anyhow::bail!(
            "--broker must start with nats:// or tls:// (NATS JetStream), or amqp:// or amqps:// (RabbitMQ), e.g. amqp://agent-t2@mq.example.org:5672/gridprobe"
        );
    }
    if url.password().is_some() {
        anyhow::bail!(
            "--broker holds a password: give it with --password-file or in ${} instead",
            args.password_env
        );
    }
    let password = match &args.password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read --password-file {}", f.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        ),
        None => std::env::var(&args.password_env).ok(),
    };
    let spool_dir = args.spool_dir.clone().unwrap_or_else(|| {
        crate::state_dir::dir().join(format!(
            "agent-{}-{}.spool",
            token(&args.site),
            token(&name)
        ))
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let credentials = match &args.credentials {
            None => None,
            Some(path) => {
                let checked = super::load_checked(path);
                if !checked.diagnostics.is_empty() {
                    super::report_diagnostics(&checked.diagnostics);
                    return Ok(ExitCode::from(1));
                }
                let c = gridprobe_probes::credentials::Credentials::for_config(
                    &checked.config,
                    Some(
                        crate::state_dir::dir().join(format!("agent-{}.credentials", token(&name))),
                    ),
                );
                c.start(&shutdown);
                Some(c)
            }
        };
        let opts = AgentOptions {
            url: args.broker.clone(),
            password,
            ca_file: args.ca_file.clone(),
            prefix: args.prefix.clone(),
            site: args.site.clone(),
            name: name.clone(),
            concurrency: args.concurrency,
            spool_dir: spool_dir.clone(),
            spool_max_bytes: SPOOL_MAX_BYTES,
            credentials,
            heartbeat,
            shutdown_grace,
        };
        let mut sigterm =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut sigint =
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = sigint.recv() => {}
            }
            stop.cancel();
        });
        println!(
            "gridprobe agent {name} of site {}: broker {}, {} runs at once, spool {}",
            args.site,
            gridprobe_config::model::redact_url(&args.broker),
            args.concurrency,
            spool_dir.display()
        );
        let counters = run_agent(opts, shutdown)
            .await
            .map_err(anyhow::Error::msg)?;
        eprintln!(
            "gridprobe agent: stopped after {} runs ({} acknowledged, {} refused)",
            counters.runs_done.load(Ordering::Relaxed),
            counters.acked.load(Ordering::Relaxed),
            counters.refused.load(Ordering::Relaxed)
        );
        Ok(ExitCode::SUCCESS)
    })
}
