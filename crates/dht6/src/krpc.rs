//! KRPC messages (BEP 5) with BEP 32's IPv6 node and peer encodings: every field bounded, anything
//! malformed a [`DecodeError`].

use std::net::{Ipv6Addr, SocketAddrV6};

use bencode::{DictBuilder, Owned};

use crate::table::NodeId;

/// Largest datagram read or sent; real KRPC messages stay under 1.5 KB.
pub const MAX_DATAGRAM: usize = 2048;
/// Longest transaction id accepted (BEP 5 clients use 2 to 4 bytes).
const MAX_TID: usize = 16;
/// Longest token accepted.
const MAX_TOKEN: usize = 64;
/// Most peer values read from one reply.
const MAX_VALUES: usize = 100;
/// Bytes of one node in `nodes6`: id, address, port.
pub(crate) const NODE6_LEN: usize = 38;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {0} bytes is over {MAX_DATAGRAM}")]
    TooLong(usize),
    #[error("not bencode: {0}")]
    Bencode(String),
    #[error("missing or invalid {0}")]
    Field(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Ping,
    FindNode {
        target: NodeId,
    },
    GetPeers {
        info_hash: NodeId,
    },
    AnnouncePeer {
        info_hash: NodeId,
        port: u16,
        /// Use the datagram's source port instead of `port` (BEP 5 `implied_port`).
        implied_port: bool,
        token: Vec<u8>,
    },
    /// A method we do not serve; answered with error 204.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Query {
        id: NodeId,
        query: Query,
    },
    Response {
        id: NodeId,
        nodes6: Vec<(NodeId, SocketAddrV6)>,
        values: Vec<SocketAddrV6>,
        token: Option<Vec<u8>>,
    },
    Error {
        code: i64,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub tid: Vec<u8>,
    pub body: Body,
}

fn id_of(v: Option<&bencode::Value<'_>>, what: &'static str) -> Result<NodeId, DecodeError> {
    v.and_then(|v| v.as_bytes())
        .and_then(|b| <[u8; 20]>::try_from(b).ok())
        .ok_or(DecodeError::Field(what))
}

/// A compact IPv6 endpoint: 16 address bytes and a big-endian port.
fn endpoint6(b: &[u8]) -> Option<SocketAddrV6> {
    let ip: [u8; 16] = b.get(..16)?.try_into().ok()?;
    let port = u16::from_be_bytes([*b.get(16)?, *b.get(17)?]);
    Some(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
}

fn put_endpoint6(out: &mut Vec<u8>, a: &SocketAddrV6) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

impl Message {
    pub fn decode(datagram: &[u8]) -> Result<Message, DecodeError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(DecodeError::TooLong(datagram.len()));
        }
        let limits = bencode::Limits {
            max_depth: 4,
            max_values: 512,
            max_input: MAX_DATAGRAM,
        };
        let value = bencode::decode_with(datagram, bencode::Mode::Tolerant, limits)
            .map_err(|e| DecodeError::Bencode(e.to_string()))?;
        let dict = value.as_dict().ok_or(DecodeError::Field("message"))?;
        let tid = dict
            .get(b"t")
            .and_then(|t| t.as_bytes())
            .filter(|t| t.len() <= MAX_TID)
            .ok_or(DecodeError::Field("t"))?
            .to_vec();
        let body = match dict.get(b"y").and_then(|y| y.as_bytes()) {
            Some(b"q") => {
                let a = dict
                    .get(b"a")
                    .and_then(|a| a.as_dict())
                    .ok_or(DecodeError::Field("a"))?;
                let id = id_of(a.get(b"id"), "id")?;
                let method = dict
                    .get(b"q")
                    .and_then(|q| q.as_bytes())
                    .ok_or(DecodeError::Field("q"))?;
                let query = match method {
                    b"ping" => Query::Ping,
                    b"find_node" => Query::FindNode {
                        target: id_of(a.get(b"target"), "target")?,
                    },
                    b"get_peers" => Query::GetPeers {
                        info_hash: id_of(a.get(b"info_hash"), "info_hash")?,
                    },
                    b"announce_peer" => Query::AnnouncePeer {
                        info_hash: id_of(a.get(b"info_hash"), "info_hash")?,
                        port: a
                            .get(b"port")
                            .and_then(|p| p.as_int())
                            .and_then(|p| u16::try_from(p).ok())
                            .ok_or(DecodeError::Field("port"))?,
                        implied_port: a.get(b"implied_port").and_then(|p| p.as_int()) == Some(1),
                        token: a
                            .get(b"token")
                            .and_then(|t| t.as_bytes())
                            .filter(|t| t.len() <= MAX_TOKEN)
                            .ok_or(DecodeError::Field("token"))?
                            .to_vec(),
                    },
                    other => Query::Other(
                        String::from_utf8_lossy(&other[..other.len().min(32)]).into_owned(),
                    ),
                };
                Body::Query { id, query }
            }
            Some(b"r") => {
                let r = dict
                    .get(b"r")
                    .and_then(|r| r.as_dict())
                    .ok_or(DecodeError::Field("r"))?;
                let id = id_of(r.get(b"id"), "id")?;
                let nodes6 = match r.get(b"nodes6") {
                    None => Vec::new(),
                    Some(n) => {
                        let n = n.as_bytes().ok_or(DecodeError::Field("nodes6"))?;
                        if n.len() % NODE6_LEN != 0 {
                            return Err(DecodeError::Field("nodes6"));
                        }
                        n.chunks_exact(NODE6_LEN)
                            .filter_map(|c| {
                                let id: NodeId = c[..20].try_into().ok()?;
                                Some((id, endpoint6(&c[20..])?))
                            })
                            .collect()
                    }
                };
                let values = match r.get(b"values") {
                    None => Vec::new(),
                    Some(v) => v
                        .as_list()
                        .ok_or(DecodeError::Field("values"))?
                        .iter()
                        .take(MAX_VALUES)
                        // IPv4 values (6 bytes) in a reply over IPv6 are of no use to this node.
                        .filter_map(|v| v.as_bytes().filter(|b| b.len() == 18).and_then(endpoint6))
                        .collect(),
                };
                let token = match r.get(b"token") {
                    None => None,
                    Some(t) => Some(
                        t.as_bytes()
                            .filter(|t| t.len() <= MAX_TOKEN)
                            .ok_or(DecodeError::Field("token"))?
                            .to_vec(),
                    ),
                };
                Body::Response {
                    id,
                    nodes6,
                    values,
                    token,
                }
            }
            Some(b"e") => {
                let e = dict
                    .get(b"e")
                    .and_then(|e| e.as_list())
                    .ok_or(DecodeError::Field("e"))?;
                Body::Error {
                    code: e.first().and_then(|c| c.as_int()).unwrap_or(0),
                    message: e
                        .get(1)
                        .and_then(|m| m.as_bytes())
                        .map(|m| String::from_utf8_lossy(&m[..m.len().min(128)]).into_owned())
                        .unwrap_or_default(),
                }
            }
            _ => return Err(DecodeError::Field("y")),
        };
        Ok(Message { tid, body })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut d = DictBuilder::new();
        d.insert("t", Owned::Bytes(self.tid.clone()));
        match &self.body {
            Body::Query { id, query } => {
                let mut a = DictBuilder::new();
                a.insert("id", Owned::Bytes(id.to_vec()));
                let method = match query {
                    Query::Ping => "ping",
                    Query::FindNode { target } => {
                        a.insert("target", Owned::Bytes(target.to_vec()));
                        "find_node"
                    }
                    Query::GetPeers { info_hash } => {
                        a.insert("info_hash", Owned::Bytes(info_hash.to_vec()));
                        "get_peers"
                    }
                    Query::AnnouncePeer {
                        info_hash,
                        port,
                        implied_port,
                        token,
                    } => {
                        a.insert("info_hash", Owned::Bytes(info_hash.to_vec()))
                            .insert("port", Owned::Int(i64::from(*port)))
                            .insert("token", Owned::Bytes(token.clone()));
                        if *implied_port {
                            a.insert("implied_port", Owned::Int(1));
                        }
                        "announce_peer"
                    }
                    Query::Other(name) => name.as_str(),
                };
                // BEP 32: ask for IPv6 nodes (the default over IPv6, said for nodes that need it).
                a.insert("want", Owned::List(vec![Owned::str("n6")]));
                d.insert("y", Owned::str("q"))
                    .insert("q", Owned::str(method))
                    .insert("a", a.build());
            }
            Body::Response {
                id,
                nodes6,
                values,
                token,
            } => {
                let mut r = DictBuilder::new();
                r.insert("id", Owned::Bytes(id.to_vec()));
                if !nodes6.is_empty() {
                    let mut n = Vec::with_capacity(nodes6.len() * NODE6_LEN);
                    for (id, addr) in nodes6 {
                        n.extend_from_slice(id);
                        put_endpoint6(&mut n, addr);
                    }
                    r.insert("nodes6", Owned::Bytes(n));
                }
                if !values.is_empty() {
                    let list = values
                        .iter()
                        .map(|a| {
                            let mut b = Vec::with_capacity(18);
                            put_endpoint6(&mut b, a);
                            Owned::Bytes(b)
                        })
                        .collect();
                    r.insert("values", Owned::List(list));
                }
                if let Some(t) = token {
                    r.insert("token", Owned::Bytes(t.clone()));
                }
                d.insert("y", Owned::str("r")).insert("r", r.build());
            }
            Body::Error { code, message } => {
                d.insert("y", Owned::str("e")).insert(
                    "e",
                    Owned::List(vec![Owned::Int(*code), Owned::str(message)]),
                );
            }
        }
        d.build().encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_round_trip() {
        let a: SocketAddrV6 = "[2001:db8::1]:6881".parse().unwrap();
        let messages = [
            Body::Query {
                id: [1; 20],
                query: Query::AnnouncePeer {
                    info_hash: [2; 20],
                    port: 7000,
                    implied_port: true,
                    token: b"tok".to_vec(),
                },
            },
            Body::Query {
                id: [1; 20],
                query: Query::GetPeers { info_hash: [3; 20] },
            },
            Body::Response {
                id: [4; 20],
                nodes6: vec![([5; 20], a)],
                values: vec![a],
                token: Some(b"t".to_vec()),
            },
            Body::Error {
                code: 203,
                message: "bad token".into(),
            },
        ];
        for body in messages {
            let m = Message {
                tid: b"aa".to_vec(),
                body,
            };
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn a_libtorrent_style_reply_with_ipv4_values_keeps_the_ipv6_ones() {
        // d1:rd2:id20:...5:token2:xx6:valuesl6:<v4>18:<v6>ee1:t2:aa1:y1:re
        let mut m =
            b"d1:rd2:id20:AAAAAAAAAAAAAAAAAAAA5:token2:xx6:valuesl6:\x0a\x00\x00\x01\x1a\xe118:"
                .to_vec();
        m.extend_from_slice(&[
            0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1a, 0xe1,
        ]);
        m.extend_from_slice(b"ee1:t2:aa1:y1:re");
        match Message::decode(&m).unwrap().body {
            Body::Response { values, token, .. } => {
                assert_eq!(values, vec!["[2001:db8::1]:6881".parse().unwrap()]);
                assert_eq!(token, Some(b"xx".to_vec()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let m = b"d1:rd2:id20:AAAAAAAAAAAAAAAAAAAA6:nodes65:abcdee1:t2:aa1:y1:re";
        assert_eq!(Message::decode(m), Err(DecodeError::Field("nodes6")));
        assert!(matches!(
            Message::decode(&vec![b'x'; MAX_DATAGRAM + 1]),
            Err(DecodeError::TooLong(_))
        ));
        let short_id = b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe";
        assert_eq!(Message::decode(short_id), Err(DecodeError::Field("id")));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Message::decode(&bytes);
        }
    }
}
