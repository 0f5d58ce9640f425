//! Who made a request: a bearer token (the configuration holds each token's SHA-256 and its
//! role; a request's token is hashed and compared, so no secret is ever stored), a login
//! session of the dashboard (which stands for a token), or a verified client certificate whose
//! end-entity subject matches an `[[access.dn]]` rule.

use axum::http::HeaderMap;
use gridprobe_config::{Access, Role};
use sha2::{Digest, Sha256};

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name from the configuration.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// Why a request's credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `Authorization` is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    /// No configured token has this hash.
    #[error("unknown or revoked token")]
    Unknown,
    /// A verified client certificate whose subject no `[[access.dn]]` names.
    #[error("the certificate subject {0} is not named by any [[access.dn]]")]
    UnknownDn(String),
}

/// What the read guard found out about a request, for the handlers that act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authn {
    /// Who, if anyone (an error for a credential that was refused).
    pub who: Result<Option<Identity>, AuthError>,
    /// Whether the identity came from a login session (a browser's cookie).
    pub via_session: bool,
}

/// The identity of a token known by its SHA-256 (hex).
pub fn identify_hash(access: &Access, hash: &str) -> Result<Identity, AuthError> {
    // Check every token so the time taken does not tell which one matched.
    let mut found = None;
    for t in &access.tokens {
        if same(&t.sha256, hash) && found.is_none() {
            found = Some(Identity {
                name: t.name.clone(),
                role: t.role.clone(),
            });
        }
    }
    found.ok_or(AuthError::Unknown)
}

/// The identity of a verified client certificate: the first `[[access.dn]]` matching its
/// end-entity subject.
pub fn identify_dn(
    access: &Access,
    subject: &gridprobe_config::dn::Dn,
) -> Result<Identity, AuthError> {
    access
        .dns
        .iter()
        .find(|r| r.pattern.matches(subject))
        .map(|r| Identity {
            name: format!("DN {subject}"),
            role: r.role.clone(),
        })
        .ok_or_else(|| AuthError::UnknownDn(subject.to_string()))
}

/// Lower-case hex SHA-256 of a token.
pub fn sha256_hex(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two equal-length strings in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The identity behind a request's bearer token: `Ok(None)` without an `Authorization` header.
pub fn identify(access: &Access, headers: &HeaderMap) -> Result<Option<Identity>, AuthError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Malformed)?;
    identify_hash(access, &sha256_hex(token)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridprobe_config::Token;

    fn access() -> Access {
        Access {
            tokens: vec![
                Token {
                    name: "ops".into(),
                    sha256: sha256_hex("s3cret-operator"),
                    role: Role::Operator,
                },
                Token {
                    name: "cern".into(),
                    sha256: sha256_hex("s3cret-cern"),
                    role: Role::SiteAdmin(vec!["LCG.CERN.ch".into()]),
                },
            ],
            ..Access::default()
        }
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = v.parse() {
            h.insert(axum::http::header::AUTHORIZATION, v);
        }
        h
    }

    #[test]
    fn known_hash() {
        assert_eq!(
            sha256_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn tokens_map_to_roles() {
        let a = access();
        assert_eq!(identify(&a, &HeaderMap::new()), Ok(None));
        let id = identify(&a, &headers("Bearer s3cret-cern")).ok().flatten();
        assert_eq!(id.map(|i| i.name), Some("cern".to_string()));
        assert_eq!(
            identify(&a, &headers("Bearer nope")),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            identify(&a, &headers("Basic abc")),
            Err(AuthError::Malformed)
        );
        assert!(Role::SiteAdmin(vec!["A".into()]).may_run_at("A"));
        assert!(!Role::SiteAdmin(vec!["A".into()]).may_run_at("B"));
    }
}
