//! The credential manager: obtains, renews and watches the `[[credential]]`s of a
//! configuration (an OAuth2 token, a VOMS proxy, a file managed elsewhere) and hands them to
//! probes through the [`crate::ProbeContext`]. Shared machinery, not a probe kind.
//!
//! A credential's state is what people see (`gridprobe credentials`, `/api/v1/credentials`,
//! `/metrics`): valid until, last renewal, last error; never the secret. A probe whose
//! credential is not valid is not run: the runner records it UNKNOWN with
//! [`Credential::unusable`] as the summary, so the monitoring's own failure never counts
//! against a site.

mod file;
mod proxy;
mod token;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use gridprobe_config::credential::{Credential as Spec, CredentialKind};
use gridprobe_config::Config;
use tokio_util::sync::CancellationToken;

use crate::outcome::{fmt_utc, UtcPrecision};

/// A secret value (an access token): shown as `***` by `Debug`, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
impl Secret {
    /// A secret made by a test.
    pub(crate) fn for_tests(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// What a valid credential gives a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    /// A bearer token, and the file that holds it for plugins (`BEARER_TOKEN_FILE`).
    Bearer {
        /// The token.
        token: Secret,
        /// The file holding it (mode 0600), when there is one.
        file: Option<PathBuf>,
    },
    /// An X.509 proxy file (certificate chain and key in one PEM file: `X509_USER_PROXY`).
    Proxy {
        /// The proxy file.
        file: PathBuf,
    },
}

/// What an attempt to obtain a credential gave.
pub(crate) struct Obtained {
    material: Material,
    /// When it stops being valid; `None` when that cannot be told (a plain token file).
    valid_until: Option<SystemTime>,
}

/// The state of one credential as shown to people: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CredentialState {
    /// Name.
    pub name: String,
    /// `token`, `proxy` or `file`.
    pub kind: &'static str,
    /// Whether a probe may use it now.
    pub valid: bool,
    /// When it expires, ms since the epoch.
    pub valid_until_ms: Option<i64>,
    /// When it was last obtained (or, for a file, last read successfully), ms since the epoch.
    pub last_renewal_ms: Option<i64>,
    /// Why the last attempt failed, when it did (cleared by a success).
    pub last_error: Option<String>,
    /// Failed attempts since start.
    pub renewal_failures: u64,
}

#[derive(Default)]
struct Inner {
    material: Option<Material>,
    valid_until: Option<SystemTime>,
    last_renewal: Option<SystemTime>,
    last_error: Option<String>,
    /// Failed attempts since the last success.
    streak: u32,
    /// How long before its expiry the credential is no longer handed out: a sixth of its
    /// lifetime, at most a minute, so that no probe starts with a token about to expire.
    margin: Duration,
}

/// One credential, shared by the renewal task and every probe that uses it.
pub struct Credential {
    spec: Spec,
    /// Where its files go (`<state>/<vo>.credentials`); `None`: in memory only.
    dir: Option<PathBuf>,
    inner: Mutex<Inner>,
    failures: AtomicU64,
    /// Stops this credential's renewal task (when it is removed by a reload).
    stop: CancellationToken,
    /// Serialises obtaining, so two callers never ask the endpoint at once.
    obtaining: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.spec.name)
            .field("kind", &self.spec.kind.name())
            .finish_non_exhaustive()
    }
}

/// Shortest wait between two failed attempts; doubled up to the credential's `retry_max`.
const RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest time one attempt to obtain a credential may take.
pub(crate) const OBTAIN_TIMEOUT: Duration = Duration::from_secs(60);

fn ms(t: SystemTime) -> i64 {
    crate::outcome::unix_ms(t)
}

impl Credential {
    fn new(spec: Spec, dir: Option<PathBuf>, stop: CancellationToken) -> Self {
        Credential {
            spec,
            dir,
            inner: Mutex::new(Inner::default()),
            failures: AtomicU64::new(0),
            stop,
            obtaining: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The credential's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The state, for people.
    pub fn state(&self) -> CredentialState {
        let now = SystemTime::now();
        let inner = self.lock();
        CredentialState {
            name: self.spec.name.clone(),
            kind: self.spec.kind.name(),
            valid: usable(&inner, now),
            valid_until_ms: inner.valid_until.map(ms),
            last_renewal_ms: inner.last_renewal.map(ms),
            last_error: inner.last_error.clone(),
            renewal_failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Why a probe may not use this credential now (the summary of its UNKNOWN result), or
    /// `None` when it may.
    pub fn unusable(&self, now: SystemTime) -> Option<String> {
        let inner = self.lock();
        if usable(&inner, now) {
            return None;
        }
        let name = &self.spec.name;
        let failing = inner
            .last_error
            .as_deref()
            .map(|e| format!(" (renewal failing: {e})"))
            .unwrap_or_default();
        Some(match (&inner.material, inner.valid_until) {
            (Some(_), Some(until)) if until <= now => format!(
                "monitoring credential {name} expired at {}{failing}",
                fmt_utc(ms(until), UtcPrecision::Seconds)
            ),
            (Some(_), Some(until)) => format!(
                "monitoring credential {name} expires at {}, too soon to be used{failing}",
                fmt_utc(ms(until), UtcPrecision::Seconds)
            ),
            _ => format!(
                "monitoring credential {name} not yet obtained: {}",
                inner
                    .last_error
                    .as_deref()
                    .unwrap_or("no attempt has finished yet")
            ),
        })
    }

    /// What a probe uses, when the credential is valid.
    pub fn material(&self) -> Option<Material> {
        let inner = self.lock();
        usable(&inner, SystemTime::now())
            .then(|| inner.material.clone())
            .flatten()
    }

    /// Obtains (or re-reads) the credential once, recording the outcome; returns how long to
    /// wait before the next attempt.
    pub async fn refresh(&self) -> Duration {
        let _one = self.obtaining.lock().await;
        let started = SystemTime::now();
        let result = tokio::time::timeout(OBTAIN_TIMEOUT, self.obtain()).await;
        let result = result.unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                gridprobe_config::time::format_duration(OBTAIN_TIMEOUT)
            ))
        });
        let mut inner = self.lock();
        match result {
            Ok(obtained) => {
                inner.material = Some(obtained.material);
                inner.valid_until = obtained.valid_until;
                inner.margin = obtained
                    .valid_until
                    .and_then(|u| u.duration_since(started).ok())
                    .map(|lifetime| (lifetime / 6).min(Duration::from_secs(60)))
                    .unwrap_or_default();
                inner.last_renewal = Some(SystemTime::now());
                inner.streak = 0;
                if inner.last_error.take().is_some() {
                    tracing::info!(credential = %self.spec.name, "credential obtained again");
                }
                self.next_renewal(&inner, started)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(credential = %self.spec.name, error = %e, "cannot obtain credential");
                inner.last_error = Some(e);
                // Consecutive failures double the wait, up to `retry_max`.
                inner.streak = inner.streak.saturating_add(1);
                let wait = RETRY_MIN.saturating_mul(1u32 << inner.streak.saturating_sub(1).min(16));
                let wait = wait.min(self.spec.retry_max);
                // Never wait past the expiry of what is still held.
                match inner
                    .valid_until
                    .and_then(|u| u.duration_since(started).ok())
                {
                    Some(left) if left > Duration::ZERO => wait.min(left.max(RETRY_MIN)),
                    _ => wait,
                }
            }
        }
    }

    /// When to renew: files are re-read every `check_interval`; what gridprobe obtains is
    /// renewed at two thirds of its lifetime, minus up to a tenth of it as jitter (so that
    /// many instances do not ask at once).
    fn next_renewal(&self, inner: &Inner, started: SystemTime) -> Duration {
        if let CredentialKind::File(f) = &self.spec.kind {
            return f.check_interval;
        }
        let Some(until) = inner.valid_until else {
            return Duration::from_secs(600);
        };
        let lifetime = until.duration_since(started).unwrap_or_default();
        let at = lifetime.saturating_mul(2) / 3;
        let jitter_max = lifetime / 10;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = jitter_max.mul_f64(f64::from(nanos % 1000) / 1000.0);
        at.saturating_sub(jitter).max(Duration::from_millis(500))
    }

    async fn obtain(&self) -> Result<Obtained, String> {
        match &self.spec.kind {
            CredentialKind::Token(t) => {
                token::obtain(&self.spec.name, t, self.dir.as_deref()).await
            }
            CredentialKind::Proxy(p) => {
                proxy::obtain(&self.spec.name, p, self.dir.as_deref()).await
            }
            CredentialKind::File(f) => file::read(&f.path).await,
        }
    }

    /// Renews until stopped: at once, then as [`Credential::refresh`] says.
    async fn renew_loop(self: Arc<Self>) {
        loop {
            let wait = self.refresh().await;
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

fn usable(inner: &Inner, now: SystemTime) -> bool {
    inner.material.is_some()
        && inner
            .valid_until
            .is_none_or(|u| u > now.checked_add(inner.margin).unwrap_or(now))
}

/// Every credential of a configuration, by name.
pub struct Credentials {
    dir: Option<PathBuf>,
    by_name: Mutex<BTreeMap<String, Arc<Credential>>>,
    /// Set once renewal runs (`serve`): credentials added by a reload start renewing too.
    renewing: Mutex<Option<CancellationToken>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("names", &self.names())
            .finish()
    }
}

impl Credentials {
    /// An empty manager whose files go to `dir` (created with mode 0700 when first needed);
    /// with `None`, tokens are kept in memory only.
    pub fn new(dir: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Credentials {
            dir,
            by_name: Mutex::new(BTreeMap::new()),
            renewing: Mutex::new(None),
        })
    }

    /// A manager for `config`'s credentials (not obtained yet).
    pub fn for_config(config: &Config, dir: Option<PathBuf>) -> Arc<Self> {
        let c = Credentials::new(dir);
        c.configure(config);
        c
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Credential>>> {
        self.by_name.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn names(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    /// Takes the credentials of a (re)loaded configuration: an unchanged one keeps its state
    /// (no new token is asked for), a changed or new one starts afresh, a removed one stops.
    pub fn configure(&self, config: &Config) {
        let root = self
            .renewing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut map = self.map();
        let mut next = BTreeMap::new();
        for spec in &config.credentials {
            match map.remove(&spec.name) {
                Some(old) if same_spec(&old.spec, spec) => {
                    next.insert(spec.name.clone(), old);
                }
                old => {
                    if let Some(old) = old {
                        old.stop.cancel();
                    }
                    let stop = root
                        .as_ref()
                        .map(CancellationToken::child_token)
                        .unwrap_or_default();
                    let cred = Arc::new(Credential::new(spec.clone(), self.dir.clone(), stop));
                    if root.is_some() {
                        tokio::spawn(cred.clone().renew_loop());
                    }
                    next.insert(spec.name.clone(), cred);
                }
            }
        }
        for (_, removed) in std::mem::take(&mut *map) {
            removed.stop.cancel();
        }
        *map = next;
    }

    /// Starts renewing every credential in the background until `shutdown` (for `serve`).
    pub fn start(&self, shutdown: &CancellationToken) {
        let mut renewing = self.renewing.lock().unwrap_or_else(|p| p.into_inner());
        if renewing.is_some() {
            return;
        }
        *renewing = Some(shutdown.clone());
        let map = self.map();
        for cred in map.values() {
            // Credentials made before renewal started stop with `shutdown` too.
            let c = cred.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = c.clone().renew_loop() => {}
                }
            });
        }
    }

    /// Obtains every credential once, concurrently (for `run` and `gridprobe credentials`).
    pub async fn obtain_all(&self) {
        let all = self.list();
        futures::future::join_all(all.iter().map(|c| c.refresh())).await;
    }

    /// Obtains the named credentials once, concurrently (for `run`).
    pub async fn obtain(&self, names: &std::collections::BTreeSet<&str>) {
        let some: Vec<_> = self
            .list()
            .into_iter()
            .filter(|c| names.contains(c.name()))
            .collect();
        futures::future::join_all(some.iter().map(|c| c.refresh())).await;
    }

    /// The credential of this name.
    pub fn get(&self, name: &str) -> Option<Arc<Credential>> {
        self.map().get(name).cloned()
    }

    /// Every credential, by name.
    pub fn list(&self) -> Vec<Arc<Credential>> {
        self.map().values().cloned().collect()
    }

    /// The state of every credential, by name.
    pub fn states(&self) -> Vec<CredentialState> {
        self.list().iter().map(|c| c.state()).collect()
    }
}

fn same_spec(a: &Spec, b: &Spec) -> bool {
    a.name == b.name && a.kind == b.kind && a.retry_max == b.retry_max
}

/// Creates `dir` (mode 0700) if needed and makes it private.
pub(crate) fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot make {} private: {e}", dir.display()))
}

/// Writes `bytes` to `dir/name` atomically (a temporary file, fsynced, renamed) with mode
/// 0600; the directory is created with mode 0700.
pub(crate) fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    private_dir(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })?;
    Ok(path)
}

/// Text from a remote service or a command, made safe for a one-line error: control
/// characters dropped, at most 200 characters.
pub(crate) fn one_line(text: &str) -> String {
    let t: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    t
}

#[cfg(test)]
mod tests;
