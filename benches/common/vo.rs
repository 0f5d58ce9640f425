//! The dashboard benchmarks' VO: 1,000 sites (one Tier-0, a few dozen Tier-1s, the rest Tier-2
//! and Tier-3), each with sixteen CEs and four SEs, five probes per service (the realistic
//! layout): 100 schedule entries per site, 100,000 in all; ten sites in a declared outage; and a
//! store filled with hourly history for it. Used by `benches/dashboard.rs` (server time through
//! the router, and a real `gridprobe serve` on the same store) and the `dashboard` pair of
//! `benches/compare.rs` (the same page under `wrk -c16`).

use std::fmt::Write as _;

use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Status, Trigger};
use gridprobe_results::{NewResult, ResultStore, SqliteStore};
use gridprobe_runner::state::Plan;

/// Probes per flavour: five on compute elements, five on storage: 10 columns.
pub const CE_PROBES: [&str; 5] = [
    "CE-job-submit",
    "CE-lhcb-install",
    "CE-lhcb-os",
    "CE-lhcb-queues",
    "CE-lhcb-swarea",
];
/// The storage element probes.
pub const SE_PROBES: [&str; 5] = ["SE-put", "SE-get", "SE-del", "SE-space", "SE-list"];
/// Compute elements per site.
pub const CES_PER_SITE: usize = 16;
/// Storage elements per site.
pub const SES_PER_SITE: usize = 4;
/// Schedule entries (cells) per site: every service runs five probes.
pub const ENTRIES_PER_SITE: usize = CES_PER_SITE * CE_PROBES.len() + SES_PER_SITE * SE_PROBES.len();
/// One hour in milliseconds.
pub const HOUR: i64 = 3_600_000;

/// Name of site `i`.
pub fn site_name(i: usize) -> String {
    format!("T{}_SITE{i:04}", tier_of(i))
}

/// One Tier-0, a few dozen Tier-1s, then Tier-2s and Tier-3s.
pub fn tier_of(i: usize) -> u8 {
    match i {
        0 => 0,
        i if i % 40 == 1 => 1,
        i if i % 3 == 0 => 3,
        _ => 2,
    }
}

/// The VO: every site has [`CES_PER_SITE`] CEs and [`SES_PER_SITE`] SEs; ten sites are in a
/// declared outage.
pub fn config_text(sites: usize) -> String {
    let mut t = String::from("vo = \"bench\"\n[defaults]\ninterval = \"1h\"\ntimeout = \"5m\"\n");
    for i in 0..sites {
        let name = site_name(i);
        let host = format!("site{i:04}.example.org");
        let _ = write!(
            t,
            "\n[[site]]\nname = \"{name}\"\ntier = {tier}\n",
            tier = tier_of(i)
        );
        for (flavour, prefix, n) in [("CE", "ce", CES_PER_SITE), ("SE", "se", SES_PER_SITE)] {
            for k in 1..=n {
                let _ = write!(
                    t,
                    "[[site.service]]\nflavour = \"{flavour}\"\nhostname = \"{prefix}{k:02}.{host}\"\n"
                );
            }
        }
    }
    for (flavour, probes) in [("CE", &CE_PROBES[..]), ("SE", &SE_PROBES[..])] {
        for p in probes {
            let _ = write!(
                t,
                "\n[[probe]]\nmetric = \"org.bench.{p}\"\nkind = \"nagios\"\nflavours = [\"{flavour}\"]\n\
                 [probe.params]\ncommand = \"/bin/true\"\n"
            );
        }
    }
    for i in (7..sites).step_by(sites.max(10) / 10) {
        let _ = write!(
            t,
            "\n[[downtime]]\nsite = \"{}\"\nstart = \"2000-01-01 00:00\"\nend = \"2999-01-01 00:00\"\n\
             classification = \"scheduled\"\nreason = \"bench outage\"\n",
            site_name(i)
        );
    }
    t
}

/// A small deterministic generator (xorshift), so every run measures the same store.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Mostly OK, as a real morning: 85% OK, 6% WARNING, 5% CRITICAL, 2% UNKNOWN, 2% STANDBY.
    pub fn status(&mut self) -> Status {
        match self.next() % 100 {
            0..=84 => Status::Ok,
            85..=90 => Status::Warning,
            91..=95 => Status::Critical,
            96..=97 => Status::Unknown,
            _ => Status::Standby,
        }
    }
}

/// Fills the store: `history_hours` hourly results per cell, then the latest; every 50th site's
/// latest is three hours old (MISSING in the matrix). Returns the number of results written.
pub async fn fill(
    store: &SqliteStore,
    plan: &Plan,
    history_hours: i64,
    now: i64,
) -> anyhow::Result<usize> {
    let config = &plan.config;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut batch = Vec::with_capacity(10_000);
    let mut total = 0;
    for hours_ago in (0..=history_hours).rev() {
        for inst in config.instances() {
            let site = &config.sites[inst.site];
            let svc = &site.services[inst.service];
            let probe = &config.probes[inst.probe];
            let stale = inst.site % 50 == 3;
            if stale && hours_ago < 3 {
                continue;
            }
            let status = rng.status();
            let started = now - hours_ago * HOUR - 60_000 - (rng.next() % 600_000) as i64;
            let summary = format!(
                "{} {}: job {} finished in {} s on {}",
                probe.short,
                status.name(),
                rng.next() % 100_000,
                rng.next() % 300,
                svc.hostname
            );
            batch.push(NewResult {
                result: ProbeResult {
                    metric: probe.metric.clone(),
                    kind: "nagios".into(),
                    vo: config.vo.clone(),
                    site: site.name.clone(),
                    hostname: svc.hostname.clone(),
                    flavour: svc.flavour.clone(),
                    started_at_ms: started,
                    duration_ms: 1200,
                    outcome: Outcome::new(status, summary)
                        .with_details(format!(
                            "submitted to {}\nwaiting 12 s\nrunning\noutput: 412 lines\ncleanup done",
                            svc.hostname
                        ))
                        .with_perfdata(vec![Perfdatum::new("time", 41.5, "s")]),
                    attempt: 1,
                    trigger: Trigger::Scheduled,
                },
                is_final: true,
            });
            if batch.len() == batch.capacity() {
                total += store.insert(&batch).await?.len();
                batch.clear();
            }
        }
    }
    total += store.insert(&batch).await?.len();
    Ok(total)
}
