//! The trust chain against an in-process Stratum-1 laid out as CVMFS documents it
//! (`/cvmfs/<repo>/.cvmfspublished`, `.cvmfswhitelist`, `data/<2 hex>/<rest>X`), with keys,
//! certificates and signatures made by the `openssl` command (an implementation independent of
//! the probe's): a good repository, a tampered manifest, an unknown certificate, an expired and
//! a soon-expiring whitelist, and a whitelist signed by another master key.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// Runs openssl; the tests need it (it ships with every Debian system).
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is needed by these tests");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Keys and certificates of one test repository.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["master", "other-master"] {
            openssl(
                dir.path(),
                &["genrsa", "-out", &format!("{name}.key"), "2048"],
            );
            openssl(
                dir.path(),
                &[
                    "rsa",
                    "-in",
                    &format!("{name}.key"),
                    "-pubout",
                    "-out",
                    &format!("{name}.pub"),
                ],
            );
        }
        for name in ["cert", "other-cert"] {
            openssl(
                dir.path(),
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                    "-subj",
                    &format!("/CN={REPO} {name}"),
                    "-days",
                    "30",
                ],
            );
        }
        Keys { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `openssl … -sign` of `data` with a key, the data passed as a file.
    fn sign(&self, data: &[u8], args: &[&str]) -> Vec<u8> {
        let input = self.path("to-sign");
        std::fs::write(&input, data).expect("write");
        let mut all: Vec<&str> = args.to_vec();
        all.push("to-sign");
        openssl(self.dir.path(), &all)
    }

    /// The certificate object (zlib-compressed PEM) and its content address.
    fn cert_object(&self, name: &str) -> (String, Vec<u8>) {
        let pem = std::fs::read(self.path(&format!("{name}.pem"))).expect("pem");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&pem).expect("compress");
        let object = z.finish().expect("compress");
        (signature::sha1_hex(&object), object)
    }

    /// The fingerprint line as `cvmfs_server` writes it (openssl's `AB:CD:…`).
    fn fingerprint(&self, name: &str) -> String {
        let out = openssl(
            self.dir.path(),
            &[
                "x509",
                "-in",
                &format!("{name}.pem"),
                "-noout",
                "-fingerprint",
                "-sha1",
            ],
        );
        let text = String::from_utf8_lossy(&out).into_owned();
        text.trim()
            .split_once('=')
            .map(|(_, f)| f.to_string())
            .expect("fingerprint line")
    }

    /// A manifest signed by the certificate `signer`, naming certificate `x`.
    fn manifest(&self, x: &str, revision: u64, signer: &str) -> Vec<u8> {
        let text = format!(
            "C600230b0ba7620426f2e898f1e1f43c5466efe59\nB4444160\n\
             Rd41d8cd98f00b204e9800998ecf8427e\nD240\nS{revision}\nGno\nAno\nN{REPO}\nX{x}\n\
             T{}\n",
            now_unix() - 3600
        );
        let hash = signature::sha1_hex(text.as_bytes());
        let sig = self.sign(
            hash.as_bytes(),
            &["dgst", "-sha1", "-sign", &format!("{signer}.key")],
        );
        let mut out = format!("{text}--\n{hash}\n").into_bytes();
        out.extend_from_slice(&sig);
        out
    }

    /// A whitelist expiring at `expires` (Unix s), listing `certs`, signed by `master`.
    fn whitelist(&self, expires: i64, certs: &[&str], master: &str) -> Vec<u8> {
        let stamp = |t: i64| {
            jiff::Timestamp::from_second(t)
                .expect("time")
                .strftime("%Y%m%d%H%M%S")
                .to_string()
        };
        let mut text = format!(
            "{}\nE{}\nN{REPO}\n",
            stamp(now_unix() - 86_400),
            stamp(expires)
        );
        for c in certs {
            text.push_str(&self.fingerprint(c));
            text.push('\n');
        }
        let hash = signature::sha1_hex(text.as_bytes());
        // Raw PKCS#1 v1.5 padding over the hash string, no digest: as `cvmfs_server` signs.
        let sig = self.sign(
            hash.as_bytes(),
            &[
                "pkeyutl",
                "-sign",
                "-inkey",
                &format!("{master}.key"),
                "-in",
            ],
        );
        let mut out = format!("{text}--\n{hash}\n").into_bytes();
        out.extend_from_slice(&sig);
        out
    }
}

/// One repository directory of the Stratum-1.
fn repo_pages(
    pages: &mut HashMap<String, (&'static str, Vec<u8>)>,
    dir: &str,
    manifest: Vec<u8>,
    whitelist: Vec<u8>,
    certs: &[(String, Vec<u8>)],
) {
    pages.insert(path(dir), ("200 OK", manifest));
    pages.insert(
        format!("/{dir}/{REPO}/.cvmfswhitelist"),
        ("200 OK", whitelist),
    );
    for (x, object) in certs {
        pages.insert(
            format!("/{dir}/{REPO}/data/{}/{}X", &x[..2], &x[2..]),
            ("200 OK", object.clone()),
        );
    }
}

fn signed_params(port: u16, dir: &str, keys: &Keys, master: &str) -> String {
    params(
        port,
        dir,
        &format!(
            "master_key = '{}'",
            keys.path(&format!("{master}.pub")).display()
        ),
    )
}

#[tokio::test]
async fn the_trust_chain_is_checked_as_the_client_does() {
    let keys = Keys::new();
    let (x, object) = keys.cert_object("cert");
    let (other_x, other_object) = keys.cert_object("other-cert");
    let certs = vec![(x.clone(), object), (other_x.clone(), other_object)];
    let month = now_unix() + 30 * 86_400;
    let good_wl = keys.whitelist(month, &["cert"], "master");
    let mut pages = HashMap::new();
    repo_pages(
        &mut pages,
        "good",
        keys.manifest(&x, 4721, "cert"),
        good_wl.clone(),
        &certs,
    );
    // Revision raised and the hash line recomputed, the old signature kept: only the signature
    // can tell.
    let mut tampered = keys.manifest(&x, 4721, "cert");
    let letter = signature::parse_letter(&tampered).expect("letter");
    let text = String::from_utf8_lossy(letter.text).replace("S4721", "S4722");
    let sig = letter.signature.to_vec();
    tampered = format!("{text}--\n{}\n", signature::sha1_hex(text.as_bytes())).into_bytes();
    tampered.extend_from_slice(&sig);
    repo_pages(&mut pages, "tampered", tampered, good_wl.clone(), &certs);
    repo_pages(
        &mut pages,
        "unknown",
        keys.manifest(&other_x, 4721, "other-cert"),
        good_wl.clone(),
        &certs,
    );
    repo_pages(
        &mut pages,
        "expired",
        keys.manifest(&x, 4721, "cert"),
        keys.whitelist(now_unix() - 2 * 3600, &["cert"], "master"),
        &certs,
    );
    repo_pages(
        &mut pages,
        "expiring",
        keys.manifest(&x, 4721, "cert"),
        keys.whitelist(now_unix() + 2 * 86_400, &["cert"], "master"),
        &certs,
    );
    repo_pages(
        &mut pages,
        "foreign-master",
        keys.manifest(&x, 4721, "cert"),
        keys.whitelist(month, &["cert"], "other-master"),
        &certs,
    );
    repo_pages(
        &mut pages,
        "no-cert",
        keys.manifest(&x, 4721, "cert"),
        good_wl,
        &[],
    );
    let s = server(pages).await;

    let run = |dir: &'static str, master: &'static str| {
        let p = probe(&signed_params(s.port, dir, &keys, master));
        async move { p.run(&ctx()).await }
    };

    let o = run("good", "master").await;
    assert_eq!(o.status, Status::Ok, "{}\n{}", o.summary, o.details);
    assert!(
        o.details.contains("signature verified: certificate"),
        "{}",
        o.details
    );
    let left = perf(&o, "whitelist_left").expect("whitelist_left");
    assert!(left > 29.0 * 86_400.0 && left <= 30.0 * 86_400.0, "{left}");

    let o = run("tampered", "master").await;
    assert_eq!(o.status, Status::Critical, "{}", o.summary);
    assert!(o.summary.contains("tampered manifest"), "{}", o.summary);

    let o = run("unknown", "master").await;
    assert_eq!(o.status, Status::Critical, "{}", o.summary);
    assert!(
        o.summary
            .contains("is not on the whitelist: unknown certificate"),
        "{}",
        o.summary
    );

    let o = run("expired", "master").await;
    assert_eq!(o.status, Status::Critical, "{}", o.summary);
    assert!(
        o.summary.contains("the whitelist expired at"),
        "{}",
        o.summary
    );

    let o = run("expiring", "master").await;
    assert_eq!(o.status, Status::Warning, "{}", o.summary);
    assert!(
        o.summary.contains("the whitelist expires at"),
        "{}",
        o.summary
    );
    // A shorter warning window: the same whitelist is fine.
    let p = probe(&format!(
        "{}\nwhitelist_warn = '1d'",
        signed_params(s.port, "expiring", &keys, "master")
    ));
    let o = p.run(&ctx()).await;
    assert_eq!(o.status, Status::Ok, "{}", o.summary);

    let o = run("foreign-master", "master").await;
    assert_eq!(o.status, Status::Critical, "{}", o.summary);
    assert!(
        o.summary
            .contains("the whitelist is not signed by the master key in"),
        "{}",
        o.summary
    );
    // The good repository checked with the wrong master key: the same refusal.
    let o = run("good", "other-master").await;
    assert_eq!(o.status, Status::Critical, "{}", o.summary);
    assert!(
        o.summary.contains("not signed by the master key"),
        "{}",
        o.summary
    );

    let o = run("no-cert", "master").await;
    assert_eq!(o.status, Status::Critical, "{}", o.summary);
    assert!(o.summary.starts_with("certificate: "), "{}", o.summary);
}

#[test]
fn an_unreadable_master_key_is_a_positioned_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("junk.pub");
    std::fs::write(&not_pem, "not a key").expect("write");
    for (file, needle) in [
        (dir.path().join("missing.pub"), "cannot read it"),
        (not_pem, "no `-----BEGIN PUBLIC KEY-----` block"),
    ] {
        let text = format!(
            "repository = '{REPO}'\nmaster_key = '{}'\nwhitelist_warn = '400d'",
            file.display()
        );
        let ds = match build_with(build, NAME, &text) {
            Ok(p) => panic!("built {p:?}"),
            Err(ds) => ds,
        };
        assert_eq!(ds.len(), 2, "{ds:?}");
        assert!(
            ds[0].message.contains("`whitelist_warn` is longer than"),
            "{}",
            ds[0].message
        );
        assert!(ds[1].message.contains(needle), "{}", ds[1].message);
        let line = line_of(NAME, &text, "master_key");
        assert_eq!(
            ds[1].position().as_deref(),
            Some(format!("t.toml:{line}:14").as_str())
        );
    }
}
