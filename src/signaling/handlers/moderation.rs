//! `block-user {userId}` and `report-user {userId, reason}`: keep a pair apart from now on.

use std::time::Instant;

use serde_json::value::RawValue;

use crate::model::Reject;
use crate::moderation::{Seen, network_of};
use crate::protocol::incoming::{ModerationIn, parse};
use crate::signaling::Ctx;

fn parse_target(raw: Option<&RawValue>) -> Result<ModerationIn, Reject> {
    let m: ModerationIn = parse(raw, true)?;
    m.validate()?;
    Ok(m)
}

/// The sender and `userId` are never paired again (for `BLOCK_TTL_MS`).
pub(super) fn block(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
    let m = parse_target(raw)?;
    ctx.core()?.block(ctx.user(), &m.user_id, Instant::now())?;
    tracing::info!(user = %ctx.user(), blocked = %m.user_id, "block");
    Ok(())
}

/// Blocks like `block-user`, and logs and counts the report for moderators.
pub(super) fn report(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
    let m = parse_target(raw)?;
    ctx.hub
        .limits
        .admit_report(&ctx.session.budget, ctx.session.ip)?;
    let now = Instant::now();
    let room = {
        let mut core = ctx.core()?;
        core.report(ctx.user(), &m.user_id, now)?;
        // The room they share, when the reported user is the reporter's partner, and how long
        // it has been open.
        core.room_of(ctx.user())
            .filter(|r| r.partner_of(ctx.user()).is_some_and(|p| **p == *m.user_id))
            .map(|r| (r.id.to_string(), r.age(now).as_millis() as u64))
    };
    let network = ctx.session.ip.map(network_of);
    ctx.hub.record_report(
        ctx.user(),
        &m.user_id,
        m.reason.as_deref().unwrap_or(""),
        Seen {
            room_id: room.as_ref().map(|r| r.0.as_str()),
            call_ms: room.as_ref().map(|r| r.1),
            network: network.as_deref(),
            // With JWTs the reporter's id is its token's subject, vouched for by its issuer.
            verified: ctx.hub.verifier.is_some(),
        },
    );
    tracing::warn!(
        reporter = %ctx.user(),
        reported = %m.user_id,
        reason = m.reason.as_deref().unwrap_or(""),
        "user reported"
    );
    Ok(())
}
