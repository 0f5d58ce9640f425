//! The `slurm` backend: `sbatch`, `squeue`, `sstat`, `scontrol`, `sacct` and `scancel`.
//!
//! * Submission: `sbatch --parsable` with the job's unique name, its directory (`--chdir`, which
//!   must be on a file system the worker sees), its output files, `--no-requeue`, and limits of
//!   Slurm's own (`--time`, `--deadline`) so that a job outlives a crashed gridprobe by minutes.
//! * State: `squeue --states=all` (finished jobs stay listed for `MinJobAge`); while the job
//!   runs, `sstat` samples its memory; at its end `scontrol show job` gives the exit code and
//!   the run time.
//! * Accounting: `sacct` when the cluster has an accounting database (TotalCPU, MaxRSS,
//!   Elapsed). Without one (`accounting_storage/none`), the CPU time comes from the job's
//!   wrapper and the peak memory from the `sstat` samples, and the details say so.
//! * Cancellation: `scancel ID`, or `scancel --name=TAG` after a submission that did not answer;
//!   a handle dropped while its job may run starts `scancel` on its way out.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{
    query_deadline, Accounting, Backend, BackendError, Cli, Exit, Handle, JobState, Observed,
    Prepared, STDERR_FILE, STDOUT_FILE, WRAPPER,
};

/// The Slurm backend for one instance.
#[derive(Debug, Clone)]
pub(crate) struct Slurm {
    pub cli: Cli,
    /// `--partition`, when set.
    pub partition: Option<String>,
    /// Extra `sbatch` arguments.
    pub submit_args: Vec<String>,
}

/// Margin added to Slurm's own limits, so that gridprobe's come first.
const LIMIT_MARGIN: Duration = Duration::from_secs(120);

impl Slurm {
    /// The `sbatch` arguments for `job`.
    pub(crate) fn sbatch_args(&self, job: &Prepared) -> Vec<String> {
        let dir = job.dir.display();
        // Whole minutes, rounded up, plus a margin: Slurm's `--time` is a safety net only.
        let minutes = (job.run_limit + LIMIT_MARGIN).as_secs().div_ceil(60).max(1);
        let deadline = job.queue_limit + job.run_limit + 2 * LIMIT_MARGIN;
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", job.tag),
            format!("--chdir={dir}"),
            format!("--output={dir}/{STDOUT_FILE}"),
            format!("--error={dir}/{STDERR_FILE}"),
            "--ntasks=1".to_string(),
            "--no-requeue".to_string(),
            format!("--time={minutes}"),
            format!("--deadline=now+{}", deadline.as_secs()),
        ];
        if let Some(p) = &self.partition {
            args.push(format!("--partition={p}"));
        }
        args.extend(self.submit_args.iter().cloned());
        args.push(format!("{dir}/{WRAPPER}"));
        args
    }
}

#[async_trait]
impl Backend for Slurm {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn describe(&self) -> String {
        match &self.partition {
            Some(p) => format!("slurm, partition {p}"),
            None => "slurm, default partition".to_string(),
        }
    }

    async fn submit(
        &self,
        job: &Prepared,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Box<dyn Handle>, BackendError> {
        let out = self
            .cli
            .run("sbatch", &self.sbatch_args(job), deadline, cancel)
            .await?;
        let id = parse_sbatch(&out.stdout)?;
        Ok(Box::new(SlurmJob {
            cli: self.cli.clone(),
            id,
            live: true,
            sstat_note: None,
            max_rss: None,
        }))
    }

    async fn cancel_tagged(&self, tag: &str, deadline: Instant) -> Result<(), BackendError> {
        let never = CancellationToken::new();
        self.cli
            .run("scancel", &[format!("--name={tag}")], deadline, &never)
            .await
            .map(|_| ())
    }
}

/// The job id from `sbatch --parsable`: `123` or `123;cluster`.
pub(crate) fn parse_sbatch(stdout: &str) -> Result<String, BackendError> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty());
    let id = line.and_then(|l| l.split(';').next()).unwrap_or_default();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return Err(BackendError::Invalid(format!(
            "sbatch printed no job id: `{}`",
            stdout.trim()
        )));
    }
    Ok(id.to_string())
}

/// A submitted Slurm job.
struct SlurmJob {
    cli: Cli,
    id: String,
    /// May still be alive at the batch system: dropping the handle cancels it.
    live: bool,
    /// Why `sstat` gave nothing, once.
    sstat_note: Option<String>,
    /// Largest `sstat` MaxRSS seen.
    max_rss: Option<u64>,
}

impl Drop for SlurmJob {
    fn drop(&mut self) {
        if self.live {
            tracing::info!(job = %self.id, "slurm job dropped while alive: scancel");
            self.cli.detach("scancel", std::slice::from_ref(&self.id));
        }
    }
}

impl SlurmJob {
    /// `scontrol show job -o`: exit code, run time, state and reason of a job still in memory.
    async fn scontrol(
        &self,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Vec<(String, String)>, BackendError> {
        let args = ["show", "job", "-o", &self.id].map(String::from);
        let out = self.cli.run("scontrol", &args, deadline, cancel).await?;
        Ok(parse_key_values(&out.stdout))
    }

    /// `sacct` for the job: its final state and accounting, when the cluster has a database.
    async fn sacct(
        &self,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Option<Sacct>, BackendError> {
        let args = [
            "-n",
            "-P",
            "-j",
            &self.id,
            "--format=JobID,State,ExitCode,Elapsed,TotalCPU,MaxRSS",
        ]
        .map(String::from);
        let out = self.cli.run("sacct", &args, deadline, cancel).await?;
        Ok(parse_sacct(&out.stdout, &self.id))
    }

    /// Samples the running job's memory with `sstat`.
    async fn sample(&mut self, deadline: Instant, cancel: &CancellationToken) {
        let args = [
            "-n",
            "-P",
            "-j",
            &format!("{}.batch", self.id),
            "--format=MaxRSS",
        ]
        .map(String::from);
        match self.cli.run("sstat", &args, deadline, cancel).await {
            Ok(out) => {
                if let Some(rss) = out.stdout.lines().filter_map(parse_memory).max() {
                    self.max_rss = Some(self.max_rss.map_or(rss, |m| m.max(rss)));
                }
            }
            Err(e) => {
                if self.sstat_note.is_none() {
                    self.sstat_note = Some(format!("sstat: {e}"));
                }
            }
        }
    }
}

#[async_trait]
impl Handle for SlurmJob {
    fn id(&self) -> &str {
        &self.id
    }

    async fn poll(
        &mut self,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Observed, BackendError> {
        let deadline = query_deadline(deadline);
        let args = ["-h", "-j", &self.id, "--states=all", "--format=%T|%r|%N|%M"].map(String::from);
        let listed = match self.cli.run("squeue", &args, deadline, cancel).await {
            Ok(out) => parse_squeue(&out.stdout),
            // The controller forgot the job (MinJobAge passed): not an error of the query.
            Err(BackendError::Failed { said, .. }) if said.contains("Invalid job id") => None,
            Err(e) => return Err(e),
        };
        let Some(mut o) = listed else {
            // Gone from the controller's memory: only the accounting database knows its end.
            return match self.sacct(deadline, cancel).await {
                Ok(Some(s)) => Ok(s.observed()),
                _ => Ok(Observed::state(
                    JobState::Vanished,
                    "no longer listed by squeue, unknown to sacct",
                )),
            };
        };
        if o.state.is_final() {
            // Exit code and run time are in the controller's record of the job.
            if let Ok(kv) = self.scontrol(deadline, cancel).await {
                let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v);
                o.exit = get("ExitCode").and_then(|v| parse_exit(v));
                if let Some(rt) = get("RunTime").and_then(|v| parse_duration(v)) {
                    o.acct.wall = Some(rt);
                }
            }
        } else if o.state == JobState::Running {
            self.sample(deadline, cancel).await;
        }
        o.acct.max_rss = self.max_rss;
        Ok(o)
    }

    async fn cancel(&mut self, deadline: Instant) -> Result<(), BackendError> {
        let never = CancellationToken::new();
        self.cli
            .run("scancel", std::slice::from_ref(&self.id), deadline, &never)
            .await?;
        self.live = false;
        Ok(())
    }

    async fn finish(&mut self, deadline: Instant, acct: &mut Accounting, notes: &mut Vec<String>) {
        let never = CancellationToken::new();
        match self.sacct(deadline, &never).await {
            Ok(Some(s)) => acct.merge(&s.acct),
            Ok(None) => notes.push(format!("sacct knows nothing of job {}", self.id)),
            Err(e) => {
                let mut note = format!(
                    "no Slurm accounting ({e}): the CPU time is measured by the job's wrapper"
                );
                if self.max_rss.is_some() {
                    note.push_str(", the peak memory sampled by sstat while the job ran");
                }
                notes.push(note);
            }
        }
        if acct.max_rss.is_none() {
            if let Some(n) = self.sstat_note.take() {
                notes.push(n);
            }
        }
    }

    fn settle(&mut self) {
        self.live = false;
    }
}

/// Slurm's job state names mapped to gridprobe's.
pub(crate) fn slurm_state(raw: &str) -> JobState {
    // sacct writes "CANCELLED by 0".
    match raw.split_whitespace().next().unwrap_or_default() {
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
            JobState::Pending
        }
        "CONFIGURING" | "RUNNING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" | "RESIZING" => {
            JobState::Running
        }
        "SUSPENDED" | "STOPPED" => JobState::Suspended,
        "COMPLETED" => JobState::Completed,
        "CANCELLED" | "REVOKED" => JobState::Cancelled,
        "TIMEOUT" | "DEADLINE" => JobState::LimitReached,
        "OUT_OF_MEMORY" => JobState::OutOfMemory,
        "NODE_FAIL" | "BOOT_FAIL" => JobState::NodeFailed,
        "PREEMPTED" => JobState::Preempted,
        // FAILED, SPECIAL_EXIT and anything newer.
        _ => JobState::Failed,
    }
}

/// One line of `squeue --format=%T|%r|%N|%M`, or `None` when the job is not listed.
pub(crate) fn parse_squeue(stdout: &str) -> Option<Observed> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut f = line.split('|');
    let raw = f.next()?.trim().to_string();
    let reason = f
        .next()
        .map(str::trim)
        .filter(|r| !r.is_empty() && *r != "None" && *r != "(null)")
        .map(str::to_string);
    let node = f
        .next()
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != "(null)")
        .map(str::to_string);
    let used = f.next().and_then(parse_duration);
    let mut o = Observed::state(slurm_state(&raw), raw);
    o.reason = reason;
    o.host = node;
    if o.state.is_final() || o.state == JobState::Running {
        o.acct.wall = used;
    }
    Some(o)
}

/// `key=value` pairs of a one-line `scontrol -o` record.
pub(crate) fn parse_key_values(text: &str) -> Vec<(String, String)> {
    text.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `ExitCode=2:0` (exit code, signal).
pub(crate) fn parse_exit(text: &str) -> Option<Exit> {
    let (code, signal) = text.trim().split_once(':')?;
    Some(Exit {
        code: code.parse().ok(),
        signal: signal.parse().ok().filter(|s| *s != 0),
    })
}

/// A Slurm duration: `[D-]HH:MM:SS[.mmm]`, `MM:SS[.mmm]`, `M:SS`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() || matches!(text, "INVALID" | "UNLIMITED" | "N/A") {
        return None;
    }
    let (days, rest) = match text.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, text),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (h, m, s) = match parts.as_slice() {
        [h, m, s] => (h.parse::<u64>().ok()?, m.parse::<u64>().ok()?, *s),
        [m, s] => (0, m.parse::<u64>().ok()?, *s),
        [s] => (0, 0, *s),
        _ => return None,
    };
    let secs: f64 = s.parse().ok()?;
    let whole = days * 86_400 + h * 3600 + m * 60;
    Duration::try_from_secs_f64(whole as f64 + secs).ok()
}

/// Slurm memory (`22956K`, `1.5M`, `2G`; no suffix: KiB, Slurm's unit for RSS) in bytes.
pub(crate) fn parse_memory(text: &str) -> Option<u64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let (num, mult) = match t.chars().last()? {
        'K' | 'k' => (&t[..t.len() - 1], 1u64 << 10),
        'M' | 'm' => (&t[..t.len() - 1], 1 << 20),
        'G' | 'g' => (&t[..t.len() - 1], 1 << 30),
        'T' | 't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1 << 10),
    };
    let v: f64 = num.parse().ok()?;
    (v >= 0.0).then_some((v * mult as f64) as u64)
}

/// What `sacct` says of a job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sacct {
    pub state: String,
    pub exit: Option<Exit>,
    pub acct: Accounting,
}

impl Sacct {
    fn observed(&self) -> Observed {
        let mut o = Observed::state(slurm_state(&self.state), self.state.clone());
        o.exit = self.exit;
        o.acct = self.acct;
        o
    }
}

/// `sacct -n -P --format=JobID,State,ExitCode,Elapsed,TotalCPU,MaxRSS`: the job's own line
/// gives the state, exit code, elapsed and total CPU; its steps (`ID.batch`) the memory.
pub(crate) fn parse_sacct(stdout: &str, id: &str) -> Option<Sacct> {
    let mut found: Option<Sacct> = None;
    let mut max_rss: Option<u64> = None;
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        let [job, state, exit, elapsed, cpu, rss, ..] = f.as_slice() else {
            continue;
        };
        if let Some(m) = parse_memory(rss) {
            max_rss = Some(max_rss.map_or(m, |x| x.max(m)));
        }
        if *job == id {
            found = Some(Sacct {
                state: state.to_string(),
                exit: parse_exit(exit),
                acct: Accounting {
                    wall: parse_duration(elapsed),
                    cpu: parse_duration(cpu),
                    max_rss: None,
                },
            });
        }
    }
    let mut s = found?;
    s.acct.max_rss = max_rss;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn sbatch_command_line_carries_name_dir_output_and_limits() {
        let s = Slurm {
            cli: Cli::default(),
            partition: Some("debug".into()),
            submit_args: vec!["--account=lhcb".into()],
        };
        let job = Prepared {
            tag: "gridprobe-x".into(),
            dir: PathBuf::from("/jobs/gridprobe-x"),
            staged: vec![],
            queue_limit: Duration::from_secs(600),
            run_limit: Duration::from_secs(300),
        };
        assert_eq!(
            s.sbatch_args(&job),
            [
                "--parsable",
                "--job-name=gridprobe-x",
                "--chdir=/jobs/gridprobe-x",
                "--output=/jobs/gridprobe-x/gridprobe-job.out",
                "--error=/jobs/gridprobe-x/gridprobe-job.err",
                "--ntasks=1",
                "--no-requeue",
                "--time=7",
                "--deadline=now+1140",
                "--partition=debug",
                "--account=lhcb",
                "/jobs/gridprobe-x/gridprobe-job.sh",
            ]
        );
    }

    #[test]
    fn parses_sbatch_squeue_scontrol_and_sacct() {
        assert_eq!(parse_sbatch("1234\n").ok().as_deref(), Some("1234"));
        assert_eq!(parse_sbatch("77;cluster2\n").ok().as_deref(), Some("77"));
        assert!(parse_sbatch("Submitted batch job 5\n").is_err());

        let o = parse_squeue("PENDING|Priority||0:00\n").expect("listed");
        assert_eq!(o.state, JobState::Pending);
        assert_eq!(o.reason.as_deref(), Some("Priority"));
        assert_eq!(o.host, None);
        let o = parse_squeue("RUNNING|None|vm|1:05\n").expect("listed");
        assert_eq!(o.state, JobState::Running);
        assert_eq!(o.host.as_deref(), Some("vm"));
        assert_eq!(o.acct.wall, Some(Duration::from_secs(65)));
        assert!(parse_squeue("").is_none());
        assert_eq!(
            parse_squeue("CANCELLED|None|vm|0:03").map(|o| o.state),
            Some(JobState::Cancelled)
        );

        let kv = parse_key_values(
            "JobId=1 JobState=FAILED Reason=NonZeroExitCode ExitCode=2:0 RunTime=00:00:01",
        );
        let exit = kv
            .iter()
            .find(|(k, _)| k == "ExitCode")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            exit.and_then(parse_exit),
            Some(Exit {
                code: Some(2),
                signal: None
            })
        );
        assert_eq!(
            parse_exit("0:9"),
            Some(Exit {
                code: Some(0),
                signal: Some(9)
            })
        );

        let s = parse_sacct(
            "17|COMPLETED|0:0|00:00:03|00:01.500|\n17.batch|COMPLETED|0:0|00:00:03|00:01.500|22956K\n17.extern|COMPLETED|0:0|00:00:03|00:00:00|1024K\n",
            "17",
        )
        .expect("job line");
        assert_eq!(s.state, "COMPLETED");
        assert_eq!(s.acct.wall, Some(Duration::from_secs(3)));
        assert_eq!(s.acct.cpu, Some(Duration::from_millis(1500)));
        assert_eq!(s.acct.max_rss, Some(22956 * 1024));
        assert_eq!(slurm_state("CANCELLED by 0"), JobState::Cancelled);
        assert!(parse_sacct("", "17").is_none());
    }

    #[test]
    fn slurm_durations_and_memory() {
        assert_eq!(parse_duration("0:01"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("01:02:03"), Some(Duration::from_secs(3723)));
        assert_eq!(
            parse_duration("1-00:00:10"),
            Some(Duration::from_secs(86_410))
        );
        assert_eq!(parse_duration("00:00.010"), Some(Duration::from_millis(10)));
        assert_eq!(parse_duration("INVALID"), None);
        assert_eq!(parse_memory("1.5M"), Some(1_572_864));
        assert_eq!(parse_memory("2G"), Some(2 << 30));
        assert_eq!(parse_memory("0"), Some(0));
        assert_eq!(parse_memory(""), None);
    }
}
