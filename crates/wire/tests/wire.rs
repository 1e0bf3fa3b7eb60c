use bytes::{Bytes, BytesMut};
use wire::{
    BlockRef, Connection, ConnectionError, Decoder, Event, ExtensionHandshake, Handshake, Message,
    WireError,
};
use wire::{InfoHash, PeerId, PieceIndex};

fn encoded(m: &Message) -> Vec<u8> {
    let mut out = BytesMut::new();
    m.encode(&mut out);
    out.to_vec()
}

const B: BlockRef = BlockRef {
    index: PieceIndex::new(1),
    begin: 0x4000,
    length: 0x4000,
};

#[test]
fn messages_byte_for_byte() {
    let cases: Vec<(Message, Vec<u8>)> = vec![
        (Message::KeepAlive, vec![0, 0, 0, 0]),
        (Message::Choke, vec![0, 0, 0, 1, 0]),
        (Message::Unchoke, vec![0, 0, 0, 1, 1]),
        (Message::Interested, vec![0, 0, 0, 1, 2]),
        (Message::NotInterested, vec![0, 0, 0, 1, 3]),
        (
            Message::Have(PieceIndex::new(0x01020304)),
            vec![0, 0, 0, 5, 4, 1, 2, 3, 4],
        ),
        (
            Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
            vec![0, 0, 0, 3, 5, 0xff, 0x80],
        ),
        (
            Message::Request(B),
            vec![0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
        ),
        (
            Message::Piece {
                index: PieceIndex::new(2),
                begin: 3,
                data: Bytes::from_static(b"abc"),
            },
            vec![0, 0, 0, 12, 7, 0, 0, 0, 2, 0, 0, 0, 3, b'a', b'b', b'c'],
        ),
        (
            Message::Cancel(B),
            vec![0, 0, 0, 13, 8, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
        ),
        (Message::Port(6881), vec![0, 0, 0, 3, 9, 0x1a, 0xe1]),
        (
            Message::Suggest(PieceIndex::new(7)),
            vec![0, 0, 0, 5, 13, 0, 0, 0, 7],
        ),
        (Message::HaveAll, vec![0, 0, 0, 1, 14]),
        (Message::HaveNone, vec![0, 0, 0, 1, 15]),
        (
            Message::Reject(B),
            vec![0, 0, 0, 13, 16, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
        ),
        (
            Message::AllowedFast(PieceIndex::new(9)),
            vec![0, 0, 0, 5, 17, 0, 0, 0, 9],
        ),
        (
            Message::Extended {
                id: 3,
                payload: Bytes::from_static(b"de"),
            },
            vec![0, 0, 0, 4, 20, 3, b'd', b'e'],
        ),
        (Message::HashRequest(RANGE), hash_bytes(21, &[])),
        (Message::HashReject(RANGE), hash_bytes(23, &[])),
        (
            Message::Hashes {
                range: RANGE,
                hashes: vec![[0xaa; 32], [0xbb; 32]],
            },
            hash_bytes(22, &[[0xaa; 32], [0xbb; 32]]),
        ),
    ];
    let decoder = Decoder::default();
    for (message, bytes) in cases {
        assert_eq!(encoded(&message), bytes, "{message:?}");
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(message));
        assert!(buf.is_empty());
    }
}

const RANGE: wire::HashRange = wire::HashRange {
    pieces_root: [7; 32],
    base_layer: 2,
    index: 4,
    length: 4,
    proof_layers: 1,
};

/// A BEP 52 hash message laid out by hand: length, id, pieces root, four big-endian u32s, hashes.
fn hash_bytes(id: u8, hashes: &[[u8; 32]]) -> Vec<u8> {
    let mut v = (49 + 32 * hashes.len() as u32).to_be_bytes().to_vec();
    v.push(id);
    v.extend_from_slice(&[7; 32]);
    for x in [2u32, 4, 4, 1] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    for h in hashes {
        v.extend_from_slice(h);
    }
    v
}

#[test]
fn hash_messages_of_the_wrong_size_are_errors() {
    let decoder = Decoder::default();
    let mut short = BytesMut::from(&hash_bytes(21, &[])[..40]);
    short[3] = 36;
    assert!(decoder.decode(&mut short).is_err());
    let mut ragged = hash_bytes(22, &[[1; 32]]);
    ragged.pop();
    ragged[3] -= 1;
    assert!(decoder.decode(&mut BytesMut::from(&ragged[..])).is_err());
}

#[test]
fn handshake_layout_and_bits() {
    let h = Handshake::new(
        InfoHash::new([1; 20]),
        PeerId::new(*b"-SP0100-abcdefghijkl"),
        true,
    );
    let bytes = h.encode();
    assert_eq!(bytes[0], 19);
    assert_eq!(&bytes[1..20], b"BitTorrent protocol");
    assert_eq!(&bytes[20..28], &[0, 0, 0, 0, 0, 0x10, 0, 0x05]);
    assert_eq!(Handshake::decode(&bytes).unwrap(), h);
    assert!(h.supports_extensions() && h.supports_fast() && h.supports_dht());
    assert_eq!(
        Handshake::decode(&bytes[..67]),
        Err(WireError::BadHandshake)
    );
    let mut other = bytes;
    other[1] = b'b';
    assert_eq!(Handshake::decode(&other), Err(WireError::BadHandshake));
    assert!(Handshake::plausible_prefix(&bytes[..5]));
    assert!(!Handshake::plausible_prefix(b"GET / HTTP/1.1"));
}

#[test]
fn codec_waits_for_whole_messages_and_caps_length() {
    let decoder = Decoder::new(1000);
    let bytes = encoded(&Message::Have(PieceIndex::new(5)));
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        assert_eq!(decoder.decode(&mut buf).unwrap(), None, "after {i} bytes");
        buf.extend_from_slice(&[*b]);
    }
    assert_eq!(decoder.missing(&buf), 0);
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Some(Message::Have(PieceIndex::new(5)))
    );

    // A huge length prefix is refused from its 4 bytes alone.
    let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Err(WireError::TooLong {
            len: 0x7fffffff,
            max: 1000
        })
    );

    let mut bad = BytesMut::from(&[0, 0, 0, 2, 4, 0][..]);
    assert!(matches!(
        decoder.decode(&mut bad),
        Err(WireError::BadLength { id: 4, .. })
    ));
    let mut unknown = BytesMut::from(&[0, 0, 0, 1, 99][..]);
    assert_eq!(decoder.decode(&mut unknown), Err(WireError::UnknownId(99)));
    let mut short_piece = BytesMut::from(&[0, 0, 0, 5, 7, 0, 0, 0, 0][..]);
    assert!(decoder.decode(&mut short_piece).is_err());
}

fn connection(pieces: u32, fast: bool) -> Connection {
    let mut ours = Handshake::new(InfoHash::new([0; 20]), PeerId::new([1; 20]), false);
    let mut theirs = Handshake::new(InfoHash::new([0; 20]), PeerId::new([2; 20]), false);
    if !fast {
        ours.reserved[7] = 0;
        theirs.reserved[7] = 0;
    }
    Connection::new(pieces, &ours, &theirs)
}

#[test]
fn bitfield_rules_as_real_clients_need_them() {
    let mut c = connection(10, true);
    assert_eq!(c.receive(Message::KeepAlive), Ok(Event::KeepAlive));
    // libtorrent's order: extension handshake, then the bitfield.
    assert!(c
        .receive(Message::Extended {
            id: 0,
            payload: Bytes::from_static(b"de")
        })
        .is_ok());
    assert_eq!(c.receive(Message::Port(6881)), Ok(Event::DhtPort(6881)));
    assert_eq!(
        c.receive(Message::AllowedFast(PieceIndex::new(1))),
        Ok(Event::AllowedFast(PieceIndex::new(1)))
    );
    assert_eq!(c.receive(Message::Unchoke), Ok(Event::Unchoked));
    assert_eq!(
        c.receive(Message::Bitfield(Bytes::from_static(&[0xff, 0xc0]))),
        Ok(Event::Bitfield(Bytes::from_static(&[0xff, 0xc0])))
    );
    // aria2 sends have-none, then a full bitfield mid-connection: a later one replaces the earlier.
    assert_eq!(
        c.receive(Message::Bitfield(Bytes::from_static(&[0, 0]))),
        Ok(Event::Bitfield(Bytes::from_static(&[0, 0])))
    );

    let mut c = connection(10, true);
    assert_eq!(
        c.receive(Message::Bitfield(Bytes::from_static(&[0xff, 0xe0]))),
        Err(ConnectionError::BitfieldSpareBits)
    );
    let mut c = connection(10, true);
    assert_eq!(
        c.receive(Message::Bitfield(Bytes::from_static(&[0xff]))),
        Err(ConnectionError::BitfieldLength {
            got: 1,
            expected: 2
        })
    );
    let mut c = connection(10, true);
    assert_eq!(
        c.receive(Message::Have(PieceIndex::new(3))),
        Ok(Event::Have(PieceIndex::new(3)))
    );
    assert_eq!(c.receive(Message::HaveAll), Ok(Event::HaveAll));
    assert_eq!(
        c.receive(Message::Have(PieceIndex::new(10))),
        Err(ConnectionError::PieceOutOfRange(PieceIndex::new(10)))
    );
}

#[test]
fn fast_extension_needs_negotiation() {
    let mut slow = connection(10, false);
    assert_eq!(
        slow.receive(Message::HaveAll),
        Err(ConnectionError::FastNotNegotiated)
    );
    assert_eq!(
        slow.receive(Message::Reject(B)),
        Err(ConnectionError::FastNotNegotiated)
    );
    assert_eq!(slow.allow_fast(PieceIndex::new(1)), None);
    let mut fast = connection(10, true);
    assert_eq!(fast.receive(Message::HaveAll), Ok(Event::HaveAll));
    assert_eq!(fast.receive(Message::Reject(B)), Ok(Event::Rejected(B)));
    assert_eq!(
        fast.receive(Message::AllowedFast(PieceIndex::new(2))),
        Ok(Event::AllowedFast(PieceIndex::new(2)))
    );
}

#[test]
fn choking_and_requests() {
    let mut c = connection(10, true);
    assert!(c.am_choking && c.peer_choking && !c.am_interested && !c.peer_interested);
    assert_eq!(
        c.receive(Message::Request(B)),
        Ok(Event::RequestWhileChoked(B))
    );
    assert_eq!(
        c.allow_fast(PieceIndex::new(1)),
        Some(Message::AllowedFast(PieceIndex::new(1)))
    );
    assert_eq!(c.allow_fast(PieceIndex::new(1)), None);
    assert_eq!(c.receive(Message::Request(B)), Ok(Event::Request(B)));
    let other = BlockRef {
        index: PieceIndex::new(2),
        ..B
    };
    assert_eq!(
        c.receive(Message::Request(other)),
        Ok(Event::RequestWhileChoked(other))
    );
    assert_eq!(c.set_choking(false), Some(Message::Unchoke));
    assert_eq!(c.set_choking(false), None);
    assert_eq!(
        c.receive(Message::Request(other)),
        Ok(Event::Request(other))
    );
    let huge = BlockRef {
        length: 1 << 20,
        ..B
    };
    assert_eq!(
        c.receive(Message::Request(huge)),
        Err(ConnectionError::BadRequestLength(1 << 20))
    );
    assert_eq!(c.set_interested(true), Some(Message::Interested));
    assert_eq!(c.receive(Message::Unchoke), Ok(Event::Unchoked));
    assert!(!c.peer_choking);
    assert_eq!(c.receive(Message::Interested), Ok(Event::Interested));
    assert!(c.peer_interested);
}

#[test]
fn extension_handshake_round_trip_and_gating() {
    let hs = ExtensionHandshake {
        extensions: [("ut_metadata".to_string(), 3), ("ut_pex".to_string(), 1)]
            .into_iter()
            .collect(),
        listen_port: Some(51413),
        client: Some("Spore 0.1.0".into()),
        request_queue: Some(500),
        metadata_size: Some(31_337),
        your_ip: Some("127.0.0.9".parse().unwrap()),
    };
    let bytes = hs.encode();
    assert_eq!(ExtensionHandshake::decode(&bytes).unwrap(), hs);
    assert_eq!(hs.id_of("ut_metadata"), Some(3));
    assert_eq!(hs.id_of("lt_donthave"), None);
    // A real-world shape: libtorrent sends more keys, some we ignore.
    let lt = b"d12:complete_agoi-1e1:md11:lt_donthavei7e10:share_modei8e11:upload_onlyi3e11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei4242e4:reqqi500e11:upload_onlyi0e1:v16:libtorrent 2.0.8e";
    let parsed = ExtensionHandshake::decode(lt).unwrap();
    assert_eq!(parsed.id_of("ut_metadata"), Some(2));
    assert_eq!(parsed.metadata_size, Some(4242));
    assert!(ExtensionHandshake::decode(b"le").is_err());
    let mut ours = Handshake::new(InfoHash::new([0; 20]), PeerId::new([1; 20]), false);
    ours.reserved[5] = 0;
    let mut no_ext = Connection::new(
        4,
        &ours,
        &Handshake::new(InfoHash::new([0; 20]), PeerId::new([2; 20]), false),
    );
    assert_eq!(
        no_ext.receive(Message::Extended {
            id: 0,
            payload: Bytes::new()
        }),
        Err(ConnectionError::ExtensionsNotNegotiated)
    );
}
