//! Configuration files on disk: reading one safely (regular files only, bounded, UTF-8 text,
//! never quoted when it is not TOML) and expanding `include` patterns with bounds.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{FileId, Loader};
use crate::diagnostic::Diagnostic;

/// Largest configuration file read (main or included): far above any real VO, small enough
/// that a mistaken include of a huge file fails at once.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads one configuration file: regular files only (a FIFO would block forever, a device
/// could be endless), at most [`MAX_FILE_BYTES`], UTF-8 text without control characters.
/// Errors name the file and never quote its content: it may not be TOML at all
/// (`/proc/self/environ`, a key file), and quoting it could print secrets.
pub(super) fn read_file(path: &Path) -> Result<String, Diagnostic> {
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
pub(super) fn expand_glob(pattern: &Path, limits: GlobLimits) -> Result<Vec<PathBuf>, String> {
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

/// An I/O error in words (the common kinds short).
pub(super) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

impl Loader {
    /// Reads the files an `include` entry names (a path or a pattern, relative to `base`),
    /// each once, and parses them as part of the configuration.
    pub(super) fn include(&mut self, file: FileId, base: &Path, pattern: Spanned<String>) {
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
}
