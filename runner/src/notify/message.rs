//! A notification as it is spooled, delivered and kept in the history: one message per site
//! per burst (grouping), with a stable id that makes a redelivery recognisable.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::state::{Event, EventKind};

/// One cell's part of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Service host name.
    pub hostname: String,
    /// Service flavour.
    pub flavour: String,
    /// Metric.
    pub metric: String,
    /// What happened.
    pub event: EventKind,
    /// Status now (`OK`, `WARNING`, `CRITICAL`).
    pub status: String,
    /// The result's summary.
    pub summary: String,
    /// Since when it has this status (ms).
    pub since_ms: i64,
}

/// A notification for one channel and (for e-mail) one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable id: the same notification delivered twice carries the same id (`Message-ID`,
    /// JSON `id`, `X-Gridprobe-Notification-Id`).
    pub id: String,
    /// The channel's name.
    pub channel: String,
    /// The e-mail recipient (empty for webhooks and Alertmanager).
    pub recipient: String,
    /// The VO.
    pub vo: String,
    /// The site.
    pub site: String,
    /// One line.
    pub subject: String,
    /// The body, plain text.
    pub text: String,
    /// `problem`, `recovery`, `reminder`, `flapping started`, `flapping stopped`, `test`, or
    /// `several` when a burst mixes them.
    pub event: String,
    /// The worst status among the items.
    pub status: String,
    /// The cells.
    pub items: Vec<Item>,
    /// When it was decided (ms).
    pub created_ms: i64,
}

fn rank(status: &str) -> u8 {
    match status {
        "CRITICAL" => 3,
        "WARNING" => 2,
        "UNKNOWN" => 1,
        _ => 0,
    }
}

/// The stable id of a notification: a hash of what identifies it, in the form of a
/// `Message-ID` (`<hex@instance>`, without the angle brackets).
pub fn stable_id(instance: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let hex: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let host: String = instance
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .collect();
    format!(
        "{hex}@{}",
        if host.is_empty() { "gridprobe" } else { &host }
    )
}

/// Builds the notification of a burst of one site's events for one channel; `recipient` is the
/// e-mail address (one notification each) or empty.
pub fn compose(
    vo: &str,
    instance: &str,
    channel: &str,
    recipient: &str,
    site: &str,
    events: &[Event],
    created_ms: i64,
) -> Notification {
    let items: Vec<Item> = events
        .iter()
        .map(|e| Item {
            hostname: e.cell.hostname.clone(),
            flavour: e.cell.flavour.clone(),
            metric: e.cell.metric.clone(),
            event: e.kind,
            status: e.status.name().to_string(),
            summary: e.summary.clone(),
            since_ms: e.since_ms,
        })
        .collect();
    let status = items
        .iter()
        .map(|i| i.status.as_str())
        .max_by_key(|s| rank(s))
        .unwrap_or("OK")
        .to_string();
    let event = match items.first().map(|i| i.event) {
        Some(first) if items.iter().all(|i| i.event == first) => first.word().to_string(),
        Some(_) => "several".to_string(),
        None => "test".to_string(),
    };
    let subject = if items.len() == 1 && items[0].event == EventKind::SiteStatus {
        format!("[gridprobe {vo}] {site}: {}", items[0].summary)
    } else if items.len() == 1 {
        let i = &items[0];
        format!(
            "[gridprobe {vo}] {site}: {} {} on {} is {} ({})",
            i.flavour,
            i.metric,
            i.hostname,
            i.status,
            i.event.word()
        )
    } else {
        let problems = items
            .iter()
            .filter(|i| matches!(i.event, EventKind::Problem | EventKind::Reminder))
            .count();
        let recoveries = items
            .iter()
            .filter(|i| i.event == EventKind::Recovery)
            .count();
        format!(
            "[gridprobe {vo}] {site}: {} changes ({problems} problems, {recoveries} recoveries), worst {status}",
            items.len()
        )
    };
    let mut text = format!("Site {site} (VO {vo}):\n\n");
    for i in items.iter().filter(|i| i.event == EventKind::SiteStatus) {
        text.push_str(&format!("- {}\n", i.summary));
    }
    for i in items.iter().filter(|i| i.event != EventKind::SiteStatus) {
        text.push_str(&format!(
            "- {} {} {} on {}: {} since {} -- {}\n",
            i.event.word(),
            i.flavour,
            i.metric,
            i.hostname,
            i.status,
            gridprobe_config::time::format_utc(i.since_ms),
            i.summary
        ));
    }
    text.push_str(&format!(
        "\nAcknowledge a problem to stop reminders: gridprobe ack --site {site} --comment ...\n"
    ));
    let mut parts = vec![channel, recipient, site];
    let created = created_ms.to_string();
    parts.push(&created);
    let keys: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{}/{}/{}/{}",
                i.hostname,
                i.metric,
                i.status,
                i.event.word()
            )
        })
        .collect();
    parts.extend(keys.iter().map(String::as_str));
    Notification {
        id: stable_id(instance, &parts),
        channel: channel.to_string(),
        recipient: recipient.to_string(),
        vo: vo.to_string(),
        site: site.to_string(),
        subject,
        text,
        event,
        status,
        items,
        created_ms,
    }
}
