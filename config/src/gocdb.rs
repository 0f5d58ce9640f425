//! Import of GOCDB downtimes: the `get_downtime` XML answer (`<results>` of `<DOWNTIME>`, one
//! element per affected service) read into [`Downtime`]s, all or nothing.
//!
//! GOCDB names services by its own site names (HOSTED_BY) and service types (SERVICE_TYPE),
//! which may differ from a VO's; [`align_with_config`] maps them onto the configuration by host
//! name, so that a downtime covers the configured service it is about.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Config, Downtime};
use crate::xml::{self, Element, XmlError};

/// The `source` of every downtime imported from GOCDB.
pub const SOURCE: &str = "gocdb";

/// One answer of `get_downtime`: its downtimes, and the next page when GOCDB pages the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DowntimePage {
    /// Every downtime element, in document order.
    pub downtimes: Vec<Downtime>,
    /// The `<meta><link rel="next" href=..>` of a paged answer.
    pub next_page: Option<String>,
}

/// Parses a `get_downtime` answer. Malformed XML, or a DOWNTIME whose required element
/// (HOSTNAME, SERVICE_TYPE, SEVERITY, START_DATE, END_DATE) or CLASSIFICATION is missing or
/// invalid, is an error naming the element and line; no partial list is returned.
pub fn parse(text: &str) -> Result<DowntimePage, XmlError> {
    let root = results_root(text, "get_downtime")?;
    let mut page = DowntimePage {
        next_page: next_page(&root),
        ..DowntimePage::default()
    };
    for child in root.children.iter().filter(|c| c.name == "DOWNTIME") {
        page.downtimes.push(parse_downtime(child)?);
    }
    Ok(page)
}

/// The `<results>` root of a GOCDB answer to `method`, or an error naming what it is instead.
pub(crate) fn results_root(text: &str, method: &str) -> Result<Element, XmlError> {
    let root = xml::parse(text)?;
    if root.name != "results" {
        return Err(root.error(format!(
            "not a GOCDB {method} answer: its root element is <results>, this document's is <{}>",
            root.name
        )));
    }
    Ok(root)
}

/// The `<meta><link rel="next" href=..>` of a paged GOCDB answer (the last one given).
pub(crate) fn next_page(root: &Element) -> Option<String> {
    root.children
        .iter()
        .filter(|c| c.name == "meta")
        .filter_map(|meta| {
            meta.children
                .iter()
                .filter(|l| l.name == "link" && l.attr("rel").map(str::trim) == Some("next"))
                .find_map(|l| l.attr_nonempty("href"))
                .map(str::to_string)
        })
        .next_back()
}

fn parse_downtime(el: &Element) -> Result<Downtime, XmlError> {
    let what = el.describe(&["ID"]);
    let id = el.attr_nonempty("ID");
    let primary_key = el
        .attr_nonempty("PRIMARY_KEY")
        .or_else(|| el.child_text("PRIMARY_KEY"));
    let id = match (id, primary_key) {
        (Some(id), Some(pk)) if id != pk => format!("{id}/{pk}"),
        (Some(id), _) => id.to_string(),
        (None, Some(pk)) => pk.to_string(),
        (None, None) => {
            return Err(el.error("a <DOWNTIME> needs an `ID` or `PRIMARY_KEY` attribute"))
        }
    };
    let scheduled = match el.attr("CLASSIFICATION").map(str::trim) {
        Some(c) if c.eq_ignore_ascii_case("SCHEDULED") => true,
        Some(c) if c.eq_ignore_ascii_case("UNSCHEDULED") => false,
        Some(c) => {
            return Err(el.error(format!(
                "{what}: CLASSIFICATION is `{c}`; GOCDB uses SCHEDULED or UNSCHEDULED"
            )))
        }
        None => return Err(el.error(format!("{what} has no CLASSIFICATION attribute"))),
    };
    let required = |name: &str| -> Result<(&Element, &str), XmlError> {
        let child = el
            .child(name)
            .ok_or_else(|| el.error(format!("{what} has no <{name}>")))?;
        let text = child.trimmed_text();
        if text.is_empty() {
            return Err(child.error(format!("<{name}> of {what} is empty")));
        }
        Ok((child, text))
    };
    let (_, hostname) = required("HOSTNAME")?;
    let (_, service_type) = required("SERVICE_TYPE")?;
    let (severity_el, severity) = required("SEVERITY")?;
    let outage = if severity.eq_ignore_ascii_case("OUTAGE") {
        true
    } else if severity.eq_ignore_ascii_case("WARNING") {
        false
    } else {
        return Err(severity_el.error(format!(
            "SEVERITY is `{severity}`; GOCDB uses OUTAGE or WARNING"
        )));
    };
    let time = |name: &str| -> Result<(&Element, i64), XmlError> {
        let (child, text) = required(name)?;
        let ms = text
            .parse::<i64>()
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .ok_or_else(|| {
                child.error(format!(
                    "`{text}` is not a time in Unix seconds (FORMATED_{name} has the readable form)"
                ))
            })?;
        Ok((child, ms))
    };
    let (_, start_ms) = time("START_DATE")?;
    let (end_el, end_ms) = time("END_DATE")?;
    if end_ms <= start_ms {
        return Err(end_el.error(format!(
            "{what} ends ({}) before it starts ({})",
            crate::time::format_utc(end_ms),
            crate::time::format_utc(start_ms)
        )));
    }
    Ok(Downtime {
        id,
        site: el.child_text("HOSTED_BY").map(str::to_string),
        hostname: Some(hostname.to_string()),
        flavour: Some(service_type.to_string()),
        start_ms,
        end_ms,
        scheduled,
        outage,
        reason: el.child_text("DESCRIPTION").unwrap_or("").to_string(),
        source: SOURCE.to_string(),
    })
}

/// GOCDB service types that a VO feed names differently (beyond letter case).
const TYPE_ALIASES: &[(&str, &str)] = &[
    ("org.opensciencegrid.htcondorce", "HTCONDOR-CE"),
    ("globus-GRIDFTP", "GRIDFTP"),
];

fn same_type(gocdb: &str, flavour: &str) -> bool {
    gocdb.eq_ignore_ascii_case(flavour)
        || TYPE_ALIASES.iter().any(|(g, f)| {
            (gocdb.eq_ignore_ascii_case(g) && flavour.eq_ignore_ascii_case(f))
                || (gocdb.eq_ignore_ascii_case(f) && flavour.eq_ignore_ascii_case(g))
        })
}

/// How imported downtimes relate to the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alignment {
    /// GOCDB site name → configuration site name, with how many downtimes were renamed.
    pub sites: BTreeMap<(String, String), usize>,
    /// GOCDB service type → configuration flavour, with counts.
    pub flavours: BTreeMap<(String, String), usize>,
    /// Downtimes of hosts the configuration does not have: (host, service type, GOCDB site).
    pub unknown_hosts: BTreeSet<(String, String, String)>,
    /// Downtimes of a configured host for a service type it is not configured with:
    /// (host, service type, the host's configured flavours).
    pub unknown_types: BTreeSet<(String, String, String)>,
    /// GOCDB site names that are not configuration sites (after renaming).
    pub unknown_sites: BTreeSet<String>,
}

/// Maps GOCDB's site names and service types onto the configuration's, by host: a downtime of
/// a configured host takes that service's site name and flavour (matched by type, ignoring
/// case and known aliases), so that [`Downtime::covers`] applies it. Downtimes of unknown hosts
/// are left as they are and reported.
pub fn align_with_config(downtimes: &mut [Downtime], config: &Config) -> Alignment {
    let mut out = Alignment::default();
    let config_sites: BTreeSet<&str> = config.sites.iter().map(|s| s.name.as_str()).collect();
    for d in downtimes.iter_mut() {
        let Some(host) = d.hostname.clone() else {
            continue;
        };
        let kind = d.flavour.clone().unwrap_or_default();
        let gocdb_site = d.site.clone().unwrap_or_default();
        let on_host: Vec<(&str, &str, &str)> = config
            .sites
            .iter()
            .flat_map(|site| {
                site.services
                    .iter()
                    .filter(|s| s.hostname.eq_ignore_ascii_case(&host))
                    .map(move |s| (site.name.as_str(), s.hostname.as_str(), s.flavour.as_str()))
            })
            .collect();
        if on_host.is_empty() {
            out.unknown_hosts.insert((host, kind, gocdb_site));
        } else {
            let matched = on_host
                .iter()
                .find(|(_, _, f)| *f == kind)
                .or_else(|| on_host.iter().find(|(_, _, f)| same_type(&kind, f)));
            let sites_of_host: BTreeSet<&str> = on_host.iter().map(|(s, _, _)| *s).collect();
            let site = match matched {
                Some((site, hostname, flavour)) => {
                    d.hostname = Some(hostname.to_string());
                    if *flavour != kind {
                        *out.flavours
                            .entry((kind.clone(), flavour.to_string()))
                            .or_default() += 1;
                        d.flavour = Some(flavour.to_string());
                    }
                    Some(*site)
                }
                None => {
                    let flavours: Vec<&str> = on_host.iter().map(|(_, _, f)| *f).collect();
                    out.unknown_types
                        .insert((host.clone(), kind.clone(), flavours.join(", ")));
                    // The host still tells the site when it is configured at one only.
                    (sites_of_host.len() == 1)
                        .then(|| sites_of_host.iter().next().copied())
                        .flatten()
                }
            };
            if let Some(site) = site {
                if d.site.as_deref() != Some(site) {
                    *out.sites
                        .entry((gocdb_site.clone(), site.to_string()))
                        .or_default() += 1;
                    d.site = Some(site.to_string());
                }
            }
        }
        if let Some(site) = &d.site {
            if !config_sites.contains(site.as_str()) {
                out.unknown_sites.insert(site.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `get_downtime` answer in GOCDB's format: a scheduled outage of two services (one
    /// element each), an unscheduled outage, a scheduled warning, and a paging `<meta>`.
    pub(crate) const DOWNTIMES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<results>
  <meta>
    <link rel="self" href="https://gocdb.example/gocdbpi/public/?method=get_downtime&amp;page=1"/>
    <link rel="next" href="https://gocdb.example/gocdbpi/public/?method=get_downtime&amp;page=2"/>
  </meta>
  <DOWNTIME ID="31001" PRIMARY_KEY="131001G0" CLASSIFICATION="SCHEDULED">
    <PRIMARY_KEY>131001G0</PRIMARY_KEY>
    <HOSTNAME>ce503.cern.example</HOSTNAME>
    <SERVICE_TYPE>org.opensciencegrid.htcondorce</SERVICE_TYPE>
    <ENDPOINT>ce503.cern.exampleorg.opensciencegrid.htcondorce</ENDPOINT>
    <HOSTED_BY>CERN-PROD</HOSTED_BY>
    <SEVERITY>OUTAGE</SEVERITY>
    <DESCRIPTION>Kernel upgrade &amp; reboot</DESCRIPTION>
    <INSERT_DATE>1790000000</INSERT_DATE>
    <START_DATE>1790841600</START_DATE>
    <END_DATE>1790870400</END_DATE>
    <FORMATED_START_DATE>2026-10-01 08:00</FORMATED_START_DATE>
    <FORMATED_END_DATE>2026-10-01 16:00</FORMATED_END_DATE>
  </DOWNTIME>
  <DOWNTIME ID="31001" PRIMARY_KEY="131001G0" CLASSIFICATION="SCHEDULED">
    <HOSTNAME>eoslhcb.cern.example</HOSTNAME>
    <SERVICE_TYPE>XRootD</SERVICE_TYPE>
    <HOSTED_BY>CERN-PROD</HOSTED_BY>
    <SEVERITY>OUTAGE</SEVERITY>
    <DESCRIPTION>Kernel upgrade &amp; reboot</DESCRIPTION>
    <START_DATE>1790841600</START_DATE>
    <END_DATE>1790870400</END_DATE>
  </DOWNTIME>
  <DOWNTIME ID="31002" PRIMARY_KEY="131002G0" CLASSIFICATION="UNSCHEDULED">
    <HOSTNAME>arc-ce01.ral.example</HOSTNAME>
    <SERVICE_TYPE>ARC-CE</SERVICE_TYPE>
    <HOSTED_BY>RAL-LCG2</HOSTED_BY>
    <SEVERITY>OUTAGE</SEVERITY>
    <DESCRIPTION>Power cut in the machine room</DESCRIPTION>
    <START_DATE>1790900000</START_DATE>
    <END_DATE>1790910000</END_DATE>
  </DOWNTIME>
  <DOWNTIME ID="31003" PRIMARY_KEY="131003G0" CLASSIFICATION="SCHEDULED">
    <HOSTNAME>se.unknown.example</HOSTNAME>
    <SERVICE_TYPE>SRM</SERVICE_TYPE>
    <HOSTED_BY>UNKNOWN-SITE</HOSTED_BY>
    <SEVERITY>WARNING</SEVERITY>
    <DESCRIPTION>Network intervention, at risk</DESCRIPTION>
    <START_DATE>1791000000</START_DATE>
    <END_DATE>1791003600</END_DATE>
    <AFFECTED_ENDPOINTS>
      <ENDPOINT><ID>1</ID><NAME>srm</NAME></ENDPOINT>
    </AFFECTED_ENDPOINTS>
  </DOWNTIME>
</results>
"#;

    #[test]
    fn parses_every_downtime() {
        let page = parse(DOWNTIMES).expect("parses");
        assert_eq!(
            page.next_page.as_deref(),
            Some("https://gocdb.example/gocdbpi/public/?method=get_downtime&page=2")
        );
        let d = &page.downtimes;
        assert_eq!(d.len(), 4);
        assert_eq!(d[0].id, "31001/131001G0");
        assert_eq!(d[0].site.as_deref(), Some("CERN-PROD"));
        assert_eq!(d[0].hostname.as_deref(), Some("ce503.cern.example"));
        assert_eq!(
            d[0].flavour.as_deref(),
            Some("org.opensciencegrid.htcondorce")
        );
        assert_eq!(d[0].start_ms, 1_790_841_600_000);
        assert_eq!(d[0].end_ms, 1_790_870_400_000);
        assert_eq!(d[0].reason, "Kernel upgrade & reboot");
        assert_eq!(d[0].source, "gocdb");
        assert!(d[0].scheduled && d[0].outage);
        // One downtime over two services: two elements with the same id.
        assert_eq!(d[1].id, d[0].id);
        assert!(!d[2].scheduled && d[2].outage);
        assert!(d[3].scheduled && !d[3].outage);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any damage to an answer gives downtimes that end after they start, or an error with
        /// a position; never a panic.
        #[test]
        fn damaged_answers_never_panic(
            cut in 0usize..DOWNTIMES.len(),
            len in 0usize..60,
            insert in "[<>/=\" A-Z_&;#0-9\n]{0,16}",
        ) {
            let mut text = DOWNTIMES.to_string();
            let start = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            let end = (start + len).min(text.len());
            text.replace_range(start..end, &insert);
            match parse(&text) {
                Ok(page) => {
                    for d in page.downtimes {
                        proptest::prop_assert!(d.end_ms > d.start_ms);
                    }
                }
                Err(e) => proptest::prop_assert!(e.line >= 1 && e.column >= 1 && !e.message.is_empty()),
            }
        }
    }

    #[test]
    fn an_empty_answer_is_no_downtime() {
        let page = parse("<?xml version=\"1.0\"?>\n<results/>\n").expect("parses");
        assert!(page.downtimes.is_empty() && page.next_page.is_none());
    }

    #[test]
    fn bad_answers_name_element_and_line() {
        let cases: &[(&str, &str, &str, usize, &str)] = &[
            // (find, replace, element, line, message part)
            (
                "<SEVERITY>WARNING</SEVERITY>",
                "<SEVERITY>MAYBE</SEVERITY>",
                "SEVERITY",
                43,
                "OUTAGE or WARNING",
            ),
            (
                "<START_DATE>1790900000</START_DATE>",
                "<START_DATE>2026-10-02</START_DATE>",
                "START_DATE",
                36,
                "Unix seconds",
            ),
            (
                "<END_DATE>1790910000</END_DATE>",
                "<END_DATE>1790000000</END_DATE>",
                "END_DATE",
                37,
                "before it starts",
            ),
            (
                "<HOSTNAME>arc-ce01.ral.example</HOSTNAME>",
                "",
                "DOWNTIME",
                30,
                "has no <HOSTNAME>",
            ),
            (
                "CLASSIFICATION=\"UNSCHEDULED\"",
                "CLASSIFICATION=\"SURPRISE\"",
                "DOWNTIME",
                30,
                "SCHEDULED or UNSCHEDULED",
            ),
            (
                "<DESCRIPTION>Power cut in the machine room</DESCRIPTION>",
                "<DESCRIPTION>Power cut in the machine room</DESCRIPTON>",
                "DESCRIPTION",
                35,
                "malformed XML",
            ),
        ];
        for (find, replace, element, line, part) in cases {
            assert!(DOWNTIMES.contains(find), "{find}");
            let e = parse(&DOWNTIMES.replace(find, replace)).unwrap_err();
            assert_eq!(
                (e.element.as_str(), e.line),
                (*element, *line),
                "{find}: {e}"
            );
            assert!(e.message.contains(part), "{find}: {e}");
        }
        let e = parse("<html><body>502 Bad Gateway</body></html>").unwrap_err();
        assert!(e.message.contains("not a GOCDB get_downtime answer"), "{e}");
    }

    #[test]
    fn alignment_maps_sites_and_types_by_host() {
        let main = format!(
            "vo = \"lhcb\"\n[[probe]]\nmetric = \"org.lhcb.tcp\"\nkind = \"tcp\"\nflavours = [\"ARC-CE\"]\n{}",
            r#"
[[site]]
name = "LCG.CERN.cern"
tier = 0
  [[site.service]]
  flavour = "HTCONDOR-CE"
  hostname = "ce503.cern.example"
  [[site.service]]
  flavour = "XROOTD"
  hostname = "eoslhcb.cern.example"
[[site]]
name = "RAL-LCG2"
tier = 1
  [[site.service]]
  flavour = "ARC-CE"
  hostname = "arc-ce01.ral.example"
"#
        );
        let loaded = crate::load_str(std::path::Path::new("vo.toml"), &main);
        assert!(loaded.diagnostics.is_empty(), "{}", loaded.diagnostics);
        let mut downtimes = parse(DOWNTIMES).expect("parses").downtimes;
        let a = align_with_config(&mut downtimes, &loaded.config);
        assert_eq!(
            a.sites
                .get(&("CERN-PROD".to_string(), "LCG.CERN.cern".to_string())),
            Some(&2)
        );
        assert_eq!(a.flavours.len(), 2, "{:?}", a.flavours);
        assert_eq!(
            a.unknown_hosts.iter().next(),
            Some(&(
                "se.unknown.example".to_string(),
                "SRM".to_string(),
                "UNKNOWN-SITE".to_string()
            ))
        );
        assert_eq!(
            a.unknown_sites.iter().collect::<Vec<_>>(),
            vec!["UNKNOWN-SITE"]
        );
        assert!(downtimes[0].covers("LCG.CERN.cern", "ce503.cern.example", "HTCONDOR-CE"));
        assert!(downtimes[1].covers("LCG.CERN.cern", "eoslhcb.cern.example", "XROOTD"));
        assert!(downtimes[2].covers("RAL-LCG2", "arc-ce01.ral.example", "ARC-CE"));
    }
}
