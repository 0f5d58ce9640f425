//! The job description A-REX receives: xRSL, generated from the prepared job.
//!
//! xRSL (NorduGrid's extended RSL) rather than ADL: A-REX accepts both, xRSL is what ARC's own
//! clients and the WLCG tools send, and it is short. Facts of the language this relies on:
//! values are double-quoted strings in which `"` is written twice; `(*` opens a comment
//! *anywhere*, even inside a quoted string, so a value holding it is split with the
//! concatenation operator `#`; A-REX reads a bare `walltime` number as seconds (the server's
//! dialect). Files with an empty source in `inputfiles` are uploaded by the client into the
//! session directory; the output entry `"/"` keeps the whole session directory for download.

use std::fmt::Write as _;
use std::time::Duration;

use super::super::{Prepared, STDERR_FILE, STDOUT_FILE, WRAPPER};

/// Margin added to the walltime A-REX hands to the batch system, so that gridprobe's own
/// `run_timeout` comes first and the batch system's limit is only a safety net.
const LIMIT_MARGIN: Duration = Duration::from_secs(120);

/// `s` as one xRSL string literal.
pub(crate) fn quote(s: &str) -> String {
    let doubled = s.replace('"', "\"\"");
    // `(*` would open a comment even inside quotes: cut the literal between `(` and `*`.
    let parts: Vec<String> = doubled.split("(*").map(|p| format!("\"{p}\"")).collect();
    parts.join(" # \"(\" # \"*\" # ")
}

/// The xRSL for `job`: its wrapper as executable, the wrapper and staged files uploaded by
/// gridprobe, `executables` the files that must keep their execute bit, the whole session
/// directory kept as output, and a walltime past gridprobe's own limit.
pub(crate) fn describe(job: &Prepared, queue: Option<&str>, executables: &[String]) -> String {
    let mut x = String::from("&");
    let _ = write!(x, "(executable={})", quote(WRAPPER));
    let _ = write!(x, "(jobname={})", quote(&job.tag));
    x.push_str("(inputfiles=");
    for name in std::iter::once(WRAPPER).chain(job.staged.iter().map(String::as_str)) {
        let _ = write!(x, "({} \"\")", quote(name));
    }
    x.push(')');
    if !executables.is_empty() {
        x.push_str("(executables=");
        let list: Vec<String> = executables.iter().map(|e| quote(e)).collect();
        x.push_str(&list.join(" "));
        x.push(')');
    }
    x.push_str("(outputfiles=(\"/\" \"\"))");
    let _ = write!(
        x,
        "(stdout={})(stderr={})",
        quote(STDOUT_FILE),
        quote(STDERR_FILE)
    );
    let wall = job.run_limit.saturating_add(LIMIT_MARGIN).as_secs().max(60);
    let _ = write!(x, "(walltime=\"{wall}\")");
    if let Some(q) = queue {
        let _ = write!(x, "(queue={})", quote(q));
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Reads one xRSL string literal back as ARC's parser does (doubled quotes, `#`
    /// concatenation); `None` when it is not one.
    fn unquote(s: &str) -> Option<String> {
        let mut out = String::new();
        for piece in s.split(" # ") {
            let inner = piece.strip_prefix('"')?.strip_suffix('"')?;
            // Inside, every quote must come in pairs.
            let mut chars = inner.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '"' && chars.next() != Some('"') {
                    return None;
                }
                out.push(c);
            }
        }
        Some(out)
    }

    #[test]
    fn quoting_doubles_quotes_and_never_opens_a_comment() {
        for s in [
            "plain",
            "",
            "with \"quotes\"",
            "(*not a comment*)",
            "a(*b(*c",
            "ends with (",
            "* starts",
            "\"(*\"",
            "x)(executable=\"/bin/rm\")",
        ] {
            let q = quote(s);
            assert!(!q.contains("(*"), "{s:?} gave {q}");
            assert_eq!(unquote(&q).as_deref(), Some(s), "{s:?} gave {q}");
        }
    }

    #[test]
    fn description_names_the_files_and_limits() {
        let job = Prepared {
            tag: "gridprobe-ce-x-1".into(),
            dir: PathBuf::from("/tmp/x"),
            staged: vec!["gridprobe-payload.sh".into(), "in \"put\".txt".into()],
            queue_limit: Duration::from_secs(60),
            run_limit: Duration::from_secs(300),
        };
        let x = describe(&job, Some("debug"), &["gridprobe-payload.sh".to_string()]);
        assert!(x.starts_with("&(executable=\"gridprobe-job.sh\")"), "{x}");
        assert!(x.contains("(jobname=\"gridprobe-ce-x-1\")"), "{x}");
        assert!(
            x.contains(
                "(inputfiles=(\"gridprobe-job.sh\" \"\")(\"gridprobe-payload.sh\" \"\")(\"in \"\"put\"\".txt\" \"\"))"
            ),
            "{x}"
        );
        assert!(x.contains("(executables=\"gridprobe-payload.sh\")"), "{x}");
        assert!(x.contains("(outputfiles=(\"/\" \"\"))"), "{x}");
        assert!(x.contains("(walltime=\"420\")"), "{x}");
        assert!(x.ends_with("(queue=\"debug\")"), "{x}");
        let x = describe(&job, None, &[]);
        assert!(!x.contains("queue") && !x.contains("executables"), "{x}");
    }
}
