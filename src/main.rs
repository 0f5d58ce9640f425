//! `gridprobe`: the command line of the gridprobe framework.
//!
//! Each subcommand lives in its own module under `src/commands/`; rendering shared by several
//! commands (SAM tokens, colours, tables) is in `src/render.rs`.

// These shadow the standard printing macros in this file and every module declared below
// (textual macro scope wins over the prelude), so no output of the binary can panic on a
// closed pipe: see `output`.
macro_rules! println {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}
#[allow(unused_macros)] // for the next `print!`: it must not panic either
macro_rules! print {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}
macro_rules! eprintln {
    () => { $crate::output::write_stderr(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*))) };
}
#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => { $crate::output::write_stderr(format_args!($($arg)*)) };
}

mod commands;
mod notify_start;
mod output;
mod relays;
mod render;
mod state_dir;
mod store_open;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Automated functional tests for distributed computing sites.
#[derive(Parser, Debug)]
#[command(name = "gridprobe", version, about, long_about = None)]
struct Cli {
    /// Log filter (e.g. `info`, `gridprobe_runner=debug`); also read from GRIDPROBE_LOG.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a configuration: exits 0 when valid, 1 with every error otherwise.
    Check(commands::check::Args),
    /// Run the selected probes now and print the site × probe table. The exit code is the worst
    /// status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (also when nothing could run).
    Run(commands::run::Args),
    /// Run every probe on its schedule, record every result, serve HTTP; SIGHUP reloads the
    /// configuration, SIGTERM / Ctrl-C stops cleanly.
    Serve(commands::serve::Args),
    /// Read result messages from the `[[publish]]` brokers of the configuration into a store
    /// (once per message id), so this instance can show the matrix of probes run elsewhere.
    /// SIGTERM / Ctrl-C stops cleanly.
    Consume(commands::consume::Args),
    /// A site agent: takes its site's runs from the VO's broker (NATS JetStream), runs them
    /// here and publishes the results back; for sites with `executor = "agent"`.
    Agent(commands::agent::Args),
    /// Print the availability matrix from the store: sites × probes, latest status and age.
    Matrix(commands::matrix::Args),
    /// Show the history of one cell (newest first), or one result whole with --id.
    Results(commands::results::Args),
    /// Availability and reliability per site (and tier, flavour or instance) over a period.
    Report(commands::report::Args),
    /// The most frequent failure reasons, with the sites they affect.
    Reasons(commands::report::ReasonsArgs),
    /// Over a period: the most flapping cells, the longest CRITICAL and UNKNOWN, per site and
    /// per metric.
    Trends(commands::trends::Args),
    /// Copy the history of an SQLite store (results, events, downtimes) into PostgreSQL, for a
    /// shared deployment. Resumable: a second run continues after the last result copied.
    MigrateStore(commands::migrate_store::Args),
    /// Recomputations of past periods: request, list, approve, reject, revoke.
    Recompute(commands::recompute::Args),
    /// Import topology from a WLCG VO feed, or downtimes from GOCDB.
    Import(commands::import::Args),
    /// Bearer tokens for the API: `token new` makes one, `token hash` prints the SHA-256 of a
    /// token read from standard input (what `[access]` stores).
    Token(commands::token::Args),
    /// List the probe kinds with their parameters and defaults.
    Probes(commands::probes::Args),
    /// Obtain each [[credential]] once and show its state: valid until, last renewal, last
    /// error (never the secret). Exit 0 when all are valid, 1 otherwise, 2 when the
    /// configuration is invalid.
    Credentials(commands::credentials::Args),
    /// Acknowledge a known problem: no reminders while acknowledged.
    Ack(commands::ack::Args),
    /// What is not OK now, for shifters.
    Problems(commands::problems::Args),
    /// Notification channels: send a test message.
    Notify(commands::notify::Args),
}

/// Keeps lapin's own logging out unless the filter names it: lapin logs every message an AMQP
/// broker returns (no queue bound) at WARN with its payload as a decimal byte array, which
/// the AMQP publisher already counts and reports in one line a minute.
fn quiet_libraries<E>(
    filter: &str,
    parsed: Result<tracing_subscriber::EnvFilter, E>,
) -> Result<tracing_subscriber::EnvFilter, E> {
    let mut f = parsed?;
    if !filter.contains("lapin") {
        for directive in ["lapin=error", "lapin::returned_messages=off"] {
            if let Ok(d) = directive.parse() {
                f = f.add_directive(d);
            }
        }
    }
    Ok(f)
}

fn init_logging(filter: Option<&str>) {
    let filter = filter
        .map(str::to_string)
        .or_else(|| std::env::var("GRIDPROBE_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    let env_filter = quiet_libraries(&filter, tracing_subscriber::EnvFilter::try_new(&filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(render::colour_stderr())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref());
    let result = match cli.command {
        Command::Check(args) => commands::check::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Consume(args) => commands::consume::run(args),
        Command::Agent(args) => commands::agent::run(args),
        Command::Matrix(args) => commands::matrix::run(args),
        Command::Results(args) => commands::results::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Reasons(args) => commands::report::reasons(args),
        Command::Trends(args) => commands::trends::run(args),
        Command::MigrateStore(args) => commands::migrate_store::run(args),
        Command::Import(args) => commands::import::run(args),
        Command::Recompute(args) => commands::recompute::run(args),
        Command::Token(args) => commands::token::run(args),
        Command::Probes(args) => commands::probes::run(args),
        Command::Credentials(args) => commands::credentials::run(args),
        Command::Ack(args) => commands::ack::run(args),
        Command::Problems(args) => commands::problems::run(args),
        Command::Notify(args) => commands::notify::run(args),
    };
    match result {
        Ok(code) => code,
        // Output written with `writeln!` reports a closed pipe as an error: end as quietly
        // as the macros do.
        Err(e) if output::caused_by_broken_pipe(&e) => ExitCode::from(output::BROKEN_PIPE_EXIT),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
