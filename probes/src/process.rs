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
//! * A process that leaves the group (`setsid`, a daemonising plugin) is still killed at the end
//!   of the run: gridprobe is a child subreaper, so such a process becomes gridprobe's child
//!   when its parent exits, and carries the run's marker ([`RUN_MARKER`]) in its environment.
//!   How it is found without any per-run search, and why reaping those orphans never takes the
//!   exit status of a child gridprobe waits for, is in `reaper.rs`.

use std::ffi::OsStr;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::reaper;

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
pub use crate::reaper::RUN_MARKER;

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

    /// Sends `signal` to every member; a group already gone is fine. True when the group had
    /// a member to signal (a zombie not yet reaped counts).
    pub(crate) fn signal(&self, signal: libc::c_int) -> bool {
        let Some(pgid) = self.pgid else { return false };
        // SAFETY: killpg only sends a signal; pgid > 1 is the program's own group.
        let rc = unsafe { libc::killpg(pgid, signal) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            // ESRCH: nothing left in the group, which is the goal.
            if err.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(pgid, signal, %err, "cannot signal child process group");
            }
        }
        rc == 0
    }

    /// The group id, while armed.
    pub(crate) fn id(&self) -> Option<libc::pid_t> {
        self.pgid
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
        let _ = self.signal(libc::SIGKILL);
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
    // What the run leaves outside its process group comes back to gridprobe (`reaper.rs`);
    // dropped last, so that a run dropped half-way still has its leftovers swept.
    let run = reaper::Run::start();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env(RUN_MARKER, run.marker())
        .process_group(0)
        .kill_on_drop(true);
    let program = cmd.as_std().get_program().to_os_string();
    let started = Instant::now();
    let (spawned, owned) = reaper::spawn_owned(|| cmd.spawn(), Child::id)?;
    // Declared after `owned`, so dropped (reaped, or handed to tokio's reaping of dropped
    // children) before its pid is unregistered.
    let mut child = spawned;
    // Declared after `child`, so dropped first: the group is killed while the program is still
    // unreaped.
    let mut group = ProcessGroup::new(child.id());
    let pgid = group.id();
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
    // What the run left: killed and reaped before the run counts as over (at once when there
    // is nothing, the normal case).
    run.finish(pgid, sup.group_left).await;
    drop(owned);
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
    /// The final SIGKILL found members of the group (now children of gridprobe to reap).
    group_left: bool,
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
        group_left: false,
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
        sup.group_left = group.signal(libc::SIGKILL);
        if sup.pipes_held {
            let _ = tokio::time::timeout(FINAL_GRACE, eof.cancelled()).await;
        }
    } else {
        tracing::info!(pid = group.pgid, ending = ?sup.ending, "killing child process group");
        let _ = group.signal(libc::SIGTERM);
        tokio::select! {
            r = child.wait() => sup.record(r),
            _ = tokio::time::sleep(TERM_GRACE) => {}
        }
        // Also kills members that outlived the program or ignore SIGTERM.
        sup.group_left = group.signal(libc::SIGKILL);
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

    /// Live processes whose command line contains `needle`.
    fn live_with(needle: &str) -> Vec<i32> {
        std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(needle))
                    .unwrap_or(false)
            })
            .collect()
    }

    fn gone_soon(needle: &str) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if live_with(needle).is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Issue 13: a plugin's child that calls `setsid` left the process group and survived
    /// the run (one leaked process per run).
    #[tokio::test]
    async fn a_child_that_leaves_the_group_with_setsid_is_killed_at_the_end_of_the_run() {
        let tmp = tempfile::tempdir().expect("tmp");
        // A unique duration names the leaked process.
        let needle = format!("1000.{}", std::process::id());
        let plugin = tmp.path().join("check_leaky");
        std::fs::write(
            &plugin,
            format!(
                "#!/bin/sh\nsetsid sleep {needle} >/dev/null 2>&1 &\n\
                 # its own grandchild too, double-forked out of the session\n\
                 (setsid sh -c 'sleep {needle}1 & exit 0' >/dev/null 2>&1 &)\n\
                 sleep 0.3\necho 'OK - started'\nexit 0\n"
            ),
        )
        .expect("plugin");
        std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let cancel = CancellationToken::new();
        for run_no in 0..3 {
            let f = run(
                Command::new(&plugin),
                Instant::now() + Duration::from_secs(10),
                &cancel,
                1024,
            )
            .await
            .expect("spawn");
            assert!(f.success(), "{f:?}");
            assert!(
                gone_soon(&needle),
                "run {run_no}: leaked processes {:?}",
                live_with(&needle)
            );
        }
    }

    /// At a timeout too, and the marker never reaches processes of other runs.
    #[tokio::test]
    async fn a_timed_out_run_leaves_nothing_behind_and_spares_other_runs() {
        let needle = format!("2000.{}", std::process::id());
        let other = format!("3000.{}", std::process::id());
        let mut bystander = Command::new("/bin/sh");
        bystander.args([
            "-c",
            &format!("setsid sleep {other} >/dev/null 2>&1 & sleep 5"),
        ]);
        let cancel = CancellationToken::new();
        let long = run(
            bystander,
            Instant::now() + Duration::from_secs(30),
            &cancel,
            64,
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            &format!("setsid sleep {needle} >/dev/null 2>&1 & sleep 1000"),
        ]);
        let short = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let f = run(
                cmd,
                Instant::now() + Duration::from_millis(500),
                &cancel,
                64,
            )
            .await
            .expect("spawn");
            assert_eq!(f.ending, Ending::TimedOut);
            assert!(gone_soon(&needle), "leaked {:?}", live_with(&needle));
            assert!(
                !live_with(&other).is_empty(),
                "another run's process was killed"
            );
            cancel.cancel();
        };
        let (f, ()) = tokio::join!(long, short);
        assert_eq!(f.expect("spawn").ending, Ending::Cancelled);
        assert!(gone_soon(&other), "leaked {:?}", live_with(&other));
    }

    /// gridprobe is a subreaper: a plugin's background child that outlives the plugin becomes
    /// gridprobe's child, and one that exits on its own must not stay a zombie.
    #[tokio::test]
    async fn an_orphan_that_exits_by_itself_is_reaped_by_the_end_of_the_run() {
        let tmp = tempfile::tempdir().expect("tmp");
        let pid_file = tmp.path().join("orphan.pid");
        let mut cmd = Command::new("/bin/sh");
        // The subshell exits at once, so `sleep` is orphaned; it ends before the plugin does.
        cmd.args([
            "-c",
            &format!(
                "(sleep 0.05 >/dev/null 2>&1 & echo $! > {})\nsleep 0.4\necho OK",
                tmp.path().join("orphan.pid").display()
            ),
        ]);
        let cancel = CancellationToken::new();
        let f = run(cmd, Instant::now() + Duration::from_secs(10), &cancel, 1024)
            .await
            .expect("spawn");
        assert!(f.success(), "{f:?}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        // Reaped: no /proc entry at all (a zombie would still have one).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || !stat.contains(") Z "),
            "the orphan {pid} is left as a zombie: {stat}"
        );
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL (9)");
        assert_eq!(signal_name(99), "signal 99");
    }
}
