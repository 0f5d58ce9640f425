//! The GOCDB `get_site_contacts` importer: any text as a contacts page, and a page read
//! rendered as an include file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(page) = gridprobe_config::gocdb_contacts::parse(text) {
        let names: Vec<&str> = page.sites.iter().map(|s| s.site.as_str()).collect();
        let _ = gridprobe_config::gocdb_contacts::render(&page.sites, &names, &[], text, "now");
    }
});
