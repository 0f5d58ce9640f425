//! Site agents over TLS (`tls://` URLs, `[agents] ca_file`, `gridprobe agent --ca-file`): a
//! nats-server of the test's own with a `tls {}` block and a certificate of a private CA made
//! here (rcgen), `serve` and real agents.
//!
//! - with the CA on both sides a run goes through the agent and its result is recorded; the
//!   passwords (the centre's from the environment, the agents' from a file and from the
//!   environment) never appear in any output;
//! - an agent without the CA, or with another CA, or with a CA file holding no certificate,
//!   exits non-zero at once with an error naming the certificate problem and `--ca-file`;
//! - a centre with the wrong CA keeps running and records the agent-run site's cells
//!   UNKNOWN with the certificate problem (the monitoring's failure, never CRITICAL).

mod common;

use std::process::Command;
use std::time::Duration;

use common::nats_tls::{
    agent_alive, results, Agent, Nats, Pki, PASSWORD_AGENT, PASSWORD_CENTRE, SITE,
};
use common::{wait_until, write_file, Serve};

/// The centre's configuration: `SITE` runs on agents, its one probe a plugin that says OK.
/// The centre's password comes from `$GP_TEST_CENTRE_PW`.
fn centre_config(dir: &std::path::Path, nats: &Nats, ca_file: &str) -> String {
    let plugin = common::script(dir, "ok.sh", "echo 'OK - ran at the site'\nexit 0");
    format!(
        r#"
vo = "e2e"
[defaults]
interval = "1h"
timeout = "6s"
[server]
startup_spread = "1s"
shutdown_grace = "2s"

[agents]
url = "{url}"
password_env = "GP_TEST_CENTRE_PW"
ca_file = "{ca_file}"
no_agent_after = "30s"
grace = "1s"

[[site]]
name = "{SITE}"
tier = 2
executor = "agent"
  [[site.service]]
  flavour = "SRV"
  hostname = "srv.example.org"

[[probe]]
metric = "org.e2e.tls"
kind = "nagios"
flavours = ["SRV"]
  [probe.params]
  command = "{plugin}"
"#,
        url = nats.url("centre"),
        plugin = plugin.display(),
    )
}

fn serve(cfg: &str, store: &std::path::Path) -> Serve {
    let mut cmd = Command::new(common::bin());
    cmd.args(["serve", "--config", cfg, "--store"])
        .arg(store)
        .args(["--listen", "127.0.0.1:0"])
        .env("GP_TEST_CENTRE_PW", PASSWORD_CENTRE);
    Serve::from_command(cmd)
}

fn assert_no_password(what: &str, text: &str) {
    for secret in [PASSWORD_CENTRE, PASSWORD_AGENT] {
        assert!(!text.contains(secret), "{what} shows a password:\n{text}");
    }
}

#[test]
fn agents_over_tls_with_the_private_ca_run_probes_and_never_echo_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("gridprobe test NATS CA");
    let Some(nats) = Nats::start(dir.path(), Some(&pki)) else {
        return;
    };
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let cfg = write_file(
        dir.path(),
        "vo.toml",
        &centre_config(dir.path(), &nats, &ca),
    );
    let serve = serve(&cfg, &dir.path().join("r.sqlite"));
    let addr = serve.http_addr();
    // One agent with its password in a file, one with it in $GRIDPROBE_AGENT_PASSWORD.
    let pw = write_file(dir.path(), "agent.pw", &format!("{PASSWORD_AGENT}\n"));
    let url = nats.url("agent-t2");
    let from_file = Agent::start(
        dir.path(),
        "tls-file",
        &["--broker", &url, "--ca-file", &ca, "--password-file", &pw],
        &[],
    );
    let from_env = Agent::start(
        dir.path(),
        "tls-env",
        &["--broker", &url, "--ca-file", &ca],
        &[("GRIDPROBE_AGENT_PASSWORD", PASSWORD_AGENT)],
    );
    let ok = wait_until(Duration::from_secs(45), || {
        results(&addr, SITE)
            .iter()
            .any(|r| r["status"] == "OK" && r["summary"] == "OK - ran at the site")
    });
    assert!(
        ok,
        "no OK over TLS: {:?}\nserve:\n{}\nagent (file):\n{}\nagent (env):\n{}",
        results(&addr, SITE),
        serve.output(),
        from_file.output(),
        from_env.output()
    );
    let both = wait_until(Duration::from_secs(20), || {
        agent_alive(&addr, "tls-file") && agent_alive(&addr, "tls-env")
    });
    assert!(
        both,
        "{}\n{}\n{}",
        common::nats_tls::get_json(&addr, "/api/v1/agents"),
        from_file.output(),
        from_env.output()
    );
    assert_no_password("serve", &serve.output());
    assert_no_password("the agent (file)", &from_file.output());
    assert_no_password("the agent (env)", &from_env.output());
    assert_no_password("nats-server", &nats.log());
}

#[test]
fn an_agent_without_the_brokers_ca_names_the_certificate_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("gridprobe test NATS CA");
    let Some(nats) = Nats::start(dir.path(), Some(&pki)) else {
        return;
    };
    let pw = write_file(dir.path(), "agent.pw", PASSWORD_AGENT);
    let other = Pki::new("another CA").write_ca(dir.path(), "other-ca.pem");
    let not_pem = write_file(dir.path(), "not-a-ca.pem", "just text\n");
    let url = nats.url("agent-t2");
    // (extra arguments, what stderr must say)
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        // The system roots do not hold the private CA.
        (
            vec![],
            vec![
                "not issued by a CA this side trusts (UnknownIssuer)",
                "--ca-file",
            ],
        ),
        (
            vec!["--ca-file", &other],
            vec![
                "not issued by a CA this side trusts (UnknownIssuer)",
                "--ca-file",
            ],
        ),
        (
            vec!["--ca-file", &not_pem],
            vec!["--ca-file", "not-a-ca.pem: no PEM certificate in it"],
        ),
        (
            vec!["--ca-file", "/nonexistent/ca.pem"],
            vec!["cannot read --ca-file /nonexistent/ca.pem"],
        ),
    ];
    for (i, (extra, wants)) in cases.into_iter().enumerate() {
        let mut args = vec!["--broker", url.as_str(), "--password-file", pw.as_str()];
        args.extend(extra.iter().copied());
        let mut agent = Agent::start(dir.path(), &format!("bad{i}"), &args, &[]);
        let code = agent.wait_exit(Duration::from_secs(30));
        let out = agent.output();
        assert!(
            matches!(code, Some(c) if c != 0),
            "{extra:?}: exit {code:?}:\n{out}"
        );
        for want in wants {
            assert!(out.contains(want), "{extra:?}: no `{want}` in:\n{out}");
        }
        // The broker is named (its user masked).
        assert!(out.contains(&format!("tls://***@{}", nats.addr)), "{out}");
        assert_no_password("the agent", &out);
    }
    // The right CA but a wrong password: refused by the broker, said so, exits non-zero.
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let wrong = write_file(dir.path(), "wrong.pw", "not-the-password");
    let mut agent = Agent::start(
        dir.path(),
        "badpw",
        &[
            "--broker",
            &url,
            "--ca-file",
            &ca,
            "--password-file",
            &wrong,
        ],
        &[],
    );
    let code = agent.wait_exit(Duration::from_secs(30));
    let out = agent.output();
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}:\n{out}");
    assert!(
        out.contains("the broker refused the user or its password"),
        "{out}"
    );
    assert!(!out.contains("not-the-password"), "{out}");
}

#[test]
fn a_centre_with_the_wrong_ca_records_the_agent_sites_cells_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("gridprobe test NATS CA");
    let Some(nats) = Nats::start(dir.path(), Some(&pki)) else {
        return;
    };
    let wrong = Pki::new("not the broker's CA").write_ca(dir.path(), "wrong-ca.pem");
    let cfg = write_file(
        dir.path(),
        "vo.toml",
        &centre_config(dir.path(), &nats, &wrong),
    );
    let mut serve = serve(&cfg, &dir.path().join("r.sqlite"));
    let addr = serve.http_addr();
    let unknown = wait_until(Duration::from_secs(45), || {
        results(&addr, SITE).iter().any(|r| {
            r["status"] == "UNKNOWN"
                && r["summary"].as_str().is_some_and(|s| {
                    s.starts_with(&format!("cannot hand the run to the agents of {SITE}"))
                        && s.contains("UnknownIssuer")
                        && s.contains("[agents] ca_file")
                })
        })
    });
    assert!(unknown, "{:?}\n{}", results(&addr, SITE), serve.output());
    assert!(
        !results(&addr, SITE)
            .iter()
            .any(|r| r["status"] == "CRITICAL"),
        "{:?}",
        results(&addr, SITE)
    );
    let out = serve.output();
    assert!(
        out.contains("agents' broker unusable") && out.contains("UnknownIssuer"),
        "{out}"
    );
    assert_no_password("serve", &out);
    serve.terminate_cleanly();
}
