//! Roulette's own Engine.IO v4 / Socket.IO v5 transport: WebSocket, HTTP long-polling, and the
//! upgrade from one to the other. It knows nothing of signaling: it hands each client's
//! namespace connection and events up through [`Upper`] and [`Events`], and takes events down
//! through [`ConnRef`].
//!
//! Why our own: through socketioxide an idle WebSocket costs about 24 KB and a long-polling or
//! upgraded one about 36 KB, and its queues count packets, not bytes, so nothing bounds what a
//! client that does not read makes the server hold. Here a session is a [`Conn`] that owns no
//! buffer while idle:
//! - over WebSocket, one small task per connection reads into a buffer of the reading thread, and
//!   keeps bytes only while a frame is incomplete; an event is written to the socket at once by
//!   whoever emits it, under the connection's lock, and only what the kernel does not take is
//!   queued;
//! - over long-polling, events wait in the same queue until the client's pending `GET` takes
//!   them; a `POST` is handled inline, packet by packet;
//! - the queue is made of WebSocket frames whatever the transport, so an upgrade only starts
//!   writing the queue to the new socket: nothing is lost or reordered across the switch;
//! - everything queued counts against one byte budget, and a connection whose queue holds it is
//!   not read from until its client reads;
//! - one heartbeat task pings every session in turn.
//!
//! Events are handled inline, in arrival order, on the reading path: one user's events reach its
//! partner in the order sent.

pub mod frame;
pub mod packet;
mod polling;
mod sid;
mod websocket;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use frame::OutFrame;
use packet::Incoming;
pub use polling::Released;
pub use sid::Sid;
pub use websocket::intercept;

/// How long a client may take to join the `/` namespace after connecting (Socket.IO's default
/// `connectTimeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// A thread's scratch buffer for encoding is dropped after a message larger than this.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    /// Where events are encoded before they are written.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

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

/// A read turn on this thread: while it lives, frames for WebSocket connections are gathered per
/// connection; when it ends, even by a panic in a handler, each connection's frames are written
/// with one system call and the thread writes at once again.
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

/// The transport's settings: its slice of the server's.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Engine.IO `pingInterval`.
    pub ping_interval: Duration,
    /// Engine.IO `pingTimeout`.
    pub ping_timeout: Duration,
    /// The largest message a client may send (a WebSocket message, a polling body); the
    /// handshake's `maxPayload`.
    pub max_message_bytes: usize,
    /// Frames one connection may have queued.
    pub buffer_packets: usize,
    /// Bytes one connection may have queued.
    pub buffer_bytes: usize,
}

/// What the transport hands clients to: the layer above (signaling).
pub trait Upper: Send + Sync + 'static {
    /// The client's address for the per-address limits, from the request and its TCP peer.
    fn client_ip(&self, headers: &http::HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr>;
    /// Takes one of `ip`'s connection places for session `id`; false when it has none left.
    /// Asking again for a session that holds one keeps it.
    fn admit(&self, ip: IpAddr, id: Sid) -> bool;
    /// Gives session `id`'s place back (a no-op for one that holds none).
    fn release(&self, ip: IpAddr, id: Sid);
    /// The client joined the `/` namespace, with the handshake's `auth` object as JSON text:
    /// what receives its events, or the message to refuse it with (`connect_error`).
    fn join(
        self: Arc<Self>,
        conn: &ConnRef,
        ip: Option<IpAddr>,
        auth: Option<&str>,
    ) -> Result<Arc<dyn Events>, &'static str>;
}

/// What the layer above does with one client's events.
pub trait Events: Send + Sync {
    /// One event: `data` is the JSON array `["name", ...args]`; `binary` when it came with
    /// binary attachments (which are read past, not kept); `ack` the id the client waits for an
    /// answer on (to be sent with [`ConnRef::ack`]).
    fn event(&self, conn: &ConnRef, data: &str, binary: bool, ack: Option<i64>) -> Handled;
    /// The client is gone: `lost` when its transport failed (it may come back), not when it
    /// left or was sent away.
    fn closed(&self, conn: &ConnRef, lost: bool);
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Handled, or refused with an `error` event.
    Done,
    /// The client keeps flooding: send it away (`41`).
    Flooding,
    /// Not a Socket.IO event packet at all (`42{}`, a reserved name): the protocol says to close
    /// the connection.
    Malformed,
}

/// How the rest of the server reaches a connection. Weak, so that the socket is closed as soon
/// as the connection ends, even while the core still holds the link of a user who is away for
/// the reconnect grace (a strong reference there kept one open file per dropped phone for the
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
    /// The session id.
    pub fn id(&self) -> Sid {
        self.id
    }

    /// Queues event `event` with `data`; `Closed` once the connection is gone.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), SendError> {
        self.conn
            .upgrade()
            .ok_or(SendError::Closed)?
            .emit(event, data)
    }

    /// Answers the client's acknowledgement request `id`.
    pub fn ack<T: Serialize + ?Sized>(&self, id: i64, data: &T) -> Result<(), SendError> {
        self.conn.upgrade().ok_or(SendError::Closed)?.ack(id, data)
    }

    /// Whether the connection still exists.
    pub fn is_open(&self) -> bool {
        self.conn.upgrade().is_some_and(|c| c.ended().is_none())
    }

    /// Whether the client still answers an Engine.IO ping within `within` (false once the
    /// session is gone): how a newcomer claiming the same user id learns whether the session it
    /// claims is alive.
    pub async fn probe(&self, within: Duration) -> bool {
        match self.conn.upgrade() {
            Some(c) => c.probe(within).await,
            None => false,
        }
    }

    /// Sends the client away (see [`Conn::disconnect`]).
    pub fn disconnect(&self) {
        if let Some(c) = self.conn.upgrade() {
            c.disconnect();
        }
    }
}

/// Frames waiting for the client to take them, and whether the connection is ending.
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

    /// Takes every queued frame, as a long-polling response body: the frames' Engine.IO packets
    /// separated by `\x1e` (a WebSocket close becomes the `1` close packet; pongs, which only a
    /// WebSocket has, are left out).
    fn take_polled(&mut self) -> Option<Vec<u8>> {
        if self.frames.is_empty() {
            return None;
        }
        let mut body = Vec::with_capacity(self.bytes);
        self.popped += self.frames.len() as u64;
        for f in self.frames.drain(..) {
            let Some(packet) = frame::polled(f.remaining()) else {
                continue;
            };
            if !body.is_empty() {
                body.push(0x1e);
            }
            body.extend_from_slice(packet);
        }
        self.bytes = 0;
        self.pong = None;
        self.frames = VecDeque::new();
        Some(body)
    }
}

/// One client session on this transport, from its Engine.IO handshake to its end, over
/// long-polling, WebSocket, or both one after the other.
pub struct Conn {
    /// The session id, shared by Engine.IO and Socket.IO.
    pub id: Sid,
    /// The WebSocket, once there is one: from the start for a direct WebSocket, from the
    /// upgrade for a session that began with long-polling. Set under `out`'s lock.
    tcp: OnceLock<TcpStream>,
    out: Mutex<Out>,
    /// Wakes whoever writes the queue: the WebSocket task, or the pending poll.
    wake: Notify,
    /// Wakes a long-polling session's own task when the session ends (or is upgraded).
    gone: Notify,
    /// When the unanswered ping was due (ms on the registry's clock), 0 when none is out.
    ping_sent: AtomicU64,
    /// When the next ping is due.
    next_ping: AtomicU64,
    /// Pongs received: a [`probe`](ConnRef::probe) watches it change.
    pongs: AtomicU64,
    /// When the session opened.
    opened: u64,
    /// Whether the client joined the `/` namespace.
    joined: AtomicBool,
    /// The client's address, for its per-address place.
    ip: Option<IpAddr>,
    /// Whether the session holds one of its address's places from its first request. One that
    /// could not get one is told so when it asks to join, and closed; it never lingers
    /// uncounted.
    counted: bool,
    /// Since when (registry clock) the heartbeat has seen the queue over its budget; 0 when it
    /// is not.
    over_since: AtomicU64,
    /// The session's long-polling side, for a session that began with it.
    polling: Option<polling::Polling>,
    settings: Settings,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("id", &self.id).finish()
    }
}

/// What the Engine.IO / Socket.IO layer keeps between a client's packets, on any transport.
#[derive(Default)]
struct Packets {
    /// Set once the client joined `/`.
    session: Option<Arc<dyn Events>>,
    /// Binary attachments still to read past (those of a refused binary event).
    skip: u32,
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

    /// Sends `bytes` (one whole frame). Over WebSocket it is written now if nothing waits
    /// before it, and what the kernel does not take is queued; during a read turn (see
    /// [`websocket`]) frames are only queued, and the turn writes each connection's frames
    /// together at its end, in one system call (a client's read usually holds several messages,
    /// and a `send` is about a third of a relay's CPU). Over long-polling it is queued for the
    /// next poll.
    fn push_bytes(self: &Arc<Self>, bytes: &[u8], control: bool) -> Result<(), SendError> {
        let (coalesce, own) = TURN.with_borrow_mut(|turn| {
            let own = turn.reader == Some(self.id);
            let coalesce = if !turn.active || self.tcp.get().is_none() {
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
        let over = !own && out.bytes >= self.settings.buffer_bytes;
        let full = !control && (out.frames.len() >= self.settings.buffer_packets || over);
        // Checked under the lock: the upgrade sets the socket under it.
        let Some(tcp) = self.tcp.get() else {
            if full {
                return Err(SendError::Full);
            }
            out.push(OutFrame::rest(bytes));
            drop(out);
            self.wake.notify_one();
            return Ok(());
        };
        if coalesce {
            if full {
                return Err(SendError::Full);
            }
            out.push(OutFrame::rest(bytes));
            return Ok(());
        }
        let mut rest = bytes;
        if out.frames.is_empty() {
            match tcp.try_write(bytes) {
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
        self.out.lock().bytes >= self.settings.buffer_bytes
    }

    /// Sends the client away: `41`, then a close. The disconnect handling runs afterwards, on
    /// the session's own task (never the caller, who may hold the hub lock).
    pub fn disconnect(&self) {
        self.end_with(
            End::SentAway,
            [OutFrame::text(packet::DISCONNECT), OutFrame::close(1000)],
        );
    }

    /// Closes the transport for a server shutdown: a WebSocket close (1001, going away), or the
    /// close packet for a poll, and no `41`, so that socket.io-client reconnects on its own (to
    /// another node, or to this one once restarted).
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
        self.gone.notify_one();
    }

    /// Sends a frame of the transport's own (pings, pongs, handshake): never refused by a full
    /// buffer.
    fn push_control(self: &Arc<Self>, frame: OutFrame) -> Result<(), SendError> {
        self.push_bytes(frame.remaining(), true)
    }

    /// Writes queued frames to the WebSocket until it would block, several per system call;
    /// `true` when none is left (one lock for both, as a read turn flushes every recipient).
    /// An emptied queue gives its memory back: a connection that was slow once does not keep a
    /// buffer for good.
    fn flush(&self) -> std::io::Result<bool> {
        const WRITEV_FRAMES: usize = 32;
        let Some(tcp) = self.tcp.get() else {
            return Ok(true);
        };
        let mut out = self.out.lock();
        while !out.frames.is_empty() {
            let slices: smallvec::SmallVec<[std::io::IoSlice<'_>; WRITEV_FRAMES]> = out
                .frames
                .iter()
                .take(WRITEV_FRAMES)
                .map(|f| std::io::IoSlice::new(f.remaining()))
                .collect();
            let n = match tcp.try_write_vectored(&slices) {
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
        (
            !out.frames.is_empty(),
            out.bytes >= self.settings.buffer_bytes,
        )
    }

    /// Bytes waiting to be sent.
    pub fn queued_bytes(&self) -> usize {
        self.out.lock().bytes
    }

    fn ended(&self) -> Option<End> {
        self.out.lock().end
    }

    /// Whether the client has missed the deadline of its ping, judged from when the ping was
    /// due (not when the heartbeat's tick sent it), so that a session that stopped answering
    /// is gone `pingInterval + pingTimeout` after its last pong, as in Node's engine.io.
    fn overdue(&self, now: u64, timeout: u64) -> bool {
        let sent = self.ping_sent.load(Ordering::Acquire);
        let due = if sent != 0 {
            sent
        } else {
            self.next_ping.load(Ordering::Acquire)
        };
        now > due && now - due > timeout
    }

    /// A pong arrived: the next ping is due a ping interval from now.
    fn ponged(&self, now: u64) {
        let interval = self.settings.ping_interval.as_millis() as u64;
        self.next_ping.store(now + interval, Ordering::Release);
        self.ping_sent.store(0, Ordering::Release);
        self.pongs.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether the client still answers: a ping now (unless one is out already) and its pong
    /// within `within`.
    async fn probe(self: &Arc<Self>, within: Duration) -> bool {
        let before = self.pongs.load(Ordering::Acquire);
        // Marked as due at the next scheduled ping, so that the heartbeat neither sends another
        // nor judges this one early.
        let due = self.next_ping.load(Ordering::Acquire);
        if self
            .ping_sent
            .compare_exchange(0, due, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.push_control(OutFrame::text(packet::PING)).ok();
        }
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.pongs.load(Ordering::Acquire) != before {
                return true;
            }
            if self.ended().is_some() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.pongs.load(Ordering::Acquire) != before
    }

    /// The heartbeat's visit: a ping when one is due, the end of a client that did not answer
    /// the last one in time, stayed over its output budget, or never joined a namespace.
    fn beat(self: &Arc<Self>, now: u64) {
        let timeout = self.settings.ping_timeout.as_millis() as u64;
        if self.over_budget() {
            let since = self.over_since.load(Ordering::Acquire);
            if since == 0 {
                self.over_since.store(now, Ordering::Release);
            } else if now.saturating_sub(since) > timeout {
                tracing::info!(sid = %self.id, "closing a connection whose output stayed over its budget");
                // The facade, not the server's metrics module: that one reads the whole node,
                // which sits above the transport.
                metrics::counter!("roulette_connections_closed_backpressure_total").increment(1);
                self.end(End::Lost("output over budget"));
                return;
            }
        } else {
            self.over_since.store(0, Ordering::Release);
        }
        if self.overdue(now, timeout) {
            self.end(End::Lost("ping timeout"));
            return;
        }
        // One that holds no place of its address gets the ping timeout, not the Socket.IO
        // connect timeout, to ask for the `/` namespace and be refused.
        let connect_timeout = if self.counted {
            CONNECT_TIMEOUT.as_millis() as u64
        } else {
            timeout
        };
        if !self.joined.load(Ordering::Acquire) && now.saturating_sub(self.opened) > connect_timeout
        {
            self.end(End::Lost("connect timeout"));
            return;
        }
        let due = self.next_ping.load(Ordering::Acquire);
        if self.ping_sent.load(Ordering::Acquire) == 0 && now >= due {
            self.ping_sent.store(due, Ordering::Release);
            self.push_control(OutFrame::text(packet::PING)).ok();
        }
    }
}

/// Every session on this transport, and the heartbeat.
pub struct Conns {
    map: Mutex<HashMap<Sid, Arc<Conn>>>,
    epoch: Instant,
    settings: Settings,
}

impl Conns {
    /// An empty registry.
    pub fn new(settings: Settings) -> Conns {
        Conns {
            map: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            settings,
        }
    }

    /// Milliseconds on the registry's clock; never 0.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A new session, registered.
    fn open(
        &self,
        id: Sid,
        ip: Option<IpAddr>,
        counted: bool,
        tcp: Option<TcpStream>,
    ) -> Arc<Conn> {
        let now = self.now();
        let polling = tcp.is_none().then(polling::Polling::default);
        let conn = Arc::new(Conn {
            id,
            tcp: tcp.map(OnceLock::from).unwrap_or_default(),
            out: Mutex::new(Out::default()),
            wake: Notify::new(),
            gone: Notify::new(),
            ping_sent: AtomicU64::new(0),
            next_ping: AtomicU64::new(now + self.settings.ping_interval.as_millis() as u64),
            pongs: AtomicU64::new(0),
            opened: now,
            joined: AtomicBool::new(false),
            ip,
            counted,
            over_since: AtomicU64::new(0),
            polling,
            settings: self.settings,
        });
        self.map.lock().insert(id, conn.clone());
        conn
    }

    /// The session `id`, if it is open.
    fn get(&self, id: Sid) -> Option<Arc<Conn>> {
        self.map.lock().get(&id).cloned()
    }

    /// Forgets session `conn` (not another that took its id, which cannot happen with random
    /// ids, but the check costs nothing).
    fn remove(&self, conn: &Arc<Conn>) {
        let mut map = self.map.lock();
        if map.get(&conn.id).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            map.remove(&conn.id);
        }
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of the open sessions.
    pub fn ids(&self) -> HashSet<Sid> {
        self.map.lock().keys().copied().collect()
    }

    /// Every open session.
    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.map.lock().values().cloned().collect()
    }

    /// How many sessions are on each transport now.
    pub fn transports(&self) -> Transports {
        let map = self.map.lock();
        let mut t = Transports::default();
        for c in map.values() {
            if c.tcp.get().is_some() {
                t.websocket += 1;
            } else {
                t.polling += 1;
            }
        }
        t
    }

    /// What the sessions' output queues hold now: bytes in all, and how many sessions are over
    /// their budget (not read from until their client reads).
    pub fn output(&self) -> Output {
        let map = self.map.lock();
        let mut o = Output::default();
        for c in map.values() {
            let bytes = c.queued_bytes();
            o.queued_bytes += bytes;
            o.paused += usize::from(bytes >= c.settings.buffer_bytes);
        }
        o
    }

    /// Pings the sessions whose ping is due and ends those that stopped answering, forever.
    pub async fn heartbeat(self: Arc<Self>) {
        let s = self.settings;
        let every = (s.ping_interval.min(s.ping_timeout) / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = self.now();
            for c in self.map.lock().values() {
                c.beat(now);
            }
        }
    }
}

/// How many sessions each transport serves (see [`Conns::transports`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transports {
    /// Sessions on a WebSocket (direct, or upgraded from long-polling).
    pub websocket: usize,
    /// Sessions on long-polling.
    pub polling: usize,
}

/// The output queues' figures (see [`Conns::output`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// Bytes queued for clients, all sessions together.
    pub queued_bytes: usize,
    /// Sessions whose queue is over its budget.
    pub paused: usize,
}

/// The transport as the HTTP layer serves it: the sessions and the layer above.
#[derive(Clone)]
pub struct Transport {
    /// Every session.
    pub conns: Arc<Conns>,
    /// Where clients and their events go.
    pub upper: Arc<dyn Upper>,
}

/// What handling one packet asks of the connection: go on, or end it with this close code.
type Flow = Result<(), (End, u16)>;

/// Handles one Engine.IO packet of a client, on either transport.
fn on_packet(t: &Transport, conn: &Arc<Conn>, st: &mut Packets, text: &str) -> Flow {
    let bad = (End::Lost("bad packet"), 1002);
    let packet = packet::parse(text).map_err(|_| bad)?;
    match packet {
        Incoming::Pong => conn.ponged(t.conns.now()),
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
            if st.session.is_some() {
                return Ok(());
            }
            match t.upper.clone().join(&conn.handle(), conn.ip, auth) {
                Ok(s) => {
                    st.session = Some(s);
                    conn.joined.store(true, Ordering::Release);
                    conn.push_control(OutFrame::text(&packet::connected(conn.id.as_str())))
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
            if ns == "/" && st.session.is_some() {
                return Err((End::Left, 1000));
            }
        }
        Incoming::Event {
            ns,
            ack,
            data,
            attachments,
        } => {
            st.skip = attachments;
            let Some(session) = st.session.as_ref().filter(|_| ns == "/") else {
                return Ok(());
            };
            match session.event(&conn.handle(), data, attachments > 0, ack) {
                Handled::Done => {}
                Handled::Flooding => {
                    conn.disconnect();
                    return Err((End::SentAway, 1000));
                }
                Handled::Malformed => return Err(bad),
            }
        }
        Incoming::Ack { attachments } => st.skip = attachments,
    }
    Ok(())
}

/// The end of a session: its place is given back and the layer above told.
fn finish(t: &Transport, conn: &Arc<Conn>, session: Option<Arc<dyn Events>>, end: End) {
    if let Some(ip) = conn.ip {
        t.upper.release(ip, conn.id);
    }
    tracing::debug!(sid = %conn.id, ?end, "session closed");
    if let Some(s) = session {
        s.closed(&conn.handle(), matches!(end, End::Lost(_)));
    }
}
