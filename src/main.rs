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
mod output;
mod relays;
mod render;
mod store_location;
mod store_open;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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

/// Output formats of commands that print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for people (coloured on a terminal).
    Table,
    /// JSON for programs.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a configuration: exits 0 when valid, 1 with every error otherwise.
    Check {
        /// The VO's main TOML file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Run the selected probes now and print the site × probe table. The exit code is the worst
    /// status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (also when nothing could run).
    Run {
        /// The VO's main TOML file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// Only this service host name.
        #[arg(long, value_name = "HOST")]
        service: Option<String>,
        /// Only this probe (full metric or short name); the probes it depends on run too.
        #[arg(long, value_name = "METRIC")]
        probe: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run every probe on its schedule, record every result, serve HTTP; SIGHUP reloads the
    /// configuration, SIGTERM / Ctrl-C stops cleanly.
    Serve {
        /// The VO's main TOML file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Result store: an SQLite file, or postgresql://USER@HOST:PORT/DB (password from
        /// PGPASSWORD or [server] store_password_file); default: [server] store,
        /// $GRIDPROBE_STORE, or $XDG_STATE_HOME/gridprobe/<vo>.sqlite
        /// (~/.local/state/gridprobe/<vo>.sqlite).
        #[arg(long, value_name = "PATH|URL")]
        store: Option<String>,
        /// HTTP listen address; default: [server] listen (127.0.0.1:8479).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Read result messages from the `[[publish]]` brokers of the configuration into a store
    /// (once per message id), so this instance can show the matrix of probes run elsewhere.
    /// SIGTERM / Ctrl-C stops cleanly.
    Consume {
        /// The VO's main TOML file (its `[[publish]]` tables name the brokers).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Result store to write into (as for serve).
        #[arg(long, value_name = "PATH")]
        store: Option<String>,
    },
    /// Print the availability matrix from the store: sites × probes, latest status and age.
    Matrix {
        /// The VO's main TOML file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Result store (as for serve).
        #[arg(long, value_name = "PATH")]
        store: Option<String>,
        /// Only this VO (must be the configuration's).
        #[arg(long)]
        vo: Option<String>,
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// Only services of this flavour.
        #[arg(long)]
        flavour: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = commands::TableFormat::Table)]
        format: commands::TableFormat,
    },
    /// Show the history of one cell (newest first), or one result whole with --id.
    Results {
        /// The VO's main TOML file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Result store (as for serve).
        #[arg(long, value_name = "PATH")]
        store: Option<String>,
        /// Site of the cell.
        #[arg(long)]
        site: Option<String>,
        /// Service host name.
        #[arg(long, value_name = "HOST")]
        service: Option<String>,
        /// Probe (full metric or short name).
        #[arg(long, value_name = "METRIC")]
        probe: Option<String>,
        /// How far back, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        since: String,
        /// At most this many results.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Include retried attempts, not only recorded (hard) states.
        #[arg(long)]
        attempts: bool,
        /// One result by id, whole: full output and perfdata.
        #[arg(long, conflicts_with_all = ["site", "service", "probe"])]
        id: Option<i64>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = commands::TableFormat::Table)]
        format: commands::TableFormat,
    },
    /// Availability and reliability per site (and tier, flavour or instance) over a period.
    Report {
        /// The VO's main TOML file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Result store (as for serve).
        #[arg(long, value_name = "PATH")]
        store: Option<String>,
        /// A month (2026-10), day (2026-10-05), hour (2026-10-05T14), the last 24h / 7d / 30d,
        /// or a range (2026-10-01..2026-10-15); UTC.
        #[arg(long)]
        period: String,
        /// Rows: per site, per flavour or per service instance.
        #[arg(long, value_enum, default_value_t = commands::report::Level::Site)]
        level: commands::report::Level,
        /// Availability profile (default: the first in the configuration).
        #[arg(long)]
        profile: Option<String>,
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// Figures are n/a when more than this fraction of the period is unknown.
        #[arg(long, default_value_t = 0.9)]
        unknown_threshold: f64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = commands::TableFormat::Table)]
        format: commands::TableFormat,
    },
    /// The most frequent failure reasons, with the sites they affect.
    Reasons {
        /// The VO's main TOML file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Result store (as for serve).
        #[arg(long, value_name = "PATH")]
        store: Option<String>,
        /// How far back, e.g. 24h or 7d.
        #[arg(long, default_value = "24h")]
        since: String,
        /// At most this many reasons.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = commands::TableFormat::Table)]
        format: commands::TableFormat,
    },
    /// Copy the history of an SQLite store (results, events, downtimes) into PostgreSQL, for a
    /// shared deployment. Resumable: a second run continues after the last result copied.
    MigrateStore {
        /// The VO's main TOML file (its [server] store password settings are used).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The SQLite store to copy (sqlite:PATH); default: the VO's default file.
        #[arg(long, value_name = "sqlite:PATH")]
        from: Option<String>,
        /// The PostgreSQL store to fill (postgresql://USER@HOST:PORT/DB); default: [server]
        /// store.
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// Results per transaction.
        #[arg(long, default_value_t = 5000)]
        batch: usize,
    },
    /// Import topology from a WLCG VO feed, or downtimes from GOCDB.
    Import {
        #[command(subcommand)]
        what: commands::import::ImportCommand,
    },
    /// Bearer tokens for the API: `token new` makes one, `token hash` prints the SHA-256 of a
    /// token read from standard input (what `[access]` stores).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// List the probe kinds with their parameters and defaults.
    Probes {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Generate a random token; prints the token (give it to its holder) and its SHA-256 (put it
    /// in the config).
    New,
    /// Print the SHA-256 of the token read from standard input.
    Hash,
}

fn init_logging(filter: Option<&str>) {
    let filter = filter
        .map(str::to_string)
        .or_else(|| std::env::var("GRIDPROBE_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    let env_filter = tracing_subscriber::EnvFilter::try_new(&filter)
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
        Command::Check { file } => commands::check::run(&file),
        Command::Run {
            config,
            site,
            service,
            probe,
            format,
        } => commands::run::run(&config, site, service, probe, format),
        Command::Probes { format } => commands::probes::run(format),
        Command::Token { action } => commands::token::run(matches!(action, TokenAction::New)),
        Command::Import { what } => commands::import::run(what),
        Command::MigrateStore {
            config,
            from,
            to,
            batch,
        } => commands::migrate_store::run(&config, from.as_deref(), to.as_deref(), batch),
        Command::Report {
            config,
            store,
            period,
            level,
            profile,
            site,
            unknown_threshold,
            format,
        } => commands::report::run(
            &config,
            store.as_deref(),
            &period,
            level,
            profile.as_deref(),
            site.as_deref(),
            unknown_threshold,
            format,
        ),
        Command::Reasons {
            config,
            store,
            since,
            limit,
            format,
        } => commands::report::reasons(&config, store.as_deref(), &since, limit, format),
        Command::Serve {
            config,
            store,
            listen,
        } => commands::serve::run(&config, store.as_deref(), listen.as_deref()),
        Command::Consume { config, store } => commands::consume::run(&config, store.as_deref()),
        Command::Matrix {
            config,
            store,
            vo,
            site,
            flavour,
            format,
        } => commands::matrix::run(&config, store.as_deref(), vo, site, flavour, format),
        Command::Results {
            config,
            store,
            site,
            service,
            probe,
            since,
            limit,
            attempts,
            id,
            format,
        } => commands::results::run(
            &config,
            store.as_deref(),
            commands::results::ResultsArgs {
                site,
                service,
                probe,
                since,
                limit,
                id,
                attempts,
                format,
            },
        ),
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
