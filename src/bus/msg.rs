//! The messages between nodes.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Entry;
use crate::moderation::{Ban, Report};

/// A message from one node to another, about a user of the receiving node.
///
/// Externally tagged (`{"deliver": {...}}`): an internally tagged enum is read through a buffer
/// that cannot hold the raw payload of [`Msg::Deliver`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Msg {
    /// `to` (waiting on the receiving node) was matched with `partner` in `room`.
    Paired {
        /// The room id both nodes use.
        room: String,
        /// The receiving node's user.
        to: String,
        /// Its partner's queue entry.
        partner: Entry,
        /// Whether `to` starts the call.
        initiator: bool,
    },
    /// An event for `to`, from its partner in `room` (room ids are unique: the room names the
    /// sender).
    Deliver {
        /// The room.
        room: String,
        /// The receiving node's user.
        to: String,
        /// The event name.
        event: String,
        /// The event's payload, as the client gets it.
        payload: Box<RawValue>,
    },
    /// `user`, away from the receiving node, came back through node `from` with `token`
    /// (`None`: `from` verified its JWT): the receiving node hands its room over.
    Migrate {
        /// The returning user.
        user: String,
        /// The resume token it presented.
        token: Option<String>,
        /// The node it is connected to now.
        from: String,
    },
    /// The receiving node asked for `user`'s session (see [`Msg::Migrate`]) and cannot have it.
    Refused {
        /// The user.
        user: String,
    },
    /// `to`, connected to the receiving node, takes back `room` with `partner` (on
    /// `partner_node`).
    Handover {
        /// The room.
        room: String,
        /// The receiving node's user.
        to: String,
        /// Its partner.
        partner: String,
        /// The partner's node.
        partner_node: String,
        /// Whether `to` starts the call.
        initiator: bool,
        /// True when the partner's node must be told where `to` is now (it is not the node that
        /// handed the room over); the receiving node tells it once the room is taken back, so
        /// that the partner's relays cannot arrive before the room.
        relink: bool,
    },
    /// The partner of `to` in `room` is now connected to `node`: `to` gets
    /// `partner-reconnected`.
    Relink {
        /// The room.
        room: String,
        /// The receiving node's user.
        to: String,
        /// The partner's new node.
        node: String,
    },
    /// A node's message to itself, each heartbeat: proof that its channel is subscribed.
    Ping {
        /// When it was sent (Unix ms).
        sent: u64,
    },
    /// `to`'s partner left `room`: `to` gets `partner-left`.
    Left {
        /// The room.
        room: String,
        /// The receiving node's user.
        to: String,
        /// The `partner-left` reason.
        reason: String,
    },
    /// To every node (the broadcast channel): node `from` asks who holds `user` (an operator's
    /// `GET /admin/users/{userId}`); the node that does answers [`Msg::Found`].
    Lookup {
        /// The asking node.
        from: String,
        /// The question's number on that node.
        ask: u64,
        /// The user.
        user: String,
    },
    /// The answer to [`Msg::Lookup`] `ask`: the user as the node that holds it sees it.
    Found {
        /// The question's number.
        ask: u64,
        /// The `GET /admin/users/{userId}` body.
        view: Box<RawValue>,
    },
    /// To every node (the broadcast channel): an operator's or the auto-ban's act, made on
    /// node `from`.
    Moderation {
        /// The node it was made on (which applied it already).
        from: String,
        /// What was done.
        act: Act,
    },
}

/// A moderation act every node applies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Act {
    /// A ban was made.
    Ban(Ban),
    /// A ban was lifted.
    Unban {
        /// The ban.
        id: String,
    },
    /// An operator kicked a user (connected to whichever node).
    Kick {
        /// The user.
        user: String,
        /// The operator's reason.
        reason: String,
    },
    /// A user was reported (every node counts it for the auto-ban and the feed).
    Report(Report),
}
