//! The kind's parameters: their documentation, how they are read and checked (`check`
//! errors at their keys), and the probe built from them.

use super::*;

/// Parameters.
pub const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "url",
        ty: "string",
        default: ParamDefault::Value("the service endpoint"),
        description: "Database: postgresql://USER@HOST:PORT/DB, mysql:// (or mariadb://) \
                      USER@HOST:PORT/DB, sqlite:///PATH (or sqlite:PATH relative to the config \
                      file), frontier://HOST:PORT/PATH or http(s)://… for a Frontier server. \
                      No password in it: see `password_env`, `password_file`. Placeholders \
                      are expanded",
    },
    ParamDoc {
        name: "query",
        ty: "string",
        default: ParamDefault::Required,
        description: "One read-only SELECT (or WITH … SELECT), e.g. the latest IOV of a tag; \
                      the first column of the first row is the newest payload's time (a \
                      timestamp, a date-time text, or a Unix time in s, ms, us or ns). \
                      Placeholders are expanded. Required",
    },
    ParamDoc {
        name: "warn_age",
        ty: "duration",
        default: ParamDefault::Optional,
        description: "WARNING when the newest payload is older than this. Optional",
    },
    ParamDoc {
        name: "crit_age",
        ty: "duration",
        default: ParamDefault::Optional,
        description: "CRITICAL when the newest payload is older than this. Optional",
    },
    ParamDoc {
        name: "min_rows",
        ty: "integer",
        default: ParamDefault::Value("1"),
        description: "CRITICAL when the query returns fewer rows",
    },
    ParamDoc {
        name: "password_env",
        ty: "string",
        default: ParamDefault::Optional,
        description: "Name of the environment variable holding the password. Optional",
    },
    ParamDoc {
        name: "password_file",
        ty: "string",
        default: ParamDefault::Optional,
        description: "File holding the password (first line; re-read every run), relative to \
                      the config file. Optional",
    },
    ParamDoc {
        name: "tls_verify",
        ty: "bool",
        default: ParamDefault::Value("true"),
        description: "Verify the server certificate: Frontier over https, PostgreSQL with \
                      `?sslmode=require` in the URL (other modes connect without TLS). MariaDB \
                      connections are made without TLS",
    },
    ParamDoc {
        name: "ca_file",
        ty: "string",
        default: ParamDefault::Optional,
        description: "Extra trust anchors (PEM file or directory) for Frontier over https and \
                      PostgreSQL with sslmode=require; relative to the config file. Optional",
    },
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CondDbParams {
    pub(super) url: Option<String>,
    pub(super) query: String,
    pub(super) warn_age: Option<String>,
    pub(super) crit_age: Option<String>,
    pub(super) min_rows: Option<u64>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) tls_verify: Option<bool>,
    pub(super) ca_file: Option<String>,
}

/// Where the password comes from.
#[derive(Debug, Clone)]
pub(super) enum Password {
    Env(String),
    File(PathBuf),
}

/// Builds the probe.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    let p: CondDbParams = crate::params::read(def, config)?;
    let err = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
    let mut errors = Vec::new();
    let fixed = |t: &str| placeholders::names(t).is_ok_and(|n| n.is_empty());

    errors.extend(check_template(def, config, "query", &p.query));
    if fixed(&p.query) {
        if let Err(e) = check_read_only(&p.query) {
            errors.push(err("query", e).with_help(
                "conddb probes only read: write one SELECT (or WITH … SELECT) statement",
            ));
        }
    }
    if let Some(url) = &p.url {
        errors.extend(check_template(def, config, "url", url));
        if fixed(url) {
            if let Err(e) = parse_db_url(url) {
                errors.push(err("url", format!("`url`: {e}")));
            }
        }
    }
    let warn_age = duration_param(def, config, "warn_age", p.warn_age.as_deref(), &mut errors);
    let crit_age = duration_param(def, config, "crit_age", p.crit_age.as_deref(), &mut errors);
    if let (Some(w), Some(c)) = (warn_age, crit_age) {
        if w > c {
            errors.push(err(
                "warn_age",
                format!(
                    "warn_age ({}) is above crit_age ({}): the warning would never show",
                    format_duration(w),
                    format_duration(c)
                ),
            ));
        }
    }
    let min_rows = p.min_rows.unwrap_or(DEFAULT_MIN_ROWS);
    let base = config_dir(def, config);
    let password = match (&p.password_env, &p.password_file) {
        (Some(_), Some(_)) => {
            errors.push(
                err(
                    "password_file",
                    "`password_env` and `password_file` are both set".into(),
                )
                .with_help("keep one of them"),
            );
            None
        }
        (Some(var), None) => {
            if var.is_empty() || var.contains(['=', '\0']) {
                errors.push(err(
                    "password_env",
                    format!("`{var}` is not an environment variable name"),
                ));
            }
            Some(Password::Env(var.clone()))
        }
        (None, Some(file)) => Some(Password::File(base.join(file))),
        (None, None) => None,
    };
    let tls = TlsSettings::read(
        def,
        config,
        TlsParams::verify_only(p.tls_verify, p.ca_file),
        &mut errors,
    );
    match tls {
        Some(tls) if errors.is_empty() => Ok(Arc::new(CondDbProbe {
            url: p.url,
            query: p.query,
            warn_age,
            crit_age,
            min_rows,
            password,
            tls,
            base,
        })),
        _ => Err(errors),
    }
}
