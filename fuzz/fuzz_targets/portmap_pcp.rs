#![no_main]
//! NAT-PMP and PCP replies (UDP from the gateway's address, spoofable on the LAN): never a panic, and
//! the fields read are the bytes at their RFC offsets.

use libfuzzer_sys::fuzz_target;
use portmap::{natpmp, pcp};

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = natpmp::parse_reply(data) {
        assert!(data.len() == 12 || data.len() == 16);
        assert_eq!(reply.result(), u16::from_be_bytes([data[2], data[3]]));
        if let natpmp::Reply::Map { internal, external, .. } = reply {
            assert_eq!(internal, u16::from_be_bytes([data[8], data[9]]));
            assert_eq!(external, u16::from_be_bytes([data[10], data[11]]));
        }
    }
    if let Ok(reply) = pcp::parse_reply(data) {
        assert!(data.len() <= pcp::MAX_MESSAGE);
        assert_eq!(reply.result, data[3]);
        if data.len() >= 60 {
            assert_eq!(&reply.nonce[..], &data[24..36]);
            assert_eq!(reply.external, u16::from_be_bytes([data[42], data[43]]));
        }
    }
});
