//! `storage` probe kind: the classic SRM round trip on today's protocols, WebDAV (`davs`,
//! `https`, `http`) and XRootD (`root`).
//!
//! One run writes a small unique file into the configured test area, stats it, reads it back
//! and compares its adler32 (the grid's checksum) with what was written, asks the server for
//! its own adler32 where the protocol offers one (WebDAV `Want-Digest: adler32`, XRootD
//! `query checksum`), lists the directory, deletes the file and checks that it is gone. Each
//! step is timed in the perfdata; the summary names the first step that failed.
//!
//! Files are named `gridprobe-<probe>-<unix time>-<random>`. A file left behind by a run that
//! crashed or timed out is deleted by a later run once it is older than `stale_after`, so the
//! probe never fills the storage; nothing outside the test area is ever written or deleted, and
//! a configuration pointing outside it is rejected by `gridprobe check`.
//!
//! WebDAV goes through the shared HTTP transport ([`crate::net::http::fetch`]), so connection
//! phases, TLS and client certificates (grid proxies) behave the same. XRootD has no maintained
//! native Rust client: the probe runs `xrdfs`/`xrdcp` from xrootd-client under the probe's
//! deadline ([`crate::process`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use gridprobe_config::{Config, Diagnostic, ProbeDef};
use http_body_util::Full;
use hyper::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, LOCATION, USER_AGENT,
};
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use url::Url;

use gridprobe_config::time::format_duration;

use crate::kind::{ParamDefault, ParamDoc};
use crate::net::http::{self, status_text, Response, USER_AGENT_VALUE};
use crate::net::tls::{self, tls_params, CertInfo, TlsSettings};
use crate::net::Failure;
use crate::outcome::{fmt_secs, seconds, ConnectionFault, Outcome, Perfdatum, Status};
use crate::params::{check_template, config_dir, duration_param};
use crate::process::{self, Ending, Finished};
use crate::{placeholders, Probe, ProbeContext, SharedProbe, Stop};

#[cfg(test)]
mod tests;
mod webdav;
mod xrootd;

use webdav::*;

/// Config kind name.
pub const NAME: &str = "storage";
/// One-line description.
pub const SUMMARY: &str = "Storage round trip over WebDAV (davs/https/http) or XRootD (root): \
                           put, stat, read back with adler32, server checksum, list, delete, \
                           check gone; stale test files cleaned up";

/// Default of `file_size`.
const DEFAULT_FILE_SIZE: u64 = 1024;
/// Largest `file_size`: the file is held in memory, and the probe is a test, not a benchmark.
const MAX_FILE_SIZE: u64 = 16 << 20;
/// Default of `stale_after`.
const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3600);
/// Name prefix of every file the probe writes.
const FILE_PREFIX: &str = "gridprobe-";
/// Most bytes of a directory listing read (WebDAV PROPFIND answer, `xrdfs ls` output).
const MAX_LISTING: usize = 4 << 20;
/// Most bytes of any other answer kept (error pages, PROPFIND of one file).
const MAX_SMALL_BODY: usize = 64 << 10;
/// Redirects followed at most in one step (dCache and EOS redirect to their data servers).
const MAX_REDIRECTS: usize = 5;
/// Stale files deleted at most per run, so that a backlog cannot make one run time out.
const MAX_STALE_DELETES: usize = 20;
/// Time allowed past the deadline to delete the test file of a failed run (the runner waits
/// 5 s before it abandons an attempt).
const CLEANUP_BUDGET: Duration = Duration::from_secs(2);

/// Parameters.
pub const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "test_area",
        ty: "string",
        default: ParamDefault::Required,
        description: "Directory reserved for the probe's files: an absolute path, or a path \
                      relative to the service endpoint's path. Files are written, and stale ones \
                      deleted, only inside it; placeholders are expanded. Required",
    },
    ParamDoc {
        name: "url",
        ty: "string",
        default: ParamDefault::Value(
            "the service endpoint's scheme, host and port with the test area's path",
        ),
        description: "Directory URL to write into: davs://, https:// or http:// (WebDAV), \
                      root:// (XRootD). Its path must lie inside `test_area`; placeholders are \
                      expanded",
    },
    ParamDoc {
        name: "file_size",
        ty: "integer",
        default: ParamDefault::Value("1024"),
        description: "Size in bytes of the test file (1 to 16777216)",
    },
    ParamDoc {
        name: "stale_after",
        ty: "duration",
        default: ParamDefault::Value("1h"),
        description: "A test file (gridprobe-<probe>-<time>-<random>) in the directory older \
                      than this was left by a crashed run and is deleted; must exceed the \
                      probe's timeout",
    },
    ParamDoc {
        name: "server_checksum",
        ty: "string",
        default: ParamDefault::Value("\"auto\""),
        description: "The server's adler32 (WebDAV Want-Digest, XRootD query checksum): \
                      \"auto\" compares it when the server offers one, \"require\" makes its \
                      absence CRITICAL, \"off\" skips the step",
    },
    ParamDoc {
        name: "token_file",
        ty: "string",
        default: ParamDefault::Optional,
        description: "File holding a bearer token (e.g. a WLCG token), re-read every run: sent \
                      as `Authorization: Bearer` over WebDAV (same host only), as \
                      BEARER_TOKEN_FILE to xrdfs/xrdcp. Relative to the config file. Optional",
    },
    tls::DOC_TLS_VERIFY,
    ParamDoc {
        name: "ca_file",
        ty: "string",
        default: ParamDefault::Optional,
        description: "Extra trust anchors: a PEM file or a directory such as \
                      /etc/grid-security/certificates (for XRootD: X509_CERT_FILE or \
                      X509_CERT_DIR). Relative to the config file. Optional",
    },
    ParamDoc {
        name: "client_cert",
        ty: "string",
        default: ParamDefault::Optional,
        description: "PEM client certificate, e.g. a grid proxy (for XRootD: X509_USER_PROXY, \
                      or X509_USER_CERT with a separate key). Needs `client_key`. Optional",
    },
    tls::DOC_CLIENT_KEY,
    tls::DOC_CERT_WARN_DAYS,
    tls::DOC_CERT_CRIT_DAYS,
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageParams {
    test_area: String,
    url: Option<String>,
    file_size: Option<u64>,
    stale_after: Option<String>,
    server_checksum: Option<String>,
    token_file: Option<String>,
    tls_verify: Option<bool>,
    ca_file: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    cert_warn_days: Option<u32>,
    cert_crit_days: Option<u32>,
}

/// What to do with the server's checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerChecksum {
    Auto,
    Require,
    Off,
}

/// Builds the probe.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    let p: StorageParams = crate::params::read(def, config)?;
    let err = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
    let mut errors = Vec::new();

    errors.extend(check_template(def, config, "test_area", &p.test_area));
    if let Some(url) = &p.url {
        errors.extend(check_template(def, config, "url", url));
    }
    if p.test_area.trim().is_empty() {
        errors.push(
            err("test_area", "`test_area` is empty".into())
                .with_help("name a directory reserved for the probe, e.g. \"/dpm/example.org/home/{vo}/gridprobe/\""),
        );
    }
    // Without placeholders, the URL and the test area can be checked now, not per instance.
    let fixed = |t: &str| placeholders::names(t).is_ok_and(|n| n.is_empty());
    if let Some(url) = &p.url {
        if fixed(url) {
            match parse_storage_url(url) {
                Err(e) => errors.push(err("url", format!("`url`: {e}"))),
                Ok((_, u)) if fixed(&p.test_area) && p.test_area.starts_with('/') => {
                    if let Err(e) = area_contains(&p.test_area, u.path()) {
                        errors.push(err("url", e));
                    }
                }
                Ok(_) => {}
            }
        }
    }

    let file_size = match p.file_size {
        None => DEFAULT_FILE_SIZE,
        Some(n) if (1..=MAX_FILE_SIZE).contains(&n) => n,
        Some(n) => {
            errors.push(err(
                "file_size",
                format!("`file_size` must be between 1 and {MAX_FILE_SIZE} bytes, not {n}"),
            ));
            DEFAULT_FILE_SIZE
        }
    };
    let stale_after = duration_param(
        def,
        config,
        "stale_after",
        p.stale_after.as_deref(),
        &mut errors,
    )
    .unwrap_or(DEFAULT_STALE_AFTER);
    let server_checksum = match p.server_checksum.as_deref().unwrap_or("auto") {
        "auto" => ServerChecksum::Auto,
        "require" => ServerChecksum::Require,
        "off" => ServerChecksum::Off,
        other => {
            let d = err(
                "server_checksum",
                format!("unknown `server_checksum` value `{other}`"),
            )
            .with_suggestion(other, ["auto", "require", "off"]);
            errors.push(if d.help.is_none() {
                d.with_help("use \"auto\", \"require\" or \"off\"")
            } else {
                d
            });
            ServerChecksum::Auto
        }
    };
    let base = config_dir(def, config);
    let token_file = p.token_file.as_ref().map(|t| base.join(t));
    let (ca_path, client_paths) = (
        p.ca_file.as_ref().map(|c| base.join(c)),
        p.client_cert
            .as_ref()
            .zip(p.client_key.as_ref())
            .map(|(c, k)| (base.join(c), base.join(k))),
    );
    let tls = TlsSettings::read(def, config, tls_params!(p), &mut errors);

    match tls {
        Some(tls) if errors.is_empty() => Ok(Arc::new(StorageProbe {
            test_area: p.test_area,
            url: p.url,
            file_size: file_size as usize,
            stale_after,
            server_checksum,
            token_file,
            tls,
            ca_path,
            client_paths,
        })),
        _ => Err(errors),
    }
}

/// A built `storage` probe.
#[derive(Debug)]
struct StorageProbe {
    /// Test area template.
    test_area: String,
    /// Directory URL template.
    url: Option<String>,
    file_size: usize,
    stale_after: Duration,
    server_checksum: ServerChecksum,
    token_file: Option<PathBuf>,
    tls: TlsSettings,
    /// `ca_file` and the client certificate and key, resolved, for the XRootD clients.
    ca_path: Option<PathBuf>,
    client_paths: Option<(PathBuf, PathBuf)>,
}

/// The protocol a URL scheme selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    WebDav,
    XRootD,
}

/// Where one instance writes.
#[derive(Debug, Clone)]
struct Target {
    protocol: Protocol,
    /// The directory, as a URL with scheme http/https (WebDAV) or root/roots (XRootD), its
    /// path normalised and ending in `/`.
    dir: Url,
    /// The test area's path, normalised, ending in `/`.
    area: String,
}

impl Target {
    /// The URL of a file in the directory, as shown in messages.
    fn file_url(&self, name: &str) -> String {
        match self.protocol {
            Protocol::WebDav => format!("{}{name}", self.dir),
            // XRootD writes absolute paths after a double slash.
            Protocol::XRootD => format!("{}/{}{name}", self.server(), self.dir.path()),
        }
    }

    /// The directory's URL, as shown in messages.
    fn dir_url(&self) -> String {
        match self.protocol {
            Protocol::WebDav => self.dir.to_string(),
            Protocol::XRootD => format!("{}/{}", self.server(), self.dir.path()),
        }
    }

    /// `root://host:port` of an XRootD target.
    fn server(&self) -> String {
        let host = self.dir.host_str().unwrap_or_default();
        match self.dir.port() {
            Some(port) => format!("{}://{host}:{port}", self.dir.scheme()),
            None => format!("{}://{host}", self.dir.scheme()),
        }
    }
}

/// Parses a storage URL: the protocol, and the URL with `davs`/`dav` read as `https`/`http`
/// and `xroot`/`xroots` as `root`/`roots`.
fn parse_storage_url(text: &str) -> Result<(Protocol, Url), String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("invalid URL `{text}`: {e}"))?;
    let (protocol, scheme) = match url.scheme() {
        "davs" | "https" => (Protocol::WebDav, "https"),
        "dav" | "http" => (Protocol::WebDav, "http"),
        "root" | "xroot" => (Protocol::XRootD, "root"),
        "roots" | "xroots" => (Protocol::XRootD, "roots"),
        other => {
            return Err(format!(
                "URL `{text}` has scheme `{other}`, but the storage kind speaks davs, https, \
                 http (WebDAV) and root (XRootD)"
            ))
        }
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL `{text}` has no host"));
    }
    // `Url::set_scheme` refuses changes between special and non-special schemes, so rebuild.
    let rest = &url[url::Position::BeforeUsername..];
    let rebuilt = Url::parse(&format!("{scheme}://{rest}"))
        .map_err(|e| format!("invalid URL `{text}`: {e}"))?;
    Ok((protocol, rebuilt))
}

/// Normalises a path: one slash between segments, `.` dropped, `..` applied, a trailing `/`.
fn normalise_dir(path: &str) -> Result<String, String> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("path `{path}` climbs above the root"));
                }
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return Ok("/".to_string());
    }
    Ok(format!("/{}/", parts.join("/")))
}

/// Checks that the directory `dir` lies inside the test area `area` (both raw paths).
fn area_contains(area: &str, dir: &str) -> Result<(), String> {
    let area = normalise_dir(area)?;
    let dir = normalise_dir(dir)?;
    if area == "/" {
        return Err(
            "the test area cannot be the storage root `/`: name a directory \
                    reserved for the probe"
                .to_string(),
        );
    }
    if !dir.starts_with(&area) {
        return Err(format!(
            "storage path {dir} is outside the test area {area}: the probe writes and deletes \
             only inside `test_area`"
        ));
    }
    Ok(())
}

impl StorageProbe {
    /// The target of one instance, checked.
    fn target(&self, ctx: &ProbeContext) -> Result<Target, String> {
        let svc = &ctx.service;
        let area_text = placeholders::expand(&self.test_area, ctx)?;
        let area_text = area_text.trim();
        let endpoint = svc.endpoint.as_ref().map(|e| {
            parse_storage_url(e.as_str()).map_err(|e| {
                format!(
                    "service {} ({}) endpoint: {e}{}",
                    svc.hostname,
                    svc.flavour,
                    if self.url.is_some() {
                        ""
                    } else {
                        "; set `url` for this probe"
                    }
                )
            })
        });
        // A relative test area hangs below the endpoint's path.
        let area_path = if area_text.starts_with('/') {
            area_text.to_string()
        } else {
            match &endpoint {
                Some(Ok((_, e))) => format!("{}/{area_text}", e.path()),
                Some(Err(e)) => return Err(e.clone()),
                None => {
                    return Err(format!(
                        "`test_area` `{area_text}` is relative, but service {} ({}) has no \
                         endpoint to take it from: write an absolute path",
                        svc.hostname, svc.flavour
                    ))
                }
            }
        };
        let area_path = percent_decode(&area_path);
        let (protocol, mut dir) = match &self.url {
            Some(template) => {
                let text = placeholders::expand(template, ctx)?;
                parse_storage_url(&text).map_err(|e| format!("`url`: {e}"))?
            }
            None => match endpoint {
                Some(Ok((protocol, mut e))) => {
                    e.set_path(&area_path);
                    e.set_query(None);
                    (protocol, e)
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(format!(
                        "service {} ({}) has no endpoint: give it one, or set `url` for this probe",
                        svc.hostname, svc.flavour
                    ))
                }
            },
        };
        let dir_path = percent_decode(dir.path());
        area_contains(&area_path, &dir_path)?;
        dir.set_path(&normalise_dir(&dir_path)?);
        dir.set_query(None);
        dir.set_fragment(None);
        Ok(Target {
            protocol,
            dir,
            area: normalise_dir(&area_path)?,
        })
    }

    /// The bearer token, when one is configured.
    fn token(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("token_file {}: {e}", path.display()))?;
        let token = text.trim().to_string();
        if token.is_empty() || token.contains(['\r', '\n', ' ']) {
            return Err(format!(
                "token_file {} does not hold one token on one line",
                path.display()
            ));
        }
        Ok(Some(token))
    }
}

#[async_trait]
impl Probe for StorageProbe {
    async fn run(&self, ctx: &ProbeContext) -> Outcome {
        if ctx.cancel.is_cancelled() {
            return Outcome::unknown("cancelled before start");
        }
        let target = match self.target(ctx) {
            Ok(t) => t,
            Err(e) => return Outcome::unknown(e),
        };
        let token = match self.token() {
            Ok(t) => t,
            Err(e) => return Outcome::unknown(e),
        };
        let name = file_name(&ctx.metric, unix_now());
        let content = file_content(&name, self.file_size);
        let mut run = Run {
            probe: self,
            target: &target,
            name: name.clone(),
            content,
            token,
            log: String::new(),
            perfdata: Vec::new(),
            certs: Vec::new(),
            warnings: Vec::new(),
            written: false,
            notes: Vec::new(),
        };
        let start = Instant::now();
        let result = run.steps(ctx).await;
        let total = start.elapsed();
        run.finish(ctx, result, total).await
    }

    fn check_instance(&self, ctx: &ProbeContext) -> Result<(), String> {
        self.target(ctx)?;
        if self.stale_after <= ctx.timeout {
            return Err(format!(
                "`stale_after` ({}) must be longer than the probe's timeout ({}): a running \
                 probe's file would count as stale",
                format_duration(self.stale_after),
                format_duration(ctx.timeout)
            ));
        }
        Ok(())
    }
}

/// The steps of a round trip, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Put,
    Stat,
    Get,
    Checksum,
    List,
    Delete,
    Gone,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Put => "put",
            Step::Stat => "stat",
            Step::Get => "get",
            Step::Checksum => "checksum",
            Step::List => "list",
            Step::Delete => "delete",
            Step::Gone => "gone",
        }
    }
}

/// Why a step failed: its status (CRITICAL for the service, UNKNOWN for local problems) and
/// one line without the URL.
#[derive(Debug)]
struct StepError {
    status: Status,
    reason: String,
    /// Set when the step failed before the storage could answer (see
    /// `Outcome::connection_fault`).
    fault: Option<ConnectionFault>,
}

impl StepError {
    fn critical(reason: impl Into<String>) -> Self {
        StepError {
            status: Status::Critical,
            reason: reason.into(),
            fault: None,
        }
    }

    fn unknown(reason: impl Into<String>) -> Self {
        StepError {
            status: Status::Unknown,
            reason: reason.into(),
            fault: None,
        }
    }

    /// Marks a failure at connection level.
    fn at_connection(mut self, fault: Option<ConnectionFault>) -> Self {
        self.fault = fault;
        self
    }

    fn from_failure(f: Failure, ctx: &ProbeContext) -> Self {
        let fault = f.connection_fault();
        let e = match f {
            Failure::Stopped(Stop::Timeout, phase) => StepError::critical(format!(
                "timeout after {} during {phase}",
                format_duration(ctx.timeout)
            )),
            Failure::Stopped(Stop::Cancelled, phase) => {
                StepError::unknown(format!("cancelled during {phase} (gridprobe is stopping)"))
            }
            Failure::Critical(m) | Failure::Connection(_, m) => StepError::critical(m),
            Failure::Unknown(m) => StepError::unknown(m),
        };
        e.at_connection(fault)
    }
}

/// The state of one round trip.
struct Run<'a> {
    probe: &'a StorageProbe,
    target: &'a Target,
    name: String,
    content: Vec<u8>,
    token: Option<String>,
    log: String,
    perfdata: Vec<Perfdatum>,
    certs: Vec<(String, CertInfo)>,
    /// Problems that make the run WARNING (e.g. a stale file that could not be deleted).
    warnings: Vec<String>,
    /// Whether the test file may exist on the storage (it must then be deleted).
    written: bool,
    /// Notes for the details (what the server checksum step found, stale files removed).
    notes: Vec<String>,
}

impl Run<'_> {
    /// Runs every step; the error names the step that failed.
    async fn steps(&mut self, ctx: &ProbeContext) -> Result<(), (Step, StepError)> {
        let sum = adler32(&self.content);
        let size = self.content.len();
        let _ = writeln!(
            self.log,
            "test file {} ({size} bytes, adler32 {sum:08x}), test area {}",
            self.target.file_url(&self.name),
            self.target.area
        );

        let start = self.begin(ctx, Step::Put)?;
        let r = self.put(ctx).await;
        self.record(Step::Put, start, r)?;
        let start = self.begin(ctx, Step::Stat)?;
        let r = self.stat(ctx).await;
        self.record(Step::Stat, start, r)?;
        let start = self.begin(ctx, Step::Get)?;
        let r = self.get(ctx).await;
        self.record(Step::Get, start, r)?;
        if self.probe.server_checksum != ServerChecksum::Off {
            let start = self.begin(ctx, Step::Checksum)?;
            let r = self.checksum(ctx).await;
            self.record(Step::Checksum, start, r)?;
        }
        let start = self.begin(ctx, Step::List)?;
        let r = self.list(ctx).await;
        let listing = self.record(Step::List, start, r)?;
        self.remove_stale(ctx, &listing).await;
        let start = self.begin(ctx, Step::Delete)?;
        let r = self.delete(ctx).await;
        self.record(Step::Delete, start, r)?;
        self.written = false;
        let start = self.begin(ctx, Step::Gone)?;
        let r = self.gone(ctx).await;
        self.record(Step::Gone, start, r)?;
        Ok(())
    }

    /// Starts a step: its start time, unless gridprobe is stopping.
    fn begin(&self, ctx: &ProbeContext, step: Step) -> Result<Instant, (Step, StepError)> {
        if ctx.cancel.is_cancelled() {
            return Err((
                step,
                StepError::unknown("cancelled before the step (gridprobe is stopping)"),
            ));
        }
        Ok(Instant::now())
    }

    /// Ends a step: its time goes to the perfdata, its result to the log.
    fn record<T>(
        &mut self,
        step: Step,
        start: Instant,
        result: Result<T, StepError>,
    ) -> Result<T, (Step, StepError)> {
        let elapsed = start.elapsed();
        self.perfdata.push(seconds(step.name(), elapsed));
        match &result {
            Ok(_) => {
                let _ = writeln!(self.log, "== {} OK in {}", step.name(), fmt_secs(elapsed));
            }
            Err(e) => {
                let _ = writeln!(
                    self.log,
                    "== {} FAILED in {}: {}",
                    step.name(),
                    fmt_secs(elapsed),
                    e.reason
                );
            }
        }
        result.map_err(|e| (step, e))
    }

    /// The outcome, after deleting the test file of a failed run.
    async fn finish(
        mut self,
        ctx: &ProbeContext,
        result: Result<(), (Step, StepError)>,
        total: Duration,
    ) -> Outcome {
        let file_url = self.target.file_url(&self.name);
        if self.written && !ctx.cancel.is_cancelled() {
            // Best effort, a little past the deadline if need be: what remains is removed by
            // a later run once stale.
            let mut cleanup = ctx.clone();
            cleanup.deadline = ctx.deadline.max(Instant::now() + CLEANUP_BUDGET);
            cleanup.timeout = CLEANUP_BUDGET;
            match self.delete(&cleanup).await {
                Ok(()) => self.notes.push(format!("cleanup: deleted {file_url}")),
                Err(e) => self.notes.push(format!(
                    "cleanup: could not delete {file_url} ({}); a later run removes it once \
                     older than {}",
                    e.reason,
                    format_duration(self.probe.stale_after)
                )),
            }
        }
        self.perfdata.push(seconds("total", total));
        self.perfdata
            .push(Perfdatum::new("size", self.content.len() as f64, "B"));
        let mut outcome = match result {
            Err((step, e)) => {
                let o = Outcome::new(
                    e.status,
                    format!("{} failed: {} on {file_url}", step.name(), e.reason),
                );
                match e.fault {
                    Some(fault) => o.with_connection_fault(fault),
                    None => o,
                }
            }
            Ok(()) => {
                let mut summary = format!(
                    "{} round trip of {} bytes in {} (put, stat, get, {}list, delete, gone) on {}",
                    match self.target.protocol {
                        Protocol::WebDav => "WebDAV",
                        Protocol::XRootD => "XRootD",
                    },
                    self.content.len(),
                    fmt_secs(total),
                    if self.probe.server_checksum == ServerChecksum::Off {
                        ""
                    } else {
                        "checksum, "
                    },
                    self.target.dir_url()
                );
                if !self.warnings.is_empty() {
                    summary = format!("{}; {summary}", self.warnings.join("; "));
                    Outcome::warning(summary)
                } else {
                    Outcome::ok(summary)
                }
            }
        };
        // Certificate expiry applies whatever the steps did.
        let mut expiry: Vec<(Status, String)> = self
            .certs
            .iter()
            .filter_map(|(who, cert)| self.probe.tls.expiry_problem(cert, who))
            .collect();
        expiry.sort_by_key(|(s, _)| std::cmp::Reverse(s.exit_rank()));
        if let Some((status, problem)) = expiry.first() {
            if status.exit_rank() > outcome.status.exit_rank() {
                outcome = Outcome::new(*status, format!("{problem}; {}", outcome.summary));
            }
        }
        if let Some(days) = self
            .certs
            .iter()
            .map(|(_, c)| c.days_left())
            .min_by(|a, b| a.total_cmp(b))
        {
            self.perfdata.push(self.probe.tls.days_perfdatum(days));
        }
        let mut details = format!("{}\n", outcome.summary);
        for note in &self.notes {
            let _ = writeln!(details, "{note}");
        }
        details.push('\n');
        details.push_str(&self.log);
        outcome.with_details(details).with_perfdata(self.perfdata)
    }

    async fn put(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        match self.target.protocol {
            Protocol::WebDav => self.dav_put(ctx).await,
            Protocol::XRootD => self.xrd_put(ctx).await,
        }
    }

    async fn stat(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let size = match self.target.protocol {
            Protocol::WebDav => self.dav_stat(ctx).await?,
            Protocol::XRootD => self.xrd_stat(ctx).await?,
        };
        match size {
            Some(n) if n == self.content.len() as u64 => Ok(()),
            Some(n) => Err(StepError::critical(format!(
                "size is {n} bytes, {} were written",
                self.content.len()
            ))),
            None => Err(StepError::critical("the answer gives no size")),
        }
    }

    async fn get(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let data = match self.target.protocol {
            Protocol::WebDav => self.dav_get(ctx).await?,
            Protocol::XRootD => self.xrd_get(ctx).await?,
        };
        let (want, got) = (adler32(&self.content), adler32(&data));
        if data.len() != self.content.len() || want != got {
            return Err(StepError::critical(format!(
                "checksum mismatch: read back {} bytes with adler32 {got:08x}, wrote {} bytes \
                 with adler32 {want:08x}",
                data.len(),
                self.content.len()
            )));
        }
        let _ = writeln!(
            self.log,
            "read back {} bytes, adler32 {got:08x} matches",
            data.len()
        );
        Ok(())
    }

    async fn checksum(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let offered = match self.target.protocol {
            Protocol::WebDav => self.dav_checksum(ctx).await?,
            Protocol::XRootD => self.xrd_checksum(ctx).await?,
        };
        let want = adler32(&self.content);
        match offered {
            Ok(got) if got == want => {
                self.notes
                    .push(format!("server adler32 {got:08x} matches the file"));
                Ok(())
            }
            Ok(got) => Err(StepError::critical(format!(
                "checksum mismatch: the server reports adler32 {got:08x}, the file written has \
                 {want:08x}"
            ))),
            Err(why) if self.probe.server_checksum == ServerChecksum::Require => {
                Err(StepError::critical(format!(
                    "no server checksum ({why}), but server_checksum = \"require\""
                )))
            }
            Err(why) => {
                self.notes
                    .push(format!("server checksum not compared: {why}"));
                Ok(())
            }
        }
    }

    async fn list(&mut self, ctx: &ProbeContext) -> Result<Vec<String>, StepError> {
        let (names, truncated) = match self.target.protocol {
            Protocol::WebDav => self.dav_list(ctx).await?,
            Protocol::XRootD => self.xrd_list(ctx).await?,
        };
        if !names.contains(&self.name) {
            return Err(StepError::critical(format!(
                "{} is not in the listing of {} ({} entries{})",
                self.name,
                self.target.dir.path(),
                names.len(),
                if truncated {
                    ", listing cut at 4 MiB"
                } else {
                    ""
                }
            )));
        }
        Ok(names)
    }

    async fn delete(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let name = self.name.clone();
        match self.target.protocol {
            Protocol::WebDav => self.dav_delete(ctx, &name).await,
            Protocol::XRootD => self.xrd_delete(ctx, &name).await,
        }
    }

    async fn gone(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let exists = match self.target.protocol {
            Protocol::WebDav => self.dav_exists(ctx).await?,
            Protocol::XRootD => self.xrd_exists(ctx).await?,
        };
        if exists {
            return Err(StepError::critical(
                "the file still exists after a successful delete",
            ));
        }
        Ok(())
    }

    /// Deletes files of earlier runs older than `stale_after` (never the current one).
    async fn remove_stale(&mut self, ctx: &ProbeContext, listing: &[String]) {
        let now = unix_now();
        let stale_secs = self.probe.stale_after.as_secs();
        let stale: Vec<String> = listing
            .iter()
            .filter(|n| **n != self.name)
            .filter(|n| file_time(n).is_some_and(|t| now.saturating_sub(t) > stale_secs))
            .cloned()
            .collect();
        if stale.is_empty() {
            return;
        }
        let mut removed = 0usize;
        let mut failed = Vec::new();
        for name in stale.iter().take(MAX_STALE_DELETES) {
            let result = match self.target.protocol {
                Protocol::WebDav => self.dav_delete(ctx, name).await,
                Protocol::XRootD => self.xrd_delete(ctx, name).await,
            };
            match result {
                Ok(()) => removed += 1,
                Err(e) => failed.push(format!("{name}: {}", e.reason)),
            }
        }
        self.perfdata
            .push(Perfdatum::new("stale_removed", removed as f64, ""));
        self.notes.push(format!(
            "removed {removed} of {} stale test files (older than {})",
            stale.len(),
            format_duration(self.probe.stale_after)
        ));
        if let Some(first) = failed.first() {
            self.warnings.push(format!(
                "{} stale test files could not be deleted (first {first})",
                failed.len()
            ));
        }
    }
}

/// The adler32 checksum (RFC 1950), as the grid's storage and transfer services compute it.
pub(crate) fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    // 5552 bytes is the most that can be summed before `b` could overflow 32 bits.
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh name: `gridprobe-<short metric>-<unix time>-<8 hex digits>`.
fn file_name(metric: &str, now: u64) -> String {
    let short = gridprobe_config::model::short_metric_name(metric);
    let probe: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{FILE_PREFIX}{probe}-{now}-{:08x}", random_u32())
}

/// The Unix time in a name made by [`file_name`], if it is one.
fn file_time(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(FILE_PREFIX)?;
    let (rest, random) = rest.rsplit_once('-')?;
    let (probe, time) = rest.rsplit_once('-')?;
    let hex = random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = !time.is_empty() && time.bytes().all(|b| b.is_ascii_digit());
    (hex && digits && !probe.is_empty())
        .then(|| time.parse().ok())
        .flatten()
}

/// 32 bits that differ between calls and processes (names must not collide between probes,
/// instances and gridprobe hosts sharing a test area; no cryptographic quality needed).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS once per process, then varied per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish() as u32
}

/// The test file: a readable first line naming it, then pseudo-random bytes (so that a
/// compressing or deduplicating store still moves real data).
fn file_content(name: &str, size: usize) -> Vec<u8> {
    let mut data = format!("gridprobe storage test file {name}\n").into_bytes();
    let mut x = u64::from(adler32(name.as_bytes())) | 1 << 40;
    while data.len() < size {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    data
}
