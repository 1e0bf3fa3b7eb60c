//! Connections carried from a magnet link's metadata phase (`metadata.rs`) into its torrent
//! (`peer::adopt`), with what each peer said before the piece count was known.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use wire::{Handshake, Message};

use crate::transport::PeerStream;

/// One live connection of the metadata phase, for the torrent to take over.
pub(crate) struct CarriedPeer {
    pub stream: PeerStream,
    pub addr: SocketAddr,
    pub outgoing: bool,
    pub ours: Handshake,
    pub theirs: Handshake,
    /// Bytes read and not yet decoded (part of a frame).
    pub buffered: BytesMut,
    /// What the peer said that the torrent core is to hear first.
    pub said: Vec<Message>,
}

/// The connections a metadata phase leaves open, the IPs it banned and the peer id it used, for
/// [`crate::TorrentConfig::carried`]: the torrent started with them takes them over (once; a copy of
/// the configuration shares them). Dropping the last copy closes them.
#[derive(Clone, Default)]
pub struct CarriedPeers(Arc<Mutex<Option<Carried>>>);

pub(crate) struct Carried {
    pub peers: Vec<CarriedPeer>,
    pub banned: Vec<IpAddr>,
}

impl CarriedPeers {
    pub(crate) fn new(carried: Carried) -> CarriedPeers {
        CarriedPeers(Arc::new(Mutex::new(Some(carried))))
    }

    /// Live connections not yet taken over.
    pub fn len(&self) -> usize {
        self.0.lock().as_ref().map_or(0, |c| c.peers.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn take(&self) -> Option<Carried> {
        self.0.lock().take()
    }
}

impl std::fmt::Debug for CarriedPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CarriedPeers({})", self.len())
    }
}
