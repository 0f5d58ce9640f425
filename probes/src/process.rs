//! Child processes run under a probe's deadline, shared by the kinds that run external programs
//! (`nagios` plugins, the `xrdfs`/`xrdcp` clients of the `storage` kind).
//!
//! * The program runs in its own process group, so that it and everything it starts can be
//!   signalled together.
//! * At the deadline (or on cancellation) the group gets SIGTERM, then SIGKILL after
//!   [`TERM_GRACE`] or as soon as the program itself exits. SIGTERM first lets Python/Perl probes
//!   remove their temporary files and proxies; the grace is short so that a run ends only a
//!   moment after its deadline.
//! * When the program exits normally, whatever it left behind in its group is killed too: a
//!   check that has answered has no business leaving processes behind in a long-running monitor.
//! * If the run future is dropped half-way (the runner may do so), a drop guard kills the group.
//! * stdout and stderr are read concurrently, each kept up to a limit; the rest is read and
//!   discarded so that the program never blocks on a full pipe.
//!
//! A process that leaves the group on purpose (`setsid`) escapes all of this, as it does in
//! Nagios.

use std::ffi::OsStr;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Time between SIGTERM and SIGKILL of the process group at a timeout.
pub const TERM_GRACE: Duration = Duration::from_secs(2);
/// Time given, after the final SIGKILL, for the program to be reaped and its pipes to close
/// (a process stuck in the kernel, e.g. on a hung NFS or CVMFS mount, may never die).
pub(crate) const FINAL_GRACE: Duration = Duration::from_secs(1);
/// Time given, after the program exits, for its pipes to close; longer means a background
/// process inherited them.
const PIPE_GRACE: Duration = Duration::from_secs(1);
/// Read buffer size (a Linux pipe holds 64 KiB).
const CHUNK: usize = 64 * 1024;

/// Why supervision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The program exited (or could not be waited for).
    Exited,
    /// The deadline passed; the group was killed.
    TimedOut,
    /// The cancellation token fired; the group was killed.
    Cancelled,
}

/// Bytes read from one pipe.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    /// The first `limit` bytes.
    pub bytes: Vec<u8>,
    /// Everything written, kept or not.
    pub total: u64,
    /// Why reading stopped early, if it did.
    pub error: Option<io::Error>,
}

impl Captured {
    /// Whether more was written than kept.
    pub(crate) fn truncated(&self) -> bool {
        self.total > self.bytes.len() as u64
    }
}

/// What happened to one program run.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Why supervision ended.
    pub ending: Ending,
    /// The exit status, when the program was reaped.
    pub status: Option<ExitStatus>,
    /// Why waiting for the program failed, if it did.
    pub wait_error: Option<io::Error>,
    /// The program exited but something kept its pipes open past [`PIPE_GRACE`].
    pub pipes_held: bool,
    /// Its standard output.
    pub stdout: Captured,
    /// Its standard error.
    pub stderr: Captured,
    /// From spawn to the end of supervision.
    pub elapsed: Duration,
}

impl Finished {
    /// Exited by itself with exit code 0.
    pub(crate) fn success(&self) -> bool {
        self.ending == Ending::Exited && self.status.is_some_and(|s| s.success())
    }
}

/// Sends signals to a process group, and SIGKILL when dropped while armed.
///
/// The group id is the program's pid. While the program is not reaped its pid cannot be reused,
/// and while any member lives the group id cannot either; after both, a new group with the same
/// id would need a full wrap of the pid space between two of our system calls, which we accept.
/// Also used by the `ce` kind's local backend, whose jobs run in a group of their own.
pub(crate) struct ProcessGroup {
    pgid: Option<libc::pid_t>,
}

impl ProcessGroup {
    /// The group led by `pid` (none for a missing or unusable pid).
    pub(crate) fn new(pid: Option<u32>) -> Self {
        // Never 0 or 1: killpg(0) would signal gridprobe's own group.
        let pgid = pid
            .and_then(|p| libc::pid_t::try_from(p).ok())
            .filter(|p| *p > 1);
        ProcessGroup { pgid }
    }

    /// Sends `signal` to every member; a group already gone is fine.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        let Some(pgid) = self.pgid else { return };
        // SAFETY: killpg only sends a signal; pgid > 1 is the program's own group.
        let rc = unsafe { libc::killpg(pgid, signal) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            // ESRCH: nothing left in the group, which is the goal.
            if err.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(pgid, signal, %err, "cannot signal child process group");
            }
        }
    }

    /// Forgets the group: no signal is sent any more, on drop neither.
    pub(crate) fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.pgid.is_some() {
            tracing::debug!(pgid = self.pgid, "run dropped: killing its process group");
        }
        self.signal(libc::SIGKILL);
    }
}

/// Spawns `cmd` in its own process group (stdin from /dev/null, stdout and stderr captured up
/// to `limit` bytes each) and supervises it until it exits, `deadline` passes or `cancel`
/// fires; then nothing of its group is left running. The error is the spawn error.
pub(crate) async fn run(
    mut cmd: Command,
    deadline: Instant,
    cancel: &CancellationToken,
    limit: usize,
) -> io::Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let program = cmd.as_std().get_program().to_os_string();
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    // Declared after `child`, so dropped first: the group is killed while the program is still
    // unreaped.
    let mut group = ProcessGroup::new(child.id());
    tracing::debug!(program = %OsStr::to_string_lossy(&program), pid = child.id(), "process started");

    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stop = CancellationToken::new();
    let eof = CancellationToken::new();
    let reading = async {
        let captured = tokio::join!(capture(stdout, limit, &stop), capture(stderr, limit, &stop));
        eof.cancel();
        captured
    };
    let supervising = async {
        let s = supervise(&mut child, &mut group, deadline, cancel, &eof).await;
        stop.cancel();
        s
    };
    let ((stdout, stderr), sup) = tokio::join!(reading, supervising);
    let finished = Finished {
        ending: sup.ending,
        status: sup.status,
        wait_error: sup.wait_error,
        pipes_held: sup.pipes_held,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    };
    tracing::debug!(
        program = %OsStr::to_string_lossy(&program),
        ending = ?finished.ending,
        status = ?finished.status,
        stdout_bytes = finished.stdout.total,
        stderr_bytes = finished.stderr.total,
        elapsed_ms = finished.elapsed.as_millis() as u64,
        "process finished"
    );
    Ok(finished)
}

/// What supervision saw of the program.
struct Supervised {
    ending: Ending,
    status: Option<ExitStatus>,
    wait_error: Option<io::Error>,
    pipes_held: bool,
}

impl Supervised {
    fn record(&mut self, r: io::Result<ExitStatus>) {
        match r {
            Ok(s) => self.status = Some(s),
            Err(e) => self.wait_error = Some(e),
        }
    }
}

/// Waits for the program to exit, the deadline or cancellation, and kills its process group.
async fn supervise(
    child: &mut Child,
    group: &mut ProcessGroup,
    deadline: Instant,
    cancel: &CancellationToken,
    eof: &CancellationToken,
) -> Supervised {
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut sup = Supervised {
        ending: Ending::Exited,
        status: None,
        wait_error: None,
        pipes_held: false,
    };

    tokio::select! {
        biased;
        _ = cancel.cancelled() => sup.ending = Ending::Cancelled,
        r = child.wait() => sup.record(r),
        _ = tokio::time::sleep_until(deadline) => sup.ending = Ending::TimedOut,
    }

    if sup.ending == Ending::Exited {
        // Output written before exit is already in the pipes: EOF should follow at once,
        // unless a background process inherited them.
        tokio::select! {
            _ = eof.cancelled() => {}
            _ = tokio::time::sleep(PIPE_GRACE) => sup.pipes_held = true,
            _ = cancel.cancelled() => sup.pipes_held = !eof.is_cancelled(),
        }
        group.signal(libc::SIGKILL);
        if sup.pipes_held {
            let _ = tokio::time::timeout(FINAL_GRACE, eof.cancelled()).await;
        }
    } else {
        tracing::info!(pid = group.pgid, ending = ?sup.ending, "killing child process group");
        group.signal(libc::SIGTERM);
        tokio::select! {
            r = child.wait() => sup.record(r),
            _ = tokio::time::sleep(TERM_GRACE) => {}
        }
        // Also kills members that outlived the program or ignore SIGTERM.
        group.signal(libc::SIGKILL);
        let reaped = sup.status.is_some() || sup.wait_error.is_some();
        let final_wait = async {
            if !reaped {
                let r = child.wait().await;
                sup.record(r);
            }
            eof.cancelled().await;
        };
        // Past this, `kill_on_drop` and tokio's orphan reaping take over.
        let _ = tokio::time::timeout(FINAL_GRACE, final_wait).await;
    }
    group.disarm();
    sup
}

/// Reads a pipe to its end or until `stop`, keeping the first `limit` bytes.
async fn capture<R: AsyncRead + Unpin>(
    reader: Option<R>,
    limit: usize,
    stop: &CancellationToken,
) -> Captured {
    let mut cap = Captured::default();
    let Some(mut reader) = reader else {
        return cap;
    };
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let read = tokio::select! {
            // Stop first: a process writing without pause must not keep us here.
            biased;
            _ = stop.cancelled() => break,
            r = reader.read(&mut chunk) => r,
        };
        match read {
            Ok(0) => break,
            Ok(n) => {
                let keep = n.min(limit.saturating_sub(cap.bytes.len()));
                cap.bytes.extend_from_slice(&chunk[..keep]);
                cap.total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                cap.error = Some(e);
                break;
            }
        }
    }
    cap
}

/// The signal's conventional name, e.g. "SIGKILL (9)".
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    format!("{name} ({signal})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captures_output_and_exit_status() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let cancel = CancellationToken::new();
        let f = run(cmd, Instant::now() + Duration::from_secs(10), &cancel, 1024)
            .await
            .expect("spawn");
        assert_eq!(f.ending, Ending::Exited);
        assert_eq!(f.status.and_then(|s| s.code()), Some(3));
        assert!(!f.success());
        assert_eq!(f.stdout.bytes, b"out\n");
        assert_eq!(f.stderr.bytes, b"err\n");
    }

    #[tokio::test]
    async fn deadline_kills_the_group() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "sleep 1000"]);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let f = run(
            cmd,
            Instant::now() + Duration::from_millis(300),
            &cancel,
            1024,
        )
        .await
        .expect("spawn");
        assert_eq!(f.ending, Ending::TimedOut);
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL (9)");
        assert_eq!(signal_name(99), "signal 99");
    }
}
