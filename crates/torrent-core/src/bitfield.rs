//! Piece sets as BEP 3 bitfields (most significant bit first).

use bytes::Bytes;

/// A set of piece indices below `len`, with its count kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
    count: u32,
}

impl Bitfield {
    /// An empty set of `len` pieces.
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            bits: vec![0; (len as usize).div_ceil(8)],
            len,
            count: 0,
        }
    }

    /// Every one of `len` pieces.
    pub fn full(len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// From wire bytes already checked for length and spare bits.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            if bytes
                .get(i as usize / 8)
                .is_some_and(|byte| byte & (0x80 >> (i % 8)) != 0)
            {
                b.set(i);
            }
        }
        b
    }

    /// Pieces in the torrent (not pieces set).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the torrent has no pieces at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pieces set.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether every piece is set.
    pub fn is_complete(&self) -> bool {
        self.count == self.len
    }

    /// Whether piece `i` is set (false past the end).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[i as usize / 8] & (0x80 >> (i % 8)) != 0
    }

    /// Sets bit `i`; returns whether it was newly set.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bits[i as usize / 8] |= 0x80 >> (i % 8);
        self.count += 1;
        true
    }

    /// Unsets bit `i`.
    pub fn clear(&mut self, i: u32) {
        if self.get(i) {
            self.bits[i as usize / 8] &= !(0x80 >> (i % 8));
            self.count -= 1;
        }
    }

    /// The wire form, most significant bit first.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(&self.bits)
    }

    /// The set pieces in order.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }

    /// The pieces in `from..to` set here and clear in `other`, in order. Whole bytes are combined and
    /// empty ones skipped: the picker asks this per request, and a bit-by-bit scan of a few thousand
    /// pieces dominated a simulated swarm's time.
    pub fn and_not<'a>(
        &'a self,
        other: &'a Bitfield,
        from: u32,
        to: u32,
    ) -> impl Iterator<Item = u32> + 'a {
        let to = to.min(self.len);
        let end = (to as usize).div_ceil(8);
        let (mut i, mut byte, mut base) = ((from / 8) as usize, 0u8, 0u32);
        std::iter::from_fn(move || loop {
            if byte != 0 {
                let b = byte.leading_zeros();
                byte &= !(0x80 >> b);
                let p = base + b;
                if p >= from {
                    return (p < to).then_some(p);
                }
                continue;
            }
            if i >= end {
                return None;
            }
            byte = self.bits[i] & !other.bits.get(i).copied().unwrap_or(0);
            base = i as u32 * 8;
            i += 1;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msb_first_and_counts() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0) && b.set(9) && !b.set(9) && !b.set(10));
        assert_eq!(&b.to_bytes()[..], &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        let c = Bitfield::from_bytes(&[0x80, 0x40], 10);
        assert_eq!(b, c);
        b.clear(0);
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![9]);
        assert!(Bitfield::full(10).is_complete());
    }

    #[test]
    fn and_not_matches_a_bit_by_bit_scan() {
        let (mut a, mut b) = (Bitfield::new(37), Bitfield::new(37));
        for i in (0..37).filter(|i| i % 3 != 1) {
            a.set(i);
        }
        for i in (0..37).filter(|i| i % 5 == 0) {
            b.set(i);
        }
        for (from, to) in [
            (0, 37),
            (0, 0),
            (5, 17),
            (8, 16),
            (9, 40),
            (36, 37),
            (20, 3),
        ] {
            let want: Vec<u32> = (from..to.min(37))
                .filter(|&i| a.get(i) && !b.get(i))
                .collect();
            assert_eq!(
                a.and_not(&b, from, to).collect::<Vec<_>>(),
                want,
                "{from}..{to}"
            );
        }
    }
}
