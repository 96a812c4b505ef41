//! The cluster's handlers, above the node: what a node does with the bus ([`crate::bus`]).
//!
//! - [`inbox`]: messages from other nodes, checked against this node's core before anything is
//!   emitted;
//! - [`worker`]: the searches of this node's users, sent to the node that matches for the
//!   cluster (the lease holder);
//! - [`liveness`]: this node's heartbeat, the matching lease, and the end of the rooms of nodes
//!   that died.

pub(crate) mod inbox;
pub(crate) mod liveness;
mod reader;
pub(crate) mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::{Cluster, Msg, Settings};
use crate::model::reason::Reason;
use crate::node::{Hub, Link};

/// The cluster's background work: worker, inbox, heartbeat.
pub(crate) type Tasks = Vec<tokio::task::JoinHandle<()>>;

/// With `REDIS_URL` set, connects to Redis and starts the worker, the inbox and the heartbeat;
/// until then the node takes no Socket.IO sessions and `/health` answers 503. A Redis that
/// cannot be reached at start is waited for (and each failure logged), as one that goes away
/// later is: a rollout that starts pods before Redis must not crash-loop them.
pub(crate) async fn join(
    hub: Arc<Hub>,
    settings: Option<Settings>,
) -> Option<(Arc<Cluster>, Tasks)> {
    let settings = settings?;
    let mut attempt = 0u32;
    let (cluster, subscriber) = loop {
        match Cluster::connect(&settings, Duration::from_secs(5)).await {
            Ok(c) => break c,
            Err(e) => {
                // Every failure for the first minute, then one in ten: the log stays readable.
                if attempt < 30 || attempt.is_multiple_of(10) {
                    tracing::warn!("{e}; not serving until Redis answers (retrying)");
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let jobs = hub
        .jobs
        .lock()
        .take()
        .expect("a cluster hub has a job queue");
    // Frames from other nodes' direct links go to the same inbox as Redis's.
    let inbox = reader::Inbox::new(hub.clone(), &cluster);
    let mut tasks = vec![
        tokio::spawn(worker::run(hub.clone(), cluster.clone(), jobs)),
        tokio::spawn(reader::run(inbox.clone(), cluster.clone(), subscriber)),
    ];
    // Serve only once this node hears its own channel (its first heartbeat then makes it
    // visible to the others).
    let mut since = Instant::now();
    while !cluster.inbox_ok() {
        if since.elapsed() > Duration::from_secs(10) {
            tracing::warn!("this node's Redis channel has not delivered its own ping yet");
            since = Instant::now();
        }
        cluster.ping_self();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The bans and recent reports the cluster keeps, before this node takes a session (an act
    // made meanwhile arrives on the broadcast channel, already subscribed).
    // Not served before they are read: a node that skipped them would let the banned in.
    loop {
        match cluster.moderation().await {
            Ok((bans, reports)) => {
                hub.adopt_all(bans, reports);
                break;
            }
            Err(e) => {
                tracing::warn!("the cluster's bans could not be read ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    // One key for the cluster's pids, before the first session: a client may come back
    // through any node, which must be able to check the pid and find the node it names.
    loop {
        match crate::bus::scripts::recovery_key(&cluster).await {
            Ok(key) => {
                crate::bus::link::Links::listen(&cluster, &key, inbox.for_links()).await;
                if !crate::ws::recovery::set_identity(key, &cluster.node) {
                    tracing::warn!(
                        "pids were made before joining: sessions recover on this node only"
                    );
                }
                break;
            }
            Err(e) => {
                tracing::warn!("the cluster's recovery key could not be read ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    // Who matches for the cluster, before the first search (this node, if nobody does yet).
    let ttl = crate::bus::heartbeat_ttl(cluster.node_timeout).as_millis() as u64;
    loop {
        match crate::bus::scripts::lease(&cluster, ttl, true).await {
            Ok(holder) => {
                liveness::lease_seen(&hub, &cluster, holder.as_deref());
                break;
            }
            Err(e) => {
                tracing::warn!("the matching lease could not be read ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    hub.peers.joined(cluster.clone());
    tasks.push(tokio::spawn(liveness::run(hub.clone(), cluster.clone())));
    tasks.push(tokio::spawn(liveness::matching(
        hub.clone(),
        cluster.clone(),
        Duration::from_millis(100),
    )));
    tracing::info!(node = %cluster.node, "joined the cluster");
    Some((cluster, tasks))
}

/// Leaves the cluster at shutdown: partners on other nodes are told at once (not after the
/// node timeout), and this node's heartbeat and queue entries go.
pub(crate) async fn leave(hub: &Hub, cluster: &Cluster, tasks: &Tasks) {
    {
        let mut core = hub.lock();
        let now = Instant::now();
        let rooms = core.ghosts_where(|_| true);
        for r in rooms {
            if let Some(Link::Remote(node)) = core.link(&r.ghost).cloned() {
                cluster.send(
                    &node,
                    &Msg::Left {
                        room: r.room.to_string(),
                        to: r.ghost.to_string(),
                        reason: Reason::Disconnect.to_string(),
                    },
                );
            }
            let effects = core.remote_left(&r.local, &r.room, Reason::Disconnect, now);
            drop(effects);
        }
        core.settle();
    }
    for t in tasks {
        t.abort();
    }
    cluster.leave().await;
    // Give the publisher a moment to flush the goodbyes.
    tokio::time::sleep(Duration::from_millis(50)).await;
}
