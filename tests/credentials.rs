//! Credentials end to end: an in-process OAuth2 token endpoint (RFC 6749 client credentials)
//! and a resource that accepts only its unexpired tokens, probed by the real `serve` through a
//! `[[credential]]`. Covers expiry and renewal, a failing endpoint (probes UNKNOWN "monitoring
//! credential … expired at …", then OK after recovery, never CRITICAL), and secrets that never
//! appear in logs, errors, /healthz, /metrics, the API or pages.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use common::{gridprobe, http_client, texts, wait_until, Serve};

const CLIENT_SECRET: &str = "s3cret-client-secret";
/// `robot:s3cret-client-secret`, as HTTP Basic sends it.
const BASIC: &str = "Basic cm9ib3Q6czNjcmV0LWNsaWVudC1zZWNyZXQ=";
const REFRESH_TOKEN: &str = "long-lived-refresh-token";
/// Lifetime of the tokens handed out.
const LIFETIME: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Endpoint {
    failing: bool,
    issued: HashMap<String, Instant>,
    served: u32,
    bad_requests: Vec<String>,
}

type Shared = Arc<Mutex<Endpoint>>;

async fn token(State(s): State<Shared>, headers: HeaderMap, body: String) -> (StatusCode, String) {
    let mut e = s.lock().unwrap();
    if e.failing {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"temporarily_unavailable","error_description":"down for the test"}"#.into(),
        );
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    // A public client with a refresh token (RFC 6749 §6), or the robot's client credentials.
    let refresh = form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && form.get("refresh_token").map(String::as_str) == Some(REFRESH_TOKEN)
        && form.get("client_id").map(String::as_str) == Some("public-robot")
        && auth.is_empty();
    let client = auth == BASIC
        && form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && form.get("scope").map(String::as_str) == Some("storage.read:/");
    if !(refresh || client) {
        e.bad_requests.push(format!("{auth} {body}"));
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client"}"#.into(),
        );
    }
    e.served += 1;
    let t = format!("at-{}-{}", e.served, std::process::id());
    e.issued.insert(t.clone(), Instant::now() + LIFETIME);
    (
        StatusCode::OK,
        format!(
            r#"{{"access_token":"{t}","token_type":"Bearer","expires_in":{}}}"#,
            LIFETIME.as_secs()
        ),
    )
}

/// The protected resource: 200 with an unexpired token of ours, 401 otherwise.
async fn data(State(s): State<Shared>, headers: HeaderMap) -> (StatusCode, &'static str) {
    let e = s.lock().unwrap();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match bearer.and_then(|t| e.issued.get(t)) {
        Some(until) if *until > Instant::now() => (StatusCode::OK, "fine"),
        _ => (StatusCode::UNAUTHORIZED, "no valid token"),
    }
}

/// Starts the endpoint on 127.0.0.1 in a thread of its own; returns its port.
fn start_endpoint(state: Shared) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route("/token", post(token))
                .route("/data", get(data))
                .with_state(state);
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    port
}

fn config(port: u16) -> String {
    format!(
        r#"
vo = "cred"
[defaults]
interval = "1s"
timeout = "900ms"
[server]
startup_spread = "1s"
shutdown_grace = "2s"

[[credential]]
name = "iam"
kind = "token"
token_endpoint = "http://127.0.0.1:{port}/token"
client_id = "robot"
secret_file = "iam-secret"
scope = "storage.read:/"
retry_max = "1s"

[[site]]
name = "T2_CRED"
tier = 2
  [[site.service]]
  flavour = "WEB"
  hostname = "127.0.0.1"
  endpoint = "http://127.0.0.1:{port}/data"

[[probe]]
metric = "org.cred.data"
kind = "http"
flavours = ["WEB"]
credential = "iam"
"#
    )
}

/// Status and summary of every final result of the cell, oldest first.
fn results(addr: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = http_client()
        .get(format!(
            "http://{addr}/api/v1/results?site=T2_CRED&probe=org.cred.data&since=1h&limit=1000"
        ))
        .send()
        .and_then(|r| r.text())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut out: Vec<(String, String)> = v["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let o = if r.get("outcome").is_some() {
                &r["outcome"]
            } else {
                r
            };
            (
                o["status"].as_str().unwrap_or("").to_string(),
                o["summary"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.reverse();
    out
}

fn get_text(url: &str) -> String {
    http_client()
        .get(url)
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

#[test]
fn token_expiry_renewal_and_a_failing_endpoint_never_turn_a_site_critical() {
    let state: Shared = Arc::default();
    let port = start_endpoint(state.clone());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("iam-secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.path().join("vo.toml");
    std::fs::write(&cfg, config(port)).unwrap();
    let store = dir.path().join("results.sqlite");
    let state_home = dir.path().join("state");

    let mut cmd = std::process::Command::new(common::bin());
    cmd.args(["serve", "--config"])
        .arg(&cfg)
        .arg("--store")
        .arg(&store)
        .args(["--listen", "127.0.0.1:0"])
        .env("XDG_STATE_HOME", &state_home)
        .env("GRIDPROBE_LOG", "debug");
    let mut serve = Serve::from_command(cmd);
    let addr = serve.http_addr();

    // 1. Obtained and renewed: OK results, several tokens issued (lifetime 3 s).
    let ok = wait_until(Duration::from_secs(30), || {
        state.lock().unwrap().served >= 3 && results(&addr).iter().any(|(s, _)| s == "OK")
    });
    assert!(
        ok,
        "no OK result with renewed tokens: {:?}\n{}",
        results(&addr),
        serve.output()
    );
    assert!(state.lock().unwrap().bad_requests.is_empty());
    let token_file = state_home.join("gridprobe/cred.credentials/iam.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "token file mode");
    let creds: serde_json::Value = http_client()
        .get(format!("http://{addr}/api/v1/credentials"))
        .send()
        .and_then(|r| r.text())
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(creds[0]["name"], "iam");
    assert_eq!(creds[0]["valid"], true);

    // 2. The endpoint fails: once the token has expired, probes are UNKNOWN with the reason.
    state.lock().unwrap().failing = true;
    let unknown = wait_until(Duration::from_secs(30), || {
        results(&addr)
            .iter()
            .any(|(s, m)| s == "UNKNOWN" && m.starts_with("monitoring credential iam expired at "))
    });
    assert!(unknown, "no UNKNOWN result: {:?}", results(&addr));
    let during: serde_json::Value = http_client()
        .get(format!("http://{addr}/api/v1/credentials"))
        .send()
        .and_then(|r| r.text())
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(during[0]["valid"], false);
    assert!(
        during[0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("answered HTTP 503 (temporarily_unavailable: down for the test)"),
        "{during}"
    );
    let page = get_text(&format!("http://{addr}/"));
    assert!(
        page.contains("Monitoring credential iam is not valid"),
        "no banner on the dashboard:\n{page}"
    );
    let metrics = get_text(&format!("http://{addr}/metrics"));
    assert!(
        metrics.contains("gridprobe_credential_valid{credential=\"iam\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("gridprobe_credential_expiry_timestamp_seconds{credential=\"iam\"}"));
    assert!(!metrics.contains("gridprobe_credential_renewal_failures_total{credential=\"iam\"} 0"));

    // 3. Recovery: OK again, and no CRITICAL was ever recorded.
    state.lock().unwrap().failing = false;
    let recovered = wait_until(Duration::from_secs(30), || {
        results(&addr).last().is_some_and(|(s, _)| s == "OK")
    });
    let all = results(&addr);
    assert!(recovered, "not OK again after recovery: {all:?}");
    assert!(!get_text(&format!("http://{addr}/")).contains("Monitoring credential iam"));
    assert!(
        !all.iter().any(|(s, _)| s == "CRITICAL" || s == "WARNING"),
        "the monitoring's failure reached the site: {all:?}"
    );

    // 4. Secrets never shown: not the client secret, not a token.
    let tokens: Vec<String> = state.lock().unwrap().issued.keys().cloned().collect();
    let mut shown = vec![
        serve.output(),
        get_text(&format!("http://{addr}/healthz")),
        get_text(&format!("http://{addr}/metrics")),
        get_text(&format!("http://{addr}/api/v1/credentials")),
        get_text(&format!(
            "http://{addr}/api/v1/results?site=T2_CRED&since=1h&limit=1000&attempts=true"
        )),
        get_text(&format!("http://{addr}/")),
        get_text(&format!("http://{addr}/site/T2_CRED")),
    ];
    serve.terminate_cleanly();
    shown.push(serve.output());
    let cli = gridprobe(&[
        "credentials",
        "--config",
        cfg.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let (out, err) = texts(&cli);
    shown.push(out.clone());
    shown.push(err);
    for text in &shown {
        assert!(
            !text.contains(CLIENT_SECRET),
            "client secret shown:\n{text}"
        );
        for t in &tokens {
            assert!(!text.contains(t.as_str()), "token {t} shown:\n{text}");
        }
    }
    assert!(out.contains("\"valid\": true"), "{out}");
}

#[test]
fn a_failing_endpoint_makes_run_unknown_with_the_reason() {
    let state: Shared = Arc::default();
    state.lock().unwrap().failing = true;
    let port = start_endpoint(state.clone());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("iam-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.path().join("vo.toml");
    std::fs::write(&cfg, config(port)).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--format", "json"])
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("monitoring credential iam not yet obtained: token endpoint"),
        "{stdout}"
    );
    assert!(!stdout.contains("CRITICAL"), "{stdout}");
    assert!(!stdout.contains(CLIENT_SECRET) && !stderr.contains(CLIENT_SECRET));
}

/// The VOMS test server of scripts/services/voms.sh, or `None` (outside CI) when it is not
/// running.
fn voms_env() -> Option<HashMap<&'static str, String>> {
    let keys = [
        "DIR", "VO", "CERT", "KEY", "CERTDIR", "VOMSES", "VOMSDIR", "CA_FILE", "XROOTD",
    ];
    let mut out = HashMap::new();
    for k in keys {
        let value = common::required(
            std::env::var(format!("GRIDPROBE_TEST_VOMS_{k}")).ok(),
            &format!("GRIDPROBE_TEST_VOMS_{k}"),
            "run scripts/test-env.sh voms",
        )?;
        out.insert(k, value);
    }
    Some(out)
}

#[test]
fn a_proxy_from_a_real_voms_server_authenticates_a_real_probe() {
    let Some(voms) = voms_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg_text = |credential: &str| {
        format!(
            r#"
vo = "vomstest"
[[credential]]
name = "robot"
kind = "proxy"
cert = "{cert}"
key = "{key}"
voms = "{vo}:/{vo}/Role=production"
valid = "1h"
vomses = "{vomses}"
vomsdir = "{vomsdir}"
certdir = "{certdir}"

[[site]]
name = "T2_VOMS"
tier = 2
  [[site.service]]
  flavour = "XROOTD"
  hostname = "localhost"

[[probe]]
metric = "org.vomstest.se"
kind = "storage"
flavours = ["XROOTD"]
timeout = "60s"
{credential}
  [probe.params]
  url = "{xrootd}//data/"
  test_area = "/data/"
  ca_file = "{certdir}"
"#,
            xrootd = voms["XROOTD"],
            cert = voms["CERT"],
            key = voms["KEY"],
            vo = voms["VO"],
            vomses = voms["VOMSES"],
            vomsdir = voms["VOMSDIR"],
            certdir = voms["CERTDIR"],
        )
    };
    let run = |name: &str, credential: &str| {
        let cfg = dir.path().join(name);
        std::fs::write(&cfg, cfg_text(credential)).unwrap();
        let out = std::process::Command::new(common::bin())
            .args(["run", "--format", "json", "--config"])
            .arg(&cfg)
            .env("XDG_STATE_HOME", dir.path().join("state"))
            // Whatever proxy the environment names is not the probe's: the credential's wins.
            .env("X509_USER_PROXY", dir.path().join("no-such-proxy"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let (stdout, stderr) = texts(&out);
        (out.status.code(), format!("{stdout}\n{stderr}"), cfg)
    };

    // Without the credential the server (GSI only) refuses the client.
    let (code, text, _) = run("plain.toml", "");
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("Auth failed"), "{text}");

    // With it: voms-proxy-init against the VOMS server, the proxy handed to xrdfs/xrdcp as
    // X509_USER_PROXY: the whole put/stat/get/delete round trip passes.
    let (code, text, cfg) = run("proxy.toml", "credential = \"robot\"");
    assert_eq!(code, Some(0), "{text}");
    let proxy = dir
        .path()
        .join("state/gridprobe/vomstest.credentials/robot.proxy");
    let pem = std::fs::read_to_string(&proxy).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE") && pem.contains("PRIVATE KEY"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&proxy).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "proxy readable by others: {mode:o}");

    // The state shows when it expires (about an hour from now, the VOMS AC included).
    let cli = gridprobe(&[
        "credentials",
        "--format",
        "json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let (out, err) = texts(&cli);
    assert_eq!(cli.status.code(), Some(0), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["kind"], "proxy");
    assert_eq!(v[0]["valid"], true);
    let until = v[0]["valid_until_ms"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((50 * 60_000..=61 * 60_000).contains(&(until - now)), "{v}");
}

#[test]
fn check_warns_about_an_unused_credential_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let base = r#"
vo = "chk"
[[credential]]
name = "lhcb-prod"
kind = "file"
path = "x509up"
[[site]]
name = "S"
tier = 2
  [[site.service]]
  flavour = "WEB"
  hostname = "web.example.org"
[[probe]]
metric = "org.chk.web"
kind = "http"
flavours = ["WEB"]
"#;
    let cfg = dir.path().join("unused.toml");
    std::fs::write(&cfg, base).unwrap();
    let out = gridprobe(&["check", cfg.to_str().unwrap()]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr
            .contains("unused.toml:4:8: warning: credential `lhcb-prod` is not used by any probe"),
        "{stderr}"
    );
    let cfg = dir.path().join("unknown.toml");
    std::fs::write(&cfg, format!("{base}credential = \"lhcb-prd\"\n")).unwrap();
    let out = gridprobe(&["check", cfg.to_str().unwrap()]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("unknown.toml:17:14: error: unknown credential `lhcb-prd`"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `lhcb-prod`?"), "{stderr}");
}

/// A token file managed elsewhere (`kind = "file"`): a plugin finds it through
/// BEARER_TOKEN_FILE (WLCG Bearer Token Discovery) while its JWT `exp` is ahead; once past,
/// the probe is not run and is UNKNOWN with the expiry.
#[test]
fn a_watched_token_file_reaches_plugins_until_it_expires() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jwt = |exp: u64| {
        format!(
            "{}.{}.sig",
            b64(r#"{"alg":"none"}"#),
            b64(&format!(r#"{{"exp":{exp}}}"#))
        )
    };
    let token = dir.path().join("token");
    let plugin = common::script(
        dir.path(),
        "check_token",
        "#!/bin/sh\nif [ \"$(cat \"$BEARER_TOKEN_FILE\")\" = \"$EXPECTED\" ]; then echo \"OK - token found\"; exit 0; fi\necho \"CRITICAL - no token\"; exit 2\n",
    );
    let cfg = dir.path().join("vo.toml");
    let write_cfg = |expected: &str| {
        std::fs::write(
            &cfg,
            format!(
                r#"
vo = "tok"
[[credential]]
name = "watched"
kind = "file"
path = "token"
[[site]]
name = "S"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce.example.org"
[[probe]]
metric = "org.tok.plugin"
kind = "nagios"
flavours = ["CE"]
credential = "watched"
  [probe.params]
  command = "{plugin}"
  env = {{ EXPECTED = "{expected}" }}
[[probe]]
metric = "org.tok.CE-job-token"
kind = "job"
flavours = ["CE"]
credential = "watched"
  [probe.params]
  backend = "local"
  workdir = "{jobs}"
  command = "sh"
  args = ["-c", "cat \"$BEARER_TOKEN_FILE\""]
  output_regex = "^{expected}$"
"#,
                plugin = plugin.display(),
                jobs = dir.path().join("jobs").display()
            ),
        )
        .unwrap();
    };
    let run = || {
        let out = std::process::Command::new(common::bin())
            .args(["run", "--format", "json", "--config"])
            .arg(&cfg)
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let (stdout, stderr) = texts(&out);
        (out.status.code(), format!("{stdout}\n{stderr}"))
    };
    let valid = jwt(now + 3600);
    std::fs::write(&token, &valid).unwrap();
    write_cfg(&valid);
    let (code, text) = run();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("OK - token found"), "{text}");
    // A job through the local backend finds it too, as jobs of the batch backends do.
    assert!(text.contains("org.tok.CE-job-token"), "{text}");

    let expired = jwt(now - 60);
    std::fs::write(&token, &expired).unwrap();
    write_cfg(&expired);
    let (code, text) = run();
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("monitoring credential watched expired at "),
        "{text}"
    );
    assert!(!text.contains("CRITICAL"), "{text}");
}

#[test]
fn a_refresh_token_grant_obtains_a_token_without_showing_either() {
    let state: Shared = Arc::default();
    let port = start_endpoint(state.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vo.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
vo = "refresh"
[[credential]]
name = "iam-refresh"
kind = "token"
token_endpoint = "http://127.0.0.1:{port}/token"
grant = "refresh_token"
client_id = "public-robot"
refresh_token_env = "GP_TEST_REFRESH_TOKEN"
"#
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["credentials", "--config"])
        .arg(&cfg)
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("GP_TEST_REFRESH_TOKEN", REFRESH_TOKEN)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("iam-refresh"), "{stdout}");
    assert!(state.lock().unwrap().bad_requests.is_empty());
    let issued: Vec<String> = state.lock().unwrap().issued.keys().cloned().collect();
    assert_eq!(issued.len(), 1);
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains(REFRESH_TOKEN) && !text.contains(&issued[0]),
            "{text}"
        );
    }
    // Without the variable: not obtained, exit 1, the variable named, nothing else.
    let out = std::process::Command::new(common::bin())
        .args(["credentials", "--format", "json", "--config"])
        .arg(&cfg)
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env_remove("GP_TEST_REFRESH_TOKEN")
        .output()
        .unwrap();
    let (stdout, _) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("refresh token: environment variable GP_TEST_REFRESH_TOKEN is not set"),
        "{stdout}"
    );
}
