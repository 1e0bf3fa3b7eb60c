//! Bencode (BEP 3): a zero-copy decoder that keeps the exact byte span of every value, and a canonical
//! encoder.
//!
//! Decoding is bounded (depth, value count, input size) so untrusted input cannot exhaust the stack or
//! memory, and every error carries the byte offset where the input went wrong.

mod decode;
mod encode;
mod value;

pub use decode::{decode, decode_prefix_with, decode_strict, decode_with, Limits, Mode};
pub use encode::{write_bytes, write_int, DictBuilder, Owned};
pub use value::{Dict, Kind, Value};

/// A decoding error: what went wrong and at which byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bencode at byte {offset}: {kind}")]
pub struct Error {
    pub offset: usize,
    pub kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(offset: usize, kind: ErrorKind) -> Self {
        Error { offset, kind }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("input ends in the middle of a value")]
    UnexpectedEnd,
    #[error("unexpected byte 0x{0:02x}")]
    UnexpectedByte(u8),
    #[error("integer has no digits")]
    EmptyInteger,
    #[error("number has a leading zero")]
    LeadingZero,
    #[error("negative zero")]
    NegativeZero,
    #[error("number does not fit in 64 bits")]
    IntegerOverflow,
    #[error("string of {len} bytes runs past the end of the input ({available} bytes left)")]
    LengthPastEnd { len: u64, available: usize },
    #[error("dictionary key is not a string")]
    KeyNotString,
    #[error("dictionary key repeated")]
    DuplicateKey,
    #[error("dictionary keys are not in ascending order")]
    UnsortedKey,
    #[error("nesting deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("more than {limit} values")]
    TooManyValues { limit: usize },
    #[error("input of {len} bytes exceeds the limit of {limit}")]
    InputTooLarge { len: usize, limit: usize },
    #[error("data after the end of the value")]
    TrailingData,
}
