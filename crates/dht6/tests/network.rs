//! Many nodes over an in-memory IPv6 network in virtual time: join through one bootstrap node, announce,
//! find; dead nodes cost only timeouts; tokens bind an announce to the asker's address.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV6};

use dht6::{Body, Config, Event, LookupId, Message, Node, Query};

/// Each node in a /64 of its own, as on the Internet (the per-source reply limit counts by /64).
fn addr(i: usize) -> SocketAddrV6 {
    format!("[fd00:{:x}::1]:6881", i + 1).parse().unwrap()
}

struct Net {
    nodes: BTreeMap<SocketAddrV6, Node>,
    now: u64,
    events: Vec<(SocketAddrV6, Event)>,
}

impl Net {
    fn new(n: usize) -> Net {
        let mut nodes = BTreeMap::new();
        for i in 0..n {
            let config = Config {
                seed: i as u64 * 7919 + 1,
                ..Config::default()
            };
            let mut node = Node::new(config, 0);
            if i > 0 {
                node.set_bootstrap(vec![addr(0)]);
            }
            nodes.insert(addr(i), node);
        }
        Net {
            nodes,
            now: 0,
            events: Vec::new(),
        }
    }

    /// Delivers datagrams (1 ms each hop) and fires timeouts until nothing is left to do or `until`.
    fn run(&mut self, until: u64) {
        loop {
            let mut moved = false;
            let from_list: Vec<SocketAddrV6> = self.nodes.keys().copied().collect();
            for from in from_list {
                while let Some(t) = self.nodes.get_mut(&from).unwrap().poll_transmit() {
                    moved = true;
                    if let Some(to) = self.nodes.get_mut(&t.to) {
                        to.handle_datagram(SocketAddr::V6(from), &t.data, self.now);
                    }
                }
                while let Some(e) = self.nodes.get_mut(&from).unwrap().poll_event() {
                    self.events.push((from, e));
                }
            }
            if moved {
                self.now += 1;
                continue;
            }
            let next = self.nodes.values().map(Node::poll_timeout).min().unwrap();
            if next >= until {
                return;
            }
            self.now = next.max(self.now);
            for node in self.nodes.values_mut() {
                node.handle_timeout(self.now);
            }
        }
    }

    fn done(&self, at: SocketAddrV6, lookup: LookupId) -> Option<(usize, usize)> {
        self.events.iter().find_map(|(a, e)| match e {
            Event::Done {
                lookup: l,
                answered,
                announced,
            } if *a == at && *l == lookup => Some((*answered, *announced)),
            _ => None,
        })
    }

    fn peers(&self, at: SocketAddrV6, lookup: LookupId) -> Vec<SocketAddrV6> {
        self.events
            .iter()
            .filter_map(|(a, e)| match e {
                Event::Peers { lookup: l, peers } if *a == at && *l == lookup => {
                    Some(peers.clone())
                }
                _ => None,
            })
            .flatten()
            .collect()
    }
}

/// Joins 40 nodes, announces from one, looks up from another; returns the network.
fn join_announce_find() -> (Net, LookupId, LookupId) {
    let mut net = Net::new(40);
    for i in 1..40 {
        let now = net.now;
        net.nodes.get_mut(&addr(i)).unwrap().bootstrap(now);
        net.run(net.now + 60_000);
    }
    for i in 1..40 {
        assert!(net.nodes[&addr(i)].table().len() >= 8, "node {i} joined");
    }
    let hash = [0x5a; 20];
    let now = net.now;
    let a = net
        .nodes
        .get_mut(&addr(7))
        .unwrap()
        .announce(hash, 7000, now);
    net.run(net.now + 60_000);

    let now = net.now;
    let g = net.nodes.get_mut(&addr(31)).unwrap().get_peers(hash, now);
    net.run(net.now + 60_000);
    (net, a, g)
}

#[test]
fn nodes_join_announce_and_find_a_peer() {
    let (net, a, g) = join_announce_find();
    let (answered, announced) = net.done(addr(7), a).expect("announce ended");
    assert!(answered >= 8 && announced >= 1, "{answered} {announced}");
    assert!(net.done(addr(31), g).is_some());
    let want: SocketAddrV6 = "[fd00:8::1]:7000".parse().unwrap();
    assert_eq!(net.peers(addr(31), g), vec![want]);
}

#[test]
fn dead_nodes_cost_timeouts_not_the_lookup() {
    let mut net = Net::new(20);
    for i in 1..20 {
        let now = net.now;
        net.nodes.get_mut(&addr(i)).unwrap().bootstrap(now);
        net.run(net.now + 60_000);
    }
    // One node's bootstrap list names five nodes that are not there, and one that is.
    let mut lonely = Node::new(
        Config {
            seed: 99,
            ..Config::default()
        },
        net.now,
    );
    let mut boot: Vec<SocketAddrV6> = (30..35).map(addr).collect();
    boot.push(addr(0));
    lonely.set_bootstrap(boot);
    let started = net.now;
    let l = lonely.bootstrap(net.now);
    let me: SocketAddrV6 = "[fd00:ffff::1]:6881".parse().unwrap();
    net.nodes.insert(me, lonely);
    net.run(net.now + 60_000);
    assert!(net.done(me, l).is_some());
    assert!(net.nodes[&me].table().len() >= 8);
    // Three at a time, 2 s each: the dead ones delay the join by a few timeouts at most.
    assert!(net.now - started < 60_000);
}

#[test]
fn an_announce_needs_a_token_given_to_that_address() {
    let mut node = Node::new(Config::default(), 0);
    let asker: SocketAddrV6 = "[2001:db8::1]:5000".parse().unwrap();
    let other: SocketAddrV6 = "[2001:db8::2]:5000".parse().unwrap();
    let query = |q: Query| {
        Message {
            tid: b"xy".to_vec(),
            body: Body::Query {
                id: [9; 20],
                query: q,
            },
        }
        .encode()
    };
    node.handle_datagram(
        SocketAddr::V6(asker),
        &query(Query::GetPeers { info_hash: [1; 20] }),
        0,
    );
    let reply = Message::decode(&node.poll_transmit().unwrap().data).unwrap();
    let Body::Response {
        token: Some(token), ..
    } = reply.body
    else {
        panic!("{reply:?}")
    };
    let announce = query(Query::AnnouncePeer {
        info_hash: [1; 20],
        port: 6000,
        implied_port: false,
        token,
    });
    // The same token from another address is refused; from the asker it stores the peer.
    node.handle_datagram(SocketAddr::V6(other), &announce, 1);
    assert!(matches!(
        Message::decode(&node.poll_transmit().unwrap().data)
            .unwrap()
            .body,
        Body::Error { code: 203, .. }
    ));
    node.handle_datagram(SocketAddr::V6(asker), &announce, 2);
    node.poll_transmit();
    node.handle_datagram(
        SocketAddr::V6(other),
        &query(Query::GetPeers { info_hash: [1; 20] }),
        3,
    );
    match Message::decode(&node.poll_transmit().unwrap().data)
        .unwrap()
        .body
    {
        Body::Response { values, .. } => {
            assert_eq!(values, vec!["[2001:db8::1]:6000".parse().unwrap()])
        }
        other => panic!("{other:?}"),
    }
    // A reply nobody asked for changes nothing.
    let unasked = Message {
        tid: b"zz".to_vec(),
        body: Body::Response {
            id: [3; 20],
            nodes6: Vec::new(),
            values: vec!["[2001:db8::3]:1".parse().unwrap()],
            token: None,
        },
    };
    node.handle_datagram(SocketAddr::V6(other), &unasked.encode(), 4);
    assert!(node.poll_event().is_none());
    assert_eq!(node.table().len(), 1);
}

#[test]
fn the_same_seeds_and_inputs_give_the_same_run() {
    let (first, ..) = join_announce_find();
    let (second, ..) = join_announce_find();
    assert_eq!(first.now, second.now);
    assert_eq!(first.events, second.events);
}

#[test]
fn one_source_gets_a_bounded_number_of_replies_a_second() {
    let mut node = Node::new(Config::default(), 0);
    let ping = Message {
        tid: b"pp".to_vec(),
        body: Body::Query {
            id: [9; 20],
            query: Query::Ping,
        },
    }
    .encode();
    let replies = |node: &mut Node| std::iter::from_fn(|| node.poll_transmit()).count();
    // Two addresses of one /64 share its budget.
    for i in 0..150u16 {
        let from: SocketAddrV6 = format!("[2001:db8::{:x}]:1", i + 1).parse().unwrap();
        node.handle_datagram(SocketAddr::V6(from), &ping, 10);
    }
    assert_eq!(replies(&mut node), 100);
    // Another /64, and the next second, are served.
    node.handle_datagram(
        SocketAddr::V6("[2001:db8:0:1::1]:1".parse().unwrap()),
        &ping,
        10,
    );
    node.handle_datagram(
        SocketAddr::V6("[2001:db8::1]:1".parse().unwrap()),
        &ping,
        1_000,
    );
    assert_eq!(replies(&mut node), 2);
    // Loopback is not limited.
    for _ in 0..150 {
        node.handle_datagram(SocketAddr::V6("[::1]:1".parse().unwrap()), &ping, 1_000);
    }
    assert_eq!(replies(&mut node), 150);
}
