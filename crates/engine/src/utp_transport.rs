//! uTP as a peer transport: the UDP socket beside the TCP listener (same address and port), the
//! transports a torrent may use (`--transports`), and dialling over uTP with the memory of peers
//! that did not answer it, so they are dialled over TCP straight away next time.
//!
//! The policy is libtorrent's, with a shorter wait: every peer is assumed to speak uTP until a uTP
//! dial to it fails (no answer within [`UTP_DIAL_TIMEOUT`], or a RESET), and is then dialled over
//! TCP first. A uTP dial unanswered after [`UTP_HEAD_START`] gets a TCP dial beside it, and the first
//! connection made wins, so a peer without uTP costs a second, not three.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::transport::PeerStream;

/// How long a uTP dial waits for the peer's answer to its SYN before TCP is tried. libtorrent waits
/// 3 s too (`utp_connect_timeout`).
pub const UTP_DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a uTP dial goes alone before TCP is dialled beside it.
pub const UTP_HEAD_START: Duration = Duration::from_secs(1);
/// Peers remembered as not answering uTP, per socket; the oldest is forgotten first.
pub const NO_UTP_MEMORY: usize = 4096;
/// Kernel buffers asked for the UDP socket: a few hundred packets of a fast transfer arrive
/// between two wake-ups of the task that reads them.
const UDP_BUFFER: usize = 4 << 20;

/// Which transports peer connections may use, in and out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    pub tcp: bool,
    pub utp: bool,
}

impl Default for Transports {
    fn default() -> Transports {
        Transports {
            tcp: true,
            utp: true,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransportsError {
    #[error("unknown transport {0:?} (expected utp, tcp)")]
    Unknown(String),
    #[error("no transport given")]
    Empty,
}

impl FromStr for Transports {
    type Err = TransportsError;

    /// A comma-separated list: `utp,tcp`, `tcp`, `utp`.
    fn from_str(s: &str) -> Result<Transports, TransportsError> {
        let mut t = Transports {
            tcp: false,
            utp: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "tcp" => t.tcp = true,
                "utp" => t.utp = true,
                _ => return Err(TransportsError::Unknown(part.to_string())),
            }
        }
        if !t.tcp && !t.utp {
            return Err(TransportsError::Empty);
        }
        Ok(t)
    }
}

impl fmt::Display for Transports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [(self.utp, "utp"), (self.tcp, "tcp")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        f.write_str(&names.join(","))
    }
}

/// A UDP socket speaking uTP for peers: incoming connections (see `utp_listen`) and dials.
#[derive(Clone)]
pub struct UtpEndpoint {
    inner: Arc<Inner>,
}

struct Inner {
    socket: utp::UtpSocket,
    no_utp: Mutex<NoUtp>,
}

#[derive(Default)]
struct NoUtp {
    set: HashSet<SocketAddr>,
    order: VecDeque<SocketAddr>,
}

impl fmt::Debug for UtpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UtpEndpoint({:?})", self.inner.socket.local_addr().ok())
    }
}

impl UtpEndpoint {
    /// Binds UDP `addr`; `[::]` is made dual-stack, as the TCP listener is. Within a runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<UtpEndpoint> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        // Best effort: a system capping buffers lower still works, with more loss at high rates.
        let _ = socket.set_recv_buffer_size(UDP_BUFFER);
        let _ = socket.set_send_buffer_size(UDP_BUFFER);
        socket.bind(&addr.into())?;
        socket.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(socket.into())?;
        let socket = utp::UtpSocket::from_socket(socket, utp::Config::default(), None)?;
        Ok(UtpEndpoint {
            inner: Arc::new(Inner {
                socket,
                no_utp: Mutex::default(),
            }),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.socket.local_addr()
    }

    pub(crate) async fn accept(&self) -> io::Result<(utp::UtpStream, SocketAddr)> {
        self.inner.socket.accept().await
    }

    /// Whether a uTP dial to `addr` failed before (so TCP goes first).
    pub(crate) fn known_without_utp(&self, addr: SocketAddr) -> bool {
        self.inner.no_utp.lock().set.contains(&addr)
    }

    fn remember_without_utp(&self, addr: SocketAddr) {
        let mut no = self.inner.no_utp.lock();
        if no.set.insert(addr) {
            no.order.push_back(addr);
            while no.order.len() > NO_UTP_MEMORY {
                if let Some(old) = no.order.pop_front() {
                    no.set.remove(&old);
                }
            }
        }
    }

    /// Dials `addr` over uTP, giving up after [`UTP_DIAL_TIMEOUT`]; a peer that does not answer
    /// is remembered, unless `holepunch` (its NAT may have dropped our first SYNs before its own
    /// went out: that says nothing of its uTP).
    pub(crate) async fn dial(&self, addr: SocketAddr, holepunch: bool) -> io::Result<PeerStream> {
        let local = self.local_addr()?;
        let to = match (local, addr.ip()) {
            (SocketAddr::V4(_), IpAddr::V4(_)) | (SocketAddr::V6(_), IpAddr::V6(_)) => addr,
            // A dual-stack socket reaches IPv4 peers at their mapped address.
            (SocketAddr::V6(_), IpAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port())
            }
            (SocketAddr::V4(_), IpAddr::V6(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    "an IPv4 uTP socket cannot reach an IPv6 peer",
                ))
            }
        };
        let result =
            match tokio::time::timeout(UTP_DIAL_TIMEOUT, self.inner.socket.connect(to)).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no uTP answer within the dial timeout",
                )),
            };
        match result {
            Ok(stream) => Ok(PeerStream::utp(stream)),
            Err(e) => {
                if !holepunch {
                    self.remember_without_utp(addr);
                }
                Err(e)
            }
        }
    }
}

/// A connection to `addr` over `transports`: uTP first through `utp` (unless that peer did not
/// answer it before and this is no `holepunch` dial), with `tcp` (a TCP dial, not started yet)
/// beside it after [`UTP_HEAD_START`] or at once when uTP fails; the first connection wins.
pub(crate) async fn dial(
    utp: Option<&UtpEndpoint>,
    transports: Transports,
    holepunch: bool,
    addr: SocketAddr,
    tcp: impl Future<Output = anyhow::Result<PeerStream>>,
) -> anyhow::Result<PeerStream> {
    let utp = utp
        .filter(|_| transports.utp)
        .filter(|u| holepunch || !transports.tcp || !u.known_without_utp(addr));
    let Some(utp) = utp else {
        if !transports.tcp {
            anyhow::bail!("no transport to dial with");
        }
        return tcp.await;
    };
    let utp_dial = utp.dial(addr, holepunch);
    tokio::pin!(utp_dial);
    if !transports.tcp {
        return utp_dial.await.map_err(|e| anyhow::anyhow!("uTP: {e}"));
    }
    tokio::select! {
        r = &mut utp_dial => match r {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                tracing::debug!("peer {addr}: no uTP ({e}), dialling over TCP");
                return tcp.await;
            }
        },
        () = tokio::time::sleep(UTP_HEAD_START) => {}
    }
    tracing::debug!("peer {addr}: no uTP answer yet, dialling over TCP too");
    tokio::pin!(tcp);
    tokio::select! {
        r = &mut utp_dial => match r {
            Ok(stream) => Ok(stream),
            Err(e) => {
                tracing::debug!("peer {addr}: no uTP ({e})");
                tcp.await
            }
        },
        r = &mut tcp => match r {
            Ok(stream) => Ok(stream),
            Err(e) => {
                tracing::debug!("peer {addr}: TCP failed ({e:#}), waiting for uTP");
                utp_dial.await.map_err(|e| anyhow::anyhow!("uTP: {e}"))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_and_print() {
        let both: Transports = "utp,tcp".parse().unwrap();
        assert_eq!(both, Transports::default());
        assert_eq!(both.to_string(), "utp,tcp");
        let tcp: Transports = " TCP ".parse().unwrap();
        assert_eq!((tcp.tcp, tcp.utp), (true, false));
        assert_eq!("utp".parse::<Transports>().unwrap().to_string(), "utp");
        assert_eq!("".parse::<Transports>(), Err(TransportsError::Empty));
        assert!(matches!(
            "tcp,quic".parse::<Transports>(),
            Err(TransportsError::Unknown(_))
        ));
    }

    #[tokio::test]
    async fn a_silent_peer_is_remembered_and_forgotten_oldest_first() {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ep = UtpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = silent.local_addr().unwrap();
        tokio::time::pause();
        assert!(ep.dial(to, false).await.is_err());
        assert!(ep.known_without_utp(to));
        for port in 1..=NO_UTP_MEMORY as u16 {
            ep.remember_without_utp(SocketAddr::from(([127, 0, 0, 9], port)));
        }
        assert!(!ep.known_without_utp(to));
        assert_eq!(ep.inner.no_utp.lock().set.len(), NO_UTP_MEMORY);
    }
}
