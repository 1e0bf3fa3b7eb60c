#![no_main]
//! BEP 55 messages: parsing never panics, accepts only the two exact lengths, and round-trips.

use libfuzzer_sys::fuzz_target;
use wire::HolepunchMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = HolepunchMessage::decode(data) {
        assert!(data.len() == 12 || data.len() == wire::MAX_HOLEPUNCH_LEN);
        assert_eq!(m.encode(), data, "a parsed message encodes to the same bytes");
    }
});
