//! The engine's tracker client against Spore's tracker on loopback, over HTTP and UDP.

use engine::tracker::{announce, scrape};
use tracker_proto::{Announce, Event};

fn params(peer: u8, port: u16, left: u64) -> Announce {
    Announce {
        info_hash: engine::InfoHash([0x42; 20]),
        peer_id: engine::PeerId([peer; 20]),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event: Event::Started,
        numwant: Some(50),
        key: Some(1),
        ip: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announce_and_scrape_over_http_and_udp() {
    let running = tracker::start(tracker::Config {
        http: "127.0.0.1:0".into(),
        udp: "127.0.0.1:0".into(),
        udp_workers: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let http = format!("http://{}/announce", running.http_addr.unwrap());
    let udp = format!("udp://{}/announce", running.udp_addr.unwrap());
    let bind = Some("127.0.0.5".parse().unwrap());

    let first = announce(&http, &params(1, 7001, 0), "127.0.0.5".parse().unwrap())
        .await
        .unwrap();
    assert!(first.peers.is_empty());
    let second = announce(&udp, &params(2, 7002, 10), "127.0.0.6".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        second.peers,
        vec!["127.0.0.5:7001".parse().unwrap()],
        "announces come from the bind address"
    );
    assert_eq!((second.seeders, second.leechers), (1, 1));
    assert_eq!(second.interval.as_secs(), 1800);

    for url in [&http, &udp] {
        let stats = scrape(
            url,
            &[engine::InfoHash([0x42; 20]), engine::InfoHash([0; 20])],
            bind,
        )
        .await
        .unwrap();
        assert_eq!((stats[0].seeders, stats[0].leechers), (1, 1), "{url}");
        assert_eq!(stats[1], Default::default());
    }
    assert!(announce(
        "udp://127.0.0.1:9/announce",
        &params(3, 1, 1),
        "0.0.0.0".parse().unwrap()
    )
    .await
    .is_err());
    running.shutdown().await;
}
