//! Reading `[[credential]]` tables into [`crate::credential::Credential`], and the checks that
//! need every table read: names probes refer to, key files and their permissions.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::files::io_reason;
use super::{FileId, Loader};
use crate::credential::{
    Credential, CredentialKind, FileSpec, Grant, ProxySpec, SecretSource, TokenSpec,
    CHECK_INTERVAL, DEFAULT_CHECK_INTERVAL, DEFAULT_PROXY_VALID, DEFAULT_RETRY_MAX, PROXY_VALID,
    RETRY_MAX,
};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::Config;

/// One `[[credential]]` as written; which keys apply depends on `kind`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    name: Spanned<String>,
    kind: Spanned<String>,
    retry_max: Option<Spanned<String>>,
    // token
    token_endpoint: Option<Spanned<String>>,
    grant: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
    refresh_token_file: Option<Spanned<String>>,
    refresh_token_env: Option<Spanned<String>>,
    scope: Option<Spanned<String>>,
    audience: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    // proxy
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    voms: Option<Spanned<VomsList>>,
    valid: Option<Spanned<String>>,
    vomses: Option<Spanned<String>>,
    vomsdir: Option<Spanned<String>>,
    certdir: Option<Spanned<String>>,
    command: Option<Spanned<String>>,
    // file
    path: Option<Spanned<String>>,
    check_interval: Option<Spanned<String>>,
}

/// `voms` as one string or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum VomsList {
    One(String),
    Many(Vec<String>),
}

const KINDS: &[&str] = &["token", "proxy", "file"];
const TOKEN_KEYS: &[&str] = &[
    "token_endpoint",
    "grant",
    "client_id",
    "secret_file",
    "secret_env",
    "refresh_token_file",
    "refresh_token_env",
    "scope",
    "audience",
    "ca_file",
];
const PROXY_KEYS: &[&str] = &[
    "cert", "key", "voms", "valid", "vomses", "vomsdir", "certdir", "command",
];
const FILE_KEYS: &[&str] = &["path", "check_interval"];

/// A credential name: also a file name under the state directory and a metrics label.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

impl Loader {
    fn credential_base(&self, file: FileId) -> PathBuf {
        self.config
            .sources
            .file(file)
            .and_then(|f| f.path.parent().map(Path::to_path_buf))
            .unwrap_or_default()
    }

    /// One `[[credential]]` table.
    pub(super) fn read_credential(&mut self, file: FileId, raw: RawCredential) {
        let name = raw.name.get_ref().trim().to_string();
        if !valid_name(&name) {
            let d = self.error(
                file,
                raw.name.span(),
                format!("invalid credential name `{}`", raw.name.get_ref()),
            );
            self.diagnostics.push(d.with_help(
                "use letters, digits, `-`, `_` and `.` (at most 64), e.g. name = \"lhcb-prod\"",
            ));
            return;
        }
        if let Some(first) = self.config.credential(&name) {
            let first = self
                .config
                .sources
                .error(&first.span, "")
                .position()
                .unwrap_or_default();
            let d = self.error(
                file,
                raw.name.span(),
                format!("duplicate credential name `{name}`"),
            );
            self.diagnostics
                .push(d.with_help(format!("first defined at {first}")));
            return;
        }
        let kind = raw.kind.get_ref().trim().to_string();
        let own = match kind.as_str() {
            "token" => TOKEN_KEYS,
            "proxy" => PROXY_KEYS,
            "file" => FILE_KEYS,
            _ => {
                let d = self
                    .error(
                        file,
                        raw.kind.span(),
                        format!("unknown credential kind `{}`", raw.kind.get_ref()),
                    )
                    .with_suggestion(&kind, KINDS.iter().copied());
                let d = if d.help.is_none() {
                    d.with_help("write kind = \"token\", \"proxy\" or \"file\"")
                } else {
                    d
                };
                self.diagnostics.push(d);
                return;
            }
        };
        // Keys of another kind are refused where they are written.
        let present: Vec<(&str, std::ops::Range<usize>)> = [
            (
                "token_endpoint",
                raw.token_endpoint.as_ref().map(Spanned::span),
            ),
            ("grant", raw.grant.as_ref().map(Spanned::span)),
            ("client_id", raw.client_id.as_ref().map(Spanned::span)),
            ("secret_file", raw.secret_file.as_ref().map(Spanned::span)),
            ("secret_env", raw.secret_env.as_ref().map(Spanned::span)),
            (
                "refresh_token_file",
                raw.refresh_token_file.as_ref().map(Spanned::span),
            ),
            (
                "refresh_token_env",
                raw.refresh_token_env.as_ref().map(Spanned::span),
            ),
            ("scope", raw.scope.as_ref().map(Spanned::span)),
            ("audience", raw.audience.as_ref().map(Spanned::span)),
            ("ca_file", raw.ca_file.as_ref().map(Spanned::span)),
            ("cert", raw.cert.as_ref().map(Spanned::span)),
            ("key", raw.key.as_ref().map(Spanned::span)),
            ("voms", raw.voms.as_ref().map(Spanned::span)),
            ("valid", raw.valid.as_ref().map(Spanned::span)),
            ("vomses", raw.vomses.as_ref().map(Spanned::span)),
            ("vomsdir", raw.vomsdir.as_ref().map(Spanned::span)),
            ("certdir", raw.certdir.as_ref().map(Spanned::span)),
            ("command", raw.command.as_ref().map(Spanned::span)),
            ("path", raw.path.as_ref().map(Spanned::span)),
            (
                "check_interval",
                raw.check_interval.as_ref().map(Spanned::span),
            ),
        ]
        .into_iter()
        .filter_map(|(k, s)| s.map(|s| (k, s)))
        .collect();
        let mut ok = true;
        for (key, span) in present {
            if !own.contains(&key) {
                ok = false;
                let d = self.error(
                    file,
                    span,
                    format!("`{key}` does not apply to a credential of kind \"{kind}\""),
                );
                self.diagnostics
                    .push(d.with_help(format!("keys of kind \"{kind}\": {}", own.join(", "))));
            }
        }
        let retry_max = self
            .duration(file, raw.retry_max, "retry_max", RETRY_MAX)
            .unwrap_or(DEFAULT_RETRY_MAX);
        let base = self.credential_base(file);
        let name_span = raw.name.span();
        let table = name_span.clone();
        let kind = match kind.as_str() {
            "token" => self
                .token_spec(
                    file,
                    &base,
                    table,
                    raw.token_endpoint,
                    raw.grant,
                    raw.client_id,
                    [
                        raw.secret_file,
                        raw.secret_env,
                        raw.refresh_token_file,
                        raw.refresh_token_env,
                    ],
                    raw.scope,
                    raw.audience,
                    raw.ca_file,
                )
                .map(CredentialKind::Token),
            "proxy" => self
                .proxy_spec(
                    file,
                    &base,
                    table,
                    raw.cert,
                    raw.key,
                    raw.voms,
                    raw.valid,
                    [raw.vomses, raw.vomsdir, raw.certdir],
                    raw.command,
                )
                .map(CredentialKind::Proxy),
            _ => self
                .file_spec(file, &base, table, raw.path, raw.check_interval)
                .map(CredentialKind::File),
        };
        if let (Some(kind), true) = (kind, ok) {
            let span = self.span(file, name_span);
            self.config.credentials.push(Credential {
                name,
                kind,
                retry_max,
                span,
            });
        }
    }

    /// A required string key, refused when missing or blank.
    fn required(
        &mut self,
        file: FileId,
        table: &std::ops::Range<usize>,
        value: Option<Spanned<String>>,
        key: &str,
        example: &str,
    ) -> Option<Spanned<String>> {
        match value {
            Some(v) if !v.get_ref().trim().is_empty() => Some(v),
            Some(v) => {
                let d = self.error(file, v.span(), format!("`{key}` must not be empty"));
                self.diagnostics
                    .push(d.with_help(format!("e.g. {example}")));
                None
            }
            None => {
                let d = self.error(file, table.clone(), format!("missing `{key}`"));
                self.diagnostics.push(d.with_help(format!("add {example}")));
                None
            }
        }
    }

    /// One secret given as a file or a variable (never inline); `None` when neither is given.
    /// The file must be readable and not readable by others.
    fn secret_source(
        &mut self,
        file: FileId,
        base: &Path,
        from_file: Option<Spanned<String>>,
        from_env: Option<Spanned<String>>,
        what: &str,
    ) -> Result<Option<SecretSource>, ()> {
        match (from_file, from_env) {
            (Some(f), Some(e)) => {
                let d = self.error(
                    file,
                    e.span(),
                    format!("give the {what} either as a file or as a variable, not both"),
                );
                self.diagnostics
                    .push(d.with_help(format!("the file was given at {:?}", f.get_ref())));
                Err(())
            }
            (Some(f), None) => {
                let path = base.join(f.get_ref().trim());
                match check_private_file(&path, 0o007) {
                    Ok(()) => Ok(Some(SecretSource::File(path))),
                    Err((msg, help)) => {
                        let d = self.error(file, f.span(), msg);
                        self.diagnostics.push(d.with_help(help));
                        Err(())
                    }
                }
            }
            (None, Some(e)) => {
                let var = e.get_ref().trim();
                if var.is_empty() || var.contains(['=', '\0']) {
                    let d = self.error(
                        file,
                        e.span(),
                        format!("invalid environment variable name for the {what}"),
                    );
                    self.diagnostics
                        .push(d.with_help("name the variable, e.g. \"GRIDPROBE_IAM_SECRET\""));
                    return Err(());
                }
                Ok(Some(SecretSource::Env(var.to_string())))
            }
            (None, None) => Ok(None),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn token_spec(
        &mut self,
        file: FileId,
        base: &Path,
        table: std::ops::Range<usize>,
        endpoint: Option<Spanned<String>>,
        grant: Option<Spanned<String>>,
        client_id: Option<Spanned<String>>,
        secrets: [Option<Spanned<String>>; 4],
        scope: Option<Spanned<String>>,
        audience: Option<Spanned<String>>,
        ca_file: Option<Spanned<String>>,
    ) -> Option<TokenSpec> {
        let [secret_file, secret_env, refresh_file, refresh_env] = secrets;
        let endpoint = self.required(
            file,
            &table,
            endpoint,
            "token_endpoint",
            "token_endpoint = \"https://iam.example.org/token\"",
        );
        let endpoint = endpoint.and_then(|e| {
            let text = e.get_ref().trim();
            let (shown, secrets) = crate::model::url_credentials(text);
            match url::Url::parse(text) {
                Ok(u) if u.password().is_some() || !secrets.is_empty() => {
                    let d = self.error(
                        file,
                        e.span(),
                        format!("the token endpoint URL `{shown}` holds a password or token"),
                    );
                    self.diagnostics
                        .push(d.with_help("give the client secret with secret_file or secret_env"));
                    None
                }
                Ok(u) if u.scheme() == "https" => Some(u),
                Ok(u) if u.scheme() == "http" && is_loopback(&u) => Some(u),
                Ok(_) => {
                    let d = self.error(
                        file,
                        e.span(),
                        format!("the token endpoint `{shown}` must be an https:// URL"),
                    );
                    self.diagnostics.push(d.with_help(
                        "client secrets and tokens never travel in clear text; plain http:// is \
                         accepted for a loopback address only",
                    ));
                    None
                }
                Err(err) => {
                    let d = self.error(
                        file,
                        e.span(),
                        format!("invalid token endpoint URL `{shown}`: {err}"),
                    );
                    self.diagnostics
                        .push(d.with_help("e.g. \"https://iam.example.org/token\""));
                    None
                }
            }
        });
        let client_id = self.required(
            file,
            &table,
            client_id,
            "client_id",
            "client_id = \"gridprobe-robot\"",
        );
        let secret = self.secret_source(file, base, secret_file, secret_env, "client secret");
        let refresh_span = refresh_file
            .as_ref()
            .or(refresh_env.as_ref())
            .map(Spanned::span);
        let refresh = self.secret_source(file, base, refresh_file, refresh_env, "refresh token");
        let grant_kind = grant
            .as_ref()
            .map(|g| g.get_ref().trim().to_string())
            .unwrap_or_else(|| "client_credentials".into());
        let grant = match (grant_kind.as_str(), refresh) {
            ("client_credentials", Ok(None)) => Some(Grant::ClientCredentials),
            ("client_credentials", Ok(Some(_))) => {
                let d = self.error(
                    file,
                    refresh_span.unwrap_or(table.clone()),
                    "a refresh token is only used with grant = \"refresh_token\"",
                );
                self.diagnostics
                    .push(d.with_help("add grant = \"refresh_token\""));
                None
            }
            ("refresh_token", Ok(Some(source))) => Some(Grant::RefreshToken(source)),
            ("refresh_token", Ok(None)) => {
                let d = self.error(
                    file,
                    grant.as_ref().map(Spanned::span).unwrap_or(table.clone()),
                    "grant = \"refresh_token\" needs refresh_token_file or refresh_token_env",
                );
                self.diagnostics.push(
                    d.with_help("e.g. refresh_token_file = \"/etc/gridprobe/iam-refresh-token\""),
                );
                None
            }
            (_, Err(())) => None,
            (other, _) => {
                let d = self
                    .error(
                        file,
                        grant.as_ref().map(Spanned::span).unwrap_or(table.clone()),
                        format!("unknown grant `{other}`"),
                    )
                    .with_suggestion(other, ["client_credentials", "refresh_token"]);
                let d = if d.help.is_none() {
                    d.with_help("write grant = \"client_credentials\" or \"refresh_token\"")
                } else {
                    d
                };
                self.diagnostics.push(d);
                None
            }
        };
        let secret = secret.ok()?;
        if matches!(grant, Some(Grant::ClientCredentials)) && secret.is_none() {
            let d = self.error(
                file,
                table.clone(),
                "grant = \"client_credentials\" needs the client secret",
            );
            self.diagnostics.push(d.with_help(
                "add secret_file = \"/etc/gridprobe/iam-secret\" (or secret_env); secrets are \
                 never written in the configuration",
            ));
            return None;
        }
        let ca_file = ca_file.and_then(|c| {
            let path = base.join(c.get_ref().trim());
            match std::fs::File::open(&path) {
                Ok(_) => Some(path),
                Err(e) => {
                    let d = self.error(
                        file,
                        c.span(),
                        format!("cannot read ca_file {}: {}", path.display(), e.kind()),
                    );
                    self.diagnostics
                        .push(d.with_help("name a PEM file of CA certificates"));
                    None
                }
            }
        });
        let text = |s: Option<Spanned<String>>| {
            s.map(|s| s.into_inner().trim().to_string())
                .filter(|s| !s.is_empty())
        };
        Some(TokenSpec {
            token_endpoint: endpoint?,
            grant: grant?,
            client_id: client_id?.into_inner().trim().to_string(),
            secret,
            scope: text(scope),
            audience: text(audience),
            ca_file,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn proxy_spec(
        &mut self,
        file: FileId,
        base: &Path,
        table: std::ops::Range<usize>,
        cert: Option<Spanned<String>>,
        key: Option<Spanned<String>>,
        voms: Option<Spanned<VomsList>>,
        valid: Option<Spanned<String>>,
        dirs: [Option<Spanned<String>>; 3],
        command: Option<Spanned<String>>,
    ) -> Option<ProxySpec> {
        let [vomses, vomsdir, certdir] = dirs;
        let cert = self.required(
            file,
            &table,
            cert,
            "cert",
            "cert = \"/etc/grid-security/robot/usercert.pem\"",
        );
        let key = self.required(
            file,
            &table,
            key,
            "key",
            "key = \"/etc/grid-security/robot/userkey.pem\"",
        );
        let cert = cert.and_then(|c| {
            let path = base.join(c.get_ref().trim());
            match std::fs::File::open(&path) {
                Ok(_) => Some(path),
                Err(e) => {
                    let d = self.error(
                        file,
                        c.span(),
                        format!("cannot read cert {}: {}", path.display(), io_reason(&e)),
                    );
                    self.diagnostics
                        .push(d.with_help("name the robot certificate's PEM file"));
                    None
                }
            }
        });
        let key = key.and_then(|k| {
            let path = base.join(k.get_ref().trim());
            match check_private_file(&path, 0o077) {
                Ok(()) => Some(path),
                Err((msg, help)) => {
                    let d = self.error(file, k.span(), msg);
                    self.diagnostics.push(d.with_help(help));
                    None
                }
            }
        });
        let voms = match voms.map(Spanned::into_inner) {
            None => Vec::new(),
            Some(VomsList::One(v)) => vec![v],
            Some(VomsList::Many(v)) => v,
        };
        let voms: Vec<String> = voms.into_iter().map(|v| v.trim().to_string()).collect();
        if voms
            .iter()
            .any(|v| v.is_empty() || v.starts_with(['-', ':']) || v.contains(char::is_whitespace))
        {
            let d = self.error(file, table.clone(), "invalid `voms` attribute");
            self.diagnostics.push(d.with_help(
                "write the VO, optionally with an FQAN: voms = \"lhcb:/lhcb/Role=production\"",
            ));
            return None;
        }
        let valid = self
            .duration(file, valid, "valid", PROXY_VALID)
            .unwrap_or(DEFAULT_PROXY_VALID);
        let dir = |s: Option<Spanned<String>>| s.map(|s| base.join(s.get_ref().trim()));
        Some(ProxySpec {
            cert: cert?,
            key: key?,
            voms,
            valid,
            vomses: dir(vomses),
            vomsdir: dir(vomsdir),
            certdir: dir(certdir),
            command: command
                .map(|c| c.into_inner().trim().to_string())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "voms-proxy-init".into()),
        })
    }

    fn file_spec(
        &mut self,
        file: FileId,
        base: &Path,
        table: std::ops::Range<usize>,
        path: Option<Spanned<String>>,
        check_interval: Option<Spanned<String>>,
    ) -> Option<FileSpec> {
        let path = self.required(
            file,
            &table,
            path,
            "path",
            "path = \"/tmp/x509up_u1000\" (a proxy) or a token file",
        )?;
        let full = base.join(path.get_ref().trim());
        // A file managed elsewhere may not exist yet (its state then says so), but one that
        // exists must be readable.
        if let Err(e) = std::fs::File::open(&full) {
            if e.kind() != std::io::ErrorKind::NotFound {
                let d = self.error(
                    file,
                    path.span(),
                    format!("cannot read {}: {}", full.display(), io_reason(&e)),
                );
                self.diagnostics
                    .push(d.with_help("gridprobe must be able to read the credential file"));
                return None;
            }
        }
        let check_interval = self
            .duration(file, check_interval, "check_interval", CHECK_INTERVAL)
            .unwrap_or(DEFAULT_CHECK_INTERVAL);
        Some(FileSpec {
            path: full,
            check_interval,
        })
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// A file holding a secret: it must be a readable regular file whose mode grants none of
/// `forbidden` (0o077: neither group nor others; 0o007: not others). The error names the
/// file, never its content.
fn check_private_file(path: &Path, forbidden: u32) -> Result<(), (String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        (
            format!("cannot read {}: {}", path.display(), io_reason(&e)),
            "check the path (relative paths start at the directory of this file)".to_string(),
        )
    })?;
    if !meta.is_file() {
        return Err((
            format!("{} is not a regular file", path.display()),
            "name the file itself".into(),
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & forbidden != 0 {
        let who = if forbidden & 0o070 != 0 && mode & 0o070 != 0 {
            "its group"
        } else {
            "other users"
        };
        return Err((
            format!(
                "{} is readable by {who} (mode {mode:04o}): a private key or secret must not be",
                path.display()
            ),
            format!(
                "chmod {} {}",
                if forbidden == 0o077 { "600" } else { "640" },
                path.display()
            ),
        ));
    }
    std::fs::File::open(path).map_err(|e| {
        (
            format!("cannot read {}: {}", path.display(), io_reason(&e)),
            "gridprobe must be able to read it: check the owner and mode".to_string(),
        )
    })?;
    Ok(())
}

/// References from probes to credentials: an unknown name is an error at the probe's
/// `credential` with "did you mean".
pub(super) fn check_references(config: &Config) -> Diagnostics {
    let mut out = Diagnostics::default();
    for probe in &config.probes {
        let (Some(name), Some(span)) = (&probe.credential, &probe.credential_span) else {
            continue;
        };
        if config.credential(name).is_some() {
            continue;
        }
        let d: Diagnostic = config
            .sources
            .error(span, format!("unknown credential `{name}`"))
            .with_suggestion(name, config.credentials.iter().map(|c| c.name.as_str()));
        let d = if d.help.is_none() {
            if config.credentials.is_empty() {
                d.with_help("declare it in a [[credential]] table of the main file")
            } else {
                let names: Vec<&str> = config.credentials.iter().map(|c| c.name.as_str()).collect();
                d.with_help(format!("declared credentials: {}", names.join(", ")))
            }
        } else {
            d
        };
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use crate::credential::{CredentialKind, Grant};

    const BASE: &str = "vo = \"t\"\n[[site]]\nname = \"S\"\ntier = 2\n[[site.service]]\nflavour = \"CE\"\nhostname = \"ce.example.org\"\n";

    fn load(dir: &std::path::Path, text: &str) -> crate::Loaded {
        let path = dir.join("vo.toml");
        std::fs::write(&path, text).unwrap();
        crate::load(&path)
    }

    fn errors(l: &crate::Loaded) -> String {
        l.diagnostics.to_string()
    }

    fn secret(dir: &std::path::Path, name: &str, mode: u32) {
        let p = dir.join(name);
        std::fs::write(&p, "s3cr3t-value\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn token_credential_is_read_and_referenced() {
        let dir = tempfile::tempdir().unwrap();
        secret(dir.path(), "secret", 0o600);
        let l = load(
            dir.path(),
            &format!(
                "{BASE}[[credential]]\nname = \"iam\"\nkind = \"token\"\ntoken_endpoint = \"https://iam.example.org/token\"\nclient_id = \"robot\"\nsecret_file = \"secret\"\nscope = \"storage.read:/\"\nretry_max = \"30s\"\n[[probe]]\nmetric = \"org.t.x\"\nkind = \"tcp\"\nflavours = [\"CE\"]\ncredential = \"iam\"\n"
            ),
        );
        assert!(l.diagnostics.is_empty(), "{}", errors(&l));
        let c = l.config.credential("iam").unwrap();
        let CredentialKind::Token(t) = &c.kind else {
            panic!("not a token")
        };
        assert_eq!(t.grant, Grant::ClientCredentials);
        assert_eq!(c.retry_max, std::time::Duration::from_secs(30));
        assert!(l.config.credential_warnings().is_empty());
        assert_eq!(l.config.probes[0].credential.as_deref(), Some("iam"));
    }

    #[test]
    fn unknown_credential_is_an_error_at_the_probe_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let l = load(
            dir.path(),
            &format!(
                "{BASE}[[credential]]\nname = \"lhcb-prod\"\nkind = \"file\"\npath = \"x509up\"\n[[probe]]\nmetric = \"org.t.x\"\nkind = \"tcp\"\nflavours = [\"CE\"]\ncredential = \"lhcb-prd\"\n"
            ),
        );
        let e = errors(&l);
        assert!(
            e.contains("vo.toml:16:14: error: unknown credential `lhcb-prd`"),
            "{e}"
        );
        assert!(e.contains("did you mean `lhcb-prod`"), "{e}");
    }

    #[test]
    fn an_unused_credential_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let l = load(
            dir.path(),
            &format!("{BASE}[[credential]]\nname = \"spare\"\nkind = \"file\"\npath = \"tok\"\n"),
        );
        assert!(l.diagnostics.is_empty(), "{}", errors(&l));
        let w = l.config.credential_warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0]
            .to_string()
            .contains("credential `spare` is not used by any probe"));
    }

    #[test]
    fn keys_and_secrets_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        secret(dir.path(), "key.pem", 0o644);
        secret(dir.path(), "cert.pem", 0o644);
        secret(dir.path(), "open-secret", 0o604);
        let l = load(
            dir.path(),
            &format!(
                "{BASE}[[credential]]\nname = \"p\"\nkind = \"proxy\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\nvoms = \"lhcb:/lhcb/Role=production\"\nvalid = \"1m\"\n\
                 [[credential]]\nname = \"q\"\nkind = \"proxy\"\ncert = \"missing.pem\"\nkey = \"cert.pem\"\n\
                 [[credential]]\nname = \"t\"\nkind = \"token\"\ntoken_endpoint = \"http://iam.example.org/token\"\nclient_id = \"c\"\nsecret_file = \"open-secret\"\npath = \"x\"\n"
            ),
        );
        let e = errors(&l);
        let key = dir.path().join("key.pem");
        assert!(
            e.contains(&format!(
                "{} is readable by its group (mode 0644)",
                key.display()
            )),
            "{e}"
        );
        assert!(e.contains("`valid` must be between 10m and 7d"), "{e}");
        assert!(e.contains("cannot read cert"), "{e}");
        assert!(e.contains("missing.pem: no such file"), "{e}");
        assert!(e.contains("open-secret is readable by other users"), "{e}");
        assert!(e.contains("must be an https:// URL"), "{e}");
        assert!(
            e.contains("`path` does not apply to a credential of kind \"token\""),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn secrets_are_never_inline_and_kinds_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let l = load(
            dir.path(),
            &format!(
                "{BASE}[[credential]]\nname = \"t\"\nkind = \"token\"\ntoken_endpoint = \"http://127.0.0.1:1/token\"\nclient_id = \"c\"\nsecret = \"hunter2\"\n\
                 [[credential]]\nname = \"u\"\nkind = \"tokn\"\n\
                 [[credential]]\nname = \"f\"\nkind = \"file\"\npath = \"f\"\n[[credential]]\nname = \"f\"\nkind = \"file\"\npath = \"g\"\n\
                 [[credential]]\nname = \"r\"\nkind = \"token\"\ntoken_endpoint = \"http://127.0.0.1:1/token\"\nclient_id = \"c\"\ngrant = \"refresh_token\"\n"
            ),
        );
        let e = errors(&l);
        assert!(e.contains("unknown key `secret`"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("did you mean `token`"), "{e}");
        assert!(e.contains("duplicate credential name `f`"), "{e}");
        assert!(
            e.contains("needs refresh_token_file or refresh_token_env"),
            "{e}"
        );
    }
}
