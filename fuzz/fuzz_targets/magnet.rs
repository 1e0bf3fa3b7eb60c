#![no_main]
//! Parsing a magnet link never panics, and what parses survives a round trip through its text form.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(magnet) = metainfo::Magnet::parse(text) {
        let again = metainfo::Magnet::parse(&magnet.to_string()).expect("own output must parse");
        assert_eq!(again, magnet);
    }
});
