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

// Input from the network reaches these parsers: an index or a string cut at an unchecked offset
// could panic a connection (`4é` did), so neither is allowed outside tests.
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

mod conn;
mod connect;
mod conns;
mod entry;
pub(crate) mod frame;
mod machine;
mod out;
pub(crate) mod packet;
mod polling;
mod prefixed;
pub(crate) mod recovery;
mod sid;
mod websocket;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub(crate) use conn::{Batch, Conn};
use conn::{Packets, TurnGuard};
pub(crate) use conns::{Conns, Departure, Held, Output, Transports};
pub(crate) use entry::intercept;
use frame::OutFrame;
use packet::Incoming;
pub(crate) use polling::Released;
pub(crate) use prefixed::Prefixed;
pub(crate) use sid::Sid;
pub(crate) use websocket::SocketHand;

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
pub(crate) enum End {
    /// The client left its namespace (`socket.disconnect()`): it is not coming back.
    Left,
    /// The server sent the client away (`41`): its client does not reconnect on its own.
    SentAway,
    /// The transport closed or failed, or the client stopped answering pings: it may come back
    /// within the reconnect grace.
    Lost(Lost),
}

/// Why a connection was lost (see [`End::Lost`]): every way a session can end other than the
/// client leaving or the server sending it away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The client closed the transport (Engine.IO `1`, a WebSocket close, end of stream).
    TransportClose,
    /// Reading or writing the socket failed.
    TransportError,
    /// No pong within `pingTimeout` of a ping.
    PingTimeout,
    /// No `/` namespace joined within the connect timeout.
    ConnectTimeout,
    /// A packet that is not Engine.IO / Socket.IO.
    BadPacket,
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// A WebSocket framing error.
    ProtocolError,
    /// A message over `MAX_MESSAGE_BYTES`.
    MessageTooBig,
    /// A polling body over `MAX_MESSAGE_BYTES`.
    PayloadTooLarge,
    /// A second poll while one waits.
    DuplicatePoll,
    /// A second post while one is handled.
    DuplicatePost,
    /// The layer above refused the namespace connect.
    Refused,
    /// The output queue stayed over its budget longer than `pingTimeout`.
    OverBudget,
    /// Handling the client's input panicked.
    Panic,
    /// The server is shutting down: a transport close, so that the client reconnects.
    ServerShutdown,
}

impl Lost {
    /// Whether a session lost this way is held for its client to recover (as socket.io holds
    /// one after a transport close or error, a ping timeout or a server shutdown): not after a
    /// protocol violation, a client that stopped reading, or a refusal.
    pub(crate) fn recoverable(self) -> bool {
        matches!(
            self,
            Lost::TransportClose | Lost::TransportError | Lost::PingTimeout | Lost::ServerShutdown
        )
    }
}

/// Waits until `done` holds, looking again each time `notify` is told (`notify_waiters`), or
/// until `until` (`None`: no deadline) passes; whether `done` held. Nothing is looked at on a
/// timer: the wait is registered before `done` is read, so a wake-up in between is not missed.
/// Every event-driven wait of the transport is this loop (the long-polling side's moves, a
/// probe's pong, the sessions running out at shutdown), and the node's wait for a connection
/// to let go of a user's id.
pub(crate) async fn wait_until(
    notify: &tokio::sync::Notify,
    until: Option<tokio::time::Instant>,
    mut done: impl FnMut() -> bool,
) -> bool {
    loop {
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if done() {
            return true;
        }
        match until {
            Some(until) => {
                if tokio::time::timeout_at(until, woken).await.is_err() {
                    return done();
                }
            }
            None => woken.await,
        }
    }
}

/// The transport's settings: its slice of the server's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
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
    /// How long a session whose connection was lost is held for its client to recover it
    /// (Socket.IO connection state recovery); zero: sessions get no pid and are not held.
    pub recovery_grace: Duration,
    /// Bytes of events one session keeps for its client to get again if it comes back.
    pub recovery_bytes: usize,
}

/// What the transport hands clients to: the layer above (signaling).
pub(crate) trait Upper: Send + Sync + 'static {
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
pub(crate) trait Events: Send + Sync {
    /// One event: `data` is the JSON array `["name", ...args]`; `binary` when it came with
    /// binary attachments (which are read past, not kept); `ack` the id the client waits for an
    /// answer on (to be sent with [`ConnRef::ack`]).
    fn event(&self, conn: &ConnRef, data: &str, binary: bool, ack: Option<i64>) -> Handled;
    /// The client is gone (see [`Gone`]).
    fn closed(&self, conn: &ConnRef, gone: Gone);
    /// The client came back to this session on the new connection `new` (connection state
    /// recovery): what receives its events from now on, or `None` when the session cannot be
    /// taken back (the client then gets a fresh one).
    /// It calls `install` once, under whatever lock orders the session's events, when it takes
    /// the session: the missed events and the `40` reply are queued on `new` then, ahead of
    /// anything sent to it afterwards.
    fn recover(
        &self,
        old: &ConnRef,
        new: &ConnRef,
        ip: Option<IpAddr>,
        install: &mut dyn FnMut(),
    ) -> Option<Arc<dyn Events>> {
        let _ = (old, new, ip, install);
        None
    }
    /// The client's pid names a session another node of the cluster made, which this node does
    /// not hold: the layer above asks the cluster for it and answers later, through [`Conns::adopt_peer`] (the
    /// session and what it missed) or [`ConnRef::welcome`] (a fresh session). False when it
    /// cannot ask: the client gets a fresh session now.
    fn recover_elsewhere(&self, conn: &ConnRef, asking: recovery::Asking<'_>) -> bool {
        let _ = (conn, asking);
        false
    }
    /// This held session moves to node `to`, where its client came back: the layer above
    /// gives its part of the session up and sends it there with what `take` returns (the
    /// transport's part: its numbering and the events the client missed), calling `take` under
    /// whatever lock orders the session's events. False, changing nothing, when it cannot.
    fn depart(
        &self,
        old: &ConnRef,
        to: &str,
        take: &mut dyn FnMut() -> Option<recovery::Exported>,
    ) -> bool {
        let _ = (old, to, take);
        false
    }
    /// Whether this session is worth holding if its connection is lost: what a blip would
    /// break (a call, a search). Held sessions cost memory for the grace; one that holds
    /// nothing of value is let go, and its client starts afresh.
    fn worth_holding(&self) -> bool {
        true
    }
    /// The session held since its connection was lost can no longer be recovered: its buffer
    /// outgrew its budget, or its grace ran out.
    fn abandoned(&self, conn: &ConnRef) {
        let _ = conn;
    }
}

/// How a client's connection ended, as the layer above is told.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Gone {
    /// It left or was sent away: it is not coming back.
    Left,
    /// Its transport failed: it may come back within the reconnect grace, with a new session.
    Lost,
    /// Its transport failed and the session is held, reachable through this reference: events
    /// sent to it are kept, and its client may take it back (connection state recovery) within
    /// the grace.
    Held(ConnRef),
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
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

    /// The client's address (after `TRUST_PROXY`), when known and the connection still exists.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        self.conn.upgrade()?.ip
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

    /// The session held on this connection since it was lost is taken back by its user on
    /// `to` some other way (a resume token, a JWT): the events kept for it are queued on `to`,
    /// in order, and the held session is given up. Returns how many.
    pub fn hand_over(&self, to: &ConnRef) -> usize {
        match (self.conn.upgrade(), to.conn.upgrade()) {
            (Some(old), Some(new)) => old.hand_over(&new),
            _ => 0,
        }
    }

    /// Answers the namespace connect that waited for another node's word (see
    /// [`Events::recover_elsewhere`]) with a fresh session: this connection's own sid and pid.
    pub fn welcome(&self) {
        let Some(c) = self.conn.upgrade() else {
            return;
        };
        let events = c.out.lock().events.clone();
        if let Some(events) = events {
            c.welcome(&events, true);
        }
    }

    /// The events kept for the session held on this connection since it was lost, as the
    /// Engine.IO packets their frames carry, for another node whose client took the session
    /// back some other way (a resume token, a JWT); the held session is given up. Empty when
    /// none is held.
    pub fn take_kept(&self) -> Vec<String> {
        self.conn
            .upgrade()
            .map(|c| c.take_kept())
            .unwrap_or_default()
    }

    /// Queues `packets` (from [`take_kept`](Self::take_kept) on another node) as they are.
    pub fn push_packets(&self, packets: &[String]) {
        if let Some(c) = self.conn.upgrade() {
            for p in packets {
                c.push_control(OutFrame::text(p)).ok();
            }
        }
    }

    /// Sends the client away (see [`Conn::disconnect`]).
    pub fn disconnect(&self) {
        if let Some(c) = self.conn.upgrade() {
            c.disconnect();
        }
    }
}

/// The transport as the HTTP layer serves it: the sessions and the layer above.
#[derive(Clone)]
pub(crate) struct Transport {
    /// Every session.
    pub conns: Arc<Conns>,
    /// Where clients and their events go.
    pub upper: Arc<dyn Upper>,
}

/// What handling one packet asks of the connection: go on, or end it with this close code.
pub(super) type Flow = Result<(), (End, u16)>;
pub(crate) use connect::refused;

/// Handles one Engine.IO packet of a client, on either transport.
fn on_packet(t: &Transport, conn: &Arc<Conn>, st: &mut Packets, text: &str) -> Flow {
    let bad = (End::Lost(Lost::BadPacket), 1002);
    let packet = packet::parse(text).map_err(|_| bad)?;
    match packet {
        Incoming::Pong => conn.ponged(t.conns.now()),
        Incoming::Close => return Err((End::Lost(Lost::TransportClose), 1000)),
        Incoming::Noop => {}
        Incoming::Connect { ns, .. } if ns != "/" => {
            conn.push_control(OutFrame::text(&packet::connect_error(
                ns,
                "Invalid namespace",
            )))
            .ok();
        }
        Incoming::Connect { auth, .. } => connect::namespace(t, conn, st, auth)?,
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

/// Runs one synchronous piece of a connection's work (handling what a client sent) so that a
/// panic in it, wherever it comes from (a parser, a handler of the layer above), ends that one
/// connection the way any other end does, through [`finish`], instead of unwinding through the
/// connection's task and skipping its cleanup. Counted in `roulette_connection_panics_total`.
fn contained<R>(conn: &Conn, work: impl FnOnce() -> R) -> Result<R, End> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|_| {
        tracing::error!(sid = %conn.id, "a panic while handling a client's input: its connection is closed");
        metrics::counter!("roulette_connection_panics_total").increment(1);
        End::Lost(Lost::Panic)
    })
}

/// The end of a session: its place is given back and the layer above told.
fn finish(t: &Transport, conn: &Arc<Conn>, session: Option<Arc<dyn Events>>, end: End) {
    if let Some(ip) = conn.ip {
        t.upper.release(ip, conn.id);
    }
    tracing::debug!(sid = %conn.id, ?end, "session closed");
    let worth = session.as_ref().is_some_and(|s| s.worth_holding());
    let held = t.conns.settle(conn, end, worth);
    if let Some(s) = session {
        let gone = match (held, end) {
            (Some(held), _) => Gone::Held(held),
            (None, End::Lost(_)) => Gone::Lost,
            (None, End::Left | End::SentAway) => Gone::Left,
        };
        s.closed(&conn.handle(), gone);
    }
}

/// An Engine.IO refusal: 400 with the error body Node's engine.io sends.
fn refuse(code: u8, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        http::StatusCode::BAD_REQUEST,
        [(http::header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"code": code, "message": message}).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
