//! Helpers shared by the end-to-end tests: run the built binary, serve HTTP locally, find the
//! real Nagios plugins.

#![allow(dead_code)]

pub mod agents;
pub mod nats_tls;
pub mod pg;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Path of the gridprobe binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gridprobe"))
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs gridprobe with arguments, from the repository root, with colours off.
pub fn gridprobe(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .output()
        .expect("gridprobe binary runs")
}

/// Stdout and stderr as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `Some(value)` of a test server's or tool's setting; when it is missing, `None` with a note
/// outside CI, and a failed test under CI (`CI=true`), never a silent skip. `hint` says how
/// to get it (usually which `scripts/test-env.sh` service installs it).
pub fn required<T>(found: Option<T>, what: &str, hint: &str) -> Option<T> {
    if found.is_some() {
        return found;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is missing under CI: {hint}"
    );
    eprintln!("note: {what} is missing; test not run outside CI ({hint})");
    None
}

/// The path in `var` (or `default`), if that file exists; see [`required`].
pub fn required_path(var: &str, default: Option<&str>, what: &str, hint: &str) -> Option<PathBuf> {
    let path = std::env::var(var)
        .ok()
        .or(default.map(str::to_string))
        .map(PathBuf::from);
    required(path.filter(|p| p.exists()), what, hint)
}

/// Directory of the real Nagios plugins (Debian's monitoring-plugins-basic). Under CI a
/// missing installation fails the test instead of skipping it.
pub fn plugins_dir() -> Option<PathBuf> {
    let dir = std::env::var("GRIDPROBE_TEST_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/lib/nagios/plugins"));
    required(
        Some(dir).filter(|d| d.join("check_dummy").exists()),
        "Nagios plugins",
        "install monitoring-plugins-basic; scripts/test-env.sh does",
    )
}

/// A minimal HTTP/1.1 server on 127.0.0.1 answering every request with `status` and `body`,
/// in a background thread, for as long as the test process lives.
pub fn http_server(status: u16, body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                // Read the request head up to the blank line.
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" || line == "\n" => break,
                        Ok(_) => {}
                    }
                }
                let mut stream = &stream;
                let reason = if status == 200 {
                    "OK"
                } else {
                    "Service Unavailable"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Writes an executable shell script.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    let mut perm = std::fs::metadata(&path).expect("meta").permissions();
    perm.set_mode(0o755);
    std::fs::set_permissions(&path, perm).expect("chmod");
    path
}

/// Whether a process is still running (a zombie waiting to be reaped counts as gone).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => !status
            .lines()
            .any(|l| l.starts_with("State:") && (l.contains("zombie") || l.contains("dead"))),
        Err(_) => false,
    }
}

/// Polls `cond` until it holds or the deadline passes.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// An HTTP server that can be stopped (its port then refuses connections).
pub struct StoppableHttp {
    /// Its port on 127.0.0.1.
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StoppableHttp {
    /// Starts answering 200 with `body`.
    pub fn start(body: &'static str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let mut reader = BufReader::new(&stream);
                        let mut line = String::new();
                        loop {
                            line.clear();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => break,
                                Ok(_) if line == "\r\n" || line == "\n" => break,
                                Ok(_) => {}
                            }
                        }
                        let mut s = &stream;
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
            // Dropping the listener closes the port.
        });
        StoppableHttp {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops serving and closes the port.
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StoppableHttp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `gridprobe serve`, with its output collected.
pub struct Serve {
    child: std::process::Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Serve {
    /// Starts `gridprobe serve --config CONFIG --store STORE --listen 127.0.0.1:0`.
    pub fn start(config: &str, store: &str) -> Self {
        let mut cmd = Command::new(bin());
        cmd.args([
            "serve",
            "--config",
            config,
            "--store",
            store,
            "--listen",
            "127.0.0.1:0",
        ]);
        Self::from_command(cmd)
    }

    /// Starts a prepared command (e.g. `serve` under a shell that sets limits), from the
    /// repository root, with its output collected.
    pub fn from_command(mut cmd: Command) -> Self {
        use std::process::Stdio;
        let mut child = cmd
            .current_dir(repo())
            .env("NO_COLOR", "1")
            .env("GRIDPROBE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let output = collect_output(&mut child);
        Serve { child, output }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        output_of(&self.output)
    }

    /// Waits until the output contains `needle`; panics with the output otherwise.
    pub fn wait_for(&self, needle: &str, deadline: Duration) {
        let ok = wait_until(deadline, || self.output().contains(needle));
        assert!(
            ok,
            "serve did not print `{needle}` within {deadline:?}:\n{}",
            self.output()
        );
    }

    /// The `host:port` serve listens on, read from its start-up lines (`http:    http://A/healthz`).
    pub fn http_addr(&self) -> String {
        self.wait_for("/healthz", Duration::from_secs(30));
        let out = self.output();
        out.lines()
            .find_map(|l| l.trim().strip_prefix("http:"))
            .and_then(|rest| rest.trim().strip_prefix("http://"))
            .and_then(|rest| rest.strip_suffix("/healthz"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no http address in serve's output:\n{out}"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (TERM, HUP, INT).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Sends SIGTERM and asserts that the server exits with 0 within 30 s, its output shown
    /// otherwise.
    #[track_caller]
    pub fn terminate_cleanly(&mut self) {
        self.signal("TERM");
        assert_eq!(
            self.wait_exit(Duration::from_secs(30)),
            Some(0),
            "{}",
            self.output()
        );
    }

    /// Waits for exit; returns the exit code, or None if it did not exit in time.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs gridprobe and parses its JSON stdout.
pub fn json(args: &[&str]) -> serde_json::Value {
    let out = gridprobe(args);
    let (stdout, stderr) = texts(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "gridprobe {args:?} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("json ({e}): {stdout}"))
}

/// Writes a file into `dir` and returns its path as a string.
pub fn write_file(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write file");
    path.to_str().expect("utf-8 path").to_string()
}

/// An HTTP client for loopback only: never through a proxy from the environment.
pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

/// A config with one tier-2 site, whose `WEB` service at `http://127.0.0.1:{port}/` an `http`
/// probe checks every second.
pub fn web_config(port: u16) -> String {
    format!(
        r#"
vo = "e2e"
[defaults]
interval = "1s"
timeout = "500ms"
[server]
startup_spread = "1s"
shutdown_grace = "2s"

[[site]]
name = "T2_E2E"
tier = 2
  [[site.service]]
  flavour = "WEB"
  hostname = "127.0.0.1"
  endpoint = "http://127.0.0.1:{port}/"

[[probe]]
metric = "org.e2e.web"
kind = "http"
flavours = ["WEB"]
"#
    )
}

/// A final, scheduled result of the `tcp` kind at the site `LCG.EXAMPLE.org` of the VO `lhcb`.
pub fn lhcb_tcp_result(
    host: &str,
    flavour: &str,
    metric: &str,
    started_at_ms: i64,
    outcome: gridprobe_probes::Outcome,
) -> gridprobe_results::NewResult {
    gridprobe_results::NewResult {
        result: gridprobe_probes::ProbeResult {
            metric: metric.into(),
            kind: "tcp".into(),
            vo: "lhcb".into(),
            site: "LCG.EXAMPLE.org".into(),
            hostname: host.into(),
            flavour: flavour.into(),
            started_at_ms,
            duration_ms: 10,
            outcome,
            attempt: 1,
            trigger: gridprobe_probes::Trigger::Scheduled,
        },
        is_final: true,
    }
}

/// Opens (creating it) the SQLite store at `path` and inserts `rows`.
pub fn insert_into_sqlite(path: &Path, rows: &[gridprobe_results::NewResult]) {
    use gridprobe_results::ResultStore as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = gridprobe_results::SqliteStore::open(path).expect("store");
        store.insert(rows).await.expect("insert");
    });
}

/// A minimal HTTP/1.1 client: method, path, optional bearer token and body → (status, json).
pub fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let status: u16 = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let payload = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Bodies are small; axum sends them with Content-Length.
    let json =
        serde_json::from_str(payload).unwrap_or(serde_json::Value::String(payload.to_string()));
    (status, json)
}

/// Collects a child's standard output and error, line by line, as they come (one reader
/// thread per stream), so a test can look at what a long-running process printed so far.
pub fn collect_output(child: &mut std::process::Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let streams = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                o.push_str(&line);
                o.push('\n');
            }
        });
    }
    output
}

/// What [`collect_output`] has gathered so far.
pub fn output_of(output: &std::sync::Mutex<String>) -> String {
    output.lock().unwrap_or_else(|p| p.into_inner()).clone()
}
