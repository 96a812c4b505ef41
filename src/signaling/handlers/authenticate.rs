//! `authenticate {userId?, userInfo?, token?, resumeToken?}` →
//! `authenticated {userId, socketId, serverStats, resumeToken, resumed}`.

use serde_json::value::RawValue;

use crate::model::{ErrorCode, Reject, UserId};
use crate::node::resume::{Attempt, Completion, complete, defer_to_cluster};
use crate::protocol::incoming::{AuthenticateIn, parse};
use crate::signaling::Ctx;

/// Binds the socket to a user and a profile.
///
/// Who the user is: with a JWT key configured, the `sub` of the token given here or in the
/// handshake (the client's `userId` is ignored); otherwise the client's `userId`, or a fresh
/// random id. Sending it again on the same socket updates the profile; another id is refused.
/// With the `resumeToken` of an earlier session (or, with tokens on, a valid token for the same
/// user), a new connection takes that session over (see [`Core::join`](crate::core::Core::join)):
/// the old connection, if still open, is closed.
pub(crate) fn handle(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
    let p: AuthenticateIn = parse(raw, false)?;
    p.validate()?;
    let profile = p.user_info.map(|info| info.into_profile()).transpose()?;
    let claimed: Option<UserId> = match &ctx.hub.verifier {
        Some(verifier) => {
            let token = p
                .token
                .as_deref()
                .or(ctx.session.handshake_token.as_deref())
                .ok_or(ErrorCode::TokenRequired)?;
            Some(verifier.verify(token)?.into())
        }
        None => p.user_id.map(Into::into),
    };
    // A banned user, or a connection from a banned address, gets no session, and asks no other
    // node for one (a handover would take a room from its node for nothing). Checked again
    // under the core lock in `complete`, for a ban made while this waits.
    let ban = claimed
        .as_deref()
        .and_then(|u| ctx.hub.user_ban(u))
        .or_else(|| ctx.session.ip.and_then(|ip| ctx.hub.address_ban(ip)));
    if let Some(ban) = ban {
        return Err(Reject::banned(&ban.reason, ban.until));
    }
    let attempt = Attempt {
        claimed,
        profile,
        resume: p.resume_token,
        ack: ctx.ack,
    };
    // Settled later (by the cluster, or once the connection holding the id has answered a
    // probe): the acknowledgement then carries the final outcome, not a premature `ok`.
    if defer_to_cluster(ctx.hub, ctx.session, ctx.socket, &attempt) {
        ctx.answer_later();
        return Ok(());
    }
    if complete(ctx.hub, ctx.session, ctx.socket, attempt, None)? == Completion::Probing {
        ctx.answer_later();
    }
    Ok(())
}
