//! Network namespaces for tests that need routers and NAT: made with `ip netns`, wired with veth pairs
//! created inside them (no name is ever taken in the host's), DNS pointed at their own loopback, and
//! deleted on drop whether the test passed or not. Nothing routes out of them.

use std::path::PathBuf;
use std::process::Command;

/// Runs `cmd`, failing the test with its stderr if it fails; its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

/// One namespace, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `name` should carry the test's tag and the pid, so parallel tests and runs never share one.
    pub fn new(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        // `ip netns exec` bind-mounts /etc/netns/NS/resolv.conf: no DNS query leaves the lab.
        let etc = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn exec(&self, args: &[&str]) -> String {
        run(self.command(args[0]).args(&args[1..]))
    }

    /// A veth pair from `dev` here to `peer_dev` in `peer`, with an address (CIDR) on each end, up.
    pub fn link(&self, dev: &str, addr: &str, peer: &Netns, peer_dev: &str, peer_addr: &str) {
        ip(&[
            "link", "add", dev, "netns", &self.name, "type", "veth", "peer", "name", peer_dev,
            "netns", &peer.name,
        ]);
        for (ns, dev, addr) in [(self, dev, addr), (peer, peer_dev, peer_addr)] {
            if !addr.is_empty() {
                ns.ip(&["addr", "add", addr, "dev", dev]);
            }
            ns.ip(&["link", "set", dev, "up"]);
        }
    }

    /// Makes this namespace a home router: forwarding on, everything leaving by `wan` masqueraded,
    /// nothing forwarded in (no port mapping), and what arrives on `wan` unasked dropped, as home
    /// routers do. Dropped, not answered: an answered packet would leave a connection-tracking entry
    /// that takes the port a later outgoing packet needs.
    pub fn masquerade(&self, wan: &str, dir: &std::path::Path) {
        self.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let rules = format!(
            "table inet nat {{\n chain postrouting {{\n  type nat hook postrouting priority 100; policy accept;\n  oifname \"{wan}\" masquerade\n }}\n}}\n\
             table inet filter {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  iifname \"{wan}\" ct state new drop\n }}\n\
             chain forward {{\n  type filter hook forward priority 0; policy accept;\n  iifname \"{wan}\" ct state new drop\n }}\n}}\n"
        );
        let file = dir.join(format!("{}.nft", self.name));
        std::fs::write(&file, rules).unwrap();
        self.exec(&["nft", "-f", file.to_str().unwrap()]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}
