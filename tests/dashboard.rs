//! End-to-end tests of the web dashboard: a real `gridprobe serve` with an OK, a CRITICAL and a
//! STANDBY cell, read over plain HTTP (status codes, escaping) and in headless Chromium driven
//! through chromedriver's WebDriver protocol (cells and their computed colours, a click through
//! to a result, the site page's SVG strips, a narrow window). Screenshots are written to
//! `target/test-artifacts/dashboard-*.png`.
//!
//! Chromium and chromedriver come from Debian (`scripts/services/chromium.sh`); their paths are
//! read from GRIDPROBE_TEST_CHROMIUM and GRIDPROBE_TEST_CHROMEDRIVER. Under CI a missing browser
//! fails the test; elsewhere the browser test prints a note and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{closed_port, http_server, script, wait_until, Serve};
use serde_json::{json, Value};

/// The operator token of the test configuration, and its SHA-256 (what the config holds).
const TOKEN: &str = "dashboard-test-token";
const TOKEN_SHA256: &str = "6a946eaf9a423f13d666e070cdbba678b3054c81e01574b708f31b6d4d764d93";

const SUMMARY_WITH_MARKUP: &str = "PAGE OK - <script>alert(1)</script> & \"all\" fine";

/// A config with three kinds of cell: T1_GOOD's web probe OK (a local server answering 200),
/// T2_BAD's web probe CRITICAL (a local server answering 503), and T2_BAD's page probe STANDBY
/// because it depends on the failed web probe. The page plugin prints markup in its summary.
fn config(dir: &Path) -> String {
    let ok = http_server(200, "hello");
    let bad = http_server(503, "down for maintenance");
    let plugin = script(
        dir,
        "page.sh",
        &format!("echo '{SUMMARY_WITH_MARKUP}'\necho 'second line <b>bold</b>'\nexit 0"),
    );
    let text = format!(
        r#"
vo = "e2e"
[defaults]
interval = "2s"
timeout = "1s"
[server]
startup_spread = "1s"
shutdown_grace = "2s"

[[site]]
name = "T1_GOOD"
tier = 1
  [[site.service]]
  flavour = "WEB"
  hostname = "good.localhost"
  endpoint = "http://127.0.0.1:{ok}/"

[[site]]
name = "T2_BAD"
tier = 2
  [[site.service]]
  flavour = "WEB"
  hostname = "bad.localhost"
  endpoint = "http://127.0.0.1:{bad}/"

[access]
  [[access.token]]
  name = "dashboard-test"
  sha256 = "{TOKEN_SHA256}"
  role = "operator"

[[probe]]
metric = "org.e2e.web"
kind = "http"
flavours = ["WEB"]

[[probe]]
metric = "org.e2e.page"
kind = "nagios"
flavours = ["WEB"]
depends_on = ["org.e2e.web"]
  [probe.params]
  command = "{plugin}"
"#,
        plugin = plugin.display()
    );
    // Ten more columns (OK once an hour) make the matrix wider than a narrow window.
    let filler = script(dir, "filler.sh", "echo 'FILLER OK'\nexit 0");
    let fillers: String = (1..=10)
        .map(|i| {
            format!(
                "\n[[probe]]\nmetric = \"org.e2e.filler-{i:02}\"\nkind = \"nagios\"\n\
                 flavours = [\"WEB\"]\ninterval = \"1h\"\n  [probe.params]\n  command = \"{}\"\n",
                filler.display()
            )
        })
        .collect();
    let path = dir.join("vo.toml");
    std::fs::write(&path, text + &fillers).expect("write config");
    path.to_str().expect("utf-8").to_string()
}

/// Starts serve on the config and returns it with its base URL (`http://127.0.0.1:PORT`).
fn start(dir: &Path) -> (Serve, String) {
    let config = config(dir);
    let store = dir.join("results.sqlite");
    let serve = Serve::start(&config, store.to_str().expect("utf-8"));
    let base = format!("http://{}", serve.http_addr());
    (serve, base)
}

fn client() -> reqwest::blocking::Client {
    common::http_client()
}

/// GET a page: status and body.
fn get(http: &reqwest::blocking::Client, url: &str) -> (u16, String) {
    let r = http
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let code = r.status().as_u16();
    (code, r.text().unwrap_or_default())
}

/// The HTML of a site's row in the matrix.
fn row(html: &str, site: &str) -> Option<String> {
    let start = html.find(&format!("<tr data-site=\"{site}\""))?;
    let end = html[start..].find("</tr>")? + start;
    Some(html[start..end].to_string())
}

/// Waits until the matrix shows T1_GOOD all OK and T2_BAD CRITICAL + STANDBY; returns the page.
fn wait_for_matrix(http: &reqwest::blocking::Client, base: &str, serve: &Serve) -> String {
    let mut last = String::new();
    let filled = wait_until(Duration::from_secs(40), || {
        let (code, html) = get(http, &format!("{base}/"));
        let good = row(&html, "T1_GOOD").is_some_and(|r| {
            r.contains("st-ok")
                && !["st-na", "st-error", "st-stb"]
                    .iter()
                    .any(|c| r.contains(c))
        });
        let bad = row(&html, "T2_BAD").is_some_and(|r| {
            r.contains("st-error") && r.contains("st-stb") && !r.contains("st-na")
        });
        last = html;
        code == 200 && good && bad
    });
    assert!(
        filled,
        "the matrix never showed OK, CRITICAL and STANDBY cells:\n{last}\n--- serve:\n{}",
        serve.output()
    );
    last
}

#[test]
fn pages_answer_404_and_400_and_escape_probe_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, base) = start(dir.path());
    let http = client();
    let html = wait_for_matrix(&http, &base, &serve);

    // Probe output is text, never markup, on the matrix (tooltip) and on the result page.
    assert!(
        !html.contains("<script>alert"),
        "unescaped summary:\n{html}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;all&quot; fine"),
        "{html}"
    );
    let good = row(&html, "T1_GOOD").expect("row");
    let page_id = good
        .split("href=\"/results/")
        .nth(2)
        .and_then(|s| s.split('"').next())
        .expect("second cell links to a result")
        .to_string();
    let (code, result) = get(&http, &format!("{base}/results/{page_id}"));
    assert_eq!(code, 200, "{result}");
    assert!(!result.contains("<script>alert") && !result.contains("<b>bold"));
    assert!(
        result.contains("second line &lt;b&gt;bold&lt;/b&gt;"),
        "{result}"
    );

    for (path, code, words) in [
        ("/sites/T3_NOWHERE", 404, "no site named `T3_NOWHERE`"),
        ("/sites/T2_BAF", 404, "did you mean `T2_BAD`"),
        ("/results/987654321", 404, "no result with id 987654321"),
        ("/results/latest", 400, "parameter `id`"),
        ("/?tier=5", 400, "parameter `tier`"),
        ("/?flavour=CE", 400, "parameter `flavour`"),
        ("/?vo=lhcb", 400, "parameter `vo`"),
        ("/?sort=site", 400, "parameter `sort`"),
        ("/reasons?since=soon", 400, "parameter `since`"),
    ] {
        let (got, body) = get(&http, &format!("{base}{path}"));
        assert_eq!(got, code, "{path}: {body}");
        assert!(body.contains(words), "{path}: {body}");
        assert!(body.starts_with("<!DOCTYPE html>"), "{path}: an HTML page");
    }
    // Filters that select something work.
    let (code, tier2) = get(&http, &format!("{base}/?tier=2&flavour=WEB&vo=e2e"));
    assert_eq!(code, 200);
    assert!(row(&tier2, "T2_BAD").is_some() && row(&tier2, "T1_GOOD").is_none());
    let (code, reasons) = get(&http, &format!("{base}/reasons?since=1h"));
    assert_eq!(code, 200);
    assert!(reasons.contains("T2_BAD"), "{reasons}");
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium through chromedriver

/// Paths of chromium and chromedriver, or None (outside CI) when they are not installed.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var("GRIDPROBE_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"));
    let driver = std::env::var("GRIDPROBE_TEST_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/chromedriver"));
    if chromium.exists() && driver.exists() {
        return Some((chromium, driver));
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "chromium ({}) or chromedriver ({}) not found (install Debian's chromium and \
         chromium-driver; scripts/test-env.sh does)",
        chromium.display(),
        driver.display()
    );
    eprintln!("note: chromium/chromedriver not installed; browser test not run outside CI");
    None
}

/// Where screenshots go: `target/test-artifacts/`.
fn artifacts() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| common::repo().join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// A chromedriver process and one browser session: a minimal WebDriver client.
struct Browser {
    driver: Child,
    http: reqwest::blocking::Client,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path) -> Self {
        let port = closed_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = client();
        let base = format!("http://127.0.0.1:{port}");
        let ready = wait_until(Duration::from_secs(20), || {
            http.get(format!("{base}/status"))
                .send()
                .ok()
                .and_then(|r| r.text().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["value"]["ready"] == true)
        });
        let profile = tempfile::tempdir().expect("profile dir");
        let mut b = Browser {
            driver,
            http,
            base,
            session: String::new(),
            _profile: profile,
        };
        assert!(ready, "chromedriver did not become ready on port {port}");
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium.to_str().expect("utf-8"),
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--window-size=1280,900",
                        format!("--user-data-dir={}", b._profile.path().display()),
                    ]
                }
            }}
        });
        let v = b.raw("POST", &format!("{}/session", b.base), Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {v}"))
            .to_string();
        b
    }

    /// One WebDriver request; panics with the driver's error message on failure.
    fn raw(&self, method: &str, url: &str, body: Option<Value>) -> Value {
        let req = match method {
            "POST" => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let r = req
            .timeout(Duration::from_secs(60))
            .send()
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let ok = r.status().is_success();
        let v: Value = r
            .text()
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        assert!(ok, "WebDriver {method} {url} failed: {v}");
        v["value"].clone()
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        self.raw(method, &url, body)
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn exec(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element id for {css}: {v}"))
            .to_string()
    }

    fn click(&self, element: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    fn type_text(&self, element: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn window(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// Saves a PNG screenshot of the viewport; returns its path.
    fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(v.as_str().expect("base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = artifacts().join(format!("dashboard-{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = self.http.delete(url).send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (the screenshot encoding), ignoring padding and whitespace.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Every matrix row: site → [{metric, class, bg, text, href}] from the DOM, with computed colours.
const READ_MATRIX: &str = r#"
const metrics = [...document.querySelectorAll('table.matrix thead th.probe')].map(th => th.dataset.metric);
const rows = {};
for (const tr of document.querySelectorAll('table.matrix tr[data-site]')) {
  rows[tr.dataset.site] = [...tr.querySelectorAll('td')].map((td, i) => {
    const a = td.querySelector('a');
    return { metric: metrics[i], cls: td.className, bg: getComputedStyle(td).backgroundColor,
             text: td.textContent.trim(), href: a ? a.getAttribute('href') : null,
             title: a ? a.title : (td.firstElementChild ? td.firstElementChild.title : '') };
  });
  const dot = tr.querySelector('th .ss');
  rows[tr.dataset.site + '#status'] = dot ? getComputedStyle(dot).backgroundColor : null;
}
return rows;
"#;

const GREEN: &str = "rgb(46, 158, 68)";
const RED: &str = "rgb(217, 48, 37)";
const PALE: &str = "rgb(230, 237, 243)";

fn cell<'a>(rows: &'a Value, site: &str, metric: &str) -> &'a Value {
    rows[site]
        .as_array()
        .and_then(|cells| cells.iter().find(|c| c["metric"] == metric))
        .unwrap_or_else(|| panic!("no {metric} cell for {site} in {rows}"))
}

#[test]
fn browser_shows_coloured_matrix_clicks_through_and_draws_strips() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, base) = start(dir.path());
    let http = client();
    wait_for_matrix(&http, &base, &serve);

    let b = Browser::start(&chromium, &chromedriver);
    b.goto(&format!("{base}/"));
    let rows = b.exec(READ_MATRIX);
    let ok = cell(&rows, "T1_GOOD", "org.e2e.web");
    assert_eq!(
        (ok["text"].as_str(), ok["bg"].as_str()),
        (Some("ok"), Some(GREEN)),
        "{ok}"
    );
    assert!(
        ok["title"].as_str().is_some_and(|t| t.contains("ago")),
        "{ok}"
    );
    let red = cell(&rows, "T2_BAD", "org.e2e.web");
    assert_eq!(
        (red["text"].as_str(), red["bg"].as_str()),
        (Some("error"), Some(RED)),
        "{red}"
    );
    assert!(
        red["title"].as_str().is_some_and(|t| t.contains("503")),
        "{red}"
    );
    let standby = cell(&rows, "T2_BAD", "org.e2e.page");
    assert_eq!(
        (standby["text"].as_str(), standby["bg"].as_str()),
        (Some("stb"), Some(PALE)),
        "{standby}"
    );
    assert!(
        rows["T1_GOOD#status"].is_string(),
        "site status dot: {rows}"
    );
    // Tiers in order.
    let order = b.exec(
        "return [...document.querySelectorAll('tr.tier th')].map(th => th.textContent.trim());",
    );
    assert_eq!(order, json!(["Tier 1 · 1 site", "Tier 2 · 1 site"]));
    b.screenshot("matrix");

    // Click the red cell through to its result page.
    let link = b.find("tr[data-site='T2_BAD'] td.st-error a");
    b.click(&link);
    assert!(
        wait_until(Duration::from_secs(10), || b.url().contains("/results/")),
        "click did not open a result page: {}",
        b.url()
    );
    let page = b.exec(
        "return { h1: document.querySelector('h1').textContent, \
           summary: document.querySelector('p.summary').textContent, \
           pre: (document.querySelector('pre.output') || {}).textContent || null, \
           badge: getComputedStyle(document.querySelector('h1 .badge')).backgroundColor };",
    );
    assert!(
        page["h1"]
            .as_str()
            .is_some_and(|t| t.contains("CRITICAL") && t.contains("web")),
        "{page}"
    );
    assert!(
        page["summary"].as_str().is_some_and(|t| t.contains("503")),
        "{page}"
    );
    assert!(
        page["pre"].as_str().is_some_and(|t| t.contains("503")),
        "full output: {page}"
    );
    assert_eq!(page["badge"], RED);
    b.screenshot("result");

    // The site page: instances × probes and a 24-hour strip per probe.
    b.goto(&format!("{base}/sites/T2_BAD"));
    let site = b.exec(
        "return { strips: document.querySelectorAll('svg.strip').length, \
           rects: [...document.querySelectorAll('svg.strip rect')].map(r => r.getAttribute('class')), \
           width: document.querySelector('svg.strip').getBoundingClientRect().width, \
           cells: [...document.querySelectorAll('table.site-matrix td')].map(td => td.className) };",
    );
    assert_eq!(site["strips"], 12, "one strip per probe: {site}");
    let rects: Vec<&str> = site["rects"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        rects.contains(&"t-error"),
        "a CRITICAL stretch in the strips: {site}"
    );
    assert!(site["width"].as_f64().is_some_and(|w| w > 200.0), "{site}");
    let cells: Vec<&str> = site["cells"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(cells[..2], ["st-error", "st-stb"], "{site}");
    assert!(cells[2..].iter().all(|c| *c == "st-ok"), "{site}");
    b.screenshot("site");

    // "Run now" with the operator token: the form posts to the API, shows its JSON answer as
    // text and follows the run until it has finished.
    let token = b.find("#run-now input[name='token']");
    b.type_text(&token, TOKEN);
    let probe = b.exec(
        "const s = document.querySelector(\"#run-now select[name='probe']\"); \
         s.value = 'org.e2e.web'; return s.value;",
    );
    assert_eq!(probe, "org.e2e.web");
    let button = b.find("#run-now button");
    b.click(&button);
    let answer = || {
        b.exec("return document.getElementById('run-answer').textContent;")
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let finished = wait_until(Duration::from_secs(30), || {
        let a = answer();
        a.contains("\"state\": \"finished\"")
    });
    assert!(finished, "the run never finished: {}", answer());
    let a = answer();
    assert!(a.starts_with("HTTP 200"), "{a}");
    assert!(a.contains("\"site\": \"T2_BAD\""), "{a}");
    b.screenshot("site-run");

    // A narrow window: the matrix scrolls inside its box, the site column stays put.
    b.window(420, 800);
    b.goto(&format!("{base}/"));
    let narrow = b.exec(
        "const box = document.querySelector('.scroll'); \
         const th = document.querySelector('table.matrix tr[data-site] th.site'); \
         const before = th.getBoundingClientRect().left; \
         box.scrollLeft = 10000; \
         return { doc: document.documentElement.scrollWidth, view: window.innerWidth, \
                  scrolls: box.scrollWidth > box.clientWidth, scrolled: box.scrollLeft, \
                  moved: th.getBoundingClientRect().left - before, \
                  sticky: getComputedStyle(th).position };",
    );
    assert_eq!(narrow["sticky"], "sticky", "{narrow}");
    assert_eq!(
        narrow["scrolls"], true,
        "the matrix scrolls in its box: {narrow}"
    );
    assert!(
        narrow["scrolled"].as_f64().is_some_and(|x| x > 0.0),
        "{narrow}"
    );
    assert_eq!(
        narrow["moved"].as_f64(),
        Some(0.0),
        "site column stays: {narrow}"
    );
    assert!(
        narrow["doc"]
            .as_i64()
            .zip(narrow["view"].as_i64())
            .is_some_and(|(d, v)| d <= v),
        "the page itself must not scroll sideways: {narrow}"
    );
    b.screenshot("matrix-narrow");
}

#[test]
fn browser_shows_the_report_trends_and_a_cells_history() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, base) = start(dir.path());
    let http = client();
    wait_for_matrix(&http, &base, &serve);

    let b = Browser::start(&chromium, &chromedriver);
    b.goto(&format!("{base}/reports/24h"));
    let report = b.exec(
        "const v = document.querySelector(\"tr[data-site='T2_BAD'] td.tgt:not(.num)\"); \
         return { h1: document.querySelector('h1').textContent, \
           strips: document.querySelectorAll('svg.rstrip').length, \
           boxes: document.querySelectorAll('svg.rstrip rect').length, \
           verdict: v ? v.textContent : null, \
           missed: v ? getComputedStyle(v).backgroundColor : null, \
           defined: [...document.querySelectorAll('h2')].some(h => h.textContent.includes('How the figures are defined')) };",
    );
    assert!(
        report["h1"]
            .as_str()
            .is_some_and(|t| t.contains("Availability report 24h")),
        "{report}"
    );
    assert_eq!(report["strips"], 2, "a strip per site: {report}");
    assert!(report["boxes"].as_u64().is_some_and(|n| n >= 2), "{report}");
    assert_eq!(report["verdict"], "missed", "{report}");
    assert_eq!(report["missed"], "rgb(251, 225, 222)", "{report}");
    assert_eq!(report["defined"], true, "{report}");
    b.screenshot("report");

    b.goto(&format!("{base}/trends?period=24h"));
    let trends = b.exec("return [...document.querySelectorAll('h2')].map(h => h.textContent);");
    assert!(
        trends
            .as_array()
            .is_some_and(|h| h.iter().any(|t| t == "Longest CRITICAL")),
        "{trends}"
    );
    b.screenshot("trends");

    // The red cell's result page: its 30- and 90-day strips and the duration plot.
    b.goto(&format!("{base}/"));
    let link = b.find("tr[data-site='T2_BAD'] td.st-error a");
    b.click(&link);
    assert!(
        wait_until(Duration::from_secs(10), || b.url().contains("/results/")),
        "{}",
        b.url()
    );
    let history = b.exec(
        "return { strips: document.querySelectorAll('svg.strip[data-days]').length, \
           plot: (document.querySelector(\"figure.plot[data-series='duration'] svg\") || {getBoundingClientRect: () => ({width: 0})}).getBoundingClientRect().width };",
    );
    assert_eq!(history["strips"], 2, "{history}");
    assert!(
        history["plot"].as_f64().is_some_and(|w| w > 200.0),
        "{history}"
    );
    b.screenshot("result-history");
}

/// The acknowledgement form of `/notifications` in a real browser: a wrong token is refused
/// (the answer shown in the page), the operator's token stores the ack (for the API, the
/// page's list, escaped, and the site page's mark).
#[test]
fn browser_acknowledges_a_problem_through_the_notifications_form() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    // A channel (its receiver need not be up): acks need notifications configured.
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "\n[[notify]]\nname = \"chat\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{}/\"\n\n[[notify_rule]]\nchannel = \"chat\"\n",
        closed_port()
    ));
    std::fs::write(&config, text).expect("config");
    let store = dir.path().join("results.sqlite");
    let serve = Serve::start(&config, store.to_str().expect("utf-8"));
    let base = format!("http://{}", serve.http_addr());
    let http = client();
    wait_for_matrix(&http, &base, &serve);

    let b = Browser::start(&chromium, &chromedriver);
    b.goto(&format!("{base}/notifications"));
    let answer = |b: &Browser| -> String {
        b.exec("return document.getElementById('ack-result').textContent;")
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    b.exec("document.querySelector('#ack-form select[name=site]').value = 'T2_BAD';");
    let comment = "web server <b>replaced</b> tomorrow";
    b.type_text(&b.find("#ack-form input[name=service]"), "bad.localhost");
    b.type_text(&b.find("#ack-form input[name=comment]"), comment);
    b.type_text(&b.find("#ack-form input[name=expires]"), "4h");
    b.type_text(&b.find("#ack-form input[name=token]"), "not-the-token");
    b.click(&b.find("#ack-form button[type=submit]"));
    assert!(
        wait_until(Duration::from_secs(10), || answer(&b)
            .starts_with("HTTP 401")),
        "a wrong token was not refused: {:?}",
        answer(&b)
    );
    let token = b.find("#ack-form input[name=token]");
    b.exec("document.querySelector('#ack-form input[name=token]').value = '';");
    b.type_text(&token, TOKEN);
    b.click(&b.find("#ack-form button[type=submit]"));
    assert!(
        wait_until(Duration::from_secs(10), || answer(&b)
            .starts_with("HTTP 201")),
        "the ack was not stored: {:?}",
        answer(&b)
    );
    b.screenshot("ack-form");

    let (code, body) = get(&http, &format!("{base}/api/v1/acks"));
    assert_eq!(code, 200, "{body}");
    let acks: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(acks[0]["site"], "T2_BAD", "{acks}");
    assert_eq!(acks[0]["hostname"], "bad.localhost", "{acks}");
    assert_eq!(acks[0]["comment"], comment, "{acks}");
    assert_eq!(acks[0]["author"], "dashboard-test", "{acks}");
    assert!(acks[0]["expires_ms"].as_i64().is_some(), "{acks}");
    // The page lists it as text (the markup escaped, not rendered).
    b.goto(&format!("{base}/notifications"));
    let listed = b.exec(
        "const t = [...document.querySelectorAll('table.plain td.wrap')].map(td => td.textContent); \
         return { texts: t, bold: document.querySelectorAll('table.plain td.wrap b').length };",
    );
    assert!(
        listed["texts"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == comment)),
        "{listed}"
    );
    assert_eq!(
        listed["bold"], 0,
        "the comment's markup was rendered: {listed}"
    );
    let (_, site) = get(&http, &format!("{base}/sites/T2_BAD"));
    assert!(
        site.contains("acknowledged by dashboard-test"),
        "no ack mark on the site page"
    );
}
