//! The GOCDB `get_downtime` importer: any text as a downtime page.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = gridprobe_config::gocdb::parse(text);
});
