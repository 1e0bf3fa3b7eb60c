//! Which piece a seed suggests next (BEP 6 Suggest Piece): one it has not yet given out in full as
//! often as every other piece, so a swarm gets a first copy of every piece from it before a second copy
//! of any (what BEP 16 super-seeding aims at, without hiding pieces from anyone).

use wire::PieceIndex;

use crate::bitfield::Bitfield;
use crate::rng::Rng;

/// Pieces looked at per suggestion, at most: a peer that has nearly everything we still owe the round
/// gets no suggestion rather than a scan of every piece at each of its requests.
const MAX_SCAN: usize = 256;

/// The bytes uploaded of each piece, and a walk over the pieces in a seeded order.
pub(crate) struct Suggester {
    /// Every piece once, shuffled by the torrent's seed: seeds of one swarm suggest in different
    /// orders.
    order: Vec<u32>,
    at: usize,
    /// Pieces whose uploaded bytes are below `round` copies are due; the round moves on once none is.
    round: u64,
    due: usize,
    sent: Vec<u64>,
    sizes: Vec<u64>,
}

impl Suggester {
    pub(crate) fn new(piece_sizes: &[u32], seed: u64) -> Suggester {
        let n = piece_sizes.len();
        let mut rng = Rng::new(seed ^ 0x0073_7567_6765_7374);
        let mut order: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        Suggester {
            order,
            at: 0,
            round: 1,
            due: piece_sizes.iter().filter(|&&s| s > 0).count(),
            sent: vec![0; n],
            sizes: piece_sizes.iter().map(|&s| u64::from(s)).collect(),
        }
    }

    fn is_due(&self, piece: usize) -> bool {
        self.sent[piece] < self.round * self.sizes[piece]
    }

    /// The next due piece the peer (with `has`) lacks and was not already offered (`offered`).
    pub(crate) fn next(&mut self, has: &Bitfield, offered: &[PieceIndex]) -> Option<PieceIndex> {
        let n = self.order.len();
        for _ in 0..n.min(MAX_SCAN) {
            let piece = PieceIndex::new(self.order[self.at]);
            self.at = (self.at + 1) % n;
            if self.is_due(piece.as_usize()) && !has.get(piece.get()) && !offered.contains(&piece) {
                return Some(piece);
            }
        }
        None
    }

    /// `bytes` of `piece` went out (to anyone, suggested or not).
    pub(crate) fn uploaded(&mut self, piece: PieceIndex, bytes: u64) {
        let p = piece.as_usize();
        if p >= self.sent.len() {
            return;
        }
        let was_due = self.is_due(p);
        self.sent[p] = self.sent[p].saturating_add(bytes);
        if was_due && !self.is_due(p) {
            self.due -= 1;
            while self.due == 0 && !self.sent.is_empty() {
                self.round += 1;
                self.due = (0..self.sent.len()).filter(|&i| self.is_due(i)).count();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_piece_once_before_any_twice() {
        let mut s = Suggester::new(&[100; 8], 1);
        let none = Bitfield::new(8);
        let mut first = Vec::new();
        for _ in 0..8 {
            let p = s.next(&none, &first).expect("a due piece");
            first.push(p);
        }
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..8).map(PieceIndex::new).collect::<Vec<_>>());
        // Nothing uploaded yet: the walk comes round to the same pieces.
        assert_eq!(s.next(&none, &[]), Some(first[0]));
        // Piece first[1] goes out in full (in two parts): it is skipped until every piece has.
        s.uploaded(first[1], 60);
        s.uploaded(first[1], 40);
        let next: Vec<PieceIndex> = (0..7).filter_map(|_| s.next(&none, &[])).collect();
        assert!(!next.contains(&first[1]), "{next:?}");
        for p in (0..8).map(PieceIndex::new) {
            if p != first[1] {
                s.uploaded(p, 100);
            }
        }
        // Round two: every piece is due again.
        let again: Vec<PieceIndex> = (0..8).filter_map(|_| s.next(&none, &[])).collect();
        assert_eq!(again.len(), 8);
    }

    #[test]
    fn pieces_the_peer_has_are_passed_over() {
        let mut s = Suggester::new(&[100; 4], 2);
        let mut has = Bitfield::full(4);
        assert_eq!(s.next(&has, &[]), None);
        has = Bitfield::new(4);
        has.set(2);
        for _ in 0..6 {
            assert_ne!(s.next(&has, &[]), Some(PieceIndex::new(2)));
        }
    }
}
