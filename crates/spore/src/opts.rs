//! Options and places shared by several commands and the daemon.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::Args;

/// Peer discovery switches (DHT, PEX, LSD) shared by `get`, `seed` and `share`.
#[derive(Args, Clone, Default)]
pub struct DiscoveryArgs {
    /// Do not use the DHT
    #[arg(long)]
    pub no_dht: bool,
    /// Join the DHT through this node instead of the public routers; repeatable
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    pub dht_bootstrap: Vec<String>,
    /// UDP port of our DHT node [default: the peer port, or any free one]
    #[arg(long, value_name = "PORT")]
    pub dht_port: Option<u16>,
    /// Do not exchange peers with peers (BEP 11)
    #[arg(long)]
    pub no_pex: bool,
    /// Do not look for peers on the local network (BEP 14 local service discovery)
    #[arg(long)]
    pub no_lsd: bool,
    /// Multicast group and port for local service discovery; also turns it on for a loopback address
    #[arg(long, value_name = "IP:PORT", hide = true)]
    pub lsd_addr: Option<SocketAddr>,
    /// Do not ask the router to forward our ports (UPnP IGD, PCP, NAT-PMP)
    #[arg(long)]
    pub no_port_mapping: bool,
}

impl DiscoveryArgs {
    /// The engine's discovery settings for these switches; the DHT's routing table is kept in the
    /// state directory.
    pub(crate) fn settings(&self) -> engine::Discovery {
        engine::Discovery {
            dht: !self.no_dht,
            dht_bootstrap: self.dht_bootstrap.clone(),
            dht_port: self.dht_port,
            utp: true,
            dht_state_file: Some(state_dir(None).join("dht-nodes.txt")),
            pex: !self.no_pex,
            lsd: !self.no_lsd,
            lsd_group: self.lsd_addr,
        }
    }
}

/// Where Spore keeps its state: `explicit`, or `$XDG_DATA_HOME/spore` (`~/.local/share/spore`).
pub(crate) fn state_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("spore")
}

/// The address that takes peers of every family the system has: `[::]` (one dual-stack socket, IPv4
/// and IPv6 peers) where it has IPv6, else `0.0.0.0`.
pub(crate) fn any_ip() -> IpAddr {
    if std::net::TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).is_ok() {
        IpAddr::from(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::from(Ipv4Addr::UNSPECIFIED)
    }
}

/// The peer address when none is given: [`any_ip`] on `port`, or on any free port when another
/// program holds `port`.
pub(crate) fn default_listen(port: u16) -> SocketAddr {
    let preferred = SocketAddr::new(any_ip(), port);
    match std::net::TcpListener::bind(preferred) {
        Ok(_) => preferred,
        Err(_) => SocketAddr::new(preferred.ip(), 0),
    }
}
