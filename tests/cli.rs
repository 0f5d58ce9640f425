//! End-to-end tests of the command line's manners: output into a closed pipe, "did you mean"
//! for names given as options, logs without colour codes off a terminal, and the terminal
//! matrix on narrow or unsized terminals.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{bin, gridprobe, insert_into_sqlite, lhcb_tcp_result, texts};
use gridprobe_probes::{Outcome, Status};
use gridprobe_results::NewResult;

const CONFIG: &str = r#"
vo = "lhcb"
[defaults]
interval = "1h"
timeout = "10m"

[[site]]
name = "LCG.EXAMPLE.org"
tier = 1
  [[site.service]]
  flavour = "CE"
  hostname = "arc-ce01.gridpp.rl.example.ac.uk"
  [[site.service]]
  flavour = "SE"
  hostname = "srm-lhcb.storage.example.ac.uk"

[[probe]]
metric = "org.lhcb.CE-job-submit"
kind = "tcp"
flavours = ["CE"]
  [probe.params]
  port = 9619
[[probe]]
metric = "org.lhcb.CE-job-status"
kind = "tcp"
flavours = ["CE"]
  [probe.params]
  port = 9619
[[probe]]
metric = "org.lhcb.CE-job-output"
kind = "tcp"
flavours = ["CE"]
  [probe.params]
  port = 9619
[[probe]]
metric = "org.lhcb.SE-put-file"
kind = "tcp"
flavours = ["SE"]
  [probe.params]
  port = 2880
[[probe]]
metric = "org.lhcb.SE-get-file"
kind = "tcp"
flavours = ["SE"]
  [probe.params]
  port = 2880
[[probe]]
metric = "org.lhcb.SE-delete-file"
kind = "tcp"
flavours = ["SE"]
  [probe.params]
  port = 2880
"#;

const HOSTS: [&str; 2] = [
    "arc-ce01.gridpp.rl.example.ac.uk",
    "srm-lhcb.storage.example.ac.uk",
];

/// A configuration and a store holding a result for every cell, in a temporary directory.
struct Fixture {
    _dir: tempfile::TempDir,
    config: PathBuf,
    store: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("vo.toml");
        std::fs::write(&config, CONFIG).expect("write config");
        let store = dir.path().join("r.sqlite");
        let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
        let cells = [
            (HOSTS[0], "CE", "org.lhcb.CE-job-submit"),
            (HOSTS[0], "CE", "org.lhcb.CE-job-status"),
            (HOSTS[0], "CE", "org.lhcb.CE-job-output"),
            (HOSTS[1], "SE", "org.lhcb.SE-put-file"),
            (HOSTS[1], "SE", "org.lhcb.SE-get-file"),
            (HOSTS[1], "SE", "org.lhcb.SE-delete-file"),
        ];
        let rows: Vec<NewResult> = cells
            .iter()
            .enumerate()
            .map(|(i, (host, flavour, metric))| {
                let status = if i % 2 == 0 {
                    Status::Ok
                } else {
                    Status::Critical
                };
                lhcb_tcp_result(
                    host,
                    flavour,
                    metric,
                    now - 120_000,
                    Outcome::new(status, "TCP connect: connection refused"),
                )
            })
            .collect();
        insert_into_sqlite(&store, &rows);
        Fixture {
            _dir: dir,
            config,
            store,
        }
    }

    /// `--config C --store S` and then `rest`.
    fn args<'a>(&'a self, command: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            command,
            "--config",
            path_str(&self.config),
            "--store",
            path_str(&self.store),
        ];
        v.extend_from_slice(rest);
        v
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs gridprobe with its stdout (or stderr) on a pipe whose reader has already gone, as
/// `gridprobe probes | head` does once `head` has read its lines. Returns the exit status and
/// the other stream.
fn into_closed_pipe(args: &[&str], close_stderr: bool) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut cmd = Command::new(bin());
    cmd.args(args).env("NO_COLOR", "1").stdin(Stdio::null());
    if close_stderr {
        cmd.stderr(writer).stdout(Stdio::piped());
    } else {
        cmd.stdout(writer).stderr(Stdio::piped());
    }
    let out = cmd.output().expect("gridprobe runs");
    let other = if close_stderr {
        &out.stdout
    } else {
        &out.stderr
    };
    (
        out.status.code(),
        String::from_utf8_lossy(other).into_owned(),
    )
}

#[test]
fn printing_into_a_closed_pipe_ends_quietly_with_the_sigpipe_status() {
    let f = Fixture::new();
    let cases: Vec<Vec<&str>> = vec![
        vec!["probes"],
        vec!["probes", "--format", "json"],
        f.args("matrix", &[]),
        f.args("matrix", &["--format", "csv"]),
        f.args("matrix", &["--format", "json"]),
        f.args("results", &["--site", "LCG.EXAMPLE.org"]),
        f.args("results", &["--site", "LCG.EXAMPLE.org", "--format", "csv"]),
        f.args("results", &["--id", "1"]),
        f.args("report", &["--period", "24h"]),
        f.args("reasons", &[]),
        f.args("report", &["--period", "24h", "--format", "json"]),
        f.args("report", &["--period", "24h", "--format", "html"]),
        f.args("report", &["--period", "24h", "--format", "pdf"]),
        f.args("trends", &["--period", "24h"]),
        vec!["check", path_str(&f.config)],
        vec!["token", "new"],
    ];
    for args in &cases {
        let (code, stderr) = into_closed_pipe(args, false);
        assert_eq!(code, Some(141), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
    }
    // Errors into a closed stderr: no panic (101) either.
    let (code, _) = into_closed_pipe(&["matrix", "--config", "/nonexistent/vo.toml"], true);
    assert_eq!(code, Some(141));
}

#[test]
fn unknown_flavour_and_service_names_get_a_suggestion() {
    let f = Fixture::new();
    let out = gridprobe(&f.args("matrix", &["--flavour", "CEE"]));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: no service of flavour `CEE` (did you mean `CE`?)"),
        "{stderr}"
    );
    let out = gridprobe(&f.args(
        "results",
        &[
            "--site",
            "LCG.EXAMPLE.org",
            "--service",
            "arc-ce01.gridpp.rl.example.ac.uj",
        ],
    ));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "error: no service with host name `arc-ce01.gridpp.rl.example.ac.uj` (did you mean `arc-ce01.gridpp.rl.example.ac.uk`?)"
        ),
        "{stderr}"
    );
    // The right names still work.
    let out = gridprobe(&f.args("matrix", &["--flavour", "CE"]));
    assert!(out.status.success(), "{:?}", texts(&out));
}

#[test]
fn logs_into_a_file_carry_no_colour_codes() {
    let f = Fixture::new();
    let log_path = f._dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    // NO_COLOR unset: colour would be allowed, but stderr is a file, not a terminal.
    let mut child = Command::new(bin())
        .args(f.args("serve", &["--listen", "127.0.0.1:0"]))
        .env_remove("NO_COLOR")
        .env("GRIDPROBE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("serve starts");
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let logged = common::wait_until(std::time::Duration::from_secs(30), || {
        read().contains("INFO")
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopped = common::wait_until(std::time::Duration::from_secs(30), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = read();
    assert!(logged, "no log line to judge: {text}");
    assert!(!text.contains('\x1b'), "escape codes in the log: {text:?}");
}

/// Runs `gridprobe matrix` on a pseudo-terminal (through `script`), after `setup` (e.g.
/// `stty cols 80`), and returns what the terminal showed.
fn matrix_on_a_terminal(f: &Fixture, setup: &str, colour: bool) -> String {
    let command = format!(
        "{setup} '{}' matrix --config '{}' --store '{}'",
        bin().display(),
        f.config.display(),
        f.store.display()
    );
    let mut script = Command::new("script");
    script.args(["-qec", &command, "/dev/null"]);
    if colour {
        script.env_remove("NO_COLOR");
    } else {
        script.env("NO_COLOR", "1");
    }
    let out = script
        .env_remove("COLUMNS")
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout.replace('\r', "")
}

/// The table's lines (those drawn with `|`).
fn table_lines(screen: &str) -> Vec<&str> {
    screen.lines().filter(|l| l.starts_with('|')).collect()
}

#[test]
fn the_terminal_matrix_keeps_host_names_whole_and_never_collapses() {
    let f = Fixture::new();
    // A terminal that reports no size (a pseudo-terminal nobody sized): a sensible width, not
    // one character per column.
    // In colour (box drawing, escape codes only around status cells), and without.
    let screen = matrix_on_a_terminal(&f, "stty cols 0 rows 0;", true);
    for host in HOSTS {
        assert!(screen.contains(host), "{host} broken up:\n{screen}");
    }
    assert!(screen.contains("CE-job-submit"), "{screen}");
    let screen = matrix_on_a_terminal(&f, "stty cols 0 rows 0;", false);
    let lines = table_lines(&screen);
    assert!(!lines.is_empty(), "{screen}");
    for host in HOSTS {
        assert!(screen.contains(host), "{host} broken up:\n{screen}");
    }
    assert!(screen.contains("CE-job-submit"), "{screen}");
    // Laid out for a width (the fallback, 100): the first column wraps between the host name
    // and its flavour rather than running on unbounded.
    assert!(lines.iter().any(|l| l.starts_with("| (CE)")), "{screen}");
    // 80 columns: cells wrap between words, host and metric names stay whole.
    let screen = matrix_on_a_terminal(&f, "stty cols 80 rows 24;", false);
    for host in HOSTS {
        assert!(screen.contains(host), "{host} broken up:\n{screen}");
    }
    for metric in ["CE-job-submit", "CE-job-status", "SE-delete-file"] {
        assert!(screen.contains(metric), "{metric} broken up:\n{screen}");
    }
}
