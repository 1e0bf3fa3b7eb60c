use std::io::IoSlice;
use std::time::Duration;

use ids::{InfoHash, PeerId};
use mse::{Detected, InfoHashes};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use wire::Handshake;

use super::*;
use crate::transport::Carrier;

const WAIT: Duration = Duration::from_secs(10);

fn stream_of(io: DuplexStream) -> PeerStream {
    let (r, w) = tokio::io::split(io);
    PeerStream::from_halves(Box::new(r), Box::new(w), Carrier::Tcp, false)
}

/// A pipe whose each end holds at most `cap` bytes in flight: writes are short or wait.
fn pipe(cap: usize) -> (PeerStream, PeerStream) {
    let (a, b) = tokio::io::duplex(cap);
    (stream_of(a), stream_of(b))
}

fn handshake(id: u8, peer: u8) -> Handshake {
    Handshake::new(InfoHash::new([id; 20]), PeerId::new([peer; 20]), false)
}

/// Reads the first bytes an incoming connection sends, as the gate does.
async fn first_bytes(stream: &mut PeerStream) -> Vec<u8> {
    let mut first = vec![0u8; 68];
    let n = stream.read(&mut first).await.unwrap();
    first.truncate(n);
    first
}

/// Both sides of one connection through the real handshake code: (dialler's, accepter's).
async fn connected(
    policy: Encryption,
    cap: usize,
) -> ((PeerStream, Handshake), (PeerStream, Handshake)) {
    let (a, mut b) = pipe(cap);
    let ours = handshake(7, 1);
    let mut a = Some(a);
    let dial = outgoing(policy, &ours, WAIT, || {
        let a = a.take();
        async move { a.ok_or_else(|| anyhow::anyhow!("dialled twice")) }
    });
    let accept = async {
        let first = first_bytes(&mut b).await;
        assert_eq!(incoming_kind(policy, &first).unwrap(), Detected::Encrypted);
        let lookup: InfoHashes = [[7u8; 20], [9u8; 20]].into_iter().collect();
        let (mut b, theirs) = respond(b, &first, policy, lookup).await.unwrap();
        b.write_all(&handshake(7, 2).encode()).await.unwrap();
        (b, theirs)
    };
    let (dialled, accepted) = tokio::join!(dial, accept);
    (dialled.unwrap(), accepted)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

#[tokio::test]
/// A pipe of 2 KiB: the handshake fits (a socket buffer holds at least that much), the data goes
/// across in many short writes and reads.
async fn encrypted_round_trip_both_ways_through_small_pipe() {
    let ((mut a, theirs_at_a), (mut b, theirs_at_b)) = connected(Encryption::Require, 2048).await;
    assert!(a.encrypted() && b.encrypted());
    assert_eq!(theirs_at_a.peer_id, PeerId::new([2; 20]));
    assert_eq!(theirs_at_b.peer_id, PeerId::new([1; 20]));
    let data = pattern(300_000);
    let back = pattern(70_001);
    let send = data.clone();
    let send_back = back.clone();
    let writer = tokio::spawn(async move {
        a.write_all(&send).await.unwrap();
        let mut got = vec![0u8; send_back.len()];
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(got, send_back);
    });
    let mut got = vec![0u8; data.len()];
    // Reads of odd sizes.
    let mut at = 0;
    while at < got.len() {
        let end = (at + 997).min(got.len());
        let n = b.read(&mut got[at..end]).await.unwrap();
        assert!(n > 0);
        at += n;
    }
    assert_eq!(got, data);
    b.write_all(&back).await.unwrap();
    tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
}

/// The bytes on the wire are not the plaintext: the pipe carries ciphertext after the handshake.
#[tokio::test]
async fn what_crosses_the_wire_is_not_plaintext() {
    let (raw, mut tap) = tokio::io::duplex(1 << 20);
    let (_, write) = tokio::io::split(raw);
    let (send, mut recv) = crate_pair();
    let mut enc = EncryptWrite::new(Box::new(write), send);
    let message = vec![0u8; 4096];
    enc.write_all(&message).await.unwrap();
    let mut raw = vec![0u8; 4096];
    tap.read_exact(&mut raw).await.unwrap();
    assert_ne!(raw, message);
    recv.apply(&mut raw);
    assert_eq!(raw, message);
}

/// Two streams keyed alike (what the two ends of one direction hold).
fn crate_pair() -> (Rc4Stream, Rc4Stream) {
    (Rc4Stream::new(&[5; 20]), Rc4Stream::new(&[5; 20]))
}

/// Takes at most 7 bytes per call and says Pending every other call, like a nearly full socket.
struct Stingy {
    got: Vec<u8>,
    pending: bool,
}

impl AsyncWrite for Stingy {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pending = !self.pending;
        if self.pending {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = buf.len().min(7);
        self.got.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Vectored writes of many slices, taken a few bytes at a time with waits between: the bytes that
/// reach the socket decrypt to the slices in order, each byte encrypted once.
#[tokio::test]
async fn vectored_short_and_pending_writes_keep_the_stream() {
    struct Shared(std::sync::Arc<parking_lot::Mutex<Stingy>>);
    impl AsyncWrite for Shared {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut *self.0.lock()).poll_write(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
    let sink = std::sync::Arc::new(parking_lot::Mutex::new(Stingy {
        got: Vec::new(),
        pending: false,
    }));
    let (send, mut recv) = crate_pair();
    let mut w = EncryptWrite::new(Box::new(Shared(sink.clone())), send);
    let parts: Vec<Vec<u8>> = (0..40)
        .map(|i| pattern(i * 13 + (i % 3) * WRITE_CHUNK / 2))
        .collect();
    let mut segments: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
    let mut first = 0;
    while first < segments.len() {
        let slices: Vec<IoSlice<'_>> = segments[first..].iter().map(|s| IoSlice::new(s)).collect();
        let mut written = w.write_vectored(&slices).await.unwrap();
        while written > 0 {
            let len = segments[first].len();
            if written >= len {
                written -= len;
                first += 1;
            } else {
                segments[first] = &segments[first][written..];
                written = 0;
            }
        }
        while first < segments.len() && segments[first].is_empty() {
            first += 1;
        }
    }
    let mut got = std::mem::take(&mut sink.lock().got);
    recv.apply(&mut got);
    assert_eq!(got, parts.concat());
    assert!(w.buf.capacity() <= 2 * WRITE_CHUNK);
}

/// A write given up while Pending (a timed-out write) and tried again with the same bytes in
/// another layout sends them once.
#[tokio::test]
async fn a_write_dropped_while_pending_is_retried_without_encrypting_twice() {
    let (raw_a, mut tap) = tokio::io::duplex(10);
    let (_, write) = tokio::io::split(raw_a);
    let (send, mut recv) = crate_pair();
    let mut w = EncryptWrite::new(Box::new(write), send);
    let data = pattern(50);
    let n = w.write(&data).await.unwrap();
    assert_eq!(n, 10);
    // The pipe is full: this write waits, and is abandoned.
    let attempt = tokio::time::timeout(Duration::from_millis(20), w.write(&data[n..])).await;
    assert!(attempt.is_err());
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; 50];
        tap.read_exact(&mut got).await.unwrap();
        got
    });
    // Retried as two slices.
    let rest = &data[n..];
    let (x, y) = rest.split_at(17);
    let mut left = rest.len();
    let mut sent = 0;
    while left > 0 {
        let slices = if sent < x.len() {
            vec![IoSlice::new(&x[sent..]), IoSlice::new(y)]
        } else {
            vec![IoSlice::new(&y[sent - x.len()..])]
        };
        let k = w.write_vectored(&slices).await.unwrap();
        sent += k;
        left -= k;
    }
    let mut got = reader.await.unwrap();
    recv.apply(&mut got);
    assert_eq!(got, data);
}

#[tokio::test]
async fn prefix_is_read_before_the_socket_and_not_decrypted_again() {
    let (a, mut b) = tokio::io::duplex(1024);
    let (r, w) = tokio::io::split(a);
    let plain = PeerStream::from_halves(Box::new(r), Box::new(w), Carrier::Tcp, false);
    let (_, recv) = crate_pair();
    // The prefix is what the handshake already decrypted; the keystream continues after it.
    let mut stream = PeerStream::from_halves(
        Box::new(DecryptRead::new(
            plain.into_split().0,
            Some(recv),
            b"hello ".to_vec(),
        )),
        Box::new(tokio::io::sink()),
        Carrier::Tcp,
        true,
    );
    let mut tail = b"world".to_vec();
    let (mut enc, _) = crate_pair();
    enc.apply(&mut tail);
    b.write_all(&tail).await.unwrap();
    let mut got = [0u8; 11];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello world");
}

#[tokio::test]
async fn prefer_falls_back_to_plaintext_once_when_the_peer_hangs_up() {
    // A plaintext-only peer: it reads 68 bytes, closes if they are not a BitTorrent handshake.
    let (a1, mut b1) = pipe(4096);
    let (a2, mut b2) = pipe(4096);
    let peer = tokio::spawn(async move {
        let mut hs = [0u8; 68];
        b1.read_exact(&mut hs).await.unwrap();
        assert_eq!(mse::detect(&hs), Detected::Encrypted);
        drop(b1);
        b2.read_exact(&mut hs).await.unwrap();
        assert_eq!(mse::detect(&hs), Detected::Plaintext);
        b2.write_all(&handshake(7, 2).encode()).await.unwrap();
        b2
    });
    let mut conns = vec![a2, a1];
    let ours = handshake(7, 1);
    let (stream, theirs) = outgoing(Encryption::Prefer, &ours, WAIT, || {
        let next = conns.pop();
        async move { next.ok_or_else(|| anyhow::anyhow!("dialled three times")) }
    })
    .await
    .unwrap();
    assert!(!stream.encrypted());
    assert_eq!(theirs.peer_id, PeerId::new([2; 20]));
    let _ = peer.await.unwrap();
}

/// A plaintext peer that answers whatever it is sent with its own handshake (and then waits) is
/// dialled again in plaintext at once, not after the handshake timeout.
#[tokio::test]
async fn prefer_falls_back_at_once_when_the_peer_answers_in_plaintext() {
    let (a1, mut b1) = pipe(4096);
    let (a2, mut b2) = pipe(4096);
    let peer = tokio::spawn(async move {
        let mut hs = [0u8; 68];
        b1.read_exact(&mut hs).await.unwrap();
        b1.write_all(&handshake(7, 2).encode()).await.unwrap();
        b2.read_exact(&mut hs).await.unwrap();
        assert_eq!(mse::detect(&hs), Detected::Plaintext);
        b2.write_all(&handshake(7, 2).encode()).await.unwrap();
        (b1, b2)
    });
    let mut conns = vec![a2, a1];
    let ours = handshake(7, 1);
    let started = std::time::Instant::now();
    let (stream, theirs) = outgoing(Encryption::Prefer, &ours, WAIT, || {
        let next = conns.pop();
        async move { next.ok_or_else(|| anyhow::anyhow!("dialled three times")) }
    })
    .await
    .unwrap();
    assert!(started.elapsed() < WAIT / 2, "waited for the timeout");
    assert!(!stream.encrypted());
    assert_eq!(theirs.peer_id, PeerId::new([2; 20]));
    let _ = peer.await.unwrap();
}

#[tokio::test]
async fn require_does_not_fall_back() {
    let (a1, mut b1) = pipe(4096);
    tokio::spawn(async move {
        let mut hs = [0u8; 68];
        let _ = b1.read_exact(&mut hs).await;
    });
    let mut dials = 0;
    let ours = handshake(7, 1);
    let mut a1 = Some(a1);
    let result = outgoing(Encryption::Require, &ours, WAIT, || {
        dials += 1;
        let a = a1.take();
        async move { a.ok_or_else(|| anyhow::anyhow!("dialled twice")) }
    })
    .await;
    assert!(result.is_err());
    assert_eq!(dials, 1);
}

#[tokio::test]
async fn prefer_both_ends_encrypts() {
    let ((a, _), (b, _)) = connected(Encryption::Prefer, 4096).await;
    assert!(a.encrypted() && b.encrypted());
}

#[test]
fn retry_only_under_prefer_and_only_for_a_hang_up_or_silence() {
    use Encryption::*;
    let closed = MseFailure::Closed;
    let silent = MseFailure::Timeout(WAIT);
    let plain = MseFailure::PlaintextAnswer;
    assert!(retry_in_plaintext(Prefer, &plain));
    assert!(!retry_in_plaintext(Require, &plain));
    let wrong = MseFailure::Protocol(mse::MseError::NoSyncVc);
    let io = MseFailure::Io(io::Error::other("x"));
    assert!(retry_in_plaintext(Prefer, &closed));
    assert!(retry_in_plaintext(Prefer, &silent));
    assert!(!retry_in_plaintext(Prefer, &wrong));
    assert!(!retry_in_plaintext(Prefer, &io));
    for f in [&closed, &silent, &wrong] {
        assert!(!retry_in_plaintext(Require, f));
        assert!(!retry_in_plaintext(Off, f));
    }
    for kind in [
        io::ErrorKind::ConnectionReset,
        io::ErrorKind::UnexpectedEof,
        io::ErrorKind::BrokenPipe,
    ] {
        assert!(matches!(
            MseFailure::from(io::Error::from(kind)),
            MseFailure::Closed
        ));
    }
}

#[test]
fn incoming_policy() {
    let plain = wire::Handshake::new(InfoHash::new([1; 20]), PeerId::new([2; 20]), false).encode();
    let key = [0xAB; 96];
    assert!(matches!(
        incoming_kind(Encryption::Require, &plain),
        Err(Refused::PlaintextRequired)
    ));
    assert!(matches!(
        incoming_kind(Encryption::Off, &key),
        Err(Refused::EncryptionOff)
    ));
    assert_eq!(
        incoming_kind(Encryption::Prefer, &plain).unwrap(),
        Detected::Plaintext
    );
    assert_eq!(
        incoming_kind(Encryption::Prefer, &key).unwrap(),
        Detected::Encrypted
    );
    assert_eq!(
        incoming_kind(Encryption::Require, &plain[..5]).unwrap(),
        Detected::NeedMore
    );
    assert_eq!(
        "require".parse::<Encryption>().unwrap(),
        Encryption::Require
    );
    assert!("on".parse::<Encryption>().is_err());
}

#[test]
fn a_prefer_peer_that_took_plaintext_is_dialled_in_plaintext_next_time() {
    use std::net::SocketAddr;
    let a: SocketAddr = "192.0.2.1:6881".parse().unwrap();
    let b: SocketAddr = "192.0.2.2:6881".parse().unwrap();
    let mut peers = PlaintextPeers::default();
    assert_eq!(peers.policy_for(Encryption::Prefer, a), Encryption::Prefer);
    peers.dialled(Encryption::Prefer, a, false);
    assert_eq!(peers.policy_for(Encryption::Prefer, a), Encryption::Off);
    assert_eq!(peers.policy_for(Encryption::Prefer, b), Encryption::Prefer);
    // `require` is never weakened, and its outcomes are not recorded.
    assert_eq!(
        peers.policy_for(Encryption::Require, a),
        Encryption::Require
    );
    peers.dialled(Encryption::Require, b, false);
    assert_eq!(peers.policy_for(Encryption::Prefer, b), Encryption::Prefer);
    // An encrypted success clears the mark.
    peers.dialled(Encryption::Prefer, a, true);
    assert_eq!(peers.policy_for(Encryption::Prefer, a), Encryption::Prefer);
    // Bounded: past the cap the record starts over.
    for n in 0..=MAX_PLAINTEXT_PEERS as u32 {
        let addr = SocketAddr::from((std::net::Ipv4Addr::from(0x0A00_0000 + n), 1));
        peers.dialled(Encryption::Prefer, addr, false);
    }
    assert!(peers.0.len() <= MAX_PLAINTEXT_PEERS);
}
