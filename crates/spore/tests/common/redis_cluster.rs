//! A real Redis Cluster for the tests, from Debian's `redis-server` and `redis-cli`: three masters and
//! three replicas on free loopback ports, each in its own directory, every process killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Proc;

/// Whether the Redis tools are installed; when they are not, tests fail under CI and skip elsewhere.
pub fn available() -> bool {
    let found = ["redis-server", "redis-cli"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "redis-server and redis-cli are needed (apt-get install redis-server redis-tools)"
        );
        eprintln!("skipped: redis-server or redis-cli is not installed");
    }
    found
}

pub struct RedisNode {
    pub port: u16,
    pub proc: Option<Proc>,
    pub dir: PathBuf,
}

pub struct RedisCluster {
    pub nodes: Vec<RedisNode>,
}

/// A loopback port free now whose cluster bus port (port + 10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// `redis-cli -p PORT ARGS...`'s output, or None if it did not run.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a server on `port` answers `PING` within a second. Not `redis-cli`, which has no timeout:
/// whatever holds a port taken from under a starting node may accept and never answer.
fn answers_ping(port: u16) -> bool {
    let limit = Duration::from_secs(1);
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), limit) else {
        return false;
    };
    let mut reply = [0u8; 7];
    stream.set_read_timeout(Some(limit)).is_ok()
        && stream.set_write_timeout(Some(limit)).is_ok()
        && stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl RedisNode {
    /// Starts node `i` under `dir` on a free port and waits until it answers. The port was free when
    /// picked, but another test's node or any outgoing connection may take it before this node binds
    /// it: a node that exits instead of answering is started again on another port.
    fn spawn(dir: &Path, i: usize) -> RedisNode {
        let node_dir = dir.join(format!("redis-{i}"));
        std::fs::create_dir_all(&node_dir).unwrap();
        for attempt in 1..=5 {
            let port = free_port_pair();
            let mut command = Command::new("redis-server");
            command.args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1500",
                "--dir",
                node_dir.to_str().unwrap(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "redis.log",
                // Replicas sync at once (the default waits 5 s for more replicas to share a transfer).
                "--repl-diskless-sync-delay",
                "0",
            ]);
            let mut proc = Proc::spawn(command, node_dir.join("stderr"));
            let mut exited = false;
            wait_until(
                &format!("redis on port {port} answering"),
                Duration::from_secs(20),
                || {
                    exited = proc.child.try_wait().ok().flatten().is_some();
                    exited || answers_ping(port)
                },
            );
            if !exited {
                return RedisNode {
                    port,
                    proc: Some(proc),
                    dir: node_dir,
                };
            }
            let log = std::fs::read_to_string(node_dir.join("redis.log")).unwrap_or_default();
            eprintln!("redis node {i} on port {port} exited (attempt {attempt}): {log}");
        }
        panic!("redis node {i} did not start in 5 attempts");
    }
}

impl RedisCluster {
    /// Starts six nodes under `dir` and joins them into a cluster whose every slot is served.
    pub fn start(dir: &Path) -> RedisCluster {
        let nodes = (0..6).map(|i| RedisNode::spawn(dir, i)).collect();
        let cluster = RedisCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok(Duration::from_secs(30));
        // A replica can take over only once it has synced with its master.
        for n in &cluster.nodes {
            wait_until(
                &format!("node on port {} a master or a synced replica", n.port),
                Duration::from_secs(30),
                || {
                    cli(n.port, &["info", "replication"]).is_some_and(|o| {
                        o.contains("role:master") || o.contains("master_link_status:up")
                    })
                },
            );
        }
        cluster
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self, timeout: Duration) {
        for n in self.nodes.iter().filter(|n| n.proc.is_some()) {
            wait_until(
                &format!("cluster_state:ok on port {}", n.port),
                timeout,
                || {
                    cli(n.port, &["cluster", "info"])
                        .is_some_and(|o| o.contains("cluster_state:ok"))
                },
            );
        }
    }

    /// `redis://127.0.0.1:P1,127.0.0.1:P2,...` for `spore tracker --cluster`.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis://{}", addrs.join(","))
    }

    /// The index of a node that is a master now.
    pub fn a_master(&self) -> usize {
        self.nodes
            .iter()
            .position(|n| {
                n.proc.is_some() && cli(n.port, &["role"]).is_some_and(|o| o.starts_with("master"))
            })
            .unwrap()
    }

    /// Kills node `i` (SIGKILL, as a crash).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].proc = None;
    }
}
