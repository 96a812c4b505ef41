//! `authenticate {userId?, userInfo?}` → `authenticated {userId, socketId, serverStats}`.

use serde_json::value::RawValue;

use crate::core::UserId;
use crate::core::profile::Profile;
use crate::protocol::incoming::{AuthenticateIn, parse};
use crate::protocol::outgoing::Authenticated;
use crate::protocol::{ErrorCode, Reject};
use crate::signaling::{Ctx, send};

/// Binds the socket to a user id (the client's, or a fresh random one) and a profile.
/// Sending it again on the same socket updates the profile; another id is refused.
pub fn handle(ctx: &Ctx<'_>, raw: Option<&RawValue>) -> Result<(), Reject> {
    let p: AuthenticateIn = parse(raw, false)?;
    p.validate()?;
    let profile = match p.user_info {
        Some(info) => info.into_profile()?,
        None => Profile::default(),
    };
    let mut core = ctx.hub.lock();
    let mut state = ctx.session.state.lock();
    if state.closed {
        // The socket disconnected while this event waited for the lock: registering it would
        // leave a ghost nobody can reach.
        return Ok(());
    }
    let user: UserId = match (&state.user, p.user_id) {
        (Some(current), Some(wanted)) if **current != *wanted => {
            return Err(ErrorCode::AlreadyAuthenticated.into());
        }
        (Some(current), _) => current.clone(),
        (None, Some(wanted)) => wanted.into(),
        (None, None) => format!("user-{}", uuid::Uuid::new_v4().simple()).into(),
    };
    core.join(user.clone(), ctx.socket.clone(), profile)?;
    state.user = Some(user.clone());
    tracing::debug!(sid = %ctx.socket.id, %user, "authenticated");
    send(
        ctx.socket,
        "authenticated",
        &Authenticated {
            user_id: user,
            socket_id: ctx.socket.id.to_string(),
            server_stats: core.live(),
        },
    );
    Ok(())
}
