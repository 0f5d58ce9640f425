//! `[report]`: what the monthly report judges each site against. The defaults are EGI's
//! availability/reliability targets: availability at least 80 %, reliability at least 85 %,
//! and at most 10 % of the period unknown.

/// The targets of the monthly report, as fractions (0.8 for 80 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportTargets {
    /// A site meets the availability target at or above this.
    pub availability: f64,
    /// A site meets the reliability target at or above this.
    pub reliability: f64,
    /// A site meets the unknown target at or below this fraction of the period unknown.
    pub unknown: f64,
}

impl Default for ReportTargets {
    fn default() -> Self {
        ReportTargets {
            availability: 0.80,
            reliability: 0.85,
            unknown: 0.10,
        }
    }
}

/// `[report]` as configured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReportSettings {
    /// `[report] targets`.
    pub targets: ReportTargets,
}
