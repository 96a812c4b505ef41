//! `authenticate {userId?, userInfo?, token?, resumeToken?}` →
//! `authenticated {userId, socketId, serverStats, resumeToken, resumed}`.

use serde_json::value::RawValue;

use crate::core::{Claim, UserId};
use crate::protocol::incoming::{AuthenticateIn, parse};
use crate::protocol::outgoing::Authenticated;
use crate::protocol::{ErrorCode, Reject};
use crate::signaling::{Ctx, Link, send, send_error};

/// Binds the socket to a user and a profile.
///
/// Who the user is: with a JWT key configured, the `sub` of the token given here or in the
/// handshake (the client's `userId` is ignored); otherwise the client's `userId`, or a fresh
/// random id. Sending it again on the same socket updates the profile; another id is refused.
/// With the `resumeToken` of an earlier session (or, with tokens on, a valid token for the same
/// user), a new connection takes that session over (see [`Core::join`](crate::core::Core::join)):
/// the old connection, if still open, is closed.
pub fn handle(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
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
    let replaced = {
        let mut core = ctx.hub.lock();
        let mut state = ctx.session.state.lock();
        if state.closed {
            // The socket disconnected while this event waited for the lock: registering it would
            // leave a ghost nobody can reach.
            return Ok(());
        }
        let user: UserId = match (&state.user, claimed) {
            (Some(current), Some(wanted)) if *current != wanted => {
                return Err(ErrorCode::AlreadyAuthenticated.into());
            }
            (Some(current), _) => current.clone(),
            (None, Some(wanted)) => wanted,
            (None, None) => format!("user-{}", uuid::Uuid::new_v4().simple()).into(),
        };
        // A verified token proves who this is: the newest connection gets the session.
        let claim = match ctx.hub.verifier {
            Some(_) => Claim::Verified,
            None => Claim::Named {
                resume: p.resume_token.as_deref(),
            },
        };
        let joined = core.join(
            user.clone(),
            Link::Local(ctx.socket.clone()),
            profile,
            claim,
        )?;
        state.user = Some(user.clone());
        tracing::debug!(sid = %ctx.socket.id, %user, resumed = joined.resumed, "authenticated");
        send(
            ctx.socket,
            "authenticated",
            &Authenticated {
                user_id: user.clone(),
                socket_id: ctx.socket.id.to_string(),
                server_stats: core.live(),
                resume_token: joined.resume_token,
                resumed: joined.resumed,
                ice_servers: ctx.hub.ice.servers(&user, crate::ice::unix_now()),
            },
        );
        ctx.hub.deliver(&mut core, joined.effects);
        joined.replaced
    };
    // Closing runs the old socket's disconnect handler, which takes the hub lock: only now.
    if let Some(Link::Local(old)) = replaced {
        send_error(&old, "authenticate", &ErrorCode::SessionReplaced.into());
        old.disconnect().ok();
    }
    Ok(())
}
