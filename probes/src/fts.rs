//! `fts` probe kind: the FTS3 file transfer service, through its REST API (port 8446, X.509
//! client certificate or proxy, or a bearer token). One of three checks, as in the SAM tables:
//!
//! * `ftsinfo`: the server answers `GET /` with its API version and `GET /whoami` with the
//!   identity it sees (DN, VOs, delegation id); WARNING when it does not map the client to
//!   the probe's VO.
//! * `ftschn`: the configured links ("channels" in FTS2 days) between the site's storage
//!   endpoints exist in `GET /config/links` and are enabled.
//! * `transfer`: submits a one-file job (`POST /jobs`), polls `GET /jobs/{id}` until a final
//!   state and reports FINISHED, or FAILED with the reason FTS gives, with the throughput. A
//!   job still running at the probe's timeout is cancelled with `DELETE /jobs/{id}`, so that
//!   monitoring never leaves transfers behind.
//!
//! The requests go through the shared HTTP transport ([`crate::net::http::fetch`]): the same
//! connection phases, TLS checks and certificate expiry warnings.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use gridprobe_config::{Config, Diagnostic, ProbeDef};
use http_body_util::Full;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use gridprobe_config::time::format_duration;

use crate::kind::{ParamDefault, ParamDoc};
use crate::net::http::{self, status_text, USER_AGENT_VALUE};
use crate::net::tls::{self, tls_params, CertInfo, TlsSettings};
use crate::net::Failure;
use crate::outcome::{fmt_secs, seconds, ConnectionFault, Outcome, Perfdatum, Status};
use crate::params::{check_template, config_dir, duration_param};
use crate::{placeholders, Probe, ProbeContext, SharedProbe, Stop};

/// Config kind name.
pub const NAME: &str = "fts";
/// One-line description.
pub const SUMMARY: &str = "FTS3 REST: ftsinfo (version, whoami), ftschn (links configured and \
                           enabled) or transfer (one-file job polled to FINISHED/FAILED, \
                           cancelled at the timeout)";

/// Default of `poll_interval`.
const DEFAULT_POLL: Duration = Duration::from_secs(5);
/// Shortest `poll_interval`: FTS servers are shared, polling must stay gentle.
const MIN_POLL: Duration = Duration::from_millis(100);
/// Most bytes of an answer read.
const MAX_BODY: usize = 4 << 20;
/// Time allowed past the deadline to cancel a job (the runner waits 5 s before it abandons an
/// attempt).
const CANCEL_BUDGET: Duration = Duration::from_secs(2);
/// Final job states.
const FINAL_STATES: &[&str] = &["FINISHED", "FINISHEDDIRTY", "FAILED", "CANCELED"];

/// Parameters.
pub const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "check",
        ty: "string",
        default: ParamDefault::Required,
        description: "\"ftsinfo\", \"ftschn\" or \"transfer\". Required",
    },
    ParamDoc {
        name: "url",
        ty: "string",
        default: ParamDefault::Value("the service endpoint, else https://{hostname}:8446/"),
        description: "FTS3 REST base URL (https or http); placeholders are expanded",
    },
    ParamDoc {
        name: "links",
        ty: "[table]",
        default: ParamDefault::Optional,
        description: "ftschn: the links that must exist and be enabled, each \
                      { source = \"davs://se1.example.org\", destination = \"davs://se2…\" } \
                      (storage ids as FTS writes them: scheme://host; \"*\" for the default \
                      link); placeholders are expanded. Required for ftschn",
    },
    ParamDoc {
        name: "source",
        ty: "string",
        default: ParamDefault::Optional,
        description: "transfer: URL of an existing source file; placeholders are expanded. \
                      Required for transfer",
    },
    ParamDoc {
        name: "destination",
        ty: "string",
        default: ParamDefault::Optional,
        description: "transfer: destination URL, overwritten by every run (so that runs leave \
                      one file, not one each); placeholders are expanded. Required for transfer",
    },
    ParamDoc {
        name: "verify_checksum",
        ty: "bool",
        default: ParamDefault::Value("true"),
        description: "transfer: ask FTS to compare the source and destination checksums",
    },
    ParamDoc {
        name: "poll_interval",
        ty: "duration",
        default: ParamDefault::Value("5s"),
        description: "transfer: time between two GET /jobs/{id} (at least 100ms)",
    },
    ParamDoc {
        name: "token_file",
        ty: "string",
        default: ParamDefault::Optional,
        description: "File holding a bearer token, sent as `Authorization: Bearer` (re-read \
                      every run); relative to the config file. Optional",
    },
    tls::DOC_TLS_VERIFY,
    tls::DOC_CA_FILE,
    tls::DOC_CLIENT_CERT,
    tls::DOC_CLIENT_KEY,
    tls::DOC_CERT_WARN_DAYS,
    tls::DOC_CERT_CRIT_DAYS,
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FtsParams {
    check: String,
    url: Option<String>,
    links: Option<Vec<LinkParam>>,
    source: Option<String>,
    destination: Option<String>,
    verify_checksum: Option<bool>,
    poll_interval: Option<String>,
    token_file: Option<String>,
    tls_verify: Option<bool>,
    ca_file: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    cert_warn_days: Option<u32>,
    cert_crit_days: Option<u32>,
}

/// One link to check, as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkParam {
    source: String,
    destination: String,
}

/// The three checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Info,
    Links,
    Transfer,
}

/// Builds the probe.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    let p: FtsParams = crate::params::read(def, config)?;
    let err = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
    let mut errors = Vec::new();

    let check = match p.check.as_str() {
        "ftsinfo" => Some(Check::Info),
        "ftschn" => Some(Check::Links),
        "transfer" => Some(Check::Transfer),
        other => {
            let d = err("check", format!("unknown check `{other}`"))
                .with_suggestion(other, ["ftsinfo", "ftschn", "transfer"]);
            errors.push(if d.help.is_none() {
                d.with_help("use \"ftsinfo\", \"ftschn\" or \"transfer\"")
            } else {
                d
            });
            None
        }
    };
    if let Some(url) = &p.url {
        errors.extend(check_template(def, config, "url", url));
        if placeholders::names(url).is_ok_and(|n| n.is_empty()) {
            if let Err(e) = parse_base(url) {
                errors.push(err("url", format!("`url`: {e}")));
            }
        }
    }
    for link in p.links.iter().flatten() {
        errors.extend(check_template(def, config, "links", &link.source));
        errors.extend(check_template(def, config, "links", &link.destination));
    }
    for (key, value) in [("source", &p.source), ("destination", &p.destination)] {
        if let Some(v) = value {
            errors.extend(check_template(def, config, key, v));
        }
    }
    // Keys that belong to another check are mistakes, not something to ignore quietly.
    let only = |key: &str, set: bool, wanted: Check, errors: &mut Vec<Diagnostic>| {
        if set && check.is_some_and(|c| c != wanted) {
            errors.push(err(
                key,
                format!("`{key}` has no effect with check = \"{}\"", p.check),
            ));
        }
    };
    only("links", p.links.is_some(), Check::Links, &mut errors);
    for (key, set) in [
        ("source", p.source.is_some()),
        ("destination", p.destination.is_some()),
        ("verify_checksum", p.verify_checksum.is_some()),
        ("poll_interval", p.poll_interval.is_some()),
    ] {
        only(key, set, Check::Transfer, &mut errors);
    }
    match check {
        Some(Check::Links) if p.links.as_ref().is_none_or(Vec::is_empty) => errors.push(
            err("check", "check = \"ftschn\" needs `links`".into()).with_help(
                "add links = [{ source = \"davs://se1.example.org\", destination = \"davs://se2.example.org\" }]",
            ),
        ),
        Some(Check::Transfer) => {
            for (key, value) in [("source", &p.source), ("destination", &p.destination)] {
                if value.is_none() {
                    errors.push(err("check", format!("check = \"transfer\" needs `{key}`")));
                }
            }
        }
        _ => {}
    }
    let poll = duration_param(
        def,
        config,
        "poll_interval",
        p.poll_interval.as_deref(),
        &mut errors,
    )
    .unwrap_or(DEFAULT_POLL);
    if poll < MIN_POLL {
        errors.push(err(
            "poll_interval",
            format!(
                "`poll_interval` must be at least {}",
                format_duration(MIN_POLL)
            ),
        ));
    }
    let token_file = p
        .token_file
        .as_ref()
        .map(|t| config_dir(def, config).join(t));
    let tls = TlsSettings::read(def, config, tls_params!(p), &mut errors);
    match (check, tls) {
        (Some(check), Some(tls)) if errors.is_empty() => Ok(Arc::new(FtsProbe {
            check,
            url: p.url,
            links: p.links.unwrap_or_default(),
            source: p.source,
            destination: p.destination,
            verify_checksum: p.verify_checksum.unwrap_or(true),
            poll,
            token_file,
            tls,
        })),
        _ => Err(errors),
    }
}

/// A built `fts` probe.
#[derive(Debug)]
struct FtsProbe {
    check: Check,
    /// Base URL template.
    url: Option<String>,
    links: Vec<LinkParam>,
    source: Option<String>,
    destination: Option<String>,
    verify_checksum: bool,
    poll: Duration,
    token_file: Option<PathBuf>,
    tls: TlsSettings,
}

/// Parses the REST base URL (http or https), ending in `/`.
fn parse_base(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text.trim()).map_err(|e| format!("invalid URL `{text}`: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!(
            "URL `{text}` has scheme `{}`, but the FTS3 REST API is served over https (or http)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL `{text}` has no host"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    Ok(url)
}

/// What the transfer check sends, for one instance.
#[derive(Debug)]
struct TransferPlan {
    source: String,
    destination: String,
}

/// Why a run failed: its status and one line without the URL.
#[derive(Debug)]
struct Problem {
    status: Status,
    text: String,
    /// Set when the exchange failed before FTS could answer (see `Outcome::connection_fault`).
    fault: Option<ConnectionFault>,
}

impl Problem {
    fn critical(text: impl Into<String>) -> Self {
        Problem {
            status: Status::Critical,
            text: text.into(),
            fault: None,
        }
    }

    fn unknown(text: impl Into<String>) -> Self {
        Problem {
            status: Status::Unknown,
            text: text.into(),
            fault: None,
        }
    }
}

/// One FTS session: the base URL, the token, and what the exchanges logged.
struct Session<'a> {
    probe: &'a FtsProbe,
    base: Url,
    token: Option<String>,
    log: String,
    certs: Vec<(String, CertInfo)>,
}

impl Session<'_> {
    /// One request; the JSON answer of a 2xx response.
    async fn call(
        &mut self,
        ctx: &ProbeContext,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Problem> {
        let url = self
            .base
            .join(path)
            .map_err(|e| Problem::unknown(format!("cannot form the URL of {path}: {e}")))?;
        // As FTS documents its resources: /whoami, /jobs/{id}.
        let path = format!("/{path}");
        let host = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(target)
            .header(HOST, authority)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(ACCEPT, "application/json");
        if let Some(token) = &self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let bytes = match body {
            Some(v) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = builder
            .body(Full::new(bytes))
            .map_err(|e| Problem::unknown(format!("cannot build the request: {e}")))?;
        let resp = http::fetch_logged(
            ctx,
            &url,
            req,
            &self.probe.tls,
            MAX_BODY,
            &mut self.log,
            &mut self.certs,
        )
        .await
        .map_err(|f| {
            let fault = f.connection_fault();
            let problem = match f {
                Failure::Stopped(Stop::Timeout, phase) => Problem::critical(format!(
                    "{method} {path}: timeout after {} during {phase}",
                    format_duration(ctx.timeout)
                )),
                Failure::Stopped(Stop::Cancelled, phase) => Problem::unknown(format!(
                    "{method} {path}: cancelled during {phase} (gridprobe is stopping)"
                )),
                Failure::Critical(m) | Failure::Connection(_, m) => {
                    Problem::critical(format!("{method} {path}: {m}"))
                }
                Failure::Unknown(m) => Problem::unknown(format!("{method} {path}: {m}")),
            };
            Problem { fault, ..problem }
        })?;
        let text = String::from_utf8_lossy(&resp.body);
        let shown: String = text.chars().take(2000).collect();
        let _ = writeln!(self.log, "{shown}");
        if !resp.parts.status.is_success() {
            // FTS explains refusals in a JSON `message` (or plain text).
            let why = serde_json::from_slice::<Value>(&resp.body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| text.lines().next().unwrap_or("").trim().to_string());
            let why: String = why.chars().take(160).collect();
            return Err(Problem::critical(format!(
                "{method} {path}: {}{}",
                status_text(resp.parts.status),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            )));
        }
        serde_json::from_slice(&resp.body).map_err(|e| {
            Problem::critical(format!("{method} {path}: the answer is not JSON ({e})"))
        })
    }
}

impl FtsProbe {
    /// The REST base URL for one instance.
    fn base(&self, ctx: &ProbeContext) -> Result<Url, String> {
        let svc = &ctx.service;
        match (&self.url, &svc.endpoint) {
            (Some(t), _) => {
                parse_base(&placeholders::expand(t, ctx)?).map_err(|e| format!("`url`: {e}"))
            }
            (None, Some(e)) => parse_base(e.as_str()).map_err(|e| {
                format!(
                    "service {} ({}) endpoint: {e}; set `url` for this probe",
                    svc.hostname, svc.flavour
                )
            }),
            (None, None) => {
                let host = if svc.hostname.contains(':') {
                    format!("[{}]", svc.hostname)
                } else {
                    svc.hostname.clone()
                };
                parse_base(&format!("https://{host}:8446/"))
            }
        }
    }

    fn links(&self, ctx: &ProbeContext) -> Result<Vec<(String, String)>, String> {
        self.links
            .iter()
            .map(|l| {
                Ok((
                    storage_id(&placeholders::expand(&l.source, ctx)?),
                    storage_id(&placeholders::expand(&l.destination, ctx)?),
                ))
            })
            .collect()
    }

    fn plan(&self, ctx: &ProbeContext) -> Result<Option<TransferPlan>, String> {
        let (Some(source), Some(destination)) = (&self.source, &self.destination) else {
            return Ok(None);
        };
        let source = placeholders::expand(source, ctx)?;
        let destination = placeholders::expand(destination, ctx)?;
        for (key, value) in [("source", &source), ("destination", &destination)] {
            Url::parse(value).map_err(|e| format!("`{key}` `{value}` is not a URL: {e}"))?;
        }
        if source == destination {
            return Err("`source` and `destination` are the same file".to_string());
        }
        Ok(Some(TransferPlan {
            source,
            destination,
        }))
    }

    fn token(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("token_file {}: {e}", path.display()))?;
        let token = text.trim().to_string();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(format!(
                "token_file {} does not hold one token on one line",
                path.display()
            ));
        }
        Ok(Some(token))
    }
}

/// An FTS storage id, `scheme://host[:port]`, from a URL or an id (`*` stays `*`).
fn storage_id(text: &str) -> String {
    let t = text.trim();
    match Url::parse(t) {
        Ok(u) if u.host_str().is_some() => {
            let host = u.host_str().unwrap_or_default();
            match u.port() {
                Some(p) => format!("{}://{host}:{p}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        }
        _ => t.trim_end_matches('/').to_string(),
    }
}

#[async_trait]
impl Probe for FtsProbe {
    async fn run(&self, ctx: &ProbeContext) -> Outcome {
        if ctx.cancel.is_cancelled() {
            return Outcome::unknown("cancelled before start");
        }
        let base = match self.base(ctx) {
            Ok(b) => b,
            Err(e) => return Outcome::unknown(e),
        };
        let token = match self.token() {
            Ok(t) => t,
            Err(e) => return Outcome::unknown(e),
        };
        let mut session = Session {
            probe: self,
            base: base.clone(),
            token,
            log: String::new(),
            certs: Vec::new(),
        };
        let start = Instant::now();
        let mut perfdata = Vec::new();
        let result = match self.check {
            Check::Info => info(ctx, &mut session, &mut perfdata).await,
            Check::Links => match self.links(ctx) {
                Ok(links) => check_links(ctx, &mut session, &links, &mut perfdata).await,
                Err(e) => Err(Problem::unknown(e)),
            },
            Check::Transfer => match self.plan(ctx) {
                Ok(Some(plan)) => transfer(ctx, &mut session, &plan, self, &mut perfdata).await,
                Ok(None) => Err(Problem::unknown("no transfer configured")),
                Err(e) => Err(Problem::unknown(e)),
            },
        };
        perfdata.push(seconds("total", start.elapsed()));
        let mut outcome = match result {
            Ok((status, text)) => Outcome::new(status, format!("{text} on {base}")),
            Err(p) => {
                let o = Outcome::new(p.status, format!("{} on {base}", p.text));
                match p.fault {
                    Some(fault) => o.with_connection_fault(fault),
                    None => o,
                }
            }
        };
        let mut expiry: Vec<(Status, String)> = session
            .certs
            .iter()
            .filter_map(|(who, c)| self.tls.expiry_problem(c, who))
            .collect();
        expiry.sort_by_key(|(s, _)| std::cmp::Reverse(s.exit_rank()));
        if let Some((status, problem)) = expiry.first() {
            if status.exit_rank() > outcome.status.exit_rank() {
                outcome = Outcome::new(*status, format!("{problem}; {}", outcome.summary));
            }
        }
        if let Some(days) = session
            .certs
            .iter()
            .map(|(_, c)| c.days_left())
            .min_by(|a, b| a.total_cmp(b))
        {
            perfdata.push(self.tls.days_perfdatum(days));
        }
        let details = format!("{}\n\n{}", outcome.summary, session.log);
        outcome.with_details(details).with_perfdata(perfdata)
    }

    fn check_instance(&self, ctx: &ProbeContext) -> Result<(), String> {
        self.base(ctx)?;
        self.links(ctx)?;
        self.plan(ctx)?;
        Ok(())
    }
}

/// A string field of a JSON object.
fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `ftsinfo`: version and identity.
async fn info(
    ctx: &ProbeContext,
    s: &mut Session<'_>,
    perfdata: &mut Vec<Perfdatum>,
) -> Result<(Status, String), Problem> {
    let start = Instant::now();
    let root = s.call(ctx, Method::GET, "", None).await?;
    perfdata.push(seconds("version", start.elapsed()));
    let api = root
        .get("api")
        .ok_or_else(|| Problem::critical("GET /: the answer has no `api` version"))?;
    let part = |k: &str| api.get(k).and_then(Value::as_u64).unwrap_or(0);
    let version = format!("{}.{}.{}", part("major"), part("minor"), part("patch"));

    let start = Instant::now();
    let who = s.call(ctx, Method::GET, "whoami", None).await?;
    perfdata.push(seconds("whoami", start.elapsed()));
    let dn = text(&who, "user_dn").unwrap_or("").to_string();
    if dn.is_empty() && text(&who, "method") != Some("oauth2") {
        return Err(Problem::critical(
            "GET /whoami: the server sees no client identity (user_dn is empty)",
        ));
    }
    let vos: Vec<String> = who
        .get("vos")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let delegation = text(&who, "delegation_id").unwrap_or("none");
    let identity = if dn.is_empty() {
        "a token"
    } else {
        dn.as_str()
    };
    let text = format!(
        "FTS REST API {version} answers; client seen as {identity} (VOs: {}, delegation id \
         {delegation})",
        if vos.is_empty() {
            "none".to_string()
        } else {
            vos.join(", ")
        }
    );
    if !vos.iter().any(|v| v.eq_ignore_ascii_case(&ctx.vo)) {
        return Ok((
            Status::Warning,
            format!("the client is not mapped to VO {}; {text}", ctx.vo),
        ));
    }
    Ok((Status::Ok, text))
}

/// `ftschn`: every configured link exists and is enabled.
async fn check_links(
    ctx: &ProbeContext,
    s: &mut Session<'_>,
    wanted: &[(String, String)],
    perfdata: &mut Vec<Perfdatum>,
) -> Result<(Status, String), Problem> {
    let answer = s.call(ctx, Method::GET, "config/links", None).await?;
    let configured: Vec<&Value> = match &answer {
        Value::Array(a) => a.iter().collect(),
        // Some versions wrap the list, or key it by symbolic name.
        Value::Object(o) => match o.get("links") {
            Some(Value::Array(a)) => a.iter().collect(),
            _ => o.values().filter(|v| v.is_object()).collect(),
        },
        _ => Vec::new(),
    };
    let mut missing = Vec::new();
    let mut disabled = Vec::new();
    let mut enabled = Vec::new();
    for (src, dst) in wanted {
        let found = configured.iter().find(|l| {
            text(l, "source").map(storage_id).as_deref() == Some(src.as_str())
                && text(l, "destination").map(storage_id).as_deref() == Some(dst.as_str())
        });
        let name = format!("{src} -> {dst}");
        match found {
            None => missing.push(name),
            Some(l) => {
                let on = match l.get("state") {
                    Some(Value::Bool(b)) => *b,
                    Some(Value::String(t)) => {
                        matches!(
                            t.to_ascii_lowercase().as_str(),
                            "true" | "active" | "enabled" | "on"
                        )
                    }
                    Some(Value::Number(n)) => n.as_i64() != Some(0),
                    _ => true,
                };
                let label = match text(l, "symbolicname") {
                    Some(sym) => format!("{name} ({sym})"),
                    None => name,
                };
                if on {
                    enabled.push(label);
                } else {
                    disabled.push(label);
                }
            }
        }
    }
    perfdata.push(Perfdatum::new("links_enabled", enabled.len() as f64, ""));
    perfdata.push(Perfdatum::new("links_disabled", disabled.len() as f64, ""));
    perfdata.push(Perfdatum::new("links_missing", missing.len() as f64, ""));
    let _ = writeln!(
        s.log,
        "enabled: {enabled:?}\ndisabled: {disabled:?}\nmissing: {missing:?}"
    );
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("no link configured for {}", missing.join(", ")));
    }
    if !disabled.is_empty() {
        problems.push(format!("link disabled: {}", disabled.join(", ")));
    }
    if problems.is_empty() {
        Ok((
            Status::Ok,
            format!(
                "{} of {} links configured and enabled: {}",
                enabled.len(),
                wanted.len(),
                enabled.join(", ")
            ),
        ))
    } else {
        Err(Problem::critical(problems.join("; ")))
    }
}

/// `transfer`: submit, poll to a final state, cancel at the deadline.
async fn transfer(
    ctx: &ProbeContext,
    s: &mut Session<'_>,
    plan: &TransferPlan,
    probe: &FtsProbe,
    perfdata: &mut Vec<Perfdatum>,
) -> Result<(Status, String), Problem> {
    let job = serde_json::json!({
        "files": [{
            "sources": [plan.source],
            "destinations": [plan.destination],
        }],
        "params": {
            "verify_checksum": probe.verify_checksum,
            "overwrite": true,
            "retry": 0,
            "job_metadata": {"issuer": "gridprobe", "metric": ctx.metric, "site": ctx.site},
        },
    });
    let start = Instant::now();
    let submitted = s.call(ctx, Method::POST, "jobs", Some(&job)).await?;
    perfdata.push(seconds("submit", start.elapsed()));
    let id = text(&submitted, "job_id")
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .ok_or_else(|| Problem::critical("POST /jobs: the answer has no usable job_id"))?
        .to_string();
    let what = format!("{} -> {}", plan.source, plan.destination);
    let _ = writeln!(s.log, "submitted job {id}: {what}");

    let waiting = Instant::now();
    let deadline = tokio::time::Instant::from_std(ctx.deadline);
    let mut state = "SUBMITTED".to_string();
    let mut polls = 0u32;
    let job = loop {
        let next = tokio::time::Instant::now() + probe.poll;
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                let cancelled = cancel_job(ctx, s, &id).await;
                return Err(Problem::unknown(format!(
                    "cancelled while job {id} was {state} (gridprobe is stopping); {cancelled}"
                )));
            }
            _ = tokio::time::sleep_until(next.min(deadline)) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let cancelled = cancel_job(ctx, s, &id).await;
            perfdata.push(seconds("wait", waiting.elapsed()));
            return Err(Problem::critical(format!(
                "transfer timeout after {}: job {id} still {state}; {cancelled}",
                format_duration(ctx.timeout)
            )));
        }
        polls += 1;
        let job = match s.call(ctx, Method::GET, &format!("jobs/{id}"), None).await {
            Ok(j) => j,
            // The deadline passed during the request: cancel rather than leave the job.
            Err(p) if tokio::time::Instant::now() >= deadline => {
                let cancelled = cancel_job(ctx, s, &id).await;
                return Err(Problem::critical(format!(
                    "{} while job {id} was {state}; {cancelled}",
                    p.text
                )));
            }
            Err(p) => return Err(p),
        };
        state = text(&job, "job_state").unwrap_or("UNKNOWN").to_string();
        if FINAL_STATES.contains(&state.as_str()) {
            break job;
        }
    };
    perfdata.push(seconds("wait", waiting.elapsed()));
    let _ = writeln!(s.log, "job {id} is {state} after {polls} polls");

    // The file's own record: from the job, or from /jobs/{id}/files where the job has none.
    let file = match job
        .get("files")
        .and_then(Value::as_array)
        .and_then(|f| f.first())
    {
        Some(f) => Some(f.clone()),
        None => s
            .call(ctx, Method::GET, &format!("jobs/{id}/files"), None)
            .await
            .ok()
            .and_then(|v| v.as_array().and_then(|a| a.first().cloned())),
    };
    let reason = file
        .as_ref()
        .and_then(|f| text(f, "reason"))
        .filter(|r| !r.trim().is_empty())
        .or_else(|| text(&job, "reason").filter(|r| !r.trim().is_empty()))
        .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "));
    let throughput = file
        .as_ref()
        .and_then(|f| f.get("throughput"))
        .and_then(Value::as_f64);
    let duration = file
        .as_ref()
        .and_then(|f| f.get("tx_duration"))
        .and_then(Value::as_f64);
    if let Some(t) = throughput {
        perfdata.push(Perfdatum::new("throughput", t, ""));
    }
    if let Some(d) = duration {
        perfdata.push(Perfdatum::new("tx_duration", d, "s"));
    }
    let rate = throughput
        .map(|t| format!(", throughput {t:.2} MB/s"))
        .unwrap_or_default();
    match state.as_str() {
        "FINISHED" => Ok((
            Status::Ok,
            format!(
                "transfer FINISHED in {}{rate} (job {id}: {what})",
                fmt_secs(waiting.elapsed())
            ),
        )),
        "FINISHEDDIRTY" => Ok((
            Status::Warning,
            format!(
                "transfer FINISHEDDIRTY{}: job {id}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
        )),
        other => Err(Problem::critical(format!(
            "transfer {other}: {} (job {id}: {what})",
            reason.unwrap_or_else(|| "FTS gives no reason".to_string())
        ))),
    }
}

/// Cancels a job with `DELETE /jobs/{id}`, a little past the deadline if need be; says how it
/// went.
async fn cancel_job(ctx: &ProbeContext, s: &mut Session<'_>, id: &str) -> String {
    let mut c = ctx.clone();
    c.deadline = ctx.deadline.max(Instant::now() + CANCEL_BUDGET);
    c.timeout = CANCEL_BUDGET;
    // A shutdown must not stop the cancel itself.
    c.cancel = tokio_util::sync::CancellationToken::new();
    match s
        .call(&c, Method::DELETE, &format!("jobs/{id}"), None)
        .await
    {
        Ok(v) => {
            let state = text(&v, "job_state").unwrap_or("CANCELED");
            format!("cancelled it (DELETE /jobs/{id}: {state})")
        }
        Err(p) => format!("cancelling it failed ({})", p.text),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::test_support::{build_with, context, line_of};

    fn probe(params: &str) -> SharedProbe {
        crate::test_support::built(build, NAME, params)
    }

    fn ctx(timeout: Duration) -> ProbeContext {
        let mut c = context("127.0.0.1", None, timeout);
        c.metric = "org.lhcb.FTS-transfer".into();
        c
    }

    fn labels(o: &Outcome) -> Vec<&str> {
        crate::test_support::perf_labels(o)
    }

    /// One job of the fake server.
    #[derive(Debug, Clone)]
    struct Job {
        source: String,
        destination: String,
        state: String,
        polls: u32,
    }

    /// What the fake FTS saw.
    #[derive(Debug, Default)]
    struct Seen {
        jobs: BTreeMap<String, Job>,
        requests: Vec<String>,
        submitted: Vec<Value>,
    }

    /// An FTS3 REST server implementing the subset the probe uses, with FTS's shapes: `GET /`,
    /// `GET /whoami`, `GET /config/links`, `POST /jobs`, `GET /jobs/{id}` (`?files` left out
    /// when `files_apart`: then `GET /jobs/{id}/files`), `DELETE /jobs/{id}`. A job moves
    /// SUBMITTED → ACTIVE → final, one state per poll; its source decides the end: `…fail…`
    /// FAILED, `…hang…` stays ACTIVE, anything else FINISHED.
    async fn fts_server(seen: Arc<Mutex<Seen>>, files_apart: bool) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = &buf[head_end..head_end + length];
                    let mut words = head.split_whitespace();
                    let method = words.next().unwrap_or("").to_string();
                    let path = words.next().unwrap_or("/").to_string();
                    let (status, answer) = {
                        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                        seen.requests.push(format!("{method} {path}"));
                        fts_answer(&mut seen, &method, &path, body, files_apart)
                    };
                    let text = answer.to_string();
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        port
    }

    fn job_json(id: &str, job: &Job, with_files: bool) -> Value {
        let (file_state, reason, throughput) = match job.state.as_str() {
            "FINISHED" => ("FINISHED", "", 12.5),
            "FAILED" => (
                "FAILED",
                "TRANSFER  ERROR: Copy failed with mode 3rd pull, with error: Transfer failed: failure: Server returned HTTP 403 Forbidden",
                0.0,
            ),
            other => (other, "", 0.0),
        };
        let file = serde_json::json!({
            "file_id": 4242,
            "file_state": file_state,
            "source_surl": job.source,
            "dest_surl": job.destination,
            "reason": reason,
            "throughput": throughput,
            "tx_duration": if file_state == "FINISHED" { 0.8 } else { 0.0 },
            "filesize": 1024,
        });
        let mut v = serde_json::json!({
            "job_id": id,
            "job_state": job.state,
            "vo_name": "lhcb",
            "reason": if job.state == "FAILED" { "One or more files failed. Please have a look at the details for more information" } else { "" },
            "submit_time": "2026-11-25T14:00:00",
        });
        if with_files {
            v["files"] = Value::Array(vec![file]);
        }
        v
    }

    fn fts_answer(
        seen: &mut Seen,
        method: &str,
        path: &str,
        body: &[u8],
        files_apart: bool,
    ) -> (&'static str, Value) {
        let not_found = |what: &str| {
            (
                "404 Not Found",
                serde_json::json!({"status": "404 Not Found", "message": format!("No job with the id {what} has been found")}),
            )
        };
        match (method, path) {
            ("GET", "/") => (
                "200 OK",
                serde_json::json!({
                    "api": {"major": 3, "minor": 12, "patch": 1},
                    "schema": {"major": 8, "minor": 2, "patch": 0},
                    "delegation": {"major": 1, "minor": 0, "patch": 0},
                }),
            ),
            ("GET", "/whoami") => (
                "200 OK",
                serde_json::json!({
                    "user_dn": "/DC=org/DC=example/CN=gridprobe robot",
                    "dn": ["/DC=org/DC=example/CN=gridprobe robot"],
                    "vos": ["lhcb"],
                    "voms_cred": ["/lhcb/Role=NULL/Capability=NULL"],
                    "delegation_id": "8f2b6c1e0a",
                    "level": {"transfer": "vo"},
                    "roles": [],
                    "method": "certificate",
                    "is_root": false,
                }),
            ),
            ("GET", "/config/links") => (
                "200 OK",
                serde_json::json!([
                    {"symbolicname": "cern-gridka", "source": "davs://eoslhcb.cern.example.org", "destination": "davs://gridka-dcache.example.org", "state": true, "nostreams": 1},
                    {"symbolicname": "cern-cnaf", "source": "davs://eoslhcb.cern.example.org", "destination": "davs://xfer-lhcb.cr.cnaf.example.org", "state": false, "nostreams": 1},
                ]),
            ),
            ("POST", "/jobs") => {
                let Ok(req) = serde_json::from_slice::<Value>(body) else {
                    return (
                        "400 Bad Request",
                        serde_json::json!({"status": "400 Bad Request", "message": "Badly formatted JSON request"}),
                    );
                };
                let file = &req["files"][0];
                let (Some(src), Some(dst)) = (
                    file["sources"][0].as_str(),
                    file["destinations"][0].as_str(),
                ) else {
                    return (
                        "400 Bad Request",
                        serde_json::json!({"status": "400 Bad Request", "message": "No valid pairs available"}),
                    );
                };
                let id = format!("c0ffee00-{:04}-11ef-9a1b-0242ac120002", seen.jobs.len());
                seen.jobs.insert(
                    id.clone(),
                    Job {
                        source: src.into(),
                        destination: dst.into(),
                        state: "SUBMITTED".into(),
                        polls: 0,
                    },
                );
                seen.submitted.push(req);
                ("200 OK", serde_json::json!({"job_id": id}))
            }
            ("GET", p) if p.starts_with("/jobs/") => {
                let rest = &p["/jobs/".len()..];
                let (id, files) = match rest.strip_suffix("/files") {
                    Some(id) => (id, true),
                    None => (rest, false),
                };
                let Some(job) = seen.jobs.get_mut(id) else {
                    return not_found(id);
                };
                if files {
                    let v = job_json(id, job, true);
                    return ("200 OK", v["files"].clone());
                }
                job.polls += 1;
                job.state = match (
                    job.state.as_str(),
                    job.source.contains("fail"),
                    job.source.contains("hang"),
                ) {
                    ("SUBMITTED", _, _) => "ACTIVE".into(),
                    ("ACTIVE", _, true) => "ACTIVE".into(),
                    ("ACTIVE", true, _) => "FAILED".into(),
                    ("ACTIVE", _, _) => "FINISHED".into(),
                    (s, _, _) => s.to_string(),
                };
                ("200 OK", job_json(id, job, !files_apart))
            }
            ("DELETE", p) if p.starts_with("/jobs/") => {
                let id = &p["/jobs/".len()..];
                let Some(job) = seen.jobs.get_mut(id) else {
                    return not_found(id);
                };
                job.state = "CANCELED".into();
                ("200 OK", job_json(id, job, true))
            }
            _ => (
                "404 Not Found",
                serde_json::json!({"status": "404 Not Found", "message": "The resource could not be found."}),
            ),
        }
    }

    #[test]
    fn params_are_documented() {
        crate::kind::assert_params_documented::<FtsParams>(PARAMS);
    }

    #[test]
    fn build_errors_point_at_their_keys() {
        let params = "check = 'ftsinf'";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert_eq!(ds[0].help.as_deref(), Some("did you mean `ftsinfo`?"));

        let params = "check = 'ftsinfo'\nsource = 'davs://a/f'";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert_eq!(ds.len(), 1, "{ds:?}");
        assert_eq!(
            ds[0].location.as_ref().map(|l| l.line),
            Some(line_of(NAME, params, "source ="))
        );
        assert!(
            ds[0].message.contains("no effect with check = \"ftsinfo\""),
            "{}",
            ds[0].message
        );

        let ds = build_with(build, NAME, "check = 'transfer'\nsource = 'davs://a/f'").unwrap_err();
        assert!(
            ds[0].message.contains("needs `destination`"),
            "{}",
            ds[0].message
        );
        let ds = build_with(build, NAME, "check = 'ftschn'").unwrap_err();
        assert!(ds[0].message.contains("needs `links`"), "{}", ds[0].message);
        let ds = build_with(build, NAME, "check = 'ftsinfo'\nurl = 'gsiftp://fts/'").unwrap_err();
        assert!(
            ds[0].message.contains("scheme `gsiftp`"),
            "{}",
            ds[0].message
        );
        let ds = build_with(
            build,
            NAME,
            "check = 'transfer'\nsource = 'a'\ndestination = 'b'\npoll_interval = '10ms'",
        )
        .unwrap_err();
        assert!(
            ds[0].message.contains("at least 100ms"),
            "{}",
            ds[0].message
        );
    }

    #[test]
    fn default_url_and_storage_ids() {
        let p = probe("check = 'ftsinfo'");
        let mut c = ctx(Duration::from_secs(5));
        c.service.endpoint = None;
        c.service.hostname = "fts3.example.org".into();
        assert_eq!(p.check_instance(&c), Ok(()));
        assert_eq!(
            storage_id("davs://se.example.org:2880/pnfs/x"),
            "davs://se.example.org:2880"
        );
        assert_eq!(storage_id("*"), "*");
        let p = probe("check = 'transfer'\nsource = 'davs://a/f'\ndestination = 'davs://a/f'");
        assert!(p.check_instance(&c).unwrap_err().contains("the same file"));
    }

    #[tokio::test]
    async fn ftsinfo_reports_version_and_identity() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let port = fts_server(seen.clone(), false).await;
        let url = format!("http://127.0.0.1:{port}/");
        let o = probe(&format!("check = 'ftsinfo'\nurl = '{url}'"))
            .run(&ctx(Duration::from_secs(5)))
            .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert_eq!(
            o.summary,
            format!(
                "FTS REST API 3.12.1 answers; client seen as /DC=org/DC=example/CN=gridprobe robot \
                 (VOs: lhcb, delegation id 8f2b6c1e0a) on {url}"
            )
        );
        assert_eq!(labels(&o), ["version", "whoami", "total"]);

        let mut c = ctx(Duration::from_secs(5));
        c.vo = "atlas".into();
        let o = probe(&format!("check = 'ftsinfo'\nurl = '{url}'"))
            .run(&c)
            .await;
        assert_eq!(o.status, Status::Warning, "{o:?}");
        assert!(
            o.summary
                .starts_with("the client is not mapped to VO atlas"),
            "{}",
            o.summary
        );
    }

    #[tokio::test]
    async fn ftschn_finds_enabled_disabled_and_missing_links() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let port = fts_server(seen, false).await;
        let url = format!("http://127.0.0.1:{port}/");
        let links = "links = [{ source = 'davs://eoslhcb.cern.example.org/eos/lhcb/', destination = 'davs://gridka-dcache.example.org:443/' }]";
        let o = probe(&format!("check = 'ftschn'\nurl = '{url}'\n{links}"))
            .run(&ctx(Duration::from_secs(5)))
            .await;
        // Port 443 is written out: FTS ids carry no default port, so this one is missing.
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(o.summary.starts_with("no link configured for davs://eoslhcb.cern.example.org -> davs://gridka-dcache.example.org:443"), "{}", o.summary);

        let links = "links = [{ source = 'davs://eoslhcb.cern.example.org', destination = 'davs://gridka-dcache.example.org' }]";
        let o = probe(&format!("check = 'ftschn'\nurl = '{url}'\n{links}"))
            .run(&ctx(Duration::from_secs(5)))
            .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.starts_with("1 of 1 links configured and enabled: davs://eoslhcb.cern.example.org -> davs://gridka-dcache.example.org (cern-gridka)"), "{}", o.summary);

        let links = "links = [{ source = 'davs://eoslhcb.cern.example.org', destination = 'davs://xfer-lhcb.cr.cnaf.example.org' }]";
        let o = probe(&format!("check = 'ftschn'\nurl = '{url}'\n{links}"))
            .run(&ctx(Duration::from_secs(5)))
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(o.summary.starts_with("link disabled: davs://eoslhcb.cern.example.org -> davs://xfer-lhcb.cr.cnaf.example.org (cern-cnaf)"), "{}", o.summary);
    }

    fn transfer_params(url: &str, source: &str) -> String {
        format!(
            "check = 'transfer'\nurl = '{url}'\nsource = '{source}'\n\
             destination = 'davs://gridka-dcache.example.org/pnfs/lhcb/gridprobe/{{site}}.dat'\n\
             poll_interval = '100ms'"
        )
    }

    #[tokio::test]
    async fn transfer_finished_and_failed() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let port = fts_server(seen.clone(), false).await;
        let url = format!("http://127.0.0.1:{port}/");
        let src = "davs://eoslhcb.cern.example.org/eos/lhcb/gridprobe/source.dat";
        let o = probe(&transfer_params(&url, src))
            .run(&ctx(Duration::from_secs(10)))
            .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(
            o.summary.starts_with("transfer FINISHED in "),
            "{}",
            o.summary
        );
        assert!(
            o.summary
                .contains(", throughput 12.50 MB/s (job c0ffee00-0000-"),
            "{}",
            o.summary
        );
        assert_eq!(
            labels(&o),
            ["submit", "wait", "throughput", "tx_duration", "total"]
        );
        {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            let req = &seen.submitted[0];
            assert_eq!(req["files"][0]["sources"][0], src);
            assert_eq!(
                req["files"][0]["destinations"][0],
                "davs://gridka-dcache.example.org/pnfs/lhcb/gridprobe/LCG.CERN.ch.dat"
            );
            assert_eq!(req["params"]["overwrite"], true);
            assert_eq!(req["params"]["verify_checksum"], true);
        }

        let o = probe(&transfer_params(
            &url,
            "davs://eoslhcb.cern.example.org/eos/lhcb/fail.dat",
        ))
        .run(&ctx(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with("transfer FAILED: TRANSFER ERROR: Copy failed with mode 3rd pull, with error: Transfer failed: failure: Server returned HTTP 403 Forbidden (job "),
            "{}",
            o.summary
        );

        // A server that lists files apart from the job.
        let seen = Arc::new(Mutex::new(Seen::default()));
        let port = fts_server(seen.clone(), true).await;
        let url = format!("http://127.0.0.1:{port}/");
        let o = probe(&transfer_params(&url, src))
            .run(&ctx(Duration::from_secs(10)))
            .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.contains("throughput 12.50 MB/s"), "{}", o.summary);
        let requests = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .requests
            .clone();
        assert!(
            requests.iter().any(|r| r.ends_with("/files")),
            "{requests:?}"
        );
    }

    #[tokio::test]
    async fn a_job_that_never_finishes_is_cancelled_at_the_timeout() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let port = fts_server(seen.clone(), false).await;
        let url = format!("http://127.0.0.1:{port}/");
        let timeout = Duration::from_millis(1200);
        let start = Instant::now();
        let o = probe(&transfer_params(
            &url,
            "davs://eoslhcb.cern.example.org/eos/lhcb/hang.dat",
        ))
        .run(&ctx(timeout))
        .await;
        let took = start.elapsed();
        assert_eq!(o.status, Status::Critical, "{o:?}");
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let (id, job) = seen.jobs.iter().next().expect("a job was submitted");
        assert_eq!(
            o.summary,
            format!(
                "transfer timeout after 1.2s: job {id} still ACTIVE; cancelled it (DELETE /jobs/{id}: CANCELED) on {url}"
            )
        );
        assert!(
            seen.requests.contains(&format!("DELETE /jobs/{id}")),
            "{:?}",
            seen.requests
        );
        assert_eq!(job.state, "CANCELED");
        assert!(took < timeout + CANCEL_BUDGET, "took {took:?}");
    }

    #[tokio::test]
    async fn refusals_and_a_dead_server_are_named() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let port = fts_server(seen, false).await;
        let url = format!("http://127.0.0.1:{port}/nofts/");
        let o = probe(&format!("check = 'ftsinfo'\nurl = '{url}'"))
            .run(&ctx(Duration::from_secs(5)))
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(
            o.summary,
            format!("GET /: HTTP 404 Not Found: The resource could not be found. on {url}")
        );
        // FTS answered: the site's failure, whatever the monitoring host's state.
        assert_eq!(o.connection_fault, None);

        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed = l.local_addr().expect("addr").port();
        drop(l);
        let url = format!("http://127.0.0.1:{closed}/");
        let o = probe(&format!("check = 'ftsinfo'\nurl = '{url}'"))
            .run(&ctx(Duration::from_secs(5)))
            .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.contains("TCP connect failed: connection refused"),
            "{}",
            o.summary
        );
        // Marked, so that a failing monitoring host turns it UNKNOWN (runner/src/selfcheck.rs).
        assert_eq!(o.connection_fault, Some(ConnectionFault::Connect));
    }
}
