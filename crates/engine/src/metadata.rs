//! Fetching a torrent's info dictionary from peers (BEP 9), for magnet links.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;
use tracker_proto::{Announce, Event as TrackerEvent};
use wire::{
    Decoder, ExtensionHandshake, Handshake, Message, MetadataMessage, HANDSHAKE_LEN, MAX_METADATA,
    METADATA_PIECE,
};

/// The id we ask peers to use for `ut_metadata` messages to us.
pub const UT_METADATA_ID: u8 = 1;
const PEER_TIMEOUT: Duration = Duration::from_secs(20);

/// What to fetch and from where.
pub struct MetadataRequest {
    /// The 20-byte id used in handshakes and announces.
    pub info_hash: [u8; 20],
    pub trackers: Vec<String>,
    pub peers: Vec<SocketAddr>,
    /// Our listen address (its IP is used for outgoing connections; its port is announced).
    pub listen: SocketAddr,
    pub peer_id: [u8; 20],
    /// Also look the info-hash up in the DHT.
    pub dht: Option<crate::dht::DhtNode>,
}

/// Downloads the info dictionary and returns it once `valid` accepts it (the caller checks it against the
/// info-hash). Gives up after `timeout`.
pub async fn fetch_metadata(
    request: &MetadataRequest,
    valid: impl Fn(&[u8]) -> bool,
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tried: HashSet<SocketAddr> = HashSet::new();
    let mut attempts = JoinSet::new();
    let bind = Some(request.listen.ip()).filter(|ip| !ip.is_unspecified());
    let mut next_announce = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_announce {
            let mut found = request.peers.clone();
            let params = Announce {
                info_hash: request.info_hash,
                peer_id: request.peer_id,
                port: request.listen.port(),
                uploaded: 0,
                downloaded: 0,
                left: 1,
                event: TrackerEvent::Started,
                numwant: Some(50),
                key: None,
                ip: None,
            };
            for url in &request.trackers {
                match crate::tracker::announce(url, &params, bind).await {
                    Ok(r) => found.extend(r.peers),
                    Err(e) => tracing::warn!("tracker {url}: {e:#}"),
                }
            }
            if let Some(node) = &request.dht {
                if let Ok(peers) =
                    tokio::time::timeout(Duration::from_secs(15), node.get_peers(request.info_hash))
                        .await
                {
                    found.extend(peers);
                }
            }
            for addr in found {
                if addr != request.listen && addr.port() != 0 && tried.insert(addr) {
                    let (hash, id) = (request.info_hash, request.peer_id);
                    attempts.spawn(async move { (addr, from_peer(addr, hash, id, bind).await) });
                }
            }
            next_announce = tokio::time::Instant::now() + Duration::from_secs(10);
        }
        let wake = next_announce.min(deadline);
        tokio::select! {
            Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                if let Ok((addr, result)) = done {
                    match result {
                        Ok(info) if valid(&info) => return Ok(info),
                        Ok(_) => tracing::warn!("{addr} sent metadata that does not match the info-hash"),
                        Err(e) => tracing::debug!("metadata from {addr}: {e:#}"),
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= deadline {
                    bail!("no peer provided the torrent's metadata within {} s", timeout.as_secs());
                }
            }
        }
    }
}

async fn from_peer(
    addr: SocketAddr,
    info_hash: [u8; 20],
    peer_id: [u8; 20],
    bind: Option<std::net::IpAddr>,
) -> anyhow::Result<Vec<u8>> {
    tokio::time::timeout(PEER_TIMEOUT, async {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = bind.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let mut stream = socket.connect(addr).await?;
        let ours = Handshake::new(info_hash, peer_id, false);
        stream.write_all(&ours.encode()).await?;
        let mut hs = [0u8; HANDSHAKE_LEN];
        stream.read_exact(&mut hs).await?;
        let theirs = Handshake::decode(&hs)?;
        if theirs.info_hash != info_hash || !theirs.supports_extensions() {
            bail!("peer cannot send metadata");
        }
        let mut m = std::collections::BTreeMap::new();
        m.insert("ut_metadata".to_string(), UT_METADATA_ID);
        let ext = ExtensionHandshake {
            extensions: m,
            ..Default::default()
        };
        let mut out = BytesMut::new();
        Message::Extended {
            id: 0,
            payload: ext.encode().into(),
        }
        .encode(&mut out);
        stream.write_all(&out).await?;

        let decoder = Decoder::default();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut info: Option<Vec<u8>> = None;
        let mut received: Vec<bool> = Vec::new();
        loop {
            while let Some(message) = decoder.decode(&mut buf)? {
                let Message::Extended { id, payload } = message else {
                    continue;
                };
                if id == 0 {
                    let theirs = ExtensionHandshake::decode(&payload)?;
                    let their_id = theirs
                        .id_of("ut_metadata")
                        .ok_or_else(|| anyhow!("peer has no ut_metadata"))?;
                    let size = theirs
                        .metadata_size
                        .filter(|&s| s > 0 && s as usize <= MAX_METADATA)
                        .ok_or_else(|| anyhow!("peer gave no usable metadata_size"))?
                        as usize;
                    let pieces = size.div_ceil(METADATA_PIECE);
                    info = Some(vec![0; size]);
                    received = vec![false; pieces];
                    let mut out = BytesMut::new();
                    for piece in 0..pieces as u32 {
                        let req = MetadataMessage::Request { piece }.encode();
                        Message::Extended {
                            id: their_id,
                            payload: req.into(),
                        }
                        .encode(&mut out);
                    }
                    stream.write_all(&out).await?;
                } else if id == UT_METADATA_ID {
                    let Some(info) = info.as_mut() else { continue };
                    match MetadataMessage::decode(&payload)? {
                        MetadataMessage::Data {
                            piece,
                            total_size,
                            data,
                        } => {
                            let start = piece as usize * METADATA_PIECE;
                            let expected = (info.len().saturating_sub(start)).min(METADATA_PIECE);
                            if total_size as usize != info.len()
                                || data.len() != expected
                                || expected == 0
                            {
                                bail!("metadata piece {piece} has the wrong size");
                            }
                            info[start..start + data.len()].copy_from_slice(&data);
                            received[piece as usize] = true;
                        }
                        MetadataMessage::Reject { piece } => {
                            bail!("peer rejected metadata piece {piece}")
                        }
                        MetadataMessage::Request { .. } => {}
                    }
                    if received.iter().all(|&r| r) {
                        return Ok(info.clone());
                    }
                }
            }
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("peer closed the connection");
            }
        }
    })
    .await
    .map_err(|_| anyhow!("timed out"))?
}
