//! Who may use the API, end to end over HTTPS: grid user certificates and RFC 3820 proxies of
//! them (verified against a CA directory), `[[access.dn]]` roles per site, tokens beside them,
//! and for browsers a login page and an expiring session cookie instead of the JSON 401.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, write_file, Serve};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

const DC: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 25];
/// proxyCertInfo { proxyPolicy { id-ppl-inheritAll } }.
const PROXY_CERT_INFO: &[u8] = &[
    0x30, 0x0c, 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x01,
];
const OPERATOR_TOKEN: &str = "op-secret-token-1234";

fn dn(parts: &[(&str, &str)]) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    for (k, v) in parts {
        let t = match *k {
            "DC" => DnType::CustomDnType(DC.to_vec()),
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            _ => DnType::CommonName,
        };
        d.push(t, *v);
    }
    d
}

struct Pki {
    ca_pem: String,
    ca: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(cn: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = dn(&[("DC", "org"), ("O", "Test"), ("CN", cn)]);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            ca: Issuer::new(p, key),
        }
    }

    /// A user certificate: its PEM, its key, and its parameters (for issuing proxies).
    fn user(&self, cn: &str) -> (String, KeyPair, CertificateParams) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = dn(&[("DC", "org"), ("O", "Test"), ("OU", "Users"), ("CN", cn)]);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = p.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key, p)
    }

    fn server(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name = dn(&[("DC", "org"), ("O", "Test"), ("CN", "localhost")]);
        let cert = p.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// An RFC 3820 proxy of a user certificate: (proxy PEM, proxy key PEM).
fn proxy(user: &CertificateParams, user_key: &KeyPair, expired: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut subject = user.distinguished_name.clone();
    // rcgen keeps one value per type: the proxy's own CN goes in under the CN OID spelt as a
    // custom type (the same OID on the wire).
    subject.push(DnType::CustomDnType(vec![2, 5, 4, 3]), "1234567890");
    p.distinguished_name = subject;
    let mut ext =
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 14], PROXY_CERT_INFO.to_vec());
    ext.set_criticality(true);
    p.custom_extensions.push(ext);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if expired {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2000, 1, 2);
    }
    let issuer = Issuer::from_params(user, user_key);
    let cert = p.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn client(ca_pem: &str, identity: Option<String>, redirects: bool) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .timeout(Duration::from_secs(20))
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
    if !redirects {
        b = b.redirect(reqwest::redirect::Policy::none());
    }
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// A client certificate resolver that presents a fixed chain: rustls' own check of a client
/// chain parses it with webpki, which refuses a proxy's critical proxyCertInfo.
#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Fixed {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// One request over TLS presenting `chain_pem` (leaf first) with `key_pem`: the status, or
/// an error when the handshake (or the server's verdict on the certificate) fails.
fn raw_request(
    addr: &str,
    ca_pem: &str,
    chain_pem: &str,
    key_pem: &str,
    head: &str,
) -> Result<u16, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<_> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Fixed(Arc::new(rustls::sign::CertifiedKey::new(
            chain, key,
        )))));
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let read = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    match text.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
        Some(code) => Ok(code),
        None => Err(format!("no answer: {read:?}")),
    }
}

fn get_head(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

fn run_head(site: &str) -> String {
    let body = format!(r#"{{"site": "{site}"}}"#);
    format!(
        "POST /api/v1/runs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn config(dir: &Path, lifetime: &str) -> String {
    let sha = {
        use std::io::Write;
        let mut child = std::process::Command::new(common::bin())
            .args(["token", "hash"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(OPERATOR_TOKEN.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(sha.len(), 64, "token hash: {sha}");
    let _ = dir;
    format!(
        r#"
vo = "e2e"
[defaults]
interval = "1h"
timeout = "1s"
[server]
startup_spread = "1s"
shutdown_grace = "1s"
tls_cert = "server.pem"
tls_key = "server.key"
client_ca_dir = "ca"

[access]
read = "token"
session_lifetime = "{lifetime}"
  [[access.token]]
  name = "ops"
  sha256 = "{sha}"
  role = "operator"
  [[access.dn]]
  subject = "/DC=org/O=Test/OU=Users/CN=Alice"
  role = "site-admin"
  sites = ["SITE_A"]
  [[access.dn]]
  subject = "/DC=org/O=Test/OU=Users/CN=Carol"
  role = "operator"
  [[access.dn]]
  subject = "CN=B*,OU=Users,o=Test,DC=org"
  role = "site-admin"
  sites = ["SITE_B"]

[[site]]
name = "SITE_A"
tier = 2
  [[site.service]]
  flavour = "SRV"
  hostname = "a.invalid"
  endpoint = "tcp://127.0.0.1:9"

[[site]]
name = "SITE_B"
tier = 2
  [[site.service]]
  flavour = "SRV"
  hostname = "b.invalid"
  endpoint = "tcp://127.0.0.1:9"

[[probe]]
metric = "org.e2e.tcp"
kind = "tcp"
flavours = ["SRV"]
"#
    )
}

fn https_addr(serve: &Serve) -> String {
    serve.wait_for("/healthz", Duration::from_secs(30));
    let out = serve.output();
    out.lines()
        .find_map(|l| l.trim().strip_prefix("http:"))
        .and_then(|rest| rest.trim().strip_prefix("https://"))
        .and_then(|rest| rest.strip_suffix("/healthz"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no https address in serve's output:\n{out}"))
}

fn run_at(c: &reqwest::blocking::Client, base: &str, site: &str) -> u16 {
    c.post(format!("{base}/api/v1/runs"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"site": "{site}"}}"#))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn certificates_proxies_tokens_and_browser_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Test CA");
    let (server_cert, server_key) = pki.server();
    write_file(dir.path(), "server.pem", &server_cert);
    let key_path = write_file(dir.path(), "server.key", &server_key);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(dir.path().join("ca")).unwrap();
    write_file(&dir.path().join("ca"), "1a2b3c4d.0", &pki.ca_pem);
    write_file(&dir.path().join("ca"), "1a2b3c4d.signing_policy", "garbage");

    let (alice, alice_key, alice_params) = pki.user("Alice");
    let (bob, bob_key, _) = pki.user("Bob");
    let (dave, dave_key, _) = pki.user("Dave");
    let (px, px_key) = proxy(&alice_params, &alice_key, false);
    let (old_px, old_px_key) = proxy(&alice_params, &alice_key, true);
    let ident = |cert: &str, key: &str, chain: &str| format!("{cert}{chain}{key}");

    let cfg = write_file(dir.path(), "vo.toml", &config(dir.path(), "3s"));
    let store = dir.path().join("r.sqlite");
    let mut serve = Serve::start(&cfg, store.to_str().unwrap());
    let base = format!("https://{}", https_addr(&serve));
    let ca = &pki.ca_pem;

    // No credential: JSON 401 for the API, the login page for a browser.
    let anon = client(ca, None, false);
    let r = anon.get(format!("{base}/api/v1/sites")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: serde_json::Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(body["error"], "authentication required");
    let r = anon
        .get(format!("{base}/sites/SITE_A"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let page = r.text().unwrap();
    assert!(
        page.contains("<form method=\"post\" action=\"/-/login\""),
        "{page}"
    );
    assert!(page.contains("value=\"/sites/SITE_A\""), "{page}");

    // Alice's certificate: reads; runs at her site only; no reload.
    let alice_c = client(
        ca,
        Some(ident(&alice, &alice_key.serialize_pem(), "")),
        false,
    );
    let r = alice_c.get(format!("{base}/api/v1/sites")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
    assert_eq!(run_at(&alice_c, &base, "SITE_B"), 403);
    assert_eq!(run_at(&alice_c, &base, "SITE_A"), 202);
    let r = alice_c.post(format!("{base}/-/reload")).send().unwrap();
    assert_eq!(r.status().as_u16(), 403, "reload needs an operator");

    // A proxy of Alice's certificate (presented with Alice's) stands for Alice.
    let addr = base.trim_start_matches("https://").to_string();
    let chain = format!("{px}{alice}");
    let via_proxy = |head: &str| raw_request(&addr, ca, &chain, &px_key, head);
    assert_eq!(via_proxy(&get_head("/api/v1/sites")), Ok(200));
    assert_eq!(via_proxy(&run_head("SITE_B")), Ok(403));
    assert_eq!(via_proxy(&run_head("SITE_A")), Ok(202));
    // Without the certificate that issued it, or expired, a proxy is refused.
    assert!(raw_request(&addr, ca, &px, &px_key, &get_head("/api/v1/sites")).is_err());
    let old_chain = format!("{old_px}{alice}");
    assert!(raw_request(
        &addr,
        ca,
        &old_chain,
        &old_px_key,
        &get_head("/api/v1/sites")
    )
    .is_err());

    // Bob matches the RFC 4514 pattern of SITE_B: 403 at SITE_A.
    let bob_c = client(ca, Some(ident(&bob, &bob_key.serialize_pem(), "")), false);
    assert_eq!(run_at(&bob_c, &base, "SITE_A"), 403);

    // Dave's certificate is valid but named by no rule: not authenticated.
    let dave_c = client(ca, Some(ident(&dave, &dave_key.serialize_pem(), "")), false);
    let r = dave_c.get(format!("{base}/api/v1/sites")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().unwrap().contains("CN=Dave"));

    // A certificate of another CA fails the handshake.
    let other = Pki::new("Other CA");
    let (mallory, mallory_key, _) = other.user("Alice");
    let m_c = client(
        ca,
        Some(ident(&mallory, &mallory_key.serialize_pem(), "")),
        false,
    );
    assert!(m_c.get(format!("{base}/api/v1/sites")).send().is_err());

    // An operator's certificate reloads.
    let (carol, carol_key, _) = pki.user("Carol");
    let carol_c = client(
        ca,
        Some(ident(&carol, &carol_key.serialize_pem(), "")),
        false,
    );
    let r = carol_c.post(format!("{base}/-/reload")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Tokens still work; the operator token reloads.
    let r = anon
        .post(format!("{base}/-/reload"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // A browser logs in with the token: a session cookie that works, then expires.
    let r = anon
        .post(format!("{base}/-/login"))
        .form(&[("token", "wrong"), ("next", "/sites/SITE_A")])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = anon
        .post(format!("{base}/-/login"))
        .form(&[("token", OPERATOR_TOKEN), ("next", "/sites/SITE_A")])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/sites/SITE_A");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Max-Age=3"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_string();
    let with_cookie = || {
        anon.get(format!("{base}/api/v1/sites"))
            .header("cookie", &pair)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(with_cookie(), 200);
    // A session is not enough to reload.
    let r = anon
        .post(format!("{base}/-/reload"))
        .header("cookie", &pair)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        wait_until(Duration::from_secs(10), || with_cookie() == 401),
        "the session never expired"
    );
    serve.terminate_cleanly();
}

/// `gridprobe check` on a configuration: (exit code, everything printed).
fn check(dir: &Path, text: &str) -> (Option<i32>, String) {
    let cfg = write_file(dir, "vo.toml", text);
    let out = common::gridprobe(&["check", &cfg]);
    let (o, e) = common::texts(&out);
    (out.status.code(), format!("{o}{e}"))
}

#[test]
fn bad_tls_and_dn_settings_are_positioned_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.server();
    write_file(dir.path(), "server.pem", &cert);
    let key_path = write_file(dir.path(), "server.key", &key);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    write_file(&dir.path().join("empty"), "README", "no certificates here");
    let site = "\n[[site]]\nname = \"S\"\ntier = 2\n  [[site.service]]\n  flavour = \"F\"\n  hostname = \"h.example\"\n[[probe]]\nmetric = \"m.x\"\nkind = \"tcp\"\nflavours = [\"F\"]\n  [probe.params]\n  port = 1\n";
    let cases: &[(&str, &str, &str)] = &[
        (
            "[server]\ntls_cert = \"missing.pem\"\ntls_key = \"server.key\"\n",
            "vo.toml:3:12",
            "cannot read",
        ),
        (
            "[server]\ntls_cert = \"server.pem\"\ntls_key = \"server.key\"\n",
            "vo.toml:4:11",
            "is readable by others (mode 644)",
        ),
        (
            "[server]\ntls_cert = \"server.key\"\ntls_key = \"server.key\"\n",
            "vo.toml:3:12",
            "holds no certificate",
        ),
        (
            "[server]\ntls_cert = \"server.pem\"\n",
            "vo.toml:3:12",
            "`tls_cert` and `tls_key` go together",
        ),
        (
            "[server]\nclient_ca_dir = \"empty\"\n",
            "vo.toml:3:17",
            "needs `tls_cert` and `tls_key`",
        ),
        (
            "[[access.dn]]\nsubject = \"/DC=org/CN=\"\nrole = \"operator\"\n",
            "vo.toml:3:11",
            "`CN=` has an empty value",
        ),
        (
            "[[access.dn]]\nsubject = \"CN=x,,O=y\"\nrole = \"operater\"\n",
            "vo.toml:3:11",
            "empty component",
        ),
        (
            "[[access.dn]]\nsubject = \"CN=x\"\nrole = \"site-admin\"\n",
            "vo.toml:4:8",
            "site-admin DN `CN=x` names no sites",
        ),
    ];
    for (table, at, says) in cases {
        let (code, out) = check(dir.path(), &format!("vo = \"t\"\n{table}{site}"));
        assert_eq!(code, Some(1), "{table}\n{out}");
        assert!(
            out.contains(at) && out.contains(says),
            "{table}: want {at} {says}\n{out}"
        );
    }
    // The key fixed, an empty CA directory is named.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out) = check(
        dir.path(),
        &format!("vo = \"t\"\n[server]\ntls_cert = \"server.pem\"\ntls_key = \"server.key\"\nclient_ca_dir = \"empty\"\n{site}"),
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("vo.toml:5:17") && out.contains("holds no CA certificate"),
        "{out}"
    );
    let (code, out) = check(
        dir.path(),
        &format!(
            "vo = \"t\"\n[server]\ntls_cert = \"server.pem\"\ntls_key = \"server.key\"\n{site}"
        ),
    );
    assert_eq!(code, Some(0), "{out}");
}
