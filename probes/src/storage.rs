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
//! WebDAV goes through the `http` kind's transport ([`crate::http::fetch`]), so connection
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
use crate::net::http::{self, status_text, Progress, Response, Trace, USER_AGENT_VALUE};
use crate::net::tls::{self, CertInfo, TlsParams, TlsSettings};
use crate::net::{Failure, Timings};
use crate::outcome::{fmt_secs, seconds, Outcome, Perfdatum, Status};
use crate::params::{check_template, config_dir, duration_param};
use crate::process::{self, Ending, Finished};
use crate::{placeholders, Probe, ProbeContext, SharedProbe, Stop};

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
    let p: StorageParams = def
        .params
        .deserialize(&config.sources)
        .map_err(|d| vec![d])?;
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
    let tls = TlsSettings::from_params(
        def,
        config,
        TlsParams {
            tls_verify: p.tls_verify,
            ca_file: p.ca_file,
            client_cert: p.client_cert,
            client_key: p.client_key,
            cert_warn_days: p.cert_warn_days,
            cert_crit_days: p.cert_crit_days,
        },
    )
    .map_err(|ds| errors.extend(ds))
    .ok();

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
}

impl StepError {
    fn critical(reason: impl Into<String>) -> Self {
        StepError {
            status: Status::Critical,
            reason: reason.into(),
        }
    }

    fn unknown(reason: impl Into<String>) -> Self {
        StepError {
            status: Status::Unknown,
            reason: reason.into(),
        }
    }

    fn from_failure(f: Failure, ctx: &ProbeContext) -> Self {
        match f {
            Failure::Stopped(Stop::Timeout, phase) => StepError::critical(format!(
                "timeout after {} during {phase}",
                format_duration(ctx.timeout)
            )),
            Failure::Stopped(Stop::Cancelled, phase) => {
                StepError::unknown(format!("cancelled during {phase} (gridprobe is stopping)"))
            }
            Failure::Critical(m) => StepError::critical(m),
            Failure::Unknown(m) => StepError::unknown(m),
        }
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
            Err((step, e)) => Outcome::new(
                e.status,
                format!("{} failed: {} on {file_url}", step.name(), e.reason),
            ),
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

    // -----------------------------------------------------------------------------------------
    // WebDAV

    /// One WebDAV request, following redirects; the response with at most `max_body` bytes.
    async fn dav(
        &mut self,
        ctx: &ProbeContext,
        method: Method,
        url: &Url,
        body: Bytes,
        extra: &[(HeaderName, &str)],
        max_body: usize,
    ) -> Result<Response, StepError> {
        let mut url = url.clone();
        let mut method = method;
        let mut body = body;
        let origin_host = url.host_str().unwrap_or_default().to_string();
        for _ in 0..=MAX_REDIRECTS {
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
                .header(USER_AGENT, USER_AGENT_VALUE);
            // The token goes to the host it was configured for only, not wherever a redirect
            // points.
            if let (Some(token), true) = (&self.token, host == origin_host) {
                builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            for (name, value) in extra {
                builder = builder.header(name, *value);
            }
            let req = builder
                .body(Full::new(body.clone()))
                .map_err(|e| StepError::unknown(format!("cannot build the request: {e}")))?;
            let mut timings = Timings::default();
            let mut progress = Progress::default();
            let resp = http::fetch(
                ctx,
                &url,
                req,
                &self.probe.tls,
                max_body,
                &mut progress,
                Trace {
                    timings: &mut timings,
                    log: &mut self.log,
                    certs: &mut self.certs,
                },
            )
            .await
            .map_err(|f| StepError::from_failure(f, ctx))?;
            let status = resp.parts.status;
            let location = resp
                .parts
                .headers
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_string);
            let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            let Some(location) = location.filter(|_| redirect) else {
                return Ok(resp);
            };
            let next = url.join(&location).map_err(|e| {
                StepError::critical(format!(
                    "{} to unusable Location `{location}`: {e}",
                    status_text(status)
                ))
            })?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(StepError::critical(format!(
                    "{} to {next}, which is not HTTP",
                    status_text(status)
                )));
            }
            let _ = writeln!(self.log, "{} to {next}", status_text(status));
            // 303 (and 301/302 for anything but GET/HEAD, as clients do) continue with GET.
            if status == StatusCode::SEE_OTHER
                || (matches!(status.as_u16(), 301 | 302)
                    && method != Method::GET
                    && method != Method::HEAD)
            {
                method = Method::GET;
                body = Bytes::new();
            }
            url = next;
        }
        Err(StepError::critical(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    fn file(&self, name: &str) -> Result<Url, StepError> {
        self.target
            .dir
            .join(name)
            .map_err(|e| StepError::unknown(format!("cannot form the file URL: {e}")))
    }

    async fn dav_put(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let url = self.file(&self.name)?;
        let body = Bytes::from(self.content.clone());
        let octets = [(CONTENT_TYPE, "application/octet-stream")];
        // From here a failure may still have left (part of) the file behind.
        self.written = true;
        let mut resp = self
            .dav(
                ctx,
                Method::PUT,
                &url,
                body.clone(),
                &octets,
                MAX_SMALL_BODY,
            )
            .await?;
        if resp.parts.status == StatusCode::CONFLICT {
            // 409: the directory does not exist. Create it (it lies in the test area) and retry.
            let _ = writeln!(self.log, "directory missing: MKCOL {}", self.target.dir);
            let dir = self.target.dir.clone();
            let mk = self
                .dav(ctx, mkcol(), &dir, Bytes::new(), &[], MAX_SMALL_BODY)
                .await?;
            if !mk.parts.status.is_success() {
                return Err(StepError::critical(format!(
                    "{} (the directory is missing) and MKCOL {} answered {}",
                    status_text(resp.parts.status),
                    self.target.dir.path(),
                    status_text(mk.parts.status)
                )));
            }
            resp = self
                .dav(ctx, Method::PUT, &url, body, &octets, MAX_SMALL_BODY)
                .await?;
        }
        // A PUT refused with an answer stored nothing: there is nothing to clean up.
        expect_success(&resp).inspect_err(|_| self.written = false)
    }

    /// A PROPFIND of `url` at `depth` ("0" or "1"); anything but 207 Multi-Status is CRITICAL.
    async fn dav_propfind(
        &mut self,
        ctx: &ProbeContext,
        url: &Url,
        depth_value: &'static str,
        limit: usize,
    ) -> Result<Response, StepError> {
        let resp = self
            .dav(
                ctx,
                propfind(),
                url,
                Bytes::from_static(PROPFIND_BODY),
                &[(depth(), depth_value), (CONTENT_TYPE, "application/xml")],
                limit,
            )
            .await?;
        if resp.parts.status.as_u16() != 207 {
            return Err(StepError::critical(format!(
                "PROPFIND answered {} (expected 207 Multi-Status)",
                status_text(resp.parts.status)
            )));
        }
        Ok(resp)
    }

    async fn dav_stat(&mut self, ctx: &ProbeContext) -> Result<Option<u64>, StepError> {
        let url = self.file(&self.name)?;
        let resp = self.dav_propfind(ctx, &url, "0", MAX_SMALL_BODY).await?;
        let entries = parse_multistatus(&resp.body)
            .map_err(|e| StepError::critical(format!("unreadable PROPFIND answer: {e}")))?;
        Ok(entries.iter().find_map(|e| e.length))
    }

    async fn dav_get(&mut self, ctx: &ProbeContext) -> Result<Vec<u8>, StepError> {
        let url = self.file(&self.name)?;
        // One byte more than written, to notice a longer file.
        let resp = self
            .dav(
                ctx,
                Method::GET,
                &url,
                Bytes::new(),
                &[],
                self.content.len() + 1,
            )
            .await?;
        expect_success(&resp)?;
        Ok(resp.body)
    }

    async fn dav_checksum(&mut self, ctx: &ProbeContext) -> Result<Result<u32, String>, StepError> {
        let url = self.file(&self.name)?;
        let resp = self
            .dav(
                ctx,
                Method::HEAD,
                &url,
                Bytes::new(),
                &[(want_digest(), "adler32")],
                MAX_SMALL_BODY,
            )
            .await?;
        expect_success(&resp)?;
        Ok(match digest_adler32(&resp.parts.headers) {
            Some(Ok(sum)) => Ok(sum),
            Some(Err(e)) => return Err(StepError::critical(e)),
            None => Err("the server sent no adler32 Digest for Want-Digest: adler32".to_string()),
        })
    }

    async fn dav_list(&mut self, ctx: &ProbeContext) -> Result<(Vec<String>, bool), StepError> {
        let dir = self.target.dir.clone();
        let resp = self.dav_propfind(ctx, &dir, "1", MAX_LISTING).await?;
        let entries = match parse_multistatus(&resp.body) {
            Ok(e) => e,
            // A listing cut at the limit ends mid-element; an intact one must parse.
            Err(e) if !resp.truncated => {
                return Err(StepError::critical(format!(
                    "unreadable PROPFIND answer: {e}"
                )))
            }
            Err(_) => parse_multistatus_prefix(&resp.body),
        };
        let names = entries
            .iter()
            .filter(|e| !e.collection)
            .filter_map(|e| href_name(&dir, &e.href))
            .collect();
        Ok((names, resp.truncated))
    }

    async fn dav_delete(&mut self, ctx: &ProbeContext, name: &str) -> Result<(), StepError> {
        let url = self.file(name)?;
        let resp = self
            .dav(ctx, Method::DELETE, &url, Bytes::new(), &[], MAX_SMALL_BODY)
            .await?;
        expect_success(&resp)
    }

    async fn dav_exists(&mut self, ctx: &ProbeContext) -> Result<bool, StepError> {
        let url = self.file(&self.name)?;
        let resp = self
            .dav(ctx, Method::HEAD, &url, Bytes::new(), &[], MAX_SMALL_BODY)
            .await?;
        match resp.parts.status.as_u16() {
            404 | 410 => Ok(false),
            200..=299 => Ok(true),
            _ => Err(StepError::critical(format!(
                "HEAD answered {} (expected 404 Not Found)",
                status_text(resp.parts.status)
            ))),
        }
    }

    // -----------------------------------------------------------------------------------------
    // XRootD

    /// Runs `xrdfs`/`xrdcp` with the probe's credentials; stdout on success.
    async fn xrd(
        &mut self,
        ctx: &ProbeContext,
        program: &str,
        args: &[&str],
        limit: usize,
    ) -> Result<Vec<u8>, StepError> {
        let finished = self.xrd_run(ctx, program, args, limit).await?;
        if finished.success() {
            return Ok(finished.stdout.bytes);
        }
        Err(xrd_failure(&finished, program, ctx))
    }

    async fn xrd_run(
        &mut self,
        ctx: &ProbeContext,
        program: &str,
        args: &[&str],
        limit: usize,
    ) -> Result<Finished, StepError> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args);
        // Fail fast on a dead server instead of XrdCl's default of several retries over two
        // minutes; the probe's deadline bounds the whole step anyway.
        let left = ctx.remaining().as_secs().max(1).to_string();
        cmd.env("XRD_CONNECTIONRETRY", "1")
            .env("XRD_REQUESTTIMEOUT", &left)
            .env("XRD_STREAMTIMEOUT", &left);
        if let Some(ca) = &self.probe.ca_path {
            let var = if ca.is_dir() {
                "X509_CERT_DIR"
            } else {
                "X509_CERT_FILE"
            };
            cmd.env(var, ca);
        }
        if let Some((cert, key)) = &self.probe.client_paths {
            if cert == key {
                cmd.env("X509_USER_PROXY", cert);
            } else {
                cmd.env("X509_USER_CERT", cert).env("X509_USER_KEY", key);
            }
        }
        if let Some(token) = &self.probe.token_file {
            cmd.env("BEARER_TOKEN_FILE", token);
        }
        let _ = writeln!(self.log, "$ {program} {}", args.join(" "));
        let finished = process::run(cmd, ctx.deadline, &ctx.cancel, limit)
            .await
            .map_err(|e| {
                StepError::unknown(if e.kind() == std::io::ErrorKind::NotFound {
                    format!("cannot run {program}: not found in PATH (install xrootd-client)")
                } else {
                    format!("cannot run {program}: {e}")
                })
            })?;
        let stderr = String::from_utf8_lossy(&finished.stderr.bytes);
        for line in stderr.lines().filter(|l| !l.trim().is_empty()).take(20) {
            let _ = writeln!(self.log, "  {line}");
        }
        Ok(finished)
    }

    async fn xrd_put(&mut self, ctx: &ProbeContext) -> Result<(), StepError> {
        let local = LocalFile::write(&self.name, &self.content)
            .map_err(|e| StepError::unknown(format!("cannot write the local test file: {e}")))?;
        let url = self.target.file_url(&self.name);
        self.written = true;
        // --posc: the server removes the file unless the upload completes.
        let path = local.path.to_string_lossy().into_owned();
        let args = ["--nopbar", "--posc", path.as_str(), url.as_str()];
        let finished = self.xrd_run(ctx, "xrdcp", &args, MAX_SMALL_BODY).await?;
        if finished.success() {
            return Ok(());
        }
        // With --posc a failed upload that xrdcp saw to its end left nothing behind.
        if finished.ending == Ending::Exited {
            self.written = false;
        }
        Err(xrd_failure(&finished, "xrdcp", ctx))
    }

    async fn xrd_stat(&mut self, ctx: &ProbeContext) -> Result<Option<u64>, StepError> {
        let (server, path) = (self.target.server(), self.file_path(&self.name));
        let out = self
            .xrd(ctx, "xrdfs", &[&server, "stat", &path], MAX_SMALL_BODY)
            .await?;
        Ok(String::from_utf8_lossy(&out).lines().find_map(|l| {
            l.trim()
                .strip_prefix("Size:")
                .and_then(|v| v.trim().parse().ok())
        }))
    }

    async fn xrd_get(&mut self, ctx: &ProbeContext) -> Result<Vec<u8>, StepError> {
        let url = self.target.file_url(&self.name);
        self.xrd(
            ctx,
            "xrdcp",
            &["--nopbar", &url, "-"],
            self.content.len() + 1,
        )
        .await
    }

    async fn xrd_checksum(&mut self, ctx: &ProbeContext) -> Result<Result<u32, String>, StepError> {
        let (server, path) = (self.target.server(), self.file_path(&self.name));
        let finished = self
            .xrd_run(
                ctx,
                "xrdfs",
                &[&server, "query", "checksum", &path],
                MAX_SMALL_BODY,
            )
            .await?;
        if finished.ending != Ending::Exited {
            return Err(xrd_failure(&finished, "xrdfs", ctx));
        }
        if !finished.success() {
            // A server without checksums configured answers with an error: not offered.
            return Ok(Err(format!(
                "query checksum failed: {}",
                xrd_error_text(&finished)
            )));
        }
        let out = String::from_utf8_lossy(&finished.stdout.bytes).into_owned();
        let mut words = out.split_whitespace();
        match (words.next(), words.next()) {
            (Some(alg), Some(value)) if alg.eq_ignore_ascii_case("adler32") => {
                u32::from_str_radix(value, 16).map(Ok).map_err(|_| {
                    StepError::critical(format!("unreadable checksum answer `{}`", out.trim()))
                })
            }
            _ => Ok(Err(format!(
                "the server answered `{}`, not an adler32 checksum",
                out.trim()
            ))),
        }
    }

    async fn xrd_list(&mut self, ctx: &ProbeContext) -> Result<(Vec<String>, bool), StepError> {
        let server = self.target.server();
        let dir = self.target.dir.path().to_string();
        let finished = self
            .xrd_run(ctx, "xrdfs", &[&server, "ls", &dir], MAX_LISTING)
            .await?;
        if !finished.success() {
            return Err(xrd_failure(&finished, "xrdfs", ctx));
        }
        let out = String::from_utf8_lossy(&finished.stdout.bytes);
        let names = out
            .lines()
            .filter_map(|l| l.trim().rsplit('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        Ok((names, finished.stdout.truncated()))
    }

    async fn xrd_delete(&mut self, ctx: &ProbeContext, name: &str) -> Result<(), StepError> {
        let (server, path) = (self.target.server(), self.file_path(name));
        self.xrd(ctx, "xrdfs", &[&server, "rm", &path], MAX_SMALL_BODY)
            .await
            .map(|_| ())
    }

    async fn xrd_exists(&mut self, ctx: &ProbeContext) -> Result<bool, StepError> {
        let (server, path) = (self.target.server(), self.file_path(&self.name));
        let finished = self
            .xrd_run(ctx, "xrdfs", &[&server, "stat", &path], MAX_SMALL_BODY)
            .await?;
        if finished.success() {
            return Ok(true);
        }
        let text = xrd_error_text(&finished);
        // kXR_NotFound is error 3011.
        if finished.ending == Ending::Exited
            && (text.contains("[3011]") || text.to_ascii_lowercase().contains("no such file"))
        {
            return Ok(false);
        }
        Err(xrd_failure(&finished, "xrdfs", ctx))
    }

    /// The absolute path of a file in the directory.
    fn file_path(&self, name: &str) -> String {
        format!("{}{name}", self.target.dir.path())
    }
}

/// The failure of an `xrdfs`/`xrdcp` run.
fn xrd_failure(finished: &Finished, program: &str, ctx: &ProbeContext) -> StepError {
    match finished.ending {
        Ending::TimedOut => StepError::critical(format!(
            "timeout after {} ({program} killed)",
            format_duration(ctx.timeout)
        )),
        Ending::Cancelled => StepError::unknown(format!(
            "cancelled ({program} killed; gridprobe is stopping)"
        )),
        Ending::Exited => StepError::critical(xrd_error_text(finished)),
    }
}

/// The error an `xrdfs`/`xrdcp` run reported, in one line.
fn xrd_error_text(finished: &Finished) -> String {
    let stderr = String::from_utf8_lossy(&finished.stderr.bytes);
    let stdout = String::from_utf8_lossy(&finished.stdout.bytes);
    let line = stderr
        .lines()
        .chain(stdout.lines())
        .find(|l| l.contains("[ERROR]") || l.contains("[FATAL]"))
        .or_else(|| stderr.lines().find(|l| !l.trim().is_empty()));
    let code = finished
        .status
        .and_then(|s| s.code())
        .map(|c| format!(" (exit code {c})"))
        .unwrap_or_default();
    match line {
        Some(l) => {
            let l = l.trim();
            let l = l.strip_prefix("Run:").unwrap_or(l).trim();
            let l = l
                .strip_prefix("[ERROR] Server responded with an error:")
                .unwrap_or(l)
                .trim();
            l.split_whitespace().collect::<Vec<_>>().join(" ")
        }
        None => format!("failed without a message{code}"),
    }
}

/// A local copy of the test file for `xrdcp`, removed when dropped.
struct LocalFile {
    path: PathBuf,
}

impl LocalFile {
    fn write(name: &str, content: &[u8]) -> std::io::Result<LocalFile> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = std::env::temp_dir().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let file = LocalFile { path };
        f.write_all(content)?;
        Ok(file)
    }
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn expect_success(resp: &Response) -> Result<(), StepError> {
    let status = resp.parts.status;
    if status.is_success() {
        return Ok(());
    }
    let mut m = status_text(status);
    if status.is_redirection() {
        m.push_str(" (a redirect without a usable Location)");
    }
    Err(StepError::critical(m))
}

fn propfind() -> Method {
    Method::from_bytes(b"PROPFIND").unwrap_or(Method::GET)
}

fn mkcol() -> Method {
    Method::from_bytes(b"MKCOL").unwrap_or(Method::PUT)
}

fn depth() -> HeaderName {
    HeaderName::from_static("depth")
}

fn want_digest() -> HeaderName {
    HeaderName::from_static("want-digest")
}

/// Asks for the two properties the probe reads.
const PROPFIND_BODY: &[u8] = b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
<D:propfind xmlns:D=\"DAV:\"><D:prop><D:getcontentlength/><D:resourcetype/></D:prop></D:propfind>\n";

/// The adler32 in a `Digest` header (RFC 3230: `adler32=<8 hex digits>`, among others).
fn digest_adler32(headers: &hyper::HeaderMap) -> Option<Result<u32, String>> {
    headers
        .get_all(HeaderName::from_static("digest"))
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|item| {
            let (alg, value) = item.trim().split_once('=')?;
            alg.trim().eq_ignore_ascii_case("adler32").then(|| {
                let value = value.trim();
                u32::from_str_radix(value, 16)
                    .map_err(|_| format!("unreadable Digest value adler32={value}"))
            })
        })
}

/// One `<response>` of a WebDAV multistatus.
#[derive(Debug, Default, Clone, PartialEq)]
struct DavEntry {
    href: String,
    length: Option<u64>,
    collection: bool,
}

/// Parses a multistatus document, namespace prefixes ignored (servers use `D:`, `d:`, `ns0:`
/// or a default namespace).
fn parse_multistatus(xml: &[u8]) -> Result<Vec<DavEntry>, String> {
    let mut entries = Vec::new();
    walk_multistatus(xml, &mut entries)?;
    Ok(entries)
}

/// The entries of a multistatus cut short, up to where it breaks.
fn parse_multistatus_prefix(xml: &[u8]) -> Vec<DavEntry> {
    let mut entries = Vec::new();
    let _ = walk_multistatus(xml, &mut entries);
    entries
}

fn walk_multistatus(xml: &[u8], entries: &mut Vec<DavEntry>) -> Result<(), String> {
    use quick_xml::events::Event;
    /// Which element's text is being collected.
    #[derive(Clone, Copy, PartialEq)]
    enum Field {
        Href,
        Length,
    }
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut current: Option<DavEntry> = None;
    let mut field: Option<Field> = None;
    let mut text = String::new();
    // The `href` of a response, not one nested in a property value.
    let mut in_propstat = false;
    let mut seen_root = false;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                let local = e.local_name();
                let name = String::from_utf8_lossy(local.as_ref()).into_owned();
                if !seen_root {
                    seen_root = true;
                    if name != "multistatus" {
                        return Err(format!("root element is <{name}>, not <multistatus>"));
                    }
                }
                let is_start = matches!(event, Event::Start(_));
                match name.as_str() {
                    "response" if is_start => current = Some(DavEntry::default()),
                    "propstat" if is_start => in_propstat = true,
                    "href" if is_start && !in_propstat => field = Some(Field::Href),
                    "getcontentlength" if is_start => field = Some(Field::Length),
                    "collection" => {
                        if let Some(c) = current.as_mut() {
                            c.collection = true;
                        }
                    }
                    _ => {}
                }
                text.clear();
            }
            Event::Text(t) if field.is_some() => {
                let decoded = t.decode().map_err(|e| format!("bad text: {e}"))?;
                text.push_str(&decoded);
            }
            Event::CData(c) if field.is_some() => {
                text.push_str(&String::from_utf8_lossy(c));
            }
            Event::GeneralRef(r) if field.is_some() => {
                // Entities (`&amp;`, `&#38;`) arrive apart from the text around them.
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                if let Some(v) = quick_xml::escape::resolve_predefined_entity(&name) {
                    text.push_str(v);
                } else if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                }
            }
            Event::End(e) => {
                let local = e.local_name();
                match (local.as_ref(), field) {
                    (b"href", Some(Field::Href)) => {
                        if let Some(c) = current.as_mut() {
                            c.href = text.trim().to_string();
                        }
                        field = None;
                    }
                    (b"getcontentlength", Some(Field::Length)) => {
                        if let Some(c) = current.as_mut() {
                            c.length = text.trim().parse().ok();
                        }
                        field = None;
                    }
                    (b"propstat", _) => in_propstat = false,
                    (b"response", _) => entries.extend(current.take()),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !seen_root {
        return Err("empty answer".to_string());
    }
    Ok(())
}

/// The file name an `href` of a listing of `dir` names (absolute URL or path), decoded.
fn href_name(dir: &Url, href: &str) -> Option<String> {
    let url = dir.join(href).ok()?;
    let last = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    Some(percent_decode(last))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

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
        c.metric = "org.test.SE-webdav".into();
        c
    }

    fn labels(o: &Outcome) -> Vec<&str> {
        crate::test_support::perf_labels(o)
    }

    fn perf(o: &Outcome, label: &str) -> Option<f64> {
        o.perfdata
            .iter()
            .find(|p| p.label == label)
            .map(|p| p.value)
    }

    /// A directory name no other test uses.
    fn unique_dir(what: &str) -> String {
        format!("{what}-{}-{:08x}", std::process::id(), random_u32())
    }

    /// One raw HTTP/1.1 request (for setting up and inspecting the test servers): status and
    /// body.
    async fn raw_http(method: &str, url: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let u = Url::parse(url).expect("url");
        let port = u.port().expect("port");
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let head = format!(
            "{method} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nDepth: 1\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            u.path(),
            body.len()
        );
        s.write_all(head.as_bytes()).await.expect("write");
        s.write_all(body).await.expect("write body");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8_lossy(&out);
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.as_bytes().to_vec())
            .unwrap_or_default();
        (code, body)
    }

    async fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[test]
    fn params_are_documented() {
        crate::kind::assert_params_documented::<StorageParams>(PARAMS);
    }

    #[test]
    fn adler32_matches_known_values() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        assert_eq!(adler32(b"hello gridprobe world"), 0x5a25_083b);
        // Longer than one 5552-byte block, compared with the plain definition.
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &data {
            a = (a + u64::from(x)) % 65_521;
            b = (b + a) % 65_521;
        }
        assert_eq!(u64::from(adler32(&data)), (b << 16) | a);
    }

    #[test]
    fn file_names_carry_their_time() {
        let name = file_name("org.lhcb.SE-lhcb webdav/x", 1_700_000_000);
        assert!(
            name.starts_with("gridprobe-SE-lhcb_webdav_x-1700000000-"),
            "{name}"
        );
        assert_eq!(file_time(&name), Some(1_700_000_000));
        assert_ne!(name, file_name("org.lhcb.SE-lhcb webdav/x", 1_700_000_000));
        assert_eq!(file_time("gridprobe-a-b-12-0123abcd"), Some(12));
        assert_eq!(file_time("gridprobe-12-0123abcd"), None);
        assert_eq!(file_time("gridprobe-a-12-0123abcz"), None);
        assert_eq!(file_time("data-a-12-0123abcd"), None);
        let content = file_content(&name, 1024);
        assert_eq!(content.len(), 1024);
        assert!(content.starts_with(b"gridprobe storage test file gridprobe-"));
        assert_eq!(file_content(&name, 5), b"gridp");
    }

    #[test]
    fn multistatus_of_several_servers_parses() {
        let nginx = br#"<?xml version="1.0" encoding="utf-8" ?>
<D:multistatus xmlns:D="DAV:"><D:response><D:href>/data/gp/</D:href><D:propstat><D:prop>
<D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status>
</D:propstat></D:response><D:response><D:href>/data/gp/a%20b&amp;c</D:href><D:propstat><D:prop>
<D:getcontentlength>21</D:getcontentlength><D:resourcetype></D:resourcetype></D:prop>
<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
        let entries = parse_multistatus(nginx).expect("parse");
        assert_eq!(entries.len(), 2);
        assert!(entries[0].collection);
        assert_eq!(entries[1].href, "/data/gp/a%20b&c");
        assert_eq!(entries[1].length, Some(21));
        let dir = Url::parse("https://se.example.org:2880/data/gp/").expect("url");
        assert_eq!(href_name(&dir, &entries[1].href).as_deref(), Some("a b&c"));

        // dCache style: a default namespace and absolute URLs.
        let dcache = br#"<?xml version="1.0"?><multistatus xmlns="DAV:"><response>
<href>https://se.example.org:2880/data/gp/f1</href><propstat><prop><getcontentlength>7
</getcontentlength></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        let entries = parse_multistatus(dcache).expect("parse");
        assert_eq!(entries[0].length, Some(7));
        assert_eq!(href_name(&dir, &entries[0].href).as_deref(), Some("f1"));

        assert!(parse_multistatus(b"<html><body>no</body></html>")
            .unwrap_err()
            .contains("not <multistatus>"));
        assert!(parse_multistatus(b"").is_err());
        let cut = &nginx[..nginx.len() - 60];
        assert_eq!(parse_multistatus_prefix(cut).len(), 1);
    }

    #[test]
    fn digest_header_gives_adler32() {
        let mut h = hyper::HeaderMap::new();
        assert!(digest_adler32(&h).is_none());
        h.insert(
            "digest",
            HeaderValue::from_static("md5=abc=, ADLER32=0a1b2c3d"),
        );
        assert_eq!(digest_adler32(&h), Some(Ok(0x0a1b_2c3d)));
        h.insert("digest", HeaderValue::from_static("adler32=zz"));
        assert!(digest_adler32(&h).is_some_and(|r| r.is_err()));
    }

    #[test]
    fn paths_outside_the_test_area_are_rejected() {
        assert_eq!(area_contains("/data/gp", "/data/gp/sub/"), Ok(()));
        assert_eq!(area_contains("/data//gp/", "/data/gp"), Ok(()));
        let e = area_contains("/data/gp/", "/data/other/").unwrap_err();
        assert!(
            e.starts_with("storage path /data/other/ is outside the test area /data/gp/"),
            "{e}"
        );
        assert!(area_contains("/data/gp/", "/data/gp/../x/").is_err());
        assert!(area_contains("/data/gp/", "/data/gpx/").is_err());
        assert!(area_contains("/", "/data/")
            .unwrap_err()
            .contains("storage root"));
        assert!(normalise_dir("/../x").is_err());
    }

    #[test]
    fn bad_input_is_reported_at_check_time_with_positions() {
        let params = "test_area = '/data/gp/'\nurl = 'https://se.example.org/data/other/'";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert_eq!(ds.len(), 1, "{ds:?}");
        assert_eq!(
            ds[0].location.as_ref().map(|l| l.line),
            Some(line_of(NAME, params, "url ="))
        );
        assert!(
            ds[0]
                .message
                .starts_with("storage path /data/other/ is outside the test area /data/gp/"),
            "{}",
            ds[0].message
        );

        let params = "test_area = '/data/'\nurl = 'srm://se.example.org:8446/srm/managerv2'";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert!(ds[0].message.contains("scheme `srm`"), "{}", ds[0].message);

        let params = "test_area = '/data/'\nfile_size = 0\nserver_checksum = 'requir'\n\
                      stale_after = 'soon'";
        let ds = build_with(build, NAME, params).unwrap_err();
        assert_eq!(ds.len(), 3, "{ds:?}");
        let messages: Vec<&str> = ds.iter().map(|d| d.message.as_str()).collect();
        assert!(
            messages.iter().any(|m| m.contains("`file_size` must be")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("`stale_after`")),
            "{messages:?}"
        );
        let checksum = ds
            .iter()
            .find(|d| d.message.contains("server_checksum"))
            .expect("server_checksum error");
        assert_eq!(checksum.help.as_deref(), Some("did you mean `require`?"));

        let ds = build_with(build, NAME, "url = 'root://se/'").unwrap_err();
        assert!(ds[0].message.contains("test_area"), "{}", ds[0].message);
    }

    #[test]
    fn instance_checks_use_the_endpoint() {
        let p = probe("test_area = 'gridprobe'");
        let svc =
            |endpoint: Option<&str>| context("se.example.org", endpoint, Duration::from_secs(60));
        // Relative to the endpoint's path; davs read as https.
        let c = svc(Some("davs://se.example.org:2880/pnfs/example.org/lhcb/"));
        assert_eq!(p.check_instance(&c), Ok(()));
        let e = p.check_instance(&svc(None)).unwrap_err();
        assert!(
            e.contains("is relative") && e.contains("no endpoint"),
            "{e}"
        );
        let e = p
            .check_instance(&svc(Some("srm://se.example.org:8446/srm/managerv2")))
            .unwrap_err();
        assert!(e.contains("scheme `srm`") && e.contains("set `url`"), "{e}");

        let p = probe("test_area = '/eos/lhcb/gridprobe/'\nurl = 'root://{hostname}:1094//eos/lhcb/{param.dir}/'");
        let mut c = svc(None);
        c.service.params = BTreeMap::from([("dir".to_string(), "gridprobe/t1".to_string())]);
        assert_eq!(p.check_instance(&c), Ok(()));
        c.service.params = BTreeMap::from([("dir".to_string(), "data".to_string())]);
        let e = p.check_instance(&c).unwrap_err();
        assert!(e.contains("outside the test area"), "{e}");

        let p =
            probe("test_area = '/data/'\nurl = 'http://se.example.org/data/'\nstale_after = '30s'");
        let e = p.check_instance(&svc(None)).unwrap_err();
        assert!(e.contains("`stale_after` (30s) must be longer"), "{e}");
    }

    // ---------------------------------------------------------------------------------------
    // Against nginx (scripts/services/webdav.sh)

    fn webdav() -> Option<String> {
        test_service("GRIDPROBE_TEST_WEBDAV")
    }

    #[tokio::test]
    async fn webdav_round_trip_succeeds_and_leaves_nothing() {
        let Some(base) = webdav() else { return };
        let dir = format!("{base}/data/{}/", unique_dir("ok"));
        let p = probe(&format!("test_area = '/data/'\nurl = '{dir}'"));
        let o = p.run(&ctx(Duration::from_secs(20))).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(
            o.summary.starts_with("WebDAV round trip of 1024 bytes in "),
            "{}",
            o.summary
        );
        assert_eq!(
            labels(&o),
            ["put", "stat", "get", "checksum", "list", "delete", "gone", "total", "size"]
        );
        // nginx offers no Digest: noted, not a failure in "auto" mode.
        assert!(
            o.details
                .contains("server checksum not compared: the server sent no adler32"),
            "{}",
            o.details
        );
        let (code, body) = raw_http("PROPFIND", &dir, b"").await;
        assert_eq!(code, 207);
        let names: Vec<String> = parse_multistatus(&body)
            .expect("listing")
            .iter()
            .filter(|e| !e.collection)
            .map(|e| e.href.clone())
            .collect();
        assert!(names.is_empty(), "left behind: {names:?}");

        let p = probe(&format!(
            "test_area = '/data/'\nurl = '{dir}'\nserver_checksum = 'require'"
        ));
        let o = p.run(&ctx(Duration::from_secs(20))).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with("checksum failed: no server checksum"),
            "{}",
            o.summary
        );
        assert!(o.details.contains("cleanup: deleted"), "{}", o.details);
    }

    #[tokio::test]
    async fn webdav_read_only_area_fails_at_put() {
        let Some(base) = webdav() else { return };
        let dir = format!("{base}/readonly/");
        let p = probe(&format!("test_area = '/readonly/'\nurl = '{dir}'"));
        let o = p.run(&ctx(Duration::from_secs(20))).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        let prefix = format!("put failed: HTTP 403 Forbidden on {dir}gridprobe-SE-webdav-");
        assert!(o.summary.starts_with(&prefix), "{}", o.summary);
        assert_eq!(labels(&o), ["put", "total", "size"]);
        // Refused with an answer: nothing to clean up.
        assert!(!o.details.contains("cleanup"), "{}", o.details);
    }

    #[tokio::test]
    async fn webdav_corrupted_read_back_is_critical() {
        let Some(base) = webdav() else { return };
        let dir = format!("{base}/corrupt/{}/", unique_dir("bad"));
        let p = probe(&format!("test_area = '/corrupt/'\nurl = '{dir}'"));
        let o = p.run(&ctx(Duration::from_secs(20))).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary
                .starts_with("get failed: checksum mismatch: read back 1024 bytes with adler32 "),
            "{}",
            o.summary
        );
        assert!(
            o.summary.contains(&format!("on {dir}gridprobe-")),
            "{}",
            o.summary
        );
        assert!(o.details.contains("cleanup: deleted"), "{}", o.details);
    }

    #[tokio::test]
    async fn webdav_server_down_is_critical() {
        let port = closed_port().await;
        let dir = format!("http://127.0.0.1:{port}/data/gp/");
        let p = probe(&format!("test_area = '/data/'\nurl = '{dir}'"));
        let o = p.run(&ctx(Duration::from_secs(5))).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with(&format!(
                "put failed: TCP connect failed: connection refused on {dir}gridprobe-"
            )),
            "{}",
            o.summary
        );
    }

    #[tokio::test]
    async fn webdav_slow_server_times_out_in_time() {
        let Some(base) = webdav() else { return };
        let dir = format!("{base}/slow/gp/");
        let p = probe(&format!("test_area = '/slow/'\nurl = '{dir}'"));
        let timeout = Duration::from_millis(1500);
        let start = Instant::now();
        let o = p.run(&ctx(timeout)).await;
        let took = start.elapsed();
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with(
                "put failed: timeout after 1.5s during HTTP request (waiting for the response headers) on "
            ),
            "{}",
            o.summary
        );
        // The timeout, then at most the cleanup budget for deleting what may have been written.
        assert!(
            took < timeout + CLEANUP_BUDGET + Duration::from_secs(2),
            "took {took:?}"
        );
        assert!(
            o.details.contains("cleanup: could not delete"),
            "{}",
            o.details
        );
    }

    #[tokio::test]
    async fn webdav_over_tls_needs_the_ca() {
        let Some(base) = test_service("GRIDPROBE_TEST_WEBDAVS") else {
            return;
        };
        let Some(ca) = test_service("GRIDPROBE_TEST_WEBDAV_CA") else {
            return;
        };
        let dir = format!("{base}/data/{}/", unique_dir("tls"));
        let davs = dir.replacen("https://", "davs://", 1);
        let p = probe(&format!("test_area = '/data/'\nurl = '{davs}'"));
        let o = p.run(&ctx(Duration::from_secs(20))).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary.starts_with(
                "put failed: TLS handshake failed: certificate verify failed: unknown issuer"
            ),
            "{}",
            o.summary
        );

        let p = probe(&format!(
            "test_area = '/data/'\nurl = '{davs}'\nca_file = '{ca}'"
        ));
        let o = p.run(&ctx(Duration::from_secs(20))).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.ends_with(&format!("on {dir}")), "{}", o.summary);
        assert!(
            perf(&o, "cert_days_left").is_some_and(|d| d > 300.0),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn webdav_stale_files_are_removed_and_others_kept() {
        let Some(base) = webdav() else { return };
        let dir = format!("{base}/data/{}/", unique_dir("stale"));
        let now = unix_now();
        let stale = "gridprobe-SE-old-1000000000-deadbeef".to_string();
        let fresh = format!("gridprobe-SE-other-{now}-0123abcd");
        for name in [stale.as_str(), fresh.as_str(), "notes.txt"] {
            let (code, _) = raw_http("PUT", &format!("{dir}{name}"), b"x").await;
            assert_eq!(code, 201, "PUT {name}");
        }
        let p = probe(&format!("test_area = '/data/'\nurl = '{dir}'"));
        let o = p.run(&ctx(Duration::from_secs(20))).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert_eq!(perf(&o, "stale_removed"), Some(1.0), "{o:?}");
        assert!(
            o.details.contains("removed 1 of 1 stale test files"),
            "{}",
            o.details
        );
        let (_, body) = raw_http("PROPFIND", &dir, b"").await;
        let dir_url = Url::parse(&dir).expect("url");
        let mut left: Vec<String> = parse_multistatus(&body)
            .expect("listing")
            .iter()
            .filter(|e| !e.collection)
            .filter_map(|e| href_name(&dir_url, &e.href))
            .collect();
        left.sort();
        assert_eq!(left, [fresh.clone(), "notes.txt".to_string()]);
        for name in [fresh.as_str(), "notes.txt"] {
            raw_http("DELETE", &format!("{dir}{name}"), b"").await;
        }
    }

    // ---------------------------------------------------------------------------------------
    // Against an in-process WebDAV server offering Digest and redirects, as dCache does.

    /// Files by path; `digest` says what the server answers to Want-Digest.
    #[derive(Clone, Copy)]
    enum DigestMode {
        Right,
        Wrong,
    }

    /// A WebDAV server holding files in memory: PUT (redirected once with 307, like a dCache
    /// door to a pool), PROPFIND depth 0/1 with absolute hrefs, GET, HEAD with Digest, DELETE.
    async fn dav_server(mode: DigestMode) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let files = files.clone();
                tokio::spawn(async move { dav_serve(sock, port, files, mode).await });
            }
        });
        port
    }

    async fn dav_serve(
        mut s: tokio::net::TcpStream,
        port: u16,
        files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
        mode: DigestMode,
    ) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        let mut words = head.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut extra = String::new();
        let (status, out): (&str, Vec<u8>) = {
            let mut files = files.lock().unwrap_or_else(|p| p.into_inner());
            match method {
                "PUT" if query != "pool=1" => {
                    extra = format!("Location: http://127.0.0.1:{port}{path}?pool=1\r\n");
                    ("307 Temporary Redirect", Vec::new())
                }
                "PUT" => {
                    files.insert(path.to_string(), body);
                    ("201 Created", Vec::new())
                }
                "GET" => match files.get(path) {
                    Some(d) => ("200 OK", d.clone()),
                    None => ("404 Not Found", Vec::new()),
                },
                "HEAD" => match files.get(path) {
                    Some(d) => {
                        if header("want-digest").is_some() {
                            let sum = match mode {
                                DigestMode::Right => adler32(d),
                                DigestMode::Wrong => adler32(d) ^ 1,
                            };
                            extra = format!("Digest: adler32={sum:08x}\r\n");
                        }
                        ("200 OK", Vec::new())
                    }
                    None => ("404 Not Found", Vec::new()),
                },
                "DELETE" => match files.remove(path) {
                    Some(_) => ("204 No Content", Vec::new()),
                    None => ("404 Not Found", Vec::new()),
                },
                "PROPFIND" => {
                    let depth1 = header("depth").as_deref() == Some("1");
                    let mut xml =
                        String::from("<?xml version=\"1.0\"?><d:multistatus xmlns:d=\"DAV:\">");
                    let mut found = false;
                    for (name, data) in files.iter() {
                        let hit = if depth1 {
                            name.starts_with(path)
                        } else {
                            name == path
                        };
                        if hit {
                            found = true;
                            let _ = write!(
                                xml,
                                "<d:response><d:href>http://127.0.0.1:{port}{name}</d:href>\
                                 <d:propstat><d:prop><d:getcontentlength>{}</d:getcontentlength>\
                                 </d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>\
                                 </d:response>",
                                data.len()
                            );
                        }
                    }
                    xml.push_str("</d:multistatus>");
                    if found || depth1 {
                        ("207 Multi-Status", xml.into_bytes())
                    } else {
                        ("404 Not Found", Vec::new())
                    }
                }
                _ => ("405 Method Not Allowed", Vec::new()),
            }
        };
        let length = if method == "HEAD" { 0 } else { out.len() };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: close\r\n{extra}\r\n"
        );
        let _ = s.write_all(response.as_bytes()).await;
        if method != "HEAD" {
            let _ = s.write_all(&out).await;
        }
        let _ = s.shutdown().await;
    }

    #[tokio::test]
    async fn server_digest_is_compared_and_redirects_followed() {
        let port = dav_server(DigestMode::Right).await;
        // A davs endpoint is spoken to as https, in the test area relative to its path (this
        // plain-HTTP server never answers the TLS handshake).
        let endpoint = format!("davs://127.0.0.1:{port}/pnfs/example.org/lhcb/");
        let p = probe("test_area = 'gridprobe/'");
        let mut c = ctx(Duration::from_secs(1));
        c.service.endpoint = Url::parse(&endpoint).ok();
        let e = p.run(&c).await;
        assert_eq!(e.status, Status::Critical, "{e:?}");
        assert!(
            e.summary.starts_with(&format!(
                "put failed: timeout after 1s during TLS handshake on \
                 https://127.0.0.1:{port}/pnfs/example.org/lhcb/gridprobe/gridprobe-"
            )),
            "{}",
            e.summary
        );

        let p = probe(&format!(
            "test_area = '/pnfs/example.org/lhcb/gridprobe/'\n\
             url = 'http://127.0.0.1:{port}/pnfs/example.org/lhcb/gridprobe/'\n\
             server_checksum = 'require'"
        ));
        let o = p.run(&ctx(Duration::from_secs(10))).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(
            o.details.contains("307 Temporary Redirect to"),
            "{}",
            o.details
        );
        assert!(o.details.contains("matches the file"), "{}", o.details);

        let port = dav_server(DigestMode::Wrong).await;
        let p = probe(&format!(
            "test_area = '/lhcb/'\nurl = 'http://127.0.0.1:{port}/lhcb/'"
        ));
        let o = p.run(&ctx(Duration::from_secs(10))).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary
                .starts_with("checksum failed: checksum mismatch: the server reports adler32"),
            "{}",
            o.summary
        );
        assert!(o.details.contains("cleanup: deleted"), "{}", o.details);
    }

    // ---------------------------------------------------------------------------------------
    // Against xrootd (scripts/services/xrootd.sh), through xrdfs/xrdcp.

    fn xrootd() -> Option<String> {
        test_service("GRIDPROBE_TEST_XROOTD")
    }

    #[tokio::test]
    async fn xrootd_round_trip_with_server_checksum() {
        let Some(base) = xrootd() else { return };
        let dir = format!("{base}//data/{}/", unique_dir("ok"));
        let p = probe(&format!(
            "test_area = '/data/'\nurl = '{dir}'\nserver_checksum = 'require'\nfile_size = 5000"
        ));
        let o = p.run(&ctx(Duration::from_secs(30))).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(
            o.summary.starts_with("XRootD round trip of 5000 bytes in "),
            "{}",
            o.summary
        );
        assert_eq!(
            labels(&o),
            ["put", "stat", "get", "checksum", "list", "delete", "gone", "total", "size"]
        );
        assert!(o.details.contains("matches the file"), "{}", o.details);
    }

    #[tokio::test]
    async fn xrootd_read_only_export_fails_at_put() {
        let Some(base) = xrootd() else { return };
        let p = probe(&format!(
            "test_area = '/readonly/'\nurl = '{base}//readonly/'"
        ));
        let o = p.run(&ctx(Duration::from_secs(30))).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary
                .starts_with("put failed: [3005] Unable to create /readonly/gridprobe-"),
            "{}",
            o.summary
        );
        assert!(o.summary.contains("read/only"), "{}", o.summary);
        assert!(
            o.summary
                .contains(&format!(" on {base}//readonly/gridprobe-")),
            "{}",
            o.summary
        );
    }

    #[tokio::test]
    async fn xrootd_server_down_and_silent_server() {
        if xrootd().is_none() {
            return;
        }
        let port = closed_port().await;
        let p = probe(&format!(
            "test_area = '/data/'\nurl = 'root://127.0.0.1:{port}//data/'"
        ));
        let o = p.run(&ctx(Duration::from_secs(20))).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary
                .starts_with("put failed: [FATAL] Connection error"),
            "{}",
            o.summary
        );

        // Accepts connections and never answers: xrdcp waits until the probe's deadline.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let h = held.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                h.lock().unwrap_or_else(|p| p.into_inner()).push(sock);
            }
        });
        let p = probe(&format!(
            "test_area = '/data/'\nurl = 'root://127.0.0.1:{port}//data/'"
        ));
        let timeout = Duration::from_millis(1500);
        let start = Instant::now();
        let o = p.run(&ctx(timeout)).await;
        let took = start.elapsed();
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(
            o.summary
                .starts_with("put failed: timeout after 1.5s (xrdcp killed) on root://127.0.0.1:"),
            "{}",
            o.summary
        );
        // Deadline, SIGTERM grace for xrdcp, then the cleanup budget.
        assert!(
            took < timeout
                + process::TERM_GRACE
                + CLEANUP_BUDGET
                + process::TERM_GRACE
                + Duration::from_secs(2),
            "took {took:?}"
        );
    }
}
