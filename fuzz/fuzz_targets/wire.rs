#![no_main]
//! The peer wire codec and state machine: any byte stream decodes into messages or a clean error, every
//! decoded message re-encodes to the bytes it came from, and the state machine never panics.

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wire::{InfoHash, PeerId};
use wire::{Connection, Decoder, Handshake};

fuzz_target!(|data: &[u8]| {
    let Some((&pieces, stream)) = data.split_first() else { return };
    let ours = Handshake::new(InfoHash::new([0; 20]), PeerId::new([1; 20]), true);
    let mut theirs = ours;
    theirs.reserved[7] = pieces & 0x05;
    let mut connection = Connection::new(u32::from(pieces), &ours, &theirs);
    let decoder = Decoder::new(64 * 1024);
    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.clone();
        match decoder.decode(&mut buf) {
            Ok(Some(message)) => {
                let consumed = before.len() - buf.len();
                let mut again = BytesMut::new();
                message.encode(&mut again);
                assert_eq!(&again[..], &before[..consumed]);
                let _ = connection.receive(message);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = wire::ExtensionHandshake::decode(stream);
    if let Ok(m) = wire::MetadataMessage::decode(stream) {
        assert_eq!(wire::MetadataMessage::decode(&m.encode()).expect("own message must parse"), m);
    }
});
