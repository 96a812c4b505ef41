//! `chat-message {roomId, message, type?}`: to both members, the sender's copy being its receipt.

use serde_json::value::RawValue;

use crate::model::Reject;
use crate::node::send;
use crate::protocol::incoming::{ChatIn, parse};
use crate::protocol::outgoing::{ChatOut, now_ms};
use crate::signaling::Ctx;

/// Delivers a chat line to the partner, then echoes it to the sender with the same id, so the
/// sender knows it was delivered. Both happen under one hold of the core lock: otherwise the
/// partner could read the line, answer, and end the call before the receipt was queued, and the
/// sender would see `partner-left` before its own receipt (seen here in a soak run).
pub(super) fn message(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
    let chat: ChatIn = parse(raw, true)?;
    chat.validate()?;
    let id = crate::model::uuid_v4().simple().to_string();
    let out = ChatOut {
        id: &id,
        from_user_id: ctx.user(),
        room_id: &chat.to.room_id,
        message: &chat.message,
        kind: chat.kind.as_deref().unwrap_or("text"),
        timestamp: now_ms(),
    };
    let core = ctx.core()?;
    let (partner, link) = core.route(
        ctx.user(),
        &chat.to.room_id,
        chat.to.target_user_id.as_deref(),
    )?;
    ctx.relay(partner, link, &chat.to.room_id, "chat-message", &out)?;
    send(ctx.socket, "chat-message", &out);
    drop(core);
    Ok(())
}
