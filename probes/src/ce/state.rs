//! Job states and what is known of a job: the state timeline, exit, accounting, the result text.

use super::*;

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

    pub(crate) fn is_running(&self) -> bool {
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
    pub(crate) fn new(backend: &str) -> Self {
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

    pub(crate) fn event(&mut self, label: &str, note: impl Into<String>) {
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
            // gridprobe cannot speak to this CE (its TLS lacks what the CE insists on): the
            // monitoring's limit, not the site's failure.
            End::SubmitFailed(e @ BackendError::Unsupported { .. }) => Outcome::unknown(format!(
                "submission to {} failed on gridprobe's side: {e}{cancelled}",
                self.backend
            )),
            End::SubmitFailed(e) => with_fault(
                Outcome::critical(format!(
                    "submission to {} failed: {e}{cancelled}",
                    self.backend
                )),
                e,
            ),
            End::LostTrack(e) => with_fault(
                Outcome::critical(format!("{job}: cannot query its state: {e}{cancelled}")),
                e,
            ),
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
    pub(crate) fn resources_text(&self) -> Option<String> {
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
    pub(crate) fn cpu_efficiency(&self) -> Option<f64> {
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
pub(crate) fn tail_bounded(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {start} bytes cut ...]\n{}", &text[start..])
}

pub(crate) fn round3(x: f64) -> f64 {
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
    crate::outcome::fmt_utc(ms, crate::outcome::UtcPrecision::Millis)
}

/// Marks an outcome whose CE could not be reached at all (see [`BackendError::Unreachable`]).
pub(super) fn with_fault(o: Outcome, e: &BackendError) -> Outcome {
    match e {
        BackendError::Unreachable { fault, .. } => o.with_connection_fault(*fault),
        _ => o,
    }
}
