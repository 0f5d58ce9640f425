//! `nagios` probe kind: runs any Nagios/ETF plugin, the standard form of grid probes.
//!
//! The plugin's exit code 0–3 gives the status (OK, WARNING, CRITICAL, UNKNOWN), the first line
//! of its standard output the summary, the following lines (and its standard error, labelled)
//! the details, and its performance data is parsed by [`crate::perfdata`].
//!
//! Process handling (own process group, SIGTERM then SIGKILL at the deadline, leftovers killed
//! after exit, bounded pipes drained to the end) is shared with other kinds in
//! [`crate::process`].

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use gridprobe_config::{Config, Diagnostic, ProbeDef};
use serde::Deserialize;

use gridprobe_config::time::format_duration;

use crate::kind::{ParamDefault, ParamDoc};
use crate::outcome::{Outcome, Status, DETAILS_LIMIT, SUMMARY_LIMIT, TRUNCATION_MARKER};
use crate::perfdata;
use crate::placeholders;
use crate::process::{self, signal_name, Captured, Ending, Finished};
use crate::{Probe, ProbeContext, SharedProbe};

/// Config kind name.
pub const NAME: &str = "nagios";
/// One-line description.
pub const SUMMARY: &str =
    "Runs a Nagios/ETF plugin: exit code 0-3 is the status, its output the summary, details and perfdata";
/// Parameters.
pub const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "command",
        ty: "string",
        default: ParamDefault::Required,
        description: "Plugin program: an absolute path, a path relative to the file defining the probe, or a name looked up in PATH; placeholders allowed",
    },
    ParamDoc {
        name: "args",
        ty: "[string]",
        default: ParamDefault::Value("[]"),
        description: "Arguments, one per element (no shell); placeholders such as {hostname}, \
                      {endpoint}, {site}, {vo}, {timeout} or {param.NAME} allowed",
    },
    ParamDoc {
        name: "env",
        ty: "table",
        default: ParamDefault::Value("{}"),
        description:
            "Extra environment variables (added to gridprobe's); placeholders allowed in values",
    },
    ParamDoc {
        name: "workdir",
        ty: "string",
        default: ParamDefault::Value("gridprobe's working directory"),
        description: "Directory the plugin runs in; placeholders allowed",
    },
    ParamDoc {
        name: "timeout_status",
        ty: "string",
        default: ParamDefault::Value("\"critical\""),
        description: "Status recorded when the plugin is killed at its timeout: \"critical\" or \
                      \"unknown\" (as Nagios' service_check_timeout_state)",
    },
    ParamDoc {
        name: "output_limit",
        ty: "integer",
        default: ParamDefault::Value("1048576"),
        description: "Bytes of stdout and of stderr kept (each, 1024 to 67108864); the rest is \
                      discarded and the cut is marked",
    },
];

/// Default of `output_limit`: large enough for multi-line perfdata after long output, while
/// details are cut to [`DETAILS_LIMIT`] anyway.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 1 << 20;
/// Smallest accepted `output_limit`.
pub const MIN_OUTPUT_LIMIT: u64 = 1 << 10;
/// Largest accepted `output_limit` (bounds memory per run).
pub const MAX_OUTPUT_LIMIT: u64 = 64 << 20;

/// Time between SIGTERM and SIGKILL of the plugin's process group at a timeout.
pub use crate::process::TERM_GRACE;
/// Share of the details given at most to stderr and to gridprobe's notes; stdout gets the rest.
const STDERR_SHARE: usize = 16 * 1024;
const NOTES_SHARE: usize = 4 * 1024;

const PLACEHOLDER_HELP: &str = "placeholders are {hostname}, {endpoint}, {site}, {vo}, {flavour}, \
    {metric}, {timeout}, {tier} and service parameters as {param.NAME} or {NAME}; write {{ and }} \
    for literal braces";

/// Status recorded when the plugin is killed at its timeout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TimeoutStatus {
    #[default]
    Critical,
    Unknown,
}

/// `[probe.params]` of a `nagios` probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NagiosParams {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    #[serde(default)]
    timeout_status: TimeoutStatus,
    #[serde(default = "default_output_limit")]
    output_limit: u64,
}

fn default_output_limit() -> u64 {
    DEFAULT_OUTPUT_LIMIT
}

/// A built `nagios` probe: templates checked, not yet expanded.
#[derive(Debug, Clone)]
struct NagiosProbe {
    command: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    timeout_status: Status,
    output_limit: usize,
}

/// Builds the probe, checking every template and value with positions.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    let params: NagiosParams = crate::params::read(def, config)?;
    let at = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
    let mut errors = Vec::new();

    if params.command.trim().is_empty() {
        errors.push(
            at("command", "`command` is empty".into())
                .with_help("name the plugin, e.g. \"/usr/lib/nagios/plugins/check_tcp\""),
        );
    }
    let mut templates: Vec<(&str, String, &str)> =
        vec![("command", "`command`".into(), &params.command)];
    for (i, arg) in params.args.iter().enumerate() {
        templates.push(("args", format!("`args[{i}]`"), arg));
    }
    for (key, value) in &params.env {
        templates.push(("env", format!("`env.{key}`"), value));
        if key.is_empty() || key.contains(['=', '\0']) {
            errors.push(at(
                "env",
                format!(
                    "invalid environment variable name `{key}` (must be non-empty, without `=`)"
                ),
            ));
        }
    }
    if let Some(w) = &params.workdir {
        templates.push(("workdir", "`workdir`".into(), w));
    }
    for (key, what, template) in templates {
        if template.contains('\0') {
            errors.push(at(key, format!("{what} contains a NUL character")));
        } else if let Err(msg) = placeholders::names(template) {
            errors.push(at(key, format!("{what}: {msg}")).with_help(PLACEHOLDER_HELP));
        }
    }
    if !(MIN_OUTPUT_LIMIT..=MAX_OUTPUT_LIMIT).contains(&params.output_limit) {
        errors.push(
            at(
                "output_limit",
                format!(
                    "`output_limit` is {}, must be between {MIN_OUTPUT_LIMIT} and {MAX_OUTPUT_LIMIT} bytes",
                    params.output_limit
                ),
            )
            .with_help(format!("the default, {DEFAULT_OUTPUT_LIMIT}, suits most plugins")),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Arc::new(NagiosProbe {
        command: resolve_relative_command(&params.command, def, config),
        args: params.args,
        env: params.env.into_iter().collect(),
        workdir: params.workdir,
        timeout_status: match params.timeout_status {
            TimeoutStatus::Critical => Status::Critical,
            TimeoutStatus::Unknown => Status::Unknown,
        },
        output_limit: usize::try_from(params.output_limit).unwrap_or(usize::MAX),
    }))
}

/// A relative command path with a slash (`plugins/check_os.sh`) is taken relative to the
/// directory of the file that defines the probe, like `include`, so a VO can ship its plugins
/// beside its configuration. Bare names are looked up in PATH; absolute paths and templates
/// that start with a placeholder are left alone.
fn resolve_relative_command(command: &str, def: &ProbeDef, config: &Config) -> String {
    let path = std::path::Path::new(command);
    if !command.contains('/') || path.is_absolute() || command.starts_with('{') {
        return command.to_string();
    }
    crate::params::config_dir(def, config)
        .join(path)
        .to_string_lossy()
        .into_owned()
}

/// A command line with every placeholder filled for one instance.
#[derive(Debug)]
struct Invocation {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    workdir: Option<String>,
}

impl NagiosProbe {
    fn invocation(&self, ctx: &ProbeContext) -> Result<Invocation, String> {
        let fill = |what: &str, t: &str| {
            placeholders::expand(t, ctx).map_err(|e| format!("in {what}: {e}"))
        };
        let program = fill("command", &self.command)?;
        if program.trim().is_empty() {
            return Err(format!("`command` `{}` expands to nothing", self.command));
        }
        Ok(Invocation {
            program,
            args: self
                .args
                .iter()
                .enumerate()
                .map(|(i, a)| fill(&format!("args[{i}]"), a))
                .collect::<Result<_, _>>()?,
            env: self
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), fill(&format!("env.{k}"), v)?)))
                .collect::<Result<_, String>>()?,
            workdir: self
                .workdir
                .as_deref()
                .map(|w| fill("workdir", w))
                .transpose()?,
        })
    }
}

#[async_trait]
impl Probe for NagiosProbe {
    async fn run(&self, ctx: &ProbeContext) -> Outcome {
        let inv = match self.invocation(ctx) {
            Ok(inv) => inv,
            Err(msg) => {
                return Outcome::unknown(format!("cannot build the plugin command line {msg}"))
            }
        };
        run_plugin(&inv, ctx, self.timeout_status, self.output_limit).await
    }

    fn check_instance(&self, ctx: &ProbeContext) -> Result<(), String> {
        self.invocation(ctx)
            .map(|_| ())
            .map_err(|e| format!("nagios probe {}: {e}", ctx.metric))
    }
}

async fn run_plugin(
    inv: &Invocation,
    ctx: &ProbeContext,
    timeout_status: Status,
    limit: usize,
) -> Outcome {
    if let Some(dir) = &inv.workdir {
        // Checked first: a missing directory makes spawn fail with the same "not found" as a
        // missing program, which would be misleading.
        match tokio::fs::metadata(dir).await {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Outcome::unknown(format!("workdir `{dir}` is not a directory")),
            Err(e) => return Outcome::unknown(format!("workdir `{dir}`: {e}")),
        }
    }

    let mut cmd = tokio::process::Command::new(&inv.program);
    // The credential first: a plugin's own `env` may still override it.
    cmd.args(&inv.args)
        .envs(ctx.credential_env())
        .envs(inv.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &inv.workdir {
        cmd.current_dir(dir);
    }
    tracing::debug!(program = %inv.program, metric = %ctx.metric, "starting plugin");
    match process::run(cmd, ctx.deadline, &ctx.cancel, limit).await {
        Ok(finished) => outcome(&finished, ctx, timeout_status, limit),
        Err(e) => spawn_error(inv, &e),
    }
}

/// Explains a spawn failure precisely: which path, and why.
fn spawn_error(inv: &Invocation, e: &io::Error) -> Outcome {
    let program = &inv.program;
    let has_slash = program.contains('/');
    // A frequent mistake: the whole command line written in `command`.
    let hint = if program.contains(char::is_whitespace) {
        " (arguments go in `args`, one per element)"
    } else {
        ""
    };
    let summary = match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) if !has_slash => {
            let path = inv
                .env
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var("PATH").ok())
                .unwrap_or_default();
            return Outcome::unknown(format!(
                "cannot run plugin `{program}`: not found in PATH{hint}"
            ))
            .with_details(format!("PATH={path}"));
        }
        (io::ErrorKind::NotFound, _) if Path::new(program).is_file() => format!(
            "cannot run plugin `{program}`: the file exists but its interpreter (the `#!` line) \
             was not found"
        ),
        (io::ErrorKind::NotFound, _) => {
            format!("cannot run plugin `{program}`: no such file or directory{hint}")
        }
        (io::ErrorKind::PermissionDenied, _) => format!(
            "cannot run plugin `{program}`: permission denied (is it executable? try `chmod +x`)"
        ),
        (_, Some(libc::ENOEXEC)) => format!(
            "cannot run plugin `{program}`: not an executable format (a script needs a `#!` line)"
        ),
        _ => format!("cannot run plugin `{program}`: {e}"),
    };
    Outcome::unknown(summary)
}

/// Cuts `s` so that, with `tail` appended, it fits `limit` bytes; appends `tail` when cut or
/// when `force` is set.
fn cut_with_tail(mut s: String, limit: usize, tail: &str, force: bool) -> String {
    if !force && s.len() <= limit {
        return s;
    }
    let mut room = limit.saturating_sub(tail.len()).min(s.len());
    while !s.is_char_boundary(room) {
        room -= 1;
    }
    s.truncate(room);
    s.push_str(tail);
    s
}

/// One labelled section of the details, bounded at `limit` bytes.
fn section(title: &str, text: &str, cap: &Captured, limit: usize, kept: usize) -> String {
    let head = format!("--- {title} ---\n");
    let truncated = cap.truncated();
    let tail = if truncated {
        format!(
            "\n[{title}: {} bytes written, the first {kept} kept (output_limit)]{TRUNCATION_MARKER}",
            cap.total
        )
    } else {
        TRUNCATION_MARKER.to_string()
    };
    let body = cut_with_tail(
        text.to_string(),
        limit.saturating_sub(head.len()),
        &tail,
        truncated,
    );
    head + &body
}

/// Turns what was seen and read into the outcome.
fn outcome(sup: &Finished, ctx: &ProbeContext, timeout_status: Status, limit: usize) -> Outcome {
    let (out, err) = (&sup.stdout, &sup.stderr);
    let stdout = String::from_utf8_lossy(&out.bytes);
    let stderr = String::from_utf8_lossy(&err.bytes);
    let stderr = stderr.trim_end();
    let plugin = perfdata::split_plugin_output(&stdout);
    let (items, perf_warnings) = perfdata::parse(&plugin.perfdata_text);
    let printed_nothing = stdout.trim().is_empty() && !out.truncated();

    let mut notes: Vec<String> = Vec::new();
    let (status, summary, keep_perfdata) = match (sup.ending, sup.status) {
        (Ending::TimedOut, _) => (
            timeout_status,
            format!(
                "plugin timed out after {} and was killed (its whole process group)",
                format_duration(ctx.timeout)
            ),
            false,
        ),
        (Ending::Cancelled, _) => (
            Status::Unknown,
            "plugin run cancelled (gridprobe is stopping); the plugin was killed".to_string(),
            false,
        ),
        (Ending::Exited, None) => (
            Status::Unknown,
            format!(
                "cannot wait for the plugin: {}",
                sup.wait_error
                    .as_ref()
                    .map_or_else(|| "unknown error".to_string(), ToString::to_string)
            ),
            false,
        ),
        (Ending::Exited, Some(st)) => match (st.signal(), st.code()) {
            (Some(sig), _) => (
                Status::Unknown,
                format!(
                    "plugin killed by signal {}{}",
                    signal_name(sig),
                    if st.core_dumped() {
                        " (core dumped)"
                    } else {
                        ""
                    }
                ),
                false,
            ),
            (None, Some(code)) if printed_nothing => (
                Status::Unknown,
                format!("plugin printed nothing (exit code {code})"),
                false,
            ),
            (None, Some(code)) => match Status::from_nagios_code(code) {
                Some(status) if plugin.summary.is_empty() => (
                    status,
                    "plugin printed an empty first line".to_string(),
                    true,
                ),
                Some(status) => (status, plugin.summary.clone(), true),
                None => (
                    Status::Unknown,
                    format!(
                        "plugin exited with code {code}, outside the Nagios range 0–3{}{}",
                        if plugin.summary.is_empty() { "" } else { ": " },
                        plugin.summary
                    ),
                    true,
                ),
            },
            (None, None) => (Status::Unknown, format!("plugin ended oddly: {st}"), false),
        },
    };

    if sup.pipes_held {
        notes.push(
            "the plugin exited, but a process it started kept its output open; gridprobe killed \
             the plugin's process group"
                .into(),
        );
    }
    for (name, cap) in [("stdout", out), ("stderr", err)] {
        if let Some(e) = &cap.error {
            notes.push(format!("reading the plugin's {name} failed: {e}"));
        }
    }
    if keep_perfdata {
        notes.extend(perf_warnings);
    }

    // The summary line goes to the details too when it is not the summary or was cut.
    let first_line_in_details = !plugin.summary.is_empty()
        && (summary != plugin.summary || plugin.summary.chars().count() > SUMMARY_LIMIT);
    let mut stdout_text = String::new();
    if first_line_in_details {
        stdout_text.push_str(&plugin.summary);
    }
    if !plugin.long_output.is_empty() {
        if !stdout_text.is_empty() {
            stdout_text.push('\n');
        }
        stdout_text.push_str(&plugin.long_output);
    }

    let mut tail_sections = Vec::new();
    if !stderr.is_empty() || err.truncated() {
        tail_sections.push(section("stderr", stderr, err, STDERR_SHARE, limit));
    }
    if !notes.is_empty() {
        let text = cut_with_tail(notes.join("\n"), NOTES_SHARE, TRUNCATION_MARKER, false);
        tail_sections.push(format!("--- gridprobe ---\n{text}"));
    }
    let reserved: usize = tail_sections.iter().map(|s| s.len() + 2).sum();
    let mut sections = Vec::new();
    if !stdout_text.is_empty() || out.truncated() {
        let budget = DETAILS_LIMIT.saturating_sub(reserved);
        let body = if out.truncated() {
            let tail = format!(
                "\n[stdout: {} bytes written, the first {limit} kept (output_limit)]{TRUNCATION_MARKER}",
                out.total
            );
            cut_with_tail(stdout_text, budget, &tail, true)
        } else {
            cut_with_tail(stdout_text, budget, TRUNCATION_MARKER, false)
        };
        sections.push(body);
    }
    sections.extend(tail_sections);

    let outcome = Outcome::new(status, summary).with_details(sections.join("\n\n"));
    if keep_perfdata {
        outcome.with_perfdata(items)
    } else {
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use crate::process::FINAL_GRACE;

    const PLUGINS: &str = "/usr/lib/nagios/plugins";
    /// Allowance for scheduling noise in timing assertions.
    const SLACK: Duration = Duration::from_secs(1);

    fn probe(command: &str, args: &[&str]) -> NagiosProbe {
        NagiosProbe {
            command: command.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            workdir: None,
            timeout_status: Status::Critical,
            output_limit: DEFAULT_OUTPUT_LIMIT as usize,
        }
    }

    fn context(timeout: Duration) -> ProbeContext {
        let mut ctx = crate::placeholders::tests::context();
        ctx.timeout = timeout;
        ctx.deadline = Instant::now() + timeout;
        ctx
    }

    /// Writes a shell script; tests run it as `/bin/sh script`, which avoids ETXTBSY races with
    /// other test threads forking while the file was open for writing.
    fn script(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write script");
        path.to_string_lossy().into_owned()
    }

    fn sh(script: &str, args: &[&str]) -> NagiosProbe {
        let mut all = vec![script];
        all.extend_from_slice(args);
        probe("/bin/sh", &all)
    }

    /// Whether a process is alive (exists and is not a zombie).
    fn process_alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat_fields(&stat).is_some_and(|(state, _)| state != 'Z' && state != 'X'),
            Err(_) => false,
        }
    }

    /// State and process group from `/proc/PID/stat` (fields after the `(comm)`).
    fn stat_fields(stat: &str) -> Option<(char, i32)> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut f = rest.split_whitespace();
        let state = f.next()?.chars().next()?;
        let pgrp = f.nth(1)?.parse().ok()?;
        Some((state, pgrp))
    }

    /// Whether any live process is in the group. `kill(-pgid, 0)` failing with ESRCH settles it;
    /// it also succeeds for zombies, and in some containers PID 1 never reaps orphans, so a killed
    /// grandchild may stay a zombie for good: then look for a live member in /proc.
    fn group_alive(pgid: i32) -> bool {
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::kill(-pgid, 0) } != 0 {
            return io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        }
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return true;
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .filter_map(|stat| stat_fields(&stat))
            .any(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X')
    }

    /// Polls until `f` holds or 10 s pass.
    async fn eventually(mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if f() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn read_pid(path: &Path) -> i32 {
        let mut pid = 0;
        let found = eventually(|| {
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

    /// A script that records its pid (= its process group) and a background grandchild's pid,
    /// then hangs.
    const HANGING: &str =
        "sleep 1000 &\necho $! > \"$1.bg\"\necho $$ > \"$1\"\necho 'OK - started'\nsleep 1000\n";

    fn pid_paths(dir: &tempfile::TempDir) -> (PathBuf, PathBuf) {
        let pid = dir.path().join("pid");
        let bg = dir.path().join("pid.bg");
        (pid, bg)
    }

    async fn assert_all_gone(pid_file: &Path, bg_file: &Path) {
        let pgid = read_pid(pid_file).await;
        let bg = read_pid(bg_file).await;
        assert!(
            eventually(|| !group_alive(pgid)).await,
            "process group {pgid} still alive"
        );
        assert!(!process_alive(bg), "background grandchild {bg} survived");
    }

    #[tokio::test]
    async fn check_dummy_states_map_to_statuses() {
        let dummy = format!("{PLUGINS}/check_dummy");
        for (code, status) in [
            ("0", Status::Ok),
            ("1", Status::Warning),
            ("2", Status::Critical),
            ("3", Status::Unknown),
        ] {
            let o = probe(&dummy, &[code, "hello grid"])
                .run(&context(Duration::from_secs(10)))
                .await;
            assert_eq!(o.status, status, "{o:?}");
            assert_eq!(o.summary, format!("{}: hello grid", status.name()));
            assert!(o.details.is_empty(), "{o:?}");
        }
    }

    #[tokio::test]
    async fn check_tcp_against_closed_port_is_critical() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let port = port.to_string();
        let o = probe(
            &format!("{PLUGINS}/check_tcp"),
            &["-H", "127.0.0.1", "-p", &port],
        )
        .run(&context(Duration::from_secs(10)))
        .await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(o.summary.contains("refused"), "{o:?}");
    }

    #[tokio::test]
    async fn check_tcp_against_open_port_is_ok_with_perfdata() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port().to_string();
        let accept = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                kept.push(s);
            }
        });
        let o = probe(
            &format!("{PLUGINS}/check_tcp"),
            &["-H", "127.0.0.1", "-p", &port, "-t", "{timeout}"],
        )
        .run(&context(Duration::from_secs(10)))
        .await;
        accept.abort();
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.starts_with("TCP OK"), "{o:?}");
        assert_eq!(o.perfdata.len(), 1, "{o:?}");
        assert_eq!(o.perfdata[0].label, "time");
        assert_eq!(o.perfdata[0].uom, "s");
        assert_eq!(o.perfdata[0].max, Some(10.0));
    }

    #[tokio::test]
    async fn multi_line_output_perfdata_and_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(
            &dir,
            "multi.sh",
            "echo 'WARNING - 2 of 3 queues slow | queues=3;;;0'\n\
             echo 'long line one'\n\
             echo 'long line two | wait=12s;10;20'\n\
             echo \"'time to submit'=0.5s\"\n\
             echo 'a note on stderr' >&2\n\
             exit 1\n",
        );
        let o = sh(&s, &[]).run(&context(Duration::from_secs(10))).await;
        assert_eq!(o.status, Status::Warning, "{o:?}");
        assert_eq!(o.summary, "WARNING - 2 of 3 queues slow");
        assert_eq!(
            o.details,
            "long line one\nlong line two\n\n--- stderr ---\na note on stderr"
        );
        let labels: Vec<&str> = o.perfdata.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["queues", "wait", "time to submit"]);
        assert_eq!(o.perfdata[1].crit.as_deref(), Some("20"));
    }

    #[tokio::test]
    async fn perfdata_warnings_go_to_details() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(&dir, "bad.sh", "echo 'OK | good=1 bad=U'\n");
        let o = sh(&s, &[]).run(&context(Duration::from_secs(10))).await;
        assert_eq!(o.status, Status::Ok);
        assert_eq!(o.perfdata.len(), 1);
        assert!(o.details.starts_with("--- gridprobe ---\n"), "{o:?}");
        assert!(o.details.contains("bad=U"), "{o:?}");
    }

    #[tokio::test]
    async fn exit_code_outside_nagios_range_is_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(&dir, "seven.sh", "echo 'OK - all good'\nexit 7\n");
        let o = sh(&s, &[]).run(&context(Duration::from_secs(10))).await;
        assert_eq!(o.status, Status::Unknown);
        assert_eq!(
            o.summary,
            "plugin exited with code 7, outside the Nagios range 0–3: OK - all good"
        );
        assert_eq!(o.details, "OK - all good");
    }

    #[tokio::test]
    async fn killed_by_signal_is_unknown_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(&dir, "term.sh", "echo 'OK'\nkill -TERM $$\n");
        let o = sh(&s, &[]).run(&context(Duration::from_secs(10))).await;
        assert_eq!(o.status, Status::Unknown);
        assert_eq!(o.summary, "plugin killed by signal SIGTERM (15)");
    }

    #[tokio::test]
    async fn empty_output_is_unknown_with_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(
            &dir,
            "silent.sh",
            "echo 'python: module not found' >&2\nexit 2\n",
        );
        let o = sh(&s, &[]).run(&context(Duration::from_secs(10))).await;
        assert_eq!(o.status, Status::Unknown);
        assert_eq!(o.summary, "plugin printed nothing (exit code 2)");
        assert_eq!(o.details, "--- stderr ---\npython: module not found");
    }

    async fn hang_until_timeout(timeout_status: Status) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pid_file, bg_file) = pid_paths(&dir);
        let s = script(&dir, "hang.sh", HANGING);
        let mut p = sh(&s, &[&pid_file.to_string_lossy()]);
        p.timeout_status = timeout_status;
        let started = Instant::now();
        let o = p.run(&context(Duration::from_secs(1))).await;
        let took = started.elapsed();
        assert_eq!(o.status, timeout_status, "{o:?}");
        assert_eq!(
            o.summary,
            "plugin timed out after 1s and was killed (its whole process group)"
        );
        assert_eq!(o.details, "OK - started");
        assert!(o.perfdata.is_empty());
        // Bounded by the deadline plus the kill graces (and scheduling noise on a busy host).
        assert!(
            took < Duration::from_secs(1) + TERM_GRACE + FINAL_GRACE + SLACK,
            "took {took:?}"
        );
        assert_all_gone(&pid_file, &bg_file).await;
    }

    #[tokio::test]
    async fn hanging_plugin_and_grandchild_are_killed_at_timeout_critical() {
        hang_until_timeout(Status::Critical).await;
    }

    #[tokio::test]
    async fn hanging_plugin_and_grandchild_are_killed_at_timeout_unknown() {
        hang_until_timeout(Status::Unknown).await;
    }

    #[tokio::test]
    async fn sigterm_ignoring_plugin_is_killed_after_grace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pid_file, bg_file) = pid_paths(&dir);
        let s = script(&dir, "stubborn.sh", &format!("trap '' TERM\n{HANGING}"));
        let started = Instant::now();
        let o = sh(&s, &[&pid_file.to_string_lossy()])
            .run(&context(Duration::from_millis(500)))
            .await;
        let took = started.elapsed();
        assert_eq!(o.status, Status::Critical, "{o:?}");
        // SIGKILL came only after the SIGTERM grace, and promptly then.
        assert!(
            took >= Duration::from_millis(500) + TERM_GRACE,
            "took {took:?}"
        );
        assert!(
            took < Duration::from_millis(500) + TERM_GRACE + FINAL_GRACE + SLACK,
            "took {took:?}"
        );
        assert_all_gone(&pid_file, &bg_file).await;
    }

    #[tokio::test]
    async fn cancellation_kills_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pid_file, bg_file) = pid_paths(&dir);
        let s = script(&dir, "hang.sh", HANGING);
        let ctx = context(Duration::from_secs(60));
        let p = sh(&s, &[&pid_file.to_string_lossy()]);
        let cancel = ctx.cancel.clone();
        let pid_file2 = pid_file.clone();
        let (o, _) = tokio::join!(p.run(&ctx), async move {
            read_pid(&pid_file2).await;
            cancel.cancel();
        });
        assert_eq!(o.status, Status::Unknown, "{o:?}");
        assert!(o.summary.contains("cancelled"), "{o:?}");
        assert_all_gone(&pid_file, &bg_file).await;
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pid_file, bg_file) = pid_paths(&dir);
        let s = script(&dir, "hang.sh", HANGING);
        let ctx = context(Duration::from_secs(60));
        let p = sh(&s, &[&pid_file.to_string_lossy()]);
        tokio::select! {
            o = p.run(&ctx) => panic!("plugin should hang, got {o:?}"),
            _ = read_pid(&pid_file) => {}
        }
        assert_all_gone(&pid_file, &bg_file).await;
    }

    #[tokio::test]
    async fn background_process_holding_the_pipe_is_killed_after_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pid_file, bg_file) = pid_paths(&dir);
        let s = script(
            &dir,
            "bg.sh",
            "sleep 1000 &\necho $! > \"$1.bg\"\necho $$ > \"$1\"\necho 'OK - done'\nexit 0\n",
        );
        let o = sh(&s, &[&pid_file.to_string_lossy()])
            .run(&context(Duration::from_secs(30)))
            .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert_eq!(o.summary, "OK - done");
        assert!(o.details.contains("kept its output open"), "{o:?}");
        assert_all_gone(&pid_file, &bg_file).await;
    }

    #[tokio::test]
    async fn detached_leftovers_are_killed_after_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pid_file, bg_file) = pid_paths(&dir);
        let s = script(
            &dir,
            "left.sh",
            "sleep 1000 >/dev/null 2>&1 &\necho $! > \"$1.bg\"\necho $$ > \"$1\"\necho 'OK'\n",
        );
        let o = sh(&s, &[&pid_file.to_string_lossy()])
            .run(&context(Duration::from_secs(30)))
            .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        // No "kept its output open" note: the run did not wait for the leftover.
        assert!(o.details.is_empty(), "{o:?}");
        assert_all_gone(&pid_file, &bg_file).await;
    }

    #[tokio::test]
    async fn huge_output_is_drained_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(
            &dir,
            "flood.sh",
            "echo 'OK - flooding'\n\
             head -c 50000000 /dev/zero | tr '\\0' y >&2 &\n\
             head -c 50000000 /dev/zero | tr '\\0' x\n\
             wait\n",
        );
        let started = Instant::now();
        let o = sh(&s, &[]).run(&context(Duration::from_secs(60))).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(o.summary, "OK - flooding");
        assert!(o.details.len() <= DETAILS_LIMIT, "{}", o.details.len());
        assert!(
            o.details.ends_with(TRUNCATION_MARKER),
            "{}",
            &o.details[o.details.len() - 200..]
        );
        assert!(
            o.details.contains("[stdout: 50000014 bytes written"),
            "stdout note missing"
        );
        assert!(
            o.details.contains("[stderr: 50000000 bytes written"),
            "stderr note missing"
        );
        assert!(o.details.starts_with("xxxx"));
    }

    #[tokio::test]
    async fn huge_first_line_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(&dir, "line.sh", "head -c 50000000 /dev/zero | tr '\\0' x\n");
        let o = sh(&s, &[]).run(&context(Duration::from_secs(60))).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert_eq!(o.summary.chars().count(), SUMMARY_LIMIT);
        assert!(o.details.len() <= DETAILS_LIMIT);
        assert!(o.details.ends_with(TRUNCATION_MARKER));
    }

    #[tokio::test]
    async fn missing_command_is_unknown_with_path() {
        let ctx = context(Duration::from_secs(10));
        let o = probe("/nonexistent/check_nothing", &[]).run(&ctx).await;
        assert_eq!(o.status, Status::Unknown);
        assert_eq!(
            o.summary,
            "cannot run plugin `/nonexistent/check_nothing`: no such file or directory"
        );
        let o = probe("check_nothing_in_path", &[]).run(&ctx).await;
        assert_eq!(o.status, Status::Unknown);
        assert!(
            o.summary
                .starts_with("cannot run plugin `check_nothing_in_path`: not found in PATH"),
            "{o:?}"
        );
    }

    /// Runs a file directly, retrying on ETXTBSY: another test thread may have forked while the
    /// file was open for writing, which holds it busy until that child execs.
    async fn run_file_directly(path: &str) -> Outcome {
        let ctx = context(Duration::from_secs(10));
        for _ in 0..20 {
            let o = probe(path, &[]).run(&ctx).await;
            if !o.summary.contains("busy") {
                return o;
            }
        }
        panic!("{path} stayed busy");
    }

    fn executable(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = script(dir, name, body);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[tokio::test]
    async fn spawn_failures_are_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = script(&dir, "plain.sh", "echo OK\n");
        let o = run_file_directly(&plain).await;
        assert_eq!(o.status, Status::Unknown);
        assert_eq!(
            o.summary,
            format!(
                "cannot run plugin `{plain}`: permission denied (is it executable? try `chmod +x`)"
            )
        );

        let interp = executable(&dir, "interp.sh", "#!/nonexistent/python9\nprint('OK')\n");
        let o = run_file_directly(&interp).await;
        assert_eq!(o.status, Status::Unknown);
        assert!(o.summary.contains("its interpreter"), "{o:?}");

        let no_shebang = executable(&dir, "noshebang", "\x7fELF garbage\n");
        let o = run_file_directly(&no_shebang).await;
        assert_eq!(o.status, Status::Unknown);
        assert!(o.summary.contains("not an executable format"), "{o:?}");

        let o = run_file_directly("check_dummy 0 OK").await;
        assert!(
            o.summary
                .ends_with("(arguments go in `args`, one per element)"),
            "{o:?}"
        );

        let o = run_file_directly("{param.empty}").await;
        assert_eq!(o.status, Status::Unknown);
        assert!(o.summary.contains("no parameter `empty`"), "{o:?}");
    }

    #[tokio::test]
    async fn missing_workdir_is_explained() {
        let mut p = probe("/bin/true", &[]);
        p.workdir = Some("/nonexistent/{site}".into());
        let o = p.run(&context(Duration::from_secs(10))).await;
        assert_eq!(o.status, Status::Unknown);
        assert!(
            o.summary.starts_with("workdir `/nonexistent/LCG.CERN.ch`"),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn placeholders_fill_args_env_and_workdir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(&dir, "echo.sh", "echo \"OK $1 $2 $3 $SITE $(pwd)\"\n");
        let mut p = sh(&s, &["{hostname}", "{queue}", "{param.queue}{{x}}"]);
        p.env = vec![("SITE".into(), "{site}".into())];
        p.workdir = Some(dir.path().to_string_lossy().into_owned());
        let o = p.run(&context(Duration::from_secs(10))).await;
        assert_eq!(
            o.summary,
            format!(
                "OK ce01.example.org long long{{x}} LCG.CERN.ch {}",
                dir.path().display()
            )
        );
    }

    #[tokio::test]
    async fn missing_placeholder_value_is_unknown_and_fails_check_instance() {
        let p = probe("/bin/echo", &["{nosuch}"]);
        let ctx = context(Duration::from_secs(10));
        let err = p.check_instance(&ctx).expect_err("no such parameter");
        assert!(err.contains("args[0]") && err.contains("nosuch"), "{err}");
        let o = p.run(&ctx).await;
        assert_eq!(o.status, Status::Unknown);
        assert!(o.summary.contains("nosuch"), "{o:?}");
        assert!(probe("/bin/echo", &["{hostname}"])
            .check_instance(&ctx)
            .is_ok());
    }

    #[test]
    fn params_are_documented() {
        crate::kind::assert_params_documented::<NagiosParams>(PARAMS);
    }

    fn build_from(params: &str) -> Result<SharedProbe, Vec<Diagnostic>> {
        let text = format!(
            "vo = \"lhcb\"\n\n\
             [[site]]\nname = \"LCG.CERN.ch\"\ntier = 0\n\n\
             [[site.service]]\nflavour = \"CE\"\nhostname = \"ce01.example.org\"\n\n\
             [[probe]]\nmetric = \"org.lhcb.CE-lhcb-os\"\nkind = \"nagios\"\nflavours = [\"CE\"]\n\n\
             [probe.params]\n{params}\n"
        );
        let loaded = gridprobe_config::load_str(Path::new("t.toml"), &text);
        assert!(loaded.diagnostics.is_empty(), "{}", loaded.diagnostics);
        let def = loaded.config.probes.first().expect("one probe");
        build(def, &loaded.config)
    }

    fn build_errors(params: &str) -> Vec<Diagnostic> {
        match build_from(params) {
            Ok(p) => panic!("expected errors, built {p:?}"),
            Err(ds) => ds,
        }
    }

    #[test]
    fn builds_valid_params() {
        let p = build_from(
            "command = \"/usr/lib/nagios/plugins/check_tcp\"\n\
             args = [\"-H\", \"{hostname}\", \"-p\", \"{param.port}\"]\n\
             env = { X509_USER_PROXY = \"/tmp/x509up_{vo}\" }\n\
             workdir = \"/tmp\"\n\
             timeout_status = \"unknown\"\n\
             output_limit = 4096\n",
        );
        assert!(p.is_ok(), "{:?}", p.err());
        assert!(build_from("command = \"check_dummy\"").is_ok());
    }

    #[test]
    fn bad_placeholder_syntax_is_positioned() {
        let ds = build_errors("command = \"check_dummy\"\nargs = [\"0\", \"{hostname\"]\n");
        assert_eq!(ds.len(), 1, "{ds:?}");
        assert!(ds[0].message.contains("`args[1]`"), "{}", ds[0]);
        assert!(ds[0].message.contains("unclosed"), "{}", ds[0]);
        assert_eq!(
            ds[0].position().as_deref(),
            Some("t.toml:18:8"),
            "{}",
            ds[0]
        );
        assert!(ds[0].help.is_some());
    }

    #[test]
    fn empty_command_and_bad_limit_are_reported_together() {
        let ds = build_errors("command = \" \"\noutput_limit = 10\nenv = { X = \"}\" }\n");
        let messages: Vec<&str> = ds.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(ds.len(), 3, "{messages:?}");
        assert!(messages[0].contains("`command` is empty"));
        assert!(messages.iter().any(|m| m.contains("`env.X`: stray")));
        assert!(messages.iter().any(|m| m.contains("`output_limit` is 10")));
        assert!(ds.iter().all(|d| d.location.is_some()));
    }

    #[test]
    fn bad_timeout_status_and_unknown_keys_are_serde_errors() {
        let ds = build_errors("command = \"x\"\ntimeout_status = \"warning\"\n");
        assert!(
            ds[0].message.contains("unknown variant `warning`"),
            "{}",
            ds[0]
        );
        assert_eq!(
            ds[0].position().as_deref(),
            Some("t.toml:18:18"),
            "{}",
            ds[0]
        );
        let ds = build_errors("command = \"x\"\nargz = []\n");
        assert!(ds[0].message.contains("unknown key `argz`"), "{}", ds[0]);
        assert_eq!(ds[0].help.as_deref(), Some("did you mean `args`?"));
        let ds = build_errors("args = []\n");
        assert!(
            ds[0].message.contains("missing required key `command`"),
            "{}",
            ds[0]
        );
    }

    #[test]
    fn details_budget_keeps_every_section() {
        let big = |n| Captured {
            bytes: vec![b'a'; n],
            total: n as u64,
            error: None,
        };
        let mut out_bytes = b"OK\n".to_vec();
        out_bytes.extend(vec![b'o'; 200_000]);
        let out = Captured {
            total: out_bytes.len() as u64,
            bytes: out_bytes,
            error: None,
        };
        let sup = Finished {
            ending: Ending::Exited,
            status: Some(std::process::ExitStatus::from_raw(0)),
            wait_error: None,
            pipes_held: true,
            stdout: out,
            stderr: big(100_000),
            elapsed: Duration::ZERO,
        };
        let ctx = context(Duration::from_secs(1));
        let o = outcome(&sup, &ctx, Status::Critical, 1 << 20);
        assert_eq!(o.status, Status::Ok);
        assert!(o.details.len() <= DETAILS_LIMIT);
        assert!(o
            .details
            .contains(&format!("{TRUNCATION_MARKER}\n\n--- stderr ---\naaa")));
        assert!(o.details.contains("--- gridprobe ---\nthe plugin exited"));
    }
}
