//! CVMFS signatures as the client checks them (the `software` kind's trust chain).
//!
//! Both `.cvmfspublished` and `.cvmfswhitelist` are signed "letters": text lines, a line `--`,
//! the hex hash of the text (an algorithm suffix such as `-rmd160` names another algorithm than
//! SHA-1), a newline, then a binary RSA signature running to the end of the file.
//!
//! * The manifest is signed by the repository's certificate: an RSA PKCS#1 v1.5 signature with
//!   SHA-1 over the hash *string* (the ASCII hex line). The certificate is a content-addressed
//!   object of the repository, `data/<2 hex>/<rest>X`, zlib-compressed PEM; its address (the
//!   manifest's `X`) is the SHA-1 of the compressed bytes.
//! * The whitelist lists the certificates allowed to sign: a creation time (14 digits), `E` and
//!   the expiry (`YYYYMMDDHHMMSS`, UTC, exact to the hour), `N` and the repository name,
//!   optionally `Vpkcs7` and `Wcachain`, then one fingerprint per line (the SHA-1 of the
//!   certificate's DER as `AB:CD:…`, anything after a blank or `#` ignored). It is signed by the
//!   repository's master key with raw PKCS#1 v1.5 padding (no digest prefix) over the hash
//!   string; clients hold the master key's public half as a `.pub` PEM file.

use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};

/// DER prefix of a PKCS#1 v1.5 SHA-1 DigestInfo (RFC 8017, section 9.2, note 1).
const SHA1_DIGEST_INFO: [u8; 15] = [
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
/// Largest decompressed certificate accepted: real ones are a few kilobytes.
const MAX_CERTIFICATE: u64 = 256 * 1024;

/// A signed letter cut into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter<'a> {
    /// The signed text, up to and including the newline before `--`.
    pub text: &'a [u8],
    /// The hash line as written (hex, maybe with an algorithm suffix).
    pub hash: &'a str,
    /// Everything after the hash line.
    pub signature: &'a [u8],
}

/// Cuts a letter as the CVMFS client does: the first `\n--\n` ends the text.
pub fn parse_letter(bytes: &[u8]) -> Result<Letter<'_>, String> {
    let Some(nl) = bytes.windows(4).position(|w| w == b"\n--\n") else {
        return Err("no `--` line: unsigned or cut short".to_string());
    };
    let text = &bytes[..=nl];
    let rest = &bytes[nl + 4..];
    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
        return Err("the hash after `--` has no end of line".to_string());
    };
    let hash = std::str::from_utf8(&rest[..end])
        .map_err(|_| "the hash after `--` is not text".to_string())?;
    if hash.is_empty() {
        return Err("no hash after the `--` line".to_string());
    }
    let signature = &rest[end + 1..];
    if signature.is_empty() {
        return Err("no signature after the hash".to_string());
    }
    Ok(Letter {
        text,
        hash,
        signature,
    })
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-1 of bytes, lower-case hex.
pub(crate) fn sha1_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes).as_ref())
}

/// Checks that a letter's hash line is the SHA-1 of its text. Other algorithms are named in
/// the error (gridprobe checks SHA-1 only, the default of CVMFS repositories).
pub fn check_letter_hash(letter: &Letter<'_>) -> Result<(), HashProblem> {
    let (hexpart, suffix) = match letter.hash.split_once('-') {
        Some((h, s)) => (h, Some(s)),
        None => (letter.hash, None),
    };
    if hexpart.is_empty() || !hexpart.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(HashProblem::NotAHash(
            letter.hash.chars().take(80).collect(),
        ));
    }
    match suffix {
        None if hexpart.len() == 40 => {
            let computed = sha1_hex(letter.text);
            if computed.eq_ignore_ascii_case(hexpart) {
                Ok(())
            } else {
                Err(HashProblem::Mismatch {
                    stated: hexpart.to_ascii_lowercase(),
                    computed,
                })
            }
        }
        None => Err(HashProblem::Unsupported(format!(
            "{}-digit hash",
            hexpart.len()
        ))),
        Some(s) => Err(HashProblem::Unsupported(s.chars().take(20).collect())),
    }
}

/// Why a letter's hash was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashProblem {
    /// The hash line is not hex.
    NotAHash(String),
    /// The text's SHA-1 differs from the hash line.
    Mismatch {
        /// As written.
        stated: String,
        /// As computed.
        computed: String,
    },
    /// An algorithm gridprobe does not compute.
    Unsupported(String),
}

impl std::fmt::Display for HashProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashProblem::NotAHash(h) => {
                write!(f, "`{}` after `--` is not a hash", h.escape_default())
            }
            HashProblem::Mismatch { stated, computed } => {
                write!(f, "its SHA-1 is {computed}, the hash it carries {stated}")
            }
            HashProblem::Unsupported(a) => {
                write!(f, "hash algorithm {a} is not checked by gridprobe")
            }
        }
    }
}

/// A parsed `.cvmfswhitelist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whitelist {
    /// The expiry, Unix seconds (the hour named, minutes and seconds ignored, as clients do).
    pub expires: i64,
    /// The expiry as written (14 digits).
    pub expires_text: String,
    /// The repository name (`N`).
    pub name: String,
    /// Listed fingerprints: lower-case hex without colons, an algorithm suffix kept.
    pub fingerprints: Vec<String>,
    /// `Vpkcs7`: the whitelist is to be verified through a PKCS#7 structure.
    pub pkcs7: bool,
    /// `Wcachain`: the certificate must also chain to a trusted CA.
    pub ca_chain: bool,
}

/// Reads a whitelist's text (the letter's text part, or a whole file: reading stops at `--`).
pub fn parse_whitelist(bytes: &[u8]) -> Result<Whitelist, String> {
    let mut lines = bytes.split(|&b| b == b'\n');
    let mut next = |what: &str| -> Result<&[u8], String> {
        lines
            .next()
            .ok_or_else(|| format!("the whitelist ends before its {what}"))
    };
    let created = next("creation time")?;
    if created.len() != 14 || !created.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "the first line `{}` is not a creation time (14 digits)",
            shown(created)
        ));
    }
    let expiry = next("expiry")?;
    let Some(digits) = expiry.strip_prefix(b"E") else {
        return Err(format!(
            "the second line `{}` is not an expiry (`E` and 14 digits)",
            shown(expiry)
        ));
    };
    if digits.len() != 14 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "the expiry `{}` is not 14 digits (YYYYMMDDHHMMSS)",
            shown(expiry)
        ));
    }
    let expires_text = String::from_utf8_lossy(digits).into_owned();
    let expires = expiry_time(&expires_text)?;
    let name_line = next("repository name")?;
    let Some(name) = name_line.strip_prefix(b"N") else {
        return Err(format!(
            "the third line `{}` is not a repository name (`N` and the name)",
            shown(name_line)
        ));
    };
    let name = std::str::from_utf8(name)
        .map_err(|_| "the repository name is not text".to_string())?
        .to_string();
    let (mut pkcs7, mut ca_chain, mut fingerprints) = (false, false, Vec::new());
    for line in lines {
        match line {
            b"--" => break,
            b"Vpkcs7" => pkcs7 = true,
            b"Wcachain" => ca_chain = true,
            _ => {
                if let Some(fp) = fingerprint(line) {
                    fingerprints.push(fp);
                }
            }
        }
    }
    Ok(Whitelist {
        expires,
        expires_text,
        name,
        fingerprints,
        pkcs7,
        ca_chain,
    })
}

/// A whitelist's fingerprint line, normalised: colons dropped, lower case, cut at a blank or
/// `#`; `None` when what is left is not a hash.
fn fingerprint(line: &[u8]) -> Option<String> {
    let end = line
        .iter()
        .position(|b| matches!(b, b' ' | b'\t' | b'#'))
        .unwrap_or(line.len());
    let text = std::str::from_utf8(&line[..end]).ok()?;
    let fp: String = text
        .chars()
        .filter(|&c| c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let hexpart = fp.split_once('-').map_or(fp.as_str(), |(h, _)| h);
    (!hexpart.is_empty() && hexpart.chars().all(|c| c.is_ascii_hexdigit())).then_some(fp)
}

/// `YYYYMMDDHHMMSS` (UTC) → Unix seconds of that hour.
fn expiry_time(digits: &str) -> Result<i64, String> {
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<i16>().ok());
    let (Some(y), Some(m), Some(d), Some(h)) = (num(0..4), num(4..6), num(6..8), num(8..10)) else {
        return Err(format!("the expiry `{digits}` is not a date"));
    };
    let (m, d, h) = (
        i8::try_from(m).map_err(|_| format!("the expiry `{digits}` is not a date"))?,
        i8::try_from(d).map_err(|_| format!("the expiry `{digits}` is not a date"))?,
        i8::try_from(h).map_err(|_| format!("the expiry `{digits}` is not a date"))?,
    );
    jiff::civil::DateTime::new(y, m, d, h, 0, 0, 0)
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp().as_second())
        .map_err(|_| format!("the expiry `{digits}` is not a valid date"))
}

fn shown(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(40)])
        .escape_default()
        .to_string()
}

/// The repository master keys of a `.pub` file: every `PUBLIC KEY` PEM block (RSA).
pub fn master_keys(pem: &[u8]) -> Result<Vec<RsaPublicKey>, String> {
    let mut keys = Vec::new();
    for spki in SubjectPublicKeyInfoDer::pem_slice_iter(pem) {
        let spki = spki.map_err(|e| format!("not a PEM file: {e}"))?;
        let key = RsaPublicKey::from_public_key_der(spki.as_ref())
            .map_err(|e| format!("a PUBLIC KEY block is not an RSA key: {e}"))?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("no `-----BEGIN PUBLIC KEY-----` block in it".to_string());
    }
    Ok(keys)
}

/// The repository's signing certificate, as fetched from its `X` object.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// SHA-1 of its DER, lower-case hex (the whitelist's fingerprint).
    pub fingerprint: String,
    /// Its subject, for messages.
    pub subject: String,
    key: RsaPublicKey,
}

impl Certificate {
    /// `AB:CD:…`, as whitelists write it.
    pub fn fingerprint_colons(&self) -> String {
        let upper = self.fingerprint.to_ascii_uppercase();
        upper
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Reads the certificate object: checks its content address, inflates it and reads the PEM.
pub fn read_certificate(object: &[u8], address: &str) -> Result<Certificate, String> {
    use std::io::Read;
    let computed = sha1_hex(object);
    if !computed.eq_ignore_ascii_case(address) {
        return Err(format!(
            "its SHA-1 is {computed}, not the {address} it is stored under (corrupt copy)"
        ));
    }
    let mut pem = Vec::new();
    flate2::read::ZlibDecoder::new(object)
        .take(MAX_CERTIFICATE + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("it does not inflate (zlib): {e}"))?;
    if pem.len() as u64 > MAX_CERTIFICATE {
        return Err(format!("it inflates past {MAX_CERTIFICATE} bytes"));
    }
    let der = CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| "it holds no PEM certificate".to_string())?
        .map_err(|e| format!("its PEM is unreadable: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("it is not an X.509 certificate: {e}"))?;
    let key = RsaPublicKey::from_public_key_der(cert.public_key().raw)
        .map_err(|e| format!("its key is not RSA: {e}"))?;
    Ok(Certificate {
        fingerprint: sha1_hex(der.as_ref()),
        subject: cert.subject().to_string(),
        key,
    })
}

/// Whether `signature` is the certificate's over the manifest's hash line `hash`.
pub fn verify_manifest(cert: &Certificate, hash: &str, signature: &[u8]) -> bool {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, hash.as_bytes());
    let mut info = SHA1_DIGEST_INFO.to_vec();
    info.extend_from_slice(digest.as_ref());
    cert.key
        .verify(Pkcs1v15Sign::new_unprefixed(), &info, signature)
        .is_ok()
}

/// Whether the whitelist's signature is one of the master keys' over its hash line.
pub fn verify_whitelist(keys: &[RsaPublicKey], letter: &Letter<'_>) -> bool {
    keys.iter().any(|k| {
        k.verify(
            Pkcs1v15Sign::new_unprefixed(),
            letter.hash.as_bytes(),
            letter.signature,
        )
        .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WL: &[u8] = b"20261101000000\nE20261201120000\nNlhcb.cern.ch\nVpkcs7\n\
        AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01 # the 2026 key\n\
        not a fingerprint\n--\n0123\nSIG";

    #[test]
    fn reads_a_whitelist_as_the_client_does() {
        let w = parse_whitelist(WL).expect("parses");
        assert_eq!(w.name, "lhcb.cern.ch");
        assert_eq!(w.expires_text, "20261201120000");
        // 2026-12-01 12:00 UTC.
        assert_eq!(w.expires, 1_796_126_400);
        assert!(w.pkcs7 && !w.ca_chain);
        assert_eq!(
            w.fingerprints,
            vec!["abcdef0123456789abcdef0123456789abcdef01".to_string()]
        );
    }

    #[test]
    fn malformed_whitelists_are_refused_with_the_reason() {
        for (text, needle) in [
            (&b""[..], "creation time"),
            (b"2026\nE20261201120000\nNx\n", "creation time"),
            (b"20261101000000\n20261201120000\nNx\n", "not an expiry"),
            (b"20261101000000\nE2026120112\nNx\n", "14 digits"),
            (b"20261101000000\nE20261341120000\nNx\n", "not a valid date"),
            (b"20261101000000\nE20261201120000\n", "repository name"),
            (
                b"20261101000000\nE20261201120000\nlhcb\n",
                "not a repository name",
            ),
        ] {
            let e = parse_whitelist(text).expect_err("refused");
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn letters_are_cut_at_the_first_separator() {
        let l = parse_letter(b"A1\nB2\n--\nabc\n\x00\n--\nrest").expect("cut");
        assert_eq!(l.text, b"A1\nB2\n");
        assert_eq!(l.hash, "abc");
        assert_eq!(l.signature, b"\x00\n--\nrest");
        for bad in [
            &b"A1\n"[..],
            b"A1\n--\nabc",
            b"A1\n--\nabc\n",
            b"A1\n--\n\nsig",
        ] {
            assert!(parse_letter(bad).is_err(), "{bad:?}");
        }
        let good = format!("A1\n--\n{}\nsig", sha1_hex(b"A1\n"));
        let l = parse_letter(good.as_bytes()).expect("cut");
        assert_eq!(check_letter_hash(&l), Ok(()));
        let l = parse_letter(b"A1\n--\nabc-rmd160\nsig").expect("cut");
        assert!(matches!(check_letter_hash(&l), Err(HashProblem::Unsupported(a)) if a == "rmd160"));
    }

    #[test]
    fn master_key_files_need_an_rsa_public_key() {
        assert!(master_keys(b"hello").is_err());
        assert!(
            master_keys(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err()
        );
    }
}
