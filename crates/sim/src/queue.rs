//! The event queue: a timing wheel of ~1 ms buckets over the next second of virtual time, a small
//! binary heap for the bucket being run, and a heap for what lies beyond the wheel.
//!
//! It pops in exactly the order a single binary heap of (time, sequence) would, so a run is the same
//! event for event; it is faster because the heap it works on at any time holds one bucket's events
//! (hundreds, in cache) instead of the whole run's (hundreds of thousands, mostly `Have`s in flight).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Virtual nanoseconds since the start of the run.
pub type Time = u64;

/// Bucket width: 2^20 ns, about 1 ms.
const SHIFT: u32 = 20;
/// Buckets on the wheel: about 1.07 s ahead (one-way delays, blocks on the wire, the 1 s tick).
const BUCKETS: u64 = 1024;

pub struct Entry<E> {
    pub at: Time,
    pub seq: u64,
    pub ev: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    // Reversed: a heap's top is the earliest event, the first scheduled among equal times.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

pub struct Queue<E> {
    seq: u64,
    /// The bucket number (time >> SHIFT) being run: its events are in `current`.
    cur: u64,
    current: BinaryHeap<Entry<E>>,
    /// Bucket `b` (cur < b < cur + BUCKETS) is `wheel[b % BUCKETS]`, unordered.
    wheel: Vec<Vec<Entry<E>>>,
    on_wheel: usize,
    /// Events past the wheel's end.
    far: BinaryHeap<Entry<E>>,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            seq: 0,
            cur: 0,
            current: BinaryHeap::new(),
            wheel: (0..BUCKETS).map(|_| Vec::new()).collect(),
            on_wheel: 0,
            far: BinaryHeap::new(),
        }
    }
}

impl<E> Queue<E> {
    /// Schedules `ev` at `at`, after everything already scheduled at the same time.
    pub fn push(&mut self, at: Time, ev: E) {
        self.seq += 1;
        self.place(Entry {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// Schedules `ev` at `at` with a tie-break the caller chose: among equal times, lower `seq` first.
    pub fn push_seq(&mut self, at: Time, seq: u64, ev: E) {
        self.place(Entry { at, seq, ev });
    }

    fn place(&mut self, e: Entry<E>) {
        let b = e.at >> SHIFT;
        if b <= self.cur {
            self.current.push(e);
        } else if b < self.cur + BUCKETS {
            self.wheel[(b % BUCKETS) as usize].push(e);
            self.on_wheel += 1;
        } else {
            self.far.push(e);
        }
    }

    /// The earliest event (the first scheduled among equal times).
    pub fn pop(&mut self) -> Option<Entry<E>> {
        loop {
            if let Some(e) = self.current.pop() {
                return Some(e);
            }
            if self.on_wheel == 0 {
                // Nothing within a second: jump straight to the far heap's first bucket.
                let b = self.far.peek()?.at >> SHIFT;
                self.cur = b.max(self.cur + 1);
            } else {
                self.cur += 1;
            }
            let slot = (self.cur % BUCKETS) as usize;
            let bucket = std::mem::take(&mut self.wheel[slot]);
            self.on_wheel -= bucket.len();
            // The emptied heap's storage becomes the slot's, so buckets stop allocating once warm.
            let spare = std::mem::replace(&mut self.current, BinaryHeap::from(bucket));
            self.wheel[slot] = spare.into_vec();
            // The wheel moved on by one bucket: what was past its end may now be on it.
            while self
                .far
                .peek()
                .is_some_and(|e| e.at >> SHIFT < self.cur + BUCKETS)
            {
                if let Some(e) = self.far.pop() {
                    self.place(e);
                }
            }
        }
    }

    /// The earliest event if it is due before `limit`.
    pub fn pop_before(&mut self, limit: Time) -> Option<Entry<E>> {
        let e = self.pop()?;
        if e.at < limit {
            return Some(e);
        }
        // `pop` moved the wheel to its bucket: it goes back to the front.
        self.current.push(e);
        None
    }

    /// Every event still scheduled, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<E>> {
        self.current
            .iter()
            .chain(self.wheel.iter().flatten())
            .chain(self.far.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_then_schedule_order_as_one_heap_would() {
        let mut q = Queue::default();
        let mut heap = BinaryHeap::new();
        let mut x: u64 = 12345;
        let mut seq = 0;
        let mut now = 0;
        for round in 0..20_000u64 {
            // A mix of near, same-time, next-bucket and far (beyond the wheel) events.
            for _ in 0..(round % 3) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = now
                    + match x % 5 {
                        0 => 0,
                        1 => x % 1000,
                        2 => x % (1 << 22),
                        3 => x % (3 << 30),
                        _ => 1 << SHIFT,
                    };
                seq += 1;
                q.push(at, seq);
                heap.push(Entry { at, seq, ev: seq });
            }
            match (q.pop(), heap.pop()) {
                (Some(a), Some(b)) => {
                    assert_eq!((a.at, a.ev), (b.at, b.ev));
                    now = a.at;
                }
                (None, None) => {}
                _ => panic!("one queue ran dry before the other"),
            }
        }
        while let Some(b) = heap.pop() {
            let a = q.pop().map(|a| (a.at, a.ev));
            assert_eq!(a, Some((b.at, b.ev)));
        }
        assert!(q.pop().is_none());
    }
}
