//! The torrent model: v1 (BEP 3), v2 and hybrid (BEP 52) metainfo with BEP 47 pad files, magnet links
//! (BEP 9, BEP 53), piece/file layout, and parallel torrent creation and verification.

pub mod atomic;
pub mod beneath;
mod create;
mod hashing;
mod magnet;
pub mod merkle;
mod path;
mod torrent;
mod verify;

pub use create::{
    auto_piece_length, create, create_from, scan, CreateOptions, Created, SourceFile,
};
pub use magnet::{Magnet, MagnetError};
pub use path::validate_component;
pub use torrent::{FileAttr, FileEntry, Torrent, Version, MAX_PIECE_LENGTH, MIN_V2_PIECE_LENGTH};
pub use verify::{data_locations, resolve_data_root, verify, FileReport, Location, VerifyReport};

/// Why a torrent was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetainfoError {
    #[error(transparent)]
    Bencode(#[from] bencode::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("unsafe file path component \"{component}\": {why}")]
    BadPath { component: String, why: String },
}

impl MetainfoError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        MetainfoError::Invalid(msg.into())
    }
}

/// Lowercase hexadecimal, as info-hashes are shown.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}
