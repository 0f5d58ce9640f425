//! CVMFS signed letters (`.cvmfspublished`, `.cvmfswhitelist`): any bytes cut into text, hash
//! line and signature, the hash checked, and a master key file read.
#![no_main]

use gridprobe_probes::software::signature::{check_letter_hash, master_keys, parse_letter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(letter) = parse_letter(data) {
        let _ = check_letter_hash(&letter);
    }
    let _ = master_keys(data);
});
