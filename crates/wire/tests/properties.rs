use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use wire::{BlockRef, Decoder, Message, PieceIndex};

fn block() -> impl Strategy<Value = BlockRef> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(index, begin, length)| BlockRef {
        index: PieceIndex::new(index),
        begin,
        length,
    })
}

fn piece() -> impl Strategy<Value = PieceIndex> {
    any::<u32>().prop_map(PieceIndex::new)
}

fn message() -> impl Strategy<Value = Message> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
    prop_oneof![
        Just(Message::KeepAlive),
        Just(Message::Choke),
        Just(Message::Unchoke),
        Just(Message::Interested),
        Just(Message::NotInterested),
        Just(Message::HaveAll),
        Just(Message::HaveNone),
        piece().prop_map(Message::Have),
        piece().prop_map(Message::Suggest),
        piece().prop_map(Message::AllowedFast),
        bytes().prop_map(Message::Bitfield),
        block().prop_map(Message::Request),
        block().prop_map(Message::Cancel),
        block().prop_map(Message::Reject),
        (piece(), any::<u32>(), bytes()).prop_map(|(index, begin, data)| Message::Piece {
            index,
            begin,
            data
        }),
        any::<u16>().prop_map(Message::Port),
        (any::<u8>(), bytes()).prop_map(|(id, payload)| Message::Extended { id, payload }),
        hash_range().prop_map(Message::HashRequest),
        hash_range().prop_map(Message::HashReject),
        (
            hash_range(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..20)
        )
            .prop_map(|(range, hashes)| Message::Hashes { range, hashes }),
    ]
}

fn hash_range() -> impl Strategy<Value = wire::HashRange> {
    (
        any::<[u8; 32]>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(pieces_root, base_layer, index, length, proof_layers)| wire::HashRange {
                pieces_root,
                base_layer,
                index,
                length,
                proof_layers,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn stream_round_trip(messages in proptest::collection::vec(message(), 0..20), split in any::<prop::sample::Index>()) {
        let mut stream = BytesMut::new();
        for m in &messages {
            m.encode(&mut stream);
        }
        // Deliver in two arbitrary parts: framing must not depend on read boundaries.
        let cut = split.index(stream.len() + 1);
        let mut buf = BytesMut::from(&stream[..cut]);
        let decoder = Decoder::default();
        let mut out = Vec::new();
        while let Some(m) = decoder.decode(&mut buf).unwrap() {
            out.push(m);
        }
        buf.extend_from_slice(&stream[cut..]);
        while let Some(m) = decoder.decode(&mut buf).unwrap() {
            out.push(m);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, messages);
    }

    #[test]
    fn head_then_block_is_the_whole_encoding(m in message()) {
        let mut whole = BytesMut::new();
        m.encode(&mut whole);
        let mut split = BytesMut::new();
        let block = m.encode_head(&mut split).cloned();
        prop_assert_eq!(block.is_some(), matches!(m, Message::Piece { .. }));
        if let Some(block) = block {
            split.extend_from_slice(&block);
        }
        prop_assert_eq!(split, whole);
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let decoder = Decoder::new(128);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decoder.decode(&mut buf) {}
        let _ = wire::ExtensionHandshake::decode(&bytes);
        let _ = wire::Handshake::decode(&bytes);
    }
}
