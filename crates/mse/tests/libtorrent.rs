//! Interoperability with libtorrent (python3-libtorrent, through tests/libtorrent_peer.py) over
//! loopback TCP: our initiator against a libtorrent seed that forces encryption, and libtorrent's
//! initiator against our responder. Past the handshake, real BitTorrent messages go both ways
//! through the negotiated cipher, up to a block of data compared byte for byte.
//! Without python3-libtorrent the tests are skipped, unless CI=true, where they fail.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mse::{
    detect, Cipher, Detected, Done, Handshake, InfoHashes, Policy, Secrets, CRYPTO_PLAINTEXT,
    CRYPTO_RC4,
};

const TIMEOUT: Duration = Duration::from_secs(60);
const PIECE: usize = 16384;

#[path = "../../../tests/support/libtorrent_child.rs"]
mod libtorrent_child;
use libtorrent_child::{have_libtorrent, Libtorrent};

/// A libtorrent seed on `ip` with in/out encryption forced at `level` (rc4, plaintext, both).
fn libtorrent(ip: &str, level: &str) -> Libtorrent {
    libtorrent_child::start(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/libtorrent_peer.py"),
        ip,
        level,
    )
}

fn bt_handshake(info_hash: &[u8; 20]) -> Vec<u8> {
    let mut h = mse::PLAINTEXT_HEADER.to_vec();
    h.extend_from_slice(&[0; 8]); // no extensions: libtorrent answers with a plain bitfield
    h.extend_from_slice(info_hash);
    h.extend_from_slice(b"-SP0001-mse-interop1");
    h
}

fn seed(n: u8) -> [u8; 32] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut s = [n; 32];
    s[..16].copy_from_slice(&nanos.to_le_bytes());
    s
}

/// Runs `hs` over `stream` to completion; `None` if the peer closed the connection first.
fn drive(hs: &mut Handshake, stream: &mut TcpStream) -> Option<Done> {
    let mut buf = [0u8; 4096];
    loop {
        while let Some(bytes) = hs.poll_transmit() {
            stream.write_all(&bytes).unwrap();
        }
        if let Some(done) = hs.poll_done() {
            return Some(done);
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading from libtorrent: {e}"),
        };
        hs.handle_input(&buf[..n]).unwrap();
    }
}

/// The payload stream after the handshake, through the cipher if there is one.
struct Payload {
    stream: TcpStream,
    cipher: Option<Cipher>,
    pending: Vec<u8>,
}

impl Payload {
    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        while self.pending.len() < n {
            let got = self.stream.read(&mut buf).unwrap();
            assert!(got > 0, "libtorrent closed the connection");
            let chunk = &mut buf[..got];
            if let Some(c) = &mut self.cipher {
                c.decrypt(chunk);
            }
            self.pending.extend_from_slice(chunk);
        }
        self.pending.drain(..n).collect()
    }

    /// The next message as (id, payload); keep-alives skipped.
    fn message(&mut self) -> (u8, Vec<u8>) {
        loop {
            let len = self.read_exact(4);
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            assert!(len <= PIECE + 9, "message of {len} bytes");
            if len > 0 {
                let body = self.read_exact(len);
                return (body[0], body[1..].to_vec());
            }
        }
    }

    fn send(&mut self, plain: &[u8]) {
        let mut bytes = plain.to_vec();
        if let Some(c) = &mut self.cipher {
            c.encrypt(&mut bytes);
        }
        self.stream.write_all(&bytes).unwrap();
    }
}

/// Our initiator against a libtorrent seed forcing `level`: the handshake completes with
/// `selected`, libtorrent's handshake comes back naming the torrent, then interested → unchoke →
/// request → the block, compared byte for byte.
fn initiator_against(ip: &str, level: &str, policy: Policy, selected: u32) {
    if !have_libtorrent() {
        return;
    }
    let lt = libtorrent(ip, level);
    let mut stream = TcpStream::connect((ip, lt.port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut hs = Handshake::initiator(
        lt.info_hash,
        policy,
        bt_handshake(&lt.info_hash),
        Secrets::from_seed(&seed(1)),
    )
    .unwrap();
    let done =
        drive(&mut hs, &mut stream).expect("libtorrent closed the connection during the handshake");
    assert_eq!(done.selected, selected);
    assert_eq!(done.cipher.is_some(), selected == CRYPTO_RC4);
    let mut p = Payload {
        stream,
        cipher: done.cipher,
        pending: done.leftover,
    };

    let theirs = p.read_exact(68);
    assert_eq!(&theirs[..20], mse::PLAINTEXT_HEADER);
    assert_eq!(
        theirs[28..48],
        lt.info_hash,
        "libtorrent's handshake names another torrent"
    );

    exchange_block(&mut p);
}

/// After the handshakes: wait for the bitfield (4 pieces, all set), say interested, wait for the
/// unchoke, request the first block and compare it.
fn exchange_block(p: &mut Payload) {
    let start = Instant::now();
    let (id, bits) = p.message();
    assert_eq!(
        (id, bits),
        (5, vec![0xf0]),
        "expected libtorrent's bitfield"
    );
    p.send(&[0, 0, 0, 1, 2]); // interested
    loop {
        assert!(start.elapsed() < TIMEOUT, "no unchoke from libtorrent");
        if p.message().0 == 1 {
            break;
        }
    }
    let mut request = vec![0, 0, 0, 13, 6];
    request.extend_from_slice(&1u32.to_be_bytes()); // piece 1
    request.extend_from_slice(&0u32.to_be_bytes());
    request.extend_from_slice(&(PIECE as u32).to_be_bytes());
    p.send(&request);
    loop {
        assert!(start.elapsed() < TIMEOUT, "no piece from libtorrent");
        let (id, body) = p.message();
        if id == 7 {
            assert_eq!(body[..8], [0, 0, 0, 1, 0, 0, 0, 0]);
            let want: Vec<u8> = (PIECE..2 * PIECE).map(|i| ((i * 7) % 256) as u8).collect();
            assert!(body[8..] == want[..], "block differs");
            return;
        }
    }
}

#[test]
fn our_initiator_to_libtorrent_forcing_rc4() {
    initiator_against("127.0.0.61", "rc4", Policy::Require, CRYPTO_RC4);
}

#[test]
fn our_initiator_to_libtorrent_forcing_plaintext_payload() {
    initiator_against("127.0.0.62", "plaintext", Policy::Prefer, CRYPTO_PLAINTEXT);
}

/// Our plaintext-only offer to a libtorrent that requires rc4: it hangs up during the handshake
/// (what the engine will answer by retrying in the other mode).
#[test]
fn libtorrent_forcing_rc4_refuses_plaintext_offer() {
    if !have_libtorrent() {
        return;
    }
    let lt = libtorrent("127.0.0.63", "rc4");
    let mut stream = TcpStream::connect(("127.0.0.63", lt.port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut hs = Handshake::initiator(
        lt.info_hash,
        Policy::Plaintext,
        bt_handshake(&lt.info_hash),
        Secrets::from_seed(&seed(2)),
    )
    .unwrap();
    assert!(
        drive(&mut hs, &mut stream).is_none(),
        "libtorrent accepted a plaintext-only offer"
    );
}

/// libtorrent's initiator (forcing rc4) against our responder: we detect MSE on the first bytes,
/// find the torrent, receive libtorrent's handshake as IA, answer with ours, then get its bitfield
/// and a block of data through the cipher.
#[test]
fn libtorrent_initiator_to_our_responder() {
    if !have_libtorrent() {
        return;
    }
    let ip = "127.0.0.64";
    let mut lt = libtorrent(ip, "rc4");
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    writeln!(lt.stdin, "connect {ip} {port}").unwrap();
    lt.stdin.flush().unwrap();
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(start.elapsed() < TIMEOUT, "libtorrent never connected");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();

    // Auto-detect on the first bytes, then hand them to the responder.
    let mut first = vec![0u8; 20];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(detect(&first), Detected::Encrypted);
    // A hybrid torrent is served under both hashes (libtorrent picks either when it connects).
    let served: InfoHashes = [[1; 20], lt.info_hash, lt.info_hash_v2]
        .into_iter()
        .collect();
    let mut hs = Handshake::responder(served, Policy::Require, Secrets::from_seed(&seed(3)));
    hs.handle_input(&first).unwrap();
    let mut done =
        drive(&mut hs, &mut stream).expect("libtorrent closed the connection during the handshake");
    assert_eq!(done.selected, CRYPTO_RC4);
    assert!(done.skey == lt.info_hash || done.skey == lt.info_hash_v2);
    let theirs = &done.initial_payload;
    assert_eq!(theirs.len(), 68, "libtorrent's IA is its handshake");
    assert_eq!(&theirs[..20], mse::PLAINTEXT_HEADER);
    assert_eq!(
        theirs[28..48],
        done.skey,
        "libtorrent's handshake names another torrent than SKEY"
    );

    let mut p = Payload {
        stream,
        cipher: done.cipher.take(),
        pending: done.leftover,
    };
    p.send(&bt_handshake(&done.skey));
    exchange_block(&mut p);
}
