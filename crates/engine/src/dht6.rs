//! The IPv6 DHT node (BEP 32) on a tokio task: the sans-IO `dht6::Node` fed from one IPv6-only UDP
//! socket, its timer, and the lookups the DHT handle (`DhtNode`) asks for. The task ends when the last
//! handle is dropped.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use dht6::{Config, Event, LookupId, Node, MAX_DATAGRAM};
use ids::InfoHash;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

enum Command {
    GetPeers(InfoHash, oneshot::Sender<Vec<SocketAddr>>),
    Announce(InfoHash, u16, oneshot::Sender<bool>),
    Bootstrap(oneshot::Sender<bool>),
    Nodes(oneshot::Sender<Vec<SocketAddrV6>>),
}

/// A handle on the running node.
#[derive(Clone)]
pub(crate) struct V6Node {
    tx: mpsc::Sender<Command>,
    pub(crate) addr: SocketAddr,
}

/// What a lookup's caller waits for.
enum Waiter {
    Peers(Vec<SocketAddr>, oneshot::Sender<Vec<SocketAddr>>),
    Announce(oneshot::Sender<bool>),
    Bootstrap(oneshot::Sender<bool>),
}

impl V6Node {
    /// Binds `bind` (IPv6 only, so an IPv4 DHT may take the same port number) and joins through
    /// `bootstrap` (none: the first node of its network).
    pub(crate) async fn start(
        bind: SocketAddrV6,
        bootstrap: Vec<SocketAddrV6>,
    ) -> std::io::Result<V6Node> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_only_v6(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&SocketAddr::V6(bind).into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        let addr = socket.local_addr()?;
        let mut node = Node::new(
            Config {
                seed: crate::rng::os_seed(),
                ..Config::default()
            },
            0,
        );
        node.set_bootstrap(bootstrap);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(run(socket, node, rx));
        Ok(V6Node { tx, addr })
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    pub(crate) async fn get_peers(&self, info_hash: InfoHash) -> Vec<SocketAddr> {
        self.ask(|tx| Command::GetPeers(info_hash, tx))
            .await
            .unwrap_or_default()
    }

    pub(crate) async fn announce(&self, info_hash: InfoHash, port: u16) -> bool {
        self.ask(|tx| Command::Announce(info_hash, port, tx))
            .await
            .unwrap_or(false)
    }

    /// Looks up our own id: whether any node answered.
    pub(crate) async fn bootstrap(&self) -> bool {
        self.ask(Command::Bootstrap).await.unwrap_or(false)
    }

    pub(crate) async fn nodes(&self) -> Vec<SocketAddrV6> {
        self.ask(Command::Nodes).await.unwrap_or_default()
    }
}

async fn run(socket: UdpSocket, mut node: Node, mut rx: mpsc::Receiver<Command>) {
    let origin = Instant::now();
    let now = || origin.elapsed().as_millis() as u64;
    let mut waiting: HashMap<LookupId, Waiter> = HashMap::new();
    node.bootstrap(now());
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        while let Some(t) = node.poll_transmit() {
            if let Err(e) = socket.send_to(&t.data, t.to).await {
                tracing::debug!("DHT (IPv6): cannot send to {}: {e}", t.to);
            }
        }
        while let Some(event) = node.poll_event() {
            match event {
                Event::Peers { lookup, peers } => {
                    if let Some(Waiter::Peers(found, _)) = waiting.get_mut(&lookup) {
                        found.extend(peers.into_iter().map(SocketAddr::V6));
                    }
                }
                Event::Done {
                    lookup,
                    answered,
                    announced,
                } => match waiting.remove(&lookup) {
                    Some(Waiter::Peers(found, tx)) => {
                        tracing::debug!("DHT (IPv6): lookup found {} peers", found.len());
                        let _ = tx.send(found);
                    }
                    Some(Waiter::Announce(tx)) => {
                        tracing::debug!("DHT (IPv6): announced to {announced} nodes");
                        let _ = tx.send(announced > 0);
                    }
                    Some(Waiter::Bootstrap(tx)) => {
                        let _ = tx.send(answered > 0);
                    }
                    None => {}
                },
            }
        }
        // At least once a minute, so the clock never runs far past a deadline.
        let due = node.poll_timeout().min(now() + 60_000);
        let wake = origin + Duration::from_millis(due);
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = received {
                    if n <= MAX_DATAGRAM {
                        node.handle_datagram(from, &buf[..n], now());
                    }
                }
            }
            command = rx.recv() => {
                let Some(command) = command else {
                    return;
                };
                let t = now();
                match command {
                    Command::GetPeers(hash, tx) => {
                        let id = node.get_peers(hash.0, t);
                        waiting.insert(id, Waiter::Peers(Vec::new(), tx));
                    }
                    Command::Announce(hash, port, tx) => {
                        let id = node.announce(hash.0, port, t);
                        waiting.insert(id, Waiter::Announce(tx));
                    }
                    Command::Bootstrap(tx) => {
                        let id = node.bootstrap(t);
                        waiting.insert(id, Waiter::Bootstrap(tx));
                    }
                    Command::Nodes(tx) => {
                        let _ = tx.send(node.table().addresses());
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => node.handle_timeout(now()),
        }
    }
}
