//! Opening the result store a command works on: the embedded SQLite file (default, in the
//! state directory, see `state_dir`) or a shared PostgreSQL database, chosen by `--store`, `[server] store` or
//! `$GRIDPROBE_STORE`. Everything above this module sees only `Arc<dyn ResultStore>`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use gridprobe_config::model::Server;
use gridprobe_config::StoreSpec;
use gridprobe_results::{PgStore, ResultStore, SqliteStore};

use crate::state_dir;

/// Where a command's results live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (without password).
    Postgres(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(url),
        }
    }
}

/// The store a command uses: the first of `--store`, `[server] store` and `$GRIDPROBE_STORE`
/// that is set, else the default SQLite file of the VO. A PostgreSQL URL with a password, or
/// a URL of another kind, is refused with the reason.
pub fn locate(flag: Option<&str>, server: &Server, vo: &str) -> Result<Location, String> {
    let explicit = flag
        .map(str::to_string)
        .or_else(|| server.store.clone())
        .or_else(|| {
            std::env::var("GRIDPROBE_STORE")
                .ok()
                .filter(|s| !s.trim().is_empty())
        });
    if let Some(text) = explicit {
        return match StoreSpec::parse(&text)? {
            StoreSpec::Postgres(url) => Ok(Location::Postgres(url)),
            StoreSpec::Sqlite(path) => Ok(Location::Sqlite(path)),
        };
    }
    Ok(Location::Sqlite(default_sqlite(vo)))
}

/// The SQLite file of a VO when neither `--store` nor `[server] store` names one:
/// `$GRIDPROBE_STORE` (without a `sqlite:` prefix) when set, else `<vo>.sqlite` in the state
/// directory.
pub fn default_sqlite(vo: &str) -> PathBuf {
    match std::env::var("GRIDPROBE_STORE") {
        Ok(s) if !s.is_empty() => PathBuf::from(s.strip_prefix("sqlite:").unwrap_or(&s)),
        _ => state_dir::file_for(vo, ".sqlite"),
    }
}

/// The password of a PostgreSQL store: `[server] store_password_file`, else the variable named
/// by `store_password_env`, else `PGPASSWORD`, else none (trust or peer authentication).
pub fn password(server: &Server) -> Result<Option<String>, String> {
    if let Some(path) = &server.store_password_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the store password from {} ([server] store_password_file): {e}",
                path.display()
            )
        })?;
        // A file written with `echo` ends in a newline that is not part of the password.
        let password = text.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            return Err(format!(
                "{} ([server] store_password_file) is empty",
                path.display()
            ));
        }
        return Ok(Some(password));
    }
    if let Some(var) = &server.store_password_env {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(format!(
                "[server] store_password_env names `{var}`, which is not set in the environment"
            )),
        };
    }
    Ok(std::env::var("PGPASSWORD").ok().filter(|v| !v.is_empty()))
}

/// Opens (creating or upgrading as needed) the store at `location`. Errors carry the store's
/// path or `postgresql://user@host:port/db` and the reason (refused connection, failed
/// authentication, missing database, newer schema).
pub async fn open_store(
    location: &Location,
    server: &Server,
) -> anyhow::Result<Arc<dyn ResultStore>> {
    match location {
        Location::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path)?)),
        Location::Postgres(url) => {
            let password = password(server).map_err(anyhow::Error::msg)?;
            Ok(Arc::new(PgStore::open(url, password).await?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_then_config_then_default() {
        let mut server = Server::default();
        assert_eq!(
            locate(Some("postgresql://gp@db/gp"), &server, "lhcb"),
            Ok(Location::Postgres("postgresql://gp@db/gp".into()))
        );
        server.store = Some("sqlite:/tmp/x.db".into());
        assert_eq!(
            locate(None, &server, "lhcb"),
            Ok(Location::Sqlite("/tmp/x.db".into()))
        );
        assert_eq!(
            locate(Some("/y.db"), &server, "lhcb"),
            Ok(Location::Sqlite("/y.db".into()))
        );
        let err = locate(Some("postgresql://gp:pw@db/gp"), &server, "lhcb").unwrap_err();
        assert!(err.contains("PGPASSWORD"), "{err}");
        assert!(!err.contains("pw@"), "{err}");
    }

    #[test]
    fn flag_wins_and_sqlite_prefix_is_stripped() {
        let server = Server {
            store: Some("/y".into()),
            ..Server::default()
        };
        assert_eq!(
            locate(Some("sqlite:/tmp/x.db"), &server, "vo"),
            Ok(Location::Sqlite("/tmp/x.db".into()))
        );
        let server = Server {
            store: Some("/y.db".into()),
            ..Server::default()
        };
        assert_eq!(
            locate(None, &server, "vo"),
            Ok(Location::Sqlite("/y.db".into()))
        );
    }

    #[test]
    fn password_file_wins_and_loses_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "s3cret\n").unwrap();
        let server = Server {
            store_password_file: Some(file.clone()),
            ..Server::default()
        };
        assert_eq!(password(&server), Ok(Some("s3cret".into())));
        let missing = Server {
            store_password_file: Some(dir.path().join("nope")),
            ..Server::default()
        };
        let err = password(&missing).unwrap_err();
        assert!(err.contains("store_password_file"), "{err}");
        let env = Server {
            store_password_env: Some("GRIDPROBE_TEST_UNSET_PASSWORD_VARIABLE".into()),
            ..Server::default()
        };
        let err = password(&env).unwrap_err();
        assert!(
            err.contains("GRIDPROBE_TEST_UNSET_PASSWORD_VARIABLE"),
            "{err}"
        );
    }
}
