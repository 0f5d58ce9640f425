//! Plugin output: any bytes as a Nagios plugin's stdout (split into summary, details and
//! perfdata), and as a perfdata string on its own.
#![no_main]

use gridprobe_probes::perfdata::{parse, split_plugin_output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Plugins write bytes; the probe reads them lossily, as here.
    let text = String::from_utf8_lossy(data);
    let _ = split_plugin_output(&text);
    let _ = parse(&text);
});
