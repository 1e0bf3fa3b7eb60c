//! A DHT node: answers queries (tokens, a bounded peer store) and runs lookups (iterative get_peers /
//! find_node, then announce_peer to the closest nodes that gave a token).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{SocketAddr, SocketAddrV6};

use sha1::{Digest, Sha1};

use crate::krpc::{Body, Message, Query};
use crate::table::{distance, usable, NodeId, Table, K};

/// Budgets and timings of a node (docs/limits.md lists them).
#[derive(Debug, Clone)]
pub struct Config {
    /// Seeds the node id (unless `id` is given), transaction ids and token secrets.
    pub seed: u64,
    pub id: Option<NodeId>,
    /// Milliseconds a query waits for its answer.
    pub query_timeout: u64,
    /// Queries a lookup has in flight at once.
    pub alpha: usize,
    /// Queries one lookup sends at most.
    pub max_lookup_queries: usize,
    /// Candidates a lookup keeps (the closest).
    pub max_candidates: usize,
    /// Queries in flight in all; past it a lookup waits.
    pub max_in_flight: usize,
    /// Lookups at once; past it a new one ends at once with nothing found.
    pub max_lookups: usize,
    /// Info-hashes whose peers we store for others, and peers per info-hash.
    pub max_hashes: usize,
    pub max_peers_per_hash: usize,
    /// Peer values handed out per get_peers reply.
    pub max_values: usize,
    /// Milliseconds an announced peer is kept.
    pub peer_ttl: u64,
    /// Milliseconds between token secret changes (a token is good for one to two periods).
    pub token_period: u64,
    /// Milliseconds between lookups of our own id that keep the routing table fresh.
    pub refresh_every: u64,
    /// Queries answered per second from one source (an IPv6 /64; loopback is not limited): a
    /// spoofed flood gets no more replies than this (a reply is several times a query's size).
    pub max_queries_per_source: u32,
    /// Sources counted at once; past it, queries from new sources wait for the next second.
    pub max_sources: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            seed: 0,
            id: None,
            query_timeout: 2_000,
            alpha: 3,
            max_lookup_queries: 64,
            max_candidates: 64,
            max_in_flight: 256,
            max_lookups: 64,
            max_hashes: 1_000,
            max_peers_per_hash: 200,
            max_values: 50,
            peer_ttl: 30 * 60_000,
            token_period: 5 * 60_000,
            refresh_every: 15 * 60_000,
            max_queries_per_source: 100,
            max_sources: 4096,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddrV6,
    pub data: Vec<u8>,
}

pub type LookupId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Peers a lookup found (each once per lookup).
    Peers {
        lookup: LookupId,
        peers: Vec<SocketAddrV6>,
    },
    /// A lookup ended: how many nodes answered it, and to how many we announced.
    Done {
        lookup: LookupId,
        answered: usize,
        announced: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    FindNode,
    GetPeers,
    Announce { port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    New,
    Waiting,
    Answered(Option<Vec<u8>>),
    Failed,
}

#[derive(Debug)]
struct Candidate {
    id: NodeId,
    addr: SocketAddrV6,
    state: State,
}

#[derive(Debug)]
struct Lookup {
    target: NodeId,
    purpose: Purpose,
    /// Addresses of unknown id to ask first (bootstrap nodes).
    seeds: VecDeque<SocketAddrV6>,
    /// Sorted by distance to `target`.
    candidates: Vec<Candidate>,
    in_flight: usize,
    queries: usize,
    found: BTreeSet<SocketAddrV6>,
    /// A lookup of the node's own (table refresh): no events.
    internal: bool,
}

#[derive(Debug)]
struct InFlight {
    to: SocketAddrV6,
    deadline: u64,
    lookup: Option<LookupId>,
}

pub struct Node {
    config: Config,
    id: NodeId,
    table: Table,
    bootstrap: Vec<SocketAddrV6>,
    /// Announced peers by info-hash, with the time each expires.
    peers: BTreeMap<NodeId, Vec<(SocketAddrV6, u64)>>,
    /// The current token secret and the one before.
    secrets: [u64; 2],
    next_rotation: u64,
    next_refresh: u64,
    next_tid: u16,
    in_flight: BTreeMap<u16, InFlight>,
    lookups: BTreeMap<LookupId, Lookup>,
    next_lookup: LookupId,
    /// Queries answered per source /64 in the current second: (second, count).
    answered: BTreeMap<u64, (u64, u32)>,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    rng: u64,
}

/// splitmix64: a small seeded generator.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Node {
    pub fn new(config: Config, now: u64) -> Node {
        let mut rng = config.seed;
        let id = config.id.unwrap_or_else(|| {
            let mut id = [0u8; 20];
            for chunk in id.chunks_mut(8) {
                let r = next_random(&mut rng).to_be_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            id
        });
        let secrets = [next_random(&mut rng), next_random(&mut rng)];
        Node {
            next_rotation: now + config.token_period,
            next_refresh: now + config.refresh_every,
            next_tid: next_random(&mut rng) as u16,
            config,
            id,
            table: Table::new(id),
            bootstrap: Vec::new(),
            peers: BTreeMap::new(),
            secrets,
            in_flight: BTreeMap::new(),
            lookups: BTreeMap::new(),
            next_lookup: 1,
            answered: BTreeMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            rng,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Nodes to join through (asked whenever the table has fewer than [`K`] nodes).
    pub fn set_bootstrap(&mut self, nodes: Vec<SocketAddrV6>) {
        self.bootstrap = nodes.into_iter().filter(usable).collect();
    }

    /// Looks up our own id through the bootstrap nodes and the table: fills the table.
    pub fn bootstrap(&mut self, now: u64) -> LookupId {
        self.start(self.id, Purpose::FindNode, false, now)
    }

    /// Looks up the peers of `info_hash`: [`Event::Peers`] as they come, then [`Event::Done`].
    pub fn get_peers(&mut self, info_hash: NodeId, now: u64) -> LookupId {
        self.start(info_hash, Purpose::GetPeers, false, now)
    }

    /// Looks up `info_hash`, then announces our `port` to the closest nodes that answered.
    pub fn announce(&mut self, info_hash: NodeId, port: u16, now: u64) -> LookupId {
        self.start(info_hash, Purpose::Announce { port }, false, now)
    }

    fn start(&mut self, target: NodeId, purpose: Purpose, internal: bool, now: u64) -> LookupId {
        let lookup = self.next_lookup;
        self.next_lookup += 1;
        if self.lookups.len() >= self.config.max_lookups {
            if !internal {
                self.events.push_back(Event::Done {
                    lookup,
                    answered: 0,
                    announced: 0,
                });
            }
            return lookup;
        }
        let candidates = self
            .table
            .closest(&target, self.config.max_candidates)
            .into_iter()
            .map(|(id, addr)| Candidate {
                id,
                addr,
                state: State::New,
            })
            .collect();
        let seeds = if self.table.len() < K {
            self.bootstrap.iter().copied().collect()
        } else {
            VecDeque::new()
        };
        self.lookups.insert(
            lookup,
            Lookup {
                target,
                purpose,
                seeds,
                candidates,
                in_flight: 0,
                queries: 0,
                found: BTreeSet::new(),
                internal,
            },
        );
        self.advance(lookup, now);
        lookup
    }

    /// Sends what a lookup may send now; ends it when nothing is left to ask.
    fn advance(&mut self, id: LookupId, now: u64) {
        let Some(mut l) = self.lookups.remove(&id) else {
            return;
        };
        let query = |target: NodeId, purpose: Purpose| match purpose {
            Purpose::FindNode => Query::FindNode { target },
            _ => Query::GetPeers { info_hash: target },
        };
        while l.in_flight < self.config.alpha
            && l.queries < self.config.max_lookup_queries
            && self.in_flight.len() < self.config.max_in_flight
        {
            let to = if let Some(seed) = l.seeds.pop_front() {
                seed
            } else if let Some(c) = l
                .candidates
                .iter_mut()
                .filter(|c| c.state != State::Failed)
                .take(K)
                .find(|c| c.state == State::New)
            {
                c.state = State::Waiting;
                c.addr
            } else {
                break;
            };
            self.send_query(to, query(l.target, l.purpose), Some(id), now);
            l.in_flight += 1;
            l.queries += 1;
        }
        if l.in_flight > 0 {
            self.lookups.insert(id, l);
            return;
        }
        let more = !l.seeds.is_empty()
            || l.candidates
                .iter()
                .filter(|c| c.state != State::Failed)
                .take(K)
                .any(|c| c.state == State::New);
        if more && l.queries < self.config.max_lookup_queries {
            // Waiting for room among the queries in flight in all: the next timeout or reply resumes it.
            self.lookups.insert(id, l);
            return;
        }
        self.finish(id, l, now);
    }

    fn finish(&mut self, id: LookupId, l: Lookup, now: u64) {
        let answered = l
            .candidates
            .iter()
            .filter(|c| matches!(c.state, State::Answered(_)))
            .count();
        let mut announced = 0;
        if let Purpose::Announce { port } = l.purpose {
            let with_token: Vec<(SocketAddrV6, Vec<u8>)> = l
                .candidates
                .iter()
                .filter_map(|c| match &c.state {
                    State::Answered(Some(token)) => Some((c.addr, token.clone())),
                    _ => None,
                })
                .take(K)
                .collect();
            for (to, token) in with_token {
                let q = Query::AnnouncePeer {
                    info_hash: l.target,
                    port,
                    implied_port: false,
                    token,
                };
                if self.send_query(to, q, None, now) {
                    announced += 1;
                }
            }
        }
        if !l.internal {
            self.events.push_back(Event::Done {
                lookup: id,
                answered,
                announced,
            });
        }
    }

    fn send_query(
        &mut self,
        to: SocketAddrV6,
        query: Query,
        lookup: Option<LookupId>,
        now: u64,
    ) -> bool {
        if self.in_flight.len() >= self.config.max_in_flight {
            return false;
        }
        let mut tid = self.next_tid;
        while self.in_flight.contains_key(&tid) {
            tid = tid.wrapping_add(1);
        }
        self.next_tid = tid.wrapping_add(1);
        self.in_flight.insert(
            tid,
            InFlight {
                to,
                deadline: now + self.config.query_timeout,
                lookup,
            },
        );
        let message = Message {
            tid: tid.to_be_bytes().to_vec(),
            body: Body::Query { id: self.id, query },
        };
        self.out.push_back(Transmit {
            to,
            data: message.encode(),
        });
        true
    }

    fn token(&self, secret: u64, addr: &SocketAddrV6) -> Vec<u8> {
        let mut h = Sha1::new();
        h.update(secret.to_be_bytes());
        h.update(addr.ip().octets());
        h.finalize()[..8].to_vec()
    }

    /// A datagram from `from`. Anything that does not parse, or answers no query of ours from that
    /// address, is dropped.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: u64) {
        let SocketAddr::V6(from) = from else {
            return;
        };
        let from = SocketAddrV6::new(*from.ip(), from.port(), 0, 0);
        let Ok(message) = Message::decode(datagram) else {
            return;
        };
        match message.body {
            Body::Query { id, query } => {
                if !self.may_answer(&from, now) {
                    return;
                }
                self.table.seen(id, from);
                let body = self.answer(from, query, now);
                let reply = Message {
                    tid: message.tid,
                    body,
                };
                self.out.push_back(Transmit {
                    to: from,
                    data: reply.encode(),
                });
            }
            Body::Response {
                id,
                nodes6,
                values,
                token,
            } => {
                let Some(pending) = self.take_in_flight(&message.tid, from) else {
                    return;
                };
                self.table.seen(id, from);
                if let Some(lookup) = pending.lookup {
                    self.lookup_answered(lookup, id, from, nodes6, values, token, now);
                }
            }
            Body::Error { .. } => {
                let Some(pending) = self.take_in_flight(&message.tid, from) else {
                    return;
                };
                if let Some(lookup) = pending.lookup {
                    if let Some(l) = self.lookups.get_mut(&lookup) {
                        l.in_flight = l.in_flight.saturating_sub(1);
                        for c in l.candidates.iter_mut().filter(|c| c.addr == from) {
                            c.state = State::Failed;
                        }
                    }
                    self.advance(lookup, now);
                }
            }
        }
    }

    /// Whether a query from `from` is answered: at most [`Config::max_queries_per_source`] a second
    /// from its /64.
    fn may_answer(&mut self, from: &SocketAddrV6, now: u64) -> bool {
        if from.ip().is_loopback() {
            return true;
        }
        let source = (u128::from(*from.ip()) >> 64) as u64;
        let second = now / 1000;
        if !self.answered.contains_key(&source) && self.answered.len() >= self.config.max_sources {
            self.answered.retain(|_, (s, _)| *s == second);
            if self.answered.len() >= self.config.max_sources {
                return false;
            }
        }
        let (at, count) = self.answered.entry(source).or_insert((second, 0));
        if *at != second {
            (*at, *count) = (second, 0);
        }
        *count = count.saturating_add(1);
        *count <= self.config.max_queries_per_source
    }

    fn take_in_flight(&mut self, tid: &[u8], from: SocketAddrV6) -> Option<InFlight> {
        let tid = u16::from_be_bytes(<[u8; 2]>::try_from(tid).ok()?);
        if self.in_flight.get(&tid)?.to != from {
            return None;
        }
        self.in_flight.remove(&tid)
    }

    #[allow(clippy::too_many_arguments)]
    fn lookup_answered(
        &mut self,
        lookup: LookupId,
        id: NodeId,
        from: SocketAddrV6,
        nodes6: Vec<(NodeId, SocketAddrV6)>,
        values: Vec<SocketAddrV6>,
        token: Option<Vec<u8>>,
        now: u64,
    ) {
        let max = self.config.max_candidates;
        let own = self.id;
        let Some(l) = self.lookups.get_mut(&lookup) else {
            return;
        };
        l.in_flight = l.in_flight.saturating_sub(1);
        match l.candidates.iter_mut().find(|c| c.addr == from) {
            Some(c) => c.state = State::Answered(token),
            // A bootstrap node: now we know its id.
            None => insert(
                &mut l.candidates,
                l.target,
                Candidate {
                    id,
                    addr: from,
                    state: State::Answered(token),
                },
                max,
            ),
        }
        for (nid, addr) in nodes6.into_iter().take(2 * K) {
            if nid != own && usable(&addr) {
                insert(
                    &mut l.candidates,
                    l.target,
                    Candidate {
                        id: nid,
                        addr,
                        state: State::New,
                    },
                    max,
                );
            }
        }
        let fresh: Vec<SocketAddrV6> = values
            .into_iter()
            .filter(usable)
            .filter(|p| l.found.len() < 4096 && l.found.insert(*p))
            .collect();
        if !fresh.is_empty() && !l.internal {
            self.events.push_back(Event::Peers {
                lookup,
                peers: fresh,
            });
        }
        self.advance(lookup, now);
    }

    fn answer(&mut self, from: SocketAddrV6, query: Query, now: u64) -> Body {
        let response = |id, nodes6, values, token| Body::Response {
            id,
            nodes6,
            values,
            token,
        };
        match query {
            Query::Ping => response(self.id, Vec::new(), Vec::new(), None),
            Query::FindNode { target } => {
                response(self.id, self.table.closest(&target, K), Vec::new(), None)
            }
            Query::GetPeers { info_hash } => {
                let values: Vec<SocketAddrV6> = self
                    .peers
                    .get(&info_hash)
                    .map(|list| {
                        list.iter()
                            .filter(|(_, expires)| *expires > now)
                            .map(|(p, _)| *p)
                            .take(self.config.max_values)
                            .collect()
                    })
                    .unwrap_or_default();
                let token = self.token(self.secrets[0], &from);
                response(
                    self.id,
                    self.table.closest(&info_hash, K),
                    values,
                    Some(token),
                )
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                let good = self.secrets.iter().any(|s| self.token(*s, &from) == token);
                let port = if implied_port { from.port() } else { port };
                if !good {
                    return Body::Error {
                        code: 203,
                        message: "bad token".into(),
                    };
                }
                if port == 0 {
                    return Body::Error {
                        code: 203,
                        message: "port 0".into(),
                    };
                }
                self.store_peer(info_hash, SocketAddrV6::new(*from.ip(), port, 0, 0), now);
                response(self.id, Vec::new(), Vec::new(), None)
            }
            Query::Other(_) => Body::Error {
                code: 204,
                message: "method unknown".into(),
            },
        }
    }

    fn store_peer(&mut self, info_hash: NodeId, peer: SocketAddrV6, now: u64) {
        let expires = now + self.config.peer_ttl;
        if !self.peers.contains_key(&info_hash) && self.peers.len() >= self.config.max_hashes {
            self.peers
                .retain(|_, list| list.iter().any(|(_, e)| *e > now));
            if self.peers.len() >= self.config.max_hashes {
                return;
            }
        }
        let list = self.peers.entry(info_hash).or_default();
        list.retain(|(_, e)| *e > now);
        if let Some(entry) = list.iter_mut().find(|(p, _)| *p == peer) {
            entry.1 = expires;
        } else if list.len() < self.config.max_peers_per_hash {
            list.push((peer, expires));
        } else if let Some(oldest) = list.iter_mut().min_by_key(|(_, e)| *e) {
            *oldest = (peer, expires);
        }
    }

    /// Ends queries that waited too long, changes the token secret, refreshes the table.
    pub fn handle_timeout(&mut self, now: u64) {
        let expired: Vec<u16> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        let mut touched = BTreeSet::new();
        for tid in expired {
            let Some(f) = self.in_flight.remove(&tid) else {
                continue;
            };
            self.table.failed(&f.to);
            if let Some(id) = f.lookup {
                if let Some(l) = self.lookups.get_mut(&id) {
                    l.in_flight = l.in_flight.saturating_sub(1);
                    for c in l.candidates.iter_mut().filter(|c| c.addr == f.to) {
                        if c.state == State::Waiting {
                            c.state = State::Failed;
                        }
                    }
                    touched.insert(id);
                }
            }
        }
        // Lookups waiting for room in flight may go on too.
        touched.extend(self.lookups.keys().copied());
        for id in touched {
            self.advance(id, now);
        }
        if now >= self.next_rotation {
            self.secrets = [next_random(&mut self.rng), self.secrets[0]];
            self.next_rotation = now + self.config.token_period;
            self.peers.retain(|_, list| {
                list.retain(|(_, e)| *e > now);
                !list.is_empty()
            });
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.config.refresh_every;
            self.start(self.id, Purpose::FindNode, true, now);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> u64 {
        self.in_flight
            .values()
            .map(|f| f.deadline)
            .min()
            .unwrap_or(u64::MAX)
            .min(self.next_rotation)
            .min(self.next_refresh)
    }
}

/// Puts `c` among `list` by distance to `target`, unless its address or id is there already; keeps
/// the `max` closest.
fn insert(list: &mut Vec<Candidate>, target: NodeId, c: Candidate, max: usize) {
    if list.iter().any(|o| o.addr == c.addr || o.id == c.id) {
        return;
    }
    let d = distance(&c.id, &target);
    let at = list.partition_point(|o| distance(&o.id, &target) <= d);
    if at >= max {
        return;
    }
    list.insert(at, c);
    // Only unasked candidates are dropped off the end: the state of asked ones is still needed.
    while list.len() > max {
        match list.iter().rposition(|o| o.state == State::New) {
            Some(i) => {
                list.remove(i);
            }
            None => break,
        }
    }
}
