//! Reading configuration files: TOML parsing that keeps positions, includes, and the conversion
//! of every table into the model. Each site, service and probe is read on its own, so one bad
//! table does not hide the errors of the others.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub use crate::diagnostic::field_names;
use crate::diagnostic::{serde_diagnostic, take_unknown_keys};
use crate::diagnostic::{Diagnostic, Diagnostics, FileId, Span};
use crate::model::Config;
use crate::time::{format_duration, parse_duration_in, DurationError, DurationRange};
use crate::validate::Positions;

mod agents;
mod contacts;
mod credential;
mod downtime;
mod notify;
mod publish;
mod raw;
mod report;
mod self_check;
mod server;
mod tls;
mod topology;
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

/// Largest configuration file read (main or included): far above any real VO, small enough
/// that a mistaken include of a huge file fails at once.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads one configuration file: regular files only (a FIFO would block forever, a device
/// could be endless), at most [`MAX_FILE_BYTES`], UTF-8 text without control characters.
/// Errors name the file and never quote its content: it may not be TOML at all
/// (`/proc/self/environ`, a key file), and quoting it could print secrets.
fn read_file(path: &Path) -> Result<String, Diagnostic> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let cannot = |e: &std::io::Error| {
        Diagnostic::for_file(path, format!("cannot read configuration: {}", io_reason(e)))
    };
    let meta = std::fs::metadata(path).map_err(|e| {
        cannot(&e)
            .with_help("check the path; `gridprobe check FILE` takes the main TOML file of the VO")
    })?;
    let not_regular = |t: std::fs::FileType| {
        let what = if t.is_dir() {
            return Diagnostic::for_file(path, "is a directory, not a configuration file")
                .with_help("name the TOML file inside it, e.g. `vo.toml`");
        } else if t.is_fifo() {
            "a named pipe (FIFO)"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        Diagnostic::for_file(path, format!("is {what}, not a configuration file"))
            .with_help("configuration files and includes must be regular files")
    };
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    // Non-blocking open: should the path have become a FIFO since the check, opening it does
    // not wait for a writer; the type is checked again on the open file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| cannot(&e))?;
    let meta = file.metadata().map_err(|e| cannot(&e))?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(&e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Diagnostic::for_file(
            path,
            format!(
                "is larger than {} MiB, too large for a configuration file",
                MAX_FILE_BYTES >> 20
            ),
        )
        .with_help("check that the path names the intended TOML file"));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(&e.into_bytes()[..offset]).into_owned();
        let (line, col) = crate::diagnostic::line_col(&text, offset);
        Diagnostic::plain(format!(
            "{}:{line}:{col}: file is not valid UTF-8 (byte offset {offset})",
            path.display()
        ))
        .with_help("TOML files must be UTF-8; re-save the file as UTF-8")
    })?;
    // TOML allows no control character but tab and line endings, anywhere: a file holding
    // one is not TOML (a binary, `/proc/self/environ`), so it is named, never quoted.
    // (Those are all ASCII, so a byte scan finds them.)
    if let Some(offset) = text
        .bytes()
        .position(|b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f)
    {
        let (line, col) = crate::diagnostic::line_col(&text, offset);
        return Err(Diagnostic::plain(format!(
            "{}:{line}:{col}: not a TOML text file: control character U+{:04X}",
            path.display(),
            text.as_bytes().get(offset).copied().unwrap_or(0)
        ))
        .with_help("configuration files and includes must be TOML text"));
    }
    Ok(text)
}

/// Bounds on expanding one include pattern.
#[derive(Debug, Clone, Copy)]
pub struct GlobLimits {
    /// Most files and directories looked at.
    pub entries: usize,
    /// Most paths matched.
    pub matches: usize,
    /// Deepest directory level below the pattern's literal prefix that `**` descends to.
    pub depth: usize,
    /// Longest time taken.
    pub time: std::time::Duration,
}

/// The bounds every include pattern is expanded with.
pub const GLOB_LIMITS: GlobLimits = GlobLimits {
    entries: 100_000,
    matches: 10_000,
    depth: 16,
    time: std::time::Duration::from_secs(5),
};

/// Expands an include pattern (an absolute path with `*`, `?`, `[...]` or `**`) to the
/// paths it matches, sorted, with bounds: entries looked at, matches, depth and time. Symbolic
/// links to directories are not followed (no loops).
fn expand_glob(pattern: &Path, limits: GlobLimits) -> Result<Vec<PathBuf>, String> {
    let text = pattern.to_string_lossy();
    let compiled =
        glob::Pattern::new(&text).map_err(|e| format!("invalid include pattern: {e}"))?;
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    // The walk starts at the longest directory prefix without pattern characters.
    let mut root = PathBuf::new();
    let mut rest = Vec::new();
    for c in pattern.components() {
        let s = c.as_os_str().to_string_lossy();
        if rest.is_empty() && !s.contains(['*', '?', '[']) {
            root.push(c);
        } else {
            rest.push(s.into_owned());
        }
    }
    let max_depth = if rest.iter().any(|c| c.contains("**")) {
        limits.depth
    } else {
        rest.len()
    };
    let started = std::time::Instant::now();
    let mut seen = 0usize;
    let mut found = Vec::new();
    let mut stack = vec![(root, 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > limits.entries {
                return Err(format!(
                    "include pattern looks at more than {} files and directories",
                    crate::diagnostic::thousands(limits.entries)
                ));
            }
            if started.elapsed() > limits.time {
                return Err(format!(
                    "include pattern took more than {} to expand",
                    crate::time::format_duration(limits.time)
                ));
            }
            let path = entry.path();
            if compiled.matches_path_with(&path, options) {
                found.push(path.clone());
                if found.len() > limits.matches {
                    return Err(format!(
                        "include pattern matches more than {} files",
                        crate::diagnostic::thousands(limits.matches)
                    ));
                }
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && depth + 1 < max_depth {
                stack.push((path, depth + 1));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// A directory for people: the empty path (a config named without a directory) is the
/// current directory.
fn show_dir(dir: &Path) -> String {
    if dir.as_os_str().is_empty() {
        "the current directory".into()
    } else {
        dir.display().to_string()
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
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

    fn include(&mut self, file: FileId, base: &Path, pattern: Spanned<String>) {
        let span = pattern.span();
        let raw = pattern.into_inner();
        let full = if Path::new(&raw).is_absolute() {
            PathBuf::from(&raw)
        } else {
            base.join(&raw)
        };
        let has_glob = raw.contains(['*', '?', '[']);
        let paths: Vec<PathBuf> = if has_glob {
            match expand_glob(&full, GLOB_LIMITS) {
                Ok(paths) => paths,
                Err(e) => {
                    let d = self.error(file, span, format!("{e}: `{raw}`"));
                    self.diagnostics.push(d.with_help(format!(
                        "name a narrower directory; patterns are relative to {}",
                        show_dir(base)
                    )));
                    return;
                }
            }
        } else {
            vec![full.clone()]
        };
        if paths.is_empty() {
            let d = self
                .error(
                    file,
                    span,
                    format!("include pattern `{raw}` matches no file"),
                )
                .with_help(format!("patterns are relative to {}", show_dir(base)));
            self.diagnostics.push(d);
            return;
        }
        for p in paths {
            if !self.read_paths.insert(p.clone()) {
                continue;
            }
            match read_file(&p) {
                Ok(text) => {
                    // Only a `.toml` file is known to be TOML: the lines of anything else a
                    // pattern matched are never quoted under an error.
                    let quotable = p.extension().is_some_and(|e| e == "toml");
                    let id = self.config.sources.add_file(p.clone(), text, quotable);
                    let include_base = p.parent().unwrap_or(base).to_path_buf();
                    self.parse_file(id, false, &include_base);
                }
                Err(d) => {
                    let d2 = self.error(file, span.clone(), format!("cannot include `{raw}`"));
                    self.diagnostics.push(d2.with_help(d.message));
                }
            }
        }
    }

    /// Deserializes one value, recording a positioned error on failure.
    fn deserialize<T: serde::de::DeserializeOwned>(
        &mut self,
        file: FileId,
        value: Spanned<DeValue<'static>>,
        what: &str,
    ) -> Option<T> {
        let fallback = self.span(file, value.span());
        let value = self.drop_unknown_keys::<T>(file, value, what);
        match T::deserialize(toml::de::ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(e) => {
                let d = serde_diagnostic(&self.config.sources, file, &e, &fallback, what);
                self.diagnostics.push(d);
                None
            }
        }
    }

    /// Reports every unknown key of a table (serde would stop at the first) and removes them,
    /// so that the remaining keys are still checked in the same pass.
    fn drop_unknown_keys<T: serde::de::DeserializeOwned>(
        &mut self,
        file: FileId,
        value: Spanned<DeValue<'static>>,
        what: &str,
    ) -> Spanned<DeValue<'static>> {
        let (value, errors) = take_unknown_keys::<T>(&self.config.sources, file, value, what);
        self.diagnostics.extend(errors);
        value
    }

    fn array_of_tables(
        &mut self,
        file: FileId,
        value: Spanned<DeValue<'static>>,
        key: &str,
    ) -> Vec<Spanned<DeValue<'static>>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    if item.get_ref().is_table() {
                        out.push(item);
                    } else {
                        let d = self.error(
                            file,
                            item.span(),
                            format!(
                                "each `{key}` must be a table, found {}",
                                item.get_ref().type_str()
                            ),
                        );
                        self.diagnostics
                            .push(d.with_help(format!("write each one as [[{key}]]")));
                    }
                }
                out
            }
            other => {
                let d = self.error(
                    file,
                    span,
                    format!(
                        "`{key}` must be an array of tables, found {}",
                        other.type_str()
                    ),
                );
                self.diagnostics.push(
                    d.with_help(format!("write [[{key}]] (double brackets), once per {key}")),
                );
                Vec::new()
            }
        }
    }

    /// A duration setting, parsed by the one parser and checked against its documented range
    /// (docs/configuration.md); the error points at the value and names the key.
    fn duration(
        &mut self,
        file: FileId,
        raw: Option<Spanned<String>>,
        key: &str,
        range: DurationRange,
    ) -> Option<Duration> {
        let raw = raw?;
        match parse_duration_in(raw.get_ref(), range) {
            Ok(d) => Some(d),
            Err(DurationError::Invalid(msg)) => {
                let d = self.error(file, raw.span(), msg);
                self.diagnostics.push(
                    d.with_help("write durations like \"30s\", \"5m\", \"1h 30m\" or \"2d\""),
                );
                None
            }
            Err(DurationError::OutOfRange { too_long, .. }) => {
                let d = self.error(
                    file,
                    raw.span(),
                    format!(
                        "`{key}` must be between {} and {}, found `{}` (too {})",
                        format_duration(range.min),
                        format_duration(range.max),
                        raw.get_ref(),
                        if too_long { "long" } else { "short" }
                    ),
                );
                self.diagnostics
                    .push(d.with_help("the ranges of every setting: docs/configuration.md"));
                None
            }
        }
    }

    /// A count setting, checked against its documented range (docs/configuration.md).
    fn count(
        &mut self,
        file: FileId,
        v: Option<Spanned<i64>>,
        name: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Option<u32> {
        // Read as i64 (TOML's integer) so a negative or huge value gets this message, not a
        // type error.
        let v = v?;
        match u32::try_from(*v.get_ref()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                let d = self.error(
                    file,
                    v.span(),
                    format!(
                        "`{name}` must be between {} and {}, found {}",
                        range.start(),
                        range.end(),
                        v.get_ref()
                    ),
                );
                self.diagnostics.push(d);
                None
            }
        }
    }
}

/// Keeps configuration text alive for the process, so that parsed values (which borrow it)
/// can be handed to probe kinds. Identical texts are stored once, so reloading an unchanged
/// configuration costs nothing; each changed file costs its size once.
fn intern(text: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static TEXTS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = TEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(existing) = set.get(text) {
        return existing;
    }
    let leaked: &'static str = Box::leak(text.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// Removes `key` from a table value, returning the rest and the removed value.
fn take_key(
    item: Spanned<DeValue<'static>>,
    key: &str,
) -> (Spanned<DeValue<'static>>, Option<Spanned<DeValue<'static>>>) {
    let span = item.span();
    match item.into_inner() {
        DeValue::Table(mut table) => {
            let found = table.keys().find(|k| k.get_ref().as_ref() == key).cloned();
            let taken = found.and_then(|k| table.remove(&k));
            (Spanned::new(span, DeValue::Table(table)), taken)
        }
        other => (Spanned::new(span, other), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    const VALID: &str = r#"
vo = "lhcb"

[defaults]
interval = "1h"
timeout = "5m"

[[site]]
name = "LCG.CERN.ch"
tier = 0
  [[site.service]]
  flavour = "CE"
  hostname = "ce01.example.org"
  endpoint = "https://ce01.example.org:9619"
  params = { queue = "long" }
    [site.service.override."CE-lhcb-install"]
    timeout = "20m"

[[site]]
name = "LCG.RAL.uk"
tier = 1
  [site.override."CE-lhcb-os"]
  disabled = true
  [[site.service]]
  flavour = "CE"
  hostname = "ce.ral.example.org"

[[probe]]
metric = "org.lhcb.CE-lhcb-os"
kind = "nagios"
flavours = ["CE"]
retries = 2
  [probe.params]
  command = "/bin/true"

[[probe]]
metric = "org.lhcb.CE-lhcb-install"
kind = "nagios"
flavours = ["CE"]
depends_on = ["CE-lhcb-os"]
interval = "2h"
  [probe.params]
  command = "/bin/true"

[[profile]]
name = "critical"
critical = { CE = ["CE-lhcb-install"] }
"#;

    fn load_text(text: &str) -> Loaded {
        load_str(Path::new("vo.toml"), text)
    }

    fn positions(l: &Loaded) -> Vec<String> {
        l.diagnostics.iter().filter_map(|d| d.position()).collect()
    }

    #[test]
    fn valid_config_loads_with_inheritance() {
        let l = load_text(VALID);
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        let c = &l.config;
        assert_eq!(c.vo, "lhcb");
        assert_eq!(c.sites.len(), 2);
        assert_eq!(c.probes[1].short, "CE-lhcb-install");
        let inst = c.instances();
        // CE-lhcb-os is disabled at RAL: 2 + 1 instances.
        assert_eq!(inst.len(), 3);
        let install_cern = inst
            .iter()
            .find(|i| i.probe == 1 && i.site == 0)
            .expect("install at CERN");
        assert_eq!(
            install_cern.timeout,
            Duration::from_secs(1200),
            "service override"
        );
        assert_eq!(
            install_cern.interval,
            Duration::from_secs(7200),
            "probe value"
        );
        let os_cern = inst.iter().find(|i| i.probe == 0).expect("os at CERN");
        assert_eq!(os_cern.retries, 2);
        assert_eq!(os_cern.timeout, Duration::from_secs(300), "default");
    }

    #[test]
    fn every_unknown_key_is_reported_with_position() {
        let text =
            "vo = \"x\"\n[defaults]\nintervall = \"1h\"\ntimeot = \"5m\"\nretries = \"two\"\n";
        let l = load_text(text);
        assert_eq!(
            positions(&l),
            vec!["vo.toml:3:1", "vo.toml:4:1", "vo.toml:5:11"],
            "{}",
            l.diagnostics
        );
        let text = l.diagnostics.to_string();
        assert!(text.contains("did you mean `interval`?"), "{text}");
        assert!(text.contains("did you mean `timeout`?"), "{text}");
    }

    #[test]
    fn syntax_errors_are_positioned() {
        let l = load_text("vo = \"x\"\n[[site]\nname = 1\n");
        assert_eq!(
            positions(&l).first().map(String::as_str),
            Some("vo.toml:2:8"),
            "{}",
            l.diagnostics
        );
    }

    #[test]
    fn semantic_errors_point_at_values() {
        let broken = VALID
            .replace(
                "depends_on = [\"CE-lhcb-os\"]",
                "depends_on = [\"CE-lhcb-oss\"]",
            )
            .replace("tier = 1", "tier = 7");
        let l = load_text(&broken);
        let text = l.diagnostics.to_string();
        assert!(
            text.contains("vo.toml:21:8: error: tier must be 0, 1, 2 or 3, found 7"),
            "{text}"
        );
        assert!(
            text.contains("`depends_on` names `CE-lhcb-oss`, which is not a probe"),
            "{text}"
        );
        assert!(text.contains("did you mean `CE-lhcb-os`?"), "{text}");
    }

    #[test]
    fn profile_naming_unknown_metric_is_rejected() {
        let l =
            load_text(&VALID.replace("CE = [\"CE-lhcb-install\"]", "CE = [\"CE-lhcb-instal\"]"));
        let text = l.diagnostics.to_string();
        assert!(
            text.contains("names metric `CE-lhcb-instal`, which no probe produces"),
            "{text}"
        );
    }

    #[test]
    fn override_of_unknown_probe_is_rejected() {
        let l = load_text(&VALID.replace(
            "[site.override.\"CE-lhcb-os\"]",
            "[site.override.\"CE-lhcb-xx\"]",
        ));
        assert!(l
            .diagnostics
            .to_string()
            .contains("override for `CE-lhcb-xx`, which is not a probe"));
    }

    #[test]
    fn includes_are_read_and_positioned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sites = dir.path().join("sites");
        std::fs::create_dir(&sites).expect("mkdir");
        std::fs::write(
            sites.join("a.toml"),
            "[[site]]\nname = \"A\"\ntier = 2\n  [[site.service]]\n  flavour = \"CE\"\n  hostname = \"a\"\n",
        )
        .expect("write");
        std::fs::write(sites.join("b.toml"), "[[site]]\nname = \"B\"\ntier = 9\n").expect("write");
        let main = dir.path().join("vo.toml");
        std::fs::write(
            &main,
            "vo = \"x\"\ninclude = [\"sites/*.toml\", \"missing/*.toml\"]\n[[probe]]\nmetric = \"p\"\nkind = \"tcp\"\nflavours = [\"CE\"]\n",
        )
        .expect("write");
        let l = load(&main);
        let text = l.diagnostics.to_string();
        assert_eq!(l.config.sites.len(), 2, "{text}");
        assert!(text.contains("b.toml:3:8: error: tier must be"), "{text}");
        assert!(
            text.contains("vo.toml:2:28: error: include pattern `missing/*.toml` matches no file"),
            "{text}"
        );
    }

    #[test]
    fn bad_files_give_precise_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = load(&dir.path().join("nope.toml"));
        assert!(
            l.diagnostics.to_string().contains("no such file"),
            "{}",
            l.diagnostics
        );
        let l = load(dir.path());
        assert!(
            l.diagnostics.to_string().contains("is a directory"),
            "{}",
            l.diagnostics
        );
        let empty = dir.path().join("empty.toml");
        std::fs::write(&empty, "  \n").expect("write");
        assert!(load(&empty)
            .diagnostics
            .to_string()
            .contains("configuration file is empty"));
        let latin1 = dir.path().join("latin1.toml");
        std::fs::write(&latin1, b"vo = \"caf\xe9\"\n").expect("write");
        let text = load(&latin1).diagnostics.to_string();
        assert!(
            text.contains("latin1.toml:1:10: file is not valid UTF-8"),
            "{text}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let text = String::from_utf8_lossy(&bytes);
            let l = load_text(&text);
            // Either valid, or every error explains itself.
            for d in l.diagnostics.iter() {
                prop_assert!(!d.message.is_empty());
            }
        }

        #[test]
        fn mutated_valid_config_never_panics(
            cut in 0usize..VALID.len(),
            len in 0usize..40,
            insert in "[a-z\\[\\]=\" \n{}.,0-9]{0,12}",
        ) {
            let mut text = VALID.to_string();
            let start = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            let end = (start + len).min(text.len());
            let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
            text.replace_range(start..end, &insert);
            let l = load_text(&text);
            for d in l.diagnostics.iter() {
                prop_assert!(!d.message.is_empty());
                if let Some(loc) = &d.location {
                    prop_assert!(loc.line >= 1 && loc.col >= 1);
                }
            }
        }
    }

    /// The line and column of the first occurrence of `needle` in `text`, as `vo.toml:L:C`.
    fn at(text: &str, needle: &str) -> String {
        let offset = text.find(needle).unwrap_or(0);
        let (l, c) = crate::diagnostic::line_col(text, offset);
        format!("vo.toml:{l}:{c}")
    }

    #[test]
    fn overflowing_durations_are_refused_at_their_value() {
        for (from, to) in [
            ("interval = \"1h\"", "interval = \"10000000000000000000s\""),
            ("timeout = \"5m\"", "timeout = \"18446744073709551615s\""),
            (
                "interval = \"2h\"",
                "interval = \"99999999999999999999999s\"",
            ),
            (
                "retries = 2",
                "retries = 2\ntimeout = \"18446744073709551615s\"",
            ),
            ("retries = 2", "retries = 2\nfreshness = \"1000000d\""),
            ("timeout = \"20m\"", "timeout = \"18446744073709551615s\""),
        ] {
            let text = VALID.replacen(from, to, 1);
            let l = load_text(&text);
            let value = to.rsplit('=').next().unwrap_or("").trim();
            let where_ = at(&text, value);
            let rendered = l.diagnostics.to_string();
            assert!(
                l.diagnostics
                    .iter()
                    .any(|d| d.position().as_deref() == Some(where_.as_str())
                        && d.message.contains("must be between")),
                "{to}: expected an error at {where_}:\n{rendered}"
            );
        }
        for server in [
            "startup_spread = \"18446744073709551615s\"",
            "retention = \"10000000000000000000s\"",
            "shutdown_grace = \"18446744073709551615s\"",
        ] {
            let l = with_server(server);
            let text = l.diagnostics.to_string();
            assert!(text.contains("must be between"), "{server}: {text}");
            assert!(text.contains("too long"), "{server}: {text}");
        }
    }

    #[test]
    fn counts_have_ranges() {
        for (from, to, says) in [
            (
                "retries = 2",
                "retries = 1000",
                "`retries` must be between 0 and 100",
            ),
            (
                "timeout = \"5m\"",
                "timeout = \"5m\"\nconcurrency = 0",
                "`concurrency` must be between 1 and 1000000",
            ),
        ] {
            let text = VALID.replacen(from, to, 1);
            let l = load_text(&text);
            let rendered = l.diagnostics.to_string();
            assert!(rendered.contains(says), "{to}: {rendered}");
            // The value on the last line of `to`.
            let line = to.lines().last().unwrap_or(to);
            let offset = text.find(line).unwrap_or(0) + line.find("= ").unwrap_or(0) + 2;
            let (l_, c_) = crate::diagnostic::line_col(&text, offset);
            let where_ = format!("vo.toml:{l_}:{c_}");
            assert!(
                l.diagnostics
                    .iter()
                    .any(|d| d.position().as_deref() == Some(where_.as_str())),
                "{to}: not positioned at {where_}:\n{rendered}"
            );
        }
        let l = with_server("spool_max_size = \"100TiB\"");
        assert!(
            l.diagnostics
                .to_string()
                .contains("between 64KiB and 16TiB"),
            "{}",
            l.diagnostics
        );
    }

    #[test]
    fn duplicate_profiles_are_positioned() {
        let text = format!("{VALID}\n[[profile]]\nname = \"critical\"\n");
        let l = load_text(&text);
        let d = l
            .diagnostics
            .iter()
            .find(|d| d.message.contains("is defined 2 times"))
            .expect("duplicate profile reported");
        let line = text.lines().count();
        assert_eq!(d.position(), Some(format!("vo.toml:{line}:8")), "{d}");
        assert!(d.to_string().contains("first defined at vo.toml:"), "{d}");
    }

    #[test]
    fn every_unknown_params_key_is_reported() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Params {
            command: String,
        }
        let text = VALID.replacen(
            "command = \"/bin/true\"",
            "command = \"/bin/true\"\n  comand = 1\n  timout = 2\n  bogus = 3",
            1,
        );
        let l = load_text(&text);
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        let err = l.config.probes[0]
            .params
            .deserialize::<Params>(&l.config.sources)
            .expect_err("unknown keys");
        let mut all = Diagnostics::default();
        all.push(err);
        let positions: Vec<String> = all.iter().filter_map(|d| d.position()).collect();
        assert_eq!(
            positions,
            vec![at(&text, "comand"), at(&text, "timout"), at(&text, "bogus")],
            "{all}"
        );
        assert!(all.to_string().contains("did you mean `command`?"), "{all}");
    }

    #[test]
    fn a_relative_store_is_read_from_the_directory_of_the_config() {
        let l = load_str(
            Path::new("/etc/gridprobe/vo.toml"),
            &format!("{VALID}\n[server]\nstore = \"data/results.sqlite\"\n"),
        );
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        assert_eq!(
            l.config.server.store.as_deref(),
            Some("/etc/gridprobe/data/results.sqlite")
        );
        let l = load_str(
            Path::new("other/dir/vo.toml"),
            &format!("{VALID}\n[server]\nstore = \"sqlite:r.db\"\n"),
        );
        assert_eq!(
            l.config.server.store.as_deref(),
            Some("sqlite:other/dir/r.db")
        );
    }

    fn include_errors(dir: &Path, include: &str) -> String {
        let main = dir.join("vo.toml");
        std::fs::write(&main, format!("include = [{include}]\n{VALID}")).expect("write");
        load(&main).diagnostics.to_string()
    }

    #[test]
    fn fifos_and_devices_are_refused_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("sites").join("pipe.toml");
        std::fs::create_dir(dir.path().join("sites")).expect("mkdir");
        let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for include in ["\"sites/pipe.toml\"", "\"sites/*.toml\"", "\"/dev/zero\""] {
            let text = include_errors(dir.path(), include);
            assert!(
                text.contains("is a named pipe (FIFO)") || text.contains("is a device"),
                "{include}: {text}"
            );
            assert!(text.contains("cannot include"), "{text}");
        }
    }

    #[test]
    fn include_globs_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..60 {
            std::fs::write(dir.path().join(format!("f{i}.toml")), "").expect("write");
        }
        let small = GlobLimits {
            entries: 50,
            ..GLOB_LIMITS
        };
        let e = expand_glob(&dir.path().join("**"), small).expect_err("bounded");
        assert!(e.contains("more than 50 files and directories"), "{e}");
        let e = expand_glob(
            &dir.path().join("*.toml"),
            GlobLimits {
                matches: 10,
                ..GLOB_LIMITS
            },
        )
        .expect_err("bounded");
        assert!(e.contains("matches more than 10 files"), "{e}");
        let found = expand_glob(&dir.path().join("f1*.toml"), GLOB_LIMITS).expect("ok");
        assert_eq!(found.len(), 11);
        // The whole file system: refused quickly, with the reason.
        let started = std::time::Instant::now();
        let text = include_errors(dir.path(), "\"/**/*.toml\"");
        assert!(text.contains("include pattern"), "{text}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn non_toml_includes_are_named_never_quoted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = include_errors(dir.path(), "\"/proc/self/environ\"");
        assert!(text.contains("not a TOML text file"), "{text}");
        assert!(!text.contains("PATH="), "{text}");
        std::fs::write(dir.path().join("secrets.env"), "API=hunter2 x\n").expect("write");
        let text = include_errors(dir.path(), "\"secrets.env\"");
        assert!(text.contains("secrets.env:1:"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn include_help_names_the_current_directory() {
        let l = load_str(
            Path::new("vo.toml"),
            &format!("include = [\"nope/*.toml\"]\n{VALID}"),
        );
        let text = l.diagnostics.to_string();
        assert!(
            text.contains("patterns are relative to the current directory"),
            "{text}"
        );
    }

    #[test]
    fn credentials_in_urls_are_refused_and_never_printed() {
        for (server_or_publish, says) in [
            (
                "[[publish]]\nkind = \"nats\"\nurl = \"nats://S3CRETTOKEN@nats.example.org\"",
                "holds a token",
            ),
            (
                "[[publish]]\nkind = \"amqp\"\nurl = \"amqp://gp@mq.example.org/%2f?password=S3CRETTOKEN\"",
                "holds a password",
            ),
            (
                "[[publish]]\nkind = \"nats\"\nurl = \"nats://user:S3CRETTOKEN@bad host\"",
                "invalid nats URL",
            ),
            (
                "[server]\nstore = \"postgresql://gp@db/gp?sslpassword=S3CRETTOKEN\"",
                "holds a password",
            ),
            (
                "[server]\nstore = \"postgresql://gp:S3CRETTOKEN@db/gp\nlisten = 1",
                "TOML syntax error",
            ),
        ] {
            let l = load_text(&format!("{VALID}\n{server_or_publish}\n"));
            let text = l.diagnostics.to_string();
            assert!(text.contains(says), "{server_or_publish}: {text}");
            assert!(!text.contains("S3CRETTOKEN"), "secret printed:\n{text}");
        }
        let text = VALID.replacen(
            "endpoint = \"https://ce01.example.org:9619\"",
            "endpoint = \"https://u:S3CRETTOKEN@ce01.example.org:9619\"",
            1,
        );
        let rendered = load_text(&text).diagnostics.to_string();
        assert!(rendered.contains("holds a password or token"), "{rendered}");
        assert!(!rendered.contains("S3CRETTOKEN"), "{rendered}");
        // A NATS user name with a password source is a user, not a token.
        let l = load_text(&format!(
            "{VALID}\n[[publish]]\nkind = \"nats\"\nurl = \"nats://gp@nats.example.org\"\npassword_env = \"NATS_PW\"\n"
        ));
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
    }

    fn with_server(server: &str) -> Loaded {
        load_text(&format!("{VALID}\n[server]\n{server}\n"))
    }

    #[test]
    fn schedule_mode_and_lease() {
        let l = with_server("");
        assert_eq!(l.config.server.schedule, crate::ScheduleMode::Local);
        assert_eq!(l.config.server.schedule_lease, Duration::from_secs(15));
        let l = with_server(
            "store = \"postgresql://gp@db/gp\"\nschedule = \"shared\"\nschedule_lease = \"30s\"",
        );
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        assert_eq!(l.config.server.schedule, crate::ScheduleMode::Shared);
        assert_eq!(l.config.server.schedule_lease, Duration::from_secs(30));
        // Without a store in the file it may come from --store: accepted here, checked by serve.
        let l = with_server("schedule = \"shared\"");
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        for (bad, says) in [
            ("schedule = \"cluster\"", "unknown schedule mode `cluster`"),
            (
                "store = \"x.sqlite\"\nschedule = \"shared\"",
                "needs a PostgreSQL store",
            ),
            ("schedule_lease = \"20m\"", "between 1s and 10m"),
        ] {
            let l = with_server(bad);
            let text = l.diagnostics.to_string();
            assert!(text.contains(says), "{bad}: {text}");
        }
    }

    #[test]
    fn store_takes_sqlite_files_and_postgres_urls() {
        for (store, spec) in [
            (
                "/var/lib/gridprobe/lhcb.sqlite",
                crate::StoreSpec::Sqlite("/var/lib/gridprobe/lhcb.sqlite".into()),
            ),
            ("sqlite:rel.db", crate::StoreSpec::Sqlite("rel.db".into())),
            (
                "postgresql://gridprobe@db.example.org:5432/gridprobe",
                crate::StoreSpec::Postgres(
                    "postgresql://gridprobe@db.example.org:5432/gridprobe".into(),
                ),
            ),
            (
                "postgres://db.example.org/gp?sslmode=require",
                crate::StoreSpec::Postgres("postgres://db.example.org/gp?sslmode=require".into()),
            ),
        ] {
            let l = with_server(&format!("store = \"{store}\""));
            assert!(l.diagnostics.is_empty(), "{store}: {}", l.diagnostics);
            assert_eq!(l.config.server.store.as_deref(), Some(store));
            assert_eq!(crate::StoreSpec::parse(store), Ok(spec));
        }
        let l = with_server(
            "store = \"postgresql://gridprobe@db/gp\"\nstore_password_file = \"secrets/pg\"",
        );
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        // Relative to the directory of the file that says it.
        assert_eq!(
            l.config.server.store_password_file,
            Some(PathBuf::from("secrets/pg"))
        );
        let l = with_server(
            "store = \"postgresql://gridprobe@db/gp\"\nstore_password_env = \"GP_DB_PASSWORD\"",
        );
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        assert_eq!(
            l.config.server.store_password_env.as_deref(),
            Some("GP_DB_PASSWORD")
        );
    }

    #[test]
    fn store_url_with_a_password_is_refused_where_it_is_written() {
        for store in [
            "postgresql://gridprobe:s3cret@db.example.org/gridprobe",
            "postgres://db.example.org/gridprobe?sslmode=require&password=s3cret",
        ] {
            let l = with_server(&format!("store = \"{store}\""));
            assert_eq!(l.diagnostics.len(), 1, "{}", l.diagnostics);
            let d = &l.diagnostics.0[0];
            let line = VALID.lines().count() + 3;
            assert_eq!(d.position(), Some(format!("vo.toml:{line}:9")));
            let text = l.diagnostics.to_string();
            assert!(
                text.contains("put the password in PGPASSWORD or [server] store_password_file"),
                "{text}"
            );
            assert!(!text.contains("s3cret"), "{text}");
            assert_eq!(l.config.server.store, None);
        }
    }

    #[test]
    fn store_password_keys_are_checked() {
        let l = with_server(
            "store = \"postgresql://gp@db/gp\"\nstore_password_env = \"X\"\nstore_password_file = \"f\"",
        );
        assert!(
            l.diagnostics.to_string().contains("not both"),
            "{}",
            l.diagnostics
        );
        let l = with_server("store = \"/tmp/x.sqlite\"\nstore_password_file = \"f\"");
        assert!(
            l.diagnostics
                .to_string()
                .contains("only used with a PostgreSQL store"),
            "{}",
            l.diagnostics
        );
        let l = with_server("store = \"mysql://db/gp\"");
        let text = l.diagnostics.to_string();
        assert!(text.contains("unsupported store `mysql://...`"), "{text}");
        let l = with_server("store_pasword_file = \"f\"");
        assert!(
            l.diagnostics.to_string().contains("store_password_file"),
            "{}",
            l.diagnostics
        );
    }
}
