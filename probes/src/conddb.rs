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
use crate::outcome::{fmt_secs, seconds, Outcome, Perfdatum, Status};
use crate::params::{check_template, config_dir, duration_param};
use crate::{placeholders, Probe, ProbeContext, SharedProbe, Stop};

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
/// Words that have no place in a read-only query (outside literals and comments). The
/// read-only transaction is the real guard; this catches mistakes at `gridprobe check`.
/// (Words common as column names, such as COMMENT or LOCK, are left out: they cannot start a
/// statement here anyway, since the query must start with SELECT and hold one statement.)
const WRITE_WORDS: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "CREATE", "DROP", "ALTER", "TRUNCATE",
    "GRANT", "REVOKE", "CALL", "EXEC", "EXECUTE", "COPY", "ATTACH", "DETACH", "PRAGMA", "VACUUM",
    "INTO",
];

/// Parameters.
pub const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "url",
        ty: "string",
        default: ParamDefault::Value("the service endpoint"),
        description: "Database: postgresql://USER@HOST:PORT/DB, mysql:// (or mariadb://) \
                      USER@HOST:PORT/DB, sqlite:///PATH (or sqlite:PATH relative to the config \
                      file), frontier://HOST:PORT/PATH or http(s)://… for a Frontier server. \
                      No password in it: see `password_env`, `password_file`. Placeholders \
                      are expanded",
    },
    ParamDoc {
        name: "query",
        ty: "string",
        default: ParamDefault::Required,
        description: "One read-only SELECT (or WITH … SELECT), e.g. the latest IOV of a tag; \
                      the first column of the first row is the newest payload's time (a \
                      timestamp, a date-time text, or a Unix time in s, ms, us or ns). \
                      Placeholders are expanded. Required",
    },
    ParamDoc {
        name: "warn_age",
        ty: "duration",
        default: ParamDefault::Optional,
        description: "WARNING when the newest payload is older than this. Optional",
    },
    ParamDoc {
        name: "crit_age",
        ty: "duration",
        default: ParamDefault::Optional,
        description: "CRITICAL when the newest payload is older than this. Optional",
    },
    ParamDoc {
        name: "min_rows",
        ty: "integer",
        default: ParamDefault::Value("1"),
        description: "CRITICAL when the query returns fewer rows",
    },
    ParamDoc {
        name: "password_env",
        ty: "string",
        default: ParamDefault::Optional,
        description: "Name of the environment variable holding the password. Optional",
    },
    ParamDoc {
        name: "password_file",
        ty: "string",
        default: ParamDefault::Optional,
        description: "File holding the password (first line; re-read every run), relative to \
                      the config file. Optional",
    },
    ParamDoc {
        name: "tls_verify",
        ty: "bool",
        default: ParamDefault::Value("true"),
        description: "Verify the server certificate: Frontier over https, PostgreSQL with \
                      `?sslmode=require` in the URL (other modes connect without TLS). MariaDB \
                      connections are made without TLS",
    },
    ParamDoc {
        name: "ca_file",
        ty: "string",
        default: ParamDefault::Optional,
        description: "Extra trust anchors (PEM file or directory) for Frontier over https and \
                      PostgreSQL with sslmode=require; relative to the config file. Optional",
    },
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CondDbParams {
    url: Option<String>,
    query: String,
    warn_age: Option<String>,
    crit_age: Option<String>,
    min_rows: Option<u64>,
    password_env: Option<String>,
    password_file: Option<String>,
    tls_verify: Option<bool>,
    ca_file: Option<String>,
}

/// Where the password comes from.
#[derive(Debug, Clone)]
enum Password {
    Env(String),
    File(PathBuf),
}

/// Builds the probe.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    let p: CondDbParams = def
        .params
        .deserialize(&config.sources)
        .map_err(|d| vec![d])?;
    let err = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
    let mut errors = Vec::new();
    let fixed = |t: &str| placeholders::names(t).is_ok_and(|n| n.is_empty());

    errors.extend(check_template(def, config, "query", &p.query));
    if fixed(&p.query) {
        if let Err(e) = check_read_only(&p.query) {
            errors.push(err("query", e).with_help(
                "conddb probes only read: write one SELECT (or WITH … SELECT) statement",
            ));
        }
    }
    if let Some(url) = &p.url {
        errors.extend(check_template(def, config, "url", url));
        if fixed(url) {
            if let Err(e) = parse_db_url(url) {
                errors.push(err("url", format!("`url`: {e}")));
            }
        }
    }
    let warn_age = duration_param(def, config, "warn_age", p.warn_age.as_deref(), &mut errors);
    let crit_age = duration_param(def, config, "crit_age", p.crit_age.as_deref(), &mut errors);
    if let (Some(w), Some(c)) = (warn_age, crit_age) {
        if w > c {
            errors.push(err(
                "warn_age",
                format!(
                    "warn_age ({}) is above crit_age ({}): the warning would never show",
                    format_duration(w),
                    format_duration(c)
                ),
            ));
        }
    }
    let min_rows = p.min_rows.unwrap_or(DEFAULT_MIN_ROWS);
    let base = config_dir(def, config);
    let password = match (&p.password_env, &p.password_file) {
        (Some(_), Some(_)) => {
            errors.push(
                err(
                    "password_file",
                    "`password_env` and `password_file` are both set".into(),
                )
                .with_help("keep one of them"),
            );
            None
        }
        (Some(var), None) => {
            if var.is_empty() || var.contains(['=', '\0']) {
                errors.push(err(
                    "password_env",
                    format!("`{var}` is not an environment variable name"),
                ));
            }
            Some(Password::Env(var.clone()))
        }
        (None, Some(file)) => Some(Password::File(base.join(file))),
        (None, None) => None,
    };
    let tls = TlsSettings::from_params(
        def,
        config,
        TlsParams {
            tls_verify: p.tls_verify,
            ca_file: p.ca_file,
            ..TlsParams::default()
        },
    )
    .map_err(|ds| errors.extend(ds))
    .ok();
    match tls {
        Some(tls) if errors.is_empty() => Ok(Arc::new(CondDbProbe {
            url: p.url,
            query: p.query,
            warn_age,
            crit_age,
            min_rows,
            password,
            tls,
            base,
        })),
        _ => Err(errors),
    }
}

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

/// Checks that `sql` is one read-only statement: SELECT, WITH or VALUES first, no second
/// statement, none of the [`WRITE_WORDS`] outside literals and comments.
fn check_read_only(sql: &str) -> Result<(), String> {
    let code = strip_literals(sql)?;
    let trimmed = code.trim().trim_end_matches(';').trim_end();
    if trimmed.is_empty() {
        return Err("`query` is empty".to_string());
    }
    if trimmed.contains(';') {
        return Err("`query` holds more than one statement: write a single SELECT".to_string());
    }
    let words: Vec<String> = trimmed
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let first = words.first().map(String::as_str).unwrap_or("");
    if !matches!(first, "SELECT" | "WITH" | "VALUES") {
        return Err(format!(
            "`query` must be a read (SELECT or WITH … SELECT), not a `{first}` statement"
        ));
    }
    if let Some(w) = words.iter().find(|w| WRITE_WORDS.contains(&w.as_str())) {
        return Err(format!(
            "`query` must only read, but it uses `{w}` (outside quotes)"
        ));
    }
    Ok(())
}

/// `sql` with string literals, quoted identifiers and comments blanked out.
fn strip_literals(sql: &str) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len());
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' | '"' | '`' => {
                // Doubled quotes escape themselves in SQL; a backslash escapes in MySQL.
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(format!("`query` has an unclosed {c} quote")),
                        Some('\\') if c == '\'' => j += 2,
                        Some(q) if *q == c && chars.get(j + 1) == Some(&c) => j += 2,
                        Some(q) if *q == c => break,
                        Some(_) => j += 1,
                    }
                }
                out.push(' ');
                i = j + 1;
            }
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                out.push(' ');
            }
            '/' if next == Some('*') => {
                let mut j = i + 2;
                while j + 1 < chars.len() && !(chars[j] == '*' && chars[j + 1] == '/') {
                    j += 1;
                }
                if j + 1 >= chars.len() {
                    return Err("`query` has an unclosed /* comment".to_string());
                }
                out.push(' ');
                i = j + 2;
            }
            '$' => {
                // PostgreSQL dollar quoting: $tag$ … $tag$.
                let tag_end = chars[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e) if chars[e] == '$' => {
                        let tag: String = chars[i..=e].iter().collect();
                        let rest: String = chars[e + 1..].iter().collect();
                        let Some(close) = rest.find(&tag) else {
                            return Err(format!("`query` has an unclosed {tag} quote"));
                        };
                        out.push(' ');
                        i = e + 1 + rest[..close].chars().count() + tag.chars().count();
                    }
                    _ => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// One value of the answer, as far as the probe needs to understand it.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    /// Milliseconds since the Unix epoch.
    Time(i64),
    /// A type the probe does not read, by name.
    Other(String),
}

impl Cell {
    /// How it is shown in messages.
    fn show(&self) -> String {
        match self {
            Cell::Null => "NULL".to_string(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => f.to_string(),
            Cell::Text(t) => {
                let t: String = t.chars().take(80).collect();
                format!("'{t}'")
            }
            Cell::Time(ms) => fmt_ms(*ms),
            Cell::Other(ty) => format!("<{ty}>"),
        }
    }

    /// The time this value stands for, in milliseconds since the Unix epoch.
    fn time_ms(&self) -> Result<i64, String> {
        match self {
            Cell::Time(ms) => Ok(*ms),
            Cell::Int(i) => Ok(unix_number_ms(*i as f64)),
            Cell::Float(f) if f.is_finite() => Ok(unix_number_ms(*f)),
            Cell::Text(t) => parse_time_text(t),
            Cell::Null => Err("is NULL".to_string()),
            Cell::Float(_) => Err("is not a finite number".to_string()),
            Cell::Other(ty) => Err(format!(
                "has type {ty}, which the probe does not read as a time (cast it to a \
                 timestamp or a number)"
            )),
        }
    }
}

/// A Unix time in s, ms, us or ns, told apart by magnitude (10^11 s is the year 5138, 10^11 ms
/// the year 1973), in milliseconds.
fn unix_number_ms(v: f64) -> i64 {
    let a = v.abs();
    let ms = if a < 1e11 {
        v * 1e3
    } else if a < 1e14 {
        v
    } else if a < 1e17 {
        v / 1e3
    } else {
        v / 1e6
    };
    ms as i64
}

/// A date-time text (with an offset, or taken as UTC without one), a date, or a number.
fn parse_time_text(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    // PostgreSQL writes offsets as `+00`, which jiff reads only with minutes.
    if let Some(ts) = t
        .rfind(['+', '-'])
        .filter(|&i| i > 10 && t[i + 1..].len() == 2)
        .and_then(|_| format!("{t}:00").parse::<jiff::Timestamp>().ok())
    {
        return Ok(ts.as_millisecond());
    }
    if let Ok(dt) = t.parse::<jiff::civil::DateTime>() {
        if let Ok(z) = dt.to_zoned(jiff::tz::TimeZone::UTC) {
            return Ok(z.timestamp().as_millisecond());
        }
    }
    if let Ok(n) = t.parse::<f64>() {
        if n.is_finite() {
            return Ok(unix_number_ms(n));
        }
    }
    Err(format!("'{t}' is not a date-time"))
}

/// `2026-11-25 14:03:07 UTC`.
fn fmt_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => format!("{ms} ms since the epoch"),
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An age as people read it: `42 s`, `3.5 min`, `2.1 h`, `3.0 days`.
fn fmt_age(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.1} min", secs / 60.0)
    } else if secs < 2.0 * 86_400.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} days", secs / 86_400.0)
    }
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
    /// Could not connect or log in (CRITICAL).
    Connect(String),
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
                let (status, text) = match e {
                    DbError::Connect(m) => (Status::Critical, format!("connection failed: {m}")),
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
                return Outcome::new(status, summary.clone())
                    .with_details(format!("{summary}\n{log}"))
                    .with_perfdata(perfdata);
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
                        fmt_ms(ms),
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

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// The message of a tokio-postgres error: the server's for database errors, else the chain.
fn pg_reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

/// The TLS of a PostgreSQL connection: none, unless the URL says `sslmode=require` (then
/// rustls, verified as `tls_verify` and `ca_file` say). `prefer`, libpq's default, stays
/// plain: falling back after a failed handshake would hide the failure.
#[derive(Clone)]
enum PgTls {
    Plain,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Connects, and drives the connection in a task of its own (it ends with the client).
async fn pg_connect<T>(
    ctx: &ProbeContext,
    config: &tokio_postgres::Config,
    tls: T,
) -> Result<tokio_postgres::Client, DbError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = match ctx.bounded(config.connect(tls)).await {
        Err(Stop::Timeout) => {
            return Err(DbError::Timeout {
                phase: PHASE_CONNECT,
                cancel: None,
            })
        }
        Err(Stop::Cancelled) => return Err(DbError::Cancelled(PHASE_CONNECT)),
        Ok(Err(e)) => return Err(DbError::Connect(pg_reason(&e))),
        Ok(Ok(c)) => c,
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "conddb PostgreSQL connection ended");
        }
    });
    Ok(client)
}

async fn postgres(
    ctx: &ProbeContext,
    url: &Url,
    password: Option<String>,
    query: &str,
    tls: &TlsSettings,
) -> Result<Answer, DbError> {
    let mut config: tokio_postgres::Config = url
        .as_str()
        .parse()
        .map_err(|e| DbError::Local(format!("invalid PostgreSQL URL: {e}")))?;
    if let Some(p) = password {
        config.password(p);
    }
    config.application_name("gridprobe");
    config.connect_timeout(ctx.remaining().max(Duration::from_millis(1)));
    let pg_tls = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        let (client_config, _) = tls.client_config(&[]).map_err(DbError::Local)?;
        PgTls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
            client_config.as_ref().clone(),
        ))
    } else {
        PgTls::Plain
    };
    let start = Instant::now();
    let client = match &pg_tls {
        PgTls::Plain => pg_connect(ctx, &config, tokio_postgres::NoTls).await?,
        PgTls::Rustls(t) => pg_connect(ctx, &config, t.clone()).await?,
    };
    let connect = start.elapsed();
    let cancel_token = client.cancel_token();
    let mut client = client;
    // The server stops the statement by itself shortly after our deadline, should our cancel
    // request never arrive.
    let server_limit = ctx.remaining() + CANCEL_BUDGET;
    let start = Instant::now();
    let work = async {
        let tx = client.build_transaction().read_only(true).start().await?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            server_limit.as_millis().max(1)
        ))
        .await?;
        let rows = tx.query(query, &[]).await?;
        tx.rollback().await?;
        Ok::<_, tokio_postgres::Error>(rows)
    };
    let rows = match ctx.bounded(work).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return Err(DbError::Query(pg_reason(&e))),
        Err(stop) => {
            let cancel = tokio::time::timeout(CANCEL_BUDGET, async {
                match pg_tls {
                    PgTls::Plain => cancel_token.cancel_query(tokio_postgres::NoTls).await,
                    PgTls::Rustls(t) => cancel_token.cancel_query(t).await,
                }
            })
            .await;
            let cancel = match cancel {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(pg_reason(&e)),
                Err(_) => Err(format!(
                    "no answer within {}",
                    format_duration(CANCEL_BUDGET)
                )),
            };
            return Err(match stop {
                Stop::Timeout => DbError::Timeout {
                    phase: PHASE_QUERY,
                    cancel: Some(cancel),
                },
                Stop::Cancelled => DbError::Cancelled(PHASE_QUERY),
            });
        }
    };
    let query_time = start.elapsed();
    let mut answer = Answer {
        count: rows.len(),
        connect: Some(connect),
        query: Some(query_time),
        ..Answer::default()
    };
    if let Some(first) = rows.first() {
        answer.columns = first
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
    }
    for row in rows.iter().take(SHOWN_ROWS) {
        answer
            .rows
            .push((0..row.len()).map(|i| pg_cell(row, i)).collect());
    }
    Ok(answer)
}

/// One PostgreSQL value.
fn pg_cell(row: &tokio_postgres::Row, i: usize) -> Cell {
    use tokio_postgres::types::Type;
    let ty = row.columns()[i].type_().clone();
    let get = |r: Result<Option<Cell>, tokio_postgres::Error>| match r {
        Ok(Some(c)) => c,
        Ok(None) => Cell::Null,
        Err(_) => Cell::Other(ty.name().to_string()),
    };
    match ty {
        Type::TIMESTAMP | Type::TIMESTAMPTZ => get(row
            .try_get::<_, Option<SystemTime>>(i)
            .map(|v| v.map(|t| Cell::Time(system_ms(t))))),
        Type::INT2 => get(row
            .try_get::<_, Option<i16>>(i)
            .map(|v| v.map(|n| Cell::Int(n.into())))),
        Type::INT4 => get(row
            .try_get::<_, Option<i32>>(i)
            .map(|v| v.map(|n| Cell::Int(n.into())))),
        Type::INT8 => get(row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int))),
        Type::FLOAT4 => get(row
            .try_get::<_, Option<f32>>(i)
            .map(|v| v.map(|n| Cell::Float(n.into())))),
        Type::FLOAT8 => get(row.try_get::<_, Option<f64>>(i).map(|v| v.map(Cell::Float))),
        Type::BOOL => get(row
            .try_get::<_, Option<bool>>(i)
            .map(|v| v.map(|b| Cell::Text(b.to_string())))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => get(row
            .try_get::<_, Option<String>>(i)
            .map(|v| v.map(Cell::Text))),
        other => Cell::Other(other.name().to_string()),
    }
}

fn system_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

// ---------------------------------------------------------------------------------------------
// MariaDB / MySQL

fn my_reason(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => s.message.clone(),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let _ = write!(text, ": {s}");
                source = s.source();
            }
            text
        }
    }
}

async fn mysql(
    ctx: &ProbeContext,
    url: &Url,
    password: Option<String>,
    query: &str,
) -> Result<Answer, DbError> {
    use mysql_async::prelude::Queryable;
    let opts = mysql_async::Opts::from_url(url.as_str())
        .map_err(|e| DbError::Local(format!("invalid MySQL URL: {e}")))?;
    let mut builder = mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false);
    if let Some(p) = password {
        builder = builder.pass(Some(p));
    }
    let opts = mysql_async::Opts::from(builder);
    let start = Instant::now();
    let mut conn = match ctx.bounded(mysql_async::Conn::new(opts.clone())).await {
        Err(Stop::Timeout) => {
            return Err(DbError::Timeout {
                phase: PHASE_CONNECT,
                cancel: None,
            })
        }
        Err(Stop::Cancelled) => return Err(DbError::Cancelled(PHASE_CONNECT)),
        Ok(Err(e)) => return Err(DbError::Connect(my_reason(&e))),
        Ok(Ok(c)) => c,
    };
    let connect = start.elapsed();
    let id = conn.id();
    let start = Instant::now();
    let work = async {
        // TIMESTAMP values in UTC; DATETIME values are taken as UTC.
        conn.query_drop("SET time_zone = '+00:00'").await?;
        let mut opts = mysql_async::TxOpts::default();
        opts.with_readonly(true);
        let mut tx = conn.start_transaction(opts).await?;
        let rows: Vec<mysql_async::Row> = tx.exec(query, ()).await?;
        tx.rollback().await?;
        Ok::<_, mysql_async::Error>(rows)
    };
    let result = ctx.bounded(work).await;
    let rows = match result {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return Err(DbError::Query(my_reason(&e))),
        Err(stop) => {
            // The query goes on at the server until killed from another connection.
            let kill = async {
                let mut killer = mysql_async::Conn::new(opts).await?;
                killer.query_drop(format!("KILL QUERY {id}")).await?;
                killer.disconnect().await
            };
            let cancel = match tokio::time::timeout(CANCEL_BUDGET, kill).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(my_reason(&e)),
                Err(_) => Err(format!(
                    "no answer within {}",
                    format_duration(CANCEL_BUDGET)
                )),
            };
            return Err(match stop {
                Stop::Timeout => DbError::Timeout {
                    phase: PHASE_QUERY,
                    cancel: Some(cancel),
                },
                Stop::Cancelled => DbError::Cancelled(PHASE_QUERY),
            });
        }
    };
    let query_time = start.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.disconnect()).await;
    let mut answer = Answer {
        count: rows.len(),
        connect: Some(connect),
        query: Some(query_time),
        ..Answer::default()
    };
    if let Some(first) = rows.first() {
        answer.columns = first
            .columns_ref()
            .iter()
            .map(|c| c.name_str().into_owned())
            .collect();
    }
    for row in rows.iter().take(SHOWN_ROWS) {
        answer.rows.push(
            (0..row.len())
                .map(|i| row.as_ref(i).map(my_cell).unwrap_or(Cell::Null))
                .collect(),
        );
    }
    Ok(answer)
}

/// One MariaDB value (binary protocol: typed).
fn my_cell(v: &mysql_async::Value) -> Cell {
    use mysql_async::Value;
    match v {
        Value::NULL => Cell::Null,
        Value::Int(i) => Cell::Int(*i),
        Value::UInt(u) => Cell::Int(i64::try_from(*u).unwrap_or(i64::MAX)),
        Value::Float(f) => Cell::Float((*f).into()),
        Value::Double(f) => Cell::Float(*f),
        Value::Bytes(b) => Cell::Text(String::from_utf8_lossy(b).into_owned()),
        Value::Date(y, mo, d, h, mi, s, us) => {
            let dt = jiff::civil::DateTime::new(
                i16::try_from(*y).unwrap_or(0),
                i8::try_from(*mo).unwrap_or(1),
                i8::try_from(*d).unwrap_or(1),
                i8::try_from(*h).unwrap_or(0),
                i8::try_from(*mi).unwrap_or(0),
                i8::try_from(*s).unwrap_or(0),
                i32::try_from(*us * 1000).unwrap_or(0),
            );
            match dt.and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC)) {
                Ok(z) => Cell::Time(z.timestamp().as_millisecond()),
                // 0000-00-00 and the like.
                Err(_) => Cell::Other("zero date".to_string()),
            }
        }
        Value::Time(..) => Cell::Other("time".to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

async fn sqlite(ctx: &ProbeContext, path: PathBuf, query: String) -> Result<Answer, DbError> {
    use rusqlite::types::ValueRef;
    use rusqlite::OpenFlags;
    let start = Instant::now();
    // Read-only, never created: a missing file is an error, not a new empty database.
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| DbError::Connect(format!("cannot open {}: {e}", path.display())))?;
    let connect = start.elapsed();
    let interrupt = conn.get_interrupt_handle();
    let start = Instant::now();
    let work = tokio::task::spawn_blocking(move || {
        conn.pragma_update(None, "query_only", true)?;
        let mut stmt = conn.prepare(&query)?;
        if !stmt.readonly() {
            return Err(rusqlite::Error::InvalidQuery);
        }
        let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
        let n = columns.len();
        let mut rows = stmt.query([])?;
        let mut shown = Vec::new();
        let mut count = 0usize;
        while let Some(row) = rows.next()? {
            if shown.len() < SHOWN_ROWS {
                let mut cells = Vec::with_capacity(n);
                for i in 0..n {
                    cells.push(match row.get_ref(i)? {
                        ValueRef::Null => Cell::Null,
                        ValueRef::Integer(v) => Cell::Int(v),
                        ValueRef::Real(v) => Cell::Float(v),
                        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(_) => Cell::Other("blob".to_string()),
                    });
                }
                shown.push(cells);
            }
            count += 1;
        }
        Ok((columns, shown, count))
    });
    let mut work = std::pin::pin!(work);
    let result = match ctx.bounded(&mut work).await {
        Ok(r) => r,
        Err(stop) => {
            // Stops the statement at its next step; the blocking thread then ends.
            interrupt.interrupt();
            let stopped = tokio::time::timeout(CANCEL_BUDGET, &mut work).await.is_ok();
            return Err(match stop {
                Stop::Timeout => DbError::Timeout {
                    phase: PHASE_QUERY,
                    cancel: Some(if stopped {
                        Ok(())
                    } else {
                        Err("the statement did not stop".to_string())
                    }),
                },
                Stop::Cancelled => DbError::Cancelled(PHASE_QUERY),
            });
        }
    };
    let (columns, rows, count) = match result {
        Err(e) => return Err(DbError::Local(format!("SQLite worker failed: {e}"))),
        Ok(Err(rusqlite::Error::InvalidQuery)) => {
            return Err(DbError::Query("the statement is not read-only".to_string()))
        }
        Ok(Err(e)) => return Err(DbError::Query(e.to_string())),
        Ok(Ok(r)) => r,
    };
    Ok(Answer {
        columns,
        rows,
        count,
        connect: Some(connect),
        query: Some(start.elapsed()),
        ..Answer::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Frontier
//
// A Frontier request is an HTTP GET of
//   <server>/Frontier?type=frontier_request:1:DEFAULT&encoding=BLOBzip&p1=<query>
// where the query is zlib-compressed and base64-encoded with `.`, `-` and `_` in place of
// `+`, `/` and `=` (URL-safe, and stable for squid caching). The answer is XML:
//   <frontier version=…><transaction payloads="1"><payload type=… encoding="BLOBzip">
//     <data>base64 of the zlib-compressed rows</data>
//     <quality error="0" md5=… records="N" full_size=…/>
//   </payload></transaction></frontier>
// with `error="1" message="…"` on a failed query. The rows are a stream of typed fields, each
// a type byte (bit 7: NULL, no value follows) then a big-endian value; a row ends with an EOR
// byte, and the first row holds the column names and types.

/// Field types of Frontier's BLOB encoding.
const BLOB_BYTE: u8 = 0;
const BLOB_INT4: u8 = 1;
const BLOB_INT8: u8 = 2;
const BLOB_FLOAT: u8 = 3;
const BLOB_DOUBLE: u8 = 4;
const BLOB_TIME: u8 = 5;
const BLOB_ARRAY_BYTE: u8 = 6;
const BLOB_EOR: u8 = 7;
const BLOB_NULL: u8 = 0x80;

/// The `p1` parameter for a query.
fn frontier_encode(query: &str) -> String {
    use std::io::Write as _;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(query.as_bytes());
    let zipped = z.finish().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .encode(zipped)
        .chars()
        .map(|c| match c {
            '+' => '.',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

/// The payload of a Frontier answer.
#[derive(Debug, Default)]
struct FrontierPayload {
    encoding: String,
    data: String,
    error: Option<String>,
    records: Option<usize>,
}

fn parse_frontier_xml(xml: &[u8]) -> Result<FrontierPayload, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut p = FrontierPayload::default();
    let mut in_data = false;
    let mut seen_frontier = false;
    let mut seen_quality = false;
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            format!(
                "unreadable Frontier answer at byte {}: {e}",
                reader.buffer_position()
            )
        })?;
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &[u8]| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == name)
                        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                };
                match e.local_name().as_ref() {
                    b"frontier" => seen_frontier = true,
                    b"payload" => p.encoding = attr(b"encoding").unwrap_or_default(),
                    b"data" => in_data = matches!(event, Event::Start(_)),
                    b"quality" => {
                        seen_quality = true;
                        if attr(b"error").is_some_and(|v| v.trim() != "0") {
                            p.error = Some(
                                attr(b"message")
                                    .unwrap_or_else(|| "error without a message".into()),
                            );
                        }
                        p.records = attr(b"records").and_then(|r| r.trim().parse().ok());
                    }
                    b"global_error" => {
                        p.error = Some(attr(b"message").unwrap_or_else(|| "global error".into()));
                        seen_quality = true;
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_data => {
                p.data
                    .push_str(&t.decode().map_err(|e| format!("bad data text: {e}"))?);
            }
            Event::End(e) if e.local_name().as_ref() == b"data" => in_data = false,
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !seen_frontier {
        return Err("the answer is not a Frontier document (no <frontier> element)".to_string());
    }
    if !seen_quality {
        return Err("the Frontier answer has no <quality> element (cut short?)".to_string());
    }
    Ok(p)
}

/// Decodes the rows of a payload: (column names, rows).
fn decode_frontier_rows(p: &FrontierPayload) -> Result<(Vec<String>, Vec<Vec<Cell>>), String> {
    let compact: String = p.data.chars().filter(|c| !c.is_whitespace()).collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("payload is not base64: {e}"))?;
    let blob = if p.encoding.to_ascii_lowercase().starts_with("blobzip") {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&raw[..])
            .take(MAX_FRONTIER_BODY as u64 * 4)
            .read_to_end(&mut out)
            .map_err(|e| format!("payload does not inflate: {e}"))?;
        out
    } else if p.encoding.eq_ignore_ascii_case("blob") {
        raw
    } else {
        return Err(format!("unsupported payload encoding `{}`", p.encoding));
    };
    let mut rows = parse_blob(&blob)?;
    if rows.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // The first row: column name, type name, name, type, …
    let meta = rows.remove(0);
    let columns = meta
        .iter()
        .step_by(2)
        .map(|c| match c {
            Cell::Text(t) => t.clone(),
            other => other.show(),
        })
        .collect();
    Ok((columns, rows))
}

fn parse_blob(b: &[u8]) -> Result<Vec<Vec<Cell>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut i = 0;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = b
            .get(*i..*i + n)
            .ok_or_else(|| format!("payload cut short at byte {}", *i))?;
        *i += n;
        Ok(s)
    };
    while i < b.len() {
        let t = b[i];
        i += 1;
        if t & BLOB_NULL != 0 {
            row.push(Cell::Null);
            continue;
        }
        let cell = match t {
            BLOB_BYTE => Cell::Int(i64::from(take(&mut i, 1)?[0] as i8)),
            BLOB_INT4 => Cell::Int(i64::from(i32::from_be_bytes(arr(take(&mut i, 4)?)))),
            BLOB_INT8 => Cell::Int(i64::from_be_bytes(arr(take(&mut i, 8)?))),
            BLOB_FLOAT => Cell::Float(f64::from(f32::from_be_bytes(arr(take(&mut i, 4)?)))),
            BLOB_DOUBLE => Cell::Float(f64::from_be_bytes(arr(take(&mut i, 8)?))),
            BLOB_TIME => Cell::Time(i64::from_be_bytes(arr(take(&mut i, 8)?))),
            BLOB_ARRAY_BYTE => {
                let n = i32::from_be_bytes(arr(take(&mut i, 4)?));
                let n = usize::try_from(n).map_err(|_| format!("negative length at byte {i}"))?;
                Cell::Text(String::from_utf8_lossy(take(&mut i, n)?).into_owned())
            }
            BLOB_EOR => {
                rows.push(std::mem::take(&mut row));
                continue;
            }
            other => return Err(format!("unknown field type {other} at byte {}", i - 1)),
        };
        row.push(cell);
    }
    if !row.is_empty() {
        rows.push(row);
    }
    Ok(rows)
}

fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&s[..N]);
    a
}

async fn frontier(
    ctx: &ProbeContext,
    base: &Url,
    query: &str,
    tls: &TlsSettings,
    log: &mut String,
) -> Result<Answer, DbError> {
    let mut url = base.clone();
    url.set_query(Some(&format!(
        "type=frontier_request:1:DEFAULT&encoding=BLOBzip&p1={}",
        frontier_encode(query)
    )));
    let host = url.host_str().unwrap_or_default();
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let req = Request::builder()
        .method(Method::GET)
        .uri(target)
        .header(HOST, authority)
        .header(USER_AGENT, USER_AGENT_VALUE)
        // Frontier servers log the client by this header, as they do for frontier_client.
        .header(
            HeaderName::from_static("x-frontier-id"),
            format!("gridprobe {} {}", env!("CARGO_PKG_VERSION"), ctx.metric),
        )
        .body(Full::new(Bytes::new()))
        .map_err(|e| DbError::Local(format!("cannot build the Frontier request: {e}")))?;
    let mut timings = Timings::default();
    let mut progress = Progress::default();
    let mut certs: Vec<(String, CertInfo)> = Vec::new();
    let start = Instant::now();
    let resp = http::fetch(
        ctx,
        &url,
        req,
        tls,
        MAX_FRONTIER_BODY,
        &mut progress,
        Trace {
            timings: &mut timings,
            log: log,
            certs: &mut certs,
        },
    )
    .await
    .map_err(|f| match f {
        Failure::Stopped(Stop::Timeout, _) => DbError::Timeout {
            phase: PHASE_QUERY,
            cancel: None,
        },
        Failure::Stopped(Stop::Cancelled, _) => DbError::Cancelled(PHASE_QUERY),
        Failure::Critical(m) => DbError::Connect(m),
        Failure::Unknown(m) => DbError::Local(m),
    })?;
    let elapsed = start.elapsed();
    let connect = timings.connect.unwrap_or_default() + timings.tls.unwrap_or_default();
    if !resp.parts.status.is_success() {
        return Err(DbError::Query(status_text(resp.parts.status)));
    }
    if resp.truncated {
        return Err(DbError::Query(format!(
            "answer larger than {} MiB",
            MAX_FRONTIER_BODY >> 20
        )));
    }
    let payload = parse_frontier_xml(&resp.body).map_err(DbError::Query)?;
    if let Some(e) = payload.error {
        return Err(DbError::Query(format!("Frontier error: {e}")));
    }
    let (columns, rows) = decode_frontier_rows(&payload).map_err(DbError::Query)?;
    if let Some(n) = payload.records.filter(|n| *n != rows.len()) {
        return Err(DbError::Query(format!(
            "the payload holds {} rows, its quality record says {n}",
            rows.len()
        )));
    }
    // What the cache in front (squid) says about the answer.
    let header = |name: &str| {
        resp.parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut perfdata = Vec::new();
    let age = header("age").and_then(|a| a.trim().parse::<u64>().ok());
    if let Some(a) = age {
        perfdata.push(Perfdatum::new("cache_age", a as f64, "s"));
    }
    let cache = header("x-cache").map(|x| x.split_whitespace().next().unwrap_or("").to_string());
    let note = match (&cache, age) {
        (Some(c), Some(a)) => Some(format!("cache {c}, age {a} s")),
        (Some(c), None) => Some(format!("cache {c}")),
        (None, Some(a)) => Some(format!("cached, age {a} s")),
        (None, None) => None,
    };
    for name in [
        "age",
        "x-cache",
        "cache-control",
        "expires",
        "last-modified",
    ] {
        if let Some(v) = header(name) {
            let _ = writeln!(log, "cache header {name}: {v}");
        }
    }
    let count = rows.len();
    Ok(Answer {
        columns,
        rows: rows.into_iter().take(SHOWN_ROWS).collect(),
        count,
        connect: Some(connect),
        query: Some(elapsed.saturating_sub(connect)),
        perfdata,
        summary_note: note,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::test_support::test_service;
    use crate::test_support::{build_with, context, line_of};

    fn probe(params: &str) -> SharedProbe {
        crate::test_support::built(build, NAME, params)
    }

    fn ctx(timeout: Duration) -> ProbeContext {
        let mut c = context("127.0.0.1", None, timeout);
        c.metric = "org.test.CONDDB".into();
        c
    }

    fn labels(o: &Outcome) -> Vec<&str> {
        crate::test_support::perf_labels(o)
    }

    /// A name no other test uses.
    fn unique(what: &str) -> String {
        format!(
            "gridprobe_{what}_{}_{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        )
    }

    #[test]
    fn params_are_documented() {
        crate::kind::assert_params_documented::<CondDbParams>(PARAMS);
    }

    #[test]
    fn only_single_reads_pass() {
        for ok in [
            "SELECT max(since) FROM iov WHERE tag = 'x; DROP TABLE iov'",
            "  with t as (select 1 as a) select a from t;",
            "select 1 -- then delete everything\n",
            "/* update */ SELECT \"insert\" FROM t",
            "SELECT $$;delete$$, created_at, updated_by, comment, lock FROM t",
            "VALUES (1)",
        ] {
            assert_eq!(check_read_only(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("DELETE FROM iov", "not a `DELETE` statement"),
            ("SELECT 1; DROP TABLE x", "more than one statement"),
            ("select * into backup from iov", "uses `INTO`"),
            ("select * from iov for update", "uses `UPDATE`"),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                "uses `DELETE`",
            ),
            ("SELECT 'open", "unclosed ' quote"),
            ("", "empty"),
        ] {
            let e = check_read_only(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn times_are_read_from_several_forms() {
        let want = 1_764_082_901_000; // 2025-11-25 15:01:41 UTC
        assert_eq!(parse_time_text("2025-11-25 15:01:41+00"), Ok(want));
        assert_eq!(parse_time_text("2025-11-25T15:01:41Z"), Ok(want));
        assert_eq!(parse_time_text("2025-11-25T16:01:41+01:00"), Ok(want));
        assert_eq!(parse_time_text("2025-11-25 15:01:41"), Ok(want));
        assert_eq!(parse_time_text("1764082901"), Ok(want));
        assert_eq!(parse_time_text("2025-11-25 15:01:41.5+00"), Ok(want + 500));
        assert!(parse_time_text("yesterday").is_err());
        for v in [
            1_764_082_901f64,
            1_764_082_901e3,
            1_764_082_901e6,
            1_764_082_901e9,
        ] {
            assert_eq!(unix_number_ms(v), want, "{v}");
        }
        assert_eq!(Cell::Int(1_764_082_901).time_ms(), Ok(want));
        assert!(Cell::Null.time_ms().is_err());
        assert!(Cell::Other("date".into())
            .time_ms()
            .unwrap_err()
            .contains("cast"));
    }

    #[test]
    fn urls_choose_the_backend_and_never_hold_passwords() {
        let backend = |u: &str| parse_db_url(u).map(|(b, url)| (b, url.to_string()));
        assert_eq!(
            backend("mariadb://reader@db.example.org:3306/cond").map(|b| b.0),
            Ok(Backend::MySql)
        );
        assert_eq!(
            backend("frontier://frontier.example.org:8000/FrontierProd/Frontier"),
            Ok((
                Backend::Frontier,
                "http://frontier.example.org:8000/FrontierProd/Frontier".to_string()
            ))
        );
        assert_eq!(
            backend("sqlite:///var/lib/cond.db").map(|b| b.0),
            Ok(Backend::Sqlite)
        );
        let e = backend("postgresql://reader:secret@db/cond").unwrap_err();
        assert!(
            e.contains("holds a password") && !e.contains("secret"),
            "{e}"
        );
        assert!(backend("postgresql://db/cond?password=x").is_err());
        assert!(backend("oracle://db/cond")
            .unwrap_err()
            .contains("scheme `oracle`"));
    }

    #[test]
    fn bad_input_is_reported_at_check_time_with_positions() {
        let params = "url = 'postgresql://reader@db.example.org/cond'\n\
                      query = 'UPDATE iov SET since = 0'";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert_eq!(ds.len(), 1, "{ds:?}");
        assert_eq!(
            ds[0].location.as_ref().map(|l| l.line),
            Some(line_of(NAME, params, "query ="))
        );
        assert!(
            ds[0].message.contains("must be a read"),
            "{}",
            ds[0].message
        );

        let params = "url = 'mysql://root:pw@db.example.org/cond'\nquery = 'SELECT 1'\n\
                      password_env = 'X'\npassword_file = 'pw.txt'\nwarn_age = '2d'\n\
                      crit_age = '1d'";
        let ds = build_with(build, NAME, params).unwrap_err();
        let messages: Vec<&str> = ds.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(ds.len(), 3, "{messages:?}");
        assert!(
            messages.iter().any(|m| m.contains("holds a password")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("both set")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("above crit_age")),
            "{messages:?}"
        );

        // A query built from placeholders is checked per instance.
        let p = probe("url = 'sqlite:///x.db'\nquery = 'SELECT x FROM {param.table}'");
        let mut c = ctx(Duration::from_secs(5));
        c.service
            .params
            .insert("table".into(), "t; DROP TABLE t".into());
        assert!(p
            .check_instance(&c)
            .unwrap_err()
            .contains("more than one statement"));
        c.service.params.insert("table".into(), "iov".into());
        assert_eq!(p.check_instance(&c), Ok(()));
        // No url and no endpoint.
        let p = probe("query = 'SELECT 1'");
        let mut c = ctx(Duration::from_secs(5));
        c.service.endpoint = None;
        assert!(p
            .check_instance(&c)
            .unwrap_err()
            .contains("has no endpoint"));
    }

    // ---------------------------------------------------------------------------------------
    // PostgreSQL (scripts/services/databases.sh)

    async fn pg_admin(url: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(conn);
        client
    }

    #[tokio::test]
    async fn postgres_fresh_stale_missing_and_read_only() {
        let Some(url) = test_service("GRIDPROBE_TEST_PG") else {
            return;
        };
        let admin = pg_admin(&url).await;
        let table = unique("iov");
        admin
            .batch_execute(&format!(
                "CREATE TABLE {table} (tag text, since bigint, inserted_at timestamptz);
                 INSERT INTO {table} VALUES ('t', 1, now() - interval '10 minutes'),
                                             ('t', 2, now() - interval '3 days');
                 CREATE SEQUENCE {table}_seq;"
            ))
            .await
            .expect("set up");
        let query = format!("SELECT max(inserted_at), count(*) FROM {table} WHERE tag = 't'");

        let o = probe(&format!(
            "url = '{url}'\nquery = \"{query}\"\nwarn_age = '1h'"
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.starts_with("newest payload "), "{}", o.summary);
        assert!(
            o.summary.contains("(10.0 min old); 1 row in"),
            "{}",
            o.summary
        );
        assert!(
            o.summary.ends_with(&format!("from PostgreSQL {url}")),
            "{}",
            o.summary
        );
        assert_eq!(labels(&o), ["connect", "query", "total", "rows", "age"]);

        let o = probe(&format!(
            "url = '{url}'\nquery = \"{query}\"\nwarn_age = '5m'"
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Warning, "{o:?}");
        assert!(
            o.summary.contains("older than warn_age 5m"),
            "{}",
            o.summary
        );
        let o = probe(&format!(
            "url = '{url}'\nquery = \"SELECT min(inserted_at) FROM {table}\"\nwarn_age = '1h'\ncrit_age = '1d'"
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.contains("(3.0 days old), older than crit_age 1d"),
            "{}",
            o.summary
        );

        let o = probe(&format!(
            "url = '{url}'\nquery = 'SELECT since FROM gridprobe_nosuch_table'"
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!("query failed: relation \"gridprobe_nosuch_table\" does not exist on {url}")
        );

        // Passes the lexical check, but writes: the read-only transaction refuses it.
        let o = probe(&format!(
            "url = '{url}'\nquery = \"SELECT nextval('{table}_seq')\""
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(o.summary.contains("read-only transaction"), "{}", o.summary);

        let o = probe(&format!(
            "url = '{url}'\nquery = \"SELECT since FROM {table} WHERE tag = 'none'\""
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary
                .starts_with("query returned 0 rows, expected at least 1"),
            "{}",
            o.summary
        );

        admin
            .batch_execute(&format!("DROP TABLE {table}; DROP SEQUENCE {table}_seq"))
            .await
            .expect("clean up");
    }

    #[tokio::test]
    async fn postgres_password_from_env_or_file() {
        let Some(url) = test_service("GRIDPROBE_TEST_PG_AUTH") else {
            return;
        };
        // Exported by scripts/test-env.sh with the right password.
        assert!(std::env::var("GRIDPROBE_TEST_PG_AUTH_PASSWORD").is_ok());
        let o = probe(&format!(
            "url = '{url}'\nquery = 'SELECT now()'\npassword_env = 'GRIDPROBE_TEST_PG_AUTH_PASSWORD'\nwarn_age = '1h'"
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "not-the-password\n").expect("write");
        let o = probe(&format!(
            "url = '{url}'\nquery = 'SELECT now()'\npassword_file = '{}'",
            file.display()
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!(
                "connection failed: password authentication failed for user \"gridprobe_auth\" on {url}"
            )
        );

        let o = probe(&format!(
            "url = '{url}'\nquery = 'SELECT 1'\npassword_env = 'GRIDPROBE_TEST_NO_SUCH_VARIABLE'"
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Unknown, "{o:?}");
        assert!(
            o.summary
                .contains("GRIDPROBE_TEST_NO_SUCH_VARIABLE is not set"),
            "{}",
            o.summary
        );
    }

    #[tokio::test]
    async fn postgres_with_sslmode_require_speaks_tls() {
        let Some(url) = test_service("GRIDPROBE_TEST_PG") else {
            return;
        };
        let admin = pg_admin(&url).await;
        let ssl = admin
            .query_one("SHOW ssl", &[])
            .await
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default();
        if ssl != "on" {
            eprintln!("note: the test PostgreSQL has ssl off; TLS test not run");
            return;
        }
        let tls_url = format!("{url}?sslmode=require");
        // Debian's server certificate is self-signed ("snakeoil"): verification must fail...
        let o = probe(&format!("url = '{tls_url}'\nquery = 'SELECT 1'"))
            .run(&ctx(Duration::from_secs(10)))
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with("connection failed: "),
            "{}",
            o.summary
        );
        assert!(o.summary.contains("certificate"), "{}", o.summary);
        // ... and the connection is TLS when it is not verified.
        let o = probe(&format!(
            "url = '{tls_url}'\nquery = 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'\ntls_verify = false"
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.details.contains("  'true'"), "{}", o.details);
    }

    #[tokio::test]
    async fn postgres_query_past_the_timeout_is_cancelled_at_the_server() {
        let Some(url) = test_service("GRIDPROBE_TEST_PG") else {
            return;
        };
        let marker = unique("slow");
        let p = probe(&format!(
            "url = '{url}'\nquery = \"SELECT pg_sleep(60), '{marker}'\""
        ));
        let timeout = Duration::from_millis(1500);
        let start = Instant::now();
        let o = p.run(&ctx(timeout)).await;
        let took = start.elapsed();
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!(
                "timeout after 1.5s during query; the query was cancelled at the server on {url}"
            )
        );
        assert!(took < timeout + CANCEL_BUDGET, "took {took:?}");
        let admin = pg_admin(&url).await;
        let running = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
             AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
        );
        let mut left = 1;
        for _ in 0..20 {
            left = admin
                .query_one(&running, &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .expect("pg_stat_activity");
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(left, 0, "the query still runs at the server");
    }

    // ---------------------------------------------------------------------------------------
    // MariaDB

    async fn my_admin(url: &str) -> mysql_async::Conn {
        let opts = mysql_async::OptsBuilder::from_opts(
            mysql_async::Opts::from_url(url).expect("mysql url"),
        )
        .prefer_socket(false);
        mysql_async::Conn::new(opts)
            .await
            .expect("connect to the test MariaDB")
    }

    #[tokio::test]
    async fn mariadb_fresh_stale_missing_and_wrong_password() {
        use mysql_async::prelude::Queryable;
        let Some(url) = test_service("GRIDPROBE_TEST_MYSQL") else {
            return;
        };
        let mut admin = my_admin(&url).await;
        let table = unique("iov");
        admin
            .query_drop(format!(
                "CREATE TABLE {table} (tag VARCHAR(20), inserted_at DATETIME(3), ts TIMESTAMP NULL)"
            ))
            .await
            .expect("create");
        admin
            .query_drop(format!(
                "INSERT INTO {table} VALUES ('new', UTC_TIMESTAMP(3) - INTERVAL 10 MINUTE, NOW()),
                                            ('old', UTC_TIMESTAMP(3) - INTERVAL 3 DAY, NULL)"
            ))
            .await
            .expect("insert");

        let o = probe(&format!(
            "url = '{url}'\nquery = \"SELECT max(inserted_at) FROM {table}\"\nwarn_age = '1h'"
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(
            o.summary.contains("(10.0 min old); 1 row in"),
            "{}",
            o.summary
        );
        assert!(
            o.summary
                .contains("from MariaDB/MySQL mysql://root@127.0.0.1"),
            "{}",
            o.summary
        );

        // TIMESTAMP columns come back in UTC whatever the server's zone.
        let o = probe(&format!(
            "url = '{url}'\nquery = \"SELECT ts FROM {table} WHERE tag = 'new'\"\nwarn_age = '1m'"
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");

        let o = probe(&format!(
            "url = '{url}'\nquery = \"SELECT min(inserted_at) FROM {table}\"\nwarn_age = '1d'"
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Warning, "{o:?}");
        assert!(
            o.summary.contains("(3.0 days old), older than warn_age 1d"),
            "{}",
            o.summary
        );

        let o = probe(&format!(
            "url = '{url}'\nquery = 'SELECT 1 FROM gridprobe_nosuch'"
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!("query failed: Table 'test.gridprobe_nosuch' doesn't exist on {url}")
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "wrong").expect("write");
        let o = probe(&format!(
            "url = '{url}'\nquery = 'SELECT 1'\npassword_file = '{}'",
            file.display()
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary
                .starts_with("connection failed: Access denied for user 'root'@"),
            "{}",
            o.summary
        );
        assert!(o.summary.contains("(using password: YES)"), "{}", o.summary);

        admin
            .query_drop(format!("DROP TABLE {table}"))
            .await
            .expect("drop");
        let _ = admin.disconnect().await;
    }

    #[tokio::test]
    async fn mariadb_query_past_the_timeout_is_killed_at_the_server() {
        use mysql_async::prelude::Queryable;
        let Some(url) = test_service("GRIDPROBE_TEST_MYSQL") else {
            return;
        };
        let marker = unique("slow");
        let p = probe(&format!(
            "url = '{url}'\nquery = \"SELECT SLEEP(60), '{marker}'\""
        ));
        let timeout = Duration::from_millis(1500);
        let start = Instant::now();
        let o = p.run(&ctx(timeout)).await;
        let took = start.elapsed();
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!(
                "timeout after 1.5s during query; the query was cancelled at the server on {url}"
            )
        );
        assert!(took < timeout + CANCEL_BUDGET, "took {took:?}");
        let mut admin = my_admin(&url).await;
        let mut left = 1;
        for _ in 0..20 {
            left = admin
                .query_first::<i64, _>(format!(
                    "SELECT count(*) FROM information_schema.processlist \
                     WHERE info LIKE '%{marker}%' AND id <> connection_id()"
                ))
                .await
                .expect("processlist")
                .unwrap_or(0);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(left, 0, "the query still runs at the server");
        let _ = admin.disconnect().await;
    }

    // ---------------------------------------------------------------------------------------
    // SQLite

    #[tokio::test]
    async fn sqlite_file_fresh_stale_missing_and_interrupted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cond.db");
        {
            let db = rusqlite::Connection::open(&path).expect("create");
            let now = now_ms() / 1000;
            db.execute_batch(&format!(
                "CREATE TABLE iov (tag TEXT, since INTEGER, inserted TEXT);
                 INSERT INTO iov VALUES ('fresh', {}, datetime('now', '-2 minutes')),
                                        ('old', {}, '2020-01-01 00:00:00');",
                now - 120,
                now - 10 * 86_400
            ))
            .expect("fill");
        }
        let url = format!("sqlite://{}", path.display());
        let o = probe(&format!(
            "url = '{url}'\nquery = \"SELECT since FROM iov WHERE tag = 'fresh'\"\nwarn_age = '1h'"
        ))
        .run(&ctx(Duration::from_secs(5)))
        .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.contains("(2.0 min old)"), "{}", o.summary);

        let o = probe(&format!(
            "url = '{url}'\nquery = 'SELECT max(since) FROM iov'\nwarn_age = '1m'\ncrit_age = '1d'"
        ))
        .run(&ctx(Duration::from_secs(5)))
        .await;
        assert_eq!(o.status, Status::Warning, "{o:?}");
        let o = probe(&format!(
            "url = '{url}'\nquery = \"SELECT inserted FROM iov WHERE tag = 'old'\"\ncrit_age = '30d'"
        ))
        .run(&ctx(Duration::from_secs(5)))
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.contains("newest payload 2020-01-01 00:00:00 UTC"),
            "{}",
            o.summary
        );

        let missing = format!("sqlite://{}/nosuch.db", dir.path().display());
        let o = probe(&format!("url = '{missing}'\nquery = 'SELECT 1'"))
            .run(&ctx(Duration::from_secs(5)))
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with("connection failed: cannot open "),
            "{}",
            o.summary
        );
        assert!(
            !dir.path().join("nosuch.db").exists(),
            "a missing database must not be created"
        );

        let o = probe(&format!(
            "url = '{url}'\nquery = 'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c'"
        ))
        .run(&ctx(Duration::from_millis(500)))
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with(
                "timeout after 500ms during query; the query was cancelled at the server"
            ),
            "{}",
            o.summary
        );
    }

    // ---------------------------------------------------------------------------------------
    // Frontier, against an in-process server speaking its protocol.

    /// Encodes rows as a Frontier servlet does: the column row, then the data rows.
    fn blob(columns: &[(&str, &str)], rows: &[Vec<Cell>]) -> Vec<u8> {
        let mut b = Vec::new();
        let text = |b: &mut Vec<u8>, s: &str| {
            b.push(BLOB_ARRAY_BYTE);
            b.extend_from_slice(&(s.len() as i32).to_be_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        for (name, ty) in columns {
            text(&mut b, name);
            text(&mut b, ty);
        }
        b.push(BLOB_EOR);
        for row in rows {
            for cell in row {
                match cell {
                    Cell::Time(ms) => {
                        b.push(BLOB_TIME);
                        b.extend_from_slice(&ms.to_be_bytes());
                    }
                    Cell::Int(i) => {
                        b.push(BLOB_INT8);
                        b.extend_from_slice(&i.to_be_bytes());
                    }
                    Cell::Text(t) => text(&mut b, t),
                    _ => b.push(BLOB_NULL | BLOB_ARRAY_BYTE),
                }
            }
            b.push(BLOB_EOR);
        }
        b
    }

    fn frontier_decode_p1(p1: &str) -> String {
        let std: String = p1
            .chars()
            .map(|c| match c {
                '.' => '+',
                '-' => '/',
                '_' => '=',
                c => c,
            })
            .collect();
        let zipped = base64::engine::general_purpose::STANDARD
            .decode(std)
            .expect("p1 base64");
        let mut sql = String::new();
        flate2::read::ZlibDecoder::new(&zipped[..])
            .read_to_string(&mut sql)
            .expect("p1 zlib");
        sql
    }

    /// A Frontier server: answers `SELECT ... iov` with one fresh row, anything naming
    /// `nosuch` with a Frontier error, `/down` with 503; records the SQL it received.
    async fn frontier_server(seen: Arc<Mutex<Vec<String>>>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                    let p1 = query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("p1="))
                        .unwrap_or("");
                    let has_id = head
                        .to_ascii_lowercase()
                        .contains("x-frontier-id: gridprobe");
                    let (status, body) = if path.ends_with("/down") {
                        ("503 Service Unavailable", "down".to_string())
                    } else if !query
                        .starts_with("type=frontier_request:1:DEFAULT&encoding=BLOBzip&p1=")
                        || !has_id
                    {
                        ("400 Bad Request", "bad request".to_string())
                    } else {
                        let sql = frontier_decode_p1(p1);
                        seen.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(sql.clone());
                        let (error, data, records) = if sql.contains("nosuch") {
                            (
                                r#"error="1" message="ORA-00942: table or view does not exist""#
                                    .to_string(),
                                String::new(),
                                0,
                            )
                        } else {
                            let rows = vec![vec![
                                Cell::Time(now_ms() - 90_000),
                                Cell::Text("LHCBCOND-demo".into()),
                            ]];
                            let raw = blob(&[("SINCE", "TIMESTAMP"), ("TAG", "VARCHAR2")], &rows);
                            let mut z = flate2::write::ZlibEncoder::new(
                                Vec::new(),
                                flate2::Compression::default(),
                            );
                            std::io::Write::write_all(&mut z, &raw).expect("zip");
                            let data = base64::engine::general_purpose::STANDARD
                                .encode(z.finish().expect("zip"));
                            (r#"error="0" md5="0""#.to_string(), data, 1)
                        };
                        (
                            "200 OK",
                            format!(
                                "<?xml version=\"1.0\" encoding=\"US-ASCII\"?>\n<!DOCTYPE frontier SYSTEM \"http://frontier.fnal.gov/frontier.dtd\">\n\
                                 <frontier version=\"3.41\" xmlversion=\"1.0\">\n <transaction payloads=\"1\">\n  \
                                 <payload type=\"frontier_request\" version=\"1\" encoding=\"BLOBzip\">\n   <data>{data}</data>\n   \
                                 <quality {error} records=\"{records}\" full_size=\"0\"/>\n  </payload>\n </transaction>\n</frontier>\n"
                            ),
                        )
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
                         Age: 42\r\nX-Cache: HIT from squid.example.org\r\nCache-Control: max-age=300\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        port
    }

    #[test]
    fn frontier_encoding_round_trips() {
        let sql = "SELECT max(since) FROM iov WHERE tag = 'a+b/c'";
        let p1 = frontier_encode(sql);
        assert!(!p1.contains(['+', '/', '=']), "{p1}");
        assert_eq!(frontier_decode_p1(&p1), sql);
        let rows = vec![
            vec![Cell::Int(7), Cell::Null],
            vec![Cell::Text("x".into()), Cell::Time(5)],
        ];
        let b = blob(&[("A", "NUMBER"), ("B", "DATE")], &rows);
        let parsed = parse_blob(&b).expect("blob");
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[1..], rows[..]);
        assert!(parse_blob(&[BLOB_INT8, 0, 0])
            .unwrap_err()
            .contains("cut short"));
        assert!(parse_blob(&[42])
            .unwrap_err()
            .contains("unknown field type 42"));
    }

    #[tokio::test]
    async fn frontier_answers_errors_and_cache_headers() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let port = frontier_server(seen.clone()).await;
        let base = format!("frontier://127.0.0.1:{port}/FrontierProd/Frontier");
        let query = "SELECT since, tag FROM iov WHERE tag = 'LHCBCOND-demo'";
        let o = probe(&format!(
            "url = '{base}'\nquery = \"{query}\"\nwarn_age = '1h'"
        ))
        .run(&ctx(Duration::from_secs(5)))
        .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.contains("(90 s old); 1 row in"), "{}", o.summary);
        assert!(o.summary.ends_with("cache HIT, age 42 s"), "{}", o.summary);
        assert_eq!(
            labels(&o),
            ["connect", "query", "total", "rows", "cache_age", "age"]
        );
        assert!(o.details.contains("columns: SINCE, TAG"), "{}", o.details);
        assert_eq!(
            seen.lock().unwrap_or_else(|p| p.into_inner()).as_slice(),
            [query]
        );

        let o = probe(&format!("url = '{base}'\nquery = 'SELECT x FROM nosuch'"))
            .run(&ctx(Duration::from_secs(5)))
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!(
                "query failed: Frontier error: ORA-00942: table or view does not exist on \
                 http://127.0.0.1:{port}/FrontierProd/Frontier"
            )
        );

        let o = probe(&format!(
            "url = 'http://127.0.0.1:{port}/down'\nquery = 'SELECT 1 FROM dual'"
        ))
        .run(&ctx(Duration::from_secs(5)))
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary
                .starts_with("query failed: HTTP 503 Service Unavailable on"),
            "{}",
            o.summary
        );
    }
}
