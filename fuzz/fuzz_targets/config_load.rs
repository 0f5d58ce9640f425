//! The configuration loader: any text as a main TOML file, loaded, validated, and its probes
//! built (every kind checks its parameters), with the diagnostics rendered.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Includes resolve from a directory that does not exist, so the input cannot pull in files
    // of the machine (absolute include paths are refused or fail to read like any other).
    let loaded = gridprobe_config::load_str(Path::new("/nonexistent/gridprobe-fuzz/vo.toml"), text);
    let _ = loaded.diagnostics.to_string();
    let (_probes, diagnostics) = gridprobe_probes::registry::build_all(&loaded.config);
    let _ = diagnostics.to_string();
    if loaded.diagnostics.is_empty() && diagnostics.is_empty() {
        let _ = loaded.config.instances();
    }
});
