//! The error of the tracker's public calls (start, reload, user administration), so a caller can
//! tell a bad setting from a busy port or an unreachable cluster without parsing text.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::cluster::ClusterError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Settings that cannot work together, or a listen address that does not parse.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The HTTPS certificate or key cannot be used.
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{path}:{line}: not a 40-hex-digit info-hash")]
    List { path: PathBuf, line: usize },
    #[error("cannot open {path}: {message}")]
    Open { path: PathBuf, message: String },
    /// Reading or writing the users database failed.
    #[error(transparent)]
    Db(#[from] redb::Error),
    #[error("user {0} already exists")]
    UserExists(String),
}

/// redb's calls each have their own error type; all are one kind of failure here.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Db(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Error {
        Error::Cluster(ClusterError::Redis(e))
    }
}
