//! `TorrentCore`'s policies in virtual time: no sockets, no sleeping. Each test takes `Instant::now()`
//! once and moves time forward by hand.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use torrent_core::{
    Action, AnnounceEvent, Bitfield, CoreConfig, DisconnectReason, PeerEvent, PeerKey, Refused,
    TorrentCore, BLOCK, MAX_PEER_REQUESTS, MAX_REFUSED_REQUESTS,
};
use wire::{
    BlockRef, ExtensionHandshake, Handshake, HolepunchError, HolepunchKind, HolepunchMessage,
    Message, PieceIndex,
};

const PIECE: u32 = 4 * BLOCK;

struct H {
    core: TorrentCore,
    now: Instant,
    ours: Handshake,
    next_id: u8,
}

fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn block(piece: u32, b: u32) -> BlockRef {
    BlockRef {
        index: PieceIndex::new(piece),
        begin: b * BLOCK,
        length: BLOCK,
    }
}

impl H {
    fn new(pieces: u32, seeding: bool, change: impl FnOnce(&mut CoreConfig)) -> H {
        let now = Instant::now();
        let mut config = CoreConfig::new(vec![PIECE; pieces as usize], 5);
        if seeding {
            config.have = Bitfield::full(pieces);
        }
        change(&mut config);
        H {
            core: TorrentCore::new(config, now),
            now,
            ours: Handshake::new(
                ids::InfoHash::new([1; 20]),
                ids::PeerId::new([0xAA; 20]),
                false,
            ),
            next_id: 1,
        }
    }

    fn theirs(&mut self, fast: bool) -> Handshake {
        self.next_id += 1;
        let mut hs = Handshake::new(
            ids::InfoHash::new([1; 20]),
            ids::PeerId::new([self.next_id; 20]),
            false,
        );
        if !fast {
            hs.reserved[7] &= !0x04;
        }
        hs
    }

    fn try_add(&mut self, ip: [u8; 4], port: u16) -> Result<PeerKey, Refused> {
        let theirs = self.theirs(true);
        let ours = self.ours;
        self.core
            .add_peer(addr(ip, port), true, &ours, &theirs, self.now)
    }

    fn add(&mut self, ip: [u8; 4], port: u16) -> PeerKey {
        self.try_add(ip, port).expect("room")
    }

    fn add_slow(&mut self, ip: [u8; 4], port: u16) -> PeerKey {
        let theirs = self.theirs(false);
        let ours = self.ours;
        self.core
            .add_peer(addr(ip, port), true, &ours, &theirs, self.now)
            .expect("room")
    }

    fn msg(&mut self, k: PeerKey, m: Message) {
        self.core.handle_event(k, PeerEvent::Message(m), self.now);
    }

    fn event(&mut self, k: PeerKey, e: PeerEvent) {
        self.core.handle_event(k, e, self.now);
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.core.poll_action()).collect()
    }

    /// Moves time forward by `d`, running every timeout due on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(next) = self.core.poll_timeout().filter(|&n| n <= end) {
            self.now = next;
            self.core.handle_timeout(next);
        }
        self.now = end;
    }

    fn unchoked(&self, k: PeerKey) -> bool {
        self.core.peer(k).expect("known").unchoked
    }
}

fn sent(actions: &[Action], to: PeerKey) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { peer, message } if *peer == to => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn disconnected(actions: &[Action]) -> Vec<(PeerKey, DisconnectReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Disconnect { peer, reason } => Some((*peer, reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_interested_peer_takes_a_free_slot_at_once_and_a_round_keeps_the_fastest() {
    // Suggestions (tested below) left out: this test reads the exact messages.
    let mut h = H::new(8, true, |c| {
        c.upload_slots = 2;
        c.suggest = 0;
    });
    let keys: Vec<PeerKey> = (0..5).map(|i| h.add([10, 0, 0, i + 1], 1000)).collect();
    h.drain();
    for &k in &keys {
        h.msg(k, Message::Interested);
    }
    let actions = h.drain();
    // Two regular slots and the optimistic one fill at once, without waiting for a round.
    let unchoked: Vec<PeerKey> = keys.iter().copied().filter(|&k| h.unchoked(k)).collect();
    assert_eq!(unchoked.len(), 3);
    for &k in &unchoked {
        assert_eq!(sent(&actions, k), vec![Message::Unchoke]);
    }
    // The unchoked peers take different amounts: 1, 2 and 3 blocks a second.
    for (n, &k) in unchoked.iter().enumerate() {
        for b in 0..=n as u32 {
            h.msg(k, Message::Request(block(0, b)));
            assert!(h.core.commit_upload(k, block(0, b), h.now));
        }
    }
    h.drain();
    h.advance(Duration::from_secs(10));
    let actions = h.drain();
    assert_eq!(h.core.stats().choke_rounds, 1);
    // Seeding: by upload rate. The two fastest hold the regular slots; the optimistic slot goes to one
    // of the others; the slowest of the three was choked unless it drew the optimistic slot.
    let fastest = [unchoked[2], unchoked[1]];
    for k in fastest {
        let p = h.core.peer(k).expect("known");
        assert!(p.unchoked && !p.optimistic, "{p:?}");
    }
    let rest: Vec<PeerKey> = keys
        .iter()
        .copied()
        .filter(|k| !fastest.contains(k))
        .collect();
    let optimistic: Vec<PeerKey> = rest.iter().copied().filter(|&k| h.unchoked(k)).collect();
    assert_eq!(optimistic.len(), 1);
    assert!(h.core.peer(optimistic[0]).expect("known").optimistic);
    for k in rest.iter().filter(|k| !optimistic.contains(k)) {
        assert!(!h.unchoked(*k));
    }
    if !optimistic.contains(&unchoked[0]) {
        assert_eq!(sent(&actions, unchoked[0]), vec![Message::Choke]);
    }
    let rate = h.core.peer(unchoked[2]).expect("known").rate_up;
    assert!((rate - f64::from(3 * BLOCK) / 10.0).abs() < 1.0, "{rate}");
}

#[test]
fn the_optimistic_unchoke_rotates_over_every_choked_interested_peer() {
    let mut h = H::new(8, true, |c| c.upload_slots = 1);
    let keys: Vec<PeerKey> = (0..10).map(|i| h.add([10, 0, 1, i + 1], 1000)).collect();
    for &k in &keys {
        h.msg(k, Message::Interested);
    }
    let mut picked = HashSet::new();
    for _ in 0..100 {
        h.advance(Duration::from_secs(30));
        for &k in &keys {
            h.msg(k, Message::KeepAlive);
        }
        let optimistic: Vec<PeerKey> = keys
            .iter()
            .copied()
            .filter(|&k| h.core.peer(k).expect("known").optimistic)
            .collect();
        assert_eq!(optimistic.len(), 1, "one optimistic slot");
        picked.insert(optimistic[0]);
        assert_eq!(
            keys.iter().filter(|&&k| h.unchoked(k)).count(),
            2,
            "one regular slot, one optimistic"
        );
    }
    // With every rate at zero the regular slot goes to the lowest key; all nine others must have had
    // a turn (a fixed pick would alternate between two at most).
    let others: HashSet<PeerKey> = keys[1..].iter().copied().collect();
    assert_eq!(picked, others);
}

#[test]
fn a_freed_slot_goes_to_a_newcomer_before_reconnections_from_an_ip_that_stalled_slots() {
    let mut h = H::new(8, true, |c| {
        c.upload_slots = 1;
        c.max_peers = 100;
    });
    let hostile = [127, 0, 0, 9];
    // Two slots (one regular, one optimistic): two peers from the hostile IP take them and stall.
    for i in 0..2 {
        let k = h.add(hostile, 1000 + i);
        h.msg(k, Message::Interested);
        assert!(h.unchoked(k), "a free slot is taken at once");
        h.event(k, PeerEvent::WriteStalled(true));
        h.event(k, PeerEvent::Closed);
    }
    // They come back on new connections (no turns yet), with many more, and the honest peer last.
    let again: Vec<PeerKey> = (0..60)
        .map(|i| {
            let k = h.add(hostile, 2000 + i);
            h.msg(k, Message::Interested);
            k
        })
        .collect();
    let honest = h.add([127, 0, 0, 3], 3000);
    h.msg(honest, Message::Interested);
    // Every reconnection carries its IP's record: the honest newcomer, with none, takes a slot from
    // them at once.
    assert!(again
        .iter()
        .all(|&k| h.core.peer(k).expect("known").misuse == 2));
    assert!(h.unchoked(honest), "the honest peer holds a slot");
}

#[test]
fn a_stalled_peer_loses_its_slot_and_is_choked_after_a_while() {
    let mut h = H::new(8, true, |c| c.upload_slots = 0);
    let a = h.add([10, 0, 2, 1], 1);
    h.msg(a, Message::Interested);
    assert!(h.unchoked(a));
    let b = h.add([10, 0, 2, 2], 1);
    h.msg(b, Message::Interested);
    assert!(!h.unchoked(b), "one slot (the optimistic one)");
    h.drain();
    h.event(a, PeerEvent::WriteStalled(true));
    // The stalled peer holds no slot: the waiting peer gets one at once, the stalled one is still
    // unchoked (its socket may drain) until it has been stalled for `stall_choke`.
    assert!(h.unchoked(b));
    assert!(h.unchoked(a));
    h.advance(Duration::from_secs(9));
    assert!(h.unchoked(b));
    h.advance(Duration::from_secs(2));
    assert!(!h.unchoked(a), "choked after 10 s stalled");
    assert!(h.core.peer(a).expect("known").misuse >= 1);
}

#[test]
fn an_unchoked_peer_that_asks_for_nothing_gives_its_slot_away() {
    let mut h = H::new(8, true, |c| c.upload_slots = 0);
    let a = h.add([10, 0, 3, 1], 1);
    h.msg(a, Message::Interested);
    let b = h.add([10, 0, 3, 2], 1);
    h.msg(b, Message::Interested);
    assert!(h.unchoked(a) && !h.unchoked(b));
    // Past the idle time the slot check hands the slot over (the holder stays unchoked until a round).
    h.advance(Duration::from_millis(600));
    assert!(h.unchoked(b));
}

#[test]
fn a_full_peer_table_drops_the_peer_with_the_worst_record_for_a_newcomer() {
    let mut h = H::new(8, true, |c| c.max_peers = 3);
    let clean = h.add([127, 0, 0, 5], 1);
    let flooder = h.add_slow([127, 0, 0, 9], 1);
    h.add([127, 0, 0, 6], 1);
    h.drain();
    // Full, nobody misbehaved: a newcomer is refused, nobody is dropped.
    assert_eq!(h.try_add([127, 0, 0, 7], 1), Err(Refused::Full));
    // The flooder asks for blocks while choked until it is dropped for flooding.
    for i in 0..=MAX_REFUSED_REQUESTS as u32 {
        h.msg(flooder, Message::Request(block(i % 8, 0)));
    }
    assert_eq!(
        disconnected(&h.drain()),
        vec![(
            flooder,
            DisconnectReason::Flooding(MAX_REFUSED_REQUESTS + 1)
        )]
    );
    // It reconnects with its record; a full table drops it for an honest newcomer.
    let again = h.add_slow([127, 0, 0, 9], 2);
    assert_eq!(h.try_add([127, 0, 0, 9], 3), Err(Refused::Full));
    let newcomer = h.add([127, 0, 0, 7], 2);
    assert_eq!(
        disconnected(&h.drain()),
        vec![(again, DisconnectReason::Evicted)]
    );
    assert!(h.core.peer(clean).is_some() && h.core.peer(newcomer).is_some());
    assert_eq!(h.core.peer_count(), 3);
}

/// A downloading core with peers that have every piece and unchoke us.
fn downloading(pieces: u32, peers: &[[u8; 4]]) -> (H, Vec<PeerKey>) {
    let mut h = H::new(pieces, false, |_| {});
    let keys: Vec<PeerKey> = peers
        .iter()
        .map(|ip| {
            let k = h.add(*ip, 6881);
            h.msg(k, Message::HaveAll);
            k
        })
        .collect();
    (h, keys)
}

fn requests(actions: &[Action], to: PeerKey) -> Vec<BlockRef> {
    sent(actions, to)
        .into_iter()
        .filter_map(|m| match m {
            Message::Request(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn piece_msg(b: BlockRef, byte: u8) -> Message {
    Message::Piece {
        index: b.index,
        begin: b.begin,
        data: vec![byte; b.length as usize].into(),
    }
}

#[test]
fn contributors_of_a_bad_piece_get_strikes_and_a_sole_contributor_is_banned_at_once() {
    let (mut h, keys) = downloading(1, &[[10, 1, 0, 1], [10, 1, 0, 2]]);
    let (a, b) = (keys[0], keys[1]);
    h.drain();
    // Peer a is unchoked first and gets the first blocks, peer b the rest.
    h.msg(a, Message::Unchoke);
    let to_a = requests(&h.drain(), a);
    assert_eq!(to_a.len(), 4, "all four blocks of the piece");
    // a delivers two blocks, then chokes us (fast: the requests stay until rejected); it rejects
    // the other two, which go to b.
    for blk in &to_a[..2] {
        h.msg(a, piece_msg(*blk, 1));
    }
    for blk in &to_a[2..] {
        h.msg(a, Message::Reject(*blk));
    }
    h.msg(a, Message::Choke);
    h.drain();
    h.msg(b, Message::Unchoke);
    let to_b = requests(&h.drain(), b);
    assert_eq!(to_b, to_a[2..].to_vec());
    for blk in &to_b {
        h.msg(b, piece_msg(*blk, 2));
    }
    let actions = h.drain();
    assert!(actions.contains(&Action::VerifyPiece {
        piece: PieceIndex::new(0)
    }));
    h.core.piece_checked(PieceIndex::new(0), false, h.now);
    // One strike each: nobody is banned yet.
    let actions = h.drain();
    assert!(disconnected(&actions).is_empty());
    assert_eq!(h.core.banned_count(), 0);
    assert_eq!(h.core.stats().wasted, u64::from(PIECE));
    // Now b sends the whole piece alone, bad again: two strikes, banned and dropped at once.
    let to_b = requests(&actions, b);
    assert_eq!(to_b.len(), 4);
    for blk in &to_b {
        h.msg(b, piece_msg(*blk, 3));
    }
    h.drain();
    h.core.piece_checked(PieceIndex::new(0), false, h.now);
    assert_eq!(
        disconnected(&h.drain()),
        vec![(b, DisconnectReason::Banned)]
    );
    assert!(h.core.is_banned("10.1.0.2".parse().expect("ip")));
    assert!(!h.core.is_banned("10.1.0.1".parse().expect("ip")));
    // A banned IP is neither accepted nor dialled.
    assert_eq!(h.try_add([10, 1, 0, 2], 7), Err(Refused::Banned));
    h.core.add_addresses([addr([10, 1, 0, 2], 9)], h.now);
    assert_eq!(h.core.known().count(), 0);
}

#[test]
fn a_bad_piece_explained_by_a_banned_peer_strikes_nobody_else() {
    let (mut h, keys) = downloading(2, &[[10, 2, 0, 1], [10, 2, 0, 2]]);
    let (a, b) = (keys[0], keys[1]);
    h.core.set_piece_priority(PieceIndex::new(1), 0);
    h.drain();
    h.msg(a, Message::Unchoke);
    let to_a = requests(&h.drain(), a);
    h.msg(a, piece_msg(to_a[0], 1));
    for blk in &to_a[1..] {
        h.msg(a, Message::Reject(*blk));
    }
    h.msg(a, Message::Choke);
    h.msg(b, Message::Unchoke);
    let to_b = requests(&h.drain(), b);
    for blk in &to_b {
        h.msg(b, piece_msg(*blk, 2));
    }
    h.drain();
    h.core.ban("10.2.0.1".parse().expect("ip"));
    h.core.piece_checked(PieceIndex::new(0), false, h.now);
    assert_eq!(h.core.banned_count(), 1, "b is not struck for a's blocks");
    assert!(h.core.peer(b).is_some());
}

#[test]
fn endgame_doubles_the_last_requests_and_cancels_the_copy_that_lost() {
    let (mut h, keys) = downloading(1, &[[10, 3, 0, 1], [10, 3, 0, 2]]);
    let (a, b) = (keys[0], keys[1]);
    h.drain();
    h.msg(a, Message::Unchoke);
    let to_a = requests(&h.drain(), a);
    assert_eq!(to_a.len(), 4);
    // Nothing left to start: b, with nothing in flight, gets one of a's blocks (endgame), and the
    // next each time its own arrives, as libtorrent does (not a copy of a's whole queue).
    h.msg(b, Message::Unchoke);
    let to_b = requests(&h.drain(), b);
    assert_eq!(to_b, to_a[..1]);
    // b delivers it: a's request for it is cancelled, and b asks for the next.
    h.msg(b, piece_msg(to_b[0], 7));
    let actions = h.drain();
    assert_eq!(sent(&actions, a), vec![Message::Cancel(to_a[0])]);
    assert_eq!(requests(&actions, b), to_a[1..2]);
    assert_eq!(h.core.peer(a).expect("known").outstanding, 3);
    // A late copy from a is not taken twice.
    h.msg(a, piece_msg(to_a[0], 7));
    let stored = h
        .drain()
        .iter()
        .filter(|a| matches!(a, Action::StoreBlock { .. }))
        .count();
    assert_eq!(stored, 0);
    assert_eq!(h.core.stats().downloaded, u64::from(BLOCK));
}

#[test]
fn a_peer_that_sits_on_our_requests_is_snubbed_and_its_blocks_go_elsewhere() {
    let (mut h, keys) = downloading(64, &[[10, 4, 0, 1], [10, 4, 0, 2]]);
    let (a, b) = (keys[0], keys[1]);
    h.drain();
    h.msg(a, Message::Unchoke);
    let to_a = requests(&h.drain(), a);
    assert_eq!(to_a.len(), 64, "the initial queue");
    // a keeps sending keep-alives (so it is not idle) but no block.
    for _ in 0..31 {
        h.advance(Duration::from_secs(1));
        h.msg(a, Message::KeepAlive);
    }
    let p = h.core.peer(a).expect("known");
    assert!(p.snubbed, "{p:?}");
    let actions = h.drain();
    assert_eq!(requests(&actions, a).len(), 1, "one request at a time");
    // What a held is asked of b first (b's queue is at the floor: its rate is not known yet).
    h.msg(b, Message::Unchoke);
    let held: BTreeSet<(u32, u32)> = to_a.iter().map(|b| (b.index.get(), b.begin)).collect();
    let to_b = requests(&h.drain(), b);
    assert_eq!(to_b.len(), 16);
    assert!(to_b
        .iter()
        .all(|blk| held.contains(&(blk.index.get(), blk.begin))));
}

#[test]
fn the_request_queue_follows_the_peers_rate() {
    let (mut h, keys) = downloading(400, &[[10, 5, 0, 1]]);
    let a = keys[0];
    h.drain();
    h.msg(a, Message::Unchoke);
    let mut outstanding: Vec<BlockRef> = requests(&h.drain(), a);
    // 200 blocks in the second: the queue grows to two seconds of that, 400.
    for _ in 0..200 {
        let blk = outstanding.remove(0);
        h.msg(a, piece_msg(blk, 0));
        outstanding.extend(requests(&h.drain(), a));
    }
    h.advance(Duration::from_secs(1));
    assert_eq!(h.core.peer(a).expect("known").queue_target, 400);
    // Nothing the next second: back to the floor.
    h.advance(Duration::from_secs(1));
    assert_eq!(h.core.peer(a).expect("known").queue_target, 16);
}

#[test]
fn requests_past_the_cap_are_rejected_under_bep_6_and_choke_the_peer_without_it() {
    let mut h = H::new(200, true, |c| c.suggest = 0);
    let fast = h.add([10, 6, 0, 1], 1);
    h.msg(fast, Message::Interested);
    h.drain();
    let all: Vec<BlockRef> = (0..MAX_PEER_REQUESTS as u32 + 1)
        .map(|i| block(i / 4, i % 4))
        .collect();
    for b in &all {
        h.msg(fast, Message::Request(*b));
    }
    let actions = h.drain();
    let reads = actions
        .iter()
        .filter(|a| matches!(a, Action::ReadBlock { .. }))
        .count();
    assert_eq!(reads, MAX_PEER_REQUESTS);
    assert_eq!(sent(&actions, fast), vec![Message::Reject(all[500])]);
    assert!(h.unchoked(fast));

    // Bytes count too: 8 MiB of 32 KiB requests is 256 of them.
    let mut h = H::new(200, true, |c| c.suggest = 0);
    let big = h.add([10, 6, 0, 3], 1);
    h.msg(big, Message::Interested);
    h.drain();
    for i in 0..257 {
        let b = BlockRef {
            index: PieceIndex::new(i / 2),
            begin: (i % 2) * 2 * BLOCK,
            length: 2 * BLOCK,
        };
        h.msg(big, Message::Request(b));
    }
    let actions = h.drain();
    assert_eq!(h.core.peer(big).expect("known").uploads_pending, 256);
    assert_eq!(sent(&actions, big).len(), 1, "the 257th is rejected");

    let slow = h.add_slow([10, 6, 0, 2], 1);
    h.msg(slow, Message::Interested);
    h.drain();
    assert!(h.unchoked(slow));
    for b in &all {
        h.msg(slow, Message::Request(*b));
    }
    let actions = h.drain();
    // No reject without the fast extension: the choke voids every pending request.
    // (With slots free, the next free-slot pass may unchoke it again: its old requests stay void.)
    let to_slow = sent(&actions, slow);
    assert_eq!(to_slow.first(), Some(&Message::Choke), "{to_slow:?}");
    assert!(!to_slow.iter().any(|m| matches!(m, Message::Reject(_))));
    let cancelled = actions
        .iter()
        .filter(|a| matches!(a, Action::CancelRead { peer, .. } if *peer == slow))
        .count();
    assert_eq!(cancelled, MAX_PEER_REQUESTS);
    assert_eq!(h.core.peer(slow).expect("known").uploads_pending, 0);
    assert!(!h.unchoked(slow), "not unchoked again by the same stroke");
}

#[test]
fn a_peer_that_keeps_asking_while_choked_is_dropped_sooner_with_misuse_on_record() {
    let mut h = H::new(8, true, |c| c.upload_slots = 0);
    let holder = h.add([10, 7, 0, 9], 1);
    h.msg(holder, Message::Interested);
    let k = h.add([10, 7, 0, 1], 1);
    h.drain();
    for i in 0..MAX_REFUSED_REQUESTS {
        h.msg(k, Message::Request(block(0, (i % 4) as u32)));
    }
    let actions = h.drain();
    assert_eq!(
        sent(&actions, k).len(),
        MAX_REFUSED_REQUESTS,
        "each rejected"
    );
    assert!(disconnected(&actions).is_empty());
    h.msg(k, Message::Request(block(0, 0)));
    assert_eq!(
        disconnected(&h.drain()),
        vec![(k, DisconnectReason::Flooding(MAX_REFUSED_REQUESTS + 1))]
    );
    // Back with one misuse on record: half as many.
    let k = h.add([10, 7, 0, 1], 2);
    h.drain();
    for _ in 0..=MAX_REFUSED_REQUESTS / 2 {
        h.msg(k, Message::Request(block(0, 0)));
    }
    assert_eq!(
        disconnected(&h.drain()),
        vec![(k, DisconnectReason::Flooding(MAX_REFUSED_REQUESTS / 2 + 1))]
    );
    // Two misuses on record fade to one after a half-life, to none after two: the full allowance.
    h.advance(h.core.config().limits.misuse_half_life * 2 + Duration::from_secs(2));
    let k = h.add([10, 7, 0, 1], 3);
    h.drain();
    for i in 0..MAX_REFUSED_REQUESTS {
        h.msg(k, Message::Request(block(0, (i % 4) as u32)));
    }
    assert!(disconnected(&h.drain()).is_empty(), "misuse forgotten");
}

/// With misuse on record and no peer, the core wakes for the fade when its tick can run it: a fade
/// due while the tick was not (the last peer left less than a second before it) made `poll_timeout`
/// name the same past instant again and again.
#[test]
fn a_misuse_fade_with_no_peer_connected_does_not_wake_the_core_in_a_loop() {
    let mut h = H::new(8, true, |c| c.upload_slots = 0);
    h.drain();
    assert_eq!(
        h.core.config().limits.misuse_half_life,
        Duration::from_secs(900)
    );
    // The first fade is due 900 s from the start; the ticks run at x.5 s, from the first peer's arrival.
    h.advance(Duration::from_millis(500));
    let stay = h.add([10, 7, 1, 9], 1);
    let k = h.add([10, 7, 1, 1], 1);
    for i in 0..=MAX_REFUSED_REQUESTS {
        h.msg(k, Message::Request(block(0, (i % 4) as u32)));
    }
    assert_eq!(disconnected(&h.drain()).len(), 1, "the flooder goes");
    for _ in 0..14 {
        h.advance(Duration::from_secs(60));
        h.msg(stay, Message::KeepAlive);
    }
    // 899.8 s: the last peer leaves between the tick at 899.5 and the fade at 900.
    h.advance(Duration::from_millis(59_300));
    h.event(stay, PeerEvent::Closed);
    h.drain();
    let mut last = h.now;
    let mut woken = 0;
    while let Some(due) = h.core.poll_timeout() {
        assert!(due > last, "woken again at the same instant");
        woken += 1;
        assert!(woken < 4, "still waking");
        last = due;
        h.now = due;
        h.core.handle_timeout(due);
        h.drain();
    }
    assert_eq!(woken, 1, "one wake-up fades the record");
}

#[test]
fn a_cancel_takes_a_request_back_once_and_a_choke_rejects_the_rest() {
    let mut h = H::new(8, true, |_| {});
    let k = h.add([10, 8, 0, 1], 1);
    h.msg(k, Message::Interested);
    h.drain();
    for b in 0..3 {
        h.msg(k, Message::Request(block(0, b)));
    }
    h.drain();
    h.msg(k, Message::Cancel(block(0, 0)));
    let actions = h.drain();
    assert_eq!(sent(&actions, k), vec![Message::Reject(block(0, 0))]);
    assert!(
        !h.core.commit_upload(k, block(0, 0), h.now),
        "no piece after the reject"
    );
    assert!(h.core.commit_upload(k, block(0, 1), h.now));
    // Too late once the piece is committed: no reject.
    h.msg(k, Message::Cancel(block(0, 1)));
    assert!(sent(&h.drain(), k).is_empty());
    assert_eq!(h.core.stats().uploaded, u64::from(BLOCK));
}

fn extension_handshake(pex: bool, port: u16) -> Message {
    extension_handshake_with(pex, false, port)
}

/// Ours: `ut_pex` under 9, `ut_holepunch` under 11.
fn extension_handshake_with(pex: bool, holepunch: bool, port: u16) -> Message {
    let mut extensions = std::collections::BTreeMap::new();
    if pex {
        extensions.insert("ut_pex".to_string(), 9u8);
    }
    if holepunch {
        extensions.insert("ut_holepunch".to_string(), 11u8);
    }
    let hs = ExtensionHandshake {
        extensions,
        listen_port: Some(port),
        ..Default::default()
    };
    Message::Extended {
        id: 0,
        payload: hs.encode().into(),
    }
}

fn pex_sent(actions: &[Action], to: PeerKey) -> Vec<wire::PexMessage> {
    sent(actions, to)
        .into_iter()
        .filter_map(|m| match m {
            Message::Extended { id: 9, payload } => wire::PexMessage::decode(&payload).ok(),
            _ => None,
        })
        .collect()
}

#[test]
fn peer_exchange_goes_two_seconds_after_the_handshake_then_every_minute() {
    let mut h = H::new(8, true, |c| c.max_peers = 100);
    let k = h.add([10, 9, 0, 1], 1);
    // Off the core's one-second tick, so an exchange sent at the next tick would be late.
    h.advance(Duration::from_millis(300));
    h.msg(k, extension_handshake(true, 7000));
    let others: Vec<PeerKey> = (0..60)
        .map(|i| {
            let o = h.add([10, 9, 1, i], 1);
            h.msg(o, extension_handshake(false, 8000 + u16::from(i)));
            o
        })
        .collect();
    h.drain();
    h.advance(Duration::from_millis(1999));
    assert!(pex_sent(&h.drain(), k).is_empty(), "not before 2 s");
    // At 2 s exactly, not at the next per-peer tick.
    h.advance(Duration::from_millis(1));
    let first = pex_sent(&h.drain(), k);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].added.len(), 50, "at most 50 a message");
    h.advance(Duration::from_secs(58));
    assert!(pex_sent(&h.drain(), k).is_empty(), "not before a minute");
    // Two peers leave; the next exchange names them and the ten not yet told.
    h.event(others[0], PeerEvent::Closed);
    h.event(others[59], PeerEvent::Closed);
    h.advance(Duration::from_secs(3));
    let second = pex_sent(&h.drain(), k);
    assert_eq!(second.len(), 1);
    let told: usize = first[0].added.len() + second[0].added.len() - second[0].dropped.len();
    assert_eq!(told, 58);
    assert_eq!(h.core.stats().pex_sent, 2);
}

#[test]
fn peer_exchange_from_a_peer_is_taken_at_most_every_45_seconds_and_50_at_a_time() {
    let mut h = H::new(8, false, |c| c.max_peers = 2);
    let k = h.add([10, 10, 0, 1], 1);
    h.msg(k, extension_handshake(true, 7000));
    h.drain();
    let pex = |from: u8| {
        let message = wire::PexMessage {
            added: (0..50).map(|i| addr([10, 11, from, i], 6881)).collect(),
            ..Default::default()
        };
        Message::Extended {
            id: torrent_core::UT_PEX_ID,
            payload: message.encode().into(),
        }
    };
    h.msg(k, pex(1));
    let dialled = h
        .drain()
        .iter()
        .filter(|a| matches!(a, Action::Connect { .. }))
        .count();
    assert_eq!(dialled, 1, "within the connection limit");
    assert_eq!(h.core.known().count(), 49);
    h.advance(Duration::from_secs(10));
    h.msg(k, pex(2));
    assert_eq!(h.core.known().count(), 49, "too soon: ignored");
    h.advance(Duration::from_secs(36));
    h.msg(k, pex(3));
    assert_eq!(h.core.known().count(), 99);
}

#[test]
fn the_queue_of_addresses_to_dial_is_bounded_and_keeps_the_newest() {
    let mut h = H::new(8, false, |c| c.max_peers = 0);
    let a = |i: u32| addr([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881);
    h.core.add_addresses((0..5000).map(a), h.now);
    h.core.add_addresses((4990..5000).map(a), h.now);
    let known: Vec<SocketAddr> = h.core.known().copied().collect();
    assert_eq!(known.len(), torrent_core::MAX_KNOWN);
    assert_eq!(known.last(), Some(&a(4999)));
    assert_eq!(
        known.first(),
        Some(&a(5000 - torrent_core::MAX_KNOWN as u32))
    );
}

#[test]
fn announces_start_then_follow_the_interval_and_completion() {
    let mut h = H::new(1, false, |c| c.trackers = true);
    h.advance(Duration::ZERO);
    let announce = |actions: &[Action]| -> Vec<AnnounceEvent> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Announce { event } => Some(*event),
                _ => None,
            })
            .collect()
    };
    assert_eq!(announce(&h.drain()), vec![AnnounceEvent::Started]);
    // None while one is under way, however long it takes.
    h.advance(Duration::from_secs(120));
    assert!(announce(&h.drain()).is_empty());
    h.core.announced(Some(Duration::from_secs(1800)), h.now);
    h.advance(Duration::from_secs(1799));
    assert!(announce(&h.drain()).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(announce(&h.drain()), vec![AnnounceEvent::None]);
    // A failed announce is retried after a minute.
    h.core.announced(None, h.now);
    h.advance(Duration::from_secs(60));
    assert_eq!(announce(&h.drain()), vec![AnnounceEvent::None]);
    h.core.announced(Some(Duration::from_secs(1800)), h.now);
    // Completion is announced at once.
    let k = h.add([10, 12, 0, 1], 1);
    h.msg(k, Message::HaveAll);
    h.msg(k, Message::Unchoke);
    let reqs = requests(&h.drain(), k);
    for b in reqs {
        h.msg(k, piece_msg(b, 0));
    }
    h.drain();
    h.core.piece_checked(PieceIndex::new(0), true, h.now);
    let actions = h.drain();
    assert!(actions.contains(&Action::Completed));
    h.advance(Duration::from_millis(1));
    assert_eq!(announce(&h.drain()), vec![AnnounceEvent::Completed]);
    h.core.announced(Some(Duration::from_secs(1800)), h.now);
    h.core.stop(h.now);
    assert_eq!(announce(&h.drain()), vec![AnnounceEvent::Stopped]);
}

#[test]
fn a_peer_that_sends_nothing_for_three_minutes_is_dropped_and_keepalives_go_out() {
    let mut h = H::new(8, true, |_| {});
    let k = h.add([10, 13, 0, 1], 1);
    h.drain();
    h.advance(Duration::from_secs(91));
    assert!(sent(&h.drain(), k).contains(&Message::KeepAlive));
    h.advance(Duration::from_secs(90));
    assert_eq!(disconnected(&h.drain()), vec![(k, DisconnectReason::Idle)]);
}

/// A torrent with no peer (most of a daemon's seeds) has no timeout to wake for; the first peer to
/// arrive brings the ticks back, and an hour of sleep does not count in its rate: its queue is sized
/// from what it sends after it arrived.
#[test]
fn with_no_peer_nothing_wakes_the_torrent_and_the_first_peer_brings_the_ticks_back() {
    let mut h = H::new(64, false, |_| {});
    h.drain();
    assert_eq!(
        h.core.poll_timeout(),
        None,
        "an idle torrent wakes for nothing"
    );
    h.advance(Duration::from_secs(3600));
    let k = h.add([10, 13, 0, 2], 1);
    h.msg(k, Message::HaveAll);
    h.msg(k, Message::Unchoke);
    let due = h.core.poll_timeout().expect("a peer has timers");
    assert!(due <= h.now + Duration::from_secs(1));
    let target = |h: &H| h.core.peer(k).expect("known").queue_target;
    let before = target(&h);
    // Every request answered at once for a while: a rate measured over the hour would leave the
    // queue where it was.
    let mut answered = 0;
    while answered < 200 {
        let asked = requests(&h.drain(), k);
        if asked.is_empty() {
            break;
        }
        for b in asked {
            h.msg(k, piece_msg(b, 0));
            answered += 1;
        }
    }
    h.advance(Duration::from_secs(1));
    assert!(
        target(&h) > before,
        "queue target {} after {answered} blocks in a second (was {before})",
        target(&h)
    );
}

/// A dial the I/O layer deferred (the daemon's shared connection budget was spent on another torrent)
/// is tried again at the next tick even with no peer connected: the idle core's sleep does not strand
/// it (daemon::the_global_peer_limit_holds_across_torrents waited for ever).
#[test]
fn a_deferred_dial_is_tried_again_with_no_peer_connected() {
    let mut h = H::new(8, false, |_| {});
    h.drain();
    let target = addr([10, 13, 0, 3], 6881);
    h.core.add_addresses([target], h.now);
    assert_eq!(dials(&h.drain()), vec![target]);
    h.core.dial_deferred(target, h.now);
    assert!(dials(&h.drain()).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(
        dials(&h.drain()),
        vec![target],
        "the deferred dial is tried again"
    );
    // Dialled and not deferred again: nothing left to wake for.
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn a_protocol_violation_ends_the_connection() {
    let mut h = H::new(8, true, |_| {});
    let k = h.add([10, 14, 0, 1], 1);
    h.drain();
    h.msg(k, Message::Have(PieceIndex::new(99)));
    assert!(matches!(
        disconnected(&h.drain())[..],
        [(p, DisconnectReason::Protocol(_))] if p == k
    ));
    assert_eq!(h.core.peer_count(), 0);
}

#[test]
fn haves_in_a_batch_do_what_the_same_haves_one_by_one_do() {
    // Two alike cores, each with a peer that unchokes it and one that does not; one core is fed the
    // peers' `Have`s one by one, the other in batches (a repeat, an out-of-range piece that ends the
    // connection, and pieces after it that must be ignored).
    let run = |batched: bool| {
        let mut h = H::new(16, false, |_| {});
        let giver = h.add([10, 15, 0, 1], 1);
        let other = h.add([10, 15, 0, 2], 1);
        h.msg(giver, Message::Unchoke);
        let mut actions = h.drain();
        let batches: [(PeerKey, Vec<u32>); 4] = [
            (giver, vec![3, 1, 3, 7]),
            (other, vec![3, 9]),
            (giver, vec![2]),
            (other, vec![4, 99, 5]),
        ];
        for (k, pieces) in batches {
            let pieces: Vec<PieceIndex> = pieces.into_iter().map(PieceIndex::new).collect();
            if batched {
                h.core.handle_haves(k, &pieces, h.now);
            } else {
                for p in pieces {
                    h.msg(k, Message::Have(p));
                }
            }
            actions.extend(h.drain());
            h.advance(Duration::from_millis(5));
        }
        (actions, h.core.peer(giver), h.core.peer(other))
    };
    let (one_by_one, batched) = (run(false), run(true));
    assert!(
        requests(&one_by_one.0, PeerKey(0)).len() > 1,
        "it asked the giver"
    );
    assert!(one_by_one.2.is_none(), "the bad index ended the connection");
    assert_eq!(batched, one_by_one);
}

#[test]
fn client_names_are_cleaned_and_capped() {
    use torrent_core::{client_name, MAX_CLIENT_NAME};
    assert_eq!(
        client_name("qBittorrent 4.6.2"),
        Some("qBittorrent 4.6.2".into())
    );
    assert_eq!(
        client_name("evil\u{1b}[31m\nname\0"),
        Some("evil[31mname".into())
    );
    assert_eq!(client_name(" \t\r "), None);
    let long = "x".repeat(1000);
    assert_eq!(
        client_name(&long).map(|n| n.chars().count()),
        Some(MAX_CLIENT_NAME)
    );
}

#[test]
fn a_yourip_in_an_extension_handshake_is_a_vote_for_our_address() {
    let mut h = H::new(8, true, |_| {});
    let k = h.add([10, 15, 0, 2], 1);
    h.drain();
    let seen: std::net::IpAddr = [203, 0, 113, 7].into();
    let hs = ExtensionHandshake {
        your_ip: Some(seen),
        ..Default::default()
    };
    h.msg(
        k,
        Message::Extended {
            id: 0,
            payload: hs.encode().into(),
        },
    );
    let votes: Vec<_> = h
        .drain()
        .into_iter()
        .filter_map(|a| match a {
            Action::SeenAs { voter, ip } => Some((voter, ip)),
            _ => None,
        })
        .collect();
    assert_eq!(votes, vec![(std::net::IpAddr::from([10, 15, 0, 2]), seen)]);
}

#[test]
fn a_client_name_from_the_extension_handshake_is_kept_cleaned() {
    let mut h = H::new(8, true, |_| {});
    let k = h.add([10, 15, 0, 1], 1);
    let hs = ExtensionHandshake {
        client: Some("Some\u{7}Client 1.0".to_string()),
        ..Default::default()
    };
    h.msg(
        k,
        Message::Extended {
            id: 0,
            payload: hs.encode().into(),
        },
    );
    assert_eq!(
        h.core.peer(k).expect("known").client.as_deref(),
        Some("SomeClient 1.0")
    );
}

#[test]
fn interest_follows_the_peers_pieces_our_pieces_and_priorities() {
    let mut h = H::new(4, false, |_| {});
    let k = h.add([10, 16, 0, 1], 1);
    h.drain();
    h.msg(k, Message::Have(PieceIndex::new(3)));
    assert_eq!(sent(&h.drain(), k), vec![Message::Interested]);
    // Piece 3 no longer wanted: nothing to get from this peer.
    h.core.set_piece_priority(PieceIndex::new(3), 0);
    h.msg(k, Message::KeepAlive);
    h.msg(k, Message::Have(PieceIndex::new(3)));
    h.msg(k, Message::Have(PieceIndex::new(2)));
    let actions = h.drain();
    assert!(
        sent(&actions, k).is_empty(),
        "piece 2 is wanted: still interested"
    );
    // We get piece 2 elsewhere: the peer has nothing else we want.
    let other = h.add([10, 16, 0, 2], 1);
    h.msg(other, Message::HaveAll);
    h.msg(other, Message::Unchoke);
    let reqs: Vec<BlockRef> = requests(&h.drain(), other)
        .into_iter()
        .filter(|b| b.index == PieceIndex::new(2))
        .collect();
    for b in reqs {
        h.msg(other, piece_msg(b, 0));
    }
    h.drain();
    h.core.piece_checked(PieceIndex::new(2), true, h.now);
    assert!(sent(&h.drain(), k).contains(&Message::NotInterested));
    h.core.set_piece_priority(PieceIndex::new(3), 2);
    h.msg(k, Message::Have(PieceIndex::new(1)));
    assert!(sent(&h.drain(), k).contains(&Message::Interested));
}

fn holepunch_sent(actions: &[Action], to: PeerKey) -> Vec<HolepunchMessage> {
    sent(actions, to)
        .into_iter()
        .filter_map(|m| match m {
            Message::Extended { id: 11, payload } => HolepunchMessage::decode(&payload).ok(),
            _ => None,
        })
        .collect()
}

fn holepunch(kind: HolepunchKind, to: SocketAddr) -> Message {
    Message::Extended {
        id: torrent_core::UT_HOLEPUNCH_ID,
        payload: HolepunchMessage { kind, addr: to }.encode().into(),
    }
}

#[test]
fn a_rendezvous_introduces_two_peers_that_both_take_introductions() {
    let mut h = H::new(8, true, |c| c.max_peers = 10);
    let (a, b, c) = (
        h.add([203, 0, 113, 1], 50001),
        h.add([203, 0, 113, 2], 50002),
        h.add([203, 0, 113, 3], 50003),
    );
    h.msg(a, extension_handshake_with(true, true, 6881));
    h.msg(b, extension_handshake_with(true, true, 6882));
    h.msg(c, extension_handshake_with(true, false, 6883));
    h.drain();
    // Each learns of the others with the holepunch flag where it applies.
    h.advance(Duration::from_secs(2));
    let told = pex_sent(&h.drain(), a);
    let flag_of = |pex: &wire::PexMessage, who: SocketAddr| {
        pex.flags_of(pex.added.iter().position(|x| *x == who).expect("told"))
    };
    let (b_listen, c_listen) = (addr([203, 0, 113, 2], 6882), addr([203, 0, 113, 3], 6883));
    assert_eq!(
        flag_of(&told[0], b_listen) & wire::PEX_HOLEPUNCH,
        wire::PEX_HOLEPUNCH
    );
    assert_eq!(flag_of(&told[0], c_listen) & wire::PEX_HOLEPUNCH, 0);
    assert_eq!(flag_of(&told[0], b_listen) & wire::PEX_SEED, 0);

    // A asks to meet B by the address PEX gave it: both are told to connect, each to the other's
    // listen address.
    h.msg(a, holepunch(HolepunchKind::Rendezvous, b_listen));
    let actions = h.drain();
    let a_listen = addr([203, 0, 113, 1], 6881);
    let to_a = holepunch_sent(&actions, a);
    let to_b = holepunch_sent(&actions, b);
    assert_eq!(to_a.len(), 1);
    assert_eq!(
        (to_a[0].kind, to_a[0].addr),
        (HolepunchKind::Connect, b_listen)
    );
    assert_eq!(
        (to_b[0].kind, to_b[0].addr),
        (HolepunchKind::Connect, a_listen)
    );
    assert_eq!(h.core.stats().introductions, 1);

    // C does not take introductions, nobody is at D, and A is A.
    let refusals = [
        (c_listen, HolepunchError::NoSupport),
        (addr([203, 0, 113, 4], 6884), HolepunchError::NotConnected),
        (a_listen, HolepunchError::NoSelf),
    ];
    for (target, error) in refusals {
        h.msg(a, holepunch(HolepunchKind::Rendezvous, target));
        let actions = h.drain();
        let to_a = holepunch_sent(&actions, a);
        assert_eq!(to_a.len(), 1, "{target}");
        assert_eq!(
            (to_a[0].kind, to_a[0].addr),
            (HolepunchKind::Error(error), target)
        );
        assert!(holepunch_sent(&actions, c).is_empty());
    }
    assert_eq!(h.core.stats().introductions, 1);
}

#[test]
fn rendezvous_are_budgeted_per_peer_and_absent_from_private_torrents() {
    let mut h = H::new(8, true, |c| c.max_peers = 10);
    let (a, b) = (h.add([203, 0, 113, 1], 1), h.add([203, 0, 113, 2], 2));
    h.msg(a, extension_handshake_with(true, true, 6881));
    h.msg(b, extension_handshake_with(true, true, 6882));
    h.drain();
    let b_listen = addr([203, 0, 113, 2], 6882);
    for _ in 0..torrent_core::MAX_RENDEZVOUS + 5 {
        h.msg(a, holepunch(HolepunchKind::Rendezvous, b_listen));
    }
    let introduced = holepunch_sent(&h.drain(), b).len() as u32;
    assert_eq!(introduced, torrent_core::MAX_RENDEZVOUS);
    h.advance(torrent_core::RENDEZVOUS_WINDOW);
    h.drain();
    h.msg(a, holepunch(HolepunchKind::Rendezvous, b_listen));
    assert_eq!(holepunch_sent(&h.drain(), b).len(), 1, "a new window");

    // A private torrent neither offers the extension nor answers it.
    let mut p = H::new(8, true, |c| {
        c.max_peers = 10;
        c.private = true;
    });
    let (a, b) = (p.add([203, 0, 113, 1], 1), p.add([203, 0, 113, 2], 2));
    p.msg(a, extension_handshake_with(true, true, 6881));
    p.msg(b, extension_handshake_with(true, true, 6882));
    let offered = p.drain().iter().any(|act| match act {
        Action::Send {
            message: Message::Extended { id: 0, payload },
            ..
        } => ExtensionHandshake::decode(payload).is_ok_and(|hs| hs.id_of("ut_holepunch").is_some()),
        _ => false,
    });
    assert!(!offered);
    p.msg(a, holepunch(HolepunchKind::Rendezvous, b_listen));
    assert!(holepunch_sent(&p.drain(), b).is_empty());
}

#[test]
fn a_connect_from_a_relay_is_dialled_at_once_unless_it_points_into_a_private_network() {
    let mut h = H::new(8, false, |c| c.max_peers = 10);
    let relay = h.add([203, 0, 113, 9], 1);
    h.msg(relay, extension_handshake_with(true, true, 6881));
    h.drain();
    let dialled = |actions: &[Action]| -> Vec<SocketAddr> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Connect { addr } => Some(*addr),
                _ => None,
            })
            .collect()
    };
    let other = addr([198, 51, 100, 7], 7000);
    h.msg(relay, holepunch(HolepunchKind::Connect, other));
    assert_eq!(dialled(&h.drain()), vec![other]);
    // Already being dialled: not twice.
    h.msg(relay, holepunch(HolepunchKind::Connect, other));
    assert!(dialled(&h.drain()).is_empty());
    h.msg(
        relay,
        holepunch(HolepunchKind::Connect, addr([192, 168, 1, 20], 7000)),
    );
    assert!(
        dialled(&h.drain()).is_empty(),
        "a public relay naming a private address"
    );
}

fn pex_of(added: &[SocketAddr], dropped: &[SocketAddr]) -> Message {
    let message = wire::PexMessage {
        added: added.to_vec(),
        added_flags: vec![wire::PEX_HOLEPUNCH; added.len()],
        dropped: dropped.to_vec(),
    };
    Message::Extended {
        id: torrent_core::UT_PEX_ID,
        payload: message.encode().into(),
    }
}

/// Moves time on by `d` a minute at a time, `relay` sending keep-alives (a silent one is dropped).
fn advance_alive(h: &mut H, relay: PeerKey, d: Duration) {
    let mut left = d;
    while !left.is_zero() {
        let step = left.min(Duration::from_secs(60));
        h.advance(step);
        h.msg(relay, Message::KeepAlive);
        left -= step;
    }
}

fn rendezvous_sent(actions: &[Action], to: PeerKey) -> Vec<SocketAddr> {
    holepunch_sent(actions, to)
        .into_iter()
        .filter(|m| m.kind == HolepunchKind::Rendezvous)
        .map(|m| m.addr)
        .collect()
}

fn punch_steps(actions: &[Action]) -> Vec<(SocketAddr, torrent_core::PunchStep)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Punch { target, step } => Some((*target, *step)),
            _ => None,
        })
        .collect()
}

/// A leecher connected to a relay at 203.0.113.9 (which takes introductions unless told otherwise)
/// that told it of `targets` by peer exchange.
fn home_with_relay(holepunch: bool, targets: &[SocketAddr]) -> (H, PeerKey) {
    let mut h = H::new(8, false, |c| c.max_peers = 60);
    let relay = h.add([203, 0, 113, 9], 40000);
    h.msg(relay, extension_handshake_with(true, holepunch, 6881));
    h.msg(relay, pex_of(targets, &[]));
    h.drain();
    (h, relay)
}

#[test]
fn a_peer_we_cannot_reach_is_asked_of_the_peer_that_told_us_of_it_then_after_a_back_off() {
    let target = addr([198, 51, 100, 7], 7000);
    let (mut h, relay) = home_with_relay(true, &[target]);
    let relay_addr = addr([203, 0, 113, 9], 40000);
    // A dial that got through and ended later asks nobody.
    h.core.dial_failed(target, h.now);
    assert!(rendezvous_sent(&h.drain(), relay).is_empty());
    h.core.add_addresses([target], h.now);
    h.drain();
    h.core.unreachable(target, h.now);
    let actions = h.drain();
    assert_eq!(rendezvous_sent(&actions, relay), vec![target]);
    assert_eq!(
        punch_steps(&actions),
        vec![(target, torrent_core::PunchStep::Asked { relay: relay_addr })]
    );
    // Once per back-off: the first is ASK_BACKOFF.0, then twice that.
    let (first, _) = torrent_core::ASK_BACKOFF;
    let mut asked_at = Vec::new();
    for step in 1..=12 {
        advance_alive(&mut h, relay, first / 2);
        h.core.add_addresses([target], h.now);
        h.core.unreachable(target, h.now);
        if !rendezvous_sent(&h.drain(), relay).is_empty() {
            asked_at.push(step);
        }
    }
    assert_eq!(asked_at, vec![2, 6], "after 1, then 2 back-offs");
}

#[test]
fn a_relays_connect_is_dialled_in_holepunch_mode_and_its_failure_asks_nobody() {
    let target = addr([198, 51, 100, 7], 7000);
    let (mut h, relay) = home_with_relay(true, &[target]);
    h.core.unreachable(target, h.now);
    h.drain();
    assert!(!h.core.is_punching(target));
    h.msg(relay, holepunch(HolepunchKind::Connect, target));
    let actions = h.drain();
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Connect { addr } if *addr == target)));
    assert!(h.core.is_punching(target), "the dial goes over uTP");
    // The punch failed: asked again only after the back-off, not at once.
    h.core.unreachable(target, h.now);
    assert!(rendezvous_sent(&h.drain(), relay).is_empty());
    h.advance(torrent_core::PUNCH_WINDOW);
    assert!(!h.core.is_punching(target));

    // A second punch that works: the connection is reported as punched, whichever side dialled.
    advance_alive(&mut h, relay, torrent_core::ASK_BACKOFF.0);
    h.core.add_addresses([target], h.now);
    h.core.unreachable(target, h.now);
    assert_eq!(rendezvous_sent(&h.drain(), relay), vec![target]);
    let theirs = h.theirs(true);
    let ours = h.ours;
    h.core
        .add_peer(target, true, &ours, &theirs, h.now)
        .expect("room");
    assert_eq!(
        punch_steps(&h.drain()),
        vec![(
            target,
            torrent_core::PunchStep::Connected { incoming: true }
        )]
    );
    // A connection long after is nothing of the kind.
    h.advance(torrent_core::PUNCH_WINDOW);
    let other = h.add([198, 51, 100, 7], 7001);
    assert!(punch_steps(&h.drain()).is_empty());
    h.event(other, PeerEvent::Closed);
}

#[test]
fn a_relays_error_stops_asking_for_that_peer_for_a_while() {
    let target = addr([198, 51, 100, 7], 7000);
    let (mut h, relay) = home_with_relay(true, &[target]);
    h.core.unreachable(target, h.now);
    h.drain();
    h.msg(
        relay,
        holepunch(HolepunchKind::Error(HolepunchError::NoSupport), target),
    );
    let steps = punch_steps(&h.drain());
    assert!(matches!(
        steps[..],
        [(
            t,
            torrent_core::PunchStep::Refused {
                error: HolepunchError::NoSupport,
                ..
            }
        )] if t == target
    ));
    advance_alive(&mut h, relay, torrent_core::ASK_BACKOFF.0);
    h.core.add_addresses([target], h.now);
    h.core.unreachable(target, h.now);
    assert!(
        rendezvous_sent(&h.drain(), relay).is_empty(),
        "the back-off is not enough"
    );
    advance_alive(&mut h, relay, torrent_core::REFUSED_BACKOFF);
    h.core.add_addresses([target], h.now);
    h.core.unreachable(target, h.now);
    assert_eq!(rendezvous_sent(&h.drain(), relay), vec![target]);
}

#[test]
fn only_a_connected_relay_that_takes_introductions_and_still_lists_the_peer_is_asked() {
    let (t1, t2) = (addr([198, 51, 100, 7], 7000), addr([198, 51, 100, 8], 7000));
    let (mut h, relay) = home_with_relay(false, &[t1]);
    h.core.unreachable(t1, h.now);
    assert!(
        rendezvous_sent(&h.drain(), relay).is_empty(),
        "no ut_holepunch"
    );

    let (mut h, relay) = home_with_relay(true, &[t1, t2]);
    // It dropped t1 since; nobody told us of 192.0.2.1.
    h.advance(torrent_core::PEX_MIN_GAP);
    h.msg(relay, pex_of(&[], &[t1]));
    h.drain();
    h.core.unreachable(t1, h.now);
    h.core.unreachable(addr([192, 0, 2, 1], 1), h.now);
    assert!(rendezvous_sent(&h.drain(), relay).is_empty());
    // Gone: nobody to ask.
    h.event(relay, PeerEvent::Closed);
    h.core.unreachable(t2, h.now);
    assert!(punch_steps(&h.drain()).is_empty());
}

#[test]
fn our_rendezvous_to_one_relay_are_budgeted() {
    let targets: Vec<SocketAddr> = (0..50).map(|i| addr([198, 51, 100, i], 7000)).collect();
    let (mut h, relay) = home_with_relay(true, &targets);
    for t in &targets {
        h.core.unreachable(*t, h.now);
    }
    let first = rendezvous_sent(&h.drain(), relay);
    assert_eq!(first.len() as u32, torrent_core::MAX_ASKED);
    const { assert!(torrent_core::MAX_ASKED < torrent_core::MAX_RENDEZVOUS) };
    h.advance(torrent_core::RENDEZVOUS_WINDOW);
    h.drain();
    for t in &targets {
        h.core.unreachable(*t, h.now);
    }
    let second = rendezvous_sent(&h.drain(), relay);
    assert_eq!(second.len() as u32, torrent_core::MAX_ASKED);
    assert!(second.iter().all(|t| !first.contains(t)), "the others");
}

/// An Azureus-style peer id of `client` (two letters), the rest `fill`.
fn client_id(client: &[u8; 2], fill: u8) -> ids::PeerId {
    let mut id = [fill; 20];
    id[0] = b'-';
    id[1..3].copy_from_slice(client);
    id[3..7].copy_from_slice(b"2080");
    id[7] = b'-';
    ids::PeerId::new(id)
}

/// Registers connections with one peer in `order` (name, incoming) at a core listening on
/// `our_port` whose peer id is `me`; the peer is `them` listening on `their_port`. Returns the names
/// of the connections left, after checking that nothing was banned and the address stays connected.
fn duplicates_left(
    me: ids::PeerId,
    our_port: u16,
    them: ids::PeerId,
    their_port: u16,
    order: &[(&'static str, bool)],
) -> Vec<&'static str> {
    let mut h = H::new(8, false, |c| {
        c.max_peers = 10;
        c.extension.listen_port = Some(our_port);
    });
    h.ours.peer_id = me;
    let mut theirs = h.theirs(true);
    theirs.peer_id = them;
    let ours = h.ours;
    let ip = [198, 51, 100, 7];
    let mut keys = Vec::new();
    for (name, incoming) in order {
        // Our dial reaches their listen port; theirs comes from a port of their OS's choosing.
        let port = if *incoming {
            50_000 + keys.len() as u16
        } else {
            their_port
        };
        match h
            .core
            .add_peer(addr(ip, port), *incoming, &ours, &theirs, h.now)
        {
            Ok(k) => keys.push((*name, k)),
            Err(e) => assert_eq!(e, Refused::Duplicate),
        }
    }
    let actions = h.drain();
    let dropped: Vec<PeerKey> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Disconnect {
                peer,
                reason: DisconnectReason::Duplicate,
            } => Some(*peer),
            _ => None,
        })
        .collect();
    assert!(!actions.iter().any(|a| matches!(a, Action::Banned { .. })));
    assert_eq!(h.core.peer_count(), 1, "{actions:?}");
    assert_eq!(h.core.connected_count(), 1, "the address stays connected");
    keys.iter()
        .filter(|(_, k)| !dropped.contains(k))
        .map(|(n, _)| *n)
        .collect()
}

/// Two peers that dialled each other at once each hold two connections. With libtorrent (and
/// Spore) both ends keep the same one, whatever order they saw them in: the one dialled by the end
/// with the lower listen port, as libtorrent's duplicate resolution does; equal ports fall back to
/// the greater peer id's dial.
#[test]
fn crossed_dials_with_libtorrent_leave_the_same_connection_at_both_ends() {
    let spore_low = client_id(b"SO", 0x10);
    let spore_high = client_id(b"SO", 0xF0);
    let libtorrent = client_id(b"LT", 0x30);
    // Connection X is dialled by the first end, Y by the second.
    for (a, a_port, b, b_port, kept) in [
        (spore_high, 6000, libtorrent, 7000, "X"),
        (spore_high, 7000, libtorrent, 6000, "Y"),
        (spore_low, 6881, spore_high, 6881, "Y"),
        (spore_high, 6881, spore_low, 6881, "X"),
    ] {
        for x_first in [true, false] {
            let order = |x_incoming: bool| {
                if x_first {
                    [("X", x_incoming), ("Y", !x_incoming)]
                } else {
                    [("Y", !x_incoming), ("X", x_incoming)]
                }
            };
            // At the first end X is outgoing; at the second it is incoming.
            let at_a = duplicates_left(a, a_port, b, b_port, &order(false));
            assert_eq!(at_a, vec![kept], "at the first end, x first: {x_first}");
            // The second end runs the same rule only when it is Spore; libtorrent's side is
            // libtorrent's, and the rule above is the one it runs.
            if b != libtorrent {
                let at_b = duplicates_left(b, b_port, a, a_port, &order(true));
                assert_eq!(at_b, vec![kept], "at the second end, x first: {x_first}");
            }
        }
    }
}

/// aria2 and Transmission keep the first of two connections with a peer and drop the second, and
/// aria2 dials a connected peer again when peer exchange names its listen address: the first stays
/// here too, in either direction and whatever the ports or ids, or both ends would drop a different
/// one and the pair would be left with none (seen with aria2 in interop_engine's offline swarm).
#[test]
fn a_second_connection_from_other_clients_goes_and_the_first_stays() {
    let spore = client_id(b"SO", 0x10);
    let aria2 = ids::PeerId::new(*b"A2-1-36-0-abcdefghij");
    let transmission = client_id(b"TR", 0xF0);
    for them in [aria2, transmission] {
        for (our_port, their_port) in [(6000, 7000), (7000, 6000)] {
            for first_incoming in [true, false] {
                let order = [("first", first_incoming), ("second", !first_incoming)];
                let left = duplicates_left(spore, our_port, them, their_port, &order);
                assert_eq!(left, vec!["first"]);
            }
        }
    }
    // Two in the same direction: the first stays, from any client.
    for them in [aria2, client_id(b"LT", 0x30)] {
        let order = [("first", true), ("second", true)];
        assert_eq!(
            duplicates_left(spore, 6000, them, 7000, &order),
            vec!["first"]
        );
    }
    // The same id from another IP is another peer.
    let mut h = H::new(8, false, |c| c.max_peers = 10);
    let theirs = h.theirs(true);
    let ours = h.ours;
    h.core
        .add_peer(addr([198, 51, 100, 3], 6881), true, &ours, &theirs, h.now)
        .expect("room");
    assert!(h
        .core
        .add_peer(addr([198, 51, 100, 4], 6881), true, &ours, &theirs, h.now)
        .is_ok());
}

/// A peer that dialled us named its listen address in its extension handshake: when peer exchange
/// or a tracker names that address, it is not dialled (a second connection to the same peer).
#[test]
fn the_listen_address_of_a_peer_that_dialled_us_is_not_dialled() {
    let mut h = H::new(8, false, |c| c.max_peers = 10);
    let k = h.add([198, 51, 100, 9], 50_123);
    let hs = wire::ExtensionHandshake {
        listen_port: Some(6881),
        ..Default::default()
    };
    h.msg(
        k,
        Message::Extended {
            id: 0,
            payload: hs.encode().into(),
        },
    );
    h.drain();
    let listen = addr([198, 51, 100, 9], 6881);
    let other = addr([198, 51, 100, 10], 6881);
    h.core.add_addresses([listen, other], h.now);
    let dialled: Vec<SocketAddr> = h
        .drain()
        .iter()
        .filter_map(|a| match a {
            Action::Connect { addr } => Some(*addr),
            _ => None,
        })
        .collect();
    assert_eq!(dialled, vec![other]);
}

fn suggestions(actions: &[Action], to: PeerKey) -> Vec<u32> {
    sent(actions, to)
        .into_iter()
        .filter_map(|m| match m {
            Message::Suggest(i) => Some(i.get()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_seed_suggests_pieces_not_given_out_yet_before_any_piece_twice() {
    let mut h = H::new(16, true, |c| c.suggest = 4);
    let (a, b) = (h.add([10, 9, 0, 1], 1), h.add([10, 9, 0, 2], 1));
    h.drain();
    h.msg(a, Message::Interested);
    let to_a = h.drain();
    let offered_a = suggestions(&to_a, a);
    assert_eq!(offered_a.len(), 4);
    // The suggestions go before the unchoke, so the first requests can follow them.
    assert_eq!(sent(&to_a, a).last(), Some(&Message::Unchoke));
    h.msg(b, Message::Interested);
    let offered_b = suggestions(&h.drain(), b);
    assert_eq!(offered_b.len(), 4);
    // a takes up its first suggestion: it gets the next one, and nobody gets a piece twice while some
    // piece has not gone out.
    for blk in 0..4 {
        let r = block(offered_a[0], blk);
        h.msg(a, Message::Request(r));
        assert!(h.core.commit_upload(a, r, h.now));
    }
    let more = suggestions(&h.drain(), a);
    assert_eq!(more.len(), 1);
    let mut all: Vec<u32> = offered_a
        .iter()
        .chain(&offered_b)
        .chain(&more)
        .copied()
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 9, "nine different pieces suggested");
    // A peer without the fast extension gets none (Suggest is a BEP 6 message).
    let slow = h.add_slow([10, 9, 0, 3], 1);
    h.drain();
    h.msg(slow, Message::Interested);
    assert!(suggestions(&h.drain(), slow).is_empty());
}

#[test]
fn a_downloader_asks_for_the_pieces_a_peer_suggests_first() {
    let (mut h, keys) = downloading(64, &[[10, 10, 0, 1]]);
    let a = keys[0];
    h.drain();
    h.msg(a, Message::Suggest(PieceIndex::new(40)));
    h.msg(a, Message::Suggest(PieceIndex::new(17)));
    h.msg(a, Message::Unchoke);
    let asked: Vec<u32> = requests(&h.drain(), a)
        .iter()
        .map(|b| b.index.get())
        .collect();
    assert_eq!(&asked[..8], &[40, 40, 40, 40, 17, 17, 17, 17], "{asked:?}");
}

#[test]
fn no_duplicate_requests_while_a_wanted_piece_is_unstarted() {
    // Piece 1 is only at c, which chokes us; a and b have piece 0.
    let mut h = H::new(2, false, |_| {});
    let (a, b, c) = (
        h.add([10, 11, 0, 1], 6881),
        h.add([10, 11, 0, 2], 6881),
        h.add([10, 11, 0, 3], 6881),
    );
    for k in [a, b] {
        h.msg(k, Message::Bitfield(vec![0x80u8].into()));
    }
    h.msg(c, Message::HaveAll);
    h.drain();
    h.msg(a, Message::Unchoke);
    let to_a = requests(&h.drain(), a);
    assert_eq!(to_a.len(), 4, "piece 0 from a");
    // b has nothing we have not asked a for, and piece 1 is yet to start: a copy of a's requests
    // would cost b's upload for nothing.
    h.msg(b, Message::Unchoke);
    assert!(requests(&h.drain(), b).is_empty());
    // Once every piece is started, the last blocks are doubled up (endgame), one at a time to a
    // peer with nothing in flight.
    h.msg(c, Message::Unchoke);
    assert_eq!(requests(&h.drain(), c).len(), 4, "piece 1 from c");
    h.advance(Duration::from_secs(1));
    assert_eq!(requests(&h.drain(), b), to_a[..1]);
}

#[test]
fn a_full_table_that_turned_someone_away_turns_over_with_no_address_waiting() {
    // A flash crowd's first arrivals fill each other's tables and hear, by peer exchange, only of one
    // another: nothing waits to be dialled, yet every later arrival is turned away. Those turned away
    // wait as much as known addresses do, so the table turns over for them.
    let mut h = H::new(8, false, |c| {
        c.max_peers = 3;
        c.limits.initial_queue = 4;
    });
    let keys: Vec<PeerKey> = (1..=3).map(|i| h.add([10, 13, 0, i], 6881)).collect();
    for &k in &keys {
        h.msg(k, Message::Bitfield(vec![0xFEu8].into()));
    }
    h.drain();
    for &k in &keys[..2] {
        h.msg(k, Message::Unchoke);
    }
    let actions = h.drain();
    for &k in &keys[..2] {
        for r in requests(&actions, k).into_iter().take(2) {
            h.msg(k, piece_msg(r, 1));
        }
    }
    h.drain();
    h.advance(Duration::from_secs(30));
    assert!(disconnected(&h.drain()).is_empty());
    assert_eq!(h.core.known().count(), 0);
    assert_eq!(h.try_add([10, 13, 0, 9], 6881), Err(Refused::Full));
    h.drain();
    h.advance(Duration::from_secs(30));
    assert_eq!(
        disconnected(&h.drain()),
        vec![(keys[2], DisconnectReason::Turnover)]
    );
    // The newcomer gets the place; with nobody turned away since, nobody else is dropped.
    h.add([10, 13, 0, 9], 6881);
    h.drain();
    h.advance(Duration::from_secs(30));
    assert!(disconnected(&h.drain()).is_empty());
}

#[test]
fn a_full_table_turns_over_the_peer_that_exchanged_least_when_others_wait() {
    let mut h = H::new(8, false, |c| {
        c.max_peers = 3;
        c.limits.initial_queue = 4;
    });
    let keys: Vec<PeerKey> = (1..=3).map(|i| h.add([10, 12, 0, i], 6881)).collect();
    // Pieces 0 to 6 each (a seed is never turned over while we download).
    for &k in &keys {
        h.msg(k, Message::Bitfield(vec![0xFEu8].into()));
    }
    h.drain();
    // The first two send us blocks; the third sends nothing.
    for &k in &keys[..2] {
        h.msg(k, Message::Unchoke);
    }
    let actions = h.drain();
    for &k in &keys[..2] {
        for r in requests(&actions, k).into_iter().take(2) {
            h.msg(k, piece_msg(r, 1));
        }
    }
    h.drain();
    // Nobody waiting: nobody is dropped.
    h.advance(Duration::from_secs(30));
    assert!(disconnected(&h.drain()).is_empty());
    h.core.add_addresses([addr([10, 12, 0, 9], 6881)], h.now);
    h.drain();
    h.advance(Duration::from_secs(30));
    let actions = h.drain();
    assert_eq!(
        disconnected(&actions),
        vec![(keys[2], DisconnectReason::Turnover)]
    );
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Connect { addr: a } if *a == addr([10, 12, 0, 9], 6881))));
}

fn dials(actions: &[Action]) -> Vec<SocketAddr> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Connect { addr } => Some(*addr),
            _ => None,
        })
        .collect()
}

#[test]
fn a_seed_does_not_dial_an_address_peer_exchange_flags_as_a_seed() {
    let (seed, leech) = (addr([10, 20, 0, 1], 6881), addr([10, 20, 0, 2], 6881));
    let flagged = wire::PexMessage {
        added: vec![seed, leech],
        added_flags: vec![wire::PEX_SEED, 0],
        dropped: vec![],
    };
    let pex = Message::Extended {
        id: torrent_core::UT_PEX_ID,
        payload: flagged.encode().into(),
    };
    for seeding in [true, false] {
        let mut h = H::new(8, seeding, |c| c.max_peers = 10);
        let k = h.add([10, 20, 1, 1], 40000);
        h.msg(k, extension_handshake(true, 6881));
        h.drain();
        h.msg(k, pex.clone());
        let dialled = dials(&h.drain());
        if seeding {
            assert_eq!(dialled, vec![leech], "a seed skips the flagged seed");
            // Named again without the flag (the tracker knows no flags): still skipped.
            h.core.add_addresses([seed], h.now);
            assert!(dials(&h.drain()).is_empty());
        } else {
            assert_eq!(dialled, vec![seed, leech], "a downloader wants seeds");
        }
    }
}

#[test]
fn a_seed_does_not_dial_again_an_address_it_left_because_both_were_seeds() {
    let mut h = H::new(8, true, |c| c.max_peers = 10);
    let out = addr([10, 21, 0, 1], 6881);
    h.core.add_addresses([out], h.now);
    assert_eq!(dials(&h.drain()), vec![out]);
    let (ours, theirs) = (h.ours, h.theirs(true));
    let k = h
        .core
        .add_peer(out, false, &ours, &theirs, h.now)
        .expect("room");
    h.msg(k, Message::HaveAll);
    assert_eq!(
        disconnected(&h.drain()),
        vec![(k, DisconnectReason::BothSeeds)]
    );
    // A seed that dialled us: the address to dial it at is its listen port.
    let inc = h.add([10, 21, 0, 2], 50000);
    h.msg(inc, extension_handshake(true, 6882));
    h.msg(inc, Message::HaveAll);
    assert_eq!(
        disconnected(&h.drain()),
        vec![(inc, DisconnectReason::BothSeeds)]
    );
    // Trackers and peer exchange keep naming both, for as long as we seed.
    for _ in 0..10 {
        h.core
            .add_addresses([out, addr([10, 21, 0, 2], 6882)], h.now);
        assert!(dials(&h.drain()).is_empty());
        assert_eq!(h.core.known().count(), 0);
        h.advance(Duration::from_secs(60));
    }
    // Someone else at the address who lacks pieces clears the mark.
    let (ours, theirs) = (h.ours, h.theirs(true));
    let k = h
        .core
        .add_peer(out, false, &ours, &theirs, h.now)
        .expect("room");
    h.msg(k, Message::HaveNone);
    h.event(k, PeerEvent::Closed);
    h.drain();
    h.core.add_addresses([out], h.now);
    assert_eq!(dials(&h.drain()), vec![out]);
}

#[test]
fn a_downloader_that_finishes_drops_queued_seeds_and_does_not_redial_its_seeds() {
    let mut h = H::new(1, false, |c| c.max_peers = 1);
    let (ours, theirs) = (h.ours, h.theirs(true));
    let from = addr([10, 22, 0, 1], 6881);
    let k = h
        .core
        .add_peer(from, false, &ours, &theirs, h.now)
        .expect("room");
    h.msg(k, extension_handshake(true, 6881));
    h.msg(k, Message::HaveAll);
    h.drain();
    // It names a seed while the table is full: queued, since we still download.
    let queued = addr([10, 22, 0, 2], 6881);
    let flagged = wire::PexMessage {
        added: vec![queued],
        added_flags: vec![wire::PEX_SEED],
        dropped: vec![],
    };
    h.msg(
        k,
        Message::Extended {
            id: torrent_core::UT_PEX_ID,
            payload: flagged.encode().into(),
        },
    );
    assert_eq!(h.core.known().copied().collect::<Vec<_>>(), vec![queued]);
    h.msg(k, Message::Unchoke);
    for b in 0..4 {
        h.msg(k, piece_msg(block(0, b), 1));
    }
    h.drain();
    h.core.piece_checked(PieceIndex::new(0), true, h.now);
    let actions = h.drain();
    assert!(actions.contains(&Action::Completed));
    assert_eq!(
        disconnected(&actions),
        vec![(k, DisconnectReason::BothSeeds)]
    );
    assert!(dials(&actions).is_empty(), "the queued seed is not dialled");
    h.core.add_addresses([from, queued], h.now);
    assert!(dials(&h.drain()).is_empty());
}

#[test]
fn a_peer_told_of_as_a_downloader_is_named_again_as_a_seed_once_it_finishes() {
    let mut h = H::new(8, false, |c| c.max_peers = 10);
    let k = h.add([10, 23, 0, 1], 40000);
    h.msg(k, extension_handshake(true, 6881));
    let other = h.add([10, 23, 0, 2], 40000);
    h.msg(other, extension_handshake(false, 6882));
    h.msg(other, Message::HaveNone);
    h.drain();
    h.advance(Duration::from_secs(2));
    let first = pex_sent(&h.drain(), k);
    assert_eq!(first.len(), 1);
    let named = addr([10, 23, 0, 2], 6882);
    assert_eq!(first[0].added, vec![named]);
    assert_eq!(first[0].flags_of(0) & wire::PEX_SEED, 0);
    for i in 0..8 {
        h.msg(other, Message::Have(PieceIndex::new(i)));
    }
    h.msg(k, Message::KeepAlive);
    h.drain();
    h.advance(Duration::from_secs(60));
    let second = pex_sent(&h.drain(), k);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].added, vec![named]);
    assert_eq!(second[0].flags_of(0) & wire::PEX_SEED, wire::PEX_SEED);
    // Once: the next exchange has nothing new.
    h.msg(k, Message::KeepAlive);
    h.msg(other, Message::KeepAlive);
    h.advance(Duration::from_secs(60));
    assert!(pex_sent(&h.drain(), k).is_empty());
}

#[test]
fn an_address_whose_dial_failed_is_backed_off_before_it_is_dialled_again() {
    let mut h = H::new(8, false, |c| c.max_peers = 10);
    let full = addr([10, 24, 0, 1], 6881);
    h.core.add_addresses([full], h.now);
    assert_eq!(dials(&h.drain()), vec![full]);
    // It turned us away (a full table): named again at once, it waits 30 s, then 60 s.
    h.core.dial_failed(full, h.now);
    h.core.add_addresses([full], h.now);
    assert!(dials(&h.drain()).is_empty());
    h.advance(Duration::from_secs(30));
    h.drain();
    h.core.add_addresses([full], h.now);
    assert_eq!(dials(&h.drain()), vec![full]);
    h.core.dial_failed(full, h.now);
    h.advance(Duration::from_secs(59));
    h.drain();
    h.core.add_addresses([full], h.now);
    assert!(dials(&h.drain()).is_empty(), "the back-off doubles");
    h.advance(Duration::from_secs(1));
    h.drain();
    h.core.add_addresses([full], h.now);
    assert_eq!(dials(&h.drain()), vec![full]);
}
