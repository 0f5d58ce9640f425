//! Positioned errors: every problem in a configuration is reported as `file:line:col`, with the
//! offending line quoted and a caret under the value, like a compiler does.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Index of a file in a [`SourceMap`].
pub type FileId = usize;

/// A byte range inside one loaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The file the range belongs to.
    pub file: FileId,
    /// Byte offsets into that file's text.
    pub range: Range<usize>,
}

/// One loaded configuration file, kept so that later layers can position their errors too.
#[derive(Debug)]
pub struct SourceFile {
    /// Path as the user named it (or as the include glob produced it).
    pub path: PathBuf,
    /// Full text of the file.
    pub text: String,
    /// Whether its lines may be quoted under a diagnostic. False for files that are not
    /// known to be TOML (an include without the `.toml` extension): a glob may match a file
    /// that holds secrets, and quoting it would print them.
    pub quotable: bool,
    /// Byte offset of the start of each line, so positions are found by binary search.
    line_starts: Vec<usize>,
}

impl SourceFile {
    fn new(path: PathBuf, text: String, quotable: bool) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path,
            text,
            quotable,
            line_starts,
        }
    }

    /// 0-based line index holding a byte offset (clamped to the text).
    fn line_index(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        }
    }

    /// Byte range of a line (0-based), without its line ending.
    fn line_range(&self, index: usize) -> Range<usize> {
        let start = self.line_starts.get(index).copied().unwrap_or(0);
        let end = self
            .line_starts
            .get(index + 1)
            .map(|next| next.saturating_sub(1))
            .unwrap_or(self.text.len());
        let line = self.text.get(start..end).unwrap_or("");
        start..start + line.strip_suffix('\r').map_or(line.len(), str::len)
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = clamp_to_boundary(&self.text, offset);
        let index = self.line_index(offset);
        let start = self
            .line_starts
            .get(index)
            .copied()
            .unwrap_or(0)
            .min(offset);
        let col = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        (index + 1, col + 1)
    }
}

/// All files of one configuration (the main file and its includes).
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    files: Vec<Arc<SourceFile>>,
}

/// Widest excerpt quoted under a diagnostic, in characters; longer lines are cut around the
/// span with `…`, so a 50 MB line costs no more than a short one.
pub const EXCERPT_WIDTH: usize = 120;
/// Characters kept before the span when a long line is cut.
const EXCERPT_BEFORE: usize = 40;

impl SourceMap {
    /// Adds a file whose lines may be quoted and returns its id.
    pub fn add(&mut self, path: PathBuf, text: String) -> FileId {
        self.add_file(path, text, true)
    }

    /// Adds a file, saying whether its lines may be quoted in diagnostics.
    pub fn add_file(&mut self, path: PathBuf, text: String, quotable: bool) -> FileId {
        self.files
            .push(Arc::new(SourceFile::new(path, text, quotable)));
        self.files.len() - 1
    }

    /// The file with this id.
    pub fn file(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id).map(|f| f.as_ref())
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when no file was added.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Builds a positioned error for a span. Linear in the excerpt, not in the file.
    pub fn error(&self, span: &Span, message: impl Into<String>) -> Diagnostic {
        let Some(file) = self.file(span.file) else {
            return Diagnostic::plain(message);
        };
        let start = clamp_to_boundary(&file.text, span.range.start);
        let (line, col) = file.line_col(start);
        let line_range = file.line_range(line - 1);
        let line_str = file.text.get(line_range.clone()).unwrap_or("");
        // The caret covers the span on its first line only.
        let end = clamp_to_boundary(&file.text, span.range.end.min(line_range.end).max(start));
        let span_chars = file.text.get(start..end).map_or(0, |s| s.chars().count());
        let (line_text, caret, width) = if file.quotable {
            let (text, caret, width) = excerpt(line_str, col - 1, span_chars);
            (mask_secrets(&text).into_owned(), caret, width)
        } else {
            (String::new(), 0, 0)
        };
        Diagnostic {
            location: Some(Box::new(Location {
                path: file.path.clone(),
                line,
                col,
                line_text,
                caret,
                width,
            })),
            message: message.into(),
            help: None,
            related: Vec::new(),
        }
    }
}

/// The part of a line shown under a diagnostic: at most [`EXCERPT_WIDTH`] characters around
/// the span, with `…` where it was cut. Returns the text, the caret's character offset in it
/// and the caret's width.
fn excerpt(line: &str, col0: usize, span_chars: usize) -> (String, usize, usize) {
    // Only the characters near the span are looked at (`take`), never the whole line twice.
    let from = col0.saturating_sub(EXCERPT_BEFORE);
    let shown: String = line.chars().skip(from).take(EXCERPT_WIDTH + 1).collect();
    let cut_right = shown.chars().count() > EXCERPT_WIDTH;
    let mut text = String::new();
    if from > 0 {
        text.push('…');
    }
    text.extend(shown.chars().take(EXCERPT_WIDTH));
    if cut_right {
        text.push('…');
    }
    let caret = col0 - from + usize::from(from > 0);
    let room = EXCERPT_WIDTH.saturating_sub(col0 - from);
    (text, caret, span_chars.min(room).max(1))
}

fn clamp_to_boundary(text: &str, mut offset: usize) -> usize {
    offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// 1-based line and column (in characters) of a byte offset. `toml` reports byte offsets only.
/// (For many positions in one file, [`SourceFile::line_col`] is faster.)
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = clamp_to_boundary(text, offset);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Masks what looks like a credential, keeping the text's length in characters so carets stay
/// under their values: the password of a URL's user info (`user:***@`), the whole user info
/// of a NATS or WebSocket URL (a token), and the value of any `key=value` (TOML, environment,
/// query parameters) whose key names a secret (`password`, `passwd`, `pwd`, `secret`, `token`, `api_key`,
/// `credential`, also inside longer names such as `PGPASSWORD` or query parameters), except
/// keys naming where a secret lives (`*_file`, `*_env`, `*_path`).
/// Keys that look like secrets but name one: `credential = "NAME"` of a probe, and
/// `token_endpoint` of a `[[credential]]`.
const NAMES_NOT_SECRETS: &[&str] = &["credential", "token_endpoint"];

pub fn mask_secrets(text: &str) -> std::borrow::Cow<'_, str> {
    use regex::Regex;
    use std::sync::OnceLock;
    static URL: OnceLock<Option<Regex>> = OnceLock::new();
    static KEY: OnceLock<Option<Regex>> = OnceLock::new();
    let url =
        URL.get_or_init(|| Regex::new(r#"(?i)\b([a-z][a-z0-9+.-]*)://([^/?#\s"'<>`]*)@"#).ok());
    let key = KEY.get_or_init(|| {
        Regex::new(
            r#"(?i)([a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|credential)[a-z0-9_.-]*)(\s*=\s*)("[^"]*"|'[^']*'|[^\s"'&;,\x00]+)"#,
        )
        .ok()
    });
    let mut ranges: Vec<Range<usize>> = Vec::new();
    if let Some(url) = url {
        for c in url.captures_iter(text) {
            let (Some(scheme), Some(info)) = (c.get(1), c.get(2)) else {
                continue;
            };
            match info.as_str().find(':') {
                Some(colon) => ranges.push(info.start() + colon + 1..info.end()),
                None => {
                    let tokens = ["nats", "tls", "ws", "wss"];
                    if tokens
                        .iter()
                        .any(|t| scheme.as_str().eq_ignore_ascii_case(t))
                    {
                        ranges.push(info.range());
                    }
                }
            }
        }
    }
    if let Some(key) = key {
        for c in key.captures_iter(text) {
            let (Some(name), Some(value)) = (c.get(1), c.get(3)) else {
                continue;
            };
            let name = name.as_str().to_ascii_lowercase();
            if ["_file", "_env", "_path", "_var"]
                .iter()
                .any(|s| name.ends_with(s))
                // A probe's `credential` names a [[credential]], and a token endpoint is a URL
                // (whose user info is masked above): neither is a secret.
                || NAMES_NOT_SECRETS.contains(&name.as_str())
            {
                continue;
            }
            let v = value.as_str();
            let quoted = v.len() >= 2 && (v.starts_with('"') || v.starts_with('\''));
            if quoted {
                ranges.push(value.start() + 1..value.end() - 1);
            } else {
                ranges.push(value.range());
            }
        }
    }
    if ranges.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for (i, ch) in text.char_indices() {
        if ranges.iter().any(|r| r.contains(&i)) {
            out.push('*');
        } else {
            out.push(ch);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Where a diagnostic points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File path.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// The text of that line (cut to [`EXCERPT_WIDTH`] around the span), quoted under the
    /// message; empty when the file may not be quoted.
    pub line_text: String,
    /// Character offset of the caret in `line_text`.
    pub caret: usize,
    /// Number of characters the caret underlines.
    pub width: usize,
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where it is, when it has a place in a file (boxed: most of a diagnostic's size).
    pub location: Option<Box<Location>>,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we can tell.
    pub help: Option<String>,
    /// Further problems found together with this one (e.g. every unknown key of a table):
    /// [`Diagnostics::push`] lists them as problems of their own.
    pub related: Vec<Diagnostic>,
}

impl Diagnostic {
    /// A diagnostic with no position (e.g. a file that cannot be read).
    pub fn plain(message: impl Into<String>) -> Self {
        Diagnostic {
            location: None,
            message: message.into(),
            help: None,
            related: Vec::new(),
        }
    }

    /// A diagnostic about a whole file (position 1:1 would be misleading, so none is given).
    pub fn for_file(path: &Path, message: impl fmt::Display) -> Self {
        Diagnostic::plain(format!("{}: {message}", path.display()))
    }

    /// Adds a hint on how to fix the problem.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a "did you mean" hint when one of the candidates is close to `got`.
    pub fn with_suggestion<'a>(
        self,
        got: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        match did_you_mean(got, candidates) {
            Some(best) => self.with_help(format!("did you mean `{best}`?")),
            None => self,
        }
    }

    /// `file:line:col` of this diagnostic, if it has one.
    pub fn position(&self) -> Option<String> {
        self.location
            .as_ref()
            .map(|l| format!("{}:{}:{}", l.path.display(), l.line, l.col))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every diagnostic passes through here on its way to a person: mask credentials in
        // all of it, whoever built it.
        let message = mask_secrets(&self.message);
        match &self.location {
            Some(loc) => {
                write!(
                    f,
                    "{}:{}:{}: error: {message}",
                    loc.path.display(),
                    loc.line,
                    loc.col,
                )?;
                if !loc.line_text.is_empty() {
                    let gutter = loc.line.to_string().len();
                    writeln!(f)?;
                    writeln!(f, "{:gutter$} |", "")?;
                    writeln!(f, "{} | {}", loc.line, mask_secrets(&loc.line_text))?;
                    write!(
                        f,
                        "{:gutter$} | {}{}",
                        "",
                        " ".repeat(loc.caret),
                        "^".repeat(loc.width)
                    )?;
                }
            }
            None => write!(f, "error: {message}")?,
        }
        if let Some(help) = &self.help {
            write!(f, "\n  = help: {}", mask_secrets(help))?;
        }
        for r in &self.related {
            write!(f, "\n{r}")?;
        }
        Ok(())
    }
}

/// Several diagnostics, reported together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds one problem (and, as problems of their own, those related to it).
    pub fn push(&mut self, mut d: Diagnostic) {
        let related = std::mem::take(&mut d.related);
        self.0.push(d);
        for r in related {
            self.push(r);
        }
    }

    /// Adds several problems.
    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        for d in other {
            self.push(d);
        }
    }

    /// Orders the problems by file and position (those without a position first), keeping
    /// the order of problems at the same place.
    pub fn sort(&mut self) {
        fn key(d: &Diagnostic) -> Option<(&Path, usize, usize)> {
            d.location
                .as_ref()
                .map(|l| (l.path.as_path(), l.line, l.col))
        }
        self.0.sort_by(|a, b| key(a).cmp(&key(b)));
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
}

/// At most this many problems are printed; the rest are counted ("… and 9,900 more").
pub const MAX_SHOWN: usize = 100;

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().take(MAX_SHOWN).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{d}")?;
        }
        if self.0.len() > MAX_SHOWN {
            writeln!(
                f,
                "\n… and {} more (fix the first ones and run again)",
                thousands(self.0.len() - MAX_SHOWN)
            )?;
        }
        Ok(())
    }
}

/// `9900` → `9,900`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl std::error::Error for Diagnostics {}

/// The closest candidate to `got`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    got: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let got_lower = got.to_ascii_lowercase();
    let limit = (got.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != got)
        .map(|c| {
            let d = if c.eq_ignore_ascii_case(got) {
                0
            } else {
                strsim::damerau_levenshtein(&got_lower, &c.to_ascii_lowercase())
            };
            (d, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

// ---- Reading serde's view of a table: unknown keys and errors, positioned ----

/// The keys a `deny_unknown_fields` struct accepts, read from serde's own "unknown field" error
/// (so the list cannot drift from the struct). Empty for types that accept any key.
pub fn field_names<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let probe = "__gridprobe_no_such_key__ = 1";
    match toml::from_str::<T>(probe) {
        Ok(_) => Vec::new(),
        Err(e) => {
            let msg = e.message();
            if !msg.starts_with("unknown field") {
                return Vec::new();
            }
            msg.split('`')
                .skip(3)
                .step_by(2)
                .map(str::to_string)
                .collect()
        }
    }
}

/// Takes every key a `deny_unknown_fields` struct does not accept out of a table, with one
/// positioned error (and "did you mean") per key.
pub(crate) fn take_unknown_keys<T: serde::de::DeserializeOwned>(
    sources: &SourceMap,
    file: FileId,
    value: Spanned<DeValue<'static>>,
    what: &str,
) -> (Spanned<DeValue<'static>>, Vec<Diagnostic>) {
    let span = value.span();
    let mut table = match value.into_inner() {
        DeValue::Table(t) => t,
        other => return (Spanned::new(span, other), Vec::new()),
    };
    let allowed = field_names::<T>();
    if allowed.is_empty() {
        return (Spanned::new(span, DeValue::Table(table)), Vec::new());
    }
    let mut unknown: Vec<_> = table
        .keys()
        .filter(|k| !allowed.iter().any(|a| a == k.get_ref().as_ref()))
        .cloned()
        .collect();
    unknown.sort_by_key(|k| k.span().start);
    let mut errors = Vec::new();
    // One pass (removing keys one by one would shift the table each time: quadratic).
    if !unknown.is_empty() {
        let mut kept = DeTable::new();
        for (k, v) in table {
            if allowed.iter().any(|a| a == k.get_ref().as_ref()) {
                kept.insert(k, v);
            }
        }
        table = kept;
    }
    for key in unknown {
        let name = key.get_ref().to_string();
        let d = sources
            .error(
                &Span {
                    file,
                    range: key.span(),
                },
                format!("unknown key `{name}` in {what}"),
            )
            .with_suggestion(&name, allowed.iter().map(String::as_str));
        let d = if d.help.is_none() {
            d.with_help(format!("valid keys: {}", allowed.join(", ")))
        } else {
            d
        };
        errors.push(d);
    }
    (Spanned::new(span, DeValue::Table(table)), errors)
}

/// Turns a serde error from the TOML deserializer into a positioned diagnostic, with
/// "did you mean" for unknown keys.
pub(crate) fn serde_diagnostic(
    sources: &SourceMap,
    file: FileId,
    e: &toml::de::Error,
    fallback: &Span,
    what: &str,
) -> Diagnostic {
    let span = e
        .span()
        .map(|range| Span { file, range })
        .unwrap_or_else(|| fallback.clone());
    let message = e.message().trim();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((name, tail)) = rest.split_once('`') {
            let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            let d = sources.error(&span, format!("unknown key `{name}` in {what}"));
            let d = d.with_suggestion(name, expected.iter().copied());
            return if d.help.is_none() && !expected.is_empty() {
                d.with_help(format!("valid keys: {}", expected.join(", ")))
            } else {
                d
            };
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return sources
            .error(&span, format!("missing required key `{name}` in {what}"))
            .with_help(format!("add `{name} = ...` to this table"));
    }
    sources.error(&span, format!("{message} (in {what})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars_not_bytes() {
        let text = "a = 1\nb = \"é\" x\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        let x = text.find('x').unwrap_or(0);
        assert_eq!(line_col(text, x), (2, 9));
    }

    #[test]
    fn renders_caret_under_span() {
        let mut map = SourceMap::default();
        let id = map.add("vo.toml".into(), "[defaults]\nintervall = \"5m\"\n".into());
        let d = map
            .error(
                &Span {
                    file: id,
                    range: 11..20,
                },
                "unknown key `intervall`",
            )
            .with_suggestion("intervall", ["interval", "timeout"]);
        let text = d.to_string();
        assert!(
            text.starts_with("vo.toml:2:1: error: unknown key `intervall`"),
            "{text}"
        );
        assert!(text.contains("2 | intervall = \"5m\""), "{text}");
        assert!(text.contains("  | ^^^^^^^^^"), "{text}");
        assert!(text.contains("did you mean `interval`?"), "{text}");
    }

    #[test]
    fn long_lines_are_cut_around_the_span() {
        let mut map = SourceMap::default();
        let long = format!("x = \"{}\" y = 1", "a".repeat(1_000_000));
        let at = long.find('y').unwrap_or(0);
        let id = map.add("vo.toml".into(), long.clone());
        let d = map.error(
            &Span {
                file: id,
                range: at..at + 1,
            },
            "unknown key `y`",
        );
        let text = d.to_string();
        assert!(
            text.starts_with(&format!("vo.toml:1:{}:", at + 1)),
            "{text}"
        );
        assert!(text.len() < 600, "excerpt not cut: {} bytes", text.len());
        let quoted = text.lines().nth(2).unwrap_or("");
        assert!(
            quoted.starts_with("1 | …") && quoted.contains("y = 1"),
            "{quoted}"
        );
        // The caret sits under `y` in the cut excerpt.
        let caret = text.lines().nth(3).unwrap_or("");
        let col = caret.find('^').unwrap_or(0);
        assert_eq!(quoted.chars().nth(col), Some('y'), "{text}");
    }

    #[test]
    fn many_errors_are_capped_and_counted() {
        let mut ds = Diagnostics::default();
        for i in 0..10_000 {
            ds.push(Diagnostic::plain(format!("problem {i}")));
        }
        let text = ds.to_string();
        assert_eq!(text.matches("error: problem").count(), MAX_SHOWN);
        assert!(text.contains("… and 9,900 more"), "{text}");
    }

    #[test]
    fn positions_are_found_fast_in_big_files() {
        // 200,000 lines, an error on each: linear (line index + binary search).
        let text: String = (0..200_000).map(|i| format!("k{i} = 1\n")).collect();
        let mut map = SourceMap::default();
        let id = map.add("big.toml".into(), text.clone());
        let started = std::time::Instant::now();
        let mut offset = 0;
        for (i, line) in text.lines().enumerate() {
            let d = map.error(
                &Span {
                    file: id,
                    range: offset..offset + 2,
                },
                "x",
            );
            assert_eq!(d.location.as_ref().map(|l| l.line), Some(i + 1));
            offset += line.len() + 1;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn credentials_are_masked_wherever_they_appear() {
        for (raw, secret) in [
            ("store = \"postgresql://gp:s3cret@db/gp\"", "s3cret"),
            ("url = \"nats://T0KEN@nats.example.org\"", "T0KEN"),
            ("url = \"amqp://mq/%2f?password=s3cret&x=1\"", "s3cret"),
            ("PGPASSWORD=s3cret\u{0}HOME=/root", "s3cret"),
            ("password = \"two words\"", "two words"),
            ("api_key=s3cret", "s3cret"),
            ("postgres://db/gp?sslpassword=s3cret", "s3cret"),
        ] {
            let masked = mask_secrets(raw);
            assert!(!masked.contains(secret), "{raw} -> {masked}");
            assert_eq!(masked.chars().count(), raw.chars().count(), "{masked}");
        }
        for kept in [
            "store_password_file = \"secrets/pg\"",
            "password_env = \"GP_PW\"",
            "url = \"amqp://gridprobe@mq.example.org/%2f\"",
            "holds a password: put it in `password_env`",
        ] {
            assert_eq!(mask_secrets(kept), kept);
        }
        // In messages and help too, whoever built the diagnostic.
        let d = Diagnostic::plain("invalid URL `nats://u:hunter2@h`").with_help("password=hunter2");
        assert!(!d.to_string().contains("hunter2"), "{d}");
    }

    #[test]
    fn unquotable_files_are_positioned_without_excerpt() {
        let mut map = SourceMap::default();
        let id = map.add_file("environ".into(), "SECRET=x\nmore".into(), false);
        let d = map.error(
            &Span {
                file: id,
                range: 9..13,
            },
            "TOML syntax error",
        );
        let text = d.to_string();
        assert_eq!(text, "environ:2:1: error: TOML syntax error");
    }

    #[test]
    fn related_problems_become_problems_of_their_own() {
        let mut d = Diagnostic::plain("first");
        d.related = vec![Diagnostic::plain("second"), Diagnostic::plain("third")];
        let mut ds = Diagnostics::default();
        ds.push(d);
        assert_eq!(ds.len(), 3);
    }

    #[test]
    fn suggestion_only_for_near_misses() {
        assert_eq!(
            did_you_mean("flavor", ["flavours", "flavour"]),
            Some("flavour")
        );
        assert_eq!(did_you_mean("zzz", ["interval"]), None);
        assert_eq!(did_you_mean("ce", ["CE"]), Some("CE"));
    }
}
