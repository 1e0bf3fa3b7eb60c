//! DHT (BEP 5 KRPC) messages as Spore receives them: Spore's DHT node is the `mainline` crate, whose
//! message parser is private, so each input is sent as a UDP datagram to a real `mainline` node on
//! loopback (the same configuration `engine::dht` uses: server mode, no bootstrap). libFuzzer's coverage
//! counters see the node's thread; a panic there aborts the process and is reported as a crash.
//! Every input is followed by a well-formed ping that must be answered, so a node that stops serving
//! (a hang, a dead thread) is caught too.
#![no_main]

use std::net::{SocketAddr, UdpSocket};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

struct Target {
    _dht: mainline::Dht,
    node: SocketAddr,
    socket: UdpSocket,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let mut builder = mainline::Dht::builder();
        builder
            .server_mode()
            .bind_address(std::net::Ipv4Addr::LOCALHOST)
            .port(0)
            .no_bootstrap();
        let dht = builder.build().expect("mainline node on loopback");
        // The blocking `info` is deprecated for the async API, but this target has no executor to
        // run one on, and asking the node is the only race-free way to learn the port it bound.
        #[allow(deprecated)]
        let node = dht.info().local_addr().into();
        let socket = UdpSocket::bind("127.0.0.1:0").expect("loopback socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Target {
            _dht: dht,
            node,
            socket,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let t = target();
    let _ = t.socket.send_to(data, t.node);
    // A ping with a fixed transaction id (mainline only accepts 4-byte ones); replies to the fuzz
    // input, if any, are skipped.
    let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t4:zzzz1:y1:qe";
    t.socket.send_to(ping, t.node).expect("send ping");
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = t
            .socket
            .recv_from(&mut buf)
            .expect("the node stopped answering pings");
        if buf[..n].windows(9).any(|w| w == b"1:t4:zzzz") {
            break;
        }
    }
});
