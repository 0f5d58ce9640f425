//! Site agents and monitoring credentials (`gridprobe agent --credentials FILE`): the probe of
//! an agent-run site names a `[[credential]]` (an OAuth2 client-credentials token from an
//! in-process token endpoint, as in tests/credentials.rs); the agent obtains it with its own
//! credentials file and its run is OK. The centre's own `[[credential]]` of that name points
//! at an endpoint that does not exist, so the OK can only come from the agent's token. An
//! agent without the credential returns UNKNOWN "agent … has no credential `iam`" (the
//! monitoring's failure, never CRITICAL); a bad credentials file stops the agent at start with
//! a positioned error.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use common::nats_tls::{results, Agent, Nats, PASSWORD_CENTRE, SITE};
use common::{wait_until, write_file, Serve};

const CLIENT_SECRET: &str = "agent-client-secret-77";
/// `robot:agent-client-secret-77`, as HTTP Basic sends it.
const BASIC: &str = "Basic cm9ib3Q6YWdlbnQtY2xpZW50LXNlY3JldC03Nw==";

#[derive(Default)]
struct Endpoint {
    issued: HashSet<String>,
    served: u32,
}

type Shared = Arc<Mutex<Endpoint>>;

async fn token(State(s): State<Shared>, headers: HeaderMap, body: String) -> (StatusCode, String) {
    let mut e = s.lock().unwrap_or_else(|p| p.into_inner());
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != BASIC || !body.contains("grant_type=client_credentials") {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client"}"#.into(),
        );
    }
    e.served += 1;
    let t = format!("agent-at-{}-{}", e.served, std::process::id());
    e.issued.insert(t.clone());
    (
        StatusCode::OK,
        format!(r#"{{"access_token":"{t}","token_type":"Bearer","expires_in":3600}}"#),
    )
}

/// The protected resource: 200 with a token of ours, 401 otherwise.
async fn data(State(s): State<Shared>, headers: HeaderMap) -> (StatusCode, &'static str) {
    let e = s.lock().unwrap_or_else(|p| p.into_inner());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match bearer {
        Some(t) if e.issued.contains(t) => (StatusCode::OK, "fine"),
        _ => (StatusCode::UNAUTHORIZED, "no valid token"),
    }
}

fn start_endpoint(state: Shared) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = Router::new()
                .route("/token", post(token))
                .route("/data", get(data))
                .with_state(state);
            let l = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(l, app).await;
        });
    });
    port
}

/// A `[[credential]]` table named `iam` whose token endpoint is `endpoint`.
fn credential(endpoint: &str) -> String {
    format!(
        r#"
[[credential]]
name = "iam"
kind = "token"
token_endpoint = "{endpoint}"
client_id = "robot"
secret_file = "iam-secret"
scope = "storage.read:/"
retry_max = "1s"
"#
    )
}

fn secret_file(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("iam-secret");
    std::fs::write(&path, format!("{CLIENT_SECRET}\n")).expect("secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn an_agent_runs_probes_with_its_own_credential_and_one_without_it_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(dir.path(), None) else {
        return;
    };
    let state: Shared = Arc::default();
    let port = start_endpoint(state.clone());

    // The centre: its `iam` cannot be obtained (nothing listens at its endpoint).
    let centre_dir = dir.path().join("centre");
    std::fs::create_dir_all(&centre_dir).unwrap();
    secret_file(&centre_dir);
    let pw = write_file(&centre_dir, "centre.pw", PASSWORD_CENTRE);
    let cfg = write_file(
        &centre_dir,
        "vo.toml",
        &format!(
            r#"
vo = "e2e"
[defaults]
interval = "4s"
timeout = "2s"
[server]
startup_spread = "1s"
shutdown_grace = "2s"

[agents]
url = "{url}"
password_file = "{pw}"
no_agent_after = "30s"
grace = "1s"
{cred}
[[site]]
name = "{SITE}"
tier = 2
executor = "agent"
  [[site.service]]
  flavour = "WEB"
  hostname = "127.0.0.1"
  endpoint = "http://127.0.0.1:{port}/data"

[[probe]]
metric = "org.e2e.data"
kind = "http"
flavours = ["WEB"]
credential = "iam"
"#,
            url = nats.url("centre"),
            cred = credential(&format!("http://127.0.0.1:{}/token", common::closed_port())),
        ),
    );
    let mut serve_cmd = std::process::Command::new(common::bin());
    serve_cmd
        .args(["serve", "--config", &cfg, "--store"])
        .arg(centre_dir.join("r.sqlite"))
        .args(["--listen", "127.0.0.1:0"])
        .env("XDG_STATE_HOME", centre_dir.join("state"));
    let serve = Serve::from_command(serve_cmd);
    let addr = serve.http_addr();

    // The agent's own credentials file: `vo` and the working `iam`.
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    secret_file(&agent_dir);
    let creds = write_file(
        &agent_dir,
        "credentials.toml",
        &format!(
            "vo = \"e2e\"\n{}",
            credential(&format!("http://127.0.0.1:{port}/token"))
        ),
    );
    let agent_pw = write_file(&agent_dir, "agent.pw", common::nats_tls::PASSWORD_AGENT);
    let url = nats.url("agent-t2");
    let state_home = agent_dir.join("state");
    let state_env = state_home.to_str().unwrap();
    let mut with = Agent::start(
        &agent_dir,
        "with-cred",
        &[
            "--broker",
            &url,
            "--password-file",
            &agent_pw,
            "--credentials",
            &creds,
        ],
        &[("XDG_STATE_HOME", state_env)],
    );
    let ok = wait_until(Duration::from_secs(45), || {
        results(&addr, SITE)
            .iter()
            .any(|r| r["status"] == "OK" && r["hostname"] == "127.0.0.1")
    });
    assert!(
        ok,
        "no OK with the agent's credential: {:?}\nserve:\n{}\nagent:\n{}",
        results(&addr, SITE),
        serve.output(),
        with.output()
    );
    assert!(state.lock().unwrap().served >= 1, "no token issued");
    let _ = with.child.kill();
    let _ = with.wait_exit(Duration::from_secs(10));

    // An agent without credentials: its runs are UNKNOWN with the reason, never CRITICAL.
    let without = Agent::start(
        &agent_dir,
        "no-cred",
        &["--broker", &url, "--password-file", &agent_pw],
        &[("XDG_STATE_HOME", state_env)],
    );
    let unknown = wait_until(Duration::from_secs(60), || {
        results(&addr, SITE).iter().any(|r| {
            r["status"] == "UNKNOWN" && r["summary"] == "agent no-cred has no credential `iam`"
        })
    });
    let all = results(&addr, SITE);
    assert!(
        unknown,
        "no UNKNOWN from the agent without credentials: {all:?}\nagent:\n{}",
        without.output()
    );
    assert!(
        !all.iter()
            .any(|r| r["status"] == "CRITICAL" || r["status"] == "WARNING"),
        "the monitoring's failure reached the site: {all:?}"
    );
    let tokens: Vec<String> = state.lock().unwrap().issued.iter().cloned().collect();
    for text in [serve.output(), with.output(), without.output()] {
        assert!(
            !text.contains(CLIENT_SECRET),
            "client secret shown:\n{text}"
        );
        for t in &tokens {
            assert!(!text.contains(t.as_str()), "token shown:\n{text}");
        }
    }
}

#[test]
fn a_bad_credentials_file_stops_the_agent_with_a_positioned_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_file(
        dir.path(),
        "credentials.toml",
        "vo = \"e2e\"\n[[credential]]\nname = \"iam\"\nkind = \"tokn\"\n",
    );
    let missing = dir.path().join("missing.toml");
    for (file, wants) in [
        (
            bad.as_str(),
            vec![
                "credentials.toml:4:8: error",
                "tokn",
                "configuration was not accepted",
            ],
        ),
        (
            missing.to_str().unwrap(),
            vec!["missing.toml", "configuration was not accepted"],
        ),
    ] {
        let out = common::gridprobe(&[
            "agent",
            "--broker",
            &format!("nats://agent-t2@127.0.0.1:{}", common::closed_port()),
            "--site",
            SITE,
            "--credentials",
            file,
        ]);
        let (stdout, stderr) = common::texts(&out);
        assert_eq!(out.status.code(), Some(1), "{file}:\n{stdout}{stderr}");
        for want in wants {
            assert!(stderr.contains(want), "{file}: no `{want}` in:\n{stderr}");
        }
    }
}
