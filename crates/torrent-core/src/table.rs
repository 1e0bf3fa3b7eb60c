//! [`KeyTable`]: the peer table's map from key to peer, kept as two vectors sorted by key.
//!
//! Peer keys only ever grow (a new connection gets the next one), so an insert is a push, a lookup a
//! binary search over a few hundred contiguous bytes, and iteration runs in key order as the
//! `BTreeMap` it replaces did (the choker's and PEX's tie-breaks follow that order). A lookup is what
//! every message costs (a swarm of 1 000 simulated cores spends most of its time on them), and a
//! B-tree's walk through nodes of large values was several cache misses of it.

use std::ops::Index;

#[derive(Debug, Clone)]
pub(crate) struct KeyTable<V> {
    keys: Vec<u64>,
    values: Vec<V>,
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable {
            keys: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<V> KeyTable<V> {
    fn find(&self, key: u64) -> Result<usize, usize> {
        // The newest key is the likeliest insert and a common lookup: try the end first.
        match self.keys.last() {
            Some(&last) if last < key => Err(self.keys.len()),
            Some(&last) if last == key => Ok(self.keys.len() - 1),
            _ => self.keys.binary_search(&key),
        }
    }

    pub(crate) fn get(&self, key: &u64) -> Option<&V> {
        self.find(*key).ok().map(|i| &self.values[i])
    }

    pub(crate) fn get_mut(&mut self, key: &u64) -> Option<&mut V> {
        self.find(*key).ok().map(|i| &mut self.values[i])
    }

    /// Inserts or replaces; returns the value replaced.
    pub(crate) fn insert(&mut self, key: u64, value: V) -> Option<V> {
        match self.find(key) {
            Ok(i) => Some(std::mem::replace(&mut self.values[i], value)),
            Err(i) => {
                self.keys.insert(i, key);
                self.values.insert(i, value);
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &u64) -> Option<V> {
        let i = self.find(*key).ok()?;
        self.keys.remove(i);
        Some(self.values.remove(i))
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Keys in ascending order.
    pub(crate) fn keys(&self) -> std::slice::Iter<'_, u64> {
        self.keys.iter()
    }

    /// Values in key order.
    pub(crate) fn values(&self) -> std::slice::Iter<'_, V> {
        self.values.iter()
    }

    pub(crate) fn values_mut(&mut self) -> std::slice::IterMut<'_, V> {
        self.values.iter_mut()
    }

    pub(crate) fn iter_mut(
        &mut self,
    ) -> impl DoubleEndedIterator<Item = (&u64, &mut V)> + ExactSizeIterator {
        self.keys.iter().zip(self.values.iter_mut())
    }

    /// (key, value) pairs in key order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&u64, &V)> + ExactSizeIterator {
        self.keys.iter().zip(self.values.iter())
    }
}

impl<V> Index<&u64> for KeyTable<V> {
    type Output = V;

    fn index(&self, key: &u64) -> &V {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no entry for key {key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn behaves_as_a_btree_map() {
        let mut t = KeyTable::default();
        let mut m = BTreeMap::new();
        let mut x: u64 = 99;
        for i in 0..5_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 4 {
                0 | 1 => assert_eq!(t.insert(i, x), m.insert(i, x)),
                2 => {
                    let k = x % (i + 1);
                    assert_eq!(t.remove(&k), m.remove(&k));
                }
                _ => {
                    let k = x % (i + 1);
                    assert_eq!(t.insert(k, x), m.insert(k, x));
                    assert_eq!(t.get(&k), m.get(&k));
                }
            }
            assert_eq!(t.len(), m.len());
        }
        assert!(t.iter().eq(m.iter()));
        assert!(t.keys().eq(m.keys()));
        assert!(t.values().eq(m.values()));
        for k in 0..5_000 {
            assert_eq!(t.get(&k).is_some(), m.contains_key(&k));
        }
    }
}
