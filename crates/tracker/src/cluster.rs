//! Swarms shared by several tracker nodes through a Redis (or Valkey) Cluster.
//!
//! Each swarm is one sorted set, `{<info-hash hex>}:p` (so one hash slot): its peers (IPv4 seeders, IPv4
//! leechers, IPv6 seeders, IPv6 leechers, one score band each), each member a compact address scored by
//! its band and the second it expires, and its completed downloads (see `ANNOUNCE`). An announce is one
//! atomic step of a Lua script on the slot's master: add, refresh or remove the announcing peer, count
//! the live peers, and sample up to `numwant` others. Its clock is the server's (`TIME`), so nodes with
//! skewed clocks agree. The key expires some minutes after its swarm's last announce's timeout, so a
//! dead swarm costs nothing and needs no sweep.
//!
//! Announces issued at once (a UDP worker's batch, a flush) are in flight together, and one script call
//! takes the steps of many swarms of one master: a batch costs one round trip per master, and the
//! master and the node pay per call, not per swarm, what a call costs beyond its steps.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::Value;
use serde::Deserialize;
use tracker_proto::{InfoHash, ScrapeStats};

use crate::cluster_view::{coalesce, Queue, Sample, Update, Views, SETS};
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

const ANNOUNCE: &str = r#"#!lua flags=allow-cross-slot-keys
-- KEYS[1]: the first swarm's key (the call goes to its slot's master).
-- ARGV: peer timeout, most peers per swarm, a random number, then per swarm: its key
--   ("{<info-hash hex>}:p"), peers to sample per set, whether its writes may create it (1|0),
--   completions to add, its number of writes n, then n pairs of (member, op): op 1..4 adds or
--   refreshes the member in that set, 5..8 removes it (stopped).
-- A swarm is one sorted set. A peer (its compact address) is scored band * 2^32 + the second it
-- expires, band 1..4 its set (IPv4 seeders, IPv4 leechers, IPv6 seeders, IPv6 leechers), so a peer
-- changing sets is one ZADD and each set's live peers are one score range; the member 'c' is scored
-- the swarm's completed downloads (below every band).
-- The swarms of one call are those the node believes one master holds: one whose slot is not this
-- master's (moved, or migrating) is left alone and marked so, for the node to send on its own.
-- Returns one string: per swarm a header (done or not here, four live counts, completed downloads,
-- four sample lengths in bytes) and the four samples, each a window of up to `want` members from a
-- random place among the set's live ones, concatenated.
local now = tonumber(redis.call('TIME')[1])
local timeout, cap, rnd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local BAND = 4294967296
-- Numbers handed to redis.call are formatted with printf each time: these once a call, and the
-- bands' bounds (k * 2^32) written out.
local band_from = {'4294967296', '8589934592', '12884901888', '17179869184'}
local band_end = {'(8589934592', '(12884901888', '(17179869184', '(21474836480'}
local score, live_from, dead_to = {}, {}, {}
for k = 1, 4 do
  score[k] = string.format('%d', k * BAND + now + timeout)
  live_from[k] = string.format('%d', k * BAND + now)
  dead_to[k] = '(' .. live_from[k]
end
-- Keys live until a whole number of 5 minutes past their last write's timeout: moved forward at
-- most once in 5 minutes, so most calls change (and replicate) no expiry.
local until_ = string.format('%d', math.ceil((now + timeout + 60) / 300) * 300)
local HEADER = '>BIIIIIIIII'
-- A swarm of at most TINY entries is read whole with its scores in one command (Redis 7.0 formats
-- each score with printf and Lua parses it back, about half a microsecond each, less than the two
-- or three commands it saves). Up to LISTPACK entries Redis keeps a swarm as a listpack, where
-- counting a range walks it: each set's live range is then read whole and counted here. Bigger
-- ones are a skip list, where counting is cheap and a window far into a range is reached by rank,
-- not by walking to it.
local TINY, LISTPACK = 8, 128
-- unpack is bounded by Lua's stack: long lists go in slices.
local function bulk(cmd, key, list)
  local done = 0
  for i = 1, #list, 1000 do
    done = done + redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
  return done
end
-- A window of up to `want` of the n members of `list`, at a place chosen by r.
local function window(list, n, want, r)
  local room = math.min(want, n)
  local first = 1 + r % (n - room + 1)
  return table.concat(list, '', first, first + room - 1)
end
-- A done step's part of the reply.
local function answer(n, completed, got)
  return struct.pack(HEADER, 1, n[1], n[2], n[3], n[4], completed, #got[1], #got[2], #got[3], #got[4])
    .. got[1] .. got[2] .. got[3] .. got[4]
end
local function swarm(at, r)
  local key, want, create, completions, writes = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2], tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  -- The first touch of the swarm's slot, as pcall: a slot this master does not serve is an error
  -- here, before anything of the swarm is written.
  local card = redis.pcall('ZCARD', key)
  if type(card) == 'table' then
    return string.rep('\0', 37)
  end
  local existed = card > 0
  if create == '0' and not existed then
    -- A new swarm its creator may not make (its per-source limit on the node): not tracked.
    return struct.pack(HEADER, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0)
  end
  -- A new swarm holds just what this step adds (the node sends each member once a step): its
  -- peers, set by set, are known here without reading them back.
  local adds, rems, new = {}, {}, nil
  if not existed then new = {{}, {}, {}, {}} end
  for i = at + 5, at + 4 + 2 * writes, 2 do
    local m, k = ARGV[i], tonumber(ARGV[i + 1])
    if k > 4 then
      rems[#rems + 1] = m
    else
      adds[#adds + 1] = score[k]
      adds[#adds + 1] = m
      if new then local l = new[k]; l[#l + 1] = m end
    end
  end
  if #rems > 0 then card = card - bulk('ZREM', key, rems) end
  if #adds > 0 then
    -- The entries (live or not) bound the live peers: under the cap, everything is added at once.
    if card + #adds / 2 <= cap then
      card = card + bulk('ZADD', key, adds)
    else
      new = nil
      local live = 0
      for k = 1, 4 do live = live + redis.call('ZCOUNT', key, live_from[k], band_end[k]) end
      for i = 1, #adds, 2 do
        if live < cap then
          local added = redis.call('ZADD', key, adds[i], adds[i + 1])
          live, card = live + added, card + added
        else
          redis.call('ZADD', key, 'XX', adds[i], adds[i + 1])
        end
      end
    end
  end
  local completed
  if completions > 0 then
    completed = tonumber(redis.call('ZINCRBY', key, completions, 'c'))
    if completed == completions then card = card + 1 end
  end
  if card <= 0 then
    return struct.pack(HEADER, 1, 0, 0, 0, 0, completed or 0, 0, 0, 0, 0)
  end
  -- A key that is new gets an expiry; one that had one only a later one.
  if existed then redis.call('EXPIREAT', key, until_, 'GT') else redis.call('EXPIREAT', key, until_) end
  local n, got = {0, 0, 0, 0}, {'', '', '', ''}
  -- Each set's live peers, when the swarm is known whole.
  local lists = new
  if not lists and card <= TINY then
    local all = redis.call('ZRANGE', key, '0', '-1', 'WITHSCORES')
    local dead = {}
    lists = {{}, {}, {}, {}}
    for i = 1, #all, 2 do
      local s = tonumber(all[i + 1])
      local k = math.floor(s / BAND)
      if k == 0 then
        completed = completed or s
      elseif k <= 4 then
        if s - k * BAND >= now then
          local l = lists[k]
          l[#l + 1] = all[i]
        else
          dead[#dead + 1] = all[i]
        end
      end
    end
    -- Expired peers of a tiny swarm are known here: gone at once.
    if #dead > 0 then redis.call('ZREM', key, unpack(dead)) end
  end
  if lists then
    for k = 1, 4 do
      n[k] = #lists[k]
      if n[k] > 0 and want > 0 then got[k] = window(lists[k], n[k], want, r) end
    end
    return answer(n, completed or 0, got)
  end
  completed = completed or tonumber(redis.call('ZSCORE', key, 'c') or '0') or 0
  -- Expired peers are skipped when counting and sampling (the lowest scores of their band), and
  -- removed on about one step in 16, which bounds what they cost.
  local last = redis.call('ZCOUNT', key, live_from[3], '+inf') > 0 and 4 or 2
  for k = 1, last do
    if r % 16 == 0 then
      redis.call('ZREMRANGEBYSCORE', key, band_from[k], dead_to[k])
    end
    if card <= LISTPACK and want > 0 then
      local live = redis.call('ZRANGE', key, live_from[k], band_end[k], 'BYSCORE')
      n[k] = #live
      if n[k] > 0 then got[k] = window(live, n[k], want, r) end
    else
      n[k] = redis.call('ZCOUNT', key, live_from[k], band_end[k])
      if n[k] > 0 and want > 0 then
        local room = math.min(want, n[k])
        local skip = r % (n[k] - room + 1)
        local peers
        if skip == 0 then
          peers = redis.call('ZRANGE', key, live_from[k], band_end[k], 'BYSCORE', 'LIMIT', 0, room)
        else
          local first = redis.call('ZCOUNT', key, '-inf', dead_to[k]) + skip
          peers = redis.call('ZRANGE', key, first, first + room - 1)
        end
        got[k] = table.concat(peers)
      end
    end
  end
  return answer(n, completed or 0, got)
end
local out, at, i = {}, 4, 0
while at <= #ARGV do
  out[#out + 1] = swarm(at, rnd + i * 7919)
  at = at + 5 + 2 * tonumber(ARGV[at + 4])
  i = i + 1
end
return table.concat(out)
"#;

const COUNTS: &str = r#"
local now = tonumber(redis.call('TIME')[1])
local BAND = 4294967296
local out = {}
for k = 1, 4 do
  out[k] = redis.call('ZCOUNT', KEYS[1], string.format('%d', k * BAND + now), string.format('(%d', (k + 1) * BAND))
end
out[5] = tonumber(redis.call('ZSCORE', KEYS[1], 'c') or '0') or 0
return out
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
    /// Each slot's master as last read (`slot_owners`; empty before the first reading).
    slots: parking_lot::RwLock<std::sync::Arc<Vec<u16>>>,
    slots_read: parking_lot::Mutex<Option<Instant>>,
    /// Set when a call found a swarm on another master than the map said: read it again.
    slots_stale: AtomicBool,
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

/// Bytes of a swarm's key, `{<info-hash hex>}:p`.
const KEY_LEN: usize = 44;

/// A swarm's key: its hash tag is the info-hash in hex, so it has one slot.
fn key(hash: &InfoHash) -> [u8; KEY_LEN] {
    let mut key = [0; KEY_LEN];
    key[0] = b'{';
    for (i, b) in hash.iter().enumerate() {
        key[1 + 2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
        key[2 + 2 * i] = b"0123456789abcdef"[usize::from(b & 15)];
    }
    key[41..].copy_from_slice(b"}:p");
    key
}

fn int(v: &Value) -> Option<u32> {
    match v {
        Value::Int(n) => u32::try_from(*n).ok(),
        _ => None,
    }
}

/// Least time between two new connections made because requests failed.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// Most swarms in one script call. A call of many costs the master less than as many calls (and the
/// node far less), but runs as one step: about 20 µs a swarm, so this bounds it near a millisecond.
const STEPS_PER_CALL: usize = 48;

/// How often a node re-reads the slot map (sooner when a call found a swarm on another master).
const SLOTS_EVERY: Duration = Duration::from_secs(2);

/// One swarm's step of the announce script: its writes (one per peer), the completions they carry,
/// and the peers to sample per set.
struct Step {
    hash: InfoHash,
    updates: Vec<Update>,
    completed: u64,
    size: usize,
}

impl Step {
    /// The step for a swarm's queued or concurrent writes: as many peers sampled as its announcers
    /// asked for (most ask for the same), one more as the announcer itself may be among them.
    fn of(hash: InfoHash, updates: &[Update]) -> Step {
        let (updates, completed) = coalesce(updates);
        let size = updates
            .iter()
            .map(|u| usize::from(u.want))
            .max()
            .unwrap_or(0)
            + 1;
        Step {
            hash,
            updates,
            completed,
            size,
        }
    }
}

/// The slot of a swarm's keys: CRC16 (XMODEM) of its hash tag, the info-hash in hex.
fn slot(hash: &InfoHash) -> u16 {
    let key = key(hash);
    let mut crc: u16 = 0;
    for &b in &key[1..41] {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// Each slot's master (an index, the same for the same master) from a `CLUSTER SLOTS` reply.
fn slot_owners(reply: &Value) -> Option<Vec<u16>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut owners = vec![u16::MAX; 16384];
    let mut masters: Vec<(&[u8], i64)> = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let [Value::Int(start), Value::Int(end), Value::Array(master), ..] = fields.as_slice()
        else {
            return None;
        };
        let [Value::BulkString(host), Value::Int(port), ..] = master.as_slice() else {
            return None;
        };
        let at = match masters
            .iter()
            .position(|&(h, p)| h == host.as_slice() && p == *port)
        {
            Some(at) => at,
            None => {
                masters.push((host, *port));
                masters.len() - 1
            }
        };
        let start = usize::try_from(*start).ok()?;
        let end = usize::try_from(*end).ok()?;
        owners.get_mut(start..=end)?.fill(u16::try_from(at).ok()?);
    }
    Some(owners)
}

/// Bytes of a step's header in the script's reply: done (1) or not this master's (0), four counts,
/// completed downloads, four sample lengths.
const STEP_HEADER: usize = 37;

/// One step's part of the script's reply (taken off the front of `rest`): Some(None) when its slot
/// was not the master's, None when the reply is malformed.
fn parse_step(rest: &mut &[u8], size: usize) -> Option<Option<Sample>> {
    let header = rest.get(..STEP_HEADER)?;
    let field = |i: usize| {
        let at = 1 + 4 * i;
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if header[0] == 0 {
        *rest = &rest[STEP_HEADER..];
        return Some(None);
    }
    let mut sample = Sample {
        size,
        completed: field(4),
        ..Sample::default()
    };
    let mut at = STEP_HEADER;
    for k in 0..SETS {
        sample.counts[k] = field(k);
        let len = usize::try_from(field(5 + k)).ok()?;
        if len % if k < 2 { 6 } else { 18 } != 0 {
            return None;
        }
        sample.peers[k] = rest.get(at..at + len)?.to_vec();
        at += len;
    }
    *rest = &rest[at..];
    Some(Some(sample))
}

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
            slots: parking_lot::RwLock::new(std::sync::Arc::new(Vec::new())),
            slots_read: parking_lot::Mutex::new(None),
            slots_stale: AtomicBool::new(false),
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
        let mut updates = self.queue.take_swarm(&job.hash);
        let queued = updates.len();
        updates.push(job.update());
        let result = self
            .run(&[Step::of(job.hash, &updates)])
            .await
            .pop()
            .unwrap_or(Err(ClusterError::Reply));
        self.note(&result);
        if result.is_err() && queued > 0 {
            updates.truncate(queued);
            self.queue.requeue(job.hash, updates);
        }
        Ok(result?.answer(job, crate::store::random() as usize))
    }

    /// Runs the swarm script for each step, those of one master (as this node last read the slot map)
    /// together in calls of up to `STEPS_PER_CALL`, all calls in flight at once; a step whose slot the
    /// master did not serve is sent again on its own, where the client follows the cluster's redirect.
    /// Each reply refreshes its swarm's view. The results in the order of `steps`.
    async fn run(&self, steps: &[Step]) -> Vec<Result<Sample, ClusterError>> {
        self.requests
            .fetch_add(steps.len() as u64, Ordering::Relaxed);
        let sent = Instant::now();
        let slots = self.slots.read().clone();
        let mut by_master: std::collections::HashMap<u16, Vec<usize>> =
            std::collections::HashMap::new();
        let mut calls: Vec<Vec<usize>> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            match slots.get(usize::from(slot(&step.hash))) {
                Some(&master) if master != u16::MAX => by_master.entry(master).or_default().push(i),
                // Owner unknown: a call of its own, routed by the client.
                _ => calls.push(vec![i]),
            }
        }
        for indices in by_master.into_values() {
            calls.extend(indices.chunks(STEPS_PER_CALL).map(<[usize]>::to_vec));
        }
        let mut results: Vec<Option<Result<Sample, ClusterError>>> =
            (0..steps.len()).map(|_| None).collect();
        let mut again = Vec::new();
        let replies = together(calls.iter().map(|c| self.call(steps, c)).collect()).await;
        for (call, reply) in calls.iter().zip(replies) {
            match reply {
                Ok(samples) => {
                    for (&i, sample) in call.iter().zip(samples) {
                        match sample {
                            Some(sample) => results[i] = Some(Ok(sample)),
                            None => again.push(i),
                        }
                    }
                }
                Err(e) => {
                    for &i in call {
                        results[i] = Some(Err(e.same()));
                    }
                }
            }
        }
        if !again.is_empty() {
            self.slots_stale.store(true, Ordering::Relaxed);
            let alone: Vec<[usize; 1]> = again.iter().map(|&i| [i]).collect();
            let replies = together(alone.iter().map(|c| self.call(steps, c)).collect()).await;
            for (&i, reply) in again.iter().zip(replies) {
                results[i] = Some(match reply {
                    Ok(mut samples) => samples.pop().flatten().ok_or(ClusterError::Reply),
                    Err(e) => Err(e),
                });
            }
        }
        results
            .into_iter()
            .zip(steps)
            .map(|(result, step)| {
                let result = result.unwrap_or(Err(ClusterError::Reply));
                if let Ok(sample) = &result {
                    self.views.put(step.hash, sample.clone(), sent);
                }
                result
            })
            .collect()
    }

    /// One script call for the steps at `indices` (one master's, as far as this node knows): a
    /// sample for each, or None for one whose slot that master does not serve.
    async fn call(
        &self,
        steps: &[Step],
        indices: &[usize],
    ) -> Result<Vec<Option<Sample>>, ClusterError> {
        let mut conn = self.conn();
        let cmd = self.announce_cmd(steps, indices, false);
        let reply: Value = match cmd.query_async(&mut conn).await {
            // A master that has not seen the script yet (new, or restarted): EVAL runs and caches it.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let cmd = self.announce_cmd(steps, indices, true);
                cmd.query_async(&mut conn).await?
            }
            reply => reply?,
        };
        let Value::BulkString(blob) = reply else {
            return Err(ClusterError::Reply);
        };
        let mut rest = blob.as_slice();
        let samples = indices
            .iter()
            .map(|&i| parse_step(&mut rest, steps[i].size))
            .collect::<Option<Vec<_>>>()
            .ok_or(ClusterError::Reply)?;
        if !rest.is_empty() {
            return Err(ClusterError::Reply);
        }
        Ok(samples)
    }

    /// The announce script's command for the steps at `indices` (`EVAL` with its text when `eval`,
    /// else `EVALSHA`), its arguments written straight into the command's one buffer.
    fn announce_cmd(&self, steps: &[Step], indices: &[usize], eval: bool) -> redis::Cmd {
        let writes: usize = indices.iter().map(|&i| steps[i].updates.len()).sum();
        let mut cmd = redis::Cmd::with_capacity(
            7 + 5 * indices.len() + 2 * writes,
            100 + 64 * indices.len() + 24 * writes,
        );
        if eval {
            cmd.arg("EVAL").arg(ANNOUNCE);
        } else {
            cmd.arg("EVALSHA").arg(self.announce.get_hash());
        }
        // The first swarm's key routes the call.
        let first = indices.first().map_or([0; 20].into(), |&i| steps[i].hash);
        cmd.arg(1).arg(&key(&first)[..]);
        cmd.arg(self.settings.peer_timeout)
            .arg(self.settings.max_peers)
            .arg(crate::store::random() as u32);
        for &i in indices {
            let step = &steps[i];
            cmd.arg(&key(&step.hash)[..])
                .arg(step.size)
                .arg(u8::from(step.updates.iter().any(|u| u.may_create)))
                .arg(step.completed)
                .arg(step.updates.len());
            for u in &step.updates {
                let op = u.set + 1 + if u.stop { 4 } else { 0 };
                cmd.arg(u.member()).arg(op);
            }
        }
        cmd
    }

    /// Announces in flight together: one step per swarm (announces to the same swarm share
    /// it, as in a flush, and are answered from its reply), those of one master in one call.
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
        // Each swarm's queued writes come first: this call carries them instead of the next flush.
        let mut queued = Vec::new();
        for job in jobs {
            let k = *index.entry(job.hash).or_insert_with(|| {
                let taken = self.queue.take_swarm(&job.hash);
                queued.push(taken.len());
                swarms.push((job.hash, taken));
                swarms.len() - 1
            });
            swarms[k].1.push(job.update());
            swarm_of.push(k);
        }
        let steps: Vec<Step> = swarms
            .iter()
            .map(|(hash, updates)| Step::of(*hash, updates))
            .collect();
        let samples = self.run(&steps).await;
        for (((hash, mut updates), n), result) in swarms.into_iter().zip(queued).zip(&samples) {
            self.note(result);
            if result.is_err() && n > 0 {
                updates.truncate(n);
                self.queue.requeue(hash, updates);
            }
        }
        jobs.iter()
            .zip(swarm_of)
            .map(|(job, k)| match &samples[k] {
                Ok(sample) => Ok(sample.answer(job, crate::store::random() as usize)),
                Err(e) => Err(e.same()),
            })
            .collect()
    }

    /// Sends every queued write, one step per swarm, in calls of one master's swarms, all in flight
    /// together. Writes the cluster did not take go back in the queue for the next flush (those that
    /// do not fit are counted lost and logged).
    pub async fn flush(&self) {
        let queued = self.queue.take();
        if queued.is_empty() {
            return;
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        let (hashes, updates): (Vec<InfoHash>, Vec<Vec<Update>>) = queued.into_iter().unzip();
        self.views.refreshing(&hashes);
        let steps: Vec<Step> = hashes
            .iter()
            .zip(&updates)
            .map(|(hash, updates)| Step::of(*hash, updates))
            .collect();
        let results = self.run(&steps).await;
        let (calls, mut failed, mut lost) = (results.len(), 0, 0);
        let mut first_error = None;
        for ((hash, updates), result) in hashes.into_iter().zip(updates).zip(results) {
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

    /// Reads which master serves each slot, when the last reading is older than `SLOTS_EVERY` or a
    /// call found a swarm elsewhere. Until the first reading every swarm is a call of its own.
    pub async fn refresh_slots(&self) {
        let now = Instant::now();
        let due = self
            .slots_read
            .lock()
            .is_none_or(|at| now.duration_since(at) >= SLOTS_EVERY);
        if !due && !self.slots_stale.swap(false, Ordering::Relaxed) {
            return;
        }
        *self.slots_read.lock() = Some(now);
        let mut conn = self.conn();
        let read = tokio::time::timeout(
            REQUEST_DEADLINE,
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut conn),
        )
        .await;
        match read {
            Ok(Ok(reply)) => match slot_owners(&reply) {
                Some(owners) => *self.slots.write() = std::sync::Arc::new(owners),
                None => tracing::debug!("cluster: unexpected CLUSTER SLOTS reply"),
            },
            Ok(Err(e)) => tracing::debug!("cluster: reading the slot map: {e}"),
            Err(_) => tracing::debug!("cluster: reading the slot map timed out"),
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
        invocation.key(&key(hash)[..]);
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
    fn slots_as_the_cluster_computes_them() {
        // `CLUSTER KEYSLOT` of these swarms' keys.
        assert_eq!(slot(&[0xab; 20].into()), 15_228);
        assert_eq!(slot(&[0; 20].into()), 12_409);
    }

    #[test]
    fn a_calls_reply_is_read_step_by_step() {
        let header = |done: u8, fields: [u32; 9]| {
            let mut h = vec![done];
            for f in fields {
                h.extend_from_slice(&f.to_be_bytes());
            }
            h
        };
        // A step done (one IPv4 seeder sampled of 2, one leecher, 3 completed), one not this
        // master's, one done and empty.
        let mut blob = header(1, [2, 1, 0, 0, 3, 6, 6, 0, 0]);
        blob.extend_from_slice(b"AAAAAABBBBBB");
        blob.extend(header(0, [0; 9]));
        blob.extend(header(1, [0; 9]));
        let mut rest = blob.as_slice();
        let first = parse_step(&mut rest, 31).unwrap().unwrap();
        assert_eq!(
            (first.counts, first.completed, first.size),
            ([2, 1, 0, 0], 3, 31)
        );
        assert_eq!(
            (&first.peers[0][..], &first.peers[1][..]),
            (&b"AAAAAA"[..], &b"BBBBBB"[..])
        );
        assert_eq!(parse_step(&mut rest, 31), Some(None));
        assert_eq!(parse_step(&mut rest, 31).unwrap().unwrap().counts, [0; 4]);
        assert!(rest.is_empty());
        // Truncated, or a sample of a length no address has: malformed.
        assert_eq!(parse_step(&mut &blob[..40], 31), None);
        let mut odd = header(1, [1, 0, 0, 0, 0, 5, 0, 0, 0]);
        odd.extend_from_slice(b"AAAAA");
        assert_eq!(parse_step(&mut odd.as_slice(), 31), None);
    }

    #[test]
    fn the_slot_map_names_each_slots_master() {
        let node = |port: i64| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |start, end, port| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                node(port),
                node(port + 3),
            ])
        };
        let reply = Value::Array(vec![
            range(0, 5460, 7000),
            range(5461, 10922, 7001),
            range(10923, 16383, 7000),
        ]);
        let owners = slot_owners(&reply).unwrap();
        assert_eq!(
            (owners[0], owners[5460], owners[5461], owners[16383]),
            (0, 0, 1, 0)
        );
        assert!(slot_owners(&Value::Array(vec![range(0, 16384, 7000)])).is_none());
    }

    #[test]
    fn one_slot_per_swarm() {
        let tag = format!("{{{}}}", "ab".repeat(20));
        assert_eq!(&key(&[0xab; 20].into())[..], format!("{tag}:p").as_bytes());
    }
}

/// The announce script run on a `redis-server` of its own (started here, on a Unix socket): what it
/// samples, byte for byte, from swarms with expired peers below the live ones in each set.
#[cfg(test)]
mod script_tests {
    use super::*;

    /// A `redis-server` child, stopped on drop.
    struct Server {
        child: std::process::Child,
        conn: redis::Connection,
        _dir: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn server() -> Option<Server> {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                assert!(std::env::var("CI").is_err(), "redis-server is needed: {e}");
                eprintln!("skipped: redis-server is not installed");
                return None;
            }
        };
        let client = redis::Client::open(format!("redis+unix://{}", socket.display())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let conn = loop {
            match client.get_connection() {
                Ok(conn) => break conn,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("redis-server did not answer: {e}"),
            }
        };
        Some(Server {
            child,
            conn,
            _dir: dir,
        })
    }

    const BAND: u64 = 1 << 32;

    /// One step with no writes on `key`, sampling `want` per set with the random number `rnd`.
    fn sample(conn: &mut redis::Connection, key: &str, want: usize, rnd: u32) -> Sample {
        step(conn, key, want, rnd, 0, &[])
    }

    /// One step on `key` with `completions` and `writes` (member, op as the script takes it).
    fn step(
        conn: &mut redis::Connection,
        key: &str,
        want: usize,
        rnd: u32,
        completions: u32,
        writes: &[(Vec<u8>, u8)],
    ) -> Sample {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ANNOUNCE)
            .arg(1)
            .arg(key)
            .arg(3600)
            .arg(100_000)
            .arg(rnd);
        cmd.arg(key)
            .arg(want)
            .arg(1)
            .arg(completions)
            .arg(writes.len());
        for (member, op) in writes {
            cmd.arg(&member[..]).arg(*op);
        }
        let reply: Value = cmd.query(conn).unwrap();
        let Value::BulkString(blob) = reply else {
            panic!("{reply:?}")
        };
        let mut rest = blob.as_slice();
        let sample = parse_step(&mut rest, want).unwrap().unwrap();
        assert!(rest.is_empty());
        sample
    }

    #[test]
    fn samples_are_windows_of_live_peers_whatever_the_encoding() {
        let Some(mut server) = server() else { return };
        let conn = &mut server.conn;
        let (now, _): (u64, u64) = redis::cmd("TIME").query(conn).unwrap();
        // (live, expired) peers in the IPv4 seeders' and leechers' sets: a swarm of 8 entries (read
        // whole with scores), one Redis keeps as a listpack (each set's live range counted and
        // sampled in Lua), and one past 128 entries (a skip list: counted by Redis, its window
        // reached by rank).
        for (key, sets) in [
            ("{ab}:p", [(2u64, 1u64), (3, 1)]),
            ("{aa}:p", [(20, 7), (30, 5)]),
            ("{bb}:p", [(70, 12), (90, 9)]),
        ] {
            let mut live: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
            let _: () = redis::cmd("ZADD")
                .arg(key)
                .arg(3)
                .arg("c")
                .query(conn)
                .unwrap();
            for (k, &(alive, expired)) in sets.iter().enumerate() {
                let band = k as u64 + 1;
                for i in 0..alive + expired {
                    let member = vec![10, band as u8, (i >> 8) as u8, i as u8, 0x1a, 0xe1];
                    // Expired peers a little before now; live ones expiring in order of i.
                    let expires = if i < expired {
                        now - 1 - i
                    } else {
                        now + 600 + i
                    };
                    if i >= expired {
                        live[k].push(member.clone());
                    }
                    let _: () = redis::cmd("ZADD")
                        .arg(key)
                        .arg(band * BAND + expires)
                        .arg(member)
                        .query(conn)
                        .unwrap();
                }
            }
            let entries = 1 + sets.iter().map(|&(a, e)| a + e).sum::<u64>();
            let encoding: String = redis::cmd("OBJECT")
                .arg("ENCODING")
                .arg(key)
                .query(conn)
                .unwrap();
            assert_eq!(
                encoding,
                if entries > 128 {
                    "skiplist"
                } else {
                    "listpack"
                }
            );
            for want in [0, 10, 31, 200] {
                // Random numbers that are not multiples of 16, which prune expired peers.
                for rnd in (1..60u32).filter(|r| r % 16 != 0) {
                    let got = sample(conn, key, want, rnd);
                    assert_eq!(got.completed, 3);
                    for (k, live) in live.iter().enumerate() {
                        let n = live.len();
                        assert_eq!(got.counts[k] as usize, n, "{key} set {k}");
                        let room = want.min(n);
                        let skip = rnd as usize % (n - room + 1);
                        let expected: Vec<u8> = live[skip..skip + room].concat();
                        assert_eq!(
                            got.peers[k], expected,
                            "{key} set {k} want {want} rnd {rnd}"
                        );
                    }
                    assert_eq!(&got.counts[2..], &[0, 0]);
                }
            }
            // Up to 8 entries, read whole with their scores, the expired ones are removed at once;
            // else on a step in 16.
            let live_entries = 1 + (live[0].len() + live[1].len()) as u64;
            let card: u64 = redis::cmd("ZCARD").arg(key).query(conn).unwrap();
            assert_eq!(card, if entries <= 8 { live_entries } else { entries });
            // A step whose random number is a multiple of 16 removes the expired ones, and sees
            // the same.
            let got = sample(conn, key, 31, 32);
            assert_eq!(
                got.counts[..2],
                [live[0].len() as u32, live[1].len() as u32]
            );
            let card: u64 = redis::cmd("ZCARD").arg(key).query(conn).unwrap();
            assert_eq!(card, live_entries);
        }
    }

    #[test]
    fn a_new_swarm_answers_with_what_its_first_step_added() {
        let Some(mut server) = server() else { return };
        let conn = &mut server.conn;
        let v4 = |i: u8| vec![10, 0, 0, i, 0x1a, 0xe1];
        let v6 = |i: u8| {
            let mut m = vec![0x20, 0x01, 0x0d, 0xb8];
            m.resize(15, 0);
            m.extend([i, 0x1a, 0xe1]);
            m
        };
        // Three seeders, four leechers, an IPv6 leecher, a peer that stopped before it was ever
        // there, two completions.
        let mut writes: Vec<(Vec<u8>, u8)> = (1..=3).map(|i| (v4(i), 1)).collect();
        writes.extend((4..=7).map(|i| (v4(i), 2)));
        writes.push((v6(1), 4));
        writes.push((v4(9), 6));
        let sets = |sample: &Sample| -> Vec<Vec<Vec<u8>>> {
            (0..SETS)
                .map(|k| {
                    let width = if k < 2 { 6 } else { 18 };
                    let mut peers: Vec<Vec<u8>> =
                        sample.peers[k].chunks(width).map(<[u8]>::to_vec).collect();
                    peers.sort();
                    peers
                })
                .collect()
        };
        let first = step(conn, "{cc}:p", 31, 5, 2, &writes);
        assert_eq!((first.counts, first.completed), ([3, 4, 0, 1], 2));
        let expected = vec![
            (1..=3).map(v4).collect::<Vec<_>>(),
            (4..=7).map(v4).collect(),
            Vec::new(),
            vec![v6(1)],
        ];
        assert_eq!(sets(&first), expected);
        // Read back from Redis, the swarm is the same.
        let again = sample(conn, "{cc}:p", 31, 5);
        assert_eq!((again.counts, again.completed), ([3, 4, 0, 1], 2));
        assert_eq!(sets(&again), expected);
        let card: u64 = redis::cmd("ZCARD").arg("{cc}:p").query(conn).unwrap();
        assert_eq!(card, 9);
        // A window of a new swarm's set, when fewer are wanted than it holds.
        let few = step(conn, "{dd}:p", 2, 1, 0, &writes[3..7]);
        assert_eq!(few.counts, [0, 4, 0, 0]);
        assert_eq!(few.peers[1], [v4(5), v4(6)].concat());
    }
}
