//! The cluster's Redis side: each operation one Lua script, so each is atomic.
//!
//! Keys (under `REDIS_PREFIX`): `lease` the name of the node that matches for the cluster (with
//! a TTL its holder renews), `matches` the cluster's match counter, `sess:<user>` the node
//! holding the session of a user whose connection dropped (for the reconnection grace),
//! `node:<id>` a node's heartbeat (TTL), `nodes` hash of every node's last figures, `bans` and
//! `reports` (moderation), `recovery-key` the key the nodes sign Socket.IO pids with. The queue itself is not in Redis: the lease holder keeps it in
//! memory, and every node can send it its own waiting users again (see [`super::holder`]).

use fred::prelude::*;

use super::{Cluster, NodeFigures};

/// Takes the matching lease for `ARGV[1]` when nobody holds it, or renews it when `ARGV[1]`
/// does (only when `ARGV[3]` is 1: a node that does not hear its own channel cannot be reached
/// by the searches of the others). Returns the holder, or an empty string.
const LEASE: &str = r#"
local h = redis.call('GET', KEYS[1])
if ARGV[3] == '1' then
  if not h then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
    return ARGV[1]
  end
  if h == ARGV[1] then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) end
end
return h or ''
"#;

/// Gives the lease up, if this node holds it (at shutdown: another node takes over at once).
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
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

/// See [`LEASE`]: the lease holder (`None` when nobody holds it and this node may not take it).
pub(crate) async fn lease(
    c: &Cluster,
    ttl_ms: u64,
    may_take: bool,
) -> Result<Option<String>, Error> {
    let holder: String = c
        .client()
        .eval(
            LEASE,
            vec![c.key("lease")],
            vec![
                c.node.to_string(),
                ttl_ms.max(1).to_string(),
                if may_take { "1" } else { "0" }.to_string(),
            ],
        )
        .await?;
    Ok((!holder.is_empty()).then_some(holder))
}

/// See [`RELEASE`].
pub(crate) async fn release(c: &Cluster) -> Result<(), Error> {
    let _: i64 = c
        .client()
        .eval(RELEASE, vec![c.key("lease")], vec![c.node.to_string()])
        .await?;
    Ok(())
}

/// Sets `KEYS[1]` to `ARGV[1]` unless it holds a value, and returns what it holds.
const SHARED: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"#;

/// The key every node of the cluster signs Socket.IO pids with (`recovery-key`): made by the
/// first node that asks, kept in Redis, so that any node can check a pid another made.
pub(crate) async fn recovery_key(c: &Cluster) -> Result<[u8; 32], Error> {
    let mine: [u8; 32] = rand::random();
    let mine = hex::encode(mine);
    let held: String = c
        .client()
        .eval(SHARED, vec![c.key("recovery-key")], vec![mine])
        .await?;
    let key =
        hex::decode(&held).map_err(|_| Error::new(ErrorKind::Parse, "recovery-key is not hex"))?;
    key.try_into()
        .map_err(|_| Error::new(ErrorKind::Parse, "recovery-key is not 32 bytes"))
}

/// Adds `n` matches to the cluster's counter.
pub(crate) async fn count_matches(c: &Cluster, n: u64) -> Result<(), Error> {
    let _: i64 = c.client().incr_by(c.key("matches"), n as i64).await?;
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

/// Forgets a node's figures (it died or left).
pub(crate) async fn forget(c: &Cluster, node: &str) -> Result<(), Error> {
    let _: i64 = c.client().hdel(c.key("nodes"), node).await?;
    Ok(())
}
