//! Tests of the `job` kind: parameter errors at check time, and the checks on a payload's
//! result, through the local backend (the Slurm cases are with the `ce` tests).

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::ce::tests::{job_probe, script};
use crate::outcome::Status;
use crate::test_support::{build_with, context, line_of};

fn errors(params: &str) -> Vec<Diagnostic> {
    match build_with(build, NAME, params) {
        Ok(p) => panic!("expected errors, built {p:?}"),
        Err(ds) => ds,
    }
}

fn ctx() -> ProbeContext {
    context("ce01.example.org", None, Duration::from_secs(30))
}

fn lit(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[test]
fn params_are_documented() {
    crate::kind::assert_params_documented::<JobParams>(PARAMS);
}

#[test]
fn missing_payload_script_is_a_positioned_error_at_check_time() {
    let params = "backend = 'local'\nscript = 'payloads/nonexistent.sh'";
    let ds = errors(params);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert!(
        ds[0].message.starts_with("payload script ")
            && ds[0]
                .message
                .ends_with("payloads/nonexistent.sh cannot be read: no such file"),
        "{}",
        ds[0]
    );
    let line = line_of(NAME, params, "nonexistent");
    assert_eq!(
        ds[0].position().as_deref(),
        Some(format!("t.toml:{line}:10").as_str())
    );
    // With a placeholder it can only be checked when the job runs.
    assert!(build_with(build, NAME, "backend = 'local'\nscript = '{swdir}/run.sh'").is_ok());
}

#[test]
fn payload_and_check_errors_are_reported_together() {
    let ds = errors(
        "backend = 'local'\nscript = '/bin/true'\ncommand = 'true'\noutput_regex = '(unclosed'\n\
         expect_exit = 300\nproduced_files = ['../escape.dat']\ninputs = ['/nonexistent/in.dat']\n\
         env = { 'A B' = '1' }",
    );
    let messages: Vec<&str> = ds.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(ds.len(), 6, "{messages:?}");
    assert!(messages.contains(&"`script` and `command` cannot both be set"));
    assert!(messages
        .iter()
        .any(|m| m.starts_with("invalid regular expression in `output_regex`")));
    assert!(messages.contains(&"`expect_exit` is 300; exit codes are 0 to 255"));
    assert!(messages
        .iter()
        .any(|m| m.starts_with("`../escape.dat` must be a path inside the job's directory")));
    assert!(messages.contains(&"input file /nonexistent/in.dat does not exist"));
    assert!(messages
        .iter()
        .any(|m| m.contains("`A B` is not a valid environment variable name")));

    let ds = errors("backend = 'local'");
    assert_eq!(
        ds[0].message,
        "a job probe needs `script` or `command` in its params"
    );
    let ds = errors("backend = 'local'\ncommand = 'x'\nstage_out = '/tmp/x'");
    assert_eq!(
        ds[0].message,
        "`stage_out` copies `produced_files`, but none are listed"
    );
    let ds = errors("backend = 'local'\ncommand = 'x'\nforbid_regx = 'x'");
    assert_eq!(ds[0].message, "unknown key `forbid_regx` in params");
    assert_eq!(ds[0].help.as_deref(), Some("did you mean `forbid_regex`?"));
    let ds = errors("backend = 'lcoal'\ncommand = 'x'");
    assert_eq!(ds[0].help.as_deref(), Some("did you mean `local`?"));
}

#[tokio::test]
async fn patterns_produced_files_inputs_args_and_env_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("gauss.sim"), "event 1\nevent 2\nevent 3\n").expect("input");
    let s = script(
        dir.path(),
        "boole.sh",
        "n=$(wc -l < gauss.sim)\necho \"Boole $BOOLE_VERSION: digitised $n events (${1})\"\n\
         sed 's/event/digi/' gauss.sim > boole.digi\n",
    );
    let p = job_probe(&format!(
        "backend = 'local'\nscript = {}\napplication = 'Boole'\nargs = ['{{site}}']\n\
         env = {{ BOOLE_VERSION = 'v46r1' }}\ninputs = [{}]\n\
         output_regex = 'digitised 3 events \\(LCG.CERN.ch\\)'\nforbid_regex = 'Segmentation fault'\n\
         produced_files = ['boole.digi']\nstage_out = {}\nworkdir = {}",
        lit(&s),
        lit(&dir.path().join("gauss.sim")),
        lit(out.path()),
        lit(work.path())
    ));
    let o = p.run(&ctx()).await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(
        o.summary.starts_with(
            "Boole: exit code 0, no /Segmentation fault/, output matches \
             /digitised 3 events \\(LCG.CERN.ch\\)/, produced boole.digi (21 B); job "
        ),
        "{}",
        o.summary
    );
    assert!(o.details.starts_with("ok: exit code 0\n"), "{}", o.details);
    assert!(
        o.details
            .contains("Boole v46r1: digitised 3 events (LCG.CERN.ch)"),
        "{}",
        o.details
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("boole.digi")).expect("staged out"),
        "digi 1\ndigi 2\ndigi 3\n"
    );
    assert!(o
        .perfdata
        .iter()
        .any(|p| p.label == "size boole.digi" && p.value == 21.0));
}

#[tokio::test]
async fn failed_checks_are_critical_and_all_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(
        dir.path(),
        "davinci.sh",
        "echo 'DaVinci: starting'\necho 'Segmentation fault' >&2\n",
    );
    let p = job_probe(&format!(
        "backend = 'local'\nscript = {}\napplication = 'DaVinci'\n\
         output_regex = 'Application Manager Terminated successfully'\n\
         forbid_regex = 'Segmentation fault'\nproduced_files = ['davinci.root']\nworkdir = {}",
        lit(&s),
        lit(dir.path())
    ));
    let o = p.run(&ctx()).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.starts_with(
            "DaVinci: output matches forbidden /Segmentation fault/: \"Segmentation fault\"; \
             output does not match /Application Manager Terminated successfully/; \
             davinci.root was not produced; job "
        ),
        "{}",
        o.summary
    );
}

#[tokio::test]
async fn expected_non_zero_exit_is_ok() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = job_probe(&format!(
        "backend = 'local'\ncommand = 'false'\nexpect_exit = 1\nworkdir = {}",
        lit(dir.path())
    ));
    let o = p.run(&ctx()).await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(
        o.summary.starts_with("false: exit code 1; job "),
        "{}",
        o.summary
    );
}

#[tokio::test]
async fn held_install_lock_is_standby_and_submits_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let lock = dir.path().join(".gridprobe-lock");
    std::fs::create_dir(&lock).expect("lock dir");
    std::fs::write(lock.join("owner"), "pid 4242 on ce01 (CE-lhcb-install)\n").expect("owner");
    let marker = dir.path().join("ran");
    let p = job_probe(&format!(
        "backend = 'local'\ncommand = 'touch'\nargs = [{}]\napplication = 'Gauss'\n\
         lock = {}\nworkdir = {}",
        lit(&marker),
        lit(&lock),
        lit(work.path())
    ));
    let o = p.run(&ctx()).await;
    assert_eq!(o.status, Status::Standby, "{o:?}");
    assert_eq!(
        o.summary,
        format!(
            "lock held by pid 4242 on ce01 (CE-lhcb-install) ({}); Gauss not submitted",
            lock.display()
        )
    );
    assert!(!marker.exists());

    // Released: the job runs.
    std::fs::remove_dir_all(&lock).expect("unlock");
    let o = p.run(&ctx()).await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(marker.exists());
}

#[tokio::test]
async fn missing_input_at_run_time_is_standby_and_unreadable_is_unknown() {
    let work = tempfile::tempdir().expect("tempdir");
    let p = job_probe(&format!(
        "backend = 'local'\ncommand = 'true'\ninputs = ['/nonexistent/{{site}}/gauss.sim']\n\
         workdir = {}",
        lit(work.path())
    ));
    let o = p.run(&ctx()).await;
    assert_eq!(o.status, Status::Standby, "{o:?}");
    assert_eq!(
        o.summary,
        "input /nonexistent/LCG.CERN.ch/gauss.sim is missing (not produced by the step before?); \
         true not submitted"
    );

    // A directory where a file should be: the job cannot be set up.
    let input = tempfile::tempdir().expect("tempdir");
    let p = job_probe(&format!(
        "backend = 'local'\ncommand = 'true'\ninputs = ['{}/{{site}}']\nworkdir = {}",
        input.path().display(),
        lit(work.path())
    ));
    std::fs::create_dir(input.path().join("LCG.CERN.ch")).expect("mkdir");
    let o = p.run(&ctx()).await;
    assert_eq!(o.status, Status::Unknown, "{o:?}");
    assert!(
        o.summary
            .starts_with("true: cannot set up the job: cannot stage input ")
            && o.summary.ends_with("LCG.CERN.ch: not a regular file"),
        "{}",
        o.summary
    );
    let left: Vec<_> = std::fs::read_dir(work.path()).expect("read").collect();
    assert!(
        left.is_empty(),
        "the half-made job directory is removed: {left:?}"
    );
}
