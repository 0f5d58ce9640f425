//! Hostile configurations through the real binary's `gridprobe check`: numbers that overflow,
//! FIFOs and devices as includes, globs over the whole file system, huge lines, thousands of
//! errors, and credentials where they do not belong. Each must end in a precise, positioned
//! error (exit 1, never a panic's 101), print no secret, and finish: every child runs under a
//! generous deadline that only guards against hangs (it is not a performance assertion).

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bin;

/// Only a guard against hangs: far above what any case takes.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// A secret each case may hide somewhere; it must never be printed.
const SECRET: &str = "S3CRET-9f2c71";

/// A valid configuration the cases break.
const BASE: &str = r#"vo = "ops"

[[site]]
name = "SITE-A"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce.example.org"

[[probe]]
metric = "org.example.Ping"
kind = "tcp"
flavours = ["CE"]
  [probe.params]
  port = 22
"#;

/// What `gridprobe check` did with one input.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `gridprobe check FILE` in `dir`, with output to files (a full pipe must not pass for a
/// hang) and the hang guard.
fn check(dir: &Path, file: &str) -> Outcome {
    let out_path = dir.join(".stdout");
    let err_path = dir.join(".stderr");
    let started = Instant::now();
    let mut child = Command::new(bin())
        .args(["check", file])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("GRIDPROBE_TEST_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("gridprobe runs");
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Outcome {
        code,
        stdout: read(&out_path),
        stderr: read(&err_path),
        took: started.elapsed(),
    }
}

/// One hostile input: its name, the main file's text, what the error must say, and the
/// `line:col` it must point at (in `vo.toml`, or `None` to accept any position).
struct Case {
    name: &'static str,
    text: String,
    says: &'static str,
    at: Option<(usize, usize)>,
}

fn case(name: &'static str, text: String, says: &'static str, at: Option<(usize, usize)>) -> Case {
    Case {
        name,
        text,
        says,
        at,
    }
}

/// Line and column (1-based, characters) of the first `needle` in `text`.
fn pos(text: &str, needle: &str) -> Option<(usize, usize)> {
    let offset = text.find(needle)?;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    Some((line, col))
}

/// Whether some line starts with `FILE:LINE:COL: error`.
fn has_position(output: &str) -> bool {
    output.lines().any(|l| {
        let Some((head, _)) = l.split_once(": error") else {
            return false;
        };
        let mut parts = head.rsplitn(3, ':');
        let col = parts.next().unwrap_or("");
        let line = parts.next().unwrap_or("");
        let file = parts.next().unwrap_or("");
        !file.is_empty()
            && line.parse::<usize>().is_ok_and(|n| n > 0)
            && col.parse::<usize>().is_ok_and(|n| n > 0)
    })
}

/// `BASE` with `section` text added after the `vo` line (so tables come before the sites).
fn with(section: &str) -> String {
    BASE.replacen("vo = \"ops\"\n", &format!("vo = \"ops\"\n{section}\n"), 1)
}

/// A case whose error must point at `value` where it is written.
fn at_value(name: &'static str, section: &str, value: &str, says: &'static str) -> Case {
    let text = with(section);
    let at = pos(&text, value);
    assert!(at.is_some(), "{name}: `{value}` not in the text");
    case(name, text, says, at)
}

fn numeric_cases() -> Vec<Case> {
    let huge = "\"10000000000000000000s\"";
    let max = "\"18446744073709551615s\"";
    let beyond = "\"99999999999999999999999s\"";
    let mut cases = vec![
        at_value(
            "defaults interval 1e19 s",
            &format!("[defaults]\ninterval = {huge}"),
            huge,
            "`interval` must be between",
        ),
        at_value(
            "defaults timeout u64::MAX s",
            &format!("[defaults]\ntimeout = {max}"),
            max,
            "`timeout` must be between",
        ),
        at_value(
            "defaults retry_interval",
            &format!("[defaults]\nretry_interval = {max}"),
            max,
            "must be between",
        ),
        at_value(
            "defaults interval beyond u64",
            &format!("[defaults]\ninterval = {beyond}"),
            beyond,
            "must be between",
        ),
        at_value(
            "server startup_spread",
            &format!("[server]\nstartup_spread = {max}"),
            max,
            "`startup_spread` must be between",
        ),
        at_value(
            "server retention",
            &format!("[server]\nretention = {huge}"),
            huge,
            "`retention` must be between",
        ),
        at_value(
            "server shutdown_grace",
            &format!("[server]\nshutdown_grace = {max}"),
            max,
            "`shutdown_grace` must be between",
        ),
        at_value(
            "server schedule_lease",
            &format!("[server]\nschedule_lease = {beyond}"),
            beyond,
            "`schedule_lease` must be between",
        ),
        at_value(
            "server spool_max_size",
            "[server]\nspool_max_size = \"18446744073709551615TiB\"",
            "\"18446744073709551615TiB\"",
            "spool_max_size",
        ),
        at_value(
            "server spool_max_size 100TiB",
            "[server]\nspool_max_size = \"100TiB\"",
            "\"100TiB\"",
            "between 64KiB and 16TiB",
        ),
        at_value(
            "defaults retries u32::MAX",
            "[defaults]\nretries = 4294967295",
            "4294967295",
            "`retries` must be between 0 and 100",
        ),
        at_value(
            "defaults retries > u32",
            "[defaults]\nretries = 99999999999",
            "99999999999",
            "`retries` must be between 0 and 100",
        ),
        at_value(
            "defaults retries negative",
            "[defaults]\nretries = -1",
            "-1",
            "`retries` must be between 0 and 100",
        ),
        at_value(
            "defaults concurrency 0",
            "[defaults]\nconcurrency = 0",
            "= 0",
            "`concurrency` must be between",
        ),
        at_value(
            "defaults kind_concurrency 0",
            "[defaults]\nkind_concurrency = { tcp = 0 }",
            "tcp = 0",
            "kind_concurrency.tcp",
        ),
        at_value(
            "access runs_per_hour 0",
            "[access]\nruns_per_hour = 0",
            "= 0",
            "`runs_per_hour` must be between",
        ),
        at_value(
            "publish stream_max_age",
            &format!("[[publish]]\nkind = \"nats\"\nstream_max_age = {max}"),
            max,
            "`stream_max_age` must be between",
        ),
    ];
    // `at_value` for "= 0" points at `=`: move to the value.
    for c in cases.iter_mut() {
        if c.name.ends_with(" 0") && !c.name.contains("kind_concurrency") {
            c.at = c.at.map(|(l, col)| (l, col + 2));
        }
        if c.name.contains("kind_concurrency") {
            c.at = c.at.map(|(l, col)| (l, col + 6));
        }
    }
    let probe = |key: &str, value: &str| {
        let text = BASE.replacen(
            "flavours = [\"CE\"]\n",
            &format!("flavours = [\"CE\"]\n{key} = {value}\n"),
            1,
        );
        let at = pos(&text, &format!("{key} = {value}")).map(|(l, c)| (l, c + key.len() + 3));
        (text, at)
    };
    for (name, key, value, says) in [
        (
            "probe timeout u64::MAX s",
            "timeout",
            max,
            "`timeout` must be between",
        ),
        (
            "probe interval 1e19 s",
            "interval",
            huge,
            "`interval` must be between",
        ),
        (
            "probe freshness",
            "freshness",
            max,
            "`freshness` must be between",
        ),
        (
            "probe retries",
            "retries",
            "1000",
            "`retries` must be between",
        ),
        ("tier i64::MAX", "tier", "9223372036854775807", ""),
    ] {
        if name.starts_with("tier") {
            let text = BASE.replacen("tier = 2", "tier = 9223372036854775807", 1);
            let at = pos(&text, "9223372036854775807");
            cases.push(case(name, text, "tier must be 0, 1, 2 or 3", at));
            continue;
        }
        let (text, at) = probe(key, value);
        cases.push(case(name, text, says, at));
    }
    let text = BASE.replacen(
        "  hostname = \"ce.example.org\"\n",
        &format!("  hostname = \"ce.example.org\"\n    [site.service.override.\"org.example.Ping\"]\n    timeout = {max}\n"),
        1,
    );
    let at = pos(&text, max);
    cases.push(case(
        "service override timeout",
        text,
        "`timeout` must be between",
        at,
    ));
    cases
}

fn secret_cases() -> Vec<Case> {
    vec![
        case(
            "TOML syntax error on a store URL with a password",
            with(&format!("[server]\nstore = \"postgresql://gp:{SECRET}@db.example.org/gp\nlisten = 1")),
            "TOML syntax error",
            None,
        ),
        at_value(
            "store URL with a password",
            &format!("[server]\nstore = \"postgresql://gp:{SECRET}@db.example.org/gp\""),
            "\"postgresql",
            "holds a password",
        ),
        at_value(
            "store URL with sslpassword",
            &format!("[server]\nstore = \"postgresql://gp@db/gp?sslpassword={SECRET}\""),
            "\"postgresql",
            "holds a password",
        ),
        at_value(
            "NATS token in the URL",
            &format!("[[publish]]\nkind = \"nats\"\nurl = \"nats://{SECRET}@nats.example.org:4222\""),
            "\"nats://",
            "holds a token",
        ),
        at_value(
            "AMQP password query parameter",
            &format!("[[publish]]\nkind = \"amqp\"\nurl = \"amqp://gp@mq.example.org/%2f?password={SECRET}\""),
            "\"amqp://",
            "holds a password",
        ),
        at_value(
            "AMQP password in user info",
            &format!("[[publish]]\nkind = \"amqp\"\nurl = \"amqps://gp:{SECRET}@mq.example.org/%2f\""),
            "\"amqps://",
            "holds a password",
        ),
        at_value(
            "invalid NATS URL with user:pass",
            &format!("[[publish]]\nkind = \"nats\"\nurl = \"nats://user:{SECRET}@bad host:4222\""),
            "\"nats://",
            "invalid nats URL",
        ),
        case(
            "endpoint with a password",
            BASE.replacen(
                "  hostname = \"ce.example.org\"\n",
                &format!("  hostname = \"ce.example.org\"\n  endpoint = \"https://u:{SECRET}@ce.example.org:9619\"\n"),
                1,
            ),
            "holds a password or token",
            None,
        ),
        at_value(
            "include of /proc/self/environ",
            "include = [\"/proc/self/environ\"]",
            "\"/proc/self/environ\"",
            "not a TOML text file",
        ),
        at_value(
            "include of /proc/self/environ through a glob",
            "include = [\"/proc/self/env*ron\"]",
            "\"/proc/self/env*ron\"",
            "not a TOML text file",
        ),
    ]
}

/// Cases that need files beside the main one; returns the cases for `dir`.
fn file_cases(dir: &Path) -> Vec<Case> {
    let fifo = |path: PathBuf| {
        let c = std::ffi::CString::new(path.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    };
    std::fs::create_dir_all(dir.join("sites")).expect("mkdir");
    fifo(dir.join("pipe.toml"));
    fifo(dir.join("sites/pipe.toml"));
    std::fs::write(dir.join("sites/ok.toml"), "").expect("write");
    std::fs::write(dir.join("latin1.toml"), b"[[site]]\nname = \"caf\xe9\"\n").expect("write");
    std::fs::write(
        dir.join("secrets.env"),
        format!("DB_PASSWORD={SECRET}\nAPI={SECRET} x\n"),
    )
    .expect("write");
    std::fs::write(dir.join("binary.toml"), [0x7fu8, 0x45, 0x4c, 0x46, 0, 1, 2]).expect("write");
    let inc = |name, pattern: &str, says| {
        at_value(
            name,
            &format!("include = [\"{pattern}\"]"),
            &format!("\"{pattern}\""),
            says,
        )
    };
    vec![
        inc("include of a FIFO", "pipe.toml", "is a named pipe (FIFO)"),
        inc(
            "include of a FIFO through a glob",
            "sites/*.toml",
            "is a named pipe (FIFO)",
        ),
        inc("include of /dev/zero", "/dev/zero", "is a device"),
        inc(
            "include of /dev/stdin",
            "/dev/stdin",
            "not a configuration file",
        ),
        inc("glob over the whole file system", "/**", "include pattern"),
        inc(
            "recursive glob from the root",
            "/**/*.toml",
            "include pattern",
        ),
        inc(
            "include that is not UTF-8",
            "latin1.toml",
            "not valid UTF-8",
        ),
        inc(
            "include that is a binary",
            "binary.toml",
            "not a TOML text file",
        ),
        // Errors inside it are positioned in it, never quoted (it is not a .toml file).
        case(
            "include of a secrets file",
            with("include = [\"secrets.env\"]"),
            "secrets.env:1:13: error: TOML syntax error",
            None,
        ),
        inc("include of a directory", "sites", "is a directory"),
    ]
}

fn size_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // One 20 MB line with an error at its end.
    let long = format!(
        "{BASE}description_of_everything = \"{}\" bogus = 1\n",
        "x".repeat(20_000_000)
    );
    cases.push(case("20 MB single line", long, "TOML syntax error", None));
    // 10,000 unknown keys in [defaults].
    let mut many = String::from("[defaults]\n");
    for i in 0..10_000 {
        let _ = writeln!(many, "unknown_key_{i} = 1");
    }
    let text = with(&many);
    let at = pos(&text, "unknown_key_0");
    cases.push(case("10,000 unknown keys", text, "… and 9,900 more", at));
    // 10,000 duplicate sites.
    let mut dup = String::from(BASE);
    for _ in 0..10_000 {
        dup.push_str("\n[[site]]\nname = \"SITE-A\"\ntier = 2\n");
    }
    cases.push(case(
        "10,000 duplicate sites",
        dup,
        "duplicate site name `SITE-A`",
        None,
    ));
    // A profile defined twice and three unknown params keys: every error positioned.
    let text = format!("{BASE}\n[[profile]]\nname = \"p\"\n[[profile]]\nname = \"p\"\n");
    let at = Some((text.lines().count(), 8));
    cases.push(case(
        "duplicate profile",
        text,
        "profile `p` is defined 2 times",
        at,
    ));
    let text = BASE.replacen(
        "  port = 22\n",
        "  port = 22\n  prot = 1\n  hots = 2\n  bogus = 3\n",
        1,
    );
    let at = pos(&text, "bogus");
    cases.push(case(
        "three unknown params keys",
        text,
        "unknown key `bogus` in params",
        at,
    ));
    cases
}

#[test]
fn hostile_configs_fail_cleanly_positioned_and_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all = numeric_cases();
    all.extend(secret_cases());
    all.extend(file_cases(dir.path()));
    all.extend(size_cases());
    let (mut tried, mut handled) = (0, 0);
    let mut failures = Vec::new();
    let mut table = String::new();
    for c in &all {
        tried += 1;
        let file = "vo.toml";
        std::fs::write(dir.path().join(file), &c.text).expect("write");
        let out = check(dir.path(), file);
        let output = format!("{}{}", out.stdout, out.stderr);
        let mut problems = Vec::new();
        match out.code {
            Some(1) => {}
            Some(101) => problems.push("panicked (exit 101)".to_string()),
            None => problems.push(format!(
                "no exit within {HANG_GUARD:?} (hang, or killed by a signal)"
            )),
            Some(c) => problems.push(format!("exit {c}, expected 1")),
        }
        if output.contains("panicked") {
            problems.push("printed a panic".into());
        }
        if !output.contains(c.says) {
            problems.push(format!("does not say `{}`", c.says));
        }
        let positioned = match c.at {
            Some((l, col)) => output.contains(&format!("{file}:{l}:{col}: error")),
            None => has_position(&output),
        };
        if !positioned {
            problems.push(format!("no error at {file}:{:?}", c.at));
        }
        if output.contains(SECRET) {
            problems.push("printed the secret".into());
        }
        if output.len() > 200_000 {
            problems.push(format!("printed {} bytes", output.len()));
        }
        let _ = writeln!(
            table,
            "| {} | {:?} | {:.1}s | {} |",
            c.name,
            out.code,
            out.took.as_secs_f64(),
            if problems.is_empty() {
                "handled"
            } else {
                "FAILED"
            }
        );
        if problems.is_empty() {
            handled += 1;
        } else {
            let head: String = output.chars().take(2_000).collect();
            failures.push(format!("{}: {}\n{head}", c.name, problems.join("; ")));
        }
    }
    eprintln!("| input | exit | time | result |\n|---|---|---|---|\n{table}");
    eprintln!(
        "hostile configs: {tried} tried, {handled} handled, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A relative `[server] store` is the config file's neighbour, whatever the working directory:
/// `matrix --config other/dir/vo.toml` reads the store `serve` would write.
#[test]
fn a_relative_store_is_resolved_from_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf_dir = dir.path().join("other/dir");
    std::fs::create_dir_all(&conf_dir).expect("mkdir");
    std::fs::write(
        conf_dir.join("vo.toml"),
        BASE.replacen(
            "vo = \"ops\"\n",
            "vo = \"ops\"\n[server]\nstore = \"results.sqlite\"\n",
            1,
        ),
    )
    .expect("write");
    // An empty file is an empty SQLite database: the store exists beside the config only.
    std::fs::write(conf_dir.join("results.sqlite"), "").expect("write");
    let out = Command::new(bin())
        .args(["matrix", "--config", "other/dir/vo.toml"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("gridprobe runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("no result store"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !dir.path().join("results.sqlite").exists(),
        "a store was made in the working directory"
    );
}
