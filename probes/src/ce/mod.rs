//! `ce` probe kind: submits a small test job to the site's batch system and follows it through
//! its states to the end, as SAM's CE job-submission tests did.
//!
//! The batch system is reached through a [`Backend`]: `slurm` (`sbatch`, `squeue`, `sstat`,
//! `scontrol`, `sacct`), `htcondor` (`condor_submit`, `condor_q`, `condor_history` with `-json`,
//! `condor_rm`) or `local` (the job runs as a child process of gridprobe, in its own process
//! group: for laptops and the demo). The `job` kind runs experiment payloads through the same
//! machinery ([`run_job`]).
//!
//! One run:
//!
//! 1. a work directory is made under `workdir`: the payload (staged script or inline text), the
//!    staged input files and a small wrapper script (`gridprobe-job.sh`) that sets the payload's
//!    environment, runs it and records its CPU time (`times`), for batch systems that do not
//!    account it;
//! 2. **submit** phase, bounded by `submit_timeout`: the backend submits the wrapper;
//! 3. **queue** phase, bounded by `queue_timeout`, then **run** phase, bounded by `run_timeout`:
//!    the job's state is polled every `poll_interval`; each change is recorded with its time;
//! 4. at the end of a phase, at the probe's deadline or on cancellation the job is cancelled at
//!    the batch system (`scancel`, `condor_rm`, a kill of the process group) and the result says
//!    which phase ran out. A submit that did not answer is cleaned up by the job's unique name.
//!    Dropping the run half-way cancels the job too (a drop guard), and each batch job carries a
//!    limit of its own (Slurm `--time` and `--deadline`, an HTCondor `periodic_remove`) so that
//!    a job outlives a crashed gridprobe by minutes, not forever;
//! 5. after a final state: accounting (wall time, CPU time, peak memory) from the batch system
//!    where it reports them, the job's output, and the work directory is removed.

mod htcondor;
mod local;
mod slurm;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use gridprobe_config::{Config, Diagnostic, ProbeDef};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use gridprobe_config::time::format_duration;

use crate::kind::{ParamDefault, ParamDoc};
use crate::outcome::{fmt_secs, Outcome, Perfdatum};
use crate::params::{check_template, config_dir, duration_param};
use crate::process::{self, Finished};
use crate::{placeholders, Probe, ProbeContext, SharedProbe, Stop};

/// Config kind name.
pub const NAME: &str = "ce";
/// One-line description.
pub const SUMMARY: &str = "Submits a test job to the site's batch system (slurm, htcondor or \
                           local) and follows it to the end: states with times, exit code, wall \
                           and CPU time, CPU efficiency, peak memory";

/// `backend`.
pub const DOC_BACKEND: ParamDoc = ParamDoc {
    name: "backend",
    ty: "string",
    default: ParamDefault::Required,
    description: "Batch system: \"slurm\" (sbatch, squeue, sstat, scontrol, sacct), \"htcondor\" \
                  (condor_submit, condor_q, condor_history, condor_rm) or \"local\" (the job runs \
                  as a child process of gridprobe, for laptops and demos)",
};
/// `queue`.
pub const DOC_QUEUE: ParamDoc = ParamDoc {
    name: "queue",
    ty: "string",
    default: ParamDefault::Value("the cluster's default partition"),
    description: "slurm only: the partition to submit to; placeholders allowed, e.g. \"{queue}\"",
};
/// `submit_args`.
pub const DOC_SUBMIT_ARGS: ParamDoc = ParamDoc {
    name: "submit_args",
    ty: "[string]",
    default: ParamDefault::Value("[]"),
    description: "Extra arguments for sbatch or condor_submit, one per element, e.g. \
                  [\"--account=lhcb\"] or [\"-append\", \"+AccountingGroup = \\\"lhcb\\\"\"]; \
                  placeholders allowed",
};
/// `backend_env`.
pub const DOC_BACKEND_ENV: ParamDoc = ParamDoc {
    name: "backend_env",
    ty: "table",
    default: ParamDefault::Value("{}"),
    description: "Environment of the batch system's commands (not of the job), e.g. \
                  { SLURM_CONF = \"/etc/slurm/test.conf\" } or { CONDOR_CONFIG = \"...\" }; \
                  placeholders allowed in values",
};
/// `bin_dir`.
pub const DOC_BIN_DIR: ParamDoc = ParamDoc {
    name: "bin_dir",
    ty: "string",
    default: ParamDefault::Value("looked up in PATH"),
    description: "Directory holding the batch system's commands (slurm, htcondor)",
};
/// `schedd`.
pub const DOC_SCHEDD: ParamDoc = ParamDoc {
    name: "schedd",
    ty: "string",
    default: ParamDefault::Value("the local schedd"),
    description:
        "htcondor only: the schedd to submit to (condor_submit -remote, then -name), e.g. \
                  \"{hostname}\" for an HTCondor-CE; the job's files are spooled and fetched back \
                  with condor_transfer_data",
};
/// `pool`.
pub const DOC_POOL: ParamDoc = ParamDoc {
    name: "pool",
    ty: "string",
    default: ParamDefault::Value("the local pool"),
    description: "htcondor only: the collector to ask (-pool), e.g. \"{hostname}:9619\"",
};
/// `workdir`.
pub const DOC_WORKDIR: ParamDoc = ParamDoc {
    name: "workdir",
    ty: "string",
    default: ParamDefault::Value("<system temp dir>/gridprobe-jobs"),
    description: "Where each job gets a directory of its own (wrapper, payload, inputs, output). \
                  For slurm it must be on a file system the worker nodes see; placeholders allowed",
};
/// `submit_timeout`.
pub const DOC_SUBMIT_TIMEOUT: ParamDoc = ParamDoc {
    name: "submit_timeout",
    ty: "duration",
    default: ParamDefault::Value("\"1m\""),
    description: "Longest the submission may take; past it the result is CRITICAL",
};
/// `queue_timeout`.
pub const DOC_QUEUE_TIMEOUT: ParamDoc = ParamDoc {
    name: "queue_timeout",
    ty: "duration",
    default: ParamDefault::Value("the probe's timeout"),
    description: "Longest the job may wait in the queue: past it the job is cancelled and the \
                  result is CRITICAL. A job still queued when the probe's own timeout comes \
                  first is WARNING (\"queued 40 min\"), not CRITICAL",
};
/// `queue_warn`.
pub const DOC_QUEUE_WARN: ParamDoc = ParamDoc {
    name: "queue_warn",
    ty: "duration",
    default: ParamDefault::Value("none"),
    description: "A job queued longer than this is WARNING even when it then succeeds",
};
/// `run_timeout`.
pub const DOC_RUN_TIMEOUT: ParamDoc = ParamDoc {
    name: "run_timeout",
    ty: "duration",
    default: ParamDefault::Value("the rest of the probe's timeout"),
    description: "Longest the job may run: past it the job is cancelled at the batch system and \
                  the result is CRITICAL",
};
/// `poll_interval`.
pub const DOC_POLL_INTERVAL: ParamDoc = ParamDoc {
    name: "poll_interval",
    ty: "duration",
    default: ParamDefault::Value("\"5s\""),
    description: "Time between two queries of the job's state (the local backend sees the end \
                  at once)",
};
/// `keep_workdir`.
pub const DOC_KEEP_WORKDIR: ParamDoc = ParamDoc {
    name: "keep_workdir",
    ty: "bool",
    default: ParamDefault::Value("false"),
    description: "Keep each job's directory after the run, for debugging; by default it is removed",
};

/// Parameters.
pub const PARAMS: &[ParamDoc] = &[
    DOC_BACKEND,
    DOC_QUEUE,
    DOC_SUBMIT_ARGS,
    DOC_BACKEND_ENV,
    DOC_BIN_DIR,
    DOC_SCHEDD,
    DOC_POOL,
    DOC_WORKDIR,
    DOC_SUBMIT_TIMEOUT,
    DOC_QUEUE_TIMEOUT,
    DOC_QUEUE_WARN,
    DOC_RUN_TIMEOUT,
    DOC_POLL_INTERVAL,
    DOC_KEEP_WORKDIR,
];

/// The backends, as written in `backend`.
const BACKENDS: &[&str] = &["slurm", "htcondor", "local"];
/// Default of `submit_timeout`.
const DEFAULT_SUBMIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `poll_interval`.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Shortest `poll_interval` accepted: a batch system is a shared service.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Time a state query (squeue, condor_q...) may take when its phase leaves more.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed, past a deadline, to cancel the job and see it gone: within the runner's
/// five-second cleanup grace.
const CANCEL_BUDGET: Duration = Duration::from_secs(4);
/// Consecutive failed state queries after which the job counts as lost.
const MAX_POLL_FAILURES: u32 = 3;
/// Bytes of each output file (and of each command's output) read.
const OUTPUT_LIMIT: usize = 1 << 20;
/// Bytes of each output file shown in the details.
const SHOWN_OUTPUT: usize = 16 * 1024;

/// The wrapper script each backend runs, in the job's directory.
pub(crate) const WRAPPER: &str = "gridprobe-job.sh";
/// The job's standard output, in its directory.
pub(crate) const STDOUT_FILE: &str = "gridprobe-job.out";
/// The job's standard error, in its directory.
pub(crate) const STDERR_FILE: &str = "gridprobe-job.err";
/// CPU times the wrapper records (`times` output).
pub(crate) const TIMES_FILE: &str = "gridprobe-job.times";
/// The payload script when written inline.
const INLINE_PAYLOAD: &str = "gridprobe-payload.sh";

/// The `ce` kind's own payload: says where and as whom it ran.
const CE_PAYLOAD: &str = "#!/bin/sh\n\
# gridprobe CE test job: reports where it ran.\n\
echo \"gridprobe test job on $(hostname 2>/dev/null || uname -n) as $(id -un 2>/dev/null) in $(pwd)\"\n\
echo \"$(uname -srm 2>/dev/null), $(date -u '+%Y-%m-%d %H:%M:%S UTC')\"\n";

/// `[probe.params]` of a `ce` probe; the `job` kind takes the same keys and more.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CeParams {
    pub backend: String,
    pub queue: Option<String>,
    pub submit_args: Option<Vec<String>>,
    pub backend_env: Option<BTreeMap<String, String>>,
    pub bin_dir: Option<String>,
    pub schedd: Option<String>,
    pub pool: Option<String>,
    pub workdir: Option<String>,
    pub submit_timeout: Option<String>,
    pub queue_timeout: Option<String>,
    pub queue_warn: Option<String>,
    pub run_timeout: Option<String>,
    pub poll_interval: Option<String>,
    pub keep_workdir: Option<bool>,
}

/// A batch system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendKind {
    Slurm,
    HtCondor,
    Local,
}

impl BackendKind {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "slurm" => Some(BackendKind::Slurm),
            "htcondor" => Some(BackendKind::HtCondor),
            "local" => Some(BackendKind::Local),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            BackendKind::Slurm => "slurm",
            BackendKind::HtCondor => "htcondor",
            BackendKind::Local => "local",
        }
    }
}

/// The checked settings shared by the `ce` and `job` kinds; templates not yet expanded.
#[derive(Debug, Clone)]
pub(crate) struct CeSettings {
    pub kind: BackendKind,
    queue: Option<String>,
    submit_args: Vec<String>,
    backend_env: Vec<(String, String)>,
    bin_dir: Option<PathBuf>,
    schedd: Option<String>,
    pool: Option<String>,
    workdir: Option<String>,
    pub submit_timeout: Duration,
    pub queue_timeout: Option<Duration>,
    pub queue_warn: Option<Duration>,
    pub run_timeout: Option<Duration>,
    pub poll_interval: Duration,
    pub keep_workdir: bool,
}

/// Checks an environment table: names, and the templates of the values.
pub(crate) fn check_env(
    def: &ProbeDef,
    config: &Config,
    key: &str,
    env: &BTreeMap<String, String>,
    errors: &mut Vec<Diagnostic>,
) {
    for (name, value) in env {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            errors.push(
                config
                    .sources
                    .error(
                        &def.params.key_span(key),
                        format!("`{key}`: `{name}` is not a valid environment variable name"),
                    )
                    .with_help("use letters, digits and `_`, not starting with a digit"),
            );
        }
        errors.extend(check_template(def, config, key, value));
    }
}

impl CeSettings {
    /// Checks the shared params of `def`; each problem is positioned at its key.
    pub(crate) fn from_params(
        def: &ProbeDef,
        config: &Config,
        p: CeParams,
    ) -> Result<Self, Vec<Diagnostic>> {
        let err = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
        let mut errors = Vec::new();

        let kind = BackendKind::parse(&p.backend);
        if kind.is_none() {
            let d = err("backend", format!("unknown backend `{}`", p.backend))
                .with_suggestion(&p.backend, BACKENDS.iter().copied());
            let d = if d.help.is_none() {
                d.with_help(format!("use one of {}", BACKENDS.join(", ")))
            } else {
                d
            };
            errors.push(d);
        }
        let only = |key: &str, set: bool, allowed: BackendKind, errors: &mut Vec<Diagnostic>| {
            if let Some(k) = kind {
                if set && k != allowed {
                    errors.push(err(
                        key,
                        format!(
                            "`{key}` applies to the {} backend only, not to {}",
                            allowed.name(),
                            k.name()
                        ),
                    ));
                }
            }
        };
        only("queue", p.queue.is_some(), BackendKind::Slurm, &mut errors);
        only(
            "schedd",
            p.schedd.is_some(),
            BackendKind::HtCondor,
            &mut errors,
        );
        only("pool", p.pool.is_some(), BackendKind::HtCondor, &mut errors);
        if kind == Some(BackendKind::Local) {
            for (key, set) in [
                ("submit_args", p.submit_args.is_some()),
                ("backend_env", p.backend_env.is_some()),
                ("bin_dir", p.bin_dir.is_some()),
            ] {
                if set {
                    errors.push(err(
                        key,
                        format!("`{key}` has no meaning for the local backend (there is no batch system)"),
                    ));
                }
            }
        }

        for (key, value) in [
            ("queue", &p.queue),
            ("schedd", &p.schedd),
            ("pool", &p.pool),
            ("workdir", &p.workdir),
        ] {
            if let Some(v) = value {
                errors.extend(check_template(def, config, key, v));
                if v.trim().is_empty() {
                    errors.push(err(key, format!("`{key}` is empty")));
                }
            }
        }
        for arg in p.submit_args.iter().flatten() {
            errors.extend(check_template(def, config, "submit_args", arg));
        }
        let backend_env = p.backend_env.unwrap_or_default();
        check_env(def, config, "backend_env", &backend_env, &mut errors);

        let bin_dir = p.bin_dir.as_ref().map(|b| config_dir(def, config).join(b));
        if let Some(dir) = &bin_dir {
            if !dir.is_dir() {
                errors.push(err(
                    "bin_dir",
                    format!("`bin_dir` {} is not a directory", dir.display()),
                ));
            }
        }

        let mut duration = |key: &str, v: &Option<String>| {
            duration_param(def, config, key, v.as_deref(), &mut errors)
        };
        let submit_timeout = duration("submit_timeout", &p.submit_timeout);
        let queue_timeout = duration("queue_timeout", &p.queue_timeout);
        let queue_warn = duration("queue_warn", &p.queue_warn);
        let run_timeout = duration("run_timeout", &p.run_timeout);
        let poll_interval = duration("poll_interval", &p.poll_interval);
        if let (Some(w), Some(t)) = (queue_warn, queue_timeout) {
            if w >= t {
                errors.push(err(
                    "queue_warn",
                    format!(
                        "`queue_warn` ({}) is not below `queue_timeout` ({}): the warning would never show",
                        format_duration(w),
                        format_duration(t)
                    ),
                ));
            }
        }
        if poll_interval.is_some_and(|d| d < MIN_POLL_INTERVAL) {
            errors.push(err(
                "poll_interval",
                format!(
                    "`poll_interval` must be at least {} (the batch system is a shared service)",
                    format_duration(MIN_POLL_INTERVAL)
                ),
            ));
        }

        match kind {
            Some(kind) if errors.is_empty() => Ok(CeSettings {
                kind,
                queue: p.queue,
                submit_args: p.submit_args.unwrap_or_default(),
                backend_env: backend_env.into_iter().collect(),
                bin_dir,
                schedd: p.schedd,
                pool: p.pool,
                workdir: p.workdir,
                submit_timeout: submit_timeout.unwrap_or(DEFAULT_SUBMIT_TIMEOUT),
                queue_timeout,
                queue_warn,
                run_timeout,
                poll_interval: poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL),
                keep_workdir: p.keep_workdir.unwrap_or(false),
            }),
            _ => Err(errors),
        }
    }

    /// The backend for one instance, with its templates expanded.
    fn backend(&self, ctx: &ProbeContext) -> Result<Box<dyn Backend>, String> {
        let fill = |what: &str, t: &str| {
            placeholders::expand(t, ctx).map_err(|e| format!("in `{what}`: {e}"))
        };
        let cli = Cli {
            bin_dir: self.bin_dir.clone(),
            env: self
                .backend_env
                .iter()
                .map(|(k, v)| Ok((k.clone(), fill("backend_env", v)?)))
                .collect::<Result<_, String>>()?,
        };
        let submit_args = self
            .submit_args
            .iter()
            .map(|a| fill("submit_args", a))
            .collect::<Result<Vec<_>, _>>()?;
        let opt = |what: &str, t: &Option<String>| t.as_deref().map(|t| fill(what, t)).transpose();
        Ok(match self.kind {
            BackendKind::Slurm => Box::new(slurm::Slurm {
                cli,
                partition: opt("queue", &self.queue)?,
                submit_args,
            }),
            BackendKind::HtCondor => Box::new(htcondor::HtCondor {
                cli,
                schedd: opt("schedd", &self.schedd)?,
                pool: opt("pool", &self.pool)?,
                submit_args,
            }),
            BackendKind::Local => Box::new(local::Local),
        })
    }

    /// The base directory of job directories for one instance.
    fn workdir(&self, ctx: &ProbeContext) -> Result<PathBuf, String> {
        match &self.workdir {
            Some(t) => placeholders::expand(t, ctx)
                .map(PathBuf::from)
                .map_err(|e| format!("in `workdir`: {e}")),
            None => Ok(std::env::temp_dir().join("gridprobe-jobs")),
        }
    }

    /// Everything [`Probe::check_instance`] can verify: templates expand, limits fit the
    /// probe's timeout.
    pub(crate) fn check_instance(&self, ctx: &ProbeContext) -> Result<(), String> {
        self.backend(ctx)?;
        self.workdir(ctx)?;
        // `submit_timeout` is left out: its default may well exceed a short probe timeout.
        for (key, d) in [
            ("queue_timeout", self.queue_timeout),
            ("run_timeout", self.run_timeout),
        ] {
            if let Some(d) = d {
                if d > ctx.timeout {
                    return Err(format!(
                        "`{key}` ({}) is longer than the probe's timeout ({}), so it can never \
                         apply: raise the probe's `timeout` or lower `{key}`",
                        format_duration(d),
                        format_duration(ctx.timeout)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What a job runs.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    /// A script on gridprobe's host, copied into the job's directory.
    Script(PathBuf),
    /// A program on the worker node (absolute path, or a name looked up in its PATH).
    Command(String),
    /// A script text, written into the job's directory.
    Inline(&'static str),
}

/// One job to run: payload, arguments, environment and input files (all expanded).
#[derive(Debug, Clone)]
pub(crate) struct JobSpec {
    pub payload: Payload,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Files on gridprobe's host copied into the job's directory before submission.
    pub inputs: Vec<PathBuf>,
}

/// A job directory, ready for submission.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// Unique name of the job at the batch system (also its directory's name).
    pub tag: String,
    /// The job's directory (absolute).
    pub dir: PathBuf,
    /// File names in `dir` that the job needs besides the wrapper (for file transfer).
    pub staged: Vec<String>,
    /// Longest the job may wait in the queue and run, for the batch system's own limits.
    pub queue_limit: Duration,
    pub run_limit: Duration,
}

// ---------------------------------------------------------------------------------------------
// Backends

/// Why a batch system operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum BackendError {
    /// The command could not be started.
    #[error("cannot run `{program}`: {reason}")]
    Spawn { program: String, reason: String },
    /// The command ran and failed; `stderr` holds what it said.
    #[error("`{program}` failed ({how}): {said}")]
    Failed {
        program: String,
        how: String,
        said: String,
    },
    /// The command did not answer in time (and was killed).
    #[error("`{program}` did not answer within {}", format_duration(*.after))]
    TimedOut { program: String, after: Duration },
    /// gridprobe is stopping.
    #[error("cancelled")]
    Cancelled,
    /// The answer made no sense.
    #[error("{0}")]
    Invalid(String),
}

/// A batch system.
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    /// `slurm`, `htcondor`, `local`.
    fn name(&self) -> &'static str;
    /// One line for the details, e.g. "slurm, partition debug".
    fn describe(&self) -> String;
    /// Submits the prepared job.
    async fn submit(
        &self,
        job: &Prepared,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Box<dyn Handle>, BackendError>;
    /// Cancels any job named `tag`: after a submission that did not answer, the job may exist.
    async fn cancel_tagged(&self, tag: &str, deadline: Instant) -> Result<(), BackendError>;
}

/// A submitted job. Dropping a handle whose job may still be alive cancels it (best effort).
#[async_trait]
pub(crate) trait Handle: Send {
    /// The batch system's job id.
    fn id(&self) -> &str;
    /// Queries the job's state once.
    async fn poll(
        &mut self,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Observed, BackendError>;
    /// Waits until `until`, or less when the backend sees a change sooner.
    async fn wait(&mut self, until: Instant) {
        tokio::time::sleep_until(until.into()).await;
    }
    /// Cancels the job at the batch system.
    async fn cancel(&mut self, deadline: Instant) -> Result<(), BackendError>;
    /// After a final state: completes the accounting and fetches the output where the backend
    /// must. Notes say what could not be had.
    async fn finish(&mut self, deadline: Instant, acct: &mut Accounting, notes: &mut Vec<String>);
    /// The job is over (final state seen or cancelled): dropping the handle leaves it alone.
    fn settle(&mut self);
}

/// A batch system's command-line tools.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cli {
    /// Where the commands are; PATH when unset.
    pub bin_dir: Option<PathBuf>,
    /// Extra environment for the commands.
    pub env: Vec<(String, String)>,
}

/// What a successful command printed.
#[derive(Debug, Clone, Default)]
pub(crate) struct CliOutput {
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    /// The path of `program`.
    pub(crate) fn program(&self, program: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        }
    }

    /// Runs `program args...` until it exits, `deadline` passes or `cancel` fires. A non-zero
    /// exit is an error carrying what the command printed on stderr.
    pub(crate) async fn run(
        &self,
        program: &str,
        args: &[String],
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<CliOutput, BackendError> {
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new(self.program(program));
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // The commands' messages are matched and shown; keep them in English.
            .env("LC_ALL", "C");
        tracing::debug!(program, ?args, "batch command");
        let finished = process::run(cmd, deadline, cancel, OUTPUT_LIMIT)
            .await
            .map_err(|e| BackendError::Spawn {
                program: program.to_string(),
                reason: spawn_reason(&e, self.bin_dir.is_some()),
            })?;
        command_result(program, &finished, started.elapsed())
    }

    /// Starts `program args...` and leaves it to finish on its own: for the cancellation in a
    /// drop guard, where nothing can be awaited. A thread reaps it.
    pub(crate) fn detach(&self, program: &str, args: &[String]) {
        let mut cmd = std::process::Command::new(self.program(program));
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        match cmd.spawn() {
            Ok(mut child) => {
                let _ = std::thread::Builder::new()
                    .name("gridprobe-cancel".into())
                    .spawn(move || {
                        let _ = child.wait();
                    });
            }
            Err(e) => tracing::warn!(program, %e, "cannot start the job cancellation"),
        }
    }
}

/// `deadline`, or sooner: a state query that hangs is a failed query, not the end of a phase.
pub(crate) fn query_deadline(deadline: Instant) -> Instant {
    deadline.min(Instant::now() + COMMAND_TIMEOUT)
}

/// A spawn error in a few words.
fn spawn_reason(e: &io::Error, has_bin_dir: bool) -> String {
    match e.kind() {
        io::ErrorKind::NotFound if has_bin_dir => "no such file in `bin_dir`".into(),
        io::ErrorKind::NotFound => {
            "not found in PATH (is the batch system's client installed? `bin_dir` names its \
             directory)"
                .into()
        }
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Stderr (or stdout) lines joined into one line for a summary.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" / ")
}

/// The result of a finished batch command.
fn command_result(
    program: &str,
    f: &Finished,
    elapsed: Duration,
) -> Result<CliOutput, BackendError> {
    use std::os::unix::process::ExitStatusExt;
    let out = CliOutput {
        stdout: String::from_utf8_lossy(&f.stdout.bytes).into_owned(),
        stderr: String::from_utf8_lossy(&f.stderr.bytes).into_owned(),
    };
    match f.ending {
        process::Ending::TimedOut => {
            return Err(BackendError::TimedOut {
                program: program.to_string(),
                after: elapsed,
            })
        }
        process::Ending::Cancelled => return Err(BackendError::Cancelled),
        process::Ending::Exited => {}
    }
    if f.success() {
        return Ok(out);
    }
    let how = match f.status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("killed by {}", process::signal_name(sig)),
            _ => s.to_string(),
        },
        None => "could not be waited for".to_string(),
    };
    let said = match (one_line(&out.stderr), one_line(&out.stdout)) {
        (e, _) if !e.is_empty() => e,
        (_, o) if !o.is_empty() => o,
        _ => "no message".to_string(),
    };
    Err(BackendError::Failed {
        program: program.to_string(),
        how,
        said,
    })
}

// ---------------------------------------------------------------------------------------------
// Job states and what is known of a job

/// A job's state, as gridprobe understands it across batch systems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobState {
    /// Waiting in the queue.
    Pending,
    /// Running (or starting, or cleaning up).
    Running,
    /// Stopped by the batch system, still counted as running.
    Suspended,
    /// Ended; the exit code says how.
    Completed,
    /// Ended with an error the batch system saw.
    Failed,
    /// Cancelled or removed (by gridprobe or someone else).
    Cancelled,
    /// Held: it will not run without an operator (HTCondor).
    Held,
    /// Ended by the batch system's own time limit or deadline.
    LimitReached,
    /// Killed for using too much memory.
    OutOfMemory,
    /// Its node failed.
    NodeFailed,
    /// Preempted by another job.
    Preempted,
    /// The batch system no longer knows the job and its end was not seen.
    Vanished,
}

impl JobState {
    /// Lower-case label for the timeline.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Suspended => "suspended",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Held => "held",
            JobState::LimitReached => "limit reached",
            JobState::OutOfMemory => "out of memory",
            JobState::NodeFailed => "node failed",
            JobState::Preempted => "preempted",
            JobState::Vanished => "vanished",
        }
    }

    /// Whether the job is over (held counts: it will not go on by itself).
    pub(crate) fn is_final(&self) -> bool {
        !matches!(
            self,
            JobState::Pending | JobState::Running | JobState::Suspended
        )
    }

    fn is_running(&self) -> bool {
        matches!(self, JobState::Running | JobState::Suspended)
    }
}

/// How the job's program ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Exit {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
}

impl Exit {
    /// "exit code 3", "killed by SIGKILL (9)".
    pub(crate) fn describe(&self) -> String {
        match (self.code, self.signal) {
            (_, Some(sig)) if sig != 0 => format!("killed by {}", process::signal_name(sig)),
            (Some(code), _) if code > 128 && code <= 128 + 64 => format!(
                "exit code {code} (killed by {}?)",
                process::signal_name(code - 128)
            ),
            (Some(code), _) => format!("exit code {code}"),
            (None, _) => "exit code unknown".to_string(),
        }
    }
}

/// Resources the job used, as far as known.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Accounting {
    /// Wall-clock run time.
    pub wall: Option<Duration>,
    /// CPU time (user + system).
    pub cpu: Option<Duration>,
    /// Peak resident memory, bytes.
    pub max_rss: Option<u64>,
}

impl Accounting {
    /// Takes what `other` knows; memory keeps the larger.
    pub(crate) fn merge(&mut self, other: &Accounting) {
        self.wall = other.wall.or(self.wall);
        self.cpu = other.cpu.or(self.cpu);
        self.max_rss = match (self.max_rss, other.max_rss) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// One look at a job.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub state: JobState,
    /// The batch system's own word for it (`PENDING`, `JobStatus 1 (idle)`).
    pub raw: String,
    /// Why it waits or was held, as the batch system says.
    pub reason: Option<String>,
    /// Where it runs.
    pub host: Option<String>,
    /// How it ended, when it has.
    pub exit: Option<Exit>,
    /// What it used, as far as known now.
    pub acct: Accounting,
}

impl Observed {
    /// An observation with only a state.
    pub(crate) fn state(state: JobState, raw: impl Into<String>) -> Self {
        Observed {
            state,
            raw: raw.into(),
            reason: None,
            host: None,
            exit: None,
            acct: Accounting::default(),
        }
    }
}

/// A phase of the job's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Submit,
    Queue,
    Run,
}

/// How a job run ended, from gridprobe's side.
#[derive(Debug, Clone)]
pub(crate) enum End {
    /// The batch system reported a final state.
    Finished,
    /// The job could not be set up on gridprobe's side (UNKNOWN).
    Setup(String),
    /// The batch system refused the job or could not be asked (CRITICAL).
    SubmitFailed(BackendError),
    /// The job's state could no longer be queried (CRITICAL).
    LostTrack(BackendError),
    /// A phase ran out of time; `limit` is what it had, `by_probe` when the probe's own
    /// timeout ended it before the phase's limit.
    TimedOut {
        phase: Phase,
        limit: Duration,
        by_probe: bool,
    },
    /// gridprobe is stopping (UNKNOWN).
    Cancelled,
}

/// One recorded state change.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub at: SystemTime,
    pub label: String,
    pub note: String,
}

/// Everything known about one job run, for the outcome.
#[derive(Debug)]
pub(crate) struct JobRun {
    pub backend: String,
    pub id: Option<String>,
    pub events: Vec<Event>,
    pub end: End,
    /// The last observation of the job.
    pub last: Option<Observed>,
    pub exit: Option<Exit>,
    pub acct: Accounting,
    /// Time the submission took.
    pub submit_time: Option<Duration>,
    /// Time spent queued (until seen running or ended).
    pub queued: Option<Duration>,
    /// From the start of the run to its end.
    pub total: Duration,
    /// What the job's program wrote, bounded.
    pub stdout: String,
    pub stderr: String,
    /// The job's directory when kept (`keep_workdir`).
    pub dir: Option<PathBuf>,
    /// Remarks for the details (what could not be measured, cleanup problems).
    pub notes: Vec<String>,
    /// How the job was cancelled at the batch system, when it was.
    pub cancel_note: Option<String>,
}

impl JobRun {
    fn new(backend: &str) -> Self {
        JobRun {
            backend: backend.to_string(),
            id: None,
            events: Vec::new(),
            end: End::Finished,
            last: None,
            exit: None,
            acct: Accounting::default(),
            submit_time: None,
            queued: None,
            total: Duration::ZERO,
            stdout: String::new(),
            stderr: String::new(),
            dir: None,
            notes: Vec::new(),
            cancel_note: None,
        }
    }

    fn event(&mut self, label: &str, note: impl Into<String>) {
        self.events.push(Event {
            at: SystemTime::now(),
            label: label.to_string(),
            note: note.into(),
        });
    }

    /// "job 123 (slurm)".
    pub(crate) fn job_name(&self) -> String {
        match &self.id {
            Some(id) => format!("job {id} ({})", self.backend),
            None => format!("{} job", self.backend),
        }
    }

    /// The outcome when the job did not reach a final state, or did not complete; `None` when
    /// it completed (the caller judges its exit code and output).
    pub(crate) fn failure(&self) -> Option<Outcome> {
        let job = self.job_name();
        let cancelled = self
            .cancel_note
            .as_deref()
            .map(|n| format!("; {n}"))
            .unwrap_or_default();
        let o = match &self.end {
            End::Finished => {
                let last = self.last.as_ref()?;
                let reason = last
                    .reason
                    .as_deref()
                    .filter(|r| !r.is_empty() && *r != "None")
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                let exit = self
                    .exit
                    .map(|e| format!(", {}", e.describe()))
                    .unwrap_or_default();
                match last.state {
                    JobState::Completed => return None,
                    // Slurm calls a non-zero exit FAILED: the exit code is the caller's to judge.
                    JobState::Failed
                        if self
                            .exit
                            .is_some_and(|e| e.code.is_some() && e.signal.is_none()) =>
                    {
                        return None
                    }
                    JobState::Failed => {
                        Outcome::critical(format!("{job} failed ({}{exit}){reason}", last.raw))
                    }
                    JobState::Cancelled => Outcome::critical(format!(
                        "{job} was cancelled at the batch system, not by gridprobe ({}){reason}",
                        last.raw
                    )),
                    JobState::Held => {
                        Outcome::critical(format!("{job} was held{reason}{cancelled}"))
                    }
                    JobState::LimitReached => Outcome::critical(format!(
                        "{job} was ended by the batch system's time limit ({}){reason}",
                        last.raw
                    )),
                    JobState::OutOfMemory => Outcome::critical(format!(
                        "{job} was killed for exceeding its memory ({}){reason}",
                        last.raw
                    )),
                    JobState::NodeFailed => Outcome::critical(format!(
                        "{job} failed with its node ({}){reason}",
                        last.raw
                    )),
                    JobState::Preempted => {
                        Outcome::warning(format!("{job} was preempted ({}){reason}", last.raw))
                    }
                    JobState::Vanished => Outcome::unknown(format!(
                        "{job} left the queue, but its final state is not known{reason}"
                    )),
                    JobState::Pending | JobState::Running | JobState::Suspended => {
                        Outcome::unknown(format!(
                            "{job} ended in state {} without a final state",
                            last.raw
                        ))
                    }
                }
            }
            End::Setup(msg) => Outcome::unknown(format!("cannot set up the job: {msg}")),
            End::SubmitFailed(e) => Outcome::critical(format!(
                "submission to {} failed: {e}{cancelled}",
                self.backend
            )),
            End::LostTrack(e) => {
                Outcome::critical(format!("{job}: cannot query its state: {e}{cancelled}"))
            }
            End::TimedOut {
                phase: Phase::Submit,
                limit,
                ..
            } => Outcome::critical(format!(
                "submit phase timed out: {} did not accept the job within {}{cancelled}",
                self.backend,
                format_duration(*limit)
            )),
            End::TimedOut {
                phase: Phase::Queue,
                limit,
                by_probe,
            } => {
                let queued = fmt_minutes(self.queued.unwrap_or(*limit));
                let why = self
                    .last
                    .as_ref()
                    .and_then(|o| o.reason.as_deref())
                    .filter(|r| !r.is_empty() && *r != "None")
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                if *by_probe {
                    // Still within its queue-wait limit: a busy site, not a broken one.
                    Outcome::warning(format!(
                        "queued {queued}{why}: {job} still pending at the probe's timeout{cancelled}"
                    ))
                } else {
                    Outcome::critical(format!(
                        "queue phase timed out: {job} queued {queued}{why}, over the {} limit{cancelled}",
                        format_duration(*limit)
                    ))
                }
            }
            End::TimedOut {
                phase: Phase::Run,
                limit,
                by_probe,
            } => {
                let what = if *by_probe {
                    "the probe's timeout"
                } else {
                    "the run_timeout"
                };
                Outcome::critical(format!(
                    "run phase timed out: {job} still running after {} ({what}){cancelled}",
                    format_duration(*limit)
                ))
            }
            End::Cancelled => {
                Outcome::unknown(format!("cancelled (gridprobe is stopping){cancelled}"))
            }
        };
        Some(o)
    }

    /// The WARNING for a long queue wait, when `queue_warn` is set and passed.
    pub(crate) fn queue_warning(&self, settings: &CeSettings) -> Option<String> {
        let (warn, queued) = (settings.queue_warn?, self.queued?);
        (queued > warn).then(|| format!("queued {}", fmt_minutes(queued)))
    }

    /// "in 1.2 s (queued 0.3 s)".
    pub(crate) fn timing_text(&self) -> String {
        let mut t = String::new();
        if let Some(w) = self.acct.wall {
            let _ = write!(t, "ran {}", fmt_secs(w));
        }
        if let Some(q) = self.queued {
            if !t.is_empty() {
                t.push_str(", ");
            }
            let _ = write!(t, "queued {}", fmt_secs(q));
        }
        t
    }

    /// Wall time, CPU time, efficiency and memory as one line, when any is known.
    fn resources_text(&self) -> Option<String> {
        let a = &self.acct;
        let mut parts = Vec::new();
        if let Some(w) = a.wall {
            parts.push(format!("wall {}", fmt_secs(w)));
        }
        if let Some(c) = a.cpu {
            parts.push(format!("CPU {}", fmt_secs(c)));
        }
        if let Some(e) = self.cpu_efficiency() {
            parts.push(format!("CPU efficiency {e:.0} %"));
        }
        if let Some(m) = a.max_rss {
            parts.push(format!("peak memory {}", fmt_bytes(m)));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// CPU time over wall time, in percent.
    fn cpu_efficiency(&self) -> Option<f64> {
        let (cpu, wall) = (self.acct.cpu?, self.acct.wall?);
        (wall > Duration::ZERO).then(|| 100.0 * cpu.as_secs_f64() / wall.as_secs_f64())
    }

    /// Perfdata: submit, queued, wall, cpu, cpu_efficiency, peak_memory, total.
    pub(crate) fn perfdata(&self) -> Vec<Perfdatum> {
        let secs = |label: &str, d: Duration| Perfdatum::new(label, round3(d.as_secs_f64()), "s");
        let mut p = Vec::new();
        p.extend(self.submit_time.map(|d| secs("submit", d)));
        p.extend(self.queued.map(|d| secs("queued", d)));
        p.extend(self.acct.wall.map(|d| secs("wall", d)));
        p.extend(self.acct.cpu.map(|d| secs("cpu", d)));
        if let Some(e) = self.cpu_efficiency() {
            let mut d = Perfdatum::new("cpu_efficiency", (e * 10.0).round() / 10.0, "%");
            d.min = Some(0.0);
            p.push(d);
        }
        p.extend(
            self.acct
                .max_rss
                .map(|m| Perfdatum::new("peak_memory", m as f64, "B")),
        );
        p.push(secs("total", self.total));
        p
    }

    /// The details: backend, timeline, exit, resources, notes, then the job's output and
    /// `extra` (the caller's checks) first.
    pub(crate) fn details(&self, extra: &str) -> String {
        let mut d = String::new();
        if !extra.is_empty() {
            d.push_str(extra.trim_end());
            d.push_str("\n\n");
        }
        let _ = writeln!(d, "{}", self.job_name());
        for e in &self.events {
            let _ = write!(d, "{}  {}", fmt_time(e.at), e.label);
            if !e.note.is_empty() {
                let _ = write!(d, "  {}", e.note);
            }
            d.push('\n');
        }
        if let Some(exit) = self.exit {
            let _ = writeln!(d, "{}", exit.describe());
        }
        if let Some(r) = self.resources_text() {
            let _ = writeln!(d, "{r}");
        }
        for n in &self.notes {
            let _ = writeln!(d, "note: {n}");
        }
        if let Some(dir) = &self.dir {
            let _ = writeln!(d, "job directory kept: {}", dir.display());
        }
        for (title, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if !text.trim().is_empty() {
                let _ = write!(
                    d,
                    "\n--- {title} ---\n{}\n",
                    tail_bounded(text.trim_end(), SHOWN_OUTPUT)
                );
            }
        }
        d
    }
}

/// The last `limit` bytes of `text` (the end of a log says how it ended), marked when cut.
fn tail_bounded(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {start} bytes cut ...]\n{}", &text[start..])
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `40 min`, `2 h 5 min`, `12 s` for a queue wait.
pub(crate) fn fmt_minutes(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// `22.4 MiB`.
pub(crate) fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `2026-11-25 14:46:33.120 UTC`.
pub(crate) fn fmt_time(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    jiff::Timestamp::from_millisecond(ms)
        .map(|ts| ts.strftime("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

// ---------------------------------------------------------------------------------------------
// Preparing the job directory

/// Quotes `s` for a POSIX shell.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The wrapper script: environment, payload, exit code, CPU times.
fn wrapper_text(tag: &str, command: &str, spec: &JobSpec) -> String {
    let mut w = format!(
        "#!/bin/sh\n\
         # gridprobe test job {tag}: runs the payload in this directory and records its CPU\n\
         # time (for batch systems that do not account it).\n"
    );
    for (k, v) in &spec.env {
        let _ = writeln!(w, "export {k}={}", sh_quote(v));
    }
    w.push_str(command);
    for a in &spec.args {
        w.push(' ');
        w.push_str(&sh_quote(a));
    }
    let _ = write!(w, "\nrc=$?\ntimes > {TIMES_FILE} 2>/dev/null\nexit $rc\n");
    w
}

/// A unique, filesystem- and batch-system-safe name for one job.
fn job_tag(ctx: &ProbeContext) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let short = gridprobe_config::short_metric_name(&ctx.metric);
    let raw = format!(
        "gridprobe-{short}-{}-{ms}-{}-{n}",
        ctx.service.hostname,
        std::process::id()
    );
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Makes the job's directory: payload, inputs, wrapper.
fn prepare(
    base: &Path,
    tag: &str,
    spec: &JobSpec,
    queue_limit: Duration,
    run_limit: Duration,
) -> Result<Prepared, String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let dir = base.join(tag);
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut staged = Vec::new();
    let executable = std::fs::Permissions::from_mode(0o755);

    let command = match &spec.payload {
        Payload::Script(path) => {
            let name = file_name(path)?;
            let to = dir.join(&name);
            std::fs::copy(path, &to)
                .map_err(|e| format!("cannot stage the payload {}: {e}", path.display()))?;
            std::fs::set_permissions(&to, executable.clone())
                .map_err(|e| format!("cannot make {} executable: {e}", to.display()))?;
            staged.push(name.clone());
            format!("./{}", sh_quote(&name))
        }
        Payload::Inline(text) => {
            let to = dir.join(INLINE_PAYLOAD);
            std::fs::write(&to, text)
                .and_then(|()| std::fs::set_permissions(&to, executable.clone()))
                .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
            staged.push(INLINE_PAYLOAD.to_string());
            format!("./{INLINE_PAYLOAD}")
        }
        Payload::Command(program) => sh_quote(program),
    };
    for input in &spec.inputs {
        let name = file_name(input)?;
        if staged.contains(&name) {
            return Err(format!("two staged files are named `{name}`"));
        }
        let meta = std::fs::metadata(input)
            .map_err(|e| format!("cannot stage input {}: {e}", input.display()))?;
        if !meta.is_file() {
            return Err(format!(
                "cannot stage input {}: not a regular file",
                input.display()
            ));
        }
        std::fs::copy(input, dir.join(&name))
            .map_err(|e| format!("cannot stage input {}: {e}", input.display()))?;
        staged.push(name);
    }
    let wrapper = dir.join(WRAPPER);
    std::fs::write(&wrapper, wrapper_text(tag, &command, spec))
        .and_then(|()| std::fs::set_permissions(&wrapper, executable))
        .map_err(|e| format!("cannot write {}: {e}", wrapper.display()))?;
    Ok(Prepared {
        tag: tag.to_string(),
        dir,
        staged,
        queue_limit,
        run_limit,
    })
}

fn file_name(path: &Path) -> Result<String, String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("`{}` names no file", path.display()))
}

/// Reads at most [`OUTPUT_LIMIT`] bytes of a job's output file (missing: empty).
pub(crate) fn read_bounded(path: &Path) -> (String, Option<String>) {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (String::new(), None),
        Err(e) => {
            return (
                String::new(),
                Some(format!("cannot read {}: {e}", path.display())),
            )
        }
    };
    let mut bytes = Vec::new();
    let read = file.take(OUTPUT_LIMIT as u64 + 1).read_to_end(&mut bytes);
    let mut note = read
        .err()
        .map(|e| format!("cannot read {}: {e}", path.display()));
    if bytes.len() > OUTPUT_LIMIT {
        bytes.truncate(OUTPUT_LIMIT);
        note = Some(format!(
            "{} is longer than {OUTPUT_LIMIT} bytes; only the beginning was read",
            path.display()
        ));
    }
    (String::from_utf8_lossy(&bytes).into_owned(), note)
}

/// Children's CPU time (user + system) from the wrapper's `times` output: the second line,
/// `0m0.010s 0m0.002s` (bash and dash differ only in the digits).
fn parse_times(text: &str) -> Option<Duration> {
    let line = text.lines().nth(1)?;
    let mut total = 0.0;
    for field in line.split_whitespace() {
        let (m, s) = field.strip_suffix('s')?.split_once('m')?;
        total += m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?;
    }
    Duration::try_from_secs_f64(total).ok()
}

// ---------------------------------------------------------------------------------------------
// The run

/// How a wait ended.
/// What became of a file the job should produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Produced {
    /// There, not empty (and copied out when asked), with its size.
    Ok(u64),
    /// Missing or empty: the job's fault.
    Missing(String),
    /// There, but copying it out failed: gridprobe's side.
    CopyFailed(String),
}

/// Runs one job through `settings`' backend: prepare, submit, follow, cancel at a deadline,
/// account, read the output, clean up. `produced` names files the job should leave in its
/// directory, each with where to copy it before the directory is removed.
pub(crate) async fn run_job(
    settings: &CeSettings,
    spec: &JobSpec,
    ctx: &ProbeContext,
    produced_files: &[(String, Option<PathBuf>)],
) -> (JobRun, Vec<(String, Produced)>) {
    let started = Instant::now();
    let mut produced = Vec::new();
    let backend = match settings.backend(ctx) {
        Ok(b) => b,
        Err(e) => {
            let mut run = JobRun::new(settings.kind.name());
            run.end = End::Setup(e);
            return (run, produced);
        }
    };
    let mut run = JobRun::new(backend.name());
    let base = match settings.workdir(ctx) {
        Ok(b) => b,
        Err(e) => {
            run.end = End::Setup(e);
            return (run, produced);
        }
    };
    let tag = job_tag(ctx);
    let queue_limit = settings
        .queue_timeout
        .unwrap_or(ctx.timeout)
        .min(ctx.timeout);
    let run_limit = settings.run_timeout.unwrap_or(ctx.timeout).min(ctx.timeout);
    let prepared = match prepare(&base, &tag, spec, queue_limit, run_limit) {
        Ok(p) => p,
        Err(e) => {
            run.end = End::Setup(e);
            let _ = std::fs::remove_dir_all(base.join(&tag));
            return (run, produced);
        }
    };
    run.notes.push(backend.describe());

    follow(settings, backend.as_ref(), &prepared, ctx, &mut run).await;

    // Output and CPU times, whatever the ending: a failed job's output explains it.
    let (out, note) = read_bounded(&prepared.dir.join(STDOUT_FILE));
    run.stdout = out;
    run.notes.extend(note);
    let (err, note) = read_bounded(&prepared.dir.join(STDERR_FILE));
    run.stderr = err;
    run.notes.extend(note);
    if run.acct.cpu.is_none() {
        if let Ok(t) = std::fs::read_to_string(prepared.dir.join(TIMES_FILE)) {
            run.acct.cpu = parse_times(&t);
        }
    }
    for (name, dest) in produced_files {
        let from = prepared.dir.join(name);
        let r = match std::fs::metadata(&from) {
            Ok(m) if m.is_file() && m.len() > 0 => match dest {
                Some(dest) => match copy_out(&from, dest) {
                    Ok(()) => Produced::Ok(m.len()),
                    Err(e) => Produced::CopyFailed(e),
                },
                None => Produced::Ok(m.len()),
            },
            Ok(m) if m.is_file() => Produced::Missing("is empty".to_string()),
            Ok(_) => Produced::Missing("is not a regular file".to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Produced::Missing("was not produced".to_string())
            }
            Err(e) => Produced::Missing(format!("cannot be read: {e}")),
        };
        produced.push((name.clone(), r));
    }
    if settings.keep_workdir {
        run.dir = Some(prepared.dir.clone());
    } else {
        match std::fs::remove_dir_all(&prepared.dir) {
            Ok(()) => run.notes.push(format!(
                "job directory {} (removed after the run)",
                prepared.dir.display()
            )),
            Err(e) => run.notes.push(format!(
                "cannot remove the job directory {}: {e}",
                prepared.dir.display()
            )),
        }
    }
    run.total = started.elapsed();
    (run, produced)
}

/// Copies a produced file into the directory `dest` (made when missing).
fn copy_out(from: &Path, dest: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let to = match from.file_name() {
        Some(n) => dest.join(n),
        None => return Err(format!("{} names no file", from.display())),
    };
    // Through a temporary name, so that a reader never sees half a file.
    let tmp = to.with_extension("gridprobe-partial");
    std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::rename(&tmp, &to))
        .map_err(|e| format!("cannot copy it to {}: {e}", to.display()))
}

/// Submits and follows the job to its end, cancelling it when a deadline passes.
async fn follow(
    settings: &CeSettings,
    backend: &dyn Backend,
    job: &Prepared,
    ctx: &ProbeContext,
    run: &mut JobRun,
) {
    // Submit.
    let submit_start = Instant::now();
    let submit_limit = settings.submit_timeout;
    let submit_deadline = ctx.deadline.min(submit_start + submit_limit);
    let submitted = ctx
        .bounded_until(
            submit_deadline,
            backend.submit(job, submit_deadline, &ctx.cancel),
        )
        .await;
    run.submit_time = Some(submit_start.elapsed());
    let mut handle = match submitted {
        Ok(Ok(h)) => h,
        Ok(Err(BackendError::TimedOut { .. })) | Err(Stop::Timeout) => {
            run.end = End::TimedOut {
                phase: Phase::Submit,
                limit: submit_deadline.saturating_duration_since(submit_start),
                by_probe: submit_deadline < submit_start + submit_limit,
            };
            cleanup_tagged(backend, job, run).await;
            return;
        }
        Ok(Err(BackendError::Cancelled)) | Err(Stop::Cancelled) => {
            run.end = End::Cancelled;
            cleanup_tagged(backend, job, run).await;
            return;
        }
        Ok(Err(e)) => {
            run.end = End::SubmitFailed(e);
            return;
        }
    };
    let submitted_at = Instant::now();
    run.id = Some(handle.id().to_string());
    run.event(
        "submitted",
        format!(
            "as job {} in {}",
            handle.id(),
            fmt_secs(run.submit_time.unwrap_or_default())
        ),
    );

    // Queue and run.
    let mut running_since: Option<Instant> = None;
    let mut last_label = String::new();
    let mut failures = 0;
    // The phase the job is in, and when it runs out: its own limit or the probe's deadline.
    let clock = |running_since: Option<Instant>| {
        let (phase, limit, start) = match running_since {
            None => (Phase::Queue, settings.queue_timeout, submitted_at),
            Some(t) => (Phase::Run, settings.run_timeout, t),
        };
        let deadline = match limit {
            Some(l) => ctx.deadline.min(start + l),
            None => ctx.deadline,
        };
        let by_probe = limit.is_none_or(|l| ctx.deadline < start + l);
        let end = End::TimedOut {
            phase,
            limit: deadline.saturating_duration_since(start),
            by_probe,
        };
        (deadline, end)
    };
    let timed_out = |run: &mut JobRun, end: End| {
        if matches!(
            end,
            End::TimedOut {
                phase: Phase::Queue,
                ..
            }
        ) {
            run.queued = Some(submitted_at.elapsed());
        }
        run.end = end;
    };
    loop {
        let (phase_deadline, phase_end) = clock(running_since);

        let observed = match ctx
            .bounded_until(phase_deadline, handle.poll(phase_deadline, &ctx.cancel))
            .await
        {
            Ok(Ok(o)) => {
                failures = 0;
                Some(o)
            }
            Ok(Err(BackendError::Cancelled)) | Err(Stop::Cancelled) => {
                run.end = End::Cancelled;
                break;
            }
            Err(Stop::Timeout) => {
                timed_out(run, phase_end);
                break;
            }
            Ok(Err(BackendError::TimedOut { .. })) if Instant::now() >= phase_deadline => {
                timed_out(run, phase_end);
                break;
            }
            Ok(Err(e)) => {
                failures += 1;
                run.notes.push(format!("state query failed: {e}"));
                if failures >= MAX_POLL_FAILURES {
                    run.end = End::LostTrack(e);
                    break;
                }
                None
            }
        };

        if let Some(o) = observed {
            let mut label = o.state.label().to_string();
            if o.state == JobState::Pending {
                if let Some(r) = o
                    .reason
                    .as_deref()
                    .filter(|r| !r.is_empty() && *r != "None")
                {
                    label = format!("pending ({r})");
                }
            }
            if label != last_label {
                let mut note = o.raw.clone();
                if let Some(r) = o
                    .reason
                    .as_deref()
                    .filter(|r| !r.is_empty() && *r != "None")
                {
                    let _ = write!(note, ": {r}");
                }
                if let Some(h) = &o.host {
                    let _ = write!(note, " on {h}");
                }
                if o.state.is_final() {
                    if let Some(e) = o.exit {
                        let _ = write!(note, ", {}", e.describe());
                    }
                }
                run.event(o.state.label(), note);
                last_label = label;
            }
            run.acct.merge(&o.acct);
            if running_since.is_none() && (o.state.is_running() || o.state.is_final()) {
                running_since = Some(Instant::now());
                let mut queued = submitted_at.elapsed();
                if o.state.is_final() {
                    // Never seen running (a short job between two polls): its run time, as
                    // the batch system reports it, was not spent in the queue.
                    queued = queued.saturating_sub(run.acct.wall.unwrap_or_default());
                }
                run.queued = Some(queued);
            }
            if o.exit.is_some() {
                run.exit = o.exit;
            }
            let is_final = o.state.is_final();
            let held = o.state == JobState::Held;
            run.last = Some(o);
            if is_final {
                run.end = End::Finished;
                // Accounting and output retrieval may use the rest of the probe's time.
                let deadline = (Instant::now() + CANCEL_BUDGET).max(ctx.deadline);
                if held {
                    // A held job stays in the queue until removed: do it.
                    let cleanup = Instant::now() + CANCEL_BUDGET;
                    cancel_handle(handle.as_mut(), run, "removed", cleanup).await;
                }
                wrap_up(handle.as_mut(), run, deadline).await;
                return;
            }
        }

        // A quick answer does not stop the clock: the phase (maybe a new one) may be over.
        let (phase_deadline, phase_end) = clock(running_since);
        if Instant::now() >= phase_deadline {
            timed_out(run, phase_end);
            break;
        }
        let next = (Instant::now() + settings.poll_interval).min(phase_deadline);
        if let Err(Stop::Cancelled) = ctx
            .bounded_until(next + CANCEL_BUDGET, handle.wait(next))
            .await
        {
            run.end = End::Cancelled;
            break;
        }
    }

    // Timed out, lost or cancelled: the job must not be left behind. The cleanup has one
    // budget, within the runner's grace past the deadline.
    let cleanup = Instant::now() + CANCEL_BUDGET;
    cancel_handle(handle.as_mut(), run, "cancelled", cleanup).await;
    wrap_up(handle.as_mut(), run, cleanup).await;
}

/// The job is over: the handle no longer cancels it on drop; accounting and output by
/// `deadline`.
async fn wrap_up(handle: &mut dyn Handle, run: &mut JobRun, deadline: Instant) {
    handle.settle();
    let mut notes = Vec::new();
    let mut acct = run.acct;
    handle.finish(deadline, &mut acct, &mut notes).await;
    run.acct = acct;
    run.notes.extend(notes);
}

/// Cancels the job at the batch system and waits (until `deadline`) to see it gone.
async fn cancel_handle(handle: &mut dyn Handle, run: &mut JobRun, verb: &str, deadline: Instant) {
    let id = handle.id().to_string();
    // Cleanup must happen even when gridprobe is stopping: a token that never fires.
    let never = CancellationToken::new();
    match handle.cancel(deadline).await {
        Ok(()) => {
            run.event("cancel", format!("requested by gridprobe ({verb})"));
            run.cancel_note = Some(format!("job {id} {verb} at the batch system"));
        }
        Err(e) => {
            run.cancel_note = Some(format!("cancelling job {id} failed: {e}"));
            return;
        }
    }
    // Seeing the final state confirms it and gives the accounting of what ran.
    while Instant::now() < deadline {
        match handle.poll(deadline, &never).await {
            // Held is final for gridprobe, but a removed job has not left that state yet.
            Ok(o) if o.state.is_final() && o.state != JobState::Held => {
                run.event(o.state.label(), o.raw.clone());
                run.acct.merge(&o.acct);
                if o.exit.is_some() {
                    run.exit = o.exit;
                }
                return;
            }
            Ok(_) | Err(_) => {}
        }
        let next = (Instant::now() + Duration::from_millis(250)).min(deadline);
        handle.wait(next).await;
    }
    run.notes.push(format!(
        "job {id} was not seen gone within {} of its cancellation",
        format_duration(CANCEL_BUDGET)
    ));
}

/// After a submission that did not answer: cancel whatever job carries the tag.
async fn cleanup_tagged(backend: &dyn Backend, job: &Prepared, run: &mut JobRun) {
    match backend
        .cancel_tagged(&job.tag, Instant::now() + CANCEL_BUDGET)
        .await
    {
        Ok(()) => {
            run.cancel_note = Some(format!(
                "any job named {} was cancelled at the batch system",
                job.tag
            ))
        }
        Err(e) => run.cancel_note = Some(format!("cancelling jobs named {} failed: {e}", job.tag)),
    }
}

// ---------------------------------------------------------------------------------------------
// The `ce` kind

/// A built `ce` probe.
#[derive(Debug)]
struct CeProbe {
    settings: CeSettings,
}

/// Builds the probe, checking every parameter with positions.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    let params: CeParams = def
        .params
        .deserialize(&config.sources)
        .map_err(|d| vec![d])?;
    let settings = CeSettings::from_params(def, config, params)?;
    Ok(Arc::new(CeProbe { settings }))
}

#[async_trait]
impl Probe for CeProbe {
    async fn run(&self, ctx: &ProbeContext) -> Outcome {
        if ctx.cancel.is_cancelled() {
            return Outcome::unknown("cancelled before start");
        }
        let spec = JobSpec {
            payload: Payload::Inline(CE_PAYLOAD),
            args: Vec::new(),
            env: Vec::new(),
            inputs: Vec::new(),
        };
        let (run, _) = run_job(&self.settings, &spec, ctx, &[]).await;
        let outcome = match run.failure() {
            Some(o) => o,
            None => {
                let job = run.job_name();
                let timing = run.timing_text();
                let timing = if timing.is_empty() {
                    String::new()
                } else {
                    format!(" ({timing})")
                };
                match run.exit {
                    Some(Exit {
                        code: Some(0),
                        signal: None | Some(0),
                    }) => match run.queue_warning(&self.settings) {
                        Some(w) => Outcome::warning(format!("{w}: {job} completed{timing}")),
                        None => Outcome::ok(format!("{job} completed{timing}")),
                    },
                    Some(e) => {
                        Outcome::critical(format!("{job} completed with {}{timing}", e.describe()))
                    }
                    None => Outcome::unknown(format!(
                        "{job} completed, but its exit code is not known{timing}"
                    )),
                }
            }
        };
        let details = run.details("");
        outcome.with_details(details).with_perfdata(run.perfdata())
    }

    fn check_instance(&self, ctx: &ProbeContext) -> Result<(), String> {
        self.settings
            .check_instance(ctx)
            .map_err(|e| format!("ce probe {}: {e}", ctx.metric))
    }
}

#[cfg(test)]
pub(crate) mod tests;
