//! Many torrents behind one listening port: incoming peers are handed to the torrent their handshake
//! names.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ids::InfoHash;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::conns::{AcceptBackoff, HandshakeGate, HandshakeLimits};
use crate::encryption::Encryption;
use crate::torrent::{Shared, TorrentConfig, TorrentHandle};
use crate::transport::IncomingPeer;
use crate::utp_listen::Destination;

/// The torrents served, by info-hash and by HASH('req2', info-hash) (what an MSE peer names), and
/// the magnet links whose metadata is being fetched, which take incoming peers too.
#[derive(Default)]
struct Torrents {
    by_hash: HashMap<InfoHash, Arc<Shared>>,
    /// Each with the number of its registration, so that a fetch that ends late leaves a newer
    /// one's registration alone.
    fetching: HashMap<InfoHash, (u64, mpsc::UnboundedSender<IncomingPeer>)>,
    registrations: u64,
    by_req2: mse::InfoHashes,
}

impl Torrents {
    fn find(&self, id: &InfoHash) -> Option<Destination> {
        match self.by_hash.get(id) {
            Some(shared) => Some(Destination::Torrent(shared.clone())),
            None => self
                .fetching
                .get(id)
                .map(|(_, phase)| Destination::Metadata(phase.clone())),
        }
    }
}

type Registry = Arc<Mutex<Torrents>>;

/// An MSE responder's view of the registry.
struct Lookup(Registry);

impl mse::SkeyLookup for Lookup {
    fn find(&self, req2: &[u8; 20]) -> Option<[u8; 20]> {
        self.0.lock().by_req2.find(req2)
    }
}

/// What the session's uTP listener asks of it.
struct UtpRoute {
    torrents: Registry,
    encryption: Arc<Mutex<Encryption>>,
}

impl crate::utp_listen::SessionRoute for UtpRoute {
    fn find(&self, id: &InfoHash) -> Option<Destination> {
        self.torrents.lock().find(id)
    }

    fn lookup(&self) -> Box<dyn mse::SkeyLookup> {
        Box::new(Lookup(self.torrents.clone()))
    }

    fn encryption(&self) -> Encryption {
        *self.encryption.lock()
    }
}

pub struct Session {
    listen_addr: SocketAddr,
    torrents: Registry,
    gate: Arc<HandshakeGate>,
    encryption: Arc<Mutex<Encryption>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    utp: Option<crate::UtpEndpoint>,
    transports: crate::Transports,
}

impl Session {
    /// Listens on `addr`, holding connections that have not sent their handshake within `limits`.
    /// With uTP among `transports`, a UDP socket on the same port takes uTP peers as well.
    pub async fn bind(
        addr: SocketAddr,
        limits: HandshakeLimits,
        transports: crate::Transports,
    ) -> std::io::Result<Session> {
        let (listener, utp) = crate::utp_listen::bind_pair(addr, transports)?;
        let listen_addr = listener.local_addr()?;
        let torrents: Registry = Arc::default();
        let gate = HandshakeGate::new(limits);
        let encryption = Arc::new(Mutex::new(Encryption::default()));
        let mut tasks = Vec::new();
        if let Some(endpoint) = utp.clone() {
            let route = Arc::new(UtpRoute {
                torrents: torrents.clone(),
                encryption: encryption.clone(),
            });
            tasks.push(tokio::spawn(crate::utp_listen::accept_loop(
                endpoint,
                crate::utp_listen::Route::Many(route),
                gate.clone(),
                std::future::pending(),
            )));
        }
        if transports.tcp {
            tasks.push(tokio::spawn(accept_loop(
                listener,
                torrents.clone(),
                gate.clone(),
                encryption.clone(),
            )));
        }
        Ok(Session {
            listen_addr,
            torrents,
            gate,
            encryption,
            tasks,
            utp,
            transports,
        })
    }

    /// The uTP socket torrents of this session dial through (`TorrentConfig::in_session`).
    pub fn utp(&self) -> Option<crate::UtpEndpoint> {
        self.utp.clone()
    }

    /// The transports the session listens on, and its torrents dial with.
    pub fn transports(&self) -> crate::Transports {
        self.transports
    }

    /// What incoming peers may speak (plaintext, MSE, or either); applies to connections accepted
    /// from now on. Outgoing connections follow each torrent's `TorrentConfig::encryption`.
    pub fn set_encryption(&self, encryption: Encryption) {
        *self.encryption.lock() = encryption;
    }

    /// Changes the caps on connections waiting for their handshake.
    pub fn set_handshake_limits(&self, limits: HandshakeLimits) {
        self.gate.set_limits(limits);
    }

    /// The address the session's torrents (`TorrentConfig::in_session`) announce.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    pub fn register(&self, handle: &TorrentHandle) {
        let mut torrents = self.torrents.lock();
        torrents.by_req2.insert(handle.shared.id.0);
        torrents
            .by_hash
            .insert(handle.shared.id, handle.shared.clone());
    }

    pub fn unregister(&self, id: &InfoHash) {
        let mut torrents = self.torrents.lock();
        torrents.by_hash.remove(id);
        if !torrents.fetching.contains_key(id) {
            torrents.by_req2.remove(&id.0);
        }
    }

    /// A magnet link's metadata phase takes the peers that ask for `id` (until the torrent runs, or
    /// [`Session::unregister_fetch`] with the number returned): they arrive on the receiver.
    pub(crate) fn register_fetch(
        &self,
        id: InfoHash,
    ) -> (u64, mpsc::UnboundedReceiver<IncomingPeer>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut torrents = self.torrents.lock();
        torrents.registrations += 1;
        let number = torrents.registrations;
        torrents.by_req2.insert(id.0);
        torrents.fetching.insert(id, (number, tx));
        (number, rx)
    }

    pub(crate) fn unregister_fetch(&self, id: &InfoHash, number: u64) {
        let mut torrents = self.torrents.lock();
        if torrents.fetching.get(id).is_none_or(|(n, _)| *n != number) {
            return;
        }
        torrents.fetching.remove(id);
        if !torrents.by_hash.contains_key(id) {
            torrents.by_req2.remove(&id.0);
        }
    }
}

impl TorrentConfig {
    /// One of `session`'s torrents: it accepts no connections of its own (the session hands it the
    /// peers that ask for it), announces the session's port, and dials uTP through its socket.
    pub fn in_session(&mut self, session: &Session) -> &mut Self {
        let addr = session.listen_addr();
        self.listen = SocketAddr::new(addr.ip(), 0);
        self.session_listener = Some(addr);
        self.session_utp = session.utp();
        self
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    torrents: Registry,
    gate: Arc<HandshakeGate>,
    encryption: Arc<Mutex<Encryption>>,
) {
    let mut backoff = AcceptBackoff::new("peer listener");
    loop {
        let (stream, addr) = backoff.accept(&listener).await;
        let addr = crate::peer::canonical(addr);
        // Refused (its IP or the listener has too many connections without a handshake): closed now.
        let Some(admitted) = crate::conns::admit(&gate, &stream, addr.ip()) else {
            continue;
        };
        let torrents = torrents.clone();
        let gate = gate.clone();
        let encryption = *encryption.lock();
        tokio::spawn(async move {
            let result = async {
                let lookup = Lookup(torrents.clone());
                let stream = crate::transport::PeerStream::tcp(stream)?;
                let (stream, theirs) = crate::conns::finish_handshake(
                    &gate, stream, admitted, addr, encryption, lookup,
                )
                .await?;
                let to = torrents
                    .lock()
                    .find(&theirs.info_hash)
                    .ok_or_else(|| anyhow::anyhow!("handshake for a torrent we do not have"))?;
                to.hand_over(stream, addr, theirs).await
            }
            .await;
            if let Err(e) = result {
                tracing::debug!("incoming {addr}: {e:#}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ids::PeerId;
    use wire::Handshake;

    use super::*;
    use crate::encryption::outgoing;

    /// Dials the session as an MSE initiator (rc4 only) for `info_hash`: whether it is answered,
    /// encrypted, by that torrent.
    async fn mse_dial(addr: SocketAddr, info_hash: [u8; 20]) -> anyhow::Result<bool> {
        let ours = Handshake::new(InfoHash::new(info_hash), PeerId::new([1; 20]), false);
        let bind = SocketAddr::from(([0, 0, 0, 0], 0));
        let (stream, theirs) =
            outgoing(Encryption::Require, &ours, Duration::from_secs(10), || {
                crate::peer::dial_tcp(addr, bind)
            })
            .await?;
        Ok(stream.encrypted() && theirs.info_hash.0 == info_hash)
    }

    #[tokio::test]
    async fn mse_peers_reach_the_torrent_their_skey_names_among_several() {
        let session = Session::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            HandshakeLimits::default(),
            crate::Transports::default(),
        )
        .await
        .unwrap();
        let addr = session.listen_addr();
        let mut seeds = Vec::new();
        for len in [40_000, 50_000, 60_000] {
            let seed = crate::testutil::seed(len, 16 * 1024, |c| {
                c.session_listener = Some(addr);
            })
            .await;
            session.register(&seed.handle);
            seeds.push(seed);
        }
        for seed in seeds.iter().rev() {
            assert!(mse_dial(addr, seed.info_hash).await.unwrap());
        }
        // A torrent the session does not serve: the responder finds no SKEY and closes.
        assert!(mse_dial(addr, [0xAB; 20]).await.is_err());
        // Unregistered: no longer found.
        session.unregister(&InfoHash::new(seeds[1].info_hash));
        assert!(mse_dial(addr, seeds[1].info_hash).await.is_err());
        // Encryption off: MSE peers are refused, for every torrent.
        session.set_encryption(Encryption::Off);
        assert!(mse_dial(addr, seeds[0].info_hash).await.is_err());
    }
}
