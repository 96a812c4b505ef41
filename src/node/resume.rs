//! Taking a session back: an `authenticate` that resumes a user's session, here or from
//! another node of the cluster, and the newcomer that finds its id held.

use std::sync::Arc;

use super::{Hub, Link, Session, Sock, answer, send, send_error};
use crate::bus::queue::Job;
use crate::core::Claim;
use crate::model::profile::Profile;
use crate::model::{ErrorCode, Reject, UserId};
use crate::protocol::outgoing::Authenticated;

/// What a client asked for in `authenticate`, kept while the cluster is asked about it.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    /// The user id it proved or named (`None`: a fresh one is made).
    pub claimed: Option<UserId>,
    /// The profile it sent.
    pub profile: Option<Profile>,
    /// The resume token it presented.
    pub resume: Option<String>,
    /// The acknowledgement it asked for: sent once the attempt is settled, with the outcome.
    pub ack: Option<i64>,
}

/// How far [`complete`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completion {
    /// Answered: the socket is bound (or its refusal is the `Err`).
    Done,
    /// The connection holding the id is being asked first: the answer (`authenticated`, or the
    /// refusal, and the acknowledgement) comes when it has answered.
    Probing,
}

/// In a cluster, a connection that may be taking back a session held on another node (it
/// names a user unknown here with a resume token, or proves one with a JWT) is answered only
/// once the cluster has been asked: the holding node hands the room over, and the client gets
/// `authenticated {resumed: true}` and `rejoined` as on a single node. Returns true when the
/// answer was deferred.
pub(crate) fn defer_to_cluster(
    hub: &Hub,
    session: &Arc<Session>,
    socket: &Sock,
    a: &Attempt,
) -> bool {
    if !hub.peers.may_hold_sessions() {
        return false;
    }
    let Some(user) = &a.claimed else {
        return false;
    };
    let verified = hub.verifier.is_some();
    if a.resume.is_none() && !verified {
        return false;
    }
    let core = hub.lock();
    let state = session.state.lock();
    if state.user.is_some() || state.closed || core.is_away(user) {
        return false;
    }
    let holder = match core.link(user) {
        // Known here: the ordinary path.
        Some(Link::Local(_)) => return false,
        // In a room here as the ghost of another node's user: that node holds the session.
        Some(Link::Remote(node)) => Some(node.clone()),
        None => None,
    };
    drop(state);
    drop(core);
    hub.defer(
        user.clone(),
        Pending {
            session: session.clone(),
            socket: socket.clone(),
            attempt: a.clone(),
            since: std::time::Instant::now(),
        },
    );
    let token = if verified { None } else { a.resume.clone() };
    match holder {
        Some(node) => hub.peers.send(
            &node,
            &crate::bus::Msg::Migrate {
                user: user.to_string(),
                token,
                from: hub.peers.node(),
            },
        ),
        None => hub.job(Job::Resume {
            user: user.clone(),
            token,
        }),
    }
    true
}

/// How long the connection that holds a user id has to answer a ping before a newcomer without
/// the session's resume token takes the id (see [`complete`]).
const PROBE: std::time::Duration = std::time::Duration::from_millis(1500);

/// Binds `socket` to the user of `a`, and answers `authenticated`. With `handover`, the room
/// another node gave up is taken back (`rejoined`).
///
/// In anonymous mode a client that knows no resume token (the Node server's clients send
/// `authenticate {userId}` again after every reconnection) still gets back in:
/// - when the connection that held the id has dropped (its room is held for the reconnect
///   grace), the held session ends as for any departure and the newcomer starts afresh;
/// - when it still looks alive, it is asked: a ping, and [`PROBE`] for the pong. One that does
///   not answer (a phone that changed networks, silently) is sent away and the newcomer starts
///   afresh; one that answers keeps its id, and the newcomer gets `user-id-taken`. The answer
///   comes within [`PROBE`] and a moment either way.
pub(crate) fn complete(
    hub: &Hub,
    session: &Arc<Session>,
    socket: &Sock,
    a: Attempt,
    handover: Option<Handover>,
) -> Result<Completion, Reject> {
    let retry = a.clone();
    match try_complete(hub, session, socket, a, handover)? {
        None => Ok(Completion::Done),
        Some(holder) => {
            probe_holder(session.clone(), socket.clone(), retry, holder);
            Ok(Completion::Probing)
        }
    }
}

/// Asks `holder`, the live-looking connection of the user `a` names, whether it still answers,
/// and answers `a` accordingly (see [`complete`]).
fn probe_holder(session: Arc<Session>, socket: Sock, a: Attempt, holder: Sock) {
    tokio::spawn(async move {
        let hub = session.hub.clone();
        let user = a.claimed.clone().expect("only a named id is held");
        let taken: Reject = ErrorCode::UserIdTaken.into();
        if holder.probe(PROBE).await {
            answer(&socket, a.ack, "authenticate", Err(&taken));
            return;
        }
        tracing::info!(%user, old = %holder.id(), new = %socket.id(), "the connection holding this id did not answer: the newcomer takes it");
        holder.disconnect();
        // Its disconnect handling runs on its own task and frees the id: wait for it (briefly),
        // looking again each time a departure is applied.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        crate::ws::wait_until(&hub.released, Some(deadline), || {
            !hub.lock().link(&user).is_some_and(|l| l.is(&holder))
        })
        .await;
        let ack = a.ack;
        match try_complete(&hub, &session, &socket, a, None) {
            Ok(None) => answer(&socket, ack, "authenticate", Ok(())),
            Ok(Some(_)) => answer(&socket, ack, "authenticate", Err(&taken)),
            Err(r) => answer(&socket, ack, "authenticate", Err(&r)),
        }
    });
}

/// [`complete`] as far as it goes without waiting: `Some(holder)` when the id is held by another
/// connection of this node that looks alive and must be asked first.
fn try_complete(
    hub: &Hub,
    session: &Session,
    socket: &Sock,
    mut a: Attempt,
    mut handover: Option<Handover>,
) -> Result<Option<Sock>, Reject> {
    let carried = handover.as_mut().map(|h| std::mem::take(&mut h.missed));
    let replaced = {
        let mut core = hub.lock();
        let mut state = session.state.lock();
        if state.closed {
            // The socket disconnected while this event waited for the lock: registering it would
            // leave a ghost nobody can reach.
            return Ok(None);
        }
        // The `authenticate` a client sends on every `connect`, on a session it recovered: it
        // is told so, and changes nothing.
        let recovered = state.recovered
            && state.user.is_some()
            && a.claimed
                .as_ref()
                .is_none_or(|c| state.user.as_ref() == Some(c));
        if recovered {
            a.profile = None;
        }
        let user: UserId = match (&state.user, a.claimed) {
            (Some(current), Some(wanted)) if *current != wanted => {
                return Err(ErrorCode::AlreadyAuthenticated.into());
            }
            (Some(current), _) => current.clone(),
            (None, Some(wanted)) => wanted,
            (None, None) => format!("user-{}", crate::model::uuid_v4().simple()).into(),
        };
        // Checked again under the core lock: a ban made since the handler's first check (while
        // this waited for the cluster, or for a holder's pong) is enforced on linked sockets
        // only, and this one is not linked yet.
        let ban = hub
            .user_ban(&user)
            .or_else(|| session.ip.and_then(|ip| hub.address_ban(ip)));
        if let Some(ban) = ban {
            return Err(Reject::banned(&ban.reason, ban.until));
        }
        // A verified token proves who this is: the newest connection gets the session.
        let claim = match hub.verifier {
            Some(_) => Claim::Verified,
            None => Claim::Named {
                resume: a.resume.as_deref(),
            },
        };
        let link = Link::Local(socket.clone());
        let anonymous = hub.verifier.is_none();
        let mut joined = match &handover {
            // Back on the node of its partner, where it was a ghost.
            Some(_) if core.is_ghost(&user) => core.reclaim(&user, link, a.profile, false),
            _ => match core.join(user.clone(), link.clone(), a.profile.clone(), claim) {
                Ok(j) => j,
                // Dropped, held for the grace, and claimed without its resume token: the held
                // session ends and the newcomer starts afresh.
                Err(ErrorCode::UserIdTaken) if anonymous && core.is_away(&user) => {
                    let effects = core.displace(&user, std::time::Instant::now());
                    hub.deliver(&mut core, effects);
                    core.join(user.clone(), link.clone(), a.profile, claim)?
                }
                // Held by a connection of this node that looks alive: ask it first.
                Err(ErrorCode::UserIdTaken) if anonymous => match core.link(&user) {
                    Some(Link::Local(holder)) if holder != socket => {
                        return Ok(Some(holder.clone()));
                    }
                    _ => return Err(ErrorCode::UserIdTaken.into()),
                },
                Err(e) => return Err(e.into()),
            },
        };
        if let Some(h) = handover
            && !core.is_ghost(&user)
            && core.room_of(&user).is_none()
        {
            let r = crate::bus::RoomMove {
                room: h.room,
                partner: h.partner,
                partner_node: h.partner_node,
                initiator: h.initiator,
                relink: h.relink,
            };
            let now = std::time::Instant::now();
            if let Some(effects) =
                super::recovered::take_room_back(hub, &mut core, &user, r, false, now)
            {
                joined.resumed = true;
                joined.effects.extend(effects);
            }
        }
        state.user = Some(user.clone());
        tracing::debug!(sid = %socket.id(), %user, resumed = joined.resumed, "authenticated");
        send(
            socket,
            "authenticated",
            &Authenticated {
                user_id: user.clone(),
                socket_id: socket.id().to_string(),
                server_stats: core.live(),
                resume_token: joined.resume_token,
                resumed: joined.resumed || recovered,
                ice_servers: hub.ice.servers(&user, crate::ice::unix_now()),
            },
        );
        hub.deliver(&mut core, joined.effects);
        // What its partner sent while it was away, after `rejoined`.
        if let Some(Link::Local(held)) = &joined.held {
            held.hand_over(socket);
        }
        if joined.resumed
            && let Some(missed) = &carried
        {
            socket.push_packets(missed);
        }
        joined.replaced
    };
    // Closing runs the old socket's disconnect handler, which takes the hub lock: only now.
    if let Some(Link::Local(old)) = replaced {
        send_error(&old, "authenticate", &ErrorCode::SessionReplaced.into());
        old.disconnect();
    }
    Ok(None)
}

/// A room another node handed over to a returning user.
#[derive(Debug, Clone)]
pub(crate) struct Handover {
    /// The room.
    pub room: String,
    /// The partner.
    pub partner: String,
    /// The partner's node.
    pub partner_node: String,
    /// Whether the returning user starts the call.
    pub initiator: bool,
    /// Whether the partner's node must be told where the user is now.
    pub relink: bool,
    /// What was sent to the user while it was away, as packets (after `rejoined`).
    pub missed: Vec<String>,
}

/// An `authenticate` waiting for the cluster's answer.
pub(crate) struct Pending {
    /// The connection's state.
    pub session: std::sync::Arc<Session>,
    /// The socket.
    pub socket: Sock,
    /// What it asked for.
    pub attempt: Attempt,
    /// When it asked.
    pub since: std::time::Instant,
}

/// Answers a deferred `authenticate` (see [`defer_to_cluster`]), with the room handed over if
/// any: in its acknowledgement when it asked for one, else a refusal as `auth-error` or `error`.
pub(crate) fn finish(hub: &Hub, p: Pending, handover: Option<Handover>) {
    let ack = p.attempt.ack;
    match complete(hub, &p.session, &p.socket, p.attempt, handover) {
        Ok(Completion::Done) => answer(&p.socket, ack, "authenticate", Ok(())),
        Ok(Completion::Probing) => {}
        Err(r) => answer(&p.socket, ack, "authenticate", Err(&r)),
    }
}
