//! BEP 9 `ut_metadata` messages: fetching a torrent's info dictionary from peers, 16 KiB at a time.

use bencode::{DictBuilder, Owned, Value};

use crate::WireError;

/// Metadata is sent in pieces of this size (the last may be shorter).
pub const METADATA_PIECE: usize = 16 * 1024;
/// Largest info dictionary accepted from a peer. Above libtorrent's default limit (30 MiB), so a torrent
/// it will share is one we can fetch; huge collections do reach tens of MiB. A peer cannot make us
/// allocate this by claiming it: the engine only grows its buffer as pieces actually arrive.
pub const MAX_METADATA: usize = 32 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMessage {
    Request {
        piece: u32,
    },
    Data {
        piece: u32,
        total_size: u64,
        data: Vec<u8>,
    },
    Reject {
        piece: u32,
    },
}

impl MetadataMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut d = DictBuilder::new();
        let (kind, piece) = match self {
            MetadataMessage::Request { piece } => (0, piece),
            MetadataMessage::Data { piece, .. } => (1, piece),
            MetadataMessage::Reject { piece } => (2, piece),
        };
        d.insert("msg_type", Owned::Int(kind))
            .insert("piece", Owned::Int(i64::from(*piece)));
        if let MetadataMessage::Data { total_size, .. } = self {
            d.insert("total_size", Owned::Int(*total_size as i64));
        }
        let mut out = d.build().encode();
        if let MetadataMessage::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }

    /// Parses a `ut_metadata` payload: a bencoded dictionary, followed by the raw piece for data messages.
    pub fn decode(payload: &[u8]) -> Result<MetadataMessage, WireError> {
        let bad = |why: &str| WireError::BadExtension(format!("ut_metadata: {why}"));
        let limits = bencode::Limits {
            max_depth: 4,
            max_values: 64,
            max_input: METADATA_PIECE + 1024,
        };
        let (value, end) = bencode::decode_prefix_with(payload, bencode::Mode::Tolerant, limits)
            .map_err(|e| bad(&e.to_string()))?;
        let dict = value.as_dict().ok_or_else(|| bad("not a dictionary"))?;
        let int = |k: &[u8]| dict.get(k).and_then(Value::as_int);
        let piece = int(b"piece")
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| bad("no piece"))?;
        match int(b"msg_type") {
            Some(0) => Ok(MetadataMessage::Request { piece }),
            Some(1) => {
                let total_size = int(b"total_size")
                    .and_then(|t| u64::try_from(t).ok())
                    .filter(|&t| t as usize <= MAX_METADATA)
                    .ok_or_else(|| bad("bad total_size"))?;
                let data = &payload[end..];
                if data.len() > METADATA_PIECE {
                    return Err(bad("piece larger than 16 KiB"));
                }
                Ok(MetadataMessage::Data {
                    piece,
                    total_size,
                    data: data.to_vec(),
                })
            }
            Some(2) => Ok(MetadataMessage::Reject { piece }),
            _ => Err(bad("unknown msg_type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bep9_layouts() {
        let req = MetadataMessage::Request { piece: 0 };
        assert_eq!(req.encode(), b"d8:msg_typei0e5:piecei0ee");
        let data = MetadataMessage::Data {
            piece: 1,
            total_size: 20000,
            data: b"xyz".to_vec(),
        };
        assert_eq!(
            data.encode(),
            b"d8:msg_typei1e5:piecei1e10:total_sizei20000eexyz"
        );
        assert_eq!(MetadataMessage::decode(&data.encode()).unwrap(), data);
        assert_eq!(
            MetadataMessage::decode(b"d8:msg_typei2e5:piecei3ee").unwrap(),
            MetadataMessage::Reject { piece: 3 }
        );
        assert!(MetadataMessage::decode(b"d8:msg_typei9e5:piecei0ee").is_err());
        assert!(
            MetadataMessage::decode(b"d8:msg_typei1e5:piecei0e10:total_sizei999999999999ee")
                .is_err()
        );
        let mut big = b"d8:msg_typei1e5:piecei0e10:total_sizei20000ee".to_vec();
        big.extend(vec![0u8; METADATA_PIECE + 1]);
        assert!(MetadataMessage::decode(&big).is_err());
    }
}
