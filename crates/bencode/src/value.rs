//! Decoded values that borrow from the input and remember where they came from.

/// One decoded value: what it is, and the exact bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value<'a> {
    raw: &'a [u8],
    offset: usize,
    kind: Kind<'a>,
}

/// The four bencode types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(Dict<'a>),
}

impl<'a> Value<'a> {
    pub(crate) fn new(raw: &'a [u8], offset: usize, kind: Kind<'a>) -> Self {
        Value { raw, offset, kind }
    }

    /// The exact input bytes of this value, delimiters included. The SHA-1 of an `info` dictionary's raw
    /// bytes is the torrent's v1 info-hash.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Byte offset of this value in the decoded input.
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn kind(&self) -> &Kind<'a> {
        &self.kind
    }

    pub fn as_int(&self) -> Option<i64> {
        match self.kind {
            Kind::Int(i) => Some(i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The string's bytes as UTF-8, when they are.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match &self.kind {
            Kind::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        match &self.kind {
            Kind::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Int(_) => "integer",
            Kind::Bytes(_) => "string",
            Kind::List(_) => "list",
            Kind::Dict(_) => "dictionary",
        }
    }

    /// Copies the value into an owned tree (dropping the spans).
    pub fn to_owned_value(&self) -> crate::Owned {
        use crate::Owned;
        match &self.kind {
            Kind::Int(i) => Owned::Int(*i),
            Kind::Bytes(b) => Owned::Bytes(b.to_vec()),
            Kind::List(items) => Owned::List(items.iter().map(Value::to_owned_value).collect()),
            Kind::Dict(d) => Owned::Dict(
                d.iter()
                    .map(|(k, v)| (k.to_vec(), v.to_owned_value()))
                    .collect(),
            ),
        }
    }
}

/// A dictionary's entries in input order. Keys are unique (the decoder guarantees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dict<'a> {
    entries: Vec<(&'a [u8], Value<'a>)>,
    sorted: bool,
}

impl<'a> Dict<'a> {
    pub(crate) fn new(entries: Vec<(&'a [u8], Value<'a>)>, sorted: bool) -> Self {
        Dict { entries, sorted }
    }

    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        if self.sorted {
            self.entries
                .binary_search_by(|(k, _)| (*k).cmp(key))
                .ok()
                .map(|i| &self.entries[i].1)
        } else {
            self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
        }
    }

    /// Whether the keys appeared in strictly ascending order, as canonical bencode requires.
    pub fn is_sorted(&self) -> bool {
        self.sorted
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in input order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &Value<'a>)> {
        self.entries.iter().map(|(k, v)| (*k, v))
    }
}
