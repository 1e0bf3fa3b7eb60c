#![no_main]
//! BEP 9 messages: parsing never panics, never accepts an oversized piece, and round-trips.

use libfuzzer_sys::fuzz_target;
use wire::MetadataMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = MetadataMessage::decode(data) {
        if let MetadataMessage::Data { data, total_size, .. } = &m {
            assert!(data.len() <= wire::METADATA_PIECE);
            assert!(*total_size as usize <= wire::MAX_METADATA);
        }
        assert_eq!(MetadataMessage::decode(&m.encode()).expect("own message must parse"), m);
    }
});
