//! Tracker protocol types and codecs shared by Spore's tracker client and server. Sans-IO: bytes in,
//! bytes out.
//!
//! `info_hash` and `peer_id` are raw bytes and are percent-encoded and decoded by hand here, never through
//! a text query decoder (which would mangle bytes that are not UTF-8).

pub mod http;
pub mod udp;
mod urlencode;

pub use urlencode::{percent_decode, percent_encode};

pub use ids::{InfoHash, PeerId};

/// The announce `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Event {
    #[default]
    None,
    Started,
    Completed,
    Stopped,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::None => "",
            Event::Started => "started",
            Event::Completed => "completed",
            Event::Stopped => "stopped",
        }
    }
}

/// One announce, whichever transport carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    /// How many peers the client wants; `None` for the tracker's default.
    pub numwant: Option<u32>,
    /// Client-chosen key that identifies it across IP changes.
    pub key: Option<u32>,
    /// Address the client claims (`ip=`, or the UDP IPv4 field); trackers normally ignore it.
    pub ip: Option<std::net::IpAddr>,
}

/// Swarm counts for one torrent, as scrape reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeStats {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}
