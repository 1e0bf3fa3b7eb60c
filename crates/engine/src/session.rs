//! Many torrents behind one listening port: incoming peers are handed to the torrent their handshake
//! names.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ids::InfoHash;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::conns::{AcceptBackoff, HandshakeGate, HandshakeLimits};
use crate::torrent::{Shared, TorrentHandle};

type Registry = Arc<Mutex<HashMap<InfoHash, Arc<Shared>>>>;

pub struct Session {
    listen_addr: SocketAddr,
    torrents: Registry,
    gate: Arc<HandshakeGate>,
    accept: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Listens on `addr`, holding connections that have not sent their handshake within `limits`.
    pub async fn bind(addr: SocketAddr, limits: HandshakeLimits) -> std::io::Result<Session> {
        let listener = crate::peer::listen(addr)?;
        let listen_addr = listener.local_addr()?;
        let torrents: Registry = Arc::default();
        let gate = HandshakeGate::new(limits);
        let accept = tokio::spawn(accept_loop(listener, torrents.clone(), gate.clone()));
        Ok(Session {
            listen_addr,
            torrents,
            gate,
            accept,
        })
    }

    /// Changes the caps on connections waiting for their handshake.
    pub fn set_handshake_limits(&self, limits: HandshakeLimits) {
        self.gate.set_limits(limits);
    }

    /// The address torrents started with `session_listener: Some(session.listen_addr())` announce.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    pub fn register(&self, handle: &TorrentHandle) {
        self.torrents
            .lock()
            .insert(handle.shared.id, handle.shared.clone());
    }

    pub fn unregister(&self, id: &InfoHash) {
        self.torrents.lock().remove(id);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, torrents: Registry, gate: Arc<HandshakeGate>) {
    let mut backoff = AcceptBackoff::new("peer listener");
    loop {
        let (mut stream, addr) = backoff.accept(&listener).await;
        let addr = crate::peer::canonical(addr);
        // Refused (its IP or the listener has too many connections without a handshake): closed now.
        let Some(admitted) = crate::conns::admit(&gate, &stream, addr.ip()) else {
            continue;
        };
        let torrents = torrents.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let result = async {
                let theirs = crate::conns::finish_handshake(&gate, &mut stream, admitted).await?;
                let shared = torrents
                    .lock()
                    .get(&theirs.info_hash)
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("handshake for a torrent we do not have"))?;
                let stream = crate::transport::PeerStream::tcp(stream)?;
                crate::peer::answer_incoming(shared, stream, addr, theirs).await
            }
            .await;
            if let Err(e) = result {
                tracing::debug!("incoming {addr}: {e:#}");
            }
        });
    }
}
