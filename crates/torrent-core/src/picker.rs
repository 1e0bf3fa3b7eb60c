//! Which blocks to ask which peer for: finish started pieces first, then pieces the peer suggested (BEP 6
//! Suggest: a seed points each peer at pieces it has not given out yet), then the rarest wanted piece
//! (random tie-break) or the next one in order when streaming; higher file priority first; once every
//! wanted piece is started, endgame duplicates the last outstanding blocks so one slow peer cannot hold up
//! the end. Time-critical pieces (a stream's read
//! position and the window after it, as libtorrent's `set_piece_deadline`) go before all of that, most
//! urgent first.

use std::collections::{BTreeMap, BTreeSet};

use wire::{BlockRef, PieceIndex};

use crate::bitfield::Bitfield;
use crate::DetMap as HashMap;

/// The block size of the wire protocol: what every client requests and serves.
pub const BLOCK: u32 = 16 * 1024;

/// What became of a received block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Not asked for, of the wrong size, or already received: dropped.
    Unexpected,
    /// Taken; its piece still misses blocks.
    Accepted,
    /// Taken, and it was the piece's last missing block: the piece is ready to verify.
    PieceComplete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockState {
    Open,
    /// Requested from this many peers.
    Requested(u8),
    Received,
}

#[derive(Debug)]
struct Partial {
    blocks: Vec<BlockState>,
    received: u32,
    /// Blocks in state `Open`.
    open: u32,
}

impl Partial {
    /// Sets block `b`'s state, keeping the count of open blocks.
    fn set(&mut self, b: usize, state: BlockState) {
        if self.blocks[b] == BlockState::Open {
            self.open -= 1;
        }
        if state == BlockState::Open {
            self.open += 1;
        }
        self.blocks[b] = state;
    }
}

/// The download state of every piece: had, started (block by block), or not yet, with availability.
pub struct Picker {
    piece_sizes: Vec<u32>,
    have: Bitfield,
    /// 0: do not download; higher first.
    priority: Vec<u8>,
    availability: Vec<u32>,
    partial: HashMap<u32, Partial>,
    /// The keys of `partial`, for the tests on every `Have` and in every pick's scan (a hash lookup
    /// each was a tenth of a simulated swarm's time).
    started: Bitfield,
    /// Started pieces with an open block: what step 1 of [`Picker::pick`] looks at, instead of every
    /// started piece (most have every block requested).
    open: BTreeSet<u32>,
    /// Wanted pieces neither had nor started: endgame waits until there are none.
    unstarted: u32,
    /// Wanted pieces not had: `done` is asked after every verified piece, and counting them there
    /// was a scan of every piece each time.
    missing: u32,
    /// The highest priority of any piece.
    top: u8,
    sequential: bool,
    /// Where the scan for the rarest piece starts: seeded per picker (from the OS in the engine), so
    /// peers that start together do not all chase the same pieces (a fixed seed made every Spore peer
    /// in a swarm pick in one order, leaving them less to trade).
    rng: crate::rng::Rng,
    /// Bytes per block: `BLOCK` on the wire; a simulator may move bigger units.
    block: u32,
    last_was_duplicated: bool,
    /// Each reader's time-critical pieces, most urgent first (see [`Picker::set_deadlines`]).
    deadlines: HashMap<u64, Vec<u32>>,
    /// All readers' critical pieces in pick order: (position in its reader's window, piece).
    critical: Vec<(usize, u32)>,
}

impl Picker {
    /// A picker over pieces of `piece_sizes` bytes, of which `have` are verified, downloading those of
    /// a `priority` above 0 (higher first) in blocks of `BLOCK` bytes; `seed` varies the rarest-first
    /// tie-break between clients.
    pub fn new(piece_sizes: Vec<u32>, have: Bitfield, priority: Vec<u8>, seed: u64) -> Picker {
        Picker::with_block_size(piece_sizes, have, priority, seed, BLOCK)
    }

    /// As [`Picker::new`] with blocks of `block` bytes (at least 1).
    pub fn with_block_size(
        piece_sizes: Vec<u32>,
        have: Bitfield,
        priority: Vec<u8>,
        seed: u64,
        block: u32,
    ) -> Picker {
        let n = piece_sizes.len();
        let mut priority = priority;
        priority.resize(n, 0);
        let unstarted = (0..n as u32)
            .filter(|&i| priority[i as usize] > 0 && !have.get(i))
            .count() as u32;
        let top = priority.iter().copied().max().unwrap_or(0);
        let missing = (0..n as u32)
            .filter(|&i| priority[i as usize] > 0 && !have.get(i))
            .count() as u32;
        Picker {
            piece_sizes,
            have,
            priority,
            availability: vec![0; n],
            partial: HashMap::default(),
            started: Bitfield::new(n as u32),
            open: BTreeSet::new(),
            unstarted,
            missing,
            top,
            sequential: false,
            rng: crate::rng::Rng::new(seed),
            block: block.max(1),
            last_was_duplicated: false,
            deadlines: HashMap::default(),
            critical: Vec::new(),
        }
    }

    /// Sets reader `reader`'s time-critical pieces, the most urgent first (replacing what it set
    /// before; an empty list clears them). They are picked before anything else, whatever their
    /// priority, interleaved across readers by their place in each list, so the piece a reader waits
    /// for now comes before any reader's read-ahead.
    pub fn set_deadlines(&mut self, reader: u64, pieces: Vec<PieceIndex>) {
        let n = self.piece_sizes.len() as u32;
        let pieces: Vec<u32> = pieces
            .into_iter()
            .map(PieceIndex::get)
            .filter(|&p| p < n)
            .collect();
        if pieces.is_empty() {
            self.deadlines.remove(&reader);
        } else {
            self.deadlines.insert(reader, pieces);
        }
        let mut order: BTreeMap<u32, usize> = BTreeMap::new();
        for list in self.deadlines.values() {
            for (rank, &p) in list.iter().enumerate() {
                let r = order.entry(p).or_insert(rank);
                *r = (*r).min(rank);
            }
        }
        self.critical = order.into_iter().map(|(p, rank)| (rank, p)).collect();
        self.critical.sort_unstable();
    }

    /// Whether any reader has time-critical pieces set.
    pub fn has_deadlines(&self) -> bool {
        !self.critical.is_empty()
    }

    /// Picks pieces in order (streaming) instead of rarest first.
    pub fn set_sequential(&mut self, on: bool) {
        self.sequential = on;
    }

    /// The verified pieces.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Sets a piece's priority (0: not wanted).
    pub fn set_priority(&mut self, piece: PieceIndex, priority: u8) {
        let piece = piece.get();
        let before = self.is_unstarted(piece);
        let had = self.have.get(piece);
        if let Some(p) = self.priority.get_mut(piece as usize) {
            match (*p > 0, priority > 0, had) {
                (false, true, false) => self.missing += 1,
                (true, false, false) => self.missing -= 1,
                _ => {}
            }
            *p = priority;
            self.top = self.priority.iter().copied().max().unwrap_or(0);
        }
        self.recount(piece, before);
    }

    /// Wanted, not had, not started.
    fn is_unstarted(&self, piece: u32) -> bool {
        self.priority_of(PieceIndex::new(piece)) > 0
            && !self.have.get(piece)
            && !self.started.get(piece)
    }

    /// Keeps `unstarted` right after a change to `piece`, which counted as unstarted before if `before`.
    fn recount(&mut self, piece: u32, before: bool) {
        match (before, self.is_unstarted(piece)) {
            (true, false) => self.unstarted -= 1,
            (false, true) => self.unstarted += 1,
            _ => {}
        }
    }

    /// Whether every wanted piece is had.
    pub fn done(&self) -> bool {
        self.missing == 0
    }

    /// Bytes of wanted pieces not yet verified.
    pub fn wanted_left(&self) -> u64 {
        (0..self.piece_sizes.len() as u32)
            .filter(|&i| self.priority[i as usize] > 0 && !self.have.get(i))
            .map(|i| u64::from(self.piece_sizes[i as usize]))
            .sum()
    }

    /// One more peer has `piece`.
    pub fn peer_has(&mut self, piece: PieceIndex) {
        if let Some(a) = self.availability.get_mut(piece.as_usize()) {
            *a += 1;
        }
    }

    /// One more peer has every piece of `bits`.
    pub fn peer_has_all(&mut self, bits: &Bitfield) {
        for i in bits.ones() {
            if let Some(a) = self.availability.get_mut(i as usize) {
                *a += 1;
            }
        }
    }

    /// A peer that had `bits` is gone (or replaced its bitfield).
    pub fn peer_gone(&mut self, bits: &Bitfield) {
        for i in bits.ones() {
            if let Some(a) = self.availability.get_mut(i as usize) {
                *a = a.saturating_sub(1);
            }
        }
    }

    /// Whether `peer` has anything we want.
    pub fn interesting(&self, peer: &Bitfield) -> bool {
        let n = self.piece_sizes.len() as u32;
        peer.and_not(&self.have, 0, n)
            .any(|i| self.priority[i as usize] > 0)
    }

    fn block_ref(&self, piece: u32, block: u32) -> BlockRef {
        let size = self.piece_sizes[piece as usize];
        let begin = block * self.block;
        BlockRef {
            index: PieceIndex::new(piece),
            begin,
            length: (size - begin).min(self.block),
        }
    }

    /// Appends up to `max` block requests for a peer that has `peer` and suggested the pieces of
    /// `suggested` (BEP 6), in the order it suggested them.
    pub fn pick(
        &mut self,
        peer: &Bitfield,
        suggested: &[PieceIndex],
        max: usize,
        out: &mut Vec<BlockRef>,
    ) {
        let start_len = out.len();
        // 0. Time-critical pieces, most urgent first: open blocks of started ones, or start them.
        for k in 0..self.critical.len() {
            if out.len() - start_len >= max {
                return;
            }
            let p = self.critical[k].1;
            if self.have.get(p) || !peer.get(p) {
                continue;
            }
            if !self.started.get(p) {
                self.start_piece(p);
            }
            self.take_open(p, max - (out.len() - start_len), out);
        }
        // 1. Open blocks of pieces already started, highest priority first.
        let mut started: Vec<u32> = self.open.iter().copied().filter(|&p| peer.get(p)).collect();
        started.sort_by_key(|&p| std::cmp::Reverse(self.priority[p as usize]));
        for p in started {
            self.take_open(p, max - (out.len() - start_len), out);
            if out.len() - start_len >= max {
                return;
            }
        }
        // 2. Pieces the peer suggested, of the highest priority: what it would rather send (a seed,
        // pieces it has not given out yet). After the started pieces, so pieces are finished before
        // new ones start (each started piece holds a buffer); not when streaming: order comes first.
        if !self.sequential {
            for p in suggested.iter().map(|p| p.get()) {
                if out.len() - start_len >= max {
                    return;
                }
                if self.priority_of(PieceIndex::new(p)) == self.top
                    && self.is_unstarted(p)
                    && peer.get(p)
                {
                    self.start_piece(p);
                    self.take_open(p, max - (out.len() - start_len), out);
                }
            }
        }
        // 3. New pieces.
        while out.len() - start_len < max {
            let Some(p) = self.choose_new(peer) else {
                break;
            };
            self.start_piece(p);
            self.take_open(p, max - (out.len() - start_len), out);
        }
    }

    /// Endgame: no wanted piece is left to start, so a block still in flight from another peer is
    /// asked of this one too (at most two requests a block), the lowest first; `None` before then, when
    /// a copy of a block another peer is sending would take upload from the swarm for nothing. The
    /// caller asks only for a peer with no request of its own in flight, one block at a time, as
    /// libtorrent does: doubling a peer's whole queue made every late block arrive twice, which a
    /// download limit paid for (512 KiB from three seeds at 150 kB/s took 5-6 s instead of 3.5).
    pub fn pick_duplicate(&mut self, peer: &Bitfield) -> Option<BlockRef> {
        if self.unstarted > 0 {
            return None;
        }
        let mut best: Option<(u32, u32)> = None;
        for (&p, partial) in &self.partial {
            if !peer.get(p) || best.is_some_and(|(bp, _)| bp < p) {
                continue;
            }
            let first = partial
                .blocks
                .iter()
                .position(|state| matches!(state, BlockState::Requested(n) if *n < 2));
            if let Some(b) = first {
                best = Some((p, b as u32));
            }
        }
        let (p, b) = best?;
        let partial = self.partial.get_mut(&p)?;
        if let BlockState::Requested(n) = partial.blocks[b as usize] {
            partial.set(b as usize, BlockState::Requested(n + 1));
        }
        Some(self.block_ref(p, b))
    }

    /// Makes `p` a started piece with every block open.
    fn start_piece(&mut self, p: u32) {
        let before = self.is_unstarted(p);
        let n = self.piece_sizes[p as usize].div_ceil(self.block);
        self.partial.insert(
            p,
            Partial {
                blocks: vec![BlockState::Open; n as usize],
                received: 0,
                open: n,
            },
        );
        self.started.set(p);
        if n > 0 {
            self.open.insert(p);
        }
        self.recount(p, before);
    }

    /// Keeps `open` right after blocks of `piece` changed state.
    fn note_open(&mut self, piece: u32) {
        if self.partial.get(&piece).is_some_and(|p| p.open > 0) {
            self.open.insert(piece);
        } else {
            self.open.remove(&piece);
        }
    }

    fn take_open(&mut self, piece: u32, max: usize, out: &mut Vec<BlockRef>) {
        let mut picked = Vec::new();
        if let Some(partial) = self.partial.get_mut(&piece) {
            for b in 0..partial.blocks.len() {
                if picked.len() >= max || partial.open == 0 {
                    break;
                }
                if partial.blocks[b] == BlockState::Open {
                    partial.set(b, BlockState::Requested(1));
                    picked.push(b as u32);
                }
            }
        }
        if picked.is_empty() {
            return;
        }
        self.note_open(piece);
        for b in picked {
            out.push(self.block_ref(piece, b));
        }
    }

    fn choose_new(&mut self, peer: &Bitfield) -> Option<u32> {
        let n = self.piece_sizes.len() as u32;
        if n == 0 {
            return None;
        }
        let offset = if self.sequential {
            0
        } else {
            self.rng.below(n as usize) as u32
        };
        let mut best: Option<(u8, u32, u32)> = None; // (priority, availability, piece)
        let top = self.top;
        // From `offset` to the end, then from 0: pieces the peer has and we lack, in scan order.
        let candidates = peer
            .and_not(&self.have, offset, n)
            .chain(peer.and_not(&self.have, 0, offset));
        for p in candidates {
            let priority = self.priority[p as usize];
            if priority == 0 {
                continue;
            }
            let avail = if self.sequential {
                0
            } else {
                self.availability[p as usize]
            };
            let better = match best {
                None => true,
                Some((bp, ba, _)) => priority > bp || (priority == bp && avail < ba),
            };
            // The map lookup last: most candidates lose on priority or availability first.
            if better && !self.started.get(p) {
                // Sequential mode scans from piece 0 with equal availability, so the first wanted piece
                // in order wins among equal priorities.
                best = Some((priority, avail, p));
                // Nothing later can win: no piece the peer has is rarer than one only it has, and
                // sequential mode needs a higher priority.
                if priority == top && (self.sequential || avail <= 1) {
                    break;
                }
            }
        }
        best.map(|(_, _, p)| p)
    }

    /// Records a received block. Blocks never asked for, of the wrong size, or already received are
    /// `Unexpected` and must be dropped.
    pub fn received(&mut self, block: &BlockRef) -> Received {
        let Some(&size) = self.piece_sizes.get(block.index.as_usize()) else {
            return Received::Unexpected;
        };
        let expected_length = size.saturating_sub(block.begin).min(self.block);
        let Some(partial) = self.partial.get_mut(&block.index.get()) else {
            return Received::Unexpected;
        };
        let b = (block.begin / self.block) as usize;
        if !block.begin.is_multiple_of(self.block)
            || b >= partial.blocks.len()
            || block.length != expected_length
        {
            return Received::Unexpected;
        }
        let duplicated = match partial.blocks[b] {
            BlockState::Received => return Received::Unexpected,
            BlockState::Requested(n) => n > 1,
            BlockState::Open => false,
        };
        partial.set(b, BlockState::Received);
        self.last_was_duplicated = duplicated;
        partial.received += 1;
        let complete = partial.received as usize == partial.blocks.len();
        self.note_open(block.index.get());
        if complete {
            Received::PieceComplete
        } else {
            Received::Accepted
        }
    }

    /// Whether the block last passed to [`Picker::received`] had also been requested from another peer
    /// (endgame), so those requests should be cancelled.
    pub fn last_was_duplicated(&self) -> bool {
        self.last_was_duplicated
    }

    /// A piece's priority (0 past the end).
    pub fn priority_of(&self, piece: PieceIndex) -> u8 {
        self.priority.get(piece.as_usize()).copied().unwrap_or(0)
    }

    /// Whether this block is wanted (requested and not yet received).
    pub fn expects(&self, block: &BlockRef) -> bool {
        self.partial
            .get(&block.index.get())
            .and_then(|p| p.blocks.get((block.begin / self.block) as usize))
            .is_some_and(|s| matches!(s, BlockState::Requested(_)))
    }

    /// A request that will not be answered (choke, reject, peer gone): the block may be asked of others.
    pub fn abandoned(&mut self, block: &BlockRef) {
        let b = (block.begin / self.block) as usize;
        if let Some(partial) = self.partial.get_mut(&block.index.get()) {
            if let Some(&state) = partial.blocks.get(b) {
                let state = match state {
                    BlockState::Requested(n) if n > 1 => BlockState::Requested(n - 1),
                    BlockState::Requested(_) => BlockState::Open,
                    other => other,
                };
                partial.set(b, state);
            }
            self.note_open(block.index.get());
        }
    }

    /// The piece passed its hash and is stored.
    pub fn verified(&mut self, piece: PieceIndex) {
        let piece = piece.get();
        let before = self.is_unstarted(piece);
        self.partial.remove(&piece);
        self.started.clear(piece);
        self.open.remove(&piece);
        if self.have.set(piece) && self.priority.get(piece as usize).is_some_and(|&p| p > 0) {
            self.missing -= 1;
        }
        self.critical.retain(|&(_, p)| p != piece);
        self.recount(piece, before);
    }

    /// The piece failed its hash: download it again from scratch.
    pub fn failed(&mut self, piece: PieceIndex) {
        let piece = piece.get();
        let before = self.is_unstarted(piece);
        self.partial.remove(&piece);
        self.started.clear(piece);
        self.open.remove(&piece);
        self.recount(piece, before);
    }

    /// Whether we would start `piece` now: wanted, not had, not started (a peer's suggestion of
    /// anything else is stale).
    pub fn would_start(&self, piece: PieceIndex) -> bool {
        self.is_unstarted(piece.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picker(pieces: u32) -> Picker {
        seeded(pieces, 1)
    }

    fn seeded(pieces: u32, seed: u64) -> Picker {
        Picker::new(
            vec![BLOCK * 2; pieces as usize],
            Bitfield::new(pieces),
            vec![1; pieces as usize],
            seed,
        )
    }

    #[test]
    fn pickers_break_ties_differently() {
        let all = Bitfield::full(1000);
        let firsts: std::collections::HashSet<u32> = (0..20)
            .map(|seed| {
                let mut p = seeded(1000, seed);
                p.peer_has_all(&all);
                let mut out = Vec::new();
                p.pick(&all, &[], 1, &mut out);
                out[0].index.get()
            })
            .collect();
        // Twenty pickers agreeing by chance on fewer than 5 of 1000 equally rare pieces is all but
        // impossible; with a shared seed they all start at the same piece.
        assert!(firsts.len() >= 5, "first picks {firsts:?}");
    }

    #[test]
    fn rarest_first_then_finish_started() {
        let mut p = picker(4);
        let all = Bitfield::full(4);
        p.peer_has_all(&all);
        p.peer_has_all(&all);
        let mut rare = Bitfield::new(4);
        rare.set(2);
        p.peer_has_all(&rare);
        // Piece 2 is as rare as the others plus one: the others are rarer... make 1 rarest.
        p.peer_gone(&{
            let mut b = Bitfield::new(4);
            b.set(1);
            b
        });
        let mut out = Vec::new();
        p.pick(&all, &[], 1, &mut out);
        assert_eq!(out[0].index, PieceIndex::new(1), "rarest piece first");
        out.clear();
        p.pick(&all, &[], 1, &mut out);
        assert_eq!(
            (out[0].index, out[0].begin),
            (PieceIndex::new(1), BLOCK),
            "then the rest of the started piece"
        );
    }

    #[test]
    fn priorities_and_completion() {
        let mut p = picker(3);
        p.set_priority(PieceIndex::new(0), 0);
        p.set_priority(PieceIndex::new(2), 7);
        let all = Bitfield::full(3);
        let mut out = Vec::new();
        p.pick(&all, &[], 10, &mut out);
        let pieces: Vec<u32> = out.iter().map(|b| b.index.get()).collect();
        assert_eq!(pieces, vec![2, 2, 1, 1]);
        assert_eq!(p.received(&out[0]), Received::Accepted);
        assert_eq!(p.received(&out[1]), Received::PieceComplete);
        assert_eq!(
            p.received(&out[1]),
            Received::Unexpected,
            "duplicates do not count"
        );
        let wrong_size = BlockRef {
            length: 5,
            ..out[2]
        };
        assert_eq!(p.received(&wrong_size), Received::Unexpected);
        p.verified(PieceIndex::new(2));
        assert!(!p.done());
        p.received(&out[2]);
        assert_eq!(p.received(&out[3]), Received::PieceComplete);
        p.verified(PieceIndex::new(1));
        assert!(p.done(), "piece 0 is not wanted");
    }

    #[test]
    fn endgame_and_abandon() {
        let mut p = picker(1);
        let all = Bitfield::full(1);
        let mut first = Vec::new();
        p.pick(&all, &[], 10, &mut first);
        assert_eq!(first.len(), 2);
        let mut none = Vec::new();
        p.pick(&all, &[], 10, &mut none);
        assert!(none.is_empty(), "pick makes no copies");
        let second: Vec<BlockRef> = std::iter::from_fn(|| p.pick_duplicate(&all)).collect();
        assert_eq!(
            second, first,
            "endgame re-requests in-flight blocks, once each"
        );
        assert_eq!(p.received(&second[1]), Received::Accepted);
        assert!(
            p.last_was_duplicated(),
            "the other request for it is to be cancelled"
        );
        p.abandoned(&second[1]);
        assert_eq!(
            p.pick_duplicate(&all),
            None,
            "at most two requests per block"
        );
        p.abandoned(&first[0]);
        p.abandoned(&first[0]);
        let mut again = Vec::new();
        p.pick(&all, &[], 10, &mut again);
        assert_eq!(again, vec![first[0]]);
    }

    #[test]
    fn sequential_mode_goes_in_order() {
        let mut p = picker(5);
        p.set_sequential(true);
        let all = Bitfield::full(5);
        p.peer_has_all(&all);
        let mut out = Vec::new();
        p.pick(&all, &[], 6, &mut out);
        let pieces: Vec<u32> = out.iter().map(|b| b.index.get()).collect();
        assert_eq!(pieces, vec![0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn deadline_pieces_go_first_in_order_then_the_rest() {
        let mut p = picker(100);
        let all = Bitfield::full(100);
        p.peer_has_all(&all);
        // A started piece of high priority would otherwise come first.
        p.set_priority(PieceIndex::new(3), 7);
        let mut out = Vec::new();
        p.pick(&all, &[], 1, &mut out);
        assert_eq!(out[0].index, PieceIndex::new(3));
        // Reader 1 reads at piece 50 (then 51, 52), reader 2 at piece 80 (then 81).
        p.set_deadlines(
            1,
            vec![
                PieceIndex::new(50),
                PieceIndex::new(51),
                PieceIndex::new(52),
            ],
        );
        p.set_deadlines(2, vec![PieceIndex::new(80), PieceIndex::new(81)]);
        let mut out = Vec::new();
        p.pick(&all, &[], 8, &mut out);
        let pieces: Vec<u32> = out.iter().map(|b| b.index.get()).collect();
        assert_eq!(
            pieces,
            vec![50, 50, 80, 80, 51, 51, 81, 81],
            "each reader's current piece, then the read-ahead, before the started piece 3"
        );
        let mut out = Vec::new();
        p.pick(&all, &[], 3, &mut out);
        let pieces: Vec<u32> = out.iter().map(|b| b.index.get()).collect();
        assert_eq!(pieces, vec![52, 52, 3]);
        // A verified piece leaves the critical list; clearing a reader drops its pieces.
        for b in [50u32, 51] {
            for begin in [0, BLOCK] {
                p.received(&BlockRef {
                    index: PieceIndex::new(b),
                    begin,
                    length: BLOCK,
                });
            }
            p.verified(PieceIndex::new(b));
        }
        p.set_deadlines(2, Vec::new());
        p.set_deadlines(1, vec![PieceIndex::new(51), PieceIndex::new(60)]);
        let mut out = Vec::new();
        p.pick(&all, &[], 2, &mut out);
        let pieces: Vec<u32> = out.iter().map(|b| b.index.get()).collect();
        assert_eq!(pieces, vec![60, 60], "had pieces are skipped");
        assert!(p.has_deadlines());
        p.set_deadlines(1, Vec::new());
        assert!(!p.has_deadlines());
    }

    #[test]
    fn short_last_piece_blocks() {
        let mut p = Picker::new(vec![BLOCK * 2, 100], Bitfield::new(2), vec![1, 1], 1);
        let all = Bitfield::full(2);
        p.set_sequential(true);
        let mut out = Vec::new();
        p.pick(&all, &[], 10, &mut out);
        assert_eq!(
            out.last().unwrap(),
            &BlockRef {
                index: PieceIndex::new(1),
                begin: 0,
                length: 100
            }
        );
    }

    #[test]
    fn done_follows_priorities_and_verified_pieces() {
        let mut p = picker(3);
        p.verified(PieceIndex::new(0));
        p.set_priority(PieceIndex::new(1), 0);
        assert!(!p.done(), "piece 2 is wanted and missing");
        p.set_priority(PieceIndex::new(2), 0);
        assert!(p.done(), "nothing wanted is missing");
        p.set_priority(PieceIndex::new(0), 0);
        p.set_priority(PieceIndex::new(0), 3);
        assert!(p.done(), "a had piece's priority changes nothing");
        p.set_priority(PieceIndex::new(2), 5);
        p.set_priority(PieceIndex::new(2), 1);
        assert!(!p.done());
        p.verified(PieceIndex::new(2));
        p.verified(PieceIndex::new(2));
        assert!(p.done());
        p.set_priority(PieceIndex::new(1), 1);
        assert!(!p.done());
    }
}
