#![no_main]
//! BEP 14 announces from anyone on the LAN: parsing never panics, keeps its bounds, and what parses
//! survives a round trip through our encoder.

use libfuzzer_sys::fuzz_target;
use wire::LsdAnnounce;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = LsdAnnounce::decode(data) {
        assert!(a.port != 0);
        assert!(!a.info_hashes.is_empty() && a.info_hashes.len() <= wire::MAX_LSD_INFOHASHES);
        assert!(a.cookie.as_ref().is_none_or(|c| c.len() <= wire::MAX_LSD_COOKIE));
        let again = LsdAnnounce::decode(&a.encode()).expect("own announce must parse");
        assert_eq!(again.port, a.port);
        assert_eq!(again.info_hashes, a.info_hashes);
        assert_eq!(again.cookie, a.cookie);
    }
});
