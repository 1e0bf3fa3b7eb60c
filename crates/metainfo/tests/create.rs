use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use metainfo::{auto_piece_length, create, verify, CreateOptions, Magnet, Torrent, Version};
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// Deterministic bytes that differ per file.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

fn make(path: &Path, version: Version, piece_length: u64) -> Torrent {
    let options = CreateOptions {
        version,
        piece_length: Some(piece_length),
        ..CreateOptions::default()
    };
    create(path, &options, &AtomicU64::new(0)).unwrap().torrent
}

/// A file's v2 root computed the plain way: every leaf of the whole tree, zero-padded to a power of two
/// of at least one piece's worth of leaves when the file spans several pieces.
fn reference_root(bytes: &[u8], piece_length: usize) -> [u8; 32] {
    let mut layer: Vec<[u8; 32]> = bytes
        .chunks(16384)
        .map(|b| Sha256::digest(b).into())
        .collect();
    let piece_blocks = piece_length / 16384;
    let mut width = layer.len().next_power_of_two();
    if bytes.len() > piece_length {
        width = width.max(piece_blocks);
        // Every piece subtree is full-width, so the leaf count rounds up to whole pieces first.
        let pieces = bytes.len().div_ceil(piece_length);
        width = width.max(pieces.next_power_of_two() * piece_blocks);
    }
    layer.resize(width, [0; 32]);
    while layer.len() > 1 {
        layer = layer
            .chunks(2)
            .map(|p| {
                let mut h = Sha256::new();
                h.update(p[0]);
                h.update(p[1]);
                h.finalize().into()
            })
            .collect();
    }
    layer[0]
}

#[test]
fn v1_pieces_are_sha1_of_the_concatenated_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    let (a, b, c) = (data(1, 50_000), data(2, 30_001), data(3, 17));
    write(&root, "b/inner.bin", &b);
    write(&root, "a.bin", &a);
    write(&root, "c", &c);
    write(&root, "empty", &[]);
    let t = make(&root, Version::V1, 16384);
    let names: Vec<String> = t.files.iter().map(|f| f.path.join("/")).collect();
    assert_eq!(
        names,
        [
            "content/a.bin",
            "content/b/inner.bin",
            "content/c",
            "content/empty"
        ]
    );
    let all: Vec<u8> = [a, b, c].concat();
    let expect: Vec<[u8; 20]> = all.chunks(16384).map(|p| Sha1::digest(p).into()).collect();
    assert_eq!(t.pieces_v1, expect);
    assert_eq!(t.total_size(), all.len() as u64);
}

#[test]
fn v2_roots_match_a_plain_merkle_tree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("v2");
    let piece = 65536usize;
    let sizes = [1usize, 16384, 16385, 65536, 65537, 3 * 65536 + 5, 9 * 65536];
    for (i, len) in sizes.iter().enumerate() {
        write(&root, &format!("f{i}"), &data(i as u64 + 10, *len));
    }
    for version in [Version::V2, Version::Hybrid] {
        let t = make(&root, version, piece as u64);
        let real: Vec<_> = t.files.iter().filter(|f| !f.attr.pad).collect();
        for (i, f) in real.iter().enumerate() {
            let bytes = data(i as u64 + 10, sizes[i]);
            assert_eq!(
                f.pieces_root,
                Some(reference_root(&bytes, piece)),
                "{version:?} f{i}"
            );
            assert_eq!(
                f.offset % piece as u64,
                0,
                "files start on piece boundaries"
            );
        }
        let expected_pieces: u64 = sizes.iter().map(|s| s.div_ceil(piece) as u64).sum();
        assert_eq!(t.piece_count(), expected_pieces);
    }
}

#[test]
fn hybrid_v1_pieces_are_padded_with_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("h");
    let (a, b) = (data(5, 20_000), data(6, 20_000));
    write(&root, "a", &a);
    write(&root, "b", &b);
    let t = make(&root, Version::Hybrid, 16384);
    let pads: Vec<_> = t.files.iter().filter(|f| f.attr.pad).collect();
    assert_eq!(pads.len(), 1, "a pad after every file but the last");
    assert_eq!(pads[0].length, 16384 - (20_000 - 16384));
    assert_eq!(pads[0].path, ["h", ".pad", "12768"]);
    let mut stream = a.clone();
    stream.resize(32768, 0);
    stream.extend_from_slice(&b);
    let expect: Vec<[u8; 20]> = stream
        .chunks(16384)
        .map(|p| Sha1::digest(p).into())
        .collect();
    assert_eq!(t.pieces_v1, expect);
}

#[test]
fn verify_finds_the_corrupt_piece_and_file() {
    for version in [Version::V1, Version::V2, Version::Hybrid] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v");
        write(&root, "a", &data(7, 100_000));
        write(&root, "b", &data(8, 40_000));
        let t = make(&root, version, 16384);
        let report = verify(&t, dir.path(), &AtomicU64::new(0));
        assert!(report.ok(), "{version:?} {report:?}");
        // The content directory itself works as well as its parent.
        assert!(verify(&t, &root, &AtomicU64::new(0)).ok());

        let mut b = data(8, 40_000);
        b[20_000] ^= 1;
        write(&root, "b", &b);
        let report = verify(&t, dir.path(), &AtomicU64::new(0));
        assert!(!report.ok());
        let b_start = t
            .files
            .iter()
            .find(|f| f.path.ends_with(&["b".to_string()]))
            .unwrap()
            .offset;
        assert_eq!(
            report.bad_pieces(),
            vec![(b_start + 20_000) / 16384],
            "{version:?}"
        );
        assert_eq!(report.files[0].bad_pieces, 0);
        assert_eq!(report.files[1].bad_pieces, 1);

        fs::remove_file(root.join("a")).unwrap();
        let report = verify(&t, dir.path(), &AtomicU64::new(0));
        assert_eq!(report.files[0].size_on_disk, None);
        assert_eq!(report.files[0].bad_pieces, report.files[0].pieces);
    }
}

#[test]
fn single_file_torrent_and_output_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("movie.mkv");
    fs::write(&file, data(9, 70_000)).unwrap();
    let options = CreateOptions {
        version: Version::Hybrid,
        trackers: vec![
            vec!["http://127.0.0.1:1/announce".into()],
            vec!["udp://127.0.0.1:2".into()],
        ],
        web_seeds: vec!["http://127.0.0.1:3/".into()],
        comment: Some("c".into()),
        private: true,
        ..CreateOptions::default()
    };
    let one = create(&file, &options, &AtomicU64::new(0)).unwrap();
    let two = create(&file, &options, &AtomicU64::new(0)).unwrap();
    assert_eq!(one.bytes, two.bytes);
    let t = one.torrent;
    assert!(!t.multi_file);
    assert_eq!(t.name, "movie.mkv");
    assert_eq!(t.files[0].path, ["movie.mkv"]);
    assert!(t.private);
    assert_eq!(t.trackers.len(), 2);
    assert_eq!(t.web_seeds, ["http://127.0.0.1:3/"]);
    // What we write is canonical bencode.
    bencode::decode_strict(&one.bytes).unwrap();
    let m = Magnet::parse(&Magnet::from_torrent(&t).to_string()).unwrap();
    assert_eq!(m.info_hash_v1, t.info_hash_v1);
    assert_eq!(m.info_hash_v2, t.info_hash_v2);
    assert_eq!(m.name.as_deref(), Some("movie.mkv"));
}

#[test]
fn hidden_files_are_skipped_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("d");
    write(&root, "shown", b"x");
    write(&root, ".secret", b"y");
    write(&root, ".git/config", b"z");
    let t = make(&root, Version::V1, 16384);
    assert_eq!(t.files.len(), 1);
    let options = CreateOptions {
        include_hidden: true,
        ..CreateOptions::default()
    };
    let t = create(&root, &options, &AtomicU64::new(0)).unwrap().torrent;
    let names: Vec<String> = t.files.iter().map(|f| f.path.join("/")).collect();
    assert_eq!(names, ["d/.git/config", "d/.secret", "d/shown"]);
}

#[test]
fn refuses_empty_content_and_bad_piece_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("e");
    fs::create_dir_all(&root).unwrap();
    let options = CreateOptions::default();
    assert!(create(&root, &options, &AtomicU64::new(0)).is_err());
    write(&root, "zero", &[]);
    assert!(create(&root, &options, &AtomicU64::new(0)).is_err());
    write(&root, "one", b"1");
    for bad in [0, 1000, 16383, 3 << 14] {
        let options = CreateOptions {
            piece_length: Some(bad),
            ..CreateOptions::default()
        };
        assert!(
            create(&root, &options, &AtomicU64::new(0)).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn auto_piece_length_aims_at_1000_to_2000_pieces() {
    assert_eq!(auto_piece_length(1), 16384);
    assert_eq!(auto_piece_length(1 << 30), 1 << 20);
    assert_eq!(auto_piece_length(2 << 30), 2 << 20);
    assert_eq!(auto_piece_length(1 << 50), 16 << 20);
    for total in [100u64 << 20, 700 << 20, 4 << 30, 20 << 30] {
        let pieces = total.div_ceil(auto_piece_length(total));
        assert!((1000..=2000).contains(&pieces), "{total}: {pieces}");
    }
}

#[test]
fn v2_pieces_end_at_file_ends() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("p");
    write(&root, "a", &data(1, 20_000));
    write(&root, "b", &data(2, 40_000));
    let v2 = make(&root, Version::V2, 16384);
    let sizes: Vec<u64> = (0..v2.piece_count()).map(|i| v2.piece_size(i)).collect();
    assert_eq!(sizes, [16384, 20_000 - 16384, 16384, 16384, 40_000 - 32768]);
    let hybrid = make(&root, Version::Hybrid, 16384);
    let sizes: Vec<u64> = (0..hybrid.piece_count())
        .map(|i| hybrid.piece_size(i))
        .collect();
    assert_eq!(sizes, [16384, 16384, 16384, 16384, 40_000 - 32768]);
}

#[test]
fn a_torrent_written_back_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("album");
    write(&root, "long.bin", &data(5, 300_000));
    write(&root, "short.bin", &data(6, 1_000));
    for version in [Version::V1, Version::V2, Version::Hybrid] {
        let mut t = make(&root, version, 16 * 1024);
        t.trackers = vec![vec!["http://a/announce".into()], vec!["udp://b:1".into()]];
        t.web_seeds = vec!["http://w/".into()];
        let back = Torrent::from_bytes(&t.to_file_bytes()).unwrap();
        assert_eq!(back.info_hash_v1, t.info_hash_v1);
        assert_eq!(back.info_hash_v2, t.info_hash_v2);
        assert_eq!(back.piece_layers, t.piece_layers);
        assert_eq!(back.trackers, t.trackers);
        assert_eq!(back.web_seeds, t.web_seeds);
        assert_eq!(version != Version::V1, !back.piece_layers.is_empty());
    }
}
