//! The identity a certificate chain stands for: the subject DN of its end-entity certificate
//! (the user's), also when the chain starts with proxies of it.

use gridprobe_config::dn::Dn;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// OID of the RFC 3820 proxyCertInfo extension.
pub const PROXY_CERT_INFO: &str = "1.3.6.1.5.5.7.1.14";

/// The verified client certificate of a connection, as the requests on it see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The end-entity subject.
    pub subject: Dn,
    /// Whether the client presented a proxy of it.
    pub proxy: bool,
}

/// What a connection tells its requests: TLS or not, and the verified client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// Whether the connection is HTTPS.
    pub tls: bool,
    /// The client's certificate identity, if it presented one (already verified).
    pub peer: Option<PeerCert>,
}

/// Whether a certificate carries proxyCertInfo (RFC 3820).
pub fn is_proxy(cert: &X509Certificate<'_>) -> bool {
    cert.extensions()
        .iter()
        .any(|e| e.oid.to_id_string() == PROXY_CERT_INFO)
}

/// A name's attributes in certificate order, with short type names.
pub fn dn_of(name: &X509Name<'_>) -> Dn {
    let mut out = Vec::new();
    for rdn in name.iter_rdn() {
        for attr in rdn.iter() {
            let oid = attr.attr_type().to_id_string();
            let ty = match oid.as_str() {
                "2.5.4.3" => "CN".to_string(),
                "2.5.4.6" => "C".to_string(),
                "2.5.4.7" => "L".to_string(),
                "2.5.4.8" => "ST".to_string(),
                "2.5.4.10" => "O".to_string(),
                "2.5.4.11" => "OU".to_string(),
                "2.5.4.5" => "SERIALNUMBER".to_string(),
                "0.9.2342.19200300.100.1.25" => "DC".to_string(),
                "0.9.2342.19200300.100.1.1" => "UID".to_string(),
                "1.2.840.113549.1.9.1" => "EMAILADDRESS".to_string(),
                _ => oid,
            };
            let value = match attr.as_str() {
                Ok(s) => s.to_string(),
                Err(_) => {
                    let hex: String = attr
                        .attr_value()
                        .data
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    format!("#{hex}")
                }
            };
            out.push((ty, value));
        }
    }
    Dn(out)
}

/// The identity of a verified chain (leaf first): the subject of its first certificate that
/// is not a proxy.
pub fn peer_of(chain: &[CertificateDer<'_>]) -> Option<PeerCert> {
    let mut proxy = false;
    for der in chain {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        if is_proxy(&cert) {
            proxy = true;
            continue;
        }
        return Some(PeerCert {
            subject: dn_of(cert.subject()),
            proxy,
        });
    }
    None
}
