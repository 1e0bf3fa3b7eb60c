#![no_main]
//! HTTP tracker parsing never panics; a parsed announce survives re-encoding; tracker responses decode
//! or fail cleanly.

use libfuzzer_sys::fuzz_target;
use tracker_proto::http;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = http::parse_announce(data) {
        let again = http::parse_announce(http::encode_announce(&req).as_bytes()).expect("own query must parse");
        assert_eq!(again.announce.info_hash, req.announce.info_hash);
        assert_eq!(again.announce.peer_id, req.announce.peer_id);
        assert_eq!(again.announce.left, req.announce.left);
    }
    if let Ok(hashes) = http::parse_scrape(data) {
        assert!(hashes.len() <= http::MAX_SCRAPE_HASHES);
    }
    let _ = http::AnnounceResponse::decode(data);
    let _ = http::ScrapeResponse::decode(data);
});
