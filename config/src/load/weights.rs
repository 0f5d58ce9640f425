//! Site weights (a site's `weight`, the `weights` file: CSV `site,weight` or a JSON object)
//! and profile dates (`valid_from`).

use std::path::Path;

use toml::Spanned;

use super::raw::RawTime;
use super::{read_file, FileId, Loader};
use crate::model::MAX_WEIGHT;

impl Loader {
    /// A weight, range-checked: finite, 0 to [`MAX_WEIGHT`].
    pub(super) fn weight(
        &mut self,
        file: FileId,
        range: std::ops::Range<usize>,
        value: f64,
    ) -> Option<f64> {
        if value.is_finite() && (0.0..=MAX_WEIGHT).contains(&value) {
            return Some(value);
        }
        let d = self.error(
            file,
            range,
            format!("weight must be between 0 and {MAX_WEIGHT:e}, found {value}"),
        );
        self.diagnostics.push(
            d.with_help("give the site's pledged capacity, e.g. weight = 12000 (HEPscore23)"),
        );
        None
    }

    /// `valid_from`: a date (midnight UTC) or a full UTC time.
    pub(super) fn date(&mut self, file: FileId, raw: &Spanned<RawTime>) -> Option<i64> {
        let text = match raw.get_ref() {
            RawTime::Text(t) => t.clone(),
            RawTime::Toml(d) => d.to_string(),
        };
        let text = if text.len() == 10 {
            format!("{text} 00:00")
        } else {
            text
        };
        match crate::time::parse_utc(&text) {
            Ok(ms) => Some(ms),
            Err(e) => {
                let d = self.error(file, raw.span(), e);
                self.diagnostics.push(d.with_help(
                    "write valid_from = 2026-11-15 (midnight UTC) or \"2026-11-15 12:00\"",
                ));
                None
            }
        }
    }

    /// Reads the `weights` file named at the top of the main file: `.json` is an object of
    /// site → number, anything else CSV lines `site,weight` (a `site,weight` header and `#`
    /// comments allowed). Each entry keeps its position for `check`.
    pub(super) fn read_weights(&mut self, file: FileId, base: &Path, path: Spanned<String>) {
        let full = base.join(path.get_ref());
        let text = match read_file(&full) {
            Ok(t) => t,
            Err(d) => {
                let e = self.error(file, path.span(), format!("cannot read weights file: {d}"));
                self.diagnostics.push(
                    e.with_help("name a CSV (site,weight) or JSON ({\"site\": weight}) file, relative to this configuration"),
                );
                return;
            }
        };
        let id = self.config.sources.add(full.clone(), text.clone());
        let is_json = full
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let entries: Vec<(
            String,
            std::ops::Range<usize>,
            std::ops::Range<usize>,
            String,
        )> = if is_json {
            match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text) {
                Ok(map) => {
                    let mut from = 0;
                    map.into_iter()
                        .map(|(k, v)| {
                            let quoted = serde_json::to_string(&k).unwrap_or_default();
                            let at = text[from..]
                                .find(&quoted)
                                .map(|i| i + from)
                                .or_else(|| text.find(&quoted))
                                .unwrap_or(0);
                            from = at;
                            let r = at..at + quoted.len();
                            (k, r.clone(), r, v.to_string())
                        })
                        .collect()
                }
                Err(e) => {
                    let offset = offset_of(&text, e.line(), e.column());
                    let d = self.error(id, offset..offset, format!("invalid JSON: {e}"));
                    self.diagnostics
                        .push(d.with_help("write an object such as {\"T2_DE_DESY\": 12000}"));
                    return;
                }
            }
        } else {
            let mut out = Vec::new();
            let mut offset = 0;
            for line in text.split_inclusive('\n') {
                let start = offset;
                offset += line.len();
                let body = line.trim_end_matches(['\n', '\r']);
                if body.trim().is_empty() || body.trim_start().starts_with('#') {
                    continue;
                }
                let Some((site, weight)) = body.split_once(',') else {
                    let d = self.error(id, start..start + body.len(), "expected `site,weight`");
                    self.diagnostics
                        .push(d.with_help("one site per line, e.g. T2_DE_DESY,12000"));
                    continue;
                };
                let name = site.trim();
                if name.eq_ignore_ascii_case("site") && out.is_empty() {
                    continue; // header
                }
                let site_at = start + (site.len() - site.trim_start().len());
                let w_start = start + site.len() + 1;
                out.push((
                    name.to_string(),
                    site_at..site_at + name.len(),
                    w_start..w_start + weight.len(),
                    weight.trim().to_string(),
                ));
            }
            out
        };
        for (site, site_range, w_range, weight) in entries {
            let Ok(value) = weight.parse::<f64>() else {
                let d = self.error(id, w_range, format!("weight `{weight}` is not a number"));
                self.diagnostics
                    .push(d.with_help("write a number, e.g. 12000"));
                continue;
            };
            let Some(value) = self.weight(id, w_range, value) else {
                continue;
            };
            if self
                .config
                .imported_weights
                .insert(site.clone(), value)
                .is_some()
            {
                let d = self.error(
                    id,
                    site_range.clone(),
                    format!("site `{site}` is given twice"),
                );
                self.diagnostics.push(d.with_help("keep one line per site"));
            }
            let span = self.span(id, site_range);
            self.positions.weight_refs.push((site, span));
        }
    }
}

/// Byte offset of a 1-based line and column (serde_json's error position), clamped to the text.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    start
        .saturating_add(column.saturating_sub(1))
        .min(text.len())
}

#[cfg(test)]
mod tests {
    use crate::model::GroupOperation;

    const BASE: &str = r#"vo = "v"
weights = "pledges.csv"
[[site]]
name = "T2_A"
tier = 2
federation = "FED"
  [[site.service]]
  flavour = "ARC-CE"
  hostname = "ce1"
  [[site.service]]
  flavour = "WEBDAV"
  hostname = "se1"
[[site]]
name = "T2_B"
tier = 2
federation = "FED"
weight = 50
  [[site.service]]
  flavour = "HTCONDOR-CE"
  hostname = "ce2"
[[probe]]
metric = "org.v.ce"
kind = "tcp"
flavours = ["ARC-CE", "HTCONDOR-CE"]
[[probe]]
metric = "org.v.se"
kind = "tcp"
flavours = ["WEBDAV"]
[[profile]]
name = "p"
critical = { ARC-CE = ["ce"], HTCONDOR-CE = ["ce"], WEBDAV = ["se"] }
"#;

    fn load(extra: &str, csv: &str) -> (crate::Loaded, String) {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("pledges.csv"), csv).expect("csv");
        let text = format!("{BASE}{extra}");
        let path = dir.path().join("vo.toml");
        std::fs::write(&path, &text).expect("toml");
        (crate::load(&path), text)
    }

    #[test]
    fn groups_weights_federations_and_versions_are_read() {
        let (l, _) = load(
            r#"groups = [{ name = "compute", operation = "OR", flavours = ["ARC-CE", "HTCONDOR-CE"] },
          { name = "storage", operation = "or", flavours = ["WEBDAV"] }]
[[profile]]
name = "p"
valid_from = 2026-11-15
critical = { ARC-CE = ["ce"] }
"#,
            "site,weight\n# pledges 2026\nT2_A, 1200\nT2_B,7\n",
        );
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        let c = &l.config;
        assert_eq!(c.profiles[0].groups.len(), 2);
        assert_eq!(c.profiles[0].groups[1].operation, GroupOperation::Or);
        assert_eq!(c.site_weight(&c.sites[0]), 1200.0);
        assert_eq!(
            c.site_weight(&c.sites[1]),
            50.0,
            "the site's own weight wins"
        );
        assert_eq!(c.sites[0].federation.as_deref(), Some("FED"));
        let versions = c.profile_versions("p");
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[1].valid_from_ms, Some(1_794_700_800_000));
    }

    #[test]
    fn check_rejects_bad_groups_and_weights_at_their_lines() {
        let (l, text) = load(
            r#"groups = [{ name = "compute", operation = "OR", flavours = ["ARC-CE", "HTCONDR-CE"] },
          { name = "storage", operation = "OR", flavours = ["WEBDAV", "ARC-CE"] }]
[[profile]]
name = "p"
"#,
            "T2_A,1200\nT2_Z,3\nT2_B,-1\n",
        );
        let all = l.diagnostics.to_string();
        let line_of = |needle: &str| {
            text.lines()
                .position(|l| l.contains(needle))
                .map(|i| i + 1)
                .unwrap_or(0)
        };
        let groups_line = line_of("HTCONDR-CE");
        assert!(
            all.contains(&format!("vo.toml:{groups_line}:"))
                && all.contains(
                    "group `compute` names flavour `HTCONDR-CE`, which no service offers"
                )
                && all.contains("did you mean `HTCONDOR-CE`?"),
            "{all}"
        );
        assert!(
            all.contains(
                "flavour `ARC-CE` is in two groups of profile `p`: `compute` and `storage`"
            ),
            "{all}"
        );
        assert!(
            all.contains("pledges.csv:2:1:") && all.contains("weight given for site `T2_Z`"),
            "{all}"
        );
        assert!(
            all.contains("pledges.csv:3:6:") && all.contains("weight must be between"),
            "{all}"
        );
        assert!(all.contains("profile `p` is defined 2 times"), "{all}");
    }

    #[test]
    fn json_weights_are_positioned_too() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("w.json"),
            "{\n  \"T2_A\": 3,\n  \"T2_Q\": 4\n}\n",
        )
        .expect("json");
        let path = dir.path().join("vo.toml");
        std::fs::write(&path, BASE.replace("pledges.csv", "w.json")).expect("toml");
        let l = crate::load(&path);
        let all = l.diagnostics.to_string();
        assert!(
            all.contains("w.json:3:3:") && all.contains("`T2_Q`"),
            "{all}"
        );
        assert_eq!(l.config.imported_weights.get("T2_A"), Some(&3.0));
    }
}
