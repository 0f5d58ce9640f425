//! The site agents' messages (`gridprobe agent`, `serve` with `[agents]`): any bytes as a work
//! message or a heartbeat; a work message that decodes has its instance read as the agent reads
//! it, and must survive a round trip.
#![no_main]

use gridprobe_runner::agent::wire::{Heartbeat, Work};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Heartbeat::from_json(data);
    let Ok(work) = Work::from_json(data) else {
        return;
    };
    let _ = gridprobe_config::load_str(std::path::Path::new("work.toml"), &work.config);
    let again = Work::from_json(&work.to_json()).expect("a decoded work message re-encodes");
    assert_eq!(again, work);
});
