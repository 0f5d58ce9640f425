//! The availability matrix: sites × probes, each cell the latest hard status with its age.
//! A cell older than its freshness window is MISSING, never its old colour; a cell with no
//! result is `na`. Shared by `gridprobe matrix`, and later the API and the dashboard.

use std::collections::HashMap;

use gridprobe_config::Config;
use gridprobe_probes::Status;
use serde::Serialize;

use crate::store::{CellKey, StoredResult};

/// What a matrix cell shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CellState {
    /// The latest result is older than the freshness window.
    Missing,
    /// No result at all.
    #[serde(rename = "NA")]
    NoResult,
    /// A current result with this status (serialized as the status name).
    #[serde(untagged)]
    Current(Status),
}

impl CellState {
    /// The table token: the SAM token of a status, `missing`, or `na`.
    pub fn token(self) -> &'static str {
        match self {
            CellState::Current(s) => s.token(),
            CellState::Missing => "missing",
            CellState::NoResult => "na",
        }
    }

    /// Rank for OR over instances of a site row (best wins): OK > WARNING > CRITICAL >
    /// UNKNOWN > STANDBY > MISSING > NA.
    fn or_rank(self) -> u8 {
        match self {
            CellState::Current(Status::Ok) => 7,
            CellState::Current(Status::Warning) => 6,
            CellState::Current(Status::Critical) => 5,
            CellState::Current(Status::Unknown) => 4,
            CellState::Current(Status::Standby) => 3,
            CellState::Missing => 2,
            CellState::NoResult => 1,
        }
    }
}

/// One cell.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Full metric name of the column.
    pub metric: String,
    /// What the cell shows.
    pub state: CellState,
    /// The status of the latest result even when it is stale (None without a result).
    pub last_status: Option<Status>,
    /// Age of the latest result in seconds.
    pub age_seconds: Option<i64>,
    /// Summary of the latest result.
    pub summary: Option<String>,
    /// Store id of the latest result.
    pub result_id: Option<i64>,
}

/// One service instance row.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceRow {
    /// Host name.
    pub hostname: String,
    /// Flavour.
    pub flavour: String,
    /// One cell per matrix column; `None` where the probe does not apply.
    pub cells: Vec<Option<Cell>>,
}

/// One site with its instances.
#[derive(Debug, Clone, Serialize)]
pub struct SiteRow {
    /// Site name.
    pub site: String,
    /// Tier.
    pub tier: u8,
    /// Per column, the best state over the site's instances (redundancy: one good CE is enough).
    pub summary: Vec<Option<CellState>>,
    /// The instances.
    pub instances: Vec<InstanceRow>,
}

/// A column.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    /// Full metric name.
    pub metric: String,
    /// Display name.
    pub short: String,
}

/// The whole matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// VO name.
    pub vo: String,
    /// When it was computed (ms since epoch).
    pub generated_at_ms: i64,
    /// Columns, in config order.
    pub columns: Vec<Column>,
    /// Rows, in config order.
    pub sites: Vec<SiteRow>,
}

/// Which part of the matrix to build.
#[derive(Debug, Clone, Default)]
pub struct MatrixFilter {
    /// Only this site.
    pub site: Option<String>,
    /// Only services of this flavour.
    pub flavour: Option<String>,
}

/// Builds the matrix from the configuration and the latest results.
pub fn build_matrix(
    config: &Config,
    latest: &[StoredResult],
    now_ms: i64,
    filter: &MatrixFilter,
) -> Matrix {
    let by_cell: HashMap<CellKey, &StoredResult> =
        latest.iter().map(|r| (CellKey::of(&r.result), r)).collect();
    let instances = config.instances();
    // Each service's instances, so that a row looks at its own only: linear in the VO's size
    // (filtering all instances per service made a 1,000-site matrix cost ~70 ms).
    let mut of_service: HashMap<(usize, usize), Vec<&gridprobe_config::ProbeInstance>> =
        HashMap::new();
    for inst in &instances {
        of_service
            .entry((inst.site, inst.service))
            .or_default()
            .push(inst);
    }
    let shown = |site: &str, flavour: &str| {
        filter.site.as_deref().is_none_or(|s| s == site)
            && filter.flavour.as_deref().is_none_or(|f| f == flavour)
    };
    // Columns: probes that apply to at least one shown instance.
    let mut used = vec![false; config.probes.len()];
    for inst in &instances {
        let site = &config.sites[inst.site];
        if shown(&site.name, &site.services[inst.service].flavour) {
            used[inst.probe] = true;
        }
    }
    let column_of: Vec<Option<usize>> = {
        let mut n = 0;
        used.iter()
            .map(|u| {
                u.then(|| {
                    n += 1;
                    n - 1
                })
            })
            .collect()
    };
    let columns: Vec<Column> = config
        .probes
        .iter()
        .zip(&used)
        .filter(|(_, u)| **u)
        .map(|(p, _)| Column {
            metric: p.metric.clone(),
            short: p.short.clone(),
        })
        .collect();

    let mut sites = Vec::new();
    for (si, site) in config.sites.iter().enumerate() {
        let mut rows = Vec::new();
        for (vi, svc) in site.services.iter().enumerate() {
            if !shown(&site.name, &svc.flavour) {
                continue;
            }
            let mut cells: Vec<Option<Cell>> = vec![None; columns.len()];
            for inst in of_service.get(&(si, vi)).into_iter().flatten() {
                let Some(col) = column_of[inst.probe] else {
                    continue;
                };
                let metric = &config.probes[inst.probe].metric;
                let key = CellKey {
                    site: site.name.clone(),
                    hostname: svc.hostname.clone(),
                    flavour: svc.flavour.clone(),
                    metric: metric.clone(),
                };
                let freshness_ms = i64::try_from(inst.freshness.as_millis()).unwrap_or(i64::MAX);
                cells[col] = Some(match by_cell.get(&key) {
                    None => Cell {
                        metric: metric.clone(),
                        state: CellState::NoResult,
                        last_status: None,
                        age_seconds: None,
                        summary: None,
                        result_id: None,
                    },
                    Some(r) => {
                        let age_ms = (now_ms - r.result.started_at_ms).max(0);
                        let status = r.result.outcome.status;
                        Cell {
                            metric: metric.clone(),
                            state: if age_ms > freshness_ms {
                                CellState::Missing
                            } else {
                                CellState::Current(status)
                            },
                            last_status: Some(status),
                            age_seconds: Some(age_ms / 1000),
                            summary: Some(r.result.outcome.summary.clone()),
                            result_id: Some(r.id),
                        }
                    }
                });
            }
            rows.push(InstanceRow {
                hostname: svc.hostname.clone(),
                flavour: svc.flavour.clone(),
                cells,
            });
        }
        if rows.is_empty() {
            continue;
        }
        let summary = (0..columns.len())
            .map(|c| {
                rows.iter()
                    .filter_map(|r| r.cells[c].as_ref().map(|cell| cell.state))
                    .max_by_key(|s| s.or_rank())
            })
            .collect();
        sites.push(SiteRow {
            site: site.name.clone(),
            tier: site.tier,
            summary,
            instances: rows,
        });
    }
    Matrix {
        vo: config.vo.clone(),
        generated_at_ms: now_ms,
        columns,
        sites,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridprobe_probes::{Outcome, ProbeResult, Trigger};
    use std::path::Path;

    const CONFIG: &str = r#"
vo = "v"
[defaults]
interval = "10m"
timeout = "1m"
[[site]]
name = "A"
tier = 1
  [[site.service]]
  flavour = "CE"
  hostname = "ce1"
  [[site.service]]
  flavour = "CE"
  hostname = "ce2"
  [[site.service]]
  flavour = "SE"
  hostname = "se1"
[[probe]]
metric = "org.v.ce"
kind = "tcp"
flavours = ["CE"]
[[probe]]
metric = "org.v.se"
kind = "tcp"
flavours = ["SE"]
"#;

    fn result(
        id: i64,
        host: &str,
        flavour: &str,
        metric: &str,
        status: Status,
        at: i64,
    ) -> StoredResult {
        StoredResult {
            id,
            is_final: true,
            result: ProbeResult {
                metric: metric.into(),
                kind: "tcp".into(),
                vo: "v".into(),
                site: "A".into(),
                hostname: host.into(),
                flavour: flavour.into(),
                started_at_ms: at,
                duration_ms: 5,
                outcome: Outcome::new(status, "s"),
                attempt: 1,
                trigger: Trigger::Scheduled,
            },
        }
    }

    #[test]
    fn stale_cells_are_missing_and_site_row_takes_the_best_instance() {
        let l = gridprobe_config::load_str(Path::new("v.toml"), CONFIG);
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        let now = 10_000_000;
        // Freshness = 2 × 10m + 1m = 21 minutes.
        let latest = vec![
            result(1, "ce1", "CE", "org.v.ce", Status::Critical, now - 60_000),
            result(2, "ce2", "CE", "org.v.ce", Status::Ok, now - 22 * 60_000),
        ];
        let m = build_matrix(&l.config, &latest, now, &MatrixFilter::default());
        assert_eq!(m.columns.len(), 2);
        let site = &m.sites[0];
        let ce1 = site.instances[0].cells[0].as_ref().expect("cell");
        assert_eq!(ce1.state, CellState::Current(Status::Critical));
        assert_eq!(ce1.age_seconds, Some(60));
        let ce2 = site.instances[1].cells[0].as_ref().expect("cell");
        assert_eq!(
            ce2.state,
            CellState::Missing,
            "stale OK must not stay green"
        );
        assert_eq!(ce2.last_status, Some(Status::Ok));
        assert!(
            site.instances[0].cells[1].is_none(),
            "SE probe does not apply to a CE"
        );
        let se = site.instances[2].cells[1].as_ref().expect("cell");
        assert_eq!(se.state, CellState::NoResult);
        assert_eq!(site.summary[0], Some(CellState::Current(Status::Critical)));
        assert_eq!(site.summary[1], Some(CellState::NoResult));
    }

    #[test]
    fn flavour_filter_drops_rows_and_columns() {
        let l = gridprobe_config::load_str(Path::new("v.toml"), CONFIG);
        let m = build_matrix(
            &l.config,
            &[],
            0,
            &MatrixFilter {
                site: None,
                flavour: Some("SE".into()),
            },
        );
        assert_eq!(m.columns.len(), 1);
        assert_eq!(m.columns[0].short, "se");
        assert_eq!(m.sites[0].instances.len(), 1);
    }
}
