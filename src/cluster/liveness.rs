//! Heartbeats, dead nodes, and Redis coming and going.
//!
//! Every `beat` (a tenth of `NODE_TIMEOUT_MS`, at most a second) a node renews its heartbeat key
//! and publishes its figures, and reads everyone else's. A node whose key is gone, and stays gone
//! for two more beats (so that a Redis restart, after which every node re-creates its key within
//! one beat, is not taken for a death), is dead: this node ends the rooms its users shared with
//! it (`partner-left`, reason `disconnect`) and drops its queue entries. The key's TTL is chosen
//! so that all of this happens within `NODE_TIMEOUT_MS` of the node's last beat.
//!
//! A failed beat marks Redis as down (`/health` answers 503). A beat that finds this node's own
//! key gone means Redis lost its data (a restart): the node publishes its searches again. A node
//! renews its key only while it hears its own pings on its channel: after a Redis restart the
//! subscription may come back later than the command connection, and until it does nobody must
//! count on reaching the node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::worker;
use crate::bus::queue::Queue;
use crate::bus::scripts::{self, Beat};
use crate::bus::{Cluster, ClusterFigures, NodeFigures, beat_interval, heartbeat_ttl};
use crate::node::{Hub, Link};

/// This node's figures for its heartbeat.
pub(crate) fn figures(hub: &Hub) -> NodeFigures {
    let core = hub.lock();
    let live = core.live();
    NodeFigures {
        connections: hub.sockets(),
        users: live.connected_users,
        waiting: live.waiting_users,
        rooms: live.active_rooms,
        shared_rooms: core.shared_rooms(),
    }
}

/// Beats until the task is stopped.
pub(crate) async fn run(hub: Arc<Hub>, cluster: Arc<Cluster>) {
    let beat = beat_interval(cluster.node_timeout);
    let ttl = heartbeat_ttl(cluster.node_timeout).as_millis() as u64;
    let mut missing: HashMap<Arc<str>, Instant> = HashMap::new();
    let mut every = tokio::time::interval(beat);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    let mut inbox_was_ok = true;
    loop {
        every.tick().await;
        let mine = figures(&hub);
        // Heard by the next beat if the channel is subscribed.
        cluster.ping_self();
        let inbox_ok = cluster.inbox_ok();
        // Back in sight of the others: searches that missed each other meanwhile look again.
        let reappeared = inbox_ok && !inbox_was_ok;
        inbox_was_ok = inbox_ok;
        match scripts::beat(&cluster, &mine, ttl, inbox_ok).await {
            Ok(b) => {
                let was_up = cluster.set_redis_up(true);
                if !was_up {
                    tracing::info!("Redis is reachable again");
                    missing.clear();
                }
                // Searches published while Redis was away failed, and a restarted Redis lost
                // the rest: publish them all again (publishing is idempotent).
                if !first && (!was_up || !b.had || reappeared) {
                    if !b.had {
                        tracing::warn!("this node's heartbeat had vanished from Redis");
                    }
                    worker::republish(&hub);
                }
                first = false;
                let figures = sum(&b);
                if let Queue::Shared(q) = hub.lock().queue() {
                    q.note_waiting_elsewhere(figures.waiting.saturating_sub(mine.waiting));
                }
                cluster.set_figures(figures);
                for node in confirm_dead(&hub, &cluster, &b, &mut missing, beat * 2) {
                    bury(&hub, &cluster, &node).await;
                }
            }
            Err(e) => {
                if cluster.set_redis_up(false) {
                    tracing::error!("Redis is unreachable: {e}");
                }
                // Nobody can be judged while Redis is away.
                missing.clear();
            }
        }
    }
}

/// The cluster's figures from one beat.
fn sum(b: &Beat) -> ClusterFigures {
    let mut f = ClusterFigures {
        total_matches: b.matches,
        ..Default::default()
    };
    let mut shared = 0;
    for n in b.nodes.iter().filter(|n| n.alive) {
        f.nodes += 1;
        f.node_ids.push(n.id.clone());
        f.connections += n.figures.connections;
        f.users += n.figures.users;
        f.waiting += n.figures.waiting;
        f.rooms += n.figures.rooms - n.figures.shared_rooms.min(n.figures.rooms);
        shared += n.figures.shared_rooms;
    }
    f.node_ids.sort();
    f.rooms += shared / 2;
    f
}

/// The nodes missing for at least `confirm`: known ones whose heartbeat expired, and the
/// nodes of this node's ghosts that Redis no longer knows at all.
fn confirm_dead(
    hub: &Hub,
    cluster: &Cluster,
    b: &Beat,
    missing: &mut HashMap<Arc<str>, Instant>,
    confirm: Duration,
) -> Vec<Arc<str>> {
    let now = Instant::now();
    let alive: std::collections::HashSet<&str> = b
        .nodes
        .iter()
        .filter(|n| n.alive)
        .map(|n| n.id.as_str())
        .collect();
    let mut suspects: Vec<Arc<str>> = b
        .nodes
        .iter()
        .filter(|n| !n.alive && *n.id != *cluster.node)
        .map(|n| n.id.as_str().into())
        .collect();
    {
        let core = hub.lock();
        for (_, link) in core.ghost_links() {
            if let Link::Remote(node) = link
                && !alive.contains(&**node)
            {
                suspects.push(node.clone());
            }
        }
    }
    missing.retain(|n, _| suspects.contains(n));
    let mut dead = Vec::new();
    for n in suspects {
        let since = *missing.entry(n.clone()).or_insert(now);
        if now.saturating_duration_since(since) >= confirm && !dead.contains(&n) {
            dead.push(n);
        }
    }
    for n in &dead {
        missing.remove(n);
    }
    dead
}

/// Ends what this node shared with a dead node and drops its queue entries.
async fn bury(hub: &Hub, cluster: &Cluster, node: &str) {
    let now = Instant::now();
    let ended = {
        let mut core = hub.lock();
        let rooms = core.ghosts_where(|l| matches!(l, Link::Remote(n) if **n == *node));
        for r in &rooms {
            let effects = core.remote_left(
                &r.local,
                &r.room,
                crate::model::reason::Reason::Disconnect,
                now,
            );
            hub.deliver(&mut core, effects);
        }
        rooms.len()
    };
    tracing::warn!(node, rooms = ended, "node is dead: its rooms here ended");
    metrics::counter!("roulette_cluster_dead_nodes_total").increment(1);
    if let Err(e) = scripts::purge(cluster, node).await {
        tracing::warn!(node, "could not drop the dead node's queue entries: {e}");
    }
}
