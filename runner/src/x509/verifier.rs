//! The client certificate verifier: a grid user certificate (end entity) is verified by webpki
//! against the CA directory; an RFC 3820 proxy is issued by the end-entity certificate, which
//! webpki refuses as an issuer (it is no CA), so each proxy of the chain is checked here first
//! ([`check_proxy`]) and the end-entity certificate it leads to is then verified by webpki.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::subject::{dn_of, is_proxy};

/// Proxies of proxies accepted in one chain.
pub const MAX_PROXY_DEPTH: usize = 8;

/// Verifies grid user certificates and their proxies; client certificates stay optional.
#[derive(Debug)]
pub struct GridClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    algs: WebPkiSupportedAlgorithms,
}

impl GridClientVerifier {
    /// Around webpki's verifier of the CA directory (built with unauthenticated clients
    /// allowed).
    pub fn new(webpki: Arc<dyn ClientCertVerifier>) -> Self {
        GridClientVerifier {
            webpki,
            algs: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    /// The handshake signature of a proxy, by its public key: webpki refuses to parse a
    /// certificate with the (critical) proxyCertInfo extension, so the key is taken from
    /// x509-parser's reading.
    fn verify_by_key(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        tls13: bool,
    ) -> Result<Option<HandshakeSignatureValid>, rustls::Error> {
        let parsed = parse(cert)?;
        if !is_proxy(&parsed) {
            return Ok(None);
        }
        let spki = SubjectPublicKeyInfoDer::from(parsed.public_key().raw);
        if tls13 {
            return rustls::crypto::verify_tls13_signature_with_raw_key(
                message, &spki, dss, &self.algs,
            )
            .map(Some);
        }
        let key = webpki::RawPublicKeyEntity::try_from(&spki)
            .map_err(|e| refuse(format!("proxy public key: {e}")))?;
        let candidates = self
            .algs
            .mapping
            .iter()
            .filter(|(scheme, _)| *scheme == dss.scheme)
            .flat_map(|(_, algs)| algs.iter());
        for alg in candidates {
            if key.verify_signature(*alg, message, dss.signature()).is_ok() {
                return Ok(Some(HandshakeSignatureValid::assertion()));
            }
        }
        Err(rustls::Error::InvalidCertificate(
            CertificateError::BadSignature,
        ))
    }
}

fn refuse(msg: String) -> rustls::Error {
    tracing::info!(reason = %msg, "client certificate refused");
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        std::io::Error::other(msg),
    ))))
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, rustls::Error> {
    X509Certificate::from_der(der.as_ref())
        .map(|(_, c)| c)
        .map_err(|e| refuse(format!("unparsable client certificate: {e}")))
}

/// The RFC 3820 rules for a proxy and the certificate that issued it: issuer name = the
/// issuer's subject; subject = the issuer's subject plus one CN; signed by the issuer's key;
/// within its validity at `now`; not a CA.
pub fn check_proxy(
    proxy: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    now: i64,
) -> Result<(), String> {
    let subject = dn_of(proxy.subject());
    let issuer_subject = dn_of(issuer.subject());
    if proxy.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(format!(
            "proxy {subject} is not issued by the next certificate of the chain ({issuer_subject})"
        ));
    }
    let n = issuer_subject.0.len();
    let extends = subject.0.len() == n + 1
        && subject.0[..n] == issuer_subject.0[..]
        && subject.0[n].0 == "CN";
    if !extends {
        return Err(format!(
            "proxy subject {subject} is not its issuer's subject {issuer_subject} plus one CN"
        ));
    }
    proxy
        .verify_signature(Some(issuer.public_key()))
        .map_err(|e| format!("proxy {subject}: bad signature ({e})"))?;
    let v = proxy.validity();
    if now < v.not_before.timestamp() {
        return Err(format!("proxy {subject} is not valid yet"));
    }
    if now > v.not_after.timestamp() {
        return Err(format!("proxy {subject} expired at {}", v.not_after));
    }
    if proxy
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca)
    {
        return Err(format!("proxy {subject} claims to be a CA"));
    }
    if issuer
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca)
    {
        return Err(format!(
            "proxy {subject} is issued by a CA certificate, not by a user's"
        ));
    }
    Ok(())
}

impl ClientCertVerifier for GridClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let now_s = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        // Walk the proxies from the leaf to the end-entity certificate they lead to.
        let mut depth = 0usize;
        let mut current = end_entity;
        loop {
            let cert = parse(current)?;
            if !is_proxy(&cert) {
                break;
            }
            if depth >= MAX_PROXY_DEPTH {
                return Err(refuse(format!(
                    "more than {MAX_PROXY_DEPTH} proxies in one chain"
                )));
            }
            let issuer_der = intermediates.get(depth).ok_or_else(|| {
                refuse("a proxy certificate was sent without the certificate that issued it".into())
            })?;
            let issuer = parse(issuer_der)?;
            check_proxy(&cert, &issuer, now_s).map_err(refuse)?;
            current = issuer_der;
            depth += 1;
        }
        let rest = intermediates.get(depth..).unwrap_or(&[]);
        self.webpki
            .verify_client_cert(current, rest, now)
            .inspect_err(|e| tracing::info!(error = %e, "client certificate refused"))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.verify_by_key(message, cert, dss, false)? {
            Some(valid) => Ok(valid),
            None => self.webpki.verify_tls12_signature(message, cert, dss),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.verify_by_key(message, cert, dss, true)? {
            Some(valid) => Ok(valid),
            None => self.webpki.verify_tls13_signature(message, cert, dss),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
