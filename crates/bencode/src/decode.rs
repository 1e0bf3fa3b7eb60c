//! Span-preserving bencode decoder.

use crate::value::{Dict, Kind, Value};
use crate::Error;
use crate::ErrorKind;

/// Bounds applied while decoding untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists and dictionaries.
    pub max_depth: usize,
    /// Most values (integers, strings, lists, dictionaries) in one document.
    pub max_values: usize,
    /// Largest input accepted at all.
    pub max_input: usize,
}

impl Default for Limits {
    /// Matches what real clients accept for `.torrent` files: libtorrent's defaults are a depth of 100 and
    /// three million tokens. The input bound allows v2 torrents with large piece layers.
    fn default() -> Self {
        Limits {
            max_depth: 100,
            max_values: 3_000_000,
            max_input: 128 << 20,
        }
    }
}

/// How strictly dictionary key order is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keys must be strictly ascending: the canonical form Spore emits.
    Strict,
    /// Keys may come in any order (real torrents contain unsorted dictionaries and libtorrent reads them),
    /// but a key repeated in one dictionary is still an error, because its value would be ambiguous.
    Tolerant,
}

/// Decodes exactly one value spanning the whole input, in tolerant mode with default limits.
pub fn decode(input: &[u8]) -> Result<Value<'_>, Error> {
    decode_with(input, Mode::Tolerant, Limits::default())
}

/// Decodes exactly one value spanning the whole input, in strict mode with default limits.
pub fn decode_strict(input: &[u8]) -> Result<Value<'_>, Error> {
    decode_with(input, Mode::Strict, Limits::default())
}

/// Decodes exactly one value spanning the whole input.
pub fn decode_with(input: &[u8], mode: Mode, limits: Limits) -> Result<Value<'_>, Error> {
    let (value, end) = decode_prefix_with(input, mode, limits)?;
    if end != input.len() {
        return Err(Error::new(end, ErrorKind::TrailingData));
    }
    Ok(value)
}

/// Decodes one value from the start of `input` and returns it with the offset just past it. Useful for
/// messages that carry bencode followed by raw bytes (BEP 9 metadata pieces).
pub fn decode_prefix_with(
    input: &[u8],
    mode: Mode,
    limits: Limits,
) -> Result<(Value<'_>, usize), Error> {
    if input.len() > limits.max_input {
        return Err(Error::new(
            0,
            ErrorKind::InputTooLarge {
                len: input.len(),
                limit: limits.max_input,
            },
        ));
    }
    let mut decoder = Decoder {
        input,
        pos: 0,
        mode,
        limits,
        values: 0,
    };
    let value = decoder.value(0)?;
    Ok((value, decoder.pos))
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    mode: Mode,
    limits: Limits,
    values: usize,
}

impl<'a> Decoder<'a> {
    fn peek(&self) -> Result<u8, Error> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(Error::new(self.pos, ErrorKind::UnexpectedEnd))
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, Error> {
        self.values += 1;
        if self.values > self.limits.max_values {
            return Err(Error::new(
                self.pos,
                ErrorKind::TooManyValues {
                    limit: self.limits.max_values,
                },
            ));
        }
        let start = self.pos;
        let kind = match self.peek()? {
            b'i' => {
                self.pos += 1;
                Kind::Int(self.integer()?)
            }
            b'0'..=b'9' => Kind::Bytes(self.bytes()?),
            b'l' => {
                self.enter(depth)?;
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Kind::List(items)
            }
            b'd' => {
                self.enter(depth)?;
                self.pos += 1;
                Kind::Dict(self.dict(depth)?)
            }
            other => return Err(Error::new(start, ErrorKind::UnexpectedByte(other))),
        };
        Ok(Value::new(&self.input[start..self.pos], start, kind))
    }

    fn enter(&self, depth: usize) -> Result<(), Error> {
        if depth >= self.limits.max_depth {
            return Err(Error::new(
                self.pos,
                ErrorKind::TooDeep {
                    limit: self.limits.max_depth,
                },
            ));
        }
        Ok(())
    }

    fn dict(&mut self, depth: usize) -> Result<Dict<'a>, Error> {
        let mut entries: Vec<(&'a [u8], Value<'a>)> = Vec::new();
        let mut key_offsets: Vec<usize> = Vec::new();
        let mut sorted = true;
        while self.peek()? != b'e' {
            let key_at = self.pos;
            if !self.peek()?.is_ascii_digit() {
                return Err(Error::new(key_at, ErrorKind::KeyNotString));
            }
            let key = self.bytes()?;
            if let Some((last, _)) = entries.last() {
                if key == *last {
                    return Err(Error::new(key_at, ErrorKind::DuplicateKey));
                }
                if key < *last {
                    if self.mode == Mode::Strict {
                        return Err(Error::new(key_at, ErrorKind::UnsortedKey));
                    }
                    sorted = false;
                }
            }
            self.values += 1;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            key_offsets.push(key_at);
        }
        self.pos += 1;
        if !sorted {
            // Unsorted input is accepted, but a key repeated anywhere in the dictionary is not.
            let mut keys: Vec<(&[u8], usize)> = entries
                .iter()
                .map(|(k, _)| *k)
                .zip(key_offsets.iter().copied())
                .collect();
            keys.sort_unstable();
            if let Some(w) = keys.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(Error::new(w[1].1, ErrorKind::DuplicateKey));
            }
        }
        Ok(Dict::new(entries, sorted))
    }

    /// Parses the digits of an integer after its `i`, through the closing `e`.
    fn integer(&mut self) -> Result<i64, Error> {
        let start = self.pos;
        let negative = self.peek()? == b'-';
        if negative {
            self.pos += 1;
        }
        let digits_at = self.pos;
        let mut magnitude: u64 = 0;
        loop {
            let b = self.peek()?;
            match b {
                b'0'..=b'9' => {
                    magnitude = magnitude
                        .checked_mul(10)
                        .and_then(|m| m.checked_add(u64::from(b - b'0')))
                        .ok_or(Error::new(start, ErrorKind::IntegerOverflow))?;
                    self.pos += 1;
                }
                b'e' => break,
                other => return Err(Error::new(self.pos, ErrorKind::UnexpectedByte(other))),
            }
        }
        let digits = &self.input[digits_at..self.pos];
        if digits.is_empty() {
            return Err(Error::new(start, ErrorKind::EmptyInteger));
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(Error::new(start, ErrorKind::LeadingZero));
        }
        if negative && magnitude == 0 {
            return Err(Error::new(start, ErrorKind::NegativeZero));
        }
        self.pos += 1; // the 'e'
        let value = if negative {
            0i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        };
        value.ok_or(Error::new(start, ErrorKind::IntegerOverflow))
    }

    /// Parses `<length>:<bytes>` and returns the bytes, borrowed from the input.
    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let start = self.pos;
        let mut len: u64 = 0;
        loop {
            let b = self.peek()?;
            match b {
                b'0'..=b'9' => {
                    len = len
                        .checked_mul(10)
                        .and_then(|l| l.checked_add(u64::from(b - b'0')))
                        .ok_or(Error::new(start, ErrorKind::IntegerOverflow))?;
                    self.pos += 1;
                }
                b':' => break,
                other => return Err(Error::new(self.pos, ErrorKind::UnexpectedByte(other))),
            }
        }
        if self.pos - start > 1 && self.input[start] == b'0' {
            return Err(Error::new(start, ErrorKind::LeadingZero));
        }
        self.pos += 1; // the ':'
        let remaining = self.input.len() - self.pos;
        if len > remaining as u64 {
            return Err(Error::new(
                start,
                ErrorKind::LengthPastEnd {
                    len,
                    available: remaining,
                },
            ));
        }
        // `len <= remaining` so the cast cannot truncate.
        let end = self.pos + len as usize;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }
}
