//! Interoperability with libtorrent (python3-libtorrent, through tests/libtorrent_peer.py) over
//! loopback uTP, with TCP disabled in libtorrent both ways: our `UtpStream` dials a libtorrent
//! seed and downloads the whole file (SHA-1 compared), and a libtorrent leech dials our
//! `UtpSocket` and downloads the file from us (libtorrent checks the piece hashes).
//! Without python3-libtorrent the tests are skipped, unless CI=true, where they fail.

use std::io::{BufRead, Write};
use std::time::Duration;

use bytes::BytesMut;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp::{Config, UtpSocket, UtpStream};
use wire::{BlockRef, Decoder, Handshake, InfoHash, Message, PeerId, PieceIndex, HANDSHAKE_LEN};

const TIMEOUT: Duration = Duration::from_secs(60);
const PIECE: usize = 16384;
const PIECES: usize = 64;

#[path = "../../../tests/support/libtorrent_child.rs"]
mod libtorrent_child;
use libtorrent_child::{have_libtorrent, Libtorrent};

fn libtorrent(ip: &str, mode: &str) -> Libtorrent {
    libtorrent_child::start(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/libtorrent_peer.py"),
        ip,
        mode,
    )
}

fn content() -> Vec<u8> {
    (0..PIECES * PIECE).map(|i| ((i * 7) % 256) as u8).collect()
}

fn handshake(info_hash: [u8; 20]) -> Handshake {
    // No extension bits: libtorrent then answers with a plain bitfield and plain messages.
    Handshake {
        reserved: [0; 8],
        info_hash: InfoHash::new(info_hash),
        peer_id: PeerId::new(*b"-SP0001-utp-interop1"),
    }
}

/// Reads the peer's 68-byte handshake.
async fn their_handshake(s: &mut UtpStream) -> Handshake {
    let mut buf = [0u8; HANDSHAKE_LEN];
    s.read_exact(&mut buf).await.unwrap();
    Handshake::decode(&buf).unwrap()
}

async fn message(s: &mut UtpStream, buf: &mut BytesMut) -> Message {
    let decoder = Decoder::default();
    loop {
        if let Some(m) = decoder.decode(buf).unwrap() {
            return m;
        }
        let mut chunk = [0u8; 16384];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "libtorrent closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn send(s: &mut UtpStream, m: Message) {
    let mut out = BytesMut::new();
    m.encode(&mut out);
    s.write_all(&out).await.unwrap();
}

/// Our `UtpStream` dials a uTP-only libtorrent seed: handshake, bitfield, interested, unchoke,
/// then every block of the file; its SHA-1 must match the content's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_download_from_libtorrent_over_utp() {
    if !have_libtorrent() {
        return;
    }
    let ip = "127.0.0.81";
    let lt = libtorrent(ip, "seed");
    let sock = UtpSocket::bind(format!("{ip}:0").parse().unwrap(), Config::default(), None)
        .await
        .unwrap();
    let run = async {
        let mut s = sock
            .connect(format!("{ip}:{}", lt.port).parse().unwrap())
            .await
            .unwrap();
        s.write_all(&handshake(lt.info_hash).encode())
            .await
            .unwrap();
        let theirs = their_handshake(&mut s).await;
        assert_eq!(theirs.info_hash, InfoHash::new(lt.info_hash));
        let mut buf = BytesMut::new();
        assert_eq!(
            message(&mut s, &mut buf).await,
            Message::Bitfield(vec![0xff; PIECES / 8].into())
        );
        send(&mut s, Message::Interested).await;
        while message(&mut s, &mut buf).await != Message::Unchoke {}
        for index in 0..PIECES as u32 {
            send(
                &mut s,
                Message::Request(BlockRef {
                    index: PieceIndex::new(index),
                    begin: 0,
                    length: PIECE as u32,
                }),
            )
            .await;
        }
        let mut file = vec![0u8; PIECES * PIECE];
        let mut got = 0;
        while got < PIECES {
            if let Message::Piece { index, begin, data } = message(&mut s, &mut buf).await {
                assert_eq!((begin, data.len()), (0, PIECE));
                file[index.as_usize() * PIECE..][..PIECE].copy_from_slice(&data);
                got += 1;
            }
        }
        file
    };
    let file = tokio::time::timeout(TIMEOUT, run)
        .await
        .expect("download from libtorrent timed out");
    assert_eq!(
        Sha1::digest(&file),
        Sha1::digest(content()),
        "the file differs"
    );
}

/// A uTP-only libtorrent leech dials our listening `UtpSocket`: we answer its handshake, say we
/// have everything, unchoke, and serve what it requests until libtorrent reports the file
/// complete (it checks each piece's SHA-1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_downloads_from_us_over_utp() {
    if !have_libtorrent() {
        return;
    }
    let ip = "127.0.0.82";
    let mut lt = libtorrent(ip, "leech");
    let sock = UtpSocket::bind(format!("{ip}:0").parse().unwrap(), Config::default(), None)
        .await
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    writeln!(lt.stdin, "connect {ip} {port}").unwrap();
    lt.stdin.flush().unwrap();
    let hashes = [lt.info_hash, lt.info_hash_v2].map(InfoHash::new);
    let serve = async move {
        let (mut s, _) = sock.accept().await.unwrap();
        let theirs = their_handshake(&mut s).await;
        assert!(
            hashes.contains(&theirs.info_hash),
            "libtorrent's handshake names another torrent"
        );
        s.write_all(&handshake(*theirs.info_hash.as_bytes()).encode())
            .await
            .unwrap();
        send(&mut s, Message::Bitfield(vec![0xff; PIECES / 8].into())).await;
        send(&mut s, Message::Unchoke).await;
        let data = content();
        let mut buf = BytesMut::new();
        let mut served = 0;
        // Until libtorrent, done, hangs up (read error or end of stream ends the task).
        loop {
            let decoder = Decoder::default();
            let m = loop {
                if let Some(m) = decoder.decode(&mut buf).unwrap() {
                    break Some(m);
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            match m {
                None => return served,
                Some(Message::Request(b)) => {
                    let at = b.index.as_usize() * PIECE + b.begin as usize;
                    let block = data[at..at + b.length as usize].to_vec();
                    send(
                        &mut s,
                        Message::Piece {
                            index: b.index,
                            begin: b.begin,
                            data: block.into(),
                        },
                    )
                    .await;
                    served += 1;
                }
                Some(_) => {}
            }
        }
    };
    let mut server = tokio::spawn(serve);
    // A thread, not a blocking task: the runtime would wait for it at the end; killing
    // libtorrent (on drop) ends its stdout and this thread.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut stdout = lt.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap_or(0) > 0 {
            if line.trim() == "finished" {
                let _ = tx.send(());
                return;
            }
            line.clear();
        }
    });
    let finished = tokio::time::timeout(TIMEOUT, rx);
    tokio::pin!(finished);
    tokio::select! {
        r = &mut finished => r
            .expect("libtorrent did not finish in time")
            .expect("libtorrent exited without the whole file"),
        // libtorrent, complete, may hang up before its "finished" line reaches us.
        r = &mut server => {
            let served = r.unwrap();
            assert!(served >= PIECES, "libtorrent hung up after {served} blocks");
            finished.await
                .expect("libtorrent did not finish in time")
                .expect("libtorrent exited without the whole file");
        }
    }
    server.abort();
}
