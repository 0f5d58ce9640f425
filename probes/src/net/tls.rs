//! TLS shared by the `http` and `tcp` kinds: trust anchors (the system store plus `ca_file`),
//! client certificates (e.g. a grid proxy), a verifier that records the server certificate (and
//! accepts anything with `tls_verify = false`), readable handshake errors and certificate expiry
//! checks.
//!
//! Files are checked when the probe is built, so `gridprobe check` reports a bad path at its key,
//! and re-read before an attempt whenever they changed on disk: grid proxies and CA bundles are
//! renewed while gridprobe runs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use gridprobe_config::{Config, Diagnostic, ProbeDef};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::kind::{ParamDefault, ParamDoc};
use crate::outcome::{fmt_utc, Perfdatum, Status, UtcPrecision};

/// Default of `cert_warn_days`.
pub const DEFAULT_WARN_DAYS: u32 = 14;
/// Default of `cert_crit_days`.
pub const DEFAULT_CRIT_DAYS: u32 = 3;

/// Documentation of `tls_verify`, shared by the kinds that speak TLS.
pub const DOC_TLS_VERIFY: ParamDoc = ParamDoc {
    name: "tls_verify",
    ty: "bool",
    default: ParamDefault::Value("true"),
    description: "Verify the server certificate chain and name against the system trust store \
                  plus `ca_file`. With false any certificate is accepted, but its expiry is \
                  still checked and reported",
};
/// Documentation of `ca_file`.
pub const DOC_CA_FILE: ParamDoc = ParamDoc {
    name: "ca_file",
    ty: "string",
    default: ParamDefault::Optional,
    description: "Extra trust anchors: a PEM file, or a directory whose *.pem, *.crt and \
                  hash-named (*.0) files are read, e.g. /etc/grid-security/certificates. \
                  Relative paths start at the directory of the config file. Optional",
};
/// Documentation of `client_cert`.
pub const DOC_CLIENT_CERT: ParamDoc = ParamDoc {
    name: "client_cert",
    ty: "string",
    default: ParamDefault::Optional,
    description: "PEM file with the client certificate and its chain (e.g. a grid proxy). \
                  Needs `client_key`, which may name the same file. Optional",
};
/// Documentation of `client_key`.
pub const DOC_CLIENT_KEY: ParamDoc = ParamDoc {
    name: "client_key",
    ty: "string",
    default: ParamDefault::Optional,
    description: "PEM file with the private key of `client_cert` (the proxy file itself for a \
                  grid proxy). Optional, but required with `client_cert`",
};
/// Documentation of `cert_warn_days`.
pub const DOC_CERT_WARN_DAYS: ParamDoc = ParamDoc {
    name: "cert_warn_days",
    ty: "integer",
    default: ParamDefault::Value("14"),
    description: "WARNING when the server certificate has fewer than this many days left \
                  (0: never warn)",
};
/// Documentation of `cert_crit_days`.
pub const DOC_CERT_CRIT_DAYS: ParamDoc = ParamDoc {
    name: "cert_crit_days",
    ty: "integer",
    default: ParamDefault::Value("3"),
    description: "CRITICAL when the server certificate has fewer than this many days left; an \
                  expired certificate is always CRITICAL",
};

/// The client certificate (chain and key) presented to every server that asks.
#[derive(Debug)]
struct FixedClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn provider_for_keys() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The TLS keys of a kind's params, as deserialized.
/// The TLS keys of a kind's params struct, which names them as [`TlsParams`] does (serde
/// cannot flatten them into a `deny_unknown_fields` struct), moved into a [`TlsParams`].
macro_rules! tls_params {
    ($p:ident) => {
        $crate::net::tls::TlsParams {
            tls_verify: $p.tls_verify,
            ca_file: $p.ca_file,
            client_cert: $p.client_cert,
            client_key: $p.client_key,
            cert_warn_days: $p.cert_warn_days,
            cert_crit_days: $p.cert_crit_days,
        }
    };
}
pub(crate) use tls_params;

#[derive(Debug, Default)]
pub(crate) struct TlsParams {
    pub tls_verify: Option<bool>,
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub cert_warn_days: Option<u32>,
    pub cert_crit_days: Option<u32>,
}

/// The checked TLS settings of one probe.
#[derive(Debug)]
pub struct TlsSettings {
    verify: bool,
    ca_file: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
    warn_days: u32,
    crit_days: u32,
    material: MaterialCache,
}

impl TlsParams {
    /// Server verification only (`tls_verify`, `ca_file`): for kinds without client
    /// certificates or expiry warnings.
    pub(crate) fn verify_only(tls_verify: Option<bool>, ca_file: Option<String>) -> Self {
        TlsParams {
            tls_verify,
            ca_file,
            ..TlsParams::default()
        }
    }
}

impl TlsSettings {
    /// [`TlsSettings::from_params`], its problems added to `errors`.
    pub(crate) fn read(
        def: &ProbeDef,
        config: &Config,
        params: TlsParams,
        errors: &mut Vec<Diagnostic>,
    ) -> Option<Self> {
        Self::from_params(def, config, params)
            .map_err(|ds| errors.extend(ds))
            .ok()
    }

    /// Checks the TLS params of `def`; each problem is positioned at its key.
    pub(crate) fn from_params(
        def: &ProbeDef,
        config: &Config,
        p: TlsParams,
    ) -> Result<Self, Vec<Diagnostic>> {
        let base = crate::params::config_dir(def, config);
        let resolve = |s: &String| base.join(s);
        let err = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
        let mut errors = Vec::new();

        let ca_file = p.ca_file.as_ref().map(resolve);
        if let Some(path) = &ca_file {
            if let Err(e) = load_roots(path) {
                errors.push(err("ca_file", format!("ca_file: {e}")).with_help(
                    "name a PEM file of CA certificates or a directory such as \
                     /etc/grid-security/certificates",
                ));
            }
        }
        let client = match (&p.client_cert, &p.client_key) {
            (Some(c), Some(k)) => Some((resolve(c), resolve(k))),
            (Some(_), None) => {
                errors.push(
                    err("client_cert", "`client_cert` needs `client_key`".into())
                        .with_help("for a grid proxy, set both to the proxy file"),
                );
                None
            }
            (None, Some(_)) => {
                errors.push(err("client_key", "`client_key` needs `client_cert`".into()));
                None
            }
            (None, None) => None,
        };
        if let Some((cert, key)) = &client {
            if let Err((which, e)) = load_client(cert, key) {
                errors.push(err(which, format!("{which}: {e}")));
            }
        }
        let warn_days = p.cert_warn_days.unwrap_or(DEFAULT_WARN_DAYS);
        let crit_days = p.cert_crit_days.unwrap_or(DEFAULT_CRIT_DAYS);
        if warn_days != 0 && warn_days < crit_days {
            let key = if p.cert_warn_days.is_some() {
                "cert_warn_days"
            } else {
                "cert_crit_days"
            };
            errors.push(err(
                key,
                format!(
                    "cert_warn_days ({warn_days}) is below cert_crit_days ({crit_days}): \
                     the warning would never show"
                ),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // Read the system store now rather than during the first probe run.
        let _ = native_roots();
        Ok(TlsSettings {
            verify: p.tls_verify.unwrap_or(true),
            ca_file,
            client,
            warn_days,
            crit_days,
            material: MaterialCache::default(),
        })
    }

    /// The client certificate and key files, when set.
    pub(crate) fn client_files(&self) -> Option<(&Path, &Path)> {
        self.client
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()))
    }

    /// A client configuration for one connection, and the slot where its verifier records the
    /// certificate the server presents. Errors are local problems (an unreadable file).
    pub(crate) fn client_config(
        &self,
        alpn: &[&[u8]],
    ) -> Result<(Arc<ClientConfig>, Arc<CertSlot>), String> {
        self.client_config_for(alpn, None)
    }

    /// [`TlsSettings::client_config`], presenting `proxy` (the proxy file of the probe's
    /// `[[credential]]`: chain and key in one file) when the probe sets no `client_cert` of
    /// its own.
    pub(crate) fn client_config_for(
        &self,
        alpn: &[&[u8]],
        proxy: Option<&Path>,
    ) -> Result<(Arc<ClientConfig>, Arc<CertSlot>), String> {
        let mut material = self.material()?;
        if let (None, Some(proxy)) = (&material.client, proxy) {
            let client = load_client(proxy, proxy)
                .map_err(|(_, e)| format!("credential proxy {}: {e}", proxy.display()))?;
            material = Arc::new(Material {
                roots: material.roots.clone(),
                client: Some(client),
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = if material.roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(
                    material.roots.clone(),
                    provider.clone(),
                )
                .build()
                .map_err(|e| format!("cannot build the certificate verifier: {e}"))?,
            )
        };
        let slot = Arc::new(CertSlot::default());
        let verifier = Arc::new(RecordingVerifier {
            inner,
            verify: self.verify,
            provider: provider.clone(),
            slot: slot.clone(),
        });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &material.client {
            // Not `with_client_auth_cert`: it parses the certificate with webpki to compare
            // keys, which refuses an RFC 3820 proxy (its ProxyCertInfo extension is critical).
            // The server judges the chain; the key is only loaded here.
            Some((chain, key)) => {
                let signer = provider_for_keys()
                    .key_provider
                    .load_private_key(key.clone_key())
                    .map_err(|e| format!("client certificate key: {e}"))?;
                let certified = rustls::sign::CertifiedKey::new(chain.clone(), signer);
                builder.with_client_cert_resolver(Arc::new(FixedClientCert(Arc::new(certified))))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok((Arc::new(config), slot))
    }

    /// The trust anchors and client credentials, re-read when a file changed.
    fn material(&self) -> Result<Arc<Material>, String> {
        let stamp = self.stamp();
        let mut cache = self
            .material
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((old, m)) = cache.as_ref() {
            if *old == stamp {
                return Ok(m.clone());
            }
        }
        let mut roots = native_roots().clone();
        if let Some(path) = &self.ca_file {
            let extra = load_roots(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            roots.roots.extend(extra.roots);
        }
        let client = match &self.client {
            Some((cert, key)) => Some(load_client(cert, key).map_err(|(which, e)| {
                let path = if which == "client_cert" { cert } else { key };
                format!("{which} {}: {e}", path.display())
            })?),
            None => None,
        };
        let m = Arc::new(Material {
            roots: Arc::new(roots),
            client,
        });
        *cache = Some((stamp, m.clone()));
        Ok(m)
    }

    /// Modification times and sizes of the files, to notice renewals.
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        let stat = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        };
        let mut out = Vec::new();
        out.extend(self.ca_file.as_deref().map(stat));
        if let Some((c, k)) = &self.client {
            out.push(stat(c));
            out.push(stat(k));
        }
        out
    }

    /// The status a certificate's remaining lifetime calls for, with a one-line reason naming
    /// `who` (host:port); `None` when it is fine.
    pub(crate) fn expiry_problem(&self, cert: &CertInfo, who: &str) -> Option<(Status, String)> {
        let days = cert.days_left();
        // Rounded down, so that "fewer than 3 days" never reads "3.0 days".
        let shown = (days * 10.0).floor() / 10.0;
        let when = fmt_unix(cert.not_after_unix);
        if days < 0.0 {
            Some((
                Status::Critical,
                format!(
                    "certificate of {who} expired {:.1} days ago ({when})",
                    -days
                ),
            ))
        } else if days < f64::from(self.crit_days) {
            Some((
                Status::Critical,
                format!("certificate of {who} expires in {shown:.1} days ({when})"),
            ))
        } else if days < f64::from(self.warn_days) {
            Some((
                Status::Warning,
                format!("certificate of {who} expires in {shown:.1} days ({when})"),
            ))
        } else {
            None
        }
    }

    /// The `cert_days_left` perfdatum, with the thresholds as Nagios ranges.
    pub(crate) fn days_perfdatum(&self, days_left: f64) -> Perfdatum {
        // Rounded down like the messages: 1.999 days left must not read as 2.
        let mut p = Perfdatum::new("cert_days_left", (days_left * 100.0).floor() / 100.0, "");
        p.warn = Some(format!("{}:", self.warn_days));
        p.crit = Some(format!("{}:", self.crit_days));
        p
    }
}

/// Trust anchors and client credentials read from disk.
struct Material {
    roots: Arc<RootCertStore>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

#[derive(Default)]
struct MaterialCache(Mutex<Option<(Stamp, Arc<Material>)>>);

impl std::fmt::Debug for MaterialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material stays out of debug output.
        f.write_str("MaterialCache")
    }
}

/// The system trust store, read once per process (it rarely changes and costs a few ms).
fn native_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!("reading the system trust store: {e}");
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        roots
    })
}

/// Reads trust anchors from a PEM file or a directory of them (grid CA layout).
fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let meta = std::fs::metadata(path).map_err(|e| io_reason(path, &e))?;
    let files = if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| io_reason(path, &e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| is_ca_file_name(p))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut seen = HashSet::new();
    let mut certs = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| io_reason(file, &e))?;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| format!("{}: invalid PEM: {e}", file.display()))?;
            // The grid layout links hash names to the .pem files: read each CA once.
            if seen.insert(cert.as_ref().to_vec()) {
                certs.push(cert);
            }
        }
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(if ignored == 0 {
            format!("no PEM certificate found in {}", path.display())
        } else {
            format!(
                "none of the {ignored} certificates in {} is usable as a trust anchor",
                path.display()
            )
        });
    }
    Ok(roots)
}

/// `*.pem`, `*.crt`, `*.cer` and OpenSSL hash links such as `1a2b3c4d.0` (not `.r0` CRLs).
fn is_ca_file_name(p: &Path) -> bool {
    match p.extension().and_then(|e| e.to_str()) {
        Some("pem" | "crt" | "cer") => true,
        Some(ext) => !ext.is_empty() && ext.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// Reads a client certificate chain and its key; errors name the key at fault.
fn load_client(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), (&'static str, String)> {
    let cert_bytes = std::fs::read(cert).map_err(|e| ("client_cert", io_reason(cert, &e)))?;
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            (
                "client_cert",
                format!("{}: invalid PEM: {e}", cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err((
            "client_cert",
            format!("no certificate found in {}", cert.display()),
        ));
    }
    let key_bytes = std::fs::read(key).map_err(|e| ("client_key", io_reason(key, &e)))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        (
            "client_key",
            format!("no private key found in {}: {e}", key.display()),
        )
    })?;
    Ok((chain, key))
}

fn io_reason(path: &Path, e: &std::io::Error) -> String {
    let reason = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    format!("cannot read {}: {reason}", path.display())
}

/// Where a connection's verifier leaves the server's end-entity certificate.
#[derive(Debug, Default)]
pub(crate) struct CertSlot(Mutex<Option<CertificateDer<'static>>>);

impl CertSlot {
    fn put(&self, cert: &CertificateDer<'_>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(cert.clone().into_owned());
    }

    /// The recorded certificate, parsed.
    pub(crate) fn info(&self) -> Option<CertInfo> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().and_then(|c| CertInfo::parse(c))
    }
}

/// Verifies like webpki (or not at all) and records the certificate either way, so that a
/// failed or unverified handshake can still say which certificate the server sent.
#[derive(Debug)]
struct RecordingVerifier {
    /// `None` when there is no trust anchor at all: every chain is then from an unknown issuer.
    inner: Option<Arc<WebPkiServerVerifier>>,
    verify: bool,
    provider: Arc<CryptoProvider>,
    slot: Arc<CertSlot>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.slot.put(end_entity);
        if !self.verify {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.inner {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    // Handshake signatures are checked even without `tls_verify`: they prove the server holds
    // the key of the certificate it sent.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What the details and messages say about a server certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub names: Vec<String>,
}

impl CertInfo {
    /// Parses a DER certificate; `None` when it is not one.
    pub(crate) fn parse(der: &[u8]) -> Option<CertInfo> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
                        x509_parser::extensions::GeneralName::IPAddress(b) => ip_text(b),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before_unix: cert.validity().not_before.timestamp(),
            not_after_unix: cert.validity().not_after.timestamp(),
            names,
        })
    }

    /// Days until the certificate expires (negative once expired).
    pub(crate) fn days_left(&self) -> f64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        (self.not_after_unix as f64 - now) / 86_400.0
    }

    /// One line for the details.
    pub(crate) fn describe(&self) -> String {
        let names = if self.names.is_empty() {
            String::new()
        } else {
            format!("; names: {}", self.names.join(", "))
        };
        format!(
            "subject: {}; issuer: {}; valid {} to {} ({:.1} days left){names}",
            self.subject,
            self.issuer,
            fmt_unix(self.not_before_unix),
            fmt_unix(self.not_after_unix),
            self.days_left()
        )
    }
}

fn ip_text(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => format!("{b:02x?}"),
    }
}

/// A one-line reason for a failed TLS handshake, e.g. "certificate verify failed: unknown
/// issuer (self-signed certificate)".
pub(crate) fn describe_handshake_error(e: &std::io::Error, cert: Option<&CertInfo>) -> String {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "connection closed by the server during the handshake".to_string()
            }
            std::io::ErrorKind::ConnectionReset => {
                "connection reset by the server during the handshake".to_string()
            }
            _ => e.to_string(),
        };
    };
    match err {
        rustls::Error::InvalidCertificate(ce) => {
            format!(
                "certificate verify failed: {}",
                describe_cert_error(ce, cert)
            )
        }
        rustls::Error::AlertReceived(alert) => {
            let hint = match alert {
                rustls::AlertDescription::HandshakeFailure
                | rustls::AlertDescription::CertificateRequired
                | rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::UnknownCA => {
                    " (does the server require or reject a client certificate?)"
                }
                _ => "",
            };
            format!("server sent TLS alert {alert:?}{hint}")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("{err} (does this port speak TLS?)")
        }
        other => other.to_string(),
    }
}

// The unit variants are deprecated but still produced, so they are matched too.
#[allow(deprecated)]
fn describe_cert_error(ce: &CertificateError, cert: Option<&CertInfo>) -> String {
    let about = cert
        .map(|c| format!(" [subject: {}; issuer: {}]", c.subject, c.issuer))
        .unwrap_or_default();
    match ce {
        CertificateError::UnknownIssuer => {
            let what = match cert {
                Some(c) if c.subject == c.issuer => "self-signed certificate",
                _ => "not issued by a trusted CA",
            };
            format!("unknown issuer ({what}; set ca_file to trust its CA){about}")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => match cert {
            Some(c) => format!(
                "certificate expired {:.1} days ago ({}){about}",
                -c.days_left(),
                fmt_unix(c.not_after_unix)
            ),
            None => "certificate expired".to_string(),
        },
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => match cert {
            Some(c) => format!(
                "certificate not valid before {}{about}",
                fmt_unix(c.not_before_unix)
            ),
            None => "certificate not valid yet".to_string(),
        },
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let name = match ce {
                CertificateError::NotValidForNameContext { expected, .. } => {
                    expected.to_str().into_owned()
                }
                _ => "this host name".to_string(),
            };
            let valid = cert
                .map(|c| format!(" (valid for: {})", c.names.join(", ")))
                .unwrap_or_default();
            format!("certificate is not valid for {name}{valid}{about}")
        }
        CertificateError::BadSignature => format!("bad certificate signature{about}"),
        CertificateError::Revoked => format!("certificate revoked{about}"),
        CertificateError::BadEncoding => format!("the certificate is malformed{about}"),
        CertificateError::UnhandledCriticalExtension => format!(
            "the certificate has a critical extension this client does not understand{about}"
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!("the certificate is not meant for TLS servers (extended key usage){about}")
        }
        CertificateError::UnsupportedSignatureAlgorithm
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => format!(
            "the certificate is signed with an algorithm this client does not support{about}"
        ),
        CertificateError::UnknownRevocationStatus => {
            format!("the certificate's revocation status is unknown{about}")
        }
        CertificateError::ExpiredRevocationList
        | CertificateError::ExpiredRevocationListContext { .. } => {
            format!("the certificate revocation list has expired{about}")
        }
        CertificateError::Other(other) => {
            let inner: &(dyn std::error::Error + 'static) = other.0.as_ref();
            match inner.downcast_ref::<webpki::Error>() {
                Some(e) => format!("{}{about}", webpki_words(e)),
                None => format!("the certificate was rejected: {inner}{about}"),
            }
        }
        other => format!("the certificate was rejected ({other}){about}"),
    }
}

/// The certificate verifier's (webpki's) verdicts in words; its own text is the variant name.
#[allow(deprecated)]
fn webpki_words(e: &webpki::Error) -> String {
    use webpki::Error as E;
    let text = match e {
        E::CaUsedAsEndEntity => "the server presented a CA certificate as its own certificate",
        E::EndEntityUsedAsCa => {
            "a server (end-entity) certificate stands in the chain where a CA certificate belongs"
        }
        E::BadDer | E::BadDerTime | E::TrailingData(_) | E::MalformedExtensions => {
            "the certificate is malformed (invalid DER encoding)"
        }
        E::InvalidCertValidity => "the certificate's validity period ends before it begins",
        E::UnsupportedCertVersion => "the certificate is not an X.509 version 3 certificate",
        E::UnsupportedCriticalExtension | E::ExtensionValueInvalid => {
            "the certificate has a critical extension this client does not understand"
        }
        E::InvalidSignatureForPublicKey | E::SignatureAlgorithmMismatch => {
            "a signature in the certificate chain does not verify"
        }
        E::UnsupportedSignatureAlgorithm
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "the certificate is signed with an algorithm this client does not support"
        }
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => {
            "the certificate is not meant for TLS servers (no serverAuth extended key usage)"
        }
        E::PathLenConstraintViolated => {
            "the chain is longer than a CA certificate's path length constraint allows"
        }
        E::NameConstraintViolation | E::MalformedNameConstraint => {
            "a name in the certificate is outside what its CA may certify (name constraints)"
        }
        E::MaximumPathDepthExceeded
        | E::MaximumPathBuildCallsExceeded
        | E::MaximumSignatureChecksExceeded
        | E::MaximumNameConstraintComparisonsExceeded => {
            "the certificate chain is too long or too complex to verify"
        }
        E::UnknownIssuer => {
            "the certificate is not issued by a trusted CA (set ca_file to trust it)"
        }
        E::CertDistrusted => "the certificate's CA is distrusted",
        E::CertRevoked => "the certificate is revoked",
        E::InvalidSerialNumber => "the certificate has an invalid serial number",
        E::MalformedDnsIdentifier | E::UnsupportedNameType => {
            "the certificate holds a host name this client cannot check"
        }
        other => return format!("the certificate was rejected ({other})"),
    };
    text.to_string()
}

/// `YYYY-MM-DD HH:MM UTC` for a Unix time in seconds.
pub(crate) fn fmt_unix(secs: i64) -> String {
    fmt_utc(secs.saturating_mul(1000), UtcPrecision::Minutes)
}

/// Test helpers shared by the http and tcp tests: a throw-away CA, server TLS, contexts and
/// configs.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_unix_times_as_utc_dates() {
        assert_eq!(fmt_unix(0), "1970-01-01 00:00 UTC");
        assert_eq!(fmt_unix(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(fmt_unix(1_767_225_599), "2025-12-31 23:59 UTC");
    }

    #[test]
    fn grid_ca_directory_names() {
        assert!(is_ca_file_name(Path::new("/x/1a2b3c4d.0")));
        assert!(is_ca_file_name(Path::new("/x/CERN-Root-2.pem")));
        assert!(!is_ca_file_name(Path::new("/x/1a2b3c4d.r0")));
        assert!(!is_ca_file_name(Path::new("/x/CERN.signing_policy")));
    }

    #[test]
    fn ca_directory_is_read_once_per_certificate() {
        let ca = crate::test_support::TestCa::new();
        let dir = ca.dir.path();
        std::fs::copy(dir.join("ca.pem"), dir.join("abcdef01.0")).expect("copy");
        std::fs::write(dir.join("abcdef01.r0"), "not a certificate").expect("write");
        let roots = load_roots(dir).expect("roots");
        assert_eq!(roots.len(), 1);
        assert!(load_roots(&dir.join("missing.pem"))
            .unwrap_err()
            .contains("no such file"));
    }

    /// Issue 13 item 16: the verifier's errors are told in words, not as Rust debug text.
    #[test]
    fn verifier_errors_are_told_in_words() {
        let ca_as_leaf = CertificateError::Other(rustls::OtherError(Arc::new(
            webpki::Error::CaUsedAsEndEntity,
        )));
        let text = describe_cert_error(&ca_as_leaf, None);
        assert_eq!(
            text,
            "the server presented a CA certificate as its own certificate"
        );
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(ca_as_leaf),
        );
        let text = describe_handshake_error(&e, None);
        assert_eq!(
            text,
            "certificate verify failed: the server presented a CA certificate as its own \
             certificate"
        );
        for e in [
            webpki::Error::EndEntityUsedAsCa,
            webpki::Error::BadDer,
            webpki::Error::PathLenConstraintViolated,
            webpki::Error::EmptyEkuExtension,
            webpki::Error::UnsupportedCriticalExtension,
        ] {
            let ce = CertificateError::Other(rustls::OtherError(Arc::new(e.clone())));
            let text = describe_cert_error(&ce, None);
            assert!(
                !text.contains("Other") && !text.contains(&format!("{e:?}")),
                "{text}"
            );
        }
    }
}
