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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::Value;
use serde::Deserialize;
use tracker_proto::{InfoHash, ScrapeStats};

use crate::cluster_view::{coalesce, Queue, Sample, Update, Views};
pub use crate::cluster_view::{Answer, Job, Waiting};

impl ClusterError {
    /// The same failure, for each of the announces that shared a failed call (`RedisError` is not
    /// `Clone`): only its kind matters to them (`complete`).
    fn same(&self) -> ClusterError {
        match self {
            ClusterError::Busy => ClusterError::Busy,
            ClusterError::Timeout(a, d) => ClusterError::Timeout(a.clone(), *d),
            ClusterError::Redis(e) => ClusterError::Redis(redis::RedisError::from((
                e.kind(),
                "shared call failed",
                e.to_string(),
            ))),
            _ => ClusterError::Reply,
        }
    }
}

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
    /// `WAITING_MAX` requests already wait on the cluster: this one was not sent.
    #[error("too many requests waiting on the cluster")]
    Busy,
}

const ANNOUNCE: &str = r#"
-- KEYS: seeders4 leechers4 seeders6 leechers6 completed
-- ARGV: peer timeout, most peers per swarm, a random number, peers to sample per set, whether the
--       writes may create the swarm (1|0), completions to add, then pairs of (member, op): op 1..4
--       adds or refreshes the member in that set, 5..8 removes it (stopped) from set op - 4.
-- One call carries every write a node queued for the swarm; a lone announce is a call of one write.
-- Expired peers are pruned first, so the sets' sizes are the live counts. Returns the four counts,
-- the four samples (each one string of concatenated members) and the completed downloads.
local now = tonumber(redis.call('TIME')[1])
local timeout, cap, rnd, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- A family (IPv4, IPv6) whose two sets do not exist costs one call, not four: most swarms have no
-- IPv6 peers.
local family = {redis.call('EXISTS', KEYS[1], KEYS[2]) > 0, redis.call('EXISTS', KEYS[3], KEYS[4]) > 0}
if ARGV[5] == '0' and not family[1] and not family[2] then
  -- A new swarm its creator may not make (its per-source limit on the node): not tracked.
  return {0, 0, 0, 0, '', '', '', '', 0}
end
local adds, rems = {{}, {}, {}, {}}, {{}, {}, {}, {}}
local sibling = {2, 1, 4, 3}
for i = 7, #ARGV, 2 do
  local m, k = ARGV[i], tonumber(ARGV[i + 1])
  if k > 4 then
    k = k - 4
    rems[k][#rems[k] + 1] = m
  else
    local a = adds[k]
    a[#a + 1] = now + timeout
    a[#a + 1] = m
  end
  local r = rems[sibling[k]]
  r[#r + 1] = m
end
-- unpack is bounded by Lua's stack: long lists go in slices.
local function bulk(cmd, key, list)
  local done = 0
  for i = 1, #list, 1000 do
    done = done + redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
  return done
end
local n, total = {0, 0, 0, 0}, 0
for k = 1, 4 do
  if family[math.floor((k + 1) / 2)] then
    if #rems[k] > 0 then bulk('ZREM', KEYS[k], rems[k]) end
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now - 1)
    n[k] = redis.call('ZCARD', KEYS[k])
    total = total + n[k]
  end
end
for k = 1, 4 do
  local a = adds[k]
  if #a > 0 then
    local added = 0
    if total + #a / 2 <= cap then
      added = bulk('ZADD', KEYS[k], a)
    else
      for i = 1, #a, 2 do
        if total + added < cap then
          added = added + redis.call('ZADD', KEYS[k], a[i], a[i + 1])
        else
          redis.call('ZADD', KEYS[k], 'XX', a[i], a[i + 1])
        end
      end
    end
    total = total + added
    n[k] = n[k] + added
    redis.call('EXPIRE', KEYS[k], timeout + 60)
  end
end
local completed = 0
if ARGV[6] ~= '0' then
  completed = redis.call('INCRBY', KEYS[5], ARGV[6])
  redis.call('EXPIRE', KEYS[5], timeout + 60)
else
  completed = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
end
local out = {n[1], n[2], n[3], n[4]}
-- A window of `want` peers from a random place in each set, wrapping round once, as one string.
for k = 1, 4 do
  local live, got = n[k], {}
  if live > 0 and want > 0 then
    local first = rnd % live
    local room = math.min(want, live)
    got = redis.call('ZRANGE', KEYS[k], first, first + room - 1)
    if #got < room then
      for _, m in ipairs(redis.call('ZRANGE', KEYS[k], 0, room - #got - 1)) do got[#got + 1] = m end
    end
  end
  out[k + 4] = table.concat(got)
end
out[9] = completed
return out
"#;

const COUNTS: &str = r#"
local now = tonumber(redis.call('TIME')[1])
local function live(k) return redis.call('ZCOUNT', k, now, '+inf') end
local c = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
return {live(KEYS[1]), live(KEYS[2]), live(KEYS[3]), live(KEYS[4]), c}
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

/// The allow/deny list: its info-hashes (20 bytes each) and a version bumped whenever a node publishes
/// its list file (at start and on SIGHUP); nodes poll the version and re-read the set when it moves.
const LIST: &str = "{spore-list}:hashes";
const LIST_VERSION: &str = "{spore-list}:version";

const PUBLISH_LIST: &str = r#"
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 1000 do
  redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return redis.call('INCR', KEYS[2])
"#;

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

/// How a node uses the cluster (from `Config`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub fallback: Fallback,
    pub peer_timeout: u32,
    pub max_peers: usize,
    /// Peers a view samples per set when nothing asks for more (one more than `default_numwant`).
    pub sample: usize,
    pub view_ttl: Duration,
    pub queue_max: usize,
}

pub struct Cluster {
    client: ClusterClient,
    /// Replaced by `reconnect` when requests keep failing (see there).
    conn: parking_lot::RwLock<ClusterConnection>,
    /// When `reconnect` last made a new connection.
    reconnected: parking_lot::Mutex<Option<Instant>>,
    /// `errors` when `reconnect` last looked.
    errors_seen: AtomicU64,
    announce: redis::Script,
    counts: redis::Script,
    list: redis::Script,
    pub fallback: Fallback,
    settings: Settings,
    up: AtomicBool,
    pub views: Views,
    pub queue: Queue,
    /// Announces answered from the view (their writes queued).
    pub view_answers: AtomicU64,
    /// Scraped info-hashes answered from the view.
    pub view_scrapes: AtomicU64,
    /// Requests the cluster failed (timed out, refused, unreachable).
    pub errors: AtomicU64,
    /// Requests sent to the cluster (one per announce or scraped info-hash).
    pub requests: AtomicU64,
    /// Sets of requests sent together: a UDP batch, or one HTTP request's.
    pub batches: AtomicU64,
    /// UDP requests handed to the async side and not yet answered.
    pub waiting: Waiting,
}

/// Most UDP requests a node lets wait on the cluster at once (about 200 bytes each). A UDP worker never
/// waits on the cluster itself: past this it answers at once, busy, rather than queue without bound
/// (the client retries, as after any error).
pub const WAITING_MAX: usize = 16_384;

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

/// The suffixes of a swarm's five keys, in the script's order.
const KEY_SUFFIXES: [&[u8]; 5] = [b"s4", b"l4", b"s6", b"l6", b"c"];

/// Bytes of `{<info-hash hex>}:`, the start of each of a swarm's keys.
const KEY_PREFIX: usize = 43;

/// A swarm's key up to its suffix, with room for the longest suffix.
fn key_prefix(hash: &InfoHash) -> [u8; KEY_PREFIX + 2] {
    let mut key = [0; KEY_PREFIX + 2];
    key[0] = b'{';
    for (i, b) in hash.iter().enumerate() {
        key[1 + 2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
        key[2 + 2 * i] = b"0123456789abcdef"[usize::from(b & 15)];
    }
    key[41] = b'}';
    key[42] = b':';
    key
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

/// A sample: members of `size` bytes, concatenated.
fn peers(v: &Value, size: usize, out: &mut Vec<u8>) -> Option<()> {
    match v {
        Value::BulkString(b) if b.len() % size == 0 => out.extend_from_slice(b),
        Value::Nil => {}
        _ => return None,
    }
    Some(())
}

/// Least time between two new connections made because requests failed.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// Script calls of a flush in flight at once.
const FLUSH_IN_FLIGHT: usize = 256;

/// Script calls of one UDP group or HTTP scrape in flight at once. redis-rs's cluster connection walks
/// its in-flight requests on every poll: with UDP groups of thousands all out at once that walk was
/// 12 % of a node's profile (BENCHMARKS.md).
const GROUP_IN_FLIGHT: usize = 128;

/// Runs the futures to completion, `GROUP_IN_FLIGHT` at a time, each polled (so its request written)
/// before any reply is waited for; the results in order.
async fn together<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    futures_util::StreamExt::collect(futures_util::StreamExt::buffered(
        futures_util::stream::iter(futures),
        GROUP_IN_FLIGHT,
    ))
    .await
}

impl Cluster {
    /// Connects for an admin command (users): no view, no queue to speak of.
    pub async fn connect(
        spec: &str,
        fallback: Fallback,
        peer_timeout: u32,
        max_peers: usize,
        timeout: Duration,
    ) -> Result<Cluster, ClusterError> {
        let settings = Settings {
            fallback,
            peer_timeout,
            max_peers,
            sample: 1,
            view_ttl: Duration::ZERO,
            queue_max: 0,
        };
        Self::connect_with(spec, settings, timeout).await
    }

    /// Connects to the cluster (failing clearly within `timeout` if it does not answer) and checks it
    /// serves every slot.
    pub async fn connect_with(
        spec: &str,
        settings: Settings,
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
            client,
            conn: parking_lot::RwLock::new(conn),
            reconnected: parking_lot::Mutex::new(None),
            errors_seen: AtomicU64::new(0),
            announce: redis::Script::new(ANNOUNCE),
            counts: redis::Script::new(COUNTS),
            list: redis::Script::new(PUBLISH_LIST),
            fallback: settings.fallback,
            settings,
            up: AtomicBool::new(true),
            views: Views::new(settings.view_ttl),
            queue: Queue::new(settings.queue_max),
            view_answers: AtomicU64::new(0),
            view_scrapes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            waiting: Waiting::new(WAITING_MAX),
        })
    }

    fn conn(&self) -> ClusterConnection {
        self.conn.read().clone()
    }

    /// Makes a new connection, with a fresh slot map, if requests failed since the last call and the
    /// last new connection is at least `RECONNECT_EVERY` old. redis-rs refreshes its slot map on a
    /// `MOVED` reply, but when a master dies it only reconnects to the dead address, so the slots a
    /// replica took over would fail until something else refreshed the map.
    pub async fn reconnect(&self) {
        let errors = self.errors.load(Ordering::Relaxed);
        if self.errors_seen.swap(errors, Ordering::Relaxed) == errors {
            return;
        }
        let now = Instant::now();
        if self
            .reconnected
            .lock()
            .is_some_and(|at| now.duration_since(at) < RECONNECT_EVERY)
        {
            return;
        }
        *self.reconnected.lock() = Some(now);
        match tokio::time::timeout(RECONNECT_EVERY, self.client.get_async_connection()).await {
            Ok(Ok(conn)) => {
                *self.conn.write() = conn;
                tracing::debug!("cluster: new connection, slot map refreshed");
            }
            Ok(Err(e)) => tracing::debug!("cluster: reconnecting: {e}"),
            Err(_) => tracing::debug!("cluster: reconnecting timed out"),
        }
    }

    /// The connection-ID key of `period` (see `conn_id`), the same for every node: the first node to ask
    /// makes it (`mine`), and it expires two periods after its own.
    pub async fn period_key(
        &self,
        period: u64,
        mine: (u64, u64),
    ) -> Result<(u64, u64), ClusterError> {
        let mut conn = self.conn();
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
        let mut conn = self.conn();
        let v: Option<u64> = redis::cmd("GET")
            .arg(USERS_VERSION)
            .query_async(&mut conn)
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// Replaces the cluster's allow/deny list with `hashes`; the new list version.
    pub async fn publish_list(&self, hashes: &[InfoHash]) -> Result<u64, ClusterError> {
        let mut invocation = self.list.prepare_invoke();
        invocation.key(LIST).key(LIST_VERSION);
        for h in hashes {
            invocation.arg(&h[..]);
        }
        let mut conn = self.conn();
        Ok(invocation.invoke_async(&mut conn).await?)
    }

    /// The list's version (0 before any node published one).
    pub async fn list_version(&self) -> Result<u64, ClusterError> {
        let mut conn = self.conn();
        let v: Option<u64> = redis::cmd("GET")
            .arg(LIST_VERSION)
            .query_async(&mut conn)
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// The cluster's allow/deny list.
    pub async fn list(&self) -> Result<std::collections::HashSet<InfoHash>, ClusterError> {
        let mut conn = self.conn();
        let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(LIST)
            .query_async(&mut conn)
            .await?;
        members
            .iter()
            .map(|m| <[u8; 20]>::try_from(m.as_slice()).map(InfoHash::from))
            .collect::<Result<_, _>>()
            .map_err(|_| ClusterError::Reply)
    }

    /// Every passkey.
    pub async fn passkeys(&self) -> Result<std::collections::HashSet<String>, ClusterError> {
        let mut conn = self.conn();
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
        let mut conn = self.conn();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records whether the last request succeeded; logs once per change.
    fn note<T>(&self, result: &Result<T, ClusterError>) {
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.set_up(result.as_ref().err());
    }

    /// Records whether the cluster answers (`None`) or not; logs once per change.
    fn set_up(&self, error: Option<&ClusterError>) {
        let ok = error.is_none();
        if self.up.swap(ok, Ordering::Relaxed) != ok {
            match error {
                None => tracing::warn!("cluster reachable again"),
                Some(e) => tracing::warn!(
                    "cluster lost ({e}); announces are {}",
                    match self.fallback {
                        Fallback::Refuse => "refused until it is back",
                        Fallback::Local => "answered from this node's view until it is back",
                    }
                ),
            }
        }
    }

    /// Answers an announce from the swarm's view if it is fresh and holds enough peers, and queues its
    /// write (a join, leave or completion too: it reaches the cluster with the next flush); None when
    /// the announce must go to the cluster now (no fresh view, more peers wanted than it sampled, a
    /// full queue, or the cluster failing: then the fallback decides).
    pub fn from_view(&self, job: &Job) -> Option<Answer> {
        if !self.is_up() {
            return None;
        }
        let sample = self.views.fresh(&job.hash, Instant::now())?;
        if !sample.covers(job.want) || !self.queue.push(job.hash, job.update()) {
            return None;
        }
        self.view_answers.fetch_add(1, Ordering::Relaxed);
        Some(sample.answer(job, crate::store::random() as usize))
    }

    /// One announce: from the view, or to the cluster.
    pub async fn announce(&self, job: &Job) -> Result<Answer, ClusterError> {
        if let Some(answer) = self.from_view(job) {
            return Ok(answer);
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.announce_one(job).await
    }

    async fn announce_one(&self, job: &Job) -> Result<Answer, ClusterError> {
        let size = self.settings.sample.max(job.want + 1);
        let result = self.write(job.hash, &[job.update()], 0, size).await;
        self.note(&result);
        Ok(result?.answer(job, crate::store::random() as usize))
    }

    /// Runs the swarm script with `updates` (and `completed` completions besides those in them),
    /// sampling `size` peers per set; the reply refreshes the view.
    async fn write(
        &self,
        hash: InfoHash,
        updates: &[Update],
        completed: u64,
        size: usize,
    ) -> Result<Sample, ClusterError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let sample = self.write_inner(&hash, updates, completed, size).await?;
        self.views.put(hash, sample.clone(), sent);
        Ok(sample)
    }

    async fn write_inner(
        &self,
        hash: &InfoHash,
        updates: &[Update],
        completed: u64,
        size: usize,
    ) -> Result<Sample, ClusterError> {
        let completed = completed + updates.iter().filter(|u| u.completed).count() as u64;
        let mut conn = self.conn();
        let cmd = self.announce_cmd(hash, updates, completed, size, false);
        let reply: Value = match cmd.query_async(&mut conn).await {
            // A master that has not seen the script yet (new, or restarted): EVAL runs and caches it.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let cmd = self.announce_cmd(hash, updates, completed, size, true);
                cmd.query_async(&mut conn).await?
            }
            reply => reply?,
        };
        let Value::Array(items) = reply else {
            return Err(ClusterError::Reply);
        };
        let [c0, c1, c2, c3, p0, p1, p2, p3, done] = items.as_slice() else {
            return Err(ClusterError::Reply);
        };
        let mut sample = Sample {
            size,
            completed: int(done).ok_or(ClusterError::Reply)?,
            ..Sample::default()
        };
        for (k, (c, p)) in [(c0, p0), (c1, p1), (c2, p2), (c3, p3)]
            .into_iter()
            .enumerate()
        {
            sample.counts[k] = int(c).ok_or(ClusterError::Reply)?;
            peers(p, if k < 2 { 6 } else { 18 }, &mut sample.peers[k])
                .ok_or(ClusterError::Reply)?;
        }
        Ok(sample)
    }

    /// The announce script's command (`EVAL` with its text when `eval`, else `EVALSHA`), its keys and
    /// arguments written straight into the command's one buffer: `ScriptInvocation` would copy each
    /// into a buffer of its own first.
    fn announce_cmd(
        &self,
        hash: &InfoHash,
        updates: &[Update],
        completed: u64,
        size: usize,
        eval: bool,
    ) -> redis::Cmd {
        let mut cmd = redis::Cmd::with_capacity(13 + 2 * updates.len(), 320 + 24 * updates.len());
        if eval {
            cmd.arg("EVAL").arg(ANNOUNCE);
        } else {
            cmd.arg("EVALSHA").arg(self.announce.get_hash());
        }
        cmd.arg(5);
        let mut key = key_prefix(hash);
        for suffix in KEY_SUFFIXES {
            key[KEY_PREFIX..KEY_PREFIX + suffix.len()].copy_from_slice(suffix);
            cmd.arg(&key[..KEY_PREFIX + suffix.len()]);
        }
        cmd.arg(self.settings.peer_timeout)
            .arg(self.settings.max_peers)
            .arg(crate::store::random() as u32)
            .arg(size)
            .arg(u8::from(updates.iter().any(|u| u.may_create)))
            .arg(completed);
        for u in updates {
            let op = u.set + 1 + if u.stop { 4 } else { 0 };
            cmd.arg(u.member()).arg(op);
        }
        cmd
    }

    /// Announces in flight together: one round trip per cluster node for the lot, and one script call
    /// per swarm (announces to the same swarm share it, as in a flush, and are answered from its reply).
    pub async fn announce_all(&self, jobs: &[Job]) -> Vec<Result<Answer, ClusterError>> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        if jobs.len() == 1 {
            return vec![self.announce_one(&jobs[0]).await];
        }
        // Each swarm's announces, in order of first appearance.
        let mut swarm_of = Vec::with_capacity(jobs.len());
        let mut swarms: Vec<(InfoHash, Vec<Update>)> = Vec::new();
        let mut index: std::collections::HashMap<InfoHash, usize> =
            std::collections::HashMap::with_capacity(jobs.len());
        for job in jobs {
            let k = *index.entry(job.hash).or_insert_with(|| {
                swarms.push((job.hash, Vec::new()));
                swarms.len() - 1
            });
            swarms[k].1.push(job.update());
            swarm_of.push(k);
        }
        let samples = together(
            swarms
                .iter()
                .map(|(hash, updates)| {
                    let (one_each, completed) = coalesce(updates);
                    let extra = completed - one_each.iter().filter(|u| u.completed).count() as u64;
                    let size = one_each
                        .iter()
                        .map(|u| usize::from(u.want) + 1)
                        .max()
                        .unwrap_or(0)
                        .max(self.settings.sample);
                    async move {
                        let result = self.write(*hash, &one_each, extra, size).await;
                        self.note(&result);
                        result
                    }
                })
                .collect(),
        )
        .await;
        jobs.iter()
            .zip(swarm_of)
            .map(|(job, k)| match &samples[k] {
                Ok(sample) => Ok(sample.answer(job, crate::store::random() as usize)),
                Err(e) => Err(e.same()),
            })
            .collect()
    }

    /// Sends every queued write, one script call per swarm, all in flight together. Writes the cluster
    /// did not take go back in the queue for the next flush (those that do not fit are counted lost and
    /// logged).
    pub async fn flush(&self) {
        let queued = self.queue.take();
        if queued.is_empty() {
            return;
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        let calls: Vec<_> = queued
            .iter()
            .map(|(hash, updates)| {
                let (one_each, completed) = coalesce(updates);
                let extra = completed - one_each.iter().filter(|u| u.completed).count() as u64;
                // As many peers as this period's announcers asked for: most ask for the same.
                let size = one_each
                    .iter()
                    .map(|u| usize::from(u.want))
                    .max()
                    .unwrap_or(0)
                    + 1;
                async move { self.write(*hash, &one_each, extra, size).await }
            })
            .collect();
        // A bounded number in flight: redis-rs's cluster connection walks its in-flight requests on
        // every poll, so 10 000 at once cost more CPU on the node than the scripts cost the cluster.
        let results: Vec<_> = futures_util::StreamExt::collect(futures_util::StreamExt::buffered(
            futures_util::stream::iter(calls),
            FLUSH_IN_FLIGHT,
        ))
        .await;
        let (calls, mut failed, mut lost) = (results.len(), 0, 0);
        let mut first_error = None;
        for ((hash, updates), result) in queued.into_iter().zip(results) {
            if let Err(e) = result {
                failed += 1;
                first_error.get_or_insert(e);
                lost += self.queue.requeue(hash, updates);
            }
        }
        self.errors.fetch_add(failed, Ordering::Relaxed);
        // The state changes only when the whole flush went one way: while one master fails over, the
        // others' swarms keep being flushed, and the failed writes are retried by the next flush.
        if failed == 0 {
            self.set_up(None);
        } else if failed == calls as u64 {
            self.set_up(first_error.as_ref());
        }
        if lost > 0 {
            tracing::warn!(
                "{lost} peer refreshes lost: the cluster did not take them and the write queue is full"
            );
        }
    }

    /// A scrape from the swarm's view, if it is fresh (the same staleness as an announce answered
    /// from it).
    pub fn scrape_from_view(&self, hash: &InfoHash) -> Option<ScrapeStats> {
        if !self.is_up() {
            return None;
        }
        let stats = self.views.fresh(hash, Instant::now())?.stats();
        self.view_scrapes.fetch_add(1, Ordering::Relaxed);
        Some(stats)
    }

    /// One scrape: from the view, or from the cluster.
    pub async fn scrape(&self, hash: &InfoHash) -> Result<ScrapeStats, ClusterError> {
        if let Some(stats) = self.scrape_from_view(hash) {
            return Ok(stats);
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.scrape_one(hash).await
    }

    /// Scrapes of info-hashes no view answered, in flight together: one round trip per cluster node.
    pub async fn scrape_all(&self, hashes: &[InfoHash]) -> Vec<Result<ScrapeStats, ClusterError>> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        together(hashes.iter().map(|h| self.scrape_one(h)).collect()).await
    }

    async fn scrape_one(&self, hash: &InfoHash) -> Result<ScrapeStats, ClusterError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let result = self.scrape_inner(hash).await;
        self.note(&result);
        let sample = result?;
        let stats = sample.stats();
        self.views.put_counts(*hash, sample, sent);
        Ok(stats)
    }

    async fn scrape_inner(&self, hash: &InfoHash) -> Result<Sample, ClusterError> {
        let mut invocation = self.counts.prepare_invoke();
        for k in keys(hash) {
            invocation.key(k);
        }
        let mut conn = self.conn();
        let reply: Value = invocation.invoke_async(&mut conn).await?;
        let Value::Array(items) = &reply else {
            return Err(ClusterError::Reply);
        };
        let [c0, c1, c2, c3, done] = items.as_slice() else {
            return Err(ClusterError::Reply);
        };
        let mut sample = Sample {
            completed: int(done).ok_or(ClusterError::Reply)?,
            ..Sample::default()
        };
        for (k, c) in [c0, c1, c2, c3].into_iter().enumerate() {
            sample.counts[k] = int(c).ok_or(ClusterError::Reply)?;
        }
        Ok(sample)
    }
}

/// Adds a private user in the cluster and returns the passkey.
pub async fn add_user(cluster: &Cluster, name: &str) -> Result<String, crate::Error> {
    let passkey = crate::access::random_hex(16)?;
    let mut conn = cluster.conn();
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
    let mut conn = cluster.conn();
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
    let mut conn = cluster.conn();
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

/// The failure reason of an announce that found `WAITING_MAX` requests waiting on the cluster.
pub const BUSY: &str = "tracker busy: try again later";

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
        // Overload is not a lost cluster: answering from the node's own table would keep this peer's
        // write from the other nodes.
        Err(ClusterError::Busy) => Err(BUSY),
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
        let mut prefix = key_prefix(&[0xab; 20].into());
        for (suffix, key) in KEY_SUFFIXES.iter().zip(&k) {
            prefix[KEY_PREFIX..KEY_PREFIX + suffix.len()].copy_from_slice(suffix);
            assert_eq!(&prefix[..KEY_PREFIX + suffix.len()], key.as_bytes());
        }
    }
}
