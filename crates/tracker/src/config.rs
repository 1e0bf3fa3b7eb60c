//! Tracker settings, from a TOML file or defaults.

use std::path::PathBuf;

use serde::Deserialize;

use crate::access::Mode;

/// Every tracker option. `spore tracker` alone uses the defaults: HTTP and UDP on port 6969, open.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address; empty disables HTTP.
    pub http: String,
    /// HTTPS listen address (same routes and limits as HTTP); empty, the default, disables it.
    pub https: String,
    /// PEM certificate chain for HTTPS, the server's certificate first.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// Seconds a new HTTPS connection has to finish its TLS handshake.
    pub tls_handshake_timeout: u64,
    /// UDP listen address; empty disables UDP.
    pub udp: String,
    /// UDP worker threads, each with its own SO_REUSEPORT socket; 0 means one per core.
    pub udp_workers: usize,
    /// Lock shards for the swarm table (rounded up to a power of two).
    pub shards: usize,
    /// Seconds clients are asked to wait between announces.
    pub interval: u32,
    /// Seconds clients must wait at least (HTTP `min interval`).
    pub min_interval: u32,
    /// Seconds after which a peer that stopped announcing is dropped.
    pub peer_timeout: u32,
    pub default_numwant: usize,
    pub max_numwant: usize,
    pub max_swarms: usize,
    pub max_peers_per_swarm: usize,
    /// New swarms one source (IPv4 address or IPv6 /64) may create at once; 0 disables the limit.
    pub swarm_creation_burst: u32,
    /// New swarms one source earns back per minute.
    pub swarm_creation_per_minute: u32,
    /// Percent of `max_swarms` only sources that created few swarms lately may fill.
    pub swarm_reserve_percent: u32,
    /// Whether a scrape without info-hashes lists every swarm.
    pub full_scrape: bool,
    /// Seconds one IP address (or IPv6 /64) must wait between full scrapes.
    pub full_scrape_interval: u64,
    /// Full scrapes being sent at once, from all clients; past it a full scrape is refused.
    pub full_scrape_max_concurrent: usize,
    /// Open HTTP connections in all; past it new ones are closed at once. Lowered at start to what the
    /// open-files limit leaves (after raising the soft limit to the hard one).
    pub http_max_connections: usize,
    /// Open HTTP connections from one IP address.
    pub http_max_connections_per_ip: usize,
    /// Seconds a client has, from connecting or from the tracker's last reply byte, to send a complete
    /// request (bytes trickled in do not extend it); also how long a reply may stall. Was
    /// `http_idle_timeout`, still accepted.
    #[serde(alias = "http_idle_timeout")]
    pub http_request_timeout: u64,
    pub mode: Mode,
    /// Info-hash list (one hex hash per line) for `allow` and `deny` modes, and optionally `private`.
    /// Re-read on SIGHUP.
    pub list: Option<PathBuf>,
    /// redb database of users and their totals (private mode).
    pub db: Option<PathBuf>,
    /// Redis Cluster to share swarms with other nodes: `redis://HOST:PORT[,HOST:PORT...]`; empty, the
    /// default, keeps the swarms in this process only.
    pub cluster: String,
    /// What to do while the cluster does not answer: `refuse` announces with a failure reason, or
    /// answer them from this node's `local` view.
    pub cluster_fallback: crate::cluster::Fallback,
    /// Seconds to wait for the cluster at start before giving up.
    pub cluster_connect_timeout: u64,
    /// Milliseconds a node answers announces and scrapes of a swarm from the sample the cluster last
    /// gave it (0: every announce goes to the cluster); at most 10 000.
    pub cluster_view_ttl_ms: u64,
    /// Milliseconds at most between two sends of the queued announce writes (one script step per
    /// swarm carrying all of them); at most 10 000.
    pub cluster_flush_interval_ms: u64,
    /// Most writes queued for the next flush; past it announces go to the cluster one by one.
    pub cluster_queue_max: usize,
}

/// Longest `cluster_view_ttl_ms` and `cluster_flush_interval_ms`.
const MAX_STALE_MS: u64 = 10_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            http: "0.0.0.0:6969".into(),
            https: String::new(),
            tls_cert: None,
            tls_key: None,
            tls_handshake_timeout: 10,
            udp: "0.0.0.0:6969".into(),
            udp_workers: 0,
            shards: 1024,
            interval: 1800,
            min_interval: 300,
            peer_timeout: 3900,
            default_numwant: 50,
            max_numwant: 200,
            max_swarms: 2_000_000,
            max_peers_per_swarm: 100_000,
            swarm_creation_burst: 200,
            swarm_creation_per_minute: 60,
            swarm_reserve_percent: 10,
            full_scrape: true,
            full_scrape_interval: 60,
            full_scrape_max_concurrent: 2,
            http_max_connections: 10_000,
            http_max_connections_per_ip: 64,
            http_request_timeout: 15,
            mode: Mode::Open,
            list: None,
            db: None,
            cluster: String::new(),
            cluster_fallback: crate::cluster::Fallback::Refuse,
            cluster_connect_timeout: 10,
            cluster_view_ttl_ms: 1500,
            cluster_flush_interval_ms: 1500,
            cluster_queue_max: 1_000_000,
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Config, crate::Error> {
        let config: Config = toml::from_str(text)?;
        // The view's staleness is bounded by these two: seconds, never minutes.
        for (name, ms) in [
            ("cluster_view_ttl_ms", config.cluster_view_ttl_ms),
            (
                "cluster_flush_interval_ms",
                config.cluster_flush_interval_ms,
            ),
        ] {
            if ms > MAX_STALE_MS || (name == "cluster_flush_interval_ms" && ms == 0) {
                return Err(crate::Error::Config(format!(
                    "{name} = {ms}: expected 1 to {MAX_STALE_MS} (0 for the view: no view)"
                )));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_option_and_rejects_unknown_ones() {
        let c = Config::from_toml(
            r#"
            http = "127.0.0.1:7000"
            udp = ""
            https = "127.0.0.1:7443"
            tls_cert = "/tmp/cert.pem"
            tls_key = "/tmp/key.pem"
            tls_handshake_timeout = 3
            udp_workers = 2
            shards = 64
            interval = 600
            min_interval = 60
            peer_timeout = 1300
            default_numwant = 30
            max_numwant = 100
            max_swarms = 10
            max_peers_per_swarm = 5
            full_scrape = false
            full_scrape_interval = 5
            http_max_connections = 100
            http_max_connections_per_ip = 4
            http_request_timeout = 10
            mode = "private"
            list = "/tmp/list"
            db = "/tmp/db.redb"
            cluster = "redis://127.0.0.1:7000,127.0.0.1:7001"
            cluster_fallback = "local"
            cluster_connect_timeout = 3
            cluster_view_ttl_ms = 500
            cluster_flush_interval_ms = 250
            cluster_queue_max = 10
            "#,
        )
        .unwrap();
        assert_eq!(c.http, "127.0.0.1:7000");
        assert_eq!(c.mode, Mode::Private);
        assert_eq!(c.cluster, "redis://127.0.0.1:7000,127.0.0.1:7001");
        assert_eq!(c.cluster_fallback, crate::cluster::Fallback::Local);
        assert_eq!(c.cluster_connect_timeout, 3);
        assert_eq!(
            (
                c.cluster_view_ttl_ms,
                c.cluster_flush_interval_ms,
                c.cluster_queue_max
            ),
            (500, 250, 10)
        );
        assert!(Config::from_toml("cluster_view_ttl_ms = 60000").is_err());
        assert!(Config::from_toml("cluster_flush_interval_ms = 0").is_err());
        assert_eq!(
            Config::from_toml("cluster_view_ttl_ms = 0")
                .unwrap()
                .cluster_view_ttl_ms,
            0
        );
        assert!(Config::from_toml("cluster_fallback = \"maybe\"").is_err());
        assert_eq!(c.https, "127.0.0.1:7443");
        assert_eq!(
            c.tls_cert.as_deref(),
            Some(std::path::Path::new("/tmp/cert.pem"))
        );
        assert_eq!(
            c.tls_key.as_deref(),
            Some(std::path::Path::new("/tmp/key.pem"))
        );
        assert_eq!(c.tls_handshake_timeout, 3);
        assert!(Config::default().https.is_empty());
        assert!(!c.full_scrape);
        assert_eq!(
            (
                c.http_max_connections,
                c.http_max_connections_per_ip,
                c.http_request_timeout
            ),
            (100, 4, 10)
        );
        let old_name = Config::from_toml("http_idle_timeout = 7").unwrap();
        assert_eq!(old_name.http_request_timeout, 7);
        assert_eq!(Config::from_toml("").unwrap().interval, 1800);
        assert!(Config::from_toml("bogus = 1").is_err());
        assert!(Config::from_toml("mode = \"secret\"").is_err());
    }
}
