//! The WLCG VO feed importer: any text as a feed, parsed, then rendered as an include file.
#![no_main]

use gridprobe_config::vofeed::{parse, render_include, RenderOptions, SiteNames};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(feed) = parse(text) else {
        return;
    };
    for site_names in [SiteNames::Feed, SiteNames::Vo] {
        let options = RenderOptions {
            source: "fuzz.xml",
            generated_at: "2026-12-03 12:00:00Z",
            site_names,
        };
        let _ = render_include(&feed, None, &options);
    }
});
