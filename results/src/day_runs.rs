//! Runs of equal results per cell and closed day: the form both backends cache for month
//! reports (`sqlite/days.rs`, `postgres/days.rs`), its byte encoding, and the assembly of a
//! period's runs from cached days and raw results.
//!
//! A day is *closed* once it ended more than [`SETTLE_MS`] ago; only closed days are cached.
//! A cached run records its largest internal gap, so a request whose merge gap is smaller
//! reads that cell's day from the results instead: the answer is always exactly what the
//! results give (`ResultStore::run_timelines`).

use gridprobe_probes::Status;

use crate::store::{CellKey, StatusRun};

/// One day in ms.
pub(crate) const DAY_MS: i64 = 86_400_000;
/// A day is cached only this long after it ended: results of runs still in flight at
/// midnight arrive within it.
pub(crate) const SETTLE_MS: i64 = 3_600_000;

/// Start of the UTC day holding `t`.
pub(crate) fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY_MS).saturating_mul(DAY_MS)
}

/// A run inside one day, with its largest gap between consecutive results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DayRun {
    pub(crate) start: i64,
    pub(crate) last: i64,
    pub(crate) status: Status,
    pub(crate) max_gap: i64,
}

const STATUSES: [Status; 5] = [
    Status::Ok,
    Status::Warning,
    Status::Critical,
    Status::Unknown,
    Status::Standby,
];

fn status_code(s: Status) -> u8 {
    STATUSES.iter().position(|x| *x == s).unwrap_or(3) as u8
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Runs as bytes: per run the start (delta from the previous run's last result, or the day),
/// the length, the status and the largest gap, as varints. A day of a steady cell is a few
/// bytes.
pub(crate) fn encode(day_ms: i64, runs: &[DayRun]) -> Vec<u8> {
    let mut out = Vec::with_capacity(runs.len() * 8);
    let mut prev = day_ms;
    for r in runs {
        put_varint(&mut out, (r.start - prev).max(0) as u64);
        put_varint(&mut out, (r.last - r.start).max(0) as u64);
        out.push(status_code(r.status));
        put_varint(&mut out, r.max_gap.max(0) as u64);
        prev = r.last;
    }
    out
}

pub(crate) fn decode(day_ms: i64, bytes: &[u8]) -> Option<Vec<DayRun>> {
    let mut runs = Vec::new();
    let (mut pos, mut prev) = (0usize, day_ms);
    while pos < bytes.len() {
        let start = prev.checked_add(i64::try_from(get_varint(bytes, &mut pos)?).ok()?)?;
        let last = start.checked_add(i64::try_from(get_varint(bytes, &mut pos)?).ok()?)?;
        let status = *STATUSES.get(usize::from(*bytes.get(pos)?))?;
        pos += 1;
        let max_gap = i64::try_from(get_varint(bytes, &mut pos)?).ok()?;
        runs.push(DayRun {
            start,
            last,
            status,
            max_gap,
        });
        prev = last;
    }
    Some(runs)
}

/// Appends a result to a cell's runs: a new run at a status change, else the run grows.
pub(crate) fn push_point(runs: &mut Vec<DayRun>, t: i64, status: Status) {
    match runs.last_mut() {
        Some(r) if r.status == status => {
            r.max_gap = r.max_gap.max(t - r.last);
            r.last = t;
        }
        _ => runs.push(DayRun {
            start: t,
            last: t,
            status,
            max_gap: 0,
        }),
    }
}

/// One cell being assembled: its runs so far (internal gaps ≤ the merge gap).
pub(crate) struct Assembly {
    pub(crate) key: CellKey,
    pub(crate) runs: Vec<StatusRun>,
}

impl Assembly {
    pub(crate) fn push(&mut self, start: i64, last: i64, status: Status, merge_gap: i64) {
        match self.runs.last_mut() {
            Some(r) if r.status == status && start - r.last <= merge_gap => r.last = last,
            _ => self.runs.push(StatusRun {
                start,
                last,
                status,
            }),
        }
    }
}

/// The closed whole days of `[since, until)` at `now`: `(first_day, days_end)`, empty when
/// `first_day >= days_end`. The rest of the period is read from the results.
pub(crate) fn closed_days(since_ms: i64, until_ms: i64, now_ms: i64) -> (i64, i64) {
    let first_day = day_of(since_ms.saturating_add(DAY_MS - 1));
    let days_end = day_of(until_ms).min(day_of(now_ms.saturating_sub(SETTLE_MS)));
    (first_day, days_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_round_trip_through_their_encoding() {
        let day = 20_000 * DAY_MS;
        let runs = vec![
            DayRun {
                start: day + 5,
                last: day + 900_000,
                status: Status::Ok,
                max_gap: 899_995,
            },
            DayRun {
                start: day + 900_000,
                last: day + 900_000,
                status: Status::Standby,
                max_gap: 0,
            },
            DayRun {
                start: day + DAY_MS - 1,
                last: day + DAY_MS - 1,
                status: Status::Critical,
                max_gap: 0,
            },
        ];
        let bytes = encode(day, &runs);
        assert!(bytes.len() < 20, "{} bytes", bytes.len());
        assert_eq!(decode(day, &bytes), Some(runs));
        assert_eq!(decode(day, &[0x80]), None, "a torn varint is an error");
        assert_eq!(
            decode(day, &[0, 0, 9, 0]),
            None,
            "an unknown status is an error"
        );
    }

    #[test]
    fn days_are_utc_and_floor_negative_times() {
        assert_eq!(day_of(DAY_MS + 1), DAY_MS);
        assert_eq!(day_of(DAY_MS), DAY_MS);
        assert_eq!(day_of(-1), -DAY_MS);
    }
}
