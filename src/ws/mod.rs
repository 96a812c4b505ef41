//! Roulette's own WebSocket transport for Socket.IO clients that connect over WebSocket
//! directly (`transports: ['websocket']`, as mobile apps and the load generator do). Long-polling
//! sessions, and their upgrade to WebSocket, stay with socketioxide.
//!
//! Why: an idle connection through engineioxide costs about 24 KB of server memory, and the
//! budget is 6 KB. Its costs are structural: hyper's read buffer kept alive under the upgraded
//! connection, three tasks per connection (reader, writer, heartbeat) whose futures are large, an
//! outgoing channel whose first block is allocated at creation, and a read buffer per socket.
//! Here a connection is one small task and an [`Conn`] that owns no buffer while idle:
//! - reads go into a buffer on the reading thread's stack, and bytes are kept only while a frame
//!   is incomplete;
//! - an event is written to the socket at once by whoever emits it, under the connection's
//!   lock; only what the kernel does not take is queued, and the task then waits for the socket to
//!   be writable. One thread's emits therefore reach the wire in order, and no task is woken per
//!   message;
//! - one heartbeat task pings every connection in turn, instead of a timer task each.
//!
//! Events are handled exactly as on socketioxide's path: inline, in arrival order, by
//! [`crate::signaling`]'s dispatcher.

pub mod frame;
pub mod packet;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::Serialize;
use socketioxide::socket::Sid;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::signaling::{Hub, Session, Sock};
use frame::{Fed, Message, OutFrame, Reader, Violation};
use packet::Incoming;

/// How long a client may take to join the `/` namespace after connecting (socketioxide's
/// default too).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// A thread's scratch buffer for encoding is dropped after a message larger than this.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    /// Where events are encoded before they are written.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Frames written with one `writev`.
const WRITEV_FRAMES: usize = 32;

/// Connections a read turn coalesces writes for (the rest are written frame by frame).
const TURN_CONNS: usize = 64;

/// The connections written to during this thread's current read turn.
struct Turn {
    /// Whether a read turn runs on this thread: outside one, frames are written at once.
    active: bool,
    /// The connection being read: what is queued for it now answers its own messages, which
    /// the byte budget never refuses (reading it pauses instead).
    reader: Option<Sid>,
    /// Kept between turns so that a turn does not allocate its list.
    conns: Vec<Arc<Conn>>,
}

thread_local! {
    /// This thread's read turn.
    static TURN: std::cell::RefCell<Turn> = const {
        std::cell::RefCell::new(Turn { active: false, reader: None, conns: Vec::new() })
    };
}

/// A read turn on this thread: while it lives, frames are gathered per connection; when it
/// ends, even by a panic in a handler, each connection's frames are written with one system
/// call and the thread writes at once again.
struct TurnGuard;

impl TurnGuard {
    fn begin(reader: Sid) -> TurnGuard {
        TURN.with_borrow_mut(|t| {
            t.active = true;
            t.reader = Some(reader);
        });
        TurnGuard
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        let mut written = TURN.with_borrow_mut(|t| {
            t.active = false;
            t.reader = None;
            std::mem::take(&mut t.conns)
        });
        for c in written.drain(..) {
            match c.flush() {
                Ok(true) => {}
                // The kernel took part: the connection's task writes the rest when it can.
                Ok(false) => c.wake.notify_one(),
                Err(_) => c.end(End::Lost("transport error")),
            }
        }
        // The list keeps its allocation for the next turn.
        TURN.with_borrow_mut(|t| t.conns = written);
    }
}

/// Reads per wake-up before other connections get the thread.
const READS_PER_TURN: usize = 8;

/// Why an event could not be queued on a connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closing or closed.
    #[error("connection closed")]
    Closed,
    /// `SOCKET_BUFFER_BYTES` bytes (or `SOCKET_BUFFER_PACKETS` frames) wait already: the client
    /// does not read.
    #[error("send buffer full")]
    Full,
    /// The payload could not be written as JSON.
    #[error("payload not serializable")]
    Encode,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client left its namespace (`socket.disconnect()`): it is not coming back.
    Left,
    /// The server sent the client away (`41`): its client does not reconnect on its own.
    SentAway,
    /// The transport closed or failed, or the client stopped answering pings: it may come back
    /// within the reconnect grace.
    Lost(&'static str),
}

/// How the rest of the server reaches a connection. Weak, so that the socket is closed as soon
/// as the connection's task ends, even while the core still holds the link of a user who is away
/// for the reconnect grace (a strong reference there kept one open file per dropped phone for the
/// whole grace).
#[derive(Debug, Clone)]
pub struct ConnRef {
    /// The connection's session id.
    pub id: Sid,
    conn: std::sync::Weak<Conn>,
}

impl PartialEq for ConnRef {
    fn eq(&self, other: &Self) -> bool {
        self.conn.ptr_eq(&other.conn)
    }
}

impl ConnRef {
    /// Queues event `event` with `data`; `Closed` once the connection is gone.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), SendError> {
        self.conn
            .upgrade()
            .ok_or(SendError::Closed)?
            .emit(event, data)
    }

    /// Whether the connection still exists (its task has not ended).
    pub fn is_open(&self) -> bool {
        self.conn.strong_count() > 0
    }

    /// Sends the client away (see [`Conn::disconnect`]).
    pub fn disconnect(&self) {
        if let Some(c) = self.conn.upgrade() {
            c.disconnect();
        }
    }
}

/// Frames waiting for the socket to take them, and whether the connection is ending.
#[derive(Default)]
struct Out {
    frames: VecDeque<OutFrame>,
    /// The unwritten bytes of `frames`: what the connection's budget is charged with.
    bytes: usize,
    /// Frames written out whole since the connection opened: `frames[0]` is frame number
    /// `popped`.
    popped: u64,
    /// The number of a queued pong that nothing of has been written yet: a newer ping replaces
    /// its payload instead of queueing another (RFC 6455 lets a pong answer only the latest
    /// ping), so a client that pings and never reads gets no pile of pongs.
    pong: Option<u64>,
    end: Option<End>,
}

impl Out {
    /// Queues a frame at the end.
    fn push(&mut self, frame: OutFrame) {
        self.bytes += frame.remaining().len();
        self.frames.push_back(frame);
    }

    /// Marks `n` more bytes as written, from the front.
    fn written(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let f = self
                .frames
                .front_mut()
                .expect("written bytes belong to queued frames");
            let len = f.remaining().len();
            if n >= len {
                self.frames.pop_front();
                self.popped += 1;
                n -= len;
            } else {
                f.advance(n);
                n = 0;
            }
        }
        // The front frame has started (or is gone): it cannot be replaced any more.
        if self.pong.is_some_and(|p| p <= self.popped) {
            self.pong = None;
        }
    }
}

/// One client connection on this transport.
pub struct Conn {
    /// The session id, shared by Engine.IO and Socket.IO as in socketioxide.
    pub id: Sid,
    tcp: TcpStream,
    out: Mutex<Out>,
    wake: Notify,
    /// When the unanswered ping was sent (ms on the registry's clock), 0 when none is.
    ping_sent: AtomicU64,
    /// When the next ping is due.
    next_ping: AtomicU64,
    /// When the connection opened.
    opened: u64,
    /// Whether the client joined the `/` namespace.
    joined: AtomicBool,
    /// `SOCKET_BUFFER_PACKETS`.
    cap: usize,
    /// `SOCKET_BUFFER_BYTES`: while this much waits, events for the client are refused and
    /// nothing more is read from it.
    budget: usize,
    /// Since when (registry clock) the heartbeat has seen the queue over its budget; 0 when it
    /// is not.
    over_since: AtomicU64,
    /// Whether the connection holds one of its address's `MAX_CONNECTIONS_PER_IP` slots from
    /// its first byte. One that could not get a slot is told so when it asks to join, and
    /// closed; it is never left to linger uncounted.
    counted: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("id", &self.id).finish()
    }
}

impl Conn {
    /// A reference for the rest of the server.
    pub fn handle(self: &Arc<Self>) -> ConnRef {
        ConnRef {
            id: self.id,
            conn: Arc::downgrade(self),
        }
    }

    /// Queues event `event` with `data` (`42["event",data]`).
    pub fn emit<T: Serialize + ?Sized>(
        self: &Arc<Self>,
        event: &str,
        data: &T,
    ) -> Result<(), SendError> {
        self.send_text(|b| {
            b.extend_from_slice(b"42[");
            serde_json::to_writer(&mut *b, event)?;
            b.push(b',');
            serde_json::to_writer(&mut *b, data)?;
            b.push(b']');
            Ok(())
        })
    }

    /// Answers the client's acknowledgement request `id` (`43<id>[data]`).
    pub fn ack<T: Serialize + ?Sized>(
        self: &Arc<Self>,
        id: i64,
        data: &T,
    ) -> Result<(), SendError> {
        self.send_text(|b| {
            use std::io::Write as _;
            write!(b, "43{id}[").map_err(serde_json::Error::io)?;
            serde_json::to_writer(&mut *b, data)?;
            b.push(b']');
            Ok(())
        })
    }

    /// Encodes a text frame in this thread's scratch buffer and sends it: nothing is allocated
    /// unless the kernel does not take the whole frame at once.
    fn send_text(
        self: &Arc<Self>,
        write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
    ) -> Result<(), SendError> {
        SCRATCH.with_borrow_mut(|buf| {
            let start = frame::encode_text(buf, write).map_err(|_| SendError::Encode)?;
            let sent = self.push_bytes(&buf[start..], false);
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            sent
        })
    }

    /// Writes `bytes` (one whole frame) now if nothing waits before it; queues what the kernel
    /// did not take. During a read turn (see [`on_readable`]), frames are only queued: the turn
    /// writes each connection's frames together at its end, in one system call, as
    /// socketioxide's writer task does with what piles up in its channel. A client's read
    /// usually holds several messages (a candidate sent right after another), and a `send` is
    /// about a third of a relay's CPU.
    fn push_bytes(self: &Arc<Self>, bytes: &[u8], control: bool) -> Result<(), SendError> {
        let (coalesce, own) = TURN.with_borrow_mut(|turn| {
            let own = turn.reader == Some(self.id);
            let coalesce = if !turn.active {
                false
            } else if turn.conns.iter().any(|c| Arc::ptr_eq(c, self)) {
                true
            } else if turn.conns.len() < TURN_CONNS {
                turn.conns.push(self.clone());
                true
            } else {
                false
            };
            (coalesce, own)
        });
        let mut out = self.out.lock();
        if out.end.is_some() {
            return Err(SendError::Closed);
        }
        // Control frames (the transport's own, and replies to a namespace connect) and the
        // answers to the connection's own messages are never refused by the byte budget: a
        // client is not read from while its queue is over budget, so what it provokes stops at
        // the budget plus one message's answers. Events from elsewhere (a partner's relays) are.
        let over = !own && out.bytes >= self.budget;
        let full = !control && (out.frames.len() >= self.cap || over);
        if coalesce {
            if full {
                return Err(SendError::Full);
            }
            out.push(OutFrame::rest(bytes));
            return Ok(());
        }
        let mut rest = bytes;
        if out.frames.is_empty() {
            match self.tcp.try_write(bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => rest = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    out.end = Some(End::Lost("transport error"));
                    drop(out);
                    self.wake.notify_one();
                    return Err(SendError::Closed);
                }
            }
        } else if full {
            return Err(SendError::Full);
        }
        out.push(OutFrame::rest(rest));
        drop(out);
        self.wake.notify_one();
        Ok(())
    }

    /// Answers a WebSocket ping. An answer still waiting untouched in the queue takes the new
    /// payload instead of a second pong being queued.
    fn push_pong(self: &Arc<Self>, payload: &[u8]) {
        {
            let mut out = self.out.lock();
            if out.end.is_some() {
                return;
            }
            if let Some(n) = out.pong {
                let i = (n - out.popped) as usize;
                let frame = OutFrame::pong(payload);
                let old = std::mem::replace(&mut out.frames[i], frame);
                out.bytes = out.bytes - old.remaining().len() + out.frames[i].remaining().len();
                return;
            }
            if !out.frames.is_empty() {
                let n = out.popped + out.frames.len() as u64;
                out.push(OutFrame::pong(payload));
                out.pong = Some(n);
                drop(out);
                self.wake.notify_one();
                return;
            }
        }
        self.push_control(OutFrame::pong(payload)).ok();
    }

    /// Whether the queue holds its whole budget: the client is not read from meanwhile.
    fn over_budget(&self) -> bool {
        self.out.lock().bytes >= self.budget
    }

    /// Sends the client away: `41`, then a WebSocket close. Its task then runs the disconnect
    /// handling (never the caller, who may hold the hub lock).
    pub fn disconnect(&self) {
        self.end_with(
            End::SentAway,
            [OutFrame::text(packet::DISCONNECT), OutFrame::close(1000)],
        );
    }

    /// Closes the transport for a server shutdown: a WebSocket close (1001, going away) and no
    /// `41`, so that socket.io-client reconnects on its own (to another node, or to this one
    /// once restarted), as it does when socketioxide closes.
    pub fn close_for_shutdown(&self) {
        self.end_with(End::Lost("server shutdown"), [OutFrame::close(1001)]);
    }

    /// Ends the connection for `why` (if it is not ending already).
    fn end(&self, why: End) {
        self.end_with(why, []);
    }

    /// Ends the connection for `why` with `goodbye` as its last frames, unless it is ending
    /// already; its task does the rest.
    fn end_with<const N: usize>(&self, why: End, goodbye: [OutFrame; N]) {
        let mut out = self.out.lock();
        if out.end.is_some() {
            return;
        }
        out.end = Some(why);
        for f in goodbye {
            out.push(f);
        }
        drop(out);
        self.wake.notify_one();
    }

    /// Sends a frame of the transport's own (pings, pongs, handshake): never refused by a full
    /// buffer.
    fn push_control(self: &Arc<Self>, frame: OutFrame) -> Result<(), SendError> {
        self.push_bytes(frame.remaining(), true)
    }

    /// Writes queued frames until the socket would block, up to [`WRITEV_FRAMES`] frames per
    /// system call; `true` when none is left (one lock for both, as a read turn flushes every
    /// recipient). An emptied queue gives its memory back: a connection that was slow once does
    /// not keep a buffer for good.
    fn flush(&self) -> std::io::Result<bool> {
        let mut out = self.out.lock();
        while !out.frames.is_empty() {
            let slices: smallvec::SmallVec<[std::io::IoSlice<'_>; WRITEV_FRAMES]> = out
                .frames
                .iter()
                .take(WRITEV_FRAMES)
                .map(|f| std::io::IoSlice::new(f.remaining()))
                .collect();
            let n = match self.tcp.try_write_vectored(&slices) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            drop(slices);
            out.written(n);
        }
        out.frames = VecDeque::new();
        Ok(true)
    }

    /// Whether frames wait to be written, and whether the queue is over its budget.
    fn pending(&self) -> (bool, bool) {
        let out = self.out.lock();
        (!out.frames.is_empty(), out.bytes >= self.budget)
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.out.lock().bytes
    }

    fn ended(&self) -> Option<End> {
        self.out.lock().end
    }

    /// The heartbeat's visit: a ping when one is due, the end of a client that did not answer
    /// the last one in time or never joined a namespace.
    fn beat(self: &Arc<Self>, now: u64, conns: &Conns) {
        if self.over_budget() {
            let since = self.over_since.load(Ordering::Acquire);
            if since == 0 {
                self.over_since.store(now, Ordering::Release);
            } else if now.saturating_sub(since) > conns.ping_timeout_ms {
                tracing::info!(sid = %self.id, "closing a connection whose output stayed over its budget");
                crate::metrics::backpressure_closed();
                self.end(End::Lost("output over budget"));
                return;
            }
        } else {
            self.over_since.store(0, Ordering::Release);
        }
        let sent = self.ping_sent.load(Ordering::Acquire);
        if sent != 0 {
            if now.saturating_sub(sent) > conns.ping_timeout_ms {
                self.end(End::Lost("ping timeout"));
            }
            return;
        }
        // One that holds no slot of its address gets the ping timeout, not the Socket.IO
        // connect timeout, to ask for the `/` namespace and be refused.
        let connect_timeout = if self.counted {
            CONNECT_TIMEOUT.as_millis() as u64
        } else {
            conns.ping_timeout_ms
        };
        if !self.joined.load(Ordering::Acquire) && now.saturating_sub(self.opened) > connect_timeout
        {
            self.end(End::Lost("connect timeout"));
            return;
        }
        if now >= self.next_ping.load(Ordering::Acquire) {
            self.ping_sent.store(now, Ordering::Release);
            self.push_control(OutFrame::text(packet::PING)).ok();
        }
    }
}

/// What a connection's task keeps between reads.
struct Reading {
    reader: Reader,
    /// Set once the client joined `/`.
    session: Option<Arc<Session>>,
    /// Binary messages still to skip (attachments of a refused binary event).
    skip: u32,
    /// Whether the reader stopped before a message because the queue was over budget: those
    /// bytes are handled once it is not, before anything more is read.
    paused: bool,
    /// The close code to answer with when the connection ends.
    close_code: Option<u16>,
}

/// Every connection on this transport, and the heartbeat's settings.
pub struct Conns {
    map: Mutex<HashMap<Sid, Arc<Conn>>>,
    epoch: Instant,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
}

impl Conns {
    /// An empty registry with the Engine.IO heartbeat settings.
    pub fn new(ping_interval: Duration, ping_timeout: Duration) -> Conns {
        Conns {
            map: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            ping_interval_ms: ping_interval.as_millis() as u64,
            ping_timeout_ms: ping_timeout.as_millis() as u64,
        }
    }

    /// Milliseconds on the registry's clock; never 0.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of the open connections.
    pub fn ids(&self) -> HashSet<Sid> {
        self.map.lock().keys().copied().collect()
    }

    /// Every open connection.
    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.map.lock().values().cloned().collect()
    }

    /// What the connections' output queues hold now: bytes in all, and how many connections
    /// are over their budget (not read from until their client reads).
    pub fn output(&self) -> Output {
        let map = self.map.lock();
        let mut o = Output::default();
        for c in map.values() {
            let bytes = c.queued_bytes();
            o.queued_bytes += bytes;
            o.paused += usize::from(bytes >= c.budget);
        }
        o
    }

    /// Pings the connections whose ping is due and ends those that stopped answering, forever.
    pub async fn heartbeat(self: Arc<Self>) {
        let every = (self.ping_interval_ms.min(self.ping_timeout_ms) / 4).clamp(50, 1000);
        let mut tick = tokio::time::interval(Duration::from_millis(every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = self.now();
            for c in self.map.lock().values() {
                c.beat(now, &self);
            }
        }
    }
}

/// The output queues' figures (see [`Conns::output`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// Bytes queued for clients, all connections together.
    pub queued_bytes: usize,
    /// Connections whose queue is over its budget.
    pub paused: usize,
}

/// Serves a direct WebSocket request (`/socket.io/?EIO=4&transport=websocket` without a
/// session id) on this transport; every other request goes on to socketioxide.
pub async fn intercept(State(hub): State<Arc<Hub>>, mut req: Request, next: Next) -> Response {
    let Some(key) = direct_websocket(&req).filter(|_| hub.config.native_websocket) else {
        return next.run(req).await;
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = hub.limits.client_ip(req.headers(), peer);
    // The connection holds a slot of its address from its first byte, not only once it joins
    // `/`: connections that never join count too.
    let id = Sid::new();
    let counted = ip.is_none_or(|ip| hub.limits.open(ip, id));
    let upgrade = hyper::upgrade::on(&mut req);
    drop(req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                if let Some(ip) = ip {
                    hub.limits.close(ip, id);
                }
                return;
            }
        };
        // Taking the TCP stream back out of hyper frees hyper's read buffer, which the upgraded
        // connection would otherwise keep for its whole life.
        let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(p) => p,
            Err(_) => {
                tracing::error!("websocket upgrade over an unexpected connection type");
                if let Some(ip) = ip {
                    hub.limits.close(ip, id);
                }
                return;
            }
        };
        let early = parts.read_buf.to_vec();
        drop(parts.read_buf);
        let peer = Peer { id, ip, counted };
        serve(hub, parts.io.into_inner(), peer, early).await;
    });
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

/// The `Sec-WebSocket-Key` of a request this transport serves.
fn direct_websocket(req: &Request) -> Option<String> {
    if req.method() != http::Method::GET || !req.uri().path().starts_with("/socket.io") {
        return None;
    }
    let query = req.uri().query()?;
    let has = |k: &str, v: &str| {
        query
            .split('&')
            .any(|kv| kv.split_once('=').is_some_and(|(a, b)| a == k && b == v))
    };
    let sid = query.split('&').any(|kv| kv.starts_with("sid="));
    if sid || !has("EIO", "4") || !has("transport", "websocket") {
        return None;
    }
    let headers = req.headers();
    let token = |name: header::HeaderName, want: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
        })
    };
    if !token(header::UPGRADE, "websocket")
        || !token(header::CONNECTION, "upgrade")
        || headers.get(header::SEC_WEBSOCKET_VERSION)? != "13"
    {
        return None;
    }
    Some(
        headers
            .get(header::SEC_WEBSOCKET_KEY)?
            .to_str()
            .ok()?
            .to_owned(),
    )
}

/// Who a new connection is: its id, its client's address, and whether it holds one of that
/// address's slots.
struct Peer {
    id: Sid,
    ip: Option<IpAddr>,
    counted: bool,
}

/// Runs one connection from its handshake to its end.
async fn serve(hub: Arc<Hub>, tcp: TcpStream, peer: Peer, mut early: Vec<u8>) {
    let Peer { id, ip, counted } = peer;
    let conns = hub.conns.clone();
    let now = conns.now();
    let conn = Arc::new(Conn {
        id,
        tcp,
        out: Mutex::new(Out::default()),
        wake: Notify::new(),
        ping_sent: AtomicU64::new(0),
        next_ping: AtomicU64::new(now + conns.ping_interval_ms),
        opened: now,
        joined: AtomicBool::new(false),
        cap: hub.config.socket_buffer_packets as usize,
        budget: hub.config.socket_buffer_bytes as usize,
        over_since: AtomicU64::new(0),
        counted,
    });
    conns.map.lock().insert(conn.id, conn.clone());
    let sock = Sock::Ws(conn.handle());
    let id = conn.id.to_string();
    conn.push_control(OutFrame::text(&packet::open(
        &id,
        conns.ping_interval_ms,
        conns.ping_timeout_ms,
        hub.config.max_message_bytes,
    )))
    .ok();
    let here = Here {
        hub: &hub,
        conn: &conn,
        sock: &sock,
        ip,
    };
    let mut st = Reading {
        reader: Reader::default(),
        session: None,
        skip: 0,
        paused: false,
        close_code: None,
    };
    let mut end = None;
    if !early.is_empty() {
        end = on_bytes(&here, &mut st, &mut early);
    }
    drop(early);
    let end = loop {
        if let Some(e) = end.or_else(|| conn.ended()) {
            break e;
        }
        // Backpressure: while the client's queue is over budget nothing more is read from it,
        // so what it provokes (replies, pongs, errors) cannot outgrow the budget.
        let (want_write, over) = conn.pending();
        if st.paused && !over {
            let _turn = TurnGuard::begin(conn.id);
            end = on_bytes(&here, &mut st, &mut []);
            continue;
        }
        tokio::select! {
            biased;
            _ = conn.wake.notified() => {}
            r = conn.tcp.readable(), if !over && !st.paused => {
                end = match r {
                    Ok(()) => on_readable(&here, &mut st),
                    Err(_) => Some(End::Lost("transport error")),
                };
            }
            r = conn.tcp.writable(), if want_write => {
                if r.and_then(|()| conn.flush()).is_err() {
                    end = Some(End::Lost("transport error"));
                }
            }
        }
    };
    {
        let mut out = conn.out.lock();
        if out.end.is_none() {
            out.end = Some(end);
        }
        if let Some(code) = st.close_code {
            out.push(OutFrame::close(code));
        }
    }
    // Best effort: what the kernel takes now (a goodbye) is sent, the rest dropped.
    conn.flush().ok();
    socket2::SockRef::from(&conn.tcp)
        .shutdown(std::net::Shutdown::Both)
        .ok();
    conns.map.lock().remove(&conn.id);
    if let Some(ip) = ip {
        hub.limits.close(ip, conn.id);
    }
    tracing::debug!(sid = %conn.id, ?end, "websocket closed");
    if let Some(session) = st.session {
        crate::signaling::closed(&session, &sock, matches!(end, End::Lost(_)));
    }
}

/// What the reading functions share about the connection they read for.
struct Here<'a> {
    hub: &'a Arc<Hub>,
    conn: &'a Arc<Conn>,
    sock: &'a Sock,
    ip: Option<IpAddr>,
}

/// Bytes read at once. 16 KiB takes a burst of relays, or a 3 KB SDP, in one system call.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The read buffer, one per thread: an idle connection holds none.
    static READ_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Reads what the socket has, within one turn.
///
/// A read that returns less than asked for emptied the socket's receive queue, so readiness is
/// cleared right there instead of by one more `recv` failing with `EAGAIN`: one system call less
/// per message in a ping-pong. tokio's readiness ticks make this safe: data arriving after the
/// read started bumps the tick, and the stale clear is ignored; an end of stream is a final
/// readiness that is never cleared.
fn on_readable(here: &Here<'_>, st: &mut Reading) -> Option<End> {
    let conn = here.conn;
    use std::io::Read as _;
    let _turn = TurnGuard::begin(conn.id);
    READ_BUF.with_borrow_mut(|buf| {
        for _ in 0..READS_PER_TURN {
            if st.paused {
                return None;
            }
            let mut got = 0;
            let r = conn.tcp.try_io(tokio::io::Interest::READABLE, || {
                got = (&*socket2::SockRef::from(&conn.tcp)).read(buf)?;
                if got > 0 && got < buf.len() {
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match r {
                Ok(()) if got == 0 => return Some(End::Lost("transport close")),
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && got > 0 => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(_) => return Some(End::Lost("transport error")),
            }
            if let Some(end) = on_bytes(here, st, &mut buf[..got]) {
                return Some(end);
            }
            if got < buf.len() {
                return None;
            }
        }
        None
    })
}

/// Handles the messages in bytes just read.
fn on_bytes(here: &Here<'_>, st: &mut Reading, bytes: &mut [u8]) -> Option<End> {
    let (hub, conn) = (here.hub, here.conn);
    let Reading {
        reader,
        session,
        skip,
        paused,
        close_code,
    } = st;
    let mut end = None;
    let max = hub.config.max_message_bytes as usize;
    // The turn's answers are still queued here (written at its end): reading stops once they
    // fill the budget.
    let pause = || conn.over_budget();
    let fed = reader.feed_until(bytes, max, &pause, &mut |m| {
        let outcome = match m {
            Message::Text(_) if *skip > 0 => Err((End::Lost("bad packet"), 1002)),
            Message::Text(t) => match std::str::from_utf8(t) {
                Ok(text) => on_text(here, session, skip, text),
                Err(_) => Err((End::Lost("invalid utf-8"), 1007)),
            },
            Message::Binary(_) if *skip > 0 => {
                *skip -= 1;
                Ok(())
            }
            Message::Binary(_) => Err((End::Lost("bad packet"), 1003)),
            Message::Ping(p) => {
                conn.push_pong(p);
                Ok(())
            }
            Message::Close(code) => Err((End::Lost("transport close"), echo_close(code))),
        };
        match outcome {
            Ok(()) => ControlFlow::Continue(()),
            Err((e, code)) => {
                end = Some(e);
                if e != End::SentAway {
                    *close_code = Some(code);
                }
                ControlFlow::Break(())
            }
        }
    });
    match fed {
        Ok(fed) => *paused = fed == Fed::Paused,
        Err(v) => {
            *close_code = Some(v.code());
            return Some(End::Lost(match v {
                Violation::Protocol => "protocol error",
                Violation::TooBig => "message too big",
            }));
        }
    }
    end
}

/// The close code to answer a client's close with: its own, as RFC 6455 asks, except the codes
/// that must never be sent (1005 "no status", 1006, 1015) and those outside the ranges an
/// endpoint may send: those are answered with 1000.
fn echo_close(code: Option<u16>) -> u16 {
    code.filter(|c| matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999))
        .unwrap_or(1000)
}

/// Handles one Engine.IO packet.
fn on_text(
    here: &Here<'_>,
    session: &mut Option<Arc<Session>>,
    skip: &mut u32,
    text: &str,
) -> Result<(), (End, u16)> {
    let Here {
        hub,
        conn,
        sock,
        ip,
    } = *here;
    let packet = packet::parse(text).map_err(|_| (End::Lost("bad packet"), 1002))?;
    match packet {
        Incoming::Pong => {
            let now = hub.conns.now();
            conn.next_ping
                .store(now + hub.conns.ping_interval_ms, Ordering::Release);
            conn.ping_sent.store(0, Ordering::Release);
        }
        Incoming::Close => return Err((End::Lost("transport close"), 1000)),
        Incoming::Noop => {}
        Incoming::Connect { ns, .. } if ns != "/" => {
            conn.push_control(OutFrame::text(&packet::connect_error(
                ns,
                "Invalid namespace",
            )))
            .ok();
        }
        Incoming::Connect { auth, .. } => {
            if session.is_some() {
                return Ok(());
            }
            let token = auth.and_then(crate::signaling::token_of);
            match crate::signaling::open_session(hub, ip, conn.id, token) {
                Ok(s) => {
                    *session = Some(s);
                    conn.joined.store(true, Ordering::Release);
                    conn.push_control(OutFrame::text(&packet::connected(&conn.id.to_string())))
                        .ok();
                }
                Err(message) => {
                    conn.push_control(OutFrame::text(&packet::connect_error("/", message)))
                        .ok();
                    // The client gives up on this connection (socket.io-client closes it);
                    // the server does not wait for that to free what it holds.
                    return Err((End::Lost("connection refused"), 1000));
                }
            }
        }
        Incoming::Disconnect { ns } => {
            if ns == "/" && session.is_some() {
                return Err((End::Left, 1000));
            }
        }
        Incoming::Event {
            ns,
            ack,
            data,
            attachments,
        } => {
            *skip = attachments;
            let Some(session) = session.as_ref().filter(|_| ns == "/") else {
                return Ok(());
            };
            match crate::signaling::on_event(session, sock, Some(data), attachments > 0) {
                None => {
                    conn.disconnect();
                    return Err((End::SentAway, 1000));
                }
                Some(outcome) => {
                    if let Some(id) = ack {
                        conn.ack(id, &crate::signaling::ack_reply(&outcome)).ok();
                    }
                }
            }
        }
        Incoming::Ack { attachments } => *skip = attachments,
    }
    Ok(())
}
