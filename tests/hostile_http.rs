//! The HTTP surface of `gridprobe serve` under hostile input, over real sockets against the
//! real binary: every method on every route with and without tokens, malformed and oversized
//! requests, repeated and absurd parameters, slow clients, a flood of idle connections, and
//! `/healthz` while the store cannot be written. Each test counts the inputs it tried, those
//! handled as expected and those that failed (printed; run with `--no-capture` to see them).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, wait_until, Serve, StoppableHttp};

const OPERATOR: &str = "operator-secret-token";
const SITE_ADMIN: &str = "cern-admin-secret-token";

/// A parsed answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Whether the body is the documented `{error, detail}`.
    fn is_json_error(&self) -> bool {
        serde_json::from_str::<serde_json::Value>(&self.body).is_ok_and(|v| {
            v["error"].as_str().is_some_and(|e| !e.is_empty())
                && v["detail"].as_str().is_some_and(|d| !d.is_empty())
        })
    }
}

/// Sends raw bytes and reads until the server closes (or `wait` passes); `None` when the
/// connection ended without an answer.
fn raw(addr: &str, bytes: &[u8], wait: Duration) -> Option<Reply> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(wait)).expect("timeout");
    // A server that answers early (413 on Content-Length) may close before all is written.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse(&out)
}

fn parse(out: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// One request with an optional token, extra header lines and body.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &str,
    body: &str,
) -> Option<Reply> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let length = if body.is_empty() && matches!(method, "GET" | "HEAD") {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    let text =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}{extra}{length}\r\n{body}");
    raw(addr, text.as_bytes(), Duration::from_secs(20))
}

/// The configuration: one web probe every `interval` against `web_port`, two tokens, and
/// `extra` appended to `[access]`-less tail.
fn config(dir: &Path, web_port: u16, read: &str, interval: &str, extra: &str) -> String {
    let hash = gridprobe_runner::access::sha256_hex;
    let text = format!(
        r#"
vo = "hostile"
[defaults]
interval = "{interval}"
timeout = "2s"
[server]
startup_spread = "1s"
shutdown_grace = "1s"
[access]
read = "{read}"
  [[access.token]]
  name = "operators"
  sha256 = "{op}"
  role = "operator"
  [[access.token]]
  name = "cern-admins"
  sha256 = "{cern}"
  role = "site-admin"
  sites = ["LCG.CERN.ch"]

[[site]]
name = "LCG.CERN.ch"
tier = 0
  [[site.service]]
  flavour = "WEB"
  hostname = "127.0.0.1"
  endpoint = "http://127.0.0.1:{web_port}/"

[[probe]]
metric = "org.hostile.web"
kind = "http"
flavours = ["WEB"]
{extra}
"#,
        op = hash(OPERATOR),
        cern = hash(SITE_ADMIN),
    );
    let path = dir.join("vo.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8").to_string()
}

/// Inputs tried, handled as expected, and failed (with what went wrong).
#[derive(Default)]
struct Tally {
    tried: usize,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.tried += 1;
        if !ok {
            self.failures.push(what());
        }
    }

    fn finish(self, name: &str) {
        eprintln!(
            "{name}: {} inputs tried, {} handled, {} failed",
            self.tried,
            self.tried - self.failures.len(),
            self.failures.len()
        );
        assert!(
            self.failures.is_empty(),
            "{name}: {} of {} inputs mishandled:\n{}",
            self.failures.len(),
            self.tried,
            self.failures.join("\n")
        );
    }
}

const ROUTES: &[&str] = &[
    "/healthz",
    "/-/reload",
    "/api/openapi.json",
    "/api/v1/sites",
    "/api/v1/sites/LCG.CERN.ch",
    "/api/v1/matrix",
    "/api/v1/results",
    "/api/v1/results/1",
    "/api/v1/availability?period=24h",
    "/api/v1/reasons",
    "/api/v1/trends?period=24h",
    "/api/v1/runs",
    "/api/v1/runs/1",
    "/api/v1/recomputations",
    "/api/v1/recomputations/1/approve",
    "/api/v1/notifications",
    "/api/v1/problems",
    "/api/v1/acks",
    "/api/v1/agents",
    "/metrics",
    "/",
    "/sites/LCG.CERN.ch",
    "/results/1",
    "/reasons",
    "/recomputations",
    "/reports",
    "/reports/24h",
    "/trends",
    "/problems",
    "/notifications",
    "/agents",
    "/static/gridprobe.css",
    "/static/gridprobe.js",
    "/no/such/route",
    "/api/v1/no-such-thing",
];

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW",
];

/// The methods a route answers (HEAD wherever GET is); `None` for an unknown route.
fn allowed(route: &str) -> Option<&'static [&'static str]> {
    let path = route.split('?').next().unwrap_or(route);
    match path {
        "/-/reload" | "/api/v1/runs" | "/api/v1/recomputations/1/approve" => Some(&["POST"]),
        "/api/v1/recomputations" | "/api/v1/acks" => Some(&["GET", "HEAD", "POST"]),
        "/no/such/route" | "/api/v1/no-such-thing" => None,
        _ => Some(&["GET", "HEAD"]),
    }
}

#[test]
fn every_method_on_every_route_passes_the_token_guard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = StoppableHttp::start("hello");
    let config = config(dir.path(), web.port, "token", "1h", "");
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&config, store.to_str().expect("utf-8"));
    let addr = serve.http_addr();
    let mut tally = Tally::default();

    for route in ROUTES {
        for token in [None, Some("wrong-token"), Some(SITE_ADMIN), Some(OPERATOR)] {
            let get_status = request(&addr, "GET", route, token, "", "").map(|r| r.status);
            for method in METHODS {
                let reply = request(&addr, method, route, token, "", "");
                let what = || format!("{method} {route} token={token:?}: {reply:?}");
                let Some(r) = &reply else {
                    tally.check(false, what);
                    continue;
                };
                let valid = matches!(token, Some(t) if t == SITE_ADMIN || t == OPERATOR);
                let expected_ok = if *route == "/healthz" {
                    // Open to liveness checks whatever the token.
                    if matches!(*method, "GET" | "HEAD") {
                        r.status == 200
                    } else {
                        r.status == 405
                    }
                } else if !valid {
                    // The issue: HEAD answered 200/404 here and ran the computation.
                    r.status == 401
                } else {
                    match allowed(route) {
                        None => r.status == 404,
                        Some(methods) if !methods.contains(method) => {
                            r.status == 405 && r.header("allow").is_some()
                        }
                        Some(_) if *method == "HEAD" => Some(r.status) == get_status,
                        Some(_) => r.status != 401 && r.status < 500,
                    }
                };
                // Every error has the documented body (a HEAD answer has none; the dashboard
                // answers its own errors as HTML pages).
                let html = r
                    .header("content-type")
                    .is_some_and(|c| c.starts_with("text/html"));
                let body_ok = r.status < 400 || *method == "HEAD" || html || r.is_json_error();
                tally.check(expected_ok && body_ok, what);
            }
        }
    }

    // Reloading: operators only, never from a simple cross-site request, no config quoted.
    let cases: &[(Option<&str>, &str, &str, u16)] = &[
        (None, "", "", 401),
        (Some(SITE_ADMIN), "", "", 403),
        (Some(OPERATOR), "Content-Type: text/plain\r\n", "x", 415),
        (
            Some(OPERATOR),
            "Content-Type: application/x-www-form-urlencoded\r\n",
            "a=b",
            415,
        ),
        (
            Some(OPERATOR),
            "Content-Type: multipart/form-data; boundary=x\r\n",
            "--x--",
            415,
        ),
        (Some(OPERATOR), "", "{}", 415),
        (Some(OPERATOR), "Origin: http://evil.example\r\n", "", 403),
        (Some(OPERATOR), "Origin: null\r\n", "", 403),
        (
            Some(OPERATOR),
            "Content-Type: application/json\r\n",
            "not json",
            400,
        ),
        (
            Some(OPERATOR),
            "Content-Type: application/json\r\n",
            "{}",
            200,
        ),
        (Some(OPERATOR), "", "", 200),
    ];
    for (token, extra, body, want) in cases {
        let r = request(&addr, "POST", "/-/reload", *token, extra, body);
        tally.check(
            r.as_ref()
                .is_some_and(|r| r.status == *want && (r.status == 200 || r.is_json_error())),
            || format!("reload {token:?} {extra:?} {body:?}: {r:?} (wanted {want})"),
        );
    }
    // A broken configuration: 422 that does not quote it.
    std::fs::write(
        &config,
        "vo = \"hostile\"\n[server]\nstore = \"postgresql://u:hunter2@h/db\n",
    )
    .expect("break config");
    let r = request(&addr, "POST", "/-/reload", Some(OPERATOR), "", "");
    tally.check(
        r.as_ref().is_some_and(|r| {
            r.status == 422
                && r.is_json_error()
                && !r.body.contains("hunter2")
                && !r.body.contains("postgresql")
                && r.body.contains("gridprobe check")
        }),
        || format!("reload of a broken config: {r:?}"),
    );
    tally.finish("methods x routes x access");
}

#[test]
fn malformed_oversized_and_absurd_requests_get_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = StoppableHttp::start("hello");
    let config = config(dir.path(), web.port, "open", "1h", "");
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&config, store.to_str().expect("utf-8"));
    let addr = serve.http_addr();
    assert!(
        wait_until(Duration::from_secs(15), || {
            request(&addr, "GET", "/api/v1/results?limit=1", None, "", "")
                .is_some_and(|r| r.body.contains("org.hostile.web"))
        }),
        "no result stored:\n{}",
        serve.output()
    );
    let mut tally = Tally::default();
    let head = |line: &str, headers: &str| {
        format!("{line}\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n")
    };
    let auth = format!("Authorization: Bearer {OPERATOR}\r\n");
    let long_path = format!("GET /{} HTTP/1.1", "a".repeat(9_000));
    let huge_path = format!("GET /api/v1/sites?{} HTTP/1.1", "a=b&".repeat(20_000));
    let many_headers: String = (0..80).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big_header = format!("X-Big: {}\r\n", "v".repeat(20_000));
    let big_body = format!("{{\"site\": \"{}\"}}", "x".repeat(20_000));
    let raw_cases: Vec<(String, Vec<u8>, u16)> = vec![
        (
            "unknown route".into(),
            head("GET /nope HTTP/1.1", "").into(),
            404,
        ),
        (
            "unknown API version".into(),
            head("GET /api/v2/sites HTTP/1.1", "").into(),
            404,
        ),
        (
            "path below a resource".into(),
            head("GET /api/v1/sites/LCG.CERN.ch/x HTTP/1.1", "").into(),
            404,
        ),
        (
            "percent-encoded junk".into(),
            head("GET /%FF%FE HTTP/1.1", "").into(),
            404,
        ),
        (
            "dot segments".into(),
            head("GET /..%2f..%2fetc/passwd HTTP/1.1", "").into(),
            404,
        ),
        (
            "405 on the API".into(),
            head("DELETE /api/v1/sites HTTP/1.1", "").into(),
            405,
        ),
        (
            "405 on healthz".into(),
            head("PUT /healthz HTTP/1.1", "Content-Length: 0\r\n").into(),
            405,
        ),
        (
            "GET on reload".into(),
            head("GET /-/reload HTTP/1.1", "").into(),
            405,
        ),
        (
            "GET on runs".into(),
            head("GET /api/v1/runs HTTP/1.1", "").into(),
            405,
        ),
        ("long target".into(), head(&long_path, "").into(), 414),
        ("huge target".into(), head(&huge_path, "").into(), 414),
        (
            "80 headers".into(),
            head("GET /healthz HTTP/1.1", &many_headers).into(),
            431,
        ),
        (
            "20 KB header".into(),
            head("GET /healthz HTTP/1.1", &big_header).into(),
            431,
        ),
        ("not HTTP".into(), b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("HTTP/9.9".into(), b"GET / HTTP/9.9\r\n\r\n".to_vec(), 400),
        (
            "NUL in target".into(),
            b"GET /\x00 HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space in header name".into(),
            head("GET / HTTP/1.1", "Bad Name: x\r\n").into(),
            400,
        ),
        (
            "bad Content-Length".into(),
            head("POST /api/v1/runs HTTP/1.1", "Content-Length: 1x\r\n").into(),
            400,
        ),
        (
            "negative Content-Length".into(),
            head("POST /api/v1/runs HTTP/1.1", "Content-Length: -5\r\n").into(),
            400,
        ),
        (
            "two Content-Lengths".into(),
            head(
                "POST /api/v1/runs HTTP/1.1",
                "Content-Length: 1\r\nContent-Length: 2\r\n",
            )
            .into(),
            400,
        ),
        (
            "overflowing Content-Length".into(),
            head(
                "POST /api/v1/runs HTTP/1.1",
                "Content-Length: 99999999999999999999999\r\n",
            )
            .into(),
            400,
        ),
        (
            "gzip transfer coding".into(),
            head("POST /api/v1/runs HTTP/1.1", "Transfer-Encoding: gzip\r\n").into(),
            400,
        ),
        (
            "chunked and Content-Length".into(),
            head(
                "POST /api/v1/runs HTTP/1.1",
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            )
            .into(),
            400,
        ),
        (
            "declared 100 MB body".into(),
            head(
                "POST /api/v1/runs HTTP/1.1",
                &format!("{auth}Content-Length: 100000000\r\n"),
            )
            .into(),
            413,
        ),
        (
            "20 KB body".into(),
            format!(
                "{}{big_body}",
                head(
                    "POST /api/v1/runs HTTP/1.1",
                    &format!(
                        "{auth}Content-Type: application/json\r\nContent-Length: {}\r\n",
                        big_body.len()
                    )
                )
            )
            .into(),
            413,
        ),
        (
            "20 KB chunked body".into(),
            format!(
                "{}{:x}\r\n{big_body}\r\n0\r\n\r\n",
                head(
                    "POST /api/v1/runs HTTP/1.1",
                    &format!("{auth}Transfer-Encoding: chunked\r\n")
                ),
                big_body.len()
            )
            .into(),
            413,
        ),
        (
            "bad chunk size".into(),
            format!(
                "{}ZZ\r\nabc\r\n0\r\n\r\n",
                head(
                    "POST /api/v1/runs HTTP/1.1",
                    &format!("{auth}Transfer-Encoding: chunked\r\n")
                )
            )
            .into(),
            400,
        ),
        (
            "not JSON".into(),
            format!(
                "{}{{site",
                head(
                    "POST /api/v1/runs HTTP/1.1",
                    &format!("{auth}Content-Length: 5\r\n")
                )
            )
            .into(),
            400,
        ),
    ];
    for (what, bytes, want) in &raw_cases {
        let r = raw(&addr, bytes, Duration::from_secs(20));
        tally.check(
            r.as_ref()
                .is_some_and(|r| r.status == *want && r.is_json_error()),
            || format!("{what}: {r:?} (wanted {want})"),
        );
    }

    // Query parameters: repeated, out of range, overflowing, absurd periods.
    let bad_queries = [
        "/api/v1/results?limit=1&limit=2",
        "/api/v1/results?site=LCG.CERN.ch&site=LCG.CERN.ch",
        "/api/v1/availability?period=24h&period=7d",
        "/api/v1/sites?tier=1&tier=1",
        "/api/v1/matrix?flavour=WEB&flavour=CE",
        "/api/v1/reasons?since=1h&since=2h",
        "/api/v1/results?limit=0",
        "/api/v1/results?limit=1001",
        "/api/v1/results?limit=-1",
        "/api/v1/results?limit=99999999999999999999999",
        "/api/v1/reasons?limit=0",
        "/api/v1/trends?limit=0",
        "/api/v1/trends?limit=1001",
        "/api/v1/trends?period=1000000d",
        "/api/v1/trends?period=24h&period=7d",
        "/api/v1/sites?tier=4",
        "/api/v1/sites?tier=99999999999",
        "/api/v1/results?since=99999999999999999999999",
        "/api/v1/results?cursor=1",
        "/api/v1/results?attempts=maybe",
        "/api/v1/results/99999999999999999999",
        "/api/v1/results/-",
        "/api/v1/runs/-1",
        "/api/v1/runs/99999999999999999999999",
        "/api/v1/availability?period=1000000d",
        "/api/v1/availability?period=9999999999h",
        "/api/v1/availability?period=99999999999999999999999h",
        "/api/v1/availability?period=18446744073709551615s",
        "/api/v1/availability?period=-5d",
        "/api/v1/availability?period=2020-01",
        "/api/v1/availability?period=1900-01-01..2026-01-01",
        "/api/v1/availability?period=2026-01-01..1900-01-01",
        "/api/v1/availability?period=%00",
        "/api/v1/availability?level=everything",
        "/api/v1/availability?periode=24h",
        "/api/v1/results?%ZZ=1",
    ];
    for q in bad_queries {
        let started = Instant::now();
        let r = request(&addr, "GET", q, None, "", "");
        let took = started.elapsed();
        tally.check(
            r.as_ref()
                .is_some_and(|r| r.status == 400 && r.is_json_error())
                && took < Duration::from_secs(5),
            || format!("{q}: {r:?} in {took:?}"),
        );
    }
    // A long period that is allowed reads only the days holding results: no cache row for
    // an empty day is written.
    let r = request(
        &addr,
        "GET",
        "/api/v1/availability?period=400d",
        None,
        "",
        "",
    );
    tally.check(r.as_ref().is_some_and(|r| r.status == 200), || {
        format!("400d: {r:?}")
    });
    let db = rusqlite::Connection::open(&store).expect("open store");
    let cached: i64 = db
        .query_row("SELECT COUNT(*) FROM report_days", [], |r| r.get(0))
        .expect("count");
    tally.check(cached <= 1, || {
        format!("{cached} days cached for one day of results")
    });
    tally.finish("limits and JSON errors");
}

/// `gridprobe serve` under a shell that sets the open-file limit (soft and hard) to `nofile`.
fn serve_with_nofile(config: &str, store: &str, nofile: u32) -> Serve {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(bin())
        .args([
            "serve",
            "--config",
            config,
            "--store",
            store,
            "--listen",
            "127.0.0.1:0",
        ]);
    Serve::from_command(cmd)
}

#[test]
fn slow_clients_are_cut_off_and_a_connection_flood_leaves_probes_their_descriptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = StoppableHttp::start("hello");
    let config = config(dir.path(), web.port, "open", "3s", "");
    let store = dir.path().join("r.sqlite");
    let serve = serve_with_nofile(&config, store.to_str().expect("utf-8"), 512);
    let addr = serve.http_addr();
    let mut tally = Tally::default();

    // A half-sent head: 408 and closed after the 10 s header timeout, not minutes later.
    let slow_head = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let started = Instant::now();
            let r = raw(
                &addr,
                b"GET /api/v1/sites HTTP/1.1\r\nHost: x\r\n",
                Duration::from_secs(60),
            );
            (r, started.elapsed())
        }
    });
    // A head whose body never comes: 408 after the 30 s body timeout.
    let slow_body = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let started = Instant::now();
            let text = format!(
                "POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"site\""
            );
            let r = raw(&addr, text.as_bytes(), Duration::from_secs(90));
            (r, started.elapsed())
        }
    });

    // 600 idle connections against a limit of 512 descriptors (before the cap they took every
    // descriptor): the listener serves at most 256 and refuses the rest at once; the probes
    // keep running.
    let flood_started_ms = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
    let mut flood: Vec<TcpStream> = (0..600)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    for s in &flood {
        s.set_nonblocking(true).expect("nonblocking");
    }
    let mut refused = vec![false; flood.len()];
    wait_until(Duration::from_secs(5), || {
        for (s, done) in flood.iter_mut().zip(refused.iter_mut()) {
            let mut buf = [0u8; 512];
            if !*done
                && matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 503"))
            {
                *done = true;
            }
        }
        refused.iter().filter(|r| **r).count() >= 300
    });
    let refused_count = refused.iter().filter(|r| **r).count();
    tally.check(refused_count >= 300, || {
        format!("only {refused_count} of 600 flood connections refused at the cap")
    });
    // Two probe runs (interval 3 s) while the flood holds its connections.
    std::thread::sleep(Duration::from_secs(7));
    drop(flood);
    assert!(
        wait_until(Duration::from_secs(10), || request(
            &addr, "GET", "/healthz", None, "", ""
        )
        .is_some_and(|r| r.status == 200)),
        "serve did not answer after the flood:\n{}",
        serve.output()
    );
    let r = request(
        &addr,
        "GET",
        &format!("/api/v1/results?since={flood_started_ms}&limit=100&attempts=true"),
        None,
        "",
        "",
    )
    .expect("results");
    let page: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let results = page["results"].as_array().cloned().unwrap_or_default();
    let ok = results.iter().filter(|x| x["status"] == "OK").count();
    let starved: Vec<_> = results
        .iter()
        .filter(|x| {
            x["summary"]
                .as_str()
                .is_some_and(|s| s.contains("Too many open files"))
        })
        .collect();
    tally.check(ok >= 1 && starved.is_empty(), || {
        format!(
            "probes during the flood: {ok} OK, starved: {starved:?}\n{}",
            serve.output()
        )
    });

    let (r, took) = slow_head.join().expect("slow head thread");
    tally.check(
        r.as_ref()
            .is_some_and(|r| r.status == 408 && r.is_json_error())
            && took >= Duration::from_secs(8)
            && took < Duration::from_secs(20),
        || format!("half-sent head: {r:?} after {took:?}"),
    );
    let (r, took) = slow_body.join().expect("slow body thread");
    tally.check(
        r.as_ref()
            .is_some_and(|r| r.status == 408 && r.is_json_error())
            && took >= Duration::from_secs(25)
            && took < Duration::from_secs(45),
        || format!("half-sent body: {r:?} after {took:?}"),
    );
    tally.finish("timeouts and connection cap");
}

#[test]
fn healthz_reports_the_store_and_each_publisher() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = StoppableHttp::start("hello");
    let closed = common::closed_port();
    let publish = format!(
        r#"
[[publish]]
name = "central"
kind = "nats"
url = "nats://127.0.0.1:{closed}"
subject = "hostile.{{vo}}.{{site}}"
stream = "hostile"
stream_max_age = "1h"
consumer = "central"
"#
    );
    let config = config(dir.path(), web.port, "open", "1h", &publish);
    let store = dir.path().join("r.sqlite");
    let serve = Serve::start(&config, store.to_str().expect("utf-8"));
    let addr = serve.http_addr();
    let mut tally = Tally::default();
    let health = || {
        let r = request(&addr, "GET", "/healthz", None, "", "").expect("healthz");
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        (r.status, v)
    };

    // The broker is down: once the first result is spooled, its publisher shows a backlog.
    let backlog = wait_until(Duration::from_secs(20), || {
        let (code, v) = health();
        code == 200
            && v["status"] == "degraded"
            && v["publishers"][0]["name"] == "central"
            && v["publishers"][0]["state"] == "backlog"
            && v["store"]["writable"] == true
    });
    tally.check(backlog, || {
        format!("no publisher backlog shown: {:?}", health())
    });

    // Another process holds the store's write lock: 503 and the store failing.
    let db = rusqlite::Connection::open(&store).expect("open store");
    db.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let (code, v) = health();
    tally.check(
        code == 503
            && v["status"] == "failing"
            && v["store"]["state"] == "failing"
            && v["store"]["writable"] == false
            && v["store"]["error"].as_str().is_some_and(|e| !e.is_empty()),
        || format!("locked store: {code} {v}"),
    );
    db.execute_batch("ROLLBACK").expect("unlock");
    let (code, v) = health();
    tally.check(code == 200 && v["store"]["writable"] == true, || {
        format!("unlocked store: {code} {v}")
    });
    tally.finish("healthz dependencies");
}
