//! The validated configuration: the VO's topology (sites, services), its probes and profiles,
//! and the expansion of probes over services into probe instances.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeValue;
use toml::Spanned;

use crate::diagnostic::{Diagnostic, SourceMap, Span};

/// A whole, validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The virtual organisation this configuration monitors.
    pub vo: String,
    /// Values every probe inherits unless it or a site/service overrides them.
    pub defaults: Defaults,
    /// The sites, in file order.
    pub sites: Vec<Site>,
    /// The probe definitions, in file order.
    pub probes: Vec<ProbeDef>,
    /// Availability profiles: which metrics are critical for which flavour.
    pub profiles: Vec<Profile>,
    /// `[server]`: how `gridprobe serve` runs and where it keeps results.
    pub server: Server,
    /// `[access]`: who may read and who may start runs.
    pub access: Access,
    /// Downtimes declared in the configuration (`[[downtime]]`).
    pub downtimes: Vec<Downtime>,
    /// `[[publish]]` targets and the spool settings of `[server]`.
    pub publish: crate::publish::Publishing,
    /// `[[credential]]`: the grid credentials probes use.
    pub credentials: Vec<crate::credential::Credential>,
    /// `[report]`: the monthly report's targets.
    pub report: crate::report::ReportSettings,
    /// Notification channels and rules (`[[notify]]`, `[[notify_rule]]`).
    pub notify: crate::notify::Notify,
    /// `[agents]`: the broker of agent-run sites, when there is one.
    pub agents: Option<crate::agents::AgentSettings>,
    /// The files this configuration was read from, for positioning later errors.
    pub sources: SourceMap,
    /// Site weights read from the `weights` file (CSV `site,weight` or a JSON object).
    pub imported_weights: BTreeMap<String, f64>,
}

/// `[defaults]`: scheduling values inherited by every probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Time between two scheduled runs of a probe instance.
    pub interval: Duration,
    /// Time a single attempt may take.
    pub timeout: Duration,
    /// Extra attempts after a non-OK result before it becomes the recorded state.
    pub retries: u32,
    /// Time between two attempts.
    pub retry_interval: Duration,
    /// How many probes may run at once, overall.
    pub concurrency: u32,
    /// How many probes may run at once against one site.
    pub site_concurrency: u32,
    /// Per probe kind limits (e.g. `ce = 2`).
    pub kind_concurrency: BTreeMap<String, u32>,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(300),
            retries: 0,
            retry_interval: Duration::from_secs(60),
            concurrency: 32,
            site_concurrency: 8,
            kind_concurrency: BTreeMap::new(),
        }
    }
}

/// `[server]`: settings of the long-running service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// HTTP listen address (health, reload, later the API and dashboard).
    pub listen: String,
    /// Result store: a SQLite file path (or `sqlite:PATH`), or a `postgresql://` URL without
    /// a password (see [`StoreSpec`]); `None` means the default SQLite location.
    pub store: Option<String>,
    /// With a PostgreSQL store: the environment variable holding its password.
    pub store_password_env: Option<String>,
    /// With a PostgreSQL store: a file holding its password (relative paths are taken from the
    /// directory of the file that sets it). Without either, `PGPASSWORD` is used if set.
    pub store_password_file: Option<PathBuf>,
    /// Raw results older than this are deleted in the background.
    pub retention: Duration,
    /// On shutdown, probes in flight get this long to finish before they are interrupted.
    pub shutdown_grace: Duration,
    /// Entries with no recent result start within this window after start-up, spread evenly.
    pub startup_spread: Duration,
    /// Whether this process runs every entry, or shares the schedule with the other instances
    /// on the same PostgreSQL store.
    pub schedule: ScheduleMode,
    /// Shared schedule: how long an instance's membership lasts without renewal, i.e. how long
    /// a crashed instance's entries wait before the others take them.
    pub schedule_lease: Duration,
    /// `[server.self_check]`: the monitoring host's own probes, if configured.
    pub self_check: Option<crate::self_check::SelfCheck>,
    /// `tls_cert`/`tls_key`/`client_ca_dir`: serve over HTTPS.
    pub tls: Option<crate::dn::ServerTls>,
}

/// `[server] schedule`: who runs the schedule's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScheduleMode {
    /// This process runs every entry (the default).
    #[default]
    Local,
    /// Every `serve` on the same PostgreSQL store shares the entries; each slot runs once.
    Shared,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:8479".into(),
            store: None,
            store_password_env: None,
            store_password_file: None,
            retention: Duration::from_secs(400 * 86_400),
            shutdown_grace: Duration::from_secs(10),
            startup_spread: Duration::from_secs(30),
            schedule: ScheduleMode::Local,
            schedule_lease: Duration::from_secs(15),
            self_check: None,
            tls: None,
        }
    }
}

/// Where results are kept, as `[server] store`, `--store` or `$GRIDPROBE_STORE` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// The embedded default: an SQLite file (`PATH` or `sqlite:PATH`).
    Sqlite(PathBuf),
    /// A shared PostgreSQL database: its `postgres://` or `postgresql://` URL, which holds no
    /// password (that comes from `PGPASSWORD` or `[server] store_password_file`/`_env`).
    Postgres(String),
}

impl StoreSpec {
    /// Reads a store location. Refused: a URL of a kind gridprobe has no backend for, and a
    /// PostgreSQL URL holding a password (configuration files are read by many; passwords
    /// belong in a file or variable of their own). The error never repeats the password.
    pub fn parse(text: &str) -> Result<StoreSpec, String> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            if let Some(shown) = postgres_url_password(text) {
                return Err(format!(
                    "the store URL `{shown}` holds a password: put the password in PGPASSWORD \
                     or [server] store_password_file"
                ));
            }
            return Ok(StoreSpec::Postgres(text.to_string()));
        }
        if let Some(path) = text.strip_prefix("sqlite:") {
            // `sqlite://PATH` is read as a path too, as SQLite URIs are.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("`sqlite:` names no file".into());
            }
            return Ok(StoreSpec::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "unsupported store `{scheme}://...`: gridprobe keeps results in an SQLite file \
                 or in PostgreSQL"
            ));
        }
        Ok(StoreSpec::Sqlite(PathBuf::from(text)))
    }
}

/// The URL with its password masked, when it has one (in the user info or as a `password`
/// query parameter); `None` when it has none.
fn postgres_url_password(url: &str) -> Option<String> {
    let (masked, secrets) = mask_url_passwords(url);
    (!secrets.is_empty()).then_some(masked)
}

/// The passwords written in a store URL (to mask them wherever the URL is shown, e.g. the
/// source line of a diagnostic).
pub(crate) fn store_url_secrets(url: &str) -> Vec<String> {
    mask_url_passwords(url).1
}

/// Whether a query parameter or setting name holds a secret (`password`, `sslpassword`,
/// `token`, `secret`, `api_key`, ...), as opposed to naming where one lives (`*_file`, `*_env`).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    let secret = [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "api-key",
        "credential",
    ]
    .iter()
    .any(|w| k.contains(w));
    secret
        && !["_file", "_env", "_path", "_var"]
            .iter()
            .any(|s| k.ends_with(s))
}

/// The credentials a URL carries: the password of its user info and the values of
/// secret-like query parameters (see [`is_secret_key`]), with the URL as it may be shown
/// (each of them replaced by `***`). The user name is not counted: see the callers for
/// schemes where it is a token.
pub fn url_credentials(url: &str) -> (String, Vec<String>) {
    mask_url_passwords(url)
}

/// A URL as it may be quoted in an error: its whole user info (`***@`) and the values of
/// secret-like query parameters masked. For URLs that may not even parse.
pub fn redact_url(url: &str) -> String {
    let (masked, _) = mask_url_passwords(url);
    let Some((scheme, rest)) = masked.split_once("://") else {
        return masked;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => masked,
    }
}

/// The URL with every password replaced by `***`, and the passwords found.
fn mask_url_passwords(url: &str) -> (String, Vec<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), Vec::new());
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let mut masked = format!("{scheme}://");
    let mut secrets = Vec::new();
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, password)) => {
                secrets.push(password.to_string());
                masked.push_str(&format!("{user}:***@{hosts}"));
            }
            None => masked.push_str(authority),
        },
        None => masked.push_str(authority),
    }
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    masked.push_str(path);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|kv| {
                let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
                if is_secret_key(key) {
                    secrets.push(value.to_string());
                    format!("{key}=***")
                } else {
                    kv.to_string()
                }
            })
            .collect();
        masked.push('?');
        masked.push_str(&pairs.join("&"));
    }
    (masked, secrets)
}

/// `[access]`: reading is open by default; starting runs needs a token whose SHA-256 is
/// declared here (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Reading the API and dashboard needs a valid token too.
    pub read_requires_token: bool,
    /// On-demand runs allowed per site per hour.
    pub runs_per_hour: u32,
    /// The tokens.
    pub tokens: Vec<Token>,
    /// How long a dashboard login session lasts.
    pub session_lifetime: Duration,
    /// `[[access.dn]]`: certificate subjects (or patterns) and their roles, first match wins.
    pub dns: Vec<crate::dn::DnRule>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            read_requires_token: false,
            runs_per_hour: 60,
            tokens: Vec::new(),
            session_lifetime: Duration::from_secs(8 * 3600),
            dns: Vec::new(),
        }
    }
}

/// A bearer token, known by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Name, for logs.
    pub name: String,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
    /// What it may do.
    pub role: Role,
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Start runs on every site.
    Operator,
    /// Start runs on these sites only.
    SiteAdmin(Vec<String>),
}

impl Role {
    /// Whether this role may start runs at a site.
    pub fn may_run_at(&self, site: &str) -> bool {
        match self {
            Role::Operator => true,
            Role::SiteAdmin(sites) => sites.iter().any(|s| s == site),
        }
    }
}

/// A declared downtime of a site or of a service instance (from the config or from GOCDB).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Downtime {
    /// Identity (GOCDB's id, or `config:N:start`).
    pub id: String,
    /// The whole site, when given.
    pub site: Option<String>,
    /// One service host, when given.
    pub hostname: Option<String>,
    /// With `hostname`: only this flavour on that host.
    pub flavour: Option<String>,
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// End, ms since the epoch.
    pub end_ms: i64,
    /// Declared at least 24 h ahead.
    pub scheduled: bool,
    /// OUTAGE severity (only outages take a service down; WARNING means "at risk").
    pub outage: bool,
    /// Why.
    pub reason: String,
    /// Where it came from: `config` or `gocdb`.
    pub source: String,
}

impl Downtime {
    /// Whether this downtime covers a service instance of a site.
    pub fn covers(&self, site: &str, hostname: &str, flavour: &str) -> bool {
        let site_ok = self.site.as_deref().is_none_or(|s| s == site);
        let host_ok = self.hostname.as_deref().is_none_or(|h| h == hostname);
        let flavour_ok = self.flavour.as_deref().is_none_or(|f| f == flavour);
        site_ok && host_ok && flavour_ok
    }
}

/// A grid site.
#[derive(Debug, Clone)]
pub struct Site {
    /// Site name as the VO knows it (e.g. `LCG.CERN.ch`).
    pub name: String,
    /// WLCG tier, 0 to 3.
    pub tier: u8,
    /// Grid infrastructure (e.g. `EGI`, `OSG`).
    pub grid: Option<String>,
    /// Country code or name.
    pub country: Option<String>,
    /// Contact address of the site admins.
    pub contact: Option<String>,
    /// The federation it belongs to (e.g. a WLCG Tier-2 federation), for weighted figures.
    pub federation: Option<String>,
    /// Its weight in tier and federation means (e.g. pledged HEPscore23); `None`: from the
    /// `weights` file, else 1.
    pub weight: Option<f64>,
    /// The site's service instances.
    pub services: Vec<Service>,
    /// Where the site's probes run (`executor`): centrally, or on the site's agents.
    pub executor: crate::agents::Executor,
    /// Per-probe overrides for every service of the site, keyed by metric.
    pub overrides: BTreeMap<String, Overrides>,
    /// Where the site's `name` is written.
    pub span: Span,
}

/// One service instance (a host offering one flavour) at a site.
#[derive(Debug, Clone)]
pub struct Service {
    /// Service flavour: CE, SRM, WEBDAV, XROOTD, FTS, CONDDB, CVMFS or a VO-defined one.
    pub flavour: String,
    /// Host name.
    pub hostname: String,
    /// Endpoint URL, when the service has one.
    pub endpoint: Option<url::Url>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Arbitrary string parameters, usable as `{name}` placeholders by probes.
    pub params: BTreeMap<String, String>,
    /// Counted in availability (`production = false` services are probed and shown only).
    pub production: bool,
    /// Per-probe overrides for this instance, keyed by metric.
    pub overrides: BTreeMap<String, Overrides>,
    /// Where the service's `hostname` is written.
    pub span: Span,
}

/// Scheduling overrides for one probe on a site or service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Replaces the interval.
    pub interval: Option<Duration>,
    /// Replaces the timeout.
    pub timeout: Option<Duration>,
    /// Replaces the number of retries.
    pub retries: Option<u32>,
    /// Replaces the retry interval.
    pub retry_interval: Option<Duration>,
    /// Turns the probe off here.
    pub disabled: bool,
}

/// A probe definition: one metric, one kind, applied to every service of its flavours.
#[derive(Debug, Clone)]
pub struct ProbeDef {
    /// Full metric name, SAM style (`org.lhcb.CE-lhcb-install`).
    pub metric: String,
    /// Short display name (`CE-lhcb-install`).
    pub short: String,
    /// Probe kind (`nagios`, `http`, `tcp`, ...); selects the implementation.
    pub kind: String,
    /// Service flavours the probe applies to.
    pub flavours: Vec<String>,
    /// Interval, if the probe sets one.
    pub interval: Option<Duration>,
    /// Timeout, if the probe sets one.
    pub timeout: Option<Duration>,
    /// Retries, if the probe sets them.
    pub retries: Option<u32>,
    /// Retry interval, if the probe sets one.
    pub retry_interval: Option<Duration>,
    /// How long a result stays current; default 2 × interval + timeout.
    pub freshness: Option<Duration>,
    /// Full metric names of probes that must be OK (or WARNING) on the same target first.
    pub depends_on: Vec<String>,
    /// Human description.
    pub description: Option<String>,
    /// The `[[credential]]` the probe authenticates with (`credential = "NAME"`).
    pub credential: Option<String>,
    /// Where `credential` is written.
    pub credential_span: Option<Span>,
    /// The kind-specific `[probe.params]` table, kept with its positions for the registry.
    pub params: KindParams,
    /// Where the probe's `metric` is written.
    pub span: Span,
    /// Where the probe's `kind` is written.
    pub kind_span: Span,
    /// For a metric of a worker-node bundle (`[[probe.bundle]]`): the full metric of the probe
    /// whose runs report it. Such a probe is never run on its own; it shares the reporting
    /// probe's kind, flavours, interval and timeout, and its `params` is its bundle table.
    pub reported_by: Option<String>,
}

/// The raw kind-specific parameters of a probe, deserialized by the probe kind itself.
#[derive(Debug, Clone)]
pub struct KindParams {
    /// The `params` table, if present.
    pub value: Option<Spanned<DeValue<'static>>>,
    /// The file it was read from.
    pub file: usize,
    /// Where the probe table starts, for errors about a missing `params`.
    pub table_span: Span,
}

impl KindParams {
    /// Deserializes the parameters into a kind's own struct. Errors point at the offending key
    /// or value, with "did you mean" for unknown keys.
    pub fn deserialize<T: serde::de::DeserializeOwned>(
        &self,
        sources: &SourceMap,
    ) -> Result<T, Diagnostic> {
        let value = match &self.value {
            Some(v) => v.clone(),
            None => Spanned::new(
                self.table_span.range.clone(),
                DeValue::Table(Default::default()),
            ),
        };
        let fallback = Span {
            file: self.file,
            range: value.span(),
        };
        // Every unknown key is reported at once (serde stops at the first): they are taken out
        // first, each becomes an error of its own, and the rest is still checked.
        let (value, mut errors) =
            crate::diagnostic::take_unknown_keys::<T>(sources, self.file, value, "params");
        let result = T::deserialize(toml::de::ValueDeserializer::from(value)).map_err(|e| {
            crate::diagnostic::serde_diagnostic(sources, self.file, &e, &fallback, "params")
        });
        match result {
            Ok(v) if errors.is_empty() => Ok(v),
            Ok(_) => {
                let mut first = errors.remove(0);
                first.related = errors;
                Err(first)
            }
            Err(d) => {
                if errors.is_empty() {
                    return Err(d);
                }
                let mut first = errors.remove(0);
                errors.push(d);
                first.related = errors;
                Err(first)
            }
        }
    }

    /// Position of one key inside `params` (for semantic errors found by the kind).
    pub fn key_span(&self, key: &str) -> Span {
        if let Some(table) = self.value.as_ref().and_then(|v| v.get_ref().as_table()) {
            if let Some((_, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == key) {
                return Span {
                    file: self.file,
                    range: v.span(),
                };
            }
        }
        self.table_span.clone()
    }
}

/// An availability profile: per flavour, the metrics whose AND gives the instance status.
/// Several `[[profile]]` tables with one name and different `valid_from` are the versions of
/// one profile over time.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Profile name.
    pub name: String,
    /// Flavour → critical metrics (full names).
    pub critical: BTreeMap<String, Vec<String>>,
    /// In force from this instant (midnight UTC of the date written; ms since the epoch);
    /// `None`: since always.
    pub valid_from_ms: Option<i64>,
    /// Aggregation groups (ARGO's aggregation profile): the site is the AND of its groups.
    /// Empty: every flavour is a group of its own (the site is the AND of its flavours).
    pub groups: Vec<FlavourGroup>,
}

/// A named set of flavours combined with one operation (e.g. compute = OR of two CE kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlavourGroup {
    /// Group name (`compute`, `storage`).
    pub name: String,
    /// How its flavours combine.
    pub operation: GroupOperation,
    /// Its flavours.
    pub flavours: Vec<String>,
}

/// How the flavours of a group combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupOperation {
    /// Worst wins: every flavour is needed.
    And,
    /// Best wins: one flavour is enough.
    Or,
}

/// Largest site weight accepted (`weight`, the `weights` file).
pub const MAX_WEIGHT: f64 = 1e12;

/// One probe applied to one service instance, with its effective schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeInstance {
    /// Index into [`Config::probes`].
    pub probe: usize,
    /// Index into [`Config::sites`].
    pub site: usize,
    /// Index into the site's services.
    pub service: usize,
    /// Effective interval.
    pub interval: Duration,
    /// Effective timeout.
    pub timeout: Duration,
    /// Effective retries.
    pub retries: u32,
    /// Effective retry interval.
    pub retry_interval: Duration,
    /// How long a result stays current before the cell shows MISSING.
    pub freshness: Duration,
}

impl Config {
    /// Finds a probe by full or short metric name.
    pub fn probe_index(&self, name: &str) -> Option<usize> {
        self.probes
            .iter()
            .position(|p| p.metric == name)
            .or_else(|| self.probes.iter().position(|p| p.short == name))
    }

    /// A site's weight in tier and federation means: its own `weight`, else the `weights`
    /// file's, else 1.
    pub fn site_weight(&self, site: &Site) -> f64 {
        site.weight
            .or_else(|| self.imported_weights.get(&site.name).copied())
            .unwrap_or(1.0)
    }

    /// The versions of a profile, oldest first (an undated one first of all).
    pub fn profile_versions(&self, name: &str) -> Vec<&Profile> {
        let mut v: Vec<&Profile> = self.profiles.iter().filter(|p| p.name == name).collect();
        v.sort_by_key(|p| p.valid_from_ms.unwrap_or(i64::MIN));
        v
    }

    /// Finds a site by name.
    pub fn site_index(&self, name: &str) -> Option<usize> {
        self.sites.iter().position(|s| s.name == name)
    }

    /// Every enabled probe instance: each probe × each service of a flavour it applies to, with
    /// values inherited defaults → probe → site override → service override.
    pub fn instances(&self) -> Vec<ProbeInstance> {
        let mut out = Vec::new();
        // A bundle's metric follows its reporting probe's overrides: it exists where that
        // probe runs, with its interval and timeout.
        let owners: Vec<&ProbeDef> = self
            .probes
            .iter()
            .map(|p| {
                p.reported_by
                    .as_deref()
                    .and_then(|m| self.probes.iter().find(|o| o.metric == m))
                    .unwrap_or(p)
            })
            .collect();
        for (si, site) in self.sites.iter().enumerate() {
            for (vi, service) in site.services.iter().enumerate() {
                for (pi, &probe) in owners.iter().enumerate() {
                    if !probe.flavours.iter().any(|f| f == &service.flavour) {
                        continue;
                    }
                    // Overrides may name the probe by full metric or by short name.
                    let lookup = |m: &'_ BTreeMap<String, Overrides>| {
                        m.get(&probe.metric)
                            .or_else(|| m.get(&probe.short))
                            .cloned()
                    };
                    let site_o = lookup(&site.overrides);
                    let svc_o = lookup(&service.overrides);
                    let (site_o, svc_o) = (site_o.as_ref(), svc_o.as_ref());
                    if site_o.is_some_and(|o| o.disabled) || svc_o.is_some_and(|o| o.disabled) {
                        continue;
                    }
                    // A bundle's metric may also be turned off on its own.
                    let own = &self.probes[pi];
                    let own_disabled = |m: &'_ BTreeMap<String, Overrides>| {
                        m.get(&own.metric)
                            .or_else(|| m.get(&own.short))
                            .is_some_and(|o| o.disabled)
                    };
                    if own.reported_by.is_some()
                        && (own_disabled(&site.overrides) || own_disabled(&service.overrides))
                    {
                        continue;
                    }
                    let pick = |f: fn(&Overrides) -> Option<Duration>,
                                p: Option<Duration>,
                                d: Duration| {
                        svc_o
                            .and_then(f)
                            .or_else(|| site_o.and_then(f))
                            .or(p)
                            .unwrap_or(d)
                    };
                    let interval = pick(|o| o.interval, probe.interval, self.defaults.interval);
                    let timeout = pick(|o| o.timeout, probe.timeout, self.defaults.timeout);
                    out.push(ProbeInstance {
                        probe: pi,
                        site: si,
                        service: vi,
                        interval,
                        timeout,
                        // Saturating: values are range-checked when read, but a Config can be
                        // built by hand too.
                        freshness: probe
                            .freshness
                            .unwrap_or(interval.saturating_mul(2).saturating_add(timeout)),
                        retry_interval: pick(
                            |o| o.retry_interval,
                            probe.retry_interval,
                            self.defaults.retry_interval,
                        ),
                        retries: svc_o
                            .and_then(|o| o.retries)
                            .or_else(|| site_o.and_then(|o| o.retries))
                            .or(probe.retries)
                            .unwrap_or(self.defaults.retries),
                    });
                }
            }
        }
        out
    }

    /// Number of service instances over all sites.
    pub fn service_count(&self) -> usize {
        self.sites.iter().map(|s| s.services.len()).sum()
    }
}

/// The display name of a metric: the part after the reverse-DNS prefix
/// (`org.lhcb.CE-lhcb-install` → `CE-lhcb-install`).
pub fn short_metric_name(metric: &str) -> &str {
    // Reverse-DNS prefix segments are lower-case identifiers; the metric proper is what follows.
    let mut rest = metric;
    while let Some((head, tail)) = rest.split_once('.') {
        let is_prefix = !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if is_prefix && !tail.is_empty() {
            rest = tail;
        } else {
            break;
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::short_metric_name;

    #[test]
    fn short_names_drop_reverse_dns_prefix() {
        assert_eq!(
            short_metric_name("org.lhcb.CE-lhcb-install"),
            "CE-lhcb-install"
        );
        assert_eq!(short_metric_name("ch.cern.FTS.ftsinfo"), "FTS.ftsinfo");
        assert_eq!(short_metric_name("CE-lhcb-os"), "CE-lhcb-os");
        assert_eq!(short_metric_name("org.example.http"), "http");
    }
}
