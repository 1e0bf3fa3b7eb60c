//! The event queue: events bucketed by window of virtual time (a ring of buckets over the next few
//! hundred windows, a map beyond), each bucket unordered. The simulator runs one window at a time and
//! sorts its bucket once, by node and then (time, sequence): nothing needs the events in a global
//! order, so the binary heaps this replaces (a push and a pop of a log-n sift each, per event) were
//! work for nothing.

use std::collections::BTreeMap;

/// Virtual nanoseconds since the start of the run.
pub type Time = u64;

/// Buckets on the ring: with the simulator's 10 ms windows, 2.56 s ahead (one-way delays, blocks on
/// the wire, the 1 s tick); later events wait in the map.
const RING: u64 = 256;

#[derive(Debug)]
pub struct Entry<E> {
    pub at: Time,
    pub seq: u64,
    pub ev: E,
}

pub struct Windows<E> {
    width: Time,
    /// The window of `ring[head]`; no event is earlier.
    base: u64,
    head: usize,
    ring: Vec<Vec<Entry<E>>>,
    on_ring: usize,
    far: BTreeMap<u64, Vec<Entry<E>>>,
}

impl<E> Windows<E> {
    /// A queue of windows `width` long (at least 1 ns).
    pub fn new(width: Time) -> Windows<E> {
        Windows {
            width: width.max(1),
            base: 0,
            head: 0,
            ring: (0..RING).map(|_| Vec::new()).collect(),
            on_ring: 0,
            far: BTreeMap::new(),
        }
    }

    /// The window `at` falls in.
    pub fn window_of(&self, at: Time) -> u64 {
        at / self.width
    }

    /// Schedules `e`; it must not be earlier than the last window taken.
    pub fn push(&mut self, e: Entry<E>) {
        let w = self.window_of(e.at);
        debug_assert!(w >= self.base, "an event scheduled in a window already run");
        let ahead = w.saturating_sub(self.base);
        if ahead < RING {
            let slot = (self.head + ahead as usize) % RING as usize;
            self.ring[slot].push(e);
            self.on_ring += 1;
        } else {
            self.far.entry(w).or_default().push(e);
        }
    }

    /// The earliest window holding an event.
    pub fn next(&self) -> Option<u64> {
        if self.on_ring > 0 {
            (0..RING).find_map(|i| {
                let slot = (self.head + i as usize) % RING as usize;
                (!self.ring[slot].is_empty()).then_some(self.base + i)
            })
        } else {
            self.far.keys().next().copied()
        }
    }

    /// Takes window `w`'s events, unordered, into `into` (emptied first); no earlier window may hold
    /// any.
    pub fn take(&mut self, w: u64, into: &mut Vec<Entry<E>>) {
        into.clear();
        if w < self.base {
            return;
        }
        if self.on_ring == 0 {
            self.base = w;
        } else {
            while self.base < w {
                debug_assert!(self.ring[self.head].is_empty(), "a window was skipped");
                self.head = (self.head + 1) % RING as usize;
                self.base += 1;
            }
        }
        // What was past the ring's end may be on it now.
        while let Some(entry) = self.far.first_entry() {
            let fw = *entry.key();
            if fw >= self.base + RING {
                break;
            }
            let slot = (self.head + (fw - self.base) as usize) % RING as usize;
            let events = entry.remove();
            self.on_ring += events.len();
            if self.ring[slot].is_empty() {
                self.ring[slot] = events;
            } else {
                self.ring[slot].extend(events);
            }
        }
        std::mem::swap(&mut self.ring[self.head], into);
        self.on_ring -= into.len();
    }

    /// Every event still scheduled, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<E>> {
        self.ring
            .iter()
            .flatten()
            .chain(self.far.values().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_hold_exactly_their_events_however_far_ahead() {
        let width = 10_000;
        let mut q = Windows::new(width);
        let mut all: Vec<(Time, u64)> = Vec::new();
        let mut x: u64 = 12345;
        let mut seq = 0;
        let mut now = 0;
        let mut got: Vec<(Time, u64)> = Vec::new();
        let mut bucket = Vec::new();
        for round in 0..20_000u64 {
            // A mix of this window's end, next window, near and far (beyond the ring) events.
            for _ in 0..(round % 3) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let start = (now / width + 1) * width;
                let at = start
                    + match x % 4 {
                        0 => x % width,
                        1 => x % (width * 40),
                        2 => x % (width * 3 * RING),
                        _ => 0,
                    };
                seq += 1;
                q.push(Entry { at, seq, ev: () });
                all.push((at, seq));
            }
            if round % 2 == 0 {
                if let Some(w) = q.next() {
                    q.take(w, &mut bucket);
                    assert!(!bucket.is_empty());
                    for e in &bucket {
                        assert_eq!(q.window_of(e.at), w);
                    }
                    let mut b: Vec<(Time, u64)> = bucket.iter().map(|e| (e.at, e.seq)).collect();
                    b.sort_unstable();
                    got.extend(b);
                    now = w * width;
                }
            }
        }
        while let Some(w) = q.next() {
            q.take(w, &mut bucket);
            let mut b: Vec<(Time, u64)> = bucket.iter().map(|e| (e.at, e.seq)).collect();
            b.sort_unstable();
            got.extend(b);
        }
        all.sort_unstable();
        assert_eq!(got, all);
        assert_eq!(q.iter().count(), 0);
    }
}
