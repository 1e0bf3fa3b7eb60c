#![no_main]
//! BEP 55 messages: parsing never panics, accepts only the exact lengths (with or without the error
//! code), and what it accepts round-trips.

use libfuzzer_sys::fuzz_target;
use wire::HolepunchMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = HolepunchMessage::decode(data) {
        assert!([8, 12, 20, wire::MAX_HOLEPUNCH_LEN].contains(&data.len()));
        let again = HolepunchMessage::decode(&m.encode()).expect("own message must parse");
        assert_eq!(again, m);
    }
});
