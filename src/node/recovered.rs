//! Connection state recovery across the cluster: a client that comes back through this node
//! with the pid of a session another node holds gets it from there, with its room or search
//! and every event it missed; a session of this node moves to the node its client came back
//! through. The pid keeps naming the node that made the session (socket.io-client reports
//! `recovered` only when the `40` repeats its pid), and a session may have moved since: the
//! question goes to every node, the one holding the session answers, and the node that made it
//! answers when nobody can (it remembers where its sessions went).
//!
//! Order: the node giving the session up takes its log and hands its room over under its core's
//! lock, and sends both in one message; its local partner's next relays follow on the same
//! ordered path to the new node. The new node queues the missed events and the `40` reply
//! under its core's lock, before anything the core sends to the user.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Hub, Link, Session, Sock};
use crate::bus::{Msg, RoomMove};
use crate::core::Claim;
use crate::model::profile::{Preferences, Profile};
use crate::model::reason::Reason;
use crate::ws::Departure;
use crate::ws::recovery::{Asking as Question, Exported, Refused};

/// How long a connect waits for the holding node's answer before it is answered with a fresh
/// session (the holding node died).
const ASK_LIMIT: Duration = Duration::from_secs(3);

/// How often a node is asked again for a session whose connection it still thought alive
/// (once a tick of the node's timer).
const RETRIES: u8 = 8;

/// How long relays for a user whose session moved are passed on to its new node.
const FORWARD_FOR: Duration = Duration::from_secs(10);

/// Where the users whose session and room moved to another node went, for a while: a relay
/// from their partner's node that left before it heard of the move is passed on, not lost.
#[derive(Default)]
pub(crate) struct Forwards(Mutex<HashMap<Box<str>, Forward>>);

/// Where a moved user went (its node), for relays in which room, since when.
type Forward = (Arc<str>, Box<str>, Instant);

impl Forwards {
    /// `user` of `room` is on `node` now.
    pub(crate) fn insert(&self, user: &str, room: &str, node: &str) {
        let now = Instant::now();
        let mut map = self.0.lock();
        map.retain(|_, (_, _, at)| now.saturating_duration_since(*at) < FORWARD_FOR);
        map.insert(user.into(), (node.into(), room.into(), now));
    }

    /// The node a relay for `to` in `room` goes on to, if its session moved lately.
    pub(crate) fn of(&self, to: &str, room: &str) -> Option<Arc<str>> {
        let map = self.0.lock();
        let (node, r, at) = map.get(to)?;
        (**r == *room && at.elapsed() < FORWARD_FOR).then(|| node.clone())
    }
}

/// The namespace connects waiting for another node's answer, by the session's sid.
#[derive(Default)]
pub(crate) struct Asking(Mutex<HashMap<Box<str>, Asked>>);

/// A namespace connect waiting for another node's answer about its pid.
struct Asked {
    session: Arc<Session>,
    socket: Sock,
    offset: Option<String>,
    pid: String,
    origin: Arc<str>,
    since: Instant,
    /// When to ask again (its connection there still looked alive).
    again: Option<Instant>,
    tries: u8,
}

/// The client of `socket` (signaling session `session`) came back with the pid of a session
/// another node made: the cluster is asked for it. False on a node alone (a fresh session now).
pub(crate) fn ask(hub: &Hub, session: &Arc<Session>, socket: &Sock, q: Question<'_>) -> bool {
    if !hub.peers.may_hold_sessions() {
        return false;
    }
    let asked = Asked {
        session: session.clone(),
        socket: socket.clone(),
        offset: q.offset.map(str::to_string),
        pid: q.pid.to_string(),
        origin: q.origin.into(),
        since: Instant::now(),
        again: None,
        tries: 0,
    };
    let replaced = hub.asking.0.lock().insert(q.sid.as_str().into(), asked);
    // Two connects with the same pid: the older gets a fresh session.
    if let Some(older) = replaced {
        older.socket.welcome();
    }
    send_ask(hub, q.origin, q.sid.as_str(), q.offset);
    true
}

fn send_ask(hub: &Hub, origin: &str, sid: &str, offset: Option<&str>) {
    hub.peers.broadcast(&Msg::Recover {
        sid: sid.to_string(),
        offset: offset.map(str::to_string),
        from: hub.peers.node(),
        origin: origin.to_string(),
    });
}

/// How long a node remembers where a session it made went.
const REMEMBER_FOR: Duration = Duration::from_secs(6 * 3600);

/// Most sessions a node remembers the new node of.
const REMEMBER_MOST: usize = 100_000;

/// Where the sessions this node made went, so that it does not answer "unknown" for one that
/// lives on another node now (see [`asked`]).
#[derive(Default)]
pub(crate) struct Departed(Mutex<HashMap<Box<str>, Instant>>);

impl Departed {
    fn insert(&self, sid: &str) {
        let now = Instant::now();
        let mut map = self.0.lock();
        if map.len() >= REMEMBER_MOST {
            map.retain(|_, at| now.saturating_duration_since(*at) < REMEMBER_FOR);
            if map.len() >= REMEMBER_MOST {
                // Still full: the oldest half goes.
                let mut ages: Vec<Instant> = map.values().copied().collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                map.retain(|_, at| *at > cut);
            }
        }
        map.insert(sid.into(), now);
    }

    fn contains(&self, sid: &str) -> bool {
        self.0
            .lock()
            .get(sid)
            .is_some_and(|at| at.elapsed() < REMEMBER_FOR)
    }
}

/// Node `from` asks the cluster for session `sid` (made by `origin`) for its client (see
/// [`ask`]). The node that holds it answers; so does `origin` when nobody can have it.
pub(crate) fn asked(hub: &Hub, sid: String, offset: Option<String>, from: String, origin: &str) {
    let me = hub.peers.node();
    if from == me {
        return;
    }
    let answer = match hub.conns.depart(&sid, offset.as_deref(), &from) {
        Ok(()) => return,
        Err(Departure::Retry) => Msg::Unrecovered {
            sid,
            retry: true,
            reason: String::new(),
        },
        Err(Departure::NotHere) if origin != me || hub.departed.contains(&sid) => return,
        Err(Departure::NotHere) => Msg::Unrecovered {
            sid,
            retry: false,
            reason: Refused::Unknown.label().to_string(),
        },
        Err(Departure::Refused(why)) => Msg::Unrecovered {
            sid,
            retry: false,
            reason: why.label().to_string(),
        },
    };
    hub.peers.send(&from, &answer);
}

/// The session of `user` held here on `old` (its signaling session `session`) moves to node
/// `to`: its room is handed over (a local partner stays, with `user` as its ghost, and is told
/// `partner-reconnected {recovered: true}`), and the room, the search and the transport's part
/// from `take` go to `to` in one message. False, changing nothing, when the id belongs to
/// another connection now.
pub(crate) fn depart(
    session: &Session,
    old: &Sock,
    to: &str,
    take: &mut dyn FnMut() -> Option<Exported>,
) -> bool {
    let hub = &session.hub;
    let Some(held) = session.state.lock().held.take() else {
        return false;
    };
    let user = held.user.clone();
    let mut core = hub.lock();
    let mine = core.link(&user).is_none_or(|l| l.is(old));
    let transport = mine.then(&mut *take).flatten();
    let Some(transport) = transport else {
        drop(core);
        session.state.lock().held = Some(held);
        return false;
    };
    let profile = core.profile(&user).cloned();
    let handed = core.hand_over(&user, None, Link::Remote(to.into()), true);
    let mut effects = Vec::new();
    let room = match handed {
        Some(mut h) => {
            let partner_node = match &h.partner_link {
                Some(Link::Remote(n)) => n.to_string(),
                _ => hub.peers.node(),
            };
            effects = std::mem::take(&mut h.effects);
            if h.partner_link.is_some() {
                // The partner's node hears of the move from `to`: until then its relays come
                // here.
                hub.forwards.insert(&user, &h.room, to);
            }
            Some(RoomMove {
                room: h.room.to_string(),
                partner: h.partner.to_string(),
                relink: h.partner_link.is_some() && partner_node != to,
                partner_node,
                initiator: h.initiator,
            })
        }
        None => {
            // No room (it was searching, or its room ended and the log says so): nothing stays.
            effects.extend(core.displace(&user, Instant::now()));
            None
        }
    };
    hub.departed.insert(&transport.sid);
    hub.peers.send(
        to,
        &Msg::Recovered {
            session: transport,
            user: user.to_string(),
            room,
            search: held.search,
            profile,
        },
    );
    hub.deliver(&mut core, effects);
    true
}

/// What another node sent of a session it gave up for a client of this node (see [`depart`]).
pub(crate) struct Arrival {
    /// The transport's part.
    pub session: Exported,
    /// The user.
    pub user: String,
    /// Its room.
    pub room: Option<RoomMove>,
    /// Its search.
    pub search: Option<Preferences>,
    /// Its profile.
    pub profile: Option<Profile>,
}

/// A session another node gave up arrives for the connect that asked for it: the user is
/// bound to it, takes its room back (or searches again), and the client gets what it missed
/// and the `40` reply. With nobody waiting any more, or the id in use here, the partner is
/// told the user left.
pub(crate) fn arrived(hub: &Hub, a: Arrival) {
    let waiting = hub.asking.0.lock().remove(a.session.sid.as_str());
    let now = Instant::now();
    let mut core = hub.lock();
    let bound = waiting.as_ref().and_then(|w| {
        let mut state = w.session.state.lock();
        if state.closed || state.user.is_some() {
            tracing::debug!(closed = state.closed, "the connect that asked for a session is gone");
            return None;
        }
        let link = Link::Local(w.socket.clone());
        let user: crate::model::UserId = a.user.as_str().into();
        let partner_here = a
            .room
            .as_ref()
            .is_some_and(|r| r.partner_node == hub.peers.node());
        let effects = if partner_here && core.is_ghost(&user) {
            core.reclaim(&user, link, a.profile.clone(), true).effects
        } else {
            let claim = Claim::Named { resume: None };
            match core.join(user.clone(), link, a.profile.clone(), claim) {
                Ok(j) => j.effects,
                Err(e) => {
                    tracing::debug!(%user, error = ?e, "a recovered session's user id is in use here");
                    return None;
                }
            }
        };
        state.user = Some(user.clone());
        state.recovered = true;
        Some((user, effects))
    });
    let Some((user, mut effects)) = bound else {
        drop(core);
        if waiting.is_none() {
            tracing::debug!(sid = %a.session.sid, "a session arrived for a connect no longer waiting");
        }
        if let Some(w) = waiting {
            crate::ws::refused(Refused::Declined);
            w.socket.welcome();
        }
        if let Some(r) = a.room {
            tell_left(hub, r);
        }
        return;
    };
    let w = waiting.expect("bound to a waiting connect");
    if let Some(mut r) = a.room.filter(|_| core.room_of(&user).is_none()) {
        // Both partners' clients came back at once, each through the other's node: the
        // partner's session left this node meanwhile, for the node it names here.
        if r.partner_node == hub.peers.node()
            && core.kept_link(&r.partner).is_none()
            && let Some(went) = hub.forwards.of(&r.partner, &r.room)
        {
            r.partner_node = went.to_string();
            r.relink = true;
        }
        if let Some(more) = take_room_back(hub, &mut core, &user, r, true, now) {
            effects.extend(more);
        }
    }
    if let Some(prefs) = a.search
        && core.room_of(&user).is_none()
        && let Ok(more) = core.find(&user, Some(prefs), now)
    {
        effects.extend(more);
    }
    if let Err(why) = hub
        .conns
        .adopt_peer(&w.socket, a.session, w.offset.as_deref(), &w.pid)
    {
        crate::ws::refused(why);
        w.socket.welcome();
    }
    hub.deliver(&mut core, effects);
}

/// `user`, connected here, takes back the room another node handed over (`r`), its partner
/// reached through the partner's node; that node is told where `user` is now when it did not
/// hand the room over (`r.relink`). Returns what follows (`recovered`: no `rejoined`, the client
/// never knew it left), or `None` when `user` is in another room already: then the partner is
/// told `user` left.
pub(crate) fn take_room_back(
    hub: &Hub,
    core: &mut crate::node::NodeCore,
    user: &str,
    r: RoomMove,
    recovered: bool,
    now: Instant,
) -> Option<Vec<crate::core::Effect>> {
    let node: Arc<str> = r.partner_node.as_str().into();
    let seat = crate::core::Seat {
        room: r.room.as_str().into(),
        partner: r.partner.as_str().into(),
        initiator: r.initiator,
    };
    let Some(effects) = core.take_over(user, seat, Link::Remote(node.clone()), recovered, now)
    else {
        tell_left(hub, r);
        return None;
    };
    if r.relink {
        hub.peers.send(
            &node,
            &Msg::Relink {
                room: r.room,
                to: r.partner,
                node: hub.peers.node(),
                recovered,
            },
        );
    }
    Some(effects)
}

/// The partner in `r` is told its partner left (the session found nobody to take it).
fn tell_left(hub: &Hub, r: RoomMove) {
    hub.peers.send(
        &r.partner_node,
        &Msg::Left {
            room: r.room,
            to: r.partner,
            reason: Reason::Disconnect.to_string(),
        },
    );
}

/// The node asked for session `sid` cannot give it: asked again in a moment when its
/// connection was still being closed (`retry`), else the client gets a fresh session.
pub(crate) fn unrecovered(hub: &Hub, sid: String, retry: bool, reason: &str) {
    let mut asking = hub.asking.0.lock();
    let Some(w) = asking.get_mut(sid.as_str()) else {
        return;
    };
    if retry && w.tries < RETRIES {
        w.tries += 1;
        w.again = Some(Instant::now());
        return;
    }
    let Some(w) = asking.remove(sid.as_str()) else {
        return;
    };
    drop(asking);
    let why = Refused::ALL
        .into_iter()
        .find(|r| r.label() == reason)
        .unwrap_or(Refused::Unknown);
    crate::ws::refused(why);
    w.socket.welcome();
}

/// Asks again the nodes that were closing a session's connection, and answers with fresh
/// sessions the connects whose node did not answer within [`ASK_LIMIT`] (it died).
pub(crate) fn expire(hub: &Hub, now: Instant) {
    let (stale, again): (Vec<Asked>, Vec<_>) = {
        let mut asking = hub.asking.0.lock();
        if asking.is_empty() {
            return;
        }
        let stale = asking
            .extract_if(|_, w| now.saturating_duration_since(w.since) > ASK_LIMIT)
            .map(|(_, w)| w)
            .collect();
        let again = asking
            .iter_mut()
            .filter_map(|(sid, w)| {
                w.again.take()?;
                Some((w.origin.clone(), sid.clone(), w.offset.clone()))
            })
            .collect();
        (stale, again)
    };
    for (origin, sid, offset) in again {
        send_ask(hub, &origin, &sid, offset.as_deref());
    }
    for w in stale {
        crate::ws::refused(Refused::Unknown);
        w.socket.welcome();
    }
}
