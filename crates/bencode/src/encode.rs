//! Canonical bencode encoding.

use std::collections::BTreeMap;

/// An owned bencode tree for building documents. Dictionaries are `BTreeMap`s, so keys are always emitted
/// in ascending byte order, as the canonical form requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Owned>),
    Dict(BTreeMap<Vec<u8>, Owned>),
    /// Bytes that already are one encoded value, written as they are. Lets a document embed an `info`
    /// dictionary byte for byte, so its hash cannot change.
    Raw(Vec<u8>),
}

impl Owned {
    pub fn str(s: &str) -> Owned {
        Owned::Bytes(s.as_bytes().to_vec())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Owned::Int(i) => write_int(out, *i),
            Owned::Bytes(b) => write_bytes(out, b),
            Owned::List(items) => {
                out.push(b'l');
                for item in items {
                    item.encode_into(out);
                }
                out.push(b'e');
            }
            Owned::Dict(entries) => {
                out.push(b'd');
                for (k, v) in entries {
                    write_bytes(out, k);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Owned::Raw(raw) => out.extend_from_slice(raw),
        }
    }
}

/// A helper for building dictionaries with `&str` keys.
#[derive(Debug, Default, Clone)]
pub struct DictBuilder(BTreeMap<Vec<u8>, Owned>);

impl DictBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, key: &str, value: Owned) -> &mut Self {
        self.0.insert(key.as_bytes().to_vec(), value);
        self
    }

    pub fn insert_bytes_key(&mut self, key: Vec<u8>, value: Owned) -> &mut Self {
        self.0.insert(key, value);
        self
    }

    pub fn build(self) -> Owned {
        Owned::Dict(self.0)
    }
}

pub fn write_int(out: &mut Vec<u8>, value: i64) {
    out.push(b'i');
    out.extend_from_slice(value.to_string().as_bytes());
    out.push(b'e');
}

pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}
