//! Helpers for the kinds' unit tests: a test CA with server and client certificates, probe
//! contexts, building probes from config text, and the test services of `scripts/test-env.sh`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{ProbeContext, SharedProbe};

/// A test CA that signs server certificates for 127.0.0.1 and localhost.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Holds `ca.pem`.
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "gridprobe test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key"))
            .expect("ca cert");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).expect("write ca.pem");
        TestCa { issuer, dir }
    }

    /// Path of the CA certificate PEM file.
    pub(crate) fn ca_pem_path(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// A server certificate for `names`, valid for `days` more days, and its key.
    pub(crate) fn server_cert(
        &self,
        names: &[&str],
        days: i64,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "gridprobe test server");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(days);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }

    /// A TLS acceptor presenting a certificate for 127.0.0.1 and localhost, valid for
    /// `days` more days.
    pub(crate) fn acceptor(&self, days: i64) -> tokio_rustls::TlsAcceptor {
        self.acceptor_for(&["127.0.0.1", "localhost"], days)
    }

    /// A TLS acceptor presenting a certificate for `names`.
    pub(crate) fn acceptor_for(&self, names: &[&str], days: i64) -> tokio_rustls::TlsAcceptor {
        let (chain, key) = self.server_cert(names, days);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// A TLS acceptor for 127.0.0.1 that requires a client certificate from this CA.
    pub(crate) fn acceptor_requiring_client_cert(&self) -> tokio_rustls::TlsAcceptor {
        let (chain, key) = self.server_cert(&["127.0.0.1"], 90);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).expect("client CA");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// Writes a client certificate and its key into one PEM file, as a grid proxy holds
    /// them, and returns its path.
    pub(crate) fn client_pem(&self) -> String {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "gridprobe test user");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("client key");
        let cert = params.signed_by(&key, &self.issuer).expect("client cert");
        let path = self.dir.path().join("proxy.pem");
        std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem()))
            .expect("write proxy.pem");
        path.display().to_string()
    }
}

/// A context for the service `hostname` with an optional endpoint and a fresh deadline.
pub(crate) fn context(hostname: &str, endpoint: Option<&str>, timeout: Duration) -> ProbeContext {
    let mut ctx = crate::placeholders::tests::context();
    ctx.service.hostname = hostname.to_string();
    ctx.service.endpoint = endpoint.and_then(|e| url::Url::parse(e).ok());
    ctx.timeout = timeout;
    ctx.deadline = Instant::now() + timeout;
    ctx
}

/// A configuration with one probe of `kind` whose `[probe.params]` body is `params`.
pub(crate) fn config_text(kind: &str, params: &str) -> String {
    format!(
        "vo = \"test\"\n\n[[site]]\nname = \"T2_TEST\"\ntier = 2\n\n[[site.service]]\n\
         flavour = \"WEBDAV\"\nhostname = \"127.0.0.1\"\n\n[[probe]]\n\
         metric = \"org.test.probe\"\nkind = \"{kind}\"\nflavours = [\"WEBDAV\"]\n\n\
         [probe.params]\n{params}\n"
    )
}

/// Loads [`config_text`] and builds its probe with `build`.
/// Builds a probe of one kind from its `[probe.params]` text; panics with the diagnostics
/// (tests only).
pub(crate) fn built(build: crate::kind::BuildFn, kind: &str, params: &str) -> SharedProbe {
    match build_with(build, kind, params) {
        Ok(p) => p,
        Err(ds) => panic!("build failed: {ds:?}"),
    }
}

/// The labels of an outcome's perfdata, in order.
pub(crate) fn perf_labels(o: &crate::Outcome) -> Vec<&str> {
    o.perfdata.iter().map(|p| p.label.as_str()).collect()
}

pub(crate) fn build_with(
    build: crate::kind::BuildFn,
    kind: &str,
    params: &str,
) -> Result<SharedProbe, Vec<gridprobe_config::Diagnostic>> {
    let text = config_text(kind, params);
    let loaded = gridprobe_config::load_str(std::path::Path::new("t.toml"), &text);
    assert!(
        loaded.diagnostics.is_empty(),
        "test config must load cleanly:\n{}",
        loaded.diagnostics
    );
    build(&loaded.config.probes[0], &loaded.config)
}

/// The 1-based line of `text` holding `needle` in the config built from `params`.
pub(crate) fn line_of(kind: &str, params: &str, needle: &str) -> usize {
    config_text(kind, params)
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .expect("needle in config")
}

/// Where the test servers started by `scripts/test-env.sh` are, for this kind's tests and the
/// `conddb` tests: the URL in `var`, or `None` outside CI (with a note) when it is not set.
/// Under CI (`CI=true`) a missing variable fails the test: it must never pass by skipping.
pub(crate) fn test_service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{var} is not set: run the tests after `eval \"$(bash scripts/test-env.sh)\"`"
            );
            eprintln!("note: {var} not set (eval \"$(bash scripts/test-env.sh)\"); test not run");
            None
        }
    }
}
