//! UDP tracker protocol (BEP 15) with BEP 41 URL data: requests and responses, both directions.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::{Announce, Event, InfoHash, ScrapeStats};

/// The fixed connection ID of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Most info-hashes in one UDP scrape (keeps the response inside one packet).
pub const MAX_SCRAPE_HASHES: usize = 74;

const CONNECT: u32 = 0;
const ANNOUNCE: u32 = 1;
const SCRAPE: u32 = 2;
const ERROR: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet too short")]
    TooShort,
    #[error("unknown action {0}")]
    UnknownAction(u32),
    #[error("connect request without the protocol ID")]
    BadProtocolId,
    #[error("invalid event {0}")]
    BadEvent(u32),
    #[error("scrape with no info-hashes or more than {MAX_SCRAPE_HASHES}")]
    BadScrapeCount,
    #[error("malformed BEP 41 option")]
    BadOption,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Connect {
        transaction_id: u32,
    },
    Announce {
        connection_id: u64,
        transaction_id: u32,
        announce: Announce,
        /// BEP 41 URL data (path and query of the announce URL), e.g. a passkey.
        url_data: Vec<u8>,
    },
    Scrape {
        connection_id: u64,
        transaction_id: u32,
        info_hashes: Vec<InfoHash>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Connect {
        transaction_id: u32,
        connection_id: u64,
    },
    Announce {
        transaction_id: u32,
        interval: u32,
        leechers: u32,
        seeders: u32,
        /// All IPv4 or all IPv6: a tracker answers with the family the request came over.
        peers: Vec<SocketAddr>,
    },
    Scrape {
        transaction_id: u32,
        stats: Vec<ScrapeStats>,
    },
    Error {
        transaction_id: u32,
        message: String,
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fn arr20<T: From<[u8; 20]>>(b: &[u8], at: usize) -> T {
    let mut x = [0u8; 20];
    x.copy_from_slice(&b[at..at + 20]);
    T::from(x)
}

fn event_from(code: u32) -> Result<Event, PacketError> {
    Ok(match code {
        0 => Event::None,
        1 => Event::Completed,
        2 => Event::Started,
        3 => Event::Stopped,
        other => return Err(PacketError::BadEvent(other)),
    })
}

fn event_code(event: Event) -> u32 {
    match event {
        Event::None => 0,
        Event::Completed => 1,
        Event::Started => 2,
        Event::Stopped => 3,
    }
}

impl Request {
    pub fn transaction_id(&self) -> u32 {
        match self {
            Request::Connect { transaction_id }
            | Request::Announce { transaction_id, .. }
            | Request::Scrape { transaction_id, .. } => *transaction_id,
        }
    }

    pub fn parse(b: &[u8]) -> Result<Request, PacketError> {
        if b.len() < 16 {
            return Err(PacketError::TooShort);
        }
        let connection_id = u64_at(b, 0);
        let action = u32_at(b, 8);
        let transaction_id = u32_at(b, 12);
        match action {
            CONNECT => {
                if connection_id != PROTOCOL_ID {
                    return Err(PacketError::BadProtocolId);
                }
                Ok(Request::Connect { transaction_id })
            }
            ANNOUNCE => {
                if b.len() < 98 {
                    return Err(PacketError::TooShort);
                }
                let ip = Ipv4Addr::from(u32_at(b, 84));
                let numwant = u32_at(b, 92) as i32;
                let announce = Announce {
                    info_hash: arr20(b, 16),
                    peer_id: arr20(b, 36),
                    downloaded: u64_at(b, 56),
                    left: u64_at(b, 64),
                    uploaded: u64_at(b, 72),
                    event: event_from(u32_at(b, 80))?,
                    ip: (!ip.is_unspecified()).then_some(ip.into()),
                    key: Some(u32_at(b, 88)),
                    numwant: u32::try_from(numwant).ok(),
                    port: u16::from_be_bytes([b[96], b[97]]),
                };
                Ok(Request::Announce {
                    connection_id,
                    transaction_id,
                    announce,
                    url_data: parse_options(&b[98..])?,
                })
            }
            SCRAPE => {
                let body = &b[16..];
                let n = body.len() / 20;
                if n == 0 || n > MAX_SCRAPE_HASHES {
                    return Err(PacketError::BadScrapeCount);
                }
                Ok(Request::Scrape {
                    connection_id,
                    transaction_id,
                    info_hashes: body.chunks_exact(20).map(|c| arr20(c, 0)).collect(),
                })
            }
            other => Err(PacketError::UnknownAction(other)),
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Request::Connect { transaction_id } => {
                out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
                out.extend_from_slice(&CONNECT.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
            }
            Request::Announce {
                connection_id,
                transaction_id,
                announce: a,
                url_data,
            } => {
                out.extend_from_slice(&connection_id.to_be_bytes());
                out.extend_from_slice(&ANNOUNCE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(&a.info_hash[..]);
                out.extend_from_slice(&a.peer_id[..]);
                out.extend_from_slice(&a.downloaded.to_be_bytes());
                out.extend_from_slice(&a.left.to_be_bytes());
                out.extend_from_slice(&a.uploaded.to_be_bytes());
                out.extend_from_slice(&event_code(a.event).to_be_bytes());
                let ip = match a.ip {
                    Some(std::net::IpAddr::V4(v4)) => u32::from(v4),
                    _ => 0,
                };
                out.extend_from_slice(&ip.to_be_bytes());
                out.extend_from_slice(&a.key.unwrap_or(0).to_be_bytes());
                let numwant = a.numwant.map_or(-1, |n| n.min(i32::MAX as u32) as i32);
                out.extend_from_slice(&numwant.to_be_bytes());
                out.extend_from_slice(&a.port.to_be_bytes());
                for chunk in url_data.chunks(255) {
                    out.push(2);
                    out.push(chunk.len() as u8);
                    out.extend_from_slice(chunk);
                }
            }
            Request::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            } => {
                out.extend_from_slice(&connection_id.to_be_bytes());
                out.extend_from_slice(&SCRAPE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                for h in info_hashes {
                    out.extend_from_slice(&h[..]);
                }
            }
        }
    }
}

/// BEP 41 options after an announce: end of options (0), no-op (1), URL data (2, length, bytes).
/// URL data parts are concatenated.
fn parse_options(mut b: &[u8]) -> Result<Vec<u8>, PacketError> {
    let mut url = Vec::new();
    while let Some((&kind, rest)) = b.split_first() {
        match kind {
            0 => break,
            1 => b = rest,
            2 => {
                let (&len, rest) = rest.split_first().ok_or(PacketError::BadOption)?;
                let len = usize::from(len);
                if rest.len() < len {
                    return Err(PacketError::BadOption);
                }
                url.extend_from_slice(&rest[..len]);
                b = &rest[len..];
            }
            // Unknown options carry a length byte too; skip them.
            _ => {
                let (&len, rest) = rest.split_first().ok_or(PacketError::BadOption)?;
                b = rest.get(usize::from(len)..).ok_or(PacketError::BadOption)?;
            }
        }
    }
    Ok(url)
}

impl Response {
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Response::Connect {
                transaction_id,
                connection_id,
            } => {
                out.extend_from_slice(&CONNECT.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(&connection_id.to_be_bytes());
            }
            Response::Announce {
                transaction_id,
                interval,
                leechers,
                seeders,
                peers,
            } => {
                out.extend_from_slice(&ANNOUNCE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(&interval.to_be_bytes());
                out.extend_from_slice(&leechers.to_be_bytes());
                out.extend_from_slice(&seeders.to_be_bytes());
                for p in peers {
                    match p {
                        SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
                        SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
                    }
                    out.extend_from_slice(&p.port().to_be_bytes());
                }
            }
            Response::Scrape {
                transaction_id,
                stats,
            } => {
                out.extend_from_slice(&SCRAPE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                for s in stats {
                    out.extend_from_slice(&s.seeders.to_be_bytes());
                    out.extend_from_slice(&s.completed.to_be_bytes());
                    out.extend_from_slice(&s.leechers.to_be_bytes());
                }
            }
            Response::Error {
                transaction_id,
                message,
            } => {
                out.extend_from_slice(&ERROR.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(message.as_bytes());
            }
        }
    }

    /// Parses a tracker's reply. `ipv6` says which peer format an announce reply uses (the family of the
    /// socket the request went out on).
    pub fn parse(b: &[u8], ipv6: bool) -> Result<Response, PacketError> {
        if b.len() < 8 {
            return Err(PacketError::TooShort);
        }
        let action = u32_at(b, 0);
        let transaction_id = u32_at(b, 4);
        match action {
            CONNECT => {
                if b.len() < 16 {
                    return Err(PacketError::TooShort);
                }
                Ok(Response::Connect {
                    transaction_id,
                    connection_id: u64_at(b, 8),
                })
            }
            ANNOUNCE => {
                if b.len() < 20 {
                    return Err(PacketError::TooShort);
                }
                let size = if ipv6 { 18 } else { 6 };
                let peers = b[20..]
                    .chunks_exact(size)
                    .map(|c| {
                        let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
                        if ipv6 {
                            let mut ip = [0u8; 16];
                            ip.copy_from_slice(&c[..16]);
                            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
                        } else {
                            SocketAddr::V4(SocketAddrV4::new(
                                Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                                port,
                            ))
                        }
                    })
                    .collect();
                Ok(Response::Announce {
                    transaction_id,
                    interval: u32_at(b, 8),
                    leechers: u32_at(b, 12),
                    seeders: u32_at(b, 16),
                    peers,
                })
            }
            SCRAPE => Ok(Response::Scrape {
                transaction_id,
                stats: b[8..]
                    .chunks_exact(12)
                    .map(|c| ScrapeStats {
                        seeders: u32_at(c, 0),
                        completed: u32_at(c, 4),
                        leechers: u32_at(c, 8),
                    })
                    .collect(),
            }),
            ERROR => Ok(Response::Error {
                transaction_id,
                message: String::from_utf8_lossy(&b[8..]).into_owned(),
            }),
            other => Err(PacketError::UnknownAction(other)),
        }
    }
}
