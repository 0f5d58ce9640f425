//! `conddb` probe kind: a conditions database answers the VO's read-only query, with fresh data.
//!
//! The probe connects, runs the configured query (e.g. the latest interval of validity of a
//! tag) and reads the first column of the first row as the time of the newest payload:
//! CRITICAL when the connection or the query fails (or returns too few rows), WARNING (or
//! CRITICAL) when that time is older than `warn_age` (`crit_age`).
//!
//! Backends, chosen by the URL scheme:
//!
//! * `postgresql://` (tokio-postgres),
//! * `mysql://` or `mariadb://` (mysql_async),
//! * `sqlite:` a database file (rusqlite, the same SQLite as the result store),
//! * `frontier://` or `http(s)://` a Frontier server, usually behind squid: the query goes out
//!   as a Frontier request over HTTP (the `http` kind's transport), and the answer's HTTP status,
//!   Frontier error flag and cache headers (Age, X-Cache) are reported.
//!
//! Safety: the query must be a read. Anything but one SELECT (or WITH … SELECT) is rejected by
//! `gridprobe check`, and the query runs in a read-only transaction (PostgreSQL and MariaDB), on a
//! read-only connection (SQLite) or through Frontier, which only reads. Passwords come from an
//! environment variable or a file named in the configuration, never from the configuration
//! itself. A query still running at the timeout is cancelled at the server (PostgreSQL cancel
//! request, MariaDB `KILL QUERY`, SQLite interrupt), not merely abandoned.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use gridprobe_config::{Config, Diagnostic, ProbeDef};
use http_body_util::Full;
use hyper::header::{HeaderName, HOST, USER_AGENT};
use hyper::{Method, Request};
use serde::Deserialize;
use url::Url;

use gridprobe_config::time::format_duration;

use crate::kind::{ParamDefault, ParamDoc};
use crate::net::http::{self, status_text, Progress, Trace, USER_AGENT_VALUE};
use crate::net::tls::{CertInfo, TlsParams, TlsSettings};
use crate::net::{Failure, Timings};
use crate::outcome::{
    fmt_secs, fmt_utc, seconds, ConnectionFault, Outcome, Perfdatum, Status, UtcPrecision,
};
use crate::params::{check_template, config_dir, duration_param};
use crate::{placeholders, Probe, ProbeContext, SharedProbe, Stop};

mod frontier;
mod guard;
mod mysql;
mod params;
mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;
mod values;

use params::*;
pub use params::{build, PARAMS};
use values::*;

use frontier::*;
use guard::*;
use mysql::*;
use postgres::*;
use sqlite::*;

/// Config kind name.
pub const NAME: &str = "conddb";
/// One-line description.
pub const SUMMARY: &str = "Conditions database (PostgreSQL, MariaDB/MySQL, SQLite, Frontier): \
                           runs a read-only query and checks the newest payload's age";

/// Default of `min_rows`.
const DEFAULT_MIN_ROWS: u64 = 1;
/// Time given to cancel a query at the server after the deadline (the runner waits 5 s
/// before it abandons an attempt).
const CANCEL_BUDGET: Duration = Duration::from_secs(3);
/// Most bytes of a Frontier answer read.
const MAX_FRONTIER_BODY: usize = 16 << 20;
/// Rows shown in the details.
const SHOWN_ROWS: usize = 5;
/// A built `conddb` probe.
#[derive(Debug)]
struct CondDbProbe {
    /// URL template.
    url: Option<String>,
    /// Query template.
    query: String,
    warn_age: Option<Duration>,
    crit_age: Option<Duration>,
    min_rows: u64,
    password: Option<Password>,
    tls: TlsSettings,
    /// Directory of the config file, for relative SQLite paths.
    base: PathBuf,
}

/// The database kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    MySql,
    Sqlite,
    Frontier,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::MySql => "MariaDB/MySQL",
            Backend::Sqlite => "SQLite",
            Backend::Frontier => "Frontier",
        }
    }
}

/// Parses a database URL: its backend, and the URL with `mariadb` read as `mysql` and
/// `frontier` as `http`. A password in it is refused: credentials never sit in the config.
fn parse_db_url(text: &str) -> Result<(Backend, Url), String> {
    let text = text.trim();
    let url = Url::parse(text).map_err(|e| format!("invalid URL `{text}`: {e}"))?;
    let (backend, scheme) = match url.scheme() {
        "postgresql" | "postgres" => (Backend::Postgres, "postgresql"),
        "mysql" | "mariadb" => (Backend::MySql, "mysql"),
        "sqlite" => (Backend::Sqlite, "sqlite"),
        "frontier" | "http" => (Backend::Frontier, "http"),
        "https" => (Backend::Frontier, "https"),
        other => {
            return Err(format!(
                "URL `{text}` has scheme `{other}`; the conddb kind speaks postgresql, mysql \
                 (mariadb), sqlite and frontier (http, https)"
            ))
        }
    };
    if url.password().is_some()
        || url
            .query_pairs()
            .any(|(k, _)| k.eq_ignore_ascii_case("password"))
    {
        return Err(format!(
            "URL `{}` holds a password: give it in `password_env` or `password_file`, never \
             in the configuration",
            redact(&url)
        ));
    }
    if backend == Backend::Sqlite {
        if url.path().is_empty() || url.path() == "/" {
            return Err(format!("URL `{text}` names no database file"));
        }
        return Ok((backend, url));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL `{text}` has no host"));
    }
    if url.scheme() == scheme {
        return Ok((backend, url));
    }
    // `Url::set_scheme` refuses changes between special and non-special schemes, so rebuild.
    let rest = &url[url::Position::BeforeUsername..];
    let rebuilt =
        Url::parse(&format!("{scheme}://{rest}")).map_err(|e| format!("invalid URL: {e}"))?;
    Ok((backend, rebuilt))
}

/// A URL for messages, without any password.
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

/// What a query returned.
#[derive(Debug, Default)]
struct Answer {
    /// Column names.
    columns: Vec<String>,
    /// The first rows (at most [`SHOWN_ROWS`], all for small answers).
    rows: Vec<Vec<Cell>>,
    /// All rows.
    count: usize,
    /// Connection and query phases.
    connect: Option<Duration>,
    query: Option<Duration>,
    /// Extra perfdata (Frontier cache age).
    perfdata: Vec<Perfdatum>,
    /// Extra words for the summary (Frontier cache status).
    summary_note: Option<String>,
}

/// How a backend failed.
#[derive(Debug)]
enum DbError {
    /// Could not connect or log in (CRITICAL); the fault when it failed before the server
    /// could answer (see `Outcome::connection_fault`).
    Connect(String, Option<ConnectionFault>),
    /// The query failed (CRITICAL).
    Query(String),
    /// Deadline during a phase; what cancelling at the server gave.
    Timeout {
        phase: &'static str,
        cancel: Option<Result<(), String>>,
    },
    /// gridprobe is stopping (UNKNOWN).
    Cancelled(&'static str),
    /// A local problem (UNKNOWN): unreadable password file and the like.
    Local(String),
}

const PHASE_CONNECT: &str = "connect";
const PHASE_QUERY: &str = "query";

/// The error for a query stopped by `stop`, once the server-side cancel has been tried for at
/// most [`CANCEL_BUDGET`] in `cancel` (its own error told by `reason`).
async fn stopped_query<E>(
    stop: Stop,
    cancel: impl std::future::Future<Output = Result<(), E>>,
    reason: impl Fn(&E) -> String,
) -> DbError {
    let cancel = match tokio::time::timeout(CANCEL_BUDGET, cancel).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(reason(&e)),
        Err(_) => Err(format!(
            "no answer within {}",
            format_duration(CANCEL_BUDGET)
        )),
    };
    match stop {
        Stop::Timeout => DbError::Timeout {
            phase: PHASE_QUERY,
            cancel: Some(cancel),
        },
        Stop::Cancelled => DbError::Cancelled(PHASE_QUERY),
    }
}

/// Where one instance connects.
#[derive(Debug, Clone)]
struct Target {
    backend: Backend,
    url: Url,
}

impl CondDbProbe {
    fn target(&self, ctx: &ProbeContext) -> Result<Target, String> {
        let svc = &ctx.service;
        let (backend, url) = match &self.url {
            Some(t) => {
                parse_db_url(&placeholders::expand(t, ctx)?).map_err(|e| format!("`url`: {e}"))?
            }
            None => match &svc.endpoint {
                Some(e) => parse_db_url(e.as_str()).map_err(|e| {
                    format!(
                        "service {} ({}) endpoint: {e}; set `url` for this probe",
                        svc.hostname, svc.flavour
                    )
                })?,
                None => {
                    return Err(format!(
                        "service {} ({}) has no endpoint: give it one, or set `url` for this probe",
                        svc.hostname, svc.flavour
                    ))
                }
            },
        };
        Ok(Target { backend, url })
    }

    fn query(&self, ctx: &ProbeContext) -> Result<String, String> {
        let q = placeholders::expand(&self.query, ctx)?;
        check_read_only(&q)?;
        Ok(q)
    }

    fn password(&self) -> Result<Option<String>, String> {
        match &self.password {
            None => Ok(None),
            Some(Password::Env(var)) => match std::env::var(var) {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(format!(
                    "password_env: the environment variable {var} is not set"
                )),
            },
            Some(Password::File(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("password_file {}: {e}", path.display()))?;
                Ok(Some(text.lines().next().unwrap_or("").to_string()))
            }
        }
    }

    fn sqlite_path(&self, url: &Url) -> PathBuf {
        let path = percent_encoding::percent_decode_str(url.path())
            .decode_utf8_lossy()
            .into_owned();
        if url.cannot_be_a_base() {
            // sqlite:relative/path.db
            self.base.join(path)
        } else {
            PathBuf::from(path)
        }
    }
}

#[async_trait]
impl Probe for CondDbProbe {
    async fn run(&self, ctx: &ProbeContext) -> Outcome {
        if ctx.cancel.is_cancelled() {
            return Outcome::unknown("cancelled before start");
        }
        let target = match self.target(ctx) {
            Ok(t) => t,
            Err(e) => return Outcome::unknown(e),
        };
        let query = match self.query(ctx) {
            Ok(q) => q,
            Err(e) => return Outcome::unknown(e),
        };
        let password = match self.password() {
            Ok(p) => p,
            Err(e) => return Outcome::unknown(e),
        };
        let shown = redact(&target.url);
        let mut log = format!("{} {shown}\nquery: {query}\n", target.backend.name());
        let start = Instant::now();
        let answer = match target.backend {
            Backend::Postgres => postgres(ctx, &target.url, password, &query, &self.tls).await,
            Backend::MySql => mysql(ctx, &target.url, password, &query).await,
            Backend::Sqlite => sqlite(ctx, self.sqlite_path(&target.url), query.clone()).await,
            Backend::Frontier => frontier(ctx, &target.url, &query, &self.tls, &mut log).await,
        };
        let total = start.elapsed();
        self.judge(ctx, &target, &shown, answer, total, log)
    }

    fn check_instance(&self, ctx: &ProbeContext) -> Result<(), String> {
        self.target(ctx)?;
        self.query(ctx)?;
        Ok(())
    }
}

impl CondDbProbe {
    /// The outcome of one run.
    fn judge(
        &self,
        ctx: &ProbeContext,
        target: &Target,
        shown: &str,
        answer: Result<Answer, DbError>,
        total: Duration,
        mut log: String,
    ) -> Outcome {
        let mut perfdata = Vec::new();
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                perfdata.push(seconds("total", total));
                let fault = match &e {
                    DbError::Connect(_, fault) => *fault,
                    DbError::Timeout {
                        phase: PHASE_CONNECT,
                        ..
                    } => Some(ConnectionFault::Timeout),
                    _ => None,
                };
                let (status, text) = match e {
                    DbError::Connect(m, _) => (Status::Critical, format!("connection failed: {m}")),
                    DbError::Query(m) => (Status::Critical, format!("query failed: {m}")),
                    DbError::Timeout { phase, cancel } => (
                        Status::Critical,
                        format!(
                            "timeout after {} during {phase}{}",
                            format_duration(ctx.timeout),
                            match cancel {
                                None => String::new(),
                                Some(Ok(())) => "; the query was cancelled at the server".into(),
                                Some(Err(e)) =>
                                    format!("; cancelling it at the server failed: {e}"),
                            }
                        ),
                    ),
                    DbError::Cancelled(phase) => (
                        Status::Unknown,
                        format!("cancelled during {phase} (gridprobe is stopping)"),
                    ),
                    DbError::Local(m) => (Status::Unknown, m),
                };
                let summary = format!("{text} on {shown}");
                let outcome = Outcome::new(status, summary.clone())
                    .with_details(format!("{summary}\n{log}"))
                    .with_perfdata(perfdata);
                return match fault {
                    Some(fault) => outcome.with_connection_fault(fault),
                    None => outcome,
                };
            }
        };
        perfdata.extend(answer.connect.map(|d| seconds("connect", d)));
        perfdata.extend(answer.query.map(|d| seconds("query", d)));
        perfdata.push(seconds("total", total));
        perfdata.push(Perfdatum::new("rows", answer.count as f64, ""));
        perfdata.extend(answer.perfdata.iter().cloned());

        let _ = writeln!(
            log,
            "{} row{} in {}",
            answer.count,
            if answer.count == 1 { "" } else { "s" },
            fmt_secs(total)
        );
        if !answer.columns.is_empty() {
            let _ = writeln!(log, "columns: {}", answer.columns.join(", "));
        }
        for row in &answer.rows {
            let cells: Vec<String> = row.iter().map(Cell::show).collect();
            let _ = writeln!(log, "  {}", cells.join(" | "));
        }
        let source = format!("{} {shown}", target.backend.name());
        let note = answer
            .summary_note
            .as_ref()
            .map(|n| format!(", {n}"))
            .unwrap_or_default();
        if (answer.count as u64) < self.min_rows {
            let summary = format!(
                "query returned {} rows, expected at least {} on {shown}",
                answer.count, self.min_rows
            );
            return Outcome::critical(summary.clone())
                .with_details(format!("{summary}\n{log}"))
                .with_perfdata(perfdata);
        }
        let rows_text = match answer.count {
            1 => "1 row".to_string(),
            n => format!("{n} rows"),
        };
        let checks_age = self.warn_age.is_some() || self.crit_age.is_some();
        let first = answer.rows.first().and_then(|r| r.first());
        let outcome = match (checks_age, first) {
            (false, _) | (true, None) => Outcome::ok(format!(
                "{rows_text} in {} from {source}{note}",
                fmt_secs(total)
            )),
            (true, Some(cell)) => match cell.time_ms() {
                Err(why) => {
                    let column = answer.columns.first().map(String::as_str).unwrap_or("1");
                    Outcome::unknown(format!(
                        "cannot tell the newest payload's age: the first column ({column}) \
                         of the first row {why} on {shown}"
                    ))
                }
                Ok(ms) => {
                    let age = (now_ms() - ms) as f64 / 1000.0;
                    let mut p = Perfdatum::new("age", age.max(0.0).round(), "s");
                    p.warn = self.warn_age.map(|d| d.as_secs().to_string());
                    p.crit = self.crit_age.map(|d| d.as_secs().to_string());
                    perfdata.push(p);
                    let newest = format!(
                        "newest payload {} ({} old)",
                        fmt_utc(ms, UtcPrecision::Seconds),
                        fmt_age(age.max(0.0))
                    );
                    let over = |limit: Option<Duration>| limit.filter(|l| age > l.as_secs_f64());
                    if let Some(limit) = over(self.crit_age) {
                        Outcome::critical(format!(
                            "{newest}, older than crit_age {} on {shown}",
                            format_duration(limit)
                        ))
                    } else if let Some(limit) = over(self.warn_age) {
                        Outcome::warning(format!(
                            "{newest}, older than warn_age {} on {shown}",
                            format_duration(limit)
                        ))
                    } else {
                        Outcome::ok(format!(
                            "{newest}; {rows_text} in {} from {source}{note}",
                            fmt_secs(total)
                        ))
                    }
                }
            },
        };
        let details = format!("{}\n{log}", outcome.summary);
        outcome.with_details(details).with_perfdata(perfdata)
    }
}
