//! Tracker clients for the tests: announces over HTTP and UDP from chosen loopback addresses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use tracker_proto::udp::{Request, Response};
use tracker_proto::{Announce, Event};

/// An announce by peer `peer` (its ID every byte `peer`) on `port`, one byte left.
pub fn announce(hash: [u8; 20], peer: u8, port: u16, event: Event) -> Announce {
    Announce {
        info_hash: tracker_proto::InfoHash(hash),
        peer_id: tracker_proto::PeerId([peer; 20]),
        port,
        uploaded: 0,
        downloaded: 0,
        left: 1,
        event,
        numwant: None,
        key: None,
        ip: None,
    }
}

pub fn bind_tcp(local: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&local.parse::<SocketAddr>().unwrap().into())?;
    socket.connect_timeout(&server.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

/// An HTTP/1.0 GET from `local`: the status line and the body (read to the close).
pub fn get_from(
    local: &str,
    server: SocketAddr,
    target: &str,
) -> std::io::Result<(String, Vec<u8>)> {
    let mut s = bind_tcp(local, server)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {target} HTTP/1.0\r\nHost: t\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP head"))?;
    let status =
        String::from_utf8_lossy(&resp[..resp.iter().position(|&b| b == b'\r').unwrap_or(0)])
            .into_owned();
    Ok((status, resp[split + 4..].to_vec()))
}

pub fn metric(server: SocketAddr, name: &str) -> Option<u64> {
    let (_, body) = get_from("127.0.0.1:0", server, "/metrics").unwrap();
    String::from_utf8_lossy(&body).lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// A UDP tracker client bound to one loopback address.
pub struct Udp {
    pub socket: UdpSocket,
    pub tracker: SocketAddr,
    pub id: u64,
}

impl Udp {
    pub fn connect(local: &str, tracker: SocketAddr) -> Udp {
        let socket = UdpSocket::bind(local).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut udp = Udp {
            socket,
            tracker,
            id: 0,
        };
        match udp.exchange(Request::Connect { transaction_id: 1 }) {
            Some(Response::Connect { connection_id, .. }) => udp.id = connection_id,
            other => panic!("connect from {local}: {other:?}"),
        }
        udp
    }

    pub fn send(&self, req: Request) {
        let mut out = Vec::new();
        req.write(&mut out);
        self.socket.send_to(&out, self.tracker).unwrap();
    }

    pub fn receive(&self) -> Option<Response> {
        let mut buf = [0u8; 4096];
        let (n, _) = self.socket.recv_from(&mut buf).ok()?;
        Response::parse(&buf[..n], false).ok()
    }

    pub fn exchange(&self, req: Request) -> Option<Response> {
        self.send(req);
        self.receive()
    }

    pub fn announce(&self, a: Announce, url_data: &[u8]) -> Option<Response> {
        self.exchange(Request::Announce {
            connection_id: self.id,
            transaction_id: 2,
            announce: a,
            url_data: url_data.to_vec(),
        })
    }

    pub fn scrape(&self, hashes: &[[u8; 20]]) -> Option<Response> {
        self.exchange(Request::Scrape {
            connection_id: self.id,
            transaction_id: 4,
            info_hashes: hashes.iter().map(|h| tracker_proto::InfoHash(*h)).collect(),
        })
    }

    /// Announces each hash (pipelined in batches, every reply awaited) and returns how many replies
    /// came back.
    pub fn announce_many(&self, hashes: impl Iterator<Item = [u8; 20]>) -> usize {
        let hashes: Vec<_> = hashes.collect();
        let mut replies = 0;
        for batch in hashes.chunks(100) {
            for h in batch {
                self.send(Request::Announce {
                    connection_id: self.id,
                    transaction_id: 3,
                    announce: announce(*h, 1, 6881, Event::Started),
                    url_data: vec![],
                });
            }
            for _ in batch {
                if self.receive().is_some() {
                    replies += 1;
                }
            }
        }
        replies
    }
}
