//! The state directory of gridprobe and the names of a VO's files in it: the default SQLite
//! store (`<vo>.sqlite`) and, for a PostgreSQL store, the default spool directory
//! (`<vo>.pg.spool`). One function names both, so a VO's files always share one stem.
//!
//! The directory is `$XDG_STATE_HOME/gridprobe`, else `~/.local/state/gridprobe`, else
//! `/var/lib/gridprobe`; never inside the source tree.
//!
//! The stem keeps the VO name readable (`vo.example.org.sqlite`): letters, digits, `-`, `_` and
//! `.` stay, anything else becomes `_`, and a leading dot gets a `vo` prefix (no hidden files,
//! no `..`). Releases before this module named the PostgreSQL spool with dots replaced as well
//! (`vo_example_org.pg.spool`); [`existing_or_new`] keeps using such a directory when it is
//! there, so nothing spooled before an upgrade is stranded.

use std::path::{Path, PathBuf};

/// `$XDG_STATE_HOME/gridprobe`, else `~/.local/state/gridprobe`, else `/var/lib/gridprobe`.
pub fn dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(state).join("gridprobe");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(home).join(".local/state/gridprobe");
    }
    PathBuf::from("/var/lib/gridprobe")
}

/// The file (or directory) `<vo><suffix>` of a VO in the state directory, e.g.
/// `file_for("lhcb", ".sqlite")`.
pub fn file_for(vo: &str, suffix: &str) -> PathBuf {
    file_in(&dir(), vo, suffix)
}

/// As [`file_for`], but when only the name older releases gave it exists (see the module
/// documentation), that one: for directories such as spools, whose contents must survive an
/// upgrade.
pub fn existing_or_new(vo: &str, suffix: &str) -> PathBuf {
    existing_or_new_in(&dir(), vo, suffix)
}

fn file_in(dir: &Path, vo: &str, suffix: &str) -> PathBuf {
    dir.join(format!("{}{suffix}", stem(vo)))
}

fn existing_or_new_in(dir: &Path, vo: &str, suffix: &str) -> PathBuf {
    let new = file_in(dir, vo, suffix);
    let old = dir.join(format!("{}{suffix}", legacy_stem(vo)));
    if !new.exists() && old.exists() {
        old
    } else {
        new
    }
}

/// A VO name made safe as a file name stem.
fn stem(vo: &str) -> String {
    let s: String = vo
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
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

/// The stem releases before this module gave the PostgreSQL spool: dots replaced too.
fn legacy_stem(vo: &str) -> String {
    let s: String = vo
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "vo".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vo_names_become_safe_file_names() {
        assert_eq!(stem("lhcb"), "lhcb");
        assert_eq!(stem("../etc/passwd"), "vo.._etc_passwd");
        assert_eq!(stem("vo.example.org"), "vo.example.org");
        assert_eq!(stem(""), "vo");
        assert_eq!(stem(".hidden"), "vo.hidden");
    }

    #[test]
    fn store_and_spool_of_a_vo_share_one_stem() {
        let dir = Path::new("/state/gridprobe");
        assert_eq!(
            file_in(dir, "vo.example.org", ".sqlite"),
            PathBuf::from("/state/gridprobe/vo.example.org.sqlite")
        );
        assert_eq!(
            file_in(dir, "vo.example.org", ".pg.spool"),
            PathBuf::from("/state/gridprobe/vo.example.org.pg.spool")
        );
    }

    #[test]
    fn a_spool_under_the_old_name_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let new = dir.join("vo.example.org.pg.spool");
        let old = dir.join("vo_example_org.pg.spool");
        // Nothing yet: the new name.
        assert_eq!(existing_or_new_in(dir, "vo.example.org", ".pg.spool"), new);
        // A spool an older release left: keep using it.
        std::fs::create_dir_all(old.join("store")).unwrap();
        assert_eq!(existing_or_new_in(dir, "vo.example.org", ".pg.spool"), old);
        // Both (the new one made by hand): the new name wins.
        std::fs::create_dir_all(&new).unwrap();
        assert_eq!(existing_or_new_in(dir, "vo.example.org", ".pg.spool"), new);
        // A VO name without dots had the same name before and after.
        assert_eq!(
            existing_or_new_in(dir, "lhcb", ".pg.spool"),
            dir.join("lhcb.pg.spool")
        );
    }
}
