//! Worker-node test bundles, as ETF's WN micro-framework runs them: one batch job carries a
//! set of Nagios plugins (WN-cvmfs, WN-swspace, WN-env, WN-frontier-reachability, ...), runs
//! each on the worker node under its own time limit and sends back its exit code and output;
//! each plugin's answer becomes a metric of its own ([`Reported`]), declared in the config as
//! `[[probe.bundle]]` under the job probe.
//!
//! The job's payload is a generated shell script. Script plugins are staged into the job's
//! directory beside it; command plugins are run from the worker node's own file system. The
//! answers travel in the job's standard output (the one channel every backend returns),
//! framed by lines carrying a random per-run token, so that a plugin's own output cannot end or
//! forge another's record by accident.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gridprobe_config::time::format_duration;
use gridprobe_config::{Config, Diagnostic, ProbeDef};
use serde::Deserialize;

use crate::ce::sh_quote;
use crate::outcome::{Outcome, Reported, Status};
use crate::params::{check_template, config_dir, duration_param};
use crate::{perfdata, placeholders, ProbeContext};

/// Default time one plugin may run on the worker node.
const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of one plugin's output sent back (the SAM probe guidelines cap output at 16 KB).
const PLUGIN_OUTPUT_LIMIT: usize = 16 * 1024;
/// How a record starts and ends in the job's output.
const BEGIN: &str = "gridprobe-wn-begin";
const END: &str = "gridprobe-wn-end";

/// One `[[probe.bundle]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleParams {
    metric: String,
    #[allow(dead_code)] // Read by the config loader; accepted here so the table is one.
    description: Option<String>,
    script: Option<String>,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    timeout: Option<String>,
}

/// A plugin as configured.
#[derive(Debug, Clone)]
enum PluginTemplate {
    /// A script on gridprobe's host (relative to `base`), staged into the job's directory.
    Script { template: String, base: PathBuf },
    /// A program on the worker node.
    Command(String),
}

/// One metric of a bundle.
#[derive(Debug, Clone)]
pub(super) struct BundleMetric {
    /// Full metric name.
    pub metric: String,
    plugin: PluginTemplate,
    args: Vec<String>,
    timeout: Duration,
}

/// A plugin with placeholders filled.
#[derive(Debug, Clone)]
pub(super) struct FilledPlugin {
    /// The staged script, when it is one.
    pub staged: Option<PathBuf>,
    /// The command line in the job's directory.
    command: String,
    timeout: Duration,
}

/// The bundle metrics of the job probe `def`: every probe the config marks as reported by it.
pub(super) fn read(def: &ProbeDef, config: &Config) -> Result<Vec<BundleMetric>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for child in config
        .probes
        .iter()
        .filter(|p| p.reported_by.as_deref() == Some(def.metric.as_str()))
    {
        let p: BundleParams = match crate::params::read(child, config) {
            Ok(p) => p,
            Err(ds) => {
                errors.extend(ds);
                continue;
            }
        };
        let err = |key: &str, msg: String| config.sources.error(&child.params.key_span(key), msg);
        debug_assert_eq!(p.metric.trim(), child.metric);
        let plugin = match (p.script, p.command) {
            (Some(_), Some(_)) => {
                errors.push(err(
                    "command",
                    "`script` and `command` cannot both be set".into(),
                ));
                continue;
            }
            (None, None) => {
                errors.push(
                    config
                        .sources
                        .error(
                            &child.params.table_span,
                            format!("bundle metric `{}` needs a `script` or `command`", child.metric),
                        )
                        .with_help("the Nagios plugin to run on the worker node, e.g. script = \"wn/check_cvmfs.sh\""),
                );
                continue;
            }
            (Some(s), None) => {
                errors.extend(check_template(child, config, "script", &s));
                let base = config_dir(child, config);
                if placeholders::names(&s).is_ok_and(|n| n.is_empty()) && !base.join(&s).is_file() {
                    errors.push(
                        err(
                            "script",
                            format!(
                                "plugin script {} is not a readable file",
                                base.join(&s).display()
                            ),
                        )
                        .with_help("a relative path starts at the directory of this file"),
                    );
                }
                PluginTemplate::Script { template: s, base }
            }
            (None, Some(c)) => {
                errors.extend(check_template(child, config, "command", &c));
                if c.trim().is_empty() {
                    errors.push(err("command", "`command` is empty".into()));
                }
                PluginTemplate::Command(c)
            }
        };
        for a in &p.args {
            errors.extend(check_template(child, config, "args", a));
        }
        let timeout = duration_param(child, config, "timeout", p.timeout.as_deref(), &mut errors)
            .unwrap_or(DEFAULT_PLUGIN_TIMEOUT);
        out.push(BundleMetric {
            metric: child.metric.clone(),
            plugin,
            args: p.args,
            timeout,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Fills the plugins' placeholders for one run.
pub(super) fn fill(
    bundle: &[BundleMetric],
    ctx: &ProbeContext,
) -> Result<Vec<FilledPlugin>, String> {
    let expand = |what: &str, m: &str, t: &str| {
        placeholders::expand(t, ctx).map_err(|e| format!("in `{what}` of bundle metric {m}: {e}"))
    };
    bundle
        .iter()
        .map(|b| {
            let (staged, program) = match &b.plugin {
                PluginTemplate::Script { template, base } => {
                    let path = base.join(expand("script", &b.metric, template)?);
                    let name = crate::ce::file_name(&path)?;
                    (Some(path), format!("./{}", sh_quote(&name)))
                }
                PluginTemplate::Command(c) => (None, sh_quote(&expand("command", &b.metric, c)?)),
            };
            let mut command = program;
            for a in &b.args {
                command.push(' ');
                command.push_str(&sh_quote(&expand("args", &b.metric, a)?));
            }
            Ok(FilledPlugin {
                staged,
                command,
                timeout: b.timeout,
            })
        })
        .collect()
}

/// A random token for one run's record lines.
pub(super) fn token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // Without randomness (never seen on Linux) the records are still framed, only guessable.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The job's payload: runs each plugin under `timeout` (when the worker node has it) and
/// prints its record.
pub(super) fn runner_script(plugins: &[FilledPlugin], token: &str) -> String {
    let mut s = format!(
        "#!/bin/sh\n\
         # gridprobe worker-node bundle: runs each Nagios plugin and prints its exit code and\n\
         # output between record lines.\n\
         gp_run() {{\n\
         \x20 gp_i=$1; gp_t=$2; shift 2\n\
         \x20 echo \"{BEGIN} {token} $gp_i\"\n\
         \x20 if command -v timeout >/dev/null 2>&1; then\n\
         \x20   timeout -k 5 \"$gp_t\" \"$@\" </dev/null >gridprobe-wn.out\n\
         \x20 else\n\
         \x20   \"$@\" </dev/null >gridprobe-wn.out\n\
         \x20 fi\n\
         \x20 gp_rc=$?\n\
         \x20 head -c {PLUGIN_OUTPUT_LIMIT} gridprobe-wn.out\n\
         \x20 echo\n\
         \x20 echo \"{END} {token} $gp_i $gp_rc\"\n\
         }}\n"
    );
    for (i, p) in plugins.iter().enumerate() {
        if let Some(name) = p
            .staged
            .as_deref()
            .and_then(|s| crate::ce::file_name(s).ok())
        {
            let _ = writeln!(s, "chmod +x {} 2>/dev/null", sh_quote(&name));
        }
        let secs = p.timeout.as_secs().max(1);
        let _ = writeln!(s, "gp_run {i} {secs} {}", p.command);
    }
    s.push_str("rm -f gridprobe-wn.out\nexit 0\n");
    s
}

/// One plugin's answer as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer {
    /// The exit code the runner saw.
    pub code: i64,
    /// Its standard output (at most [`PLUGIN_OUTPUT_LIMIT`] bytes).
    pub output: String,
}

/// Reads the records of a run (token `token`) from the job's standard output, by plugin index.
/// A record without its end line is no answer.
pub(super) fn parse_answers(stdout: &str, token: &str) -> Vec<(usize, Answer)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, Vec<&str>)> = None;
    for line in stdout.lines() {
        let mut words = line.split(' ');
        let (tag, tok) = (words.next(), words.next());
        if tok == Some(token) && tag == Some(BEGIN) {
            open = words
                .next()
                .and_then(|i| i.parse().ok())
                .map(|i| (i, Vec::new()));
            continue;
        }
        if tok == Some(token) && tag == Some(END) {
            let (idx, code) = (
                words.next().and_then(|i| i.parse::<usize>().ok()),
                words.next().and_then(|c| c.parse::<i64>().ok()),
            );
            if let (Some((i, lines)), Some(idx), Some(code)) = (open.take(), idx, code) {
                if i == idx {
                    let mut output = lines.join("\n");
                    output.truncate(output.trim_end().len());
                    out.push((i, Answer { code, output }));
                }
            }
            continue;
        }
        if let Some((_, lines)) = open.as_mut() {
            lines.push(line);
        }
    }
    out
}

/// A plugin's answer as an outcome, the way the `nagios` kind reads a plugin.
pub(super) fn answer_outcome(a: &Answer, timeout: Duration) -> Outcome {
    let plugin = perfdata::split_plugin_output(&a.output);
    let (items, warnings) = perfdata::parse(&plugin.perfdata_text);
    let (status, summary) = match a.code {
        // `timeout` ends a plugin past its limit with 124 (137 when it had to kill it).
        124 | 137 => (
            Status::Critical,
            format!(
                "plugin timed out after {} on the worker node and was killed",
                format_duration(timeout)
            ),
        ),
        _ if a.output.trim().is_empty() => (
            Status::Unknown,
            format!("plugin printed nothing (exit code {})", a.code),
        ),
        code => match i32::try_from(code).ok().and_then(Status::from_nagios_code) {
            Some(s) if plugin.summary.is_empty() => {
                (s, "plugin printed an empty first line".into())
            }
            Some(s) => (s, plugin.summary.clone()),
            None => (
                Status::Unknown,
                format!(
                    "plugin exited with code {code}, outside the Nagios range 0–3: {}",
                    plugin.summary
                ),
            ),
        },
    };
    let mut details = plugin.long_output.clone();
    for w in warnings {
        let _ = write!(details, "\nperfdata: {w}");
    }
    Outcome::new(status, summary)
        .with_details(details.trim_start().to_string())
        .with_perfdata(items)
}

/// Every metric's outcome after the job: its answer, or UNKNOWN with the reason it has none
/// (`job_failed` is the job's outcome when it did not run to the end).
pub(super) fn outcomes(
    bundle: &[BundleMetric],
    answers: &[(usize, Answer)],
    job_failed: Option<&Outcome>,
) -> Vec<Reported> {
    bundle
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let outcome = match (answers.iter().find(|(j, _)| *j == i), job_failed) {
                (Some((_, a)), _) => answer_outcome(a, b.timeout),
                (None, Some(o)) if o.status == Status::Standby => {
                    Outcome::standby(format!("bundle job not run: {}", o.summary))
                }
                (None, Some(o)) => Outcome::unknown(format!(
                    "not measured: the bundle job ended {}: {}",
                    o.status, o.summary
                )),
                (None, None) => Outcome::unknown(
                    "the bundle job ended without this plugin's result (it never started, or \
                     the job was cut short)",
                ),
            };
            Reported {
                metric: b.metric.clone(),
                outcome,
            }
        })
        .collect()
}

/// The names the bundle stages into the job's directory.
pub(super) fn staged_names(bundle: &[BundleMetric]) -> Vec<(String, String)> {
    bundle
        .iter()
        .filter_map(|b| match &b.plugin {
            PluginTemplate::Script { template, .. } => Path::new(template)
                .file_name()
                .map(|n| (b.metric.clone(), n.to_string_lossy().into_owned())),
            PluginTemplate::Command(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_by_token_and_index() {
        let out = "hello\ngridprobe-wn-begin T 0\nCVMFS OK | 'mounted'=1\nline 2\n\n\
                   gridprobe-wn-end T 0 0\ngridprobe-wn-begin X 1\nforged\ngridprobe-wn-end X 1 0\n\
                   gridprobe-wn-begin T 1\ngridprobe-wn-end T 9 2\ngridprobe-wn-begin T 2\n\
                   cut short";
        let answers = parse_answers(out, "T");
        assert_eq!(
            answers,
            vec![(
                0,
                Answer {
                    code: 0,
                    output: "CVMFS OK | 'mounted'=1\nline 2".into()
                }
            )]
        );
        let o = answer_outcome(&answers[0].1, DEFAULT_PLUGIN_TIMEOUT);
        assert_eq!((o.status, o.summary.as_str()), (Status::Ok, "CVMFS OK"));
        assert_eq!(o.perfdata[0].label, "mounted");
    }

    #[test]
    fn odd_answers_are_unknown_or_critical_with_the_reason() {
        let a = |code, output: &str| Answer {
            code,
            output: output.into(),
        };
        let t = Duration::from_secs(30);
        let cases = [
            (
                a(2, "SWSPACE CRITICAL: 1% free"),
                Status::Critical,
                "SWSPACE CRITICAL: 1% free",
            ),
            (
                a(124, ""),
                Status::Critical,
                "plugin timed out after 30s on the worker node",
            ),
            (
                a(0, ""),
                Status::Unknown,
                "plugin printed nothing (exit code 0)",
            ),
            (a(7, "odd"), Status::Unknown, "outside the Nagios range"),
        ];
        for (answer, status, needle) in cases {
            let o = answer_outcome(&answer, t);
            assert_eq!(o.status, status, "{}", o.summary);
            assert!(o.summary.contains(needle), "{}", o.summary);
        }
    }
}
