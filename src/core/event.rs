//! What the core decides to tell a user, in the domain's terms: no wall clock, no ICE servers,
//! no wording. The node turns each into its wire event (`node::deliver`), adding the time, the
//! call's ICE servers and the human-readable messages.

use crate::model::reason::Reason;
use crate::model::{RoomId, UserId, WaitBasis};

/// Paired with `partner_id` in `room_id`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Matched {
    /// The new room.
    pub room_id: RoomId,
    /// The other member.
    pub partner_id: UserId,
    /// True for exactly one of the two: that one creates the WebRTC offer.
    pub is_initiator: bool,
    /// How long this user searched, in ms.
    pub wait_time: u64,
    /// Interests both users listed.
    pub common_interests: Vec<String>,
    /// True when this user listed interests and was matched without a shared one.
    pub relaxed: bool,
}

/// Where a waiting user stands.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueueStatus {
    /// 1 for the longest-waiting user.
    pub position: usize,
    /// Users waiting now (in the whole cluster, for a cluster's node).
    pub total_waiting: usize,
    /// Expected remaining wait, in ms: never past the search's `search-timeout`.
    pub estimated_wait_ms: u64,
    /// What that figure rests on.
    pub basis: WaitBasis,
    /// True once the user's interests no longer restrict its partners.
    pub relaxed: bool,
}

impl QueueStatus {
    /// The status of the user at `position` of `total_waiting`, expected to wait `wait`
    /// (ms, and what that rests on).
    pub(crate) fn new(
        position: usize,
        total_waiting: usize,
        (wait_ms, basis): (u64, WaitBasis),
        relaxed: bool,
    ) -> Self {
        QueueStatus {
            position,
            total_waiting,
            estimated_wait_ms: wait_ms,
            basis,
            relaxed,
        }
    }
}

/// A search started.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Searching {
    /// True once the user's interests no longer restrict its partners.
    pub relaxed: bool,
}

/// The partner left the room (or dropped and is held for the grace).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PartnerLeft {
    /// Why.
    pub reason: Reason,
    /// The room.
    pub room_id: RoomId,
    /// Whether the partner may come back into this room.
    pub can_reconnect: bool,
}

/// The user's own `end-chat` closed its room or cancelled its search.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChatEnded {
    /// The room that ended; `None` when a search was cancelled.
    pub room_id: Option<RoomId>,
    /// `Ended` or `SearchCancelled`.
    pub reason: Reason,
}

/// The server ended a room.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoomEnded {
    /// `MaxDuration`, or `PartnerLeft` for a user who comes back after its partner left.
    pub reason: Reason,
    /// The room.
    pub room_id: RoomId,
    /// How long the room lasted, in ms.
    pub duration: u64,
}

/// A resumed session still has its room: renegotiate the call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rejoined {
    /// The room, unchanged.
    pub room_id: RoomId,
    /// The partner, unchanged.
    pub partner_id: UserId,
    /// Whether this user creates the new offer.
    pub is_initiator: bool,
}

/// The partner came back within the grace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PartnerReconnected {
    /// The room, unchanged.
    pub room_id: RoomId,
    /// The partner who came back.
    pub partner_id: UserId,
    /// It recovered its session (its call never stopped); false when it took the session back
    /// with its token, and sets up a new peer connection.
    pub recovered: bool,
}

/// The partner's connection dropped: the room is held for it for the reconnect grace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PartnerReconnecting {
    /// The room, unchanged.
    pub room_id: RoomId,
    /// The partner who is away.
    pub partner_id: UserId,
}

/// A search reached `MAX_WAITING_TIME_MS`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SearchTimeout {
    /// How long the user waited, in ms.
    pub wait_time: u64,
}

/// A room opened or closed: what the node's webhooks say of it (`session.started`,
/// `session.ended`). Told by the node of the room's initiator only, so that a room shared by
/// two nodes is told once.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SessionNote {
    /// A pair was made.
    Started {
        /// The room.
        room_id: RoomId,
        /// The member who sends the offer.
        initiator: UserId,
        /// The other.
        responder: UserId,
        /// How long each searched, in ms (initiator, responder).
        waits_ms: [u64; 2],
    },
    /// A room closed.
    Ended {
        /// The room.
        room_id: RoomId,
        /// The member who sent the offer.
        initiator: UserId,
        /// The other.
        responder: UserId,
        /// How long it lasted, in ms.
        duration_ms: u64,
        /// Why it closed.
        reason: Reason,
        /// How the call went, as the members reported it.
        call: Option<crate::core::quality::CallOutcome>,
    },
}

/// One thing the core tells one user.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// `matched`.
    Matched(Matched),
    /// `queue-status`.
    QueueStatus(QueueStatus),
    /// `searching`.
    Searching(Searching),
    /// `partner-left`.
    PartnerLeft(PartnerLeft),
    /// `chat-ended`.
    ChatEnded(ChatEnded),
    /// `room-ended`.
    RoomEnded(RoomEnded),
    /// `rejoined`.
    Rejoined(Rejoined),
    /// `partner-reconnected`.
    PartnerReconnected(PartnerReconnected),
    /// `partner-reconnecting`.
    PartnerReconnecting(PartnerReconnecting),
    /// `search-timeout`.
    SearchTimeout(SearchTimeout),
}

#[cfg(test)]
impl Event {
    /// The name of the event the user gets for this.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Event::Matched(_) => "matched",
            Event::QueueStatus(_) => "queue-status",
            Event::Searching(_) => "searching",
            Event::PartnerLeft(_) => "partner-left",
            Event::ChatEnded(_) => "chat-ended",
            Event::RoomEnded(_) => "room-ended",
            Event::Rejoined(_) => "rejoined",
            Event::PartnerReconnected(_) => "partner-reconnected",
            Event::PartnerReconnecting(_) => "partner-reconnecting",
            Event::SearchTimeout(_) => "search-timeout",
        }
    }
}
