//! End-to-end tests of `gridprobe serve`, `matrix` and `results` through the built binary.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{json, process_alive, script, wait_until, web_config, Serve, StoppableHttp};

fn write(dir: &Path, name: &str, body: &str) -> String {
    common::write_file(dir, name, body)
}

/// The state of one cell in `gridprobe matrix --format json`.
fn cell_state(config: &str, store: &str, host: &str, metric: &str) -> Option<String> {
    let m = json(&[
        "matrix", "--config", config, "--store", store, "--format", "json",
    ]);
    for site in m["sites"].as_array()? {
        for inst in site["instances"].as_array()? {
            if inst["hostname"] != host {
                continue;
            }
            for cell in inst["cells"].as_array()? {
                if cell["metric"] == metric {
                    return cell["state"].as_str().map(str::to_string);
                }
            }
        }
    }
    None
}

#[test]
fn serve_fills_matrix_turns_red_when_server_stops_and_missing_when_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut web = StoppableHttp::start("hello");
    let config = write(dir.path(), "vo.toml", &web_config(web.port));
    let store = dir.path().join("results.sqlite");
    let store = store.to_str().expect("utf-8");
    let mut serve = Serve::start(&config, store);
    serve.wait_for("gridprobe serving vo e2e", Duration::from_secs(20));

    let ok = wait_until(Duration::from_secs(15), || {
        store_exists(store)
            && cell_state(&config, store, "127.0.0.1", "org.e2e.web").as_deref() == Some("OK")
    });
    assert!(ok, "cell never became OK:\n{}", serve.output());

    // A few cycles ran: history holds several results, newest first.
    assert!(wait_until(Duration::from_secs(10), || {
        let h = json(&[
            "results", "--config", &config, "--store", store, "--site", "T2_E2E", "--format",
            "json",
        ]);
        h.as_array().map(|a| a.len() >= 3).unwrap_or(false)
    }));
    let h = json(&[
        "results", "--config", &config, "--store", store, "--site", "T2_E2E", "--format", "json",
    ]);
    let items = h.as_array().expect("array");
    let times: Vec<i64> = items
        .iter()
        .filter_map(|r| r["started_at_ms"].as_i64())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {times:?}"
    );
    assert_eq!(items[0]["status"], "OK");
    assert_eq!(items[0]["trigger"], "scheduled");
    // One result whole, by id.
    let id = items[0]["id"].as_i64().expect("id").to_string();
    let one = json(&[
        "results", "--config", &config, "--store", store, "--id", &id, "--format", "json",
    ]);
    assert_eq!(one["metric"], "org.e2e.web");
    assert!(
        one["perfdata"].as_array().is_some_and(|p| !p.is_empty()),
        "{one}"
    );

    web.stop();
    let red = wait_until(Duration::from_secs(15), || {
        cell_state(&config, store, "127.0.0.1", "org.e2e.web").as_deref() == Some("CRITICAL")
    });
    assert!(
        red,
        "cell never turned CRITICAL after the server stopped:\n{}",
        serve.output()
    );

    serve.signal("TERM");
    assert_eq!(
        serve.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        serve.output()
    );
    // Freshness is 2 × 1s + 0.5s: past it the cell is MISSING, not red.
    let missing = wait_until(Duration::from_secs(10), || {
        cell_state(&config, store, "127.0.0.1", "org.e2e.web").as_deref() == Some("MISSING")
    });
    assert!(missing, "stale cell not shown as MISSING");
    // The table view says so too, in plain text when piped.
    let out = common::gridprobe(&["matrix", "--config", &config, "--store", store]);
    let (stdout, _) = common::texts(&out);
    assert!(stdout.contains("missing"), "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "colour codes in piped output");
}

fn store_exists(path: &str) -> bool {
    Path::new(path).exists()
}

#[test]
fn sigterm_during_hung_probe_kills_it_and_records_the_interruption() {
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
    let config = write(
        dir.path(),
        "vo.toml",
        &format!(
            r#"
vo = "e2e"
[defaults]
interval = "10m"
timeout = "5m"
[server]
startup_spread = "1s"
shutdown_grace = "1s"
[[site]]
name = "T3_HANG"
tier = 3
  [[site.service]]
  flavour = "CE"
  hostname = "ce.local"
[[probe]]
metric = "org.e2e.hang"
kind = "nagios"
flavours = ["CE"]
  [probe.params]
  command = "{}"
"#,
            hang.display()
        ),
    );
    let store = dir.path().join("results.sqlite");
    let store = store.to_str().expect("utf-8");
    let mut serve = Serve::start(&config, store);
    let child_file = format!("{}.child", pids.display());
    // 45 s: a catch-up run due within 30 s of the next slot waits for it (`first_due`).
    assert!(
        wait_until(Duration::from_secs(45), || std::fs::read_to_string(
            &child_file
        )
        .is_ok_and(|s| !s.trim().is_empty())),
        "the hanging plugin never started:\n{}",
        serve.output()
    );
    serve.signal("TERM");
    let code = serve.wait_exit(Duration::from_secs(15));
    assert_eq!(
        code,
        Some(0),
        "serve did not exit cleanly within the grace period:\n{}",
        serve.output()
    );
    for suffix in ["self", "child"] {
        let pid: i32 = std::fs::read_to_string(format!("{}.{suffix}", pids.display()))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        assert!(
            wait_until(Duration::from_secs(5), || !process_alive(pid)),
            "{suffix} process {pid} outlived serve"
        );
    }
    let h = json(&[
        "results", "--config", &config, "--store", store, "--site", "T3_HANG", "--format", "json",
    ]);
    let first = &h.as_array().expect("array")[0];
    assert_eq!(first["status"], "UNKNOWN", "{first}");
    assert_eq!(first["summary"], "interrupted by shutdown", "{first}");
}

#[test]
fn sighup_with_broken_config_keeps_the_old_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = StoppableHttp::start("hello");
    let good = web_config(web.port);
    let config = write(dir.path(), "vo.toml", &good);
    let store = dir.path().join("results.sqlite");
    let store = store.to_str().expect("utf-8");
    let serve = Serve::start(&config, store);
    serve.wait_for("gridprobe serving vo e2e", Duration::from_secs(20));

    // Break the file: a typo on line 4.
    std::fs::write(
        &config,
        good.replacen("timeout = \"500ms\"", "timeot = \"500ms\"", 1),
    )
    .expect("write");
    serve.signal("HUP");
    serve.wait_for("reload rejected", Duration::from_secs(10));
    serve.wait_for(
        &format!("{config}:5:1: error: unknown key `timeot`"),
        Duration::from_secs(5),
    );

    // The old schedule keeps producing results.
    let count = || {
        json(&[
            "results",
            "--config",
            &config.replace("vo.toml", "good.toml"),
            "--store",
            store,
            "--site",
            "T2_E2E",
            "--format",
            "json",
            "--limit",
            "1000",
        ])
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0)
    };
    write(dir.path(), "good.toml", &good);
    let before = count();
    assert!(
        wait_until(Duration::from_secs(10), || count() > before + 1),
        "schedule stopped after a rejected reload"
    );

    // A valid config with a second probe is applied without a restart.
    let extended = format!(
        "{good}\n[[probe]]\nmetric = \"org.e2e.web-port\"\nkind = \"tcp\"\nflavours = [\"WEB\"]\n  [probe.params]\n  port = {}\n",
        web.port
    );
    std::fs::write(&config, &extended).expect("write");
    serve.signal("HUP");
    serve.wait_for(
        "configuration reloaded: 2 schedule entries",
        Duration::from_secs(10),
    );
    write(dir.path(), "good.toml", &extended);
    let good_path = dir.path().join("good.toml");
    let good_path = good_path.to_str().expect("utf-8");
    assert!(wait_until(Duration::from_secs(10), || {
        cell_state(good_path, store, "127.0.0.1", "org.e2e.web-port").as_deref() == Some("OK")
    }));
}

#[test]
fn restart_does_not_rerun_recent_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = StoppableHttp::start("hello");
    let config = write(
        dir.path(),
        "vo.toml",
        &web_config(web.port).replace("interval = \"1s\"", "interval = \"1h\""),
    );
    let store = dir.path().join("results.sqlite");
    let store = store.to_str().expect("utf-8");
    let count = || {
        if !store_exists(store) {
            return 0;
        }
        json(&[
            "results", "--config", &config, "--store", store, "--site", "T2_E2E", "--format",
            "json",
        ])
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0)
    };
    let mut serve = Serve::start(&config, store);
    assert!(
        wait_until(Duration::from_secs(15), || count() == 1),
        "first run missing:\n{}",
        serve.output()
    );
    serve.signal("TERM");
    assert_eq!(serve.wait_exit(Duration::from_secs(10)), Some(0));

    let mut again = Serve::start(&config, store);
    again.wait_for("gridprobe serving vo e2e", Duration::from_secs(20));
    // A fresh entry would run within the 1 s start-up spread; observe well past it.
    let rerun = wait_until(Duration::from_secs(4), || count() > 1);
    assert!(
        !rerun,
        "the entry ran again right after the restart:\n{}",
        again.output()
    );
    again.signal("TERM");
    assert_eq!(again.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn matrix_without_a_store_explains_how_to_get_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(dir.path(), "vo.toml", &web_config(1));
    let store = dir.path().join("none.sqlite");
    let out = common::gridprobe(&[
        "matrix",
        "--config",
        &config,
        "--store",
        store.to_str().expect("utf-8"),
    ]);
    let (_, stderr) = common::texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no result store at"), "{stderr}");
    assert!(stderr.contains("gridprobe serve --config"), "{stderr}");
}

#[test]
fn standby_dependants_run_as_soon_as_their_parent_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("lock-released");
    let lock = script(
        dir.path(),
        "lock.sh",
        &format!(
            "if [ -e {m} ]; then echo 'LOCK OK - free'; exit 0; fi\necho 'LOCK CRITICAL - held by install 42'; exit 2",
            m = marker.display()
        ),
    );
    let install = script(dir.path(), "install.sh", "echo 'INSTALL OK - done'; exit 0");
    let config = write(
        dir.path(),
        "vo.toml",
        &format!(
            r#"
vo = "e2e"
[server]
startup_spread = "1s"
shutdown_grace = "1s"
[[site]]
name = "T2_DEP"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce.local"
[[probe]]
metric = "org.e2e.CE-lock"
kind = "nagios"
flavours = ["CE"]
interval = "1s"
timeout = "900ms"
  [probe.params]
  command = "{lock}"
[[probe]]
metric = "org.e2e.CE-install"
kind = "nagios"
flavours = ["CE"]
depends_on = ["CE-lock"]
interval = "1h"
timeout = "10s"
  [probe.params]
  command = "{install}"
"#,
            lock = lock.display(),
            install = install.display()
        ),
    );
    let store = dir.path().join("results.sqlite");
    let store = store.to_str().expect("utf-8");
    let mut serve = Serve::start(&config, store);
    // The lock is held: once the lock cell is red, the install cell is standby with the reason.
    // 45 s: a catch-up run due within 30 s of the next slot waits for it (`first_due`).
    let standby = wait_until(Duration::from_secs(45), || {
        store_exists(store)
            && cell_state(&config, store, "ce.local", "org.e2e.CE-install").as_deref()
                == Some("STANDBY")
    });
    assert!(standby, "install never went standby:\n{}", serve.output());
    let h = json(&[
        "results",
        "--config",
        &config,
        "--store",
        store,
        "--site",
        "T2_DEP",
        "--probe",
        "CE-install",
        "--format",
        "json",
    ]);
    let summary = h[0]["summary"].as_str().unwrap_or("").to_string();
    assert!(
        summary.contains("CE-lock on ce.local is CRITICAL: LOCK CRITICAL - held by install 42"),
        "{summary}"
    );

    // Release the lock: the install runs at once, not an hour later.
    std::fs::write(&marker, "").expect("marker");
    let ran = wait_until(Duration::from_secs(10), || {
        cell_state(&config, store, "ce.local", "org.e2e.CE-install").as_deref() == Some("OK")
    });
    assert!(
        ran,
        "install did not run after the lock was released:\n{}",
        serve.output()
    );
    serve.signal("TERM");
    assert_eq!(serve.wait_exit(Duration::from_secs(10)), Some(0));
}
