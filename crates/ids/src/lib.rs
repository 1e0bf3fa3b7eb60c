//! BitTorrent's identifiers as types of their own, so an info-hash is not passed where a peer id is
//! meant (both are `[u8; 20]` on the wire), nor a block offset or a count where a piece index is (all
//! are `u32`). No dependencies: the protocol crates (`wire`, `tracker-proto`), the torrent core, the
//! engine and the tracker all use these.
//!
//! The 20-byte ids dereference to their bytes, so code that reads them as `&[u8; 20]` (hex, hashing,
//! indexing) keeps working; building one from bytes is explicit (`InfoHash::from(bytes)`).

use std::fmt;
use std::ops::Deref;

macro_rules! id20 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 20]);

        impl $name {
            pub const fn new(bytes: [u8; 20]) -> $name {
                $name(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; 20] {
                &self.0
            }

            /// Lower-case hex, 40 digits.
            pub fn to_hex(&self) -> String {
                self.0.iter().map(|b| format!("{b:02x}")).collect()
            }

            /// From 40 hex digits (either case); `None` for anything else.
            pub fn from_hex(text: &str) -> Option<$name> {
                let text = text.as_bytes();
                if text.len() != 40 {
                    return None;
                }
                let mut out = [0u8; 20];
                for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
                    let digits = std::str::from_utf8(pair).ok()?;
                    *byte = u8::from_str_radix(digits, 16).ok()?;
                }
                Some($name(out))
            }
        }

        impl From<[u8; 20]> for $name {
            fn from(bytes: [u8; 20]) -> $name {
                $name(bytes)
            }
        }

        impl From<$name> for [u8; 20] {
            fn from(id: $name) -> [u8; 20] {
                id.0
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = std::array::TryFromSliceError;
            fn try_from(bytes: &[u8]) -> Result<$name, Self::Error> {
                <[u8; 20]>::try_from(bytes).map($name)
            }
        }

        impl Deref for $name {
            type Target = [u8; 20];
            fn deref(&self) -> &[u8; 20] {
                &self.0
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl PartialEq<[u8; 20]> for $name {
            fn eq(&self, other: &[u8; 20]) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for [u8; 20] {
            fn eq(&self, other: &$name) -> bool {
                self == &other.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
    };
}

id20!(
    /// The id a torrent goes by on the wire (handshakes, trackers, the DHT, LSD): its v1 info-hash, or
    /// its v2 one truncated to 20 bytes (BEP 52).
    InfoHash
);

id20!(
    /// A peer's id, from its handshake or a tracker announce.
    PeerId
);

/// A piece's number within a torrent (BEP 3's `index`), as the wire carries it. Made from a `u32`
/// with `new`, or from a `usize` position only through the checked `TryFrom`, so a block offset, a
/// length or a count is never taken for one by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceIndex(u32);

impl PieceIndex {
    pub const fn new(index: u32) -> PieceIndex {
        PieceIndex(index)
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    /// For indexing per-piece tables (lossless: `usize` is at least 32 bits wherever this builds).
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }
}

// A 16-bit `usize` would make `as_usize` lossy.
const _: () = assert!(usize::BITS >= 32);

impl TryFrom<usize> for PieceIndex {
    type Error = std::num::TryFromIntError;
    fn try_from(index: usize) -> Result<PieceIndex, Self::Error> {
        u32::try_from(index).map(PieceIndex)
    }
}

impl fmt::Display for PieceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_anything_else() {
        let id = InfoHash::new([0xab; 20]);
        assert_eq!(id.to_hex(), "ab".repeat(20));
        assert_eq!(InfoHash::from_hex(&id.to_hex()), Some(id));
        assert_eq!(InfoHash::from_hex(&"AB".repeat(20)), Some(id));
        assert_eq!(InfoHash::from_hex(&"ab".repeat(19)), None);
        assert_eq!(InfoHash::from_hex(&"zz".repeat(20)), None);
        assert_eq!(InfoHash::from_hex(&"é".repeat(20)), None);
        assert_eq!(format!("{id}"), "ab".repeat(20));
        assert_eq!(
            format!("{:?}", PeerId::new([1; 20])),
            format!("PeerId({})", "01".repeat(20))
        );
    }

    #[test]
    fn bytes_convert_both_ways_and_compare() {
        let bytes = [7u8; 20];
        let id = InfoHash::from(bytes);
        assert_eq!(id, bytes);
        assert_eq!(bytes, id);
        assert_eq!(<[u8; 20]>::from(id), bytes);
        assert_eq!(InfoHash::try_from(&bytes[..]).ok(), Some(id));
        assert!(InfoHash::try_from(&bytes[..19]).is_err());
        assert_eq!(id[3], 7);
    }

    #[test]
    fn piece_index_converts_only_where_it_cannot_lose() {
        let i = PieceIndex::new(7);
        assert_eq!(
            (i.get(), i.as_usize(), format!("{i}")),
            (7, 7, "7".to_string())
        );
        assert_eq!(PieceIndex::try_from(7usize), Ok(i));
        assert!(PieceIndex::try_from(u32::MAX as usize + 1).is_err());
        assert!(PieceIndex::new(1) < PieceIndex::new(2));
    }
}
