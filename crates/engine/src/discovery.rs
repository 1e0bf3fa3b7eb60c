//! Finding peers beyond the trackers and the peers given: the DHT node a client runs, whether and where
//! a torrent uses local service discovery and peer exchange, and a magnet link's torrent (its info
//! dictionary fetched from the peers all of these find). The CLI's `get`, `seed`, `share` and the
//! daemon set discovery up through here alike.

use std::net::SocketAddr;
use std::path::PathBuf;

use ids::InfoHash;
use metainfo::{Magnet, Torrent};

use crate::dht::{DhtConfig, DhtNode};
pub use crate::error::{DiscoveryError, MagnetError};
use crate::metadata::MetadataRequest;
use crate::TorrentConfig;

/// What discovery a client uses (its command-line switches or settings).
#[derive(Debug, Clone)]
pub struct Discovery {
    pub dht: bool,
    /// Nodes to join the DHT through instead of the public routers.
    pub dht_bootstrap: Vec<String>,
    /// UDP port of the DHT node; `None` is the peer port if free (and not uTP's), or any.
    pub dht_port: Option<u16>,
    /// The peer port's UDP side carries uTP, so the DHT takes another port by default: the `mainline`
    /// crate binds a socket of its own and cannot share one with uTP.
    pub utp: bool,
    /// Where the DHT's routing table is kept between runs, when joining through the public routers.
    pub dht_state_file: Option<PathBuf>,
    pub pex: bool,
    pub lsd: bool,
    /// The LSD multicast group and port; naming one also turns LSD on for a loopback address.
    pub lsd_group: Option<SocketAddr>,
}

impl Default for Discovery {
    fn default() -> Discovery {
        Discovery {
            dht: true,
            dht_bootstrap: Vec::new(),
            dht_port: None,
            utp: true,
            dht_state_file: None,
            pex: true,
            lsd: true,
            lsd_group: None,
        }
    }
}

impl Discovery {
    /// Decides now the UDP port the DHT will take for a client listening on `listen`, so that the
    /// router can be asked for it together with the peer port; `None` when no DHT will run. Without
    /// uTP the DHT shares the peer port; with uTP it takes the port above (stable between runs, as
    /// the DHT's routing tables elsewhere remember it), or any free one.
    pub fn settle_dht_port(&mut self, listen: SocketAddr) -> Option<u16> {
        if !self.dht || (listen.ip().is_loopback() && self.dht_bootstrap.is_empty()) {
            return None;
        }
        let free = |port: u16| {
            std::net::UdpSocket::bind((listen.ip(), port))
                .and_then(|s| s.local_addr())
                .map(|a| a.port())
                .ok()
        };
        let port = self.dht_port.or_else(|| match listen.port() {
            0 => free(0),
            peer if !self.utp => free(peer).or_else(|| free(0)),
            peer => peer.checked_add(1).and_then(free).or_else(|| free(0)),
        })?;
        self.dht_port = Some(port);
        Some(port)
    }

    /// Starts a DHT node for a client listening on `listen`, unless the DHT is off or the torrent
    /// `private`. A client bound to a loopback address uses the DHT only with explicit bootstrap nodes
    /// (it could not reach the public network anyway).
    pub async fn start_dht(
        &self,
        listen: SocketAddr,
        private: bool,
    ) -> Result<Option<DhtNode>, DiscoveryError> {
        if !self.dht || private || (listen.ip().is_loopback() && self.dht_bootstrap.is_empty()) {
            return Ok(None);
        }
        // `[::]` runs the IPv4 and the IPv6 DHT, a specific address the one of its family.
        let bind = listen.ip();
        let port = self.dht_port.unwrap_or_else(|| {
            let wanted = SocketAddr::from((bind, listen.port()));
            if listen.port() != 0 && !self.utp && std::net::UdpSocket::bind(wanted).is_ok() {
                listen.port()
            } else {
                0
            }
        });
        let state_file = self
            .dht_state_file
            .clone()
            .filter(|_| self.dht_bootstrap.is_empty());
        if let Some(parent) = state_file.as_ref().and_then(|f| f.parent()) {
            let _ = std::fs::create_dir_all(parent);
        }
        let config = DhtConfig {
            bind,
            port,
            bootstrap: self.dht_bootstrap.clone(),
            state_file,
        };
        DhtNode::start(&config)
            .await
            .map(Some)
            .map_err(DiscoveryError::Dht)
    }

    /// Sets a torrent's discovery: `dht` (from [`Discovery::start_dht`]), PEX, and LSD. Like the DHT,
    /// a client bound to a loopback address leaves LSD off unless a group is given explicitly, so tests
    /// never multicast to the real LAN group; private torrents never use it (the engine enforces that
    /// too).
    pub fn apply(&self, config: &mut TorrentConfig, dht: Option<DhtNode>) {
        let loopback = config.listen.ip().is_loopback();
        config.dht = dht;
        config.pex = self.pex;
        config.lsd = self.lsd && !config.torrent.private && (!loopback || self.lsd_group.is_some());
        if let Some(group) = self.lsd_group {
            config.lsd_group = group;
        }
    }
}

/// The id a magnet's torrent goes by on the wire: its v1 info-hash, or its v2 one truncated (BEP 52).
pub fn magnet_wire_id(magnet: &Magnet) -> Result<InfoHash, MagnetError> {
    crate::wire_id_of(magnet.info_hash_v1, magnet.info_hash_v2).ok_or(MagnetError::NoInfoHash)
}

/// A magnet link's torrent and the connections that fetched it.
pub struct MagnetTorrent {
    pub torrent: Torrent,
    pub carry: Carry,
}

/// The live connections of a metadata phase, for the download to take over ([`Carry::into_config`]).
#[derive(Debug, Clone)]
pub struct Carry {
    pub peers: crate::metadata::CarriedPeers,
    /// The peer id those connections know us by.
    pub peer_id: ids::PeerId,
}

impl Carry {
    /// Has a torrent started with `config` take over the connections (under the same peer id).
    pub fn into_config(&self, config: &mut TorrentConfig) {
        config.carried = self.peers.clone();
        config.peer_id = self.peer_id;
    }
}

/// What a magnet link's metadata phase fetches and from where: the link's trackers and peers, `peers`
/// and the DHT (the managed client's `fetch_magnet` runs it; this file is below that one).
pub(crate) fn magnet_request(
    magnet: &Magnet,
    listen: SocketAddr,
    peers: &[SocketAddr],
    dht: Option<DhtNode>,
    max_peers: usize,
    encryption: crate::Encryption,
) -> Result<MetadataRequest, MagnetError> {
    let id = magnet_wire_id(magnet)?;
    let mut known: Vec<SocketAddr> = peers.to_vec();
    known.extend(
        magnet
            .peers
            .iter()
            .filter_map(|p| p.parse::<SocketAddr>().ok()),
    );
    let request = MetadataRequest {
        info_hash: id,
        expect_v1: magnet.info_hash_v1,
        expect_v2: magnet.info_hash_v2,
        trackers: magnet.trackers.clone(),
        peers: known,
        listen,
        peer_id: crate::new_peer_id(),
        dht,
        max_peers,
        encryption,
    };
    Ok(request)
}

/// A magnet link's torrent made from the metadata its peers gave.
pub(crate) fn magnet_finish(
    magnet: &Magnet,
    metadata: crate::metadata::Metadata,
) -> Result<MagnetTorrent, MagnetError> {
    let mut torrent = Torrent::from_info_bytes(&metadata.info).map_err(MagnetError::Info)?;
    torrent.piece_layers = metadata.piece_layers;
    torrent.trackers = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
    torrent.web_seeds = magnet.web_seeds.clone();
    Ok(MagnetTorrent {
        torrent,
        carry: Carry {
            peers: metadata.peers,
            peer_id: metadata.peer_id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_loopback(utp: bool) -> Discovery {
        Discovery {
            utp,
            // Loopback runs a DHT only with explicit bootstrap nodes.
            dht_bootstrap: vec!["127.0.0.1:1".into()],
            ..Discovery::default()
        }
    }

    #[test]
    fn no_dht_no_port() {
        let listen: SocketAddr = "127.0.0.1:6881".parse().unwrap();
        let mut off = Discovery {
            dht: false,
            ..on_loopback(true)
        };
        assert_eq!(off.settle_dht_port(listen), None);
        assert_eq!(Discovery::default().settle_dht_port(listen), None);
    }

    #[test]
    fn an_explicit_port_is_kept() {
        let mut d = Discovery {
            dht_port: Some(7000),
            ..on_loopback(true)
        };
        assert_eq!(
            d.settle_dht_port("127.0.0.1:6881".parse().unwrap()),
            Some(7000)
        );
    }

    #[test]
    fn with_utp_the_port_above_else_any_free_one() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let above = held.local_addr().unwrap().port();
        let listen = SocketAddr::from(([127, 0, 0, 1], above - 1));
        let mut d = on_loopback(true);
        let other = d.settle_dht_port(listen).unwrap();
        assert_ne!(other, above, "the port above is taken");
        assert_eq!(d.dht_port, Some(other), "settled for start_dht");
        drop(held);
        assert_eq!(on_loopback(true).settle_dht_port(listen), Some(above));
    }

    #[test]
    fn without_utp_the_peer_port() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(on_loopback(false).settle_dht_port(listen), Some(port));
    }
}
