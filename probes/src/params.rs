//! Reading `[probe.params]` values that several kinds share: durations, placeholder templates,
//! regular expressions and paths relative to the config file. Every problem is a diagnostic
//! positioned at its key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gridprobe_config::{Config, Diagnostic, ProbeDef};
use regex::bytes::Regex;

use crate::placeholders;

/// Longest duration a probe parameter may hold (ten years): far beyond any sensible timeout or
/// age, and far from the point where adding it to a clock overflows.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Parses the duration param `key` (`30s`, `1h`); `None` when the key is absent or the value is
/// invalid, in which case a positioned error is recorded in `errors`.
pub(crate) fn duration_param(
    def: &ProbeDef,
    config: &Config,
    key: &str,
    value: Option<&str>,
    errors: &mut Vec<Diagnostic>,
) -> Option<Duration> {
    let text = value?;
    let err = |message: String| {
        config
            .sources
            .error(&def.params.key_span(key), message)
            .with_help("write a duration such as \"30s\", \"5m\" or \"1h 30m\"")
    };
    match gridprobe_config::parse_duration(text) {
        Ok(d) if d > MAX_DURATION => {
            errors.push(err(format!(
                "`{key}`: duration `{text}` is out of range (at most {})",
                gridprobe_config::time::format_duration(MAX_DURATION)
            )));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(err(format!("`{key}`: {e}")));
            None
        }
    }
}

/// A positioned diagnostic when a placeholder template is malformed.
pub(crate) fn check_template(
    def: &ProbeDef,
    config: &Config,
    key: &str,
    template: &str,
) -> Option<Diagnostic> {
    placeholders::names(template).err().map(|e| {
        config
            .sources
            .error(&def.params.key_span(key), format!("`{key}`: {e}"))
            .with_help("placeholders look like {hostname} or {param.NAME}; write {{ and }} for literal braces")
    })
}

/// Compiles the regex of `key`, or a positioned diagnostic with the parser's reason.
pub(crate) fn compile_regex(
    def: &ProbeDef,
    config: &Config,
    key: &str,
    pattern: &str,
) -> Result<Regex, Diagnostic> {
    Regex::new(pattern).map_err(|e| {
        // The parser's message spans lines (pattern, caret, reason); keep the reason.
        let text = e.to_string();
        let reason = text
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .unwrap_or(text.trim())
            .to_string();
        config
            .sources
            .error(
                &def.params.key_span(key),
                format!("invalid regular expression in `{key}`: {reason}"),
            )
            .with_help("the syntax is Rust's regex crate (like RE2/PCRE without look-around)")
    })
}

/// The directory of the file that defines the probe: relative paths in params start there, as
/// `include` does. Made absolute where possible, since jobs and plugins run in other
/// directories; empty when the probe comes from no file.
pub(crate) fn config_dir(def: &ProbeDef, config: &Config) -> PathBuf {
    let dir = config
        .sources
        .file(def.params.file)
        .and_then(|f| f.path.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    std::fs::canonicalize(&dir).unwrap_or(dir)
}
