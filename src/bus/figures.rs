//! The figures each node publishes with its heartbeat, and the cluster's sums of them.

use serde::{Deserialize, Serialize};

/// This node's figures, published with its heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeFigures {
    /// Open Socket.IO connections.
    pub connections: usize,
    /// Authenticated users.
    pub users: usize,
    /// Users waiting for a partner.
    pub waiting: usize,
    /// Rooms with at least one member here.
    pub rooms: usize,
    /// Of those, rooms whose other member is on another node (counted by both nodes).
    pub shared_rooms: usize,
    /// Whether the node reads batch frames ([`frame`](super::frame); false from nodes of earlier versions,
    /// which are sent one message a `PUBLISH`).
    #[serde(default)]
    pub batches: bool,
    /// Whether the node answers relays ([`Msg::Acked`](super::Msg::Acked), [`Msg::Undelivered`](super::Msg::Undelivered); false from nodes
    /// of earlier versions, whose relays are acknowledged when published).
    #[serde(default)]
    pub answers: bool,
    /// Where the node takes direct links ([`link`](super::link); none from nodes of earlier
    /// versions and from nodes without `LINK_ADDRESS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<std::net::SocketAddr>,
}

/// Figures of the whole cluster, from the live nodes' heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClusterFigures {
    /// Live nodes.
    pub nodes: usize,
    /// Their names.
    pub node_ids: Vec<String>,
    /// Open connections on all nodes.
    pub connections: usize,
    /// Authenticated users on all nodes.
    pub users: usize,
    /// Users waiting on all nodes.
    pub waiting: usize,
    /// Rooms in the cluster (a room shared by two nodes counted once).
    pub rooms: usize,
    /// Matches made by the cluster since Redis started.
    pub total_matches: u64,
}
