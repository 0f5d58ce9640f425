//! What a run leaves behind: gridprobe as a child subreaper, and the registry that keeps the
//! reaping of orphans away from the children other parts of gridprobe wait for.
//!
//! Every program a run starts carries [`RUN_MARKER`] in its environment (inherited by its
//! descendants) and leads a process group of its own (`process.rs`). What is left in the group
//! at the end of the run is killed by group. A process that left the group (`setsid`, a
//! double-forked daemon) is found without any search of the system:
//!
//! * gridprobe is a *child subreaper* (`PR_SET_CHILD_SUBREAPER`, set at the first run): a
//!   process whose parent dies is re-parented to gridprobe instead of init. A plugin's leftover
//!   therefore becomes a direct child of gridprobe the moment the plugin (or the intermediate
//!   it double-forked through) exits, and the kernel attaches it to gridprobe's main thread.
//! * At the end of a run, the main thread's list of children (`/proc/self/task/<pid>/children`,
//!   one small read) is compared with the children gridprobe started itself (the registry
//!   below). In the normal case the list holds nothing else and the run is over: no per-run
//!   search. Only when something else is there (or the run's process group still had members)
//!   is a sweep made, on the blocking pool: each unknown child is read (`/proc/<pid>/stat`,
//!   `environ`), the ones carrying this run's marker (or the marker of a run of this process
//!   that is over) are SIGKILLed through a pidfd, their children re-parent to gridprobe in turn
//!   and are found by the next round, and every unknown zombie is reaped by its pid.
//! * Orphans that carry no marker of a live run of this process (a descendant that cleared its
//!   environment, or one of another run still going) are left running and remembered; they are
//!   reaped when they exit (seen by a `waitid(WNOWAIT)` at the end of a later run).
//!
//! Reaping must never take the exit status of a child someone in gridprobe waits for (a plugin
//! waited for by tokio, `sbatch` run through `process::run`, a `local` CE job waited for by
//! `wait4`): `waitpid(-1)` is never used; a pid is reaped only when it is in the main thread's
//! list, is a zombie and is not registered, all checked while no registered spawn is under way
//! ([`spawn_owned`] holds a read lock from the fork to the registration; the sweep holds the
//! write lock). Every place in gridprobe that starts a child and waits for it goes through
//! [`spawn_owned`] and keeps the returned [`Owned`] until its wait returned. A child started
//! elsewhere without registration is only at risk if it is forked by the main thread itself,
//! since the kernel lists a child under the thread that forked it.
//!
//! Where the subreaper cannot be set or the children list is missing (a kernel without
//! `CONFIG_PROC_CHILDREN`), the end of every run falls back to walking `/proc/*/environ` for
//! the marker (the former design; it costs about 3 ms per run on a busy machine). What both
//! miss: a descendant that clears its environment (`env -i`) *and* leaves the process group,
//! or one that runs as another user.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// The environment variable that marks every process of one run (see the module docs).
pub const RUN_MARKER: &str = "GRIDPROBE_RUN_ID";
/// Rounds of search and kill of the fallback scan: a marked process forking meanwhile is
/// caught by the next round.
const MARKED_ROUNDS: usize = 5;
/// How long a sweep keeps killing and reaping what a run left (a process stuck in the kernel
/// may never die; what is left then is dealt with by a later sweep).
const SWEEP_GRACE: Duration = Duration::from_secs(2);
/// Pause between the rounds of a sweep, while SIGKILLed processes die.
const SWEEP_PAUSE: Duration = Duration::from_millis(2);

/// What the registry knows.
#[derive(Default)]
struct State {
    /// Children whose exit status a waiter in gridprobe collects, with a count: a pid reaped
    /// and reused may be registered twice for a moment.
    owned: HashMap<libc::pid_t, u32>,
    /// Unregistered children seen alive that are not to be killed yet, with the marker they
    /// carry (if any): reaped when they exit.
    kept: HashMap<libc::pid_t, Option<String>>,
    /// Markers of the runs in progress.
    active: HashSet<String>,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Held for reading from a registered child's fork to its registration, for writing while a
/// sweep decides what to reap.
static SPAWNING: RwLock<()> = RwLock::new(());

/// A child whose exit status a waiter in gridprobe collects: while this lives, the orphan
/// reaper leaves its pid alone. Drop it only after the wait returned (or the child was handed
/// to tokio's own reaping of dropped children, which tolerates a pid reaped by someone else).
#[derive(Debug)]
pub(crate) struct Owned(Option<libc::pid_t>);

impl Drop for Owned {
    fn drop(&mut self) {
        let Some(pid) = self.0.take() else { return };
        let mut st = state();
        if let Some(n) = st.owned.get_mut(&pid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.owned.remove(&pid);
            }
        }
    }
}

/// Starts a child with `spawn` and registers its pid (given by `pid`) as one gridprobe waits
/// for, with no sweep in between. Every spawn of a child that is waited for goes through here.
pub(crate) fn spawn_owned<C>(
    spawn: impl FnOnce() -> io::Result<C>,
    pid: impl FnOnce(&C) -> Option<u32>,
) -> io::Result<(C, Owned)> {
    let _spawning = SPAWNING
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let child = spawn()?;
    let pid = pid(&child).and_then(|p| libc::pid_t::try_from(p).ok());
    if let Some(p) = pid {
        *state().owned.entry(p).or_insert(0) += 1;
    }
    Ok((child, Owned(pid)))
}

/// The subreaper is set and the children list readable; set at the first call.
fn subreaper() -> Option<&'static str> {
    static ON: OnceLock<Option<String>> = OnceLock::new();
    ON.get_or_init(|| {
        let path = format!("/proc/self/task/{}/children", std::process::id());
        if let Err(e) = std::fs::metadata(&path) {
            tracing::warn!(%path, %e, "no children list (kernel without CONFIG_PROC_CHILDREN?): \
                 leftovers of plugins are searched in all of /proc at the end of every run");
            return None;
        }
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag of this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            tracing::warn!(%e, "cannot become a child subreaper: leftovers of plugins are \
                 searched in all of /proc at the end of every run");
            return None;
        }
        Some(path)
    })
    .as_deref()
}

/// Makes gridprobe a child subreaper if it is not one yet (see the module docs). Called when a
/// run starts, so that its orphans come back to gridprobe.
pub(crate) fn ensure_subreaper() {
    let _ = subreaper();
}

/// The pids in the main thread's children list (empty when unreadable).
fn children(path: &str) -> Vec<libc::pid_t> {
    // A small file: "pid pid pid " or nothing.
    let Ok(text) = std::fs::read(path) else {
        return Vec::new();
    };
    text.split(|b| b.is_ascii_whitespace())
        .filter_map(|w| std::str::from_utf8(w).ok()?.parse().ok())
        .collect()
}

/// A run of a program under [`RUN_MARKER`]: registers the marker as live until
/// [`Run::finish`] (or drop) deals with what the run left.
#[derive(Debug)]
pub(crate) struct Run {
    marker: Option<String>,
}

impl Run {
    /// A new run with a marker unique to this gridprobe process.
    pub(crate) fn start() -> Run {
        ensure_subreaper();
        let marker = new_run_marker();
        state().active.insert(marker.clone());
        Run {
            marker: Some(marker),
        }
    }

    /// The marker to put into the program's environment.
    pub(crate) fn marker(&self) -> &str {
        self.marker.as_deref().unwrap_or_default()
    }

    /// Kills and reaps what the run left outside its process group (and, with `group_left`,
    /// the group's members killed a moment ago: they are children of gridprobe now). Returns
    /// at once in the normal case; a sweep runs on the blocking pool when there is something.
    pub(crate) async fn finish(mut self, pgid: Option<libc::pid_t>, group_left: bool) {
        let Some(marker) = self.marker.take() else {
            return;
        };
        match subreaper() {
            Some(path) if !group_left && !needs_sweep(path, &marker) => {
                state().active.remove(&marker);
            }
            Some(_) => {
                let _ = tokio::task::spawn_blocking(move || sweep_for(marker, pgid)).await;
            }
            None => {
                let _ = tokio::task::spawn_blocking(move || {
                    kill_marked(&marker);
                    state().active.remove(&marker);
                })
                .await;
            }
        }
    }
}

impl Drop for Run {
    /// A run dropped half-way: the sweep runs in the background (on the blocking pool when
    /// there is a runtime).
    fn drop(&mut self) {
        let Some(marker) = self.marker.take() else {
            return;
        };
        let work = move || match subreaper() {
            Some(_) => {
                sweep_for(marker, None);
            }
            None => {
                kill_marked(&marker);
                state().active.remove(&marker);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(work);
            }
            Err(_) => work(),
        }
    }
}

/// A marker value unique to one run of this gridprobe process: `<pid>-<start ns>-<counter>`.
fn new_run_marker() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{started}-{n}", std::process::id())
}

/// Whether the end of the run with `marker` needs a sweep: an unregistered child that was never
/// seen, one carrying this run's marker or a finished run's, or a kept one that has exited.
fn needs_sweep(path: &str, marker: &str) -> bool {
    let listed = children(path);
    if listed.is_empty() {
        return false;
    }
    let st = state();
    listed.iter().any(|pid| {
        if st.owned.contains_key(pid) {
            return false;
        }
        match st.kept.get(pid) {
            None => true,
            Some(Some(m)) if m == marker || is_stale(&st, m) => true,
            Some(_) => has_exited(*pid),
        }
    })
}

/// A marker of this process whose run is over.
fn is_stale(st: &State, marker: &str) -> bool {
    own_marker(marker) && !st.active.contains(marker)
}

/// Whether `marker` was made by this process (`<pid>-…`).
fn own_marker(marker: &str) -> bool {
    marker
        .split_once('-')
        .is_some_and(|(pid, _)| pid == std::process::id().to_string())
}

/// Whether child `pid` has exited (a zombie), without reaping it.
fn has_exited(pid: libc::pid_t) -> bool {
    // SAFETY: a zeroed siginfo_t is a valid value for waitid to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on one pid with WNOWAIT only reports, it reaps nothing.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is set by waitid (0 when nothing is reported, as zeroed).
    rc == 0 && unsafe { info.si_pid() } != 0
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Processes SIGKILLed.
    pub killed: usize,
    /// Zombies reaped.
    pub reaped: usize,
}

/// The sweep at the end of the run with `marker` (its process group `pgid`): kills what it
/// left, reaps what died, then forgets the marker.
fn sweep_for(marker: String, pgid: Option<libc::pid_t>) -> Swept {
    let swept = sweep(Some(&marker), pgid);
    // Forgotten only now: until here, its leftovers were not stale.
    state().active.remove(&marker);
    if swept.killed > 0 {
        tracing::info!(
            killed = swept.killed,
            reaped = swept.reaped,
            "killed processes a probe left behind"
        );
    }
    swept
}

/// Rounds of: reap the unregistered zombies among gridprobe's children, SIGKILL the ones that
/// carry `marker` or a finished run's marker, SIGKILL the members of `pgid`; until nothing of
/// the run is left or [`SWEEP_GRACE`] has passed.
pub(crate) fn sweep(marker: Option<&str>, pgid: Option<libc::pid_t>) -> Swept {
    let mut swept = Swept::default();
    let Some(path) = subreaper() else {
        return swept;
    };
    let entry = marker.map(|m| format!("{RUN_MARKER}={m}").into_bytes());
    let until = Instant::now() + SWEEP_GRACE;
    let mut pgid = pgid.filter(|p| *p > 1);
    loop {
        let mut pending = false;
        {
            // No registered spawn is under way while the list is judged and zombies reaped.
            let _no_spawn = SPAWNING
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let listed = children(path);
            let mut st = state();
            st.kept.retain(|pid, _| listed.contains(pid));
            for &pid in &listed {
                if st.owned.contains_key(&pid) {
                    continue;
                }
                match stat_state(pid) {
                    // Gone (reaped by a concurrent sweep).
                    None => {}
                    Some(b'Z' | b'X') => {
                        if reap(pid) {
                            swept.reaped += 1;
                        }
                        st.kept.remove(&pid);
                    }
                    Some(_) => match std::fs::read(format!("/proc/{pid}/environ")) {
                        // Exiting (its memory is gone): a zombie by the next round.
                        Ok(env) if env.is_empty() => pending = true,
                        Ok(env) => {
                            let found = marker_in(&env);
                            let ours = entry.as_deref().is_some_and(|e| carries(&env, e));
                            let stale = found.as_deref().is_some_and(|m| is_stale(&st, m));
                            if ours || stale {
                                if kill_pid(pid, |env| {
                                    marker_in(env).is_some_and(|m| found.as_deref() == Some(&m))
                                }) {
                                    swept.killed += 1;
                                }
                                st.kept.remove(&pid);
                                pending = true;
                            } else {
                                st.kept.insert(pid, found);
                            }
                        }
                        // Not ours to read (another user's): left running, as the
                        // module docs say.
                        Err(_) => {
                            st.kept.insert(pid, None);
                        }
                    },
                }
            }
        }
        if let Some(g) = pgid {
            // SAFETY: killpg only sends a signal; g > 1 is the run's own group.
            if unsafe { libc::killpg(g, libc::SIGKILL) } == 0 {
                pending = true;
            } else {
                // Nothing left in the group (ESRCH): never signal that id again.
                pgid = None;
            }
        }
        if !pending || Instant::now() >= until {
            break;
        }
        std::thread::sleep(SWEEP_PAUSE);
    }
    swept
}

/// The state letter of process `pid` (`R`, `S`, `Z`, …), `None` when it is gone.
fn stat_state(pid: libc::pid_t) -> Option<u8> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the comm may hold anything, the state follows the last ')'.
    let close = stat.iter().rposition(|b| *b == b')')?;
    stat.get(close + 2).copied()
}

/// Reaps zombie child `pid`; true when it was.
fn reap(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: waitpid on one unregistered child of ours, without blocking.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
}

/// The environment of process `pid`; `None` when unreadable or empty (an exiting process).
fn environ(pid: libc::pid_t) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .ok()
        .filter(|e| !e.is_empty())
}

/// The value of [`RUN_MARKER`] in an environment block.
fn marker_in(env: &[u8]) -> Option<String> {
    let prefix = format!("{RUN_MARKER}=");
    env.split(|b| *b == 0)
        .find_map(|e| e.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Whether an environment block holds `entry` (`NAME=value`).
fn carries(env: &[u8], entry: &[u8]) -> bool {
    env.split(|b| *b == 0).any(|e| e == entry)
}

/// Whether process `pid`'s environment holds `entry`; false when unreadable.
fn pid_carries(pid: libc::pid_t, entry: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| carries(&env, entry))
}

/// Kills every process (other than this one) whose environment carries `marker` as
/// [`RUN_MARKER`], found by walking all of `/proc`: the fallback where the subreaper is not
/// available. Returns how many were signalled.
fn kill_marked(marker: &str) -> usize {
    let entry = format!("{RUN_MARKER}={marker}").into_bytes();
    let me = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    let mut killed = 0;
    for _ in 0..MARKED_ROUNDS {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return killed;
        };
        let mut found = 0;
        for pid in dir
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.parse::<libc::pid_t>().ok())
            })
            .filter(|p| *p > 1 && *p != me)
        {
            if pid_carries(pid, &entry) && kill_pid(pid, |env| carries(env, &entry)) {
                found += 1;
            }
        }
        killed += found;
        if found == 0 {
            break;
        }
    }
    if killed > 0 {
        tracing::info!(
            killed,
            "killed processes a probe left outside its process group"
        );
    }
    killed
}

/// SIGKILLs `pid` if its environment still passes `check`, through a pidfd so that a pid
/// reused between the check and the signal is never hit (plain `kill` where pidfds are
/// missing).
fn kill_pid(pid: libc::pid_t, check: impl Fn(&[u8]) -> bool) -> bool {
    let still = || environ(pid).is_some_and(|env| check(&env));
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        // SAFETY: kill only sends a signal; pid > 1 and not this process.
        return pid > 1 && still() && unsafe { libc::kill(pid, libc::SIGKILL) } == 0;
    }
    let Ok(fd) = libc::c_int::try_from(fd) else {
        return false;
    };
    // SAFETY: `fd` is the descriptor just opened, owned here and closed by `OwnedFd`.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The pidfd pins the process: checked again now, the signal goes to the one checked.
    if !still() {
        return false;
    }
    // SAFETY: pidfd_send_signal on a valid pidfd, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Polls `cond` until it holds or `limit` passes.
    fn poll(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        cond()
    }

    /// The issue 20 design rests on this: a sweep reaps the zombies among gridprobe's children
    /// that nobody waits for, and never one that is registered, whose status its waiter gets.
    /// Children forked by a thread that then exits are re-parented to the main thread, where
    /// orphans land, so the sweep sees both kinds in the same list.
    #[test]
    fn a_sweep_reaps_strays_and_leaves_registered_children_to_their_waiter() {
        ensure_subreaper();
        let path = subreaper().expect("subreaper and /proc/self/task/<pid>/children");
        let (owned, strays) = std::thread::spawn(|| {
            let owned: Vec<_> = (0..8)
                .map(|k| {
                    let mut cmd = Command::new("/bin/sh");
                    cmd.args(["-c", &format!("exit {}", 10 + k)]);
                    spawn_owned(|| cmd.spawn(), |c| Some(c.id())).expect("spawn")
                })
                .collect();
            // Dropped std handles do not wait: these become zombies nobody reaps (which is the
            // point here).
            #[allow(clippy::zombie_processes)]
            let strays: Vec<libc::pid_t> = (0..4)
                .map(|_| {
                    let c = Command::new("/bin/true").spawn().expect("spawn");
                    libc::pid_t::try_from(c.id()).expect("pid")
                })
                .collect();
            (owned, strays)
        })
        .join()
        .expect("thread");
        let owned_pids: Vec<libc::pid_t> = owned
            .iter()
            .map(|(c, _)| libc::pid_t::try_from(c.id()).expect("pid"))
            .collect();
        let all: Vec<libc::pid_t> = owned_pids.iter().chain(&strays).copied().collect();
        assert!(
            poll(Duration::from_secs(10), || {
                let listed = children(path);
                all.iter()
                    .all(|p| listed.contains(p) && stat_state(*p) == Some(b'Z'))
            }),
            "not all of {all:?} became zombies in the main thread's list {:?}",
            children(path)
        );
        sweep(None, None);
        for p in &strays {
            assert_eq!(stat_state(*p), None, "stray zombie {p} was not reaped");
        }
        for (k, (mut child, registered)) in owned.into_iter().enumerate() {
            let status = child.wait().expect("the waiter still gets its child");
            assert_eq!(status.code(), Some(10 + k as i32));
            drop(registered);
        }
    }

    #[test]
    fn markers_and_states_are_read() {
        let env = b"A=1\0GRIDPROBE_RUN_ID=42-7-1\0B=2\0";
        assert_eq!(marker_in(env).as_deref(), Some("42-7-1"));
        assert!(carries(env, b"GRIDPROBE_RUN_ID=42-7-1"));
        assert!(!carries(env, b"GRIDPROBE_RUN_ID=42-7"));
        assert_eq!(marker_in(b"A=1\0"), None);
        let me = libc::pid_t::try_from(std::process::id()).expect("pid");
        assert!(matches!(stat_state(me), Some(b'R' | b'S')));
        assert!(own_marker(&new_run_marker()));
        assert!(!own_marker("1-2-3"));
    }
}
