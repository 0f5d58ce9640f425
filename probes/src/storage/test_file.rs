//! The test file: its name (probe, time, random part), its content and the adler32 checksum.

use super::*;

/// The adler32 checksum (RFC 1950), as the grid's storage and transfer services compute it.
pub(crate) fn adler32(data: &[u8]) -> u32 {
    pub(super) const MOD: u32 = 65_521;
    // 5552 bytes is the most that can be summed before `b` could overflow 32 bits.
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh name: `gridprobe-<short metric>-<unix time>-<8 hex digits>`.
pub(super) fn file_name(metric: &str, now: u64) -> String {
    let short = gridprobe_config::model::short_metric_name(metric);
    let probe: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{FILE_PREFIX}{probe}-{now}-{:08x}", random_u32())
}

/// The Unix time in a name made by [`file_name`], if it is one.
pub(super) fn file_time(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(FILE_PREFIX)?;
    let (rest, random) = rest.rsplit_once('-')?;
    let (probe, time) = rest.rsplit_once('-')?;
    let hex = random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = !time.is_empty() && time.bytes().all(|b| b.is_ascii_digit());
    (hex && digits && !probe.is_empty())
        .then(|| time.parse().ok())
        .flatten()
}

/// 32 bits that differ between calls and processes (names must not collide between probes,
/// instances and gridprobe hosts sharing a test area; no cryptographic quality needed).
pub(super) fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS once per process, then varied per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish() as u32
}

/// The test file: a readable first line naming it, then pseudo-random bytes (so that a
/// compressing or deduplicating store still moves real data).
pub(super) fn file_content(name: &str, size: usize) -> Vec<u8> {
    let mut data = format!("gridprobe storage test file {name}\n").into_bytes();
    let mut x = u64::from(adler32(name.as_bytes())) | 1 << 40;
    while data.len() < size {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    data
}
