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
    tasks: Vec<tokio::task::JoinHandle<()>>,
    utp: Option<crate::UtpEndpoint>,
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
        let mut tasks = Vec::new();
        if let Some(endpoint) = utp.clone() {
            tasks.push(tokio::spawn(crate::utp_listen::accept_loop(
                endpoint,
                crate::utp_listen::Route::Many(torrents.clone()),
                gate.clone(),
                std::future::pending(),
            )));
        }
        if transports.tcp {
            tasks.push(tokio::spawn(accept_loop(
                listener,
                torrents.clone(),
                gate.clone(),
            )));
        }
        Ok(Session {
            listen_addr,
            torrents,
            gate,
            tasks,
            utp,
        })
    }

    /// The uTP socket torrents of this session dial through (`TorrentConfig::session_utp`).
    pub fn utp(&self) -> Option<crate::UtpEndpoint> {
        self.utp.clone()
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
        for task in &self.tasks {
            task.abort();
        }
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
