//! Small swarms in virtual time: they run in well under a second in a debug build.

use std::time::Duration;

use spore_sim::{fluid_lower_bound, Arrivals, Departure, Group, Sim, SwarmConfig, KIB, MIB};

fn group(name: &str, count: usize, seed: bool, arrivals: Arrivals, departure: Departure) -> Group {
    Group {
        name: name.into(),
        count,
        seed,
        upload: 2.0 * MIB as f64,
        download: 8.0 * MIB as f64,
        arrivals,
        departure,
    }
}

fn small(seed: u64, leechers: usize, departure: Departure) -> SwarmConfig {
    let at0 = Arrivals::At(Duration::ZERO);
    let crowd = Arrivals::Spread {
        start: Duration::from_secs(1),
        span: Duration::from_secs(10),
    };
    SwarmConfig::new(
        seed,
        64,
        (256 * KIB) as u32,
        vec![
            group("seed", 1, true, at0, departure),
            group("leechers", leechers, false, crowd, Departure::Never),
        ],
    )
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let a = Sim::new(small(7, 20, Departure::Never)).run();
    let b = Sim::new(small(7, 20, Departure::Never)).run();
    let c = Sim::new(small(8, 20, Departure::Never)).run();
    assert!(a.all_done && c.all_done);
    assert_eq!(a, b);
    assert_ne!(a.peers, c.peers);
}

#[test]
fn every_leecher_completes_with_exact_byte_counts() {
    let cfg = small(1, 30, Departure::Never);
    let file = cfg.file_size();
    let out = Sim::new(cfg).run();
    assert!(out.all_done, "{out:?}");
    let leechers: Vec<_> = out.peers.iter().filter(|p| !p.seed).collect();
    assert_eq!(leechers.len(), 30);
    for p in &leechers {
        assert!(p.completed.is_some());
        assert_eq!(p.verified, file, "{p:?}");
        // Whole-piece blocks and no endgame duplicates in a swarm this calm: nothing is received twice.
        assert!(p.downloaded >= file, "{p:?}");
    }
    let up: u64 = out.peers.iter().map(|p| p.uploaded).sum();
    let down: u64 = out.peers.iter().map(|p| p.downloaded).sum();
    // Every byte that left an uplink arrived, found its connection closed (a leecher that completes
    // drops its connections to seeds with blocks still on the way), or was on its way at the end.
    assert_eq!(up, down + out.dropped + out.in_flight);
    assert!(out.dropped < file, "{}", out.dropped);
    assert!(
        out.peers[0].uploaded >= file,
        "the seed sent every piece at least once"
    );
}

#[test]
fn the_swarm_finishes_after_the_seed_leaves_once_a_copy_is_out() {
    let out = Sim::new(small(3, 20, Departure::WhenCopyOut)).run();
    assert!(out.all_done, "{out:?}");
    let left = out.copy_out_departure.expect("the seed left");
    assert_eq!(out.peers[0].left, Some(left));
    let last = out.peers.iter().filter_map(|p| p.completed).max().unwrap();
    assert!(
        last > left,
        "someone finished without the seed ({left:?}, {last:?})"
    );
}

#[test]
fn fluid_bound_takes_the_tightest_of_its_three_limits() {
    let f = 1000.0;
    // The seed's upload limits.
    assert_eq!(fluid_lower_bound(f, 10.0, 1000.0, &[1000.0; 4]), 100.0);
    // The slowest downloader limits.
    assert_eq!(fluid_lower_bound(f, 1000.0, 5.0, &[1000.0; 4]), 200.0);
    // The swarm's total upload limits: 10 leechers need 10 000 bytes through 20 + 10·10 per second.
    let b = fluid_lower_bound(f, 20.0, 1e9, &[10.0; 10]);
    assert!((b - 10_000.0 / 120.0).abs() < 1e-9, "{b}");
}

#[test]
fn windows_and_threads_do_not_change_a_run() {
    // Peers run their events of a window one peer after another, the peers split between threads;
    // what one does reaches another only a lookahead later, so neither the window's size (down to
    // one instant) nor the threads may change anything.
    let serial = Sim::new(small(3, 20, Departure::Never)).run();
    assert!(serial.all_done);
    for window in [Duration::from_nanos(1), Duration::from_micros(2_500)] {
        let run = Sim::new(small(3, 20, Departure::Never))
            .window(window)
            .run();
        assert_eq!(run, serial, "window {window:?}");
    }
    for threads in [2, 3] {
        let run = Sim::new(small(3, 20, Departure::Never))
            .threads(threads)
            .run();
        assert_eq!(run, serial, "{threads} threads");
    }
    // Peers leaving as the copy comes out, and after they complete.
    let mut cfg = small(5, 20, Departure::WhenCopyOut);
    cfg.groups[1].departure = Departure::AfterDone(Duration::from_secs(60));
    let serial = Sim::new(cfg.clone()).run();
    assert!(serial.all_done);
    assert_eq!(Sim::new(cfg).threads(2).run(), serial);
}

#[test]
fn haves_sent_together_or_alone_give_the_same_swarm_in_fewer_events() {
    // Batched `Have`s change when they arrive (by up to `have_batch`), not what the cores do with
    // them: every leecher still completes with every byte, on fewer events; and a batched run is as
    // independent of windows and threads as any.
    let mut alone = small(4, 30, Departure::Never);
    alone.have_batch = Duration::ZERO;
    let mut together = alone.clone();
    together.have_batch = Duration::from_millis(100);
    let (a, t) = (Sim::new(alone).run(), Sim::new(together.clone()).run());
    assert!(a.all_done && t.all_done);
    for out in [&a, &t] {
        let file = 64 * 256 * KIB;
        assert!(out.peers.iter().all(|p| p.seed || p.verified == file));
    }
    assert!(t.events < a.events, "{} against {}", t.events, a.events);
    let threads = Sim::new(together.clone())
        .threads(2)
        .window(Duration::from_micros(700))
        .run();
    assert_eq!(threads, t);
    // Much the same swarm: the last leecher done within 10 % (a small swarm varies as much between
    // seeds).
    let last = |o: &spore_sim::Outcome| o.peers.iter().filter_map(|p| p.completed).max();
    let (la, lt) = (
        last(&a).unwrap().as_secs_f64(),
        last(&t).unwrap().as_secs_f64(),
    );
    assert!((lt / la - 1.0).abs() < 0.1, "{la} s against {lt} s");
}
