//! `MetadataCore` in virtual time: the metadata phase of a magnet link with no sockets and no
//! sleeping. Each test takes `Instant::now()` once and moves time forward by hand.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use torrent_core::metadata::{INFO_WINDOW, METADATA_REQUEST_TIMEOUT, UT_METADATA_ID};
use torrent_core::{MetaAction, MetaDisconnect, MetadataConfig, MetadataCore, PeerKey, Refused};
use wire::{
    ExtensionHandshake, Handshake, HashRange, Message, MetadataMessage, PieceIndex, MAX_METADATA,
    METADATA_PIECE,
};

/// The id each test peer takes `ut_metadata` under.
const THEIR_ID: u8 = 3;

struct H {
    core: MetadataCore,
    now: Instant,
    ours: Handshake,
    next_id: u8,
}

impl H {
    fn new(change: impl FnOnce(&mut MetadataConfig)) -> H {
        let now = Instant::now();
        let mut config = MetadataConfig::default();
        change(&mut config);
        H {
            core: MetadataCore::new(config, now),
            now,
            ours: Handshake::new([7; 20].into(), [1; 20].into(), false),
            next_id: 10,
        }
    }

    fn connect(&mut self, ip: u8, extensions: bool) -> PeerKey {
        self.next_id += 1;
        let mut theirs = Handshake::new([7; 20].into(), [self.next_id; 20].into(), false);
        if !extensions {
            theirs.reserved = [0; 8];
        }
        let addr = SocketAddr::from(([10, 0, 0, ip], 6881));
        self.core
            .add_peer(addr, &self.ours, &theirs, self.now)
            .unwrap()
    }

    /// A peer that offers metadata of `size` bytes (`None`: no `ut_metadata`).
    fn offering(&mut self, ip: u8, size: Option<u64>) -> PeerKey {
        let key = self.connect(ip, true);
        let mut extensions = BTreeMap::new();
        if size.is_some() {
            extensions.insert("ut_metadata".to_string(), THEIR_ID);
        }
        let hs = ExtensionHandshake {
            extensions,
            metadata_size: size,
            ..Default::default()
        };
        self.msg(
            key,
            Message::Extended {
                id: 0,
                payload: hs.encode().into(),
            },
        );
        key
    }

    fn msg(&mut self, key: PeerKey, m: Message) {
        self.core.handle_message(key, m, self.now);
    }

    fn data(&mut self, key: PeerKey, piece: u32, size: usize, fill: u8) {
        let len = (size - piece as usize * METADATA_PIECE).min(METADATA_PIECE);
        let m = MetadataMessage::Data {
            piece,
            total_size: size as u64,
            data: vec![fill; len],
        };
        self.msg(
            key,
            Message::Extended {
                id: UT_METADATA_ID,
                payload: m.encode().into(),
            },
        );
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.core.handle_timeout(self.now);
    }

    fn actions(&mut self) -> Vec<MetaAction> {
        std::iter::from_fn(|| self.core.poll_action()).collect()
    }
}

/// The metadata pieces each peer was asked for, in the order asked.
fn requests(actions: &[MetaAction]) -> Vec<(PeerKey, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            MetaAction::Send {
                peer,
                message: Message::Extended { id, payload },
            } if *id == THEIR_ID => match MetadataMessage::decode(payload) {
                Ok(MetadataMessage::Request { piece }) => Some((*peer, piece)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn disconnects(actions: &[MetaAction]) -> Vec<(PeerKey, MetaDisconnect)> {
    actions
        .iter()
        .filter_map(|a| match a {
            MetaAction::Disconnect { peer, reason } => Some((*peer, reason.clone())),
            _ => None,
        })
        .collect()
}

fn check_info(actions: &[MetaAction]) -> Option<Vec<u8>> {
    actions.iter().find_map(|a| match a {
        MetaAction::CheckInfo { info } => Some(info.clone()),
        _ => None,
    })
}

#[test]
fn our_extension_handshake_goes_to_peers_that_speak_bep_10_only() {
    let mut h = H::new(|_| {});
    let with = h.connect(1, true);
    let without = h.connect(2, false);
    let sent: Vec<PeerKey> = h
        .actions()
        .iter()
        .filter_map(|a| match a {
            MetaAction::Send {
                peer,
                message: Message::Extended { id: 0, payload },
            } => {
                let hs = ExtensionHandshake::decode(payload).unwrap();
                assert_eq!(hs.id_of("ut_metadata"), Some(UT_METADATA_ID));
                Some(*peer)
            }
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![with]);
    assert_ne!(with, without);
}

#[test]
fn the_info_dictionary_is_asked_for_a_window_at_a_time_and_checked_whole() {
    let mut h = H::new(|_| {});
    let size = 40 * METADATA_PIECE - 100;
    let p = h.offering(1, Some(size as u64));
    let asked = requests(&h.actions());
    assert_eq!(
        asked,
        (0..INFO_WINDOW).map(|i| (p, i)).collect::<Vec<_>>(),
        "one window in flight"
    );
    // Out of order: nothing slides until the first missing piece arrives.
    for i in [3, 2, 1] {
        h.data(p, i, size, i as u8);
    }
    assert!(requests(&h.actions()).is_empty());
    h.data(p, 0, size, 0);
    assert_eq!(
        requests(&h.actions()),
        (INFO_WINDOW..INFO_WINDOW + 4)
            .map(|i| (p, i))
            .collect::<Vec<_>>()
    );
    // A piece beyond what was asked is ignored.
    h.data(p, 39, size, 39);
    assert!(h.actions().is_empty());
    for i in 4..40 {
        h.data(p, i, size, i as u8);
    }
    let actions = h.actions();
    let info = check_info(&actions).expect("the whole goes to be checked");
    assert_eq!(info.len(), size);
    let expected: Vec<u8> = (0..40u32)
        .flat_map(|i| vec![i as u8; (size - i as usize * METADATA_PIECE).min(METADATA_PIECE)])
        .collect();
    assert!(info == expected);
    h.core.info_checked(Some(Vec::new()), h.now);
    assert_eq!(h.actions(), vec![MetaAction::Done]);
    assert!(h.core.is_done());
}

#[test]
fn pieces_are_spread_over_peers_and_a_rejecting_peer_is_not_asked_again() {
    let mut h = H::new(|_| {});
    let size = 4 * METADATA_PIECE;
    let a = h.offering(1, Some(size as u64));
    let b = h.offering(2, Some(size as u64));
    let mut asked = requests(&h.actions());
    asked.sort();
    // `a` came first and took the window; `b` had nothing left to take.
    assert_eq!(asked, vec![(a, 0), (a, 1), (a, 2), (a, 3)]);
    let reject = MetadataMessage::Reject { piece: 1 }.encode();
    h.msg(
        a,
        Message::Extended {
            id: UT_METADATA_ID,
            payload: reject.into(),
        },
    );
    let again = requests(&h.actions());
    assert_eq!(again, vec![(b, 0), (b, 1), (b, 2), (b, 3)]);
    // `a` stays connected (it may still have data), but its late answers count for nothing.
    h.data(a, 2, size, 9);
    assert!(h.actions().is_empty());
    for i in 0..4 {
        h.data(b, i, size, 1);
    }
    assert_eq!(check_info(&h.actions()), Some(vec![1; size]));
}

#[test]
fn claimed_sizes_are_capped_and_a_piece_of_the_wrong_size_ends_the_connection() {
    let mut h = H::new(|_| {});
    h.offering(1, Some(MAX_METADATA as u64 + 1));
    h.offering(2, Some(0));
    assert!(requests(&h.actions()).is_empty(), "no usable size yet");
    let size = 2 * METADATA_PIECE;
    let p = h.offering(3, Some(size as u64));
    assert_eq!(requests(&h.actions()), vec![(p, 0), (p, 1)]);
    // The right piece with another total size.
    let m = MetadataMessage::Data {
        piece: 0,
        total_size: size as u64 + 1,
        data: vec![0; METADATA_PIECE],
    };
    h.msg(
        p,
        Message::Extended {
            id: UT_METADATA_ID,
            payload: m.encode().into(),
        },
    );
    assert_eq!(
        disconnects(&h.actions()),
        vec![(p, MetaDisconnect::BadPiece)]
    );
    assert_eq!(h.core.peer_count(), 2);
}

#[test]
fn a_peer_without_ut_metadata_is_kept_for_the_download_with_what_it_said() {
    let mut h = H::new(|_| {});
    let plain = h.connect(1, false);
    let no_meta = h.offering(2, None);
    h.msg(plain, Message::Have(PieceIndex::new(3)));
    h.msg(plain, Message::Have(PieceIndex::new(5)));
    h.msg(no_meta, Message::HaveAll);
    h.msg(no_meta, Message::Unchoke);
    h.msg(plain, Message::Interested);
    h.msg(plain, Message::KeepAlive);
    let actions = h.actions();
    assert!(requests(&actions).is_empty());
    assert!(disconnects(&actions).is_empty());
    assert_eq!(
        h.core.take_carried(plain),
        vec![
            Message::Have(PieceIndex::new(3)),
            Message::Have(PieceIndex::new(5)),
            Message::Interested
        ]
    );
    let carried = h.core.take_carried(no_meta);
    assert!(matches!(carried[0], Message::Extended { id: 0, .. }));
    assert_eq!(&carried[1..], &[Message::HaveAll, Message::Unchoke]);
}

#[test]
fn a_bitfield_replaces_earlier_haves_and_a_chatty_peer_is_dropped() {
    let mut h = H::new(|c| c.max_carried = 8);
    let p = h.connect(1, false);
    for i in 0..5 {
        h.msg(p, Message::Have(PieceIndex::new(i)));
    }
    h.msg(p, Message::Bitfield(vec![0xff].into()));
    h.msg(p, Message::Have(PieceIndex::new(9)));
    assert_eq!(
        h.core.take_carried(p),
        vec![
            Message::Bitfield(vec![0xff].into()),
            Message::Have(PieceIndex::new(9))
        ]
    );
    for i in 0..9 {
        h.msg(p, Message::Have(PieceIndex::new(i)));
    }
    assert_eq!(
        disconnects(&h.actions()),
        vec![(p, MetaDisconnect::TooManyMessages)]
    );
    assert_eq!(h.core.peer_count(), 0);
}

#[test]
fn a_sole_sender_of_metadata_that_fails_the_check_is_banned_and_the_fetch_starts_over() {
    let mut h = H::new(|_| {});
    let size = METADATA_PIECE;
    let liar = h.offering(1, Some(size as u64));
    h.offering(2, None);
    h.actions();
    h.data(liar, 0, size, 0);
    assert!(check_info(&h.actions()).is_some());
    h.core.info_checked(None, h.now);
    let actions = h.actions();
    assert!(actions.contains(&MetaAction::Banned {
        ip: [10, 0, 0, 1].into()
    }));
    assert_eq!(disconnects(&actions), vec![(liar, MetaDisconnect::Banned)]);
    assert!(h.core.is_banned([10, 0, 0, 1].into()));
    // The banned IP cannot come back; an honest peer starts the fetch over.
    let mut theirs = Handshake::new([7; 20].into(), [99; 20].into(), false);
    theirs.reserved = [0; 8];
    let again = h.core.add_peer(
        SocketAddr::from(([10, 0, 0, 1], 7000)),
        &h.ours,
        &theirs,
        h.now,
    );
    assert_eq!(again, Err(Refused::Banned));
    let honest = h.offering(3, Some(size as u64));
    assert_eq!(requests(&h.actions()), vec![(honest, 0)]);
}

#[test]
fn senders_of_a_bad_dictionary_shared_between_two_are_struck_once_each() {
    let mut h = H::new(|_| {});
    let size = 2 * METADATA_PIECE;
    let a = h.offering(1, Some(size as u64));
    let b = h.offering(2, Some(size as u64));
    h.actions();
    // `a` was asked for both pieces; it rejects one, `b` gets it.
    let reject = MetadataMessage::Reject { piece: 1 }.encode();
    h.data(a, 0, size, 0);
    h.msg(
        a,
        Message::Extended {
            id: UT_METADATA_ID,
            payload: reject.into(),
        },
    );
    assert_eq!(requests(&h.actions()), vec![(b, 1)]);
    h.data(b, 1, size, 1);
    assert!(check_info(&h.actions()).is_some());
    h.core.info_checked(None, h.now);
    let actions = h.actions();
    assert!(
        disconnects(&actions).is_empty(),
        "one strike each: {actions:?}"
    );
    // `a` rejected before, so only `b` is asked; it fails alone this time and is banned.
    assert_eq!(requests(&actions), vec![(b, 0), (b, 1)]);
    h.data(b, 0, size, 0);
    h.data(b, 1, size, 1);
    h.actions();
    h.core.info_checked(None, h.now);
    assert_eq!(disconnects(&h.actions()), vec![(b, MetaDisconnect::Banned)]);
}

#[test]
fn a_request_unanswered_past_the_timeout_goes_to_another_peer() {
    let mut h = H::new(|_| {});
    let size = METADATA_PIECE;
    let slow = h.offering(1, Some(size as u64));
    let other = h.offering(2, Some(size as u64));
    assert_eq!(requests(&h.actions()), vec![(slow, 0)]);
    assert_eq!(
        h.core.poll_timeout(),
        Some(h.now + METADATA_REQUEST_TIMEOUT)
    );
    h.advance(METADATA_REQUEST_TIMEOUT - Duration::from_secs(1));
    assert!(h.actions().is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(requests(&h.actions()), vec![(other, 0)]);
}

#[test]
fn piece_layers_are_asked_of_one_peer_at_a_time_and_proven_before_done() {
    let mut h = H::new(|_| {});
    let size = METADATA_PIECE;
    let a = h.offering(1, Some(size as u64));
    let b = h.offering(2, Some(size as u64));
    h.actions();
    h.data(a, 0, size, 0);
    h.actions();
    let range = |index| HashRange {
        pieces_root: [5; 32],
        base_layer: 0,
        index,
        length: 512,
        proof_layers: 3,
    };
    h.core.info_checked(Some(vec![range(0), range(512)]), h.now);
    let hash_requests = |actions: &[MetaAction]| -> Vec<(PeerKey, u32)> {
        actions
            .iter()
            .filter_map(|x| match x {
                MetaAction::Send {
                    peer,
                    message: Message::HashRequest(r),
                } => Some((*peer, r.index)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(hash_requests(&h.actions()), vec![(a, 0), (a, 512)]);
    h.msg(a, Message::HashReject(range(512)));
    assert_eq!(hash_requests(&h.actions()), vec![(b, 512)]);
    h.msg(
        a,
        Message::Hashes {
            range: range(0),
            hashes: vec![[1; 32]; 515],
        },
    );
    let actions = h.actions();
    assert!(matches!(
        actions.as_slice(),
        [MetaAction::CheckHashes { peer, .. }] if *peer == a
    ));
    // A proof that fails drops its sender and goes to the next peer.
    h.core.hashes_checked(a, range(0), false, h.now);
    let actions = h.actions();
    assert_eq!(disconnects(&actions), vec![(a, MetaDisconnect::BadHashes)]);
    assert_eq!(hash_requests(&actions), vec![(b, 0)]);
    for index in [0, 512] {
        h.msg(
            b,
            Message::Hashes {
                range: range(index),
                hashes: vec![[2; 32]; 515],
            },
        );
    }
    assert_eq!(h.actions().len(), 2);
    h.core.hashes_checked(b, range(0), true, h.now);
    assert!(!h.core.is_done());
    h.core.hashes_checked(b, range(512), true, h.now);
    assert_eq!(h.actions(), vec![MetaAction::Done]);
}

#[test]
fn addresses_are_dialled_within_the_limit_and_never_our_own() {
    let mut h = H::new(|c| {
        c.max_peers = 2;
        c.listen = Some(SocketAddr::from(([10, 0, 0, 9], 6881)));
    });
    let addrs: Vec<SocketAddr> = (1..=4)
        .map(|i| SocketAddr::from(([10, 0, 0, i], 6881)))
        .chain([SocketAddr::from(([10, 0, 0, 9], 6881))])
        .collect();
    h.core.add_addresses(addrs.clone(), h.now);
    let dialled = |actions: Vec<MetaAction>| -> Vec<SocketAddr> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                MetaAction::Connect { addr } => Some(addr),
                _ => None,
            })
            .collect()
    };
    assert_eq!(dialled(h.actions()), addrs[..2].to_vec());
    h.core.dial_failed(addrs[0], h.now);
    assert_eq!(dialled(h.actions()), vec![addrs[2]]);
}

mod prop {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Debug, Clone)]
    enum Step {
        /// Peer `0` answers its oldest outstanding request, truthfully or not.
        Answer(usize, bool),
        Reject(usize),
        Close(usize),
        Connect,
        Wait(u64),
        Have(usize, u32),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..4usize, proptest::bool::weighted(0.9)).prop_map(|(p, t)| Step::Answer(p, t)),
            1 => (0..4usize).prop_map(Step::Reject),
            1 => (0..4usize).prop_map(Step::Close),
            1 => Just(Step::Connect),
            1 => (1..30u64).prop_map(Step::Wait),
            1 => (0..4usize, 0..1000u32).prop_map(|(p, i)| Step::Have(p, i)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever peers do: at most a window of distinct pieces is in flight, only pieces of the
        /// dictionary are asked for, what is kept per peer stays under its cap, and nothing is asked
        /// for once the metadata is done.
        #[test]
        fn the_window_and_the_caps_hold_under_any_peer_behaviour(
            pieces in 1..40u32,
            steps in proptest::collection::vec(step(), 1..300),
        ) {
            let size = pieces as usize * METADATA_PIECE - 7;
            let mut h = H::new(|c| c.max_carried = 64);
            let mut peers: Vec<PeerKey> = Vec::new();
            let mut ip = 1u8;
            let mut inflight: BTreeMap<PeerKey, BTreeMap<u32, Instant>> = BTreeMap::new();
            let mut done = false;
            for s in steps {
                match s {
                    Step::Connect => {
                        ip = ip.wrapping_add(1).max(1);
                        if h.core.is_done() || h.core.is_banned([10, 0, 0, ip].into()) {
                            continue;
                        }
                        peers.push(h.offering(ip, Some(size as u64)));
                    }
                    Step::Answer(i, truthful) => {
                        let Some(&p) = peers.get(i) else { continue };
                        let Some((piece, _)) = inflight.get_mut(&p).and_then(|s| s.pop_first())
                        else {
                            continue;
                        };
                        h.data(p, piece, size, if truthful { piece as u8 } else { 0xee });
                    }
                    Step::Reject(i) => {
                        let Some(&p) = peers.get(i) else { continue };
                        let reject = MetadataMessage::Reject { piece: 0 }.encode();
                        h.msg(p, Message::Extended { id: UT_METADATA_ID, payload: reject.into() });
                        inflight.remove(&p);
                    }
                    Step::Close(i) => {
                        if i < peers.len() {
                            let p = peers.remove(i);
                            h.core.closed(p, h.now);
                            inflight.remove(&p);
                        }
                    }
                    Step::Wait(secs) => {
                        h.advance(Duration::from_secs(secs));
                    }
                    Step::Have(i, piece) => {
                        if let Some(&p) = peers.get(i) {
                            h.msg(p, Message::Have(PieceIndex::new(piece)));
                        }
                    }
                }
                // Until the core is quiet: an answer to a check brings actions of its own.
                loop {
                    let actions = h.actions();
                    if actions.is_empty() {
                        break;
                    }
                    for a in actions {
                        match a {
                            MetaAction::Send { peer, message: Message::Extended { id, payload } }
                                if id == THEIR_ID =>
                            {
                                if let Ok(MetadataMessage::Request { piece }) =
                                    MetadataMessage::decode(&payload)
                                {
                                    prop_assert!(!done, "asked for piece {} after done", piece);
                                    prop_assert!(piece < pieces);
                                    inflight.entry(peer).or_default().insert(piece, h.now);
                                }
                            }
                            MetaAction::Disconnect { peer, .. } => {
                                inflight.remove(&peer);
                                peers.retain(|p| *p != peer);
                            }
                            MetaAction::CheckInfo { info } => {
                                prop_assert_eq!(info.len(), size);
                                let good = info
                                    .chunks(METADATA_PIECE)
                                    .enumerate()
                                    .all(|(i, c)| c.iter().all(|b| *b == i as u8));
                                h.core.info_checked(good.then(Vec::new), h.now);
                                inflight.clear();
                            }
                            MetaAction::Done => done = true,
                            _ => {}
                        }
                    }
                }
                // A peer with a request older than the timeout is not asked again and its answers
                // count for nothing.
                let now = h.now;
                inflight.retain(|_, asked| {
                    asked.values().all(|t| now.duration_since(*t) < METADATA_REQUEST_TIMEOUT)
                });
                let distinct: BTreeSet<u32> =
                    inflight.values().flat_map(|a| a.keys()).copied().collect();
                prop_assert!(
                    distinct.len() <= INFO_WINDOW as usize,
                    "{} pieces in flight",
                    distinct.len()
                );
            }
            for p in peers {
                prop_assert!(h.core.take_carried(p).len() <= 64);
            }
        }
    }
}
