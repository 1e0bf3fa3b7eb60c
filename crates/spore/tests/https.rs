//! HTTPS end to end through the `spore` binary on loopback: `spore tracker --https` with a certificate
//! made at test time, a download that finds its seed only through that tracker, the same download
//! refused when the certificate is not trusted, and a `.torrent` fetched over a redirect from http to
//! https. Trust comes from `SSL_CERT_FILE`, as a user would set it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

mod common;
use common::*;

/// A CA and a server certificate it signed for 127.0.0.1 and localhost, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn pki(dir: &Path, name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("Spore test CA {name}"));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let p = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    };
    std::fs::write(&p.ca, ca_cert.pem()).unwrap();
    std::fs::write(&p.cert, cert.pem()).unwrap();
    std::fs::write(&p.key, key.serialize_pem()).unwrap();
    p
}

/// `spore ARGS` trusting only the CA in `ca` (None: an empty trust list is not what we want to test
/// by accident, so the caller always says which file).
fn spore_trusting(args: &[&str], ca: &Path, stderr: PathBuf) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spore"));
    command
        .args(args)
        .env_remove("SSL_CERT_DIR")
        .env("SSL_CERT_FILE", ca);
    Proc::spawn(command, stderr)
}

/// `spore tracker` with HTTPS (and plain HTTP, for the test to read /stats); returns the HTTPS
/// announce URL and the HTTP address.
fn https_tracker(dir: &Path, p: &Pki) -> (Proc, String, SocketAddr) {
    let tracker = Proc::start(
        &[
            "tracker",
            "--http",
            "127.0.0.1:0",
            "--udp",
            "off",
            "--https",
            "127.0.0.1:0",
            "--tls-cert",
            s(&p.cert),
            "--tls-key",
            s(&p.key),
        ],
        dir.join("tracker.err"),
    );
    let http = tracker.wait_for("tracker: HTTP on ", T);
    let http: SocketAddr = http
        .trim_start_matches("tracker: HTTP on http://")
        .trim_end_matches("/announce")
        .parse()
        .unwrap();
    let https = tracker.wait_for("tracker: HTTPS on ", T);
    let url = https.trim_start_matches("tracker: HTTPS on ").to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    (tracker, url, http)
}

/// A plain GET of `path` from `addr`, the body as text.
fn get_text(addr: SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

/// Waits until the tracker's /metrics satisfy `ok`, checking as each answer comes back.
fn wait_metrics(http: SocketAddr, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + T;
    loop {
        let text = get_text(http, "/metrics");
        if ok(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "tracker never had {what}: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A seeded torrent announcing only to `url`; the seed is trusting `ca` and has announced.
fn seeded(d: &Path, url: &str, ca: &Path, http: SocketAddr) -> Proc {
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/file.bin"), data(21, 700_000)).unwrap();
    create_torrent(
        &d.join("seed/file.bin"),
        &d.join("t.torrent"),
        "32K",
        Some(url),
    );
    let seeder = spore_trusting(
        &[
            "seed",
            s(&d.join("t.torrent")),
            "--data",
            s(&d.join("seed")),
            "--listen",
            "127.0.0.2:0",
        ],
        ca,
        d.join("seed.err"),
    );
    seeder.wait_for("seeding", T);
    // The seed is in the swarm only once its announce over TLS went through.
    wait_metrics(http, "the seed", |m| {
        metric(m, "spore_tracker_peers{state=\"seeder\"}") == 1
    });
    seeder
}

#[test]
fn a_download_finds_its_seed_through_an_https_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pki(d, "good");
    let (_tracker, url, http) = https_tracker(d, &p);
    let _seeder = seeded(d, &url, &p.ca, http);
    let mut getter = spore_trusting(
        &[
            "get",
            s(&d.join("t.torrent")),
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
        ],
        &p.ca,
        d.join("get.err"),
    );
    getter.wait_for("complete: file.bin", T);
    assert!(getter.wait_exit(T).success());
    assert_eq!(
        sha256(&d.join("dl/file.bin")),
        sha256(&d.join("seed/file.bin"))
    );
    let m = get_text(http, "/metrics");
    // Both announced over TLS (HTTPS announces count with HTTP ones) and no handshake failed.
    assert!(
        metric(&m, "spore_tracker_announces_total{protocol=\"http\"}") >= 2,
        "{m}"
    );
    assert_eq!(metric(&m, "spore_tracker_tls_failed_total"), 0, "{m}");
}

#[test]
fn an_untrusted_tracker_certificate_gives_no_peers_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pki(d, "good");
    let other = pki(d, "other");
    let (_tracker, url, http) = https_tracker(d, &p);
    let _seeder = seeded(d, &url, &p.ca, http);

    // Trusting another CA: the handshake fails, the tracker never sees an announce from it.
    let _getter = spore_trusting(
        &[
            "get",
            s(&d.join("t.torrent")),
            "-o",
            s(&d.join("dl")),
            "--listen",
            "127.0.0.3:0",
            "--no-seed",
        ],
        &other.ca,
        d.join("get.err"),
    );
    let err = wait_file(&d.join("get.err"), "certificate", T);
    assert!(err.contains(&url), "the error names the tracker: {err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    let m = wait_metrics(http, "a failed handshake", |m| {
        metric(m, "spore_tracker_tls_failed_total") >= 1
    });
    assert_eq!(
        metric(&m, "spore_tracker_peers{state=\"leecher\"}"),
        0,
        "{m}"
    );

    // Trusting nothing at all: one clear error, before any connection.
    let empty = d.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let _getter2 = spore_trusting(
        &[
            "get",
            s(&d.join("t.torrent")),
            "-o",
            s(&d.join("dl2")),
            "--listen",
            "127.0.0.4:0",
            "--no-seed",
        ],
        &empty,
        d.join("get2.err"),
    );
    let err = wait_file(&d.join("get2.err"), "no trusted root certificates", T);
    assert!(err.contains("SSL_CERT_FILE"), "{err}");
    let m = get_text(http, "/metrics");
    assert_eq!(
        metric(&m, "spore_tracker_peers{state=\"leecher\"}"),
        0,
        "{m}"
    );
    assert!(
        !d.join("dl/file.bin").exists()
            || sha256(&d.join("dl/file.bin")) != sha256(&d.join("seed/file.bin"))
    );
}

/// Serves `body` at `path` over TLS with `p`'s certificate; counts the requests it answered.
fn https_file_server(p: &Pki, path: &'static str, body: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(p.cert_der.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.key_der.clone())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let wanted = line.split_whitespace().nth(1) == Some(path);
                let head = if wanted {
                    count.fetch_add(1, Ordering::SeqCst);
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
                };
                let _ = tls.write_all(head.as_bytes()).await;
                if wanted {
                    let _ = tls.write_all(&body).await;
                }
                let _ = tls.shutdown().await;
            }
        });
    });
    (addr, served)
}

/// Answers every plain HTTP request with a 302 to `location`.
fn redirector(location: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
            );
        }
    });
    addr
}

#[test]
fn get_follows_an_http_url_redirected_to_https() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pki(d, "good");
    let other = pki(d, "other");
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/web.bin"), data(22, 300_000)).unwrap();
    create_torrent(&d.join("seed/web.bin"), &d.join("t.torrent"), "32K", None);
    let (tls, served) = https_file_server(
        &p,
        "/x.torrent",
        std::fs::read(d.join("t.torrent")).unwrap(),
    );
    let https_url = format!("https://127.0.0.1:{}/x.torrent", tls.port());
    let old = redirector(https_url);
    let (_seeder, peer) = start_seed(
        d,
        &d.join("t.torrent"),
        &d.join("seed"),
        "127.0.0.2:0",
        &["--no-trackers"],
    );
    let peer = peer.to_string();
    let url = format!("http://{old}/old/x.torrent");
    let args = |out: &str| {
        vec![
            "get".to_string(),
            url.clone(),
            "-o".into(),
            s(&d.join(out)).into(),
            "--listen".into(),
            "127.0.0.3:0".into(),
            "--no-seed".into(),
            "--no-trackers".into(),
            "--peer".into(),
            peer.clone(),
        ]
    };

    // Not trusting the file server's CA: the fetch fails, one line naming the certificate problem.
    let a = args("dl-untrusted");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut refused = spore_trusting(&a, &other.ca, d.join("refused.err"));
    let status = refused.wait_exit(T);
    assert_eq!(status.code(), Some(1));
    let err = std::fs::read_to_string(d.join("refused.err")).unwrap();
    assert!(err.contains("certificate"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(served.load(Ordering::SeqCst), 0);

    let a = args("dl");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut getter = spore_trusting(&a, &p.ca, d.join("get.err"));
    getter.wait_for("complete: web.bin", T);
    assert!(getter.wait_exit(T).success());
    assert_eq!(served.load(Ordering::SeqCst), 1, "fetched over https");
    assert_eq!(
        sha256(&d.join("dl/web.bin")),
        sha256(&d.join("seed/web.bin"))
    );
}

// ---------------------------------------------------------------------------------------------
// A real client against our TLS tracker: libtorrent (OpenSSL), which reads SSL_CERT_FILE too.

/// Whether python3-libtorrent can be used: outside CI its absence skips the test, with CI=true it
/// fails it.
fn have_libtorrent() -> bool {
    let present = Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("python3-libtorrent is required in CI but is not installed");
        }
        eprintln!("SKIP: python3-libtorrent is not installed");
    }
    present
}

fn libtorrent_get(d: &Path, out: &str, ip: &str, ca: &Path) -> Proc {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_peer.py");
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(script)
        .args(["get", s(&d.join("t.torrent")), s(&d.join(out)), ip])
        .env_remove("SSL_CERT_DIR")
        .env("SSL_CERT_FILE", ca);
    Proc::spawn(command, d.join(format!("{out}.err")))
}

#[test]
fn libtorrent_downloads_through_our_https_tracker_and_checks_its_certificate() {
    if !have_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pki(d, "good");
    let other = pki(d, "other");
    let (_tracker, url, http) = https_tracker(d, &p);
    let _seeder = seeded(d, &url, &p.ca, http);

    // Trusting another CA, libtorrent refuses the tracker (so the success below means it verified).
    let refused = libtorrent_get(d, "lt-refused", "127.0.0.6", &other.ca);
    let alert = refused.wait_for("certificate", T);
    assert!(alert.contains("alert"), "{alert}");
    println!("libtorrent, untrusted: {alert}");

    let trusted = libtorrent_get(d, "lt", "127.0.0.5", &p.ca);
    trusted.wait_for("\"done\"", T);
    assert_eq!(
        sha256(&d.join("lt/file.bin")),
        sha256(&d.join("seed/file.bin"))
    );
    // libtorrent's announce reached the tracker over TLS: the swarm now has it too.
    wait_metrics(http, "libtorrent in the swarm", |m| {
        metric(m, "spore_tracker_peers{state=\"seeder\"}")
            + metric(m, "spore_tracker_peers{state=\"leecher\"}")
            >= 2
    });
}

#[test]
fn the_daemon_adds_an_https_url_and_announces_to_an_https_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pki(d, "good");
    let (_tracker, url, http) = https_tracker(d, &p);
    let _seeder = seeded(d, &url, &p.ca, http);
    let (files, served) = https_file_server(
        &p,
        "/x.torrent",
        std::fs::read(d.join("t.torrent")).unwrap(),
    );
    let state = d.join("state");
    let daemon = spore_trusting(
        &[
            "daemon",
            "--state-dir",
            s(&state),
            "--listen",
            "127.0.0.7:0",
            "--api",
            "127.0.0.1:0",
            "--download-dir",
            s(&d.join("dl")),
        ],
        &p.ca,
        d.join("daemon.err"),
    );
    let api = daemon
        .wait_for("api listening on http://", T)
        .trim_start_matches("api listening on http://")
        .trim()
        .to_string();
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_spore"))
            .args(args)
            .args(["--api", &api, "--state-dir", s(&state)])
            .output()
            .unwrap()
    };
    let source = format!("https://127.0.0.1:{}/x.torrent", files.port());
    let out = cli(&["add", &source, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(served.load(Ordering::SeqCst), 1);
    // Its only peer source is the https tracker: seeding means the announce went through.
    let deadline = Instant::now() + T;
    loop {
        let out = cli(&["list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if list["torrents"][0]["state"] == "seeding" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never finished: {list}; {}",
            std::fs::read_to_string(d.join("daemon.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        sha256(&d.join("dl/file.bin")),
        sha256(&d.join("seed/file.bin"))
    );
}
