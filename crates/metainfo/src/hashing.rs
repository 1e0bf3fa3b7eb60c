//! Piece hashing shared by creation and verification: reading file data with positional reads,
//! v1 SHA-1 pieces and v2 merkle piece roots, spread across cores with rayon.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use sha1::{Digest, Sha1};

use crate::beneath::Location;
use crate::merkle::{self, Hash256, LeafHasher, BLOCK_SIZE};
use crate::torrent::FileEntry;

/// Chunk size for positional reads: small enough that the buffer plus the page-cache pages being copied
/// stay inside L2 (256 KiB reads measured 30 % slower here).
const READ_CHUNK: usize = 64 * 1024;

static ZEROS: [u8; READ_CHUNK] = [0; READ_CHUNK];

/// Where file content comes from, by index into the torrent's file list.
pub(crate) trait Source: Sync {
    /// Feeds bytes `offset..offset + len` of file `file` to `sink`, in order.
    fn read(
        &self,
        file: usize,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<()>;
}

/// Positional reads in 64 KiB chunks. Measured here on a warm 2 GiB file, this hashes as fast as
/// mktorrent's reader threads and spends less system time than read-only mmap (page faults), and a file
/// that shrinks while it is read is an I/O error rather than a SIGBUS.
pub(crate) struct ReadSource {
    files: Vec<Option<File>>,
}

impl ReadSource {
    /// For verification: opens each file that exists, following no link below its root (see
    /// [`crate::beneath`]); missing ones (and links) read as errors, so their pieces fail.
    pub(crate) fn open_present(locations: &[Option<Location>]) -> Self {
        ReadSource {
            files: locations
                .iter()
                .map(|l| l.as_ref().and_then(|l| l.open().ok()))
                .collect(),
        }
    }

    /// The size of file `file` as opened, `None` when it is missing.
    pub(crate) fn len(&self, file: usize) -> Option<u64> {
        let handle = self.files.get(file)?.as_ref()?;
        handle.metadata().ok().map(|m| m.len())
    }

    /// For creation: every file must open. `None` entries are pad files.
    pub(crate) fn open_all(paths: &[Option<&Path>]) -> io::Result<Self> {
        let files = paths
            .iter()
            .map(|p| p.map(File::open).transpose())
            .collect::<io::Result<Vec<_>>>()?;
        Ok(ReadSource { files })
    }
}

impl Source for ReadSource {
    fn read(
        &self,
        file: usize,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let handle = self.files[file]
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file is missing"))?;
        let mut buf = vec![0u8; READ_CHUNK.min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let want = READ_CHUNK.min((len - done) as usize);
            handle.read_exact_at(&mut buf[..want], offset + done)?;
            sink(&buf[..want]);
            done += want as u64;
        }
        Ok(())
    }
}

/// Feeds `len` zero bytes (pad files) to `sink`.
fn feed_zeros(mut len: u64, sink: &mut dyn FnMut(&[u8])) {
    while len > 0 {
        let n = (READ_CHUNK as u64).min(len) as usize;
        sink(&ZEROS[..n]);
        len -= n as u64;
    }
}

/// The layout being hashed.
pub(crate) struct Plan<'a> {
    pub files: &'a [FileEntry],
    pub piece_length: u64,
    pub space_len: u64,
}

/// One unit of hashing work.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Job {
    /// v1 piece over the contiguous file stream (may span files).
    V1Piece(u64),
    /// Piece `k` of file `file` (v2 and hybrid, where files start on piece boundaries). For hybrid, `v1`
    /// asks for the SHA-1 of the same piece, zero-padded to the v1 piece length.
    FilePiece { file: usize, k: u64, v1: bool },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PieceHash {
    pub v1: Option<[u8; 20]>,
    pub v2: Option<Hash256>,
}

impl Plan<'_> {
    /// The jobs that cover every piece, in piece order.
    pub(crate) fn jobs(&self, v1: bool, v2: bool) -> Vec<Job> {
        if !v2 {
            return (0..self.space_len.div_ceil(self.piece_length))
                .map(Job::V1Piece)
                .collect();
        }
        let mut jobs = Vec::new();
        for (file, entry) in self.files.iter().enumerate() {
            if entry.attr.pad {
                continue;
            }
            for k in 0..entry.length.div_ceil(self.piece_length) {
                jobs.push(Job::FilePiece { file, k, v1 });
            }
        }
        jobs
    }

    /// Runs `jobs` across the rayon pool, adding hashed bytes to `progress`. Results are in job order.
    pub(crate) fn run(
        &self,
        jobs: &[Job],
        source: &dyn Source,
        progress: &AtomicU64,
    ) -> Vec<io::Result<PieceHash>> {
        jobs.par_iter()
            .with_max_len(1)
            .map(|job| {
                let result = self.hash(*job, source);
                progress.fetch_add(self.job_len(*job), Ordering::Relaxed);
                result
            })
            .collect()
    }

    pub(crate) fn job_len(&self, job: Job) -> u64 {
        match job {
            Job::V1Piece(i) => self.v1_piece_len(i),
            Job::FilePiece { file, k, .. } => self.file_piece_len(file, k),
        }
    }

    fn v1_piece_len(&self, index: u64) -> u64 {
        (self.space_len.saturating_sub(index * self.piece_length)).min(self.piece_length)
    }

    fn file_piece_len(&self, file: usize, k: u64) -> u64 {
        (self.files[file].length - k * self.piece_length).min(self.piece_length)
    }

    fn hash(&self, job: Job, source: &dyn Source) -> io::Result<PieceHash> {
        match job {
            Job::V1Piece(index) => {
                let mut sha = Sha1::new();
                self.read_v1_range(
                    index * self.piece_length,
                    self.v1_piece_len(index),
                    source,
                    &mut |b| sha.update(b),
                )?;
                Ok(PieceHash {
                    v1: Some(sha.finalize().into()),
                    v2: None,
                })
            }
            Job::FilePiece { file, k, v1 } => {
                let entry = &self.files[file];
                let len = self.file_piece_len(file, k);
                let mut leaves = LeafHasher::default();
                let mut sha = v1.then(Sha1::new);
                source.read(file, k * self.piece_length, len, &mut |b| {
                    leaves.update(b);
                    if let Some(sha) = sha.as_mut() {
                        sha.update(b);
                    }
                })?;
                let v1_hash = sha.map(|mut sha| {
                    let v1_index = entry.offset / self.piece_length + k;
                    let pad = self.v1_piece_len(v1_index).saturating_sub(len);
                    feed_zeros(pad, &mut |b| sha.update(b));
                    sha.finalize().into()
                });
                let piece_blocks = (self.piece_length as usize) / BLOCK_SIZE;
                let root = merkle::piece_root_from_leaves(
                    &leaves.finish(),
                    piece_blocks,
                    entry.length > self.piece_length,
                );
                Ok(PieceHash {
                    v1: v1_hash,
                    v2: Some(root),
                })
            }
        }
    }

    /// Feeds bytes `start..start + len` of the contiguous v1 stream, crossing file boundaries and
    /// producing zeros for pad files.
    fn read_v1_range(
        &self,
        start: u64,
        len: u64,
        source: &dyn Source,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<()> {
        let end = start + len;
        // First file whose end lies past `start`.
        let mut i = self.files.partition_point(|f| f.offset + f.length <= start);
        let mut pos = start;
        while pos < end && i < self.files.len() {
            let f = &self.files[i];
            let from = pos - f.offset;
            let take = (f.length - from).min(end - pos);
            if take == 0 {
                // An empty file: nothing to read, and it need not exist.
            } else if f.attr.pad {
                feed_zeros(take, sink);
            } else {
                source.read(i, from, take, sink)?;
            }
            pos += take;
            i += 1;
        }
        if pos < end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "piece runs past the last file",
            ));
        }
        Ok(())
    }
}
