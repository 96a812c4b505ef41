//! The funnel: every effect the core decided, and every relay, reaches its recipient here,
//! on this node or through the bus to another.

use serde::Serialize;

use super::{Hub, Link, NodeCore, send};
use crate::bus::Msg;
use crate::core::Effect;
use crate::ice::unix_now;
use crate::model::{ErrorCode, Reject};
use crate::protocol::outgoing::ServerEvent;

impl Hub {
    /// Sends each effect to its recipient's socket. `matched` gets the ICE servers the new call
    /// should use (fresh TURN credentials), and its wait is recorded for `/metrics`.
    ///
    /// An effect for a partner on another node goes to that node: `partner-left` as the end of
    /// the room there, `partner-left` (connection lost) and `partner-reconnected` as events; the
    /// rest (`room-ended`) that node decides on its own. Ghosts whose room closed are forgotten
    /// afterwards.
    pub(crate) fn deliver(&self, core: &mut NodeCore, effects: Vec<Effect>) {
        for mut e in effects {
            match core.link(&e.to) {
                Some(Link::Local(socket)) => {
                    if let ServerEvent::Matched(m) = &mut e.event {
                        m.ice_servers = self.ice.servers(&e.to, unix_now());
                        crate::metrics::waited(m.wait_time);
                    }
                    send(socket, e.event.name(), &e.event);
                }
                Some(Link::Remote(node)) => {
                    if let Some(c) = self.cluster.get()
                        && let Some(msg) = forward(&e)
                    {
                        c.send(node, &msg);
                    }
                }
                None => {}
            }
        }
        core.settle();
    }

    /// Sends a relayed event to `partner` over `link`: on its socket, or to its node (in order
    /// with the sender's other relays: the cluster's publisher keeps the order it was given). A
    /// partner whose buffer is full is `delivery-failed` for the sender.
    pub(crate) fn relay<T: Serialize>(
        &self,
        partner: &str,
        link: &Link,
        room: &str,
        event: &str,
        payload: &T,
    ) -> Result<(), Reject> {
        match link {
            Link::Local(socket) => {
                if !send(socket, event, payload) {
                    return Err(ErrorCode::DeliveryFailed.into());
                }
            }
            Link::Remote(node) => {
                let cluster = self.cluster.get().ok_or(ErrorCode::DeliveryFailed)?;
                let payload = serde_json::value::to_raw_value(payload)
                    .map_err(|_| ErrorCode::DeliveryFailed)?;
                cluster.send(
                    node,
                    &Msg::Deliver {
                        room: room.to_string(),
                        to: partner.to_string(),
                        event: event.to_string(),
                        payload,
                    },
                );
            }
        }
        crate::metrics::relayed(event);
        Ok(())
    }
}

/// The message that tells a partner's node about `e`, or `None` when that node decides it on its
/// own (a room's time limit) or it cannot concern a remote partner.
fn forward(e: &Effect) -> Option<Msg> {
    let to = e.to.to_string();
    let deliver = |room: &str| {
        serde_json::value::to_raw_value(&e.event)
            .ok()
            .map(|payload| Msg::Deliver {
                room: room.to_string(),
                to: to.clone(),
                event: e.event.name().to_string(),
                payload,
            })
    };
    match &e.event {
        ServerEvent::PartnerLeft(p) if !p.can_reconnect => Some(Msg::Left {
            room: p.room_id.to_string(),
            to: to.clone(),
            reason: p.reason.to_string(),
        }),
        ServerEvent::PartnerLeft(p) => deliver(&p.room_id),
        ServerEvent::PartnerReconnected(p) => deliver(&p.room_id),
        _ => None,
    }
}
