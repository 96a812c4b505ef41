//! One client session: its output queue, its socket once it has one, and how events are
//! written, coalesced per read turn.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::frame::{self, OutFrame};
use super::out::Out;
use super::{ConnRef, End, Events, Lost, SendError, Settings, Sid, packet};

mod heartbeat;
mod long_polling;
mod recover;

pub(super) use long_polling::Polling;

/// How long a client may take to join the `/` namespace after connecting (Socket.IO's default
/// `connectTimeout`).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// A thread's scratch buffer for encoding is dropped after a message larger than this.
pub(super) const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    /// Where events are encoded before they are written.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Connections a read turn coalesces writes for (the rest are written frame by frame); a batch
/// takes any number.
pub(super) const TURN_CONNS: usize = 64;

/// The connections written to during this thread's current read turn.
pub(super) struct Turn {
    /// Whether a read turn runs on this thread: outside one, frames are written at once.
    pub(super) active: bool,
    /// The connection being read: what is queued for it now answers its own messages, which
    /// the byte budget never refuses (reading it pauses instead).
    pub(super) reader: Option<Sid>,
    /// Kept between turns so that a turn does not allocate its list.
    pub(super) conns: Vec<Arc<Conn>>,
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
pub(super) struct TurnGuard;

impl TurnGuard {
    pub(super) fn begin(reader: Sid) -> TurnGuard {
        TURN.with_borrow_mut(|t| {
            t.active = true;
            t.reader = Some(reader);
        });
        TurnGuard
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        end_turn();
    }
}

/// A stretch of work (one that holds the core's lock, say) during which no frame is written to
/// a socket: frames are queued per connection and written when the batch ends, after the work
/// and its locks. Inside a read turn it adds nothing (the turn writes at its end already). Not
/// `Send`: it stands for this thread's turn, and ends on the thread it began on.
pub(crate) struct Batch {
    outer: bool,
    _thread: std::marker::PhantomData<*const ()>,
}

impl Batch {
    /// Starts a batch on this thread, unless a turn or batch runs already.
    pub(crate) fn begin() -> Batch {
        let outer = TURN.with_borrow_mut(|t| !std::mem::replace(&mut t.active, true));
        Batch {
            outer,
            _thread: std::marker::PhantomData,
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if self.outer {
            end_turn();
        }
    }
}

/// Ends this thread's turn or batch: each connection it wrote to gets its frames written, with
/// one system call each.
fn end_turn() {
    {
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
                Err(_) => c.end(End::Lost(Lost::TransportError)),
            }
        }
        // The list keeps its allocation for the next turn, unless a large batch grew it.
        if written.capacity() <= TURN_CONNS {
            TURN.with_borrow_mut(|t| t.conns = written);
        }
    }
}

/// One client session on this transport, from its Engine.IO handshake to its end, over
/// long-polling, WebSocket, or both one after the other.
pub(crate) struct Conn {
    /// The session id, shared by Engine.IO and Socket.IO.
    pub id: Sid,
    /// The WebSocket, once there is one: from the start for a direct WebSocket, from the
    /// upgrade for a session that began with long-polling. Set under `out`'s lock.
    pub(super) tcp: OnceLock<TcpStream>,
    /// The output queue and the session's life ([`Machine`](super::machine::Machine)): the
    /// session's one lock.
    pub(super) out: Mutex<Out>,
    /// Wakes whoever writes the queue: the WebSocket task, or the pending poll.
    pub(super) wake: Notify,
    /// The client's address, for its per-address place.
    pub(super) ip: Option<IpAddr>,
    /// Whether the session holds one of its address's places from its first request. One that
    /// could not get one is told so when it asks to join, and closed; it never lingers
    /// uncounted.
    pub(super) counted: bool,
    /// The session's long-polling side, for a session that began with it (boxed: a WebSocket
    /// session pays a pointer).
    pub(super) polling: Option<Box<Polling>>,
    /// The transport's settings, one copy for all sessions.
    pub(super) settings: Arc<Settings>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("id", &self.id).finish()
    }
}

/// What the Engine.IO / Socket.IO layer keeps between a client's packets, on any transport.
#[derive(Default)]
pub(super) struct Packets {
    /// Set once the client joined `/`.
    pub(super) session: Option<Arc<dyn Events>>,
    /// Binary attachments still to read past (those of a refused binary event).
    pub(super) skip: u32,
}

impl Conn {
    /// A reference for the rest of the server.
    pub(crate) fn handle(self: &Arc<Self>) -> ConnRef {
        ConnRef {
            id: self.id,
            conn: Arc::downgrade(self),
        }
    }

    /// Queues event `event` with `data` (`42["event",data]`); in a session that can be
    /// recovered, numbered and logged (see [`recovery`](super::recovery)).
    pub(crate) fn emit<T: Serialize + ?Sized>(
        self: &Arc<Self>,
        event: &str,
        data: &T,
    ) -> Result<(), SendError> {
        // One path whether or not the session can be recovered: one without recovery state
        // is encoded and queued as before, under the same lock.
        self.emit_logged(event, data)
    }

    /// Answers the client's acknowledgement request `id` (`43<id>[data]`).
    pub(crate) fn ack<T: Serialize + ?Sized>(
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
    pub(super) fn send_text(
        self: &Arc<Self>,
        write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
    ) -> Result<(), SendError> {
        SCRATCH.with_borrow_mut(|buf| {
            let start = frame::encode_text(buf, write).map_err(|_| SendError::Encode)?;
            let sent = self.push_bytes(buf.get(start..).unwrap_or_default(), false);
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
    pub(super) fn push_bytes(
        self: &Arc<Self>,
        bytes: &[u8],
        control: bool,
    ) -> Result<(), SendError> {
        let (coalesce, own) = self.turn();
        let mut out = self.out.lock();
        if out.life.ended().is_some() {
            return Err(SendError::Closed);
        }
        self.push_locked(&mut out, bytes, control, coalesce, own)
    }

    /// Whether this thread's turn coalesces frames for this connection, and whether the
    /// connection is the one the turn reads.
    pub(super) fn turn(self: &Arc<Self>) -> (bool, bool) {
        TURN.with_borrow_mut(|turn| {
            let own = turn.reader == Some(self.id);
            let coalesce = if !turn.active || self.tcp.get().is_none() {
                false
            } else if turn
                .conns
                .iter()
                .take(TURN_CONNS)
                .any(|c| Arc::ptr_eq(c, self))
                || turn.conns.last().is_some_and(|c| Arc::ptr_eq(c, self))
            {
                true
            } else if turn.conns.len() < TURN_CONNS || turn.reader.is_none() {
                // A batch (no reader) never writes before it ends, however many connections it
                // reaches: past the first few, a connection may be listed twice, and its second
                // flush finds nothing to write.
                turn.conns.push(self.clone());
                true
            } else {
                false
            };
            (coalesce, own)
        })
    }

    /// [`push_bytes`](Self::push_bytes) under the connection's lock, for a live connection.
    pub(super) fn push_locked(
        self: &Arc<Self>,
        out: &mut parking_lot::MutexGuard<'_, Out>,
        bytes: &[u8],
        control: bool,
        coalesce: bool,
        own: bool,
    ) -> Result<(), SendError> {
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
                Ok(n) if n == bytes.len() => {
                    // Numbered as if queued and written: what recovery counts as written.
                    out.popped += 1;
                    return Ok(());
                }
                Ok(n) => rest = bytes.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    out.end(End::Lost(Lost::TransportError));
                    self.wake.notify_one();
                    return Err(SendError::Closed);
                }
            }
        } else if full {
            return Err(SendError::Full);
        }
        out.push(OutFrame::rest(rest));
        self.wake.notify_one();
        Ok(())
    }

    /// Answers a WebSocket ping. An answer still waiting untouched in the queue takes the new
    /// payload instead of a second pong being queued.
    pub(super) fn push_pong(self: &Arc<Self>, payload: &[u8]) {
        {
            let mut out = self.out.lock();
            if out.life.ended().is_some() {
                return;
            }
            if let Some(n) = out.pong {
                let i = (n - out.popped) as usize;
                let frame = OutFrame::pong(payload);
                let new = frame.remaining().len();
                if let Some(slot) = out.frames.get_mut(i) {
                    let old = std::mem::replace(slot, frame).remaining().len();
                    out.bytes = out.bytes - old + new;
                }
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
    pub(super) fn over_budget(&self) -> bool {
        self.out.lock().bytes >= self.settings.buffer_bytes
    }

    /// Sends the client away: `41`, then a close. The disconnect handling runs afterwards, on
    /// the session's own task (never the caller, who may hold the hub lock).
    pub(crate) fn disconnect(&self) {
        self.end_with(
            End::SentAway,
            [OutFrame::text(packet::DISCONNECT), OutFrame::close(1000)],
        );
    }

    /// Closes the transport for a server shutdown: a WebSocket close (1001, going away), or the
    /// close packet for a poll, and no `41`, so that socket.io-client reconnects on its own (to
    /// another node, or to this one once restarted).
    pub(crate) fn close_for_shutdown(&self) {
        self.end_with(End::Lost(Lost::ServerShutdown), [OutFrame::close(1001)]);
    }

    /// Ends the connection for `why` (if it is not ending already).
    pub(super) fn end(&self, why: End) {
        self.end_with(why, []);
    }

    /// Ends the connection for `why` with `goodbye` as its last frames, unless it is ending
    /// already; its task does the rest.
    pub(super) fn end_with<const N: usize>(&self, why: End, goodbye: [OutFrame; N]) {
        let mut out = self.out.lock();
        if !out.end(why) {
            return;
        }
        for f in goodbye {
            out.push(f);
        }
        drop(out);
        self.wake.notify_one();
        self.notify_gone();
    }

    /// Wakes the long-polling side's task, for a session that has one.
    pub(super) fn notify_gone(&self) {
        if let Some(p) = &self.polling {
            p.gone.notify_one();
            p.moved();
        }
    }

    /// Sends a frame of the transport's own (pings, pongs, handshake): never refused by a full
    /// buffer.
    pub(super) fn push_control(self: &Arc<Self>, frame: OutFrame) -> Result<(), SendError> {
        self.push_bytes(frame.remaining(), true)
    }

    /// Writes queued frames to the WebSocket until it would block, several per system call;
    /// `true` when none is left (one lock for both, as a read turn flushes every recipient).
    /// An emptied queue gives its memory back: a connection that was slow once does not keep a
    /// buffer for good.
    pub(super) fn flush(&self) -> std::io::Result<bool> {
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
    pub(super) fn pending(&self) -> (bool, bool) {
        let out = self.out.lock();
        (
            !out.frames.is_empty(),
            out.bytes >= self.settings.buffer_bytes,
        )
    }

    /// Bytes waiting to be sent.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.out.lock().bytes
    }

    pub(super) fn ended(&self) -> Option<End> {
        self.out.lock().life.ended()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    /// The long-polling side's waits end when the side moves and what they wait for holds, and
    /// at their deadline otherwise; a move that comes while `done` is being read is not lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wait_on_the_polling_side_ends_on_its_move_or_its_deadline() {
        let p = Arc::new(Polling::default());
        assert!(p.wait_for(None, || true).await, "already done");
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(!p.wait_for(Some(soon), || false).await, "never done");

        for _ in 0..200 {
            let flag = Arc::new(AtomicBool::new(false));
            let waiter = tokio::spawn({
                let (p, flag) = (p.clone(), flag.clone());
                async move { p.wait_for(None, || flag.load(Ordering::SeqCst)).await }
            });
            tokio::task::yield_now().await;
            flag.store(true, Ordering::SeqCst);
            p.moved();
            let done = tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("woken by the move, whenever it came")
                .unwrap();
            assert!(done);
        }
    }
}
