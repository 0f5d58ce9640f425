//! Site agents' test helpers: a NATS JetStream server of the test's own, configured with the
//! users and permissions of docs/agents.md (optionally behind TLS with a private CA made by
//! [`Pki`]), and `gridprobe agent` processes with their output collected.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::wait_until;

#[allow(unused_imports)]
pub use super::agents::{get_json, results, SITE};
/// The centre user's password in the tests' brokers.
pub const PASSWORD_CENTRE: &str = "centre-pw-4f8a1c";
/// The agents' user's password in the tests' brokers.
pub const PASSWORD_AGENT: &str = "agent-pw-9b2e7d";

/// A private CA, and server certificates it issues.
pub struct Pki {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    ca: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A new self-signed CA named `cn`.
    pub fn new(cn: &str) -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.distinguished_name
            .push(DnType::OrganizationName, "gridprobe tests");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).expect("CA certificate");
        Pki {
            ca_pem: cert.pem(),
            ca: Issuer::new(p, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1: (certificate PEM, key PEM).
    pub fn server(&self) -> (String, String) {
        let key = KeyPair::generate().expect("server key");
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        p.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = p.signed_by(&key, &self.ca).expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA certificate into `dir` as `name`; returns its path.
    pub fn write_ca(&self, dir: &Path, name: &str) -> String {
        super::write_file(dir, name, &self.ca_pem)
    }
}

fn nats_server() -> Option<PathBuf> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A nats-server with JetStream of the test's own, with the users of docs/agents.md.
pub struct Nats {
    child: Option<Child>,
    dir: PathBuf,
    /// `host:port`.
    pub addr: String,
    /// Whether clients must use TLS.
    pub tls: bool,
}

impl Nats {
    /// Starts it on 127.0.0.1; with `tls`, behind a certificate of that CA. `None` (or a failed
    /// test under CI) when nats-server is not installed.
    pub fn start(dir: &Path, tls: Option<&Pki>) -> Option<Nats> {
        Nats::start_on(dir, "127.0.0.1", tls)
    }

    /// As [`Nats::start`], listening on `host` (an address of a network namespace's link,
    /// say).
    pub fn start_on(dir: &Path, host: &str, tls: Option<&Pki>) -> Option<Nats> {
        super::required(
            nats_server(),
            "nats-server",
            "scripts/services/brokers.sh installs it",
        )?;
        let port = std::net::TcpListener::bind(format!("{host}:0"))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let store = dir.join("js");
        std::fs::create_dir_all(&store).expect("store dir");
        let mut conf = nats_config(host, port, &store);
        if let Some(pki) = tls {
            let (cert, key) = pki.server();
            let cert = super::write_file(dir, "nats-cert.pem", &cert);
            let key = super::write_file(dir, "nats-key.pem", &key);
            conf.push_str(&format!(
                "\ntls {{\n  cert_file: \"{cert}\"\n  key_file: \"{key}\"\n  timeout: 5\n}}\n"
            ));
        }
        std::fs::write(dir.join("nats.conf"), conf).expect("nats.conf");
        let mut n = Nats {
            child: None,
            dir: dir.to_path_buf(),
            addr: format!("{host}:{port}"),
            tls: tls.is_some(),
        };
        n.restart();
        Some(n)
    }

    /// (Re)starts the server on the same port and store.
    pub fn restart(&mut self) {
        let bin = nats_server().expect("nats-server");
        let log = std::fs::File::create(self.dir.join("nats.log")).expect("log");
        let child = Command::new(bin)
            .args(["-c", self.dir.join("nats.conf").to_str().expect("utf-8")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let addr = self.addr.clone();
        assert!(
            wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(
                &addr
            )
            .is_ok()),
            "nats-server did not come up on {addr}: {}",
            std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
        );
    }

    /// Stops the server (SIGKILL: an outage, not a clean shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The URL for `user`: `tls://` when the server requires TLS.
    pub fn url(&self, user: &str) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://{user}@{}", self.addr)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The broker configuration of docs/agents.md, for one site (`T2_AGENT`).
pub fn nats_config(host: &str, port: u16, store: &Path) -> String {
    let text = std::fs::read_to_string(super::repo().join("docs/agents.md")).expect("docs");
    let start = text
        .find("# --- nats.conf ---")
        .expect("the NATS example in docs/agents.md");
    let end = text[start..].find("```").expect("end of the example") + start;
    text[start..end]
        .replace("0.0.0.0:4222", &format!("{host}:{port}"))
        .replace("/var/lib/nats", store.to_str().expect("utf-8"))
        .replace("CENTRE_PASSWORD", PASSWORD_CENTRE)
        .replace("AGENT_PASSWORD", PASSWORD_AGENT)
}

/// A running (or exited) `gridprobe agent`, its stdout and stderr collected.
pub struct Agent {
    /// The process.
    pub child: Child,
    output: Arc<Mutex<String>>,
}

impl Agent {
    /// Starts `gridprobe agent --site SITE --name NAME --heartbeat 1s` with `args` added and
    /// `env` set (the environment otherwise inherited, minus any agent password).
    pub fn start(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let spool = dir.join(format!("{name}.spool"));
        let mut cmd = Command::new(super::bin());
        cmd.args(["agent", "--site", SITE, "--name", name, "--heartbeat", "1s"])
            .arg("--spool-dir")
            .arg(&spool)
            .args(args)
            .env_remove("GRIDPROBE_AGENT_PASSWORD")
            .env("GRIDPROBE_LOG", "info")
            .env("NO_COLOR", "1")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("agent starts");
        let output = super::collect_output(&mut child);
        Agent { child, output }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        super::output_of(&self.output)
    }

    /// Waits for the process to exit; its exit code, or `None` if it is still running.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let mut code = None;
        wait_until(deadline, || {
            code = self.child.try_wait().ok().flatten().map(|s| s.code());
            code.is_some()
        });
        // Let the output threads drain what the process printed last.
        let done = self.output().len();
        wait_until(Duration::from_millis(500), || self.output().len() > done);
        code.flatten()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an agent of `SITE` named `name` is alive in serve's table.
pub fn agent_alive(addr: &str, name: &str) -> bool {
    get_json(addr, "/api/v1/agents")["agents"]
        .as_array()
        .is_some_and(|a| {
            a.iter()
                .any(|x| x["site"] == SITE && x["name"] == name && x["alive"] == true)
        })
}
