//! What the owner of a running torrent (the CLI, the daemon) may see of it and change, beyond
//! [`TorrentHandle`]'s life-cycle calls: the torrent's state itself stays inside the engine.

use std::collections::HashMap;

use ids::InfoHash;

use crate::bitfield::Bitfield;
use crate::torrent::{PeerInfo, TorrentHandle, TrackerStats};

impl TorrentHandle {
    /// The torrent's id on the wire (its v1 info-hash, or its v2 one truncated).
    pub fn info_hash(&self) -> InfoHash {
        self.shared.id
    }

    /// The pieces verified so far.
    pub fn have(&self) -> Bitfield {
        self.shared.have()
    }

    /// The connected peers.
    pub fn peer_list(&self) -> Vec<PeerInfo> {
        self.shared.peer_list()
    }

    /// Each tracker's last announce, by URL.
    pub fn tracker_stats(&self) -> HashMap<String, TrackerStats> {
        self.shared.tracker_stats()
    }

    /// Changes the torrent's own upload limit, bytes per second (`None`: unlimited).
    pub fn set_upload_rate(&self, rate: Option<u64>) {
        self.shared.up_limit.set_rate(rate);
    }

    /// Changes the torrent's own download limit, bytes per second (`None`: unlimited).
    pub fn set_download_rate(&self, rate: Option<u64>) {
        self.shared.down_limit.set_rate(rate);
    }
}
