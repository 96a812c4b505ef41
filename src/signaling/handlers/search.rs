//! `find-random-partner`, `next-partner` and `end-chat`: entering and leaving the queue and rooms.

use std::time::Instant;

use serde_json::value::RawValue;

use crate::model::{ErrorCode, Reject};
use crate::protocol::incoming::{FindIn, parse};
use crate::signaling::Ctx;

fn refuse_when_shutting_down(ctx: &Ctx<'_>) -> Result<(), Reject> {
    if ctx.hub.is_shutting_down() {
        return Err(ErrorCode::ShuttingDown.into());
    }
    Ok(())
}

/// `find-random-partner {preferences?}`: `searching` and `queue-status`, or `matched` for both.
pub(super) fn find(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
    let p: FindIn = parse(raw, false)?;
    let prefs = p.preferences.map(|p| p.into_preferences()).transpose()?;
    refuse_when_shutting_down(ctx)?;
    let mut core = ctx.core()?;
    let effects = core.find(ctx.user(), prefs, Instant::now())?;
    ctx.hub.deliver(&mut core, effects);
    Ok(())
}

/// `next-partner`: the partner gets `partner-left`, the sender searches again.
pub(super) fn next(ctx: &Ctx<'_>, _raw: Option<&RawValue>) -> Result<(), Reject> {
    refuse_when_shutting_down(ctx)?;
    let mut core = ctx.core()?;
    let effects = core.next(ctx.user(), Instant::now())?;
    ctx.hub.deliver(&mut core, effects);
    Ok(())
}

/// `end-chat`: the partner gets `partner-left`, the sender `chat-ended`.
pub(super) fn end(ctx: &Ctx<'_>, _raw: Option<&RawValue>) -> Result<(), Reject> {
    let mut core = ctx.core()?;
    let effects = core.end(ctx.user(), Instant::now())?;
    ctx.hub.deliver(&mut core, effects);
    Ok(())
}
