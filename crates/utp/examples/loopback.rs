//! Throughput of one uTP connection on loopback, for profiling the crate alone: a sender and a
//! receiver, each on its own thread with its own single-threaded runtime (as two processes
//! would be). `cargo run --release -p utp --example loopback -- [MiB]`

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp::{Config, UtpSocket};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The connection's buffers: `UTP_BUFFER_MIB` (send and receive) if set, else the defaults.
fn config() -> Config {
    let mut c = Config::default();
    if let Some(mib) = std::env::var("UTP_BUFFER_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        c.send_buffer = mib << 20;
        c.recv_buffer = mib << 20;
    }
    c
}

/// A uTP socket on `addr` with 4 MiB kernel buffers each way, as the engine asks for.
fn bind(addr: &str) -> UtpSocket {
    let addr: std::net::SocketAddr = addr.parse().expect("addr");
    let s = std::net::UdpSocket::bind(addr).expect("bind");
    let s = socket2::Socket::from(s);
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true).expect("nonblocking");
    let s = tokio::net::UdpSocket::from_std(s.into()).expect("tokio socket");
    UtpSocket::from_socket(s, config(), None).expect("utp socket")
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let total = mib << 20;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        runtime().block_on(async move {
            let s = bind("127.0.0.3:0");
            addr_tx.send(s.local_addr().expect("addr")).expect("send");
            let (mut stream, _) = s.accept().await.expect("accept");
            let mut buf = vec![0u8; 256 << 10];
            let mut got = 0;
            let start = Instant::now();
            while got < total {
                let n = stream.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got += n;
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{} MiB in {secs:.2} s: {:.0} MB/s",
                got >> 20,
                got as f64 / secs / 1e6
            );
        })
    });
    let to = addr_rx.recv().expect("address");
    runtime().block_on(async move {
        let s = bind("127.0.0.2:0");
        let mut stream = s.connect(to).await.expect("connect");
        let block = vec![7u8; 16 << 10];
        let mut sent = 0;
        while sent < total {
            stream.write_all(&block).await.expect("write");
            sent += block.len();
        }
        stream.shutdown().await.expect("shutdown");
        // Keep the socket until everything is acknowledged.
        let _ = tokio::task::spawn_blocking(move || receiver.join()).await;
    });
}
