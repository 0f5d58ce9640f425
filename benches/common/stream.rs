//! The serve-like result stream the ingest benches write (`throughput -- store`,
//! `ingest_size`): `cells` cells (tcp probes on CEs, [`PER_SITE`] per site), each run every
//! [`INTERVAL_MS`], round after round, the cells spread over the interval. One template per
//! cell, so that millions of results cost neither memory nor much time to produce.

use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Trigger};
use gridprobe_results::NewResult;

/// CE services per site.
pub const PER_SITE: usize = 100;
/// Each cell runs once per interval.
pub const INTERVAL_MS: i64 = 600_000;
/// The one metric of the stream.
pub const METRIC: &str = "org.bench.CE-gridftp";

/// The site of `cell` (0-based).
pub fn site(cell: usize) -> String {
    format!("SITE-{:04}", cell / PER_SITE)
}

/// The host name of `cell` (0-based).
pub fn hostname(cell: usize) -> String {
    format!(
        "ce{:03}.site{:04}.example.org",
        cell % PER_SITE,
        cell / PER_SITE
    )
}

/// The stream: result `i` is cell `i % cells` in round `i / cells`.
pub struct Stream {
    templates: Vec<NewResult>,
    epoch_ms: i64,
}

impl Stream {
    /// `cells` cells; round 0 starts at `epoch_ms`.
    pub fn new(cells: usize, epoch_ms: i64) -> Stream {
        let templates = (0..cells)
            .map(|cell| {
                let hostname = hostname(cell);
                let secs = 0.000_150 + (cell % 997) as f64 * 1e-6;
                let summary = format!("TCP connect to {hostname}:2811 in {secs:.6}s");
                let details = format!(
                    "{summary}\nresolved {hostname} to 192.0.2.{}\nconnected from 192.0.2.1:{}",
                    cell % PER_SITE + 1,
                    40_000 + cell % 20_000
                );
                NewResult {
                    result: ProbeResult {
                        metric: METRIC.into(),
                        kind: "tcp".into(),
                        vo: "bench".into(),
                        site: site(cell),
                        hostname,
                        flavour: "CE".into(),
                        started_at_ms: 0,
                        duration_ms: 1,
                        outcome: Outcome::ok(summary)
                            .with_details(details)
                            .with_perfdata(vec![Perfdatum::new("time", secs, "s")]),
                        attempt: 1,
                        trigger: Trigger::Scheduled,
                    },
                    is_final: true,
                }
            })
            .collect();
        Stream {
            templates,
            epoch_ms,
        }
    }

    /// How many cells.
    pub fn cells(&self) -> usize {
        self.templates.len()
    }

    /// Result `i`: its cell (an index into the templates), the cell's template and its start
    /// time (cells spread over the interval).
    pub fn row(&self, i: usize) -> (usize, &NewResult, i64) {
        let cells = self.templates.len();
        let (cell, round) = (i % cells, (i / cells) as i64);
        let started = self.epoch_ms + round * INTERVAL_MS + (cell as i64 * 7_919) % INTERVAL_MS;
        (cell, &self.templates[cell], started)
    }

    /// Result `i`, owned, as a probe hands it over.
    pub fn owned(&self, i: usize) -> NewResult {
        let (_, t, started) = self.row(i);
        let mut r = t.clone();
        r.result.started_at_ms = started;
        r
    }
}
