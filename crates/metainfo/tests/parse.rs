use bencode::{DictBuilder, Owned};
use metainfo::{MetainfoError, Torrent, Version};
use sha1::{Digest, Sha1};

fn s(v: &str) -> Owned {
    Owned::str(v)
}

fn path(components: &[&str]) -> Owned {
    Owned::List(components.iter().map(|c| s(c)).collect())
}

/// A v1 multi-file info dict with files of the given paths and lengths and zero piece hashes.
fn v1_info(name: &str, files: &[(&[&str], i64)], piece_length: i64) -> DictBuilder {
    let total: i64 = files.iter().map(|f| f.1).sum();
    let pieces = (total + piece_length - 1) / piece_length;
    let mut info = DictBuilder::new();
    info.insert("name", s(name))
        .insert("piece length", Owned::Int(piece_length))
        .insert("pieces", Owned::Bytes(vec![0; 20 * pieces as usize]))
        .insert(
            "files",
            Owned::List(
                files
                    .iter()
                    .map(|(p, len)| {
                        let mut f = DictBuilder::new();
                        f.insert("length", Owned::Int(*len)).insert("path", path(p));
                        f.build()
                    })
                    .collect(),
            ),
        );
    info
}

fn torrent_with(info: Owned) -> Vec<u8> {
    let mut root = DictBuilder::new();
    root.insert("announce", s("http://127.0.0.1:6969/announce"))
        .insert("info", info);
    root.build().encode()
}

fn parse_err(bytes: &[u8]) -> String {
    Torrent::from_bytes(bytes)
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn v1_multi_file_and_info_hash_over_raw_bytes() {
    let info = v1_info("dir", &[(&["a", "b.txt"], 10), (&["c"], 20)], 16);
    let info_bytes = info.clone().build().encode();
    let t = Torrent::from_bytes(&torrent_with(info.build())).unwrap();
    assert_eq!(t.version, Version::V1);
    assert!(t.multi_file);
    assert_eq!(t.info_hash_v1, Some(Sha1::digest(&info_bytes).into()));
    assert_eq!(t.info_bytes, info_bytes);
    assert_eq!(t.files[0].path, ["dir", "a", "b.txt"]);
    assert_eq!(t.files[1].offset, 10);
    assert_eq!(t.piece_count(), 2);
    assert_eq!(t.piece_size(1), 14);
    assert_eq!(
        t.trackers,
        vec![vec!["http://127.0.0.1:6969/announce".to_string()]]
    );
}

#[test]
fn unsorted_keys_keep_the_original_info_hash() {
    // Keys out of order, as some creators wrote them: the hash is over these exact bytes.
    let info = b"d6:lengthi5e4:name1:x12:piece lengthi16e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
    let mut bytes = b"d4:info".to_vec();
    bytes.extend_from_slice(info);
    bytes.push(b'e');
    let t = Torrent::from_bytes(&bytes).unwrap();
    assert_eq!(t.info_hash_v1, Some(Sha1::digest(info).into()));
    assert_eq!(t.name, "x");
}

#[test]
fn path_traversal_is_rejected_everywhere() {
    for bad in [
        &["..", "etc", "passwd"][..],
        &["a", "..", "..", "b"],
        &["/etc"],
        &[""],
        &["a\\..\\b"],
        &["CON"],
        &["nul.txt"],
        &["C:", "x"],
    ] {
        let info = v1_info("dir", &[(bad, 5)], 16);
        let err = parse_err(&torrent_with(info.build()));
        assert!(err.contains("unsafe file path"), "{bad:?}: {err}");
    }
    // The name is a path component too.
    for bad in ["..", "a/b", "", "."] {
        let info = v1_info(bad, &[(&["f"], 5)], 16);
        assert!(parse_err(&torrent_with(info.build())).contains("unsafe file path"));
    }
    // An empty path list names the directory itself.
    let info = v1_info("dir", &[(&[], 5)], 16);
    assert!(parse_err(&torrent_with(info.build())).contains("empty path"));
}

#[test]
fn utf8_path_variant_is_preferred() {
    let mut f = DictBuilder::new();
    f.insert("length", Owned::Int(5))
        .insert("path", path(&["bad..name"]))
        .insert("path.utf-8", path(&["..", "evil"]));
    let mut info = DictBuilder::new();
    info.insert("name", s("d"))
        .insert("piece length", Owned::Int(16))
        .insert("pieces", Owned::Bytes(vec![0; 20]))
        .insert("files", Owned::List(vec![f.build()]));
    // The `.utf-8` twin is the one used, so it is the one validated.
    assert!(parse_err(&torrent_with(info.build())).contains("unsafe file path"));
}

#[test]
fn duplicate_and_clashing_paths_are_rejected() {
    let info = v1_info("d", &[(&["a"], 5), (&["a"], 5)], 16);
    assert!(parse_err(&torrent_with(info.build())).contains("appears twice"));
    let info = v1_info("d", &[(&["a"], 5), (&["a", "b"], 5)], 16);
    assert!(parse_err(&torrent_with(info.build())).contains("both a file and a directory"));
}

#[test]
fn structural_errors_are_clear() {
    let info = v1_info("d", &[(&["a"], 40)], 16);
    let mut wrong = info.clone();
    wrong.insert("pieces", Owned::Bytes(vec![0; 40]));
    assert!(parse_err(&torrent_with(wrong.build())).contains("expected 3"));

    let mut both = info.clone();
    both.insert("length", Owned::Int(40));
    assert!(parse_err(&torrent_with(both.build())).contains("both \"length\" and \"files\""));

    let mut odd = info.clone();
    odd.insert("pieces", Owned::Bytes(vec![0; 21]));
    assert!(parse_err(&torrent_with(odd.build())).contains("multiple of 20"));

    let mut zero = info.clone();
    zero.insert("piece length", Owned::Int(0));
    assert!(parse_err(&torrent_with(zero.build())).contains("piece length 0"));

    let mut negative = v1_info("d", &[(&["a"], -1)], 16);
    negative.insert("pieces", Owned::Bytes(vec![]));
    assert!(parse_err(&torrent_with(negative.build())).contains("non-negative"));

    assert!(parse_err(b"d4:infoi3ee").contains("not a dictionary"));
    assert!(parse_err(b"le").contains("must be a dictionary"));
    assert!(parse_err(b"d8:announce3:urle").contains("no \"info\""));

    let mut future = info.clone();
    future.insert("meta version", Owned::Int(3));
    assert!(parse_err(&torrent_with(future.build())).contains("meta version 3"));
}

#[test]
fn bencode_errors_pass_through_with_offsets() {
    let bytes = torrent_with(v1_info("d", &[(&["a"], 40)], 16).build());
    let truncated = &bytes[..bytes.len() - 10];
    let err = parse_err(truncated);
    assert!(err.contains("invalid bencode at byte"), "{err}");
    let err = parse_err(b"d4:info2147483648:xe");
    assert!(err.contains("2147483648 bytes runs past the end"), "{err}");
    let mut nested = vec![b'l'; 100_000];
    nested.extend(vec![b'e'; 100_000]);
    assert!(matches!(
        Torrent::from_bytes(&nested),
        Err(MetainfoError::Bencode(_))
    ));
}

#[test]
fn trackers_tiers_web_seeds_and_flags() {
    let mut info = v1_info("d", &[(&["a"], 5)], 16);
    info.insert("private", Owned::Int(1))
        .insert("source", s("SITE"));
    let mut root = DictBuilder::new();
    root.insert("announce", s("http://ignored/announce"))
        .insert(
            "announce-list",
            Owned::List(vec![
                Owned::List(vec![s("http://a/1"), s("http://a/2")]),
                Owned::List(vec![]),
                Owned::List(vec![s("udp://b:1")]),
            ]),
        )
        .insert("url-list", s("http://web/seed"))
        .insert("comment", s("plain"))
        .insert("comment.utf-8", s("préféré"))
        .insert("creation date", Owned::Int(1_700_000_000))
        .insert("info", info.build());
    let t = Torrent::from_bytes(&root.build().encode()).unwrap();
    assert_eq!(
        t.trackers,
        vec![
            vec!["http://a/1".to_string(), "http://a/2".to_string()],
            vec!["udp://b:1".to_string()]
        ]
    );
    assert_eq!(t.web_seeds, ["http://web/seed"]);
    assert_eq!(t.comment.as_deref(), Some("préféré"));
    assert_eq!(t.creation_date, Some(1_700_000_000));
    assert!(t.private);
    assert_eq!(t.source.as_deref(), Some("SITE"));
}

fn v2_leaf(len: i64, root: Option<[u8; 32]>) -> Owned {
    let mut leaf = DictBuilder::new();
    leaf.insert("length", Owned::Int(len));
    if let Some(r) = root {
        leaf.insert("pieces root", Owned::Bytes(r.to_vec()));
    }
    let mut node = DictBuilder::new();
    node.insert("", leaf.build());
    node.build()
}

#[test]
fn v2_file_tree_paths_are_validated() {
    let mut tree = DictBuilder::new();
    tree.insert("..", v2_leaf(5, Some([1; 32])));
    let mut info = DictBuilder::new();
    info.insert("name", s("d"))
        .insert("piece length", Owned::Int(16384))
        .insert("meta version", Owned::Int(2))
        .insert("file tree", tree.build());
    assert!(parse_err(&torrent_with(info.build())).contains("unsafe file path"));
}

#[test]
fn v2_rejects_a_piece_layer_that_does_not_match_its_root() {
    let mut tree = DictBuilder::new();
    tree.insert("f", v2_leaf(40_000, Some([9; 32])));
    let mut info = DictBuilder::new();
    info.insert("name", s("f"))
        .insert("piece length", Owned::Int(16384))
        .insert("meta version", Owned::Int(2))
        .insert("file tree", tree.build());
    // No piece layers at all.
    assert!(parse_err(&torrent_with(info.clone().build())).contains("no piece layer"));
    let mut layers = DictBuilder::new();
    layers.insert_bytes_key(vec![9; 32], Owned::Bytes(vec![0; 32 * 3]));
    let mut root = DictBuilder::new();
    root.insert("info", info.build())
        .insert("piece layers", layers.build());
    assert!(parse_err(&root.build().encode()).contains("does not hash to its pieces root"));
}

#[test]
fn v2_piece_length_must_be_a_power_of_two() {
    let mut tree = DictBuilder::new();
    tree.insert("f", v2_leaf(5, Some([1; 32])));
    let mut info = DictBuilder::new();
    info.insert("name", s("f"))
        .insert("piece length", Owned::Int(20000))
        .insert("meta version", Owned::Int(2))
        .insert("file tree", tree.build());
    assert!(parse_err(&torrent_with(info.build())).contains("power of two"));
}
