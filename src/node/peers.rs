//! What differs between a node alone and a node of a cluster, decided once, at start.
//!
//! A node alone has no other nodes: nothing is sent anywhere, no session is held elsewhere, and
//! its queue pairs in memory. A node of a cluster reaches the others over the bus, may find a
//! returning user's session held by another node, and sends its searches to the node that
//! matches for the cluster. The queue's half of that choice is [`crate::bus::queue::Queue`],
//! built with the hub; this is the other half. The hub holds one [`Peers`] and asks it, instead
//! of each call site asking whether the node joined a cluster.

use std::sync::{Arc, OnceLock};

use crate::bus::{Act, Cluster, Msg};

/// The other nodes, as this node reaches them.
pub(crate) enum Peers {
    /// None: a node alone.
    Alone,
    /// The nodes of a cluster over Redis: the bus, once this node has joined (until then it
    /// takes no sessions, so nothing here is asked for before).
    Cluster(OnceLock<Arc<Cluster>>),
}

impl Peers {
    /// The peers of a node with `REDIS_URL` set (`clustered`) or not.
    pub(crate) fn new(clustered: bool) -> Peers {
        if clustered {
            Peers::Cluster(OnceLock::new())
        } else {
            Peers::Alone
        }
    }

    /// The cluster this node joined, if any (for its figures).
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        match self {
            Peers::Cluster(c) => c.get(),
            Peers::Alone => None,
        }
    }

    /// Records that this node joined `cluster`.
    pub(crate) fn joined(&self, cluster: Arc<Cluster>) {
        if let Peers::Cluster(c) = self {
            c.set(cluster).ok();
        }
    }

    /// Whether this node is one of a cluster (joined yet or not).
    pub(crate) fn clustered(&self) -> bool {
        matches!(self, Peers::Cluster(_))
    }

    /// True while a node of a cluster has not joined it yet.
    pub(crate) fn joining(&self) -> bool {
        matches!(self, Peers::Cluster(c) if c.get().is_none())
    }

    /// Whether another node may hold a session of a user who connects here (so that a resume
    /// must ask the cluster before it is answered).
    pub(crate) fn may_hold_sessions(&self) -> bool {
        self.cluster().is_some()
    }

    /// This node's name for operators (`local` for a node alone).
    pub(crate) fn node(&self) -> String {
        self.cluster()
            .map_or_else(|| "local".to_string(), |c| c.node.to_string())
    }

    /// Sends `msg` to `node`. Only users of a cluster are linked to another node, so a node
    /// alone has nothing to send.
    pub(crate) fn send(&self, node: &str, msg: &Msg) {
        if let Some(c) = self.cluster() {
            c.send(node, msg);
        }
    }

    /// Sends a relay of `payload` to `to` on `node` (see [`crate::bus::Cluster::relay`]).
    pub(crate) fn relay<T: serde::Serialize>(
        &self,
        node: &std::sync::Arc<str>,
        room: &str,
        to: &str,
        event: &str,
        payload: &T,
        reply: Option<&crate::bus::Reply>,
    ) -> Result<(), serde_json::Error> {
        match self.cluster() {
            Some(c) => c.relay(node, room, to, event, payload, reply),
            None => Ok(()),
        }
    }

    /// Whether `node` says how each relay went (see [`crate::bus::Msg::Acked`]).
    pub(crate) fn answers(&self, node: &str) -> bool {
        self.cluster().is_some_and(|c| c.answers(node))
    }

    /// Sends `msg` to every node; false when there are no others.
    pub(crate) fn broadcast(&self, msg: &Msg) -> bool {
        self.cluster().map(|c| c.broadcast(msg)).is_some()
    }

    /// Hands a moderation act to the other nodes (and keeps it in Redis); false when there are
    /// no others.
    pub(crate) fn share(&self, act: Act) -> bool {
        self.cluster().map(|c| c.moderate(act)).is_some()
    }
}
