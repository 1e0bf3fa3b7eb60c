//! The DHT: BEP 5 over IPv4 through the `mainline` crate, and BEP 32 over IPv6 through Spore's own
//! `dht6` node ([`crate::dht6`]), since mainline has no IPv6. A client listening on `[::]` runs both
//! on one port number, one on `0.0.0.0` and one IPv6-only on `[::]`; on a specific IPv4 address only the
//! first, on a specific IPv6 address only the second. Both run in server mode (so a DHT of Spore nodes
//! alone works, as the loopback tests need); lookups and announces go to both, and the routing tables
//! are saved together across restarts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;

use futures_util::StreamExt;
use ids::InfoHash;
use mainline::async_dht::AsyncDht;
use mainline::{Dht, Id};

use crate::dht6::V6Node;

#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// The address to bind: IPv4 for the IPv4 DHT, a specific IPv6 address for the IPv6 DHT, `[::]` for
    /// both.
    pub bind: IpAddr,
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
    v4: Option<AsyncDht>,
    v6: Option<V6Node>,
    state_file: Option<PathBuf>,
}

impl std::fmt::Debug for DhtNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DhtNode(port {})", self.port)
    }
}

/// Which DHTs a bind address runs: the IPv4 one's address, and whether there is an IPv6 one.
fn families(bind: IpAddr) -> (Option<Ipv4Addr>, bool) {
    match bind {
        IpAddr::V4(v4) => (Some(v4), false),
        IpAddr::V6(v6) if v6.is_unspecified() => (Some(Ipv4Addr::UNSPECIFIED), true),
        IpAddr::V6(_) => (None, true),
    }
}

/// The IPv6 addresses among `nodes` (`host:port` or `[ip]:port`), names resolved. Blocking.
fn ipv6_nodes(nodes: &[String]) -> Vec<SocketAddrV6> {
    use std::net::ToSocketAddrs;
    let mut out: Vec<SocketAddrV6> = nodes
        .iter()
        .filter_map(|n| n.to_socket_addrs().ok())
        .flatten()
        .filter_map(|a| match a {
            SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => Some(v6),
            _ => None,
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
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
        let mut nodes = config.bootstrap.clone();
        nodes.extend(saved);
        Self::start_with(config, nodes, false).await
    }

    /// A node that is the first of its network: no bootstrap at all.
    pub async fn start_alone(bind: IpAddr, port: u16) -> std::io::Result<DhtNode> {
        let config = DhtConfig {
            bind,
            port,
            bootstrap: Vec::new(),
            state_file: None,
        };
        Self::start_with(&config, Vec::new(), true).await
    }

    async fn start_with(
        config: &DhtConfig,
        nodes: Vec<String>,
        alone: bool,
    ) -> std::io::Result<DhtNode> {
        let (v4_bind, v6) = families(config.bind);
        let mut port = config.port;
        // The IPv6 node's bootstrap names are resolved while mainline resolves its own.
        let v6_bootstrap = v6.then(|| {
            let wanted: Vec<String> = if alone {
                Vec::new()
            } else if nodes.is_empty() {
                mainline::DEFAULT_BOOTSTRAP_NODES
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                nodes.clone()
            };
            tokio::task::spawn_blocking(move || ipv6_nodes(&wanted))
        });
        let v4 = match v4_bind {
            Some(bind) => {
                let mut builder = Dht::builder();
                builder.server_mode().bind_address(bind).port(port);
                if alone {
                    builder.no_bootstrap();
                } else if !nodes.is_empty() {
                    // mainline keeps the IPv4 addresses of these and leaves the IPv6 ones.
                    builder.bootstrap(&nodes);
                }
                // Building may resolve bootstrap host names: keep that off the async workers.
                let dht = tokio::task::spawn_blocking(move || builder.build())
                    .await
                    .map_err(std::io::Error::other)??
                    .as_async();
                port = dht.info().await.local_addr().port();
                Some(dht)
            }
            None => None,
        };
        let v6 = if let (Some(resolving), IpAddr::V6(ip)) = (v6_bootstrap, config.bind) {
            let bootstrap = resolving.await.map_err(std::io::Error::other)?;
            let node =
                match V6Node::start(SocketAddrV6::new(ip, port, 0, 0), bootstrap.clone()).await {
                    // The IPv4 node's port number is taken over IPv6 by another program: any other.
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && v4.is_some() => {
                        tracing::debug!("DHT (IPv6): port {port} taken, using another");
                        V6Node::start(SocketAddrV6::new(ip, 0, 0, 0), bootstrap).await?
                    }
                    other => other?,
                };
            if v4.is_none() {
                port = node.addr.port();
            }
            Some(node)
        } else {
            None
        };
        Ok(DhtNode {
            port,
            v4,
            v6,
            state_file: config.state_file.clone(),
        })
    }

    /// The IPv4 node's address, or the IPv6 one's where there is no IPv4 node.
    pub async fn local_addr(&self) -> SocketAddr {
        match (&self.v4, &self.v6) {
            (Some(v4), _) => SocketAddr::V4(v4.info().await.local_addr()),
            (None, Some(v6)) => v6.addr,
            (None, None) => SocketAddr::from(([0, 0, 0, 0], self.port)),
        }
    }

    /// The IPv6 node's address, if it runs.
    pub fn local_addr_v6(&self) -> Option<SocketAddr> {
        self.v6.as_ref().map(|v6| v6.addr)
    }

    /// Peers the DHTs know for `info_hash`, collected until both lookups end.
    pub async fn get_peers(&self, info_hash: InfoHash) -> Vec<SocketAddr> {
        let v4 = async {
            let mut found = Vec::new();
            if let Some(dht) = &self.v4 {
                let mut stream = dht.get_peers(Id::from(info_hash.0));
                while let Some(batch) = stream.next().await {
                    found.extend(batch.into_iter().map(SocketAddr::V4));
                }
            }
            found
        };
        let v6 = async {
            match &self.v6 {
                Some(node) => node.get_peers(info_hash).await,
                None => Vec::new(),
            }
        };
        let (mut found, v6) = tokio::join!(v4, v6);
        found.extend(v6);
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Tells the closest nodes of each DHT that we have `info_hash` on `port`; whether any took it.
    pub async fn announce(&self, info_hash: InfoHash, port: u16) -> bool {
        let v4 = async {
            match &self.v4 {
                Some(dht) => dht
                    .announce_peer(Id::from(info_hash.0), Some(port))
                    .await
                    .is_ok(),
                None => false,
            }
        };
        let v6 = async {
            match &self.v6 {
                Some(node) => node.announce(info_hash, port).await,
                None => false,
            }
        };
        let (a, b) = tokio::join!(v4, v6);
        a || b
    }

    /// Saves the routing table for the next start.
    pub async fn save(&self) {
        self.save_to(self.state_file.as_deref()).await
    }

    async fn addresses(&self) -> Vec<String> {
        let mut nodes = match &self.v4 {
            Some(dht) => dht.to_bootstrap().await,
            None => Vec::new(),
        };
        if let Some(v6) = &self.v6 {
            nodes.extend(v6.nodes().await.iter().map(|a| a.to_string()));
        }
        nodes
    }

    /// Saves the routing tables to `file` (if given).
    pub async fn save_to(&self, file: Option<&std::path::Path>) {
        if let Some(file) = file {
            let nodes = self.addresses().await;
            if !nodes.is_empty() {
                if let Err(e) = metainfo::atomic::write_atomic(file, nodes.join("\n").as_bytes()) {
                    tracing::debug!("DHT routing table not saved: {e}");
                }
            }
        }
    }

    /// Waits until the first bootstrap lookups have finished; whether either found a node.
    pub async fn bootstrapped(&self) -> bool {
        let v4 = async {
            match &self.v4 {
                Some(dht) => dht.bootstrapped().await,
                None => false,
            }
        };
        let v6 = async {
            match &self.v6 {
                Some(node) => node.bootstrap().await,
                None => false,
            }
        };
        let (a, b) = tokio::join!(v4, v6);
        a || b
    }

    pub async fn routing_table_size(&self) -> usize {
        self.addresses().await.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_address_picks_the_dhts() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            families(ip("10.0.0.1")),
            (Some("10.0.0.1".parse().unwrap()), false)
        );
        assert_eq!(families(ip("::")), (Some(Ipv4Addr::UNSPECIFIED), true));
        assert_eq!(families(ip("::1")), (None, true));
    }

    #[test]
    fn the_ipv6_node_joins_through_ipv6_addresses_only() {
        let nodes = [
            "127.0.0.1:1".to_string(),
            "[::1]:2".to_string(),
            "[::ffff:10.0.0.1]:3".to_string(),
            "[::1]:2".to_string(),
            "not an address".to_string(),
        ];
        assert_eq!(ipv6_nodes(&nodes), vec!["[::1]:2".parse().unwrap()]);
    }
}
