use proptest::prelude::*;
use tracker_proto::http::{self, HttpAnnounce};
use tracker_proto::udp::{Request, Response};
use tracker_proto::{Announce, Event};

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::None),
        Just(Event::Started),
        Just(Event::Completed),
        Just(Event::Stopped)
    ]
}

prop_compose! {
    fn announce()(info_hash in any::<[u8; 20]>(), peer_id in any::<[u8; 20]>(), port in any::<u16>(),
                  uploaded in any::<u64>(), downloaded in any::<u64>(), left in any::<u64>(), event in event(),
                  numwant in proptest::option::of(0u32..i32::MAX as u32), key in any::<u32>(),
                  ip in proptest::option::of(any::<[u8; 4]>())) -> Announce {
        Announce { info_hash: tracker_proto::InfoHash(info_hash), peer_id: tracker_proto::PeerId(peer_id), port, uploaded, downloaded, left, event, numwant, key: Some(key),
                   ip: ip.map(std::net::IpAddr::from).filter(|ip| !ip.is_unspecified()) }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn http_query_round_trip(a in announce(), compact in any::<bool>(), no_peer_id in any::<bool>(),
                             tracker_id in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12))) {
        let req = HttpAnnounce { announce: a, compact, no_peer_id, tracker_id };
        prop_assert_eq!(http::parse_announce(http::encode_announce(&req).as_bytes()).unwrap(), req);
    }

    #[test]
    fn udp_announce_round_trip(a in announce(), cid in any::<u64>(), tid in any::<u32>(),
                               url in proptest::collection::vec(any::<u8>(), 0..600)) {
        let req = Request::Announce { connection_id: cid, transaction_id: tid, announce: a, url_data: url };
        let mut out = Vec::new();
        req.write(&mut out);
        prop_assert_eq!(Request::parse(&out).unwrap(), req);
    }

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Request::parse(&bytes);
        let _ = Response::parse(&bytes, false);
        let _ = Response::parse(&bytes, true);
        let _ = http::parse_announce(&bytes);
        let _ = http::parse_scrape(&bytes);
        let _ = http::AnnounceResponse::decode(&bytes);
        let _ = http::ScrapeResponse::decode(&bytes);
    }
}
