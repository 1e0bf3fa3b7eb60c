//! Hostile peers for `benches/hostile-seed.sh`: `hostile_peer ADDR INFO_HASH_HEX PIECES PIECE_LENGTH
//! CONNECTIONS` floods a seed with requests it never reads, printing how many it sent each second, until
//! killed. The same code as the `hostile_seed` test's.

#[path = "../tests/hostile/peer.rs"]
mod hostile;

use std::sync::atomic::Ordering;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: hostile_peer ADDR INFO_HASH_HEX PIECES PIECE_LENGTH CONNECTIONS";
    let [addr, hash, pieces, piece_length, connections] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let parsed = (|| {
        let hash = hash.as_bytes();
        if hash.len() != 40 {
            return None;
        }
        let mut info_hash = [0u8; 20];
        for (i, b) in info_hash.iter_mut().enumerate() {
            *b = u8::from_str_radix(std::str::from_utf8(&hash[2 * i..2 * i + 2]).ok()?, 16).ok()?;
        }
        Some((
            addr.parse().ok()?,
            info_hash,
            pieces.parse().ok()?,
            piece_length.parse().ok()?,
            connections.parse().ok()?,
        ))
    })();
    let Some((addr, info_hash, pieces, piece_length, connections)) = parsed else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let attack = hostile::Attack::start(addr, info_hash, pieces, piece_length, connections);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        println!(
            "sent {} requests over {} connections",
            attack.sent.load(Ordering::Relaxed),
            attack.connects.load(Ordering::Relaxed)
        );
    }
}
