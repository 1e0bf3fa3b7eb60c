//! The errors of the engine's public calls, so callers (the daemon keeps them in a torrent's error
//! state) can tell a bad disk from an unreachable tracker without parsing text.

use std::io;

use crate::storage::{DiskError, FilePathsError};

/// Why `engine::start` could not start a torrent.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("too many pieces")]
    TooManyPieces,
    #[error(transparent)]
    Paths(#[from] FilePathsError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The check of the data already on disk did not finish (its task panicked or was cancelled).
    #[error(transparent)]
    Check(#[from] tokio::task::JoinError),
    /// The peer listener could not be opened.
    #[error(transparent)]
    Listen(#[from] io::Error),
    /// The torrent's DHT node could not be started ([`crate::Client::start`]).
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// Why `engine::metadata::fetch_metadata` gave up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetadataError {
    #[error("no peer provided the torrent's metadata within {secs} s")]
    Timeout { secs: u64 },
}

/// Why an HTTP(S) GET failed. Messages never repeat the URL asked for: callers put it in front.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL (or a redirect's target) is not one this client can fetch.
    #[error(transparent)]
    Url(#[from] http_client::UrlError),
    /// A URL (ours or a redirect's) that would put a line break into the request.
    #[error(transparent)]
    Request(#[from] http_client::RequestError),
    #[error("{0}")]
    Tls(String),
    #[error("timed out after {0} s")]
    Timeout(u64),
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{0} has no address")]
    NoAddress(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The server's response could not be read (cut short, over a limit, not HTTP).
    #[error(transparent)]
    Response(#[from] http_client::ResponseError),
    /// The server answered, but not with a usable body ("answered HTTP 404").
    #[error("{0}")]
    Reply(String),
    /// Redirects that loop or do not end.
    #[error("{0}")]
    Redirects(String),
    /// A request after a redirect failed: the URL that failed, and why.
    #[error("redirected to {url}: {source}")]
    Redirected { url: String, source: Box<HttpError> },
}

impl From<http_client::Error> for HttpError {
    fn from(e: http_client::Error) -> HttpError {
        match e {
            http_client::Error::Request(e) => HttpError::Request(e),
            http_client::Error::Io(e) => HttpError::Io(e),
            http_client::Error::Response(e) => HttpError::Response(e),
        }
    }
}

/// Why an announce or a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("unsupported tracker URL {0}")]
    Unsupported(String),
    #[error("{0} has no scrape URL")]
    NoScrape(String),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Io(#[from] io::Error),
    /// An HTTP tracker's reply: a failure reason, or not a valid response.
    #[error(transparent)]
    Response(#[from] tracker_proto::http::ResponseError),
    /// A UDP tracker's packet did not parse.
    #[error(transparent)]
    Packet(#[from] tracker_proto::udp::PacketError),
    /// The tracker answered with an error message.
    #[error("tracker refused: {0}")]
    Refused(String),
    #[error("UDP tracker did not answer")]
    NoAnswer,
    #[error("{0}")]
    Unexpected(String),
}

/// Why discovery could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot start the DHT node: {0}")]
    Dht(io::Error),
}

/// Why a magnet link gave no torrent.
#[derive(Debug, thiserror::Error)]
pub enum MagnetError {
    #[error("the magnet link has no info-hash")]
    NoInfoHash,
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The info dictionary matched the link's hashes but is not a valid torrent.
    #[error("metadata from peers: {0}")]
    Info(metainfo::MetainfoError),
}
