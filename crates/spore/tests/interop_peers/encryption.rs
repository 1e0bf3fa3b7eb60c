//! Message Stream Encryption (issue 14) against libtorrent with encryption forced (rc4 only),
//! Transmission with encryption required and aria2 requiring arc4, in both directions; a plaintext
//! peer refused by `--encryption require`; two Spores with the default `prefer` encrypting.
//! Addresses 127.0.0.181 and up.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::*;

/// Whether Spore's log (its stderr, SPORE_LOG=debug) shows a connection it dialled encrypted.
fn saw_encrypted_peer(ctx: &Ctx, label: &str) -> bool {
    let log = std::fs::read_to_string(ctx.path(&format!("{label}.err"))).unwrap_or_default();
    log.lines()
        .any(|l| l.contains(": dialled over") && l.contains(", encrypted"))
}

fn small_fixture(ctx: &Ctx, tag: &str, tracker: &Tracker) -> Fixture {
    fixture(
        ctx,
        tag,
        "secret.bin",
        false,
        &[("secret.bin", 6 * 1024 * 1024 + 777)],
        &[&tracker.http],
        "256K",
        "--v1",
    )
}

fn get_completes(ctx: &Ctx, fx: &Fixture, dl: &Path, get: &mut Peer) {
    get.wait_for(ctx, &format!("complete: {}", fx.name));
    ctx.step("spore get complete");
    let status = get.wait_exit(ctx);
    assert!(status.success(), "spore get exited with {status}");
    assert_files(ctx, fx, dl, None);
}

/// libtorrent with both encryption policies forced and rc4 only seeds; `spore get --encryption
/// require` downloads (it dials libtorrent, found through the tracker).
#[test]
fn libtorrent_forced_seeds_spore_require_downloads() {
    if !have_libtorrent() {
        return;
    }
    let ctx = Ctx::new("lt_forced_seeds_spore_require", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = small_fixture(&ctx, "e1", &tracker);
    let forced = ["--encryption", "forced"];
    let mut lt = libtorrent_with(&ctx, "seed", &fx, &fx.src, "127.0.0.181", &[], &forced);
    libtorrent_done(&ctx, &mut lt);
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(
        &ctx,
        &fx,
        &dl,
        "127.0.0.182",
        &["--no-seed", "--encryption", "require"],
    );
    get_completes(&ctx, &fx, &dl, &mut get);
    assert!(
        saw_encrypted_peer(&ctx, "spore-get"),
        "no encrypted connection in the log"
    );
}

/// `spore seed --encryption require`; libtorrent with encryption forced downloads (it dials Spore).
#[test]
fn spore_require_seeds_libtorrent_forced_downloads() {
    if !have_libtorrent() {
        return;
    }
    let ctx = Ctx::new("spore_require_seeds_lt_forced", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = small_fixture(&ctx, "e2", &tracker);
    let (mut seeder, _) = spore_seed(&ctx, &fx, "127.0.0.183", &["--encryption", "require"]);
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("lt-dl");
    let forced = ["--encryption", "forced"];
    let mut lt = libtorrent_with(&ctx, "get", &fx, &dl, "127.0.0.184", &[], &forced);
    libtorrent_done(&ctx, &mut lt);
    assert_files(&ctx, &fx, &dl, None);
    seeder.assert_alive(&ctx);
    let log = std::fs::read_to_string(ctx.path("spore-seed.err")).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains(": accepted over") && l.contains(", encrypted")),
        "no encrypted connection in the log"
    );
}

/// Transmission with encryption required (settings.json `"encryption": 2`) seeds to `spore get
/// --encryption require`, then `spore seed --encryption require` seeds to another such Transmission.
#[test]
fn transmission_required_both_ways() {
    if !have_transmission() {
        return;
    }
    let ctx = Ctx::new("transmission_required_both_ways", Duration::from_secs(150));
    let tracker = start_tracker(&ctx);
    let fx = small_fixture(&ctx, "e3", &tracker);
    let required = serde_json::json!({ "encryption": 2 });
    {
        let mut tr = transmission_with(&ctx, "127.0.0.185", required.clone());
        tr.add(&fx, &fx.src);
        tr.wait_ready(&ctx, true);
        let peer = tr.peer_addr.clone();
        let dl = ctx.path("spore-dl");
        let mut get = spore_get(
            &ctx,
            &fx,
            &dl,
            "127.0.0.186",
            &["--no-seed", "--encryption", "require", "--peer", &peer],
        );
        get_completes(&ctx, &fx, &dl, &mut get);
        assert!(
            saw_encrypted_peer(&ctx, "spore-get"),
            "no encrypted connection in the log"
        );
    }
    // The second daemon gets a configuration directory of its own.
    let ctx2 = Ctx::new("transmission_required_seed", ctx.left());
    let mut tr = transmission_with(&ctx2, "127.0.0.187", required);
    let dl = ctx2.path("tr-dl");
    tr.add(&fx, &dl);
    tr.wait_ready(&ctx2, false);
    let peer = tr.peer_addr.clone();
    let (mut seeder, _) = spore_seed(
        &ctx2,
        &fx,
        "127.0.0.188",
        &["--encryption", "require", "--peer", &peer],
    );
    tr.wait_complete(&ctx2);
    assert_files(&ctx2, &fx, &dl, None);
    seeder.assert_alive(&ctx2);
    assert!(
        saw_encrypted_peer(&ctx2, "spore-seed"),
        "no encrypted connection in the log"
    );
}

/// aria2 requiring encryption at arc4 level seeds to `spore get --encryption require`, and
/// downloads from `spore seed --encryption require`.
#[test]
fn aria2_require_crypto_both_ways() {
    if !have_aria2() {
        return;
    }
    let ctx = Ctx::new("aria2_require_crypto", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = small_fixture(&ctx, "e4", &tracker);
    let crypto = ["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"];
    {
        let _seeder = aria2_with(&ctx, "seed", &fx, &fx.src, "127.0.0.189", &crypto);
        tracker.wait_seeders(&ctx, &fx, 1);
        let dl = ctx.path("spore-dl");
        let mut get = spore_get(
            &ctx,
            &fx,
            &dl,
            "127.0.0.190",
            &["--no-seed", "--encryption", "require"],
        );
        get_completes(&ctx, &fx, &dl, &mut get);
        assert!(
            saw_encrypted_peer(&ctx, "spore-get"),
            "no encrypted connection in the log"
        );
    }
    let (mut seeder, _) = spore_seed(&ctx, &fx, "127.0.0.191", &["--encryption", "require"]);
    let dl = ctx.path("aria2-dl");
    let mut get = aria2_with(&ctx, "get", &fx, &dl, "127.0.0.192", &crypto);
    let status = get.wait_exit(&ctx);
    assert!(status.success(), "aria2c exited with {status}");
    assert_files(&ctx, &fx, &dl, None);
    seeder.assert_alive(&ctx);
}

/// A peer sending a plaintext BitTorrent handshake to `spore seed --encryption require` is closed
/// without an answer, and the log says who and why at info level.
#[test]
fn plaintext_peer_is_refused_by_require() {
    let ctx = Ctx::new("plaintext_refused_by_require", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = small_fixture(&ctx, "e5", &tracker);
    // Info level: the refusal must be visible without debug logging.
    let mut cmd = spore_cmd(&[
        "seed",
        s(&fx.torrent),
        "--data",
        s(&fx.src),
        "--listen",
        "127.0.0.193:0",
        "--no-dht",
        "--encryption",
        "require",
    ]);
    cmd.env("SPORE_LOG", "info");
    let mut seeder = Peer::spawn(&ctx, "spore-seed", cmd);
    let addr = seeder.listening(&ctx);
    seeder.wait_for(&ctx, "seeding ");
    let info =
        serde_json::from_str::<serde_json::Value>(&spore_out(&["info", "--json", s(&fx.torrent)]))
            .unwrap();
    let ih: Vec<u8> = (0..20)
        .map(|i| {
            u8::from_str_radix(
                &info["info_hash_v1"].as_str().unwrap()[2 * i..2 * i + 2],
                16,
            )
            .unwrap()
        })
        .collect();
    let local = std::net::SocketAddr::from(([127, 0, 0, 194], 0));
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&local.into()).unwrap();
    let target: std::net::SocketAddr = addr.parse().unwrap();
    socket.connect(&target.into()).unwrap();
    let mut conn: TcpStream = socket.into();
    let us = conn.local_addr().unwrap();
    let mut hs = Vec::with_capacity(68);
    hs.push(19u8);
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0u8; 8]);
    hs.extend_from_slice(&ih);
    hs.extend_from_slice(b"-XX0000-plaintext!!!");
    conn.write_all(&hs).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = [0u8; 68];
    // Closed without a byte of answer (end of file or reset).
    match conn.read(&mut reply) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("the seed answered {n} bytes to a plaintext handshake"),
    }
    let want = format!("peer {us}: refused a plaintext connection: encryption is required");
    ctx.poll("the refusal in the log", || {
        let log = std::fs::read_to_string(ctx.path("spore-seed.err")).unwrap_or_default();
        log.lines()
            .any(|l| l.contains("INFO") && l.contains(&want))
            .then_some(())
    });
    seeder.assert_alive(&ctx);
}

/// Two Spores with the default policy (`prefer`): the connection is encrypted.
#[test]
fn spore_to_spore_prefer_encrypts() {
    let ctx = Ctx::new("spore_to_spore_prefer", BUDGET);
    let tracker = start_tracker(&ctx);
    let fx = small_fixture(&ctx, "e6", &tracker);
    let (mut seeder, _) = spore_seed(&ctx, &fx, "127.0.0.195", &[]);
    tracker.wait_seeders(&ctx, &fx, 1);
    let dl = ctx.path("spore-dl");
    let mut get = spore_get(&ctx, &fx, &dl, "127.0.0.196", &["--no-seed"]);
    get_completes(&ctx, &fx, &dl, &mut get);
    assert!(
        saw_encrypted_peer(&ctx, "spore-get"),
        "no encrypted connection in the log"
    );
    seeder.assert_alive(&ctx);
}
