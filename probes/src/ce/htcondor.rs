//! The `htcondor` backend: `condor_submit`, `condor_q -json`, `condor_history -json`,
//! `condor_rm` and, for a remote schedd, `condor_transfer_data`.
//!
//! * Submission: a submit description in the job's directory (`gridprobe-job.sub`): vanilla
//!   universe, the wrapper as executable, the payload and inputs transferred with it, output
//!   transferred back on exit, the job's unique name as the `GridprobeJob` attribute, and a
//!   `periodic_remove` that ends the job in HTCondor itself once gridprobe's limits are well
//!   past (a crashed gridprobe leaves nothing behind for long). `condor_submit -terse` prints
//!   the job id. With `schedd` the job goes to that schedd (`-remote`, which spools its files)
//!   and its output is fetched back with `condor_transfer_data` at the end.
//! * State: `condor_q -json` while the job is in the queue, `condor_history -json` once it has
//!   left. `JobStatus` 1 idle, 2 running, 3 removed, 4 completed, 5 held, 6 transferring
//!   output, 7 suspended. Accounting from `RemoteWallClockTime`, `RemoteUserCpu`,
//!   `RemoteSysCpu` and `ResidentSetSize_RAW` (KiB).
//! * Cancellation: `condor_rm ID`, or `condor_rm -constraint 'GridprobeJob == "TAG"'` after a
//!   submission that did not answer; a held job is removed too.
//!
//! Not run against a live pool in the tests (Debian has no HTCondor package): the command lines
//! and the parsing of `-json` output are tested, and the whole flow against stand-in commands.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{
    query_deadline, Accounting, Backend, BackendError, Cli, Exit, Handle, JobState, Observed,
    Prepared, STDERR_FILE, STDOUT_FILE, WRAPPER,
};

/// The submit description's file name, in the job's directory.
pub(crate) const SUBMIT_FILE: &str = "gridprobe-job.sub";
/// The job's HTCondor user log.
const LOG_FILE: &str = "gridprobe-job.log";
/// The job attributes asked for.
const ATTRIBUTES: &str = "ClusterId,ProcId,JobStatus,HoldReason,RemoveReason,ExitCode,\
ExitBySignal,ExitSignal,RemoteHost,LastRemoteHost,RemoteWallClockTime,RemoteUserCpu,\
RemoteSysCpu,ResidentSetSize_RAW,QDate,JobStartDate,CompletionDate,EnteredCurrentStatus";
/// Margin added to HTCondor's own limits, so that gridprobe's come first.
const LIMIT_MARGIN: Duration = Duration::from_secs(120);

/// The HTCondor backend for one instance.
#[derive(Debug, Clone)]
pub(crate) struct HtCondor {
    pub cli: Cli,
    /// Remote schedd (`-remote` at submission, `-name` after).
    pub schedd: Option<String>,
    /// Collector (`-pool`).
    pub pool: Option<String>,
    /// Extra `condor_submit` arguments.
    pub submit_args: Vec<String>,
}

impl HtCondor {
    /// `-name SCHEDD -pool POOL`, as set.
    fn target(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(s) = &self.schedd {
            a.extend(["-name".to_string(), s.clone()]);
        }
        if let Some(p) = &self.pool {
            a.extend(["-pool".to_string(), p.clone()]);
        }
        a
    }

    /// The submit description for `job`.
    pub(crate) fn submit_description(&self, job: &Prepared) -> String {
        let mut d = format!(
            "# gridprobe test job {tag}\n\
             universe                = vanilla\n\
             executable              = {WRAPPER}\n\
             initialdir              = {dir}\n\
             output                  = {STDOUT_FILE}\n\
             error                   = {STDERR_FILE}\n\
             log                     = {LOG_FILE}\n\
             should_transfer_files   = YES\n\
             when_to_transfer_output = ON_EXIT\n",
            tag = job.tag,
            dir = job.dir.display(),
        );
        if !job.staged.is_empty() {
            let _ = writeln!(d, "transfer_input_files    = {}", job.staged.join(", "));
        }
        let queue = (job.queue_limit + LIMIT_MARGIN).as_secs();
        let run = (job.run_limit + LIMIT_MARGIN).as_secs();
        let _ = write!(
            d,
            "request_cpus            = 1\n\
             +GridprobeJob           = \"{tag}\"\n\
             # A safety net: HTCondor removes the job itself once gridprobe's limits are past.\n\
             periodic_remove         = (JobStatus == 1 && (time() - QDate) > {queue}) || \
             (JobStatus == 2 && (time() - EnteredCurrentStatus) > {run}) || \
             (JobStatus == 5 && (time() - EnteredCurrentStatus) > {run})\n\
             queue 1\n",
            tag = job.tag,
        );
        d
    }

    /// `condor_submit` arguments.
    pub(crate) fn submit_args(&self, job: &Prepared) -> Vec<String> {
        let mut a = vec!["-terse".to_string()];
        if let Some(s) = &self.schedd {
            a.extend(["-remote".to_string(), s.clone()]);
        }
        if let Some(p) = &self.pool {
            a.extend(["-pool".to_string(), p.clone()]);
        }
        a.extend(self.submit_args.iter().cloned());
        a.push(job.dir.join(SUBMIT_FILE).display().to_string());
        a
    }

    /// `condor_q` arguments for one job.
    pub(crate) fn q_args(&self, id: &str) -> Vec<String> {
        let mut a = self.target();
        a.extend(["-json", "-attributes", ATTRIBUTES].map(String::from));
        a.push(id.to_string());
        a
    }

    /// `condor_history` arguments for one job.
    pub(crate) fn history_args(&self, id: &str) -> Vec<String> {
        let mut a = self.target();
        a.extend(["-json", "-limit", "1", "-attributes", ATTRIBUTES].map(String::from));
        a.push(id.to_string());
        a
    }

    /// `condor_rm` arguments for one job.
    pub(crate) fn rm_args(&self, id: &str) -> Vec<String> {
        let mut a = self.target();
        a.push(id.to_string());
        a
    }

    /// `condor_rm` arguments for any job named `tag`.
    pub(crate) fn rm_tagged_args(&self, tag: &str) -> Vec<String> {
        let mut a = self.target();
        a.extend([
            "-constraint".to_string(),
            format!("GridprobeJob == \"{tag}\""),
        ]);
        a
    }
}

#[async_trait]
impl Backend for HtCondor {
    fn name(&self) -> &'static str {
        "htcondor"
    }

    fn describe(&self) -> String {
        match (&self.schedd, &self.pool) {
            (Some(s), Some(p)) => format!("htcondor, schedd {s}, pool {p}"),
            (Some(s), None) => format!("htcondor, schedd {s}"),
            (None, Some(p)) => format!("htcondor, local schedd, pool {p}"),
            (None, None) => "htcondor, local schedd".to_string(),
        }
    }

    async fn submit(
        &self,
        job: &Prepared,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Box<dyn Handle>, BackendError> {
        let path = job.dir.join(SUBMIT_FILE);
        std::fs::write(&path, self.submit_description(job))
            .map_err(|e| BackendError::Invalid(format!("cannot write {}: {e}", path.display())))?;
        let out = self
            .cli
            .run("condor_submit", &self.submit_args(job), deadline, cancel)
            .await?;
        let id = parse_submit(&out.stdout)?;
        Ok(Box::new(CondorJob {
            backend: self.clone(),
            id,
            live: true,
        }))
    }

    async fn cancel_tagged(&self, tag: &str, deadline: Instant) -> Result<(), BackendError> {
        let never = CancellationToken::new();
        self.cli
            .run("condor_rm", &self.rm_tagged_args(tag), deadline, &never)
            .await
            .map(|_| ())
    }
}

/// The job id from `condor_submit -terse`: `1234.0 - 1234.0`.
pub(crate) fn parse_submit(stdout: &str) -> Result<String, BackendError> {
    let first = stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default();
    let valid = first.split_once('.').is_some_and(|(c, p)| {
        !c.is_empty() && c.chars().chain(p.chars()).all(|ch| ch.is_ascii_digit())
    });
    if !valid {
        return Err(BackendError::Invalid(format!(
            "condor_submit printed no job id: `{}`",
            stdout.trim()
        )));
    }
    Ok(first.to_string())
}

/// The job ads of a `-json` answer: a JSON array of objects, or nothing at all when no job
/// matched.
pub(crate) fn parse_ads(stdout: &str) -> Result<Vec<serde_json::Map<String, Value>>, BackendError> {
    let text = stdout.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(text)
        .map_err(|e| BackendError::Invalid(format!("unreadable -json output: {e}")))?;
    match v {
        Value::Array(items) => Ok(items
            .into_iter()
            .filter_map(|i| match i {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .collect()),
        _ => Err(BackendError::Invalid(
            "-json output is not an array of job ads".to_string(),
        )),
    }
}

/// What one job ad says.
pub(crate) fn observe_ad(ad: &serde_json::Map<String, Value>) -> Observed {
    let num = |k: &str| ad.get(k).and_then(Value::as_f64);
    let text = |k: &str| {
        ad.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let status = num("JobStatus").map(|s| s as i64);
    let (state, word) = match status {
        Some(1) => (JobState::Pending, "idle"),
        Some(2) => (JobState::Running, "running"),
        Some(3) => (JobState::Cancelled, "removed"),
        Some(4) => (JobState::Completed, "completed"),
        Some(5) => (JobState::Held, "held"),
        Some(6) => (JobState::Running, "transferring output"),
        Some(7) => (JobState::Suspended, "suspended"),
        _ => (JobState::Failed, "unknown"),
    };
    let raw = match status {
        Some(s) => format!("JobStatus {s} ({word})"),
        None => "no JobStatus".to_string(),
    };
    let mut o = Observed::state(state, raw);
    o.reason = match o.state {
        JobState::Held => text("HoldReason"),
        JobState::Cancelled => text("RemoveReason"),
        _ => None,
    };
    o.host = text("RemoteHost")
        .or_else(|| text("LastRemoteHost"))
        .map(|h| h.rsplit('@').next().unwrap_or(&h).to_string());
    if o.state == JobState::Completed {
        let by_signal = ad
            .get("ExitBySignal")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        o.exit = Some(if by_signal {
            Exit {
                code: None,
                signal: num("ExitSignal").map(|s| s as i32),
            }
        } else {
            Exit {
                code: num("ExitCode").map(|c| c as i32),
                signal: None,
            }
        });
    }
    let secs = |v: f64| Duration::try_from_secs_f64(v).ok();
    o.acct = Accounting {
        wall: num("RemoteWallClockTime")
            .filter(|w| *w > 0.0)
            .and_then(secs),
        cpu: match (num("RemoteUserCpu"), num("RemoteSysCpu")) {
            (None, None) => None,
            (u, s) => secs(u.unwrap_or(0.0) + s.unwrap_or(0.0)),
        },
        max_rss: num("ResidentSetSize_RAW")
            .filter(|k| *k > 0.0)
            .map(|k| (k * 1024.0) as u64),
    };
    o
}

/// A submitted HTCondor job.
struct CondorJob {
    backend: HtCondor,
    id: String,
    /// May still be alive: dropping the handle removes it.
    live: bool,
}

impl Drop for CondorJob {
    fn drop(&mut self) {
        if self.live {
            tracing::info!(job = %self.id, "htcondor job dropped while alive: condor_rm");
            self.backend
                .cli
                .detach("condor_rm", &self.backend.rm_args(&self.id));
        }
    }
}

#[async_trait]
impl Handle for CondorJob {
    fn id(&self) -> &str {
        &self.id
    }

    async fn poll(
        &mut self,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Observed, BackendError> {
        let deadline = query_deadline(deadline);
        let b = &self.backend;
        let out = b
            .cli
            .run("condor_q", &b.q_args(&self.id), deadline, cancel)
            .await?;
        if let Some(ad) = parse_ads(&out.stdout)?.first() {
            return Ok(observe_ad(ad));
        }
        // Left the queue: its end is in the history.
        let out = b
            .cli
            .run(
                "condor_history",
                &b.history_args(&self.id),
                deadline,
                cancel,
            )
            .await?;
        Ok(match parse_ads(&out.stdout)?.first() {
            Some(ad) => observe_ad(ad),
            None => Observed::state(JobState::Vanished, "in neither condor_q nor condor_history"),
        })
    }

    async fn cancel(&mut self, deadline: Instant) -> Result<(), BackendError> {
        let never = CancellationToken::new();
        let b = &self.backend;
        b.cli
            .run("condor_rm", &b.rm_args(&self.id), deadline, &never)
            .await?;
        self.live = false;
        Ok(())
    }

    async fn finish(&mut self, deadline: Instant, _acct: &mut Accounting, notes: &mut Vec<String>) {
        let b = &self.backend;
        if b.schedd.is_none() {
            return;
        }
        // Spooled job: fetch its output, then let it leave the queue.
        let never = CancellationToken::new();
        if let Err(e) = b
            .cli
            .run(
                "condor_transfer_data",
                &b.rm_args(&self.id),
                deadline,
                &never,
            )
            .await
        {
            notes.push(format!("cannot fetch the job's output: {e}"));
        }
        if let Err(e) = b
            .cli
            .run("condor_rm", &b.rm_args(&self.id), deadline, &never)
            .await
        {
            notes.push(format!(
                "cannot remove the finished job from the queue: {e}"
            ));
        }
    }

    fn settle(&mut self) {
        self.live = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn backend(schedd: Option<&str>, pool: Option<&str>) -> HtCondor {
        HtCondor {
            cli: Cli::default(),
            schedd: schedd.map(String::from),
            pool: pool.map(String::from),
            submit_args: vec!["-append".into(), "+AccountingGroup = \"lhcb\"".into()],
        }
    }

    fn job() -> Prepared {
        Prepared {
            tag: "gridprobe-CE-job-ce01-1".into(),
            dir: PathBuf::from("/jobs/gridprobe-CE-job-ce01-1"),
            staged: vec!["gauss.sh".into(), "input.dat".into()],
            queue_limit: Duration::from_secs(600),
            run_limit: Duration::from_secs(300),
        }
    }

    /// `condor_q -json` for a running job, as HTCondor 10 prints it.
    const Q_RUNNING: &str = r#"[
{
  "ClusterId": 4711,
  "EnteredCurrentStatus": 1764081993,
  "JobStatus": 2,
  "ProcId": 0,
  "QDate": 1764081990,
  "RemoteHost": "slot1_1@wn042.example.org",
  "RemoteSysCpu": 0.0,
  "RemoteUserCpu": 0.0,
  "RemoteWallClockTime": 0.0,
  "ResidentSetSize_RAW": 1048
}
]
"#;

    /// `condor_q -json` for an idle job.
    const Q_IDLE: &str = r#"[
{
  "ClusterId": 4711,
  "EnteredCurrentStatus": 1764081990,
  "JobStatus": 1,
  "ProcId": 0,
  "QDate": 1764081990
}
]
"#;

    /// `condor_q -json` for a held job.
    const Q_HELD: &str = r#"[
{
  "ClusterId": 4711,
  "EnteredCurrentStatus": 1764082001,
  "HoldReason": "Error from slot1@wn042.example.org: Failed to execute '/var/lib/condor/execute/dir_1/gridprobe-job.sh': (errno=8: 'Exec format error')",
  "JobStatus": 5,
  "ProcId": 0,
  "QDate": 1764081990
}
]
"#;

    /// `condor_history -json -limit 1` for a completed job.
    const HISTORY_DONE: &str = r#"[
{
  "ClusterId": 4711,
  "CompletionDate": 1764082010,
  "EnteredCurrentStatus": 1764082010,
  "ExitBySignal": false,
  "ExitCode": 3,
  "JobStartDate": 1764081993,
  "JobStatus": 4,
  "LastRemoteHost": "slot1_1@wn042.example.org",
  "ProcId": 0,
  "QDate": 1764081990,
  "RemoteSysCpu": 0.25,
  "RemoteUserCpu": 12.5,
  "RemoteWallClockTime": 17.0,
  "ResidentSetSize_RAW": 204800
}
]
"#;

    /// `condor_history -json` for a job killed by a signal.
    const HISTORY_SIGNAL: &str = r#"[
{
  "ClusterId": 4712,
  "ExitBySignal": true,
  "ExitSignal": 11,
  "JobStatus": 4,
  "ProcId": 0,
  "RemoteWallClockTime": 2.0
}
]
"#;

    #[test]
    fn submit_description_names_files_transfers_and_safety_net() {
        let d = backend(None, None).submit_description(&job());
        for line in [
            "universe                = vanilla\n",
            "executable              = gridprobe-job.sh\n",
            "initialdir              = /jobs/gridprobe-CE-job-ce01-1\n",
            "output                  = gridprobe-job.out\n",
            "error                   = gridprobe-job.err\n",
            "should_transfer_files   = YES\n",
            "when_to_transfer_output = ON_EXIT\n",
            "transfer_input_files    = gauss.sh, input.dat\n",
            "+GridprobeJob           = \"gridprobe-CE-job-ce01-1\"\n",
            "periodic_remove         = (JobStatus == 1 && (time() - QDate) > 720) || \
             (JobStatus == 2 && (time() - EnteredCurrentStatus) > 420) || \
             (JobStatus == 5 && (time() - EnteredCurrentStatus) > 420)\n",
        ] {
            assert!(d.contains(line), "missing {line:?} in\n{d}");
        }
        assert!(d.ends_with("queue 1\n"), "{d}");
    }

    #[test]
    fn command_lines_for_local_and_remote_schedds() {
        let local = backend(None, None);
        assert_eq!(
            local.submit_args(&job()),
            [
                "-terse",
                "-append",
                "+AccountingGroup = \"lhcb\"",
                "/jobs/gridprobe-CE-job-ce01-1/gridprobe-job.sub"
            ]
        );
        assert_eq!(
            local.q_args("4711.0"),
            ["-json", "-attributes", ATTRIBUTES, "4711.0"]
        );
        assert_eq!(local.rm_args("4711.0"), ["4711.0"]);

        let ce = backend(Some("ce01.example.org"), Some("ce01.example.org:9619"));
        assert_eq!(
            &ce.submit_args(&job())[..5],
            [
                "-terse",
                "-remote",
                "ce01.example.org",
                "-pool",
                "ce01.example.org:9619"
            ]
        );
        assert_eq!(
            ce.history_args("4711.0"),
            [
                "-name",
                "ce01.example.org",
                "-pool",
                "ce01.example.org:9619",
                "-json",
                "-limit",
                "1",
                "-attributes",
                ATTRIBUTES,
                "4711.0"
            ]
        );
        assert_eq!(
            ce.rm_tagged_args("gridprobe-x"),
            [
                "-name",
                "ce01.example.org",
                "-pool",
                "ce01.example.org:9619",
                "-constraint",
                "GridprobeJob == \"gridprobe-x\""
            ]
        );
    }

    #[test]
    fn parses_submit_output() {
        assert_eq!(
            parse_submit("4711.0 - 4711.0\n").ok().as_deref(),
            Some("4711.0")
        );
        assert!(parse_submit("ERROR: Can't find address of local schedd\n").is_err());
        assert!(parse_submit("").is_err());
    }

    #[test]
    fn parses_json_ads_through_the_states() {
        assert!(parse_ads("").expect("empty").is_empty());
        assert!(parse_ads("[]\n").expect("empty array").is_empty());
        assert!(parse_ads("-- Schedd: x").is_err());

        let idle = observe_ad(&parse_ads(Q_IDLE).expect("json")[0]);
        assert_eq!(idle.state, JobState::Pending);
        assert_eq!(idle.raw, "JobStatus 1 (idle)");

        let running = observe_ad(&parse_ads(Q_RUNNING).expect("json")[0]);
        assert_eq!(running.state, JobState::Running);
        assert_eq!(running.host.as_deref(), Some("wn042.example.org"));
        assert_eq!(running.acct.wall, None);
        assert_eq!(running.acct.max_rss, Some(1048 * 1024));

        let held = observe_ad(&parse_ads(Q_HELD).expect("json")[0]);
        assert_eq!(held.state, JobState::Held);
        assert!(held
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("Exec format error")));

        let done = observe_ad(&parse_ads(HISTORY_DONE).expect("json")[0]);
        assert_eq!(done.state, JobState::Completed);
        assert_eq!(
            done.exit,
            Some(Exit {
                code: Some(3),
                signal: None
            })
        );
        assert_eq!(done.acct.wall, Some(Duration::from_secs(17)));
        assert_eq!(done.acct.cpu, Some(Duration::from_millis(12_750)));
        assert_eq!(done.acct.max_rss, Some(204_800 * 1024));
        assert_eq!(done.host.as_deref(), Some("wn042.example.org"));

        let killed = observe_ad(&parse_ads(HISTORY_SIGNAL).expect("json")[0]);
        assert_eq!(
            killed.exit,
            Some(Exit {
                code: None,
                signal: Some(11)
            })
        );
    }
}
