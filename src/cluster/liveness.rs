//! Heartbeats, dead nodes, and Redis coming and going.
//!
//! Every `beat` (a tenth of `NODE_TIMEOUT_MS`, at most a second) a node renews its heartbeat key
//! and publishes its figures, and reads everyone else's. A node whose key is gone, and stays gone
//! for two more beats (so that a Redis restart, after which every node re-creates its key within
//! one beat, is not taken for a death), is dead: this node ends the rooms its users shared with
//! it (`partner-left`, reason `disconnect`) and drops its queue entries. The key's TTL is chosen
//! so that all of this happens within `NODE_TIMEOUT_MS` of the node's last beat.
//!
//! Each beat also takes or renews the matching lease (see [`crate::bus::holder`]): the node
//! that holds it matches for the cluster; when it changes, every node sends the new holder its
//! waiting users' searches again.
//!
//! A failed beat marks Redis as down (`/health` answers 503). A beat that finds this node's own
//! key gone means Redis lost its data (a restart): the node publishes its searches again. A node
//! renews its key only while it hears its own pings on its channel: after a Redis restart the
//! subscription may come back later than the command connection, and until it does nobody must
//! count on reaching the node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inbox::dispatch;
use super::worker;
use crate::bus::holder::{Holder, Matcher};
use crate::bus::scripts::{self, Beat};
use crate::bus::{Cluster, ClusterFigures, NodeFigures, beat_interval, heartbeat_ttl};
use crate::node::{Hub, Link};
use crate::protocol::outgoing::now_ms;

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
        batches: true,
        answers: true,
        link: None,
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
        let mine = NodeFigures {
            link: cluster.links.advertised(),
            ..figures(&hub)
        };
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
                cluster.set_figures(sum(&b));
                cluster.set_batch_readers(
                    b.nodes
                        .iter()
                        .filter(|n| n.alive)
                        .map(|n| (n.id.as_str(), n.figures.batches)),
                );
                crate::bus::link::Links::set_peers(
                    &cluster,
                    b.nodes
                        .iter()
                        .filter(|n| n.alive)
                        .map(|n| (n.id.as_str(), n.figures.link)),
                );
                cluster.set_answering(
                    b.nodes
                        .iter()
                        .filter(|n| n.alive)
                        .map(|n| (n.id.as_str(), n.figures.answers)),
                );
                match scripts::lease(&cluster, ttl, inbox_ok).await {
                    Ok(holder) => lease_seen(&hub, &cluster, holder.as_deref()),
                    Err(e) => tracing::warn!("the matching lease could not be read: {e}"),
                }
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

/// Ends what this node shared with a dead node, and the holder drops its searches.
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
    let again = match &mut *cluster.matcher.lock() {
        Matcher::Holding(h) => h.drop_node(node),
        Matcher::Idle(_) => Vec::new(),
    };
    dispatch(hub, cluster, again);
    if let Err(e) = scripts::forget(cluster, node).await {
        tracing::warn!(node, "could not drop the dead node's figures: {e}");
    }
}

/// What a heartbeat learnt of the matching lease: this node starts or stops matching for the
/// cluster, and when the holder changed every node sends it its waiting users' searches.
pub(crate) fn lease_seen(hub: &Hub, cluster: &Cluster, holder: Option<&str>) {
    let Some(holder) = holder else {
        return;
    };
    let mine = *holder == *cluster.node;
    let out = {
        let mut m = cluster.matcher.lock();
        match &mut *m {
            Matcher::Idle(kept) if mine => {
                let kept = std::mem::take(kept);
                let (now, wall) = (Instant::now(), now_ms());
                let mut h = Holder::new(hub.timings.preference_relax, hub.max_blocks);
                // Users wait in the cluster (as of the last heartbeats): every node hears of the
                // new holder within a beat of this one and sends its waiting users' searches at
                // once, so two beats gather them all, to be queued longest-waiting first. A new
                // cluster (nobody waiting) matches at once.
                if cluster.figures().waiting > 0 {
                    h = h.settling(now + beat_interval(cluster.node_timeout) * 2);
                }
                let out: Vec<_> = kept
                    .into_iter()
                    .flat_map(|msg| h.handle(msg, now, wall))
                    .collect();
                *m = Matcher::Holding(Box::new(h));
                out
            }
            Matcher::Idle(kept) => {
                kept.clear();
                Vec::new()
            }
            Matcher::Holding(_) if !mine => {
                *m = Matcher::default();
                Vec::new()
            }
            Matcher::Holding(_) => Vec::new(),
        }
    };
    dispatch(hub, cluster, out);
    if cluster.set_holder(Some(holder)) {
        tracing::info!(holder, "the cluster's matching lease holder");
        worker::republish(hub);
    }
}

/// The lease holder's time-driven work, every `tick` while it holds the lease: relaxation
/// (and the pairs it makes), every waiting user's place for its node once per `queue-status`
/// interval, and the cluster's match counter.
pub(crate) async fn matching(hub: Arc<Hub>, cluster: Arc<Cluster>, tick: Duration) {
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut told = Instant::now();
    loop {
        every.tick().await;
        let now = Instant::now();
        let (out, made) = {
            let mut m = cluster.matcher.lock();
            let Matcher::Holding(h) = &mut *m else {
                continue;
            };
            let mut out = h.tick(now, now_ms());
            if now.saturating_duration_since(told) >= hub.timings.queue_status_interval {
                told = now;
                out.extend(h.standings(&cluster.figures().node_ids));
            }
            (out, h.take_unsaved())
        };
        dispatch(&hub, &cluster, out);
        if made > 0
            && let Err(e) = scripts::count_matches(&cluster, made).await
        {
            tracing::warn!("the cluster's match counter was not updated: {e}");
        }
    }
}
