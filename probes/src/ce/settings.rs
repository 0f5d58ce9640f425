//! The `[probe.params]` of `ce` (shared with `job`): their documentation, parsing and checks.

use super::*;

/// `backend`.
pub const DOC_BACKEND: ParamDoc = ParamDoc {
    name: "backend",
    ty: "string",
    default: ParamDefault::Required,
    description: "Batch system: \"slurm\" (sbatch, squeue, sstat, scontrol, sacct), \"htcondor\" \
                  (condor_submit, condor_q, condor_history, condor_rm), \"arc\" (an ARC-CE \
                  through the REST interface of A-REX, over HTTPS) or \"local\" (the job runs \
                  as a child process of gridprobe, for laptops and demos)",
};
/// `queue`.
pub const DOC_QUEUE: ParamDoc = ParamDoc {
    name: "queue",
    ty: "string",
    default: ParamDefault::Value("the cluster's default partition"),
    description: "slurm: the partition to submit to; arc: the CE's queue (xRSL `queue`); \
                  placeholders allowed, e.g. \"{queue}\"",
};
/// `arc_url`.
pub const DOC_ARC_URL: ParamDoc = ParamDoc {
    name: "arc_url",
    ty: "string",
    default: ParamDefault::Value("the service's `endpoint`, else \"https://{hostname}:443/arex\""),
    description: "arc only: the A-REX endpoint (its REST interface is under /rest/1.0); must be \
                  https; placeholders allowed",
};
/// `ca_file` of the arc backend.
pub const DOC_CA_FILE: ParamDoc = ParamDoc {
    name: "ca_file",
    ty: "string",
    default: ParamDefault::Optional,
    description: "arc only: extra trust anchors for A-REX's certificate: a PEM file or a \
                  directory such as /etc/grid-security/certificates. Optional",
};
/// `client_cert` of the arc backend.
pub const DOC_CLIENT_CERT: ParamDoc = ParamDoc {
    name: "client_cert",
    ty: "string",
    default: ParamDefault::Optional,
    description: "arc only: PEM client certificate (and chain) presented to A-REX, with \
                  `client_key`; without it the probe's `credential` (a proxy or a token) is used",
};
/// `client_key` of the arc backend.
pub const DOC_CLIENT_KEY: ParamDoc = ParamDoc {
    name: "client_key",
    ty: "string",
    default: ParamDefault::Optional,
    description: "arc only: PEM private key of `client_cert` (owner-only permissions)",
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
    DOC_ARC_URL,
    DOC_CA_FILE,
    DOC_CLIENT_CERT,
    DOC_CLIENT_KEY,
];

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
    pub arc_url: Option<String>,
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

/// A batch system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendKind {
    Slurm,
    HtCondor,
    Arc,
    Local,
}

impl BackendKind {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "slurm" => Some(BackendKind::Slurm),
            "htcondor" => Some(BackendKind::HtCondor),
            "arc" => Some(BackendKind::Arc),
            "local" => Some(BackendKind::Local),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            BackendKind::Slurm => "slurm",
            BackendKind::HtCondor => "htcondor",
            BackendKind::Arc => "arc",
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
    /// arc: the endpoint template (`None`: the service's endpoint or the default).
    pub(crate) arc_url: Option<String>,
    /// arc: trust anchors and client certificate.
    pub(crate) tls: Option<Arc<TlsSettings>>,
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
        let only = |key: &str, set: bool, allowed: &[BackendKind], errors: &mut Vec<Diagnostic>| {
            if let Some(k) = kind {
                if set && !allowed.contains(&k) {
                    let names: Vec<&str> = allowed.iter().map(|a| a.name()).collect();
                    errors.push(err(
                        key,
                        format!(
                            "`{key}` applies to the {} backend{} only, not to {}",
                            names.join(" and "),
                            if names.len() > 1 { "s" } else { "" },
                            k.name()
                        ),
                    ));
                }
            }
        };
        let (slurm, condor, arc) = (BackendKind::Slurm, BackendKind::HtCondor, BackendKind::Arc);
        only("queue", p.queue.is_some(), &[slurm, arc], &mut errors);
        only("schedd", p.schedd.is_some(), &[condor], &mut errors);
        only("pool", p.pool.is_some(), &[condor], &mut errors);
        for (key, set) in [
            ("arc_url", p.arc_url.is_some()),
            ("ca_file", p.ca_file.is_some()),
            ("client_cert", p.client_cert.is_some()),
            ("client_key", p.client_key.is_some()),
        ] {
            only(key, set, &[arc], &mut errors);
        }
        if kind == Some(BackendKind::Arc) {
            for (key, set) in [
                ("submit_args", p.submit_args.is_some()),
                ("backend_env", p.backend_env.is_some()),
                ("bin_dir", p.bin_dir.is_some()),
            ] {
                if set {
                    errors.push(err(
                        key,
                        format!("`{key}` has no meaning for the arc backend (A-REX is reached over HTTPS, not by commands)"),
                    ));
                }
            }
        }
        let tls = if kind == Some(BackendKind::Arc) {
            arc::check_params(def, config, &p, &mut errors)
        } else {
            None
        };
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
            ("arc_url", &p.arc_url),
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
                arc_url: p.arc_url,
                tls: tls.map(Arc::new),
            }),
            _ => Err(errors),
        }
    }

    /// The backend for one instance, with its templates expanded.
    pub(crate) fn backend(&self, ctx: &ProbeContext) -> Result<Box<dyn Backend>, String> {
        let fill = |what: &str, t: &str| {
            placeholders::expand(t, ctx).map_err(|e| format!("in `{what}`: {e}"))
        };
        // The probe's [[credential]] reaches the batch commands as X509_USER_PROXY or
        // BEARER_TOKEN_FILE; `backend_env` comes after it and may override it.
        let mut env: Vec<(String, String)> = ctx
            .credential_env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned()))
            .collect();
        for (k, v) in &self.backend_env {
            env.push((k.clone(), fill("backend_env", v)?));
        }
        if self.kind == BackendKind::Local {
            // No batch commands: the job itself gets the credential's environment.
            return Ok(Box::new(local::Local { env }));
        }

        let cli = Cli {
            bin_dir: self.bin_dir.clone(),
            env,
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
            BackendKind::Arc => Box::new(self.arc_backend(ctx)?),
            BackendKind::Local => Box::new(local::Local::default()),
        })
    }

    /// The `queue` template, when set.
    pub(crate) fn queue_template(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// The base directory of job directories for one instance.
    pub(crate) fn workdir(&self, ctx: &ProbeContext) -> Result<PathBuf, String> {
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
        if self.kind == BackendKind::Arc {
            // Not the credential: one that expires is UNKNOWN at run time, never a refused
            // configuration.
            self.arc_endpoint(ctx)?;
        } else {
            self.backend(ctx)?;
        }
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
    Inline(std::borrow::Cow<'static, str>),
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
