//! Parsing `.torrent` files into the torrent model.

use std::collections::HashMap;

use bencode::{Dict, Value};
use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::merkle::{self, Hash256, BLOCK_SIZE};
use crate::path::{check_unique, validate_component};
use crate::MetainfoError;

/// Largest piece accepted (libtorrent refuses more, too).
pub const MAX_PIECE_LENGTH: u64 = 1 << 29;
/// BEP 52: v2 pieces are powers of two of at least one 16 KiB block.
pub const MIN_V2_PIECE_LENGTH: u64 = BLOCK_SIZE as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
    Hybrid,
}

impl Version {
    pub fn has_v1(self) -> bool {
        matches!(self, Version::V1 | Version::Hybrid)
    }
    pub fn has_v2(self) -> bool {
        matches!(self, Version::V2 | Version::Hybrid)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
            Version::Hybrid => "hybrid",
        }
    }
}

/// BEP 47 file attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileAttr {
    pub pad: bool,
    pub executable: bool,
    pub hidden: bool,
    pub symlink: bool,
}

impl FileAttr {
    fn parse(attr: &[u8]) -> Self {
        FileAttr {
            pad: attr.contains(&b'p'),
            executable: attr.contains(&b'x'),
            hidden: attr.contains(&b'h'),
            symlink: attr.contains(&b'l'),
        }
    }
}

/// One file of a torrent, pad files included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the download directory: for a multi-file torrent the torrent's name comes first.
    /// Every component has passed [`validate_component`].
    pub path: Vec<String>,
    pub length: u64,
    /// Where the file starts in the torrent's piece space. v1 files follow each other; in v2 every file
    /// starts on a piece boundary.
    pub offset: u64,
    pub attr: FileAttr,
    /// v2 merkle root of the file's content; `None` for v1-only torrents and empty files.
    pub pieces_root: Option<Hash256>,
}

/// A parsed torrent. The info dictionary's original bytes are kept, so the info-hashes are exact.
#[derive(Debug, Clone)]
pub struct Torrent {
    pub version: Version,
    pub name: String,
    pub piece_length: u64,
    pub files: Vec<FileEntry>,
    /// Whether the content is a directory (v1 `files` list, or a v2 tree that is not one top-level file).
    pub multi_file: bool,
    pub private: bool,
    pub source: Option<String>,
    /// v1 piece hashes (empty for v2-only torrents).
    pub pieces_v1: Vec<[u8; 20]>,
    /// v2 piece layers by pieces root, for files longer than one piece.
    pub piece_layers: HashMap<Hash256, Vec<Hash256>>,
    pub info_hash_v1: Option<[u8; 20]>,
    /// Full SHA-256 of the info dictionary (the magnet `btmh` carries it).
    pub info_hash_v2: Option<Hash256>,
    pub info_bytes: Vec<u8>,
    /// Announce URLs by tier (BEP 12); a lone `announce` becomes one tier.
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

fn field<'d, 'a>(dict: &'d Dict<'a>, key: &str) -> Option<&'d Value<'a>> {
    dict.get(key.as_bytes())
}

fn required<'d, 'a>(
    dict: &'d Dict<'a>,
    key: &str,
    what: &str,
) -> Result<&'d Value<'a>, MetainfoError> {
    field(dict, key).ok_or_else(|| MetainfoError::invalid(format!("{what} has no \"{key}\"")))
}

fn non_negative(value: &Value<'_>, what: &str) -> Result<u64, MetainfoError> {
    value
        .as_int()
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| {
            MetainfoError::invalid(format!(
                "{what} at byte {} is not a non-negative integer",
                value.offset()
            ))
        })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A string field, preferring its `.utf-8` twin where a creator wrote one.
fn string_field(dict: &Dict<'_>, key: &str) -> Option<String> {
    field(dict, &format!("{key}.utf-8"))
        .and_then(Value::as_bytes)
        .or_else(|| field(dict, key).and_then(Value::as_bytes))
        .map(text)
}

fn path_list(dict: &Dict<'_>) -> Result<Vec<String>, MetainfoError> {
    let list = field(dict, "path.utf-8")
        .and_then(Value::as_list)
        .or_else(|| field(dict, "path").and_then(Value::as_list))
        .ok_or_else(|| MetainfoError::invalid("a file in \"files\" has no \"path\" list"))?;
    if list.is_empty() {
        return Err(MetainfoError::invalid(
            "a file in \"files\" has an empty path",
        ));
    }
    list.iter()
        .map(|c| {
            let c = c
                .as_bytes()
                .ok_or_else(|| MetainfoError::invalid("a path component is not a string"))?;
            let c = text(c);
            validate_component(&c)?;
            Ok(c)
        })
        .collect()
}

impl Torrent {
    /// Parses and validates a `.torrent` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Torrent, MetainfoError> {
        let root = bencode::decode(bytes)?;
        let dict = root
            .as_dict()
            .ok_or_else(|| MetainfoError::invalid("a torrent file must be a dictionary"))?;
        let info = required(dict, "info", "the torrent")?;
        let mut torrent = Torrent::from_info_value(info)?;

        if torrent.version.has_v2() {
            torrent.piece_layers = parse_piece_layers(field(dict, "piece layers"))?;
            torrent.check_piece_layers()?;
        }

        let mut tiers: Vec<Vec<String>> = field(dict, "announce-list")
            .and_then(Value::as_list)
            .map(|tiers| {
                tiers
                    .iter()
                    .filter_map(Value::as_list)
                    .map(|tier| {
                        tier.iter()
                            .filter_map(Value::as_bytes)
                            .map(text)
                            .collect::<Vec<_>>()
                    })
                    .filter(|tier: &Vec<String>| !tier.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if tiers.is_empty() {
            if let Some(announce) = field(dict, "announce").and_then(Value::as_bytes) {
                if !announce.is_empty() {
                    tiers.push(vec![text(announce)]);
                }
            }
        }
        torrent.trackers = tiers;
        torrent.web_seeds = match field(dict, "url-list") {
            Some(v) => match v.as_list() {
                Some(list) => list.iter().filter_map(Value::as_bytes).map(text).collect(),
                None => v.as_bytes().map(text).into_iter().collect(),
            },
            None => Vec::new(),
        };
        torrent.web_seeds.retain(|u| !u.is_empty());
        torrent.comment = string_field(dict, "comment");
        torrent.created_by = string_field(dict, "created by");
        torrent.creation_date = field(dict, "creation date").and_then(Value::as_int);
        Ok(torrent)
    }

    /// Builds a torrent from its info dictionary alone (as a magnet download receives it over BEP 9).
    /// v2 piece layers are not part of it and stay empty.
    pub fn from_info_bytes(info: &[u8]) -> Result<Torrent, MetainfoError> {
        let value = bencode::decode(info)?;
        Torrent::from_info_value(&value)
    }

    fn from_info_value(info: &Value<'_>) -> Result<Torrent, MetainfoError> {
        let dict = info
            .as_dict()
            .ok_or_else(|| MetainfoError::invalid("\"info\" is not a dictionary"))?;
        let name = string_field(dict, "name")
            .ok_or_else(|| MetainfoError::invalid("info has no \"name\""))?;
        validate_component(&name)?;
        let piece_length = non_negative(required(dict, "piece length", "info")?, "piece length")?;
        if piece_length == 0 || piece_length > MAX_PIECE_LENGTH {
            return Err(MetainfoError::invalid(format!(
                "piece length {piece_length} is outside 1..={MAX_PIECE_LENGTH}"
            )));
        }
        let meta_version = field(dict, "meta version").and_then(Value::as_int);
        let has_v2 = match meta_version {
            None | Some(1) => false,
            Some(2) => true,
            Some(other) => {
                return Err(MetainfoError::invalid(format!(
                    "unsupported meta version {other}"
                )))
            }
        };
        let has_v1 = field(dict, "pieces").is_some();
        if !has_v1 && !has_v2 {
            return Err(MetainfoError::invalid("info has no \"pieces\""));
        }

        let v1 = if has_v1 {
            Some(parse_v1_files(dict, &name, piece_length)?)
        } else {
            None
        };
        let v2 = if has_v2 {
            if !piece_length.is_power_of_two() || piece_length < MIN_V2_PIECE_LENGTH {
                return Err(MetainfoError::invalid(format!(
                    "v2 piece length {piece_length} is not a power of two of at least 16 KiB"
                )));
            }
            Some(parse_file_tree(dict, &name)?)
        } else {
            None
        };

        let (version, files, multi_file, pieces_v1) = match (v1, v2) {
            (Some(v1), None) => (Version::V1, v1.files, v1.multi_file, v1.pieces),
            (None, Some(v2)) => {
                let mut files = v2.files;
                let mut offset = 0u64;
                for f in &mut files {
                    f.offset = offset;
                    if f.length > 0 {
                        offset = offset
                            .checked_add(f.length.div_ceil(piece_length) * piece_length)
                            .ok_or_else(|| MetainfoError::invalid("total size overflows"))?;
                    }
                }
                (Version::V2, files, v2.multi_file, Vec::new())
            }
            (Some(v1), Some(v2)) => {
                let files = merge_hybrid(v1.files, v2.files, piece_length)?;
                if v1.multi_file != v2.multi_file {
                    return Err(MetainfoError::invalid(
                        "hybrid torrent: v1 and v2 parts disagree on single- or multi-file layout",
                    ));
                }
                (Version::Hybrid, files, v1.multi_file, v1.pieces)
            }
            (None, None) => unreachable!("checked above"),
        };

        let mut paths: Vec<&[String]> = files
            .iter()
            .filter(|f| !f.attr.pad)
            .map(|f| &f.path[..])
            .collect();
        check_unique(&mut paths)?;

        let raw = info.raw();
        let torrent = Torrent {
            version,
            name,
            piece_length,
            files,
            multi_file,
            private: field(dict, "private").and_then(Value::as_int) == Some(1),
            source: string_field(dict, "source"),
            pieces_v1,
            piece_layers: HashMap::new(),
            info_hash_v1: version.has_v1().then(|| Sha1::digest(raw).into()),
            info_hash_v2: version.has_v2().then(|| Sha256::digest(raw).into()),
            info_bytes: raw.to_vec(),
            trackers: Vec::new(),
            web_seeds: Vec::new(),
            comment: None,
            created_by: None,
            creation_date: None,
        };
        if torrent.total_size() == 0 {
            return Err(MetainfoError::invalid("the torrent holds no data"));
        }
        Ok(torrent)
    }

    /// Sum of the lengths of the real (non-pad) files.
    /// A .torrent file for this torrent: its info dictionary byte for byte, trackers, web seeds and
    /// v2 piece layers (what a torrent from a magnet link needs to be saved and loaded again).
    pub fn to_file_bytes(&self) -> Vec<u8> {
        use bencode::Owned;
        use std::collections::BTreeMap;
        let mut root: BTreeMap<Vec<u8>, Owned> = BTreeMap::new();
        root.insert(b"info".to_vec(), Owned::Raw(self.info_bytes.clone()));
        if let Some(first) = self.trackers.first().and_then(|tier| tier.first()) {
            root.insert(b"announce".to_vec(), Owned::str(first));
            let tiers = self
                .trackers
                .iter()
                .map(|tier| Owned::List(tier.iter().map(|u| Owned::str(u)).collect()))
                .collect();
            root.insert(b"announce-list".to_vec(), Owned::List(tiers));
        }
        if !self.web_seeds.is_empty() {
            let seeds = self.web_seeds.iter().map(|u| Owned::str(u)).collect();
            root.insert(b"url-list".to_vec(), Owned::List(seeds));
        }
        if !self.piece_layers.is_empty() {
            let layers = self
                .piece_layers
                .iter()
                .map(|(root, layer)| (root.to_vec(), Owned::Bytes(layer.concat())))
                .collect();
            root.insert(b"piece layers".to_vec(), Owned::Dict(layers));
        }
        Owned::Dict(root).encode()
    }

    pub fn total_size(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| !f.attr.pad)
            .map(|f| f.length)
            .sum()
    }

    /// Length of the piece space: where the last byte of the last file lies, plus one.
    pub fn piece_space_len(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| f.length > 0)
            .map(|f| f.offset + f.length)
            .max()
            .unwrap_or(0)
    }

    pub fn piece_count(&self) -> u64 {
        self.piece_space_len().div_ceil(self.piece_length)
    }

    /// Length of piece `index` on the wire. v1 and hybrid pieces run across files (pad files included),
    /// so only the torrent's last piece is short; a v2 piece never crosses a file end, so each file's last
    /// piece is short.
    pub fn piece_size(&self, index: u64) -> u64 {
        let start = index * self.piece_length;
        let end = if self.version == Version::V2 {
            self.files
                .iter()
                .find(|f| f.length > 0 && f.offset <= start && start < f.offset + f.length)
                .map_or(start, |f| f.offset + f.length)
        } else {
            self.piece_space_len()
        };
        end.saturating_sub(start).min(self.piece_length)
    }

    /// Piece layer of a v2 file, or `None` when the file fits in one piece (its root is its only hash).
    pub fn piece_layer(&self, file: &FileEntry) -> Option<&[Hash256]> {
        let root = file.pieces_root?;
        self.piece_layers.get(&root).map(Vec::as_slice)
    }

    fn check_piece_layers(&self) -> Result<(), MetainfoError> {
        let piece_blocks = (self.piece_length / MIN_V2_PIECE_LENGTH) as usize;
        for file in self.files.iter().filter(|f| f.length > self.piece_length) {
            let Some(root) = file.pieces_root else {
                continue;
            };
            let layer = self.piece_layers.get(&root).ok_or_else(|| {
                MetainfoError::invalid(format!("no piece layer for {}", file.path.join("/")))
            })?;
            if layer.len() as u64 != file.length.div_ceil(self.piece_length) {
                return Err(MetainfoError::invalid(format!(
                    "piece layer of {} has {} hashes, expected {}",
                    file.path.join("/"),
                    layer.len(),
                    file.length.div_ceil(self.piece_length)
                )));
            }
            if merkle::file_root(layer, piece_blocks) != root {
                return Err(MetainfoError::invalid(format!(
                    "piece layer of {} does not hash to its pieces root",
                    file.path.join("/")
                )));
            }
        }
        Ok(())
    }
}

struct Layout {
    files: Vec<FileEntry>,
    multi_file: bool,
}

struct V1Layout {
    files: Vec<FileEntry>,
    multi_file: bool,
    pieces: Vec<[u8; 20]>,
}

fn parse_v1_files(
    dict: &Dict<'_>,
    name: &str,
    piece_length: u64,
) -> Result<V1Layout, MetainfoError> {
    let pieces = required(dict, "pieces", "info")?
        .as_bytes()
        .ok_or_else(|| MetainfoError::invalid("\"pieces\" is not a string"))?;
    if pieces.len() % 20 != 0 {
        return Err(MetainfoError::invalid(format!(
            "\"pieces\" is {} bytes, not a multiple of 20",
            pieces.len()
        )));
    }
    let mut files = Vec::new();
    let multi_file;
    match (field(dict, "length"), field(dict, "files")) {
        (Some(length), None) => {
            multi_file = false;
            files.push(FileEntry {
                path: vec![name.to_string()],
                length: non_negative(length, "length")?,
                offset: 0,
                attr: field(dict, "attr")
                    .and_then(Value::as_bytes)
                    .map(FileAttr::parse)
                    .unwrap_or_default(),
                pieces_root: None,
            });
        }
        (None, Some(list)) => {
            multi_file = true;
            let list = list
                .as_list()
                .ok_or_else(|| MetainfoError::invalid("\"files\" is not a list"))?;
            if list.is_empty() {
                return Err(MetainfoError::invalid("\"files\" is empty"));
            }
            let mut offset = 0u64;
            for entry in list {
                let entry = entry.as_dict().ok_or_else(|| {
                    MetainfoError::invalid("an entry of \"files\" is not a dictionary")
                })?;
                let length = non_negative(required(entry, "length", "a file")?, "file length")?;
                let mut path = vec![name.to_string()];
                path.extend(path_list(entry)?);
                files.push(FileEntry {
                    path,
                    length,
                    offset,
                    attr: field(entry, "attr")
                        .and_then(Value::as_bytes)
                        .map(FileAttr::parse)
                        .unwrap_or_default(),
                    pieces_root: None,
                });
                offset = offset
                    .checked_add(length)
                    .ok_or_else(|| MetainfoError::invalid("total size overflows"))?;
            }
        }
        (Some(_), Some(_)) => {
            return Err(MetainfoError::invalid(
                "info has both \"length\" and \"files\"",
            ))
        }
        (None, None) => {
            return Err(MetainfoError::invalid(
                "info has neither \"length\" nor \"files\"",
            ))
        }
    }
    let total: u64 = files.iter().map(|f| f.length).sum();
    let expected = total.div_ceil(piece_length);
    if (pieces.len() / 20) as u64 != expected {
        return Err(MetainfoError::invalid(format!(
            "{} piece hashes for {total} bytes in pieces of {piece_length}: expected {expected}",
            pieces.len() / 20
        )));
    }
    let pieces = pieces
        .chunks_exact(20)
        .map(|c| {
            let mut h = [0u8; 20];
            h.copy_from_slice(c);
            h
        })
        .collect();
    Ok(V1Layout {
        files,
        multi_file,
        pieces,
    })
}

fn parse_file_tree(dict: &Dict<'_>, name: &str) -> Result<Layout, MetainfoError> {
    let tree = required(dict, "file tree", "v2 info")?
        .as_dict()
        .ok_or_else(|| MetainfoError::invalid("\"file tree\" is not a dictionary"))?;
    let mut files = Vec::new();
    let mut prefix = Vec::new();
    walk_tree(tree, &mut prefix, &mut files)?;
    if files.is_empty() {
        return Err(MetainfoError::invalid("\"file tree\" holds no files"));
    }
    // One top-level file is a single-file torrent; anything else lives in a directory named `name`.
    let multi_file = !(files.len() == 1 && files[0].path.len() == 1);
    if multi_file {
        for f in &mut files {
            f.path.insert(0, name.to_string());
        }
    }
    Ok(Layout { files, multi_file })
}

fn walk_tree(
    dir: &Dict<'_>,
    prefix: &mut Vec<String>,
    files: &mut Vec<FileEntry>,
) -> Result<(), MetainfoError> {
    // v2 file order is the tree's key order, whatever order the keys were written in.
    let mut entries: Vec<_> = dir.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (key, node) in entries {
        let component = text(key);
        validate_component(&component)?;
        let node = node.as_dict().ok_or_else(|| {
            MetainfoError::invalid(format!(
                "file tree entry \"{component}\" is not a dictionary"
            ))
        })?;
        prefix.push(component);
        if let Some(leaf) = node.get(b"") {
            if node.len() != 1 {
                return Err(MetainfoError::invalid(format!(
                    "file tree entry {} is both a file and a directory",
                    prefix.join("/")
                )));
            }
            let leaf = leaf
                .as_dict()
                .ok_or_else(|| MetainfoError::invalid("a file tree leaf is not a dictionary"))?;
            let length =
                non_negative(required(leaf, "length", "a file tree leaf")?, "file length")?;
            let pieces_root = match field(leaf, "pieces root").and_then(Value::as_bytes) {
                Some(root) if root.len() == 32 => {
                    let mut h = [0u8; 32];
                    h.copy_from_slice(root);
                    Some(h)
                }
                Some(_) => return Err(MetainfoError::invalid("\"pieces root\" is not 32 bytes")),
                None if length > 0 => {
                    return Err(MetainfoError::invalid(format!(
                        "{} has no \"pieces root\"",
                        prefix.join("/")
                    )))
                }
                None => None,
            };
            files.push(FileEntry {
                path: prefix.clone(),
                length,
                offset: 0,
                attr: field(leaf, "attr")
                    .and_then(Value::as_bytes)
                    .map(FileAttr::parse)
                    .unwrap_or_default(),
                pieces_root,
            });
        } else {
            if node.is_empty() {
                return Err(MetainfoError::invalid(format!(
                    "file tree directory {} is empty",
                    prefix.join("/")
                )));
            }
            walk_tree(node, prefix, files)?;
        }
        prefix.pop();
    }
    Ok(())
}

/// Checks that a hybrid torrent's v1 file list and v2 file tree describe the same files, each v2 file
/// starting on a piece boundary, and returns the v1 list with the v2 roots filled in.
fn merge_hybrid(
    mut v1: Vec<FileEntry>,
    v2: Vec<FileEntry>,
    piece_length: u64,
) -> Result<Vec<FileEntry>, MetainfoError> {
    let mut v2_files = v2.into_iter();
    for file in v1.iter_mut().filter(|f| !f.attr.pad) {
        let other = v2_files
            .next()
            .ok_or_else(|| MetainfoError::invalid("hybrid torrent: v1 lists more files than v2"))?;
        if other.path != file.path || other.length != file.length {
            return Err(MetainfoError::invalid(format!(
                "hybrid torrent: v1 file {} ({} bytes) does not match v2 file {} ({} bytes)",
                file.path.join("/"),
                file.length,
                other.path.join("/"),
                other.length
            )));
        }
        if file.length > 0 && file.offset % piece_length != 0 {
            return Err(MetainfoError::invalid(format!(
                "hybrid torrent: {} does not start on a piece boundary",
                file.path.join("/")
            )));
        }
        file.pieces_root = other.pieces_root;
    }
    if v2_files.next().is_some() {
        return Err(MetainfoError::invalid(
            "hybrid torrent: v2 lists more files than v1",
        ));
    }
    Ok(v1)
}

fn parse_piece_layers(
    value: Option<&Value<'_>>,
) -> Result<HashMap<Hash256, Vec<Hash256>>, MetainfoError> {
    let mut layers = HashMap::new();
    let Some(value) = value else {
        return Ok(layers);
    };
    let dict = value
        .as_dict()
        .ok_or_else(|| MetainfoError::invalid("\"piece layers\" is not a dictionary"))?;
    for (root, hashes) in dict.iter() {
        let root: Hash256 = root
            .try_into()
            .map_err(|_| MetainfoError::invalid("a \"piece layers\" key is not 32 bytes"))?;
        let hashes = hashes
            .as_bytes()
            .filter(|h| h.len() % 32 == 0)
            .ok_or_else(|| {
                MetainfoError::invalid("a piece layer is not a string of 32-byte hashes")
            })?;
        let layer = hashes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        layers.insert(root, layer);
    }
    Ok(layers)
}
