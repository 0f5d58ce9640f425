//! CVMFS `.cvmfswhitelist`: any bytes as a whitelist served by a Stratum-1 (cut as a signed
//! letter, its text read as a whitelist, and the whole file read as one too).
#![no_main]

use gridprobe_probes::software::signature::{parse_letter, parse_whitelist};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_whitelist(data);
    if let Ok(letter) = parse_letter(data) {
        let _ = parse_whitelist(letter.text);
    }
});
