//! Making a torrent from files on disk.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use bencode::{DictBuilder, Owned};

use crate::hashing::{Plan, ReadSource};
use crate::merkle;
use crate::path::validate_component;
use crate::torrent::{FileAttr, FileEntry, Torrent, Version, MIN_V2_PIECE_LENGTH};
use crate::MetainfoError;

/// Smallest and largest piece the automatic choice picks.
const AUTO_MIN_PIECE: u64 = 16 * 1024;
const AUTO_MAX_PIECE: u64 = 16 * 1024 * 1024;
/// The automatic choice keeps the piece count at or below this (so between 1000 and 2000 for all but
/// very small and very large content), as the common clients aim for.
const AUTO_MAX_PIECES: u64 = 2000;

/// The smallest power-of-two piece size in 16 KiB..=16 MiB that needs at most 2000 pieces.
pub fn auto_piece_length(total: u64) -> u64 {
    let mut piece = AUTO_MIN_PIECE;
    while piece < AUTO_MAX_PIECE && total.div_ceil(piece) > AUTO_MAX_PIECES {
        piece *= 2;
    }
    piece
}

/// A file found on disk for a new torrent.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub disk_path: PathBuf,
    /// Components below the torrent's root directory (empty for a single-file torrent).
    pub rel: Vec<String>,
    pub length: u64,
    pub executable: bool,
}

/// What to put in a new torrent.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub version: Version,
    /// `None` picks [`auto_piece_length`].
    pub piece_length: Option<u64>,
    /// Announce URLs by tier (BEP 12).
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    pub comment: Option<String>,
    pub source: Option<String>,
    /// Overrides the name taken from the file or directory.
    pub name: Option<String>,
    pub private: bool,
    pub creation_date: Option<i64>,
    pub created_by: Option<String>,
    /// Include files and directories whose names start with a dot.
    pub include_hidden: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            version: Version::V1,
            piece_length: None,
            trackers: Vec::new(),
            web_seeds: Vec::new(),
            comment: None,
            source: None,
            name: None,
            private: false,
            creation_date: None,
            created_by: None,
            include_hidden: false,
        }
    }
}

/// A new torrent: its encoded bytes and the parsed model of those bytes.
#[derive(Debug, Clone)]
pub struct Created {
    pub bytes: Vec<u8>,
    pub torrent: Torrent,
}

fn io_error(path: &Path, source: std::io::Error) -> MetainfoError {
    MetainfoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn utf8_name(path: &Path) -> Result<String, MetainfoError> {
    let name = path
        .file_name()
        .ok_or_else(|| MetainfoError::invalid(format!("{} has no file name", path.display())))?;
    let name = name.to_str().ok_or_else(|| {
        MetainfoError::invalid(format!("{} is not a UTF-8 file name", path.display()))
    })?;
    validate_component(name)?;
    Ok(name.to_string())
}

/// Lists the files of `path`: the file itself, or every regular file below the directory, sorted by path
/// component by component in byte order (the order of a v2 file tree), so the result never depends on
/// the order the file system returns. Hidden entries (names starting with `.`) are skipped unless
/// `include_hidden`. Symbolic links to files are followed; links to directories are skipped, so a link
/// loop cannot recurse forever.
///
/// Returns whether the content is a directory, and the files.
pub fn scan(path: &Path, include_hidden: bool) -> Result<(bool, Vec<SourceFile>), MetainfoError> {
    let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
    if meta.is_file() {
        return Ok((
            false,
            vec![SourceFile {
                disk_path: path.to_path_buf(),
                rel: Vec::new(),
                length: meta.len(),
                executable: meta.permissions().mode() & 0o111 != 0,
            }],
        ));
    }
    if !meta.is_dir() {
        return Err(MetainfoError::invalid(format!(
            "{} is neither a file nor a directory",
            path.display()
        )));
    }
    let mut files = Vec::new();
    let mut rel = Vec::new();
    walk(path, &mut rel, include_hidden, &mut files)?;
    if files.is_empty() {
        return Err(MetainfoError::invalid(format!(
            "{} contains no files",
            path.display()
        )));
    }
    Ok((true, files))
}

fn walk(
    dir: &Path,
    rel: &mut Vec<String>,
    include_hidden: bool,
    files: &mut Vec<SourceFile>,
) -> Result<(), MetainfoError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        entries.push(entry.path());
    }
    entries.sort_unstable_by(|a, b| a.file_name().cmp(&b.file_name()));
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
        if hidden && !include_hidden {
            continue;
        }
        let link = fs::symlink_metadata(&path).map_err(|e| io_error(&path, e))?;
        let meta = fs::metadata(&path).map_err(|e| io_error(&path, e))?;
        let name = utf8_name(&path)?;
        if meta.is_dir() {
            if link.file_type().is_symlink() {
                continue;
            }
            rel.push(name);
            walk(&path, rel, include_hidden, files)?;
            rel.pop();
        } else if meta.is_file() {
            let mut file_rel = rel.clone();
            file_rel.push(name);
            files.push(SourceFile {
                disk_path: path,
                rel: file_rel,
                length: meta.len(),
                executable: meta.permissions().mode() & 0o111 != 0,
            });
        }
    }
    Ok(())
}

/// Creates a torrent for the file or directory at `path`, hashing on all cores. `progress` counts the
/// bytes hashed so far (for a progress bar). A file that changes size while it is hashed is an error.
pub fn create(
    path: &Path,
    options: &CreateOptions,
    progress: &AtomicU64,
) -> Result<Created, MetainfoError> {
    let (multi_file, sources) = scan(path, options.include_hidden)?;
    create_from(path, multi_file, &sources, options, progress)
}

/// [`create`] for files already listed by [`scan`] of `path` (a caller that needs the total size first,
/// for a progress bar, scans once).
pub fn create_from(
    path: &Path,
    multi_file: bool,
    sources: &[SourceFile],
    options: &CreateOptions,
    progress: &AtomicU64,
) -> Result<Created, MetainfoError> {
    let name = match &options.name {
        Some(name) => {
            validate_component(name)?;
            name.clone()
        }
        None => utf8_name(&fs::canonicalize(path).map_err(|e| io_error(path, e))?)?,
    };
    let total: u64 = sources.iter().map(|f| f.length).sum();
    if total == 0 {
        return Err(MetainfoError::invalid(format!(
            "{} holds no data (only empty files)",
            path.display()
        )));
    }
    let version = options.version;
    let piece_length = options
        .piece_length
        .unwrap_or_else(|| auto_piece_length(total));
    if piece_length < MIN_V2_PIECE_LENGTH || !piece_length.is_power_of_two() {
        return Err(MetainfoError::invalid(format!(
            "piece length {piece_length} must be a power of two of at least 16 KiB"
        )));
    }
    if piece_length > crate::MAX_PIECE_LENGTH {
        return Err(MetainfoError::invalid(format!(
            "piece length {piece_length} exceeds {}",
            crate::MAX_PIECE_LENGTH
        )));
    }

    // The file list in piece space. Hybrid torrents pad every file but the last to a piece boundary
    // (BEP 47), so the v1 and v2 views share piece boundaries; v2 alone aligns files without pad entries.
    let mut files: Vec<FileEntry> = Vec::new();
    let mut disk: Vec<Option<&Path>> = Vec::new();
    let mut offset = 0u64;
    for (i, source) in sources.iter().enumerate() {
        let mut entry_path = Vec::new();
        if multi_file {
            entry_path.push(name.clone());
            entry_path.extend(source.rel.iter().cloned());
        } else {
            entry_path.push(name.clone());
        }
        files.push(FileEntry {
            path: entry_path,
            length: source.length,
            offset,
            attr: FileAttr {
                executable: source.executable,
                ..FileAttr::default()
            },
            pieces_root: None,
        });
        disk.push(Some(&source.disk_path));
        offset += source.length;
        let tail = source.length % piece_length;
        let last = i + 1 == sources.len();
        if tail != 0 && !last {
            match version {
                Version::Hybrid => {
                    let pad = piece_length - tail;
                    files.push(FileEntry {
                        path: vec![name.clone(), ".pad".to_string(), pad.to_string()],
                        length: pad,
                        offset,
                        attr: FileAttr {
                            pad: true,
                            ..FileAttr::default()
                        },
                        pieces_root: None,
                    });
                    disk.push(None);
                    offset += pad;
                }
                Version::V2 => offset += piece_length - tail,
                Version::V1 => {}
            }
        }
    }
    let plan = Plan {
        space_len: files.iter().map(|f| f.offset + f.length).max().unwrap_or(0),
        files: &files,
        piece_length,
    };

    let source = ReadSource::open_all(&disk).map_err(|e| io_error(path, e))?;
    let jobs = plan.jobs(version.has_v1(), version.has_v2());
    let results = plan.run(&jobs, &source, progress);
    let mut hashes = Vec::with_capacity(results.len());
    for result in results {
        hashes.push(result.map_err(|e| io_error(path, e))?);
    }

    // v1 pieces in order: jobs are in piece order for both kinds of plan.
    let pieces_v1: Vec<u8> = hashes.iter().filter_map(|h| h.v1).flatten().collect();

    // v2: each file's piece roots, then its pieces root.
    let piece_blocks = (piece_length / MIN_V2_PIECE_LENGTH) as usize;
    let mut piece_layers: Vec<(merkle::Hash256, Vec<u8>)> = Vec::new();
    if version.has_v2() {
        let mut next = hashes.iter();
        for entry in files.iter_mut().filter(|f| !f.attr.pad) {
            let count = entry.length.div_ceil(piece_length) as usize;
            let layer: Vec<merkle::Hash256> =
                next.by_ref().take(count).filter_map(|h| h.v2).collect();
            entry.pieces_root = match count {
                0 => None,
                1 => Some(layer[0]),
                _ => {
                    let root = merkle::file_root(&layer, piece_blocks);
                    piece_layers.push((root, layer.concat()));
                    Some(root)
                }
            };
        }
    }

    let info = encode_info(
        &name,
        multi_file,
        piece_length,
        version,
        &files,
        &pieces_v1,
        options,
    );
    let bytes = encode_torrent(info, piece_layers, options);
    let torrent = Torrent::from_bytes(&bytes)?;
    Ok(Created { bytes, torrent })
}

fn attr_string(attr: &FileAttr) -> Option<Owned> {
    let mut s = String::new();
    if attr.pad {
        s.push('p');
    }
    if attr.executable {
        s.push('x');
    }
    (!s.is_empty()).then(|| Owned::str(&s))
}

fn encode_info(
    name: &str,
    multi_file: bool,
    piece_length: u64,
    version: Version,
    files: &[FileEntry],
    pieces_v1: &[u8],
    options: &CreateOptions,
) -> Vec<u8> {
    let mut info = DictBuilder::new();
    info.insert("name", Owned::str(name))
        .insert("piece length", Owned::Int(piece_length as i64));
    if options.private {
        info.insert("private", Owned::Int(1));
    }
    if let Some(source) = &options.source {
        info.insert("source", Owned::str(source));
    }
    if version.has_v1() {
        info.insert("pieces", Owned::Bytes(pieces_v1.to_vec()));
        if multi_file {
            let list = files
                .iter()
                .map(|f| {
                    let mut entry = DictBuilder::new();
                    entry.insert("length", Owned::Int(f.length as i64));
                    let rel = f.path[1..].iter().map(|c| Owned::str(c)).collect();
                    entry.insert("path", Owned::List(rel));
                    if let Some(attr) = attr_string(&f.attr) {
                        entry.insert("attr", attr);
                    }
                    entry.build()
                })
                .collect();
            info.insert("files", Owned::List(list));
        } else {
            info.insert("length", Owned::Int(files[0].length as i64));
            if let Some(attr) = attr_string(&files[0].attr) {
                info.insert("attr", attr);
            }
        }
    }
    if version.has_v2() {
        info.insert("meta version", Owned::Int(2));
        info.insert("file tree", file_tree(files, multi_file));
    }
    info.build().encode()
}

/// Builds the v2 `file tree`: nested dictionaries by path component, each file a `""` leaf.
fn file_tree(files: &[FileEntry], multi_file: bool) -> Owned {
    let mut tree = Owned::Dict(Default::default());
    for f in files.iter().filter(|f| !f.attr.pad) {
        // A multi-file torrent's paths start with its name, which the tree leaves out.
        let rel = if multi_file {
            &f.path[1..]
        } else {
            &f.path[..]
        };
        let mut node = &mut tree;
        for component in rel {
            let Owned::Dict(children) = node else {
                unreachable!("tree nodes are dictionaries")
            };
            node = children
                .entry(component.as_bytes().to_vec())
                .or_insert_with(|| Owned::Dict(Default::default()));
        }
        let mut leaf = DictBuilder::new();
        leaf.insert("length", Owned::Int(f.length as i64));
        if let Some(root) = f.pieces_root {
            leaf.insert("pieces root", Owned::Bytes(root.to_vec()));
        }
        if let Some(attr) = attr_string(&f.attr) {
            leaf.insert("attr", attr);
        }
        if let Owned::Dict(children) = node {
            children.insert(Vec::new(), leaf.build());
        }
    }
    tree
}

fn encode_torrent(
    info: Vec<u8>,
    piece_layers: Vec<(merkle::Hash256, Vec<u8>)>,
    options: &CreateOptions,
) -> Vec<u8> {
    let mut root = DictBuilder::new();
    let tiers: Vec<&Vec<String>> = options.trackers.iter().filter(|t| !t.is_empty()).collect();
    if let Some(first) = tiers.first().and_then(|t| t.first()) {
        root.insert("announce", Owned::str(first));
    }
    if tiers.iter().map(|t| t.len()).sum::<usize>() > 1 {
        let list = tiers
            .iter()
            .map(|tier| Owned::List(tier.iter().map(|u| Owned::str(u)).collect()))
            .collect();
        root.insert("announce-list", Owned::List(list));
    }
    if let Some(comment) = &options.comment {
        root.insert("comment", Owned::str(comment));
    }
    if let Some(created_by) = &options.created_by {
        root.insert("created by", Owned::str(created_by));
    }
    if let Some(date) = options.creation_date {
        root.insert("creation date", Owned::Int(date));
    }
    root.insert("info", Owned::Raw(info));
    if !piece_layers.is_empty() {
        let mut layers = DictBuilder::new();
        for (root_hash, layer) in piece_layers {
            layers.insert_bytes_key(root_hash.to_vec(), Owned::Bytes(layer));
        }
        root.insert("piece layers", layers.build());
    }
    match options.web_seeds.len() {
        0 => {}
        1 => {
            root.insert("url-list", Owned::str(&options.web_seeds[0]));
        }
        _ => {
            let list = options.web_seeds.iter().map(|u| Owned::str(u)).collect();
            root.insert("url-list", Owned::List(list));
        }
    }
    root.build().encode()
}
