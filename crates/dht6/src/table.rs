//! The routing table: 160 buckets by the length of the prefix a node's id shares with ours, at most
//! [`K`] nodes each. A full bucket takes a newcomer only in place of a node that failed to answer.

use std::net::SocketAddrV6;

/// A 160-bit node id or info-hash.
pub type NodeId = [u8; 20];

/// Nodes per bucket, and how many closest nodes a lookup settles on (BEP 5).
pub const K: usize = 8;
/// Unanswered queries in a row after which a node leaves the table.
const MAX_FAILS: u8 = 3;

/// The XOR distance between two ids, comparable as bytes.
pub fn distance(a: &NodeId, b: &NodeId) -> NodeId {
    let mut d = [0u8; 20];
    for i in 0..20 {
        d[i] = a[i] ^ b[i];
    }
    d
}

fn bucket_of(own: &NodeId, id: &NodeId) -> usize {
    let d = distance(own, id);
    let zeros = d
        .iter()
        .position(|&b| b != 0)
        .map_or(160, |i| i * 8 + d[i].leading_zeros() as usize);
    zeros.min(159)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: NodeId,
    addr: SocketAddrV6,
    fails: u8,
}

#[derive(Debug, Clone)]
pub struct Table {
    own: NodeId,
    buckets: Vec<Vec<Entry>>,
}

impl Table {
    pub fn new(own: NodeId) -> Table {
        Table {
            own,
            buckets: vec![Vec::new(); 160],
        }
    }

    /// A node answered us, or queried us: kept, or refreshed (its failures forgotten).
    pub fn seen(&mut self, id: NodeId, addr: SocketAddrV6) {
        if id == self.own || !usable(&addr) {
            return;
        }
        let bucket = &mut self.buckets[bucket_of(&self.own, &id)];
        if let Some(e) = bucket.iter_mut().find(|e| e.id == id) {
            // An id that moves address keeps the old one until that stops answering.
            if e.addr == addr {
                e.fails = 0;
            }
            return;
        }
        if bucket.iter().any(|e| e.addr == addr) {
            return;
        }
        if bucket.len() < K {
            bucket.push(Entry { id, addr, fails: 0 });
        } else if let Some(worst) = bucket
            .iter_mut()
            .filter(|e| e.fails > 0)
            .max_by_key(|e| e.fails)
        {
            *worst = Entry { id, addr, fails: 0 };
        }
    }

    /// A query to `addr` went unanswered.
    pub fn failed(&mut self, addr: &SocketAddrV6) {
        for bucket in &mut self.buckets {
            for e in bucket.iter_mut().filter(|e| e.addr == *addr) {
                e.fails = e.fails.saturating_add(1);
            }
            bucket.retain(|e| e.fails < MAX_FAILS);
        }
    }

    /// Up to `n` nodes closest to `target`, closest first.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<(NodeId, SocketAddrV6)> {
        let mut all: Vec<&Entry> = self.buckets.iter().flatten().collect();
        all.sort_by_key(|e| distance(&e.id, target));
        all.into_iter().take(n).map(|e| (e.id, e.addr)).collect()
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every node's address (for saving the table).
    pub fn addresses(&self) -> Vec<SocketAddrV6> {
        self.buckets.iter().flatten().map(|e| e.addr).collect()
    }
}

/// Whether a node may be at `addr`: a port, and a unicast address.
pub(crate) fn usable(addr: &SocketAddrV6) -> bool {
    addr.port() != 0 && !addr.ip().is_unspecified() && !addr.ip().is_multicast()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u16) -> SocketAddrV6 {
        format!("[2001:db8::{i:x}]:6881").parse().unwrap()
    }

    #[test]
    fn a_full_bucket_takes_newcomers_only_in_place_of_failing_nodes() {
        let own = [0u8; 20];
        let mut t = Table::new(own);
        // All in bucket 0: the top bit differs from ours.
        for i in 0..12u8 {
            let mut id = [0u8; 20];
            id[0] = 0x80;
            id[19] = i;
            t.seen(id, addr(u16::from(i) + 1));
        }
        assert_eq!(t.len(), K);
        t.failed(&addr(3));
        let mut id = [0u8; 20];
        id[0] = 0x80;
        id[19] = 99;
        t.seen(id, addr(99));
        assert_eq!(t.len(), K);
        assert!(t.addresses().contains(&addr(99)));
        assert!(!t.addresses().contains(&addr(3)));
        for _ in 0..MAX_FAILS {
            t.failed(&addr(99));
        }
        assert_eq!(t.len(), K - 1);
    }

    #[test]
    fn closest_is_by_xor_distance() {
        let mut t = Table::new([0xff; 20]);
        // All share bucket 0 with each other: the first K stay.
        for i in 1..=20u8 {
            t.seen([i; 20], addr(u16::from(i)));
        }
        let got: Vec<NodeId> = t
            .closest(&[4; 20], 3)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(got, vec![[4; 20], [5; 20], [6; 20]]);
        // Ourselves and unusable addresses are never kept.
        t.seen([0xff; 20], addr(77));
        t.seen([77; 20], "[::]:1".parse().unwrap());
        t.seen([78; 20], "[2001:db8::1]:0".parse().unwrap());
        assert_eq!(t.len(), K);
    }
}
