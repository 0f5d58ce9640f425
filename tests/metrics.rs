//! Prometheus and Grafana: the Grafana dashboard and the alert rules name only metrics that
//! `gridprobe serve` exports, promtool checks and unit-tests the rules, `/metrics` of a running
//! service carries the documented series, and a real Prometheus scrapes it and evaluates every
//! dashboard query and alert rule.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{closed_port, repo, wait_until, Serve};
use serde_json::Value;

fn write(dir: &Path, name: &str, body: &str) -> String {
    common::write_file(dir, name, body)
}

/// Every series name `/metrics` can expose, plus `up`, which Prometheus adds to every target.
fn exported() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = gridprobe_runner::metrics::metric_names()
        .into_iter()
        .collect();
    names.insert("up".into());
    names
}

/// PromQL words that are not metric names.
const PROMQL_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
    // Aggregation operators, which may be followed by `by (...)` rather than `(`.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metric names a PromQL expression reads: identifiers that are not functions, keywords,
/// label names (inside `{}` or the lists after `by`, `on`, ...), strings, durations or Grafana
/// variables. Written for the expressions of this repository, not for all of PromQL.
fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // After `by`, `on`, ...: the next parenthesised list holds label names.
    let mut label_list_next = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                // A string: skip to its unescaped end.
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' | '[' => {
                // Label matchers or a range/subquery duration: no metric names inside.
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            if chars[i] == '\\' {
                                i += 1;
                            }
                            i += 1;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '$' => {
                // A Grafana variable: $name, ${name} or $__name.
                i += 1;
                if chars.get(i) == Some(&'{') {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                }
            }
            '(' if label_list_next => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                label_list_next = false;
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                // A number (possibly with an exponent or a duration unit).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let is_call = chars.get(j) == Some(&'(');
                let lower = word.to_ascii_lowercase();
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&lower.as_str())
                {
                    label_list_next = true;
                } else if !is_call && !PROMQL_KEYWORDS.contains(&lower.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn the_promql_name_extractor_sees_metrics_only() {
    let names = metric_names_in(
        r#"histogram_quantile(0.95, sum by (kind, le) (rate(gridprobe_probe_duration_seconds_bucket{instance=~"$instance", x="a{b}"}[$__rate_interval])))
           / on (vo, site) group_left (tier) foo:bar_total offset 5m > 1e3 and bool gridprobe_x unless time() - ${y}"#,
    );
    let expected: BTreeSet<String> = [
        "gridprobe_probe_duration_seconds_bucket",
        "foo:bar_total",
        "gridprobe_x",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, expected);
}

fn dashboard() -> Value {
    let path = repo().join("deploy/grafana/gridprobe.json");
    let text = std::fs::read_to_string(&path).expect("dashboard file");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn all_panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels array") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter());
        }
    }
    out
}

/// Every PromQL expression of the dashboard's panels, with the panel title.
fn dashboard_exprs(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in all_panels(dash) {
        for t in p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(e) = t["expr"].as_str() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    e.to_string(),
                ));
            }
        }
    }
    out
}

/// The metric selector of a `label_values(selector, label)` variable query.
fn variable_selector(query: &str) -> Option<&str> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    // The label is after the last comma outside braces.
    let mut depth = 0;
    let mut split = None;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => split = Some(i),
            _ => {}
        }
    }
    Some(match split {
        Some(i) => &inner[..i],
        None => inner,
    })
}

#[test]
fn grafana_dashboard_is_importable_and_complete() {
    let dash = dashboard();
    for key in [
        "__inputs",
        "__requires",
        "title",
        "uid",
        "schemaVersion",
        "panels",
        "templating",
        "time",
        "editable",
        "annotations",
        "version",
    ] {
        assert!(dash.get(key).is_some(), "dashboard lacks `{key}`");
    }
    // Importable on a current Grafana (10/11 migrate anything from 36 up).
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(dash["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u.len() <= 40));
    // The datasource is an import input, so the dashboard binds to any Prometheus.
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS input: {inputs:?}"
    );

    let panels = all_panels(&dash);
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, i64, i64, i64, i64)> = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().expect("panel title").to_string();
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel `{title}` has no id"));
        assert!(ids.insert(id), "duplicate panel id {id}");
        let ty = p["type"].as_str().expect("panel type");
        assert!(
            [
                "row",
                "stat",
                "timeseries",
                "table",
                "bargauge",
                "gauge",
                "state-timeline",
                "status-history",
                "text"
            ]
            .contains(&ty),
            "panel `{title}`: unexpected type {ty}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_i64().expect("x"),
            g["y"].as_i64().expect("y"),
            g["w"].as_i64().expect("w"),
            g["h"].as_i64().expect("h"),
        );
        assert!(
            x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= 24,
            "panel `{title}`: gridPos {g}"
        );
        for (other, ox, oy, ow, oh) in &boxes {
            let overlap = x < ox + ow && ox < &(x + w) && y < oy + oh && oy < &(y + h);
            assert!(!overlap, "panels `{title}` and `{other}` overlap");
        }
        boxes.push((title.clone(), x, y, w, h));
        if ty == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel `{title}` does not use the DS_PROMETHEUS input"
        );
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel `{title}`: no targets"));
        assert!(!targets.is_empty(), "panel `{title}`: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            let r = t["refId"]
                .as_str()
                .unwrap_or_else(|| panic!("panel `{title}`: target without refId"));
            assert!(
                refs.insert(r.to_string()),
                "panel `{title}`: duplicate refId {r}"
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "panel `{title}`: empty expr"
            );
        }
    }
    // The views the issue asks for.
    let titles: Vec<String> = panels
        .iter()
        .filter_map(|p| p["title"].as_str())
        .map(str::to_lowercase)
        .collect();
    for wanted in [
        "site status",
        "availability over time",
        "failing probes",
        "probe duration",
        "schedule",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about `{wanted}`: {titles:?}"
        );
    }
    // Templating: each variable is a Prometheus query on the same input.
    for v in dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
    {
        assert_eq!(
            v["datasource"]["uid"], "${DS_PROMETHEUS}",
            "variable {}",
            v["name"]
        );
    }
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let dash = dashboard();
    let exported = exported();
    let mut checked = 0;
    for (title, expr) in dashboard_exprs(&dash) {
        let names = metric_names_in(&expr);
        assert!(!names.is_empty(), "panel `{title}`: no metric in `{expr}`");
        for n in names {
            assert!(
                exported.contains(&n),
                "panel `{title}` queries `{n}`, which gridprobe does not export: `{expr}`"
            );
            checked += 1;
        }
    }
    for v in dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
    {
        let query = v["query"]["query"]
            .as_str()
            .or_else(|| v["query"].as_str())
            .expect("variable query");
        let selector =
            variable_selector(query).unwrap_or_else(|| panic!("variable {}: `{query}`", v["name"]));
        for n in metric_names_in(selector) {
            assert!(
                exported.contains(&n),
                "variable {} queries `{n}`, not exported",
                v["name"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} metric references found");
}

/// The `expr` values of a Prometheus rules file: single-line, or a `|`/`>` block.
fn rule_exprs(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("rules file");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest.starts_with('|') || rest.starts_with('>') {
                let indent = line.len() - trimmed.len();
                let mut block = Vec::new();
                i += 1;
                while i < lines.len() {
                    let l = lines[i];
                    let ind = l.len() - l.trim_start().len();
                    if !l.trim().is_empty() && ind <= indent {
                        break;
                    }
                    block.push(l.trim());
                    i += 1;
                }
                out.push(block.join(" "));
                continue;
            }
            out.push(rest.trim_matches(|c| c == '\'' || c == '"').to_string());
        }
        i += 1;
    }
    out
}

#[test]
fn alert_rules_query_only_exported_metrics() {
    let exported = exported();
    let exprs = rule_exprs(&repo().join("deploy/prometheus/alerts.yml"));
    assert!(exprs.len() >= 6, "{exprs:?}");
    for expr in &exprs {
        let names = metric_names_in(expr);
        assert!(!names.is_empty(), "no metric in `{expr}`");
        for n in names {
            assert!(
                exported.contains(&n),
                "alert rule queries `{n}`, not exported: `{expr}`"
            );
        }
    }
}

/// A Prometheus tool: the test environment's (scripts/services/prometheus.sh), else the Debian
/// path. Under CI a missing tool fails the test instead of skipping it.
fn tool(var: &str, name: &str) -> Option<PathBuf> {
    let path = std::env::var(var)
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin").join(name));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{name} not found at {} (install Debian's prometheus package; scripts/test-env.sh does)",
        path.display()
    );
    eprintln!("note: {name} not installed; test not run outside CI");
    None
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let Some(promtool) = tool("GRIDPROBE_TEST_PROMTOOL", "promtool") else {
        return;
    };
    let deploy = repo().join("deploy/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
        // Also loads alerts.yml through rule_files.
        vec!["check", "config", "prometheus.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&deploy)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {}:\n{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn client() -> reqwest::blocking::Client {
    common::http_client()
}

/// A service with an OK cell, a CRITICAL one and a STANDBY one, probing itself every second.
fn config(open_port: u16, shut_port: u16, with_shut: bool) -> String {
    let shut = if with_shut {
        r#"
[[site]]
name = "T1_SHUT"
tier = 1
  [[site.service]]
  flavour = "SHUT"
  hostname = "shut.local"

[[probe]]
metric = "org.e2e.shut"
kind = "tcp"
flavours = ["SHUT"]
params = { host = "127.0.0.1", port = SHUT_PORT }

[[probe]]
metric = "org.e2e.after"
kind = "tcp"
flavours = ["SHUT"]
depends_on = ["org.e2e.shut"]
params = { host = "127.0.0.1", port = OPEN_PORT }
"#
        .replace("SHUT_PORT", &shut_port.to_string())
        .replace("OPEN_PORT", &open_port.to_string())
    } else {
        String::new()
    };
    format!(
        r#"
vo = "e2e"
[defaults]
interval = "1s"
timeout = "500ms"
[server]
startup_spread = "1s"
shutdown_grace = "1s"

[[site]]
name = "T2_OPEN"
tier = 2
  [[site.service]]
  flavour = "OPEN"
  hostname = "open.local"

[[probe]]
metric = "org.e2e.open"
kind = "tcp"
flavours = ["OPEN"]
params = {{ host = "127.0.0.1", port = {open_port} }}
{shut}
"#
    )
}

/// `gridprobe serve` with [`config`]; returns it with its HTTP address.
fn start_serve(dir: &Path, open: &TcpListener) -> (Serve, String, String) {
    let open_port = open.local_addr().expect("addr").port();
    let config = write(dir, "vo.toml", &config(open_port, closed_port(), true));
    let store = dir.join("results.sqlite");
    let serve = Serve::start(&config, store.to_str().expect("utf-8"));
    let addr = serve.http_addr();
    (serve, addr, config)
}

/// The value of the sample of `family` whose labels include every `k="v"` given.
fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn scrape(addr: &str) -> String {
    let resp = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    resp.text().expect("body")
}

#[test]
fn serve_exposes_cells_sites_scheduler_and_store_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Held open for the test: TCP connects to it succeed (the kernel accepts into the backlog).
    let open = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (serve, addr, config) = start_serve(dir.path(), &open);
    let cell =
        |host: &'static str, probe: &'static str| [("vo", "e2e"), ("host", host), ("probe", probe)];

    // Wait until all three cells have reported.
    let mut text = String::new();
    let ready = wait_until(Duration::from_secs(30), || {
        text = scrape(&addr);
        sample(
            &text,
            "gridprobe_probe_status",
            &cell("open.local", "org.e2e.open"),
        ) == Some(0.0)
            && sample(
                &text,
                "gridprobe_probe_status",
                &cell("shut.local", "org.e2e.shut"),
            ) == Some(2.0)
            && sample(
                &text,
                "gridprobe_probe_status",
                &cell("shut.local", "org.e2e.after"),
            ) == Some(4.0)
    });
    assert!(
        ready,
        "cells never reported OK / CRITICAL / STANDBY:\n{text}\n{}",
        serve.output()
    );
    assert_eq!(
        sample(
            &text,
            "gridprobe_probe_status",
            &[("site", "T2_OPEN"), ("flavour", "OPEN")]
        ),
        Some(0.0)
    );
    let ts = sample(
        &text,
        "gridprobe_probe_last_run_timestamp_seconds",
        &cell("open.local", "org.e2e.open"),
    )
    .expect("last run");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!((now - ts).abs() < 60.0, "last run {ts}, now {now}");
    assert_eq!(
        sample(
            &text,
            "gridprobe_probe_stale",
            &cell("open.local", "org.e2e.open")
        ),
        Some(0.0)
    );
    assert!(sample(
        &text,
        "gridprobe_probe_runs_total",
        &[("kind", "tcp"), ("status", "CRITICAL")]
    )
    .is_some_and(|v| v >= 1.0));
    assert!(sample(
        &text,
        "gridprobe_probe_duration_seconds_count",
        &[("kind", "tcp")]
    )
    .is_some_and(|v| v >= 2.0));
    assert_eq!(sample(&text, "gridprobe_scheduler_entries", &[]), Some(3.0));
    assert!(
        sample(&text, "gridprobe_scheduler_runs_finished_total", &[]).is_some_and(|v| v >= 3.0)
    );
    assert_eq!(
        sample(&text, "gridprobe_store_write_errors_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "gridprobe_store_dropped_total", &[]),
        Some(0.0)
    );
    assert!(sample(&text, "gridprobe_store_pending", &[]).is_some());
    assert_eq!(
        sample(
            &text,
            "gridprobe_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // Site figures: computed in the background once scraped. A few seconds of results leave
    // over 90 % of the 24 hours unknown: figures n/a (absent, not 0), and since these are the
    // sites' first results ever, status new (5), not inactive (4).
    let sites = wait_until(Duration::from_secs(20), || {
        text = scrape(&addr);
        sample(
            &text,
            "gridprobe_site_status",
            &[("site", "T1_SHUT"), ("tier", "1")],
        )
        .is_some()
            && sample(
                &text,
                "gridprobe_site_status",
                &[("site", "T2_OPEN"), ("tier", "2")],
            )
            .is_some()
    });
    assert!(sites, "no site status:\n{text}");
    for s in ["T1_SHUT", "T2_OPEN"] {
        assert_eq!(
            sample(&text, "gridprobe_site_status", &[("site", s)]),
            Some(5.0),
            "{s}"
        );
        assert_eq!(
            sample(&text, "gridprobe_site_availability", &[("site", s)]),
            None,
            "{s}"
        );
    }
    assert!(sample(
        &text,
        "gridprobe_site_refresh_timestamp_seconds",
        &[("window", "24h")]
    )
    .is_some());

    // Cardinality: one series per cell, and no label value looks like a timestamp or an id.
    let status_lines = text
        .lines()
        .filter(|l| l.starts_with("gridprobe_probe_status{"))
        .count();
    assert_eq!(status_lines, 3, "{text}");
    // Every family served is one metric_names() knows (the dashboard test relies on it).
    let known = exported();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().expect("name"), parts.next().expect("type"));
        let series = if kind == "histogram" {
            format!("{name}_bucket")
        } else {
            name.to_string()
        };
        assert!(
            known.contains(&series),
            "{name} served but not in metric_names()"
        );
    }

    // A reload that removes the failing site: its cells and its site series go.
    let open_port = open.local_addr().expect("addr").port();
    std::fs::write(&config, self::config(open_port, closed_port(), false)).expect("rewrite config");
    let resp = client()
        .post(format!("http://{addr}/-/reload"))
        .send()
        .expect("POST /-/reload");
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    let gone = wait_until(Duration::from_secs(10), || {
        text = scrape(&addr);
        !text.contains("T1_SHUT") && !text.contains("shut.local")
    });
    assert!(gone, "removed cells still exported:\n{text}");
    assert_eq!(
        sample(
            &text,
            "gridprobe_probe_status",
            &cell("open.local", "org.e2e.open")
        ),
        Some(0.0)
    );
    assert_eq!(sample(&text, "gridprobe_scheduler_entries", &[]), Some(1.0));
    assert_eq!(
        sample(&text, "gridprobe_scheduler_reloads_total", &[]),
        Some(1.0)
    );
    drop(serve);
}

/// A child process killed (and reaped) when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A free TCP port on 127.0.0.1 for a server that must be told its port up front.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Queries Prometheus's HTTP API; returns the JSON answer.
fn prom_api(port: u16, path: &str, query: &[(&str, &str)]) -> Option<Value> {
    let resp = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .query(query)
        .send()
        .ok()?;
    serde_json::from_str(&resp.text().ok()?).ok()
}

/// Grafana's variables, replaced so that an expression is plain PromQL.
fn without_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$vo", ".*")
        .replace("$site", ".*")
        .replace("$instance", ".*")
}

#[test]
fn a_real_prometheus_scrapes_serve_and_evaluates_the_dashboard_and_rules() {
    let Some(prometheus) = tool("GRIDPROBE_TEST_PROMETHEUS", "prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let open = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (serve, addr, _config) = start_serve(dir.path(), &open);

    let port = free_port();
    let rules = repo().join("deploy/prometheus/alerts.yml");
    let prom_config = write(
        dir.path(),
        "prometheus.yml",
        &format!(
            r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - "{rules}"
scrape_configs:
  - job_name: gridprobe
    metrics_path: /metrics
    static_configs:
      - targets: ["{addr}"]
"#,
            rules = rules.display()
        ),
    );
    let data = dir.path().join("tsdb");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={prom_config}"))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().expect("log"))
        .spawn()
        .expect("prometheus starts");
    let mut prom = Killed(child);
    let prom_log =
        || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    // A series scraped from serve shows up in the query API.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    let found = loop {
        if let Ok(Some(status)) = prom.0.try_wait() {
            panic!("prometheus exited with {status}:\n{}", prom_log());
        }
        let answer = prom_api(
            port,
            "/api/v1/query",
            &[("query", "gridprobe_probe_status")],
        );
        let series = answer
            .as_ref()
            .and_then(|a| a["data"]["result"].as_array())
            .cloned()
            .unwrap_or_default();
        if series
            .iter()
            .any(|s| s["metric"]["probe"] == "org.e2e.open" && s["metric"]["job"] == "gridprobe")
        {
            break Some(series);
        }
        last = answer;
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let series = found.unwrap_or_else(|| {
        panic!(
            "no gridprobe_probe_status series in Prometheus; last answer {last:?}\nprometheus:\n{}\nserve:\n{}",
            prom_log(),
            serve.output()
        )
    });
    let open_cell = series
        .iter()
        .find(|s| s["metric"]["probe"] == "org.e2e.open")
        .expect("open cell");
    assert_eq!(open_cell["metric"]["site"], "T2_OPEN");
    assert_eq!(open_cell["value"][1], "0", "{open_cell}");

    // Every dashboard query is valid PromQL that Prometheus evaluates.
    for (title, expr) in dashboard_exprs(&dashboard()) {
        let q = without_grafana_variables(&expr);
        let a = prom_api(port, "/api/v1/query", &[("query", q.as_str())])
            .unwrap_or_else(|| panic!("no answer for panel `{title}`"));
        assert_eq!(a["status"], "success", "panel `{title}`: `{q}`: {a}");
    }
    // The alert rules are loaded and every one of them evaluates without error.
    let healthy = wait_until(Duration::from_secs(30), || {
        let Some(a) = prom_api(port, "/api/v1/rules", &[]) else {
            return false;
        };
        let rules: Vec<&Value> = a["data"]["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                    .collect()
            })
            .unwrap_or_default();
        rules.len() >= 6 && rules.iter().all(|r| r["health"] == "ok")
    });
    assert!(
        healthy,
        "alert rules not all healthy: {:?}\n{}",
        prom_api(port, "/api/v1/rules", &[]),
        prom_log()
    );

    // Stop both: Prometheus first (it would only log failed scrapes otherwise).
    let _ = Command::new("kill")
        .args(["-TERM", &prom.0.id().to_string()])
        .status();
    let stopped = wait_until(Duration::from_secs(20), || {
        matches!(prom.0.try_wait(), Ok(Some(_)))
    });
    assert!(stopped, "prometheus did not stop on SIGTERM");
    let mut serve = serve;
    serve.signal("TERM");
    assert_eq!(
        serve.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        serve.output()
    );
}
