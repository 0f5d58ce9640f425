//! The loader's own tests: parsing, positions, includes, ranges, files.

use std::time::Duration;

use super::files::expand_glob;
use super::*;
use proptest::prelude::*;
use serde::Deserialize;

const VALID: &str = r#"
vo = "lhcb"

[defaults]
interval = "1h"
timeout = "5m"

[[site]]
name = "LCG.CERN.ch"
tier = 0
  [[site.service]]
  flavour = "CE"
  hostname = "ce01.example.org"
  endpoint = "https://ce01.example.org:9619"
  params = { queue = "long" }
[site.service.override."CE-lhcb-install"]
timeout = "20m"

[[site]]
name = "LCG.RAL.uk"
tier = 1
  [site.override."CE-lhcb-os"]
  disabled = true
  [[site.service]]
  flavour = "CE"
  hostname = "ce.ral.example.org"

[[probe]]
metric = "org.lhcb.CE-lhcb-os"
kind = "nagios"
flavours = ["CE"]
retries = 2
  [probe.params]
  command = "/bin/true"

[[probe]]
metric = "org.lhcb.CE-lhcb-install"
kind = "nagios"
flavours = ["CE"]
depends_on = ["CE-lhcb-os"]
interval = "2h"
  [probe.params]
  command = "/bin/true"

[[profile]]
name = "critical"
critical = { CE = ["CE-lhcb-install"] }
"#;

fn load_text(text: &str) -> Loaded {
    load_str(Path::new("vo.toml"), text)
}

fn positions(l: &Loaded) -> Vec<String> {
    l.diagnostics.iter().filter_map(|d| d.position()).collect()
}

#[test]
fn valid_config_loads_with_inheritance() {
    let l = load_text(VALID);
    assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
    let c = &l.config;
    assert_eq!(c.vo, "lhcb");
    assert_eq!(c.sites.len(), 2);
    assert_eq!(c.probes[1].short, "CE-lhcb-install");
    let inst = c.instances();
    // CE-lhcb-os is disabled at RAL: 2 + 1 instances.
    assert_eq!(inst.len(), 3);
    let install_cern = inst
        .iter()
        .find(|i| i.probe == 1 && i.site == 0)
        .expect("install at CERN");
    assert_eq!(
        install_cern.timeout,
        Duration::from_secs(1200),
        "service override"
    );
    assert_eq!(
        install_cern.interval,
        Duration::from_secs(7200),
        "probe value"
    );
    let os_cern = inst.iter().find(|i| i.probe == 0).expect("os at CERN");
    assert_eq!(os_cern.retries, 2);
    assert_eq!(os_cern.timeout, Duration::from_secs(300), "default");
}

#[test]
fn every_unknown_key_is_reported_with_position() {
    let text = "vo = \"x\"\n[defaults]\nintervall = \"1h\"\ntimeot = \"5m\"\nretries = \"two\"\n";
    let l = load_text(text);
    assert_eq!(
        positions(&l),
        vec!["vo.toml:3:1", "vo.toml:4:1", "vo.toml:5:11"],
        "{}",
        l.diagnostics
    );
    let text = l.diagnostics.to_string();
    assert!(text.contains("did you mean `interval`?"), "{text}");
    assert!(text.contains("did you mean `timeout`?"), "{text}");
}

#[test]
fn syntax_errors_are_positioned() {
    let l = load_text("vo = \"x\"\n[[site]\nname = 1\n");
    assert_eq!(
        positions(&l).first().map(String::as_str),
        Some("vo.toml:2:8"),
        "{}",
        l.diagnostics
    );
}

#[test]
fn semantic_errors_point_at_values() {
    let broken = VALID
        .replace(
            "depends_on = [\"CE-lhcb-os\"]",
            "depends_on = [\"CE-lhcb-oss\"]",
        )
        .replace("tier = 1", "tier = 7");
    let l = load_text(&broken);
    let text = l.diagnostics.to_string();
    assert!(
        text.contains("vo.toml:21:8: error: tier must be 0, 1, 2 or 3, found 7"),
        "{text}"
    );
    assert!(
        text.contains("`depends_on` names `CE-lhcb-oss`, which is not a probe"),
        "{text}"
    );
    assert!(text.contains("did you mean `CE-lhcb-os`?"), "{text}");
}

#[test]
fn profile_naming_unknown_metric_is_rejected() {
    let l = load_text(&VALID.replace("CE = [\"CE-lhcb-install\"]", "CE = [\"CE-lhcb-instal\"]"));
    let text = l.diagnostics.to_string();
    assert!(
        text.contains("names metric `CE-lhcb-instal`, which no probe produces"),
        "{text}"
    );
}

#[test]
fn override_of_unknown_probe_is_rejected() {
    let l = load_text(&VALID.replace(
        "[site.override.\"CE-lhcb-os\"]",
        "[site.override.\"CE-lhcb-xx\"]",
    ));
    assert!(l
        .diagnostics
        .to_string()
        .contains("override for `CE-lhcb-xx`, which is not a probe"));
}

#[test]
fn includes_are_read_and_positioned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sites = dir.path().join("sites");
    std::fs::create_dir(&sites).expect("mkdir");
    std::fs::write(
        sites.join("a.toml"),
        "[[site]]\nname = \"A\"\ntier = 2\n  [[site.service]]\n  flavour = \"CE\"\n  hostname = \"a\"\n",
    )
    .expect("write");
    std::fs::write(sites.join("b.toml"), "[[site]]\nname = \"B\"\ntier = 9\n").expect("write");
    let main = dir.path().join("vo.toml");
    std::fs::write(
        &main,
        "vo = \"x\"\ninclude = [\"sites/*.toml\", \"missing/*.toml\"]\n[[probe]]\nmetric = \"p\"\nkind = \"tcp\"\nflavours = [\"CE\"]\n",
    )
    .expect("write");
    let l = load(&main);
    let text = l.diagnostics.to_string();
    assert_eq!(l.config.sites.len(), 2, "{text}");
    assert!(text.contains("b.toml:3:8: error: tier must be"), "{text}");
    assert!(
        text.contains("vo.toml:2:28: error: include pattern `missing/*.toml` matches no file"),
        "{text}"
    );
}

#[test]
fn bad_files_give_precise_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = load(&dir.path().join("nope.toml"));
    assert!(
        l.diagnostics.to_string().contains("no such file"),
        "{}",
        l.diagnostics
    );
    let l = load(dir.path());
    assert!(
        l.diagnostics.to_string().contains("is a directory"),
        "{}",
        l.diagnostics
    );
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "  \n").expect("write");
    assert!(load(&empty)
        .diagnostics
        .to_string()
        .contains("configuration file is empty"));
    let latin1 = dir.path().join("latin1.toml");
    std::fs::write(&latin1, b"vo = \"caf\xe9\"\n").expect("write");
    let text = load(&latin1).diagnostics.to_string();
    assert!(
        text.contains("latin1.toml:1:10: file is not valid UTF-8"),
        "{text}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let l = load_text(&text);
        // Either valid, or every error explains itself.
        for d in l.diagnostics.iter() {
            prop_assert!(!d.message.is_empty());
        }
    }

    #[test]
    fn mutated_valid_config_never_panics(
        cut in 0usize..VALID.len(),
        len in 0usize..40,
        insert in "[a-z\\[\\]=\" \n{}.,0-9]{0,12}",
    ) {
        let mut text = VALID.to_string();
        let start = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let end = (start + len).min(text.len());
        let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        text.replace_range(start..end, &insert);
        let l = load_text(&text);
        for d in l.diagnostics.iter() {
            prop_assert!(!d.message.is_empty());
            if let Some(loc) = &d.location {
                prop_assert!(loc.line >= 1 && loc.col >= 1);
            }
        }
    }
}

/// The line and column of the first occurrence of `needle` in `text`, as `vo.toml:L:C`.
fn at(text: &str, needle: &str) -> String {
    let offset = text.find(needle).unwrap_or(0);
    let (l, c) = crate::diagnostic::line_col(text, offset);
    format!("vo.toml:{l}:{c}")
}

#[test]
fn overflowing_durations_are_refused_at_their_value() {
    for (from, to) in [
        ("interval = \"1h\"", "interval = \"10000000000000000000s\""),
        ("timeout = \"5m\"", "timeout = \"18446744073709551615s\""),
        (
            "interval = \"2h\"",
            "interval = \"99999999999999999999999s\"",
        ),
        (
            "retries = 2",
            "retries = 2\ntimeout = \"18446744073709551615s\"",
        ),
        ("retries = 2", "retries = 2\nfreshness = \"1000000d\""),
        ("timeout = \"20m\"", "timeout = \"18446744073709551615s\""),
    ] {
        let text = VALID.replacen(from, to, 1);
        let l = load_text(&text);
        let value = to.rsplit('=').next().unwrap_or("").trim();
        let where_ = at(&text, value);
        let rendered = l.diagnostics.to_string();
        assert!(
            l.diagnostics
                .iter()
                .any(|d| d.position().as_deref() == Some(where_.as_str())
                    && d.message.contains("must be between")),
            "{to}: expected an error at {where_}:\n{rendered}"
        );
    }
    for server in [
        "startup_spread = \"18446744073709551615s\"",
        "retention = \"10000000000000000000s\"",
        "shutdown_grace = \"18446744073709551615s\"",
    ] {
        let l = with_server(server);
        let text = l.diagnostics.to_string();
        assert!(text.contains("must be between"), "{server}: {text}");
        assert!(text.contains("too long"), "{server}: {text}");
    }
}

#[test]
fn counts_have_ranges() {
    for (from, to, says) in [
        (
            "retries = 2",
            "retries = 1000",
            "`retries` must be between 0 and 100",
        ),
        (
            "timeout = \"5m\"",
            "timeout = \"5m\"\nconcurrency = 0",
            "`concurrency` must be between 1 and 1000000",
        ),
    ] {
        let text = VALID.replacen(from, to, 1);
        let l = load_text(&text);
        let rendered = l.diagnostics.to_string();
        assert!(rendered.contains(says), "{to}: {rendered}");
        // The value on the last line of `to`.
        let line = to.lines().last().unwrap_or(to);
        let offset = text.find(line).unwrap_or(0) + line.find("= ").unwrap_or(0) + 2;
        let (l_, c_) = crate::diagnostic::line_col(&text, offset);
        let where_ = format!("vo.toml:{l_}:{c_}");
        assert!(
            l.diagnostics
                .iter()
                .any(|d| d.position().as_deref() == Some(where_.as_str())),
            "{to}: not positioned at {where_}:\n{rendered}"
        );
    }
    let l = with_server("spool_max_size = \"100TiB\"");
    assert!(
        l.diagnostics
            .to_string()
            .contains("between 64KiB and 16TiB"),
        "{}",
        l.diagnostics
    );
}

#[test]
fn duplicate_profiles_are_positioned() {
    let text = format!("{VALID}\n[[profile]]\nname = \"critical\"\n");
    let l = load_text(&text);
    let d = l
        .diagnostics
        .iter()
        .find(|d| d.message.contains("is defined 2 times"))
        .expect("duplicate profile reported");
    let line = text.lines().count();
    assert_eq!(d.position(), Some(format!("vo.toml:{line}:8")), "{d}");
    assert!(d.to_string().contains("first defined at vo.toml:"), "{d}");
}

#[test]
fn every_unknown_params_key_is_reported() {
    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        command: String,
    }
    let text = VALID.replacen(
        "command = \"/bin/true\"",
        "command = \"/bin/true\"\n  comand = 1\n  timout = 2\n  bogus = 3",
        1,
    );
    let l = load_text(&text);
    assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
    let err = l.config.probes[0]
        .params
        .deserialize::<Params>(&l.config.sources)
        .expect_err("unknown keys");
    let mut all = Diagnostics::default();
    all.push(err);
    let positions: Vec<String> = all.iter().filter_map(|d| d.position()).collect();
    assert_eq!(
        positions,
        vec![at(&text, "comand"), at(&text, "timout"), at(&text, "bogus")],
        "{all}"
    );
    assert!(all.to_string().contains("did you mean `command`?"), "{all}");
}

#[test]
fn a_relative_store_is_read_from_the_directory_of_the_config() {
    let l = load_str(
        Path::new("/etc/gridprobe/vo.toml"),
        &format!("{VALID}\n[server]\nstore = \"data/results.sqlite\"\n"),
    );
    assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
    assert_eq!(
        l.config.server.store.as_deref(),
        Some("/etc/gridprobe/data/results.sqlite")
    );
    let l = load_str(
        Path::new("other/dir/vo.toml"),
        &format!("{VALID}\n[server]\nstore = \"sqlite:r.db\"\n"),
    );
    assert_eq!(
        l.config.server.store.as_deref(),
        Some("sqlite:other/dir/r.db")
    );
}

fn include_errors(dir: &Path, include: &str) -> String {
    let main = dir.join("vo.toml");
    std::fs::write(&main, format!("include = [{include}]\n{VALID}")).expect("write");
    load(&main).diagnostics.to_string()
}

#[test]
fn fifos_and_devices_are_refused_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("sites").join("pipe.toml");
    std::fs::create_dir(dir.path().join("sites")).expect("mkdir");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for include in ["\"sites/pipe.toml\"", "\"sites/*.toml\"", "\"/dev/zero\""] {
        let text = include_errors(dir.path(), include);
        assert!(
            text.contains("is a named pipe (FIFO)") || text.contains("is a device"),
            "{include}: {text}"
        );
        assert!(text.contains("cannot include"), "{text}");
    }
}

#[test]
fn include_globs_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..60 {
        std::fs::write(dir.path().join(format!("f{i}.toml")), "").expect("write");
    }
    let small = GlobLimits {
        entries: 50,
        ..GLOB_LIMITS
    };
    let e = expand_glob(&dir.path().join("**"), small).expect_err("bounded");
    assert!(e.contains("more than 50 files and directories"), "{e}");
    let e = expand_glob(
        &dir.path().join("*.toml"),
        GlobLimits {
            matches: 10,
            ..GLOB_LIMITS
        },
    )
    .expect_err("bounded");
    assert!(e.contains("matches more than 10 files"), "{e}");
    let found = expand_glob(&dir.path().join("f1*.toml"), GLOB_LIMITS).expect("ok");
    assert_eq!(found.len(), 11);
    // The whole file system: refused quickly, with the reason.
    let started = std::time::Instant::now();
    let text = include_errors(dir.path(), "\"/**/*.toml\"");
    assert!(text.contains("include pattern"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn non_toml_includes_are_named_never_quoted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = include_errors(dir.path(), "\"/proc/self/environ\"");
    assert!(text.contains("not a TOML text file"), "{text}");
    assert!(!text.contains("PATH="), "{text}");
    std::fs::write(dir.path().join("secrets.env"), "API=hunter2 x\n").expect("write");
    let text = include_errors(dir.path(), "\"secrets.env\"");
    assert!(text.contains("secrets.env:1:"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn include_help_names_the_current_directory() {
    let l = load_str(
        Path::new("vo.toml"),
        &format!("include = [\"nope/*.toml\"]\n{VALID}"),
    );
    let text = l.diagnostics.to_string();
    assert!(
        text.contains("patterns are relative to the current directory"),
        "{text}"
    );
}

#[test]
fn credentials_in_urls_are_refused_and_never_printed() {
    for (server_or_publish, says) in [
        (
            "[[publish]]\nkind = \"nats\"\nurl = \"nats://S3CRETTOKEN@nats.example.org\"",
            "holds a token",
        ),
        (
            "[[publish]]\nkind = \"amqp\"\nurl = \"amqp://gp@mq.example.org/%2f?password=S3CRETTOKEN\"",
            "holds a password",
        ),
        (
            "[[publish]]\nkind = \"nats\"\nurl = \"nats://user:S3CRETTOKEN@bad host\"",
            "invalid nats URL",
        ),
        (
            "[server]\nstore = \"postgresql://gp@db/gp?sslpassword=S3CRETTOKEN\"",
            "holds a password",
        ),
        (
            "[server]\nstore = \"postgresql://gp:S3CRETTOKEN@db/gp\nlisten = 1",
            "TOML syntax error",
        ),
    ] {
        let l = load_text(&format!("{VALID}\n{server_or_publish}\n"));
        let text = l.diagnostics.to_string();
        assert!(text.contains(says), "{server_or_publish}: {text}");
        assert!(!text.contains("S3CRETTOKEN"), "secret printed:\n{text}");
    }
    let text = VALID.replacen(
        "endpoint = \"https://ce01.example.org:9619\"",
        "endpoint = \"https://u:S3CRETTOKEN@ce01.example.org:9619\"",
        1,
    );
    let rendered = load_text(&text).diagnostics.to_string();
    assert!(rendered.contains("holds a password or token"), "{rendered}");
    assert!(!rendered.contains("S3CRETTOKEN"), "{rendered}");
    // A NATS user name with a password source is a user, not a token.
    let l = load_text(&format!(
        "{VALID}\n[[publish]]\nkind = \"nats\"\nurl = \"nats://gp@nats.example.org\"\npassword_env = \"NATS_PW\"\n"
    ));
    assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
}

fn with_server(server: &str) -> Loaded {
    load_text(&format!("{VALID}\n[server]\n{server}\n"))
}

#[test]
fn schedule_mode_and_lease() {
    let l = with_server("");
    assert_eq!(l.config.server.schedule, crate::ScheduleMode::Local);
    assert_eq!(l.config.server.schedule_lease, Duration::from_secs(15));
    let l = with_server(
        "store = \"postgresql://gp@db/gp\"\nschedule = \"shared\"\nschedule_lease = \"30s\"",
    );
    assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
    assert_eq!(l.config.server.schedule, crate::ScheduleMode::Shared);
    assert_eq!(l.config.server.schedule_lease, Duration::from_secs(30));
    // Without a store in the file it may come from --store: accepted here, checked by serve.
    let l = with_server("schedule = \"shared\"");
    assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
    for (bad, says) in [
        ("schedule = \"cluster\"", "unknown schedule mode `cluster`"),
        (
            "store = \"x.sqlite\"\nschedule = \"shared\"",
            "needs a PostgreSQL store",
        ),
        ("schedule_lease = \"20m\"", "between 1s and 10m"),
    ] {
        let l = with_server(bad);
        let text = l.diagnostics.to_string();
        assert!(text.contains(says), "{bad}: {text}");
    }
}

#[test]
fn store_takes_sqlite_files_and_postgres_urls() {
    for (store, spec) in [
        (
            "/var/lib/gridprobe/lhcb.sqlite",
            crate::StoreSpec::Sqlite("/var/lib/gridprobe/lhcb.sqlite".into()),
        ),
        ("sqlite:rel.db", crate::StoreSpec::Sqlite("rel.db".into())),
        (
            "postgresql://gridprobe@db.example.org:5432/gridprobe",
            crate::StoreSpec::Postgres(
                "postgresql://gridprobe@db.example.org:5432/gridprobe".into(),
            ),
        ),
        (
            "postgres://db.example.org/gp?sslmode=require",
            crate::StoreSpec::Postgres("postgres://db.example.org/gp?sslmode=require".into()),
        ),
    ] {
        let l = with_server(&format!("store = \"{store}\""));
        assert!(l.diagnostics.is_empty(), "{store}: {}", l.diagnostics);
        assert_eq!(l.config.server.store.as_deref(), Some(store));
        assert_eq!(crate::StoreSpec::parse(store), Ok(spec));
    }
    let l = with_server(
        "store = \"postgresql://gridprobe@db/gp\"\nstore_password_file = \"secrets/pg\"",
    );
    assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
    // Relative to the directory of the file that says it.
    assert_eq!(
        l.config.server.store_password_file,
        Some(PathBuf::from("secrets/pg"))
    );
    let l = with_server(
        "store = \"postgresql://gridprobe@db/gp\"\nstore_password_env = \"GP_DB_PASSWORD\"",
    );
    assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
    assert_eq!(
        l.config.server.store_password_env.as_deref(),
        Some("GP_DB_PASSWORD")
    );
}

#[test]
fn store_url_with_a_password_is_refused_where_it_is_written() {
    for store in [
        "postgresql://gridprobe:s3cret@db.example.org/gridprobe",
        "postgres://db.example.org/gridprobe?sslmode=require&password=s3cret",
    ] {
        let l = with_server(&format!("store = \"{store}\""));
        assert_eq!(l.diagnostics.len(), 1, "{}", l.diagnostics);
        let d = &l.diagnostics.0[0];
        let line = VALID.lines().count() + 3;
        assert_eq!(d.position(), Some(format!("vo.toml:{line}:9")));
        let text = l.diagnostics.to_string();
        assert!(
            text.contains("put the password in PGPASSWORD or [server] store_password_file"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(l.config.server.store, None);
    }
}

#[test]
fn store_password_keys_are_checked() {
    let l = with_server(
        "store = \"postgresql://gp@db/gp\"\nstore_password_env = \"X\"\nstore_password_file = \"f\"",
    );
    assert!(
        l.diagnostics.to_string().contains("not both"),
        "{}",
        l.diagnostics
    );
    let l = with_server("store = \"/tmp/x.sqlite\"\nstore_password_file = \"f\"");
    assert!(
        l.diagnostics
            .to_string()
            .contains("only used with a PostgreSQL store"),
        "{}",
        l.diagnostics
    );
    let l = with_server("store = \"mysql://db/gp\"");
    let text = l.diagnostics.to_string();
    assert!(text.contains("unsupported store `mysql://...`"), "{text}");
    let l = with_server("store_pasword_file = \"f\"");
    assert!(
        l.diagnostics.to_string().contains("store_password_file"),
        "{}",
        l.diagnostics
    );
}
