//! The IPv6 DHT node (`dht6`, BEP 32) fed arbitrary datagrams: the KRPC decoder, and a node answering
//! them (queries, replies to its own lookup's queries, errors), interleaved with timeouts. Nothing may
//! panic, and a well-formed ping must still be answered afterwards.
#![no_main]

use std::net::SocketAddr;

use dht6::{Body, Config, Message, Node, Query};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Message::decode(data);
    let mut node = Node::new(Config::default(), 0);
    let peer: SocketAddr = "[2001:db8::1]:6881".parse().expect("address");
    node.set_bootstrap(vec!["[2001:db8::1]:6881".parse().expect("address")]);
    node.get_peers([7; 20], 0);
    let mut now = 1;
    // Each chunk a datagram from the bootstrap node, so replies to our own queries get through too
    // when their transaction ids are guessed.
    for chunk in data.split(|&b| b == 0xff) {
        node.handle_datagram(peer, chunk, now);
        now += 500;
        node.handle_timeout(now);
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
    }
    let ping = Message {
        tid: b"pp".to_vec(),
        body: Body::Query {
            id: [1; 20],
            query: Query::Ping,
        },
    };
    node.handle_datagram(peer, &ping.encode(), now);
    let reply = node.poll_transmit().expect("a ping is answered");
    assert!(matches!(
        Message::decode(&reply.data).map(|m| m.body),
        Ok(Body::Response { .. })
    ));
});
