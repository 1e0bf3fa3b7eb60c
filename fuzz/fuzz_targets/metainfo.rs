#![no_main]
//! Parsing a torrent never panics, and whatever parses is internally consistent and names only safe
//! paths.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = metainfo::Torrent::from_bytes(data) {
        for f in &t.files {
            for c in &f.path {
                assert!(metainfo::validate_component(c).is_ok());
            }
        }
        let count = t.piece_count();
        if t.version.has_v1() {
            assert_eq!(count, t.pieces_v1.len() as u64);
        }
        for i in 0..count.min(4) {
            assert!(t.piece_size(i) <= t.piece_length);
        }
        let magnet = metainfo::Magnet::from_torrent(&t).to_string();
        let parsed = metainfo::Magnet::parse(&magnet).expect("own magnet link must parse");
        assert_eq!(parsed.info_hash_v1, t.info_hash_v1);
        assert_eq!(parsed.info_hash_v2, t.info_hash_v2);
    }
});
