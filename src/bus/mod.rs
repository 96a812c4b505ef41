//! The cluster's bus: what several Roulette nodes say to each other over Redis, and how.
//!
//! This module holds the connection ([`Cluster`]), the messages between nodes ([`Msg`]), the
//! cluster's one matchmaker ([`holder`]), a node's side of the queue ([`queue`]) and the Lua
//! scripts ([`scripts`]); it depends only on the core, the
//! model and the protocol. What a node does with the messages (the inbox, the worker that pairs
//! searches, the heartbeat) is [`crate::cluster`], above the node.
//!
//! How the cluster works:
//!
//! With `REDIS_URL` set, each node keeps its own users, sockets and core as before, and shares
//! three things through Redis:
//!
//! - **The queue.** One node at a time holds the matching lease (a Redis key with a TTL it
//!   renews every heartbeat) and keeps the whole cluster's queue in the indexed matchmaker a
//!   single node uses ([`holder`]); the other nodes send it their users' searches,
//!   cancellations and blocks over the bus and hear back the pairings and every waiting user's
//!   place. When the holder dies its lease expires, another node takes it, and every node sends
//!   the new holder its waiting users again.
//! - **Delivery.** Each node subscribes to a channel of its own. A message for a user of
//!   another node (`matched`, a relayed offer, answer, candidate or chat line, `partner-left`)
//!   goes to that node's channel through one ordered publisher, and the receiving node checks it
//!   against its own core before emitting: a relay that arrives after its room ended is
//!   dropped, never shown to whoever the user is talking to now ([`crate::cluster::inbox`]).
//!   A message is published again until its node heard it, and taken once ([`publish`]): a
//!   Redis failover loses none. The messages for one node that are ready together (queued
//!   while the previous publish was in flight) go as one frame, one `PUBLISH` ([`frame`]). With
//!   `LINK_ADDRESS`, the frames for a node that has one go straight to it over a TCP link
//!   instead, and Redis takes over while the link is down ([`link`]).
//! - **Liveness and figures.** Each node renews a heartbeat key with a TTL carrying its figures;
//!   a node whose key expired is dead: the rooms its users held end for their partners, and its
//!   queue entries are dropped ([`crate::cluster::liveness`]).
//!
//! Why not socketioxide-redis for delivery: its `io.to(sid).emit` hands the packet straight to
//! the client, so the receiving node cannot check that the relay still belongs to the user's
//! current room, and a relay and a state change (`matched`, `partner-left`) travel different
//! paths and can overtake each other; its driver also neither reconnects nor resubscribes after
//! a Redis restart (see `STACK-NOTES.md`). Here one ordered path carries both, and fred's
//! subscriber client resubscribes on its own.

mod entry;
mod figures;
pub(crate) mod frame;
pub(crate) mod holder;
pub(crate) mod link;
mod msg;
pub(crate) mod publish;
pub(crate) mod queue;
mod redis;
pub(crate) mod scripts;
mod seen;
mod watch;

pub(crate) use entry::Entry;
pub(crate) use figures::{ClusterFigures, NodeFigures};
pub(crate) use msg::{Act, Msg, RelayIn, Reply, RoomMove};
pub(crate) use redis::{redis_config, scrub};

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::moderation::{Ban, Report};
use crate::protocol::outgoing::now_ms;

/// The heartbeat period for a node timeout.
pub(crate) fn beat_interval(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// The heartbeat key's lifetime: a dead node is noticed within `timeout` of its last beat (TTL,
/// then up to one beat until someone looks, then two beats of confirmation).
pub(crate) fn heartbeat_ttl(timeout: Duration) -> Duration {
    timeout.saturating_sub(beat_interval(timeout) * 3)
}

/// What the bus needs of the settings (built by [`crate::config`]).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `REDIS_URL`.
    pub url: String,
    /// `REDIS_CA_FILE`: a PEM bundle for a private CA.
    pub ca_file: Option<std::path::PathBuf>,
    /// `REDIS_PREFIX`: the keys' and channels' prefix.
    pub prefix: String,
    /// `NODE_ID`: this node's name (a random one when unset).
    pub node_id: Option<String>,
    /// `NODE_TIMEOUT_MS`: how long a silent node is taken for alive.
    pub node_timeout: Duration,
    /// `LINK_ADDRESS`: where this node listens for other nodes' direct links (none: Redis
    /// carries every message).
    pub link: Option<String>,
}

/// The channel every node hears (`<prefix>:to:*`); no node can be named `*`.
const BROADCAST: &str = "*";

/// One node's link to the cluster.
pub(crate) struct Cluster {
    /// This node's name.
    pub node: Arc<str>,
    prefix: String,
    client: Client,
    subscriber: SubscriberClient,
    outbox: UnboundedSender<(Arc<str>, String)>,
    /// Moderation acts to keep in Redis, written one after another (a lift never lands before
    /// the ban it lifts).
    keeper: tokio::sync::mpsc::Sender<Act>,
    redis_up: AtomicBool,
    /// When this node last heard its own ping on its channel (Unix ms).
    inbox_heard: AtomicU64,
    /// Messages that could not be published or were dropped on arrival (a lagging subscriber).
    lost: AtomicU64,
    figures: Mutex<ClusterFigures>,
    /// What the inbox took already (a message published again is skipped).
    pub seen: seen::Seen,
    /// How long a silent node stays alive.
    pub node_timeout: Duration,
    /// The node that matches for the cluster, as of this node's last heartbeat.
    holder: Mutex<Option<Arc<str>>>,
    /// The cluster's queue, while this node holds the lease.
    pub(crate) matcher: Mutex<holder::Matcher>,
    /// The channels whose every listener reads batch frames, as of the last heartbeat.
    batch_readers: Mutex<Arc<HashSet<Arc<str>>>>,
    /// The live nodes that do not answer relays, as of the last heartbeat.
    silent: Mutex<Arc<HashSet<Arc<str>>>>,
    /// The direct links to and from other nodes.
    pub(crate) links: link::Links,
}

impl Cluster {
    /// Connects to Redis at `url` (giving up after `wait`), subscribes to this node's channel and
    /// starts the publisher. Returns the cluster and the receiver of this node's messages.
    pub(crate) async fn connect(
        settings: &Settings,
        wait: Duration,
    ) -> Result<(Arc<Cluster>, fred::clients::SubscriberClient), String> {
        let (url, ca_file, prefix, node, node_timeout) = (
            settings.url.as_str(),
            settings.ca_file.as_deref(),
            settings.prefix.as_str(),
            settings.node_id.as_deref(),
            settings.node_timeout,
        );
        let config = redis_config(url, ca_file)?;
        let build = |b: &mut Builder| {
            b.with_performance_config(|p| {
                // Messages for this node wait here until the inbox takes them; a burst must fit.
                p.broadcast_channel_capacity = 1 << 13;
                p.default_command_timeout = Duration::from_secs(2);
            })
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
                // A managed Redis fails over by moving its endpoint to the promoted replica; a
                // connection still open to the demoted primary answers writes with READONLY:
                // connect again (the name resolves to the new primary). LOADING: a restarted
                // Redis reading its data.
                c.reconnect_errors = vec![
                    fred::types::config::ReconnectError::ReadOnly,
                    fred::types::config::ReconnectError::Loading,
                ];
            })
            // Keep trying for ever, every quarter second: Redis coming back must be noticed fast.
            .set_policy(ReconnectPolicy::new_constant(0, 250));
        };
        let mut b = Builder::from_config(config);
        build(&mut b);
        let client = b.build().map_err(|e| e.to_string())?;
        let subscriber = b.build_subscriber_client().map_err(|e| e.to_string())?;
        let connect = async {
            client.init().await?;
            subscriber.init().await?;
            Ok::<_, fred::error::Error>(())
        };
        let failed = match tokio::time::timeout(wait, connect).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("cannot reach Redis at {url}: {e}")),
            Err(_) => Some(format!("cannot reach Redis at {url} within {wait:?}")),
        };
        if let Some(e) = failed {
            // Stop both clients' connection tasks: the caller may try again with new ones.
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                if client.state() != ClientState::Disconnected {
                    let _ = client.quit().await;
                }
                if subscriber.state() != ClientState::Disconnected {
                    let _ = subscriber.quit().await;
                }
            })
            .await;
            return Err(scrub(&e, url));
        }
        let node: Arc<str> = match node {
            Some(n) => n.into(),
            None => crate::model::uuid_v4().simple().to_string()[..12].into(),
        };
        let (outbox, rx) = tokio::sync::mpsc::unbounded_channel();
        let (keeper, kept) = tokio::sync::mpsc::channel(10_000);
        let cluster = Arc::new(Cluster {
            node,
            prefix: prefix.to_string(),
            client,
            subscriber: subscriber.clone(),
            outbox,
            keeper,
            redis_up: AtomicBool::new(true),
            inbox_heard: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            figures: Mutex::new(ClusterFigures::default()),
            seen: seen::Seen::new(),
            node_timeout,
            holder: Mutex::new(None),
            matcher: Mutex::new(holder::Matcher::default()),
            batch_readers: Mutex::new(Arc::new(HashSet::new())),
            silent: Mutex::new(Arc::new(HashSet::new())),
            links: link::Links::new(settings.link.clone()),
        });
        cluster
            .subscriber
            .subscribe(cluster.channel(&cluster.node))
            .await
            .map_err(|e| format!("cannot subscribe: {e}"))?;
        cluster
            .subscriber
            .subscribe(cluster.channel(BROADCAST))
            .await
            .map_err(|e| format!("cannot subscribe: {e}"))?;
        // Resubscribes after every reconnection (a Redis restart, a failover included).
        cluster.subscriber.manage_subscriptions();
        watch::watch(&cluster, subscriber.clone());
        // Exported from the start, at 0: an alert on their increase needs the series first.
        metrics::counter!("roulette_cluster_messages_lost_total").increment(0);
        metrics::counter!("roulette_cluster_messages_sent_total").increment(0);
        tokio::spawn(publish::run(cluster.clone(), rx));
        tokio::spawn(keep(cluster.clone(), kept));
        Ok((cluster, subscriber))
    }

    /// A key of this deployment.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// The channel of `node`.
    pub(crate) fn channel(&self, node: &str) -> String {
        format!("{}:to:{node}", self.prefix)
    }

    /// The Redis client for commands.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Sends `act` to every node, through the ordered publisher (this node hears it too, and
    /// skips it: it applied the act already), and keeps what must outlive the nodes in Redis:
    /// the bans (a hash) and the recent reports (a capped list).
    pub(crate) fn moderate(self: &Arc<Self>, act: Act) {
        self.send(
            BROADCAST,
            &Msg::Moderation {
                from: self.node.to_string(),
                act: act.clone(),
            },
        );
        if self.keeper.try_send(act).is_err() {
            tracing::warn!("moderation not kept in Redis: its queue is full");
        }
    }

    /// The bans and the recent reports kept in Redis, for a node that joins.
    pub(crate) async fn moderation(&self) -> Result<(Vec<Ban>, Vec<Report>), fred::error::Error> {
        let bans: std::collections::HashMap<String, String> =
            self.client.hgetall(self.key("bans")).await?;
        // The bans that ended go from the hash here, so it holds about the live ones.
        let now = now_ms();
        let ended: Vec<&str> = bans
            .iter()
            .filter(|(_, j)| serde_json::from_str::<Ban>(j).is_ok_and(|b| b.until <= now))
            .map(|(id, _)| id.as_str())
            .collect();
        if !ended.is_empty() {
            let _: () = self.client.hdel(self.key("bans"), ended).await?;
        }
        let reports: Vec<String> = self
            .client
            .lrange(
                self.key("reports"),
                -(crate::moderation::MAX_REPORTS as i64),
                -1,
            )
            .await?;
        Ok((
            bans.values()
                .filter_map(|j| serde_json::from_str(j).ok())
                .collect(),
            reports
                .iter()
                .filter_map(|j| serde_json::from_str(j).ok())
                .collect(),
        ))
    }

    /// Queues `msg` for every node (this one included).
    pub(crate) fn broadcast(&self, msg: &Msg) {
        self.send(BROADCAST, msg);
    }

    /// Queues `msg` for `node`. Messages to one node leave in the order they were queued.
    pub(crate) fn send(&self, node: &str, msg: &Msg) {
        match serde_json::to_string(msg) {
            Ok(text) => {
                self.outbox.send((node.into(), text)).ok();
            }
            Err(e) => tracing::error!("cannot encode a cluster message: {e}"),
        }
    }

    /// Queues a [`Msg::Deliver`] of `payload` for `to` on `node`, written straight from the
    /// borrowed parts: a relay is the commonest message, and building the owned message first
    /// would copy each part, the payload twice.
    pub(crate) fn relay<T: Serialize>(
        &self,
        node: &Arc<str>,
        room: &str,
        to: &str,
        event: &str,
        payload: &T,
        reply: Option<&Reply>,
    ) -> Result<(), serde_json::Error> {
        let text = serde_json::to_string(&msg::DeliverRef::Deliver {
            room,
            to,
            event,
            payload,
            reply,
        })?;
        self.outbox.send((node.clone(), text)).ok();
        Ok(())
    }

    /// Whether Redis answered the last heartbeat and this node's channel is subscribed: only
    /// then can the node reach and be reached by the cluster.
    pub(crate) fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Acquire) && self.inbox_ok()
    }

    /// Whether this node heard its own ping on its channel within the last three beats. After
    /// Redis restarts, the command connection may be back before the subscription is renewed;
    /// messages published to the channel meanwhile are lost, so until then the node does not
    /// renew its heartbeat key (nobody matches its users or sends it anything new).
    pub(crate) fn inbox_ok(&self) -> bool {
        let window = beat_interval(self.node_timeout).as_millis() as u64 * 3;
        now_ms().saturating_sub(self.inbox_heard.load(Ordering::Acquire)) <= window
    }

    /// Records that this node's own ping came back through its channel.
    pub(crate) fn heard_own_ping(&self) {
        self.inbox_heard.store(now_ms(), Ordering::Release);
    }

    /// Sends this node a ping through its own channel (see [`Cluster::inbox_ok`]).
    pub(crate) fn ping_self(&self) {
        self.send(&self.node, &Msg::Ping { sent: now_ms() });
    }

    /// Records whether Redis answers; returns what it was before.
    pub(crate) fn set_redis_up(&self, up: bool) -> bool {
        self.redis_up.swap(up, Ordering::AcqRel)
    }

    /// Messages lost on the way (publish failed, or the inbox fell behind).
    pub(crate) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Counts `n` messages lost on the way.
    pub(crate) fn count_lost(&self, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("roulette_cluster_messages_lost_total").increment(n);
    }

    /// Keeps the whole cluster's figures, summed from the latest heartbeats.
    pub(crate) fn set_figures(&self, figures: ClusterFigures) {
        *self.figures.lock() = figures;
    }

    /// The latest figures of the whole cluster.
    pub(crate) fn figures(&self) -> ClusterFigures {
        self.figures.lock().clone()
    }

    /// Records which of the live nodes read batch frames (`(node, reads)`): during a rolling
    /// upgrade, a node of an earlier version is sent one message a `PUBLISH`, and so is the
    /// broadcast channel while any live node is of one.
    pub(crate) fn set_batch_readers<'a>(&self, live: impl IntoIterator<Item = (&'a str, bool)>) {
        *self.batch_readers.lock() = Arc::new(frame::readers(live));
    }

    /// Records which of the live nodes do not answer relays (`(node, answers)`): nodes of an
    /// earlier version, whose relays are acknowledged when published.
    pub(crate) fn set_answering<'a>(&self, live: impl IntoIterator<Item = (&'a str, bool)>) {
        let silent = live
            .into_iter()
            .filter(|(_, a)| !*a)
            .map(|(n, _)| Arc::from(n));
        *self.silent.lock() = Arc::new(silent.collect());
    }

    /// Whether `node` answers relays (see [`Msg::Acked`]): every node but those whose heartbeat
    /// says they do not (so also one not heard from yet: a node of this version that just
    /// joined; an earlier one is known within a beat).
    pub(crate) fn answers(&self, node: &str) -> bool {
        !self.silent.lock().contains(node)
    }

    /// The channels (by node name) whose listeners read batch frames.
    pub(crate) fn batch_readers(&self) -> Arc<HashSet<Arc<str>>> {
        self.batch_readers.lock().clone()
    }

    /// The node that matches for the cluster, as of the last heartbeat.
    pub(crate) fn holder(&self) -> Option<Arc<str>> {
        self.holder.lock().clone()
    }

    /// How many searches the cluster's queue holds, when this node holds it.
    pub(crate) fn queued(&self) -> Option<usize> {
        match &*self.matcher.lock() {
            holder::Matcher::Holding(h) => Some(h.len()),
            holder::Matcher::Idle(_) => None,
        }
    }

    /// Records the lease holder; returns whether it changed.
    pub(crate) fn set_holder(&self, holder: Option<&str>) -> bool {
        let mut h = self.holder.lock();
        if h.as_deref() == holder || holder.is_none() {
            return false;
        }
        *h = holder.map(Into::into);
        true
    }

    /// Takes this node out of the cluster at shutdown: its heartbeat, figures and lease go at
    /// once instead of after the timeout.
    pub(crate) async fn leave(&self) {
        let r = scripts::forget(self, &self.node).await;
        let r = r.and(scripts::release(self).await);
        if let Err(e) = r {
            tracing::warn!("could not leave the cluster cleanly: {e}");
        }
        let key = self.key(&format!("node:{}", self.node));
        let _: Result<i64, _> = self.client.del(key).await;
    }
}

/// Writes the moderation acts to Redis in the order they were made.
async fn keep(c: Arc<Cluster>, mut acts: tokio::sync::mpsc::Receiver<Act>) {
    let (bans, reports) = (c.key("bans"), c.key("reports"));
    while let Some(act) = acts.recv().await {
        let kept: Result<(), fred::error::Error> = match &act {
            Act::Ban(b) => {
                let json = serde_json::to_string(b).expect("bans serialize");
                c.client.hset(&bans, (b.id.as_str(), json)).await
            }
            Act::Unban { id } => c.client.hdel(&bans, id.as_str()).await,
            Act::Report(r) => {
                let json = serde_json::to_string(r).expect("reports serialize");
                let pipe = c.client.pipeline();
                let _: Result<(), _> = pipe.rpush(&reports, json).await;
                let _: Result<(), _> = pipe
                    .ltrim(&reports, -(crate::moderation::MAX_REPORTS as i64), -1)
                    .await;
                pipe.all().await
            }
            Act::Kick { .. } => Ok(()),
        };
        if let Err(e) = kept {
            tracing::warn!("moderation not kept in Redis: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn redis_passwords_never_reach_a_message() {
        let url = "redis://default:s3cr3t@redis.internal:6379/0";
        let msg = scrub(&format!("cannot reach Redis at {url}: auth failed"), url);
        assert_eq!(
            msg,
            "cannot reach Redis at redis://default:***@redis.internal:6379/0: auth failed"
        );
        assert_eq!(
            scrub("at redis://:pw@h", "redis://:pw@h"),
            "at redis://:***@h"
        );
        assert_eq!(scrub("at redis://h:1", "redis://h:1"), "at redis://h:1");
        assert_eq!(
            scrub("redis://h/x@y", "redis://h/x@y"),
            "redis://h/x@y",
            "an @ after the host is no password"
        );
    }
}
