//! Tests of the `storage` kind; the WebDAV and XRootD round trips use the servers of
//! `scripts/test-env.sh`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::test_support::test_service;
use crate::test_support::{build_with, context, line_of};

fn probe(params: &str) -> SharedProbe {
    crate::test_support::built(build, NAME, params)
}

fn ctx(timeout: Duration) -> ProbeContext {
    let mut c = context("127.0.0.1", None, timeout);
    c.metric = "org.test.SE-webdav".into();
    c
}

/// Builds the probe from `params` and runs it once with `timeout`.
async fn outcome(params: &str, timeout: Duration) -> Outcome {
    probe(params).run(&ctx(timeout)).await
}

fn labels(o: &Outcome) -> Vec<&str> {
    crate::test_support::perf_labels(o)
}

fn perf(o: &Outcome, label: &str) -> Option<f64> {
    o.perfdata
        .iter()
        .find(|p| p.label == label)
        .map(|p| p.value)
}

/// A directory name no other test uses.
fn unique_dir(what: &str) -> String {
    format!("{what}-{}-{:08x}", std::process::id(), random_u32())
}

/// One raw HTTP/1.1 request (for setting up and inspecting the test servers): status and
/// body.
async fn raw_http(method: &str, url: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let u = Url::parse(url).expect("url");
    let port = u.port().expect("port");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let head = format!(
        "{method} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nDepth: 1\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        u.path(),
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    (code, body)
}

async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn params_are_documented() {
    crate::kind::assert_params_documented::<StorageParams>(PARAMS);
}

#[test]
fn adler32_matches_known_values() {
    assert_eq!(adler32(b""), 1);
    assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    assert_eq!(adler32(b"hello gridprobe world"), 0x5a25_083b);
    // Longer than one 5552-byte block, compared with the plain definition.
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (mut a, mut b) = (1u64, 0u64);
    for &x in &data {
        a = (a + u64::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    assert_eq!(u64::from(adler32(&data)), (b << 16) | a);
}

#[test]
fn file_names_carry_their_time() {
    let name = file_name("org.lhcb.SE-lhcb webdav/x", 1_700_000_000);
    assert!(
        name.starts_with("gridprobe-SE-lhcb_webdav_x-1700000000-"),
        "{name}"
    );
    assert_eq!(file_time(&name), Some(1_700_000_000));
    assert_ne!(name, file_name("org.lhcb.SE-lhcb webdav/x", 1_700_000_000));
    assert_eq!(file_time("gridprobe-a-b-12-0123abcd"), Some(12));
    assert_eq!(file_time("gridprobe-12-0123abcd"), None);
    assert_eq!(file_time("gridprobe-a-12-0123abcz"), None);
    assert_eq!(file_time("data-a-12-0123abcd"), None);
    let content = file_content(&name, 1024);
    assert_eq!(content.len(), 1024);
    assert!(content.starts_with(b"gridprobe storage test file gridprobe-"));
    assert_eq!(file_content(&name, 5), b"gridp");
}

#[test]
fn multistatus_of_several_servers_parses() {
    let nginx = br#"<?xml version="1.0" encoding="utf-8" ?>
<D:multistatus xmlns:D="DAV:"><D:response><D:href>/data/gp/</D:href><D:propstat><D:prop>
<D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status>
</D:propstat></D:response><D:response><D:href>/data/gp/a%20b&amp;c</D:href><D:propstat><D:prop>
<D:getcontentlength>21</D:getcontentlength><D:resourcetype></D:resourcetype></D:prop>
<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
    let entries = parse_multistatus(nginx).expect("parse");
    assert_eq!(entries.len(), 2);
    assert!(entries[0].collection);
    assert_eq!(entries[1].href, "/data/gp/a%20b&c");
    assert_eq!(entries[1].length, Some(21));
    let dir = Url::parse("https://se.example.org:2880/data/gp/").expect("url");
    assert_eq!(href_name(&dir, &entries[1].href).as_deref(), Some("a b&c"));

    // dCache style: a default namespace and absolute URLs.
    let dcache = br#"<?xml version="1.0"?><multistatus xmlns="DAV:"><response>
<href>https://se.example.org:2880/data/gp/f1</href><propstat><prop><getcontentlength>7
</getcontentlength></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
    let entries = parse_multistatus(dcache).expect("parse");
    assert_eq!(entries[0].length, Some(7));
    assert_eq!(href_name(&dir, &entries[0].href).as_deref(), Some("f1"));

    assert!(parse_multistatus(b"<html><body>no</body></html>")
        .unwrap_err()
        .contains("not <multistatus>"));
    assert!(parse_multistatus(b"").is_err());
    let cut = &nginx[..nginx.len() - 60];
    assert_eq!(parse_multistatus_prefix(cut).len(), 1);
}

#[test]
fn digest_header_gives_adler32() {
    let mut h = hyper::HeaderMap::new();
    assert!(digest_adler32(&h).is_none());
    h.insert(
        "digest",
        HeaderValue::from_static("md5=abc=, ADLER32=0a1b2c3d"),
    );
    assert_eq!(digest_adler32(&h), Some(Ok(0x0a1b_2c3d)));
    h.insert("digest", HeaderValue::from_static("adler32=zz"));
    assert!(digest_adler32(&h).is_some_and(|r| r.is_err()));
}

#[test]
fn paths_outside_the_test_area_are_rejected() {
    assert_eq!(area_contains("/data/gp", "/data/gp/sub/"), Ok(()));
    assert_eq!(area_contains("/data//gp/", "/data/gp"), Ok(()));
    let e = area_contains("/data/gp/", "/data/other/").unwrap_err();
    assert!(
        e.starts_with("storage path /data/other/ is outside the test area /data/gp/"),
        "{e}"
    );
    assert!(area_contains("/data/gp/", "/data/gp/../x/").is_err());
    assert!(area_contains("/data/gp/", "/data/gpx/").is_err());
    assert!(area_contains("/", "/data/")
        .unwrap_err()
        .contains("storage root"));
    assert!(normalise_dir("/../x").is_err());
}

#[test]
fn bad_input_is_reported_at_check_time_with_positions() {
    let params = "test_area = '/data/gp/'\nurl = 'https://se.example.org/data/other/'";
    let ds = build_with(build, NAME, params).unwrap_err();
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(
        ds[0].location.as_ref().map(|l| l.line),
        Some(line_of(NAME, params, "url ="))
    );
    assert!(
        ds[0]
            .message
            .starts_with("storage path /data/other/ is outside the test area /data/gp/"),
        "{}",
        ds[0].message
    );

    let params = "test_area = '/data/'\nurl = 'srm://se.example.org:8446/srm/managerv2'";
    let ds = build_with(build, NAME, params).unwrap_err();
    assert!(ds[0].message.contains("scheme `srm`"), "{}", ds[0].message);

    let params = "test_area = '/data/'\nfile_size = 0\nserver_checksum = 'requir'\n\
                  stale_after = 'soon'";
    let ds = build_with(build, NAME, params).unwrap_err();
    assert_eq!(ds.len(), 3, "{ds:?}");
    let messages: Vec<&str> = ds.iter().map(|d| d.message.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("`file_size` must be")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("`stale_after`")),
        "{messages:?}"
    );
    let checksum = ds
        .iter()
        .find(|d| d.message.contains("server_checksum"))
        .expect("server_checksum error");
    assert_eq!(checksum.help.as_deref(), Some("did you mean `require`?"));

    let ds = build_with(build, NAME, "url = 'root://se/'").unwrap_err();
    assert!(ds[0].message.contains("test_area"), "{}", ds[0].message);
}

#[test]
fn instance_checks_use_the_endpoint() {
    let p = probe("test_area = 'gridprobe'");
    let svc = |endpoint: Option<&str>| context("se.example.org", endpoint, Duration::from_secs(60));
    // Relative to the endpoint's path; davs read as https.
    let c = svc(Some("davs://se.example.org:2880/pnfs/example.org/lhcb/"));
    assert_eq!(p.check_instance(&c), Ok(()));
    let e = p.check_instance(&svc(None)).unwrap_err();
    assert!(
        e.contains("is relative") && e.contains("no endpoint"),
        "{e}"
    );
    let e = p
        .check_instance(&svc(Some("srm://se.example.org:8446/srm/managerv2")))
        .unwrap_err();
    assert!(e.contains("scheme `srm`") && e.contains("set `url`"), "{e}");

    let p = probe(
        "test_area = '/eos/lhcb/gridprobe/'\nurl = 'root://{hostname}:1094//eos/lhcb/{param.dir}/'",
    );
    let mut c = svc(None);
    c.service.params = BTreeMap::from([("dir".to_string(), "gridprobe/t1".to_string())]);
    assert_eq!(p.check_instance(&c), Ok(()));
    c.service.params = BTreeMap::from([("dir".to_string(), "data".to_string())]);
    let e = p.check_instance(&c).unwrap_err();
    assert!(e.contains("outside the test area"), "{e}");

    let p = probe("test_area = '/data/'\nurl = 'http://se.example.org/data/'\nstale_after = '30s'");
    let e = p.check_instance(&svc(None)).unwrap_err();
    assert!(e.contains("`stale_after` (30s) must be longer"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Against nginx (scripts/services/webdav.sh)

fn webdav() -> Option<String> {
    test_service("GRIDPROBE_TEST_WEBDAV")
}

#[tokio::test]
async fn webdav_round_trip_succeeds_and_leaves_nothing() {
    let Some(base) = webdav() else { return };
    let dir = format!("{base}/data/{}/", unique_dir("ok"));
    let o = outcome(
        &format!("test_area = '/data/'\nurl = '{dir}'"),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(
        o.summary.starts_with("WebDAV round trip of 1024 bytes in "),
        "{}",
        o.summary
    );
    assert_eq!(
        labels(&o),
        ["put", "stat", "get", "checksum", "list", "delete", "gone", "total", "size"]
    );
    // nginx offers no Digest: noted, not a failure in "auto" mode.
    assert!(
        o.details
            .contains("server checksum not compared: the server sent no adler32"),
        "{}",
        o.details
    );
    let (code, body) = raw_http("PROPFIND", &dir, b"").await;
    assert_eq!(code, 207);
    let names: Vec<String> = parse_multistatus(&body)
        .expect("listing")
        .iter()
        .filter(|e| !e.collection)
        .map(|e| e.href.clone())
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");

    let o = outcome(
        &format!("test_area = '/data/'\nurl = '{dir}'\nserver_checksum = 'require'"),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.starts_with("checksum failed: no server checksum"),
        "{}",
        o.summary
    );
    assert!(o.details.contains("cleanup: deleted"), "{}", o.details);
}

#[tokio::test]
async fn webdav_read_only_area_fails_at_put() {
    let Some(base) = webdav() else { return };
    let dir = format!("{base}/readonly/");
    let o = outcome(
        &format!("test_area = '/readonly/'\nurl = '{dir}'"),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    let prefix = format!("put failed: HTTP 403 Forbidden on {dir}gridprobe-SE-webdav-");
    assert!(o.summary.starts_with(&prefix), "{}", o.summary);
    assert_eq!(labels(&o), ["put", "total", "size"]);
    // Refused with an answer: nothing to clean up.
    assert!(!o.details.contains("cleanup"), "{}", o.details);
}

#[tokio::test]
async fn webdav_corrupted_read_back_is_critical() {
    let Some(base) = webdav() else { return };
    let dir = format!("{base}/corrupt/{}/", unique_dir("bad"));
    let o = outcome(
        &format!("test_area = '/corrupt/'\nurl = '{dir}'"),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("get failed: checksum mismatch: read back 1024 bytes with adler32 "),
        "{}",
        o.summary
    );
    assert!(
        o.summary.contains(&format!("on {dir}gridprobe-")),
        "{}",
        o.summary
    );
    assert!(o.details.contains("cleanup: deleted"), "{}", o.details);
}

#[tokio::test]
async fn webdav_server_down_is_critical() {
    let port = closed_port().await;
    let dir = format!("http://127.0.0.1:{port}/data/gp/");
    let o = outcome(
        &format!("test_area = '/data/'\nurl = '{dir}'"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.starts_with(&format!(
            "put failed: TCP connect failed: connection refused on {dir}gridprobe-"
        )),
        "{}",
        o.summary
    );
    // Marked, so that a failing monitoring host turns it UNKNOWN (runner/src/selfcheck.rs).
    assert_eq!(o.connection_fault, Some(ConnectionFault::Connect));
}

#[tokio::test]
async fn webdav_slow_server_times_out_in_time() {
    let Some(base) = webdav() else { return };
    let dir = format!("{base}/slow/gp/");
    let p = probe(&format!("test_area = '/slow/'\nurl = '{dir}'"));
    let timeout = Duration::from_millis(1500);
    let start = Instant::now();
    let o = p.run(&ctx(timeout)).await;
    let took = start.elapsed();
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.starts_with(
            "put failed: timeout after 1.5s during HTTP request (waiting for the response headers) on "
        ),
        "{}",
        o.summary
    );
    // The timeout, then at most the cleanup budget for deleting what may have been written.
    assert!(
        took < timeout + CLEANUP_BUDGET + Duration::from_secs(2),
        "took {took:?}"
    );
    assert!(
        o.details.contains("cleanup: could not delete"),
        "{}",
        o.details
    );
}

#[tokio::test]
async fn webdav_over_tls_needs_the_ca() {
    let Some(base) = test_service("GRIDPROBE_TEST_WEBDAVS") else {
        return;
    };
    let Some(ca) = test_service("GRIDPROBE_TEST_WEBDAV_CA") else {
        return;
    };
    let dir = format!("{base}/data/{}/", unique_dir("tls"));
    let davs = dir.replacen("https://", "davs://", 1);
    let o = outcome(
        &format!("test_area = '/data/'\nurl = '{davs}'"),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.starts_with(
            "put failed: TLS handshake failed: certificate verify failed: unknown issuer"
        ),
        "{}",
        o.summary
    );

    let o = outcome(
        &format!("test_area = '/data/'\nurl = '{davs}'\nca_file = '{ca}'"),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(o.summary.ends_with(&format!("on {dir}")), "{}", o.summary);
    assert!(
        perf(&o, "cert_days_left").is_some_and(|d| d > 300.0),
        "{o:?}"
    );
}

#[tokio::test]
async fn webdav_stale_files_are_removed_and_others_kept() {
    let Some(base) = webdav() else { return };
    let dir = format!("{base}/data/{}/", unique_dir("stale"));
    let now = unix_now();
    let stale = "gridprobe-SE-old-1000000000-deadbeef".to_string();
    let fresh = format!("gridprobe-SE-other-{now}-0123abcd");
    for name in [stale.as_str(), fresh.as_str(), "notes.txt"] {
        let (code, _) = raw_http("PUT", &format!("{dir}{name}"), b"x").await;
        assert_eq!(code, 201, "PUT {name}");
    }
    let o = outcome(
        &format!("test_area = '/data/'\nurl = '{dir}'"),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert_eq!(perf(&o, "stale_removed"), Some(1.0), "{o:?}");
    assert!(
        o.details.contains("removed 1 of 1 stale test files"),
        "{}",
        o.details
    );
    let (_, body) = raw_http("PROPFIND", &dir, b"").await;
    let dir_url = Url::parse(&dir).expect("url");
    let mut left: Vec<String> = parse_multistatus(&body)
        .expect("listing")
        .iter()
        .filter(|e| !e.collection)
        .filter_map(|e| href_name(&dir_url, &e.href))
        .collect();
    left.sort();
    assert_eq!(left, [fresh.clone(), "notes.txt".to_string()]);
    for name in [fresh.as_str(), "notes.txt"] {
        raw_http("DELETE", &format!("{dir}{name}"), b"").await;
    }
}

// ---------------------------------------------------------------------------------------
// Against an in-process WebDAV server offering Digest and redirects, as dCache does.

/// Files by path; `digest` says what the server answers to Want-Digest.
#[derive(Clone, Copy)]
enum DigestMode {
    Right,
    Wrong,
}

/// A WebDAV server holding files in memory: PUT (redirected once with 307, like a dCache
/// door to a pool), PROPFIND depth 0/1 with absolute hrefs, GET, HEAD with Digest, DELETE.
async fn dav_server(mode: DigestMode) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move { dav_serve(sock, port, files, mode).await });
        }
    });
    port
}

async fn dav_serve(
    mut s: tokio::net::TcpStream,
    port: u16,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    mode: DigestMode,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + length].to_vec();
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut extra = String::new();
    let (status, out): (&str, Vec<u8>) = {
        let mut files = files.lock().unwrap_or_else(|p| p.into_inner());
        match method {
            "PUT" if query != "pool=1" => {
                extra = format!("Location: http://127.0.0.1:{port}{path}?pool=1\r\n");
                ("307 Temporary Redirect", Vec::new())
            }
            "PUT" => {
                files.insert(path.to_string(), body);
                ("201 Created", Vec::new())
            }
            "GET" => match files.get(path) {
                Some(d) => ("200 OK", d.clone()),
                None => ("404 Not Found", Vec::new()),
            },
            "HEAD" => match files.get(path) {
                Some(d) => {
                    if header("want-digest").is_some() {
                        let sum = match mode {
                            DigestMode::Right => adler32(d),
                            DigestMode::Wrong => adler32(d) ^ 1,
                        };
                        extra = format!("Digest: adler32={sum:08x}\r\n");
                    }
                    ("200 OK", Vec::new())
                }
                None => ("404 Not Found", Vec::new()),
            },
            "DELETE" => match files.remove(path) {
                Some(_) => ("204 No Content", Vec::new()),
                None => ("404 Not Found", Vec::new()),
            },
            "PROPFIND" => {
                let depth1 = header("depth").as_deref() == Some("1");
                let mut xml =
                    String::from("<?xml version=\"1.0\"?><d:multistatus xmlns:d=\"DAV:\">");
                let mut found = false;
                for (name, data) in files.iter() {
                    let hit = if depth1 {
                        name.starts_with(path)
                    } else {
                        name == path
                    };
                    if hit {
                        found = true;
                        let _ = write!(
                            xml,
                            "<d:response><d:href>http://127.0.0.1:{port}{name}</d:href>\
                             <d:propstat><d:prop><d:getcontentlength>{}</d:getcontentlength>\
                             </d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>\
                             </d:response>",
                            data.len()
                        );
                    }
                }
                xml.push_str("</d:multistatus>");
                if found || depth1 {
                    ("207 Multi-Status", xml.into_bytes())
                } else {
                    ("404 Not Found", Vec::new())
                }
            }
            _ => ("405 Method Not Allowed", Vec::new()),
        }
    };
    let length = if method == "HEAD" { 0 } else { out.len() };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: close\r\n{extra}\r\n"
    );
    let _ = s.write_all(response.as_bytes()).await;
    if method != "HEAD" {
        let _ = s.write_all(&out).await;
    }
    let _ = s.shutdown().await;
}

#[tokio::test]
async fn server_digest_is_compared_and_redirects_followed() {
    let port = dav_server(DigestMode::Right).await;
    // A davs endpoint is spoken to as https, in the test area relative to its path (this
    // plain-HTTP server never answers the TLS handshake).
    let endpoint = format!("davs://127.0.0.1:{port}/pnfs/example.org/lhcb/");
    let p = probe("test_area = 'gridprobe/'");
    let mut c = ctx(Duration::from_secs(1));
    c.service.endpoint = Url::parse(&endpoint).ok();
    let e = p.run(&c).await;
    assert_eq!(e.status, Status::Critical, "{e:?}");
    assert!(
        e.summary.starts_with(&format!(
            "put failed: timeout after 1s during TLS handshake on \
             https://127.0.0.1:{port}/pnfs/example.org/lhcb/gridprobe/gridprobe-"
        )),
        "{}",
        e.summary
    );

    let o = outcome(
        &format!(
            "test_area = '/pnfs/example.org/lhcb/gridprobe/'\n\
         url = 'http://127.0.0.1:{port}/pnfs/example.org/lhcb/gridprobe/'\n\
         server_checksum = 'require'"
        ),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(
        o.details.contains("307 Temporary Redirect to"),
        "{}",
        o.details
    );
    assert!(o.details.contains("matches the file"), "{}", o.details);

    let port = dav_server(DigestMode::Wrong).await;
    let o = outcome(
        &format!("test_area = '/lhcb/'\nurl = 'http://127.0.0.1:{port}/lhcb/'"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("checksum failed: checksum mismatch: the server reports adler32"),
        "{}",
        o.summary
    );
    assert!(o.details.contains("cleanup: deleted"), "{}", o.details);
}

// ---------------------------------------------------------------------------------------
// Against xrootd (scripts/services/xrootd.sh), through xrdfs/xrdcp.

fn xrootd() -> Option<String> {
    test_service("GRIDPROBE_TEST_XROOTD")
}

#[tokio::test]
async fn xrootd_round_trip_with_server_checksum() {
    let Some(base) = xrootd() else { return };
    let dir = format!("{base}//data/{}/", unique_dir("ok"));
    let o = outcome(
        &format!(
            "test_area = '/data/'\nurl = '{dir}'\nserver_checksum = 'require'\nfile_size = 5000"
        ),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(
        o.summary.starts_with("XRootD round trip of 5000 bytes in "),
        "{}",
        o.summary
    );
    assert_eq!(
        labels(&o),
        ["put", "stat", "get", "checksum", "list", "delete", "gone", "total", "size"]
    );
    assert!(o.details.contains("matches the file"), "{}", o.details);
}

#[tokio::test]
async fn xrootd_read_only_export_fails_at_put() {
    let Some(base) = xrootd() else { return };
    let o = outcome(
        &format!("test_area = '/readonly/'\nurl = '{base}//readonly/'"),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("put failed: [3005] Unable to create /readonly/gridprobe-"),
        "{}",
        o.summary
    );
    assert!(o.summary.contains("read/only"), "{}", o.summary);
    assert!(
        o.summary
            .contains(&format!(" on {base}//readonly/gridprobe-")),
        "{}",
        o.summary
    );
}

#[tokio::test]
async fn xrootd_server_down_and_silent_server() {
    if xrootd().is_none() {
        return;
    }
    let port = closed_port().await;
    let p = probe(&format!(
        "test_area = '/data/'\nurl = 'root://127.0.0.1:{port}//data/'"
    ));
    let o = p.run(&ctx(Duration::from_secs(20))).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("put failed: [FATAL] Connection error"),
        "{}",
        o.summary
    );
    assert_eq!(o.connection_fault, Some(ConnectionFault::Connect));

    // Accepts connections and never answers: xrdcp waits until the probe's deadline.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            h.lock().unwrap_or_else(|p| p.into_inner()).push(sock);
        }
    });
    let p = probe(&format!(
        "test_area = '/data/'\nurl = 'root://127.0.0.1:{port}//data/'"
    ));
    let timeout = Duration::from_millis(1500);
    let start = Instant::now();
    let o = p.run(&ctx(timeout)).await;
    let took = start.elapsed();
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("put failed: timeout after 1.5s (xrdcp killed) on root://127.0.0.1:"),
        "{}",
        o.summary
    );
    // Deadline, SIGTERM grace for xrdcp, then the cleanup budget.
    assert!(
        took < timeout
            + process::TERM_GRACE
            + CLEANUP_BUDGET
            + process::TERM_GRACE
            + Duration::from_secs(2),
        "took {took:?}"
    );
}
