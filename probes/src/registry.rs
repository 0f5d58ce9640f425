//! The map from probe kind name to its builder and parameter documentation.
//!
//! Adding a kind: write `probes/src/<kind>.rs` with `NAME`, `SUMMARY`, `PARAMS` and `build`, and
//! add one line to [`KINDS`]. `gridprobe probes` prints this table, so documentation and config
//! cannot drift apart (each kind's tests compare `PARAMS` with its serde fields).

use gridprobe_config::{Config, Diagnostic, Diagnostics, ProbeDef, ProbeInstance};

pub use crate::kind::{BuildFn, KindSpec, ParamDefault, ParamDoc};
use crate::{ProbeContext, SharedProbe};

/// Every probe kind gridprobe knows.
pub static KINDS: &[KindSpec] = &[
    KindSpec {
        name: crate::nagios::NAME,
        summary: crate::nagios::SUMMARY,
        params: crate::nagios::PARAMS,
        build: crate::nagios::build,
    },
    KindSpec {
        name: crate::http::NAME,
        summary: crate::http::SUMMARY,
        params: crate::http::PARAMS,
        build: crate::http::build,
    },
    KindSpec {
        name: crate::tcp::NAME,
        summary: crate::tcp::SUMMARY,
        params: crate::tcp::PARAMS,
        build: crate::tcp::build,
    },
    KindSpec {
        name: crate::storage::NAME,
        summary: crate::storage::SUMMARY,
        params: crate::storage::PARAMS,
        build: crate::storage::build,
    },
    KindSpec {
        name: crate::conddb::NAME,
        summary: crate::conddb::SUMMARY,
        params: crate::conddb::PARAMS,
        build: crate::conddb::build,
    },
    KindSpec {
        name: crate::fts::NAME,
        summary: crate::fts::SUMMARY,
        params: crate::fts::PARAMS,
        build: crate::fts::build,
    },
    KindSpec {
        name: crate::ce::NAME,
        summary: crate::ce::SUMMARY,
        params: crate::ce::PARAMS,
        build: crate::ce::build,
    },
    KindSpec {
        name: crate::job::NAME,
        summary: crate::job::SUMMARY,
        params: crate::job::PARAMS,
        build: crate::job::build,
    },
    KindSpec {
        name: crate::software::NAME,
        summary: crate::software::SUMMARY,
        params: crate::software::PARAMS,
        build: crate::software::build,
    },
];

/// The kinds whose runs may report further metrics (`[[probe.bundle]]`).
const BUNDLE_KINDS: &[&str] = &[crate::job::NAME];

/// The kind with this name.
pub fn kind(name: &str) -> Option<&'static KindSpec> {
    KINDS.iter().find(|k| k.name == name)
}

/// Builds one probe definition, or explains (with positions) why it cannot be built.
pub fn build(def: &ProbeDef, config: &Config) -> Result<SharedProbe, Vec<Diagnostic>> {
    match kind(&def.kind) {
        Some(spec) => (spec.build)(def, config),
        None => {
            let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
            let d = config
                .sources
                .error(&def.kind_span, format!("unknown probe kind `{}`", def.kind))
                .with_suggestion(&def.kind, names.iter().copied());
            let d = if d.help.is_none() {
                d.with_help(format!(
                    "known kinds: {} (see `gridprobe probes`)",
                    names.join(", ")
                ))
            } else {
                d
            };
            Err(vec![d])
        }
    }
}

/// Every probe of a configuration, built; `None` where a probe could not be built.
pub struct BuiltProbes {
    /// One entry per `config.probes`.
    pub probes: Vec<Option<SharedProbe>>,
    /// The configuration's credentials; `serve` and `run` replace this with their own manager
    /// (with a state directory), which obtains and renews them.
    pub credentials: std::sync::Arc<crate::credentials::Credentials>,
}

impl BuiltProbes {
    /// The context for one instance (see [`context_for`]) with the probe's credential.
    pub fn context_for(
        &self,
        config: &Config,
        inst: &ProbeInstance,
        cancel: tokio_util::sync::CancellationToken,
    ) -> ProbeContext {
        let mut ctx = context_for(config, inst, cancel);
        ctx.credential = config.probes[inst.probe]
            .credential
            .as_deref()
            .and_then(|name| self.credentials.get(name));
        ctx
    }

    /// The built probe of an instance, if it built.
    pub fn get(&self, probe_index: usize) -> Option<&SharedProbe> {
        self.probes.get(probe_index).and_then(Option::as_ref)
    }
}

/// Builds every probe and checks every instance (placeholders and the like). All problems are
/// returned together.
pub fn build_all(config: &Config) -> (BuiltProbes, Diagnostics) {
    let mut diagnostics = Diagnostics::default();
    let mut probes = Vec::with_capacity(config.probes.len());
    for def in &config.probes {
        // A bundle's metric is read by its reporting probe's kind, never run on its own.
        if def.reported_by.is_some() {
            if !BUNDLE_KINDS.contains(&def.kind.as_str()) {
                diagnostics.push(
                    config
                        .sources
                        .error(
                            &def.params.table_span,
                            format!("a `{}` probe cannot run a bundle", def.kind),
                        )
                        .with_help(format!(
                            "worker-node bundles are run by probes of kind {}",
                            BUNDLE_KINDS.join(", ")
                        )),
                );
            }
            probes.push(None);
            continue;
        }
        match build(def, config) {
            Ok(p) => probes.push(Some(p)),
            Err(ds) => {
                diagnostics.extend(ds);
                probes.push(None);
            }
        }
    }
    let built = BuiltProbes {
        probes,
        credentials: crate::credentials::Credentials::for_config(config, None),
    };
    for inst in config.instances() {
        let Some(probe) = built.get(inst.probe) else {
            continue;
        };
        let ctx = context_for(config, &inst, Default::default());
        if let Err(msg) = probe.check_instance(&ctx) {
            let def = &config.probes[inst.probe];
            diagnostics.push(config.sources.error(&def.params.table_span, msg));
        }
    }
    (built, diagnostics)
}

/// The context for one instance, with its deadline starting now.
pub fn context_for(
    config: &Config,
    inst: &ProbeInstance,
    cancel: tokio_util::sync::CancellationToken,
) -> ProbeContext {
    let site = &config.sites[inst.site];
    ProbeContext {
        vo: config.vo.clone(),
        site: site.name.clone(),
        tier: site.tier,
        service: site.services[inst.service].clone(),
        metric: config.probes[inst.probe].metric.clone(),
        timeout: inst.timeout,
        // A timeout past what the clock can hold never panics: it is a deadline far away.
        deadline: {
            let now = std::time::Instant::now();
            now.checked_add(inst.timeout)
                .or_else(|| now.checked_add(std::time::Duration::from_secs(100 * 365 * 86_400)))
                .unwrap_or(now)
        },
        cancel,
        credential: None,
    }
}
