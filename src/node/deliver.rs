//! The funnel: every effect the core decided, and every relay, reaches its recipient here,
//! on this node or through the bus to another.

use serde::Serialize;

use super::{Hub, Link, NodeCore, send};
use crate::bus::Msg;
use crate::core::Effect;
use crate::core::event::{Event, SessionNote};
use crate::ice::{Ice, unix_now};
use crate::model::{ErrorCode, Reject};
use crate::protocol::outgoing::{self as wire, ServerEvent, now_ms};

/// When a relay's sender is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relayed {
    /// Now: delivered here, or sent to a node that will only report a failure.
    Now,
    /// When the receiving node says how it went (see [`super::acks`]).
    Later,
}

impl Hub {
    /// Sends each effect to its recipient's socket. `matched` gets the ICE servers the new call
    /// should use (fresh TURN credentials), and its wait is recorded for `/metrics`.
    ///
    /// An effect for a partner on another node goes to that node: `partner-left` as the end of
    /// the room there, `partner-left` (connection lost) and `partner-reconnected` as events; the
    /// rest (`room-ended`) that node decides on its own. Ghosts whose room closed are forgotten
    /// afterwards.
    pub(crate) fn deliver(&self, core: &mut NodeCore, effects: Vec<Effect>) {
        for e in effects {
            match core.link(&e.to) {
                Some(Link::Local(socket)) => {
                    if let Event::Matched(m) = &e.event {
                        crate::metrics::waited(m.wait_time);
                    }
                    let event = to_wire(&self.ice, &e.to, e.event);
                    send(socket, event.name(), &event);
                }
                Some(Link::Remote(node)) => {
                    if let Some(msg) = forward(&self.ice, e) {
                        self.peers.send(node, &msg);
                    }
                }
                None => {}
            }
        }
        if let Some(w) = &self.webhooks {
            for note in core.take_sessions() {
                session_webhook(w, note);
            }
        }
        core.settle();
    }

    /// Sends a relayed event to `partner` over `link`: on its socket, or to its node (in order
    /// with the sender's other relays: the cluster's publisher keeps the order it was given). A
    /// partner whose buffer is full is `delivery-failed` for the sender. `waiter`: the sender's
    /// socket and acknowledgement, when it asked for one; a relay to another node is then
    /// answered when that node says how it went ([`Relayed::Later`]).
    pub(crate) fn relay<T: Serialize>(
        &self,
        partner: &str,
        link: &Link,
        room: &str,
        event: &str,
        payload: &T,
        waiter: Option<(&super::Sock, i64)>,
    ) -> Result<Relayed, Reject> {
        let relayed = match link {
            Link::Local(socket) => {
                if !send(socket, event, payload) {
                    return Err(ErrorCode::DeliveryFailed.into());
                }
                Relayed::Now
            }
            Link::Remote(node) => {
                // Only a sender that waits needs word back (a failure of any relay is told to
                // the sender's node, which the receiving node knows as its user's partner's).
                let id = waiter
                    .filter(|_| self.peers.answers(node))
                    .and_then(|(socket, ack)| self.acks.wait(socket, ack, event));
                let reply = id.map(|id| crate::bus::Reply {
                    node: self.peers.node(),
                    ack: Some(id),
                });
                let sent = self
                    .peers
                    .relay(node, room, partner, event, payload, reply.as_ref());
                if sent.is_err() {
                    if let Some(id) = id {
                        self.acks.forget(id);
                    }
                    return Err(ErrorCode::DeliveryFailed.into());
                }
                if id.is_some() {
                    Relayed::Later
                } else {
                    Relayed::Now
                }
            }
        };
        crate::metrics::relayed(event);
        Ok(relayed)
    }
}

/// `session.started` or `session.ended` for a room that opened or closed.
fn session_webhook(w: &crate::webhook::Webhooks, note: SessionNote) {
    match note {
        SessionNote::Started {
            room_id,
            initiator,
            responder,
            waits_ms,
        } => w.emit(
            "session.started",
            serde_json::json!({
                "roomId": room_id,
                "users": [initiator, responder],
                "initiator": initiator,
                "waitTimes": {initiator.as_ref(): waits_ms[0], responder.as_ref(): waits_ms[1]},
            }),
        ),
        SessionNote::Ended {
            room_id,
            initiator,
            responder,
            duration_ms,
            reason,
            call,
        } => w.emit(
            "session.ended",
            serde_json::json!({
                "roomId": room_id,
                "users": [initiator, responder],
                "duration": duration_ms,
                "reason": reason,
                "connected": call.as_ref().is_some_and(|c| c.connected),
                "quality": call,
            }),
        ),
    }
}

/// The wire event for what the core decided for `to`: the one place that adds the server's
/// time, the call's ICE servers (fresh TURN credentials for each `matched`) and the wording.
fn to_wire(ice: &Ice, to: &str, event: Event) -> ServerEvent {
    match event {
        Event::Matched(m) => ServerEvent::Matched(wire::Matched {
            room_id: m.room_id,
            partner_id: m.partner_id,
            is_initiator: m.is_initiator,
            wait_time: m.wait_time,
            common_interests: m.common_interests,
            relaxed: m.relaxed,
            ice_servers: ice.servers(to, unix_now()),
        }),
        Event::QueueStatus(q) => ServerEvent::QueueStatus(wire::QueueStatus::new(
            q.position,
            q.total_waiting,
            q.estimated_wait_ms,
            q.basis,
            q.relaxed,
        )),
        Event::Searching(x) => ServerEvent::Searching(wire::Searching {
            message: "Looking for a partner...",
            status: "searching",
            timestamp: now_ms(),
            relaxed: x.relaxed,
        }),
        Event::PartnerLeft(p) => ServerEvent::PartnerLeft(wire::PartnerLeft {
            reason: p.reason,
            room_id: p.room_id,
            can_reconnect: p.can_reconnect,
        }),
        Event::ChatEnded(c) => ServerEvent::ChatEnded(wire::ChatEnded {
            room_id: c.room_id,
            reason: c.reason,
        }),
        Event::RoomEnded(r) => ServerEvent::RoomEnded(wire::RoomEnded {
            reason: r.reason,
            room_id: r.room_id,
            duration: r.duration,
        }),
        Event::Rejoined(r) => ServerEvent::Rejoined(wire::Rejoined {
            room_id: r.room_id,
            partner_id: r.partner_id,
            is_initiator: r.is_initiator,
        }),
        Event::PartnerReconnected(p) => ServerEvent::PartnerReconnected(wire::PartnerReconnected {
            room_id: p.room_id,
            partner_id: p.partner_id,
            recovered: p.recovered,
        }),
        Event::PartnerReconnecting(p) => {
            ServerEvent::PartnerReconnecting(wire::PartnerReconnecting {
                room_id: p.room_id,
                partner_id: p.partner_id,
            })
        }
        Event::SearchTimeout(t) => ServerEvent::SearchTimeout(wire::SearchTimeout {
            message: "No partner was found in time; search again to keep looking",
            wait_time: t.wait_time,
        }),
    }
}

/// The message that tells a partner's node about `e`, or `None` when that node decides it on its
/// own (a room's time limit) or it cannot concern a remote partner.
fn forward(ice: &Ice, e: Effect) -> Option<Msg> {
    let to = e.to.to_string();
    let room = match &e.event {
        Event::PartnerLeft(p) if !p.can_reconnect => {
            return Some(Msg::Left {
                room: p.room_id.to_string(),
                to,
                reason: p.reason.to_string(),
            });
        }
        Event::PartnerLeft(p) => p.room_id.to_string(),
        Event::PartnerReconnected(p) => p.room_id.to_string(),
        Event::PartnerReconnecting(p) => p.room_id.to_string(),
        _ => return None,
    };
    let event = to_wire(ice, &to, e.event);
    serde_json::value::to_raw_value(&event)
        .ok()
        .map(|payload| Msg::Deliver {
            room,
            to,
            event: event.name().to_string(),
            payload,
            reply: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{
        ChatEnded, Matched, PartnerLeft, PartnerReconnected, QueueStatus, Rejoined, RoomEnded,
        SearchTimeout, Searching,
    };
    use crate::model::reason::Reason;

    fn every_event() -> Vec<Event> {
        let (room, user): (crate::model::RoomId, crate::model::UserId) = ("r".into(), "u".into());
        vec![
            Event::Matched(Matched {
                room_id: room.clone(),
                partner_id: user.clone(),
                is_initiator: true,
                wait_time: 5,
                common_interests: vec!["chess".into()],
                relaxed: false,
            }),
            Event::QueueStatus(QueueStatus::new(
                2,
                3,
                (15_000, crate::model::WaitBasis::Rate),
                false,
            )),
            Event::Searching(Searching { relaxed: true }),
            Event::PartnerLeft(PartnerLeft {
                reason: Reason::NextPartner,
                room_id: room.clone(),
                can_reconnect: false,
            }),
            Event::ChatEnded(ChatEnded {
                room_id: None,
                reason: Reason::SearchCancelled,
            }),
            Event::RoomEnded(RoomEnded {
                reason: Reason::MaxDuration,
                room_id: room.clone(),
                duration: 9,
            }),
            Event::Rejoined(Rejoined {
                room_id: room.clone(),
                partner_id: user.clone(),
                is_initiator: false,
            }),
            Event::PartnerReconnected(PartnerReconnected {
                room_id: room,
                partner_id: user,
                recovered: false,
            }),
            Event::SearchTimeout(SearchTimeout { wait_time: 300_000 }),
        ]
    }

    #[test]
    fn every_domain_event_becomes_the_wire_event_of_its_name() {
        let ice = Ice::new(&crate::ice::Settings {
            stun_urls: "stun:stun.example.com:3478".into(),
            ..Default::default()
        });
        for event in every_event() {
            let name = event.name();
            let wire = to_wire(&ice, "alice", event);
            assert_eq!(wire.name(), name);
            let json = serde_json::to_value(&wire).unwrap();
            match name {
                // The node adds what the core does not know: the call's ICE servers, the time,
                // the wording.
                "matched" => assert_eq!(
                    json["iceServers"][0]["urls"][0], "stun:stun.example.com:3478",
                    "{json}"
                ),
                "searching" => assert!(json["timestamp"].as_u64().unwrap() > 0, "{json}"),
                "queue-status" => {
                    assert_eq!(json["estimatedWaitTime"], 15, "{json}");
                    assert_eq!(json["message"], "Position 2 of 3, about 15 s", "{json}");
                }
                "search-timeout" => assert!(json["message"].is_string(), "{json}"),
                "partner-left" => assert_eq!(json["reason"], "next-partner", "{json}"),
                "chat-ended" => assert_eq!(json["roomId"], serde_json::Value::Null, "{json}"),
                _ => {}
            }
        }
    }

    #[test]
    fn a_remote_partner_learns_only_what_its_node_cannot_decide() {
        let ice = Ice::new(&crate::ice::Settings::default());
        let msgs: Vec<_> = every_event()
            .into_iter()
            .map(|event| {
                let name = event.name();
                let e = Effect {
                    to: "bob".into(),
                    event,
                };
                (name, forward(&ice, e))
            })
            .collect();
        for (name, msg) in msgs {
            match (name, msg) {
                ("partner-left", Some(Msg::Left { reason, to, .. })) => {
                    assert_eq!((reason.as_str(), to.as_str()), ("next-partner", "bob"))
                }
                ("partner-reconnected", Some(Msg::Deliver { event, .. })) => {
                    assert_eq!(event, "partner-reconnected")
                }
                (other, msg) => assert!(msg.is_none(), "{other} is not forwarded"),
            }
        }
    }
}
