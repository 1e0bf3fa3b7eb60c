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

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let total = mib << 20;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        runtime().block_on(async move {
            let s = UtpSocket::bind(
                "127.0.0.3:0".parse().expect("addr"),
                Config::default(),
                None,
            )
            .await
            .expect("bind");
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
        let s = UtpSocket::bind(
            "127.0.0.2:0".parse().expect("addr"),
            Config::default(),
            None,
        )
        .await
        .expect("bind");
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
