#![no_main]
//! What any HTTP server sends us (an HTTP(S) tracker, a `.torrent` server, the daemon's API, a router's
//! description or SOAP control), through the one response decoder: never a panic; a body never over
//! its cap; the same result however the bytes are split across reads, and while they still arrive
//! never a different response than at the end; a redirect's `Location` resolves or fails cleanly.

use http_client::{parse, redirect_target, Decoder, End, Limits, Response, ResponseError};
use libfuzzer_sys::fuzz_target;

fn in_pieces(
    raw: &[u8],
    split: usize,
    bytewise: bool,
    end: End,
    limits: Limits,
) -> Result<Response, ResponseError> {
    let mut decoder = Decoder::new(limits);
    let (a, b) = raw.split_at(split);
    decoder.push(a)?;
    if bytewise {
        for byte in b {
            decoder.push(std::slice::from_ref(byte))?;
        }
    } else {
        decoder.push(b)?;
    }
    decoder.finish(end)
}

fuzz_target!(|data: &[u8]| {
    let [flags, cap, split, raw @ ..] = data else {
        return;
    };
    let end = if flags & 1 == 1 { End::Cut } else { End::Clean };
    let head = if flags & 2 == 0 { 64 } else { 8 * 1024 };
    let mut limits = Limits::new(head, usize::from(*cap) * 32);
    if flags & 4 != 0 {
        limits.chunks = 3;
    }
    let at_once = parse(raw, Some(end), limits).map(|r| r.expect("an end gives an answer"));
    let split = usize::from(*split) * raw.len() / 255;
    assert_eq!(in_pieces(raw, split, flags & 8 != 0, end, limits), at_once);
    if let Ok(Some(open)) = parse(raw, None, limits) {
        assert_eq!(Ok(&open), at_once.as_ref());
    }
    if let Ok(response) = at_once {
        assert!(
            response.body.len() <= limits.body,
            "a body of {} bytes passed the {}-byte cap",
            response.body.len(),
            limits.body
        );
        if let Some(location) = response.head.header("location") {
            let _ = redirect_target("https://tracker.example/a/b?c", location);
        }
    }
});
