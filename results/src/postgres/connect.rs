//! Connecting: TLS as the connection string asks (rustls, system roots), where a connection
//! goes (for messages, never the password), and the server's errors in terms an operator can
//! act on.

use std::fmt;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::store::StoreError;

/// Which TLS connector a connection string asks for.
#[derive(Clone)]
pub(super) enum Tls {
    /// `sslmode=disable` or `prefer` (the default): plain TCP. `prefer` gives no protection
    /// against an impostor anyway, and a TLS attempt would fail on the self-signed certificate
    /// most local servers have.
    None,
    /// `sslmode=require`: TLS, the server's certificate verified against the system's roots.
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Tls {
    pub(super) fn for_mode(mode: SslMode) -> Result<Tls, String> {
        if mode != SslMode::Require {
            return Ok(Tls::None);
        }
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(
                "sslmode=require, but no CA certificate was found in the system store \
                 (install ca-certificates, or point SSL_CERT_FILE at the server's CA)"
                    .into(),
            );
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
            config,
        )))
    }

    /// One connection outside the pool, its driver on the current runtime.
    pub(super) async fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<Client, tokio_postgres::Error> {
        match self {
            Tls::None => {
                let (client, connection) = config.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "result store connection ended");
                    }
                });
                Ok(client)
            }
            Tls::Rustls(tls) => {
                let (client, connection) = config.connect(tls.clone()).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "result store connection ended");
                    }
                });
                Ok(client)
            }
        }
    }

    pub(super) fn manager(&self, config: tokio_postgres::Config) -> Manager {
        // Fast: a pooled connection is reused unless it is closed; a dead server shows on the
        // next statement, which fails and is retried by the caller (the writer retries).
        let mc = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        match self {
            Tls::None => Manager::from_config(config, NoTls, mc),
            Tls::Rustls(tls) => Manager::from_config(config, tls.clone(), mc),
        }
    }
}

/// Where a connection goes, for messages: never the password.
pub(super) struct Target {
    endpoint: String,
    user: String,
    dbname: String,
    /// `-h HOST -p PORT` of the first host, for commands printed in hints.
    host_args: String,
}

impl Target {
    pub(super) fn of(config: &tokio_postgres::Config) -> Target {
        let ports = config.get_ports();
        let endpoints: Vec<String> = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports
                    .get(i)
                    .or_else(|| ports.first())
                    .copied()
                    .unwrap_or(5432);
                match h {
                    Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                    Host::Tcp(name) => format!("{name}:{port}"),
                    Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
                }
            })
            .collect();
        let first_port = ports.first().copied().unwrap_or(5432);
        let host_args = match config.get_hosts().first() {
            Some(Host::Tcp(name)) => format!("-h {name} -p {first_port}"),
            Some(Host::Unix(dir)) => format!("-h {} -p {first_port}", dir.display()),
            None => format!("-h localhost -p {first_port}"),
        };
        let user = config
            .get_user()
            .map(str::to_string)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "?".into());
        let dbname = config
            .get_dbname()
            .map(str::to_string)
            .unwrap_or_else(|| user.clone());
        Target {
            endpoint: if endpoints.is_empty() {
                "localhost:5432".into()
            } else {
                endpoints.join(",")
            },
            user,
            dbname,
            host_args,
        }
    }

    /// What to say when the database does not exist: the command that creates it, with the
    /// real host, port, user and database.
    fn missing_database(&self) -> String {
        format!(
            "database `{}` does not exist on {} (create it: createdb {} -U {} {})",
            self.dbname, self.endpoint, self.host_args, self.user, self.dbname
        )
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "postgresql://{}@{}/{}",
            self.user, self.endpoint, self.dbname
        )
    }
}

/// The error and its causes on one line.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.ends_with(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The server's message for database errors (with its SQLSTATE), else the error chain.
pub(super) fn pg_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => chain(e),
    }
}

/// Why a connection could not be made, in terms an operator can act on.
pub(super) fn connect_reason(e: &tokio_postgres::Error, target: &Target) -> String {
    let password_help = "give the password in PGPASSWORD, or name a file with \
                         [server] store_password_file (or a variable with store_password_env)";
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_CATALOG_NAME {
            return target.missing_database();
        }
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return format!(
                "authentication failed for user `{}` on {}: {} ({password_help})",
                target.user,
                target.endpoint,
                db.message()
            );
        }
        return format!("{} refused: {}", target.endpoint, pg_reason(e));
    }
    let text = chain(e);
    if text.contains("password missing") {
        return format!(
            "{} asks for a password for user `{}` and none was given ({password_help})",
            target.endpoint, target.user
        );
    }
    let io_kind = {
        let mut source = std::error::Error::source(e);
        let mut kind = None;
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                kind = Some(io.kind());
                break;
            }
            source = s.source();
        }
        kind
    };
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => format!(
            "connection refused by {} (is PostgreSQL running and listening there?)",
            target.endpoint
        ),
        Some(std::io::ErrorKind::TimedOut) => {
            format!("no answer from {} in time: {text}", target.endpoint)
        }
        _ => format!("cannot connect to {}: {text}", target.endpoint),
    }
}

/// A statement's error as the store's query error.
pub(super) fn query_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Query(pg_reason(&e))
}

/// The password-free form of a connection string that could not be parsed.
pub(super) fn redact(conninfo: &str) -> String {
    if let Some((scheme, rest)) = conninfo.split_once("://") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{user}@{hosts}")
            }
            None => authority.to_string(),
        };
        let tail = tail.split('?').next().unwrap_or("");
        return format!("{scheme}://{authority}{tail}");
    }
    conninfo
        .split_whitespace()
        .filter(|kv| !kv.to_ascii_lowercase().starts_with("password"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod hint_tests {
    use super::Target;

    #[test]
    fn missing_database_hint_names_the_real_host() {
        let config: tokio_postgres::Config = "postgresql://gp@db.example.org:5433/results"
            .parse()
            .expect("url");
        let hint = Target::of(&config).missing_database();
        assert!(
            hint.contains("createdb -h db.example.org -p 5433 -U gp results"),
            "{hint}"
        );
        assert!(!hint.contains("HOST"), "{hint}");
    }
}
