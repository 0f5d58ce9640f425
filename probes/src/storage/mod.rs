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

mod params;
mod round_trip;
mod test_file;
#[cfg(test)]
mod tests;
mod webdav;
mod xrootd;

use params::*;
pub use params::{build, PARAMS};
use round_trip::*;
use test_file::*;

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
