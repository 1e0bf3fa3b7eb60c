#![no_main]
//! SSDP search replies from anyone on the LAN: parsing never panics, and a LOCATION that parses is a
//! bounded http:// URL.

use libfuzzer_sys::fuzz_target;
use portmap::{http::Url, ssdp};

fuzz_target!(|data: &[u8]| {
    if let Ok(location) = ssdp::parse_reply(data) {
        assert!(location.len() <= ssdp::MAX_LOCATION);
        assert!(location.to_ascii_lowercase().starts_with("http://"));
        if let Ok(url) = Url::parse(&location) {
            assert!(url.path.starts_with('/'));
        }
    }
});
