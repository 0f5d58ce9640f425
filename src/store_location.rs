//! Where the result store lives: `--store`, else `[server] store`, else `$GRIDPROBE_STORE`, else
//! `$XDG_STATE_HOME/gridprobe/<vo>.sqlite`, else `~/.local/state/gridprobe/<vo>.sqlite`, else
//! `/var/lib/gridprobe/<vo>.sqlite`. Never inside the source tree.

use std::path::PathBuf;

/// Resolves the SQLite file of a VO's result store.
pub fn resolve(flag: Option<&str>, configured: Option<&str>, vo: &str) -> PathBuf {
    let explicit = flag
        .map(str::to_string)
        .or_else(|| configured.map(str::to_string))
        .or_else(|| {
            std::env::var("GRIDPROBE_STORE")
                .ok()
                .filter(|s| !s.is_empty())
        });
    if let Some(s) = explicit {
        return PathBuf::from(s.strip_prefix("sqlite:").unwrap_or(&s));
    }
    let file = format!("{}.sqlite", sanitize(vo));
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(state).join("gridprobe").join(file);
    }
    if let Some(home) = std::env::var_os("HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(home)
            .join(".local/state/gridprobe")
            .join(file);
    }
    PathBuf::from("/var/lib/gridprobe").join(file)
}

/// A VO name made safe as a file name.
fn sanitize(vo: &str) -> String {
    let s: String = vo
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("vo{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_and_sqlite_prefix_is_stripped() {
        assert_eq!(
            resolve(Some("sqlite:/tmp/x.db"), Some("/y"), "vo"),
            PathBuf::from("/tmp/x.db")
        );
        assert_eq!(resolve(None, Some("/y.db"), "vo"), PathBuf::from("/y.db"));
    }

    #[test]
    fn vo_names_become_safe_file_names() {
        assert_eq!(sanitize("lhcb"), "lhcb");
        assert_eq!(sanitize("../etc/passwd"), "vo.._etc_passwd");
        assert_eq!(sanitize("vo.example.org"), "vo.example.org");
    }
}
