//! HTTP tracker protocol: announce (BEP 3, compact peers BEP 23, IPv6 `peers6` BEP 7) and scrape (BEP 48).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bencode::{DictBuilder, Owned, Value};

use crate::{percent_decode, percent_encode, Announce, Event, InfoHash, PeerId, ScrapeStats};

/// Longest query string accepted; real announces are about 300 bytes.
pub const MAX_QUERY_LEN: usize = 4096;
/// Most info-hashes in one scrape request.
pub const MAX_SCRAPE_HASHES: usize = 64;
/// Largest tracker response a client accepts.
pub const MAX_RESPONSE_LEN: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("query string longer than {MAX_QUERY_LEN} bytes")]
    TooLong,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("{0} given twice")]
    Duplicate(&'static str),
    #[error("more than {MAX_SCRAPE_HASHES} info_hash values")]
    TooManyHashes,
}

/// An HTTP announce: the common fields plus the HTTP-only options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnnounce {
    pub announce: Announce,
    /// BEP 23: the client accepts compact peer lists (the default when absent, as most trackers assume).
    pub compact: bool,
    pub no_peer_id: bool,
    pub tracker_id: Option<Vec<u8>>,
}

fn pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        })
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), RequestError> {
    if slot.is_some() {
        return Err(RequestError::Duplicate(name));
    }
    *slot = Some(value);
    Ok(())
}

fn bytes20<T: From<[u8; 20]>>(raw: &[u8], name: &'static str) -> Result<T, RequestError> {
    percent_decode(raw)
        .and_then(|b| <[u8; 20]>::try_from(b.as_slice()).ok())
        .map(T::from)
        .ok_or(RequestError::Invalid(name))
}

fn number<T: std::str::FromStr>(raw: &[u8], name: &'static str) -> Result<T, RequestError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RequestError::Invalid(name))
}

/// Parses an announce query string (the part after `?`), byte for byte.
pub fn parse_announce(query: &[u8]) -> Result<HttpAnnounce, RequestError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(RequestError::TooLong);
    }
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let mut uploaded = None;
    let mut downloaded = None;
    let mut left = None;
    let mut event = Event::None;
    let mut compact = true;
    let mut no_peer_id = false;
    let mut numwant = None;
    let mut key = None;
    let mut ip = None;
    let mut tracker_id = None;
    for (k, v) in pairs(query) {
        match k {
            b"info_hash" => set_once(&mut info_hash, bytes20(v, "info_hash")?, "info_hash")?,
            b"peer_id" => set_once(&mut peer_id, bytes20(v, "peer_id")?, "peer_id")?,
            b"port" => set_once(&mut port, number::<u16>(v, "port")?, "port")?,
            b"uploaded" => set_once(&mut uploaded, number::<u64>(v, "uploaded")?, "uploaded")?,
            b"downloaded" => set_once(
                &mut downloaded,
                number::<u64>(v, "downloaded")?,
                "downloaded",
            )?,
            b"left" => set_once(&mut left, number::<u64>(v, "left")?, "left")?,
            b"event" => {
                event = match v {
                    b"started" => Event::Started,
                    b"completed" => Event::Completed,
                    b"stopped" => Event::Stopped,
                    // "paused" (BEP 21) and empty mean a regular announce.
                    b"" | b"empty" | b"paused" => Event::None,
                    _ => return Err(RequestError::Invalid("event")),
                }
            }
            b"compact" => compact = v != b"0",
            b"no_peer_id" => no_peer_id = v == b"1",
            b"numwant" => numwant = Some(number::<u32>(v, "numwant")?),
            // Keys are hex or decimal depending on the client; only their identity matters.
            b"key" => {
                let text = percent_decode(v).ok_or(RequestError::Invalid("key"))?;
                key = Some(
                    u32::from_str_radix(std::str::from_utf8(&text).unwrap_or(""), 16)
                        .unwrap_or_else(|_| fnv32(&text)),
                )
            }
            b"ip" => {
                let text = percent_decode(v).ok_or(RequestError::Invalid("ip"))?;
                ip = std::str::from_utf8(&text)
                    .ok()
                    .and_then(|s| s.parse::<IpAddr>().ok());
            }
            b"trackerid" => {
                tracker_id = Some(percent_decode(v).ok_or(RequestError::Invalid("trackerid"))?)
            }
            _ => {}
        }
    }
    Ok(HttpAnnounce {
        announce: Announce {
            info_hash: info_hash.ok_or(RequestError::Missing("info_hash"))?,
            peer_id: peer_id.ok_or(RequestError::Missing("peer_id"))?,
            port: port.ok_or(RequestError::Missing("port"))?,
            uploaded: uploaded.unwrap_or(0),
            downloaded: downloaded.unwrap_or(0),
            left: left.ok_or(RequestError::Missing("left"))?,
            event,
            numwant,
            key,
            ip,
        },
        compact,
        no_peer_id,
        tracker_id,
    })
}

fn fnv32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The query string a client sends for an announce.
pub fn encode_announce(req: &HttpAnnounce) -> String {
    let a = &req.announce;
    let mut q = format!(
        "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact={}",
        percent_encode(&a.info_hash[..]),
        percent_encode(&a.peer_id[..]),
        a.port,
        a.uploaded,
        a.downloaded,
        a.left,
        u8::from(req.compact)
    );
    if a.event != Event::None {
        q.push_str("&event=");
        q.push_str(a.event.as_str());
    }
    if req.no_peer_id {
        q.push_str("&no_peer_id=1");
    }
    if let Some(n) = a.numwant {
        q.push_str(&format!("&numwant={n}"));
    }
    if let Some(k) = a.key {
        q.push_str(&format!("&key={k:08x}"));
    }
    if let Some(ip) = a.ip {
        q.push_str(&format!(
            "&ip={}",
            percent_encode(ip.to_string().as_bytes())
        ));
    }
    if let Some(id) = &req.tracker_id {
        q.push_str(&format!("&trackerid={}", percent_encode(id)));
    }
    q
}

/// Parses a scrape query: zero or more `info_hash` values (zero asks for a full scrape).
pub fn parse_scrape(query: &[u8]) -> Result<Vec<InfoHash>, RequestError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(RequestError::TooLong);
    }
    let mut hashes = Vec::new();
    for (k, v) in pairs(query) {
        if k == b"info_hash" {
            if hashes.len() == MAX_SCRAPE_HASHES {
                return Err(RequestError::TooManyHashes);
            }
            hashes.push(bytes20(v, "info_hash")?);
        }
    }
    Ok(hashes)
}

pub fn encode_scrape(hashes: &[InfoHash]) -> String {
    hashes
        .iter()
        .map(|h| format!("info_hash={}", percent_encode(&h[..])))
        .collect::<Vec<_>>()
        .join("&")
}

/// Maps an announce URL to its scrape URL (BEP 48 convention: the last `/announce` path segment becomes
/// `/scrape`, keeping any passkey path or query after it). `None` when the URL has no such segment.
pub fn scrape_url(announce: &str) -> Option<String> {
    let at = announce.rfind("/announce")?;
    let rest = &announce[at + "/announce".len()..];
    if !(rest.is_empty() || rest.starts_with(['/', '?', '.'])) {
        return None;
    }
    Some(format!("{}/scrape{rest}", &announce[..at]))
}

/// A peer in an announce response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    pub peer_id: Option<PeerId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceResponse {
    pub interval: u32,
    pub min_interval: Option<u32>,
    /// Seeders.
    pub complete: u32,
    /// Leechers.
    pub incomplete: u32,
    pub peers: Vec<Peer>,
    pub tracker_id: Option<Vec<u8>>,
    pub warning: Option<String>,
    /// The requester's address as the tracker saw it (BEP 24 `external ip`, 4 or 16 bytes).
    pub external_ip: Option<IpAddr>,
}

/// The `external ip` value of BEP 24: the address in network order, 4 bytes or 16.
pub fn external_ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn external_ip_from(raw: &[u8]) -> Option<IpAddr> {
    match raw.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(raw).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(raw).ok()?)),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("tracker refused: {0}")]
    Failure(String),
    #[error("malformed tracker response: {0}")]
    Malformed(String),
}

fn malformed(msg: impl Into<String>) -> ResponseError {
    ResponseError::Malformed(msg.into())
}

/// A failure response (`failure reason`), as a tracker sends it with HTTP 200.
pub fn failure(reason: &str) -> Vec<u8> {
    let mut d = DictBuilder::new();
    d.insert("failure reason", Owned::str(reason));
    d.build().encode()
}

impl AnnounceResponse {
    /// Encodes for a client; `compact` chooses BEP 23 strings (IPv4 in `peers`, IPv6 in `peers6`) over a
    /// list of dictionaries.
    pub fn encode(&self, compact: bool) -> Vec<u8> {
        let mut d = DictBuilder::new();
        d.insert("interval", Owned::Int(i64::from(self.interval)))
            .insert("complete", Owned::Int(i64::from(self.complete)))
            .insert("incomplete", Owned::Int(i64::from(self.incomplete)));
        if let Some(min) = self.min_interval {
            d.insert("min interval", Owned::Int(i64::from(min)));
        }
        if let Some(id) = &self.tracker_id {
            d.insert("tracker id", Owned::Bytes(id.clone()));
        }
        if let Some(w) = &self.warning {
            d.insert("warning message", Owned::str(w));
        }
        if let Some(ip) = self.external_ip {
            d.insert("external ip", Owned::Bytes(external_ip_bytes(ip)));
        }
        if compact {
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            for p in &self.peers {
                match p.addr {
                    SocketAddr::V4(a) => {
                        v4.extend_from_slice(&a.ip().octets());
                        v4.extend_from_slice(&a.port().to_be_bytes());
                    }
                    SocketAddr::V6(a) => {
                        v6.extend_from_slice(&a.ip().octets());
                        v6.extend_from_slice(&a.port().to_be_bytes());
                    }
                }
            }
            d.insert("peers", Owned::Bytes(v4));
            if !v6.is_empty() {
                d.insert("peers6", Owned::Bytes(v6));
            }
        } else {
            let list = self
                .peers
                .iter()
                .map(|p| {
                    let mut e = DictBuilder::new();
                    e.insert("ip", Owned::str(&p.addr.ip().to_string()))
                        .insert("port", Owned::Int(i64::from(p.addr.port())));
                    if let Some(id) = p.peer_id {
                        e.insert("peer id", Owned::Bytes(id.to_vec()));
                    }
                    e.build()
                })
                .collect();
            d.insert("peers", Owned::List(list));
        }
        d.build().encode()
    }

    /// Decodes a tracker's announce response (compact or not); a `failure reason` becomes an error.
    pub fn decode(bytes: &[u8]) -> Result<AnnounceResponse, ResponseError> {
        let dict = response_dict(bytes)?;
        let dict = dict
            .as_dict()
            .ok_or_else(|| malformed("not a dictionary"))?;
        let int = |key: &str| dict.get(key.as_bytes()).and_then(Value::as_int);
        let count = |key: &str| int(key).and_then(|i| u32::try_from(i).ok()).unwrap_or(0);
        let interval = int("interval")
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| malformed("no interval"))?;
        let mut peers = Vec::new();
        match dict.get(b"peers") {
            Some(v) if v.as_bytes().is_some() => {
                let raw = v.as_bytes().unwrap_or_default();
                if raw.len() % 6 != 0 {
                    return Err(malformed("compact peers not a multiple of 6 bytes"));
                }
                peers.extend(raw.chunks_exact(6).map(|c| Peer {
                    addr: SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                        u16::from_be_bytes([c[4], c[5]]),
                    )),
                    peer_id: None,
                }));
            }
            Some(v) => {
                let list = v
                    .as_list()
                    .ok_or_else(|| malformed("peers is neither string nor list"))?;
                for entry in list {
                    let Some(e) = entry.as_dict() else { continue };
                    let ip = e
                        .get(b"ip")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<IpAddr>().ok());
                    let port = e
                        .get(b"port")
                        .and_then(Value::as_int)
                        .and_then(|p| u16::try_from(p).ok());
                    let (Some(ip), Some(port)) = (ip, port) else {
                        continue;
                    };
                    let peer_id = e
                        .get(b"peer id")
                        .and_then(Value::as_bytes)
                        .and_then(|b| PeerId::try_from(b).ok());
                    peers.push(Peer {
                        addr: SocketAddr::new(ip, port),
                        peer_id,
                    });
                }
            }
            None => {}
        }
        if let Some(raw) = dict.get(b"peers6").and_then(Value::as_bytes) {
            if raw.len() % 18 != 0 {
                return Err(malformed("peers6 not a multiple of 18 bytes"));
            }
            peers.extend(raw.chunks_exact(18).map(|c| {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&c[..16]);
                Peer {
                    addr: SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::from(ip),
                        u16::from_be_bytes([c[16], c[17]]),
                        0,
                        0,
                    )),
                    peer_id: None,
                }
            }));
        }
        Ok(AnnounceResponse {
            interval,
            min_interval: int("min interval").and_then(|i| u32::try_from(i).ok()),
            complete: count("complete"),
            incomplete: count("incomplete"),
            peers,
            tracker_id: dict
                .get(b"tracker id")
                .and_then(Value::as_bytes)
                .map(<[u8]>::to_vec),
            warning: dict
                .get(b"warning message")
                .and_then(Value::as_bytes)
                .map(|w| String::from_utf8_lossy(w).into_owned()),
            external_ip: dict
                .get(b"external ip")
                .and_then(Value::as_bytes)
                .and_then(external_ip_from),
        })
    }
}

fn response_dict(bytes: &[u8]) -> Result<Value<'_>, ResponseError> {
    if bytes.len() > MAX_RESPONSE_LEN {
        return Err(malformed("response too large"));
    }
    let limits = bencode::Limits {
        max_depth: 16,
        max_values: 200_000,
        max_input: MAX_RESPONSE_LEN,
    };
    let value = bencode::decode_with(bytes, bencode::Mode::Tolerant, limits)
        .map_err(|e| malformed(e.to_string()))?;
    if let Some(reason) = value
        .as_dict()
        .and_then(|d| d.get(b"failure reason"))
        .and_then(Value::as_bytes)
    {
        return Err(ResponseError::Failure(
            String::from_utf8_lossy(reason).into_owned(),
        ));
    }
    Ok(value)
}

/// A scrape response: counts per torrent (BEP 48).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScrapeResponse {
    pub files: Vec<(InfoHash, ScrapeStats)>,
}

impl ScrapeResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut files = DictBuilder::new();
        for (hash, s) in &self.files {
            let mut e = DictBuilder::new();
            e.insert("complete", Owned::Int(i64::from(s.seeders)))
                .insert("downloaded", Owned::Int(i64::from(s.completed)))
                .insert("incomplete", Owned::Int(i64::from(s.leechers)));
            files.insert_bytes_key(hash.to_vec(), e.build());
        }
        let mut d = DictBuilder::new();
        d.insert("files", files.build());
        d.build().encode()
    }

    pub fn decode(bytes: &[u8]) -> Result<ScrapeResponse, ResponseError> {
        let value = response_dict(bytes)?;
        let files = value
            .as_dict()
            .and_then(|d| d.get(b"files"))
            .and_then(Value::as_dict)
            .ok_or_else(|| malformed("no files dictionary"))?;
        let mut out = Vec::new();
        for (hash, stats) in files.iter() {
            let Ok(hash) = <[u8; 20]>::try_from(hash).map(InfoHash::new) else {
                continue;
            };
            let Some(stats) = stats.as_dict() else {
                continue;
            };
            let n = |k: &[u8]| {
                stats
                    .get(k)
                    .and_then(Value::as_int)
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(0)
            };
            out.push((
                hash,
                ScrapeStats {
                    seeders: n(b"complete"),
                    completed: n(b"downloaded"),
                    leechers: n(b"incomplete"),
                },
            ));
        }
        Ok(ScrapeResponse { files: out })
    }
}
