//! Tests of the `software` kind against an in-process HTTP server serving `.cvmfspublished`
//! manifests in the real format: fresh, stale, corrupt, unparsable, from another repository,
//! behind a reference; and an unreachable server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::test_support::{build_with, context, line_of};

const REPO: &str = "lhcb.cern.ch";

/// A signed manifest as a Stratum-0 publishes it: key lines, `--`, the SHA-1 of the lines, and
/// a binary signature (random bytes here: the probe does not verify it).
fn manifest(name: &str, revision: u64, published: i64) -> Vec<u8> {
    let text = format!(
        "C600230b0ba7620426f2e898f1e1f43c5466efe59\nB4444160\nRd41d8cd98f00b204e9800998ecf8427e\n\
         D240\nS{revision}\nGno\nAno\nN{name}\nX3f39b36bfbcd6cf4a8ba4e7d4c4a2a1c08afa5e6\n\
         H1d0a58f5d1f1d5ad7ce3d2b11cd0e2a1b95b3f6e\nT{published}\n\
         M08f6e0f20e4b6a2b5b0e5f9a1c2e4b9d7ff13a24\nY0ac9ac0bff9fd3e9b8cba41e85c4f3c6cb2cc90b\n"
    );
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let mut out = text.into_bytes();
    out.extend_from_slice(format!("--\n{hex}\n").as_bytes());
    out.extend_from_slice(&[0x8a, 0x00, 0x13, 0xff, 0xfe, 0x0a, 0x41, 0x7f, 0x00, 0xc3]);
    out
}

/// A test server: path → (status line, body). Requests in absolute form (through a proxy) are
/// served by their path too and counted.
struct Server {
    port: u16,
    proxied: Arc<Mutex<usize>>,
}

async fn server(pages: HashMap<String, (&'static str, Vec<u8>)>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let pages = Arc::new(pages);
    let proxied = Arc::new(Mutex::new(0));
    let counter = proxied.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (pages, counter) = (pages.clone(), counter.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let mut target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                if let Some(rest) = target.strip_prefix("http://") {
                    if let Ok(mut n) = counter.lock() {
                        *n += 1;
                    }
                    target = rest.find('/').map_or("/".into(), |i| rest[i..].to_string());
                }
                let (status, body) = pages
                    .get(&target)
                    .cloned()
                    .unwrap_or(("404 Not Found", b"no such page".to_vec()));
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Server { port, proxied }
}

fn path(dir: &str) -> String {
    format!("/{dir}/{REPO}/.cvmfspublished")
}

fn probe(params: &str) -> SharedProbe {
    match build_with(build, NAME, params) {
        Ok(p) => p,
        Err(ds) => panic!("build failed: {ds:?}"),
    }
}

fn ctx() -> ProbeContext {
    context("127.0.0.1", None, Duration::from_secs(10))
}

fn params(port: u16, dir: &str, extra: &str) -> String {
    format!("repository = '{REPO}'\nurl = 'http://127.0.0.1:{port}/{dir}/@fqrn@'\n{extra}")
}

fn perf(o: &Outcome, label: &str) -> Option<f64> {
    o.perfdata
        .iter()
        .find(|p| p.label == label)
        .map(|p| p.value)
}

/// Every case on one server.
async fn cvmfs_server() -> Server {
    let now = now_unix();
    let mut pages = HashMap::new();
    pages.insert(
        path("fresh"),
        ("200 OK", manifest(REPO, 4721, now - 3 * 3600)),
    );
    pages.insert(
        path("stale"),
        ("200 OK", manifest(REPO, 4100, now - 5 * 86_400)),
    );
    pages.insert(
        path("behind"),
        ("200 OK", manifest(REPO, 4715, now - 4 * 86_400 / 4)),
    );
    pages.insert(
        path("ref"),
        ("200 OK", manifest(REPO, 4721, now - 3 * 3600)),
    );
    pages.insert(path("ref-new"), ("200 OK", manifest(REPO, 4722, now - 600)));
    pages.insert(
        path("other"),
        ("200 OK", manifest("atlas.cern.ch", 10, now - 60)),
    );
    let mut corrupt = manifest(REPO, 4721, now - 3 * 3600);
    // One flipped digit of the revision, after signing: a damaged copy.
    if let Some(i) = corrupt.windows(5).position(|w| w == b"S4721") {
        corrupt[i + 4] = b'2';
    }
    pages.insert(path("corrupt"), ("200 OK", corrupt));
    let full = manifest(REPO, 4721, now - 3 * 3600);
    let cut = full[..full.len() / 3].to_vec();
    pages.insert(path("truncated"), ("200 OK", cut));
    pages.insert(
        path("html"),
        (
            "200 OK",
            b"<html><body><h1>Squid: access denied</h1></body></html>".to_vec(),
        ),
    );
    server(pages).await
}

#[test]
fn params_are_documented() {
    crate::kind::assert_params_documented::<SoftwareParams>(PARAMS);
}

#[test]
fn parses_the_real_format_and_checks_its_hash() {
    let m = parse_manifest(&manifest(REPO, 4721, 1_764_000_000)).expect("parses");
    assert_eq!(m.revision, 4721);
    assert_eq!(m.published, Some(1_764_000_000));
    assert_eq!(m.name.as_deref(), Some(REPO));
    assert_eq!(m.ttl, 240);
    assert_eq!(m.root_catalog, "600230b0ba7620426f2e898f1e1f43c5466efe59");
    assert_eq!(m.hash_check, HashCheck::Verified);
    assert_eq!(m.signature_len, 10);

    let mut other_alg = b"C1\nR2\nD240\nS7\n--\n".to_vec();
    other_alg.extend_from_slice(b"9f2c4e1b6d0a3f5e7c8b9a0d1e2f3a4b5c6d7e8f-rmd160\n\x01\x02");
    let m = parse_manifest(&other_alg).expect("parses");
    assert_eq!(m.hash_check, HashCheck::Unverified("rmd160".into()));

    for (bytes, error) in [
        (
            &b"C1\nR2\nD240\nS7\n"[..],
            "no `--` line: the manifest is unsigned or cut short",
        ),
        (b"C1\nR2\nD240\n--\nab\nsig", "required key S is missing"),
        (
            b"C1\nR2\nD240\nSseven\n--\nab\nsig",
            "S is not a number: `seven`",
        ),
        (b"C1\nR2\nD240\nS7\n--\n", "no hash after the `--` line"),
        (
            b"C1\nR2\nD240\nS7\n--\nabcd\n",
            "no signature after the hash",
        ),
        (
            b"<html>\nC1\n--\nab\nx",
            "line 1 is not a key line: `<html>`",
        ),
    ] {
        assert_eq!(parse_manifest(bytes).err().as_deref(), Some(error));
    }
}

#[tokio::test]
async fn fresh_manifest_is_ok_with_revision_and_age() {
    let srv = cvmfs_server().await;
    let p = probe(&params(srv.port, "fresh", "warn_age = '1d'"));
    let c = ctx();
    assert_eq!(p.check_instance(&c), Ok(()));
    let o = p.run(&c).await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(
        o.summary
            .starts_with("lhcb.cern.ch revision 4721 published 3 h 0 min ago ("),
        "{}",
        o.summary
    );
    assert_eq!(perf(&o, "revision"), Some(4721.0));
    assert_eq!(perf(&o, "ttl"), Some(240.0));
    assert!(perf(&o, "age").is_some_and(|a| (10_799.0..10_900.0).contains(&a)));
    assert!(
        o.details
            .contains("note: SHA-1 of the manifest matches its hash"),
        "{}",
        o.details
    );
}

#[tokio::test]
async fn stale_manifest_is_warning_then_critical_past_crit_age() {
    let srv = cvmfs_server().await;
    let o = probe(&params(srv.port, "stale", "")).run(&ctx()).await;
    assert_eq!(o.status, Status::Warning, "{o:?}");
    assert_eq!(
        o.summary,
        "revision 4100 was published 5 d 0 h ago, over 2d"
    );
    let o = probe(&params(
        srv.port,
        "stale",
        "warn_age = '1d'\ncrit_age = '3d'",
    ))
    .run(&ctx())
    .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert_eq!(
        o.summary,
        "revision 4100 was published 5 d 0 h ago, over 3d"
    );
}

#[tokio::test]
async fn corrupt_truncated_and_foreign_manifests_are_critical() {
    let srv = cvmfs_server().await;
    let url = |dir: &str| format!("http://127.0.0.1:{}{}", srv.port, path(dir));

    let o = probe(&params(srv.port, "corrupt", "")).run(&ctx()).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.starts_with(&format!(
            "corrupt manifest at {}: its SHA-1 is ",
            url("corrupt")
        )),
        "{}",
        o.summary
    );

    let o = probe(&params(srv.port, "truncated", "")).run(&ctx()).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert_eq!(
        o.summary,
        format!(
            "unparsable manifest at {}: no `--` line: the manifest is unsigned or cut short",
            url("truncated")
        )
    );

    let o = probe(&params(srv.port, "html", "")).run(&ctx()).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(o.summary.contains("unparsable manifest"), "{}", o.summary);

    // A server that answers for lhcb.cern.ch with another repository's manifest.
    let o = probe(&params(srv.port, "other", "")).run(&ctx()).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .ends_with("serves repository atlas.cern.ch, not lhcb.cern.ch"),
        "{}",
        o.summary
    );

    let o = probe(&params(srv.port, "missing", "")).run(&ctx()).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert_eq!(
        o.summary,
        format!("HTTP 404 Not Found for {}", url("missing"))
    );
}

#[tokio::test]
async fn unreachable_server_is_critical() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let o = probe(&params(port, "fresh", "")).run(&ctx()).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("TCP connect failed: connection refused on http://127.0.0.1:"),
        "{}",
        o.summary
    );
    assert!(perf(&o, "total").is_some());
}

#[tokio::test]
async fn revision_behind_the_reference_warns_after_the_grace() {
    let srv = cvmfs_server().await;
    let reference = |dir: &str| format!("reference = 'http://127.0.0.1:{}/{dir}/@fqrn@'", srv.port);

    // The reference's newer revision is 3 h old: replication should have happened.
    let o = probe(&params(srv.port, "behind", &reference("ref")))
        .run(&ctx())
        .await;
    assert_eq!(o.status, Status::Warning, "{o:?}");
    assert_eq!(
        o.summary,
        "revision 4715 is behind the reference's 4721 (published 3 h 0 min ago)"
    );
    assert_eq!(perf(&o, "behind"), Some(6.0));

    // 10 minutes old: still replicating.
    let o = probe(&params(srv.port, "fresh", &reference("ref-new")))
        .run(&ctx())
        .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(
        o.details.contains("revision 4721 is behind the reference's 4722, published 10 min ago: within the 2h replication grace"),
        "{}",
        o.details
    );

    // An unreachable reference is noted, not held against the site.
    let o = probe(&params(
        srv.port,
        "fresh",
        "reference = 'http://127.0.0.1:9/@fqrn@'",
    ))
    .run(&ctx())
    .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(
        o.details.contains("cannot compare with the reference: "),
        "{}",
        o.details
    );
}

#[tokio::test]
async fn manifest_through_a_proxy() {
    let srv = cvmfs_server().await;
    let p = probe(&format!(
        "repository = '{REPO}'\nurl = 'http://cvmfs-s1.example.org:8000/fresh/@fqrn@'\n\
         proxy = 'http://127.0.0.1:{}'",
        srv.port
    ));
    let o = p.run(&ctx()).await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert_eq!(srv.proxied.lock().map(|n| *n).unwrap_or(0), 1);
    assert!(
        o.details.contains("via proxy http://127.0.0.1:"),
        "{}",
        o.details
    );
}

#[test]
fn bad_params_are_positioned() {
    let text =
        "repository = 'lhcb.cern.ch'\nurl = 'ftp://s1/@fqrn@'\nproxy = 'https://squid:3128'\n\
                warn_age = '3d'\ncrit_age = '1d'";
    let ds = match build_with(build, NAME, text) {
        Ok(p) => panic!("built {p:?}"),
        Err(ds) => ds,
    };
    let messages: Vec<&str> = ds.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(ds.len(), 3, "{messages:?}");
    assert!(messages[0].starts_with("`url`: URL `ftp://s1/x` has scheme `ftp`"));
    assert!(
        messages[1].starts_with("`proxy`: URL `https://squid:3128` has scheme `https`; use http")
    );
    assert_eq!(
        messages[2],
        "`crit_age` must be longer than `warn_age` (3d)"
    );
    let line = line_of(NAME, text, "ftp://");
    assert_eq!(
        ds[0].position().as_deref(),
        Some(format!("t.toml:{line}:7").as_str())
    );
}

mod signed;
