//! `webrtc-offer`, `webrtc-answer`, `webrtc-ice-candidate`: relayed verbatim to the partner.

use serde_json::value::RawValue;

use crate::model::Reject;
use crate::protocol::incoming::SignalIn;
use crate::protocol::outgoing::SignalOut;
use crate::signaling::Ctx;

fn relay(
    ctx: &Ctx<'_>,
    raw: Option<&RawValue>,
    event: &'static str,
    field: &'static str,
) -> Result<(), Reject> {
    let signal = SignalIn::parse(raw, field)?;
    super::to_partner(
        ctx,
        &signal.to,
        event,
        &SignalOut {
            field,
            body: &signal.body,
            from_user_id: ctx.user(),
            room_id: &signal.to.room_id,
        },
    )
}

/// `webrtc-offer {roomId, offer, targetUserId?}` → partner: `{offer, fromUserId, roomId}`.
pub(super) fn offer(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
    relay(ctx, raw, "webrtc-offer", "offer")
}

/// `webrtc-answer {roomId, answer, targetUserId?}` → partner: `{answer, fromUserId, roomId}`.
pub(super) fn answer(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
    relay(ctx, raw, "webrtc-answer", "answer")
}

/// `webrtc-ice-candidate {roomId, candidate, targetUserId?}` → partner:
/// `{candidate, fromUserId, roomId}`.
pub(super) fn ice_candidate(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
    relay(ctx, raw, "webrtc-ice-candidate", "candidate")
}
