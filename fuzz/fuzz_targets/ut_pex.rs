#![no_main]
//! BEP 11 messages: parsing never panics, keeps within the per-message peer limit, and round-trips.

use libfuzzer_sys::fuzz_target;
use wire::PexMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = PexMessage::decode(data) {
        assert!(m.added.len() <= wire::MAX_PEX_PEERS && m.dropped.len() <= wire::MAX_PEX_PEERS);
        let again = PexMessage::decode(&m.encode()).expect("own message must parse");
        assert_eq!(again.added.len(), m.added.len());
        assert_eq!(again.dropped.len(), m.dropped.len());
        // Every address keeps its own flag byte, in order, through a round trip.
        assert_eq!(m.added_flags.len(), m.added.len());
        assert_eq!((&again.added, &again.added_flags), (&m.added, &m.added_flags));
    }
});
