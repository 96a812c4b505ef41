//! The handler registry: which function answers which event.
//!
//! Each handler parses its payload into a typed struct, validates it, asks the core, and emits.
//! A refusal is returned as a [`Reject`]; the dispatcher turns it into an `error` event naming
//! the event, so no handler can forget to answer.

pub(crate) mod authenticate;
mod chat;
mod moderation;
mod partner;
mod search;
mod signal;

use serde_json::value::RawValue;

use super::Ctx;
use crate::limits::EventClass;
use crate::model::Reject;

/// A handler: the context and the event's raw first argument.
pub(crate) type Handler = fn(&Ctx<'_>, Option<&RawValue>) -> Result<(), Reject>;

/// How an event is handled.
#[derive(Clone, Copy)]
pub(crate) struct Route {
    /// The function.
    pub handler: Handler,
    /// False only for `authenticate`: every other event needs an authenticated socket.
    pub needs_user: bool,
    /// The rate-limit budget the event is charged to.
    pub class: EventClass,
}

const fn user(handler: Handler, class: EventClass) -> Option<Route> {
    Some(Route {
        handler,
        needs_user: true,
        class,
    })
}

/// The route of a client→server event, or `None` for an event not in the protocol.
pub(crate) fn route(event: &str) -> Option<Route> {
    use EventClass::*;
    match event {
        "authenticate" => Some(Route {
            handler: authenticate::handle,
            needs_user: false,
            class: Other,
        }),
        "find-random-partner" => user(search::find, Search),
        "next-partner" => user(search::next, Search),
        "end-chat" => user(search::end, Other),
        "webrtc-offer" => user(signal::offer, Signal),
        "webrtc-answer" => user(signal::answer, Signal),
        "webrtc-ice-candidate" => user(signal::ice_candidate, Signal),
        "chat-message" => user(chat::message, Chat),
        "typing" => user(partner::typing, Chat),
        "quality-report" => user(partner::quality_report, Other),
        "connection-status" => user(partner::connection_status, Other),
        "block-user" => user(moderation::block, Other),
        "report-user" => user(moderation::report, Other),
        _ => None,
    }
}

/// Every event [`route`] knows, for documentation and tests.
pub const EVENTS: [&str; 13] = [
    "authenticate",
    "find-random-partner",
    "next-partner",
    "end-chat",
    "webrtc-offer",
    "webrtc-answer",
    "webrtc-ice-candidate",
    "chat-message",
    "typing",
    "quality-report",
    "connection-status",
    "block-user",
    "report-user",
];

/// Sends `payload` to the sender's partner, after checking that `to` names the sender's current
/// room and partner. A partner whose buffer is full is reported to the sender.
fn to_partner<T: serde::Serialize>(
    ctx: &Ctx<'_>,
    to: &crate::protocol::incoming::Addressed,
    event: &str,
    payload: &T,
) -> Result<(), Reject> {
    let core = ctx.core()?;
    let (partner, link) = core.route(ctx.user(), &to.room_id, to.target_user_id.as_deref())?;
    ctx.relay(partner, link, &to.room_id, event, payload)
}

/// Like [`to_partner`], with the payload made under the same lock once the route is known to be
/// good: for events the core also takes note of (call quality).
fn to_partner_and<T: serde::Serialize>(
    ctx: &Ctx<'_>,
    to: &crate::protocol::incoming::Addressed,
    event: &str,
    make: impl FnOnce(&mut crate::node::NodeCore) -> T,
) -> Result<(), Reject> {
    let mut core = ctx.core()?;
    let (partner, link) = core.route(ctx.user(), &to.room_id, to.target_user_id.as_deref())?;
    let (partner, link) = (partner.clone(), link.clone());
    let payload = make(&mut core);
    ctx.relay(&partner, &link, &to.room_id, event, &payload)
}
