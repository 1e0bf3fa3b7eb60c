//! Two cores, a seed and an empty peer, wired together in memory (quinn's `Pair` style): a driver moves
//! every `Send` to the other side as a received message, serves `ReadBlock` from the seed's bytes,
//! stores `StoreBlock` into the downloader's buffer and answers `VerifyPiece` with a SHA-1 check, in
//! virtual time. No sockets, no sleeping.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};
use torrent_core::{Action, Bitfield, CoreConfig, PeerEvent, PeerKey, TorrentCore};
use wire::{Handshake, Message};

struct Side {
    core: TorrentCore,
    data: Vec<u8>,
    /// The other side's key in this core.
    other: PeerKey,
    completed: bool,
    closed: bool,
}

struct Pair {
    sides: [Side; 2],
    piece_sizes: Vec<u32>,
    hashes: Vec<[u8; 20]>,
    now: Instant,
    /// Messages on the wire from side i to the other, in order.
    wire: [VecDeque<Message>; 2],
    /// Every action either side took, for comparing runs.
    trace: Vec<String>,
}

fn content(len: usize) -> Vec<u8> {
    let mut x = 0x1234_5678_9abc_def0u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Pair {
    fn new(piece_sizes: Vec<u32>, seed: u64) -> Pair {
        let t0 = Instant::now();
        let total: usize = piece_sizes.iter().map(|&s| s as usize).sum();
        let data = content(total);
        let mut hashes = Vec::new();
        let mut at = 0;
        for &s in &piece_sizes {
            hashes.push(Sha1::digest(&data[at..at + s as usize]).into());
            at += s as usize;
        }
        let n = piece_sizes.len() as u32;
        let mut seed_config = CoreConfig::new(piece_sizes.clone(), seed);
        seed_config.have = Bitfield::full(n);
        let leech_config = CoreConfig::new(piece_sizes.clone(), seed + 1);
        let info_hash = [9u8; 20];
        let hs = |id: u8| {
            Handshake::new(
                ids::InfoHash::new(info_hash),
                ids::PeerId::new([id; 20]),
                false,
            )
        };
        let (seed_addr, leech_addr) = (
            SocketAddr::from(([127, 0, 0, 1], 6881)),
            SocketAddr::from(([127, 0, 0, 2], 6882)),
        );
        let mut seed_core = TorrentCore::new(seed_config, t0);
        let mut leech_core = TorrentCore::new(leech_config, t0);
        let in_seed = seed_core
            .add_peer(leech_addr, true, &hs(1), &hs(2), t0)
            .expect("room");
        let in_leech = leech_core
            .add_peer(seed_addr, false, &hs(2), &hs(1), t0)
            .expect("room");
        Pair {
            sides: [
                Side {
                    core: seed_core,
                    data,
                    other: in_seed,
                    completed: false,
                    closed: false,
                },
                Side {
                    core: leech_core,
                    data: vec![0; total],
                    other: in_leech,
                    completed: false,
                    closed: false,
                },
            ],
            piece_sizes,
            hashes,
            now: t0,
            wire: [VecDeque::new(), VecDeque::new()],
            trace: Vec::new(),
        }
    }

    fn offset(&self, piece: u32) -> usize {
        self.piece_sizes[..piece as usize]
            .iter()
            .map(|&s| s as usize)
            .sum()
    }

    /// Carries out side `i`'s actions; whether there were any.
    fn drive(&mut self, i: usize) -> bool {
        let mut any = false;
        while let Some(action) = self.sides[i].core.poll_action() {
            any = true;
            self.trace.push(format!("{i} {action:?}"));
            let now = self.now;
            match action {
                Action::Send { message, .. } => self.wire[i].push_back(message),
                Action::ReadBlock { peer, block } => {
                    if self.sides[i].core.commit_upload(peer, block, now) {
                        let at = self.offset(block.index.get()) + block.begin as usize;
                        let data = self.sides[i].data[at..at + block.length as usize].to_vec();
                        self.wire[i].push_back(Message::Piece {
                            index: block.index,
                            begin: block.begin,
                            data: data.into(),
                        });
                    }
                }
                Action::StoreBlock { block, data, .. } => {
                    let at = self.offset(block.index.get()) + block.begin as usize;
                    self.sides[i].data[at..at + data.len()].copy_from_slice(&data);
                }
                Action::VerifyPiece { piece } => {
                    let at = self.offset(piece.get());
                    let len = self.piece_sizes[piece.as_usize()] as usize;
                    let ok: [u8; 20] = Sha1::digest(&self.sides[i].data[at..at + len]).into();
                    let ok = ok == self.hashes[piece.as_usize()];
                    self.sides[i].core.piece_checked(piece, ok, now);
                }
                Action::Completed => self.sides[i].completed = true,
                Action::Disconnect { .. } => {
                    self.sides[i].closed = true;
                    let other = self.sides[1 - i].other;
                    self.sides[1 - i]
                        .core
                        .handle_event(other, PeerEvent::Closed, now);
                }
                Action::CancelRead { .. }
                | Action::Banned { .. }
                | Action::SeenAs { .. }
                | Action::Introduced { .. }
                | Action::Punch { .. }
                | Action::Connect { .. }
                | Action::Announce { .. }
                | Action::ServeMetadata { .. }
                | Action::ServeHashes { .. } => {}
            }
        }
        // What side i wrote arrives at the other side.
        while let Some(m) = self.wire[i].pop_front() {
            any = true;
            let (other, now) = (self.sides[1 - i].other, self.now);
            self.sides[1 - i]
                .core
                .handle_event(other, PeerEvent::Message(m), now);
        }
        any
    }

    /// Runs until both sides are idle, then moves time to the next timeout; until `done` or `limit`.
    fn run(&mut self, limit: Duration, done: impl Fn(&Pair) -> bool) {
        let end = self.now + limit;
        while !done(self) {
            while self.drive(0) | self.drive(1) {}
            if done(self) {
                break;
            }
            let next = [0, 1]
                .iter()
                .filter_map(|&i| self.sides[i].core.poll_timeout())
                .min()
                .expect("a timer");
            assert!(next <= end, "not done within {limit:?}");
            // Every exchange above took no time; give each timer round some.
            self.now = next.max(self.now + Duration::from_millis(1));
            for side in &mut self.sides {
                side.core.handle_timeout(self.now);
            }
        }
    }
}

fn moves_a_torrent(seed: u64) -> (Vec<String>, Duration) {
    // Five full pieces of 64 KiB and a short last one: blocks of 16 KiB, a tail block of 1000 bytes.
    let mut sizes = vec![64 * 1024; 5];
    sizes.push(16 * 1024 + 1000);
    let total: u64 = sizes.iter().map(|&s| u64::from(s)).sum();
    let mut pair = Pair::new(sizes, seed);
    let t0 = pair.now;
    pair.run(Duration::from_secs(60), |p| p.sides[1].completed);
    let took = pair.now - t0;
    assert_eq!(pair.sides[1].data, pair.sides[0].data, "the bytes arrived");
    assert!(pair.sides[1].core.have().is_complete());
    assert_eq!(
        pair.sides[0].core.stats().uploaded,
        total,
        "each byte sent once"
    );
    assert_eq!(pair.sides[1].core.stats().downloaded, total);
    assert_eq!(pair.sides[1].core.stats().wasted, 0);
    // Two seeds have nothing to say to each other: one side ends the connection.
    pair.run(Duration::from_secs(5), |p| {
        p.sides[0].core.peer_count() == 0 && p.sides[1].core.peer_count() == 0
    });
    assert!(pair.sides[0].closed || pair.sides[1].closed);
    (pair.trace, took)
}

#[test]
fn a_whole_torrent_moves_from_a_seed_to_an_empty_peer() {
    let (_, took) = moves_a_torrent(42);
    // The seed unchokes an interested peer at once: no choker round is waited for.
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let (a, _) = moves_a_torrent(7);
    let (b, _) = moves_a_torrent(7);
    assert_eq!(a, b);
}
