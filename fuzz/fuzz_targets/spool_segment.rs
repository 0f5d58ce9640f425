//! The spool's record reader: any bytes as a segment file left on disk (after a crash, a bad
//! disk, an edit), opened, replayed to the end and acknowledged, then appended to.
//!
//! The first input byte chooses the set-up: bit 0 puts the segment magic in front of the rest
//! (so the fuzzer spends its time on records, not on finding the magic), bit 1 adds a second,
//! valid segment after it (a damaged segment that is not the last).
#![no_main]

use gridprobe_results::spool::{Spool, SpoolConfig, MAGIC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let mut segment = Vec::with_capacity(rest.len() + MAGIC.len());
    if mode & 1 == 1 {
        segment.extend_from_slice(MAGIC);
    }
    segment.extend_from_slice(rest);
    if std::fs::write(dir.path().join(format!("{:020}.seg", 1)), &segment).is_err() {
        return;
    }
    if mode & 2 == 2 {
        // One valid record, "ok": [len u32 LE][crc32 u32 LE][payload].
        let payload = b"ok";
        let mut second = MAGIC.to_vec();
        second.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        second.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        second.extend_from_slice(payload);
        let _ = std::fs::write(dir.path().join(format!("{:020}.seg", 2)), &second);
    }
    let cfg = SpoolConfig {
        max_bytes: 1 << 20,
        segment_bytes: 4096,
    };
    let Ok((mut spool, report)) = Spool::open(dir.path(), cfg) else {
        return;
    };
    let mut replayed = 0u64;
    // Each round acknowledges at least one record or ends: bounded by the records found.
    for _ in 0..=report.records.saturating_add(1) {
        let Ok((records, upto)) = spool.peek(16, 1 << 16) else {
            return;
        };
        if records.is_empty() {
            break;
        }
        replayed += records.len() as u64;
        if spool.ack(upto, records.len() as u64).is_err() {
            return;
        }
    }
    assert!(
        replayed <= report.records,
        "replayed {replayed} records, open found {}",
        report.records
    );
    // The spool stays usable for new records.
    if spool.append(&[b"new record".as_slice()]).is_ok() {
        let (records, _) = spool.peek(usize::MAX, u64::MAX).expect("peek after append");
        assert_eq!(records.last().map(Vec::as_slice), Some(b"new record".as_slice()));
    }
});
