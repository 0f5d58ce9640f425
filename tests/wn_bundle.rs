//! Worker-node test bundles end to end: `gridprobe run` submits one job to the real one-node
//! Slurm of the test environment; the job runs the bundle's Nagios plugins on the worker node,
//! and each plugin comes back as a metric of its own (status, summary, perfdata), beside the
//! job's own result. Plugins the job never got to are UNKNOWN with the reason.

mod common;

use std::path::Path;

use std::time::Duration;

use common::{gridprobe, json, required, script, texts, wait_until, Serve};

fn slurm_partition() -> Option<String> {
    required(
        std::env::var("GRIDPROBE_TEST_SLURM")
            .ok()
            .filter(|p| !p.is_empty()),
        "GRIDPROBE_TEST_SLURM (the test Slurm's partition)",
        "run `eval \"$(scripts/test-env.sh)\"`",
    )
}

fn result_of<'a>(items: &'a [serde_json::Value], metric: &str) -> &'a serde_json::Value {
    items
        .iter()
        .map(|i| &i["result"])
        .find(|r| r["metric"] == metric)
        .unwrap_or_else(|| panic!("no result for {metric} in {items:#?}"))
}

fn status_summary(items: &[serde_json::Value], metric: &str) -> (String, String) {
    let r = result_of(items, metric);
    (
        r["status"].as_str().unwrap_or_default().to_string(),
        r["summary"].as_str().unwrap_or_default().to_string(),
    )
}

fn bundle_config(dir: &Path, partition: &str, killer: bool) -> String {
    script(
        dir,
        "wn_env.sh",
        "echo \"ENV OK: $(id -un) on $(hostname) | 'variables'=$(env | wc -l)\"\nexit 0",
    );
    script(
        dir,
        "wn_swspace.sh",
        "echo 'SWSPACE CRITICAL: /nonexistent/sw is missing'\necho 'looked for the VO area'\nexit 2",
    );
    script(dir, "wn_frontier.sh", "sleep 30\necho 'FRONTIER OK'");
    // Kills the bundle's runner (its grandparent, through `timeout`): the plugins after it
    // never run.
    script(
        dir,
        "wn_killer.sh",
        "kill -KILL \"$(ps -o ppid= -p $PPID | tr -d ' ')\"\nsleep 5",
    );
    let killer = if killer {
        "\n  [[probe.bundle]]\n  metric = \"org.test.WN-killer\"\n  script = \"wn_killer.sh\"\n"
    } else {
        ""
    };
    let path = dir.join("vo.toml");
    std::fs::write(
        &path,
        format!(
            r#"
vo = "test"
[[site]]
name = "T2_BATCH"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce.local"

[[probe]]
metric = "org.test.WN-bundle"
kind = "job"
flavours = ["CE"]
timeout = "5m"
  [probe.params]
  backend = "slurm"
  queue = "{partition}"
  poll_interval = "200ms"
  workdir = "{dir}"

  [[probe.bundle]]
  metric = "org.test.WN-env"
  description = "The worker node's environment"
  script = "wn_env.sh"

  [[probe.bundle]]
  metric = "org.test.WN-swspace"
  script = "wn_swspace.sh"

  [[probe.bundle]]
  metric = "org.test.WN-cvmfs"
  command = "/bin/sh"
  args = ["-c", "echo 'CVMFS WARNING: cache 91% full | cache=91%;80;95'; exit 1"]

  [[probe.bundle]]
  metric = "org.test.WN-frontier"
  script = "wn_frontier.sh"
  timeout = "1s"
{killer}
  [[probe.bundle]]
  metric = "org.test.WN-after"
  command = "/bin/echo"
  args = ["AFTER OK"]
"#,
            dir = dir.display()
        ),
    )
    .expect("write config");
    path.to_str().expect("utf-8").to_string()
}

fn run_json(config: &str) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let out = gridprobe(&["run", "--config", config, "--format", "json"]);
    let (stdout, stderr) = texts(&out);
    let items =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("json ({e}):\n{stdout}\n{stderr}"));
    (out.status.code(), items, stderr)
}

#[test]
fn a_bundle_job_reports_each_plugin_as_its_own_metric() {
    let Some(partition) = slurm_partition() else {
        return;
    };
    let base = std::env::temp_dir().join("gridprobe-slurm-tests");
    std::fs::create_dir_all(&base).expect("mkdir");
    let dir = tempfile::tempdir_in(&base).expect("tempdir");
    let config = bundle_config(dir.path(), &partition, false);
    let (code, items, stderr) = run_json(&config);
    assert_eq!(items.len(), 6, "{items:#?}\n{stderr}");

    let (status, summary) = status_summary(&items, "org.test.WN-bundle");
    assert_eq!(status, "OK", "{summary}\n{stderr}");
    assert!(summary.starts_with("WN bundle: exit code 0"), "{summary}");
    let job = result_of(&items, "org.test.WN-bundle");
    assert!(
        job["details"]
            .as_str()
            .unwrap_or("")
            .contains("worker-node bundle:"),
        "{job:#}"
    );

    let (status, summary) = status_summary(&items, "org.test.WN-env");
    assert_eq!(status, "OK", "{summary}");
    assert!(summary.starts_with("ENV OK: "), "{summary}");
    let env = result_of(&items, "org.test.WN-env");
    assert_eq!(env["perfdata"][0]["label"], "variables", "{env:#}");
    assert_eq!(env["hostname"], "ce.local");
    assert_eq!(env["kind"], "job");

    let (status, summary) = status_summary(&items, "org.test.WN-swspace");
    assert_eq!(
        (status.as_str(), summary.as_str()),
        ("CRITICAL", "SWSPACE CRITICAL: /nonexistent/sw is missing")
    );
    let sw = result_of(&items, "org.test.WN-swspace");
    assert_eq!(sw["details"], "looked for the VO area");

    let (status, summary) = status_summary(&items, "org.test.WN-cvmfs");
    assert_eq!(
        (status.as_str(), summary.as_str()),
        ("WARNING", "CVMFS WARNING: cache 91% full")
    );
    let cvmfs = result_of(&items, "org.test.WN-cvmfs");
    assert_eq!(cvmfs["perfdata"][0]["uom"], "%", "{cvmfs:#}");
    assert_eq!(cvmfs["perfdata"][0]["crit"], "95", "{cvmfs:#}");

    let (status, summary) = status_summary(&items, "org.test.WN-frontier");
    assert_eq!(status, "CRITICAL", "{summary}");
    assert!(
        summary.contains("plugin timed out after 1s on the worker node"),
        "{summary}"
    );

    let (status, summary) = status_summary(&items, "org.test.WN-after");
    assert_eq!((status.as_str(), summary.as_str()), ("OK", "AFTER OK"));
    // The exit code is the worst status of every metric.
    assert_eq!(code, Some(2), "{stderr}");

    // One metric alone: the job runs, and only that metric (with its job) is shown.
    let out = gridprobe(&[
        "run", "--config", &config, "--format", "json", "--probe", "WN-cvmfs",
    ]);
    let (stdout, _) = texts(&out);
    let items: Vec<serde_json::Value> = serde_json::from_str(&stdout).expect("json");
    assert_eq!(status_summary(&items, "org.test.WN-cvmfs").0, "WARNING");
}

#[test]
fn plugins_a_broken_job_never_ran_are_unknown_with_the_reason() {
    let Some(partition) = slurm_partition() else {
        return;
    };
    let base = std::env::temp_dir().join("gridprobe-slurm-tests");
    std::fs::create_dir_all(&base).expect("mkdir");
    let dir = tempfile::tempdir_in(&base).expect("tempdir");
    let config = bundle_config(dir.path(), &partition, true);
    let (_, items, stderr) = run_json(&config);
    assert_eq!(items.len(), 7, "{items:#?}\n{stderr}");
    // Those before the killer answered.
    assert_eq!(status_summary(&items, "org.test.WN-env").0, "OK");
    let (status, summary) = status_summary(&items, "org.test.WN-bundle");
    assert_eq!(status, "CRITICAL", "{summary}");
    for metric in ["org.test.WN-killer", "org.test.WN-after"] {
        let (status, summary) = status_summary(&items, metric);
        assert_eq!(status, "UNKNOWN", "{metric}: {summary}");
        assert!(
            summary.contains("the bundle job ended without this plugin's result"),
            "{metric}: {summary}"
        );
    }
}

#[test]
fn bundle_mistakes_are_errors_at_their_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    script(dir.path(), "wn_env.sh", "echo OK");
    let text = r#"
vo = "test"
[[site]]
name = "T2_BATCH"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce.local"

[[probe]]
metric = "org.test.WN-bundle"
kind = "job"
flavours = ["CE"]
  [probe.params]
  backend = "local"

  [[probe.bundle]]
  metric = "org.test.WN-env"
  script = "wn_env.sh"

  [[probe.bundle]]
  metric = "org.test.WN-env"
  command = "/bin/true"

  [[probe.bundle]]
  metric = "org.test.WN-none"

[[probe]]
metric = "org.test.CE-http"
kind = "http"
flavours = ["CE"]
  [probe.params]
  url = "http://127.0.0.1:1/"

  [[probe.bundle]]
  metric = "org.test.WN-http"
  command = "/bin/true"
"#;
    let path = dir.path().join("vo.toml");
    std::fs::write(&path, text).expect("write");
    let out = gridprobe(&["check", path.to_str().expect("utf-8")]);
    let (stdout, stderr) = texts(&out);
    let all = format!("{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(1), "{all}");
    let line = |needle: &str, nth: usize| {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .nth(nth)
            .map(|(i, _)| i + 1)
            .expect("needle")
    };
    let at = |l: usize| format!("vo.toml:{l}:");
    assert!(
        all.contains("duplicate probe metric `org.test.WN-env`"),
        "{all}"
    );
    assert!(all.contains(&at(line("org.test.WN-env", 1))), "{all}");
    assert!(
        all.contains("bundle metric `org.test.WN-none` needs a `script` or `command`"),
        "{all}"
    );
    assert!(all.contains("a `http` probe cannot run a bundle"), "{all}");
}

/// The state of one cell in `gridprobe matrix --format json`.
fn cell_state(config: &str, store: &str, metric: &str) -> Option<String> {
    let m = json(&[
        "matrix", "--config", config, "--store", store, "--format", "json",
    ]);
    for site in m["sites"].as_array()? {
        for inst in site["instances"].as_array()? {
            for cell in inst["cells"].as_array()? {
                if cell["metric"] == metric {
                    return cell["state"].as_str().map(str::to_string);
                }
            }
        }
    }
    None
}

/// `serve`: the scheduled job fills one matrix column per bundle metric, each with its own
/// status, and the metrics' results are stored with their own summaries.
#[test]
fn serve_records_each_bundle_metric_as_a_matrix_cell() {
    let Some(partition) = slurm_partition() else {
        return;
    };
    let base = std::env::temp_dir().join("gridprobe-slurm-tests");
    std::fs::create_dir_all(&base).expect("mkdir");
    let dir = tempfile::tempdir_in(&base).expect("tempdir");
    let config = bundle_config(dir.path(), &partition, false);
    // Scheduled once a minute, first within a second of the start.
    let text = std::fs::read_to_string(&config).expect("read");
    let text = text.replacen(
        "vo = \"test\"",
        "vo = \"test\"\n[defaults]\ninterval = \"10m\"\n[server]\nstartup_spread = \"1s\"",
        1,
    );
    std::fs::write(&config, text).expect("write");
    let store = dir.path().join("results.sqlite");
    let store = store.to_str().expect("utf-8");
    let mut serve = Serve::start(&config, store);
    let filled = wait_until(Duration::from_secs(90), || {
        store_has_results(store)
            && cell_state(&config, store, "org.test.WN-after").as_deref() == Some("OK")
    });
    assert!(filled, "bundle cells never filled:\n{}", serve.output());
    for (metric, state) in [
        ("org.test.WN-bundle", "OK"),
        ("org.test.WN-env", "OK"),
        ("org.test.WN-swspace", "CRITICAL"),
        ("org.test.WN-cvmfs", "WARNING"),
        ("org.test.WN-frontier", "CRITICAL"),
    ] {
        assert_eq!(
            cell_state(&config, store, metric).as_deref(),
            Some(state),
            "{metric}\n{}",
            serve.output()
        );
    }
    let h = json(&[
        "results",
        "--config",
        &config,
        "--store",
        store,
        "--site",
        "T2_BATCH",
        "--probe",
        "WN-swspace",
        "--format",
        "json",
    ]);
    let first = &h.as_array().expect("array")[0];
    assert_eq!(
        first["summary"],
        "SWSPACE CRITICAL: /nonexistent/sw is missing"
    );
    assert_eq!(first["trigger"], "scheduled");
    serve.signal("TERM");
    let _ = serve.wait_exit(Duration::from_secs(30));
}

fn store_has_results(path: &str) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
}
