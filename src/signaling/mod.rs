//! The Socket.IO side: one small handler per event, run in arrival order.
//!
//! socketioxide spawns a task for every message when handlers are async closures, so two
//! messages from one socket may run concurrently and their relays overtake each other (a
//! candidate before its offer breaks WebRTC). Its handler traits, however, are called
//! synchronously on the socket's read path, in the order the messages arrived. Roulette
//! implements those traits itself ([`OnConnect`], [`Dispatcher`], [`OnDisconnect`]) and does all of
//! an event's work inside that call: parse, validate, update the core under one lock, and queue
//! the outgoing packets (`emit` is synchronous). Nothing is spawned, so order is kept by
//! construction and no task is allocated per message.

pub mod handlers;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::extract::ConnectInfo;

use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;
use serde::de::{self, SeqAccess, Visitor};
use serde_json::value::RawValue;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::FromMessageParts;
use socketioxide::handler::{ConnectHandler, DisconnectHandler, MessageHandler};
use socketioxide::socket::{DisconnectReason, Sid, Socket};
use socketioxide_core::Value;

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
use crate::protocol::{ErrorCode, Reject};
pub use crate::ws::SendError;

/// How long an `authenticate` waits for the cluster before it is answered as a fresh session.
const PENDING_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A connection of this node: through socketioxide (long-polling, and its upgrade to WebSocket)
/// or through Roulette's own WebSocket transport ([`crate::ws`]).
#[derive(Debug, Clone)]
pub enum Sock {
    /// A socketioxide socket.
    Io(SocketRef<LocalAdapter>),
    /// A direct WebSocket connection.
    Ws(crate::ws::ConnRef),
}

impl PartialEq for Sock {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Sock::Io(a), Sock::Io(b)) => a == b,
            (Sock::Ws(a), Sock::Ws(b)) => a == b,
            _ => false,
        }
    }
}

impl Sock {
    /// The Socket.IO session id.
    pub fn id(&self) -> Sid {
        match self {
            Sock::Io(s) => s.id,
            Sock::Ws(c) => c.id,
        }
    }

    /// Queues event `event` with `data`; fails when the connection is closed or its send
    /// buffer is full.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), SendError> {
        use socketioxide::SendError as E;
        use socketioxide_core::adapter::errors::SocketError;
        match self {
            Sock::Io(s) => s.emit(event, data).map_err(|e| match e {
                E::Socket(SocketError::InternalChannelFull) => SendError::Full,
                E::Socket(SocketError::Closed) => SendError::Closed,
                E::Serialize(_) => SendError::Encode,
            }),
            Sock::Ws(c) => c.emit(event, data),
        }
    }

    /// Sends the client away (`41`): it does not reconnect on its own. The disconnect handling
    /// runs afterwards, on the connection's own task.
    pub fn disconnect(&self) {
        match self {
            Sock::Io(s) => {
                s.clone().disconnect().ok();
            }
            Sock::Ws(c) => c.disconnect(),
        }
    }
}

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
    /// The Socket.IO server, once built (for counting connections).
    pub io: std::sync::OnceLock<socketioxide::SocketIo>,
    /// The connections on Roulette's own WebSocket transport.
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
            io: std::sync::OnceLock::new(),
            conns: Arc::new(crate::ws::Conns::new(
                std::time::Duration::from_millis(config.ping_interval_ms),
                std::time::Duration::from_millis(config.ping_timeout_ms),
            )),
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

    /// Open Socket.IO connections on this server, on both transports.
    pub fn sockets(&self) -> usize {
        self.io.get().map_or(0, |io| io.sockets().len()) + self.conns.len()
    }

    /// Every open connection, on both transports.
    pub fn all_sockets(&self) -> Vec<Sock> {
        let io = self.io.get().map(|io| io.sockets()).unwrap_or_default();
        io.into_iter()
            .map(Sock::Io)
            .chain(self.conns.all().iter().map(|c| Sock::Ws(c.handle())))
            .collect()
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

/// Marker type for the trait impls below (socketioxide's traits are generic over one).
pub struct Direct;

/// Registers a connection's handlers before the client can send its first event.
///
/// socketioxide sends the namespace `40` reply first and calls the connect handler afterwards, in
/// a spawned task; a client that emits right after `40` can have its event dropped because no
/// handler exists yet (seen here: a test's first `authenticate` went unanswered in about one
/// full-suite run in three, until the handlers moved into the middleware). The connect
/// *middleware* runs before the socket is registered and before `40` is sent, so the handlers
/// are installed there, synchronously.
#[derive(Clone)]
pub struct OnConnect(pub Arc<Hub>);

/// What socketioxide's connect middleware returns.
type MiddlewareFuture<'a> = std::pin::Pin<
    Box<dyn Future<Output = Result<(), Box<dyn std::fmt::Display + Send>>> + Send + 'a>,
>;

impl ConnectHandler<LocalAdapter, Direct> for OnConnect {
    fn call(&self, _s: Arc<Socket<LocalAdapter>>, _auth: Option<Value>) {}

    fn call_middleware<'a>(
        &'a self,
        s: Arc<Socket<LocalAdapter>>,
        auth: &'a Option<Value>,
    ) -> MiddlewareFuture<'a> {
        let hub = &self.0;
        let parts = s.req_parts();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let ip = hub.limits.client_ip(&parts.headers, peer);
        match open_session(hub, ip, s.id, handshake_token(auth.as_ref())) {
            Ok(session) => {
                s.on_fallback(Dispatcher(session.clone()));
                s.on_disconnect(OnDisconnect(session));
                Box::pin(std::future::ready(Ok(())))
            }
            Err(message) => Box::pin(std::future::ready(Err(
                Box::new(message) as Box<dyn std::fmt::Display + Send>
            ))),
        }
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

/// The `token` of a handshake's `auth` object, as socket.io-client sends it with `auth: {token}`.
fn handshake_token(auth: Option<&Value>) -> Option<String> {
    let Some(Value::Str(text, _)) = auth else {
        return None;
    };
    token_of(text.as_str())
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

/// Receives every event of one socket and runs its handler inline.
pub struct Dispatcher(Arc<Session>);

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

/// Handles one event frame (`["name", payload]` as JSON text; `None` for a frame that is not
/// text) on either transport: charges it, runs its handler, and answers a refusal with an
/// `error` event. `None` means the socket keeps flooding and must be cut off.
pub fn on_event<'v>(
    session: &Arc<Session>,
    socket: &Sock,
    text: Option<&'v str>,
    binary: bool,
) -> Option<Outcome<'v>> {
    let outcome = match dispatch(session, socket, text, binary) {
        Err(Refusal::Flooding) => {
            tracing::info!(sid = %socket.id(), ip = ?session.ip, "disconnecting a socket that keeps flooding");
            return None;
        }
        Err(Refusal::Reject(event, r)) => Err((event, r)),
        Ok(()) => Ok(()),
    };
    if let Err((event, reject)) = &outcome {
        tracing::debug!(sid = %socket.id(), %event, code = reject.code.as_str(), "refused");
        send_error(socket, event, reject);
    }
    Some(outcome)
}

impl MessageHandler<LocalAdapter, Direct> for Dispatcher {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, mut v: Value, ack_id: Option<i64>) {
        wait_until_connected(&s);
        let ack = ack_id.map(|_| {
            let Ok(ack) = AckSender::from_message_parts(&s, &mut v, &ack_id);
            ack
        });
        let socket = Sock::Io(SocketRef::from(s));
        let (text, binary) = match &v {
            Value::Str(text, binaries) => (
                Some(text.as_str()),
                binaries.as_ref().is_some_and(|b| !b.is_empty()),
            ),
            _ => (None, true),
        };
        let Some(outcome) = on_event(&self.0, &socket, text, binary) else {
            socket.disconnect();
            return;
        };
        if let Some(ack) = ack {
            ack.send(&ack_reply(&outcome)).ok();
        }
    }
}

/// socketioxide sends the namespace `40` reply and only then marks the socket connected, from the
/// connect task on another thread; until then every `emit` fails. A client that answers `40` at
/// once can be handled inside that gap (seen here: an `authenticated` refused as `Closed` in about
/// one test run in three under load). The gap is a couple of statements on a running thread, so
/// yielding until the flag is set is brief; the bound only matters for a socket that is closing.
pub fn wait_until_connected(s: &Socket<LocalAdapter>) {
    if s.connected() {
        return;
    }
    let deadline = Instant::now() + std::time::Duration::from_millis(50);
    while !s.connected() && Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// Why the dispatcher did not run a handler.
enum Refusal<'v> {
    /// Answer the event with this refusal.
    Reject(std::borrow::Cow<'v, str>, Reject),
    /// The socket keeps flooding after being told: close it.
    Flooding,
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
    text: Option<&'v str>,
    binary: bool,
) -> Result<(), Refusal<'v>> {
    let Some(text) = text else {
        charge(session, EventClass::Other, "")?;
        return Err(("".into(), ErrorCode::BinaryNotSupported.into()).into());
    };
    let frame: Frame<'v> = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            charge(session, EventClass::Other, "")?;
            let why = crate::protocol::clip(&e.to_string()).to_owned();
            return Err((
                "".into(),
                Reject::invalid(format!("unreadable event: {why}")),
            )
                .into());
        }
    };
    let event = frame.event;
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

/// Runs [`closed`] when a socketioxide socket disconnects.
pub struct OnDisconnect(Arc<Session>);

impl DisconnectHandler<LocalAdapter, Direct> for OnDisconnect {
    fn call_with_defer(
        &self,
        s: Arc<Socket<LocalAdapter>>,
        reason: DisconnectReason,
        defer: fn(Arc<Socket<LocalAdapter>>),
    ) {
        tracing::debug!(sid = %s.id, %reason, "disconnected");
        // A client that said goodbye (or that the server sent away) is not coming back;
        // a transport that died may be a phone changing networks.
        let lost = !matches!(
            reason,
            DisconnectReason::ClientNSDisconnect | DisconnectReason::ServerNSDisconnect
        );
        closed(&self.0, &Sock::Io(SocketRef::from(s.clone())), lost);
        defer(s);
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
