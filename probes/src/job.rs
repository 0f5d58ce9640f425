//! `job` probe kind: runs an experiment application payload through a `ce` backend and checks
//! what it did, as SAM's CE-<vo>-job-<Application> tests did (Gauss, Boole, Brunel, DaVinci).
//!
//! The payload is a script on gridprobe's host (staged into the job's directory) or a command
//! on the worker node, with arguments and environment; input files are staged beside it. The
//! job is submitted, followed and cancelled at its limits exactly as by the `ce` kind (all of
//! its keys apply), then judged:
//!
//! * its exit code must be `expect_exit` (0 by default);
//! * its standard output must match `output_regex`, and neither output may match
//!   `forbid_regex` (e.g. "Segmentation fault");
//! * each of `produced_files` must exist in the job's directory and not be empty; with
//!   `stage_out` they are copied there, so that the next step of a chain can take them as
//!   inputs.
//!
//! With `lock`, a held lock (the VO's software installation lock, taken by an install or lock
//! probe) makes the result STANDBY ("lock held by ...") without submitting anything; so does a
//! missing input file (the step before has not produced it).
//!
//! A job may instead run a worker-node bundle ([`bundle`]): the Nagios plugins of its
//! `[[probe.bundle]]` tables, each reported as a metric of its own, the job's own result
//! saying whether the job ran.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use gridprobe_config::{Config, Diagnostic, ProbeDef};
use regex::bytes::Regex;
use serde::Deserialize;

use crate::ce::{self, CeParams, CeSettings, JobSpec, Payload, Produced};
use crate::kind::{ParamDefault, ParamDoc};
use crate::outcome::{quote_bytes, Outcome, Perfdatum, Status};
use crate::params::{check_template, compile_regex};
use crate::{placeholders, Probe, ProbeContext, SharedProbe};

mod bundle;

/// Config kind name.
pub const NAME: &str = "job";
/// One-line description.
pub const SUMMARY: &str = "Runs an experiment application payload through a ce backend and \
                           checks its exit code, output patterns and produced files";

/// Parameters: the `ce` kind's, then the payload's.
pub const PARAMS: &[ParamDoc] = &[
    ce::DOC_BACKEND,
    ce::DOC_QUEUE,
    ce::DOC_SUBMIT_ARGS,
    ce::DOC_BACKEND_ENV,
    ce::DOC_BIN_DIR,
    ce::DOC_SCHEDD,
    ce::DOC_POOL,
    ce::DOC_WORKDIR,
    ce::DOC_SUBMIT_TIMEOUT,
    ce::DOC_QUEUE_TIMEOUT,
    ce::DOC_QUEUE_WARN,
    ce::DOC_RUN_TIMEOUT,
    ce::DOC_POLL_INTERVAL,
    ce::DOC_KEEP_WORKDIR,
    ce::DOC_ARC_URL,
    ce::DOC_CA_FILE,
    ce::DOC_CLIENT_CERT,
    ce::DOC_CLIENT_KEY,
    ParamDoc {
        name: "application",
        ty: "string",
        default: ParamDefault::Value("the payload's file name"),
        description: "Name of the application in the summary, e.g. \"Gauss\"",
    },
    ParamDoc {
        name: "script",
        ty: "string",
        default: ParamDefault::Value("none"),
        description: "Payload script on gridprobe's host (relative to the file defining the \
                      probe), staged into the job's directory and run there; placeholders \
                      allowed. One of `script` and `command`",
    },
    ParamDoc {
        name: "command",
        ty: "string",
        default: ParamDefault::Value("none"),
        description: "Payload program on the worker node (an absolute path, or a name in its \
                      PATH), e.g. \"lb-run\"; placeholders allowed. One of `script` and `command`",
    },
    ParamDoc {
        name: "args",
        ty: "[string]",
        default: ParamDefault::Value("[]"),
        description: "Payload arguments, one per element; placeholders allowed",
    },
    ParamDoc {
        name: "env",
        ty: "table",
        default: ParamDefault::Value("{}"),
        description: "Environment of the payload; placeholders allowed in values",
    },
    ParamDoc {
        name: "inputs",
        ty: "[string]",
        default: ParamDefault::Value("[]"),
        description: "Files on gridprobe's host (relative to the file defining the probe) copied \
                      into the job's directory before submission; placeholders allowed, e.g. \
                      \"{datadir}/gauss.sim\" for the previous step's output",
    },
    ParamDoc {
        name: "expect_exit",
        ty: "integer",
        default: ParamDefault::Value("0"),
        description: "The exit code the payload must end with (0 to 255)",
    },
    ParamDoc {
        name: "output_regex",
        ty: "string",
        default: ParamDefault::Value("none"),
        description: "Regular expression the payload's standard output must match, e.g. \
                      \"Application Manager Terminated successfully\"",
    },
    ParamDoc {
        name: "forbid_regex",
        ty: "string",
        default: ParamDefault::Value("none"),
        description: "Regular expression neither output may match, e.g. \
                      \"Segmentation fault|G4Exception\"",
    },
    ParamDoc {
        name: "produced_files",
        ty: "[string]",
        default: ParamDefault::Value("[]"),
        description: "Files (relative to the job's directory) the payload must produce, not empty",
    },
    ParamDoc {
        name: "stage_out",
        ty: "string",
        default: ParamDefault::Value("none"),
        description: "Directory on gridprobe's host where `produced_files` are copied after the \
                      job, for the next step of a chain; placeholders allowed",
    },
    ParamDoc {
        name: "lock",
        ty: "string",
        default: ParamDefault::Value("none"),
        description: "Path of the VO's installation lock (a file, or a directory holding an \
                      `owner` file): while it exists the probe is STANDBY (\"lock held by ...\") \
                      and submits nothing; placeholders allowed",
    },
];

/// `[probe.params]` of a `job` probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobParams {
    backend: String,
    queue: Option<String>,
    submit_args: Option<Vec<String>>,
    backend_env: Option<BTreeMap<String, String>>,
    bin_dir: Option<String>,
    schedd: Option<String>,
    pool: Option<String>,
    workdir: Option<String>,
    submit_timeout: Option<String>,
    queue_timeout: Option<String>,
    queue_warn: Option<String>,
    run_timeout: Option<String>,
    poll_interval: Option<String>,
    keep_workdir: Option<bool>,
    arc_url: Option<String>,
    ca_file: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    application: Option<String>,
    script: Option<String>,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    inputs: Vec<String>,
    expect_exit: Option<i64>,
    output_regex: Option<String>,
    forbid_regex: Option<String>,
    #[serde(default)]
    produced_files: Vec<String>,
    stage_out: Option<String>,
    lock: Option<String>,
}

impl JobParams {
    /// The keys shared with the `ce` kind.
    fn ce_params(&self) -> CeParams {
        CeParams {
            backend: self.backend.clone(),
            queue: self.queue.clone(),
            submit_args: self.submit_args.clone(),
            backend_env: self.backend_env.clone(),
            bin_dir: self.bin_dir.clone(),
            schedd: self.schedd.clone(),
            pool: self.pool.clone(),
            workdir: self.workdir.clone(),
            submit_timeout: self.submit_timeout.clone(),
            queue_timeout: self.queue_timeout.clone(),
            queue_warn: self.queue_warn.clone(),
            run_timeout: self.run_timeout.clone(),
            poll_interval: self.poll_interval.clone(),
            keep_workdir: self.keep_workdir,
            arc_url: self.arc_url.clone(),
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

/// The payload as configured.
#[derive(Debug, Clone)]
enum PayloadTemplate {
    /// Script path template, relative to `base`.
    Script(String),
    /// Program template on the worker.
    Command(String),
    /// The generated runner of the worker-node bundle.
    Bundle,
}

/// A built `job` probe.
#[derive(Debug)]
struct JobProbe {
    settings: CeSettings,
    application: String,
    payload: PayloadTemplate,
    /// Where relative paths (script, inputs) start: the directory of the defining file.
    base: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    inputs: Vec<String>,
    expect_exit: i32,
    output_regex: Option<Regex>,
    forbid_regex: Option<Regex>,
    produced_files: Vec<String>,
    stage_out: Option<String>,
    lock: Option<String>,
    /// The worker-node bundle's metrics, when the job runs one.
    bundle: Vec<bundle::BundleMetric>,
}

/// Builds the probe, checking every parameter with positions.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    let p: JobParams = crate::params::read(def, config)?;
    let err = |key: &str, msg: String| config.sources.error(&def.params.key_span(key), msg);
    let mut errors = Vec::new();
    let settings = CeSettings::from_params(def, config, p.ce_params())
        .map_err(|ds| errors.extend(ds))
        .ok();
    let base = crate::params::config_dir(def, config);
    let bundle = bundle::read(def, config)
        .map_err(|ds| errors.extend(ds))
        .unwrap_or_default();

    let payload = match (&p.script, &p.command) {
        (Some(_), _) | (_, Some(_)) if !bundle.is_empty() => {
            let key = if p.script.is_some() {
                "script"
            } else {
                "command"
            };
            errors.push(
                err(
                    key,
                    format!("`{key}` cannot be set on a job that runs a worker-node bundle"),
                )
                .with_help(
                    "the bundle's job runs its plugins; put this payload in a job probe of its own",
                ),
            );
            None
        }
        (None, None) if !bundle.is_empty() => Some(PayloadTemplate::Bundle),
        (Some(_), Some(_)) => {
            errors.push(
                err(
                    "command",
                    "`script` and `command` cannot both be set".into(),
                )
                .with_help(
                    "`script` is staged from gridprobe's host; `command` runs on the worker",
                ),
            );
            None
        }
        (None, None) => {
            errors.push(
                config
                    .sources
                    .error(
                        &def.params.table_span,
                        "a job probe needs `script` or `command` in its params",
                    )
                    .with_help("e.g. script = \"payloads/gauss.sh\""),
            );
            None
        }
        (Some(s), None) => {
            errors.extend(check_template(def, config, "script", s));
            // Without placeholders the file can be checked now rather than at every run.
            if placeholders::names(s).is_ok_and(|n| n.is_empty()) {
                let path = base.join(s);
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => {}
                    Ok(_) => errors.push(err(
                        "script",
                        format!("payload script {} is not a regular file", path.display()),
                    )),
                    Err(e) => errors.push(
                        err(
                            "script",
                            format!(
                                "payload script {} cannot be read: {}",
                                path.display(),
                                io_reason(&e)
                            ),
                        )
                        .with_help("a relative path starts at the directory of this file"),
                    ),
                }
            }
            Some(PayloadTemplate::Script(s.clone()))
        }
        (None, Some(c)) => {
            errors.extend(check_template(def, config, "command", c));
            if c.trim().is_empty() {
                errors.push(err("command", "`command` is empty".into()));
            }
            Some(PayloadTemplate::Command(c.clone()))
        }
    };
    for a in &p.args {
        errors.extend(check_template(def, config, "args", a));
    }
    ce::check_env(def, config, "env", &p.env, &mut errors);
    let mut names: Vec<String> = Vec::new();
    if let Some(PayloadTemplate::Script(s)) = &payload {
        names.extend(
            Path::new(s)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
        );
    }
    for (metric, name) in bundle::staged_names(&bundle) {
        if names.contains(&name) {
            let child = config.probes.iter().find(|d| d.metric == metric);
            if let Some(child) = child {
                errors.push(config.sources.error(
                    &child.params.key_span("script"),
                    format!("two staged files would be named `{name}` in the job's directory"),
                ));
            }
        }
        names.push(name);
    }
    for input in &p.inputs {
        errors.extend(check_template(def, config, "inputs", input));
        let Some(name) = Path::new(input)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            errors.push(err("inputs", format!("input `{input}` names no file")));
            continue;
        };
        if names.contains(&name) {
            errors.push(err(
                "inputs",
                format!("two staged files would be named `{name}` in the job's directory"),
            ));
        }
        names.push(name);
        if placeholders::names(input).is_ok_and(|n| n.is_empty()) {
            let path = base.join(input);
            if !path.is_file() {
                errors.push(err(
                    "inputs",
                    format!("input file {} does not exist", path.display()),
                ));
            }
        }
    }
    let expect_exit = match p.expect_exit {
        None => 0,
        Some(c) if (0..=255).contains(&c) => c as i32,
        Some(c) => {
            errors.push(err(
                "expect_exit",
                format!("`expect_exit` is {c}; exit codes are 0 to 255"),
            ));
            0
        }
    };
    let mut regex = |key: &str, pattern: &Option<String>| match pattern {
        Some(re) => compile_regex(def, config, key, re)
            .map_err(|d| errors.push(d))
            .ok(),
        None => None,
    };
    let output_regex = regex("output_regex", &p.output_regex);
    let forbid_regex = regex("forbid_regex", &p.forbid_regex);
    for f in &p.produced_files {
        let path = Path::new(f);
        let escapes = path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
        if f.is_empty() || escapes {
            errors.push(err(
                "produced_files",
                format!("`{f}` must be a path inside the job's directory (relative, without ..)"),
            ));
        }
    }
    for (key, value) in [("stage_out", &p.stage_out), ("lock", &p.lock)] {
        if let Some(v) = value {
            errors.extend(check_template(def, config, key, v));
        }
    }
    if p.stage_out.is_some() && p.produced_files.is_empty() {
        errors.push(err(
            "stage_out",
            "`stage_out` copies `produced_files`, but none are listed".into(),
        ));
    }

    let (Some(settings), Some(payload)) = (settings, payload) else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let application = p.application.clone().unwrap_or_else(|| {
        let t = match &payload {
            PayloadTemplate::Script(s) | PayloadTemplate::Command(s) => s,
            PayloadTemplate::Bundle => return "WN bundle".to_string(),
        };
        Path::new(t)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| t.clone())
    });
    Ok(Arc::new(JobProbe {
        settings,
        application,
        payload,
        base,
        args: p.args,
        env: p.env.into_iter().collect(),
        inputs: p.inputs,
        expect_exit,
        output_regex,
        forbid_regex,
        produced_files: p.produced_files,
        stage_out: p.stage_out,
        lock: p.lock,
        bundle,
    }))
}

/// An I/O error in a few words.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// Everything of one run with placeholders filled.
struct Filled {
    spec: JobSpec,
    /// The bundle's record token, when the job runs one.
    token: Option<String>,
    stage_out: Option<PathBuf>,
    lock: Option<PathBuf>,
}

impl JobProbe {
    fn fill(&self, ctx: &ProbeContext) -> Result<Filled, String> {
        let fill = |what: &str, t: &str| {
            placeholders::expand(t, ctx).map_err(|e| format!("in `{what}`: {e}"))
        };
        let mut token = None;
        let mut staged_plugins = Vec::new();
        let payload = match &self.payload {
            PayloadTemplate::Bundle => {
                let plugins = bundle::fill(&self.bundle, ctx)?;
                let t = bundle::token();
                let script = bundle::runner_script(&plugins, &t);
                token = Some(t);
                staged_plugins = plugins.into_iter().filter_map(|p| p.staged).collect();
                Payload::Inline(script.into())
            }
            PayloadTemplate::Script(t) => Payload::Script(self.base.join(fill("script", t)?)),
            PayloadTemplate::Command(t) => {
                let c = fill("command", t)?;
                if c.trim().is_empty() {
                    return Err(format!("`command` `{t}` expands to nothing"));
                }
                Payload::Command(c)
            }
        };
        Ok(Filled {
            spec: JobSpec {
                payload,
                args: self
                    .args
                    .iter()
                    .map(|a| fill("args", a))
                    .collect::<Result<_, _>>()?,
                env: self
                    .env
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), fill("env", v)?)))
                    .collect::<Result<_, String>>()?,
                inputs: self
                    .inputs
                    .iter()
                    .map(|i| Ok(self.base.join(fill("inputs", i)?)))
                    .chain(staged_plugins.into_iter().map(Ok))
                    .collect::<Result<_, String>>()?,
            },
            token,
            stage_out: self
                .stage_out
                .as_deref()
                .map(|s| fill("stage_out", s).map(PathBuf::from))
                .transpose()?,
            lock: self
                .lock
                .as_deref()
                .map(|s| fill("lock", s).map(PathBuf::from))
                .transpose()?,
        })
    }

    /// Judges a job that ended: exit code, output patterns, produced files.
    fn judge(&self, run: &ce::JobRun, produced: &[(String, Produced)]) -> (Outcome, String) {
        let app = &self.application;
        let mut problems: Vec<(Status, String)> = Vec::new();
        let mut passed: Vec<String> = Vec::new();
        let mut checks = String::new();

        match run.exit {
            Some(e) if e.signal.is_none() && e.code == Some(self.expect_exit) => {
                passed.push(format!("exit code {}", self.expect_exit));
            }
            Some(e) => problems.push((
                Status::Critical,
                format!("{}, expected exit code {}", e.describe(), self.expect_exit),
            )),
            None => problems.push((Status::Unknown, "exit code not known".to_string())),
        }
        let (out, err) = (run.stdout.as_bytes(), run.stderr.as_bytes());
        if let Some(re) = &self.forbid_regex {
            match re.find(out).or_else(|| re.find(err)) {
                Some(m) => problems.push((
                    Status::Critical,
                    format!(
                        "output matches forbidden /{}/: {}",
                        re.as_str(),
                        quote_bytes(m.as_bytes(), 60)
                    ),
                )),
                None => passed.push(format!("no /{}/", re.as_str())),
            }
        }
        if let Some(re) = &self.output_regex {
            if re.is_match(out) {
                passed.push(format!("output matches /{}/", re.as_str()));
            } else {
                problems.push((
                    Status::Critical,
                    format!("output does not match /{}/", re.as_str()),
                ));
            }
        }
        for (name, p) in produced {
            match p {
                Produced::Ok(size) => {
                    passed.push(format!("produced {name} ({})", ce::fmt_bytes(*size)));
                }
                Produced::Missing(why) => {
                    problems.push((Status::Critical, format!("{name} {why}")));
                }
                Produced::CopyFailed(why) => {
                    problems.push((Status::Unknown, format!("{name}: {why}")));
                }
            }
        }
        if let Some(w) = run.queue_warning(&self.settings) {
            problems.push((Status::Warning, w));
        }
        for p in &passed {
            let _ = writeln!(checks, "ok: {p}");
        }
        for (s, p) in &problems {
            let _ = writeln!(checks, "{}: {p}", s.name());
        }

        let timing = run.timing_text();
        let tail = if timing.is_empty() {
            run.job_name()
        } else {
            format!("{} {timing}", run.job_name())
        };
        // Worst first, so the summary leads with what made the status.
        problems.sort_by_key(|(s, _)| std::cmp::Reverse(s.exit_rank()));
        let outcome = match problems.first() {
            None => Outcome::ok(format!("{app}: {}; {tail}", passed.join(", "))),
            Some((worst, _)) => {
                let texts: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
                Outcome::new(*worst, format!("{app}: {}; {tail}", texts.join("; ")))
            }
        };
        (outcome, checks)
    }
}

/// Who holds the lock at `path`, if it is held: a file's first line, or a directory's `owner`
/// file (as CE-<vo>-lock style scripts write it).
fn lock_holder(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let owner_file = if meta.is_dir() {
        path.join("owner")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read(&owner_file)
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(512)]).into_owned())
        .unwrap_or_default();
    let holder = text.lines().next().unwrap_or("").trim().to_string();
    Some(if holder.is_empty() {
        "an unknown holder".to_string()
    } else {
        holder
    })
}

impl JobProbe {
    /// Runs the job and judges it; with a bundle, also the plugins' answers (`None` when the
    /// job did not run to its end, so that no plugin could answer).
    async fn run_job(&self, ctx: &ProbeContext) -> (Outcome, Option<Vec<(usize, bundle::Answer)>>) {
        if ctx.cancel.is_cancelled() {
            return (Outcome::unknown("cancelled before start"), None);
        }
        let filled = match self.fill(ctx) {
            Ok(f) => f,
            Err(e) => return (Outcome::unknown(format!("cannot build the job: {e}")), None),
        };
        if let Some(lock) = &filled.lock {
            if let Some(holder) = lock_holder(lock) {
                let o = Outcome::standby(format!(
                    "lock held by {holder} ({}); {} not submitted",
                    lock.display(),
                    self.application
                ));
                return (o, None);
            }
        }
        // A chain step whose input the step before has not produced (yet) is not run: the
        // cause is upstream, and the scheduler runs standby dependants again when their
        // parent reports.
        if let Some(missing) = filled.spec.inputs.iter().find(|i| !i.exists()) {
            let o = Outcome::standby(format!(
                "input {} is missing (not produced by the step before?); {} not submitted",
                missing.display(),
                self.application
            ));
            return (o, None);
        }
        if let Payload::Script(path) = &filled.spec.payload {
            if !path.is_file() {
                let o =
                    Outcome::unknown(format!("payload script {} does not exist", path.display()));
                return (o, None);
            }
        }
        let stage_out: Vec<(String, Option<PathBuf>)> = self
            .produced_files
            .iter()
            .map(|f| (f.clone(), filled.stage_out.clone()))
            .collect();
        let (run, produced) = ce::run_job(&self.settings, &filled.spec, ctx, &stage_out).await;
        let (outcome, checks, ended) = match run.failure() {
            Some(o) => {
                let o = Outcome::new(o.status, format!("{}: {}", self.application, o.summary));
                (o, String::new(), false)
            }
            None => {
                let (o, checks) = self.judge(&run, &produced);
                (o, checks, true)
            }
        };
        let answers = match (&filled.token, ended) {
            (Some(token), true) => Some(bundle::parse_answers(&run.stdout, token)),
            _ => None,
        };
        let mut perfdata = run.perfdata();
        perfdata.extend(produced.iter().filter_map(|(name, p)| match p {
            Produced::Ok(size) => Some(Perfdatum::new(format!("size {name}"), *size as f64, "B")),
            _ => None,
        }));
        let outcome = outcome
            .with_details(run.details(&checks))
            .with_perfdata(perfdata);
        (outcome, answers)
    }
}

#[async_trait]
impl Probe for JobProbe {
    async fn run(&self, ctx: &ProbeContext) -> Outcome {
        let (outcome, answers) = self.run_job(ctx).await;
        if self.bundle.is_empty() {
            return outcome;
        }
        // Each bundle metric: its plugin's answer, or why there is none.
        let failed = answers.is_none().then_some(&outcome);
        let reported = bundle::outcomes(&self.bundle, answers.as_deref().unwrap_or(&[]), failed);
        let mut list = String::from("\nworker-node bundle:\n");
        for r in &reported {
            let _ = writeln!(
                list,
                "  {}: {}: {}",
                gridprobe_config::short_metric_name(&r.metric),
                r.outcome.status,
                r.outcome.summary
            );
        }
        let details = format!("{}{list}", outcome.details);
        outcome.with_details(details).with_reported(reported)
    }

    fn check_instance(&self, ctx: &ProbeContext) -> Result<(), String> {
        self.settings
            .check_instance(ctx)
            .and_then(|()| self.fill(ctx).map(|_| ()))
            .map_err(|e| format!("job probe {}: {e}", ctx.metric))
    }
}

#[cfg(test)]
mod tests;
