//! The Socket.IO side: one small handler per event, run in arrival order.
//!
//! The transport ([`crate::ws`]) calls [`Hub`]'s [`Upper`](crate::ws::Upper) when a client joins
//! `/`, and its session's [`Events`](crate::ws::Events) for every event, synchronously, on the
//! connection's read path, in the order the messages arrived. An event's whole work happens
//! inside that call: parse, validate, update the core under one lock, and queue the outgoing
//! packets (`emit` is synchronous). Nothing is spawned, so order is kept by construction and no
//! task is allocated per message.

pub mod handlers;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;
use serde::de::{self, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::auth::Verifier;
use crate::cluster::Cluster;
use crate::cluster::queue::{Job, Queue, SharedQueue};
use crate::config::Config;
use crate::core::matchmaker::PreferenceMatchmaker;
use crate::core::{Core, Effect, UserId};
use crate::ice::{Ice, unix_now};
use crate::limits::{EventClass, Limits, SocketBudget, Verdict};
use crate::protocol::outgoing::ErrorOut;
use crate::protocol::outgoing::ServerEvent;
use crate::model::{ErrorCode, Reject};
pub use crate::ws::SendError;
use crate::ws::{ConnRef, Events, Handled, Sid};

/// How long an `authenticate` waits for the cluster before it is answered as a fresh session.
const PENDING_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A connection of this node, as the handlers and the core hold it.
pub type Sock = ConnRef;

/// How the core reaches a user.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// Through its socket on this node.
    Local(Sock),
    /// Through the node it is connected to (a local user's partner in a cluster): the node's name.
    Remote(Arc<str>),
}

impl Link {
    /// Whether this is `socket`.
    pub fn is(&self, socket: &Sock) -> bool {
        matches!(self, Link::Local(s) if s == socket)
    }
}

/// The core of a node.
pub type NodeCore = Core<Link, Queue>;

/// State shared by every connection: the core behind one lock, plus server-wide flags.
pub struct Hub {
    core: Mutex<NodeCore>,
    /// The cluster this node belongs to (set once connected), `None` for a single node.
    pub cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// The cluster jobs the core queues, taken by the worker when the cluster starts.
    pub jobs: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Job>>>,
    resubmit: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    /// `authenticate`s waiting for the cluster (see `handlers::authenticate`), by user.
    pending: Mutex<std::collections::HashMap<UserId, handlers::authenticate::Pending>>,
    /// The settings the server started with.
    pub config: Config,
    /// Connection, request and event limits.
    pub limits: Limits,
    /// The token checker; `None` in anonymous mode.
    pub verifier: Option<Verifier>,
    /// STUN/TURN servers for clients.
    pub ice: Ice,
    /// The sessions of this node's clients.
    pub conns: Arc<crate::ws::Conns>,
    shutting_down: AtomicBool,
    /// When the server started.
    pub started: Instant,
}

impl Hub {
    /// A hub with an empty core, or why the settings cannot make one (an unusable JWT key).
    pub fn new(config: Config) -> Result<Arc<Hub>, String> {
        let cfg = config.core();
        let (queue, jobs, resubmit) = if config.redis_url.is_some() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (
                Queue::Shared(SharedQueue::new(cfg.preference_relax, tx.clone())),
                Some(rx),
                Some(tx),
            )
        } else {
            (
                Queue::Local(
                    PreferenceMatchmaker::new(cfg.preference_relax)
                        .with_max_blocks(config.max_blocks as usize),
                ),
                None,
                None,
            )
        };
        Ok(Arc::new(Hub {
            core: Mutex::new(Core::with_matchmaker(cfg, queue)),
            cluster: std::sync::OnceLock::new(),
            jobs: Mutex::new(jobs),
            resubmit,
            pending: Mutex::new(std::collections::HashMap::new()),
            limits: Limits::new(&config),
            verifier: Verifier::from_config(&config)?,
            ice: Ice::new(&config),
            conns: Arc::new(crate::ws::Conns::new(config.transport())),
            config,
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
        }))
    }

    /// Locks the core. Keep the guard for one event's work only.
    pub fn lock(&self) -> MutexGuard<'_, NodeCore> {
        self.core.lock()
    }

    /// Parks an `authenticate` until the cluster answers. A newer attempt for the same user
    /// replaces an older one, which is answered at once as a fresh session.
    pub fn defer(&self, user: UserId, p: handlers::authenticate::Pending) {
        let older = self.pending.lock().insert(user, p);
        if let Some(older) = older {
            handlers::authenticate::finish(self, older, None);
        }
    }

    /// The parked `authenticate` of `user`, if any.
    pub fn take_pending(&self, user: &str) -> Option<handlers::authenticate::Pending> {
        self.pending.lock().remove(user)
    }

    /// Answers the parked `authenticate`s the cluster left unanswered for too long (the node
    /// that held the session died): as fresh sessions.
    fn expire_pending(&self, now: Instant) {
        let stale: Vec<_> = {
            let mut pending = self.pending.lock();
            let old: Vec<UserId> = pending
                .iter()
                .filter(|(_, p)| now.saturating_duration_since(p.since) > PENDING_LIMIT)
                .map(|(u, _)| u.clone())
                .collect();
            old.iter().filter_map(|u| pending.remove(u)).collect()
        };
        for p in stale {
            handlers::authenticate::finish(self, p, None);
        }
    }

    /// Queues a job for the cluster worker (nothing happens on a single node).
    pub fn job(&self, job: Job) {
        if let Some(tx) = &self.resubmit {
            tx.send(job).ok();
        }
    }

    /// Queues another shared-queue search for a user who still waits here (Redis lost the
    /// queue).
    pub fn resubmit(&self, user: UserId) {
        self.job(Job::Search(user));
    }

    /// A claimed search of `user` did not become a room: if the user still waits here, it
    /// searches again, under a new search id.
    pub fn search_again(&self, core: &mut NodeCore, user: &str) {
        if !core.is_waiting(user) {
            return;
        }
        if let Queue::Shared(q) = core.queue_mut() {
            q.renew_search(user);
        }
        self.resubmit(user.into());
    }

    /// True while a node with `REDIS_URL` has not joined its cluster yet: it takes no sessions
    /// and `/health` answers 503.
    pub fn waiting_for_cluster(&self) -> bool {
        self.config.redis_url.is_some() && self.cluster.get().is_none()
    }

    /// True once shutdown began: `/health` answers 503 and new searches are refused.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Marks the start of shutdown.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Runs the core's time-driven work and sends what it decided.
    pub fn tick(&self, now: Instant) {
        {
            let mut core = self.lock();
            let effects = core.tick(now);
            self.deliver(&mut core, effects);
        }
        if self.cluster.get().is_some() {
            self.expire_pending(now);
        }
    }

    /// Sends each effect to its recipient's socket. `matched` gets the ICE servers the new call
    /// should use (fresh TURN credentials), and its wait is recorded for `/metrics`.
    ///
    /// An effect for a partner on another node goes to that node: `partner-left` as the end of
    /// the room there, `partner-left` (connection lost) and `partner-reconnected` as events; the
    /// rest (`room-ended`) that node decides on its own. Ghosts whose room closed are forgotten
    /// afterwards.
    pub fn deliver(&self, core: &mut NodeCore, effects: Vec<Effect>) {
        for mut e in effects {
            match core.link(&e.to) {
                Some(Link::Local(socket)) => {
                    if let ServerEvent::Matched(m) = &mut e.event {
                        m.ice_servers = self.ice.servers(&e.to, unix_now());
                        crate::metrics::waited(m.wait_time);
                    }
                    send(socket, e.event.name(), &e.event);
                }
                Some(Link::Remote(node)) => {
                    if let Some(c) = self.cluster.get()
                        && let Some(msg) = crate::cluster::inbox::forward(&e)
                    {
                        c.send(node, &msg);
                    }
                }
                None => {}
            }
        }
        core.settle();
    }

    /// Open Engine.IO sessions on this server, on every transport.
    pub fn sockets(&self) -> usize {
        self.conns.len()
    }

    /// Every open session.
    pub fn all_sockets(&self) -> Vec<Sock> {
        self.conns.all().iter().map(|c| c.handle()).collect()
    }
}

/// Queues one event on a socket. Returns false (and logs) when the socket is closed or its send
/// buffer is full, so a caller that must not lose the event can tell its sender.
pub fn send<T: Serialize + ?Sized>(socket: &Sock, event: &str, data: &T) -> bool {
    match socket.emit(event, data) {
        Ok(()) => true,
        // A connection that is closing: its disconnect handling is on its way.
        Err(e @ SendError::Closed) => {
            tracing::debug!(sid = %socket.id(), event, error = %e, "event not delivered");
            false
        }
        Err(e) => {
            tracing::warn!(sid = %socket.id(), event, error = %e, "event not delivered");
            false
        }
    }
}

/// Sends an `error` (or `auth-error`) event describing a refusal.
pub fn send_error(socket: &Sock, event: &str, reject: &Reject) {
    let auth = event == "authenticate" && reject.code.is_auth_failure();
    let body = ErrorOut {
        code: reject.code,
        message: &reject.message,
        // The name is the client's own text: a 60 KB name must not come back 60 KB long.
        event: (!auth).then_some(crate::protocol::clip(event)),
        retry_after_ms: reject.retry_after_ms,
    };
    crate::metrics::error(reject.code.as_str());
    send(socket, if auth { "auth-error" } else { "error" }, &body);
}

/// What one connection knows about itself. Touched only while the hub lock is held, so that
/// `authenticate` and the disconnect handler of one socket cannot interleave.
#[derive(Default)]
pub struct SessionState {
    /// The user this socket authenticated as.
    pub user: Option<UserId>,
    /// Set by the disconnect handler: a late `authenticate` must not register a dead socket.
    pub closed: bool,
}

/// Per-connection data shared by the socket's message and disconnect handlers.
pub struct Session {
    /// The server's shared state.
    pub hub: Arc<Hub>,
    /// This connection's state.
    pub state: Mutex<SessionState>,
    /// The client's address (after `TRUST_PROXY`), when known.
    pub ip: Option<IpAddr>,
    /// The token given in the Socket.IO handshake (`auth: {token}`), if any.
    pub handshake_token: Option<String>,
    budget: SocketBudget,
}

/// Everything a handler needs about the event it handles.
pub struct Ctx<'a> {
    /// The server's shared state.
    pub hub: &'a Hub,
    /// This connection.
    pub session: &'a Arc<Session>,
    /// The sending socket.
    pub socket: &'a Sock,
    /// The user the socket authenticated as (`None` only for `authenticate`).
    pub user: Option<UserId>,
}

impl Ctx<'_> {
    /// The authenticated user; handlers that need one are only called when there is one.
    pub fn user(&self) -> &UserId {
        self.user
            .as_ref()
            .expect("the dispatcher checks authentication first")
    }

    /// Locks the core for this event's work, refusing with `session-replaced` when another
    /// connection took the user's session over with its resume token (this socket is then being
    /// closed). The check and the work share one lock, so no event of a replaced socket acts.
    pub fn core(&self) -> Result<MutexGuard<'_, NodeCore>, Reject> {
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
        let session = open_session(&self, ip, conn.id, token)?;
        Ok(Arc::new(Joined(session)))
    }
}

/// A client's session as the transport holds it.
struct Joined(Arc<Session>);

impl Events for Joined {
    fn event(&self, conn: &ConnRef, data: &str, binary: bool, ack: Option<i64>) -> Handled {
        match on_event(&self.0, conn, data, binary) {
            Handling::Done(outcome) => {
                if let Some(id) = ack {
                    conn.ack(id, &ack_reply(&outcome)).ok();
                }
                Handled::Done
            }
            Handling::Flooding => Handled::Flooding,
            Handling::Malformed => Handled::Malformed,
        }
    }

    fn closed(&self, conn: &ConnRef, lost: bool) {
        closed(&self.0, conn, lost);
    }
}

/// Starts a connection's session once its client joined the `/` namespace, or refuses it
/// (too many connections from its address) with the message for the client.
pub fn open_session(
    hub: &Arc<Hub>,
    ip: Option<IpAddr>,
    id: Sid,
    handshake_token: Option<String>,
) -> Result<Arc<Session>, &'static str> {
    if let Some(ip) = ip
        && !hub.limits.open(ip, id)
    {
        tracing::info!(%ip, "connection refused: too many connections from this address");
        crate::metrics::rate_limited("connection");
        return Err("rate-limited: too many connections from your address");
    }
    Ok(Arc::new(Session {
        hub: hub.clone(),
        state: Mutex::new(SessionState::default()),
        ip,
        handshake_token,
        budget: hub.limits.socket_budget(),
    }))
}

/// The `token` of a handshake's `auth` object given as JSON (`{"token": "..."}`).
pub fn token_of(auth: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Auth {
        token: Option<String>,
    }
    serde_json::from_str::<Auth>(auth)
        .ok()?
        .token
        .filter(|t| t.len() <= crate::protocol::incoming::MAX_TOKEN_BYTES)
}

/// The acknowledgement sent when a client emits with a callback (`emitWithAck`).
#[derive(Serialize)]
pub struct AckReply<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<ErrorCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// What handling one event came to: done, or refused (the refusal names the event).
pub type Outcome<'v> = Result<(), (std::borrow::Cow<'v, str>, Reject)>;

/// The acknowledgement for an event's outcome.
pub fn ack_reply<'a>(outcome: &'a Outcome<'_>) -> AckReply<'a> {
    match outcome {
        Ok(()) => AckReply {
            ok: true,
            code: None,
            message: None,
        },
        Err((_, r)) => AckReply {
            ok: false,
            code: Some(r.code),
            message: Some(&r.message),
        },
    }
}

/// What handling one event came to.
pub enum Handling<'v> {
    /// Handled or refused (a refusal was answered with an `error` event).
    Done(Outcome<'v>),
    /// The socket keeps flooding after being told: cut it off.
    Flooding,
    /// Not an event packet at all: the protocol says to close the connection.
    Malformed,
}

/// Handles one event frame (`["name", payload]` as JSON text) on any transport: charges it,
/// runs its handler, and answers a refusal with an `error` event.
pub fn on_event<'v>(
    session: &Arc<Session>,
    socket: &Sock,
    text: &'v str,
    binary: bool,
) -> Handling<'v> {
    let outcome = match dispatch(session, socket, text, binary) {
        Err(Refusal::Flooding) => {
            tracing::info!(sid = %socket.id(), ip = ?session.ip, "disconnecting a socket that keeps flooding");
            return Handling::Flooding;
        }
        Err(Refusal::Malformed) => {
            tracing::debug!(sid = %socket.id(), "closing a connection that sent a malformed event");
            return Handling::Malformed;
        }
        Err(Refusal::Reject(event, r)) => Err((event, r)),
        Ok(()) => Ok(()),
    };
    if let Err((event, reject)) = &outcome {
        tracing::debug!(sid = %socket.id(), %event, code = reject.code.as_str(), "refused");
        send_error(socket, event, reject);
    }
    Handling::Done(outcome)
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
) -> Result<(), Refusal<'v>> {
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
    };
    (route.handler)(&ctx, frame.payload).map_err(|r| (event, r).into())
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
/// the connection was `lost` while in a room, is kept for the reconnect grace.
pub fn closed(session: &Session, socket: &Sock, lost: bool) {
    if let Some(ip) = session.ip {
        session.hub.limits.close(ip, socket.id());
    }
    let mut core = session.hub.lock();
    let mut state = session.state.lock();
    state.closed = true;
    if let Some(user) = state.user.take() {
        tracing::debug!(sid = %socket.id(), %user, lost, "left");
        let effects = core.leave(&user, &Link::Local(socket.clone()), lost, Instant::now());
        session.hub.deliver(&mut core, effects);
        if core.away_token(&user).is_some() {
            session.hub.job(Job::Away(user));
        }
    }
}
