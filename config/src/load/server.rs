//! `[defaults]`, `[access]` and `[server]`: scheduling defaults, tokens, and the service's
//! settings (store, schedule mode, durations), each value checked at its position.

use std::collections::BTreeMap;
use std::path::Path;

use super::raw::{RawAccess, RawDefaults, RawServer};
use super::{FileId, Loader, CONCURRENCY, RETRIES, RUNS_PER_HOUR};
use crate::diagnostic::Span;
use crate::model::Defaults;
use crate::time as t;

impl Loader {
    pub(super) fn apply_defaults(&mut self, file: FileId, raw: RawDefaults) {
        let base = Defaults::default();
        let interval = self
            .duration(file, raw.interval.clone(), "interval", t::INTERVAL)
            .unwrap_or(base.interval);
        let timeout = self
            .duration(file, raw.timeout.clone(), "timeout", t::TIMEOUT)
            .unwrap_or(base.timeout);
        if let Some(t) = &raw.timeout {
            if timeout >= interval {
                let d = self.error(
                    file,
                    t.span(),
                    format!(
                        "default timeout ({}) must be shorter than the default interval ({})",
                        t.get_ref(),
                        humantime::format_duration(interval)
                    ),
                );
                self.diagnostics.push(d);
            }
        }
        let mut kind_concurrency = BTreeMap::new();
        for (k, v) in raw.kind_concurrency {
            if let Some(n) =
                self.count(file, Some(v), &format!("kind_concurrency.{k}"), CONCURRENCY)
            {
                kind_concurrency.insert(k, n);
            }
        }
        self.config.defaults = Defaults {
            interval,
            timeout,
            retries: self
                .count(file, raw.retries, "retries", RETRIES)
                .unwrap_or(base.retries),
            retry_interval: self
                .duration(
                    file,
                    raw.retry_interval,
                    "retry_interval",
                    t::RETRY_INTERVAL,
                )
                .unwrap_or(base.retry_interval),
            concurrency: self
                .count(file, raw.concurrency, "concurrency", CONCURRENCY)
                .unwrap_or(base.concurrency),
            site_concurrency: self
                .count(file, raw.site_concurrency, "site_concurrency", CONCURRENCY)
                .unwrap_or(base.site_concurrency),
            kind_concurrency,
        };
    }

    pub(super) fn apply_access(&mut self, file: FileId, raw: RawAccess) {
        let mut access = crate::model::Access::default();
        if let Some(r) = raw.read {
            match r.get_ref().as_str() {
                "open" => access.read_requires_token = false,
                "token" => access.read_requires_token = true,
                other => {
                    let d = self.error(file, r.span(), format!("unknown read access `{other}`"));
                    self.diagnostics.push(d.with_help("write read = \"open\" (anyone may read) or \"token\" (a valid token is needed)"));
                }
            }
        }
        if let Some(n) = self.count(file, raw.runs_per_hour, "runs_per_hour", RUNS_PER_HOUR) {
            access.runs_per_hour = n;
        }
        for t in raw.token {
            let sources = [&t.sha256, &t.sha256_file, &t.sha256_env];
            let given = sources.iter().filter(|s| s.is_some()).count();
            if given != 1 {
                let d = self.error(
                    file,
                    t.name.span(),
                    format!(
                        "token `{}` needs exactly one of `sha256`, `sha256_file`, `sha256_env`",
                        t.name.get_ref()
                    ),
                );
                self.diagnostics.push(d.with_help("store the SHA-256 of the token (`gridprobe token hash` prints it), never the token itself"));
                continue;
            }
            let (hash, span) = if let Some(h) = &t.sha256 {
                (Ok(h.get_ref().trim().to_string()), h.span())
            } else if let Some(f) = &t.sha256_file {
                let path = std::path::Path::new(f.get_ref());
                (
                    std::fs::read_to_string(path)
                        .map(|s| s.trim().to_string())
                        .map_err(|e| format!("cannot read `{}`: {e}", f.get_ref())),
                    f.span(),
                )
            } else if let Some(v) = &t.sha256_env {
                (
                    std::env::var(v.get_ref())
                        .map(|s| s.trim().to_string())
                        .map_err(|_| format!("environment variable `{}` is not set", v.get_ref())),
                    v.span(),
                )
            } else {
                continue;
            };
            let hash = match hash {
                Ok(h) if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) => {
                    h.to_ascii_lowercase()
                }
                Ok(_) => {
                    let d = self.error(
                        file,
                        span,
                        format!(
                            "token `{}`: not a SHA-256 hex digest (64 hex digits)",
                            t.name.get_ref()
                        ),
                    );
                    self.diagnostics.push(d.with_help("`gridprobe token hash` prints the digest of a token read from standard input"));
                    continue;
                }
                Err(e) => {
                    let d = self.error(file, span, format!("token `{}`: {e}", t.name.get_ref()));
                    self.diagnostics.push(d);
                    continue;
                }
            };
            let what = format!("token `{}`", t.name.get_ref());
            let Some(role) = self.read_role(file, &what, &t.role, &t.sites) else {
                continue;
            };
            access.tokens.push(crate::model::Token {
                name: t.name.into_inner(),
                sha256: hash,
                role,
            });
        }
        if let Some(d) = self.duration(
            file,
            raw.session_lifetime,
            "session_lifetime",
            t::SESSION_LIFETIME,
        ) {
            access.session_lifetime = d;
        }
        access.dns = self.read_dn_rules(file, raw.dn);
        self.config.access = access;
    }

    /// A `role` with its `sites`, for a token or a `[[access.dn]]` (`what` names it).
    pub(super) fn read_role(
        &mut self,
        file: FileId,
        what: &str,
        role: &toml::Spanned<String>,
        sites: &[toml::Spanned<String>],
    ) -> Option<crate::model::Role> {
        match role.get_ref().as_str() {
            "operator" => {
                if let Some(s) = sites.first() {
                    let d = self.error(
                        file,
                        s.span(),
                        format!(
                            "{what}: an operator covers every site; `sites` is for site-admins"
                        ),
                    );
                    self.diagnostics.push(d);
                }
                Some(crate::model::Role::Operator)
            }
            "site-admin" => {
                if sites.is_empty() {
                    let d = self.error(
                        file,
                        role.span(),
                        format!("site-admin {what} names no sites"),
                    );
                    self.diagnostics
                        .push(d.with_help("add sites = [\"SITE\", ...]"));
                    return None;
                }
                for s in sites {
                    self.positions.access_sites.push((
                        s.get_ref().clone(),
                        Span {
                            file,
                            range: s.span(),
                        },
                    ));
                }
                Some(crate::model::Role::SiteAdmin(
                    sites.iter().map(|s| s.get_ref().clone()).collect(),
                ))
            }
            other => {
                let d = self
                    .error(file, role.span(), format!("unknown role `{other}`"))
                    .with_suggestion(other, ["operator", "site-admin"]);
                self.diagnostics.push(d);
                None
            }
        }
    }

    pub(super) fn apply_server(&mut self, file: FileId, raw: RawServer) {
        self.apply_spool_settings(file, raw.instance, raw.spool_dir, raw.spool_max_size);
        let base = crate::model::Server::default();
        let listen = match raw.listen {
            Some(l) => {
                match l.get_ref().parse::<std::net::SocketAddr>() {
                    Ok(_) => l.into_inner(),
                    Err(e) => {
                        let d = self.error(
                            file,
                            l.span(),
                            format!("invalid listen address `{}`: {e}", l.get_ref()),
                        );
                        self.diagnostics.push(d.with_help("write an IP address and port, e.g. \"127.0.0.1:8479\" or \"[::]:8479\""));
                        base.listen.clone()
                    }
                }
            }
            None => base.listen.clone(),
        };
        let base_dir = self
            .config
            .sources
            .file(file)
            .and_then(|f| f.path.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let mut store_is_sqlite = false;
        let store = raw.store.and_then(|s| {
            let v = s.get_ref().trim();
            if v.is_empty() {
                let d = self.error(file, s.span(), "`store` must not be empty");
                self.diagnostics.push(d.with_help("name a SQLite file, e.g. store = \"/var/lib/gridprobe/results.sqlite\", or leave it out for the default"));
                return None;
            }
            match crate::model::StoreSpec::parse(v) {
                Ok(crate::model::StoreSpec::Sqlite(path)) => {
                    store_is_sqlite = true;
                    // Relative to the file that says it, like includes, plugins and spools:
                    // every command then finds the same store whatever its working directory.
                    if path.is_relative() && !base_dir.as_os_str().is_empty() {
                        let joined = base_dir.join(&path);
                        match joined.to_str() {
                            Some(j) if v.starts_with("sqlite:") => Some(format!("sqlite:{j}")),
                            Some(j) => Some(j.to_string()),
                            None => Some(v.to_string()),
                        }
                    } else {
                        Some(v.to_string())
                    }
                }
                Ok(crate::model::StoreSpec::Postgres(_)) => Some(v.to_string()),
                Err(e) => {
                    let help = if e.contains("password") {
                        "keep the URL without it, e.g. postgresql://gridprobe@db.example.org:5432/gridprobe, and set store_password_file = \"/etc/gridprobe/pgpass\" (or store_password_env)"
                    } else {
                        "write a file path, sqlite:PATH, or postgresql://USER@HOST:PORT/DATABASE"
                    };
                    let mut d = self.error(file, s.span(), e);
                    // The source line is shown under the message: never with the password.
                    if let Some(loc) = &mut d.location {
                        for secret in crate::model::store_url_secrets(v) {
                            if !secret.is_empty() {
                                let stars = "*".repeat(secret.chars().count());
                                loc.line_text = loc.line_text.replace(&secret, &stars);
                            }
                        }
                    }
                    self.diagnostics.push(d.with_help(help));
                    None
                }
            }
        });
        // Password sources of a PostgreSQL store: at most one, and not beside a SQLite file
        // (where it would silently do nothing). Read when the store is opened, not here, so
        // the configuration never holds the secret.
        if let (Some(_), Some(f)) = (&raw.store_password_env, &raw.store_password_file) {
            let d = self.error(
                file,
                f.span(),
                "give the store password in one of `store_password_env` and `store_password_file`, not both",
            );
            self.diagnostics.push(d);
        }
        for key in [&raw.store_password_env, &raw.store_password_file]
            .into_iter()
            .flatten()
        {
            if key.get_ref().trim().is_empty() {
                let d = self.error(file, key.span(), "must not be empty");
                self.diagnostics.push(d);
            } else if store_is_sqlite {
                let d = self.error(
                    file,
                    key.span(),
                    "a store password is only used with a PostgreSQL store, and `store` names a SQLite file",
                );
                self.diagnostics.push(d.with_help(
                    "remove it, or set store = \"postgresql://USER@HOST:PORT/DATABASE\"",
                ));
            }
        }
        let store_password_env = raw
            .store_password_env
            .map(|v| v.into_inner().trim().to_string())
            .filter(|v| !v.is_empty());
        let store_password_file = raw
            .store_password_file
            .map(|v| v.into_inner().trim().to_string())
            .filter(|v| !v.is_empty())
            .map(|v| base_dir.join(v));
        let schedule = match raw.schedule {
            None => crate::model::ScheduleMode::Local,
            Some(v) => match v.get_ref().trim() {
                "local" => crate::model::ScheduleMode::Local,
                "shared" if store_is_sqlite => {
                    let d = self.error(
                        file,
                        v.span(),
                        "a shared schedule needs a PostgreSQL store that every instance reaches, and `store` names a SQLite file",
                    );
                    self.diagnostics.push(d.with_help(
                        "set store = \"postgresql://USER@HOST:PORT/DATABASE\", or schedule = \"local\"",
                    ));
                    crate::model::ScheduleMode::Local
                }
                "shared" => crate::model::ScheduleMode::Shared,
                other => {
                    let d = self.error(file, v.span(), format!("unknown schedule mode `{other}`"));
                    self.diagnostics.push(d.with_help(
                        "write schedule = \"local\" (this process runs every entry) or \"shared\" (instances on one PostgreSQL store divide the entries)",
                    ));
                    crate::model::ScheduleMode::Local
                }
            },
        };
        // A crashed instance's entries move after one lease; a few times the database's worst
        // response time is enough, e.g. "15s".
        let schedule_lease = self
            .duration(
                file,
                raw.schedule_lease,
                "schedule_lease",
                t::SCHEDULE_LEASE,
            )
            .unwrap_or(base.schedule_lease);
        self.config.server = crate::model::Server {
            schedule,
            schedule_lease,
            listen,
            store,
            store_password_env,
            store_password_file,
            retention: self
                .duration(file, raw.retention, "retention", t::RETENTION)
                .unwrap_or(base.retention),
            shutdown_grace: self
                .duration(
                    file,
                    raw.shutdown_grace,
                    "shutdown_grace",
                    t::SHUTDOWN_GRACE,
                )
                .unwrap_or(base.shutdown_grace),
            startup_spread: self
                .duration(
                    file,
                    raw.startup_spread,
                    "startup_spread",
                    t::STARTUP_SPREAD,
                )
                .unwrap_or(base.startup_spread),
            self_check: raw.self_check.and_then(|c| self.read_self_check(file, c)),
            tls: self.read_server_tls(
                file,
                &base_dir,
                raw.tls_cert,
                raw.tls_key,
                raw.client_ca_dir,
            ),
        };
    }
}
