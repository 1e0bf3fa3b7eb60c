//! `spore share PATH`: make a torrent, run a tracker for it in this process, seed it, and print what a
//! friend needs.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::Args;
use engine::managed::{AddTorrent, Source};
use metainfo::{CreateOptions, Magnet, Version};

use crate::{CmdResult, Failure};

#[derive(Args)]
pub struct ShareArgs {
    /// File or directory to share
    pub path: PathBuf,
    /// Use these trackers instead of starting one here; repeatable
    #[arg(long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Make the torrent private (peers only through its tracker)
    #[arg(long)]
    pub private: bool,
    /// Port to accept peers on
    #[arg(long, default_value_t = 6881)]
    pub port: u16,
    /// Port of the embedded tracker (HTTP and UDP)
    #[arg(long, default_value_t = 6969)]
    pub tracker_port: u16,
    /// Address friends reach this machine at [default: this machine's primary address]
    #[arg(long, value_name = "IP")]
    pub public_ip: Option<IpAddr>,
    /// Where to save the .torrent when the data's directory is not writable
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Hybrid v1+v2 torrent instead of v1
    #[arg(long)]
    pub hybrid: bool,
    #[command(flatten)]
    pub discovery: crate::opts::DiscoveryArgs,
    #[command(flatten)]
    pub conns: crate::get_cmd::ConnArgs,
}

fn bad(e: impl Into<anyhow::Error>) -> Failure {
    Failure::BadInput(e.into())
}

/// The address this machine uses to reach the outside, found by routing a UDP socket (nothing is sent).
fn primary_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// The machine's global IPv6 address, the one its default route leaves from, if it has one (a UDP
/// socket connected to an address sends nothing: the kernel only picks the source).
fn global_ipv6() -> Option<Ipv6Addr> {
    let socket = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect("[2001:db8::1]:9").ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V6(v6) if is_global_unicast(v6) => Some(v6),
        _ => None,
    }
}

/// 2000::/3, where every global unicast address is: not loopback, link-local, unique local, or an
/// IPv4-mapped address.
fn is_global_unicast(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xe000 == 0x2000
}

/// Where the magnet says the seed is: `seed` (the external address, IPv4 behind a home router), and
/// our global IPv6 address on the peer port when we listen on IPv6 there: no NAT stands in front of
/// it, so a friend with IPv6 may reach it when the IPv4 one is not forwarded.
fn seed_peers(seed: SocketAddr, listen: SocketAddr, v6: Option<Ipv6Addr>) -> Vec<SocketAddr> {
    let mut peers = vec![seed];
    let listens_there = |v6: &Ipv6Addr| match listen.ip() {
        IpAddr::V6(l) => l.is_unspecified() || l == *v6,
        IpAddr::V4(_) => false,
    };
    if let Some(v6) = v6.filter(listens_there) {
        let addr = SocketAddr::new(IpAddr::V6(v6), listen.port());
        if addr != seed {
            peers.push(addr);
        }
    }
    peers
}

/// The magnet link `share` prints: the torrent's hashes, name and trackers, and the seed's addresses
/// as `x.pe`.
fn share_magnet(mut magnet: Magnet, peers: &[SocketAddr]) -> String {
    magnet.peers.extend(peers.iter().map(|p| p.to_string()));
    magnet.to_string()
}

/// Writes the torrent beside the data, or into the state directory if that fails.
fn save_torrent(
    bytes: &[u8],
    data: &Path,
    name: &str,
    state: Option<&Path>,
) -> Result<PathBuf, Failure> {
    let file = format!("{name}.torrent");
    let beside = data
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(&file);
    if std::fs::write(&beside, bytes).is_ok() {
        return Ok(beside);
    }
    let dir = crate::opts::state_dir(state);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .map_err(Failure::Failed)?;
    let path = dir.join(&file);
    std::fs::write(&path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(Failure::Failed)?;
    Ok(path)
}

/// HTTP connections the embedded tracker of `share` holds at once.
const SHARE_TRACKER_CONNECTIONS: usize = 64;

pub fn run(args: ShareArgs) -> CmdResult {
    if !args.path.exists() {
        return Err(bad(anyhow!("{} does not exist", args.path.display())));
    }
    let local_ip = primary_ip();
    // Where peers connect: --public-ip, else loopback when that is where we are, else everywhere
    // (IPv4 and IPv6 where the system has it).
    let listen_ip = match args.public_ip {
        Some(ip) if ip.is_loopback() => ip,
        None if local_ip.is_loopback() => local_ip,
        _ => crate::opts::any_ip(),
    };
    let map_ports = crate::port_mapping::wanted(args.discovery.no_port_mapping, listen_ip);
    // The router must be told the real port: pick it now when any will do.
    let peer_port = match args.port {
        0 if map_ports => std::net::TcpListener::bind((listen_ip, 0))
            .and_then(|l| l.local_addr())
            .map_or(0, |a| a.port()),
        p => p,
    };
    // The embedded tracker serves one torrent: a few connections at a time are plenty, and they share
    // the descriptors with the peers.
    let mut tracker_connections = SHARE_TRACKER_CONNECTIONS;
    let (max_peers, handshake) = args
        .conns
        .fitted_with(Some(("tracker connections", &mut tracker_connections)))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .map_err(Failure::Failed)?;
    runtime.block_on(async move {
        let mut signals = crate::get_cmd::Signals::new();
        // Our own tracker first, so its address can go into the torrent.
        let mut tracker = None;
        let mut trackers = args.trackers.clone();
        if trackers.is_empty() {
            let config = tracker::Config {
                http: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), args.tracker_port).to_string(),
                udp: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), args.tracker_port).to_string(),
                udp_workers: 1,
                http_max_connections: tracker_connections,
                http_max_connections_per_ip: tracker::Config::default()
                    .http_max_connections_per_ip
                    .min(tracker_connections),
                ..tracker::Config::default()
            };
            tracker = Some(tracker::start(config).await.map_err(Failure::failed)?);
        }
        let tracker_ports = tracker.as_ref().map_or((0, 0), |t| {
            let port = |a: Option<SocketAddr>| a.map_or(args.tracker_port, |a| a.port());
            (port(t.http_addr), port(t.udp_addr))
        });
        let mut discovery = args.discovery.settings();
        discovery.utp = args.conns.transports.utp;
        // A private torrent keeps off the DHT, so has no DHT port to map.
        let dht_port = (map_ports && !args.private)
            .then(|| discovery.settle_dht_port(SocketAddr::new(listen_ip, peer_port)))
            .flatten();
        let reach = crate::port_mapping::share_reach(
            map_ports,
            local_ip,
            args.public_ip,
            peer_port,
            tracker_ports,
            dht_port,
        )
        .await;
        let public_ip = reach.public_ip;
        if tracker.is_some() {
            let host = match public_ip {
                IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            trackers.push(format!("http://{host}:{}/announce", reach.tracker_ports.0));
            trackers.push(format!("udp://{host}:{}/announce", reach.tracker_ports.1));
        }

        let options = CreateOptions {
            version: if args.hybrid {
                Version::Hybrid
            } else {
                Version::V1
            },
            trackers: trackers.iter().map(|t| vec![t.clone()]).collect(),
            private: args.private,
            created_by: Some(format!("Spore {}", env!("CARGO_PKG_VERSION"))),
            creation_date: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs() as i64),
            ..CreateOptions::default()
        };
        let path = args.path.clone();
        let created = tokio::task::spawn_blocking(move || {
            metainfo::create(&path, &options, &AtomicU64::new(0))
        })
        .await
        .map_err(|e| Failure::Failed(anyhow!(e)))?
        .map_err(|e| bad(anyhow!(e)))?;
        let torrent = Arc::new(created.torrent);
        let saved = save_torrent(
            &created.bytes,
            &args.path,
            &torrent.name,
            args.state_dir.as_deref(),
        )?;

        let content_dir = args
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from);
        let mut add = AddTorrent::new(Source::Torrent(torrent.clone()), content_dir);
        add.max_peers = max_peers;
        add.encryption = args.conns.encryption;
        // Our own tracker learns of the seed directly (below): announcing to it through the router's
        // external address fails where the router has no hairpin NAT, with a warning each interval.
        let use_trackers = tracker.is_none();
        add.configure = Some(Arc::new(move |_, config| {
            config.use_trackers(use_trackers);
            Ok(())
        }));
        let listen = SocketAddr::new(listen_ip, peer_port);
        let (client, id) =
            crate::get_cmd::one_torrent(listen, &args.conns, handshake, discovery, add).await?;
        if crate::get_cmd::until_running(&client, &id, &mut signals)
            .await?
            .is_none()
        {
            client.remove(&id).await;
            return Ok(());
        }
        let listening = client.session().listen_addr();
        // Friends reach the seed at the external address even when no tracker names it.
        let seed_addr = SocketAddr::new(
            public_ip,
            if reach.mapper.is_some() {
                reach.peer_port
            } else {
                listening.port()
            },
        );
        let registration = tracker.as_ref().map(|t| {
            crate::port_mapping::register_seed(
                t.state.clone(),
                vec![engine::wire_id(&torrent)],
                seed_addr,
            )
        });
        let magnet = share_magnet(
            Magnet::from_torrent(&torrent),
            &seed_peers(seed_addr, listening, global_ipv6()),
        );
        let seeded = crate::get_cmd::seeding(&client, &id, &mut signals, || {
            println!(
                "sharing {} ({})",
                torrent.name,
                crate::format::size(torrent.total_size())
            );
            println!("torrent: {}", saved.display());
            println!("magnet: {magnet}");
            if tracker.is_some() {
                println!("tracker: {}", trackers.join(" "));
            }
            println!("peers connect to: {listening}");
            println!("send your friend this command:\n  spore get '{magnet}' -o .");
        })
        .await;
        if let Some(r) = registration {
            r.abort();
        }
        crate::port_mapping::stop(reach.mapper).await;
        if let Some(t) = tracker {
            t.shutdown().await;
        }
        seeded?;
        println!("stopped sharing");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_magnet_names_a_global_ipv6_address_where_we_listen_on_it() {
        let seed = a("203.0.113.7:6881");
        let v6: Ipv6Addr = "2001:db8::5".parse().unwrap();
        assert_eq!(
            seed_peers(seed, a("[::]:6881"), Some(v6)),
            vec![seed, a("[2001:db8::5]:6881")]
        );
        assert_eq!(
            seed_peers(seed, a("[2001:db8::5]:7000"), Some(v6)),
            vec![seed, a("[2001:db8::5]:7000")]
        );
        // Not where we do not listen on it, nor twice, nor without one.
        assert_eq!(seed_peers(seed, a("0.0.0.0:6881"), Some(v6)), vec![seed]);
        assert_eq!(
            seed_peers(seed, a("[2001:db8::6]:6881"), Some(v6)),
            vec![seed]
        );
        let v6_seed = a("[2001:db8::5]:6881");
        assert_eq!(seed_peers(v6_seed, a("[::]:6881"), Some(v6)), vec![v6_seed]);
        assert_eq!(seed_peers(seed, a("[::]:6881"), None), vec![seed]);

        let base = Magnet {
            info_hash_v1: Some([7; 20]),
            name: Some("film".into()),
            ..Magnet::default()
        };
        let link = share_magnet(base, &seed_peers(seed, a("[::]:6881"), Some(v6)));
        let back = Magnet::parse(&link).unwrap();
        assert_eq!(back.peers, vec!["203.0.113.7:6881", "[2001:db8::5]:6881"]);
    }

    #[test]
    fn only_global_unicast_ipv6_counts() {
        for (ip, global) in [
            ("2001:db8::1", true),
            ("2a00:1450::1", true),
            ("fe80::1", false),
            ("fd00::1", false),
            ("::1", false),
            ("::ffff:192.0.2.1", false),
        ] {
            assert_eq!(is_global_unicast(ip.parse().unwrap()), global, "{ip}");
        }
    }
}
