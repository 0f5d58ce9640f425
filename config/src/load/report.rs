//! `[report]`: the monthly report's targets, each a percentage checked at its position.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{FileId, Loader};
use crate::report::{ReportSettings, ReportTargets};

/// `[report]` as written. `targets` is read as a map so that every unknown key in it is
/// reported with "did you mean", not only the first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReport {
    #[serde(default)]
    pub(super) targets: BTreeMap<Spanned<String>, Spanned<Percent>>,
}

/// The keys of `targets`.
const TARGET_KEYS: [&str; 3] = ["availability", "reliability", "unknown"];

/// A percentage written as an integer or a float.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
pub(super) enum Percent {
    Int(i64),
    Float(f64),
}

impl Percent {
    fn value(self) -> f64 {
        match self {
            Percent::Int(i) => i as f64,
            Percent::Float(f) => f,
        }
    }
}

impl Loader {
    pub(super) fn apply_report(&mut self, file: FileId, raw: RawReport) {
        let mut targets = ReportTargets::default();
        for (key, v) in raw.targets {
            let slot = match key.get_ref().as_str() {
                "availability" => &mut targets.availability,
                "reliability" => &mut targets.reliability,
                "unknown" => &mut targets.unknown,
                other => {
                    let d = self
                        .error(
                            file,
                            key.span(),
                            format!("unknown key `{other}` in [report] targets"),
                        )
                        .with_suggestion(other, TARGET_KEYS);
                    self.diagnostics.push(d);
                    continue;
                }
            };
            let n = v.get_ref().value();
            if n.is_finite() && (0.0..=100.0).contains(&n) {
                *slot = n / 100.0;
            } else {
                let d = self.error(
                    file,
                    v.span(),
                    format!(
                        "`targets.{}` must be a percentage between 0 and 100, found {n}",
                        key.get_ref()
                    ),
                );
                self.diagnostics.push(d.with_help(
                    "write targets = { availability = 80, reliability = 85, unknown = 10 } (EGI's targets, in percent)",
                ));
            }
        }
        self.config.report = ReportSettings { targets };
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const BASE: &str = "vo = \"v\"\n[[site]]\nname = \"S\"\ntier = 2\n[[site.service]]\nflavour = \"CE\"\nhostname = \"h\"\n[[probe]]\nmetric = \"m\"\nkind = \"tcp\"\nflavours = [\"CE\"]\n";

    #[test]
    fn targets_default_to_egi_and_are_read_as_percentages() {
        let l = crate::load_str(Path::new("vo.toml"), BASE);
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        assert_eq!(l.config.report.targets.availability, 0.8);
        assert_eq!(l.config.report.targets.reliability, 0.85);
        assert_eq!(l.config.report.targets.unknown, 0.1);
        let text =
            format!("{BASE}[report]\ntargets = {{ availability = 90, reliability = 97.5 }}\n");
        let l = crate::load_str(Path::new("vo.toml"), &text);
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        assert_eq!(l.config.report.targets.availability, 0.9);
        assert_eq!(l.config.report.targets.reliability, 0.975);
        assert_eq!(l.config.report.targets.unknown, 0.1);
    }

    #[test]
    fn bad_targets_are_positioned_with_the_range() {
        let text = format!(
            "{BASE}[report]\ntargets = {{ availability = 180, unknown = -1, reliabilty = 9 }}\n"
        );
        let l = crate::load_str(Path::new("vo.toml"), &text);
        let out = l.diagnostics.to_string();
        let line = BASE.lines().count() + 2;
        assert!(
            out.contains(&format!("vo.toml:{line}:28")),
            "availability position: {out}"
        );
        assert!(
            out.contains(
                "`targets.availability` must be a percentage between 0 and 100, found 180"
            ),
            "{out}"
        );
        assert!(
            out.contains("`targets.unknown` must be a percentage"),
            "{out}"
        );
        assert!(
            out.contains("reliabilty") && out.contains("reliability"),
            "{out}"
        );
    }
}
