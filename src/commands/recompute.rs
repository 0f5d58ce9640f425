//! `gridprobe recompute request|list|approve|reject|revoke`: recomputations of past periods
//! (ARGO's model, see `gridprobe_results::recompute`), written straight to the VO's store. The
//! CLI acts with the store's own access, as an operator; `--by` names who for the record.

use std::path::PathBuf;
use std::process::ExitCode;

use comfy_table::Cell;
use gridprobe_config::time::format_utc;
use gridprobe_probes::Status;
use gridprobe_results::recompute::{Change, RecomputationRequest, Scope, State, StepKind};
use gridprobe_results::recompute_flow;
use gridprobe_results::report::parse_period;

use super::args::{table_or_json, OutputFormat, StoreArgs};
use super::open_store_for;
use crate::render::{colour_stdout, table};

/// `gridprobe recompute`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VO's main TOML file.
    #[arg(long, short, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    action: Action,
}

/// What `gridprobe recompute` does.
#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Ask for a recomputation of a past period: exclude it (--exclude) or force a status on it
    /// (--force OK), for the whole VO or the sites, flavours and metrics named.
    Request {
        /// The period (2026-11-03, 2026-11-03T14, 2026-11-03T10:00..2026-11-03T16:00); UTC.
        #[arg(long)]
        period: String,
        /// Why the figures are wrong (required).
        #[arg(long)]
        reason: String,
        /// Only these sites (repeatable).
        #[arg(long = "site")]
        sites: Vec<String>,
        /// Only these service flavours (repeatable).
        #[arg(long = "flavour")]
        flavours: Vec<String>,
        /// Only these metrics, full or short names (repeatable).
        #[arg(long = "metric")]
        metrics: Vec<String>,
        /// The time counts as EXCLUDED (neither up nor known).
        #[arg(long, conflicts_with = "force", required_unless_present = "force")]
        exclude: bool,
        /// The time counts as this status: OK, WARNING, CRITICAL or UNKNOWN.
        #[arg(long, value_name = "STATUS")]
        force: Option<String>,
        /// Who asks (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// List the recomputations with their state and history.
    List {
        /// Only those in this state (pending, approved, rejected, applied, revoked).
        #[arg(long)]
        state: Option<String>,
        /// Output format.
        #[arg(long, value_parser = table_or_json(), default_value = "table")]
        format: OutputFormat,
    },
    /// Approve a pending recomputation: it is applied to every figure at once.
    Approve {
        /// Its id.
        id: i64,
        /// Who approves (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// A note for the record.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Reject a pending recomputation.
    Reject {
        /// Its id.
        id: i64,
        /// Who rejects (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Why (required).
        #[arg(long)]
        note: String,
    },
    /// Revoke an approved or applied recomputation: the figures are as before it.
    Revoke {
        /// Its id.
        id: i64,
        /// Who revokes (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Why (required).
        #[arg(long)]
        note: String,
    },
}

fn who(by: Option<String>) -> String {
    by.filter(|b| !b.trim().is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "cli".into())
}

/// Runs one recomputation action.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(config_path) = args.config else {
        eprintln!("error: --config FILE is required");
        return Ok(ExitCode::from(2));
    };
    let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
    // Arguments are checked before the store is opened.
    let (request, decision) = match args.action {
        Action::Request {
            period,
            reason,
            sites,
            flavours,
            metrics,
            exclude,
            force,
            by,
        } => {
            let period = match parse_period(&period, now) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: --period: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let change = match (exclude, force) {
                (true, _) => Change::Exclude,
                (false, Some(s)) => match Status::parse(&s) {
                    Some(status) => Change::Force { status },
                    None => {
                        eprintln!(
                            "error: --force: unknown status `{s}`: write OK, WARNING, CRITICAL or UNKNOWN"
                        );
                        return Ok(ExitCode::from(2));
                    }
                },
                (false, None) => {
                    eprintln!("error: give --exclude or --force STATUS");
                    return Ok(ExitCode::from(2));
                }
            };
            let request = RecomputationRequest {
                start_ms: period.start_ms,
                end_ms: period.end_ms,
                reason,
                requester: who(by),
                scope: Scope {
                    sites,
                    flavours,
                    metrics,
                },
                change,
            };
            (Some(request), None)
        }
        Action::List { state, format } => {
            let state = match state.as_deref().map(parse_state) {
                Some(None) => {
                    eprintln!(
                        "error: --state: write pending, approved, rejected, applied or revoked"
                    );
                    return Ok(ExitCode::from(2));
                }
                Some(Some(s)) => Some(s),
                None => None,
            };
            return list(&config_path, args.store.flag(), state, format);
        }
        Action::Approve { id, by, note } => (None, Some((id, StepKind::Approved, who(by), note))),
        Action::Reject { id, by, note } => (None, Some((id, StepKind::Rejected, who(by), note))),
        Action::Revoke { id, by, note } => (None, Some((id, StepKind::Revoked, who(by), note))),
    };
    let Some((config, store)) = open_store_for(&config_path, args.store.flag())? else {
        return Ok(ExitCode::from(1));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = match (request, decision) {
        (Some(request), _) => runtime.block_on(recompute_flow::request(
            store.as_ref(),
            &config,
            request,
            now,
        ))?,
        (None, Some((id, decision, by, note))) => runtime.block_on(recompute_flow::decide(
            store.as_ref(),
            id,
            decision,
            &by,
            &note,
            now,
        ))?,
        (None, None) => return Ok(ExitCode::from(2)),
    };
    match outcome {
        Ok(r) => {
            println!("recomputation {} is {}", r.id, r.state.name());
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            eprintln!("error: refused: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

fn parse_state(s: &str) -> Option<State> {
    [
        State::Pending,
        State::Approved,
        State::Rejected,
        State::Applied,
        State::Revoked,
    ]
    .into_iter()
    .find(|st| st.name().eq_ignore_ascii_case(s.trim()))
}

fn list(
    config_path: &std::path::Path,
    store_flag: Option<&str>,
    state: Option<State>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let Some((_, store)) = open_store_for(config_path, store_flag)? else {
        return Ok(ExitCode::from(1));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let all: Vec<_> = runtime
        .block_on(store.recomputations())?
        .into_iter()
        .filter(|r| state.is_none_or(|s| r.state == s))
        .collect();
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(colour_stdout());
    t.set_header([
        "id",
        "state",
        "period (UTC)",
        "scope",
        "change",
        "reason",
        "history",
    ]);
    let rows: Vec<Vec<Cell>> = all
        .iter()
        .map(|r| {
            let history: Vec<String> = r
                .steps
                .iter()
                .map(|s| {
                    let note = if s.note.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", s.note)
                    };
                    format!(
                        "{} by {} at {}{note}",
                        s.step.name(),
                        s.by,
                        format_utc(s.at_ms)
                    )
                })
                .collect();
            vec![
                Cell::new(r.id),
                Cell::new(r.state.name()),
                Cell::new(format!(
                    "{} .. {}",
                    format_utc(r.request.start_ms),
                    format_utc(r.request.end_ms)
                )),
                Cell::new(r.request.scope.describe()),
                Cell::new(r.request.change.describe()),
                Cell::new(&r.request.reason),
                Cell::new(history.join("\n")),
            ]
        })
        .collect();
    for row in rows {
        t.add_row(row);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}
