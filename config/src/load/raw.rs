//! The tables of a configuration as written: serde structs with spans, read one table at a
//! time so every table's errors are reported on their own.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) retries: Option<Spanned<i64>>,
    pub(super) retry_interval: Option<Spanned<String>>,
    pub(super) concurrency: Option<Spanned<i64>>,
    pub(super) site_concurrency: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) kind_concurrency: BTreeMap<String, Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) store: Option<Spanned<String>>,
    pub(super) store_password_env: Option<Spanned<String>>,
    pub(super) store_password_file: Option<Spanned<String>>,
    pub(super) retention: Option<Spanned<String>>,
    pub(super) shutdown_grace: Option<Spanned<String>>,
    pub(super) startup_spread: Option<Spanned<String>>,
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) schedule_lease: Option<Spanned<String>>,
    // Publishing and spooling (read in load/publish.rs).
    pub(super) instance: Option<Spanned<String>>,
    pub(super) spool_dir: Option<Spanned<String>>,
    pub(super) spool_max_size: Option<Spanned<String>>,
    // The monitoring host's self-check (load/self_check.rs) and HTTPS (load/tls.rs).
    pub(super) self_check: Option<Spanned<RawSelfCheck>>,
    pub(super) tls_cert: Option<Spanned<String>>,
    pub(super) tls_key: Option<Spanned<String>>,
    pub(super) client_ca_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSelfCheck {
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) resolve: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) connect: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDn {
    pub(super) subject: Spanned<String>,
    pub(super) role: Spanned<String>,
    #[serde(default)]
    pub(super) sites: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    pub(super) read: Option<Spanned<String>>,
    pub(super) runs_per_hour: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) token: Vec<RawToken>,
    pub(super) session_lifetime: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) dn: Vec<RawDn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) name: Spanned<String>,
    pub(super) sha256: Option<Spanned<String>>,
    pub(super) sha256_file: Option<Spanned<String>>,
    pub(super) sha256_env: Option<Spanned<String>>,
    pub(super) role: Spanned<String>,
    #[serde(default)]
    pub(super) sites: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSite {
    pub(super) name: Spanned<String>,
    pub(super) tier: Spanned<i64>,
    pub(super) grid: Option<String>,
    pub(super) country: Option<String>,
    pub(super) contact: Option<String>,
    pub(super) federation: Option<Spanned<String>>,
    pub(super) weight: Option<Spanned<RawNumber>>,
    pub(super) executor: Option<Spanned<String>>,
    #[serde(default, rename = "override")]
    pub(super) overrides: BTreeMap<Spanned<String>, RawOverride>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) flavour: Spanned<String>,
    pub(super) hostname: Spanned<String>,
    pub(super) endpoint: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    #[serde(default)]
    pub(super) params: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub(super) production: bool,
    #[serde(default, rename = "override")]
    pub(super) overrides: BTreeMap<Spanned<String>, RawOverride>,
}

pub(super) fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverride {
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) retries: Option<Spanned<i64>>,
    pub(super) retry_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) disabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    pub(super) metric: Spanned<String>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) kind: Spanned<String>,
    pub(super) flavours: Vec<Spanned<String>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) retries: Option<Spanned<i64>>,
    pub(super) retry_interval: Option<Spanned<String>>,
    pub(super) freshness: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) depends_on: Vec<Spanned<String>>,
    pub(super) description: Option<String>,
    pub(super) credential: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) critical: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    pub(super) valid_from: Option<Spanned<RawTime>>,
    #[serde(default)]
    pub(super) groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub(super) name: Spanned<String>,
    pub(super) operation: Spanned<String>,
    pub(super) flavours: Vec<Spanned<String>>,
}

/// A number written as a TOML integer or float.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
pub(super) enum RawNumber {
    Int(i64),
    Float(f64),
}

impl RawNumber {
    pub(super) fn value(self) -> f64 {
        match self {
            RawNumber::Int(i) => i as f64,
            RawNumber::Float(f) => f,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDowntime {
    pub(super) site: Option<Spanned<String>>,
    pub(super) service: Option<Spanned<String>>,
    pub(super) flavour: Option<Spanned<String>>,
    pub(super) start: Spanned<RawTime>,
    pub(super) end: Spanned<RawTime>,
    pub(super) classification: Spanned<String>,
    #[serde(default = "default_severity")]
    pub(super) severity: Spanned<String>,
    #[serde(default)]
    pub(super) reason: String,
}

pub(super) fn default_severity() -> Spanned<String> {
    Spanned::new(0..0, "outage".to_string())
}

/// A time written as a string or as a TOML datetime.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawTime {
    Text(String),
    Toml(toml::value::Datetime),
}
