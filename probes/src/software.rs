//! `software` probe kind: the VO's software repository on CVMFS, as the site serves it.
//!
//! The probe fetches the repository manifest, `.cvmfspublished`, from a Stratum-1 or through
//! the site's proxy (the `http` kind's transport: same phases, TLS and timeouts) and reads it
//! as the CVMFS client does. The format: text lines, each a one-letter key and its value
//! (`C` root catalog hash, `R` root path hash, `D` catalog TTL, `S` revision, `N` repository
//! name, `T` publish time, ...), a line `--`, the hash of everything above it, a newline and a
//! binary signature of that hash.
//!
//! * CRITICAL: the manifest cannot be fetched, or cannot be read (no `--`, no hash, no
//!   signature, a line that is not `<letter><value>`, a required key C, R, D or S missing), its
//!   SHA-1 does not match the hash it carries (a corrupt or truncated copy), or it names another
//!   repository;
//! * WARNING: the revision was published longer ago than `warn_age` (CRITICAL past `crit_age`),
//!   or lags behind the `reference` server's revision for longer than `revision_grace`;
//! * OK otherwise, with the revision, the publish time's age and the TTL as perfdata.
//!
//! With `master_key` (the repository's `.pub` file, as clients are configured with) the probe
//! also checks the chain of trust as the CVMFS client does ([`signature`]): the certificate
//! named by `X` is fetched from the repository's `data/` area and must be stored under its own
//! hash, the manifest's signature must be that certificate's, and the `.cvmfswhitelist` must be
//! signed by the master key, name the repository, list the certificate's fingerprint and not
//! have expired. A broken link is CRITICAL (a tampered manifest, an unknown certificate, a
//! whitelist signed by another key); a whitelist expiring within `whitelist_warn` is WARNING.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use gridprobe_config::{Config, Diagnostic, ProbeDef};
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use url::Url;

use gridprobe_config::time::format_duration;

use crate::kind::{ParamDefault, ParamDoc};
use crate::net::http::{self, status_text, Progress, Trace, USER_AGENT_VALUE};
use crate::net::tls::{self, TlsParams, TlsSettings};
use crate::net::Timings;
use crate::outcome::{fmt_secs, fmt_utc, seconds, Outcome, Perfdatum, Status, UtcPrecision};
use crate::params::{check_template, duration_param};
use crate::{placeholders, Probe, ProbeContext, SharedProbe};

pub mod signature;

/// Config kind name.
pub const NAME: &str = "software";
/// One-line description.
pub const SUMMARY: &str = "The VO's CVMFS repository as a site serves it: .cvmfspublished \
                           revision, publish time, name and integrity, against a reference";

/// Parameters.
pub const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "repository",
        ty: "string",
        default: ParamDefault::Required,
        description: "The repository's name, e.g. \"lhcb.cern.ch\"; the manifest must carry it \
                      (N). Placeholders allowed",
    },
    ParamDoc {
        name: "url",
        ty: "string",
        default: ParamDefault::Value("\"http://{hostname}:8000/cvmfs/@fqrn@\""),
        description: "The repository's URL on the server (a Stratum-1), as in CVMFS_SERVER_URL: \
                      @fqrn@ stands for the repository; `/.cvmfspublished` is appended. \
                      Placeholders allowed",
    },
    ParamDoc {
        name: "proxy",
        ty: "string",
        default: ParamDefault::Value("none"),
        description: "HTTP proxy to go through, as the site's clients do, e.g. \
                      \"http://{squid}:3128\"",
    },
    ParamDoc {
        name: "reference",
        ty: "string",
        default: ParamDefault::Value("none"),
        description: "URL of the same repository on a reference server (the Stratum-0 or a \
                      trusted Stratum-1), @fqrn@ allowed: a revision behind the reference's for \
                      longer than `revision_grace` is WARNING",
    },
    ParamDoc {
        name: "warn_age",
        ty: "duration",
        default: ParamDefault::Value("\"2d\""),
        description: "WARNING when the revision was published longer ago than this (T)",
    },
    ParamDoc {
        name: "crit_age",
        ty: "duration",
        default: ParamDefault::Value("none"),
        description: "CRITICAL when the revision was published longer ago than this",
    },
    ParamDoc {
        name: "revision_grace",
        ty: "duration",
        default: ParamDefault::Value("\"2h\""),
        description: "How long the site may lag behind a newer reference revision (replication \
                      takes time) before it is WARNING",
    },
    ParamDoc {
        name: "master_key",
        ty: "string",
        default: ParamDefault::Value("none (signatures not verified)"),
        description: "The repository's master public key, a `.pub` PEM file as in \
                      CVMFS_PUBLIC_KEY (relative to the file defining the probe): the \
                      manifest's signature, its certificate and the whitelist are verified",
    },
    ParamDoc {
        name: "whitelist_warn",
        ty: "duration",
        default: ParamDefault::Value("\"7d\""),
        description: "WARNING when the repository whitelist expires within this (at most \
                      365d); CRITICAL once it has expired",
    },
    tls::DOC_TLS_VERIFY,
    tls::DOC_CA_FILE,
];

/// Default of `url`.
const DEFAULT_URL: &str = "http://{hostname}:8000/cvmfs/@fqrn@";
/// Default of `warn_age`.
const DEFAULT_WARN_AGE: Duration = Duration::from_secs(2 * 86_400);
/// Default of `revision_grace`.
const DEFAULT_REVISION_GRACE: Duration = Duration::from_secs(2 * 3600);
/// Default of `whitelist_warn`.
const DEFAULT_WHITELIST_WARN: Duration = Duration::from_secs(7 * 86_400);
/// Longest `whitelist_warn`: whitelists are re-signed every few weeks.
const MAX_WHITELIST_WARN: Duration = Duration::from_secs(365 * 86_400);
/// Largest manifest read: real ones are well under a kilobyte.
const MAX_MANIFEST: usize = 64 * 1024;
/// Largest whitelist or certificate object read: real ones are a few kilobytes.
const MAX_SIGNED_OBJECT: usize = 64 * 1024;
/// A publish time this far in the future is a clock problem worth a note.
const CLOCK_SLACK: i64 = 300;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SoftwareParams {
    repository: String,
    url: Option<String>,
    proxy: Option<String>,
    reference: Option<String>,
    warn_age: Option<String>,
    crit_age: Option<String>,
    revision_grace: Option<String>,
    master_key: Option<String>,
    whitelist_warn: Option<String>,
    tls_verify: Option<bool>,
    ca_file: Option<String>,
}

/// A built `software` probe.
#[derive(Debug)]
struct SoftwareProbe {
    repository: String,
    url: String,
    proxy: Option<String>,
    reference: Option<String>,
    warn_age: Duration,
    crit_age: Option<Duration>,
    revision_grace: Duration,
    /// The master keys and the file they came from.
    master_key: Option<(PathBuf, Vec<rsa::RsaPublicKey>)>,
    whitelist_warn: Duration,
    tls: TlsSettings,
}

/// Builds the probe, checking every parameter with positions.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    let p: SoftwareParams = crate::params::read(def, config)?;
    let err = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
    let mut errors = Vec::new();
    if p.repository.trim().is_empty() {
        errors.push(err("repository", "`repository` is empty".into()));
    }
    for (key, value) in [
        ("repository", Some(&p.repository)),
        ("url", p.url.as_ref()),
        ("proxy", p.proxy.as_ref()),
        ("reference", p.reference.as_ref()),
    ] {
        let Some(v) = value else { continue };
        errors.extend(check_template(def, config, key, v));
        // Without placeholders a URL can be checked now.
        if key != "repository" && placeholders::names(v).is_ok_and(|n| n.is_empty()) {
            if let Err(e) = parse_url(&v.replace("@fqrn@", "x"), key == "proxy") {
                errors.push(err(key, format!("`{key}`: {e}")));
            }
        }
    }
    let mut duration =
        |key: &str, v: &Option<String>| duration_param(def, config, key, v.as_deref(), &mut errors);
    let warn_age = duration("warn_age", &p.warn_age).unwrap_or(DEFAULT_WARN_AGE);
    let crit_age = duration("crit_age", &p.crit_age);
    let revision_grace =
        duration("revision_grace", &p.revision_grace).unwrap_or(DEFAULT_REVISION_GRACE);
    let whitelist_warn = duration("whitelist_warn", &p.whitelist_warn);
    if crit_age.is_some_and(|c| c <= warn_age) {
        errors.push(err(
            "crit_age",
            format!(
                "`crit_age` must be longer than `warn_age` ({})",
                format_duration(warn_age)
            ),
        ));
    }
    if whitelist_warn.is_some_and(|w| w > MAX_WHITELIST_WARN) {
        errors.push(err(
            "whitelist_warn",
            format!(
                "`whitelist_warn` is longer than {}",
                format_duration(MAX_WHITELIST_WARN)
            ),
        ));
    }
    let master_key = p.master_key.as_ref().and_then(|k| {
        let path = crate::params::config_dir(def, config).join(k);
        let read = std::fs::read(&path)
            .map_err(|e| format!("cannot read it: {}", crate::net::io_reason(&e)))
            .and_then(|pem| signature::master_keys(&pem));
        match read {
            Ok(keys) => Some((path, keys)),
            Err(e) => {
                errors.push(
                    err(
                        "master_key",
                        format!("master key file {}: {e}", path.display()),
                    )
                    .with_help(
                        "the repository's public key as clients have it, e.g. \
                         /etc/cvmfs/keys/cern.ch/cern-it4.pub; a relative path starts at the \
                         directory of this file",
                    ),
                );
                None
            }
        }
    });
    let tls = TlsSettings::read(
        def,
        config,
        TlsParams::verify_only(p.tls_verify, p.ca_file),
        &mut errors,
    );
    match tls {
        Some(tls) if errors.is_empty() => Ok(Arc::new(SoftwareProbe {
            repository: p.repository,
            url: p.url.unwrap_or_else(|| DEFAULT_URL.to_string()),
            proxy: p.proxy,
            reference: p.reference,
            warn_age,
            crit_age,
            revision_grace,
            master_key,
            whitelist_warn: whitelist_warn.unwrap_or(DEFAULT_WHITELIST_WARN),
            tls,
        })),
        _ => Err(errors),
    }
}

/// Parses an http(s) URL (a proxy: http only).
fn parse_url(text: &str, proxy: bool) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("invalid URL `{text}`: {e}"))?;
    let ok = match url.scheme() {
        "http" => true,
        "https" => !proxy,
        _ => false,
    };
    if !ok {
        return Err(format!(
            "URL `{text}` has scheme `{}`; use {}",
            url.scheme(),
            if proxy { "http" } else { "http or https" }
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL `{text}` has no host"));
    }
    Ok(url)
}

/// How the manifest's hash was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HashCheck {
    /// SHA-1 of the text matches.
    Verified,
    /// SHA-1 of the text differs from the stated hash.
    Mismatch { stated: String, computed: String },
    /// Another algorithm (`-rmd160`, `-shake128`): not checked here.
    Unverified(String),
}

/// A parsed `.cvmfspublished`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Manifest {
    /// `S`.
    pub revision: u64,
    /// `T`, Unix seconds.
    pub published: Option<i64>,
    /// `N`.
    pub name: Option<String>,
    /// `D`, seconds.
    pub ttl: u64,
    /// `C`.
    pub root_catalog: String,
    /// The hash line after `--`.
    pub hash: String,
    /// Bytes of signature after the hash line.
    pub signature_len: usize,
    /// `X`: the content hash of the signing certificate.
    pub certificate: Option<String>,
    /// The signature after the hash line.
    pub signature: Vec<u8>,
    /// The check of `hash`.
    pub hash_check: HashCheck,
}

/// Reads a manifest as the CVMFS client does, checking the SHA-1 of its text.
pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    // The text ends with the line `--`; the hash covers everything before it.
    let sep = if bytes.starts_with(b"--\n") {
        Some(0)
    } else {
        bytes.windows(4).position(|w| w == b"\n--\n").map(|i| i + 1)
    };
    let Some(sep) = sep else {
        return Err("no `--` line: the manifest is unsigned or cut short".to_string());
    };
    let (text, rest) = (&bytes[..sep], &bytes[sep + 3..]);
    let text = std::str::from_utf8(text).map_err(|_| "its text is not ASCII".to_string())?;
    let mut keys: std::collections::BTreeMap<char, String> = Default::default();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut chars = line.chars();
        match chars.next() {
            Some(k) if k.is_ascii_uppercase() => {
                keys.insert(k, chars.as_str().trim_end_matches('\r').to_string());
            }
            _ => {
                let shown: String = line.chars().take(40).collect();
                return Err(format!(
                    "line {} is not a key line: `{}`",
                    i + 1,
                    shown.escape_default()
                ));
            }
        }
    }
    for k in ['C', 'R', 'D', 'S'] {
        if !keys.contains_key(&k) {
            return Err(format!("required key {k} is missing"));
        }
    }
    let number = |k: char| -> Result<Option<u64>, String> {
        keys.get(&k)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{k} is not a number: `{v}`"))
            })
            .transpose()
    };
    let revision = number('S')?.unwrap_or(0);
    let ttl = number('D')?.unwrap_or(0);
    let published = number('T')?.map(|t| i64::try_from(t).unwrap_or(i64::MAX));

    let end = rest.iter().position(|&b| b == b'\n');
    let (hash, signature) = match end {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let hash = std::str::from_utf8(hash)
        .map_err(|_| "the hash after `--` is not text".to_string())?
        .trim()
        .to_string();
    if hash.is_empty() {
        return Err("no hash after the `--` line".to_string());
    }
    if signature.is_empty() {
        return Err("no signature after the hash".to_string());
    }
    let (hex, suffix) = match hash.split_once('-') {
        Some((h, s)) => (h, Some(s)),
        None => (hash.as_str(), None),
    };
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("`{hash}` after `--` is not a hash"));
    }
    let hash_check = match suffix {
        None if hex.len() == 40 => {
            let digest =
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &bytes[..sep]);
            let computed: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            if computed.eq_ignore_ascii_case(hex) {
                HashCheck::Verified
            } else {
                HashCheck::Mismatch {
                    stated: hex.to_string(),
                    computed,
                }
            }
        }
        None => HashCheck::Unverified(format!("{}-digit hash", hex.len())),
        Some(s) => HashCheck::Unverified(s.to_string()),
    };
    Ok(Manifest {
        revision,
        published,
        name: keys.get(&'N').cloned(),
        ttl,
        root_catalog: keys.get(&'C').cloned().unwrap_or_default(),
        hash,
        signature_len: signature.len(),
        certificate: keys.get(&'X').map(|x| x.trim().to_string()),
        signature: signature.to_vec(),
        hash_check,
    })
}

/// A fetched manifest, or why there is none.
struct Fetched {
    url: Url,
    result: Result<Manifest, Outcome>,
    timings: Timings,
    total: Duration,
}

/// A fetched object's bytes, or why there are none.
struct Got {
    body: Result<Vec<u8>, Outcome>,
    timings: Timings,
    total: Duration,
}

impl SoftwareProbe {
    /// The repository's base URL for a URL template.
    fn base_url(&self, template: &str, ctx: &ProbeContext) -> Result<String, String> {
        let repo = placeholders::expand(&self.repository, ctx)?;
        let base = placeholders::expand(template, ctx)?.replace("@fqrn@", &repo);
        Ok(base.trim_end_matches('/').to_string())
    }

    /// The manifest URL for a repository URL template.
    fn manifest_url(&self, template: &str, ctx: &ProbeContext) -> Result<Url, String> {
        parse_url(
            &format!("{}/.cvmfspublished", self.base_url(template, ctx)?),
            false,
        )
    }

    fn proxy_url(&self, ctx: &ProbeContext) -> Result<Option<Url>, String> {
        self.proxy
            .as_deref()
            .map(|p| parse_url(&placeholders::expand(p, ctx)?, true))
            .transpose()
    }

    /// GETs `url`, through `proxy` when set, and parses the manifest.
    async fn fetch(
        &self,
        ctx: &ProbeContext,
        url: &Url,
        proxy: Option<&Url>,
        log: &mut String,
    ) -> Fetched {
        let got = self.get(ctx, url, proxy, MAX_MANIFEST, log).await;
        Fetched {
            url: url.clone(),
            result: got.body.and_then(|b| {
                parse_manifest(&b)
                    .map_err(|e| Outcome::critical(format!("unparsable manifest at {url}: {e}")))
            }),
            timings: got.timings,
            total: got.total,
        }
    }

    /// GETs `url` (at most `limit` bytes), through `proxy` when set: anything but a whole
    /// 200 answer is CRITICAL (or the transport's own outcome).
    async fn get(
        &self,
        ctx: &ProbeContext,
        url: &Url,
        proxy: Option<&Url>,
        limit: usize,
        log: &mut String,
    ) -> Got {
        let start = Instant::now();
        let mut timings = Timings::default();
        let mut progress = Progress::default();
        let mut certs = Vec::new();
        let host = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        // Through a proxy the request line carries the whole URL.
        let target = match proxy {
            Some(_) => url.to_string(),
            None => url[url::Position::BeforePath..url::Position::AfterQuery].to_string(),
        };
        if let Some(p) = proxy {
            let _ = writeln!(log, "via proxy {p}");
        }
        let req = Request::builder()
            .method(Method::GET)
            .uri(target)
            .header(HOST, authority)
            .header(USER_AGENT, USER_AGENT_VALUE)
            // As the CVMFS client asks for the manifest: not older than its TTL allows.
            .header(CACHE_CONTROL, "max-age=61")
            .body(Full::new(Bytes::new()));
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                return Got {
                    body: Err(Outcome::unknown(format!(
                        "cannot build the request for {url}: {e}"
                    ))),
                    timings,
                    total: start.elapsed(),
                }
            }
        };
        let connect_to = proxy.unwrap_or(url);
        let got = http::fetch(
            ctx,
            connect_to,
            req,
            &self.tls,
            limit,
            &mut progress,
            Trace {
                timings: &mut timings,
                log,
                certs: &mut certs,
            },
        )
        .await;
        let body = match got {
            Err(f) => Err(f.outcome(ctx, url.as_str())),
            Ok(resp) if resp.parts.status != StatusCode::OK => Err(Outcome::critical(format!(
                "{} for {url}",
                status_text(resp.parts.status)
            ))),
            Ok(resp) if resp.truncated => Err(Outcome::critical(format!(
                "{url} is longer than {limit} bytes"
            ))),
            Ok(resp) => Ok(resp.body),
        };
        Got {
            body,
            timings,
            total: start.elapsed(),
        }
    }
}

/// What the trust chain is checked against.
struct Trust<'a> {
    /// The repository's URL on the server, without a trailing `/`.
    base: &'a str,
    proxy: Option<&'a Url>,
    repo: &'a str,
    keys: &'a [rsa::RsaPublicKey],
    key_file: &'a std::path::Path,
    now: i64,
}

impl SoftwareProbe {
    /// The client's checks past the manifest's own hash: the certificate object, the
    /// manifest's signature, the whitelist's signature, name, fingerprint and expiry. Returns
    /// the whitelist's time left as perfdata.
    async fn check_trust(
        &self,
        ctx: &ProbeContext,
        t: &Trust<'_>,
        m: &Manifest,
        log: &mut String,
        problems: &mut Vec<(Status, String)>,
        notes: &mut Vec<String>,
    ) -> Option<Perfdatum> {
        let crit = |problems: &mut Vec<(Status, String)>, text: String| {
            problems.push((Status::Critical, text))
        };
        // The certificate, by the content address the manifest names.
        let Some(x) = m.certificate.as_deref() else {
            crit(
                problems,
                "the manifest names no signing certificate (X): it is not signed".into(),
            );
            return None;
        };
        if x.len() != 40 || !x.chars().all(|c| c.is_ascii_hexdigit()) {
            crit(
                problems,
                format!(
                    "the certificate hash X `{}` is not a SHA-1 hash",
                    x.escape_default()
                ),
            );
            return None;
        }
        let cert_url = match parse_url(&format!("{}/data/{}/{}X", t.base, &x[..2], &x[2..]), false)
        {
            Ok(u) => u,
            Err(e) => {
                problems.push((Status::Unknown, e));
                return None;
            }
        };
        let got = self
            .get(ctx, &cert_url, t.proxy, MAX_SIGNED_OBJECT, log)
            .await;
        let cert = match got.body {
            Err(o) => {
                problems.push((o.status, format!("certificate: {}", o.summary)));
                return None;
            }
            Ok(object) => match signature::read_certificate(&object, x) {
                Ok(c) => c,
                Err(e) => {
                    crit(
                        problems,
                        format!("unreadable certificate at {cert_url}: {e}"),
                    );
                    return None;
                }
            },
        };
        let _ = writeln!(
            log,
            "certificate {} ({})",
            cert.fingerprint_colons(),
            cert.subject
        );
        if !signature::verify_manifest(&cert, &m.hash, &m.signature) {
            crit(
                problems,
                format!(
                    "the manifest's signature is not its certificate's ({}): tampered manifest",
                    cert.subject
                ),
            );
        }

        // The whitelist: signed by the master key, naming the repository and the certificate.
        let wl_url = match parse_url(&format!("{}/.cvmfswhitelist", t.base), false) {
            Ok(u) => u,
            Err(e) => {
                problems.push((Status::Unknown, e));
                return None;
            }
        };
        let got = self
            .get(ctx, &wl_url, t.proxy, MAX_SIGNED_OBJECT, log)
            .await;
        let bytes = match got.body {
            Ok(b) => b,
            Err(o) => {
                problems.push((o.status, format!("whitelist: {}", o.summary)));
                return None;
            }
        };
        let parsed = signature::parse_letter(&bytes)
            .and_then(|letter| signature::parse_whitelist(letter.text).map(|w| (letter, w)));
        let (letter, wl) = match parsed {
            Ok(p) => p,
            Err(e) => {
                crit(problems, format!("unparsable whitelist at {wl_url}: {e}"));
                return None;
            }
        };
        match signature::check_letter_hash(&letter) {
            Ok(()) => {}
            Err(signature::HashProblem::Unsupported(a)) => {
                problems.push((
                    Status::Unknown,
                    format!("the whitelist's hash algorithm {a} is not checked by gridprobe"),
                ));
                return None;
            }
            Err(e) => {
                crit(problems, format!("corrupt whitelist at {wl_url}: {e}"));
                return None;
            }
        }
        if !signature::verify_whitelist(t.keys, &letter) {
            crit(
                problems,
                format!(
                    "the whitelist is not signed by the master key in {}",
                    t.key_file.display()
                ),
            );
            return None;
        }
        if wl.name != t.repo {
            crit(
                problems,
                format!(
                    "the whitelist is for repository {}, not {}",
                    wl.name, t.repo
                ),
            );
        }
        if wl.pkcs7 {
            notes.push("the whitelist asks for a PKCS#7 check too: not done by gridprobe".into());
        }
        if wl.ca_chain {
            notes.push("the whitelist asks for a CA chain check too: not done by gridprobe".into());
        }
        if !wl.fingerprints.contains(&cert.fingerprint) {
            crit(
                problems,
                format!(
                    "certificate {} ({}) is not on the whitelist: unknown certificate",
                    cert.fingerprint_colons(),
                    cert.subject
                ),
            );
        }
        let left = wl.expires - t.now;
        let expires = fmt_utc(wl.expires.saturating_mul(1000), UtcPrecision::Minutes);
        let warn = i64::try_from(self.whitelist_warn.as_secs()).unwrap_or(i64::MAX);
        if left <= 0 {
            crit(
                problems,
                format!(
                    "the whitelist expired at {expires} ({} ago)",
                    fmt_age(-left)
                ),
            );
        } else if left <= warn {
            problems.push((
                Status::Warning,
                format!("the whitelist expires at {expires}, in {}", fmt_age(left)),
            ));
        } else {
            notes.push(format!(
                "signature verified: certificate {} on the whitelist, signed by the master key, \
                 valid until {expires}",
                cert.fingerprint_colons()
            ));
        }
        Some(Perfdatum::new("whitelist_left", left as f64, "s"))
    }
}

/// Now, Unix seconds.
fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `3 h 5 min`, `2 d 4 h`, `40 s`.
fn fmt_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

#[async_trait]
impl Probe for SoftwareProbe {
    async fn run(&self, ctx: &ProbeContext) -> Outcome {
        if ctx.cancel.is_cancelled() {
            return Outcome::unknown("cancelled before start");
        }
        let (url, proxy, repo) = match (
            self.manifest_url(&self.url, ctx),
            self.proxy_url(ctx),
            placeholders::expand(&self.repository, ctx),
        ) {
            (Ok(u), Ok(p), Ok(r)) => (u, p, r),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Outcome::unknown(e),
        };
        let mut log = String::new();
        let site = self.fetch(ctx, &url, proxy.as_ref(), &mut log).await;
        let mut perfdata = site.timings.perfdata();
        perfdata.push(seconds("total", site.total));
        let m = match site.result {
            Ok(m) => m,
            Err(o) => return o.with_details(log).with_perfdata(perfdata),
        };

        let mut problems: Vec<(Status, String)> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        match &m.name {
            Some(n) if *n != repo => problems.push((
                Status::Critical,
                format!("{url} serves repository {n}, not {repo}"),
            )),
            Some(_) => {}
            None => notes.push("the manifest carries no repository name (N)".to_string()),
        }
        match &m.hash_check {
            HashCheck::Verified => notes.push("SHA-1 of the manifest matches its hash".into()),
            HashCheck::Mismatch { stated, computed } => problems.push((
                Status::Critical,
                format!(
                    "corrupt manifest at {url}: its SHA-1 is {computed}, the hash it carries {stated}"
                ),
            )),
            HashCheck::Unverified(alg) => {
                notes.push(format!("hash algorithm {alg} not verified by gridprobe"))
            }
        }
        let now = now_unix();
        match &self.master_key {
            None => notes.push(format!(
                "signature of {} bytes not verified (`master_key` not set)",
                m.signature_len
            )),
            Some((path, keys)) => {
                let _ = writeln!(log, "\ntrust chain:");
                let base = self.base_url(&self.url, ctx);
                match base {
                    Err(e) => problems.push((Status::Unknown, e)),
                    Ok(base) => {
                        let trust = Trust {
                            base: &base,
                            proxy: proxy.as_ref(),
                            repo: &repo,
                            keys,
                            key_file: path,
                            now,
                        };
                        self.check_trust(ctx, &trust, &m, &mut log, &mut problems, &mut notes)
                            .await
                            .into_iter()
                            .for_each(|p| perfdata.push(p));
                    }
                }
            }
        }

        let age = m.published.map(|t| now - t);
        match age {
            None => problems.push((
                Status::Warning,
                "the manifest has no publish time (T)".to_string(),
            )),
            Some(a) => {
                perfdata.push(Perfdatum::new("age", a as f64, "s"));
                let too_old =
                    |limit: Duration| a > i64::try_from(limit.as_secs()).unwrap_or(i64::MAX);
                if let Some(c) = self.crit_age.filter(|c| too_old(*c)) {
                    problems.push((
                        Status::Critical,
                        format!(
                            "revision {} was published {} ago, over {}",
                            m.revision,
                            fmt_age(a),
                            format_duration(c)
                        ),
                    ));
                } else if too_old(self.warn_age) {
                    problems.push((
                        Status::Warning,
                        format!(
                            "revision {} was published {} ago, over {}",
                            m.revision,
                            fmt_age(a),
                            format_duration(self.warn_age)
                        ),
                    ));
                }
                if a < -CLOCK_SLACK {
                    notes.push(format!(
                        "the publish time is {} in the future: a clock is wrong",
                        fmt_age(-a)
                    ));
                }
            }
        }
        let mut revision = Perfdatum::new("revision", m.revision as f64, "c");
        revision.min = Some(0.0);
        perfdata.push(revision);
        perfdata.push(Perfdatum::new("ttl", m.ttl as f64, "s"));

        if let Some(template) = &self.reference {
            let _ = writeln!(log, "\nreference:");
            match self.manifest_url(template, ctx) {
                Err(e) => notes.push(format!("reference: {e}")),
                Ok(ref_url) => {
                    let r = self.fetch(ctx, &ref_url, None, &mut log).await;
                    match r.result {
                        Err(o) => {
                            notes.push(format!("cannot compare with the reference: {}", o.summary))
                        }
                        Ok(rm) => {
                            let behind = rm.revision.saturating_sub(m.revision);
                            perfdata.push(Perfdatum::new("behind", behind as f64, ""));
                            let ref_age = rm.published.map(|t| now - t);
                            let grace =
                                i64::try_from(self.revision_grace.as_secs()).unwrap_or(i64::MAX);
                            if behind == 0 {
                                notes.push(format!(
                                    "revision {} is the reference's ({})",
                                    m.revision, r.url
                                ));
                            } else if ref_age.is_some_and(|a| a > grace) {
                                problems.push((
                                    Status::Warning,
                                    format!(
                                        "revision {} is behind the reference's {} (published {} ago)",
                                        m.revision,
                                        rm.revision,
                                        fmt_age(ref_age.unwrap_or(0))
                                    ),
                                ));
                            } else {
                                notes.push(format!(
                                    "revision {} is behind the reference's {}, published {}: \
                                     within the {} replication grace",
                                    m.revision,
                                    rm.revision,
                                    ref_age.map_or("at an unknown time".to_string(), |a| format!(
                                        "{} ago",
                                        fmt_age(a)
                                    )),
                                    format_duration(self.revision_grace)
                                ));
                            }
                        }
                    }
                }
            }
        }

        let ok_text = format!(
            "{repo} revision {}{}",
            m.revision,
            age.map(|a| format!(" published {} ago", fmt_age(a)))
                .unwrap_or_default()
        );
        problems.sort_by_key(|(s, _)| std::cmp::Reverse(s.exit_rank()));
        let outcome = match problems.first() {
            None => Outcome::ok(format!("{ok_text} ({} to fetch)", fmt_secs(site.total))),
            Some((worst, _)) => {
                let texts: Vec<&str> = problems.iter().map(|(_, t)| t.as_str()).collect();
                Outcome::new(*worst, texts.join("; "))
            }
        };
        let mut details = format!(
            "{ok_text} at {}\nroot catalog {}, TTL {} s, hash {}\n",
            site.url, m.root_catalog, m.ttl, m.hash
        );
        for n in &notes {
            let _ = writeln!(details, "note: {n}");
        }
        let _ = write!(details, "\n{log}");
        outcome.with_details(details).with_perfdata(perfdata)
    }

    fn check_instance(&self, ctx: &ProbeContext) -> Result<(), String> {
        let check = || -> Result<(), String> {
            self.manifest_url(&self.url, ctx)?;
            self.proxy_url(ctx)?;
            if let Some(r) = &self.reference {
                self.manifest_url(r, ctx)?;
            }
            Ok(())
        };
        check().map_err(|e| format!("software probe {}: {e}", ctx.metric))
    }
}

#[cfg(test)]
mod tests;
