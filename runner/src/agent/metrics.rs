//! The `gridprobe_agent_*` series of `/metrics`, appended to the registry's exposition when
//! `serve` has site agents (documented in docs/metrics.md).

use std::fmt::Write;

use crate::remote::RemoteExecutor;

/// The series names (for the documentation check).
pub const NAMES: &[&str] = &[
    "gridprobe_agent_last_seen_age_seconds",
    "gridprobe_agent_runs_in_flight",
    "gridprobe_agent_runs_dispatched_total",
    "gridprobe_agent_runs_completed_total",
    "gridprobe_agent_runs_unknown_total",
    "gridprobe_agent_results_rejected_total",
    "gridprobe_agent_late_results_total",
    "gridprobe_agent_dispatch_in_flight",
];

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The text exposition of the agents and the dispatcher's counters.
pub fn render(remote: &dyn RemoteExecutor) -> String {
    let mut out = String::new();
    let agents = remote.agents();
    let c = remote.counts();
    head(
        &mut out,
        NAMES[0],
        "gauge",
        "Seconds since an agent's last heartbeat reached the centre, per site and agent name.",
    );
    for a in &agents {
        let _ = writeln!(
            out,
            "{}{{agent=\"{}\",site=\"{}\"}} {}",
            NAMES[0],
            label(&a.name),
            label(&a.site),
            a.last_seen_age_seconds
        );
    }
    head(
        &mut out,
        NAMES[1],
        "gauge",
        "Runs an agent was running at its last heartbeat.",
    );
    for a in &agents {
        let _ = writeln!(
            out,
            "{}{{agent=\"{}\",site=\"{}\"}} {}",
            NAMES[1],
            label(&a.name),
            label(&a.site),
            a.runs_in_flight
        );
    }
    head(
        &mut out,
        NAMES[2],
        "counter",
        "Runs handed to a site's work queue.",
    );
    let _ = writeln!(out, "{} {}", NAMES[2], c.dispatched);
    head(
        &mut out,
        NAMES[3],
        "counter",
        "Handed-out runs whose result came back.",
    );
    let _ = writeln!(out, "{} {}", NAMES[3], c.completed);
    head(
        &mut out,
        NAMES[4],
        "counter",
        "Agent runs recorded UNKNOWN by the centre: reason=no_agent (no agent of the site seen \
         within no_agent_after), timeout (no result within the run's budget), dispatch (the \
         broker did not take the work).",
    );
    for (reason, v) in [
        ("no_agent", c.no_agent),
        ("timeout", c.timed_out),
        ("dispatch", c.dispatch_failed),
    ] {
        let _ = writeln!(out, "{}{{reason=\"{reason}\"}} {v}", NAMES[4]);
    }
    head(
        &mut out,
        NAMES[5],
        "counter",
        "Agent messages dropped: reason=wrong_site (published on another site's subject than \
         the site they name), unexpected (not an agent-run site, or not the cell of the run), \
         invalid (not a result or heartbeat), duplicate (the run had a result already).",
    );
    for (reason, v) in [
        ("wrong_site", c.rejected_wrong_site),
        ("unexpected", c.rejected_unexpected),
        ("invalid", c.rejected_invalid),
        ("duplicate", c.duplicates),
    ] {
        let _ = writeln!(out, "{}{{reason=\"{reason}\"}} {v}", NAMES[5]);
    }
    head(
        &mut out,
        NAMES[6],
        "counter",
        "Results of runs the centre no longer waited for (it restarted), recorded on their own.",
    );
    let _ = writeln!(out, "{} {}", NAMES[6], c.late_recorded);
    head(
        &mut out,
        NAMES[7],
        "gauge",
        "Runs handed to agents whose result the centre waits for now.",
    );
    let _ = writeln!(out, "{} {}", NAMES[7], c.in_flight);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{AgentCounts, AgentView, RemoteRun};
    use gridprobe_probes::ProbeResult;

    struct Fixed;
    impl RemoteExecutor for Fixed {
        fn run<'a>(
            &'a self,
            _run: RemoteRun<'a>,
        ) -> futures::future::BoxFuture<'a, Vec<ProbeResult>> {
            Box::pin(async { Vec::new() })
        }
        fn agents(&self) -> Vec<AgentView> {
            vec![AgentView {
                site: "T2_\"X\"".into(),
                name: "a1".into(),
                version: "0.1.0".into(),
                started: String::new(),
                last_seen: String::new(),
                last_seen_age_seconds: 4,
                runs_in_flight: 1,
                runs_done: 9,
                alive: true,
            }]
        }
        fn counts(&self) -> AgentCounts {
            AgentCounts {
                rejected_wrong_site: 2,
                ..AgentCounts::default()
            }
        }
    }

    #[test]
    fn every_series_is_rendered_with_escaped_labels() {
        let text = render(&Fixed);
        for n in NAMES {
            assert!(
                text.contains(&format!("# TYPE {n} ")),
                "{n} missing:\n{text}"
            );
        }
        assert!(text.contains(
            "gridprobe_agent_last_seen_age_seconds{agent=\"a1\",site=\"T2_\\\"X\\\"\"} 4"
        ));
        assert!(text.contains("gridprobe_agent_results_rejected_total{reason=\"wrong_site\"} 2"));
        let doc = include_str!("../../../docs/metrics.md");
        for n in NAMES {
            assert!(doc.contains(n), "{n} is not in docs/metrics.md");
        }
    }
}
