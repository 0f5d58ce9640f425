//! The SEND frame of one result: the gridprobe result message (ETF's metric result fields:
//! `metric`, `hostname`, `service_flavour`, `site`, `vo`, `status`, `summary`, `details`,
//! `perfdata`, `timestamp`) plus the names ARGO's consumers read where they differ
//! (`monitoring_host`, `service`, and `actual_data`: the perfdata as Nagios writes it), and
//! headers a broker can route or select on.

use gridprobe_results::{NewResult, ResultMessage};
use serde::Serialize;

use super::frame::Frame;

/// The JSON body: every field of [`ResultMessage`] (so `gridprobe consume` reads it back
/// unchanged) and ARGO's names.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(flatten)]
    result: &'a ResultMessage,
    /// ARGO: the monitoring instance that ran the probe.
    monitoring_host: &'a str,
    /// ARGO: the service type (the flavour).
    service: &'a str,
    /// ARGO: the performance data, `label=value[UOM];warn;crit;min;max` separated by spaces.
    actual_data: String,
}

/// The body of a result's message.
pub(crate) fn body(m: &ResultMessage) -> Vec<u8> {
    let actual_data = m
        .perfdata
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let b = Body {
        result: m,
        monitoring_host: &m.gridprobe_instance,
        service: &m.service_flavour,
        actual_data,
    };
    // Plain strings, numbers and enums: serializing cannot fail.
    serde_json::to_vec(&b).unwrap_or_default()
}

/// The SEND frame of one result: persistent, JSON, asking for a receipt.
pub(crate) fn send_frame(
    instance: &str,
    r: &NewResult,
    id: &str,
    destination: &str,
    receipt: &str,
) -> Frame {
    let mut m = ResultMessage::new(instance, r);
    m.message_id = id.to_string();
    let body = body(&m);
    Frame::new("SEND")
        .header("destination", destination)
        .header("content-type", "application/json")
        .header("persistent", "true")
        .header("receipt", receipt)
        .header("gridprobe-message-id", id)
        .header("metric", m.metric.as_str())
        .header("hostname", m.hostname.as_str())
        .header("service_flavour", m.service_flavour.as_str())
        .header("site", m.site.as_str())
        .header("vo", m.vo.as_str())
        .header("status", m.status.name())
        // No `timestamp` header: brokers own that name (RabbitMQ refuses a SEND whose
        // `timestamp` is not a number, ActiveMQ overwrites it); the body carries ETF's.
        .header("monitoring_host", instance)
        .body(body)
}

#[cfg(test)]
mod tests {
    use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Trigger};

    use super::*;

    #[test]
    fn the_body_has_etf_and_argo_fields_and_reads_back() {
        let r = NewResult {
            result: ProbeResult {
                metric: "org.lhcb.CE-lhcb-install".into(),
                kind: "nagios".into(),
                vo: "lhcb".into(),
                site: "LCG.CERN.ch".into(),
                hostname: "ce01.cern.ch".into(),
                flavour: "ARC-CE".into(),
                started_at_ms: 1_700_000_000_123,
                duration_ms: 250,
                outcome: Outcome::warning("slow").with_perfdata(vec![
                    Perfdatum::new("time", 0.25, "s"),
                    Perfdatum::new("size", 10.0, "B"),
                ]),
                attempt: 1,
                trigger: Trigger::Scheduled,
            },
            is_final: true,
        };
        let f = send_frame("gp-1", &r, "abc", "/queue/q", "r-1");
        assert_eq!(f.get("persistent"), Some("true"));
        assert_eq!(f.get("content-type"), Some("application/json"));
        assert_eq!(f.get("status"), Some("WARNING"));
        let v: serde_json::Value = serde_json::from_slice(&f.body).expect("json");
        assert_eq!(v["monitoring_host"], "gp-1");
        assert_eq!(v["service"], "ARC-CE");
        assert_eq!(v["service_flavour"], "ARC-CE");
        assert_eq!(v["actual_data"], "time=0.25s size=10B");
        assert_eq!(v["metric"], "org.lhcb.CE-lhcb-install");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20Z");
        let back = ResultMessage::from_json(&f.body).expect("reads back");
        assert_eq!(back.message_id, "abc");
        assert_eq!(back.to_new_result().expect("valid"), r);
    }
}
