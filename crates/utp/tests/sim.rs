//! Two `Connection`s over an in-memory link in virtual time: one-way propagation delay, a
//! bottleneck of given rate with a drop-tail queue (so the queueing delay grows with the window),
//! loss and reordering from a seeded generator. Each endpoint has its own clock offset, as real
//! peers do.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use proptest::prelude::*;
use utp::{Config, Connection, Micros, State, UtpError};

/// xorshift64*: deterministic noise for loss and jitter.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

#[derive(Clone, Copy)]
struct LinkSpec {
    delay: Micros,
    /// Bytes per second through the bottleneck.
    rate: u64,
    queue: usize,
    loss: f64,
    /// Probability that a packet is held back by up to `jitter` more (reordering).
    reorder: f64,
    jitter: Micros,
}

struct Link {
    spec: LinkSpec,
    /// When the bottleneck finishes sending what is queued.
    free_at: Micros,
    /// (arrival, sequence for ties, datagram).
    in_flight: BinaryHeap<Reverse<(Micros, u64, Vec<u8>)>>,
    count: u64,
    /// (time, queueing delay) at each enqueue.
    queue_samples: Vec<(Micros, Micros)>,
    dropped: u64,
}

impl Link {
    fn new(spec: LinkSpec) -> Link {
        Link {
            spec,
            free_at: 0,
            in_flight: BinaryHeap::new(),
            count: 0,
            queue_samples: Vec::new(),
            dropped: 0,
        }
    }

    fn send(&mut self, d: Vec<u8>, now: Micros, rng: &mut Rng) {
        let wait = self.free_at.saturating_sub(now);
        let queued = (wait as u128 * self.spec.rate as u128 / 1_000_000) as usize;
        if queued + d.len() > self.spec.queue || rng.chance(self.spec.loss) {
            self.dropped += 1;
            return;
        }
        self.queue_samples.push((now, wait));
        let tx = d.len() as u64 * 1_000_000 / self.spec.rate;
        self.free_at = now.max(self.free_at) + tx;
        let mut arrival = self.free_at + self.spec.delay;
        if self.spec.reorder > 0.0 && rng.chance(self.spec.reorder) {
            arrival += rng.next() % self.spec.jitter.max(1);
        }
        self.count += 1;
        self.in_flight.push(Reverse((arrival, self.count, d)));
    }

    fn next_arrival(&self) -> Option<Micros> {
        self.in_flight.peek().map(|Reverse((t, _, _))| *t)
    }

    fn pop_due(&mut self, now: Micros) -> Option<Vec<u8>> {
        if self.next_arrival()? <= now {
            self.in_flight.pop().map(|Reverse((_, _, d))| d)
        } else {
            None
        }
    }
}

struct Outcome {
    received: Vec<u8>,
    forward: Link,
    end: Micros,
    sender: Connection,
}

const OFFSET_A: Micros = 7_000_000_000; // clocks far apart, and past a 32-bit wrap for B
const OFFSET_B: Micros = 4_294_000_000;

/// A sends `data` to B over `fwd` (acks come back over `back`); stops when B has read all and
/// both are closed, or at `limit`. With `data` empty, A sends an endless stream until `limit`.
/// A's sequence numbers start near the 16-bit wrap, so every transfer crosses it.
fn run(data: &[u8], fwd: LinkSpec, back: LinkSpec, seed: u64, limit: Micros) -> Outcome {
    let mut rng = Rng(seed | 1);
    let mut now: Micros = 0;
    let first_seq = 0xffff - (seed % 64) as u16;
    let mut a = Connection::connect_from(Config::default(), 0xfffe, first_seq, now + OFFSET_A);
    let mut b: Option<Connection> = None;
    let mut fwd = Link::new(fwd);
    let mut back = Link::new(back);
    let endless = data.is_empty();
    let mut written = 0;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut closed_a = false;
    let mut filler = vec![0u8; 65536];
    loop {
        // Applications.
        if endless {
            filler.iter_mut().for_each(|x| *x = x.wrapping_add(1));
            while a.write(&filler).unwrap() > 0 {}
        } else if !closed_a {
            written += a.write(&data[written..]).unwrap();
            if written == data.len() && !closed_a {
                a.close();
                closed_a = true;
            }
        }
        if let Some(b) = b.as_mut() {
            loop {
                match b.read(&mut buf) {
                    Ok(0) => {
                        b.close();
                        break;
                    }
                    Ok(n) => {
                        if !endless {
                            received.extend_from_slice(&buf[..n]);
                        }
                    }
                    Err(UtpError::WouldBlock) => break,
                    Err(e) => panic!("B: {e}"),
                }
            }
        }
        while let Some(d) = a.poll_transmit(now + OFFSET_A) {
            fwd.send(d, now, &mut rng);
        }
        if let Some(b) = b.as_mut() {
            while let Some(d) = b.poll_transmit(now + OFFSET_B) {
                back.send(d, now, &mut rng);
            }
        }
        let done = !endless
            && b.as_ref().is_some_and(|b| b.state() == State::Closed)
            && a.state() == State::Closed;
        if done || now >= limit {
            return Outcome {
                received,
                forward: fwd,
                end: now,
                sender: a,
            };
        }
        assert!(
            matches!(a.state(), State::SynSent | State::Connected | State::Closed),
            "A: {:?} at {} ms, received {} of {}, B {:?}, closed_a {}",
            a.state(),
            now / 1000,
            received.len(),
            data.len(),
            b.as_ref().map(|b| b.state()),
            closed_a
        );
        // Next event.
        let mut next = limit;
        for t in [
            fwd.next_arrival(),
            back.next_arrival(),
            a.poll_timeout().map(|t| t - OFFSET_A),
            b.as_ref()
                .and_then(|b| b.poll_timeout())
                .map(|t| t - OFFSET_B),
        ]
        .into_iter()
        .flatten()
        {
            next = next.min(t);
        }
        now = now.max(next);
        while let Some(d) = fwd.pop_due(now) {
            match b.as_mut() {
                Some(b) => b.handle_datagram(&d, now + OFFSET_B).unwrap(),
                None => {
                    b = Some(
                        Connection::accept(Config::default(), &d, 0x8000, now + OFFSET_B).unwrap(),
                    )
                }
            }
        }
        while let Some(d) = back.pop_due(now) {
            a.handle_datagram(&d, now + OFFSET_A).unwrap();
        }
        a.handle_timeout(now + OFFSET_A);
        if let Some(b) = b.as_mut() {
            b.handle_timeout(now + OFFSET_B);
        }
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 2_654_435_761) >> 13) as u8)
        .collect()
}

const MS: Micros = 1000;
const SEC: Micros = 1_000_000;

fn clean(delay: Micros, rate: u64, queue: usize) -> LinkSpec {
    LinkSpec {
        delay,
        rate,
        queue,
        loss: 0.0,
        reorder: 0.0,
        jitter: 0,
    }
}

#[test]
fn transfer_of_several_megabytes_is_byte_exact() {
    let data = pattern(5 << 20);
    let out = run(
        &data,
        clean(10 * MS, 2_500_000, 200_000),
        clean(10 * MS, 2_500_000, 200_000),
        1,
        600 * SEC,
    );
    assert!(
        out.received == data,
        "got {} of {} bytes",
        out.received.len(),
        data.len()
    );
    assert!(out.end < 60 * SEC, "not closed at {} s", out.end / SEC);
    eprintln!("5 MiB in {:.1} s virtual", out.end as f64 / 1e6);
}

#[test]
fn transfer_with_loss_and_reordering_is_byte_exact() {
    let data = pattern(3 << 20);
    let spec = LinkSpec {
        delay: 15 * MS,
        rate: 2_500_000,
        queue: 200_000,
        loss: 0.03,
        reorder: 0.1,
        jitter: 30 * MS,
    };
    let out = run(&data, spec, spec, 7, 1200 * SEC);
    assert!(
        out.forward.dropped > 40,
        "the link dropped only {}",
        out.forward.dropped
    );
    assert!(
        out.received == data,
        "got {} of {} bytes",
        out.received.len(),
        data.len()
    );
    assert!(out.end < 600 * SEC, "not closed at {} s", out.end / SEC);
    eprintln!(
        "3 MiB with loss in {:.1} s virtual, {} dropped",
        out.end as f64 / 1e6,
        out.forward.dropped
    );
}

/// RFC 6817's promise: behind a bottleneck with a deep queue (1 MB, 800 ms at 10 Mbit/s), the
/// flow keeps the queue near the 100 ms target instead of filling it, and still uses the link.
#[test]
fn ledbat_holds_queueing_delay_near_target() {
    let rate = 1_250_000; // 10 Mbit/s
    let out = run(
        &[],
        clean(20 * MS, rate, 1_000_000),
        clean(20 * MS, 100_000_000, 1_000_000),
        3,
        60 * SEC,
    );
    let steady: Vec<Micros> = out
        .forward
        .queue_samples
        .iter()
        .filter(|(t, _)| *t >= 30 * SEC)
        .map(|(_, q)| *q)
        .collect();
    assert!(!steady.is_empty());
    let mean = steady.iter().sum::<Micros>() / steady.len() as Micros;
    let max = *steady.iter().max().unwrap();
    eprintln!(
        "steady state: mean queueing delay {} ms, max {} ms, cwnd {} B, estimate {:?} us, drops {}",
        mean / MS,
        max / MS,
        out.sender.cwnd(),
        out.sender.queuing_delay(),
        out.forward.dropped
    );
    assert!(
        (50 * MS..=150 * MS).contains(&mean),
        "mean queueing delay {} ms",
        mean / MS
    );
    assert!(max < 300 * MS, "queue reached {} ms", max / MS);
    assert_eq!(
        out.forward.dropped, 0,
        "LEDBAT filled the queue to overflowing"
    );
    // The link stays busy: at 10 Mbit/s 30 s carry 37.5 MB; the flow must have sent most of it.
    let sent_late = steady.len() as u64 * 1400;
    assert!(
        sent_late > 30 * rate * 8 / 10,
        "only {sent_late} bytes in the last 30 s"
    );
}

#[derive(Debug, Clone)]
struct Impairment {
    seed: u64,
    loss: f64,
    reorder: f64,
    len: usize,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn any_loss_and_reordering_delivers_intact(imp in (any::<u64>(), 0.0..0.15f64, 0.0..0.3f64, 1usize..200_000).prop_map(|(seed, loss, reorder, len)| Impairment { seed, loss, reorder, len })) {
        let data = pattern(imp.len);
        let spec = LinkSpec { delay: 5 * MS, rate: 1_000_000, queue: 100_000, loss: imp.loss, reorder: imp.reorder, jitter: 20 * MS };
        let out = run(&data, spec, spec, imp.seed, 3600 * SEC);
        prop_assert_eq!(out.received.len(), data.len());
        prop_assert!(out.received == data);
        prop_assert!(out.end < 3600 * SEC, "not closed");
    }
}
