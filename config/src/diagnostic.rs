//! Positioned errors: every problem in a configuration is reported as `file:line:col`, with the
//! offending line quoted and a caret under the value, like a compiler does.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
}

/// All files of one configuration (the main file and its includes).
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    files: Vec<Arc<SourceFile>>,
}

impl SourceMap {
    /// Adds a file and returns its id.
    pub fn add(&mut self, path: PathBuf, text: String) -> FileId {
        self.files.push(Arc::new(SourceFile { path, text }));
        self.files.len() - 1
    }

    /// The file with this id.
    pub fn file(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id).map(|f| f.as_ref())
    }

    /// Builds a positioned error for a span.
    pub fn error(&self, span: &Span, message: impl Into<String>) -> Diagnostic {
        let Some(file) = self.file(span.file) else {
            return Diagnostic::plain(message);
        };
        let (line, col) = line_col(&file.text, span.range.start);
        let line_text = file
            .text
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .to_string();
        // The caret covers the span on its first line only.
        let line_start = file.text[..clamp_to_boundary(&file.text, span.range.start)]
            .rfind('\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let end_in_line = span
            .range
            .end
            .min(line_start + line_text.len())
            .max(span.range.start);
        let width = file
            .text
            .get(
                clamp_to_boundary(&file.text, span.range.start)
                    ..clamp_to_boundary(&file.text, end_in_line),
            )
            .map(|s| s.chars().count())
            .unwrap_or(1)
            .max(1);
        Diagnostic {
            location: Some(Location {
                path: file.path.clone(),
                line,
                col,
                line_text,
                width,
            }),
            message: message.into(),
            help: None,
        }
    }
}

fn clamp_to_boundary(text: &str, mut offset: usize) -> usize {
    offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// 1-based line and column (in characters) of a byte offset. `toml` reports byte offsets only.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = clamp_to_boundary(text, offset);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
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
    /// The text of that line, quoted under the message.
    pub line_text: String,
    /// Number of characters the caret underlines.
    pub width: usize,
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where it is, when it has a place in a file.
    pub location: Option<Location>,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we can tell.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with no position (e.g. a file that cannot be read).
    pub fn plain(message: impl Into<String>) -> Self {
        Diagnostic {
            location: None,
            message: message.into(),
            help: None,
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
        match &self.location {
            Some(loc) => {
                writeln!(
                    f,
                    "{}:{}:{}: error: {}",
                    loc.path.display(),
                    loc.line,
                    loc.col,
                    self.message
                )?;
                let gutter = loc.line.to_string().len();
                writeln!(f, "{:gutter$} |", "")?;
                writeln!(f, "{} | {}", loc.line, loc.line_text)?;
                write!(
                    f,
                    "{:gutter$} | {}{}",
                    "",
                    " ".repeat(loc.col.saturating_sub(1)),
                    "^".repeat(loc.width)
                )?;
            }
            None => write!(f, "error: {}", self.message)?,
        }
        if let Some(help) = &self.help {
            write!(f, "\n  = help: {help}")?;
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

    /// Adds one problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Adds several problems.
    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(other);
    }

    /// Orders the problems by file and position (those without a position first), keeping
    /// the order of problems at the same place.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            let key = |d: &Diagnostic| d.location.as_ref().map(|l| (l.path.clone(), l.line, l.col));
            key(a).cmp(&key(b))
        });
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
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
    fn suggestion_only_for_near_misses() {
        assert_eq!(
            did_you_mean("flavor", ["flavours", "flavour"]),
            Some("flavour")
        );
        assert_eq!(did_you_mean("zzz", ["interval"]), None);
        assert_eq!(did_you_mean("ce", ["CE"]), Some("CE"));
    }
}
