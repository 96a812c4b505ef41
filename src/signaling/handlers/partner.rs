//! `typing`, `quality-report`, `connection-status`: validated, then relayed to the partner as
//! `partner-typing`, `partner-quality-report`, `partner-connection-status`.

use std::time::Instant;

use serde_json::value::RawValue;

use crate::model::Reject;
use crate::protocol::incoming::{ConnectionStatusIn, QualityReportIn, TypingIn, parse};
use crate::protocol::outgoing::{PartnerQualityOut, PartnerStatusOut, PartnerTypingOut, now_ms};
use crate::signaling::Ctx;

/// `typing {roomId, isTyping}` → `partner-typing {fromUserId, roomId, isTyping, timestamp}`.
pub(super) fn typing(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
    let t: TypingIn = parse(raw, true)?;
    super::to_partner(
        ctx,
        &t.to,
        "partner-typing",
        &PartnerTypingOut {
            from_user_id: ctx.user(),
            room_id: &t.to.room_id,
            is_typing: t.is_typing,
            timestamp: now_ms(),
        },
    )
}

/// `quality-report {roomId, quality, stats}` → `partner-quality-report`, with the server's own
/// `grade` of the numbers; the grade is counted for `/stats`.
pub(super) fn quality_report(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
    let q: QualityReportIn = parse(raw, true)?;
    q.validate()?;
    super::to_partner_and(ctx, &q.to, "partner-quality-report", |core| {
        PartnerQualityOut {
            from_user_id: ctx.user(),
            room_id: &q.to.room_id,
            quality: q.quality,
            grade: core.call_report(&q.stats),
            stats: &q.stats,
            timestamp: now_ms(),
        }
    })
}

/// `connection-status {roomId, status, quality?}` → `partner-connection-status`; the state feeds
/// the connection success figures.
pub(super) fn connection_status(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
    let c: ConnectionStatusIn = parse(raw, true)?;
    super::to_partner_and(ctx, &c.to, "partner-connection-status", |core| {
        core.call_status(&c.to.room_id, c.status, Instant::now());
        PartnerStatusOut {
            from_user_id: ctx.user(),
            room_id: &c.to.room_id,
            status: c.status,
            quality: c.quality,
            timestamp: now_ms(),
        }
    })
}
