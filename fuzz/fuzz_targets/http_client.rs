#![no_main]
//! What an HTTP(S) tracker or a `.torrent` server sends back: the status line, headers, Content-Length,
//! chunked framing and redirect `Location`s parse or fail cleanly, and a body never exceeds the cap.

use libfuzzer_sys::fuzz_target;

const CAP: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((flags, raw)) = data.split_first() else {
        return;
    };
    if let Some(Ok(len)) = engine::fuzzing::http_response(raw, flags & 1 == 1, CAP) {
        assert!(len <= CAP, "a body of {len} bytes passed the {CAP}-byte cap");
    }
});
