//! The tokio driver on loopback: two sockets, a transfer both ways through `UtpStream`, and the
//! hook that hands non-uTP datagrams (a DHT message) to the caller.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use utp::{Config, UtpSocket};

fn data(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[1] ^ salt)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_both_ways_on_loopback() {
    let run = async {
        let a = UtpSocket::bind("127.0.0.71:0".parse().unwrap(), Config::default(), None)
            .await
            .unwrap();
        let b = UtpSocket::bind("127.0.0.72:0".parse().unwrap(), Config::default(), None)
            .await
            .unwrap();
        let b_addr = b.local_addr().unwrap();
        let up = data(3 << 20, 1);
        let down = data(1 << 20, 2);
        let (up2, down2) = (up.clone(), down.clone());
        let server = tokio::spawn(async move {
            let (mut s, from) = b.accept().await.unwrap();
            assert_eq!(from.ip().to_string(), "127.0.0.71");
            let mut got = Vec::new();
            let (mut r, mut w) = tokio::io::split(&mut s);
            let (read, write) = tokio::join!(r.read_to_end(&mut got), async {
                w.write_all(&down2).await.unwrap();
                w.shutdown().await.unwrap();
            });
            read.unwrap();
            assert!(got == up2, "server got {} bytes", got.len());
            drop(s);
            write
        });
        let mut s = a.connect(b_addr).await.unwrap();
        let (mut r, mut w) = tokio::io::split(&mut s);
        let mut got = Vec::new();
        let (read, ()) = tokio::join!(r.read_to_end(&mut got), async {
            w.write_all(&up).await.unwrap();
            w.shutdown().await.unwrap();
        });
        read.unwrap();
        assert!(got == down, "client got {} bytes", got.len());
        server.await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("transfer timed out");
}

#[tokio::test]
async fn non_utp_datagrams_go_to_the_hook() {
    let (tx, mut rx) = mpsc::channel(8);
    let s = UtpSocket::bind("127.0.0.73:0".parse().unwrap(), Config::default(), Some(tx))
        .await
        .unwrap();
    let peer = tokio::net::UdpSocket::bind("127.0.0.74:0").await.unwrap();
    let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    peer.send_to(ping, s.local_addr().unwrap()).await.unwrap();
    let (got, from) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ping);
    assert_eq!(from, peer.local_addr().unwrap());
    // And the other way, from the shared socket.
    s.send_other(b"d1:y1:re", peer.local_addr().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"d1:y1:re");
}

/// A packet for a connection the socket does not know is answered with a RESET naming it.
#[tokio::test]
async fn unknown_connection_gets_a_reset() {
    let s = UtpSocket::bind("127.0.0.75:0".parse().unwrap(), Config::default(), None)
        .await
        .unwrap();
    let peer = tokio::net::UdpSocket::bind("127.0.0.76:0").await.unwrap();
    let mut data = Vec::new();
    utp::packet::Header {
        ty: utp::PacketType::Data,
        conn_id: 777,
        timestamp: 1,
        timestamp_diff: 0,
        wnd_size: 1000,
        seq_nr: 42,
        ack_nr: 1,
    }
    .write(None, b"hello", &mut data);
    peer.send_to(&data, s.local_addr().unwrap()).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let p = utp::Packet::parse(&buf[..n]).unwrap();
    assert_eq!(p.header.ty, utp::PacketType::Reset);
    assert_eq!((p.header.conn_id, p.header.ack_nr), (777, 42));
}

#[tokio::test]
async fn a_dial_given_up_by_its_caller_is_forgotten() {
    // A UDP port that never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.74:0").await.unwrap();
    let a = UtpSocket::bind("127.0.0.73:0".parse().unwrap(), Config::default(), None)
        .await
        .unwrap();
    let dial = a.connect(silent.local_addr().unwrap());
    let gave_up = tokio::time::timeout(Duration::from_millis(300), dial).await;
    assert!(gave_up.is_err(), "a silent port answered");
    assert_eq!(a.connections(), 0, "the abandoned dial is still held");
}
