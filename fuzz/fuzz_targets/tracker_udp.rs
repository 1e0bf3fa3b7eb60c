#![no_main]
//! UDP tracker packets: parsing never panics, and a parsed request re-encodes to bytes that parse to the
//! same request.

use libfuzzer_sys::fuzz_target;
use tracker_proto::udp::{Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::parse(data) {
        let mut out = Vec::new();
        req.write(&mut out);
        assert_eq!(Request::parse(&out).expect("own packet must parse"), req);
    }
    let _ = Response::parse(data, false);
    let _ = Response::parse(data, true);
});
