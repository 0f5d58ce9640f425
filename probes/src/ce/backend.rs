//! Backends: the batch system interface (`Backend`, `Handle`) and running its commands (`Cli`).

use super::*;

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
    /// A remote service (A-REX) could not be reached or refused the request.
    #[error("{what}: {reason}")]
    Remote { what: String, reason: String },
    /// A remote service could not be reached at all (its name did not resolve, no TCP
    /// connection): the one failure gridprobe's own host can cause, so it carries the
    /// [`ConnectionFault`] the self-check reads (`[server.self_check]`).
    #[error("{what}: {reason}")]
    Unreachable {
        what: String,
        reason: String,
        fault: ConnectionFault,
    },
    /// gridprobe's side cannot do what the remote service requires (a TLS key exchange it
    /// lacks): UNKNOWN, not the site's failure.
    #[error("{what}: {reason}")]
    Unsupported { what: String, reason: String },
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
    /// `slurm`, `htcondor`, `arc`, `local`.
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
        // Registered until waited for: the orphan reaper must leave its status alone.
        match crate::reaper::spawn_owned(|| cmd.spawn(), |c| Some(c.id())) {
            Ok((mut child, owned)) => {
                let _ = std::thread::Builder::new()
                    .name("gridprobe-cancel".into())
                    .spawn(move || {
                        let _ = child.wait();
                        drop(owned);
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
pub(crate) fn spawn_reason(e: &io::Error, has_bin_dir: bool) -> String {
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
pub(crate) fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" / ")
}

/// The result of a finished batch command.
pub(crate) fn command_result(
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
