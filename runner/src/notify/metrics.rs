//! The `gridprobe_notify_*` series of `/metrics`, per channel, appended to the registry's
//! exposition (documented in docs/metrics.md).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::NotifierView;

/// The series names (for the documentation check).
pub const NAMES: &[&str] = &[
    "gridprobe_notify_sent_total",
    "gridprobe_notify_failures_total",
    "gridprobe_notify_queued",
    "gridprobe_notify_rate_limited_total",
    "gridprobe_notify_flapping_cells",
];

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A series: name, type, help, and how to read it from a channel's counters.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&super::outbox::ChannelStats) -> u64,
);

/// The text exposition of the engine's counters.
pub fn render(view: &NotifierView) -> String {
    let mut out = String::new();
    let series: [Series; 4] = [
        (
            NAMES[0],
            "counter",
            "Notifications a channel's server accepted.",
            |s| s.sent.load(Ordering::Relaxed),
        ),
        (
            NAMES[1],
            "counter",
            "Failed notification deliveries (each retried from the outbox).",
            |s| s.failures.load(Ordering::Relaxed),
        ),
        (
            NAMES[2],
            "gauge",
            "Notifications waiting in a channel's durable outbox.",
            |s| s.queued.load(Ordering::Relaxed),
        ),
        (
            NAMES[3],
            "counter",
            "Deliveries held back by the per-recipient rate limit.",
            |s| s.rate_limited.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (channel, stats) in &view.channels() {
            let _ = writeln!(
                out,
                "{name}{{channel=\"{}\"}} {}",
                label(channel),
                get(stats)
            );
        }
    }
    let flapping = view
        .flapping
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len();
    let _ = writeln!(
        out,
        "# HELP {n} Cells flapping now (Nagios method).\n# TYPE {n} gauge\n{n} {flapping}",
        n = NAMES[4]
    );
    out
}
