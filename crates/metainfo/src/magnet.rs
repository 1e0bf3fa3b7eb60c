//! Magnet links (BEP 9): `xt` as `urn:btih` (v1, hex or base32) and `urn:btmh` (v2 SHA-256 multihash),
//! `dn`, `tr`, `ws`, `x.pe`, and BEP 53 `so` file selection.

use std::fmt;
use std::ops::RangeInclusive;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::torrent::Torrent;

/// Everything but RFC 3986 unreserved characters is escaped in values we write.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Longest magnet link accepted.
const MAX_LEN: usize = 64 * 1024;
/// Multihash prefix of a SHA-256 digest: code 0x12, length 0x20.
const SHA256_MULTIHASH: [u8; 2] = [0x12, 0x20];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("not a magnet link (it must start with \"magnet:?\")")]
    NotMagnet,
    #[error("magnet link longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("magnet link has no BitTorrent info-hash (xt=urn:btih:... or xt=urn:btmh:...)")]
    NoInfoHash,
    #[error("bad {param} in magnet link: {why}")]
    Bad { param: &'static str, why: String },
}

fn bad(param: &'static str, why: impl Into<String>) -> MagnetError {
    MagnetError::Bad {
        param,
        why: why.into(),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash_v1: Option<[u8; 20]>,
    pub info_hash_v2: Option<[u8; 32]>,
    pub name: Option<String>,
    /// Trackers in link order; each is its own tier.
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    /// `x.pe` peer addresses (`host:port`), as given.
    pub peers: Vec<String>,
    /// BEP 53 `so`: file indices to download.
    pub select_only: Option<Vec<RangeInclusive<u64>>>,
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Magnet {
    pub fn parse(link: &str) -> Result<Magnet, MagnetError> {
        if link.len() > MAX_LEN {
            return Err(MagnetError::TooLong);
        }
        let query = link
            .strip_prefix("magnet:?")
            .or_else(|| {
                link.get(..8)
                    .filter(|p| p.eq_ignore_ascii_case("magnet:?"))
                    .map(|_| &link[8..])
            })
            .ok_or(MagnetError::NotMagnet)?;
        let mut magnet = Magnet::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            // Numbered parameters (`tr.1`, `xt.2`) mean the same as plain ones.
            let key = match key.rsplit_once('.') {
                Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
                _ => key,
            };
            let value = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| bad("parameter", format!("{key} is not UTF-8 after decoding")))?
                .into_owned();
            match key {
                "xt" => magnet.parse_xt(&value)?,
                "dn" => magnet.name = Some(value),
                "tr" if !value.is_empty() && !magnet.trackers.contains(&value) => {
                    magnet.trackers.push(value)
                }
                "ws" if !value.is_empty() => magnet.web_seeds.push(value),
                "x.pe" if !value.is_empty() => magnet.peers.push(value),
                "so" => magnet.select_only = Some(parse_select_only(&value)?),
                _ => {}
            }
        }
        if magnet.info_hash_v1.is_none() && magnet.info_hash_v2.is_none() {
            return Err(MagnetError::NoInfoHash);
        }
        Ok(magnet)
    }

    fn parse_xt(&mut self, value: &str) -> Result<(), MagnetError> {
        let lower = value.to_ascii_lowercase();
        if let Some(hash) = lower.strip_prefix("urn:btih:") {
            let bytes = match hash.len() {
                40 => decode_hex(hash),
                32 => data_encoding::BASE32_NOPAD
                    .decode(hash.to_ascii_uppercase().as_bytes())
                    .ok(),
                _ => None,
            }
            .ok_or_else(|| bad("xt", "urn:btih needs 40 hex or 32 base32 characters"))?;
            let mut h = [0u8; 20];
            h.copy_from_slice(&bytes);
            self.info_hash_v1 = Some(h);
        } else if let Some(hash) = lower.strip_prefix("urn:btmh:") {
            let bytes = decode_hex(hash)
                .filter(|b| b.len() == 34 && b[..2] == SHA256_MULTIHASH)
                .ok_or_else(|| bad("xt", "urn:btmh needs a SHA-256 multihash (1220 + 64 hex)"))?;
            let mut h = [0u8; 32];
            h.copy_from_slice(&bytes[2..]);
            self.info_hash_v2 = Some(h);
        }
        // Other URNs (ed2k, sha1, ...) name other networks' content: ignored.
        Ok(())
    }

    /// The magnet link for a torrent: its info-hash(es), name, trackers and web seeds.
    pub fn from_torrent(torrent: &Torrent) -> Magnet {
        Magnet {
            info_hash_v1: torrent.info_hash_v1,
            info_hash_v2: torrent.info_hash_v2,
            name: Some(torrent.name.clone()),
            trackers: torrent.trackers.iter().flatten().cloned().collect(),
            web_seeds: torrent.web_seeds.clone(),
            peers: Vec::new(),
            select_only: None,
        }
    }

    /// Whether BEP 53 selects file `index` (everything is selected without `so`).
    pub fn selects(&self, index: u64) -> bool {
        self.select_only
            .as_ref()
            .is_none_or(|ranges| ranges.iter().any(|r| r.contains(&index)))
    }
}

fn parse_select_only(value: &str) -> Result<Vec<RangeInclusive<u64>>, MagnetError> {
    let number = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| bad("so", format!("\"{s}\" is not a file index")))
    };
    value
        .split(',')
        .map(|part| {
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (number(lo)?, number(hi)?),
                None => {
                    let n = number(part)?;
                    (n, n)
                }
            };
            if lo > hi {
                return Err(bad("so", format!("range {part} runs backwards")));
            }
            Ok(lo..=hi)
        })
        .collect()
}

impl fmt::Display for Magnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("magnet:?")?;
        let mut sep = "";
        if let Some(h) = &self.info_hash_v1 {
            write!(f, "xt=urn:btih:{}", crate::hex(h))?;
            sep = "&";
        }
        if let Some(h) = &self.info_hash_v2 {
            write!(f, "{sep}xt=urn:btmh:1220{}", crate::hex(h))?;
        }
        if let Some(name) = &self.name {
            write!(f, "&dn={}", utf8_percent_encode(name, VALUE))?;
        }
        for tr in &self.trackers {
            write!(f, "&tr={}", utf8_percent_encode(tr, VALUE))?;
        }
        for ws in &self.web_seeds {
            write!(f, "&ws={}", utf8_percent_encode(ws, VALUE))?;
        }
        for pe in &self.peers {
            write!(f, "&x.pe={}", utf8_percent_encode(pe, VALUE))?;
        }
        if let Some(ranges) = &self.select_only {
            let parts: Vec<String> = ranges
                .iter()
                .map(|r| {
                    if r.start() == r.end() {
                        r.start().to_string()
                    } else {
                        format!("{}-{}", r.start(), r.end())
                    }
                })
                .collect();
            write!(f, "&so={}", parts.join(","))?;
        }
        Ok(())
    }
}
