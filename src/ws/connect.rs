//! A client's namespace connect (`40`): a fresh session, a session it recovers on this node,
//! or one another node holds, asked for through the layer above (see
//! [`recovery`](super::recovery)).

use std::sync::Arc;

use super::conn::{Conn, Packets};
use super::frame::OutFrame;
use super::{End, Flow, Lost, Transport, packet, recovery};

/// Handles the connect to `/` with `auth` (the namespace itself was checked).
pub(super) fn namespace(
    t: &Transport,
    conn: &Arc<Conn>,
    st: &mut Packets,
    auth: Option<&str>,
) -> Flow {
    if st.session.is_some() {
        return Ok(());
    }
    let (pid, offset) = if conn.settings.recovery_grace.is_zero() {
        (None, None)
    } else {
        recovery::wanted(auth)
    };
    let mut elsewhere = None;
    let whose = pid.as_deref().map(|p| (p, recovery::open_pid(p)));
    let here = match whose {
        Some((pid, Some(whose))) => {
            let (sid, origin) = match whose {
                recovery::Whose::Here(sid) => (sid, recovery::own_node().to_string()),
                recovery::Whose::Node(sid, node) => (sid, node),
            };
            // A session moves with its client and keeps its first pid: it may be here
            // whichever node made it, or on another node whichever made it.
            if t.conns.knows(sid) {
                Some((pid, sid))
            } else {
                elsewhere = Some((sid, origin, pid));
                None
            }
        }
        Some((_, None)) => {
            refused(recovery::Refused::BadPid);
            None
        }
        None => None,
    };
    if let Some((pid, sid)) = here {
        match t.conns.recover(conn, sid, pid, offset.as_deref()) {
            Ok(s) => {
                st.session = Some(s);
                conn.joined();
                return Ok(());
            }
            Err(why) => refused(why),
        }
    }
    match t.upper.clone().join(&conn.handle(), conn.ip, auth) {
        Ok(s) => {
            st.session = Some(s.clone());
            conn.joined();
            // A session another node holds: the layer above asks it, and answers the
            // connect when it has (with the session, or a fresh one).
            if let Some((sid, node, pid)) = elsewhere {
                conn.out.lock().events = Some(s.clone());
                let asking = recovery::Asking {
                    origin: &node,
                    sid,
                    pid,
                    offset: offset.as_deref(),
                };
                if s.recover_elsewhere(&conn.handle(), asking) {
                    return Ok(());
                }
                refused(recovery::Refused::Unknown);
            }
            conn.welcome(&s, pid.is_some());
        }
        Err(message) => {
            conn.push_control(OutFrame::text(&packet::connect_error("/", message)))
                .ok();
            // The client gives up on this connection (socket.io-client closes it);
            // the server does not wait for that to free what it holds.
            return Err((End::Lost(Lost::Refused), 1000));
        }
    }
    Ok(())
}

/// Counts a recovery that gave the client a fresh session, and why.
pub(crate) fn refused(why: recovery::Refused) {
    tracing::debug!(reason = why.label(), "recovery refused: a fresh session");
    metrics::counter!("roulette_recoveries_refused_total", "reason" => why.label()).increment(1);
}
