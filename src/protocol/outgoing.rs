//! Server → client events. Field names are the protocol's: camelCase, exactly as documented.

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;
use std::sync::Arc;

use crate::model::call::{ConnectionState, Quality, QualityStats};
use crate::model::reason::Reason;
use crate::model::{ErrorCode, ServerStats, WaitBasis};

/// Milliseconds since the Unix epoch, as JavaScript's `Date.now()`.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `authenticated`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Authenticated {
    /// The user id this connection now speaks for.
    pub user_id: Arc<str>,
    /// The Socket.IO socket id.
    pub socket_id: String,
    /// Live counts.
    pub server_stats: ServerStats,
    /// Present this with the same `userId` in a later `authenticate` to take this session back
    /// (after a dropped connection, or from a new connection while the old one lingers).
    pub resume_token: Arc<str>,
    /// True when this `authenticate` took back an earlier session with its `resumeToken`.
    pub resumed: bool,
    /// STUN and TURN servers for this user's calls.
    pub ice_servers: Vec<IceServer>,
}

/// An `RTCIceServer` as browsers take it in `new RTCPeerConnection({iceServers})`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username (`<expiry>:<userId>` for time-limited credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `matched`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Matched {
    /// The new room.
    pub room_id: Arc<str>,
    /// The other member.
    pub partner_id: Arc<str>,
    /// True for exactly one of the two: that one creates the WebRTC offer.
    pub is_initiator: bool,
    /// How long this user searched, in ms.
    pub wait_time: u64,
    /// Interests both users listed.
    pub common_interests: Vec<String>,
    /// True when this user listed interests and was matched without a shared one: its search
    /// had relaxed (it may have relaxed in the very step that matched it, with no
    /// `queue-status` to say so).
    pub relaxed: bool,
    /// Fresh ICE servers for this call (filled in by the signaling layer, which knows them).
    pub ice_servers: Vec<IceServer>,
}

/// `queue-status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueStatus {
    /// 1 for the longest-waiting user.
    pub position: usize,
    /// Expected remaining wait in whole seconds, as the Node server sent it (its client prints
    /// `~${estimatedWaitTime}s wait`): from the recent match rate, never past the end of the
    /// search (`search-timeout`); when there is nothing to estimate from, a placeholder that
    /// `message` says is one.
    pub estimated_wait_time: u64,
    /// The same in ms.
    pub estimated_wait_ms: u64,
    /// The same for a person: `"Position 2 of 3, about 20 s"`; a user waiting alone, one whose
    /// search would end first at the recent rate, and one for whom nobody matched lately is told
    /// so rather than given a figure.
    pub message: String,
    /// Users waiting now.
    pub total_waiting: usize,
    /// True once the user's interests no longer restrict its partners.
    pub relaxed: bool,
}

impl QueueStatus {
    /// The status of the user at `position` of `total_waiting`, expected to wait `wait_ms`
    /// (resting on `basis`).
    pub(crate) fn new(
        position: usize,
        total_waiting: usize,
        wait_ms: u64,
        basis: WaitBasis,
        relaxed: bool,
    ) -> Self {
        let secs = wait_ms.div_ceil(1000);
        let about = if secs < 120 {
            format!("about {secs} s")
        } else {
            format!("about {} min", secs.div_ceil(60))
        };
        let message = if total_waiting <= 1 {
            // Still waiting with nobody else in line (on any node: a cluster would have matched
            // a user waiting elsewhere at once) means the next person to arrive is the partner.
            "Nobody else is waiting right now: you will meet the next person who arrives".into()
        } else {
            match basis {
                WaitBasis::Rate => format!("Position {position} of {total_waiting}, {about}"),
                WaitBasis::BeyondSearch => format!(
                    "Position {position} of {total_waiting}: at the recent rate, no partner is \
                     likely before this search ends, in {about}"
                ),
                WaitBasis::Unknown => format!(
                    "Position {position} of {total_waiting}: no estimate, nobody was matched \
                     in the last minute"
                ),
            }
        };
        QueueStatus {
            position,
            estimated_wait_time: secs,
            estimated_wait_ms: wait_ms,
            message,
            total_waiting,
            relaxed,
        }
    }
}

/// `searching`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Searching {
    /// Human-readable status.
    pub message: &'static str,
    /// Always `"searching"`.
    pub status: &'static str,
    /// Server time, ms since the epoch.
    pub timestamp: u64,
    /// True once the user's interests no longer restrict its partners.
    pub relaxed: bool,
}

/// `partner-left`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartnerLeft {
    /// `next`, `ended`, `disconnect`, or `connection-lost` (the partner's transport dropped and
    /// the room is held for it: `canReconnect` is then true).
    pub reason: Reason,
    /// The room that ended.
    pub room_id: Arc<str>,
    /// Whether the partner may come back into this room.
    pub can_reconnect: bool,
}

/// `chat-ended`, to the user who sent `end-chat`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChatEnded {
    /// The room that ended; `null` when a search was cancelled.
    pub room_id: Option<Arc<str>>,
    /// `ended` or `search-cancelled`.
    pub reason: Reason,
}

/// `room-ended`, to both members, when the server ends a room.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoomEnded {
    /// Why: `max-duration`, or `partner-left` (told to a user who comes back after its partner
    /// left the room it held).
    pub reason: Reason,
    /// The room.
    pub room_id: Arc<str>,
    /// How long the room lasted, in ms.
    pub duration: u64,
}

/// `rejoined`, to a user whose resumed session still has its room: renegotiate the call.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rejoined {
    /// The room, unchanged.
    pub room_id: Arc<str>,
    /// The partner, unchanged.
    pub partner_id: Arc<str>,
    /// Whether this user creates the new WebRTC offer (as in `matched`).
    pub is_initiator: bool,
}

/// `partner-reconnected`, to the member whose partner came back within the grace period.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartnerReconnected {
    /// The room, unchanged.
    pub room_id: Arc<str>,
    /// The partner who came back.
    pub partner_id: Arc<str>,
    /// It recovered its session: its peer connection never stopped, no new offer comes. False:
    /// it took the session back with its token and sets up a new peer connection.
    pub recovered: bool,
}

/// `partner-reconnecting`, to the member whose partner's connection dropped: the room is held
/// for the partner for the reconnect grace, and the call (whose media does not need the server)
/// may go on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartnerReconnecting {
    /// The room, unchanged.
    pub room_id: Arc<str>,
    /// The partner who is away.
    pub partner_id: Arc<str>,
}

/// `search-timeout`, when a search reached `MAX_WAITING_TIME_MS`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchTimeout {
    /// Human-readable explanation.
    pub message: &'static str,
    /// How long the user waited, in ms.
    pub wait_time: u64,
}

/// `server-shutdown`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerShutdown {
    /// Human-readable explanation.
    pub message: &'static str,
    /// Server time, ms since the epoch.
    pub timestamp: u64,
    /// A suggested delay before reconnecting, spread per client so that thousands of clients do
    /// not all come back in the same instant.
    pub reconnect_in_ms: u64,
}

/// `error` (or, with no `event`, the body of `auth-error`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorOut<'a> {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong.
    pub message: &'a str,
    /// The event that caused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a str>,
    /// For `rate-limited`: when to try again, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// For `banned`: until when, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

/// The acknowledgement of an event a client emitted with a callback (`emitWithAck`): `{ok: true}`,
/// or the refusal, which then comes in the acknowledgement alone (no `error` event).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AckReply<'a> {
    /// Whether the event was handled.
    pub ok: bool,
    /// The refusal's stable code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    /// For `rate-limited`: when to try again, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// For `banned`: until when, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

impl<'a> AckReply<'a> {
    /// The acknowledgement of an event handled (`Ok`) or refused.
    pub(crate) fn of(outcome: Result<(), &'a crate::model::Reject>) -> Self {
        match outcome {
            Ok(()) => AckReply {
                ok: true,
                code: None,
                message: None,
                retry_after_ms: None,
                until: None,
            },
            Err(r) => AckReply {
                ok: false,
                code: Some(r.code),
                message: Some(&r.message),
                retry_after_ms: r.retry_after_ms,
                until: r.until,
            },
        }
    }
}

/// `kicked` and `banned`: an operator (or the auto-ban) removed this connection, which the
/// server closes next.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Removed<'a> {
    /// The operator's reason.
    pub reason: &'a str,
    /// For a person.
    pub message: &'a str,
    /// For `banned`: until when, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

/// `chat-message`, to both members (the sender's copy is its delivery receipt).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChatOut<'a> {
    /// A server-assigned id.
    pub id: &'a str,
    /// Who wrote it.
    pub from_user_id: &'a str,
    /// The room.
    pub room_id: &'a str,
    /// The text.
    pub message: &'a str,
    /// `text` unless the client said otherwise.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// Server time, ms since the epoch.
    pub timestamp: u64,
}

/// `partner-quality-report`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartnerQualityOut<'a> {
    /// The reporting partner.
    pub from_user_id: &'a str,
    /// The room.
    pub room_id: &'a str,
    /// The partner's own grade.
    pub quality: Option<Quality>,
    /// The server's grade of the raw numbers (see the README's formula); `null` without numbers.
    pub grade: Option<Quality>,
    /// The raw numbers.
    pub stats: &'a QualityStats,
    /// Server time, ms since the epoch.
    pub timestamp: u64,
}

/// `partner-connection-status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartnerStatusOut<'a> {
    /// The reporting partner.
    pub from_user_id: &'a str,
    /// The room.
    pub room_id: &'a str,
    /// Its connection state.
    pub status: ConnectionState,
    /// Its grade.
    pub quality: Option<Quality>,
    /// Server time, ms since the epoch.
    pub timestamp: u64,
}

/// `partner-typing`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartnerTypingOut<'a> {
    /// The partner.
    pub from_user_id: &'a str,
    /// The room.
    pub room_id: &'a str,
    /// Whether it is typing.
    pub is_typing: bool,
    /// Server time, ms since the epoch.
    pub timestamp: u64,
}

/// A relayed WebRTC signal: `{<field>: <body>, fromUserId, roomId}` with the body copied verbatim.
#[derive(Debug)]
pub(crate) struct SignalOut<'a> {
    /// `offer`, `answer` or `candidate`.
    pub field: &'static str,
    /// The sender's JSON, untouched.
    pub body: &'a RawValue,
    /// The sender.
    pub from_user_id: &'a str,
    /// The room.
    pub room_id: &'a str,
}

impl Serialize for SignalOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry(self.field, self.body)?;
        m.serialize_entry("fromUserId", self.from_user_id)?;
        m.serialize_entry("roomId", self.room_id)?;
        m.end()
    }
}

/// An event the core decides to send: the enum lets the core stay free of sockets while the
/// signaling layer does the emitting.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ServerEvent {
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
    /// `search-timeout`.
    SearchTimeout(SearchTimeout),
    /// `rejoined`.
    Rejoined(Rejoined),
    /// `partner-reconnected`.
    PartnerReconnected(PartnerReconnected),
    /// `partner-reconnecting`.
    PartnerReconnecting(PartnerReconnecting),
}

impl ServerEvent {
    /// The event name on the wire.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ServerEvent::Matched(_) => "matched",
            ServerEvent::QueueStatus(_) => "queue-status",
            ServerEvent::Searching(_) => "searching",
            ServerEvent::PartnerLeft(_) => "partner-left",
            ServerEvent::ChatEnded(_) => "chat-ended",
            ServerEvent::RoomEnded(_) => "room-ended",
            ServerEvent::SearchTimeout(_) => "search-timeout",
            ServerEvent::Rejoined(_) => "rejoined",
            ServerEvent::PartnerReconnected(_) => "partner-reconnected",
            ServerEvent::PartnerReconnecting(_) => "partner-reconnecting",
        }
    }
}

impl Serialize for ServerEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServerEvent::Matched(p) => p.serialize(s),
            ServerEvent::QueueStatus(p) => p.serialize(s),
            ServerEvent::Searching(p) => p.serialize(s),
            ServerEvent::PartnerLeft(p) => p.serialize(s),
            ServerEvent::ChatEnded(p) => p.serialize(s),
            ServerEvent::RoomEnded(p) => p.serialize(s),
            ServerEvent::SearchTimeout(p) => p.serialize(s),
            ServerEvent::Rejoined(p) => p.serialize(s),
            ServerEvent::PartnerReconnected(p) => p.serialize(s),
            ServerEvent::PartnerReconnecting(p) => p.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_out_embeds_the_body_verbatim() {
        let body = RawValue::from_string(r#"{"candidate":"c 1 udp","sdpMid":"0"}"#.into()).unwrap();
        let out = SignalOut {
            field: "candidate",
            body: &body,
            from_user_id: "alice",
            room_id: "r1",
        };
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"candidate":{"candidate":"c 1 udp","sdpMid":"0"},"fromUserId":"alice","roomId":"r1"}"#
        );
    }

    #[test]
    fn queue_status_speaks_seconds_like_the_node_server() {
        let q = QueueStatus::new(2, 3, 14_200, WaitBasis::Rate, false);
        assert_eq!(q.estimated_wait_time, 15, "whole seconds, rounded up");
        assert_eq!(q.estimated_wait_ms, 14_200);
        assert_eq!(q.message, "Position 2 of 3, about 15 s");
        let v = serde_json::to_value(&q).unwrap();
        assert_eq!(v["estimatedWaitTime"], 15);
        assert_eq!(v["estimatedWaitMs"], 14_200);
        assert_eq!(
            QueueStatus::new(1, 2, 180_000, WaitBasis::Rate, true).message,
            "Position 1 of 2, about 3 min"
        );
        // Alone in line (after a skip, say): a rate from earlier matches is no promise.
        let alone = QueueStatus::new(1, 1, 30_000, WaitBasis::Rate, false);
        assert!(
            alone.message.starts_with("Nobody else is waiting"),
            "{}",
            alone.message
        );
        assert_eq!(
            alone.estimated_wait_time, 30,
            "still a number, for the Node server's clients"
        );
    }

    #[test]
    fn queue_status_says_when_it_has_no_estimate() {
        let none = QueueStatus::new(201, 201, 300_000, WaitBasis::Unknown, false);
        assert_eq!(
            none.message,
            "Position 201 of 201: no estimate, nobody was matched in the last minute"
        );
        assert_eq!(none.estimated_wait_time, 300, "still a number");
        let beyond = QueueStatus::new(150, 200, 240_000, WaitBasis::BeyondSearch, false);
        assert_eq!(
            beyond.message,
            "Position 150 of 200: at the recent rate, no partner is likely before this search \
             ends, in about 4 min"
        );
        assert_eq!(beyond.estimated_wait_time, 240);
    }

    #[test]
    fn events_serialise_with_protocol_field_names() {
        let ev = ServerEvent::Matched(Matched {
            room_id: "r".into(),
            partner_id: "p".into(),
            is_initiator: true,
            wait_time: 5,
            common_interests: vec!["chess".into()],
            relaxed: false,
            ice_servers: vec![],
        });
        assert_eq!(ev.name(), "matched");
        assert_eq!(
            serde_json::to_value(&ev).unwrap(),
            serde_json::json!({"roomId":"r","partnerId":"p","isInitiator":true,"waitTime":5,"commonInterests":["chess"],"relaxed":false,"iceServers":[]})
        );
    }
}
