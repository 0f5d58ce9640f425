//! End-to-end tests of `gridprobe check` through the built binary.

mod common;

use common::{gridprobe, repo, texts};

#[test]
fn every_sample_config_is_valid() {
    let dir = repo().join("config/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let rel = path.strip_prefix(repo()).expect("inside repo");
        let out = gridprobe(&["check", rel.to_str().expect("utf-8 path")]);
        let (stdout, stderr) = texts(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}:\n{stdout}{stderr}",
            rel.display()
        );
        assert!(stdout.contains(": valid: vo "), "{stdout}");
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected several sample configs, found {checked}"
    );
}

#[test]
fn sample_summary_counts_sites_services_and_instances() {
    let out = gridprobe(&["check", "config/examples/lhcb.toml"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // 3 sites; 7 + 4 + 4 services; CE probes: 6 per CE on 4 CEs = 24, minus Brunel at CNAF and
    // the 3 HTCondor job probes at GRIDKA's ARC CE = 20; SRMv2 2 probes on 3 = 6; XROOTD 1;
    // FTS 3 probes on 3 = 9; CONDDB port 1; conditions freshness on the CERN database and
    // 2 Frontiers = 3; CVMFS repository on the CERN Stratum-1 = 1.
    assert_eq!(
        stdout.trim(),
        "config/examples/lhcb.toml: valid: vo lhcb, 3 sites, 15 services, 41 probe instances (15 probes)"
    );
}

#[test]
fn broken_config_reports_every_error_with_its_position() {
    let out = gridprobe(&["check", "tests/fixtures/broken/many-errors.toml"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let f = "tests/fixtures/broken/many-errors.toml";
    let expected = [
        format!("{f}:4:1: error: unknown key `intervall` in [defaults]"),
        format!("{f}:5:11: error: invalid duration `10 parsecs`"),
        format!("{f}:9:8: error: tier must be 0, 1, 2 or 3, found 5"),
        format!("{f}:14:14: error: invalid endpoint URL `not a url`"),
        format!("{f}:17:8: error: duplicate site name `SITE-A`"),
        format!("{f}:21:3: error: unknown key `flavor` in [[site.service]]"),
        format!("{f}:26:8: error: unknown probe kind `nagois`"),
        format!("{f}:32:13: error: no service has flavour `ce`"),
        format!("{f}:33:15: error: `depends_on` names `CE-oss`, which is not a probe"),
        format!("{f}:35:11: error: timeout (2m) must be shorter than the interval (1m)"),
        format!("{f}:51:15: error: dependency cycle: `B` depends on `A`"),
    ];
    for line in &expected {
        assert!(
            stderr.lines().any(|l| l.starts_with(line.as_str())),
            "missing `{line}` in:\n{stderr}"
        );
    }
    for hint in [
        "did you mean `interval`?",
        "did you mean `flavour`?",
        "did you mean `nagios`?",
        "did you mean `CE`?",
        "did you mean `CE-os`?",
    ] {
        assert!(stderr.contains(hint), "missing hint {hint}:\n{stderr}");
    }
    // The offending line is quoted with a caret under the value.
    assert!(
        stderr.contains("4 | intervall = \"5m\"\n  | ^^^^^^^^^"),
        "{stderr}"
    );
    assert!(
        stderr.contains("errors found; the configuration was not accepted"),
        "{stderr}"
    );
}

#[test]
fn unreadable_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").expect("write");
    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, [0xffu8, 0xfe, 0x00, 0x41]).expect("write");
    let cases = [
        (dir.path().join("missing.toml"), "no such file"),
        (dir.path().to_path_buf(), "is a directory"),
        (empty, "configuration file is empty"),
        (binary, "file is not valid UTF-8"),
    ];
    for (path, expect) in cases {
        let out = gridprobe(&["check", path.to_str().expect("utf-8")]);
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", path.display());
        assert!(stderr.contains(expect), "{}: {stderr}", path.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = gridprobe(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let out = gridprobe(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn probes_lists_every_kind_with_parameters() {
    let out = gridprobe(&["probes", "--format", "json"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let kinds: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let names: Vec<&str> = kinds
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|k| k["kind"].as_str())
        .collect();
    for kind in ["nagios", "http", "tcp"] {
        assert!(names.contains(&kind), "{kind} missing from {names:?}");
    }
    // The same list as the registry, in its order, with no duplicates.
    let unique: std::collections::HashSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    for k in kinds.as_array().expect("array") {
        assert!(!k["params"].as_array().expect("params").is_empty(), "{k}");
    }
    let nagios = &kinds
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["kind"] == "nagios")
        .expect("nagios")["params"];
    let command = nagios
        .as_array()
        .expect("params")
        .iter()
        .find(|p| p["name"] == "command")
        .expect("nagios has command");
    assert_eq!(command["required"], true);
}

/// Issue 13 item 16: optional parameters are not shown as required.
#[test]
fn probes_shows_optional_parameters_as_optional() {
    let out = gridprobe(&["probes", "--format", "json"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let kinds: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let param = |kind: &str, name: &str| -> serde_json::Value {
        kinds
            .as_array()
            .expect("array")
            .iter()
            .find(|k| k["kind"] == kind)
            .and_then(|k| {
                k["params"]
                    .as_array()
                    .expect("params")
                    .iter()
                    .find(|p| p["name"] == name)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("{kind}.{name} listed"))
    };
    for (kind, name) in [
        ("http", "path"),
        ("http", "body_regex"),
        ("http", "ca_file"),
    ] {
        let p = param(kind, name);
        assert_eq!(p["required"], false, "{p}");
        assert_eq!(p["default"], serde_json::Value::Null, "{p}");
    }
    assert_eq!(param("storage", "test_area")["required"], true);
    assert_eq!(param("http", "method")["required"], false);

    let out = gridprobe(&["probes"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let row = |name: &str| -> String {
        let http = stdout.split("\nhttp: ").nth(1).expect("http table");
        http.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("row {name} in {http}"))
            .to_string()
    };
    assert!(row("path").contains("(optional)"), "{}", row("path"));
    assert!(!row("path").contains("(required)"), "{}", row("path"));
    assert!(
        !row("body_regex").contains("(required)"),
        "{}",
        row("body_regex")
    );
}
