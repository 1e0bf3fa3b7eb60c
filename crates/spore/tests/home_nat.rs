//! Sharing from home (issue 15): `spore share` in a `home` namespace behind a `router` namespace that
//! masquerades with nftables and runs Debian's miniupnpd, a friend in an `inet` namespace beyond.
//! Nothing leaves the machine: the namespaces have no route anywhere else, and DNS inside them points
//! at their own loopback. Root, `ip`, `nft` and `miniupnpd` are needed (a failure when CI=true).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::netns::{ip, run};
use common::*;

/// The router's external address: miniupnpd refuses private and reserved ranges for ext_ip.
const EXT_IP: &str = "11.11.11.1";
const INET_IP: &str = "11.11.11.2";
const HOME_IP: &str = "192.168.77.2";
const LAN_IP: &str = "192.168.77.1";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RouterKind {
    /// miniupnpd with UPnP IGD and NAT-PMP/PCP.
    Upnp,
    /// miniupnpd with enable_upnp=no: NAT-PMP/PCP only.
    PcpOnly,
    /// No port mapping daemon at all.
    None,
}

/// Three namespaces and what runs in them; all removed on drop, whether the test passed or not.
struct Lab {
    home: String,
    router: String,
    inet: String,
    dir: tempfile::TempDir,
    daemons: Vec<Proc>,
}

impl Lab {
    /// Names carry the test's tag and our pid, so parallel tests and runs never share a namespace.
    fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            home: format!("spore-home-{tag}-{pid}"),
            router: format!("spore-router-{tag}-{pid}"),
            inet: format!("spore-inet-{tag}-{pid}"),
            dir: tempfile::tempdir().unwrap(),
            daemons: Vec::new(),
        };
        for ns in [&lab.home, &lab.router, &lab.inet] {
            ip(&["netns", "add", ns]);
            // `ip netns exec` bind-mounts /etc/netns/NS/resolv.conf: no DNS query leaves the lab.
            let etc = PathBuf::from("/etc/netns").join(ns);
            std::fs::create_dir_all(&etc).unwrap();
            std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Both ends are created inside the namespaces: no name is ever taken in the host's.
        ip(&[
            "link",
            "add",
            "lan",
            "netns",
            &lab.home,
            "type",
            "veth",
            "peer",
            "name",
            "lan",
            "netns",
            &lab.router,
        ]);
        ip(&[
            "link",
            "add",
            "wan",
            "netns",
            &lab.router,
            "type",
            "veth",
            "peer",
            "name",
            "wan",
            "netns",
            &lab.inet,
        ]);
        for (ns, dev, addr) in [
            (&lab.home, "lan", "192.168.77.2/24"),
            (&lab.router, "lan", "192.168.77.1/24"),
            (&lab.router, "wan", "11.11.11.1/24"),
            (&lab.inet, "wan", "11.11.11.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", &lab.home, "route", "add", "default", "via", LAN_IP]);
        lab.exec(&lab.router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // miniupnpd's chains (named in its configuration below) and the masquerade of a home router.
        let rules = "table inet filter {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n  jump miniupnpd\n }\n chain miniupnpd {\n }\n}\n\
             table inet nat {\n chain prerouting {\n  type nat hook prerouting priority -100; policy accept;\n  jump prerouting_miniupnpd\n }\n\
             chain postrouting {\n  type nat hook postrouting priority 100; policy accept;\n  jump postrouting_miniupnpd\n  oifname \"wan\" masquerade\n }\n\
             chain prerouting_miniupnpd {\n }\n chain postrouting_miniupnpd {\n }\n}\n";
        let rules_file = lab.dir.path().join("router.nft");
        std::fs::write(&rules_file, rules).unwrap();
        lab.exec(&lab.router, &["nft", "-f", s(&rules_file)]);
        lab
    }

    fn command(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    fn exec(&self, ns: &str, args: &[&str]) -> String {
        run(self.command(ns, args[0]).args(&args[1..]))
    }

    fn spore(&self, ns: &str, args: &[&str], log: &str) -> Proc {
        let mut c = self.command(ns, env!("CARGO_BIN_EXE_spore"));
        c.args(args)
            .env(
                "XDG_DATA_HOME",
                self.dir.path().join(format!("state-{log}")),
            )
            .env("SPORE_LOG", "info");
        Proc::spawn(c, self.dir.path().join(format!("{log}.err")))
    }

    /// Starts miniupnpd on the router and waits for its "listening" log line.
    fn start_miniupnpd(&mut self, upnp: bool) {
        let conf = self.dir.path().join("miniupnpd.conf");
        let leases = self.lease_file();
        std::fs::write(
            &conf,
            format!(
                "ext_ifname=wan\next_ip={EXT_IP}\nlistening_ip=lan\nhttp_port=0\n\
                 enable_upnp={}\nenable_natpmp=yes\nsecure_mode=yes\nsystem_uptime=yes\n\
                 upnp_table_name=filter\nupnp_nat_table_name=nat\nupnp_forward_chain=miniupnpd\n\
                 upnp_nat_chain=prerouting_miniupnpd\nupnp_nat_postrouting_chain=postrouting_miniupnpd\n\
                 lease_file={}\nuuid=3b0e1b2e-4a5c-4b6f-9a21-5b0e1b2e4a5c\n\
                 allow 1024-65535 192.168.77.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
                if upnp { "yes" } else { "no" },
                leases.display()
            ),
        )
        .unwrap();
        let mut c = self.command(&self.router, "miniupnpd");
        c.args([
            "-f",
            s(&conf),
            "-d",
            "-P",
            s(&self.dir.path().join("miniupnpd.pid")),
        ]);
        let log = self.dir.path().join("miniupnpd.log");
        self.daemons.push(Proc::spawn(c, log.clone()));
        wait_for_file_line(&log, "Listening for NAT-PMP/PCP traffic", T);
    }

    fn lease_file(&self) -> PathBuf {
        self.dir.path().join("miniupnpd.leases")
    }

    /// The router's forwarding rules towards the home machine.
    fn forwards(&self) -> Vec<String> {
        self.exec(&self.router, &["nft", "list", "ruleset"])
            .lines()
            .filter(|l| l.contains("dnat") && l.contains(HOME_IP))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The processes first (Proc kills on drop), then their namespaces.
        self.daemons.clear();
        for ns in [&self.home, &self.router, &self.inet] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
        }
    }
}

/// Waits for a line containing `needle` in a log file another process writes.
fn wait_for_file_line(path: &Path, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}: {text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether this machine can build the lab; a failure when CI=true.
fn lab_available() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "the NAT lab needs root when CI=true"
        );
        eprintln!("skipped: not root");
        return false;
    }
    have_tool("ip", &["-V"])
        && have_tool("nft", &["--version"])
        && have_tool("miniupnpd", &["--version"])
}

fn share_from_home(kind: RouterKind, tag: &str) {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(tag);
    match kind {
        RouterKind::Upnp => lab.start_miniupnpd(true),
        RouterKind::PcpOnly => lab.start_miniupnpd(false),
        RouterKind::None => {}
    }
    let home_dir = lab.dir.path().join("home");
    std::fs::create_dir_all(&home_dir).unwrap();
    let file = home_dir.join("holiday.mkv");
    std::fs::write(&file, data(15, 4_000_000)).unwrap();

    // No flags: everything the friend needs must come from the router.
    let mut sharer = lab.spore(&lab.home.clone(), &["share", s(&file)], "share");
    let mut torrent = String::new();
    let magnet = match kind {
        RouterKind::Upnp | RouterKind::PcpOnly => {
            let via = if kind == RouterKind::Upnp {
                "UPnP IGD"
            } else {
                "PCP"
            };
            let line = sharer.wait_for("port mapping: ", T);
            assert!(line.contains(via) && line.contains(EXT_IP), "{line}");
            torrent = sharer
                .wait_for("torrent: ", T)
                .trim_start_matches("torrent: ")
                .to_string();
            let magnet = sharer
                .wait_for("magnet: ", T)
                .trim_start_matches("magnet: ")
                .to_string();
            assert!(magnet.contains(&format!("x.pe={EXT_IP}%3A")), "{magnet}");
            assert!(magnet.contains(&format!("{EXT_IP}%3A6969")), "{magnet}");
            magnet
        }
        RouterKind::None => {
            let warning = sharer.wait_for("warning: ", T);
            assert!(
                warning.contains("friends outside this network may not reach you"),
                "{warning}"
            );
            assert!(
                warning.contains("6881") && warning.contains(HOME_IP),
                "{warning}"
            );
            assert!(warning.contains("UDP port 6882 for the DHT"), "{warning}");
            let magnet = sharer
                .wait_for("magnet: ", T)
                .trim_start_matches("magnet: ")
                .to_string();
            assert!(magnet.contains(HOME_IP), "{magnet}");
            magnet
        }
    };
    sharer.wait_for("send your friend this command", T);

    if kind != RouterKind::None {
        // Peer port and tracker port, TCP and UDP each, and the DHT's own UDP port (uTP holds the
        // peer port's UDP side).
        let forwards = lab.forwards();
        assert_eq!(forwards.len(), 5, "{forwards:?}");
        assert!(
            // nftables names the protocol by its number: 0x11 is UDP.
            forwards
                .iter()
                .any(|l| l.contains("0x11") && l.contains("dport 6882")),
            "{forwards:?}"
        );
        let out = lab.dir.path().join("friend");
        let mut friend = lab.spore(
            &lab.inet.clone(),
            &["get", &magnet, "-o", s(&out), "--no-seed"],
            "friend",
        );
        friend.wait_for("complete: holiday.mkv", T);
        assert!(friend.wait_exit(T).success());
        assert_eq!(sha256(&out.join("holiday.mkv")), sha256(&file));
        // The .torrent names only the tracker: the seed is found there under the router's address,
        // registered directly (its own announce to that address cannot come back in through the router).
        let out2 = lab.dir.path().join("friend2");
        let mut friend2 = lab.spore(
            &lab.inet.clone(),
            &["get", &torrent, "-o", s(&out2), "--no-seed", "--no-dht"],
            "friend2",
        );
        friend2.wait_for("complete: holiday.mkv", T);
        assert!(friend2.wait_exit(T).success());
        assert_eq!(sha256(&out2.join("holiday.mkv")), sha256(&file));
        if kind == RouterKind::Upnp && libtorrent_available() {
            let lt_out = lab.dir.path().join("lt");
            std::fs::create_dir_all(&lt_out).unwrap();
            let mut c = lab.command(&lab.inet, "/usr/bin/python3");
            c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_peer.py"))
                .args(["get", &torrent, s(&lt_out), INET_IP]);
            let lt = Proc::spawn(c, lab.dir.path().join("lt.err"));
            lt.wait_for("\"done\"", T);
            assert_eq!(sha256(&lt_out.join("holiday.mkv")), sha256(&file));
        }
    }

    sharer.terminate();
    sharer.wait_for("stopped sharing", T);
    assert!(sharer.wait_exit(T).success());
    // Nothing of ours is left on the router.
    assert_eq!(lab.forwards(), Vec::<String>::new());
    let leases = std::fs::read_to_string(lab.lease_file()).unwrap_or_default();
    assert!(!leases.contains(HOME_IP), "leases left: {leases}");
}

#[test]
fn share_from_home_behind_a_upnp_router() {
    share_from_home(RouterKind::Upnp, "u");
}

#[test]
fn share_from_home_behind_a_pcp_nat_pmp_router() {
    share_from_home(RouterKind::PcpOnly, "p");
}

#[test]
fn share_from_home_with_no_port_mapping_warns_in_one_line() {
    share_from_home(RouterKind::None, "n");
}
