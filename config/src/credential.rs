//! `[[credential]]`: the grid credentials gridprobe obtains and renews itself (an OAuth2 token,
//! a VOMS proxy) or watches (a file managed elsewhere), referenced by probes as
//! `credential = "NAME"`. The model holds where secrets live (a file or an environment
//! variable), never a secret.

use std::path::PathBuf;
use std::time::Duration;

use crate::diagnostic::{Diagnostic, Span};
use crate::model::Config;
use crate::time::DurationRange;

/// `[[credential]] valid` (proxy lifetime asked of `voms-proxy-init`): 10 minutes to 7 days.
pub const PROXY_VALID: DurationRange =
    DurationRange::new(Duration::from_secs(600), Duration::from_secs(7 * 86_400));
/// Default of `valid`.
pub const DEFAULT_PROXY_VALID: Duration = Duration::from_secs(24 * 3600);
/// `[[credential]] retry_max` (longest wait between two failed renewals): 1s to 1 hour.
pub const RETRY_MAX: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(3600));
/// Default of `retry_max`.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);
/// `[[credential]] check_interval` (how often a `file` credential is re-read): 1s to 1 day.
pub const CHECK_INTERVAL: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(86_400));
/// Default of `check_interval`.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// One `[[credential]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The name probes use (`credential = "NAME"`), also the file name under the state
    /// directory.
    pub name: String,
    /// What it is and how it is obtained.
    pub kind: CredentialKind,
    /// Longest wait between two failed attempts to obtain it (backoff doubles up to this).
    pub retry_max: Duration,
    /// Where its `name` is written.
    pub span: Span,
}

/// The three kinds of credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// An OAuth2 access token from a token endpoint (RFC 6749).
    Token(TokenSpec),
    /// A VOMS proxy made by `voms-proxy-init` from a robot certificate.
    Proxy(ProxySpec),
    /// A proxy or token file kept fresh by something else; only its expiry is watched.
    File(FileSpec),
}

impl CredentialKind {
    /// `token`, `proxy` or `file`.
    pub fn name(&self) -> &'static str {
        match self {
            CredentialKind::Token(_) => "token",
            CredentialKind::Proxy(_) => "proxy",
            CredentialKind::File(_) => "file",
        }
    }
}

/// Where a secret is read from (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file (relative paths from the declaring file's directory); surrounding whitespace is
    /// trimmed.
    File(PathBuf),
    /// An environment variable of the gridprobe process.
    Env(String),
}

impl SecretSource {
    /// Reads the secret. Errors name the file or variable, never its content.
    pub fn read(&self) -> Result<String, String> {
        let value = match self {
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?,
            SecretSource::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
            }
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(match self {
                SecretSource::File(path) => format!("{} is empty", path.display()),
                SecretSource::Env(var) => format!("environment variable {var} is empty"),
            });
        }
        Ok(value)
    }
}

/// The OAuth2 grant used to obtain a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// `grant_type=client_credentials`: the client's own identity (a robot client).
    ClientCredentials,
    /// `grant_type=refresh_token`, with the long-lived refresh token from this source.
    RefreshToken(SecretSource),
}

/// `kind = "token"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// The token endpoint (`https://`, or `http://` on a loopback address only).
    pub token_endpoint: url::Url,
    /// How the token is asked for.
    pub grant: Grant,
    /// The OAuth2 client id.
    pub client_id: String,
    /// The client secret, when the client has one (sent with HTTP Basic authentication).
    pub secret: Option<SecretSource>,
    /// `scope`, space-separated (e.g. `storage.read:/ storage.modify:/`).
    pub scope: Option<String>,
    /// `audience` (WLCG: the service's URL, or `https://wlcg.cern.ch/jwt/v1/any`).
    pub audience: Option<String>,
    /// Extra trust anchors for the token endpoint (PEM file).
    pub ca_file: Option<PathBuf>,
}

/// `kind = "proxy"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    /// The robot certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, unencrypted, not readable by group or others).
    pub key: PathBuf,
    /// VOMS attributes asked for, `vo` or `vo:/vo/Role=x` (`voms-proxy-init -voms`); none
    /// makes a plain proxy.
    pub voms: Vec<String>,
    /// Lifetime asked for.
    pub valid: Duration,
    /// `voms-proxy-init`'s `-vomses` (a file or directory naming the VO's VOMS servers).
    pub vomses: Option<PathBuf>,
    /// `-vomsdir` (the `.lsc` files that say which VOMS servers are trusted).
    pub vomsdir: Option<PathBuf>,
    /// `-certdir` (trusted CAs, e.g. `/etc/grid-security/certificates`).
    pub certdir: Option<PathBuf>,
    /// The command, `voms-proxy-init` from PATH by default.
    pub command: String,
}

/// `kind = "file"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The proxy (PEM) or token file.
    pub path: PathBuf,
    /// How often the file is re-read.
    pub check_interval: Duration,
}

impl Config {
    /// The credential of this name.
    pub fn credential(&self, name: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.name == name)
    }

    /// Warnings (not errors) about credentials: one that no probe uses.
    pub fn credential_warnings(&self) -> Vec<Diagnostic> {
        self.credentials
            .iter()
            .filter(|c| {
                !self
                    .probes
                    .iter()
                    .any(|p| p.credential.as_deref() == Some(c.name.as_str()))
            })
            .map(|c| {
                self.sources
                    .error(
                        &c.span,
                        format!("credential `{}` is not used by any probe", c.name),
                    )
                    .with_help(format!(
                        "add credential = \"{}\" to the probes that need it, or remove the \
                         [[credential]] (it is still obtained and renewed)",
                        c.name
                    ))
            })
            .collect()
    }
}
