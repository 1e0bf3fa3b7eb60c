//! A torrent's DHT lookups and announces (never for a private torrent), and when they are made: often
//! while a download has few peers, seldom once it has enough or is complete.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::dht::DhtNode;
use crate::torrent::Shared;

/// Below this many connected peers a download looks again soon.
const FEW_PEERS: usize = 5;
const SOON: Duration = Duration::from_secs(15);
const SELDOM: Duration = Duration::from_secs(300);
/// A lookup that has not finished by then is given up (its peers so far are lost with it).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait after a lookup before the next one, given the peers connected and whether the
/// torrent is complete.
pub(crate) fn next_lookup(peers: usize, complete: bool) -> Duration {
    if peers < FEW_PEERS && !complete {
        SOON
    } else {
        SELDOM
    }
}

/// Looks peers up in the DHT and announces ourselves, again after [`next_lookup`], until the torrent
/// stops (then the node's routing table is saved).
pub(crate) async fn run(shared: Arc<Shared>, node: DhtNode) {
    let mut stop = shared.stopping();
    loop {
        let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, node.get_peers(shared.id));
        if let Ok(peers) = lookup.await {
            tracing::debug!("DHT: {} peers", peers.len());
            shared.add_peers(peers);
        }
        shared.dht_announces.fetch_add(1, Ordering::Relaxed);
        node.announce(shared.id, shared.listen_addr.port()).await;
        let peers = shared.state.lock().core.peer_count();
        let wait = next_lookup(peers, shared.is_complete());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {
                node.save().await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_with_few_peers_looks_again_soon_else_seldom() {
        assert_eq!(next_lookup(0, false), Duration::from_secs(15));
        assert_eq!(next_lookup(4, false), Duration::from_secs(15));
        assert_eq!(next_lookup(5, false), Duration::from_secs(300));
        assert_eq!(next_lookup(0, true), Duration::from_secs(300), "a seed");
    }
}
