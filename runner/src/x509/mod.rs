//! X.509 client certificates for the API and dashboard (`[server] tls_cert`, `tls_key`,
//! `client_ca_dir`): the server's rustls settings ([`server_config`]), the client certificate
//! verifier that accepts grid user certificates and their RFC 3820 proxies ([`verifier`]), and
//! the identity of a verified chain, its end-entity subject DN ([`subject`]).

mod server;
pub mod subject;
pub mod verifier;

pub use server::server_config;
pub use subject::{peer_of, PeerCert};
