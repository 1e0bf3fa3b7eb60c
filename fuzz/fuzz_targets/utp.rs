#![no_main]
//! uTP: the packet parser on arbitrary bytes (bounded results, and what it accepts re-encodes to
//! the same header, selective ack and payload), and both sides of a `Connection` fed arbitrary
//! datagrams after a valid start (an accepted SYN, or a dial answered by a valid STATE), with
//! the connection ids patched in so the state machine is reached, interleaved with reads,
//! writes, closes and timeouts. Never a panic; the buffers stay within their bounds.

use libfuzzer_sys::fuzz_target;
use utp::conn::MAX_REORDER;
use utp::packet::{Header, MAX_SACK_BYTES};
use utp::{Config, Connection, Packet, PacketType};

const ID: u16 = 0x1234;

fn config() -> Config {
    Config {
        max_payload: 200,
        send_buffer: 4096,
        recv_buffer: 4096,
    }
}

fn packet(ty: PacketType, conn_id: u16, seq_nr: u16, ack_nr: u16) -> Vec<u8> {
    let mut out = Vec::new();
    Header { ty, conn_id, timestamp: 1, timestamp_diff: 0, wnd_size: 65536, seq_nr, ack_nr }.write(None, b"", &mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::parse(data) {
        assert!(p.payload.len() <= data.len());
        assert!(p.sack.is_none_or(|s| s.len() <= MAX_SACK_BYTES && s.len() % 4 == 0));
        let mut again = Vec::new();
        p.header.write(p.sack, p.payload, &mut again);
        let q = Packet::parse(&again).unwrap();
        assert_eq!((q.header, q.sack, q.payload), (p.header, p.sack, p.payload));
    }
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut now = 1_000_000u64;
    let mut conn = if mode & 1 == 0 {
        let syn = packet(PacketType::Syn, ID, 100, 0);
        Connection::accept(config(), &syn, 5000, now).unwrap()
    } else {
        let mut c = Connection::connect(config(), ID, now);
        while c.poll_transmit(now).is_some() {}
        c.handle_datagram(&packet(PacketType::State, ID, 7000, 1), now).unwrap();
        c
    };
    // The id the peer's packets carry: ours to receive on.
    let id = conn.recv_id().to_be_bytes();
    let mut buf = [0u8; 512];
    let mut rest = rest;
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let (d, tail) = tail.split_at(n);
        rest = tail;
        let mut d = d.to_vec();
        if d.len() >= 4 && len & 0x80 == 0 {
            d[2..4].copy_from_slice(&id);
        }
        now += u64::from(len) * 997;
        let _ = conn.handle_datagram(&d, now);
        match len % 8 {
            0 => {
                let _ = conn.write(&buf[..len as usize]);
            }
            1 => conn.close(),
            2 => conn.handle_timeout(now + 10_000_000),
            _ => {}
        }
        let _ = conn.read(&mut buf);
        let mut sent = 0;
        while let Some(out) = conn.poll_transmit(now) {
            assert!(out.len() <= 20 + 2 + MAX_SACK_BYTES + config().max_payload);
            sent += 1;
            // The send buffer and the windows bound it; a runaway would be a bug.
            assert!(sent <= 4096 + MAX_REORDER + 4);
        }
        conn.handle_timeout(now);
    }
});
