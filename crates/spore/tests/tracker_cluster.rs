//! Several `spore tracker` nodes sharing their swarms through a real Redis Cluster (three masters and
//! three replicas from Debian's redis-server, on loopback): what one node learns, another hands out.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::redis_cluster::{self, RedisCluster};
use common::*;
use tracker_proto::http::{self as proto, AnnounceResponse, HttpAnnounce};
use tracker_proto::udp::Response;
use tracker_proto::Event;

fn node(dir: &Path, name: &str, cluster: &RedisCluster, extra: &[&str]) -> TrackerProc {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let url = cluster.url();
    let mut args = vec!["--cluster", url.as_str()];
    args.extend_from_slice(extra);
    tracker_with(&dir, &args, |_| {})
}

/// An HTTP announce from `local` (a loopback address) for peer port `port`: the peers handed out.
fn http_announce(
    local: &str,
    tracker: SocketAddr,
    hash: [u8; 20],
    port: u16,
) -> Result<AnnounceResponse, String> {
    let q = proto::encode_announce(&HttpAnnounce {
        announce: announce(hash, port as u8, port, Event::Started),
        compact: true,
        no_peer_id: true,
        tracker_id: None,
    });
    let (status, body) =
        get_from(local, tracker, &format!("/announce?{q}")).map_err(|e| e.to_string())?;
    if !status.contains("200") {
        return Err(status);
    }
    AnnounceResponse::decode(&body).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&body)))
}

/// The staleness bound with the default settings (view TTL 1.5 s, flush every 1.5 s), and a second more for
/// a loaded machine: what one node learned, another hands out within it.
const BOUND: Duration = Duration::from_secs(4);

fn addrs(r: &AnnounceResponse) -> Vec<SocketAddr> {
    r.peers.iter().map(|p| p.addr).collect()
}

#[test]
fn a_peer_announced_to_one_node_is_handed_out_by_another_over_http_and_udp() {
    if !redis_cluster::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(dir.path());
    let a = node(dir.path(), "a", &cluster, &[]);
    let b = node(dir.path(), "b", &cluster, &[]);
    let hash = [0x5a; 20];

    // Peer 1 announces to A over HTTP.
    let first = http_announce("127.0.0.1:0", a.http, hash, 7001).unwrap();
    assert!(first.peers.is_empty(), "{first:?}");

    // Peer 2 gets its connection ID from A and announces with it to B over UDP: B accepts A's ID and
    // hands out peer 1.
    let mut udp = Udp::connect("127.0.0.2:0", a.udp);
    udp.tracker = b.udp;
    match udp.announce(announce(hash, 2, 7002, Event::Started), b"") {
        Some(Response::Announce {
            peers, leechers, ..
        }) => {
            assert_eq!(peers, vec![SocketAddr::from(([127, 0, 0, 1], 7001))]);
            assert_eq!(leechers, 2);
        }
        other => panic!("B refused or ignored a connection ID from A: {other:?}"),
    }

    // Peer 3 announces to B over HTTP and gets both (from B's view of the swarm, which its write joins
    // with B's next flush).
    let third = http_announce("127.0.0.3:0", b.http, hash, 7003).unwrap();
    let mut got = addrs(&third);
    got.sort();
    assert_eq!(
        got,
        vec![
            SocketAddr::from(([127, 0, 0, 1], 7001)),
            SocketAddr::from(([127, 0, 0, 2], 7002))
        ]
    );
    assert!(third.incomplete >= 2, "{third:?}");

    // A scrape on A counts the peers B learned, within the staleness bound (view TTL + flush: 3 s).
    let scrape_a = || {
        let (_, body) = get_from(
            "127.0.0.1:0",
            a.http,
            &format!(
                "/scrape?{}",
                proto::encode_scrape(&[tracker_proto::InfoHash(hash)])
            ),
        )
        .unwrap();
        proto::ScrapeResponse::decode(&body).unwrap().files[0].1
    };
    let since = Instant::now();
    while scrape_a().leechers != 3 {
        assert!(since.elapsed() < BOUND, "A's scrape: {:?}", scrape_a());
        std::thread::sleep(Duration::from_millis(50));
    }

    // A stopped peer leaves the swarm for every node.
    let mut stop = announce(hash, 2, 7002, Event::Stopped);
    stop.left = 1;
    udp.announce(stop, b"").unwrap();
    let since = Instant::now();
    loop {
        let fourth = http_announce("127.0.0.4:0", a.http, hash, 7004).unwrap();
        if !addrs(&fourth).contains(&SocketAddr::from(([127, 0, 0, 2], 7002))) {
            break;
        }
        assert!(since.elapsed() < BOUND, "{fourth:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unreachable_cluster_at_start_is_a_clear_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spore"))
        .args([
            "tracker",
            "--http",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--cluster",
            &format!("redis://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Exit code 2, as for every error of the tracker's start (a port taken, a bad certificate).
    assert_eq!(out.status.code(), Some(2), "started without its cluster");
    assert!(
        stderr.contains("cluster") && stderr.contains(&port.to_string()),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A UDP announce for swarm `i` from `udp`: whether it was answered with peers and counts.
fn udp_announce_ok(udp: &Udp, i: u8, port: u16) -> bool {
    matches!(
        udp.announce(announce([i; 20], 1, port, Event::None), b""),
        Some(Response::Announce { .. })
    )
}

#[test]
fn announces_are_answered_again_after_a_master_fails_over_and_no_node_crashes() {
    if !redis_cluster::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = RedisCluster::start(dir.path());
    let mut a = node(dir.path(), "a", &cluster, &[]);
    let udp = Udp::connect("127.0.0.5:0", a.udp);
    // 30 swarms: with 16384 slots over three masters, every master holds some of them.
    for i in 0..30 {
        assert!(
            udp_announce_ok(&udp, i, 6000),
            "swarm {i} before the failover"
        );
    }

    let victim = cluster.a_master();
    cluster.kill(victim);
    let killed = Instant::now();
    let (mut failures, mut answered) = (0usize, 0usize);
    // Rounds over every swarm until one round is answered in full after the failover.
    loop {
        let mut round_failed = 0;
        for i in 0..30 {
            if udp_announce_ok(&udp, i, 6000) {
                answered += 1;
            } else {
                round_failed += 1;
            }
        }
        failures += round_failed;
        // Past the view's time to live (1.5 s) and a flush, so the victim's swarms were answered by
        // the cluster after the failover, not from views filled before the kill.
        if round_failed == 0 && killed.elapsed() > Duration::from_secs(4) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "announces still failing {:?} after killing a master ({failures} failed); cluster: {:?}",
            killed.elapsed(),
            redis_cluster::cli(cluster.nodes[(victim + 1) % 6].port, &["cluster", "nodes"])
        );
        assert!(
            a.proc.child.try_wait().unwrap().is_none(),
            "the tracker exited"
        );
    }
    eprintln!(
        "failover: {failures} announces failed, {answered} answered, all answered again {:?} after the kill",
        killed.elapsed()
    );
    assert!(
        a.proc.child.try_wait().unwrap().is_none(),
        "the tracker exited"
    );
    assert_eq!(metric(a.http, "spore_tracker_cluster_up"), Some(1));
    let stderr = std::fs::read_to_string(dir.path().join("a/tracker.err")).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    // One line per change of state, never one per failed request.
    let lost = stderr.matches("cluster lost").count();
    let back = stderr.matches("cluster reachable again").count();
    assert!(
        lost == back && lost <= 3,
        "{lost} lost, {back} back:\n{stderr}"
    );
    a.proc.terminate();
    assert!(a.proc.wait_exit(Duration::from_secs(15)).success());
}

/// `spore tracker user ...` on the cluster: its stdout.
fn users_cli(cluster: &RedisCluster, args: &[&str]) -> String {
    let url = cluster.url();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["tracker", "user"])
        .args(args)
        .args(["--cluster", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_private_user_added_through_the_cluster_announces_on_every_node_within_a_second() {
    if !redis_cluster::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(dir.path());
    let private = ["--mode", "private"];
    let a = node(dir.path(), "a", &cluster, &private);
    let b = node(dir.path(), "b", &cluster, &private);
    let hash = [0x42; 20];
    let passkey = users_cli(&cluster, &["add", "alice"]).trim().to_string();
    let added = Instant::now();
    assert_eq!(passkey.len(), 32, "{passkey:?}");
    let path = format!("/announce/{passkey}");

    // Node B knows alice within a second of her being added (through the cluster, not through B).
    let mut request = announce(hash, 1, 7101, Event::Started);
    request.uploaded = 1000;
    let udp = Udp::connect("127.0.0.6:0", b.udp);
    let answered = loop {
        match udp.announce(request.clone(), path.as_bytes()) {
            Some(Response::Announce { .. }) => break added.elapsed(),
            Some(Response::Error { message, .. }) => assert_eq!(message, "unknown passkey"),
            other => panic!("{other:?}"),
        }
        assert!(
            added.elapsed() < Duration::from_secs(3),
            "node B still refuses alice {:?} after she was added",
            added.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("alice announced on node B {answered:?} after being added");
    assert!(answered < Duration::from_secs(1), "{answered:?}");

    // And node A over HTTP; an unknown passkey is refused.
    let q = proto::encode_announce(&HttpAnnounce {
        announce: announce(hash, 2, 7102, Event::Started),
        compact: true,
        no_peer_id: true,
        tracker_id: None,
    });
    let (_, body) = get_from("127.0.0.7:0", a.http, &format!("{path}?{q}")).unwrap();
    let reply = AnnounceResponse::decode(&body).unwrap();
    assert_eq!(
        addrs(&reply),
        vec![SocketAddr::from(([127, 0, 0, 6], 7101))]
    );
    let (_, body) = get_from(
        "127.0.0.7:0",
        a.http,
        &format!("/announce/{}?{q}", "0".repeat(32)),
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&body).contains("unknown passkey"));

    // Totals reported to B reach the cluster's list.
    let mut later = announce(hash, 1, 7101, Event::None);
    later.uploaded = 5000;
    assert!(matches!(
        udp.announce(later, path.as_bytes()),
        Some(Response::Announce { .. })
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = users_cli(&cluster, &["list", "--json"]);
        if list.contains("\"uploaded\":4000") {
            assert!(list.contains("alice"), "{list}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "totals not in the cluster: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Revoked through the cluster, refused by both nodes soon after.
    users_cli(&cluster, &["revoke", "alice"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(
        udp.announce(announce(hash, 1, 7101, Event::None), path.as_bytes()),
        Some(Response::Error { .. })
    ) {
        assert!(
            Instant::now() < deadline,
            "alice still announces after revoke"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_that_loses_the_cluster_refuses_or_answers_from_its_own_view_as_configured() {
    if !redis_cluster::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = RedisCluster::start(dir.path());
    std::fs::write(
        dir.path().join("local.toml"),
        "cluster_fallback = \"local\"\n",
    )
    .unwrap();
    let local_config = dir.path().join("local.toml");
    let local = node(
        dir.path(),
        "local",
        &cluster,
        &["--config", local_config.to_str().unwrap()],
    );
    let refuse = node(dir.path(), "refuse", &cluster, &[]);
    let hash = [0x11; 20];
    http_announce("127.0.0.8:0", local.http, hash, 7201).unwrap();
    http_announce("127.0.0.9:0", refuse.http, hash, 7202).unwrap();

    for i in 0..cluster.nodes.len() {
        cluster.kill(i);
    }
    // The local node answers from the peers that announced to it; the other gives a failure reason.
    let reply = http_announce("127.0.0.10:0", local.http, hash, 7203).unwrap();
    assert_eq!(
        addrs(&reply),
        vec![SocketAddr::from(([127, 0, 0, 8], 7201))]
    );
    // The refusing node answers from its view while it is fresh, and refuses once a request to the
    // cluster failed (its next flush, or a swarm its view does not hold).
    let q = proto::encode_announce(&HttpAnnounce {
        announce: announce(hash, 4, 7204, Event::Started),
        compact: true,
        no_peer_id: true,
        tracker_id: None,
    });
    let since = Instant::now();
    loop {
        let (_, body) = get_from("127.0.0.11:0", refuse.http, &format!("/announce?{q}")).unwrap();
        let body = String::from_utf8_lossy(&body).into_owned();
        if body.contains("failure reason") {
            assert!(body.contains("unavailable"), "{body}");
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(10), "{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Over UDP too, with a reply rather than silence.
    let udp = Udp::connect("127.0.0.12:0", refuse.udp);
    match udp.announce(announce(hash, 5, 7205, Event::None), b"") {
        Some(Response::Error { message, .. }) => assert!(message.contains("unavailable")),
        other => panic!("{other:?}"),
    }
    let udp = Udp::connect("127.0.0.13:0", local.udp);
    assert!(matches!(
        udp.announce(announce(hash, 6, 7206, Event::None), b""),
        Some(Response::Announce { .. })
    ));
    for (t, name) in [(&local, "local"), (&refuse, "refuse")] {
        assert_eq!(
            metric(t.http, "spore_tracker_cluster_up"),
            Some(0),
            "{name}"
        );
        let stderr = std::fs::read_to_string(dir.path().join(name).join("tracker.err")).unwrap();
        assert_eq!(stderr.matches("cluster lost").count(), 1, "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn libtorrent_finds_its_peer_when_seed_and_downloader_announce_to_different_nodes() {
    if !redis_cluster::available() || !libtorrent_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = RedisCluster::start(d);
    let a = node(d, "a", &cluster, &[]);
    let b = node(d, "b", &cluster, &[]);
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/file.bin"), data(17, 3 << 20)).unwrap();
    // The same content, so the same info-hash, announced to node A over HTTP and node B over UDP.
    let via_a = d.join("a.torrent");
    let via_b = d.join("b.torrent");
    create_torrent(
        &d.join("seed/file.bin"),
        &via_a,
        "262144",
        Some(&format!("http://{}/announce", a.http)),
    );
    create_torrent(
        &d.join("seed/file.bin"),
        &via_b,
        "262144",
        Some(&format!("udp://{}/announce", b.udp)),
    );
    let seed = lt_peer(
        "seed",
        &via_a,
        &d.join("seed"),
        "127.0.0.22",
        &d.join("seed.err"),
    );
    seed.wait_for("\"done\"", T);
    let get = lt_peer(
        "get",
        &via_b,
        &d.join("got"),
        "127.0.0.23",
        &d.join("get.err"),
    );
    get.wait_for("\"done\"", T);
    assert_eq!(
        sha256(&d.join("got/file.bin")),
        sha256(&d.join("seed/file.bin"))
    );
}

#[test]
fn peers_past_the_timeout_are_no_longer_handed_out_by_any_node() {
    if !redis_cluster::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(dir.path());
    std::fs::write(dir.path().join("short.toml"), "peer_timeout = 2\n").unwrap();
    let config = dir.path().join("short.toml");
    let a = node(
        dir.path(),
        "a",
        &cluster,
        &["--config", config.to_str().unwrap()],
    );
    let b = node(
        dir.path(),
        "b",
        &cluster,
        &["--config", config.to_str().unwrap()],
    );
    let hash = [0x77; 20];
    http_announce("127.0.0.30:0", a.http, hash, 7301).unwrap();
    let announced = Instant::now();
    let silent = SocketAddr::from(([127, 0, 0, 30], 7301));
    // Handed out while fresh, then gone once two seconds have passed, with no sweep on any node.
    let fresh = http_announce("127.0.0.31:0", b.http, hash, 7302).unwrap();
    if announced.elapsed() < Duration::from_secs(1) {
        assert!(addrs(&fresh).contains(&silent), "{fresh:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http_announce("127.0.0.32:0", b.http, hash, 7303).unwrap();
        if !addrs(&r).contains(&silent) {
            assert!(announced.elapsed() >= Duration::from_secs(1), "{r:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an expired peer still handed out"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_source_creates_no_more_swarms_in_the_cluster_than_its_creation_limit() {
    if !redis_cluster::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(dir.path());
    std::fs::write(
        dir.path().join("limit.toml"),
        "swarm_creation_burst = 3\nswarm_creation_per_minute = 1\n",
    )
    .unwrap();
    let config = dir.path().join("limit.toml");
    let a = node(
        dir.path(),
        "a",
        &cluster,
        &["--config", config.to_str().unwrap()],
    );
    let b = node(dir.path(), "b", &cluster, &[]);
    // One source announces ten new swarms to A: three are created in the cluster, the rest are not.
    let flood = Udp::connect("127.0.0.50:0", a.udp);
    for i in 0..10u8 {
        flood.announce(announce([0xc0 + i; 20], 1, 7400, Event::Started), b"");
    }
    let mut tracked = 0;
    for i in 0..10u8 {
        let r = http_announce("127.0.0.51:0", b.http, [0xc0 + i; 20], 7401).unwrap();
        if addrs(&r).contains(&SocketAddr::from(([127, 0, 0, 50], 7400))) {
            tracked += 1;
        }
    }
    assert_eq!(tracked, 3, "swarms the flood created in the cluster");
    // A swarm another node created is not new: the same source still joins it through A (whose view
    // of it, empty, was not kept).
    let joined = Udp::connect("127.0.0.50:0", a.udp);
    match joined.announce(announce([0xc9; 20], 1, 7402, Event::Started), b"") {
        Some(Response::Announce { peers, .. }) => {
            assert_eq!(peers, vec![SocketAddr::from(([127, 0, 0, 51], 7401))])
        }
        other => panic!("{other:?}"),
    }
}

/// A UDP re-announce (no event) of `udp`'s peer: the peers handed out.
fn reannounce(udp: &Udp, hash: [u8; 20], id: u8, port: u16) -> Vec<SocketAddr> {
    match udp.announce(announce(hash, id, port, Event::None), b"") {
        Some(Response::Announce { peers, .. }) => peers,
        other => panic!("{other:?}"),
    }
}

/// Re-announces `udp`'s peer every 20 ms until `wanted` is handed out; how long that took.
fn until_handed_out(udp: &Udp, hash: [u8; 20], wanted: SocketAddr, limit: Duration) -> Duration {
    let started = Instant::now();
    while !reannounce(udp, hash, 1, 7600).contains(&wanted) {
        assert!(
            started.elapsed() < limit,
            "{wanted} not handed out within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

#[test]
fn a_node_answering_from_its_view_hands_out_new_peers_within_the_staleness_bound() {
    if !redis_cluster::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(dir.path());
    let (ttl, flush) = (Duration::from_millis(2000), Duration::from_millis(500));
    std::fs::write(
        dir.path().join("view.toml"),
        format!(
            "cluster_view_ttl_ms = {}\ncluster_flush_interval_ms = {}\n",
            ttl.as_millis(),
            flush.as_millis()
        ),
    )
    .unwrap();
    let config = dir.path().join("view.toml");
    let config = ["--config", config.to_str().unwrap()];
    let a = node(dir.path(), "a", &cluster, &config);
    let b = node(dir.path(), "b", &cluster, &config);
    let hash = [0x3c; 20];
    // X joins through B and keeps re-announcing there, so B answers it from its view of the swarm.
    let x = Udp::connect("127.0.0.60:0", b.udp);
    assert!(matches!(
        x.announce(announce(hash, 1, 7600, Event::Started), b""),
        Some(Response::Announce { .. })
    ));
    reannounce(&x, hash, 1, 7600);
    assert!(metric(b.http, "spore_tracker_cluster_view_answers_total") >= Some(1));
    // The documented bound: a write reaches the cluster within a flush interval, and another node's
    // view is at most its time to live old; one second more for this loaded machine.
    let bound = ttl + flush + Duration::from_secs(1);

    // Y joins through A (A holds no view of the swarm yet, so the join goes to the cluster at once):
    // B's view shows it within its TTL.
    let y = Udp::connect("127.0.0.61:0", a.udp);
    assert!(matches!(
        y.announce(announce(hash, 2, 7601, Event::Started), b""),
        Some(Response::Announce { .. })
    ));
    let join = until_handed_out(&x, hash, SocketAddr::from(([127, 0, 0, 61], 7601)), bound);

    // Z's first announce to A is answered from A's view: its write is queued, and reaches B through
    // A's flush and B's refreshed view.
    let before = metric(a.http, "spore_tracker_cluster_view_answers_total").unwrap_or(0);
    reannounce(&y, hash, 2, 7601);
    let z = Udp::connect("127.0.0.62:0", a.udp);
    reannounce(&z, hash, 3, 7602);
    let after = metric(a.http, "spore_tracker_cluster_view_answers_total").unwrap_or(0);
    assert!(after > before, "A answered neither from its view");
    let refresh = until_handed_out(&x, hash, SocketAddr::from(([127, 0, 0, 62], 7602)), bound);
    eprintln!(
        "staleness: a join at A handed out by B after {join:?}; a queued re-announce at A after \
         {refresh:?} (bound {bound:?})"
    );
    for t in [&a, &b] {
        assert_eq!(
            metric(t.http, "spore_tracker_cluster_writes_lost_total"),
            Some(0)
        );
    }
}

/// A UDP announce of `hash` to `tracker` from `local`: None if answered, else the failure reason.
fn refusal(local: &str, tracker: SocketAddr, hash: [u8; 20]) -> Option<String> {
    match Udp::connect(local, tracker).announce(announce(hash, 1, 7700, Event::Started), b"") {
        Some(Response::Announce { .. }) => None,
        Some(Response::Error { message, .. }) => Some(message),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_list_file_reloaded_on_one_node_is_honoured_by_another_within_two_seconds() {
    if !redis_cluster::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(dir.path());
    let (h1, h2) = ([0x21; 20], [0x22; 20]);
    let list = dir.path().join("allow.list");
    std::fs::write(&list, format!("{}\n", "21".repeat(20))).unwrap();
    let a = node(
        dir.path(),
        "a",
        &cluster,
        &["--mode", "allow", "--list", list.to_str().unwrap()],
    );
    // B has no list file of its own: it uses the cluster's.
    let b = node(dir.path(), "b", &cluster, &["--mode", "allow"]);
    assert_eq!(refusal("127.0.0.70:0", b.udp, h1), None);
    let refused = refusal("127.0.0.70:0", b.udp, h2);
    assert!(
        refused
            .as_deref()
            .is_some_and(|m| m.contains("not registered")),
        "{refused:?}"
    );

    // H2 added and H1 removed on A, re-read on SIGHUP: B follows.
    std::fs::write(&list, format!("{}\n", "22".repeat(20))).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &a.proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let reloaded = Instant::now();
    while refusal("127.0.0.71:0", b.udp, h2).is_some() {
        assert!(
            reloaded.elapsed() < Duration::from_secs(5),
            "B still refuses a hash A's list now allows"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let allowed = reloaded.elapsed();
    assert!(
        refusal("127.0.0.71:0", b.udp, h1).is_some(),
        "H1 was removed"
    );
    eprintln!("B honoured A's reloaded list {allowed:?} after the SIGHUP");
    assert!(allowed < Duration::from_secs(2), "{allowed:?}");
    assert_eq!(refusal("127.0.0.72:0", a.udp, h2), None);
}

/// An HTTP load balancer standing for DNS round robin: each client's announces go to the nodes in turn,
/// one request per connection (a client keeping its connection alive has it closed after each reply),
/// from a socket on the client's own IP address (so the nodes see the client's address, as behind a
/// transparent balancer). Records which node got each announce.
struct Alternator {
    addr: SocketAddr,
    /// (client IP, node index) of every announce forwarded.
    announces: std::sync::Arc<std::sync::Mutex<Vec<(std::net::IpAddr, usize)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Alternator {
    fn start(nodes: [SocketAddr; 2]) -> Alternator {
        use std::collections::HashMap;
        use std::io::{Read, Write};
        use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let announces = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, done) = (announces.clone(), stop.clone());
        let turns: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let Ok((mut client, from)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let (log, turns) = (log.clone(), turns.clone());
                std::thread::spawn(move || {
                    let _ = client.set_nonblocking(false);
                    let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
                    // The request's head (a GET has no body).
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
                        match client.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let announce = head.starts_with(b"GET /announce");
                    let node = if announce {
                        let mut turns = turns.lock().unwrap();
                        // Clients on even addresses start at node 0, on odd ones at node 1.
                        let first = match from.ip() {
                            IpAddr::V4(v4) => usize::from(v4.octets()[3] % 2),
                            IpAddr::V6(_) => 0,
                        };
                        let turn = turns.entry(from.ip()).or_insert(first);
                        let node = *turn;
                        *turn = 1 - node;
                        log.lock().unwrap().push((from.ip(), node));
                        node
                    } else {
                        0
                    };
                    let socket =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                            .unwrap();
                    if socket
                        .bind(&SocketAddr::new(from.ip(), 0).into())
                        .and_then(|()| socket.connect(&nodes[node].into()))
                        .is_err()
                    {
                        return;
                    }
                    let mut upstream: TcpStream = socket.into();
                    // HTTP/1.0 upstream, so the node closes after its reply.
                    let head = String::from_utf8_lossy(&head).replacen(
                        " HTTP/1.1\r\n",
                        " HTTP/1.0\r\n",
                        1,
                    );
                    let mut reply = Vec::new();
                    if upstream.write_all(head.as_bytes()).is_ok()
                        && upstream.read_to_end(&mut reply).is_ok()
                    {
                        let _ = client.write_all(&reply);
                    }
                    let _ = client.shutdown(Shutdown::Both);
                });
            }
        });
        Alternator {
            addr,
            announces,
            stop,
        }
    }

    /// Nodes that got announces from `ip`, in order.
    fn nodes_of(&self, ip: [u8; 4]) -> Vec<usize> {
        let ip = std::net::IpAddr::from(ip);
        let log = self.announces.lock().unwrap();
        log.iter()
            .filter(|(a, _)| *a == ip)
            .map(|(_, n)| *n)
            .collect()
    }
}

impl Drop for Alternator {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn aria2_finds_a_libtorrent_seed_while_its_announces_alternate_between_nodes() {
    if !redis_cluster::available() || !libtorrent_available() {
        return;
    }
    let aria2 = std::process::Command::new("aria2c")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !aria2 {
        assert!(std::env::var("CI").is_err(), "aria2c is needed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = RedisCluster::start(d);
    std::fs::write(d.join("short.toml"), "interval = 1\nmin_interval = 1\n").unwrap();
    let config = d.join("short.toml");
    let config = ["--config", config.to_str().unwrap()];
    let a = node(d, "a", &cluster, &config);
    let b = node(d, "b", &cluster, &config);
    let balancer = Alternator::start([a.http, b.http]);
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/file.bin"), data(23, 2 << 20)).unwrap();
    let torrent = d.join("t.torrent");
    create_torrent(
        &d.join("seed/file.bin"),
        &torrent,
        "262144",
        Some(&format!("http://{}/announce", balancer.addr)),
    );
    let (seed_ip, get_ip) = ([127, 0, 0, 40], [127, 0, 0, 41]);

    // aria2 (starting at node 1) announces every second, alternating, to an empty swarm first.
    let port = std::net::TcpListener::bind("127.0.0.41:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut get = std::process::Command::new("aria2c");
    get.args([
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        "--interface=127.0.0.41",
        &format!("--listen-port={port}"),
        "--bt-tracker-interval=1",
        "--file-allocation=none",
        "--summary-interval=0",
        "--seed-time=0",
        &format!("--log={}", d.join("aria2.log").display()),
        "--log-level=info",
        &format!("--stop-with-process={}", std::process::id()),
        "-d",
        d.join("got").to_str().unwrap(),
        torrent.to_str().unwrap(),
    ]);
    let mut get = Proc::spawn(get, d.join("aria2.err"));
    let started = Instant::now();
    while balancer.nodes_of(get_ip).len() < 2 {
        assert!(
            started.elapsed() < T,
            "aria2 did not announce twice through the balancer: {}",
            std::fs::read_to_string(d.join("aria2.log")).unwrap_or_default()
        );
        assert!(get.child.try_wait().unwrap().is_none(), "aria2 exited");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The libtorrent seed (starting at node 0) joins; aria2 finds it through either node.
    let seed = lt_peer(
        "seed",
        &torrent,
        &d.join("seed"),
        "127.0.0.40",
        &d.join("seed.err"),
    );
    seed.wait_for("\"done\"", T);
    let status = get.wait_exit(T);
    assert!(status.success(), "aria2 failed: {status:?}");
    assert_eq!(
        sha256(&d.join("got/file.bin")),
        sha256(&d.join("seed/file.bin"))
    );
    let (seed_nodes, get_nodes) = (balancer.nodes_of(seed_ip), balancer.nodes_of(get_ip));
    eprintln!("announces: seed to nodes {seed_nodes:?}, aria2 to nodes {get_nodes:?}");
    assert_eq!(seed_nodes.first(), Some(&0), "the seed announced to node A");
    assert!(
        get_nodes.contains(&0) && get_nodes.contains(&1) && get_nodes[0] == 1,
        "aria2's announces alternated between the nodes, from B: {get_nodes:?}"
    );
}

#[test]
fn scrapes_are_answered_from_a_fresh_view_and_from_the_cluster_otherwise() {
    if !redis_cluster::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(dir.path());
    let a = node(dir.path(), "a", &cluster, &[]);
    let b = node(dir.path(), "b", &cluster, &[]);
    let (hot, cold) = ([0x91; 20], [0x92; 20]);
    // Two peers in each swarm, through B; one completes in the hot swarm.
    let udp = Udp::connect("127.0.0.80:0", b.udp);
    for (hash, id) in [(hot, 1), (hot, 2), (cold, 3), (cold, 4)] {
        udp.announce(
            announce(hash, id, 7800 + u16::from(id), Event::Started),
            b"",
        )
        .unwrap();
    }
    let mut done = announce(hot, 1, 7801, Event::Completed);
    done.left = 0;
    udp.announce(done, b"").unwrap();
    // B answered most of these from its view; its flush writes them to the cluster.
    // A swarm is one sorted set; its IPv4 seeders are scored in [2^32, 2^33), its IPv4 leechers in
    // [2^33, 3 * 2^32) (see tracker::cluster).
    let in_band = |hash: [u8; 20], band: u64| {
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        let key = format!("{{{hex}}}:p");
        let (from, to) = (band << 32, format!("({}", (band + 1) << 32));
        redis_cluster::cli(
            cluster.nodes[0].port,
            &["-c", "zcount", &key, &from.to_string(), &to],
        )
        .and_then(|o| o.trim().parse::<u32>().ok())
    };
    let since = Instant::now();
    while in_band(hot, 1) != Some(1) || in_band(cold, 2) != Some(2) {
        assert!(
            since.elapsed() < BOUND,
            "B's writes did not reach the cluster"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A announces to the hot swarm, so it holds a fresh view of it, not of the cold one.
    let local = Udp::connect("127.0.0.81:0", a.udp);
    local
        .announce(announce(hot, 5, 7805, Event::Started), b"")
        .unwrap();
    let before = metric(a.http, "spore_tracker_cluster_view_scrapes_total").unwrap_or(0);
    let calls = metric(a.http, "spore_tracker_cluster_requests_total").unwrap();
    let scrape = |udp: &Udp| match udp.scrape(&[hot, cold]) {
        Some(Response::Scrape { stats, .. }) => stats,
        other => panic!("{other:?}"),
    };
    let stats = scrape(&local);
    // Hot: 127.0.0.80's two peers (one now a seeder) and A's own; cold: B's two leechers.
    assert_eq!(
        [
            (stats[0].seeders, stats[0].leechers, stats[0].completed),
            (stats[1].seeders, stats[1].leechers, stats[1].completed)
        ],
        [(1, 2, 1), (0, 2, 0)],
        "{stats:?}"
    );
    assert_eq!(
        metric(a.http, "spore_tracker_cluster_view_scrapes_total"),
        Some(before + 1),
        "the hot swarm from the view"
    );
    assert_eq!(
        metric(a.http, "spore_tracker_cluster_requests_total"),
        Some(calls + 1),
        "the cold one from the cluster"
    );
    // Over HTTP too; the cold swarm is now in the view (its scrape's counts), so no call at all.
    let (_, body) = get_from(
        "127.0.0.81:0",
        a.http,
        &format!(
            "/scrape?{}",
            proto::encode_scrape(&[tracker_proto::InfoHash(hot), tracker_proto::InfoHash(cold)])
        ),
    )
    .unwrap();
    let files = proto::ScrapeResponse::decode(&body).unwrap().files;
    assert_eq!(files[0].1.leechers, 2, "{files:?}");
    assert_eq!(files[1].1.leechers, 2, "{files:?}");
    assert_eq!(
        metric(a.http, "spore_tracker_cluster_requests_total"),
        Some(calls + 1)
    );
    // Past the view's time to live a scrape goes to the cluster again and sees what changed meanwhile.
    udp.announce(announce(cold, 6, 7806, Event::Started), b"")
        .unwrap();
    let since = Instant::now();
    while scrape(&local)[1].leechers != 3 {
        assert!(since.elapsed() < BOUND, "{:?}", scrape(&local));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(metric(a.http, "spore_tracker_cluster_requests_total") > Some(calls + 1));
}

#[test]
fn a_swarm_bigger_than_a_sample_is_counted_and_sampled_alike_on_every_node() {
    if !redis_cluster::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(dir.path());
    // No view: every announce is a step of the script (whose reads of small and big swarms are
    // checked against a redis-server of their own in `tracker::cluster`'s tests).
    std::fs::write(dir.path().join("noview.toml"), "cluster_view_ttl_ms = 0\n").unwrap();
    let config = dir.path().join("noview.toml");
    let config = ["--config", config.to_str().unwrap()];
    let a = node(dir.path(), "a", &cluster, &config);
    let b = node(dir.path(), "b", &cluster, &config);
    let hash = [0x5b; 20];
    // 80 peers through A: 30 seeders that completed, then 50 leechers.
    let udp = Udp::connect("127.0.0.90:0", a.udp);
    for i in 0..80u16 {
        let mut a = announce(hash, 1, 9000 + i, Event::Started);
        if i < 30 {
            a.left = 0;
            a.event = Event::Completed;
        }
        assert!(matches!(
            udp.announce(a, b""),
            Some(Response::Announce { .. })
        ));
    }
    // One leecher leaves, one becomes a seeder.
    udp.announce(announce(hash, 1, 9079, Event::Stopped), b"")
        .unwrap();
    let mut done = announce(hash, 1, 9078, Event::Completed);
    done.left = 0;
    udp.announce(done, b"").unwrap();
    // B (another node, no view) sees the same swarm: 31 seeders, 48 leechers and itself, 31
    // completions; it hands out as many distinct peers as asked for, never itself.
    let other = Udp::connect("127.0.0.91:0", b.udp);
    let mut mine = announce(hash, 2, 9500, Event::Started);
    mine.numwant = Some(45);
    match other.announce(mine, b"") {
        Some(Response::Announce {
            seeders,
            leechers,
            peers,
            ..
        }) => {
            assert_eq!((seeders, leechers), (31, 49));
            let mut distinct = peers.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!((peers.len(), distinct.len()), (45, 45), "{peers:?}");
            assert!(!peers.contains(&SocketAddr::from(([127, 0, 0, 91], 9500))));
            assert!(!peers.contains(&SocketAddr::from(([127, 0, 0, 90], 9079))));
        }
        other => panic!("{other:?}"),
    }
    match other.scrape(&[hash]) {
        Some(Response::Scrape { stats, .. }) => {
            assert_eq!(
                (stats[0].seeders, stats[0].leechers, stats[0].completed),
                (31, 49, 31)
            );
        }
        other => panic!("{other:?}"),
    }
}
