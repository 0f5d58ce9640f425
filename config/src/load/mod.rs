//! Reading configuration files: TOML parsing that keeps positions, includes, and the conversion
//! of every table into the model. Each site, service and probe is read on its own, so one bad
//! table does not hide the errors of the others.

use std::path::{Path, PathBuf};

use toml::de::DeTable;
use toml::Spanned;

pub use crate::diagnostic::field_names;
use crate::diagnostic::{Diagnostic, Diagnostics, FileId, Span};
use crate::model::Config;
use crate::validate::Positions;

use files::read_file;
pub use files::{GlobLimits, GLOB_LIMITS, MAX_FILE_BYTES};
use values::{intern, take_key};

mod agents;
mod contacts;
mod credential;
mod downtime;
mod files;
mod notify;
mod publish;
mod raw;
mod report;
mod self_check;
mod server;
mod tls;
mod topology;
mod values;
mod weights;

use raw::*;

/// Keys allowed at the top of the main file.
const MAIN_KEYS: &[&str] = &[
    "vo",
    "include",
    "defaults",
    "server",
    "access",
    "site",
    "probe",
    "profile",
    "downtime",
    "publish",
    "credential",
    "weights",
    "report",
    "notify",
    "notify_rule",
    "site_contacts",
    "agents",
];
/// `retries` (`[defaults]`, `[[probe]]`, overrides): extra attempts after a failure.
const RETRIES: std::ops::RangeInclusive<u32> = 0..=100;
/// `concurrency`, `site_concurrency`, `kind_concurrency.*`: probes running at once.
const CONCURRENCY: std::ops::RangeInclusive<u32> = 1..=1_000_000;
/// `[access] runs_per_hour`: on-demand runs per site and hour.
const RUNS_PER_HOUR: std::ops::RangeInclusive<u32> = 1..=100_000;

/// Keys allowed at the top of an included file.
const INCLUDE_KEYS: &[&str] = &["site", "probe", "profile", "downtime", "site_contacts"];

/// A configuration as far as it could be read, and every problem found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// What was read; may be partial when there are diagnostics.
    pub config: Config,
    /// All problems, in file order.
    pub diagnostics: Diagnostics,
}

/// Reads and validates a configuration file with its includes. Never panics on any input.
pub fn load(path: &Path) -> Loaded {
    let mut loader = Loader::default();
    loader.load_main(path);
    let mut loaded = loader.finish();
    let extra = crate::validate::validate(&loaded.config, &loaded.positions);
    let mut diagnostics = loaded.diagnostics;
    diagnostics.extend(extra.0);
    diagnostics.extend(credential::check_references(&loaded.config).0);
    loaded.diagnostics = diagnostics;
    Loaded {
        config: loaded.config,
        diagnostics: loaded.diagnostics,
    }
}

/// Reads a configuration from a string (for tests and tools); `path` names it in errors.
pub fn load_str(path: &Path, text: &str) -> Loaded {
    let mut loader = Loader::default();
    let id = loader
        .config
        .sources
        .add(path.to_path_buf(), text.to_string());
    loader.parse_file(id, true, path.parent().unwrap_or(Path::new(".")));
    let mut loaded = loader.finish();
    let extra = crate::validate::validate(&loaded.config, &loaded.positions);
    loaded.diagnostics.extend(extra.0);
    loaded
        .diagnostics
        .extend(credential::check_references(&loaded.config).0);
    Loaded {
        config: loaded.config,
        diagnostics: loaded.diagnostics,
    }
}

struct Finished {
    config: Config,
    positions: Positions,
    diagnostics: Diagnostics,
}

#[derive(Default)]
struct Loader {
    config: Config,
    /// Files already read (the main file and includes), so each is read once.
    read_paths: std::collections::HashSet<PathBuf>,
    positions: Positions,
    diagnostics: Diagnostics,
    saw_vo: bool,
    /// Per `[[notify_rule]]` read: where its `channel` was written.
    notify_channel_spans: Vec<Span>,
    /// Every `[[notify]]` name written, valid or not.
    notify_declared: Vec<String>,
    /// `[[site_contacts]]` read, checked against the sites at the end.
    site_contacts: Vec<contacts::PendingContacts>,
    /// Where each `executor = "agent"` was written (checked against `[agents]` at the end).
    agent_sites: Vec<Span>,
    /// Whether an `[agents]` table was written (valid or not).
    saw_agents: bool,
}

impl Loader {
    fn finish(mut self) -> Finished {
        self.finish_site_contacts();
        let names = notify::check_rule_names(
            &self.config,
            &self.notify_channel_spans,
            &self.notify_declared,
        );
        self.diagnostics.extend(names.0);
        self.check_agent_sites();
        Finished {
            config: self.config,
            positions: self.positions,
            diagnostics: self.diagnostics,
        }
    }

    fn load_main(&mut self, path: &Path) {
        match read_file(path) {
            Ok(text) => {
                self.read_paths.insert(path.to_path_buf());
                let id = self.config.sources.add(path.to_path_buf(), text);
                let base = path.parent().unwrap_or(Path::new("."));
                self.parse_file(id, true, base);
            }
            Err(d) => self.diagnostics.push(d),
        }
    }

    fn span(&self, file: FileId, range: std::ops::Range<usize>) -> Span {
        Span { file, range }
    }

    fn error(
        &mut self,
        file: FileId,
        range: std::ops::Range<usize>,
        msg: impl Into<String>,
    ) -> Diagnostic {
        self.config.sources.error(&self.span(file, range), msg)
    }

    fn parse_file(&mut self, file: FileId, is_main: bool, base: &Path) {
        let Some(src) = self.config.sources.file(file) else {
            return;
        };
        let text = intern(&src.text);
        let path = src.path.clone();
        if text.trim().is_empty() {
            let what = if is_main {
                "configuration file is empty"
            } else {
                "included file is empty"
            };
            self.diagnostics.push(
                Diagnostic::for_file(&path, what)
                    .with_help("a configuration needs at least `vo = \"...\"`, one [[site]] and one [[probe]]; see config/examples/"),
            );
            return;
        }
        let (root, errors) = DeTable::parse_recoverable(text);
        let had_syntax_errors = !errors.is_empty();
        for e in errors {
            let range = e.span().unwrap_or(0..0);
            let d = self.error(
                file,
                range,
                format!("TOML syntax error: {}", e.message().trim()),
            );
            self.diagnostics.push(d);
        }
        if had_syntax_errors {
            // A recovered document may hold half-parsed tables; errors about them would mislead.
            return;
        }
        let mut root = root.into_inner();
        root.make_owned();
        let allowed = if is_main { MAIN_KEYS } else { INCLUDE_KEYS };
        let mut includes = Vec::new();
        for (key, value) in root.into_iter() {
            let key_name = key.get_ref().to_string();
            let key_range = key.span();
            match key_name.as_str() {
                "vo" if is_main => match value.get_ref().as_str() {
                    Some(v) if !v.trim().is_empty() => {
                        self.config.vo = v.to_string();
                        self.saw_vo = true;
                    }
                    Some(_) => {
                        let d = self.error(file, value.span(), "`vo` must not be empty");
                        self.diagnostics
                            .push(d.with_help("name the virtual organisation, e.g. vo = \"lhcb\""));
                    }
                    None => {
                        let d = self.error(
                            file,
                            value.span(),
                            format!(
                                "`vo` must be a string, found {}",
                                value.get_ref().type_str()
                            ),
                        );
                        self.diagnostics.push(d);
                    }
                },
                "include" if is_main => {
                    if let Some(v) =
                        self.deserialize::<Vec<Spanned<String>>>(file, value, "include")
                    {
                        includes = v;
                    }
                }
                "defaults" if is_main => {
                    if let Some(raw) = self.deserialize::<RawDefaults>(file, value, "[defaults]") {
                        self.apply_defaults(file, raw);
                    }
                }
                "access" if is_main => {
                    if let Some(raw) = self.deserialize::<RawAccess>(file, value, "[access]") {
                        self.apply_access(file, raw);
                    }
                }
                "server" if is_main => {
                    if let Some(raw) = self.deserialize::<RawServer>(file, value, "[server]") {
                        self.apply_server(file, raw);
                    }
                }
                "agents" if is_main => self.read_agents(file, value),
                "report" if is_main => {
                    if let Some(raw) =
                        self.deserialize::<report::RawReport>(file, value, "[report]")
                    {
                        self.apply_report(file, raw);
                    }
                }
                "site" => {
                    for item in self.array_of_tables(file, value, "site") {
                        self.read_site(file, item);
                    }
                }
                "probe" => {
                    for item in self.array_of_tables(file, value, "probe") {
                        self.read_probe(file, item);
                    }
                }
                "downtime" => {
                    for item in self.array_of_tables(file, value, "downtime") {
                        if let Some(raw) =
                            self.deserialize::<RawDowntime>(file, item, "[[downtime]]")
                        {
                            self.read_downtime(file, raw);
                        }
                    }
                }
                "weights" if is_main => {
                    if let Some(path) = self.deserialize::<Spanned<String>>(file, value, "weights")
                    {
                        self.read_weights(file, base, path);
                    }
                }
                "publish" if is_main => {
                    for item in self.array_of_tables(file, value, "publish") {
                        if let Some(raw) =
                            self.deserialize::<publish::RawPublish>(file, item, "[[publish]]")
                        {
                            self.read_publish(file, raw);
                        }
                    }
                }
                "credential" if is_main => {
                    for item in self.array_of_tables(file, value, "credential") {
                        if let Some(raw) = self.deserialize::<credential::RawCredential>(
                            file,
                            item,
                            "[[credential]]",
                        ) {
                            self.read_credential(file, raw);
                        }
                    }
                }
                "notify" if is_main => {
                    for item in self.array_of_tables(file, value, "notify") {
                        if let Some(raw) =
                            self.deserialize::<notify::RawChannel>(file, item, "[[notify]]")
                        {
                            self.read_channel(file, raw);
                        }
                    }
                }
                "site_contacts" => {
                    for item in self.array_of_tables(file, value, "site_contacts") {
                        if let Some(raw) = self.deserialize::<contacts::RawSiteContacts>(
                            file,
                            item,
                            "[[site_contacts]]",
                        ) {
                            self.read_site_contacts(file, raw);
                        }
                    }
                }
                "notify_rule" if is_main => {
                    for item in self.array_of_tables(file, value, "notify_rule") {
                        if let Some(raw) =
                            self.deserialize::<notify::RawRule>(file, item, "[[notify_rule]]")
                        {
                            self.read_rule(file, raw);
                        }
                    }
                }
                "profile" => {
                    for item in self.array_of_tables(file, value, "profile") {
                        if let Some(raw) = self.deserialize::<RawProfile>(file, item, "[[profile]]")
                        {
                            self.read_profile(file, raw);
                        }
                    }
                }
                other => {
                    let msg = if MAIN_KEYS.contains(&other) {
                        format!("`{other}` is only allowed in the main configuration file, not in an included one")
                    } else {
                        format!("unknown top-level key `{other}`")
                    };
                    let d = self
                        .error(file, key_range, msg)
                        .with_suggestion(other, allowed.iter().copied());
                    let d = if d.help.is_none() {
                        d.with_help(format!("allowed here: {}", allowed.join(", ")))
                    } else {
                        d
                    };
                    self.diagnostics.push(d);
                }
            }
        }
        if is_main && !self.saw_vo {
            self.diagnostics.push(
                Diagnostic::for_file(
                    &path,
                    "missing `vo`: the configuration must name its virtual organisation",
                )
                .with_help("add a line such as vo = \"lhcb\" at the top"),
            );
        }
        for pattern in includes {
            self.include(file, base, pattern);
        }
    }
}

#[cfg(test)]
mod tests;
