#![no_main]
//! HTTP replies from the router's web server: never a panic; a body never exceeds its bound; bytes
//! still arriving never read as a different reply than the same bytes at EOF would when complete.

use libfuzzer_sys::fuzz_target;
use portmap::http;

fuzz_target!(|data: &[u8]| {
    let open = http::parse_reply(data, false);
    let closed = http::parse_reply(data, true);
    for reply in [&open, &closed].into_iter().flatten().flatten() {
        assert!(reply.body.len() <= http::MAX_BODY);
    }
    if let Ok(Some(reply)) = &open {
        assert_eq!(closed.as_ref().ok().and_then(|r| r.as_ref()), Some(reply));
    }
});
