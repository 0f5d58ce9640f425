//! The `arc` backend end to end: the real binary against a real A-REX (Debian's
//! nordugrid-arc-arex with its REST interface, running jobs through the one-node test Slurm),
//! set up by `scripts/services/arex.sh`. Covers a job that succeeds, a payload that fails, a
//! job past `run_timeout` killed at the CE (nothing left in A-REX or Slurm), A-REX down, a
//! credential the CE does not admit (CRITICAL: the site's answer) and the monitoring's own
//! credential problems (UNKNOWN), and a grid proxy from `[[credential]]`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{closed_port, gridprobe, required, texts, wait_until, write_file};
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, Issuer, KeyPair};

/// The test A-REX: endpoint, trust anchor, an admitted user and one it does not admit.
struct Arex {
    url: String,
    ca: String,
    cert: String,
    key: String,
    outsider_cert: String,
    outsider_key: String,
}

fn arex() -> Option<Arex> {
    let var = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
    let found = (|| {
        Some(Arex {
            url: var("GRIDPROBE_TEST_AREX_URL")?,
            ca: var("GRIDPROBE_TEST_AREX_CA_FILE")?,
            cert: var("GRIDPROBE_TEST_AREX_CERT")?,
            key: var("GRIDPROBE_TEST_AREX_KEY")?,
            outsider_cert: var("GRIDPROBE_TEST_AREX_OUTSIDER_CERT")?,
            outsider_key: var("GRIDPROBE_TEST_AREX_OUTSIDER_KEY")?,
        })
    })();
    required(
        found,
        "the test A-REX (GRIDPROBE_TEST_AREX_*)",
        "run `eval \"$(bash scripts/test-env.sh slurm arex)\"`",
    )
}

/// A config with one ARC-CE at `endpoint` and one probe of `kind` with `params`; `extra` is
/// more TOML at the top level (a `[[credential]]`).
fn config(dir: &Path, endpoint: &str, kind: &str, params: &str, extra: &str) -> String {
    write_file(
        dir,
        "vo.toml",
        &format!(
            r#"vo = "test"
{extra}
[[site]]
name = "T2_ARC"
tier = 2
  [[site.service]]
  flavour = "ARC-CE"
  hostname = "localhost"
  endpoint = "{endpoint}"

[[probe]]
metric = "org.test.arc"
kind = "{kind}"
flavours = ["ARC-CE"]
timeout = "3m"
  [probe.params]
  backend = "arc"
  poll_interval = "1s"
{params}
"#
        ),
    )
}

/// `ca_file`, `client_cert` and `client_key` lines.
fn tls_lines(ca: &str, cert: &str, key: &str) -> String {
    format!("  ca_file = \"{ca}\"\n  client_cert = \"{cert}\"\n  client_key = \"{key}\"\n")
}

/// The one result of `gridprobe run --format json`.
fn run(config: &str) -> serde_json::Value {
    let out = gridprobe(&["run", "--config", config, "--format", "json"]);
    let (stdout, stderr) = texts(&out);
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("json ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(items.len(), 1, "{stdout}");
    items[0]["result"].clone()
}

fn text<'a>(r: &'a serde_json::Value, key: &str) -> &'a str {
    r[key].as_str().unwrap_or_default()
}

fn perf_labels(r: &serde_json::Value) -> Vec<String> {
    r["perfdata"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["label"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The A-REX job id in a summary or details: "job ID (arc)".
fn arex_id(r: &serde_json::Value) -> String {
    let details = text(r, "details");
    let first = details.lines().next().unwrap_or_default();
    first
        .strip_prefix("job ")
        .and_then(|s| s.strip_suffix(" (arc)"))
        .unwrap_or_else(|| panic!("no A-REX job id in {details}"))
        .to_string()
}

/// The Slurm job id the details name ("A-REX ran it as SLURM job N").
fn slurm_id(r: &serde_json::Value) -> String {
    let details = text(r, "details");
    details
        .lines()
        .find_map(|l| l.strip_prefix("note: A-REX ran it as SLURM job "))
        .unwrap_or_else(|| panic!("no Slurm job id in {details}"))
        .trim()
        .to_string()
}

/// A client of the test A-REX with the admitted user's certificate.
fn client(a: &Arex) -> reqwest::blocking::Client {
    let ca = std::fs::read(&a.ca).expect("read CA");
    let mut identity = std::fs::read(&a.cert).expect("read cert");
    identity.extend(std::fs::read(&a.key).expect("read key"));
    reqwest::blocking::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .timeout(Duration::from_secs(20))
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
        .identity(reqwest::Identity::from_pem(&identity).expect("identity"))
        .build()
        .expect("client")
}

/// Whether A-REX still knows job `id`.
fn arex_knows(a: &Arex, id: &str) -> bool {
    let url = format!("{}/rest/1.0/jobs/{id}/diagnose/status", a.url);
    let resp = client(a).get(url).send().expect("ask A-REX");
    resp.status().as_u16() != 404
}

/// Whether Slurm still lists job `id` as pending or running.
fn slurm_lists(id: &str) -> bool {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-j", id, "-o", "%T"])
        .output()
        .expect("run squeue");
    let listed = String::from_utf8_lossy(&out.stdout);
    listed.lines().any(|l| {
        matches!(
            l.trim(),
            "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING"
        )
    })
}

#[test]
fn a_job_through_arex_and_slurm_succeeds_with_its_timeline_and_accounting() {
    let Some(a) = arex() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // The CE's queue is the Slurm partition (arex.sh names its [queue:...] so).
    let queue = std::env::var("GRIDPROBE_TEST_SLURM").unwrap_or_else(|_| "debug".to_string());
    let params = format!(
        "{}  queue = \"{queue}\"\n",
        tls_lines(&a.ca, &a.cert, &a.key)
    );
    let cfg = config(dir.path(), &a.url, "ce", &params, "");
    let r = run(&cfg);
    let details = text(&r, "details");
    assert_eq!(text(&r, "status"), "OK", "{r:#}");
    assert!(details.contains(&format!("queue {queue}")), "{details}");
    assert!(text(&r, "summary").contains("(arc) completed"), "{r:#}");
    // The timeline: A-REX's states, then the end with the node and exit code.
    assert!(details.contains("submitted  as job"), "{details}");
    assert!(details.contains("pending  "), "{details}");
    assert!(details.contains("completed  FINISHED on "), "{details}");
    assert!(details.contains("exit code 0"), "{details}");
    assert!(details.contains("gridprobe test job on "), "{details}");
    assert!(details.contains("as gridprobe-arc"), "{details}");
    for label in ["submit", "queued", "wall", "cpu", "peak_memory", "total"] {
        assert!(perf_labels(&r).iter().any(|l| l == label), "{label}: {r:#}");
    }
    // Cleaned at the CE: A-REX forgets the job.
    assert!(details.contains("cleaned at A-REX"), "{details}");
    let id = arex_id(&r);
    assert!(
        wait_until(Duration::from_secs(60), || !arex_knows(&a, &id)),
        "A-REX still knows job {id}"
    );
}

#[test]
fn a_failing_payload_is_critical_with_its_exit_code_and_output() {
    let Some(a) = arex() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let payload = common::script(
        dir.path(),
        "fail.sh",
        "echo 'payload says no' >&2\nexit 3\n",
    );
    let params = format!(
        "{}  script = \"{}\"\n",
        tls_lines(&a.ca, &a.cert, &a.key),
        payload.display()
    );
    let r = run(&config(dir.path(), &a.url, "job", &params, ""));
    assert_eq!(text(&r, "status"), "CRITICAL", "{r:#}");
    assert!(text(&r, "summary").contains("exit code 3"), "{r:#}");
    assert!(text(&r, "details").contains("payload says no"), "{r:#}");
}

#[test]
fn a_job_past_run_timeout_is_killed_at_the_ce_and_nothing_is_left() {
    let Some(a) = arex() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let payload = common::script(dir.path(), "hang.sh", "echo started\nsleep 600\n");
    let params = format!(
        "{}  script = \"{}\"\n  run_timeout = \"15s\"\n",
        tls_lines(&a.ca, &a.cert, &a.key),
        payload.display()
    );
    let r = run(&config(dir.path(), &a.url, "job", &params, ""));
    let summary = text(&r, "summary");
    assert_eq!(text(&r, "status"), "CRITICAL", "{r:#}");
    assert!(summary.contains("run phase timed out"), "{r:#}");
    assert!(summary.contains("(the run_timeout)"), "{r:#}");
    let details = text(&r, "details");
    assert!(
        details.contains("cancel  requested by gridprobe"),
        "{details}"
    );
    assert!(details.contains("cleaned at A-REX"), "{details}");
    // What it wrote before the kill was fetched.
    assert!(details.contains("--- stdout ---\nstarted"), "{details}");
    let (id, batch) = (arex_id(&r), slurm_id(&r));
    assert!(
        wait_until(Duration::from_secs(60), || !slurm_lists(&batch)),
        "Slurm job {batch} still listed"
    );
    assert!(
        wait_until(Duration::from_secs(60), || !arex_knows(&a, &id)),
        "A-REX still knows job {id}"
    );
}

#[test]
fn arex_down_is_critical() {
    let Some(a) = arex() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("https://localhost:{}/arex", closed_port());
    let r = run(&config(
        dir.path(),
        &url,
        "ce",
        &tls_lines(&a.ca, &a.cert, &a.key),
        "",
    ));
    assert_eq!(text(&r, "status"), "CRITICAL", "{r:#}");
    let summary = text(&r, "summary");
    assert!(summary.contains("submission to arc failed"), "{summary}");
    assert!(summary.contains("connection refused"), "{summary}");
}

#[test]
fn a_credential_the_ce_refuses_is_critical_but_the_monitorings_own_is_unknown() {
    let Some(a) = arex() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // Valid, but not admitted by the site's authorisation: the site's answer.
    let tls = tls_lines(&a.ca, &a.outsider_cert, &a.outsider_key);
    let r = run(&config(dir.path(), &a.url, "ce", &tls, ""));
    assert_eq!(text(&r, "status"), "CRITICAL", "{r:#}");
    let summary = text(&r, "summary");
    assert!(summary.contains("HTTP 403"), "{summary}");
    assert!(
        summary.contains("does not admit the credential"),
        "{summary}"
    );

    // Expired on gridprobe's side: the monitoring's problem, never the site's.
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "expired robot");
    p.not_before = rcgen::date_time_ymd(2000, 1, 1);
    p.not_after = rcgen::date_time_ymd(2000, 1, 2);
    let cert = p.self_signed(&key).expect("cert");
    let cert_file = write_file(dir.path(), "expired.pem", &cert.pem());
    let key_file = write_file(dir.path(), "expired.key", &key.serialize_pem());
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let tls = tls_lines(&a.ca, &cert_file, &key_file);
    let r = run(&config(dir.path(), &a.url, "ce", &tls, ""));
    assert_eq!(text(&r, "status"), "UNKNOWN", "{r:#}");
    let summary = text(&r, "summary");
    assert!(
        summary.contains("monitoring credential problem"),
        "{summary}"
    );
    assert!(summary.contains("expired at 2000-01-02"), "{summary}");
}

/// proxyCertInfo { proxyPolicy { id-ppl-inheritAll } }.
const PROXY_CERT_INFO: &[u8] = &[
    0x30, 0x0c, 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x01,
];

/// An RFC 3820 proxy of the admitted user's certificate, as one file: proxy, its key, user cert.
fn proxy_file(a: &Arex, dir: &Path) -> String {
    let user_key = KeyPair::from_pem(&std::fs::read_to_string(&a.key).expect("key")).expect("pem");
    let mut user = CertificateParams::new(Vec::<String>::new()).expect("params");
    user.distinguished_name = DistinguishedName::new();
    for (t, v) in [
        (DnType::OrganizationName, "gridprobe"),
        (DnType::OrganizationalUnitName, "arc"),
        (DnType::CommonName, "gridprobe arc user"),
    ] {
        user.distinguished_name.push(t, v);
    }
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut subject = user.distinguished_name.clone();
    // One value per type in rcgen: the proxy's CN under the CN OID spelt as a custom type.
    subject.push(DnType::CustomDnType(vec![2, 5, 4, 3]), "424242");
    p.distinguished_name = subject;
    let mut ext =
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 14], PROXY_CERT_INFO.to_vec());
    ext.set_criticality(true);
    p.custom_extensions.push(ext);
    let issuer = Issuer::from_params(&user, &user_key);
    let cert = p.signed_by(&key, &issuer).expect("proxy");
    let user_pem = std::fs::read_to_string(&a.cert).expect("cert");
    let path = write_file(
        dir,
        "x509up",
        &format!("{}{}{user_pem}", cert.pem(), key.serialize_pem()),
    );
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    path
}

#[test]
fn a_grid_proxy_from_the_credentials_is_presented_to_arex() {
    let Some(a) = arex() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = proxy_file(&a, dir.path());
    let credential =
        format!("[[credential]]\nname = \"robot\"\nkind = \"file\"\npath = \"{proxy}\"\n");
    let params = format!("  ca_file = \"{}\"\n", a.ca);
    let cfg = config(dir.path(), &a.url, "ce", &params, &credential);
    let text_cfg = std::fs::read_to_string(&cfg).expect("read");
    std::fs::write(
        &cfg,
        text_cfg.replace(
            "timeout = \"3m\"",
            "timeout = \"3m\"\ncredential = \"robot\"",
        ),
    )
    .expect("write");
    let r = run(&cfg);
    assert_eq!(text(&r, "status"), "OK", "{r:#}");
    assert!(text(&r, "details").contains("as gridprobe-arc"), "{r:#}");
}

#[test]
fn check_refuses_an_unknown_backend_and_an_arc_endpoint_that_is_not_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["robot".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let cert_file = write_file(dir.path(), "robot.pem", &cert.pem());
    let key_file = write_file(dir.path(), "robot.key", &key.serialize_pem());
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let params = format!("  client_cert = \"{cert_file}\"\n  client_key = \"{key_file}\"\n");
    // The service's endpoint is the ARC endpoint of the first probe: http is refused at the
    // service; the second probe names a backend that does not exist.
    let cfg = config(
        dir.path(),
        "http://ce.example.org:443/arex",
        "ce",
        &params,
        "",
    );
    let body = format!(
        "{}\n[[probe]]\nmetric = \"org.test.other\"\nkind = \"ce\"\nflavours = [\"ARC-CE\"]\n  \
         [probe.params]\n  backend = \"condor\"\n",
        std::fs::read_to_string(&cfg).expect("read")
    );
    std::fs::write(&cfg, &body).expect("write");
    let out = gridprobe(&["check", &cfg]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line_of = |needle: &str| {
        body.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .expect("needle")
    };
    let at = |line: usize, message: &str| {
        stderr
            .lines()
            .any(|l| l.contains(&format!("vo.toml:{line}:")) && l.contains(message))
    };
    assert!(
        at(
            line_of("hostname = \"localhost\""),
            "is the ARC endpoint of probe org.test.arc, and it is not https"
        ),
        "{stderr}"
    );
    assert!(
        at(line_of("backend = \"condor\""), "unknown backend `condor`"),
        "{stderr}"
    );
}

#[test]
fn vofeed_import_gives_arc_ces_their_arex_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = write_file(
        dir.path(),
        "feed.xml",
        r#"<?xml version="1.0" encoding="UTF-8"?>
<root>
  <vo>test</vo>
  <atp_site name="T2_ARC">
    <service hostname="arc01.example" flavour="ARC-CE" endpoint="arc01.example:443"/>
    <service hostname="arc02.example" flavour="ARC-CE" endpoint="arc02.example:2811"/>
    <group name="Tier-2" type="test_Tier"/>
  </atp_site>
</root>
"#,
    );
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["robot".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let cert_file = write_file(dir.path(), "robot.pem", &cert.pem());
    let key_file = write_file(dir.path(), "robot.key", &key.serialize_pem());
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let main = write_file(
        dir.path(),
        "vo.toml",
        &format!(
            "vo = \"test\"\ninclude = [\"vofeed-sites.toml\"]\n\n[[probe]]\nmetric = \"org.test.arc\"\n\
             kind = \"ce\"\nflavours = [\"ARC-CE\"]\n  [probe.params]\n  backend = \"arc\"\n  \
             client_cert = \"{cert_file}\"\n  client_key = \"{key_file}\"\n"
        ),
    );
    let out = gridprobe(&["import", "vofeed", &feed, "--config", &main]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("the configuration is valid with it"),
        "{stdout}"
    );
    assert!(
        stdout.contains("is the GridFTP interface (port 2811)"),
        "{stdout}"
    );
    let written = std::fs::read_to_string(dir.path().join("vofeed-sites.toml")).expect("written");
    assert!(
        written.contains("endpoint = \"https://arc01.example/arex\""),
        "{written}"
    );
    assert_eq!(written.matches("endpoint = ").count(), 1, "{written}");
    assert!(
        written.contains("endpoint_hostport = \"arc02.example:2811\""),
        "{written}"
    );
}

#[test]
fn a_ce_offering_only_p521_is_unknown_with_the_fix_named() {
    // ARC 6.14 to 6.x offer only secp521r1 by default; gridprobe's TLS has no P-521. Its own
    // limit, so UNKNOWN: an OpenSSL server with that one group stands for such a CE.
    let Some(a) = arex() else { return };
    let dir = std::env::var("GRIDPROBE_TEST_AREX_DIR").expect("GRIDPROBE_TEST_AREX_DIR");
    let port = closed_port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-groups", "P-521", "-accept"])
        .arg(port.to_string())
        .args(["-cert", &format!("{dir}/host/hostcert.pem")])
        .args(["-key", &format!("{dir}/host/hostkey.pem")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let up = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = format!("https://localhost:{port}/arex");
    let r = up.then(|| {
        run(&config(
            tmp.path(),
            &url,
            "ce",
            &tls_lines(&a.ca, &a.cert, &a.key),
            "",
        ))
    });
    let _ = server.kill();
    let _ = server.wait();
    let r = r.expect("s_server listens");
    assert_eq!(text(&r, "status"), "UNKNOWN", "{r:#}");
    let summary = text(&r, "summary");
    assert!(summary.contains("failed on gridprobe's side"), "{summary}");
    assert!(summary.contains("tlscurve"), "{summary}");
}
