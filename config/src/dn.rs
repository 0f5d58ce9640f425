//! Distinguished names of X.509 subjects, as `[[access.dn]]` writes them: OpenSSL's grid form
//! (`/DC=ch/DC=cern/OU=Users/CN=Jane Doe`) or RFC 4514 (`CN=Jane Doe,OU=Users,DC=cern,DC=ch`),
//! both read into one canonical form (the grid form, attribute types upper-case), which is what
//! patterns are matched against.

use std::fmt;

/// A DN in canonical order (most significant first, as in the certificate).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dn(pub Vec<(String, String)>);

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.0 {
            write!(f, "/{k}={v}")?;
        }
        Ok(())
    }
}

/// Attribute type names as written, to the canonical short name.
fn canonical_type(t: &str) -> Result<String, String> {
    let t = t.trim();
    if t.is_empty() {
        return Err("an attribute has no type before `=`".into());
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(format!(
            "`{t}` is not an attribute type (such as CN, OU, DC)"
        ));
    }
    let upper = t.to_ascii_uppercase();
    Ok(match upper.as_str() {
        "E" | "EMAIL" | "EMAILADDRESS" => "EMAILADDRESS".into(),
        "USERID" => "UID".into(),
        _ => upper,
    })
}

impl Dn {
    /// Reads a DN (or a pattern: `*` and `?` are kept as written) in either form.
    pub fn parse(text: &str) -> Result<Dn, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the DN is empty".into());
        }
        let parts: Vec<String> = if let Some(rest) = text.strip_prefix('/') {
            split_openssl(rest)
        } else {
            let mut p = split_rfc4514(text)?;
            p.reverse();
            p
        };
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not TYPE=value"))?;
            if v.is_empty() {
                return Err(format!("`{part}` has an empty value"));
            }
            out.push((canonical_type(k)?, v.to_string()));
        }
        if out.is_empty() {
            return Err("the DN has no attribute".into());
        }
        Ok(Dn(out))
    }
}

/// `/A=x/B=y/z` splits at a `/` only when `TYPE=` follows it, so values may hold `/`
/// (host certificates: `CN=host/node.example.org`).
fn split_openssl(rest: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for piece in rest.split('/') {
        let starts_attr = piece.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        });
        match parts.last_mut() {
            Some(last) if !starts_attr => {
                last.push('/');
                last.push_str(piece);
            }
            _ => parts.push(piece.to_string()),
        }
    }
    parts
}

/// RFC 4514: `,` separates RDNs unless escaped with `\`; escapes are resolved.
fn split_rfc4514(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => return Err("the DN ends with a lone `\\`".into()),
            },
            ',' => {
                parts.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    parts.push(cur.trim().to_string());
    if parts.iter().any(String::is_empty) {
        return Err("the DN has an empty component (two commas in a row?)".into());
    }
    Ok(parts)
}

/// A DN or a pattern over DNs (`*` any characters, `?` one), matched against the canonical
/// form of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnPattern {
    /// The canonical form of what was written, wildcards kept.
    pub canonical: String,
}

impl DnPattern {
    /// Reads a DN or pattern in either form.
    pub fn parse(text: &str) -> Result<DnPattern, String> {
        let dn = Dn::parse(text)?;
        if dn.0.iter().any(|(k, _)| k.contains(['*', '?'])) {
            return Err("wildcards are allowed in values only, not in attribute types".into());
        }
        Ok(DnPattern {
            canonical: dn.to_string(),
        })
    }

    /// Whether a subject matches.
    pub fn matches(&self, subject: &Dn) -> bool {
        glob(self.canonical.as_bytes(), subject.to_string().as_bytes())
    }
}

/// `[[access.dn]]`: who a certificate subject is and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnRule {
    /// The DN or pattern as written (for logs and messages).
    pub name: String,
    /// What it matches.
    pub pattern: DnPattern,
    /// What it may do.
    pub role: crate::model::Role,
}

/// `[server] tls_cert`, `tls_key`, `client_ca_dir`: serve over HTTPS, accepting client
/// certificates issued by the CAs of the directory (checked when the configuration is read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The server's certificate chain (PEM).
    pub cert: std::path::PathBuf,
    /// Its private key (PEM), readable by the owner only.
    pub key: std::path::PathBuf,
    /// CA certificates accepted for client certificates (`*.0` hashed names or any PEM file);
    /// without it, clients authenticate with tokens only.
    pub client_ca_dir: Option<std::path::PathBuf>,
}

/// `*`/`?` glob over bytes, iterative (no backtracking blow-up).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_are_one() {
        let a = Dn::parse("/DC=ch/DC=cern/OU=Organic Units/OU=Users/CN=jdoe/CN=123/CN=Jane Doe")
            .unwrap();
        let b = Dn::parse("CN=Jane Doe,CN=123,CN=jdoe,OU=Users,OU=Organic Units,dc=cern,DC=ch")
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.to_string(),
            "/DC=ch/DC=cern/OU=Organic Units/OU=Users/CN=jdoe/CN=123/CN=Jane Doe"
        );
        let host = Dn::parse("/O=Grid/CN=host/node.example.org").unwrap();
        assert_eq!(host.0.len(), 2);
        assert_eq!(host.0[1].1, "host/node.example.org");
        let esc = Dn::parse(r"CN=Doe\, Jane,O=Grid").unwrap();
        assert_eq!(esc.to_string(), "/O=Grid/CN=Doe, Jane");
    }

    #[test]
    fn bad_dns_are_refused() {
        for bad in ["", "/", "CN", "/CN=", "CN=a,,O=b", "C N=x", "=x", r"CN=a\"] {
            assert!(Dn::parse(bad).is_err(), "{bad:?}");
        }
        assert!(DnPattern::parse("/C*=x").is_err());
    }

    #[test]
    fn patterns_match() {
        let p = DnPattern::parse("/DC=ch/DC=cern/OU=Users/CN=*").unwrap();
        let subject = Dn::parse("CN=Jane,OU=Users,DC=cern,DC=ch").unwrap();
        assert!(p.matches(&subject));
        let other = Dn::parse("/DC=org/DC=other/OU=Users/CN=Jane").unwrap();
        assert!(!p.matches(&other));
        let exact = DnPattern::parse("CN=Jane,OU=Users,DC=cern,DC=ch").unwrap();
        assert!(exact.matches(&subject));
        assert!(!exact.matches(&other));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"a?c", b"abc"));
    }
}
