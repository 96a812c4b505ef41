//! The Socket.IO side: one small handler per event, run in arrival order.
//!
//! The transport ([`crate::ws`]) calls the node's ([`Hub`]) [`Upper`](crate::ws::Upper) when a client joins
//! `/`, and its session's [`Events`](crate::ws::Events) for every event, synchronously, on the
//! connection's read path, in the order the messages arrived. An event's whole work happens
//! inside that call: parse, validate, update the core under one lock, and queue the outgoing
//! packets (`emit` is synchronous). Nothing is spawned, so order is kept by construction and no
//! task is allocated per message.

pub(crate) mod handlers;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::de::{self, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::bus::queue::Job;
use crate::limits::{EventClass, Verdict};
use crate::model::{ErrorCode, Reject, UserId};
use crate::node::{CoreGuard, Hub, Link, Session, Sock, answer, open_session};
use crate::ws::{ConnRef, Events, Gone, Handled, Sid};

/// Everything a handler needs about the event it handles.
pub(crate) struct Ctx<'a> {
    /// The server's shared state.
    pub hub: &'a Hub,
    /// This connection.
    pub session: &'a Arc<Session>,
    /// The sending socket.
    pub socket: &'a Sock,
    /// The user the socket authenticated as (`None` only for `authenticate`).
    pub user: Option<UserId>,
    /// The client's acknowledgement request, when it emitted with a callback.
    pub ack: Option<i64>,
    /// Set by a handler that answers later (an `authenticate` the cluster or a probe must
    /// settle first): it then sends the acknowledgement itself, with the final outcome.
    answers_later: std::cell::Cell<bool>,
}

impl Ctx<'_> {
    /// Relays `payload` to `partner` over `link` (see [`Hub::relay`]): an acknowledged relay to
    /// another node is answered when that node says it was delivered.
    pub(crate) fn relay<T: serde::Serialize>(
        &self,
        partner: &str,
        link: &crate::node::Link,
        room: &str,
        event: &str,
        payload: &T,
    ) -> Result<(), Reject> {
        let waiter = self.ack.map(|a| (self.socket, a));
        if self
            .hub
            .relay(partner, link, room, event, payload, waiter)?
            == crate::node::Relayed::Later
        {
            self.answer_later();
        }
        Ok(())
    }

    /// This event's answer (its acknowledgement, or its refusal) is sent later, by the handler's
    /// own continuation (see [`crate::node::answer`]), not when the handler returns.
    pub(crate) fn answer_later(&self) {
        self.answers_later.set(true);
    }

    /// The authenticated user; handlers that need one are only called when there is one.
    pub(crate) fn user(&self) -> &UserId {
        self.user
            .as_ref()
            .expect("the dispatcher checks authentication first")
    }

    /// Locks the core for this event's work, refusing with `session-replaced` when another
    /// connection took the user's session over with its resume token (this socket is then being
    /// closed). The check and the work share one lock, so no event of a replaced socket acts.
    pub(crate) fn core(&self) -> Result<CoreGuard<'_>, Reject> {
        let core = self.hub.lock();
        if !core.link(self.user()).is_some_and(|l| l.is(self.socket)) {
            return Err(ErrorCode::SessionReplaced.into());
        }
        Ok(core)
    }
}

/// Splits a Socket.IO event frame `["name", payload, ...]` into its name and first argument
/// without copying the payload. Further arguments are ignored.
struct Frame<'a> {
    event: std::borrow::Cow<'a, str>,
    payload: Option<&'a RawValue>,
}

impl<'de> de::Deserialize<'de> for Frame<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Frame<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Frame<'de>, A::Error> {
                #[derive(serde::Deserialize)]
                struct Name<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);
                let event: Name<'de> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("missing event name"))?;
                let payload: Option<&'de RawValue> = seq.next_element()?;
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Frame {
                    event: event.0,
                    payload,
                })
            }
        }
        d.deserialize_seq(V)
    }
}

impl crate::ws::Upper for Hub {
    fn client_ip(
        &self,
        headers: &http::HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Option<IpAddr> {
        self.limits.client_ip(headers, peer)
    }

    fn admit(&self, ip: IpAddr, id: Sid) -> bool {
        self.limits.open(ip, id)
    }

    fn release(&self, ip: IpAddr, id: Sid) {
        self.limits.close(ip, id)
    }

    fn join(
        self: Arc<Self>,
        conn: &ConnRef,
        ip: Option<IpAddr>,
        auth: Option<&str>,
    ) -> Result<Arc<dyn Events>, &'static str> {
        let token = auth.and_then(token_of);
        let session = open_session(&self, ip, conn.id, token.map(String::into_boxed_str))?;
        Ok(Arc::new(Joined(session)))
    }
}

/// A client's session as the transport holds it.
struct Joined(Arc<Session>);

impl Events for Joined {
    fn event(&self, conn: &ConnRef, data: &str, binary: bool, ack: Option<i64>) -> Handled {
        match on_event(&self.0, conn, data, binary, ack) {
            Handling::Done => Handled::Done,
            Handling::Flooding => Handled::Flooding,
            Handling::Malformed => Handled::Malformed,
        }
    }

    fn closed(&self, conn: &ConnRef, gone: Gone) {
        closed(&self.0, conn, gone);
    }

    fn recover(
        &self,
        old: &ConnRef,
        new: &ConnRef,
        ip: Option<IpAddr>,
        install: &mut dyn FnMut(),
    ) -> Option<Arc<dyn Events>> {
        recover(&self.0, old, new, ip, install).map(|s| Arc::new(Joined(s)) as Arc<dyn Events>)
    }

    fn recover_elsewhere(&self, conn: &ConnRef, asking: crate::ws::recovery::Asking<'_>) -> bool {
        crate::node::recovered::ask(&self.0.hub, &self.0, conn, asking)
    }

    fn depart(
        &self,
        old: &ConnRef,
        to: &str,
        take: &mut dyn FnMut() -> Option<crate::ws::recovery::Exported>,
    ) -> bool {
        crate::node::recovered::depart(&self.0, old, to, take)
    }

    fn worth_holding(&self) -> bool {
        let Some(user) = self.0.state.lock().user.clone() else {
            return false;
        };
        let core = self.0.hub.lock();
        core.room_of(&user).is_some() || core.is_waiting(&user)
    }

    fn abandoned(&self, conn: &ConnRef) {
        let Some(held) = self.0.state.lock().held.take() else {
            return;
        };
        let user = held.user;
        let hub = &self.0.hub;
        let mut core = hub.lock();
        let effects = core.abandon(&user, &Link::Local(conn.clone()), Instant::now());
        hub.deliver(&mut core, effects);
    }
}

/// The client of `old_sock` (whose session was `old`) recovered it on `new_sock`: a session for
/// the new connection, bound to the user the old one had, whose partner is told it is back. The
/// transport's `install` (the missed events, the `40` reply) runs under the core's lock, before
/// anything the core sends to the user. `None` when the id belongs to someone else now.
fn recover(
    old: &Session,
    old_sock: &Sock,
    new_sock: &Sock,
    ip: Option<IpAddr>,
    install: &mut dyn FnMut(),
) -> Option<Arc<Session>> {
    let hub = &old.hub;
    let session = open_session(hub, ip, new_sock.id(), old.handshake_token.clone()).ok()?;
    let (user, search) = {
        let mut st = old.state.lock();
        match st.held.take() {
            Some(h) => (Some(h.user), h.search),
            None => (st.user.clone(), None),
        }
    };
    let mut core = hub.lock();
    // Taken over while it looked alive: its search, if it waits.
    let search = search.or_else(|| user.as_ref().and_then(|u| core.search_of(u)));
    let effects = match user {
        Some(user) => {
            match core.recover(
                user.clone(),
                &Link::Local(old_sock.clone()),
                Link::Local(new_sock.clone()),
            ) {
                Ok(mut effects) => {
                    tracing::debug!(sid = %new_sock.id(), %user, "session recovered");
                    // A search that the drop cut short goes on.
                    if let Some(prefs) = search
                        && !core.is_waiting(&user)
                        && core.room_of(&user).is_none()
                        && let Ok(more) = core.find(&user, Some(prefs), Instant::now())
                    {
                        effects.extend(more);
                    }
                    session.state.lock().user = Some(user);
                    effects
                }
                Err(_) => {
                    drop(core);
                    if let Some(ip) = ip {
                        hub.limits.close(ip, new_sock.id());
                    }
                    return None;
                }
            }
        }
        None => Vec::new(),
    };
    session.state.lock().recovered = true;
    install();
    hub.deliver(&mut core, effects);
    drop(core);
    Some(session)
}

/// The `token` of a handshake's `auth` object given as JSON (`{"token": "..."}`).
pub(crate) fn token_of(auth: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Auth {
        token: Option<String>,
    }
    serde_json::from_str::<Auth>(auth)
        .ok()?
        .token
        .filter(|t| t.len() <= crate::protocol::incoming::MAX_TOKEN_BYTES)
}

/// What handling one event came to: done, or refused (the refusal names the event).
pub(crate) type Outcome<'v> = Result<(), (std::borrow::Cow<'v, str>, Reject)>;

/// What handling one event came to.
pub(crate) enum Handling {
    /// Handled or refused, and answered (see [`on_event`]).
    Done,
    /// The socket keeps flooding after being told: cut it off.
    Flooding,
    /// Not an event packet at all: the protocol says to close the connection.
    Malformed,
}

/// Handles one event frame (`["name", payload]` as JSON text) on any transport: charges it,
/// runs its handler, and answers: in the acknowledgement when the client asked for one (`ack`),
/// a refusal included, with no `error` event; without one, a refusal as an `error` event (what
/// the Node server's clients listen to). A handler that settles its event later answers then.
pub(crate) fn on_event(
    session: &Arc<Session>,
    socket: &Sock,
    text: &str,
    binary: bool,
    ack: Option<i64>,
) -> Handling {
    let outcome: Outcome<'_> = match dispatch(session, socket, text, binary, ack) {
        Err(Refusal::Flooding) => {
            tracing::info!(sid = %socket.id(), ip = ?session.ip, "disconnecting a socket that keeps flooding");
            return Handling::Flooding;
        }
        Err(Refusal::Malformed) => {
            tracing::debug!(sid = %socket.id(), "closing a connection that sent a malformed event");
            return Handling::Malformed;
        }
        Err(Refusal::Reject(event, r)) => Err((event, r)),
        Ok(Answer::Later) => return Handling::Done,
        Ok(Answer::Now) => Ok(()),
    };
    match &outcome {
        Ok(()) => answer(socket, ack, "", Ok(())),
        Err((event, reject)) => {
            tracing::debug!(sid = %socket.id(), %event, code = reject.code.as_str(), "refused");
            answer(socket, ack, event, Err(reject));
        }
    }
    Handling::Done
}

/// Whether a handled event is answered now or by its handler's continuation.
enum Answer {
    /// Now, by [`on_event`].
    Now,
    /// Later (see [`Ctx::answer_later`]).
    Later,
}

/// Why the dispatcher did not run a handler.
enum Refusal<'v> {
    /// Answer the event with this refusal.
    Reject(std::borrow::Cow<'v, str>, Reject),
    /// The socket keeps flooding after being told: close it.
    Flooding,
    /// Not a Socket.IO event packet (`42{}`, a reserved name): close the connection.
    Malformed,
}

impl<'v> From<(std::borrow::Cow<'v, str>, Reject)> for Refusal<'v> {
    fn from((event, r): (std::borrow::Cow<'v, str>, Reject)) -> Self {
        Refusal::Reject(event, r)
    }
}

/// Charges the event to the socket's budget, finds its handler and runs it; a refusal comes
/// back with the event's name.
fn dispatch<'v>(
    session: &Arc<Session>,
    socket: &Sock,
    text: &'v str,
    binary: bool,
    ack: Option<i64>,
) -> Result<Answer, Refusal<'v>> {
    let frame: Frame<'v> = match serde_json::from_str(text) {
        Ok(f) => f,
        // socket.io-parser's rule: an event is a JSON array whose first element is a name or
        // a number. A number is well-formed, just no event of ours.
        Err(_) if numbered(text) => {
            charge(session, EventClass::Other, "")?;
            return Err(("".into(), ErrorCode::UnknownEvent.into()).into());
        }
        Err(_) => return Err(Refusal::Malformed),
    };
    let event = frame.event;
    if RESERVED.contains(&&*event) {
        return Err(Refusal::Malformed);
    }
    let route = handlers::route(&event);
    charge(
        session,
        route.map_or(EventClass::Other, |r| r.class),
        &event,
    )?;
    if binary {
        return Err((event, ErrorCode::BinaryNotSupported.into()).into());
    }
    let Some(route) = route else {
        return Err((event, ErrorCode::UnknownEvent.into()).into());
    };
    let user = session.state.lock().user.clone();
    if route.needs_user && user.is_none() {
        return Err((event, ErrorCode::NotAuthenticated.into()).into());
    }
    let ctx = Ctx {
        hub: &session.hub,
        session,
        socket,
        user,
        ack,
        answers_later: std::cell::Cell::new(false),
    };
    (route.handler)(&ctx, frame.payload).map_err(|r| (event, r))?;
    Ok(if ctx.answers_later.get() {
        Answer::Later
    } else {
        Answer::Now
    })
}

/// Event names Socket.IO keeps for itself: a packet that uses one is malformed.
const RESERVED: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Whether `text` is a JSON array whose first element is a number (a well-formed event packet
/// of socket.io-parser's, though not one this server has).
fn numbered(text: &str) -> bool {
    serde_json::from_str::<Vec<serde_json::Value>>(text)
        .is_ok_and(|v| v.first().is_some_and(serde_json::Value::is_number))
}

/// Charges one event of `class`; over budget it is refused, or the socket is cut off.
fn charge<'v>(session: &Session, class: EventClass, event: &str) -> Result<(), Refusal<'v>> {
    match session.hub.limits.charge(&session.budget, class) {
        Verdict::Allow => Ok(()),
        Verdict::Refuse(r) => {
            crate::metrics::rate_limited("event");
            Err(Refusal::Reject(event.to_owned().into(), r))
        }
        Verdict::Disconnect => Err(Refusal::Flooding),
    }
}

/// A connection ended, on either transport: its user leaves the queue and its room, or, when
/// the connection was lost while in a room, is kept for the reconnect grace (and, when the
/// transport holds its session, reachable meanwhile: what is sent to it waits for its client).
pub(crate) fn closed(session: &Session, socket: &Sock, gone: Gone) {
    if let Some(ip) = session.ip {
        session.hub.limits.close(ip, socket.id());
    }
    let mut core = session.hub.lock();
    let mut state = session.state.lock();
    state.closed = true;
    if let Some(user) = state.user.take() {
        let lost = gone != Gone::Left;
        tracing::debug!(sid = %socket.id(), %user, ?gone, "left");
        let holds = match gone {
            Gone::Held(held) => {
                state.held = Some(Box::new(crate::node::HeldUser {
                    user: user.clone(),
                    search: core.search_of(&user),
                }));
                // What is sent to it meanwhile is kept: its client may come back here, or
                // through another node, which asks for the session and everything kept.
                Some((Link::Local(held), true))
            }
            Gone::Left | Gone::Lost => None,
        };
        let effects = core.leave(
            &user,
            &Link::Local(socket.clone()),
            lost,
            holds,
            Instant::now(),
        );
        session.hub.deliver(&mut core, effects);
        if core.away_token(&user).is_some() {
            session.hub.job(Job::Away(user));
        }
    }
    drop((state, core));
    session.hub.released.notify_waiters();
}
