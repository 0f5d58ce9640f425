//! Failure reasons: non-OK results grouped by a normalised summary, so that a shifter sees at
//! once whether twelve sites fail with the same "proxy expired" or one site fails alone.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use gridprobe_probes::Status;
use regex::Regex;
use serde::Serialize;

use crate::store::StoredResult;

/// Replacements applied in order: the most specific patterns first, so that a URL is not half
/// eaten by the host-name rule, nor a timestamp by the number rule.
fn rules() -> &'static [(Regex, &'static str)] {
    static RULES: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    RULES.get_or_init(|| {
        [
            (r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\x22<>]+", "<url>"),
            (
                r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
                "<time>",
            ),
            (r"\b\d{2}:\d{2}:\d{2}\b", "<time>"),
            (r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<id>"),
            (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "<ip>"),
            (r"(?:/[\w.+@%-]+){2,}/?", "<path>"),
            (r"(?i)\b(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}(?::\d+)?\b", "<host>"),
            (r"(?i)\b(?:0x)?[0-9a-f]*\d[0-9a-f]*[a-f][0-9a-f]*\b|\b[0-9a-f]*[a-f][0-9a-f]*\d[0-9a-f]*\b", "<id>"),
            (r"\b\d+(?:\.\d+)?", "<n>"),
            (r"\s+", " "),
        ]
        .into_iter()
        .filter_map(|(pattern, with)| Regex::new(pattern).ok().map(|r| (r, with)))
        .collect()
    })
}

/// The summary with host names, addresses, numbers, ids, paths and times replaced by
/// placeholders.
pub fn normalise(summary: &str) -> String {
    let mut s = summary.trim().to_string();
    for (re, with) in rules() {
        s = re.replace_all(&s, *with).into_owned();
    }
    s.trim().to_string()
}

/// One failure reason.
#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    /// The normalised summary.
    pub reason: String,
    /// Worst status seen with it.
    pub status: Status,
    /// How many results.
    pub count: usize,
    /// Sites affected.
    pub sites: Vec<String>,
    /// Metrics affected (full names).
    pub metrics: Vec<String>,
    /// The newest summary as written, for context.
    pub example: String,
    /// Id of that result.
    pub example_id: i64,
}

/// Groups non-OK hard results by normalised reason, most frequent first.
pub fn group(results: &[StoredResult]) -> Vec<Reason> {
    struct Acc {
        status: Status,
        count: usize,
        sites: BTreeSet<String>,
        metrics: BTreeSet<String>,
        example: (i64, String, i64),
    }
    let mut map: HashMap<String, Acc> = HashMap::new();
    for r in results {
        let x = &r.result;
        if x.outcome.status == Status::Ok || !r.is_final {
            continue;
        }
        let key = normalise(&x.outcome.summary);
        let acc = map.entry(key).or_insert_with(|| Acc {
            status: x.outcome.status,
            count: 0,
            sites: BTreeSet::new(),
            metrics: BTreeSet::new(),
            example: (x.started_at_ms, x.outcome.summary.clone(), r.id),
        });
        acc.count += 1;
        acc.sites.insert(x.site.clone());
        acc.metrics.insert(x.metric.clone());
        if x.outcome.status.exit_rank() > acc.status.exit_rank() {
            acc.status = x.outcome.status;
        }
        if x.started_at_ms > acc.example.0 {
            acc.example = (x.started_at_ms, x.outcome.summary.clone(), r.id);
        }
    }
    let mut out: Vec<Reason> = map
        .into_iter()
        .map(|(reason, a)| Reason {
            reason,
            status: a.status,
            count: a.count,
            sites: a.sites.into_iter().collect(),
            metrics: a.metrics.into_iter().collect(),
            example: a.example.1,
            example_id: a.example.2,
        })
        .collect();
    out.sort_by(|a, b| {
        b.sites
            .len()
            .cmp(&a.sites.len())
            .then(b.count.cmp(&a.count))
            .then(a.reason.cmp(&b.reason))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_hosts_numbers_ids_paths_and_times() {
        assert_eq!(
            normalise("TCP connect failed: connection refused on ce01.cern.ch:9619"),
            "TCP connect failed: connection refused on <host>"
        );
        assert_eq!(
            normalise("job 4711 held: proxy expired at 2026-10-05T08:00:00Z"),
            "job <n> held: proxy expired at <time>"
        );
        assert_eq!(
            normalise(
                "put failed: 403 Forbidden on https://se.example.org:2880/lhcb/test/file-1a2b3c4d"
            ),
            "put failed: <n> Forbidden on <url>"
        );
        assert_eq!(
            normalise("SWAREA CRITICAL - software area /cvmfs/lhcb.cern.ch/lib does not exist"),
            "SWAREA CRITICAL - software area <path> does not exist"
        );
        assert_eq!(
            normalise("checksum 0a1b2c3d != deadbeef1"),
            "checksum <id> != <id>"
        );
        assert_eq!(normalise("timeout after 30.5s"), "timeout after <n>s");
        assert_eq!(
            normalise("host 10.0.0.1:22 unreachable"),
            "host <ip> unreachable"
        );
    }

    #[test]
    fn same_failure_at_many_sites_groups_together_and_ranks_first() {
        use gridprobe_probes::{Outcome, ProbeResult, Trigger};
        let r = |id: i64, site: &str, summary: &str, status: Status| StoredResult {
            id,
            is_final: true,
            result: ProbeResult {
                metric: "org.vo.CE-job".into(),
                kind: "ce".into(),
                vo: "vo".into(),
                site: site.into(),
                hostname: format!("ce.{}.example.org", site.to_lowercase()),
                flavour: "CE".into(),
                started_at_ms: id,
                duration_ms: 1,
                outcome: Outcome::new(status, summary),
                attempt: 1,
                trigger: Trigger::Scheduled,
            },
        };
        let rows = vec![
            r(
                1,
                "A",
                "proxy expired for job 12 on ce.a.example.org",
                Status::Critical,
            ),
            r(
                2,
                "B",
                "proxy expired for job 345 on ce.b.example.org",
                Status::Critical,
            ),
            r(
                3,
                "C",
                "proxy expired for job 6 on ce.c.example.org",
                Status::Critical,
            ),
            r(4, "D", "disk full on /data/lhcb", Status::Warning),
            r(5, "D", "disk full on /data/lhcb", Status::Warning),
            r(6, "E", "all fine", Status::Ok),
        ];
        let reasons = group(&rows);
        assert_eq!(reasons.len(), 2);
        assert_eq!(reasons[0].reason, "proxy expired for job <n> on <host>");
        assert_eq!(reasons[0].sites, vec!["A", "B", "C"]);
        assert_eq!(reasons[0].count, 3);
        assert_eq!(reasons[0].example_id, 3);
        assert_eq!(reasons[1].count, 2);
        assert_eq!(reasons[1].sites, vec!["D"]);
    }
}
