//! Several `gridprobe serve` instances on one PostgreSQL store share one schedule: three
//! instances start, one is killed with SIGKILL, and the store shows that every entry ran in
//! every slot of the test window, no slot ran twice, and the dead instance's entries moved to
//! the survivors. Needs `GRIDPROBE_TEST_PG` (a failure under CI when missing).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::pg::Pg;
use common::{http_client, wait_until, write_file, Serve};

const SITES: usize = 12;
const INTERVAL_MS: i64 = 6_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The configuration every instance reads: 12 sites × 2 tcp probes against a local listener.
/// Only the spool differs (each process keeps its own).
fn config(dir: &Path, name: &str, port: u16) -> String {
    let mut text = format!(
        r#"
vo = "shared"
[defaults]
interval = "{}ms"
timeout = "2s"
[server]
startup_spread = "1s"
shutdown_grace = "2s"
schedule = "shared"
schedule_lease = "2s"
spool_dir = "{}"
"#,
        INTERVAL_MS,
        dir.join(format!("{name}.spool")).display()
    );
    for i in 0..SITES {
        text.push_str(&format!(
            "\n[[site]]\nname = \"T2_S{i:02}\"\ntier = 2\n  [[site.service]]\n  flavour = \"SVC\"\n  hostname = \"svc{i}.shared.test\"\n"
        ));
    }
    for metric in ["org.shared.a", "org.shared.b"] {
        text.push_str(&format!(
            "\n[[probe]]\nmetric = \"{metric}\"\nkind = \"tcp\"\nflavours = [\"SVC\"]\n  [probe.params]\n  host = \"127.0.0.1\"\n  port = {port}\n"
        ));
    }
    write_file(dir, &format!("{name}.toml"), &text)
}

/// `/healthz`'s `schedule` object of an instance.
fn schedule_of(serve: &Serve) -> serde_json::Value {
    let url = format!("http://{}/healthz", serve.http_addr());
    http_client()
        .get(&url)
        .send()
        .and_then(|r| r.text())
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| v["schedule"].clone())
        .unwrap_or(serde_json::Value::Null)
}

fn members(serve: &Serve) -> usize {
    schedule_of(serve)["members"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

type Cell = (String, String);

/// Claimed slots: cell → slot → (member, claimed at).
fn claims(pg: &Pg) -> BTreeMap<Cell, BTreeMap<i64, (String, i64)>> {
    let mut out: BTreeMap<Cell, BTreeMap<i64, (String, i64)>> = BTreeMap::new();
    for row in pg.rows(&format!(
        "SELECT site, metric, slot_ms, member, claimed_at_ms FROM {}.schedule_slots",
        pg.schema
    )) {
        out.entry((row.get(0), row.get(1)))
            .or_default()
            .insert(row.get(2), (row.get(3), row.get(4)));
    }
    out
}

/// Start times of the final results of each cell.
fn results(pg: &Pg) -> BTreeMap<Cell, Vec<i64>> {
    let mut out: BTreeMap<Cell, Vec<i64>> = BTreeMap::new();
    for row in pg.rows(&format!(
        "SELECT c.site, c.metric, r.started_at_ms FROM {s}.results r \
         JOIN {s}.cells c ON c.id = r.cell_id WHERE r.final",
        s = pg.schema
    )) {
        out.entry((row.get(0), row.get(1)))
            .or_default()
            .push(row.get(2));
    }
    out
}

/// Whether every cell has claimed at least `n` slots starting at or after `since`.
fn every_cell_has(pg: &Pg, n: usize, since: i64) -> bool {
    let c = claims(pg);
    c.len() == SITES * 2 && c.values().all(|s| s.range(since..).count() >= n)
}

#[test]
fn three_instances_share_one_schedule_and_survive_a_kill() {
    let Some(pg) = Pg::new("shared_schedule") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The probes' target: accepts and closes every connection.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let mut instances: Vec<Serve> = ["a", "b", "c"]
        .iter()
        .map(|name| Serve::start(&config(dir.path(), name, port), &pg.url))
        .collect();
    let all_joined = wait_until(Duration::from_secs(40), || {
        instances.iter().all(|s| members(s) == 3)
    });
    assert!(
        all_joined,
        "the three instances never saw each other:\n{}",
        instances.iter().map(Serve::output).collect::<String>()
    );
    // Each owns a share (read again on failure: a loaded machine may time a request out).
    let shared_out = wait_until(Duration::from_secs(20), || {
        instances
            .iter()
            .all(|s| schedule_of(s)["owned"].as_u64().unwrap_or(0) > 0)
    });
    assert!(
        shared_out,
        "an instance owns nothing: {:?}",
        instances.iter().map(schedule_of).collect::<Vec<_>>()
    );
    let joined_at = now_ms();
    let ran = wait_until(Duration::from_secs(40), || {
        every_cell_has(&pg, 2, joined_at)
    });
    assert!(ran, "not every cell ran twice with three instances");

    // SIGKILL: no goodbye, its lease has to run out.
    let dead = schedule_of(&instances[2])["member"]
        .as_str()
        .expect("member name")
        .to_string();
    let mut c = instances.pop().expect("c");
    c.signal("KILL");
    let killed_at = now_ms();
    c.wait_exit(Duration::from_secs(10));
    let noticed = wait_until(Duration::from_secs(15), || {
        instances.iter().all(|s| members(s) == 2)
    });
    assert!(noticed, "the survivors never dropped the dead instance");
    let moved_on = wait_until(Duration::from_secs(40), || {
        every_cell_has(&pg, 2, killed_at + INTERVAL_MS)
    });
    assert!(moved_on, "cells stopped running after the kill");
    for s in &mut instances {
        s.signal("TERM");
        assert_eq!(
            s.wait_exit(Duration::from_secs(20)),
            Some(0),
            "{}",
            s.output()
        );
    }
    let stopped_at = now_ms();

    let claims = claims(&pg);
    let results = results(&pg);
    let mut dead_cells = BTreeSet::new();
    for (cell, slots) in &claims {
        // Every slot of the window ran: from the first slot after all three joined to the last
        // one before the survivors stopped, consecutive claims are one interval apart.
        let window: Vec<i64> = slots
            .range(joined_at..stopped_at - INTERVAL_MS)
            .map(|(s, _)| *s)
            .collect();
        assert!(window.len() >= 4, "{cell:?} ran only in slots {window:?}");
        for pair in window.windows(2) {
            assert_eq!(
                pair[1] - pair[0],
                INTERVAL_MS,
                "{cell:?} missed the slot after {} (slots {window:?})",
                pair[0]
            );
        }
        // Exactly one run per claimed slot: one final result started within it. The dead
        // instance's last moments are excused (what it had not yet written died with it).
        let starts = results.get(cell).cloned().unwrap_or_default();
        for (slot, (member, claimed_at)) in slots.range(joined_at..) {
            let runs = starts
                .iter()
                .filter(|t| (*slot..slot + INTERVAL_MS).contains(*t))
                .count();
            let excused = *member == dead && *claimed_at >= killed_at - 3_000;
            assert!(
                runs == 1 || (runs == 0 && excused),
                "{cell:?} slot {slot} (claimed by {member}) has {runs} results"
            );
            if *member == dead && *slot < killed_at - INTERVAL_MS {
                dead_cells.insert(cell.clone());
            }
        }
        // No run outside a claimed slot.
        for t in starts.iter().filter(|t| **t >= joined_at) {
            let claimed = slots
                .range(..=*t)
                .next_back()
                .is_some_and(|(s, _)| t - s < INTERVAL_MS);
            assert!(claimed, "{cell:?} ran at {t} without a claim");
        }
    }
    assert!(!dead_cells.is_empty(), "the killed instance ran nothing");
    for cell in &dead_cells {
        let after: Vec<&String> = claims[cell]
            .range(killed_at + INTERVAL_MS..)
            .map(|(_, (m, _))| m)
            .collect();
        assert!(
            !after.is_empty() && after.iter().all(|m| **m != dead),
            "{cell:?} of the dead instance did not move: {after:?}"
        );
    }
}

#[test]
fn shared_schedule_on_sqlite_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "vo.toml",
        r#"
vo = "x"
[server]
schedule = "shared"
[[site]]
name = "S"
tier = 2
  [[site.service]]
  flavour = "SVC"
  hostname = "127.0.0.1"
[[probe]]
metric = "org.x.tcp"
kind = "tcp"
flavours = ["SVC"]
  [probe.params]
  port = 9
"#,
    );
    let store = dir.path().join("r.sqlite");
    let out = common::gridprobe(&[
        "serve",
        "--config",
        &config,
        "--store",
        store.to_str().expect("utf-8"),
        "--listen",
        "127.0.0.1:0",
    ]);
    let (stdout, stderr) = common::texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("needs a PostgreSQL store") && stderr.contains("r.sqlite"),
        "{stderr}"
    );
    assert!(!store.exists(), "the SQLite store was created anyway");

    // In the file itself: `gridprobe check` points at the line.
    let bad = write_file(
        dir.path(),
        "bad.toml",
        "vo = \"x\"\n[server]\nstore = \"/tmp/x.sqlite\"\nschedule = \"shared\"\nschedule_lease = \"100ms\"\n",
    );
    let out = common::gridprobe(&["check", &bad]);
    let (stdout, stderr) = common::texts(&out);
    let all = format!("{stdout}{stderr}");
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("bad.toml:4:"), "{all}");
    assert!(all.contains("bad.toml:5:"), "{all}");
    assert!(all.contains("between 1s and 10m"), "{all}");
}
