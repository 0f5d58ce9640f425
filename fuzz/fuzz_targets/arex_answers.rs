//! A-REX's answers to the `ce` probe's `arc` backend: any bytes as the JSON of a job
//! operation, a session directory listing, and the `status`, `diag`, `local` and `failed`
//! control files.
#![no_main]

use gridprobe_probes::ce::arc::parse::fuzz_all;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_all(data);
});
