//! Tests of the `ce` kind and its backends: build errors, the local backend, a real one-node
//! Slurm (`GRIDPROBE_TEST_SLURM`, set up by `scripts/test-env.sh slurm`) and HTCondor through
//! stand-in commands.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::outcome::Status;
use crate::test_support::{build_with, context, line_of};

/// Allowance for scheduling noise in timing assertions.
const SLACK: Duration = Duration::from_secs(2);

fn ce_probe(params: &str) -> SharedProbe {
    match build_with(build, NAME, params) {
        Ok(p) => p,
        Err(ds) => panic!("build failed: {ds:?}"),
    }
}

pub(crate) fn job_probe(params: &str) -> SharedProbe {
    match build_with(crate::job::build, crate::job::NAME, params) {
        Ok(p) => p,
        Err(ds) => panic!("build failed: {ds:?}"),
    }
}

fn errors(params: &str) -> Vec<Diagnostic> {
    match build_with(build, NAME, params) {
        Ok(p) => panic!("expected errors, built {p:?}"),
        Err(ds) => ds,
    }
}

fn ctx(timeout: Duration) -> ProbeContext {
    context("ce01.example.org", None, timeout)
}

fn perf(o: &Outcome, label: &str) -> Option<f64> {
    o.perfdata
        .iter()
        .find(|p| p.label == label)
        .map(|p| p.value)
}

/// A TOML string literal for a path.
fn lit(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Writes an executable shell script.
pub(crate) fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Polls until `f` holds or `within` passes.
pub(crate) async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a process is alive (exists and is not a zombie).
pub(crate) fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Reads a pid a payload wrote, waiting for it.
pub(crate) async fn read_pid(path: &Path) -> i32 {
    let mut pid = 0;
    let found = eventually(Duration::from_secs(20), || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pid > 0
    })
    .await;
    assert!(found, "no pid in {}", path.display());
    pid
}

// ---------------------------------------------------------------------------------------------
// Build

#[test]
fn params_are_documented() {
    crate::kind::assert_params_documented::<CeParams>(PARAMS);
}

#[test]
fn unknown_backend_is_positioned_with_a_suggestion() {
    let ds = errors("backend = 'slurmm'");
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0].message, "unknown backend `slurmm`");
    assert_eq!(ds[0].help.as_deref(), Some("did you mean `slurm`?"));
    let line = line_of(NAME, "backend = 'slurmm'", "slurmm");
    assert_eq!(
        ds[0].position().as_deref(),
        Some(format!("t.toml:{line}:11").as_str())
    );
    let ds = errors("backend = 'pbs'");
    assert_eq!(
        ds[0].help.as_deref(),
        Some("use one of slurm, htcondor, arc, local")
    );
}

#[test]
fn backend_specific_keys_and_bad_values_are_reported_together() {
    let params = "backend = 'htcondor'\nqueue = 'debug'\nsubmit_timeout = 'soon'\n\
                  queue_timeout = '10m'\nqueue_warn = '20m'\npoll_interval = '10ms'\n\
                  backend_env = { '1X' = 'y' }\nworkdir = '{oops'";
    let ds = errors(params);
    let messages: Vec<&str> = ds.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(ds.len(), 6, "{messages:?}");
    assert!(
        messages.contains(&"`queue` applies to the slurm and arc backends only, not to htcondor")
    );
    assert!(messages
        .iter()
        .any(|m| m.starts_with("`submit_timeout`: invalid duration `soon`")));
    assert!(messages
        .iter()
        .any(|m| m.starts_with("`queue_warn` (20m) is not below `queue_timeout` (10m)")));
    assert!(messages
        .iter()
        .any(|m| m.starts_with("`poll_interval` must be at least 100ms")));
    assert!(messages
        .iter()
        .any(|m| m.contains("`1X` is not a valid environment variable name")));
    assert!(messages
        .iter()
        .any(|m| m.starts_with("`workdir`: unclosed")));
    assert!(ds.iter().all(|d| d.location.is_some()));
    let line = line_of(NAME, params, "queue = ");
    assert_eq!(
        ds[0].position().as_deref(),
        Some(format!("t.toml:{line}:9").as_str())
    );

    let ds = errors("backend = 'local'\nbin_dir = '/usr/bin'");
    assert!(
        ds[0].message.contains("no meaning for the local backend"),
        "{ds:?}"
    );
    let ds = errors("backend = 'slurm'\nbin_dir = '/nonexistent/slurm/bin'");
    assert!(ds[0].message.contains("is not a directory"), "{ds:?}");
}

#[test]
fn limits_longer_than_the_probe_timeout_fail_check_instance() {
    let p = ce_probe("backend = 'local'\nrun_timeout = '2h'");
    let err = p
        .check_instance(&ctx(Duration::from_secs(600)))
        .expect_err("run_timeout over timeout");
    assert!(
        err.contains("`run_timeout` (2h) is longer than the probe's timeout (10m)"),
        "{err}"
    );
    assert!(ce_probe("backend = 'slurm'\nqueue = '{queue}'")
        .check_instance(&ctx(Duration::from_secs(600)))
        .is_ok());
    let err = ce_probe("backend = 'slurm'\nqueue = '{partition}'")
        .check_instance(&ctx(Duration::from_secs(600)))
        .expect_err("no such service parameter");
    assert!(err.contains("no parameter `partition`"), "{err}");
}

#[test]
fn wrapper_quotes_arguments_and_environment() {
    let spec = JobSpec {
        payload: Payload::Command("/opt/app/run it".into()),
        args: vec!["a b".into(), "it's".into()],
        env: vec![("X".into(), "$HOME `x`".into())],
        inputs: vec![],
    };
    let w = wrapper_text("tag", &sh_quote("/opt/app/run it"), &spec);
    assert!(w.contains("export X='$HOME `x`'\n"), "{w}");
    assert!(
        w.contains("'/opt/app/run it' 'a b' 'it'\\''s'\nrc=$?\n"),
        "{w}"
    );
    assert!(
        w.ends_with("times > gridprobe-job.times 2>/dev/null\nexit $rc\n"),
        "{w}"
    );
}

#[test]
fn times_output_of_bash_and_dash_is_read() {
    assert_eq!(
        parse_times("0m0.003s 0m0.001s\n0m1.250s 0m0.250s\n"),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        parse_times("0m0.000000s 0m0.000000s\n1m0.500000s 0m0.000000s\n"),
        Some(Duration::from_millis(60_500))
    );
    assert_eq!(parse_times("garbage"), None);
}

#[test]
fn formats() {
    assert_eq!(fmt_minutes(Duration::from_secs(2400)), "40 min");
    assert_eq!(fmt_minutes(Duration::from_secs(7500)), "2 h 5 min");
    // One duration form for the whole crate (issue 14): `1h30m`, as config durations are written.
    assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    assert_eq!(fmt_bytes(23_500_000), "22.4 MiB");
    assert_eq!(
        fmt_time(UNIX_EPOCH + Duration::from_millis(1_764_081_993_120)),
        "2025-11-25 14:46:33.120 UTC"
    );
}

// ---------------------------------------------------------------------------------------------
// Local backend

#[tokio::test]
async fn local_job_completes_with_timeline_and_accounting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = ce_probe(&format!("backend = 'local'\nworkdir = {}", lit(dir.path())));
    let o = p.run(&ctx(Duration::from_secs(30))).await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(o.summary.starts_with("job "), "{}", o.summary);
    assert!(
        o.summary.contains("(local) completed (ran "),
        "{}",
        o.summary
    );
    for needle in [
        "  submitted  as job ",
        "  running  running",
        "  completed  exited, exit code 0",
        "local backend (the job is a child process of gridprobe)",
        "--- stdout ---\ngridprobe test job on ",
    ] {
        assert!(
            o.details.contains(needle),
            "missing {needle:?} in\n{}",
            o.details
        );
    }
    for label in [
        "submit",
        "queued",
        "wall",
        "cpu",
        "cpu_efficiency",
        "peak_memory",
        "total",
    ] {
        assert!(perf(&o, label).is_some(), "no {label} in {:?}", o.perfdata);
    }
    // The job's directory is removed after the run.
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read").collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn local_job_exceeding_its_run_time_is_killed_with_its_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = tempfile::tempdir().expect("tempdir");
    let s = script(
        dir.path(),
        "hang.sh",
        "sleep 1000 &\necho $! > \"$1.bg\"\necho $$ > \"$1\"\necho started\nsleep 1000\n",
    );
    let pid_file = pids.path().join("pid");
    let p = job_probe(&format!(
        "backend = 'local'\nscript = {}\nargs = [{}]\nrun_timeout = '1s'\nworkdir = {}",
        lit(&s),
        lit(&pid_file),
        lit(dir.path())
    ));
    let started = Instant::now();
    let o = p.run(&ctx(Duration::from_secs(30))).await;
    let took = started.elapsed();
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.contains("run phase timed out")
            && o.summary
                .contains("still running after 1s (the run_timeout)")
            && o.summary.contains("cancelled at the batch system"),
        "{}",
        o.summary
    );
    assert!(
        o.details.contains("  cancel  requested by gridprobe"),
        "{}",
        o.details
    );
    assert!(
        o.details.contains("--- stdout ---\nstarted"),
        "{}",
        o.details
    );
    assert!(
        took < Duration::from_secs(1) + crate::process::TERM_GRACE + SLACK,
        "{took:?}"
    );
    let pid = read_pid(&pid_file).await;
    let bg = read_pid(&pids.path().join("pid.bg")).await;
    assert!(eventually(Duration::from_secs(10), || !alive(pid) && !alive(bg)).await);
}

#[tokio::test]
async fn local_job_failing_is_critical_with_its_exit_code_and_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(
        dir.path(),
        "fail.sh",
        "echo 'cannot open geometry' >&2\nexit 3\n",
    );
    let p = job_probe(&format!(
        "backend = 'local'\nscript = {}\napplication = 'Gauss'\nworkdir = {}",
        lit(&s),
        lit(dir.path())
    ));
    let o = p.run(&ctx(Duration::from_secs(30))).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("Gauss: exit code 3, expected exit code 0; job "),
        "{}",
        o.summary
    );
    assert!(
        o.details.contains("--- stderr ---\ncannot open geometry"),
        "{}",
        o.details
    );
}

#[tokio::test]
async fn cancellation_kills_a_local_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path(), "hang.sh", "echo $$ > \"$1\"\nsleep 1000\n");
    let pid_file = pids.path().join("pid");
    let p = job_probe(&format!(
        "backend = 'local'\nscript = {}\nargs = [{}]\nworkdir = {}",
        lit(&s),
        lit(&pid_file),
        lit(dir.path())
    ));
    let c = ctx(Duration::from_secs(60));
    let cancel = c.cancel.clone();
    let pf = pid_file.clone();
    let (o, _) = tokio::join!(p.run(&c), async move {
        read_pid(&pf).await;
        cancel.cancel();
    });
    assert_eq!(o.status, Status::Unknown, "{o:?}");
    assert!(
        o.summary.contains("cancelled (gridprobe is stopping)"),
        "{}",
        o.summary
    );
    let pid = read_pid(&pid_file).await;
    assert!(eventually(Duration::from_secs(10), || !alive(pid)).await);
}

#[tokio::test]
async fn dropping_the_run_kills_a_local_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path(), "hang.sh", "echo $$ > \"$1\"\nsleep 1000\n");
    let pid_file = pids.path().join("pid");
    let p = job_probe(&format!(
        "backend = 'local'\nscript = {}\nargs = [{}]\nworkdir = {}",
        lit(&s),
        lit(&pid_file),
        lit(dir.path())
    ));
    let c = ctx(Duration::from_secs(60));
    tokio::select! {
        o = p.run(&c) => panic!("the job should hang, got {o:?}"),
        _ = read_pid(&pid_file) => {}
    }
    let pid = read_pid(&pid_file).await;
    assert!(eventually(Duration::from_secs(10), || !alive(pid)).await);
}

// ---------------------------------------------------------------------------------------------
// Slurm, for real

/// The partition of the test cluster, or `None` (with a note) when there is none outside CI.
fn slurm() -> Option<String> {
    match std::env::var("GRIDPROBE_TEST_SLURM") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "GRIDPROBE_TEST_SLURM is not set in CI: run `eval \"$(scripts/test-env.sh)\"` first"
        ),
        _ => {
            eprintln!(
                "note: GRIDPROBE_TEST_SLURM is not set; Slurm test not run \
                 (bash scripts/test-env.sh slurm sets up a one-node cluster)"
            );
            None
        }
    }
}

/// A work directory for Slurm jobs: the worker (this machine) must see it.
fn slurm_workdir() -> tempfile::TempDir {
    let base = std::env::temp_dir().join("gridprobe-slurm-tests");
    std::fs::create_dir_all(&base).expect("mkdir");
    tempfile::tempdir_in(base).expect("tempdir")
}

/// The Slurm job id in a result's details.
fn slurm_job_id(o: &Outcome) -> String {
    let start = o.details.find("job ").expect("job id in details") + 4;
    let rest = &o.details[start..];
    rest[..rest.find(' ').unwrap_or(rest.len())].to_string()
}

/// Whether squeue still lists the job as pending or running (queries must work).
fn squeue_lists(id: &str) -> bool {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-j", id, "-o", "%T"])
        .output()
        .expect("run squeue");
    let text = String::from_utf8_lossy(&out.stdout);
    // A job already forgotten is "Invalid job id": not listed.
    out.status.success() && !text.trim().is_empty()
        || !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("Invalid job id")
}

#[tokio::test]
async fn slurm_job_is_submitted_runs_and_succeeds() {
    let Some(partition) = slurm() else { return };
    let dir = slurm_workdir();
    let p = ce_probe(&format!(
        "backend = 'slurm'\nqueue = '{partition}'\npoll_interval = '200ms'\nworkdir = {}",
        lit(dir.path())
    ));
    let o = p.run(&ctx(Duration::from_secs(120))).await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(o.summary.contains("(slurm) completed"), "{}", o.summary);
    for needle in [
        "slurm, partition ",
        "  submitted  as job ",
        "  completed  COMPLETED",
        "exit code 0",
        "--- stdout ---\ngridprobe test job on ",
    ] {
        assert!(
            o.details.contains(needle),
            "missing {needle:?} in\n{}",
            o.details
        );
    }
    assert!(perf(&o, "wall").is_some(), "{:?}", o.perfdata);
    assert!(perf(&o, "cpu").is_some(), "{:?}", o.perfdata);
}

#[tokio::test]
async fn slurm_failing_payload_is_critical_with_its_exit_code() {
    let Some(partition) = slurm() else { return };
    let dir = slurm_workdir();
    let s = script(
        dir.path(),
        "brunel.sh",
        "echo 'Brunel: reading input'\necho 'Segmentation fault (core dumped)' >&2\nexit 139\n",
    );
    let p = job_probe(&format!(
        "backend = 'slurm'\nqueue = '{partition}'\npoll_interval = '200ms'\nscript = {}\n\
         application = 'Brunel'\nforbid_regex = 'Segmentation fault'\nworkdir = {}",
        lit(&s),
        lit(dir.path())
    ));
    let o = p.run(&ctx(Duration::from_secs(120))).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.starts_with(
            "Brunel: exit code 139 (killed by SIGSEGV (11)?), expected exit code 0; \
             output matches forbidden /Segmentation fault/"
        ),
        "{}",
        o.summary
    );
    assert!(o.details.contains("  failed  FAILED"), "{}", o.details);
}

#[tokio::test]
async fn slurm_job_over_its_run_time_is_cancelled_and_leaves_the_queue() {
    let Some(partition) = slurm() else { return };
    let dir = slurm_workdir();
    let s = script(dir.path(), "hang.sh", "echo started\nsleep 600\n");
    let p = job_probe(&format!(
        "backend = 'slurm'\nqueue = '{partition}'\npoll_interval = '200ms'\nscript = {}\n\
         run_timeout = '3s'\nworkdir = {}",
        lit(&s),
        lit(dir.path())
    ));
    let o = p.run(&ctx(Duration::from_secs(120))).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.contains("run phase timed out")
            && o.summary
                .contains("still running after 3s (the run_timeout)")
            && o.summary.contains("cancelled at the batch system"),
        "{}",
        o.summary
    );
    assert!(
        o.details.contains("  cancelled  CANCELLED"),
        "{}",
        o.details
    );
    let id = slurm_job_id(&o);
    assert!(
        eventually(Duration::from_secs(30), || !squeue_lists(&id)).await,
        "job {id} still in the queue"
    );
}

#[tokio::test]
async fn slurm_job_stuck_in_the_queue_warns_then_fails_at_its_limit() {
    let Some(partition) = slurm() else { return };
    let dir = slurm_workdir();
    // A held job stays pending (Reason=JobHeldUser): a queue that does not move.
    let common = format!(
        "backend = 'slurm'\nqueue = '{partition}'\npoll_interval = '200ms'\n\
         submit_args = ['--hold']\nworkdir = {}",
        lit(dir.path())
    );

    // The probe's timeout comes first: WARNING, and the job is cancelled.
    let o = ce_probe(&common).run(&ctx(Duration::from_secs(4))).await;
    assert_eq!(o.status, Status::Warning, "{o:?}");
    assert!(o.summary.starts_with("queued "), "{}", o.summary);
    assert!(
        o.summary.contains("(JobHeldUser)")
            && o.summary.contains("still pending at the probe's timeout"),
        "{}",
        o.summary
    );
    let id = slurm_job_id(&o);
    assert!(eventually(Duration::from_secs(30), || !squeue_lists(&id)).await);

    // Its queue-wait limit comes first: CRITICAL.
    let o = ce_probe(&format!("{common}\nqueue_timeout = '2s'"))
        .run(&ctx(Duration::from_secs(60)))
        .await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.starts_with("queue phase timed out: job ")
            && o.summary.contains("over the 2s limit"),
        "{}",
        o.summary
    );
    assert!(
        o.details.contains("  pending  PENDING: JobHeldUser"),
        "{}",
        o.details
    );
    let id = slurm_job_id(&o);
    assert!(eventually(Duration::from_secs(30), || !squeue_lists(&id)).await);
}

#[tokio::test]
async fn slurm_unknown_partition_is_critical_with_what_slurm_said() {
    let Some(_) = slurm() else { return };
    let dir = slurm_workdir();
    let p = ce_probe(&format!(
        "backend = 'slurm'\nqueue = 'nosuchpartition'\nworkdir = {}",
        lit(dir.path())
    ));
    let o = p.run(&ctx(Duration::from_secs(60))).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("submission to slurm failed: `sbatch` failed (exit code 1): ")
            && o.summary.contains("Invalid partition name specified"),
        "{}",
        o.summary
    );
}

/// The batch system down: the commands are pointed (SLURM_CONF) at a copy of the cluster's
/// configuration whose controller port nothing listens on. Stopping the real slurmctld instead
/// would break the other Slurm tests running at the same time.
#[tokio::test]
async fn slurm_controller_down_is_critical_with_the_commands_stderr() {
    let Some(partition) = slurm() else { return };
    let conf = std::env::var("SLURM_CONF").unwrap_or_else(|_| "/etc/slurm/slurm.conf".into());
    let text = std::fs::read_to_string(&conf).expect("read slurm.conf");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let down: String = std::iter::once(format!("SlurmctldPort={closed}"))
        .chain(
            text.lines()
                .filter(|l| !l.trim_start().starts_with("SlurmctldPort"))
                .map(str::to_string),
        )
        .collect::<Vec<_>>()
        .join("\n");
    let dir = slurm_workdir();
    let down_conf = dir.path().join("down.conf");
    std::fs::write(&down_conf, down).expect("write conf");
    let p = ce_probe(&format!(
        "backend = 'slurm'\nqueue = '{partition}'\nbackend_env = {{ SLURM_CONF = {} }}\n\
         workdir = {}",
        lit(&down_conf),
        lit(dir.path())
    ));
    let o = p.run(&ctx(Duration::from_secs(60))).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary
            .starts_with("submission to slurm failed: `sbatch` failed (exit code 1): ")
            && o.summary.contains("Unable to contact slurm controller"),
        "{}",
        o.summary
    );
}

// ---------------------------------------------------------------------------------------------
// HTCondor, through stand-in commands (there is no HTCondor package to run a real pool)

/// Stand-in condor_* commands: condor_submit runs the wrapper at once (as a one-slot pool
/// would), condor_q shows the job idle, then running, then no more; condor_history has its
/// end. `FAKE_CONDOR` (the state directory) and `FAKE_MODE` come through `backend_env`.
fn fake_condor(bin: &Path) {
    script(
        bin,
        "condor_submit",
        r#"echo "$*" > "$FAKE_CONDOR/submit_args"
sub=$(eval echo \${$#})
cp "$sub" "$FAKE_CONDOR/submitted.sub"
if [ "$FAKE_MODE" = refuse ]; then
    echo "ERROR: Can't find address of local schedd" >&2
    exit 1
fi
dir=$(sed -n 's/^initialdir *= *//p' "$sub")
(cd "$dir" && /bin/sh gridprobe-job.sh > gridprobe-job.out 2> gridprobe-job.err)
echo $? > "$FAKE_CONDOR/exit"
echo 0 > "$FAKE_CONDOR/polls"
echo "4711.0 - 4711.0"
"#,
    );
    script(
        bin,
        "condor_q",
        r#"n=$(cat "$FAKE_CONDOR/polls"); echo $((n + 1)) > "$FAKE_CONDOR/polls"
[ -e "$FAKE_CONDOR/removed" ] && exit 0
if [ "$FAKE_MODE" = held ]; then
    printf '[\n{\n  "ClusterId": 4711,\n  "HoldReason": "Error from slot1@wn01: SHADOW at 10.0.0.1 failed to send file(s)",\n  "JobStatus": 5,\n  "ProcId": 0\n}\n]\n'
    exit 0
fi
case $n in
  0) printf '[\n{\n  "ClusterId": 4711,\n  "JobStatus": 1,\n  "ProcId": 0,\n  "QDate": 1764081990\n}\n]\n' ;;
  1) printf '[\n{\n  "ClusterId": 4711,\n  "JobStatus": 2,\n  "ProcId": 0,\n  "RemoteHost": "slot1@wn01.example.org",\n  "ResidentSetSize_RAW": 2048\n}\n]\n' ;;
  *) ;;
esac
"#,
    );
    script(
        bin,
        "condor_history",
        r#"code=$(cat "$FAKE_CONDOR/exit")
printf '[\n{\n  "ClusterId": 4711,\n  "ExitBySignal": false,\n  "ExitCode": %s,\n  "JobStatus": 4,\n  "LastRemoteHost": "slot1@wn01.example.org",\n  "ProcId": 0,\n  "RemoteSysCpu": 0.5,\n  "RemoteUserCpu": 1.5,\n  "RemoteWallClockTime": 4.0,\n  "ResidentSetSize_RAW": 10240\n}\n]\n' "$code"
"#,
    );
    script(
        bin,
        "condor_rm",
        "echo \"$*\" >> \"$FAKE_CONDOR/rm_args\"\ntouch \"$FAKE_CONDOR/removed\"\necho \"All jobs matching constraint have been marked for removal\"\n",
    );
}

fn condor_params(bin: &Path, state: &Path, work: &Path, mode: &str) -> String {
    format!(
        "backend = 'htcondor'\nbin_dir = {}\npoll_interval = '100ms'\nworkdir = {}\n\
         backend_env = {{ FAKE_CONDOR = {}, FAKE_MODE = '{mode}' }}",
        lit(bin),
        lit(work),
        lit(state)
    )
}

#[tokio::test]
async fn htcondor_flow_through_stand_in_commands() {
    let (bin, state, work) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    fake_condor(bin.path());
    let p = ce_probe(&condor_params(bin.path(), state.path(), work.path(), "ok"));
    let o = p.run(&ctx(Duration::from_secs(30))).await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(
        o.summary.starts_with("job 4711.0 (htcondor) completed"),
        "{}",
        o.summary
    );
    for needle in [
        "  pending  JobStatus 1 (idle)",
        "  running  JobStatus 2 (running) on wn01.example.org",
        "  completed  JobStatus 4 (completed) on wn01.example.org, exit code 0",
        "wall 4.000 s, CPU 2.000 s, CPU efficiency 50 %, peak memory 10.0 MiB",
        "--- stdout ---\ngridprobe test job on ",
    ] {
        assert!(
            o.details.contains(needle),
            "missing {needle:?} in\n{}",
            o.details
        );
    }
    assert_eq!(perf(&o, "peak_memory"), Some(10_485_760.0));
    let sub = std::fs::read_to_string(state.path().join("submitted.sub")).expect("sub file");
    assert!(
        sub.contains("transfer_input_files    = gridprobe-payload.sh\n"),
        "{sub}"
    );
    let args = std::fs::read_to_string(state.path().join("submit_args")).expect("args");
    assert!(args.starts_with("-terse "), "{args}");
    assert!(!state.path().join("rm_args").exists(), "nothing to remove");
}

#[tokio::test]
async fn htcondor_held_job_is_critical_and_removed() {
    let (bin, state, work) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    fake_condor(bin.path());
    let p = ce_probe(&condor_params(
        bin.path(),
        state.path(),
        work.path(),
        "held",
    ));
    let o = p.run(&ctx(Duration::from_secs(30))).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.starts_with(
            "job 4711.0 (htcondor) was held: Error from slot1@wn01: SHADOW at 10.0.0.1 failed"
        ) && o
            .summary
            .ends_with("job 4711.0 removed at the batch system"),
        "{}",
        o.summary
    );
    let rm = std::fs::read_to_string(state.path().join("rm_args")).expect("condor_rm ran");
    assert_eq!(rm.trim(), "4711.0");
}

#[tokio::test]
async fn htcondor_refused_submission_is_critical_with_stderr() {
    let (bin, state, work) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    fake_condor(bin.path());
    let p = ce_probe(&condor_params(
        bin.path(),
        state.path(),
        work.path(),
        "refuse",
    ));
    let o = p.run(&ctx(Duration::from_secs(30))).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert_eq!(
        o.summary,
        "submission to htcondor failed: `condor_submit` failed (exit code 1): \
         ERROR: Can't find address of local schedd"
    );
}

#[tokio::test]
async fn missing_batch_commands_are_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = tempfile::tempdir().expect("tempdir");
    let p = ce_probe(&format!(
        "backend = 'slurm'\nbin_dir = {}\nworkdir = {}",
        lit(bin.path()),
        lit(dir.path())
    ));
    let o = p.run(&ctx(Duration::from_secs(30))).await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert_eq!(
        o.summary,
        "submission to slurm failed: cannot run `sbatch`: no such file in `bin_dir`"
    );
}
