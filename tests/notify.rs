//! Notifications end to end: `gridprobe serve` with real receivers. A real SMTP server
//! (Debian's python3-aiosmtpd, started here on a free port and writing to a Maildir, so it can
//! be stopped and started again), a webhook receiver in this process, and Debian's
//! prometheus-alertmanager queried through its API. Under `CI=true` a missing server fails.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_until, Serve};

fn tool(var: &str, what: &str) -> Option<PathBuf> {
    common::required_path(
        var,
        None,
        what,
        &format!("${var}; scripts/test-env.sh notify installs it"),
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn free_port() -> u16 {
    common::closed_port()
}

/// aiosmtpd writing every mail into a Maildir.
struct Smtp {
    python: PathBuf,
    port: u16,
    maildir: PathBuf,
    child: Option<Child>,
}

impl Smtp {
    fn start(python: &Path, maildir: &Path) -> Smtp {
        let mut s = Smtp {
            python: python.to_path_buf(),
            port: free_port(),
            maildir: maildir.to_path_buf(),
            child: None,
        };
        s.up();
        s
    }

    fn up(&mut self) {
        let child = Command::new(&self.python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(20), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "aiosmtpd did not listen on {port}"
        );
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every mail received: (headers lower-cased name → value, body).
    fn mails(&self) -> Vec<Mail> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(rd) = std::fs::read_dir(self.maildir.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                out.push(Mail::parse(&text));
            }
        }
        out
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.down();
    }
}

#[derive(Debug, Clone)]
struct Mail {
    headers: Vec<(String, String)>,
    body: String,
}

impl Mail {
    /// RFC 5322 headers with folded lines joined, and the body (quoted-printable soft breaks
    /// undone, which is all lettre uses for plain text).
    fn parse(text: &str) -> Mail {
        let text = text.replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let qp = headers
            .iter()
            .any(|(k, v)| k == "content-transfer-encoding" && v.contains("quoted-printable"));
        let body = if qp {
            body.replace("=\n", "").replace("=3D", "=")
        } else {
            body.to_string()
        };
        Mail { headers, body }
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// A webhook receiver: records every JSON body POSTed to it.
#[derive(Clone)]
struct Hook {
    port: u16,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Hook {
    fn start() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let rec = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                }
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) {
                        if let Some(o) = v.as_object_mut() {
                            o.insert("_received".into(), serde_json::json!(now_ms()));
                        }
                        rec.lock().unwrap().push(v);
                    }
                }
                let mut s = &stream;
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        Hook { port, bodies }
    }

    fn texts(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["text"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// A probe whose status for each host is read from `<dir>/state-<host>` (0 OK, 2 CRITICAL;
/// `flap` alternates on every run).
fn state_probe(dir: &Path) -> PathBuf {
    common::script(
        dir,
        "state.sh",
        &format!(
            r#"f="{d}/state-$1"
s=$(cat "$f" 2>/dev/null || echo 0)
if [ "$s" = flap ]; then
  n=$(cat "$f.n" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$f.n"; s=$(( (n % 2) * 2 ))
fi
echo "state $s on $1"; exit $s"#,
            d = dir.display()
        ),
    )
}

fn set_state(dir: &Path, host: &str, s: &str) {
    std::fs::write(dir.join(format!("state-{host}")), s).expect("state");
}

fn config(dir: &Path, hosts: &[&str], notify: &str) -> String {
    let probe = state_probe(dir);
    let mut text = format!(
        r#"
vo = "e2e"
[defaults]
interval = "1s"
timeout = "900ms"
[server]
startup_spread = "1s"
shutdown_grace = "2s"
spool_dir = "{spool}"

[[site]]
name = "T2_NOTIFY"
tier = 2
contact = "Site Admins <admins@t2.example.org>"
"#,
        spool = dir.join("spool").display()
    );
    for h in hosts {
        text.push_str(&format!(
            "  [[site.service]]\n  flavour = \"SRM\"\n  hostname = \"{h}\"\n"
        ));
    }
    text.push_str(&format!(
        r#"
[[probe]]
metric = "org.e2e.state"
kind = "nagios"
flavours = ["SRM"]
  [probe.params]
  command = "{probe}"
  args = ["{{hostname}}"]
{notify}"#,
        probe = probe.display()
    ));
    common::write_file(dir, "vo.toml", &text)
}

#[test]
fn mails_are_grouped_per_site_and_survive_an_smtp_outage_and_a_restart() {
    let Some(python) = tool("GRIDPROBE_TEST_AIOSMTPD", "python3-aiosmtpd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let hosts = ["se1.t2", "se2.t2", "se3.t2"];
    for h in hosts {
        set_state(d, h, "2");
    }
    let mut smtp = Smtp::start(&python, &d.join("Maildir"));
    let cfg = config(
        d,
        &hosts,
        &format!(
            r#"
[[notify]]
name = "mail"
kind = "email"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "gridprobe@example.org"

[[notify_rule]]
channel = "mail"
to = ["storage-experts@example.org"]
after = 2
group = "3s"
"#,
            port = smtp.port
        ),
    );
    let store = d.join("r.sqlite");
    let store = store.to_str().unwrap();
    let mut serve = Serve::start(&cfg, store);
    // One message per recipient (the site's contact and the rule's expert), each with all
    // three cells: grouped, not one per cell.
    assert!(
        wait_until(Duration::from_secs(40), || smtp.mails().len() >= 2),
        "no problem mails: {:?}\n{}",
        smtp.mails(),
        serve.output()
    );
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2, "{mails:?}");
    let to: BTreeSet<_> = mails.iter().map(|m| m.header("to").to_string()).collect();
    assert_eq!(
        to,
        BTreeSet::from([
            "admins@t2.example.org".to_string(),
            "storage-experts@example.org".to_string()
        ])
    );
    for m in &mails {
        assert!(
            m.header("subject").contains("T2_NOTIFY: 3 changes"),
            "{m:?}"
        );
        for h in hosts {
            assert!(m.body.contains(h), "{h} missing: {}", m.body);
        }
        assert!(m.header("message-id").ends_with('>'), "{m:?}");
    }

    // The server goes away; the sites recover meanwhile; serve is restarted before the server
    // is back. The recovery waits in the outbox, across the restart.
    smtp.down();
    for h in hosts {
        set_state(d, h, "0");
    }
    serve.wait_for("notification not delivered", Duration::from_secs(40));
    serve.terminate_cleanly();
    let mut serve = Serve::start(&cfg, store);
    serve.wait_for("delivered first", Duration::from_secs(30));
    smtp.up();
    assert!(
        wait_until(Duration::from_secs(60), || smtp.mails().len() >= 4),
        "recovery not delivered: {:?}\n{}",
        smtp.mails(),
        serve.output()
    );
    // Nothing twice: a little longer, still four, each id once.
    assert!(!wait_until(Duration::from_secs(3), || smtp.mails().len() > 4));
    let mails = smtp.mails();
    let ids: BTreeSet<_> = mails
        .iter()
        .map(|m| m.header("message-id").to_string())
        .collect();
    assert_eq!(ids.len(), 4, "{mails:?}");
    let recoveries = mails.iter().filter(|m| m.body.contains("recovery")).count();
    assert_eq!(recoveries, 2, "{mails:?}");
    // The history (in the store) lists what was sent, each once.
    let history: serde_json::Value = common::http_client()
        .get(format!(
            "http://{}/api/v1/notifications?limit=100",
            serve.http_addr()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(history.as_array().map(Vec::len), Some(4), "{history}");
    serve.terminate_cleanly();
}

#[test]
fn webhooks_skip_downtimes_and_tell_flapping_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let hook = Hook::start();
    let hosts = ["up.t2", "down.t2", "flappy.t2"];
    set_state(d, "up.t2", "2");
    set_state(d, "down.t2", "2");
    set_state(d, "flappy.t2", "flap");
    let cfg = config(
        d,
        &hosts,
        &format!(
            r#"
[[downtime]]
service = "down.t2"
start = "2020-01-01T00:00:00Z"
end = "2099-01-01T00:00:00Z"
classification = "scheduled"
reason = "disk replacement"

[[notify]]
name = "chat"
kind = "webhook"
url = "http://127.0.0.1:{port}/hooks/gridprobe"

[[notify_rule]]
channel = "chat"
group = "100ms"
"#,
            port = hook.port
        ),
    );
    let store = d.join("r.sqlite");
    let mut serve = Serve::start(&cfg, store.to_str().unwrap());
    assert!(
        wait_until(Duration::from_secs(60), || hook
            .texts()
            .iter()
            .any(|t| t.contains("flapping started"))),
        "no flapping message: {:?}\n{}",
        hook.texts(),
        serve.output()
    );
    let after_start = hook.texts().len();
    // Several more runs of the flapping cell: no message for its changes.
    assert!(!wait_until(Duration::from_secs(4), || hook
        .texts()
        .iter()
        .skip(after_start)
        .any(|t| t.contains("flappy.t2"))));
    let texts = hook.texts();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("up.t2") && t.contains("CRITICAL")),
        "{texts:?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains("down.t2")),
        "a service in downtime notified: {texts:?}"
    );
    let flap_starts = texts
        .iter()
        .filter(|t| t.contains("flapping started"))
        .count();
    assert_eq!(flap_starts, 1, "{texts:?}");
    serve.terminate_cleanly();
}

#[test]
fn an_ack_stops_reminders_and_problems_shows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let hook = Hook::start();
    let hosts = ["broken.t2", "fine.t2"];
    set_state(d, "broken.t2", "2");
    set_state(d, "fine.t2", "0");
    let cfg = config(
        d,
        &hosts,
        &format!(
            r#"
[[notify]]
name = "chat"
kind = "webhook"
url = "http://127.0.0.1:{port}/hook"
template = '{{"text": {{text}}, "id": {{id}}, "site": {{site}}, "event": {{event}}}}'

[[notify_rule]]
channel = "chat"
repeat = "1s"
group = "100ms"
"#,
            port = hook.port
        ),
    );
    let store = d.join("r.sqlite");
    let store = store.to_str().unwrap();
    let mut serve = Serve::start(&cfg, store);
    let reminders = |h: &Hook| {
        h.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["event"] == "reminder")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || reminders(&hook) >= 2),
        "no reminders: {:?}\n{}",
        hook.texts(),
        serve.output()
    );
    let bodies = hook.bodies.lock().unwrap().clone();
    assert!(
        bodies.iter().all(|b| b["site"] == "T2_NOTIFY"),
        "{bodies:?}"
    );
    let ids: BTreeSet<_> = bodies.iter().map(|b| b["id"].to_string()).collect();
    assert_eq!(ids.len(), bodies.len(), "ids must differ: {bodies:?}");

    let out = common::gridprobe(&[
        "ack",
        "--config",
        &cfg,
        "--store",
        store,
        "--site",
        "T2_NOTIFY",
        "--service",
        "broken.t2",
        "--comment",
        "disk replaced tomorrow",
        "--author",
        "jane",
    ]);
    assert_eq!(out.status.code(), Some(0), "{:?}", common::texts(&out));
    // A reminder decided before the ack was read may still land; after that, none for
    // several intervals (reminders were due every second).
    let before = reminders(&hook);
    assert!(
        !wait_until(Duration::from_secs(6), || reminders(&hook) > before + 1),
        "reminders went on while acknowledged: {:?}",
        hook.texts()
    );
    let problems = common::json(&[
        "problems", "--config", &cfg, "--store", store, "--format", "json",
    ]);
    let list = problems.as_array().expect("array");
    assert_eq!(list.len(), 1, "{problems}");
    assert_eq!(list[0]["hostname"], "broken.t2");
    assert_eq!(list[0]["status"], "CRITICAL");
    assert_eq!(list[0]["ack"], "disk replaced tomorrow (jane)");
    // The same through the API and the dashboard.
    let addr = serve.http_addr();
    let http = common::http_client();
    let api: serde_json::Value = http
        .get(format!("http://{addr}/api/v1/problems"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(api[0]["ack"], "disk replaced tomorrow (jane)", "{api}");
    let sent: serde_json::Value = http
        .get(format!(
            "http://{addr}/api/v1/notifications?site=T2_NOTIFY&limit=5"
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(!sent.as_array().unwrap().is_empty(), "{sent}");
    assert_eq!(sent[0]["channel"], "chat");
    let page = http
        .get(format!("http://{addr}/problems?refresh=30"))
        .send()
        .unwrap();
    assert_eq!(page.headers()["refresh"], "30");
    assert!(page.text().unwrap().contains("disk replaced tomorrow"));
    let matrix = http
        .get(format!("http://{addr}/?refresh=10"))
        .send()
        .unwrap();
    assert_eq!(matrix.status(), 200);
    assert_eq!(matrix.headers()["refresh"], "10");
    // The matrix shows the best instance (fine.t2); the site page marks the broken one.
    let html = http
        .get(format!("http://{addr}/sites/T2_NOTIFY"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        html.contains("acknowledged by jane: disk replaced tomorrow") && html.contains("✓"),
        "no ack mark on the site page"
    );
    let bad = http
        .get(format!("http://{addr}/?refresh=1"))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("gridprobe_notify_sent_total{channel=\"chat\"}"),
        "{metrics}"
    );
    // Acknowledging through the API needs a token.
    let denied = http
        .post(format!("http://{addr}/api/v1/acks"))
        .json(&serde_json::json!({"site": "T2_NOTIFY", "comment": "x"}))
        .send()
        .unwrap();
    assert_eq!(denied.status(), 401);
    // Recovery ends the ack and is told.
    set_state(d, "broken.t2", "0");
    assert!(
        wait_until(Duration::from_secs(20), || hook
            .bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b["event"] == "recovery")),
        "{:?}",
        hook.texts()
    );
    let listed = common::gridprobe(&["ack", "--config", &cfg, "--store", store, "--list"]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let l = common::gridprobe(&["ack", "--config", &cfg, "--store", store, "--list"]);
            common::texts(&l).0.trim().is_empty()
        }),
        "ack not ended by recovery: {:?}",
        common::texts(&listed)
    );
    serve.terminate_cleanly();
}

/// A real Alertmanager on a free port: (its process, its `/api/v2/alerts` URL, its base URL).
fn start_alertmanager(am: &Path, d: &Path) -> (Child, String, String) {
    let am_port = free_port();
    std::fs::write(
        d.join("am.yml"),
        "route:\n  receiver: sink\nreceivers:\n  - name: sink\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.join("am-data")).unwrap();
    let child = Command::new(am)
        .arg(format!("--config.file={}", d.join("am.yml").display()))
        .arg(format!("--storage.path={}", d.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("alertmanager starts");
    let alerts_url = format!("http://127.0.0.1:{am_port}/api/v2/alerts");
    assert!(
        wait_until(Duration::from_secs(30), || common::http_client()
            .get(&alerts_url)
            .send()
            .is_ok_and(|r| r.status().is_success())),
        "alertmanager did not start"
    );
    (child, alerts_url, format!("http://127.0.0.1:{am_port}"))
}

/// A store holding 26 hours of one status every 10 minutes for `se.t2` at T2_NOTIFY, and the
/// site status last told (as an earlier `serve` left it).
fn seeded_store(path: &Path, status: gridprobe_probes::Status, told: &str) {
    use gridprobe_results::ResultStore as _;
    let now = now_ms();
    let rows: Vec<gridprobe_results::NewResult> = (0..156)
        .map(|i| gridprobe_results::NewResult {
            result: gridprobe_probes::ProbeResult {
                metric: "org.e2e.state".into(),
                kind: "nagios".into(),
                vo: "e2e".into(),
                site: "T2_NOTIFY".into(),
                hostname: "se.t2".into(),
                flavour: "SRM".into(),
                started_at_ms: now - 26 * 3_600_000 + i * 600_000,
                duration_ms: 10,
                outcome: gridprobe_probes::Outcome::new(status, format!("state {}", status.name())),
                attempt: 1,
                trigger: gridprobe_probes::Trigger::Scheduled,
            },
            is_final: true,
        })
        .collect();
    common::insert_into_sqlite(path, &rows);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = gridprobe_results::SqliteStore::open(path).unwrap();
        let put = gridprobe_results::notify::StatePut {
            key: "site/T2_NOTIFY".into(),
            value: told.into(),
            expected: None,
        };
        assert_eq!(store.put_notify_state(&[put]).await.unwrap(), vec![Some(1)]);
    });
}

/// A site status alert fires when the site fails and is resolved (`endsAt`) when it is good
/// again, on a real Alertmanager. Each phase starts `serve` on a store whose last day and
/// last told status make the change (the status is judged over 24 hours).
#[test]
fn alertmanager_site_status_alert_is_resolved_when_the_site_recovers() {
    let Some(am) = tool("GRIDPROBE_TEST_ALERTMANAGER", "prometheus-alertmanager") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (mut am_child, alerts_url, am_url) = start_alertmanager(&am, d);
    let cfg = config(
        d,
        &["se.t2"],
        &format!(
            r#"
[[notify]]
name = "am"
kind = "alertmanager"
url = "{am_url}"

[[notify_rule]]
channel = "am"
site_status = true
group = "100ms"
"#
        ),
    );
    // Results every 10 minutes hold for the report only with an interval to match.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("interval = \"1s\"", "interval = \"10m\""),
    )
    .unwrap();
    let http = common::http_client();
    let site_alerts = |state: &str| -> Vec<serde_json::Value> {
        http.get(&alerts_url)
            .send()
            .ok()
            .and_then(|r| r.json::<Vec<serde_json::Value>>().ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == "GridprobeSiteStatus")
            .filter(|a| a["status"]["state"] == state)
            .collect()
    };
    // Failed: the alert fires.
    set_state(d, "se.t2", "2");
    let failed = d.join("failed.sqlite");
    seeded_store(&failed, gridprobe_probes::Status::Critical, "good");
    let mut serve = Serve::start(&cfg, failed.to_str().unwrap());
    assert!(
        wait_until(Duration::from_secs(30), || !site_alerts("active")
            .is_empty()),
        "no site status alert: {:?}\n{}",
        http.get(&alerts_url).send().and_then(|r| r.text()),
        serve.output()
    );
    let a = &site_alerts("active")[0];
    assert_eq!(a["labels"]["site"], "T2_NOTIFY", "{a}");
    assert_eq!(a["annotations"]["severity"], "critical", "{a}");
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("good → failed"),
        "{a}"
    );
    serve.terminate_cleanly();
    // Good again: the same alert is resolved.
    set_state(d, "se.t2", "0");
    let good = d.join("good.sqlite");
    seeded_store(&good, gridprobe_probes::Status::Ok, "failed");
    let mut serve = Serve::start(&cfg, good.to_str().unwrap());
    assert!(
        wait_until(Duration::from_secs(30), || site_alerts("active").is_empty()),
        "site status alert not resolved: {:?}\n{}",
        site_alerts("active"),
        serve.output()
    );
    serve.terminate_cleanly();
    let _ = am_child.kill();
    let _ = am_child.wait();
}

#[test]
fn alertmanager_receives_alerts_and_their_resolution() {
    let Some(am) = tool("GRIDPROBE_TEST_ALERTMANAGER", "prometheus-alertmanager") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let am_port = free_port();
    std::fs::write(
        d.join("am.yml"),
        "route:\n  receiver: sink\nreceivers:\n  - name: sink\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.join("am-data")).unwrap();
    let mut am_child = Command::new(am)
        .arg(format!("--config.file={}", d.join("am.yml").display()))
        .arg(format!("--storage.path={}", d.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("alertmanager starts");
    let http = common::http_client();
    let alerts_url = format!("http://127.0.0.1:{am_port}/api/v2/alerts");
    assert!(
        wait_until(Duration::from_secs(30), || http
            .get(&alerts_url)
            .send()
            .is_ok_and(|r| r.status().is_success())),
        "alertmanager did not start"
    );
    set_state(d, "se.t2", "2");
    let cfg = config(
        d,
        &["se.t2"],
        &format!(
            r#"
[[notify]]
name = "am"
kind = "alertmanager"
url = "http://127.0.0.1:{am_port}"

[[notify_rule]]
channel = "am"
group = "100ms"
"#
        ),
    );
    let store = d.join("r.sqlite");
    let mut serve = Serve::start(&cfg, store.to_str().unwrap());
    let active = || -> Vec<serde_json::Value> {
        http.get(&alerts_url)
            .send()
            .ok()
            .and_then(|r| r.json::<Vec<serde_json::Value>>().ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["status"]["state"] == "active")
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(30), || !active().is_empty()),
        "no alert\n{}",
        serve.output()
    );
    let a = &active()[0];
    assert_eq!(a["labels"]["site"], "T2_NOTIFY");
    assert_eq!(a["labels"]["hostname"], "se.t2");
    assert_eq!(a["labels"]["vo"], "e2e");
    set_state(d, "se.t2", "0");
    assert!(
        wait_until(Duration::from_secs(30), || active().is_empty()),
        "alert not resolved: {:?}",
        active()
    );
    serve.terminate_cleanly();
    let _ = am_child.kill();
    let _ = am_child.wait();
}

#[test]
fn notify_test_sends_through_a_channel_and_says_why_not() {
    let Some(python) = tool("GRIDPROBE_TEST_AIOSMTPD", "python3-aiosmtpd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut smtp = Smtp::start(&python, &d.join("Maildir"));
    let cfg = config(
        d,
        &["se.t2"],
        &format!(
            "[[notify]]\nname = \"mail\"\nkind = \"email\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"gp@example.org\"\n",
            smtp.port
        ),
    );
    let out = common::gridprobe(&[
        "notify",
        "test",
        "--config",
        &cfg,
        "--channel",
        "mail",
        "--to",
        "ops@example.org",
    ]);
    assert_eq!(out.status.code(), Some(0), "{:?}", common::texts(&out));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].header("to"), "ops@example.org");
    assert!(mails[0].header("subject").contains("test message"));
    let out = common::gridprobe(&[
        "notify",
        "test",
        "--config",
        &cfg,
        "--channel",
        "mial",
        "--to",
        "ops@example.org",
    ]);
    assert!(
        common::texts(&out).1.contains("did you mean `mail`"),
        "{:?}",
        common::texts(&out)
    );
    smtp.down();
    let out = common::gridprobe(&[
        "notify",
        "test",
        "--config",
        &cfg,
        "--channel",
        "mail",
        "--to",
        "ops@example.org",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::texts(&out).1.contains("SMTP 127.0.0.1"),
        "{:?}",
        common::texts(&out)
    );
}

#[test]
fn check_reports_bad_notification_settings_at_their_lines() {
    let f = "tests/fixtures/broken/notify-errors.toml";
    let out = common::gridprobe(&["check", f]);
    let (_, stderr) = common::texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for line in [
        format!("{f}:21:8: error: `from` = `gridprobe` is not an e-mail address"),
        format!("{f}:27:12: error: unknown placeholder `{{txt}}`"),
        format!("{f}:30:11: error: unknown channel `mial`"),
        format!("{f}:31:10: error: unknown site `T2_NOTIFI`"),
        format!(
            "{f}:36:7: error: recipient `storage experts at example.org` is not an e-mail address"
        ),
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(line.as_str())),
            "missing `{line}` in:\n{stderr}"
        );
    }
    for hint in ["did you mean `mail`?", "did you mean `T2_NOTIFY`?"] {
        assert!(stderr.contains(hint), "missing {hint}:\n{stderr}");
    }
}

/// Two `serve` on one shared schedule (PostgreSQL): 6 single-service sites, all CRITICAL,
/// split between the instances. Each problem is told once although both instances know every
/// cell (and both remind), once more after one instance is killed and the survivor takes its
/// cells over; an ack made through one instance's store is seen by the other's API and stops
/// the reminders of both; the history is one.
#[test]
fn two_instances_on_a_shared_schedule_tell_each_problem_once_and_share_acks() {
    let Some(pg) = common::pg::Pg::new("notify_shared") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let hook = Hook::start();
    let probe = state_probe(d);
    let sites: Vec<String> = (0..6).map(|i| format!("T2_SH{i}")).collect();
    let config = |name: &str| {
        let mut text = format!(
            r#"
vo = "e2e"
[defaults]
interval = "1s"
timeout = "900ms"
[server]
startup_spread = "1s"
shutdown_grace = "2s"
schedule = "shared"
schedule_lease = "2s"
spool_dir = "{spool}"

[[notify]]
name = "chat"
kind = "webhook"
url = "http://127.0.0.1:{port}/hook"
template = '{{"id": {{id}}, "site": {{site}}, "event": {{event}}}}'

[[notify_rule]]
channel = "chat"
after = 2
repeat = "3s"
group = "100ms"

[[probe]]
metric = "org.e2e.state"
kind = "nagios"
flavours = ["SRM"]
  [probe.params]
  command = "{probe}"
  args = ["{{hostname}}"]
"#,
            spool = d.join(format!("{name}.spool")).display(),
            port = hook.port,
            probe = probe.display()
        );
        for (i, s) in sites.iter().enumerate() {
            text.push_str(&format!(
                "\n[[site]]\nname = \"{s}\"\ntier = 2\n  [[site.service]]\n  flavour = \"SRM\"\n  hostname = \"h{i}.sh\"\n"
            ));
        }
        common::write_file(d, &format!("{name}.toml"), &text)
    };
    for i in 0..sites.len() {
        set_state(d, &format!("h{i}.sh"), "2");
    }
    let (cfg_a, cfg_b) = (config("a"), config("b"));
    let mut a = Serve::start(&cfg_a, &pg.url);
    let mut b = Serve::start(&cfg_b, &pg.url);
    let events = |h: &Hook, event: &str| -> Vec<(String, i64)> {
        h.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["event"] == event)
            .map(|b| {
                (
                    b["site"].as_str().unwrap_or("").to_string(),
                    b["_received"].as_i64().unwrap_or(0),
                )
            })
            .collect()
    };
    let problems_per_site = |h: &Hook| -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for (s, _) in events(h, "problem") {
            *m.entry(s).or_insert(0) += 1;
        }
        m
    };
    assert!(
        wait_until(Duration::from_secs(60), || problems_per_site(&hook).len()
            == sites.len()),
        "not every site's problem was told: {:?}\n--- a\n{}\n--- b\n{}",
        hook.bodies.lock().unwrap(),
        a.output(),
        b.output()
    );
    // Both ran cells (the schedule is split), and both hold every cell's state: a reminder
    // is due on both at once, and taken by one.
    let owned = |s: &Serve| {
        http_get(s, "/healthz")["schedule"]["owned"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(owned(&a) > 0 && owned(&b) > 0, "the schedule is not split");
    assert!(
        !wait_until(Duration::from_secs(8), || problems_per_site(&hook)
            .values()
            .any(|n| *n > 1)),
        "a problem was told twice: {:?}",
        problems_per_site(&hook)
    );
    let reminders = events(&hook, "reminder");
    assert!(
        reminders.len() >= sites.len(),
        "no reminders: {reminders:?}"
    );
    for s in &sites {
        let mut at: Vec<i64> = reminders
            .iter()
            .filter(|(site, _)| site == s)
            .map(|(_, t)| *t)
            .collect();
        at.sort();
        for w in at.windows(2) {
            assert!(w[1] - w[0] >= 2_000, "{s} reminded twice at once: {at:?}");
        }
    }

    // An ack through the store (the CLI) is seen by both instances' APIs.
    let out = common::gridprobe(&[
        "ack",
        "--config",
        &cfg_a,
        "--store",
        &pg.url,
        "--site",
        "T2_SH0",
        "--comment",
        "known, on it",
        "--author",
        "jane",
    ]);
    assert_eq!(out.status.code(), Some(0), "{:?}", common::texts(&out));
    for s in [&a, &b] {
        let acks = http_get(s, "/api/v1/acks");
        assert_eq!(acks[0]["comment"], "known, on it", "{acks}");
    }
    // After the acks' re-read interval (2 s, and a second for a decided reminder to land)
    // neither instance reminds T2_SH0 any more.
    let acked_at = now_ms() + 3_000;
    let late = |h: &Hook| -> Vec<(String, i64)> {
        events(h, "reminder")
            .into_iter()
            .filter(|(s, t)| s == "T2_SH0" && *t > acked_at)
            .collect()
    };
    assert!(
        !wait_until(Duration::from_secs(10), || !late(&hook).is_empty()),
        "reminded while acknowledged: {:?}",
        late(&hook)
    );
    assert!(
        events(&hook, "reminder")
            .iter()
            .any(|(s, t)| s == "T2_SH1" && *t > acked_at),
        "the other sites' reminders stopped too"
    );

    // The survivor of a SIGKILL takes the cells over without telling their problems again.
    b.signal("KILL");
    b.wait_exit(Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(20), || http_get(&a, "/healthz")
            ["schedule"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 1)),
        "the survivor never dropped the dead instance"
    );
    let all = owned(&a);
    assert_eq!(all, sites.len() as u64);
    assert!(
        !wait_until(Duration::from_secs(6), || problems_per_site(&hook)
            .values()
            .any(|n| *n > 1)),
        "the survivor told a problem again: {:?}",
        problems_per_site(&hook)
    );
    // One history: every sent notification once.
    let history = http_get(&a, "/api/v1/notifications?limit=1000");
    let ids: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{history}");
    assert!(ids.len() >= sites.len(), "{history}");
    a.terminate_cleanly();
}

fn http_get(s: &Serve, path: &str) -> serde_json::Value {
    common::http_client()
        .get(format!("http://{}{path}", s.http_addr()))
        .send()
        .and_then(|r| r.text())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// A reload (`POST /-/reload`) that adds a channel with its rule and changes another
/// channel's URL takes effect at once: the new rule tells the problem through the new
/// channel, and the changed channel's reminders go to its new URL, not the old one.
#[test]
fn a_reload_adds_and_changes_channels_and_rules_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (old, added, moved) = (Hook::start(), Hook::start(), Hook::start());
    set_state(d, "se.t2", "2");
    let channel = |name: &str, port: u16| {
        format!(
            "\n[[notify]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\ntemplate = '{{\"id\": {{id}}, \"site\": {{site}}, \"event\": {{event}}}}'\n"
        )
    };
    let rule = |name: &str| {
        format!("\n[[notify_rule]]\nchannel = \"{name}\"\nrepeat = \"1s\"\ngroup = \"100ms\"\n")
    };
    let cfg = config(
        d,
        &["se.t2"],
        &format!("{}{}", channel("chat", old.port), rule("chat")),
    );
    let store = d.join("r.sqlite");
    let mut serve = Serve::start(&cfg, store.to_str().unwrap());
    let count = |h: &Hook, event: &str| {
        h.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["event"] == event)
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || count(&old, "reminder") >= 1),
        "no problem and reminder: {:?}\n{}",
        old.texts(),
        serve.output()
    );
    config(
        d,
        &["se.t2"],
        &format!(
            "{}{}{}{}",
            channel("chat", moved.port),
            rule("chat"),
            channel("pager", added.port),
            rule("pager")
        ),
    );
    let (status, body) = common::call(&serve.http_addr(), "POST", "/-/reload", None, None);
    assert_eq!(status, 200, "{body}");
    let reloaded = old.bodies.lock().unwrap().len();
    assert!(
        wait_until(Duration::from_secs(20), || count(&added, "problem") == 1
            && count(&moved, "reminder") >= 2),
        "the reload's channels were not used: added {:?}, moved {:?}\n{}",
        added.bodies.lock().unwrap(),
        moved.bodies.lock().unwrap(),
        serve.output()
    );
    // At most one message to the old URL was already on its way.
    assert!(
        old.bodies.lock().unwrap().len() <= reloaded + 1,
        "the old URL is still used: {:?}",
        old.bodies.lock().unwrap()
    );
    serve.terminate_cleanly();
}

/// GOCDB site contacts: a malformed answer writes nothing and names its line; a good one
/// (filtered by role, sites of the configuration only) becomes an include file whose
/// addresses receive the site's mails next to its `contact`; a hand-edited file with an
/// unknown site or a bad address is refused by `check` at its lines.
#[test]
fn gocdb_site_contacts_are_imported_and_receive_the_sites_mails() {
    let Some(python) = tool("GRIDPROBE_TEST_AIOSMTPD", "python3-aiosmtpd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    set_state(d, "se.t2", "2");
    let smtp = Smtp::start(&python, &d.join("Maildir"));
    let cfg = config(
        d,
        &["se.t2"],
        &format!(
            r#"
[[notify]]
name = "mail"
kind = "email"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "gridprobe@example.org"

[[notify_rule]]
channel = "mail"
after = 1
group = "200ms"
"#,
            port = smtp.port
        ),
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen(
            "vo = \"e2e\"",
            "vo = \"e2e\"\ninclude = [\"gocdb-contacts.toml\"]",
            1,
        ),
    )
    .unwrap();
    let answer = r#"<?xml version="1.0" encoding="UTF-8"?>
<results>
  <SITE ID="1G0" PRIMARY_KEY="1G0" NAME="T2_NOTIFY">
    <CONTACT USER_ID="6G0" PRIMARY_KEY="6G0">
      <EMAIL>ops@t2.example.org</EMAIL>
      <ROLE_NAME>Site Administrator</ROLE_NAME>
    </CONTACT>
    <CONTACT USER_ID="8G0" PRIMARY_KEY="8G0">
      <EMAIL>manager@t2.example.org</EMAIL>
      <ROLE_NAME>Site Operations Manager</ROLE_NAME>
    </CONTACT>
  </SITE>
  <SITE NAME="T1_ELSEWHERE"><CONTACT_EMAIL>x@elsewhere.example.org</CONTACT_EMAIL></SITE>
</results>
"#;
    let xml = d.join("contacts.xml");
    let output = d.join("gocdb-contacts.toml");
    std::fs::write(
        &xml,
        answer.replace("manager@t2.example.org", "manager at t2"),
    )
    .unwrap();
    let out = common::gridprobe(&[
        "import",
        "contacts",
        xml.to_str().unwrap(),
        "--config",
        &cfg,
    ]);
    let (stdout, stderr) = common::texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("contacts.xml:9:")
            && stderr.contains("<EMAIL>: `manager at t2` is not an e-mail address"),
        "{stderr}"
    );
    assert!(
        !output.exists(),
        "a malformed answer wrote the include file"
    );

    std::fs::write(&xml, answer).unwrap();
    let out = common::gridprobe(&[
        "import",
        "contacts",
        xml.to_str().unwrap(),
        "--config",
        &cfg,
        "--role",
        "site administrator",
    ]);
    let (stdout, stderr) = common::texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("1 address for 1 site"), "{stdout}");
    assert!(stdout.contains("T1_ELSEWHERE"), "{stdout}");
    assert!(
        stdout.contains("the configuration is valid with it"),
        "{stdout}"
    );
    let written = std::fs::read_to_string(&output).unwrap();
    assert!(
        written.contains("ops@t2.example.org") && !written.contains("manager@"),
        "{written}"
    );

    let mut serve = Serve::start(&cfg, d.join("r.sqlite").to_str().unwrap());
    let recipients = || -> BTreeSet<String> {
        smtp.mails()
            .iter()
            .map(|m| m.header("to").to_string())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(30), || recipients().len() >= 2),
        "mails: {:?}\n{}",
        recipients(),
        serve.output()
    );
    let to = recipients();
    assert!(
        to.iter().any(|t| t.contains("ops@t2.example.org")),
        "{to:?}"
    );
    assert!(
        to.iter().any(|t| t.contains("admins@t2.example.org")),
        "{to:?}"
    );
    assert!(!to.iter().any(|t| t.contains("manager@")), "{to:?}");
    serve.terminate_cleanly();

    std::fs::write(
        &output,
        "[[site_contacts]]\nsite = \"T2_NOTIFYY\"\nemails = [\"not-an-address\"]\n",
    )
    .unwrap();
    let out = common::gridprobe(&["check", &cfg]);
    let (stdout, stderr) = common::texts(&out);
    let all = format!("{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("gocdb-contacts.toml:2:") && all.contains("unknown site `T2_NOTIFYY`"),
        "{all}"
    );
    assert!(
        all.contains("gocdb-contacts.toml:3:") && all.contains("is not an e-mail address"),
        "{all}"
    );
}
