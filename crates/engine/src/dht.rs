//! BEP 5 DHT through the `mainline` crate: a node in server mode (so a DHT of Spore nodes alone works, as
//! the loopback tests need), peer lookups and announces, and the routing table saved across restarts.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use futures_util::StreamExt;
use ids::InfoHash;
use mainline::async_dht::AsyncDht;
use mainline::{Dht, Id};

#[derive(Debug, Clone)]
pub struct DhtConfig {
    pub bind: Ipv4Addr,
    /// UDP port; 0 picks one.
    pub port: u16,
    /// Nodes to join through (`host:port`); empty means mainline's public bootstrap routers.
    pub bootstrap: Vec<String>,
    /// Where the routing table is kept between runs (one `ip:port` per line).
    pub state_file: Option<PathBuf>,
}

#[derive(Clone)]
pub struct DhtNode {
    /// UDP port the node listens on (for BEP 5 PORT messages).
    pub port: u16,
    dht: AsyncDht,
    state_file: Option<PathBuf>,
}

impl std::fmt::Debug for DhtNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DhtNode(port {})", self.port)
    }
}

impl DhtNode {
    pub async fn start(config: &DhtConfig) -> std::io::Result<DhtNode> {
        let saved: Vec<String> = config
            .state_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| {
                t.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let mut builder = Dht::builder();
        builder
            .server_mode()
            .bind_address(config.bind)
            .port(config.port);
        if !config.bootstrap.is_empty() || !saved.is_empty() {
            let mut nodes = config.bootstrap.clone();
            nodes.extend(saved);
            builder.bootstrap(&nodes);
        }
        // Building may resolve bootstrap host names: keep that off the async workers.
        let dht = tokio::task::spawn_blocking(move || builder.build())
            .await
            .map_err(std::io::Error::other)??
            .as_async();
        let port = dht.info().await.local_addr().port();
        Ok(DhtNode {
            dht,
            state_file: config.state_file.clone(),
            port,
        })
    }

    /// A node that is the first of its network: no bootstrap at all.
    pub async fn start_alone(bind: Ipv4Addr, port: u16) -> std::io::Result<DhtNode> {
        let mut builder = Dht::builder();
        builder
            .server_mode()
            .bind_address(bind)
            .port(port)
            .no_bootstrap();
        let dht = builder.build()?.as_async();
        let port = dht.info().await.local_addr().port();
        Ok(DhtNode {
            dht,
            state_file: None,
            port,
        })
    }

    pub async fn local_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.dht.info().await.local_addr())
    }

    /// Peers the DHT knows for `info_hash`, collected until the lookup ends.
    pub async fn get_peers(&self, info_hash: InfoHash) -> Vec<SocketAddr> {
        let mut found = Vec::new();
        let mut stream = self.dht.get_peers(Id::from(info_hash.0));
        while let Some(batch) = stream.next().await {
            found.extend(batch.into_iter().map(SocketAddr::V4));
        }
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Tells the closest nodes that we have `info_hash` on `port`.
    pub async fn announce(&self, info_hash: InfoHash, port: u16) -> bool {
        self.dht
            .announce_peer(Id::from(info_hash.0), Some(port))
            .await
            .is_ok()
    }

    /// Saves the routing table for the next start.
    pub async fn save(&self) {
        self.save_to(self.state_file.as_deref()).await
    }

    /// Saves the routing table to `file` (if given).
    pub async fn save_to(&self, file: Option<&std::path::Path>) {
        if let Some(file) = file {
            let nodes = self.dht.to_bootstrap().await;
            if !nodes.is_empty() {
                if let Err(e) = metainfo::atomic::write_atomic(file, nodes.join("\n").as_bytes()) {
                    tracing::debug!("DHT routing table not saved: {e}");
                }
            }
        }
    }

    /// Waits until the first bootstrap lookup has finished.
    pub async fn bootstrapped(&self) -> bool {
        self.dht.bootstrapped().await
    }

    pub async fn routing_table_size(&self) -> usize {
        self.dht.to_bootstrap().await.len()
    }
}
