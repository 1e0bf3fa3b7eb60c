//! Swarms shared by several tracker nodes through a Redis (or Valkey) Cluster.
//!
//! Each swarm lives in one hash slot: its keys share the hash tag `{<info-hash hex>}`. Four sorted sets
//! hold its peers (IPv4 seeders, IPv4 leechers, IPv6 seeders, IPv6 leechers), each member a compact
//! address scored by the second it expires, and a counter its completed downloads. An announce is one
//! Lua script run atomically on the slot's master: drop expired peers, add, refresh or remove the
//! announcing peer, count, and sample up to `numwant` others. Its clock is the server's (`TIME`), so
//! nodes with skewed clocks agree. Every key expires `peer_timeout` after its swarm's last announce, so
//! a dead swarm costs nothing and needs no sweep.
//!
//! Announces issued at once (a UDP worker's batch) are in flight together: the client keeps one
//! multiplexed connection per cluster node and writes concurrent requests to it back to back, so a
//! batch costs one round trip per node, not one per announce.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::Value;
use serde::Deserialize;
use tracker_proto::{Event, InfoHash, ScrapeStats};

use crate::store::{compact, Compact, Family};

/// What a node does while the cluster does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Answer announces with a failure reason (clients retry later).
    #[default]
    Refuse,
    /// Answer from this node's own view of the swarms (the peers that announced to it).
    Local,
}

/// Why the cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("bad cluster address {0:?}: expected redis://HOST:PORT[,HOST:PORT...]")]
    BadAddress(String),
    #[error("cannot reach the cluster at {addrs}: {source}")]
    Unreachable {
        addrs: String,
        source: redis::RedisError,
    },
    #[error("the cluster at {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("cluster: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cluster: unexpected reply")]
    Reply,
}

const ANNOUNCE: &str = r#"
-- KEYS: seeders4 leechers4 seeders6 leechers6 completed
-- ARGV: member, family (4|6), seeder (0|1), event (0 none, 1 completed, 2 started, 3 stopped),
--       want, families wanted (4, 6 or 0 for both), peer timeout, most peers per swarm, a random number,
--       whether the announce may create the swarm (1|0)
-- Peers past their expiry are never counted or handed out (every read is from `now` on); they are
-- removed from the announcing peer's own set here, and with whole sets by key expiry.
local now = tonumber(redis.call('TIME')[1])
local me, fam, seeder = ARGV[1], ARGV[2], ARGV[3] == '1'
local event, want, wantfam = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local timeout, cap, rnd = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local s, l = KEYS[1], KEYS[2]
if fam == '6' then s, l = KEYS[3], KEYS[4] end
local own, other = l, s
if seeder then own, other = s, l end
if ARGV[10] == '0' and redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3], KEYS[4]) == 0 then
  -- A new swarm its creator may not make (its per-source limit on the node): not tracked.
  return {0, 0, {}, {}}
end
redis.call('ZREM', other, me)
if event == 3 then
  redis.call('ZREM', own, me)
else
  redis.call('ZREMRANGEBYSCORE', own, '-inf', now - 1)
  if redis.call('ZADD', own, now + timeout, me) == 1 then
    local size = 0
    for i = 1, 4 do size = size + redis.call('ZCOUNT', KEYS[i], now, '+inf') end
    if size > cap then redis.call('ZREM', own, me) end
  end
  redis.call('EXPIRE', own, timeout + 60)
  if event == 1 then
    redis.call('INCR', KEYS[5])
    redis.call('EXPIRE', KEYS[5], timeout + 60)
  end
end
local n = {}
for i = 1, 4 do n[i] = redis.call('ZCOUNT', KEYS[i], now, '+inf') end
local p4, p6 = {}, {}
local taken = 0
-- A window of live peers from a random place in the set, wrapping round once. Members are ordered by
-- expiry, so the live ones are the last `live` ranks, and a window of ranks costs O(log n + window).
local function take(out, key, live)
  if taken >= want or live == 0 then return end
  local dead = redis.call('ZCARD', key) - live
  local first = rnd % live
  local room = math.min(want - taken + 1, live)
  local got = redis.call('ZRANGE', key, dead + first, dead + math.min(first + room, live) - 1)
  if #got < room then
    local more = redis.call('ZRANGE', key, dead, dead + room - #got - 1)
    for _, m in ipairs(more) do got[#got + 1] = m end
  end
  for _, m in ipairs(got) do
    if taken >= want then return end
    if m ~= me then
      out[#out + 1] = m
      taken = taken + 1
    end
  end
end
if event ~= 3 then
  if wantfam ~= '6' then
    if not seeder then take(p4, KEYS[1], n[1]) end
    take(p4, KEYS[2], n[2])
  end
  if wantfam ~= '4' then
    if not seeder then take(p6, KEYS[3], n[3]) end
    take(p6, KEYS[4], n[4])
  end
end
return {n[1] + n[3], n[2] + n[4], p4, p6}
"#;

const COUNTS: &str = r#"
local now = tonumber(redis.call('TIME')[1])
local function live(k) return redis.call('ZCOUNT', k, now, '+inf') end
local c = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
return {live(KEYS[1]) + live(KEYS[3]), live(KEYS[2]) + live(KEYS[4]), c}
"#;

/// Longest a request to the cluster may take, retries included; then it fails (and the fallback
/// answers).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(3);

/// The prefix of the connection-ID keys every node uses, one per period.
const SECRET_KEY: &str = "spore:tracker:conn-id-secret";

/// Private mode's users: passkey → name, name → passkey, a version bumped on every change (nodes poll
/// it and re-read the users when it moves), and totals (`<passkey>:up`, `<passkey>:down`). One hash tag,
/// so adding a user is one atomic script.
const USERS_BY_KEY: &str = "{spore-users}:by-key";
const USERS_BY_NAME: &str = "{spore-users}:by-name";
const USERS_VERSION: &str = "{spore-users}:version";
const USERS_TOTALS: &str = "{spore-users}:totals";

const ADD_USER: &str = r#"
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('INCR', KEYS[3])
return 1
"#;

const REVOKE_USER: &str = r#"
local key, name = ARGV[1], redis.call('HGET', KEYS[1], ARGV[1])
if not name then
  key = redis.call('HGET', KEYS[2], ARGV[1])
  if not key then return 0 end
  name = ARGV[1]
end
redis.call('HDEL', KEYS[1], key)
redis.call('HDEL', KEYS[2], name)
redis.call('INCR', KEYS[3])
return 1
"#;

/// One announce to send to the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub hash: InfoHash,
    pub peer: SocketAddr,
    pub left: u64,
    pub event: Event,
    pub want: usize,
    pub family: Family,
    /// Whether the announce may create the swarm (the node's per-source creation limit allows it).
    pub may_create: bool,
}

/// The cluster's answer to one announce.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answer {
    pub seeders: u32,
    pub leechers: u32,
    pub v4: Vec<u8>,
    pub v6: Vec<u8>,
}

pub struct Cluster {
    conn: ClusterConnection,
    announce: redis::Script,
    counts: redis::Script,
    pub fallback: Fallback,
    peer_timeout: u32,
    max_peers: usize,
    up: AtomicBool,
    /// Requests the cluster failed (timed out, refused, unreachable).
    pub errors: AtomicU64,
    /// Requests sent to the cluster (one per announce or scraped info-hash).
    pub requests: AtomicU64,
    /// Sets of requests sent together: a UDP batch, or one HTTP request's.
    pub batches: AtomicU64,
}

/// `redis://a:1,b:2` or `a:1,b:2` → the node URLs.
pub fn parse_addresses(spec: &str) -> Result<Vec<String>, ClusterError> {
    let bad = || ClusterError::BadAddress(spec.to_string());
    let rest = spec.strip_prefix("redis://").unwrap_or(spec);
    let nodes: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .map(|n| n.strip_prefix("redis://").unwrap_or(n))
        .map(|n| {
            let (host, port) = n.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad());
            }
            Ok(format!("redis://{n}"))
        })
        .collect::<Result<_, _>>()?;
    if nodes.is_empty() {
        return Err(bad());
    }
    Ok(nodes)
}

fn keys(hash: &InfoHash) -> [String; 5] {
    let mut hex = String::with_capacity(40);
    for b in hash.iter() {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    ["s4", "l4", "s6", "l6", "c"].map(|k| format!("{{{hex}}}:{k}"))
}

fn int(v: &Value) -> Option<u32> {
    match v {
        Value::Int(n) => u32::try_from(*n).ok(),
        _ => None,
    }
}

fn peers(v: &Value, size: usize, out: &mut Vec<u8>) -> Option<()> {
    let Value::Array(items) = v else { return None };
    for item in items {
        match item {
            Value::BulkString(b) if b.len() == size => out.extend_from_slice(b),
            _ => return None,
        }
    }
    Some(())
}

impl Cluster {
    /// Connects to the cluster (failing clearly within `timeout` if it does not answer) and checks it
    /// serves every slot.
    pub async fn connect(
        spec: &str,
        fallback: Fallback,
        peer_timeout: u32,
        max_peers: usize,
        timeout: Duration,
    ) -> Result<Cluster, ClusterError> {
        let nodes = parse_addresses(spec)?;
        let client = ClusterClient::builder(nodes)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            // However the retries go, a request (and so a UDP worker's batch) waits at most this long.
            .overall_response_timeout(Some(REQUEST_DEADLINE))
            // A failover takes the cluster some seconds: retries back off up to 1 s each.
            .retries(8)
            .min_retry_wait(50)
            .max_retry_wait(1000)
            .build()
            .map_err(|source| ClusterError::Unreachable {
                addrs: spec.to_string(),
                source,
            })?;
        let connect = async {
            let mut conn = client.get_async_connection().await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let conn = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ClusterError::Timeout(spec.to_string(), timeout))?
            .map_err(|source| ClusterError::Unreachable {
                addrs: spec.to_string(),
                source,
            })?;
        Ok(Cluster {
            conn,
            announce: redis::Script::new(ANNOUNCE),
            counts: redis::Script::new(COUNTS),
            fallback,
            peer_timeout,
            max_peers,
            up: AtomicBool::new(true),
            errors: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        })
    }

    /// The connection-ID key of `period` (see `conn_id`), the same for every node: the first node to ask
    /// makes it (`mine`), and it expires two periods after its own.
    pub async fn period_key(
        &self,
        period: u64,
        mine: (u64, u64),
    ) -> Result<(u64, u64), ClusterError> {
        let mut conn = self.conn.clone();
        let key = format!("{SECRET_KEY}:{period}");
        let proposal = format!("{:016x}{:016x}", mine.0, mine.1);
        let period_secs = crate::conn_id::PERIOD_WINDOWS * 60;
        let _: Value = redis::cmd("SET")
            .arg(&key)
            .arg(&proposal)
            .arg("NX")
            .arg("EX")
            .arg(3 * period_secs)
            .query_async(&mut conn)
            .await?;
        let secret: String = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        let parse = |s: &str| u64::from_str_radix(s, 16).map_err(|_| ClusterError::Reply);
        if secret.len() != 32 || !secret.is_ascii() {
            return Err(ClusterError::Reply);
        }
        Ok((parse(&secret[..16])?, parse(&secret[16..])?))
    }

    /// The users' version (see `USERS_VERSION`).
    pub async fn users_version(&self) -> Result<u64, ClusterError> {
        let mut conn = self.conn.clone();
        let v: Option<u64> = redis::cmd("GET")
            .arg(USERS_VERSION)
            .query_async(&mut conn)
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// Every passkey.
    pub async fn passkeys(&self) -> Result<std::collections::HashSet<String>, ClusterError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("HKEYS")
            .arg(USERS_BY_KEY)
            .query_async(&mut conn)
            .await?)
    }

    /// Adds private totals, summed per user.
    pub async fn add_totals(
        &self,
        pending: &crate::access::PendingTotals,
    ) -> Result<(), ClusterError> {
        let mut pipe = redis::pipe();
        for ((passkey, _), (up, down)) in pending {
            pipe.cmd("HINCRBY")
                .arg(USERS_TOTALS)
                .arg(format!("{passkey}:up"))
                .arg(*up)
                .ignore();
            pipe.cmd("HINCRBY")
                .arg(USERS_TOTALS)
                .arg(format!("{passkey}:down"))
                .arg(*down)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records whether the last request succeeded; logs once per change.
    fn note<T>(&self, result: &Result<T, ClusterError>) {
        let ok = result.is_ok();
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if self.up.swap(ok, Ordering::Relaxed) != ok {
            match result {
                Ok(_) => tracing::warn!("cluster reachable again"),
                Err(e) => tracing::warn!(
                    "cluster lost ({e}); announces are {}",
                    match self.fallback {
                        Fallback::Refuse => "refused until it is back",
                        Fallback::Local => "answered from this node's view until it is back",
                    }
                ),
            }
        }
    }

    pub async fn announce(&self, job: &Job) -> Result<Answer, ClusterError> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.announce_one(job).await
    }

    async fn announce_one(&self, job: &Job) -> Result<Answer, ClusterError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = self.announce_inner(job).await;
        self.note(&result);
        result
    }

    async fn announce_inner(&self, job: &Job) -> Result<Answer, ClusterError> {
        let me = compact(job.peer);
        let (member, fam): (&[u8], &str) = match &me {
            Compact::V4(a) => (&a[..], "4"),
            Compact::V6(a) => (&a[..], "6"),
        };
        let event = match job.event {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        };
        let wantfam = match job.family {
            Family::V4 => "4",
            Family::V6 => "6",
            Family::Both => "0",
        };
        let mut invocation = self.announce.prepare_invoke();
        for k in keys(&job.hash) {
            invocation.key(k);
        }
        invocation
            .arg(member)
            .arg(fam)
            .arg(u8::from(job.left == 0))
            .arg(event)
            .arg(job.want)
            .arg(wantfam)
            .arg(self.peer_timeout)
            .arg(self.max_peers)
            .arg(crate::store::random() as u32)
            .arg(u8::from(job.may_create));
        let mut conn = self.conn.clone();
        let reply: Value = invocation.invoke_async(&mut conn).await?;
        let Value::Array(items) = reply else {
            return Err(ClusterError::Reply);
        };
        let [seeders, leechers, p4, p6] = items.as_slice() else {
            return Err(ClusterError::Reply);
        };
        let mut answer = Answer {
            seeders: int(seeders).ok_or(ClusterError::Reply)?,
            leechers: int(leechers).ok_or(ClusterError::Reply)?,
            ..Answer::default()
        };
        peers(p4, 6, &mut answer.v4).ok_or(ClusterError::Reply)?;
        peers(p6, 18, &mut answer.v6).ok_or(ClusterError::Reply)?;
        Ok(answer)
    }

    /// Announces in flight together: one round trip per cluster node for the lot.
    pub async fn announce_all(&self, jobs: &[Job]) -> Vec<Result<Answer, ClusterError>> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        let mut pending: Vec<_> = jobs
            .iter()
            .map(|j| Box::pin(self.announce_one(j)))
            .collect();
        let mut results: Vec<Option<Result<Answer, ClusterError>>> =
            (0..jobs.len()).map(|_| None).collect();
        // Every request is polled (so written) before any reply is waited for.
        std::future::poll_fn(|cx| {
            let mut done = true;
            for (f, r) in pending.iter_mut().zip(results.iter_mut()) {
                if r.is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *r = Some(v),
                        std::task::Poll::Pending => done = false,
                    }
                }
            }
            if done {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(ClusterError::Reply)))
            .collect()
    }

    pub async fn scrape(&self, hash: &InfoHash) -> Result<ScrapeStats, ClusterError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        let result = self.scrape_inner(hash).await;
        self.note(&result);
        result
    }

    async fn scrape_inner(&self, hash: &InfoHash) -> Result<ScrapeStats, ClusterError> {
        let mut invocation = self.counts.prepare_invoke();
        for k in keys(hash) {
            invocation.key(k);
        }
        let mut conn = self.conn.clone();
        let reply: Value = invocation.invoke_async(&mut conn).await?;
        match &reply {
            Value::Array(items) => match items.as_slice() {
                [s, l, c] => Ok(ScrapeStats {
                    seeders: int(s).ok_or(ClusterError::Reply)?,
                    leechers: int(l).ok_or(ClusterError::Reply)?,
                    completed: int(c).ok_or(ClusterError::Reply)?,
                }),
                _ => Err(ClusterError::Reply),
            },
            _ => Err(ClusterError::Reply),
        }
    }
}

/// Adds a private user in the cluster and returns the passkey.
pub async fn add_user(cluster: &Cluster, name: &str) -> Result<String, crate::Error> {
    let passkey = crate::access::random_hex(16)?;
    let mut conn = cluster.conn.clone();
    let added: i64 = redis::Script::new(ADD_USER)
        .key(USERS_BY_KEY)
        .key(USERS_BY_NAME)
        .key(USERS_VERSION)
        .arg(&passkey)
        .arg(name)
        .invoke_async(&mut conn)
        .await?;
    if added == 0 {
        return Err(crate::Error::UserExists(name.to_string()));
    }
    Ok(passkey)
}

/// Revokes a user by name or passkey; whether one was found.
pub async fn revoke_user(cluster: &Cluster, who: &str) -> Result<bool, crate::Error> {
    let mut conn = cluster.conn.clone();
    let found: i64 = redis::Script::new(REVOKE_USER)
        .key(USERS_BY_KEY)
        .key(USERS_BY_NAME)
        .key(USERS_VERSION)
        .arg(who)
        .invoke_async(&mut conn)
        .await?;
    Ok(found == 1)
}

/// Every user with their totals, by name.
pub async fn list_users(cluster: &Cluster) -> Result<Vec<crate::UserTotals>, crate::Error> {
    let mut conn = cluster.conn.clone();
    let users: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(USERS_BY_KEY)
        .query_async(&mut conn)
        .await?;
    let totals: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(USERS_TOTALS)
        .query_async(&mut conn)
        .await?;
    let mut out: Vec<_> = users
        .into_iter()
        .map(|(passkey, name)| crate::UserTotals {
            uploaded: totals.get(&format!("{passkey}:up")).copied().unwrap_or(0),
            downloaded: totals.get(&format!("{passkey}:down")).copied().unwrap_or(0),
            name,
            passkey,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Peers to hand out for an announce's `numwant`, as the in-memory store counts them.
pub fn want(config: &crate::Config, numwant: Option<u32>) -> usize {
    numwant
        .map_or(config.default_numwant, |n| n as usize)
        .min(config.max_numwant)
}

/// The failure reason announces get while the cluster is lost and `cluster_fallback = "refuse"`.
pub const UNAVAILABLE: &str = "tracker storage unavailable: try again later";

/// Completes an announce the cluster answered (or failed): the node's own view records it too, and
/// answers it when the cluster failed and the fallback is `local`.
pub fn complete(
    state: &crate::State,
    job: &Job,
    answer: Result<Answer, ClusterError>,
) -> Result<Answer, &'static str> {
    let local = |want: usize, answer: &mut Answer| {
        state.store.record_unlimited(
            &job.hash,
            job.peer,
            job.left,
            job.event,
            Some(u32::try_from(want).unwrap_or(u32::MAX)),
            job.family,
            &mut answer.v4,
            &mut answer.v6,
        )
    };
    match answer {
        Ok(answer) => {
            let mut none = Answer::default();
            local(0, &mut none);
            Ok(answer)
        }
        Err(_) => match state.cluster.as_ref().map(|c| c.fallback) {
            Some(Fallback::Local) => {
                let mut answer = Answer::default();
                let outcome = local(job.want, &mut answer);
                answer.seeders = outcome.seeders;
                answer.leechers = outcome.leechers;
                Ok(answer)
            }
            _ => Err(UNAVAILABLE),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addresses("redis://127.0.0.1:7000,127.0.0.1:7001").unwrap(),
            vec!["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert_eq!(
            parse_addresses("h:1").unwrap(),
            vec!["redis://h:1".to_string()]
        );
        for bad in ["", "redis://", "h", "h:x", ":1", "h:1,"] {
            assert!(parse_addresses(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_slot_per_swarm() {
        let k = keys(&[0xab; 20].into());
        let tag = format!("{{{}}}", "ab".repeat(20));
        assert!(k.iter().all(|k| k.starts_with(&tag)), "{k:?}");
    }
}
