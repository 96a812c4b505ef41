//! The node: its state and the one place that delivers what the core decided.
//!
//! [`Hub`] owns everything a node has: the core under its lock, the cluster it joined, the
//! pending `authenticate`s, the limits, the token checker, the ICE servers and the transport's
//! sessions. Every change of the core goes through one funnel ([`Hub::deliver`]): lock, apply,
//! deliver (to a local socket or to another node, decided once by the recipient's [`Link`]) and
//! settle. The Socket.IO handlers ([`crate::signaling`]) and the cluster's handlers
//! ([`crate::cluster`]) sit above it; the core, the bus and the transport below.

mod deliver;
pub(crate) use deliver::Relayed;
pub(crate) mod acks;
pub(crate) mod moderator;
mod peers;
mod records;
pub(crate) mod recovered;
pub(crate) mod resume;

pub(crate) use peers::Peers;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;

use crate::auth::Verifier;
use crate::bus::queue::{Job, Queue, SharedQueue};
use crate::core::matchmaker::PreferenceMatchmaker;
use crate::core::{Core, CoreConfig};
use crate::ice::Ice;
use crate::limits::{Limits, SocketBudget};
use crate::model::{Reject, UserId};
use crate::protocol::outgoing::ErrorOut;
pub(crate) use crate::ws::SendError;
use crate::ws::{ConnRef, Sid};

/// What a node needs of the settings (built by [`crate::config`]).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The core's timings.
    pub core: CoreConfig,
    /// Most blocks a single node keeps (`MAX_BLOCKS`).
    pub max_blocks: usize,
    /// Whether the node joins a cluster (`REDIS_URL` set): the queue is then shared.
    pub clustered: bool,
    /// The transport's buffers and timeouts.
    pub transport: crate::ws::Settings,
    /// Connection, request and event limits.
    pub limits: crate::limits::Settings,
    /// Token authentication.
    pub auth: crate::auth::Settings,
    /// STUN/TURN servers for clients.
    pub ice: crate::ice::Settings,
    /// Bans, reports and the auto-ban.
    pub moderation: moderator::Settings,
    /// Signed webhooks to the app's backend.
    pub webhooks: crate::webhook::Settings,
}

/// How long an `authenticate` waits for the cluster before it is answered as a fresh session.
const PENDING_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A connection of this node, as the handlers and the core hold it.
pub(crate) type Sock = ConnRef;

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
    pub(crate) fn is(&self, socket: &Sock) -> bool {
        matches!(self, Link::Local(s) if s == socket)
    }
}

/// The core of a node.
pub(crate) type NodeCore = Core<Link, Queue>;

/// State shared by every connection: the core behind one lock, plus server-wide flags.
pub struct Hub {
    core: Mutex<NodeCore>,
    /// The other nodes: none for a node alone, the cluster (once joined) otherwise.
    pub(crate) peers: Peers,
    /// The cluster jobs the core queues, taken by the worker when the cluster starts.
    pub(crate) jobs: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Job>>>,
    resubmit: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    /// `authenticate`s waiting for the cluster (see `handlers::authenticate`), by user.
    pending: Mutex<std::collections::HashMap<UserId, resume::Pending>>,
    /// Namespace connects waiting for another node's session (see [`recovered`]).
    pub(crate) asking: recovered::Asking,
    /// Where users whose session moved to another node went (see [`recovered::Forwards`]).
    pub(crate) forwards: recovered::Forwards,
    /// The sessions this node made that moved to other nodes (see [`recovered::Departed`]).
    pub(crate) departed: recovered::Departed,
    /// Acknowledged relays waiting for another node's word (see [`acks`]).
    pub(crate) acks: acks::Acks,
    /// The core's timings (the cluster worker shares the grace and the relax time).
    pub(crate) timings: CoreConfig,
    /// Most blocks kept (`MAX_BLOCKS`): also the bound of the cluster's matchmaker here.
    pub(crate) max_blocks: usize,
    /// Bans and reports.
    moderator: moderator::Moderator,
    /// `GET /admin/users` questions waiting on the cluster's answer.
    asks: moderator::Asks,
    /// Signed webhooks, when `WEBHOOK_URL` is set.
    pub(crate) webhooks: Option<crate::webhook::Webhooks>,
    /// Connection, request and event limits.
    pub(crate) limits: Limits,
    /// The token checker; `None` in anonymous mode.
    pub(crate) verifier: Option<Verifier>,
    /// STUN/TURN servers for clients.
    pub(crate) ice: Ice,
    /// The sessions of this node's clients.
    pub(crate) conns: Arc<crate::ws::Conns>,
    shutting_down: AtomicBool,
    /// Told (`notify_waiters`) each time a connection's departure has been applied to the core
    /// (`signaling::closed`): a newcomer waiting for an unresponsive holder of its id to let go
    /// of it looks again then, instead of on a timer.
    pub(crate) released: tokio::sync::Notify,
    /// When the server started.
    pub(crate) started: Instant,
}

impl Hub {
    /// A hub with an empty core, or why the settings cannot make one (an unusable JWT key).
    pub(crate) fn new(settings: Settings) -> Result<Arc<Hub>, String> {
        let cfg = settings.core;
        let (queue, jobs, resubmit) = if settings.clustered {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (
                Queue::Shared(SharedQueue::new(
                    cfg.preference_relax,
                    settings.max_blocks,
                    tx.clone(),
                )),
                Some(rx),
                Some(tx),
            )
        } else {
            (
                Queue::Local(
                    PreferenceMatchmaker::new(cfg.preference_relax)
                        .with_max_blocks(settings.max_blocks),
                ),
                None,
                None,
            )
        };
        let webhooks = crate::webhook::Webhooks::start(&settings.webhooks);
        let mut core = Core::with_matchmaker(cfg.clone(), queue);
        if webhooks.is_some() {
            core.record_sessions();
        }
        Ok(Arc::new(Hub {
            core: Mutex::new(core),
            webhooks,
            peers: Peers::new(settings.clustered),
            jobs: Mutex::new(jobs),
            resubmit,
            pending: Mutex::new(std::collections::HashMap::new()),
            asking: recovered::Asking::default(),
            forwards: recovered::Forwards::default(),
            departed: recovered::Departed::default(),
            acks: acks::Acks::default(),
            limits: Limits::new(&settings.limits),
            verifier: Verifier::new(&settings.auth)?,
            ice: Ice::new(&settings.ice),
            conns: Arc::new(crate::ws::Conns::new(settings.transport)),
            timings: cfg,
            max_blocks: settings.max_blocks,
            moderator: moderator::Moderator::open(&settings.moderation)?,
            asks: moderator::Asks::default(),
            shutting_down: AtomicBool::new(false),
            released: tokio::sync::Notify::new(),
            started: Instant::now(),
        }))
    }

    /// Locks the core. Keep the guard for one event's work only. What the work sends to this
    /// node's sockets is written once the lock is released (see [`CoreGuard`]).
    pub(crate) fn lock(&self) -> CoreGuard<'_> {
        let batch = crate::ws::Batch::begin();
        CoreGuard {
            core: self.core.lock(),
            _batch: batch,
        }
    }

    /// Parks an `authenticate` until the cluster answers. A newer attempt for the same user
    /// replaces an older one, which is answered at once as a fresh session.
    pub(crate) fn defer(&self, user: UserId, p: resume::Pending) {
        let older = self.pending.lock().insert(user, p);
        if let Some(older) = older {
            resume::finish(self, older, None);
        }
    }

    /// The parked `authenticate` of `user`, if any.
    pub(crate) fn take_pending(&self, user: &str) -> Option<resume::Pending> {
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
            resume::finish(self, p, None);
        }
    }

    /// Queues a job for the cluster worker (nothing happens on a single node).
    pub(crate) fn job(&self, job: Job) {
        if let Some(tx) = &self.resubmit {
            tx.send(job).ok();
        }
    }

    /// Queues the search of a user who still waits here for the lease holder again (a new
    /// holder, or a pairing that fell through).
    pub(crate) fn resubmit(&self, user: UserId) {
        self.job(Job::Search(user, None));
    }

    /// A pairing of `user`'s search did not become a room: if the user still waits here, it
    /// searches again, under a new search id (the holder took the old one out of its queue).
    pub(crate) fn search_again(&self, core: &mut NodeCore, user: &str) {
        if !core.is_waiting(user) {
            return;
        }
        core.queue_mut().renew_search(user);
        self.resubmit(user.into());
    }

    /// True while a node with `REDIS_URL` has not joined its cluster yet: it takes no sessions
    /// and `/health` answers 503.
    pub fn waiting_for_cluster(&self) -> bool {
        self.peers.joining()
    }

    /// True once shutdown began: `/health` answers 503 and new searches are refused.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Marks the start of shutdown.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Runs the core's time-driven work and sends what it decided.
    pub(crate) fn tick(&self, now: Instant) {
        {
            let mut core = self.lock();
            let effects = core.tick(now);
            self.deliver(&mut core, effects);
        }
        if self.peers.may_hold_sessions() {
            self.expire_pending(now);
            recovered::expire(self, now);
            acks::expire(self, now);
        }
    }

    /// Whether the core's structures agree with each other (the tests' check after every step).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.lock().check_invariants()
    }

    /// How a connected user is reached now (`None` for a user who is away or unknown).
    pub fn link_of(&self, user: &str) -> Option<Link> {
        self.lock().link(user).cloned()
    }

    /// The link kept for a user, whether connected or away for the reconnect grace.
    pub fn kept_link_of(&self, user: &str) -> Option<Link> {
        self.lock().kept_link(user).cloned()
    }

    /// How many sessions each transport serves.
    pub fn transports(&self) -> crate::ws::Transports {
        self.conns.transports()
    }

    /// The output queues' figures.
    pub fn output(&self) -> crate::ws::Output {
        self.conns.output()
    }

    /// Open Engine.IO sessions on this server, on every transport.
    pub fn sockets(&self) -> usize {
        self.conns.len()
    }

    /// Every open session.
    pub(crate) fn all_sockets(&self) -> Vec<Sock> {
        self.conns.all().iter().map(|c| c.handle()).collect()
    }
}

/// The core, locked, with this thread's writes to sockets batched: no system call to a socket
/// is made while the lock is held (a slow or full socket never holds up every other user's
/// work), and the batch writes everything when the guard is dropped, lock first. Frames are
/// queued in the order the work sends them, so order is kept as if they were written at once.
pub(crate) struct CoreGuard<'a> {
    // Dropped in this order: the lock, then the batch's writes.
    core: MutexGuard<'a, NodeCore>,
    _batch: crate::ws::Batch,
}

impl std::ops::Deref for CoreGuard<'_> {
    type Target = NodeCore;
    fn deref(&self) -> &NodeCore {
        &self.core
    }
}

impl std::ops::DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut NodeCore {
        &mut self.core
    }
}

/// Queues one event on a socket. Returns false (and logs) when the socket is closed or its send
/// buffer is full, so a caller that must not lose the event can tell its sender.
pub(crate) fn send<T: Serialize + ?Sized>(socket: &Sock, event: &str, data: &T) -> bool {
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

/// Answers an event: in its acknowledgement when the client asked for one (`ack`), the refusal
/// included, and then with no `error` event; otherwise a refusal is told as an `error` (or
/// `auth-error`) event and a success needs no word.
pub(crate) fn answer(socket: &Sock, ack: Option<i64>, event: &str, outcome: Result<(), &Reject>) {
    match (ack, outcome) {
        (Some(id), outcome) => {
            if let Err(r) = outcome {
                crate::metrics::error(r.code);
            }
            if let Err(e) = socket.ack(id, &crate::protocol::outgoing::AckReply::of(outcome)) {
                tracing::debug!(sid = %socket.id(), event, error = %e, "acknowledgement not delivered");
            }
        }
        (None, Err(r)) => send_error(socket, event, r),
        (None, Ok(())) => {}
    }
}

/// Sends an `error` (or `auth-error`) event describing a refusal.
pub(crate) fn send_error(socket: &Sock, event: &str, reject: &Reject) {
    let auth = event == "authenticate" && reject.code.is_auth_failure();
    let body = ErrorOut {
        code: reject.code,
        message: &reject.message,
        // The name is the client's own text: a 60 KB name must not come back 60 KB long.
        event: (!auth).then_some(crate::protocol::clip(event)),
        retry_after_ms: reject.retry_after_ms,
        until: reject.until,
    };
    crate::metrics::error(reject.code);
    send(socket, if auth { "auth-error" } else { "error" }, &body);
}

/// What one connection knows about itself. Touched only while the hub lock is held, so that
/// `authenticate` and the disconnect handler of one socket cannot interleave.
#[derive(Default)]
pub(crate) struct SessionState {
    /// The user this socket authenticated as.
    pub user: Option<UserId>,
    /// Set by the disconnect handler: a late `authenticate` must not register a dead socket.
    pub closed: bool,
    /// Who a connection lost with its session held was: whom a recovery of the session brings
    /// back (boxed: most connections never need it).
    pub held: Option<Box<HeldUser>>,
    /// This connection carries a session its client recovered (Socket.IO connection state
    /// recovery).
    pub recovered: bool,
}

/// The user of a session held for its client to recover it.
#[derive(Debug)]
pub(crate) struct HeldUser {
    /// The user.
    pub user: UserId,
    /// The search it had when its connection dropped (it left the queue then): made again if
    /// the client recovers the session.
    pub search: Option<crate::model::profile::Preferences>,
}

/// Per-connection data shared by the socket's message and disconnect handlers.
pub(crate) struct Session {
    /// The server's shared state.
    pub hub: Arc<Hub>,
    /// This connection's state.
    pub state: Mutex<SessionState>,
    /// The client's address (after `TRUST_PROXY`), when known.
    pub ip: Option<IpAddr>,
    /// The token given in the Socket.IO handshake (`auth: {token}`), if any.
    pub handshake_token: Option<Box<str>>,
    /// The connection's event budget.
    pub(crate) budget: SocketBudget,
}

/// Starts a connection's session once its client joined the `/` namespace, or refuses it
/// (too many connections from its address) with the message for the client.
pub(crate) fn open_session(
    hub: &Arc<Hub>,
    ip: Option<IpAddr>,
    id: Sid,
    handshake_token: Option<Box<str>>,
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
