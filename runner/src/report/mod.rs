//! Renderings of the monthly report ([`gridprobe_results::monthly::MonthlyReport`]): a
//! standalone HTML page (inline SVG strips, its own stylesheet, no script), the dashboard's
//! `/reports/{period}` body, and a PDF drawn with `pdf-writer` in the standard Helvetica (no
//! font file). The figures come from `results::monthly`; this module only draws them.

pub mod html;
pub mod pdf;

use gridprobe_results::monthly::{DayFigures, MonthlyReport, TargetsView};

/// How a strip bucket is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayClass {
    /// Availability at or above the target.
    Met,
    /// Below the target, at least half.
    Below,
    /// Below half.
    Poor,
    /// Mostly (≥ half) scheduled downtime.
    Maintenance,
    /// n/a (too much unknown) or no data.
    Unknown,
}

impl DayClass {
    /// Classifies a bucket against the availability target.
    pub fn of(d: &DayFigures, t: &TargetsView) -> Self {
        if d.maintenance >= 0.5 {
            return DayClass::Maintenance;
        }
        match d.availability {
            None => DayClass::Unknown,
            Some(a) if a >= t.availability => DayClass::Met,
            Some(a) if a >= 0.5 => DayClass::Below,
            Some(_) => DayClass::Poor,
        }
    }

    /// Fill colour as RGB 0..=255.
    pub fn rgb(self) -> (u8, u8, u8) {
        match self {
            DayClass::Met => (0x2e, 0x9e, 0x44),
            DayClass::Below => (0xf2, 0x9d, 0x0a),
            DayClass::Poor => (0xd9, 0x30, 0x25),
            DayClass::Maintenance => (0x3b, 0x78, 0xd8),
            DayClass::Unknown => (0xc4, 0xc7, 0xcb),
        }
    }

    /// `#2e9e44`.
    pub fn hex(self) -> String {
        let (r, g, b) = self.rgb();
        format!("#{r:02x}{g:02x}{b:02x}")
    }

    /// For the legend.
    pub fn label(self) -> &'static str {
        match self {
            DayClass::Met => "availability at or above the target",
            DayClass::Below => "below the target",
            DayClass::Poor => "below 50%",
            DayClass::Maintenance => "mostly scheduled downtime",
            DayClass::Unknown => "n/a (mostly unknown)",
        }
    }

    /// For a narrow legend (the PDF's).
    pub fn short_label(self) -> &'static str {
        match self {
            DayClass::Met => "at or above the target",
            DayClass::Below => "below the target",
            DayClass::Poor => "below 50%",
            DayClass::Maintenance => "mostly downtime",
            DayClass::Unknown => "n/a (unknown)",
        }
    }

    /// Every class, in legend order.
    pub const ALL: [DayClass; 5] = [
        DayClass::Met,
        DayClass::Below,
        DayClass::Poor,
        DayClass::Maintenance,
        DayClass::Unknown,
    ];
}

/// `0.973` → `97.3%`; `None` → `n/a`.
pub fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

/// `2026-11-05 14:00 UTC`.
pub fn utc_minute(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// `2026-11-05` (the bucket's first day).
pub fn day(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// A bucket's tooltip / caption: `2026-11-05: availability 97.3%, reliability 99.0%, unknown 0.0%`.
pub fn day_caption(d: &DayFigures) -> String {
    let mut s = format!(
        "{}: availability {}, reliability {}, unknown {}",
        day(d.start_ms),
        pct(d.availability),
        pct(d.reliability),
        pct(Some(d.unknown_fraction))
    );
    if d.maintenance > 0.0 {
        s.push_str(&format!(", maintenance {}", pct(Some(d.maintenance))));
    }
    s
}

/// `12 of 40 sites meet all targets`.
pub fn meeting(r: &MonthlyReport) -> String {
    let met = r.sites.iter().filter(|s| s.verdict.met).count();
    format!(
        "{met} of {} site{} meet{} all targets",
        r.sites.len(),
        if r.sites.len() == 1 { "" } else { "s" },
        if met == 1 && r.sites.len() == 1 {
            "s"
        } else {
            ""
        }
    )
}

/// The targets in words: `availability ≥ 80%, reliability ≥ 85%, unknown ≤ 10%`.
pub fn targets_text(t: &TargetsView) -> String {
    format!(
        "availability >= {}, reliability >= {}, unknown <= {}",
        target(t.availability),
        target(t.reliability),
        target(t.unknown)
    )
}

/// A target as written: `80%`, `95.5%`.
pub fn target(v: f64) -> String {
    let s = format!("{:.1}", v * 100.0);
    format!("{}%", s.strip_suffix(".0").unwrap_or(&s))
}
