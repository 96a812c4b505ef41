//! The shared queue's Redis side: each operation one Lua script, so each is atomic.
//!
//! Keys (under `REDIS_PREFIX`): `q` sorted set of waiting users by arrival number, `qe` hash of
//! their [`Entry`]s (JSON), `qn` hash of their nodes, `seq` the arrival counter, `matches` the
//! cluster's match counter, `blk:<user>` the set of users `<user>` must not meet (with the block
//! lifetime as TTL), `claimed:<user>` the id of the user's last claimed search (for a minute:
//! that search is never published again), `sess:<user>` the node holding the session of a user
//! whose connection dropped (for the reconnection grace), `node:<id>` a node's heartbeat (TTL),
//! `nodes` hash of every node's last figures.

use fred::prelude::*;

use super::{Cluster, Entry, NodeFigures, SNAPSHOT_LIMIT};

/// Publishes (or refreshes) a search and returns the live queue, longest-waiting first, with the
/// searcher's blocks. Entries of nodes whose heartbeat expired are left out. Returns `taken`,
/// publishing nothing, when a user of the same id waits on another live node (ids are unique in
/// the cluster as on one node: nobody takes over another's place in the queue).
const SEARCH: &str = r#"
local me, node = ARGV[1], ARGV[3]
if redis.call('GET', ARGV[6] .. me) == ARGV[7] then return {{}, {}} end
local owner = redis.call('HGET', KEYS[3], me)
if owner and owner ~= node and redis.call('EXISTS', ARGV[5] .. owner) == 1 then
  return 'taken'
end
if redis.call('HEXISTS', KEYS[2], me) == 0 then
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[4]), me)
end
redis.call('HSET', KEYS[2], me, ARGV[2])
redis.call('HSET', KEYS[3], me, node)
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)
local out = {}
if #ids > 0 then
  local entries = redis.call('HMGET', KEYS[2], unpack(ids))
  local nodes = redis.call('HMGET', KEYS[3], unpack(ids))
  local alive = {}
  for i = 1, #ids do
    local n = nodes[i]
    if entries[i] and n then
      if alive[n] == nil then
        alive[n] = (n == node) or redis.call('EXISTS', ARGV[5] .. n) == 1
      end
      if alive[n] then out[#out + 1] = entries[i] end
    end
  end
end
return {out, redis.call('SMEMBERS', KEYS[5])}
"#;

/// Takes `ARGV[1]` (the searcher) and `ARGV[2]` out of the queue together, if both still wait
/// and `ARGV[2]`'s node is alive. Returns `ARGV[2]`'s arrival number (> 0) on success, 0 when
/// `ARGV[2]` is gone, -1 when the searcher itself is gone (someone took it).
const CLAIM: &str = r#"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then return 0 end
local n = redis.call('HGET', KEYS[3], ARGV[2])
if not n or redis.call('EXISTS', ARGV[3] .. n) == 0 then return 0 end
local seq = redis.call('ZSCORE', KEYS[1], ARGV[2])
for i = 1, 2 do
  local e = cjson.decode(redis.call('HGET', KEYS[2], ARGV[i]))
  redis.call('SET', ARGV[4] .. ARGV[i], string.format('%d', e['search'] or 0), 'PX', 60000)
end
redis.call('ZREM', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[4])
return tonumber(seq)
"#;

/// Puts a claimed entry back at its old place (its partner vanished before the room opened),
/// unless its own node took that search back meanwhile (the claim marker no longer holds its
/// id): a user who left must not reappear in the queue.
const REQUEUE: &str = r#"
if redis.call('GET', ARGV[5] .. ARGV[1]) ~= ARGV[6] then return 0 end
redis.call('DEL', ARGV[5] .. ARGV[1])
redis.call('ZADD', KEYS[1], tonumber(ARGV[4]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1
"#;

/// Takes a user's search out of the queue, if this node published it. A search claimed
/// meanwhile is marked as gone, so that it is not put back (see [`REQUEUE`]).
const DEQUEUE: &str = r#"
if redis.call('EXISTS', ARGV[3] .. ARGV[1]) == 1 then
  redis.call('SET', ARGV[3] .. ARGV[1], 'gone', 'PX', 60000)
end
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"#;

/// Renews this node's heartbeat (only when `ARGV[5]` is 1: its inbox hears its channel) and
/// figures; returns every known node as `{id, figures,
/// alive}`, the match counter, and whether the heartbeat was still there (0 after a Redis
/// restart or a silence longer than the TTL).
const BEAT: &str = r#"
local had = redis.call('EXISTS', ARGV[3] .. ARGV[1])
if ARGV[5] == '1' then
  redis.call('SET', ARGV[3] .. ARGV[1], ARGV[2], 'PX', tonumber(ARGV[4]))
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  out[#out + 1] = {all[i], all[i + 1], redis.call('EXISTS', ARGV[3] .. all[i])}
end
return {out, tonumber(redis.call('GET', KEYS[2]) or '0'), had}
"#;

/// Forgets a node: its queue entries and its figures.
const PURGE: &str = r#"
local all = redis.call('HGETALL', KEYS[3])
local gone = 0
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then
    redis.call('ZREM', KEYS[1], all[i])
    redis.call('HDEL', KEYS[2], all[i])
    redis.call('HDEL', KEYS[3], all[i])
    gone = gone + 1
  end
end
redis.call('HDEL', KEYS[4], ARGV[1])
return gone
"#;

fn queue_keys(c: &Cluster) -> Vec<String> {
    vec![c.key("q"), c.key("qe"), c.key("qn")]
}

fn strings(v: Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.into_iter().filter_map(|i| i.as_string()).collect(),
        _ => Vec::new(),
    }
}

/// See [`SEARCH`]: the live queue (entries that do not parse are skipped) and the blocks, or
/// `None` when the id waits on another node.
pub(crate) async fn search(
    c: &Cluster,
    me: &Entry,
) -> Result<Option<(Vec<Entry>, Vec<String>)>, Error> {
    let mut keys = queue_keys(c);
    keys.push(c.key("seq"));
    keys.push(c.key(&format!("blk:{}", me.user)));
    let json =
        serde_json::to_string(me).map_err(|e| Error::new(ErrorKind::Parse, e.to_string()))?;
    let args = vec![
        me.user.clone(),
        json,
        me.node.clone(),
        SNAPSHOT_LIMIT.to_string(),
        c.key("node:"),
        c.key("claimed:"),
        me.search.to_string(),
    ];
    let reply: Value = c.client().eval(SEARCH, keys, args).await?;
    let mut parts = match reply {
        Value::Array(p) => p.into_iter(),
        _ => return Ok(None),
    };
    let entries = strings(parts.next().unwrap_or(Value::Null))
        .iter()
        .filter_map(|j| serde_json::from_str::<Entry>(j).ok())
        .collect();
    let blocks = strings(parts.next().unwrap_or(Value::Null));
    Ok(Some((entries, blocks)))
}

/// See [`CLAIM`].
pub(crate) async fn claim(c: &Cluster, me: &str, other: &str) -> Result<i64, Error> {
    let mut keys = queue_keys(c);
    keys.push(c.key("matches"));
    c.client()
        .eval(
            CLAIM,
            keys,
            vec![
                me.to_string(),
                other.to_string(),
                c.key("node:"),
                c.key("claimed:"),
            ],
        )
        .await
}

/// See [`REQUEUE`].
pub(crate) async fn requeue(c: &Cluster, e: &Entry, seq: i64) -> Result<(), Error> {
    let json = serde_json::to_string(e).map_err(|e| Error::new(ErrorKind::Parse, e.to_string()))?;
    let _: i64 = c
        .client()
        .eval(
            REQUEUE,
            queue_keys(c),
            vec![
                e.user.clone(),
                json,
                e.node.clone(),
                seq.to_string(),
                c.key("claimed:"),
                e.search.to_string(),
            ],
        )
        .await?;
    Ok(())
}

/// See [`DEQUEUE`].
pub(crate) async fn dequeue(c: &Cluster, user: &str) -> Result<(), Error> {
    let _: i64 = c
        .client()
        .eval(
            DEQUEUE,
            queue_keys(c),
            vec![user.to_string(), c.node.to_string(), c.key("claimed:")],
        )
        .await?;
    Ok(())
}

/// Records a block both ways for `ttl_ms`.
pub(crate) async fn block(c: &Cluster, by: &str, other: &str, ttl_ms: u64) -> Result<(), Error> {
    let pipeline = c.client().pipeline();
    for (a, b) in [(by, other), (other, by)] {
        let key = c.key(&format!("blk:{a}"));
        let _: () = pipeline.sadd(&key, b).await?;
        let _: () = pipeline.pexpire(&key, ttl_ms.max(1) as i64, None).await?;
    }
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}

/// One node as the heartbeat script reports it.
#[derive(Debug, Clone)]
pub(crate) struct NodeSeen {
    /// Its name.
    pub id: String,
    /// Its last figures.
    pub figures: NodeFigures,
    /// Whether its heartbeat key is still there.
    pub alive: bool,
}

/// What [`beat`] learnt.
#[derive(Debug, Clone, Default)]
pub(crate) struct Beat {
    /// Every node Redis knows of.
    pub nodes: Vec<NodeSeen>,
    /// The cluster's match counter.
    pub matches: u64,
    /// False when this node's own heartbeat had vanished: Redis restarted (or this node was
    /// silent too long) and its searches must be published again.
    pub had: bool,
}

/// See [`BEAT`].
pub(crate) async fn beat(
    c: &Cluster,
    mine: &NodeFigures,
    ttl_ms: u64,
    inbox_ok: bool,
) -> Result<Beat, Error> {
    let json = serde_json::to_string(mine).unwrap_or_default();
    let reply: Value = c
        .client()
        .eval(
            BEAT,
            vec![c.key("nodes"), c.key("matches")],
            vec![
                c.node.to_string(),
                json,
                c.key("node:"),
                ttl_ms.to_string(),
                if inbox_ok { "1" } else { "0" }.to_string(),
            ],
        )
        .await?;
    let Value::Array(mut parts) = reply else {
        return Ok(Beat::default());
    };
    let had = parts.pop().and_then(|v| v.as_u64()) == Some(1);
    let matches = parts.pop().and_then(|v| v.as_u64()).unwrap_or(0);
    let mut seen = Vec::new();
    if let Some(Value::Array(nodes)) = parts.pop() {
        for n in nodes {
            let Value::Array(f) = n else { continue };
            let mut f = f.into_iter();
            let (Some(id), Some(figures), Some(alive)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            seen.push(NodeSeen {
                id: id.as_string().unwrap_or_default(),
                figures: figures
                    .as_string()
                    .and_then(|j| serde_json::from_str(&j).ok())
                    .unwrap_or_default(),
                alive: alive.as_u64() == Some(1),
            });
        }
    }
    Ok(Beat {
        nodes: seen,
        matches,
        had,
    })
}

/// See [`PURGE`]: returns how many queue entries went.
pub(crate) async fn purge(c: &Cluster, node: &str) -> Result<(), Error> {
    let mut keys = queue_keys(c);
    keys.push(c.key("nodes"));
    let _: i64 = c.client().eval(PURGE, keys, vec![node.to_string()]).await?;
    Ok(())
}
