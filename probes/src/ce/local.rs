//! The `local` backend: the job is a child process of gridprobe, for laptops and the demo.
//!
//! The wrapper runs under `/bin/sh` in the job's directory, in a process group of its own, its
//! output going to files as a batch job's would. A thread waits for it with `wait4`, which
//! gives the exact CPU time and peak memory of the job and the children it waited for. There is
//! no queue: the job runs as soon as it is submitted. Cancelling sends SIGTERM to the group,
//! then SIGKILL after the grace; when the job ends, anything it left running in its group is
//! killed, and dropping the handle kills the group too.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{
    Accounting, Backend, BackendError, Exit, Handle, JobState, Observed, Prepared, STDERR_FILE,
    STDOUT_FILE, WRAPPER,
};
use crate::process::{ProcessGroup, FINAL_GRACE, TERM_GRACE};
use crate::reaper;

/// The local backend.
#[derive(Debug, Clone, Default)]
pub(crate) struct Local {
    /// Set in the job's environment: the probe's credential (`X509_USER_PROXY` or
    /// `BEARER_TOKEN_FILE`), as the batch backends pass it to their commands.
    pub(crate) env: Vec<(String, String)>,
}

#[async_trait]
impl Backend for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn describe(&self) -> String {
        "local backend (the job is a child process of gridprobe)".to_string()
    }

    async fn submit(
        &self,
        job: &Prepared,
        _deadline: Instant,
        _cancel: &CancellationToken,
    ) -> Result<Box<dyn Handle>, BackendError> {
        let open = |name: &str| {
            std::fs::File::create(job.dir.join(name)).map_err(|e| BackendError::Spawn {
                program: WRAPPER.to_string(),
                reason: format!("cannot create {name}: {e}"),
            })
        };
        let (out, err) = (open(STDOUT_FILE)?, open(STDERR_FILE)?);
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg(WRAPPER)
            .current_dir(&job.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .process_group(0);
        // Before the spawn: the child's CPU time starts counting there too.
        let started = Instant::now();
        // Registered: gridprobe is a child subreaper, and its reaping of orphans must leave
        // this child's status to `wait_for` (`reaper.rs`).
        let (child, owned) =
            reaper::spawn_owned(|| cmd.spawn(), |c| Some(c.id())).map_err(|e| {
                BackendError::Spawn {
                    program: "/bin/sh".to_string(),
                    reason: e.to_string(),
                }
            })?;
        let pid = child.id();
        let group = ProcessGroup::new(Some(pid));
        let (tx, rx) = oneshot::channel();
        let raw_pid = libc::pid_t::try_from(pid).unwrap_or(0);
        // A plain thread, not the runtime's blocking pool: it lives as long as the job, and a
        // runtime shutting down must not wait for it.
        let spawned = std::thread::Builder::new()
            .name("gridprobe-job-wait".into())
            .spawn(move || {
                let r = wait_for(raw_pid);
                let _ = tx.send(r.map(|(status, ru)| Ended {
                    status,
                    ru: Box::new(ru),
                    at: Instant::now(),
                }));
                // Reaped by wait4 above; dropping the std handle does not wait again.
                drop(child);
                drop(owned);
            });
        if let Err(e) = spawned {
            // The group guard kills the job as `group` drops.
            return Err(BackendError::Spawn {
                program: "/bin/sh".to_string(),
                reason: format!("cannot start a thread to wait for it: {e}"),
            });
        }
        tracing::debug!(pid, dir = %job.dir.display(), "local job started");
        Ok(Box::new(LocalJob {
            id: pid.to_string(),
            group,
            rx: Some(rx),
            started,
            ended: None,
            cancelled: false,
        }))
    }

    async fn cancel_tagged(&self, _tag: &str, _deadline: Instant) -> Result<(), BackendError> {
        // Submission is a synchronous spawn: it returned a handle or started nothing.
        Ok(())
    }
}

/// What `wait4` reported.
struct Ended {
    status: libc::c_int,
    ru: Box<libc::rusage>,
    at: Instant,
}

/// A running local job.
struct LocalJob {
    id: String,
    group: ProcessGroup,
    rx: Option<oneshot::Receiver<io::Result<Ended>>>,
    started: Instant,
    ended: Option<Result<Ended, String>>,
    cancelled: bool,
}

impl LocalJob {
    /// Takes the waiter's answer if there is one.
    fn take(&mut self, r: Result<io::Result<Ended>, oneshot::error::RecvError>) {
        self.rx = None;
        self.ended = Some(match r {
            Ok(Ok(e)) => Ok(e),
            Ok(Err(e)) => Err(format!("cannot wait for the job: {e}")),
            Err(_) => Err("the thread waiting for the job is gone".to_string()),
        });
    }

    /// Waits for the end until `until`.
    async fn wait_end(&mut self, until: Instant) {
        let Some(rx) = self.rx.as_mut() else { return };
        if let Ok(r) = tokio::time::timeout_at(until.into(), rx).await {
            self.take(r);
        }
    }

    fn observed(&self) -> Result<Observed, BackendError> {
        let Some(ended) = &self.ended else {
            return Ok(Observed::state(JobState::Running, "running"));
        };
        let ended = ended
            .as_ref()
            .map_err(|e| BackendError::Invalid(e.clone()))?;
        let exit = if libc::WIFEXITED(ended.status) {
            Exit {
                code: Some(libc::WEXITSTATUS(ended.status)),
                signal: None,
            }
        } else if libc::WIFSIGNALED(ended.status) {
            Exit {
                code: None,
                signal: Some(libc::WTERMSIG(ended.status)),
            }
        } else {
            Exit::default()
        };
        let state = if self.cancelled {
            JobState::Cancelled
        } else {
            JobState::Completed
        };
        let mut o = Observed::state(
            state,
            if self.cancelled {
                "killed by gridprobe"
            } else {
                "exited"
            },
        );
        o.exit = Some(exit);
        o.acct = Accounting {
            wall: Some(ended.at.saturating_duration_since(self.started)),
            cpu: Some(timeval(&ended.ru.ru_utime) + timeval(&ended.ru.ru_stime)),
            // Linux reports kilobytes.
            max_rss: u64::try_from(ended.ru.ru_maxrss)
                .ok()
                .map(|kb| kb.saturating_mul(1024)),
        };
        Ok(o)
    }
}

#[async_trait]
impl Handle for LocalJob {
    fn id(&self) -> &str {
        &self.id
    }

    async fn poll(
        &mut self,
        _deadline: Instant,
        _cancel: &CancellationToken,
    ) -> Result<Observed, BackendError> {
        if let Some(rx) = self.rx.as_mut() {
            match rx.try_recv() {
                Ok(r) => self.take(Ok(r)),
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.rx = None;
                    self.ended = Some(Err("the thread waiting for the job is gone".into()));
                }
            }
        }
        self.observed()
    }

    async fn wait(&mut self, until: Instant) {
        if self.rx.is_some() {
            self.wait_end(until).await;
        } else {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    async fn cancel(&mut self, deadline: Instant) -> Result<(), BackendError> {
        if self.ended.is_some() {
            return Ok(());
        }
        self.cancelled = true;
        self.group.signal(libc::SIGTERM);
        self.wait_end((Instant::now() + TERM_GRACE).min(deadline))
            .await;
        // Also kills members that outlived the wrapper or ignore SIGTERM.
        self.group.signal(libc::SIGKILL);
        self.wait_end((Instant::now() + FINAL_GRACE).min(deadline + FINAL_GRACE))
            .await;
        Ok(())
    }

    async fn finish(
        &mut self,
        _deadline: Instant,
        _acct: &mut Accounting,
        _notes: &mut Vec<String>,
    ) {
        // A job that has ended has no business leaving processes behind.
        self.group.signal(libc::SIGKILL);
        self.group.disarm();
    }

    fn settle(&mut self) {}
}

/// Waits for `pid` with `wait4`, retrying on EINTR.
fn wait_for(pid: libc::pid_t) -> io::Result<(libc::c_int, libc::rusage)> {
    if pid <= 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"));
    }
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain data; all-zero is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes only into the two locals; pid is our own child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            return Ok((status, ru));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn timeval(tv: &libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0).min(999_999);
    Duration::new(secs, micros * 1000)
}
