//! Piece hashing shared by creation and verification: reading file data (mmap or positional reads),
//! v1 SHA-1 pieces and v2 merkle piece roots, spread across cores with rayon.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;
use rayon::prelude::*;
use sha1::{Digest, Sha1};

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

/// Read-only memory maps: the fastest way to hash files that are not changing underneath us.
pub(crate) struct MmapSource {
    maps: Vec<Option<Mmap>>,
}

impl MmapSource {
    /// Maps each file of `paths` (`None` for pad files). Empty files are not mapped.
    pub(crate) fn open(paths: &[Option<&Path>]) -> io::Result<Self> {
        let mut maps = Vec::with_capacity(paths.len());
        for path in paths {
            let map = match path {
                Some(path) => {
                    let file = File::open(path)?;
                    if file.metadata()?.len() == 0 {
                        None
                    } else {
                        // SAFETY: the map is read-only and private to this process. A file truncated by
                        // another process while we hash it would fault; creation documents that the
                        // input must not change while it runs.
                        let map = unsafe { Mmap::map(&file)? };
                        let _ = map.advise(memmap2::Advice::Sequential);
                        Some(map)
                    }
                }
                None => None,
            };
            maps.push(map);
        }
        Ok(MmapSource { maps })
    }
}

impl Source for MmapSource {
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
        let map = self.maps[file]
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "file is empty"))?;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= map.len() as u64)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file is shorter than expected",
                )
            })?;
        sink(&map[offset as usize..end as usize]);
        Ok(())
    }
}

/// Positional reads in small chunks, tolerant of missing and short files (for verification of data that
/// may be incomplete).
pub(crate) struct ReadSource {
    files: Vec<Option<File>>,
}

impl ReadSource {
    /// Opens each file that exists; missing ones read as errors.
    pub(crate) fn open(paths: &[Option<std::path::PathBuf>]) -> Self {
        ReadSource {
            files: paths
                .iter()
                .map(|p| p.as_ref().and_then(|p| File::open(p).ok()))
                .collect(),
        }
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
