//! End-to-end tests of `gridprobe run` through the built binary, against real local servers,
//! real Nagios plugins and real processes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    closed_port, gridprobe, http_server, plugins_dir, process_alive, script, texts, wait_until,
};

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("vo.toml");
    std::fs::write(&path, body).expect("write config");
    path.to_str().expect("utf-8").to_string()
}

/// Writes a config of one tier-3 site with one CE and one `nagios` probe running `command`.
fn one_plugin_config(
    dir: &Path,
    site: &str,
    metric: &str,
    timeout: &str,
    command: &Path,
) -> String {
    write_config(
        dir,
        &format!(
            r#"
vo = "test"
[[site]]
name = "{site}"
tier = 3
  [[site.service]]
  flavour = "CE"
  hostname = "ce.local"

[[probe]]
metric = "{metric}"
kind = "nagios"
flavours = ["CE"]
timeout = "{timeout}"
  [probe.params]
  command = "{command}"
"#,
            command = command.display()
        ),
    )
}

fn run_json(config: &str, extra: &[&str]) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let mut args = vec!["run", "--config", config, "--format", "json"];
    args.extend_from_slice(extra);
    let out = gridprobe(&args);
    let (stdout, stderr) = texts(&out);
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("json ({e}):\n{stdout}\n{stderr}"));
    (out.status.code(), items, stderr)
}

fn result_of<'a>(items: &'a [serde_json::Value], metric: &str) -> &'a serde_json::Value {
    items
        .iter()
        .map(|i| &i["result"])
        .find(|r| r["metric"] == metric)
        .unwrap_or_else(|| panic!("no result for {metric} in {items:?}"))
}

#[test]
fn http_ok_closed_port_critical_and_exit_code_is_worst() {
    let port = http_server(200, "all good: site is up");
    let closed = closed_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
vo = "test"
[defaults]
interval = "1h"
timeout = "10s"

[[site]]
name = "T2_TEST"
tier = 2
  [[site.service]]
  flavour = "WEB"
  hostname = "127.0.0.1"
  endpoint = "http://127.0.0.1:{port}/"
  [[site.service]]
  flavour = "DB"
  hostname = "localhost"
  params = {{ port = "{closed}" }}

[[probe]]
metric = "org.test.web"
kind = "http"
flavours = ["WEB"]
  [probe.params]
  body_regex = "site is up"

[[probe]]
metric = "org.test.db-port"
kind = "tcp"
flavours = ["DB"]
  [probe.params]
  host = "127.0.0.1"
  port = {closed}
"#
        ),
    );
    let (code, items, stderr) = run_json(&config, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    let web = result_of(&items, "org.test.web");
    assert_eq!(web["status"], "OK", "{web}");
    assert_eq!(web["site"], "T2_TEST");
    assert_eq!(web["trigger"], "on_demand");
    assert_eq!(web["attempt"], 1);
    let db = result_of(&items, "org.test.db-port");
    assert_eq!(db["status"], "CRITICAL", "{db}");
    assert!(
        db["summary"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("refused"),
        "{db}"
    );

    // The table view: one row per service, SAM tokens, then the reason for the red cell.
    let out = gridprobe(&["run", "--config", &config]);
    let (stdout, _) = texts(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout.contains("T2_TEST"), "{stdout}");
    assert!(stdout.contains(" ok "), "{stdout}");
    assert!(stdout.contains(" error "), "{stdout}");
    assert!(
        stdout.contains("CRITICAL db-port on localhost (DB) at T2_TEST:"),
        "{stdout}"
    );

    // Selecting the healthy service only: exit 0.
    let out = gridprobe(&["run", "--config", &config, "--service", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
}

#[test]
fn real_nagios_plugins_map_exit_codes_and_perfdata() {
    let Some(plugins) = plugins_dir() else { return };
    let port = http_server(200, "hello");
    let dir = tempfile::tempdir().expect("tempdir");
    let dummy = plugins.join("check_dummy");
    let tcp = plugins.join("check_tcp");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
vo = "test"
[defaults]
interval = "1h"
timeout = "20s"

[[site]]
name = "T2_PLUGINS"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "127.0.0.1"
  params = {{ port = "{port}" }}

[[probe]]
metric = "org.test.dummy-warn"
kind = "nagios"
flavours = ["CE"]
  [probe.params]
  command = "{dummy}"
  args = ["1", "disk almost full"]

[[probe]]
metric = "org.test.tcp"
kind = "nagios"
flavours = ["CE"]
  [probe.params]
  command = "{tcp}"
  args = ["-H", "{{hostname}}", "-p", "{{port}}", "-t", "{{timeout}}"]
"#,
            dummy = dummy.display(),
            tcp = tcp.display()
        ),
    );
    let (code, items, stderr) = run_json(&config, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let warn = result_of(&items, "org.test.dummy-warn");
    assert_eq!(warn["status"], "WARNING");
    assert!(
        warn["summary"]
            .as_str()
            .unwrap_or("")
            .contains("disk almost full"),
        "{warn}"
    );
    let tcp = result_of(&items, "org.test.tcp");
    assert_eq!(tcp["status"], "OK", "{tcp}");
    let perf = tcp["perfdata"].as_array().expect("perfdata");
    assert!(
        perf.iter().any(|p| p["label"] == "time" && p["uom"] == "s"),
        "{tcp}"
    );
}

#[test]
fn dependency_chain_records_standby_when_parent_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fail = script(
        dir.path(),
        "fail.sh",
        "echo 'LOCK CRITICAL - lock area unwritable'; exit 2",
    );
    let ok = script(dir.path(), "ok.sh", "echo 'OK - ran'; exit 0");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
vo = "test"
[[site]]
name = "T1_DEP"
tier = 1
  [[site.service]]
  flavour = "CE"
  hostname = "ce.local"

[[probe]]
metric = "org.test.CE-lock"
kind = "nagios"
flavours = ["CE"]
timeout = "10s"
  [probe.params]
  command = "{fail}"

[[probe]]
metric = "org.test.CE-install"
kind = "nagios"
flavours = ["CE"]
depends_on = ["CE-lock"]
timeout = "10s"
  [probe.params]
  command = "{ok}"

[[probe]]
metric = "org.test.CE-job"
kind = "nagios"
flavours = ["CE"]
depends_on = ["CE-install"]
timeout = "10s"
  [probe.params]
  command = "{ok}"
"#,
            fail = fail.display(),
            ok = ok.display()
        ),
    );
    // Asking for the grandchild alone still runs its parents.
    let (code, items, stderr) = run_json(&config, &["--probe", "CE-job"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(items.len(), 3);
    assert_eq!(result_of(&items, "org.test.CE-lock")["status"], "CRITICAL");
    let install = result_of(&items, "org.test.CE-install");
    assert_eq!(install["status"], "STANDBY", "{install}");
    assert!(
        install["summary"]
            .as_str()
            .unwrap_or("")
            .contains("CE-lock on ce.local is CRITICAL"),
        "{install}"
    );
    let job = result_of(&items, "org.test.CE-job");
    assert_eq!(job["status"], "STANDBY", "{job}");

    let out = gridprobe(&["run", "--config", &config]);
    let (stdout, _) = texts(&out);
    assert!(stdout.contains(" stb "), "{stdout}");
}

#[test]
fn hanging_plugin_is_killed_at_timeout_with_its_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let hang = script(
        dir.path(),
        "hang.sh",
        &format!(
            "sleep 600 &\necho $! > {p}.child\necho $$ > {p}.self\nsleep 600",
            p = pids.display()
        ),
    );
    let config = one_plugin_config(dir.path(), "T3_HANG", "org.test.hang", "2s", &hang);
    let started = Instant::now();
    let (code, items, stderr) = run_json(&config, &[]);
    let took = started.elapsed();
    assert_eq!(code, Some(2), "timeout is CRITICAL by default: {stderr}");
    let r = result_of(&items, "org.test.hang");
    assert!(
        r["summary"].as_str().unwrap_or("").contains("timed out")
            || r["summary"].as_str().unwrap_or("").contains("timeout"),
        "{r}"
    );
    assert!(took < Duration::from_secs(15), "run took {took:?}");
    for suffix in ["self", "child"] {
        let pid: i32 = std::fs::read_to_string(format!("{}.{suffix}", pids.display()))
            .expect("plugin wrote its pid")
            .trim()
            .parse()
            .expect("pid");
        assert!(
            wait_until(Duration::from_secs(5), || !process_alive(pid)),
            "{suffix} process {pid} survived the timeout"
        );
    }
}

#[test]
fn huge_plugin_output_is_bounded_and_marked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loud = script(
        dir.path(),
        "loud.sh",
        "echo 'LOUD OK - printing a lot'\nhead -c 50000000 /dev/zero | tr '\\0' 'x'\necho\nexit 0",
    );
    let config = one_plugin_config(dir.path(), "T3_LOUD", "org.test.loud", "60s", &loud);
    let (code, items, stderr) = run_json(&config, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let r = result_of(&items, "org.test.loud");
    assert_eq!(r["status"], "OK");
    assert_eq!(r["summary"], "LOUD OK - printing a lot");
    let details = r["details"].as_str().expect("details");
    assert!(
        details.len() <= 64 * 1024,
        "details are {} bytes",
        details.len()
    );
    assert!(details.contains("truncated"), "no truncation marker");
}

#[test]
fn sample_local_config_runs_and_shows_every_kind_of_cell() {
    let out = gridprobe(&["run", "--config", "config/examples/local.toml"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    for token in [" ok ", " warn ", " error ", " stb "] {
        assert!(stdout.contains(token), "missing {token}:\n{stdout}");
    }
}

#[test]
fn unknown_selection_is_a_clear_error() {
    let out = gridprobe(&[
        "run",
        "--config",
        "config/examples/local.toml",
        "--site",
        "LOCAL.localhst",
    ]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr.contains("no site named `LOCAL.localhst` (did you mean `LOCAL.localhost`?)"),
        "{stderr}"
    );
    let out = gridprobe(&[
        "run",
        "--config",
        "config/examples/local.toml",
        "--probe",
        "CE-o",
    ]);
    let (_, stderr) = texts(&out);
    assert!(stderr.contains("no probe named `CE-o`"), "{stderr}");
}

/// Issue 13: a plugin's child that leaves the process group with `setsid` survived every run.
#[test]
fn a_plugin_child_that_calls_setsid_does_not_outlive_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("escaped.pid");
    let plugin = script(
        dir.path(),
        "check_leaky",
        &format!(
            "setsid sleep 1000 >/dev/null 2>&1 &\necho $! > {p}\nsleep 0.3\n\
             echo 'OK - started a helper'\nexit 0",
            p = pid_file.display()
        ),
    );
    let config = one_plugin_config(dir.path(), "T3_LEAK", "org.test.leak", "10s", &plugin);
    let (code, items, stderr) = run_json(&config, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(result_of(&items, "org.test.leak")["status"], "OK");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("plugin wrote the helper's pid")
        .trim()
        .parse()
        .expect("pid");
    // `gridprobe run` has exited: nothing of the run may be left.
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(pid)),
        "the setsid child {pid} survived the run"
    );
}

/// The partition of the test Slurm, or `None` outside CI.
fn slurm() -> Option<String> {
    match std::env::var("GRIDPROBE_TEST_SLURM") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("GRIDPROBE_TEST_SLURM is not set in CI: run `eval \"$(scripts/test-env.sh)\"`")
        }
        _ => {
            eprintln!("note: GRIDPROBE_TEST_SLURM is not set; Slurm test not run");
            None
        }
    }
}

/// Ids of the Slurm jobs (pending or running) whose working directory is `dir`.
fn slurm_jobs_in(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-o", "%i %Z"])
        .output()
        .expect("run squeue");
    assert!(
        out.status.success(),
        "squeue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, wd)| {
            let wd = Path::new(wd.trim());
            wd.starts_with(dir) || wd.starts_with(&canonical)
        })
        .map(|(id, _)| id.to_string())
        .collect()
}

/// Issue 13: SIGTERM to `gridprobe run` left its submitted Slurm job running (SIGINT
/// cancelled it). SIGTERM and SIGHUP now cancel it too.
#[test]
fn a_signal_to_run_cancels_its_slurm_job() {
    let Some(partition) = slurm() else { return };
    for sig in ["TERM", "HUP"] {
        let base = std::env::temp_dir().join("gridprobe-slurm-tests");
        std::fs::create_dir_all(&base).expect("mkdir");
        let dir = tempfile::tempdir_in(&base).expect("tempdir");
        let hang = script(dir.path(), "hang.sh", "echo started\nsleep 600\n");
        let config = write_config(
            dir.path(),
            &format!(
                r#"
vo = "test"
[[site]]
name = "T2_BATCH"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce.local"

[[probe]]
metric = "org.test.job"
kind = "job"
flavours = ["CE"]
timeout = "10m"
  [probe.params]
  backend = "slurm"
  queue = "{partition}"
  poll_interval = "200ms"
  script = "{hang}"
  workdir = "{dir}"
"#,
                hang = hang.display(),
                dir = dir.path().display()
            ),
        );
        let mut child = std::process::Command::new(common::bin())
            .args(["run", "--config", &config, "--format", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn gridprobe run");
        assert!(
            wait_until(Duration::from_secs(60), || !slurm_jobs_in(dir.path())
                .is_empty()),
            "SIG{sig}: no job submitted"
        );
        let jobs = slurm_jobs_in(dir.path());
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exited = wait_until(Duration::from_secs(60), || {
            child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(exited, "SIG{sig}: run did not end: {stderr}");
        assert!(
            wait_until(Duration::from_secs(30), || slurm_jobs_in(dir.path())
                .is_empty()),
            "SIG{sig}: jobs {jobs:?} left in squeue after run ended: {stderr}"
        );
        assert!(stderr.contains(&format!("SIG{sig}")), "{stderr}");
    }
}

/// Issue 20: gridprobe is a child subreaper. A double-forked daemon that left the plugin's
/// process group and session still dies with the run, and the reaping of such orphans never
/// takes the exit status of the plugins gridprobe waits for (each status below comes from its
/// plugin's exit code, while leftovers are killed and reaped around them).
#[test]
fn double_forked_daemons_die_with_the_run_and_every_plugin_keeps_its_exit_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p1, p2) = (dir.path().join("setsid.pid"), dir.path().join("daemon.pid"));
    let leaky = script(
        dir.path(),
        "check_leaky",
        &format!(
            "setsid sleep 1000 >/dev/null 2>&1 &\necho $! > {p1}\n\
             (setsid sh -c 'sleep 1000 >/dev/null 2>&1 & echo $! > {p2}' &)\n\
             while [ ! -s {p2} ]; do sleep 0.05; done\n\
             echo 'OK - left two daemons'\nexit 0",
            p1 = p1.display(),
            p2 = p2.display()
        ),
    );
    let mut probes = format!(
        "[[probe]]\nmetric = \"org.test.leaky\"\nkind = \"nagios\"\nflavours = [\"CE\"]\n  \
         [probe.params]\n  command = \"{}\"\n",
        leaky.display()
    );
    let words = ["OK", "WARNING", "CRITICAL", "UNKNOWN"];
    for copy in 0..3 {
        for (code, word) in words.iter().enumerate() {
            let plugin = script(
                dir.path(),
                &format!("check_{code}_{copy}"),
                // A leftover of its own each, orphaned and exiting while others run.
                &format!("(sleep 0.1 &)\nsleep 0.2\necho '{word} - exit {code}'\nexit {code}"),
            );
            probes.push_str(&format!(
                "[[probe]]\nmetric = \"org.test.exit{code}-{copy}\"\nkind = \"nagios\"\n\
                 flavours = [\"CE\"]\n  [probe.params]\n  command = \"{}\"\n",
                plugin.display()
            ));
        }
    }
    let config = write_config(
        dir.path(),
        &format!(
            "vo = \"test\"\n[defaults]\ntimeout = \"20s\"\n[[site]]\nname = \"T3_REAP\"\n\
             tier = 3\n  [[site.service]]\n  flavour = \"CE\"\n  hostname = \"ce.local\"\n\n{probes}"
        ),
    );
    let (code, items, stderr) = run_json(&config, &[]);
    assert_eq!(code, Some(2), "the worst status, CRITICAL: {stderr}");
    assert_eq!(result_of(&items, "org.test.leaky")["status"], "OK");
    for copy in 0..3 {
        for (code, word) in words.iter().enumerate() {
            let r = result_of(&items, &format!("org.test.exit{code}-{copy}"));
            assert_eq!(r["status"], *word, "{r}");
            assert_eq!(r["summary"], format!("{word} - exit {code}"), "{r}");
        }
    }
    for file in [&p1, &p2] {
        let pid: i32 = std::fs::read_to_string(file)
            .expect("plugin wrote the daemon's pid")
            .trim()
            .parse()
            .expect("pid");
        assert!(
            wait_until(Duration::from_secs(5), || !process_alive(pid)),
            "the daemon {pid} ({}) survived the run",
            file.display()
        );
    }
}
