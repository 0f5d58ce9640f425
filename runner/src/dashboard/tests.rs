//! Dashboard tests in process, through the router, on a real SQLite store in a temporary file
//! (and a store that always fails, for the 500 page). The browser tests are in
//! `tests/dashboard.rs`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Status, Trigger};
use gridprobe_results::{
    spawn_writer, CellFilter, CellKey, HistoryQuery, NewResult, ResultStore, SqliteStore,
    StoreError, StoreEvent, StoredResult, WriterConfig,
};
use tower::ServiceExt;

use super::*;
use crate::state::Plan;

const CONFIG: &str = r#"
vo = "v"
[defaults]
interval = "10m"
timeout = "1m"
[[site]]
name = "T1_A"
tier = 1
  [[site.service]]
  flavour = "CE"
  hostname = "ce1.a"
  [[site.service]]
  flavour = "CE"
  hostname = "ce2.a"
[[site]]
name = "T2 B/<i>"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce3.b"
  [[site.service]]
  flavour = "SE"
  hostname = "se1.b"
[[probe]]
metric = "org.v.ce-job"
kind = "tcp"
flavours = ["CE"]
  [probe.params]
  port = 9
[[probe]]
metric = "org.v.se-put"
kind = "tcp"
flavours = ["SE"]
  [probe.params]
  port = 9
[[downtime]]
service = "se1.b"
start = "2000-01-01 00:00"
end = "2999-01-01 00:00"
classification = "scheduled"
reason = "disk <b>replacement</b>"
"#;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gridprobe-dashboard-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn plan(text: &str) -> Plan {
    let loaded = gridprobe_config::load_str(Path::new("v.toml"), text);
    assert!(loaded.diagnostics.is_empty(), "{}", loaded.diagnostics);
    let (probes, diagnostics) = gridprobe_probes::registry::build_all(&loaded.config);
    assert!(diagnostics.is_empty(), "{diagnostics}");
    Plan {
        config: Arc::new(loaded.config),
        probes: Arc::new(probes),
    }
}

fn state(store: Arc<dyn ResultStore>) -> HttpState {
    let (writer, _task) = spawn_writer(store.clone(), WriterConfig::default());
    let (reload, _) = tokio::sync::mpsc::channel(1);
    HttpState {
        shared: crate::state::ServeState::new(plan(CONFIG), writer, vec![]),
        store,
        reload,
        metrics: crate::metrics::Metrics::new(),
        runs: crate::ondemand::RunManager::new(),
        notify: None,
    }
}

fn result(site: &str, host: &str, flavour: &str, metric: &str, status: Status) -> ProbeResult {
    ProbeResult {
        metric: metric.into(),
        kind: "tcp".into(),
        vo: "v".into(),
        site: site.into(),
        hostname: host.into(),
        flavour: flavour.into(),
        started_at_ms: now_ms() - 60_000,
        duration_ms: 12,
        outcome: Outcome::new(status, format!("{} on {host}", status.name())),
        attempt: 1,
        trigger: Trigger::Scheduled,
    }
}

/// Ids of the inserted results, in order.
async fn fill(store: &SqliteStore, results: Vec<ProbeResult>) -> Vec<i64> {
    let rows: Vec<NewResult> = results
        .into_iter()
        .map(|result| NewResult {
            result,
            is_final: true,
        })
        .collect();
    store.insert(&rows).await.expect("insert")
}

async fn get(state: &HttpState, uri: &str) -> (StatusCode, String) {
    let response = routes()
        .with_state(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The HTML of the matrix row of a site.
fn row<'a>(html: &'a str, site_attr: &str) -> &'a str {
    let start = html
        .find(&format!("<tr data-site=\"{site_attr}\""))
        .unwrap_or_else(|| panic!("no row for {site_attr} in {html}"));
    let end = html[start..]
        .find("</tr>")
        .map_or(html.len(), |e| start + e);
    &html[start..end]
}

/// The cell classes of a row, in column order.
fn classes(row: &str) -> Vec<&str> {
    row.split("<td class=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect()
}

#[tokio::test]
async fn matrix_groups_by_tier_colours_cells_and_escapes() {
    let dir = Scratch::new();
    let store = Arc::new(SqliteStore::open(&dir.0.join("s.sqlite")).expect("store"));
    let mut evil = result("T2 B/<i>", "ce3.b", "CE", "org.v.ce-job", Status::Critical);
    evil.outcome.summary = "<script>alert(1)</script> & \"quoted\"".into();
    let ids = fill(
        &store,
        vec![
            result("T1_A", "ce1.a", "CE", "org.v.ce-job", Status::Critical),
            result("T1_A", "ce2.a", "CE", "org.v.ce-job", Status::Ok),
            evil,
            result("T2 B/<i>", "se1.b", "SE", "org.v.se-put", Status::Critical),
        ],
    )
    .await;
    let st = state(store);
    let (code, html) = get(&st, "/").await;
    assert_eq!(code, StatusCode::OK, "{html}");
    // Tiers in order, each with its sites.
    let t1 = html.find("Tier 1 · 1 site").expect("tier 1 group");
    let t2 = html.find("Tier 2 · 1 site").expect("tier 2 group");
    assert!(t1 < t2);
    // Site A: one CE is enough (OK beats CRITICAL), linked to the OK instance's result.
    let a = row(&html, "T1_A");
    assert_eq!(classes(a), vec!["st-ok", "none"], "{a}");
    assert!(a.contains(&format!("href=\"/results/{}\"", ids[1])), "{a}");
    assert!(a.contains("best of 2 instances"), "{a}");
    // Site B: CRITICAL CE, and the SE in a configured outage shows as downtime, not red.
    let b = row(&html, "T2 B/&lt;i&gt;");
    assert_eq!(classes(b), vec!["st-error", "st-dt"], "{b}");
    assert!(b.contains("href=\"/sites/T2%20B%2F%3Ci%3E\""), "{b}");
    assert!(b.contains("disk &lt;b&gt;replacement&lt;/b&gt;"), "{b}");
    // Nothing from the store or the config is markup.
    assert!(!html.contains("<script>alert"), "unescaped summary");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot;"));
    assert!(!html.contains("<i>"));
}

#[tokio::test]
async fn filters_are_validated_and_named() {
    let dir = Scratch::new();
    let store = Arc::new(SqliteStore::open(&dir.0.join("s.sqlite")).expect("store"));
    let st = state(store);
    let (code, html) = get(&st, "/?tier=2").await;
    assert_eq!(code, StatusCode::OK);
    assert!(!html.contains("data-site=\"T1_A\""));
    assert!(html.contains("Tier 2 · 1 site"));
    // Empty values are "all", as a form's first option sends them.
    let (code, html) = get(&st, "/?vo=&tier=&flavour=").await;
    assert_eq!(code, StatusCode::OK);
    assert!(html.contains("data-site=\"T1_A\""));
    let (code, html) = get(&st, "/?flavour=SE").await;
    assert_eq!(code, StatusCode::OK);
    assert!(!html.contains("data-site=\"T1_A\""), "no SE at T1_A");
    assert!(
        !html.contains("data-metric=\"org.v.ce-job\""),
        "CE column dropped"
    );
    for (uri, param, words) in [
        ("/?tier=7", "tier", "write 0, 1, 2 or 3"),
        ("/?tier=one", "tier", "`one` is not a tier"),
        ("/?flavour=SRM", "flavour", "known: CE, SE"),
        ("/?flavour=ce", "flavour", "did you mean `CE`"),
        ("/?vo=atlas", "vo", "this service monitors `v`"),
        ("/?colour=red", "colour", "unknown parameter"),
        ("/?tier=1&tier=2", "tier", "more than once"),
        ("/reasons?since=yesterday", "since", "24h"),
        ("/reasons?since=0s", "since", "duration"),
        ("/results/abc", "id", "not a result id"),
    ] {
        let (code, html) = get(&st, uri).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}: {html}");
        assert!(
            html.contains(&format!("parameter `{param}`")),
            "{uri}: {html}"
        );
        assert!(html.contains(words), "{uri}: {html}");
    }
}

#[tokio::test]
async fn unknown_site_and_result_are_404_pages() {
    let dir = Scratch::new();
    let store = Arc::new(SqliteStore::open(&dir.0.join("s.sqlite")).expect("store"));
    let st = state(store);
    let (code, html) = get(&st, "/sites/T1_B").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(html.contains("no site named `T1_B`"), "{html}");
    assert!(html.contains("did you mean `T1_A`"), "{html}");
    assert!(html.starts_with("<!DOCTYPE html>"));
    let (code, html) = get(&st, "/results/424242").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(html.contains("no result with id 424242"), "{html}");
}

#[tokio::test]
async fn site_page_has_strips_figures_downtimes_and_run_form_state() {
    let dir = Scratch::new();
    let store = Arc::new(SqliteStore::open(&dir.0.join("s.sqlite")).expect("store"));
    let mut old = result("T2 B/<i>", "ce3.b", "CE", "org.v.ce-job", Status::Ok);
    old.started_at_ms = now_ms() - 3 * 3_600_000;
    fill(
        &store,
        vec![
            old,
            result("T2 B/<i>", "ce3.b", "CE", "org.v.ce-job", Status::Critical),
        ],
    )
    .await;
    let st = state(store);
    let (code, html) = get(&st, "/sites/T2%20B%2F%3Ci%3E").await;
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(html.contains("<h1>T2 B/&lt;i&gt; "), "{html}");
    // One strip per instance × probe, with the OK stretch, then the CRITICAL one.
    assert_eq!(html.matches("<svg class=\"strip\"").count(), 2, "{html}");
    let ce = &html[html
        .find("data-metric=\"org.v.ce-job\"><td>")
        .expect("ce strip")..];
    let ok = ce.find("class=\"t-ok\"").expect("ok segment");
    let crit = ce.find("class=\"t-error\"").expect("critical segment");
    assert!(ok < crit, "segments in time order");
    // The SE is in downtime all day.
    let se = &html[html
        .find("data-metric=\"org.v.se-put\"><td>")
        .expect("se strip")..];
    assert!(se.contains("class=\"t-dt\""));
    assert!(html.contains("This month ("));
    assert!(html.contains("disk &lt;b&gt;replacement&lt;/b&gt;"));
    // No token in [access]: the page says runs are off instead of showing a useless form.
    assert!(html.contains("On-demand runs are off"));
    assert!(!html.contains("id=\"run-now\""));
}

#[tokio::test]
async fn result_page_shows_output_perfdata_and_previous_results() {
    let dir = Scratch::new();
    let store = Arc::new(SqliteStore::open(&dir.0.join("s.sqlite")).expect("store"));
    let mut first = result("T1_A", "ce1.a", "CE", "org.v.ce-job", Status::Ok);
    first.started_at_ms -= 600_000;
    let mut second = result("T1_A", "ce1.a", "CE", "org.v.ce-job", Status::Critical);
    second.outcome = Outcome::critical("connect failed <b>")
        .with_details("line 1\n<script>x</script>\nline 3")
        .with_perfdata(vec![Perfdatum::new("time", 0.25, "s")]);
    let ids = fill(&store, vec![first, second]).await;
    let st = state(store);
    let (code, html) = get(&st, &format!("/results/{}", ids[1])).await;
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(html.contains("<p class=\"summary\">connect failed &lt;b&gt;</p>"));
    assert!(
        html.contains("<pre class=\"output\">line 1\n&lt;script&gt;x&lt;/script&gt;\nline 3</pre>")
    );
    assert!(html.contains("<td>time</td><td class=\"num\">0.25</td><td>s</td>"));
    assert!(
        html.contains(&format!("href=\"/results/{}\"", ids[0])),
        "previous result linked"
    );
    assert!(!html.contains("newer result"));
    // The older one points at the newer.
    let (_, html) = get(&st, &format!("/results/{}", ids[0])).await;
    assert!(html.contains("This cell has a newer result"), "{html}");
    assert!(html.contains("None before this one."));
}

#[tokio::test]
async fn reasons_page_groups_failures() {
    let dir = Scratch::new();
    let store = Arc::new(SqliteStore::open(&dir.0.join("s.sqlite")).expect("store"));
    let mut a = result("T1_A", "ce1.a", "CE", "org.v.ce-job", Status::Critical);
    a.outcome.summary = "proxy expired on ce1.a.example.org".into();
    let mut b = result("T2 B/<i>", "ce3.b", "CE", "org.v.ce-job", Status::Critical);
    b.outcome.summary = "proxy expired on ce3.b.example.org".into();
    fill(&store, vec![a, b]).await;
    let st = state(store);
    let (code, html) = get(&st, "/reasons?since=2h").await;
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(html.contains("proxy expired on &lt;host&gt;"), "{html}");
    assert!(html.contains("href=\"/sites/T1_A\""));
    assert!(html.contains("last 2h"));
}

/// A store whose every read fails, as a locked or vanished database would.
#[derive(Debug)]
struct BrokenStore;

fn broken<T>() -> Result<T, StoreError> {
    Err(StoreError::Query("database is locked".into()))
}

#[async_trait]
impl ResultStore for BrokenStore {
    async fn insert(&self, _: &[NewResult]) -> Result<Vec<i64>, StoreError> {
        broken()
    }
    async fn latest(&self, _: &CellFilter) -> Result<Vec<StoredResult>, StoreError> {
        broken()
    }
    async fn history(&self, _: &HistoryQuery) -> Result<Vec<StoredResult>, StoreError> {
        broken()
    }
    async fn get(&self, _: i64) -> Result<Option<StoredResult>, StoreError> {
        broken()
    }
    async fn delete_before(&self, _: i64) -> Result<u64, StoreError> {
        broken()
    }
    async fn record_event(&self, _: &StoreEvent) -> Result<(), StoreError> {
        broken()
    }
    async fn events(&self, _: i64) -> Result<Vec<StoreEvent>, StoreError> {
        broken()
    }
    async fn timelines(
        &self,
        _: i64,
        _: i64,
        _: &CellFilter,
    ) -> Result<Vec<(CellKey, Vec<(i64, Status)>)>, StoreError> {
        broken()
    }
    async fn replace_downtimes(
        &self,
        _: &str,
        _: &[gridprobe_config::Downtime],
    ) -> Result<(), StoreError> {
        broken()
    }
    async fn downtimes(
        &self,
        _: i64,
        _: i64,
    ) -> Result<Vec<gridprobe_config::Downtime>, StoreError> {
        broken()
    }
}

#[tokio::test]
async fn store_errors_are_500_pages_with_the_message() {
    let st = state(Arc::new(BrokenStore));
    for uri in ["/", "/sites/T1_A", "/results/1", "/reasons"] {
        let (code, html) = get(&st, uri).await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{uri}");
        assert!(html.contains("database is locked"), "{uri}: {html}");
    }
}

#[tokio::test]
async fn assets_are_served_and_pages_carry_a_strict_policy() {
    let dir = Scratch::new();
    let store = Arc::new(SqliteStore::open(&dir.0.join("s.sqlite")).expect("store"));
    let st = state(store);
    let (code, css) = get(&st, "/static/gridprobe.css").await;
    assert_eq!(code, StatusCode::OK);
    assert!(css.contains(".st-error"));
    let (code, js) = get(&st, "/static/gridprobe.js").await;
    assert_eq!(code, StatusCode::OK);
    assert!(js.contains("/api/v1/runs") || js.contains("form.action"));
    let response = routes()
        .with_state(st)
        .oneshot(Request::get("/").body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let csp = response
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(response.headers().contains_key("server-timing"));
}

#[test]
fn path_segments_are_percent_encoded() {
    assert_eq!(enc("LCG.CERN.ch"), "LCG.CERN.ch");
    assert_eq!(enc("a b/c?d#e"), "a%20b%2Fc%3Fd%23e");
    assert_eq!(enc("é"), "%C3%A9");
}

#[test]
fn instances_rank_best_first_with_downtime_above_stale() {
    let s = |st| Shown::State(CellState::Current(st));
    assert!(s(Status::Ok).rank() > s(Status::Critical).rank());
    assert!(s(Status::Standby).rank() > Shown::Downtime.rank());
    assert!(Shown::Downtime.rank() > Shown::State(CellState::Missing).rank());
    assert_eq!(Shown::Downtime.class(), "st-dt");
    assert_eq!(s(Status::Standby).class(), "st-stb");
}

/// A store whose `timelines` (the site statuses' input) takes a second, as on a large VO.
#[derive(Debug)]
struct SlowTimelines(SqliteStore);

#[async_trait]
impl ResultStore for SlowTimelines {
    async fn insert(&self, r: &[NewResult]) -> Result<Vec<i64>, StoreError> {
        self.0.insert(r).await
    }
    async fn latest(&self, f: &CellFilter) -> Result<Vec<StoredResult>, StoreError> {
        self.0.latest(f).await
    }
    async fn history(&self, q: &HistoryQuery) -> Result<Vec<StoredResult>, StoreError> {
        self.0.history(q).await
    }
    async fn get(&self, id: i64) -> Result<Option<StoredResult>, StoreError> {
        self.0.get(id).await
    }
    async fn delete_before(&self, t: i64) -> Result<u64, StoreError> {
        self.0.delete_before(t).await
    }
    async fn record_event(&self, e: &StoreEvent) -> Result<(), StoreError> {
        self.0.record_event(e).await
    }
    async fn events(&self, t: i64) -> Result<Vec<StoreEvent>, StoreError> {
        self.0.events(t).await
    }
    async fn timelines(
        &self,
        since: i64,
        until: i64,
        f: &CellFilter,
    ) -> Result<Vec<(CellKey, Vec<(i64, Status)>)>, StoreError> {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        self.0.timelines(since, until, f).await
    }
    async fn replace_downtimes(
        &self,
        source: &str,
        d: &[gridprobe_config::Downtime],
    ) -> Result<(), StoreError> {
        self.0.replace_downtimes(source, d).await
    }
    async fn downtimes(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<gridprobe_config::Downtime>, StoreError> {
        self.0.downtimes(since, until).await
    }
}

#[tokio::test]
async fn slow_site_statuses_do_not_hold_up_the_matrix() {
    let dir = Scratch::new();
    let store = SqliteStore::open(&dir.0.join("s.sqlite")).expect("store");
    fill(
        &store,
        vec![result("T1_A", "ce1.a", "CE", "org.v.ce-job", Status::Ok)],
    )
    .await;
    let st = state(Arc::new(SlowTimelines(store)));
    let started = std::time::Instant::now();
    let (code, html) = get(&st, "/").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(900),
        "waited for the statuses: {:?}",
        started.elapsed()
    );
    assert!(html.contains("ss ss-pending"), "{html}");
    assert!(html.contains("Site statuses are being computed"));
    // Once computed (in the background), they are shown.
    let shown = async {
        loop {
            let (_, html) = get(&st, "/").await;
            if !html.contains("ss-pending") {
                return html;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let html = tokio::time::timeout(std::time::Duration::from_secs(10), shown)
        .await
        .expect("statuses computed within 10 s");
    // T1_A's only result is a minute old: a new site (it was "inactive" before issue 13).
    assert!(row(&html, "T1_A").contains("ss ss-new"), "{html}");
}

#[tokio::test]
async fn a_site_measured_for_two_hours_is_new_with_its_figure_over_the_known_time() {
    let dir = Scratch::new();
    let store = Arc::new(SqliteStore::open(&dir.0.join("s.sqlite")).expect("store"));
    // T1_A's first result ever came two hours ago, every 10 minutes since, all OK: 92 % of
    // the 24 hours is unknown, so the 24-hour figure is n/a.
    let now = now_ms();
    let results = (0..=12)
        .map(|i| {
            let mut r = result("T1_A", "ce1.a", "CE", "org.v.ce-job", Status::Ok);
            r.started_at_ms = now - 2 * 3_600_000 + i * 600_000;
            r
        })
        .collect();
    fill(&store, results).await;
    let st = state(store);
    let computed = async {
        loop {
            let (_, html) = get(&st, "/").await;
            if !html.contains("ss-pending") {
                return html;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let html = tokio::time::timeout(std::time::Duration::from_secs(10), computed)
        .await
        .expect("statuses computed within 10 s");
    let a = row(&html, "T1_A");
    assert!(a.contains("class=\"ss ss-new\""), "{a}");
    assert!(!a.contains("inactive"), "{a}");
    assert!(
        a.contains(
            "site status over the last 24 h: new, 2 h of data (availability 100.0% over 2 h)"
        ),
        "{a}"
    );
    // The site page's badge says so too, and its month figures are given over the known time.
    let (code, page) = get(&st, "/sites/T1_A").await;
    assert_eq!(code, StatusCode::OK, "{page}");
    assert!(
        page.contains("class=\"badge sb-new\" title=\"last 24 h, availability 100.0% over 2 h\">new, 2 h of data</span>"),
        "{page}"
    );
    assert!(
        page.contains("<th>Site</th><td class=\"num\">100.0% over 2 h</td>"),
        "{page}"
    );
}

#[tokio::test]
async fn report_page_judges_sites_draws_strips_and_downloads() {
    let dir = Scratch::new();
    let store = Arc::new(SqliteStore::open(&dir.0.join("s.sqlite")).expect("store"));
    fill(
        &store,
        vec![
            result("T1_A", "ce1.a", "CE", "org.v.ce-job", Status::Ok),
            result("T2 B/<i>", "ce3.b", "CE", "org.v.ce-job", Status::Critical),
        ],
    )
    .await;
    let st = state(store);
    let (code, html) = get(&st, "/reports").await;
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(html.contains("?format=pdf"), "{html}");
    let (code, html) = get(&st, "/reports/24h").await;
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(html.contains("Availability report 24h · v"), "{html}");
    assert!(html.contains("<svg class=\"rstrip\""), "{html}");
    assert!(html.contains("How the figures are defined"), "{html}");
    // The site name is escaped and linked.
    assert!(html.contains("href=\"/sites/T2%20B%2F%3Ci%3E\""), "{html}");
    assert!(!html.contains("<i>"), "unescaped site name");
    // The configured downtime of se1.b is listed, escaped.
    assert!(
        html.contains("disk &lt;b&gt;replacement&lt;/b&gt;"),
        "{html}"
    );

    let response = routes()
        .with_state(st.clone())
        .oneshot(
            Request::get("/reports/24h?format=pdf")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/pdf"[..])
    );
    let body = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .expect("body");
    assert!(body.starts_with(b"%PDF-"));
    let (code, csv) = get(&st, "/reports/24h?format=csv").await;
    assert_eq!(code, StatusCode::OK);
    assert!(csv.starts_with("site,tier,availability"), "{csv}");
    let (code, json) = get(&st, "/reports/24h?format=json").await;
    assert_eq!(code, StatusCode::OK);
    assert!(json.contains("\"verdict\""), "{json}");

    for (uri, param) in [
        ("/reports/24h?format=docx", "format"),
        ("/reports/last%20month", "period"),
        ("/reports/1990-01", "period"),
        ("/reports/2999-01", "period"),
        ("/reports/24h?profile=nope", "profile"),
        ("/reports/24h?colour=red", "colour"),
    ] {
        let (code, html) = get(&st, uri).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}: {html}");
        assert!(
            html.contains(&format!("parameter `{param}`")),
            "{uri}: {html}"
        );
    }
}

#[tokio::test]
async fn trends_page_lists_flapping_cells_and_checks_its_parameters() {
    let dir = Scratch::new();
    let store = Arc::new(SqliteStore::open(&dir.0.join("s.sqlite")).expect("store"));
    let mut rows = Vec::new();
    for (i, status) in [Status::Ok, Status::Critical, Status::Ok, Status::Critical]
        .into_iter()
        .enumerate()
    {
        let mut r = result("T1_A", "ce1.a", "CE", "org.v.ce-job", status);
        r.started_at_ms -= (4 - i as i64) * 300_000;
        rows.push(r);
    }
    fill(&store, rows).await;
    let st = state(store);
    let (code, html) = get(&st, "/trends?period=24h").await;
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(html.contains("Most flapping cells"), "{html}");
    // Three changes on ce1.a, shown with the probe's short name.
    let flapping = &html[html.find("Most flapping cells").unwrap_or(0)..];
    assert!(flapping.contains("<td class=\"num\">3</td>"), "{flapping}");
    assert!(flapping.contains("ce-job"), "{flapping}");
    assert!(html.contains("Longest CRITICAL"), "{html}");
    for (uri, param) in [
        ("/trends?period=forever", "period"),
        ("/trends?site=T1_B", "site"),
        ("/trends?limit=3", "limit"),
    ] {
        let (code, html) = get(&st, uri).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}: {html}");
        assert!(
            html.contains(&format!("parameter `{param}`")),
            "{uri}: {html}"
        );
    }
}

#[tokio::test]
async fn result_page_shows_the_cells_long_history_bounded() {
    let dir = Scratch::new();
    let store = Arc::new(SqliteStore::open(&dir.0.join("s.sqlite")).expect("store"));
    // Every hour for 60 days: 1,440 results, CRITICAL on the first 10 days.
    let mut rows = Vec::new();
    for h in 0..60 * 24_i64 {
        let status = if h < 10 * 24 {
            Status::Critical
        } else {
            Status::Ok
        };
        let mut r = result("T1_A", "ce1.a", "CE", "org.v.ce-job", status);
        r.started_at_ms -= (60 * 24 - h) * 3_600_000;
        r.duration_ms = 100 + (h % 7) as u64;
        r.outcome = r
            .outcome
            .with_perfdata(vec![Perfdatum::new("time", h as f64 / 10.0, "s")]);
        rows.push(r);
    }
    let ids = fill(&store, rows).await;
    let st = state(store);
    let last = ids.last().copied().unwrap_or_default();
    let (code, html) = get(&st, &format!("/results/{last}")).await;
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(html.contains("History of this cell"), "{html}");
    assert!(html.contains("data-days=\"30\""), "{html}");
    assert!(html.contains("data-days=\"90\""), "{html}");
    // The 90-day strip shows the CRITICAL days; the 30-day one does not reach back to them.
    let ninety = &html[html
        .find("aria-label=\"the last 90 days\"")
        .expect("90-day strip")..];
    let ninety = &ninety[..ninety.find("</svg>").unwrap_or(ninety.len())];
    assert!(ninety.contains("t-error"), "{ninety}");
    let thirty = &html[html
        .find("aria-label=\"the last 30 days\"")
        .expect("30-day strip")..];
    let thirty = &thirty[..thirty.find("</svg>").unwrap_or(thirty.len())];
    assert!(!thirty.contains("t-error"), "{thirty}");
    // A plot per series, each bounded to PLOT_POINTS points.
    for series in ["duration", "time"] {
        let at = html
            .find(&format!("data-series=\"{series}\""))
            .unwrap_or_else(|| panic!("no {series} plot in {html}"));
        let fig = &html[at..];
        let fig = &fig[..fig.find("</figure>").unwrap_or(fig.len())];
        let points = fig
            .split("points=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .unwrap_or("");
        let n = points.split_whitespace().count();
        assert!(n > 50 && n <= PLOT_POINTS, "{series}: {n} points");
    }
    assert!(html.contains("1440 results"), "{html}");
}

/// The dashboard's copy of the latest states as (cell, id, start, status, summary), and the
/// store's `latest` of the plan's VO restricted to the plan's cells, the same way.
async fn copy_and_store(
    st: &HttpState,
) -> (
    Vec<(CellKey, i64, i64, Status, String)>,
    Vec<(CellKey, i64, i64, Status, String)>,
) {
    let config = st.shared.plan().config;
    let instances = config.instances();
    let copy = with_latest(st, &config, |m| {
        instances
            .iter()
            .zip(&m.slots)
            .filter_map(|(inst, slot)| {
                let s = slot.as_ref()?;
                Some((
                    crate::state::cell_key(&config, inst),
                    s.id,
                    s.started_ms,
                    s.status,
                    s.summary.to_string(),
                ))
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("latest states");
    let cells: std::collections::HashSet<CellKey> = instances
        .iter()
        .map(|i| crate::state::cell_key(&config, i))
        .collect();
    let mut store: Vec<_> = st
        .store
        .latest(&CellFilter {
            vo: Some(config.vo.clone()),
            ..CellFilter::default()
        })
        .await
        .expect("latest")
        .into_iter()
        .map(|r| {
            (
                CellKey::of(&r.result),
                r.id,
                r.result.started_at_ms,
                r.result.outcome.status,
                r.result.outcome.summary,
            )
        })
        .filter(|(k, ..)| cells.contains(k))
        .collect();
    let mut copy = copy;
    copy.sort_by(|a, b| a.0.cmp(&b.0));
    store.sort_by(|a, b| a.0.cmp(&b.0));
    (copy, store)
}

#[tokio::test]
async fn the_matrix_copy_of_latest_states_agrees_with_the_store() {
    let dir = Scratch::new();
    let path = dir.0.join("s.sqlite");
    let store = Arc::new(SqliteStore::open(&path).expect("store"));
    let st = state(store.clone());
    // Empty store, then first results.
    let (copy, stored) = copy_and_store(&st).await;
    assert_eq!(copy, stored);
    assert!(copy.is_empty());
    fill(
        &store,
        vec![
            result("T1_A", "ce1.a", "CE", "org.v.ce-job", Status::Critical),
            result("T1_A", "ce2.a", "CE", "org.v.ce-job", Status::Ok),
            result("T2 B/<i>", "ce3.b", "CE", "org.v.ce-job", Status::Warning),
        ],
    )
    .await;
    let (copy, stored) = copy_and_store(&st).await;
    assert_eq!(copy.len(), 3);
    assert_eq!(copy, stored);

    // A newer result replaces a cell's state; a late one (older than the cell's latest) does
    // not, in the store or in the copy.
    let mut newer = result("T1_A", "ce1.a", "CE", "org.v.ce-job", Status::Ok);
    newer.started_at_ms += 30_000;
    newer.outcome.summary = "back".into();
    let mut late = result("T2 B/<i>", "ce3.b", "CE", "org.v.ce-job", Status::Critical);
    late.started_at_ms -= 3_600_000;
    fill(&store, vec![newer, late]).await;
    let (copy, stored) = copy_and_store(&st).await;
    assert_eq!(copy, stored);
    assert!(copy.iter().any(|c| c.4 == "back" && c.3 == Status::Ok));
    assert!(copy
        .iter()
        .any(|c| c.0.hostname == "ce3.b" && c.3 == Status::Warning));

    // Another process writing into the same file (as `gridprobe consume` would), and a cell
    // whose latest result is another VO's (the store's latest of this VO leaves it out).
    let other = SqliteStore::open(&path).expect("second connection");
    let mut se = result("T2 B/<i>", "se1.b", "SE", "org.v.se-put", Status::Unknown);
    se.started_at_ms += 1_000;
    let mut foreign = result("T1_A", "ce2.a", "CE", "org.v.ce-job", Status::Critical);
    foreign.vo = "other".into();
    foreign.started_at_ms += 40_000;
    fill(&other, vec![se, foreign]).await;
    let (copy, stored) = copy_and_store(&st).await;
    assert_eq!(copy, stored);
    assert!(!copy.iter().any(|c| c.0.hostname == "ce2.a"), "{copy:?}");
    assert!(copy.iter().any(|c| c.0.hostname == "se1.b"));

    // Retention (everything but each cell's latest) changes nothing.
    assert!(
        store
            .delete_before(now_ms() + 86_400_000)
            .await
            .expect("retention")
            > 0
    );
    let (copy, stored) = copy_and_store(&st).await;
    assert_eq!(copy, stored);
    assert_eq!(copy.len(), 3);

    // The page shows the copy: ce1.a's OK result, linked by id.
    forget_rendered_pages();
    let (_, html) = get(&st, "/").await;
    let id = copy.iter().find(|c| c.0.hostname == "ce1.a").map(|c| c.1);
    assert!(
        row(&html, "T1_A").contains(&format!("/results/{}\"", id.unwrap_or(0))),
        "{html}"
    );

    // A reload with another plan (a site renamed): a new copy, for its cells.
    let reloaded = CONFIG.replace("name = \"T2 B/<i>\"", "name = \"T2_C\"");
    st.shared.set_plan(plan(&reloaded));
    let (copy, stored) = copy_and_store(&st).await;
    assert_eq!(copy, stored);
    assert_eq!(copy.len(), 1, "{copy:?}");
    fill(
        &store,
        vec![result("T2_C", "se1.b", "SE", "org.v.se-put", Status::Ok)],
    )
    .await;
    let (copy, stored) = copy_and_store(&st).await;
    assert_eq!(copy, stored);
    assert_eq!(copy.len(), 2);
}
