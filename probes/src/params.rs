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

/// Reads `[probe.params]` into the kind's params struct (a `deny_unknown_fields` serde
/// struct); an error is positioned at its key.
pub(crate) fn read<T: serde::de::DeserializeOwned>(
    def: &ProbeDef,
    config: &Config,
) -> Result<T, Vec<Diagnostic>> {
    def.params.deserialize(&config.sources).map_err(|d| vec![d])
}

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
    let range = gridprobe_config::DurationRange::new(Duration::from_nanos(1), MAX_DURATION);
    match gridprobe_config::parse_duration_in(text, range) {
        Ok(d) => Some(d),
        // Too long, including numbers past what a duration can hold: one message with the bound.
        Err(gridprobe_config::DurationError::OutOfRange { too_long: true, .. }) => {
            errors.push(err(format!(
                "`{key}`: duration `{text}` is out of range (at most {})",
                gridprobe_config::time::format_duration(MAX_DURATION)
            )));
            None
        }
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

#[cfg(test)]
mod tests {
    use crate::test_support::{build_with, line_of};

    /// Issue 13 item 7: a duration that overflows a clock is a positioned error at `check`,
    /// never a panic when the probe runs. Every kind with duration params goes through here.
    #[test]
    fn huge_durations_are_positioned_errors() {
        let huge = "18446744073709551615s";
        let cases: [(crate::kind::BuildFn, &str, String, &str); 4] = [
            (
                crate::ce::build,
                crate::ce::NAME,
                format!("backend = 'local'\nqueue_timeout = '{huge}'"),
                "queue_timeout",
            ),
            (
                crate::conddb::build,
                crate::conddb::NAME,
                format!("url = 'sqlite:///x.db'\nquery = 'SELECT 1'\ncrit_age = '{huge}'"),
                "crit_age",
            ),
            (
                crate::storage::build,
                crate::storage::NAME,
                format!("test_area = '/gp'\nstale_after = '{huge}'"),
                "stale_after",
            ),
            (
                crate::software::build,
                crate::software::NAME,
                format!("repository = 'x.example.org'\nwarn_age = '{huge}'"),
                "warn_age",
            ),
        ];
        for (build, kind, params, key) in cases {
            let Err(ds) = build_with(build, kind, &params) else {
                panic!("{kind}: `{key} = {huge}` must not build");
            };
            let d = ds
                .iter()
                .find(|d| d.message.contains("out of range"))
                .unwrap_or_else(|| panic!("{kind}: {ds:?}"));
            assert_eq!(
                d.message,
                format!("`{key}`: duration `{huge}` is out of range (at most 3650d)")
            );
            let line = line_of(kind, &params, &format!("{key} = "));
            let position = d.position().unwrap_or_default();
            assert!(
                position.starts_with(&format!("t.toml:{line}:")),
                "{kind}: {position}"
            );
        }
        // The largest accepted value still builds.
        assert!(build_with(
            crate::ce::build,
            crate::ce::NAME,
            "backend = 'local'\nqueue_timeout = '3650d'"
        )
        .is_ok());
    }
}
