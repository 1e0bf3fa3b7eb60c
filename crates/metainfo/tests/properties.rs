use std::sync::atomic::AtomicU64;

use metainfo::{Magnet, Torrent};
use proptest::prelude::*;

/// A small valid torrent to mutate.
fn seed_torrent() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("d");
    std::fs::create_dir_all(root.join("s")).unwrap();
    std::fs::write(root.join("a"), vec![1u8; 40_000]).unwrap();
    std::fs::write(root.join("s/b"), vec![2u8; 5]).unwrap();
    let options = metainfo::CreateOptions {
        version: metainfo::Version::Hybrid,
        piece_length: Some(16384),
        trackers: vec![vec!["http://127.0.0.1/a".into()]],
        ..Default::default()
    };
    metainfo::create(&root, &options, &AtomicU64::new(0))
        .unwrap()
        .bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn torrent_parser_never_panics_on_mutations(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        thread_local!(static SEED: Vec<u8> = seed_torrent());
        let mut bytes = SEED.with(|s| s.clone());
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = Torrent::from_bytes(&bytes);
        let n = cut.index(bytes.len());
        prop_assert!(Torrent::from_bytes(&bytes[..n]).is_err());
    }

    #[test]
    fn torrent_parser_never_panics_on_noise(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Torrent::from_bytes(&bytes);
        let _ = Torrent::from_info_bytes(&bytes);
    }

    #[test]
    fn magnet_round_trip(
        v1 in proptest::option::of(any::<[u8; 20]>()),
        v2 in any::<[u8; 32]>(),
        name in proptest::option::of("\\PC{0,20}"),
        trackers in proptest::collection::vec("[a-z]{1,8}://[ -~]{0,20}", 0..4),
        ranges in proptest::option::of(proptest::collection::vec((0u64..100, 0u64..5), 1..4)),
    ) {
        let mut trackers = trackers;
        trackers.dedup();
        let magnet = Magnet {
            info_hash_v1: v1,
            info_hash_v2: Some(v2),
            name,
            trackers,
            web_seeds: vec![],
            peers: vec!["127.0.0.1:6881".into()],
            select_only: ranges.map(|r| r.into_iter().map(|(a, n)| a..=a + n).collect()),
        };
        let text = magnet.to_string();
        prop_assert_eq!(Magnet::parse(&text).unwrap(), magnet);
    }

    #[test]
    fn magnet_parser_never_panics(text in "\\PC{0,200}") {
        let _ = Magnet::parse(&text);
        let _ = Magnet::parse(&format!("magnet:?{text}"));
    }
}

#[test]
fn magnet_forms_from_the_wild() {
    let hex = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
    let m = Magnet::parse(&format!(
        "magnet:?xt=urn:btih:{}&dn=Some+Name%20here&tr.1=udp%3A%2F%2F127.0.0.1%3A1&tr.2=http://x/a&x.pe=127.0.0.1:5&so=0,2,4-6",
        hex.to_uppercase()
    ))
    .unwrap();
    assert_eq!(metainfo::hex(&m.info_hash_v1.unwrap()), hex);
    assert_eq!(m.name.as_deref(), Some("Some+Name here"));
    assert_eq!(m.trackers, ["udp://127.0.0.1:1", "http://x/a"]);
    assert_eq!(m.peers, ["127.0.0.1:5"]);
    assert!(m.selects(5) && m.selects(2) && !m.selects(3) && !m.selects(7));

    let b32 = Magnet::parse("magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").unwrap();
    assert_eq!(metainfo::hex(&b32.info_hash_v1.unwrap()), hex);

    let v2 = "a".repeat(64);
    let m = Magnet::parse(&format!("magnet:?xt=urn:btmh:1220{v2}")).unwrap();
    assert_eq!(m.info_hash_v2, Some([0xaa; 32]));
    assert!(m.info_hash_v1.is_none());

    for bad in [
        "http://example/",
        "magnet:?dn=x",
        "magnet:?xt=urn:btih:123",
        "magnet:?xt=urn:btmh:1114aaaa",
        "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&so=5-2",
        "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&so=x",
    ] {
        assert!(Magnet::parse(bad).is_err(), "{bad}");
    }
}
