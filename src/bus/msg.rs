//! The messages between nodes.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Entry;
use crate::moderation::{Ban, Report};

/// A room that moves with a recovered session (see [`Msg::Recovered`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RoomMove {
    /// The room.
    pub room: String,
    /// The partner.
    pub partner: String,
    /// The partner's node.
    pub partner_node: String,
    /// Whether the recovered user starts the call.
    pub initiator: bool,
    /// Whether the partner's node must be told where the user is now (see
    /// [`Msg::Handover`]).
    pub relink: bool,
}

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
        /// The search of `to` that was matched: a node drops a pairing of a search its user
        /// gave up or replaced since (absent from nodes of earlier versions: not checked).
        #[serde(default)]
        search: Option<u64>,
    },
    /// To the node that matches for the cluster (the lease holder): `entry`'s user searches,
    /// from `entry.node`. `blocks` are the users it blocked and how long each block has left
    /// (ms), so that a holder that just took over knows them.
    Seek {
        /// The search.
        entry: Entry,
        /// Whom the user blocked, and for how many more ms.
        #[serde(default)]
        blocks: Vec<(String, u64)>,
    },
    /// To the lease holder: `user` of `node` stopped searching.
    Unseek {
        /// The user.
        user: String,
        /// Its node.
        node: String,
    },
    /// To the lease holder: `by` blocked `other` for `ttl_ms`.
    Block {
        /// Who blocked.
        by: String,
        /// Whom.
        other: String,
        /// For how long (ms).
        ttl_ms: u64,
    },
    /// From the lease holder: search `search` of `user` cannot wait, a user of the same id waits
    /// on another node.
    Taken {
        /// The user.
        user: String,
        /// Its search.
        search: u64,
    },
    /// A pairing of `user`'s search `search` fell through on its partner's node (the partner
    /// left meanwhile): the lease holder took the search out of its queue, so it is published
    /// again, if the user still waits with it.
    Again {
        /// The receiving node's user.
        user: String,
        /// Its search.
        search: u64,
    },
    /// From the lease holder, every `queue-status` interval: how many users wait in the whole
    /// cluster, and each of the receiving node's waiting users' place (1 is next) and the wait
    /// the cluster's recent match rate gives that place (ms; `None` without a match in the last
    /// minute).
    Standing {
        /// Users waiting in the cluster.
        total: usize,
        /// `(user, position, wait ms at the recent match rate)` of the receiving node's users.
        users: Vec<(String, usize, Option<u64>)>,
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
        /// Where to say how it went (absent: nobody waits; nodes of earlier versions neither
        /// send nor read it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply: Option<Reply>,
    },
    /// The relay the receiving node sent with [`Reply::ack`] `id` was delivered (`code` none) or
    /// not (`code`: why): the sender's acknowledgement says so.
    Acked {
        /// The receiving node's number for the relay.
        id: u64,
        /// Why it was not delivered.
        code: Option<String>,
    },
    /// A relay `to` (a user of the receiving node) sent in `room`, without an acknowledgement,
    /// was not delivered (`code`: why): it gets an `error` event.
    Undelivered {
        /// The room.
        room: String,
        /// The sender.
        to: String,
        /// The event it sent.
        event: String,
        /// Why it was not delivered.
        code: String,
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
        /// What was sent to `to` while it was away, as the packets its client gets (after
        /// `rejoined`); absent from nodes of earlier versions.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        missed: Vec<String>,
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
        /// Whether the partner recovered its session (no new offer comes); absent from nodes
        /// of earlier versions.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        recovered: bool,
    },
    /// To every node: a client came back through `from` with the pid of session `sid`, made by
    /// node `origin`, having read the events up to `offset`. The node that holds the session
    /// hands it over ([`Msg::Recovered`]) or says why not ([`Msg::Unrecovered`]); `origin`
    /// also says so when no node can have it (it knows where its sessions went).
    Recover {
        /// The Socket.IO session id.
        sid: String,
        /// The client's offset.
        offset: Option<String>,
        /// The node the client is connected to now.
        from: String,
        /// The node that made the session.
        origin: String,
    },
    /// The session a client of the receiving node asked for (see [`Msg::Recover`]), given up
    /// by the sending node: the transport's part (its numbering, the events not known
    /// delivered), its user, and its room or search.
    Recovered {
        /// The transport's part; its `sid` names the waiting connect.
        session: crate::ws::recovery::Exported,
        /// The user.
        user: String,
        /// Its room, if it is in a call.
        room: Option<RoomMove>,
        /// Its search, if it was searching.
        search: Option<crate::model::profile::Preferences>,
        /// Its profile.
        profile: Option<crate::model::profile::Profile>,
    },
    /// The session `sid` a client of the receiving node asked for cannot move: the client gets
    /// a fresh one, unless `retry` (its connection still looked alive and is being closed:
    /// ask again in a moment).
    Unrecovered {
        /// The Socket.IO session id.
        sid: String,
        /// Whether to ask again.
        retry: bool,
        /// Why not (the `reason` label of `roulette_recoveries_refused_total`).
        reason: String,
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

/// [`Msg::Deliver`] from borrowed parts, written as the same JSON.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum DeliverRef<'a, T> {
    /// See [`Msg::Deliver`].
    Deliver {
        /// The room.
        room: &'a str,
        /// The receiving node's user.
        to: &'a str,
        /// The event name.
        event: &'a str,
        /// The event's payload.
        payload: &'a T,
        /// Where to say how it went.
        #[serde(skip_serializing_if = "Option::is_none")]
        reply: Option<&'a Reply>,
    },
}

/// [`Msg::Deliver`] as the inbox reads it: its strings borrowed from the frame (copied only
/// when they hold an escape), its payload the frame's own text. A relay is the commonest
/// message, and decoding it into owned parts was the largest allocator of a node in a cluster.
#[derive(Debug, Deserialize)]
pub(crate) struct RelayIn<'a> {
    /// The room.
    #[serde(borrow)]
    pub room: Cow<'a, str>,
    /// The receiving node's user.
    #[serde(borrow)]
    pub to: Cow<'a, str>,
    /// The event name.
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    /// The event's payload, as the client gets it.
    #[serde(borrow)]
    pub payload: &'a RawValue,
    /// Where to say how it went.
    #[serde(default, borrow)]
    pub reply: Option<ReplyIn<'a>>,
}

impl RelayIn<'_> {
    /// The owned message, for one that goes on to another node.
    pub(crate) fn into_owned(self) -> Msg {
        Msg::Deliver {
            room: self.room.into_owned(),
            to: self.to.into_owned(),
            event: self.event.into_owned(),
            payload: self.payload.to_owned(),
            reply: self.reply.map(|r| Reply {
                node: r.node.into_owned(),
                ack: r.ack,
            }),
        }
    }
}

impl<'a> RelayIn<'a> {
    /// The borrowed view of an owned [`Msg::Deliver`] (`None` for any other message).
    pub(crate) fn of(msg: &'a Msg) -> Option<RelayIn<'a>> {
        let Msg::Deliver {
            room,
            to,
            event,
            payload,
            reply,
        } = msg
        else {
            return None;
        };
        Some(RelayIn {
            room: Cow::Borrowed(room),
            to: Cow::Borrowed(to),
            event: Cow::Borrowed(event),
            payload,
            reply: reply.as_ref().map(|r| ReplyIn {
                node: Cow::Borrowed(&r.node),
                ack: r.ack,
            }),
        })
    }
}

/// [`Reply`] as the inbox reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct ReplyIn<'a> {
    /// The sending node.
    #[serde(borrow)]
    pub node: Cow<'a, str>,
    /// The sending node's number for an acknowledged relay.
    #[serde(default)]
    pub ack: Option<u64>,
}

/// Where a node that received a relay says how it went (see [`Msg::Deliver`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reply {
    /// The sending node.
    pub node: String,
    /// The sending node's number for an acknowledged relay (the sender waits for its answer);
    /// none: only a failure is told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<u64>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_written_from_borrowed_parts_is_the_owned_message() {
        let payload = serde_json::json!({"candidate": {"candidate": "a \"b\" é", "sdpMid": "0"}});
        let borrowed = serde_json::to_string(&DeliverRef::Deliver {
            room: "r1",
            to: "bob",
            event: "webrtc-ice-candidate",
            payload: &payload,
            reply: None,
        })
        .unwrap();
        let owned = serde_json::to_string(&Msg::Deliver {
            room: "r1".into(),
            to: "bob".into(),
            event: "webrtc-ice-candidate".into(),
            payload: serde_json::value::to_raw_value(&payload).unwrap(),
            reply: None,
        })
        .unwrap();
        assert_eq!(borrowed, owned);
    }
}
