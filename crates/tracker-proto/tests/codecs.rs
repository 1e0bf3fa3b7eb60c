use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tracker_proto::http::{
    self, AnnounceResponse, HttpAnnounce, Peer, RequestError, ResponseError, ScrapeResponse,
};
use tracker_proto::udp::{PacketError, Request, Response, PROTOCOL_ID};
use tracker_proto::{Announce, Event, ScrapeStats};

const HASH_HEX: [u8; 20] = [
    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf1, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x12,
    0x34, 0x56, 0x78, 0x9a,
];

#[test]
fn http_announce_parses_raw_binary_info_hash() {
    // The classic example: mixed escapes and literal characters standing for bytes.
    let q = b"info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A&peer_id=-SP0100-%00%01%02%03%04%05%06%07%08%09%0A%0B&port=6881&uploaded=1&downloaded=2&left=3&event=started&numwant=50&compact=1&key=1A2B3C4D";
    let a = http::parse_announce(q).unwrap();
    assert_eq!(a.announce.info_hash, HASH_HEX);
    assert_eq!(&a.announce.peer_id[..8], b"-SP0100-");
    assert_eq!(a.announce.peer_id[19], 11);
    assert_eq!(a.announce.port, 6881);
    assert_eq!(
        (a.announce.uploaded, a.announce.downloaded, a.announce.left),
        (1, 2, 3)
    );
    assert_eq!(a.announce.event, Event::Started);
    assert_eq!(a.announce.numwant, Some(50));
    assert_eq!(a.announce.key, Some(0x1A2B3C4D));
    assert!(a.compact);
}

#[test]
fn http_announce_errors() {
    let base = "info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&left=0";
    assert!(http::parse_announce(base.as_bytes()).is_ok());
    let cases: &[(&str, RequestError)] = &[
        (
            "peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&left=0",
            RequestError::Missing("info_hash"),
        ),
        (
            "info_hash=short&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&left=0",
            RequestError::Invalid("info_hash"),
        ),
        (
            "info_hash=%zz&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&left=0",
            RequestError::Invalid("info_hash"),
        ),
    ];
    for (q, e) in cases {
        assert_eq!(http::parse_announce(q.as_bytes()).unwrap_err(), *e, "{q}");
    }
    let dup = format!("{base}&info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A");
    assert_eq!(
        http::parse_announce(dup.as_bytes()).unwrap_err(),
        RequestError::Duplicate("info_hash")
    );
    assert_eq!(
        http::parse_announce(format!("{base}&port=2").as_bytes()).unwrap_err(),
        RequestError::Duplicate("port")
    );
    assert_eq!(
        http::parse_announce(base.replace("port=1", "port=70000").as_bytes()).unwrap_err(),
        RequestError::Invalid("port")
    );
    assert_eq!(
        http::parse_announce(format!("{base}&event=exploded").as_bytes()).unwrap_err(),
        RequestError::Invalid("event")
    );
    assert_eq!(
        http::parse_announce(&vec![b'a'; 5000]).unwrap_err(),
        RequestError::TooLong
    );
}

#[test]
fn http_announce_query_round_trip() {
    let req = HttpAnnounce {
        announce: Announce {
            info_hash: tracker_proto::InfoHash([0xff; 20]),
            peer_id: tracker_proto::PeerId(*b"-SP0100-\x00\x01 &=%+abcde"),
            port: 51413,
            uploaded: u64::MAX,
            downloaded: 0,
            left: 12345,
            event: Event::Completed,
            numwant: Some(80),
            key: Some(0xdeadbeef),
            ip: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9))),
        },
        compact: true,
        no_peer_id: true,
        tracker_id: Some(b"t\x00id".to_vec()),
    };
    let q = http::encode_announce(&req);
    assert!(q.is_ascii());
    assert_eq!(http::parse_announce(q.as_bytes()).unwrap(), req);
}

#[test]
fn http_responses_compact_and_dictionary() {
    let resp = AnnounceResponse {
        interval: 1800,
        min_interval: Some(60),
        complete: 2,
        incomplete: 3,
        peers: vec![
            Peer {
                addr: "127.0.0.1:6881".parse().unwrap(),
                peer_id: None,
            },
            Peer {
                addr: "[::1]:6882".parse().unwrap(),
                peer_id: None,
            },
        ],
        tracker_id: None,
        warning: None,
        external_ip: None,
    };
    let compact = resp.encode(true);
    assert_eq!(
        compact,
        b"d8:completei2e10:incompletei3e8:intervali1800e12:min intervali60e5:peers6:\x7f\x00\x00\x01\x1a\xe16:peers618:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x1a\xe2e"
    );
    assert_eq!(AnnounceResponse::decode(&compact).unwrap(), resp);
    let full = resp.encode(false);
    assert_eq!(AnnounceResponse::decode(&full).unwrap(), resp);
    // BEP 24: the requester's address, 4 or 16 bytes; any other length is ignored.
    for ip in ["11.11.11.1", "2001:db8::7"] {
        let with_ip = AnnounceResponse {
            external_ip: Some(ip.parse().unwrap()),
            ..resp.clone()
        };
        assert_eq!(
            AnnounceResponse::decode(&with_ip.encode(true)).unwrap(),
            with_ip
        );
    }
    assert_eq!(
        AnnounceResponse::decode(b"d11:external ip3:abc8:intervali60ee")
            .unwrap()
            .external_ip,
        None
    );
    assert_eq!(
        AnnounceResponse::decode(&http::failure("unregistered torrent")),
        Err(ResponseError::Failure("unregistered torrent".into()))
    );
    assert!(AnnounceResponse::decode(b"d5:peers5:abcdee").is_err());
}

#[test]
fn scrape_query_and_response() {
    let q = http::encode_scrape(&[
        tracker_proto::InfoHash(HASH_HEX),
        tracker_proto::InfoHash([0; 20]),
    ]);
    assert_eq!(
        http::parse_scrape(q.as_bytes()).unwrap(),
        vec![HASH_HEX, [0; 20]]
    );
    assert_eq!(http::parse_scrape(b"").unwrap(), Vec::<[u8; 20]>::new());
    let many = vec![format!("info_hash={}", "a".repeat(20)); 65].join("&");
    assert_eq!(
        http::parse_scrape(many.as_bytes()),
        Err(RequestError::TooManyHashes)
    );
    // BEP 48's example layout.
    let resp = ScrapeResponse {
        files: vec![(
            tracker_proto::InfoHash(*b"...................."),
            ScrapeStats {
                seeders: 5,
                completed: 50,
                leechers: 10,
            },
        )],
    };
    assert_eq!(
        resp.encode(),
        b"d5:filesd20:....................d8:completei5e10:downloadedi50e10:incompletei10eeee"
    );
    assert_eq!(ScrapeResponse::decode(&resp.encode()).unwrap(), resp);
    assert_eq!(
        http::scrape_url("http://t/announce").as_deref(),
        Some("http://t/scrape")
    );
    assert_eq!(
        http::scrape_url("http://t/announce/abc").as_deref(),
        Some("http://t/scrape/abc")
    );
    assert_eq!(http::scrape_url("http://t/a"), None);
}

#[test]
fn udp_connect_bytes() {
    let mut out = Vec::new();
    Request::Connect {
        transaction_id: 0x01020304,
    }
    .write(&mut out);
    assert_eq!(
        out,
        [0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4]
    );
    assert_eq!(
        Request::parse(&out).unwrap(),
        Request::Connect {
            transaction_id: 0x01020304
        }
    );
    out[0] = 1;
    assert_eq!(Request::parse(&out), Err(PacketError::BadProtocolId));

    let mut out = Vec::new();
    Response::Connect {
        transaction_id: 7,
        connection_id: 0x1122334455667788,
    }
    .write(&mut out);
    assert_eq!(
        out,
        [0, 0, 0, 0, 0, 0, 0, 7, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
    );
}

#[test]
fn udp_announce_layout_and_bep41() {
    let a = Announce {
        info_hash: tracker_proto::InfoHash(HASH_HEX),
        peer_id: tracker_proto::PeerId([b'p'; 20]),
        port: 0x1ae1,
        uploaded: 3,
        downloaded: 1,
        left: 2,
        event: Event::Started,
        numwant: None,
        key: Some(9),
        ip: None,
    };
    let req = Request::Announce {
        connection_id: 42,
        transaction_id: 5,
        announce: a.clone(),
        url_data: b"/announce/passkey123".to_vec(),
    };
    let mut out = Vec::new();
    req.write(&mut out);
    assert_eq!(out.len(), 98 + 2 + 20);
    assert_eq!(&out[8..12], &[0, 0, 0, 1]);
    assert_eq!(&out[16..36], &HASH_HEX);
    assert_eq!(&out[80..84], &[0, 0, 0, 2], "started is 2");
    assert_eq!(&out[92..96], &[0xff; 4], "numwant -1 means default");
    assert_eq!(&out[96..98], &[0x1a, 0xe1]);
    assert_eq!(&out[98..100], &[2, 20]);
    assert_eq!(Request::parse(&out).unwrap(), req);
    // Options split across several URL data entries, with no-ops and an end marker.
    let mut split = out[..98].to_vec();
    split.extend_from_slice(b"\x01\x02\x0a/announce/\x02\x0apasskey123\x00garbage");
    assert_eq!(Request::parse(&split).unwrap(), req);
    let mut bad = out[..98].to_vec();
    bad.extend_from_slice(b"\x02\x30short");
    assert_eq!(Request::parse(&bad), Err(PacketError::BadOption));
    assert_eq!(Request::parse(&out[..97]), Err(PacketError::TooShort));
}

#[test]
fn udp_responses_round_trip() {
    let peers: Vec<SocketAddr> = vec![
        "127.0.0.1:1".parse().unwrap(),
        "10.0.0.2:65535".parse().unwrap(),
    ];
    let resp = Response::Announce {
        transaction_id: 1,
        interval: 900,
        leechers: 4,
        seeders: 5,
        peers,
    };
    let mut out = Vec::new();
    resp.write(&mut out);
    assert_eq!(out.len(), 20 + 12);
    assert_eq!(Response::parse(&out, false).unwrap(), resp);

    let v6: Vec<SocketAddr> = vec!["[::1]:6881".parse().unwrap()];
    let resp6 = Response::Announce {
        transaction_id: 1,
        interval: 900,
        leechers: 0,
        seeders: 1,
        peers: v6,
    };
    let mut out = Vec::new();
    resp6.write(&mut out);
    assert_eq!(out.len(), 20 + 18);
    assert_eq!(Response::parse(&out, true).unwrap(), resp6);

    let scrape = Response::Scrape {
        transaction_id: 3,
        stats: vec![ScrapeStats {
            seeders: 1,
            completed: 2,
            leechers: 3,
        }],
    };
    let mut out = Vec::new();
    scrape.write(&mut out);
    assert_eq!(
        out,
        [0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
    );
    assert_eq!(Response::parse(&out, false).unwrap(), scrape);

    let err = Response::Error {
        transaction_id: 3,
        message: "bad".into(),
    };
    let mut out = Vec::new();
    err.write(&mut out);
    assert_eq!(out, b"\0\0\0\x03\0\0\0\x03bad");
    assert_eq!(Response::parse(&out, false).unwrap(), err);
}

#[test]
fn udp_scrape_bounds() {
    let mut out = Vec::new();
    Request::Scrape {
        connection_id: 1,
        transaction_id: 2,
        info_hashes: vec![],
    }
    .write(&mut out);
    assert_eq!(Request::parse(&out), Err(PacketError::BadScrapeCount));
    let mut out = Vec::new();
    Request::Scrape {
        connection_id: 1,
        transaction_id: 2,
        info_hashes: vec![tracker_proto::InfoHash([1; 20]); 75],
    }
    .write(&mut out);
    assert_eq!(Request::parse(&out), Err(PacketError::BadScrapeCount));
    assert_eq!(PROTOCOL_ID, 0x41727101980);
}
