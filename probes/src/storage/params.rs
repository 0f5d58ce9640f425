//! The kind's parameters: their documentation, how they are read and checked (`check`
//! errors at their keys), and the probe built from them.

use super::*;

/// Parameters.
pub const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "test_area",
        ty: "string",
        default: ParamDefault::Required,
        description: "Directory reserved for the probe's files: an absolute path, or a path \
                      relative to the service endpoint's path. Files are written, and stale ones \
                      deleted, only inside it; placeholders are expanded. Required",
    },
    ParamDoc {
        name: "url",
        ty: "string",
        default: ParamDefault::Value(
            "the service endpoint's scheme, host and port with the test area's path",
        ),
        description: "Directory URL to write into: davs://, https:// or http:// (WebDAV), \
                      root:// (XRootD). Its path must lie inside `test_area`; placeholders are \
                      expanded",
    },
    ParamDoc {
        name: "file_size",
        ty: "integer",
        default: ParamDefault::Value("1024"),
        description: "Size in bytes of the test file (1 to 16777216)",
    },
    ParamDoc {
        name: "stale_after",
        ty: "duration",
        default: ParamDefault::Value("1h"),
        description: "A test file (gridprobe-<probe>-<time>-<random>) in the directory older \
                      than this was left by a crashed run and is deleted; must exceed the \
                      probe's timeout",
    },
    ParamDoc {
        name: "server_checksum",
        ty: "string",
        default: ParamDefault::Value("\"auto\""),
        description: "The server's adler32 (WebDAV Want-Digest, XRootD query checksum): \
                      \"auto\" compares it when the server offers one, \"require\" makes its \
                      absence CRITICAL, \"off\" skips the step",
    },
    ParamDoc {
        name: "token_file",
        ty: "string",
        default: ParamDefault::Optional,
        description: "File holding a bearer token (e.g. a WLCG token), re-read every run: sent \
                      as `Authorization: Bearer` over WebDAV (same host only), as \
                      BEARER_TOKEN_FILE to xrdfs/xrdcp. Relative to the config file. Optional",
    },
    tls::DOC_TLS_VERIFY,
    ParamDoc {
        name: "ca_file",
        ty: "string",
        default: ParamDefault::Optional,
        description: "Extra trust anchors: a PEM file or a directory such as \
                      /etc/grid-security/certificates (for XRootD: X509_CERT_FILE or \
                      X509_CERT_DIR). Relative to the config file. Optional",
    },
    ParamDoc {
        name: "client_cert",
        ty: "string",
        default: ParamDefault::Optional,
        description: "PEM client certificate, e.g. a grid proxy (for XRootD: X509_USER_PROXY, \
                      or X509_USER_CERT with a separate key). Needs `client_key`. Optional",
    },
    tls::DOC_CLIENT_KEY,
    tls::DOC_CERT_WARN_DAYS,
    tls::DOC_CERT_CRIT_DAYS,
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StorageParams {
    pub(super) test_area: String,
    pub(super) url: Option<String>,
    pub(super) file_size: Option<u64>,
    pub(super) stale_after: Option<String>,
    pub(super) server_checksum: Option<String>,
    pub(super) token_file: Option<String>,
    pub(super) tls_verify: Option<bool>,
    pub(super) ca_file: Option<String>,
    pub(super) client_cert: Option<String>,
    pub(super) client_key: Option<String>,
    pub(super) cert_warn_days: Option<u32>,
    pub(super) cert_crit_days: Option<u32>,
}

/// What to do with the server's checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServerChecksum {
    Auto,
    Require,
    Off,
}

/// Builds the probe.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    let p: StorageParams = crate::params::read(def, config)?;
    let err = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
    let mut errors = Vec::new();

    errors.extend(check_template(def, config, "test_area", &p.test_area));
    if let Some(url) = &p.url {
        errors.extend(check_template(def, config, "url", url));
    }
    if p.test_area.trim().is_empty() {
        errors.push(
            err("test_area", "`test_area` is empty".into())
                .with_help("name a directory reserved for the probe, e.g. \"/dpm/example.org/home/{vo}/gridprobe/\""),
        );
    }
    // Without placeholders, the URL and the test area can be checked now, not per instance.
    let fixed = |t: &str| placeholders::names(t).is_ok_and(|n| n.is_empty());
    if let Some(url) = &p.url {
        if fixed(url) {
            match parse_storage_url(url) {
                Err(e) => errors.push(err("url", format!("`url`: {e}"))),
                Ok((_, u)) if fixed(&p.test_area) && p.test_area.starts_with('/') => {
                    if let Err(e) = area_contains(&p.test_area, u.path()) {
                        errors.push(err("url", e));
                    }
                }
                Ok(_) => {}
            }
        }
    }

    let file_size = match p.file_size {
        None => DEFAULT_FILE_SIZE,
        Some(n) if (1..=MAX_FILE_SIZE).contains(&n) => n,
        Some(n) => {
            errors.push(err(
                "file_size",
                format!("`file_size` must be between 1 and {MAX_FILE_SIZE} bytes, not {n}"),
            ));
            DEFAULT_FILE_SIZE
        }
    };
    let stale_after = duration_param(
        def,
        config,
        "stale_after",
        p.stale_after.as_deref(),
        &mut errors,
    )
    .unwrap_or(DEFAULT_STALE_AFTER);
    let server_checksum = match p.server_checksum.as_deref().unwrap_or("auto") {
        "auto" => ServerChecksum::Auto,
        "require" => ServerChecksum::Require,
        "off" => ServerChecksum::Off,
        other => {
            let d = err(
                "server_checksum",
                format!("unknown `server_checksum` value `{other}`"),
            )
            .with_suggestion(other, ["auto", "require", "off"]);
            errors.push(if d.help.is_none() {
                d.with_help("use \"auto\", \"require\" or \"off\"")
            } else {
                d
            });
            ServerChecksum::Auto
        }
    };
    let base = config_dir(def, config);
    let token_file = p.token_file.as_ref().map(|t| base.join(t));
    let (ca_path, client_paths) = (
        p.ca_file.as_ref().map(|c| base.join(c)),
        p.client_cert
            .as_ref()
            .zip(p.client_key.as_ref())
            .map(|(c, k)| (base.join(c), base.join(k))),
    );
    let tls = TlsSettings::read(def, config, tls_params!(p), &mut errors);

    match tls {
        Some(tls) if errors.is_empty() => Ok(Arc::new(StorageProbe {
            test_area: p.test_area,
            url: p.url,
            file_size: file_size as usize,
            stale_after,
            server_checksum,
            token_file,
            tls,
            ca_path,
            client_paths,
        })),
        _ => Err(errors),
    }
}
