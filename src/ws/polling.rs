//! HTTP long-polling (Engine.IO v4): the handshake `GET`, polls that wait for something to
//! send, and posts of one or more packets separated by `\x1e`.
//!
//! A polling session has no task of its own while it lives, only a small one that waits for its
//! end: a poll waits on the session's queue, a post is handled inline in its request, packet by
//! packet, as a WebSocket message would be.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::machine::Refusal;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};
use tokio::net::TcpStream;

use super::conn::Polling;
use super::refuse;
use super::{
    Conn, End, Flow, Lost, Packets, Sid, Transport, TurnGuard, contained, finish, on_packet, packet,
};

/// How long the goodbye of a session that ended (`41`, the close packet) waits for the client's
/// next poll before the session is forgotten.
const GOODBYE: Duration = Duration::from_secs(2);

/// Ends a session's post when dropped (a request that ends, however it ends).
struct PostDone<'a>(&'a Conn);

impl Drop for PostDone<'_> {
    fn drop(&mut self) {
        self.0.out.lock().life.end_post();
        if let Some(p) = &self.0.polling {
            p.moved();
        }
    }
}

/// Serves a long-polling request.
pub(super) async fn serve(t: Transport, req: Request, sid: Option<&str>) -> Response {
    let method = req.method().clone();
    let Some(sid) = sid else {
        return if method == Method::GET {
            handshake(&t, &req)
        } else {
            refuse(2, "Bad handshake method")
        };
    };
    let Some(conn) = sid.parse::<Sid>().ok().and_then(|id| t.conns.get(id)) else {
        return refuse(1, "Session ID unknown");
    };
    let (Some(p), None) = (conn.polling.as_ref(), conn.tcp.get()) else {
        // A direct WebSocket's id, or a session that moved to its WebSocket.
        return refuse(3, "Bad request");
    };
    if conn.overdue(t.conns.now()) {
        conn.end(End::Lost(Lost::PingTimeout));
    }
    // An ended session is gone, except for the goodbye of one the server sent away or shut
    // down: its client's next poll still gets it (`41`, the close packet).
    match conn.ended() {
        None => {}
        Some(End::SentAway | End::Lost(Lost::ServerShutdown))
            if method == Method::GET && conn.queued_bytes() > 0 => {}
        Some(_) => return refuse(1, "Session ID unknown"),
    }
    match method {
        Method::GET => poll(&conn),
        Method::POST => post(&t, &conn, p, req.into_body()).await,
        _ => refuse(2, "Bad handshake method"),
    }
}

/// Opens a session: `0{sid, upgrades: ["websocket"], ...}`.
fn handshake(t: &Transport, req: &Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let ip = t.upper.client_ip(req.headers(), peer);
    let id = Sid::new();
    // A session that never joins `/`, or never polls, holds a place of its address too.
    let counted = ip.is_none_or(|ip| t.upper.admit(ip, id));
    let conn = t.conns.open(id, ip, counted, None);
    tokio::spawn(watch(t.clone(), conn.clone()));
    let s = *t.conns.settings;
    text(packet::open(
        id.as_str(),
        s.ping_interval.as_millis() as u64,
        s.ping_timeout.as_millis() as u64,
        s.max_message_bytes,
        true,
    ))
}

/// A 200 with a text body.
fn text(body: impl Into<Body>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        body.into(),
    )
        .into_response()
}

/// Waits for the session's end (or its upgrade) and ends it.
async fn watch(t: Transport, conn: Arc<Conn>) {
    let Some(polling) = conn.polling.as_deref() else {
        return;
    };
    loop {
        polling.gone.notified().await;
        if conn.tcp.get().is_some() {
            // Upgraded: the WebSocket's task owns the session now.
            return;
        }
        let Some(end) = conn.ended() else { continue };
        let session = conn
            .polling
            .as_ref()
            .and_then(|p| p.packets.lock().session.take());
        finish(&t, &conn, session, end);
        // The goodbye (`41`, the close packet) waits a moment for the client's next poll.
        let until = tokio::time::Instant::now() + GOODBYE;
        polling
            .wait_for(Some(until), || conn.queued_bytes() == 0)
            .await;
        t.conns.remove(&conn);
        return;
    }
}

/// A poll: answered as soon as something waits (at the latest with the next ping), with every
/// packet queued.
///
/// The answer's head is ready at once; its body is what the wait produces ([`PollBody`]). So the
/// request's layers (CORS, the checks, the router's own state) end as soon as the head is
/// written, and what stays for the whole wait is that body: a few hundred bytes, against about
/// 6 KB when the layers waited too (BENCHMARKS.md, 2026-12-01).
fn poll(conn: &Arc<Conn>) -> Response {
    let began = conn.out.lock().life.begin_poll();
    if let Some(refused) = refusal(conn, began) {
        return refused;
    }
    let released = Released::default();
    // Made here, not when the wait first runs: an answer dropped before it was ever polled (its
    // client half-closed right after the request) still clears the flag, or the client's next
    // poll would count as a second one and end its session.
    let pending = PollPending(conn.clone());
    let wait = wait(conn.clone(), released.clone(), pending);
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        Body::new(PollBody(Some(Box::pin(wait)))),
    )
        .into_response();
    r.extensions_mut().insert(released);
    r
}

/// Set once a poll was released because its session moved to a WebSocket: this HTTP connection
/// has served its purpose, and the HTTP layer closes it after the answer (an idle kept-alive
/// one would cost about as much as the session itself until it timed out).
#[derive(Clone, Default)]
pub(crate) struct Released(pub Arc<AtomicBool>);

/// Clears a session's pending-poll flag when the poll ends, however it ends.
struct PollPending(Arc<Conn>);

impl Drop for PollPending {
    fn drop(&mut self) {
        self.0.out.lock().life.end_poll();
    }
}

/// What a poll waits for: the packets to send (or the noop, or the close packet). `_pending`
/// clears the session's pending-poll flag when this ends or is dropped.
async fn wait(conn: Arc<Conn>, released: Released, _pending: PollPending) -> bytes::Bytes {
    loop {
        {
            let mut out = conn.out.lock();
            // The probe came, or the session upgraded meanwhile (its queue belongs to the
            // WebSocket now, and so do wake-ups).
            if out.life.take_noop() {
                released.0.store(true, Ordering::Release);
                return bytes::Bytes::from_static(b"6");
            }
            if let Some(body) = out.take_polled() {
                drop(out);
                // A post held back by the full queue may go on.
                if let Some(p) = &conn.polling {
                    p.moved();
                }
                return body.into();
            }
            match out.life.ended() {
                // The client closed: its poll is released with a noop.
                Some(End::Lost(Lost::TransportClose)) => return bytes::Bytes::from_static(b"6"),
                Some(_) => return bytes::Bytes::from_static(b"1"),
                None => {}
            }
        }
        conn.wake.notified().await;
    }
}

/// A poll's body: one frame, once its wait ends. Dropped with the request (the client went
/// away), it ends the wait and clears the session's one pending poll.
struct PollBody(Option<std::pin::Pin<Box<dyn Future<Output = bytes::Bytes> + Send>>>);

impl http_body::Body for PollBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let Some(wait) = self.0.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        match wait.as_mut().poll(cx) {
            std::task::Poll::Ready(bytes) => {
                self.0 = None;
                std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes))))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// The answer to a poll or post the session's machine refused: a second one at once ends the
/// session, as the protocol says.
fn refusal(conn: &Conn, began: Result<(), Refusal>) -> Option<Response> {
    match began.err()? {
        Refusal::Duplicate(end) => conn.end(end),
        Refusal::NotPolling => {}
    }
    Some(refuse(3, "Bad request"))
}

/// A post: its packets handled in order, as if read from a WebSocket.
async fn post(t: &Transport, conn: &Arc<Conn>, p: &Polling, body: Body) -> Response {
    let began = conn.out.lock().life.begin_post();
    if let Some(refused) = refusal(conn, began) {
        return refused;
    }
    let _done = PostDone(conn);
    let max = t.conns.settings.max_message_bytes;
    let body = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            conn.end(End::Lost(Lost::PayloadTooLarge));
            return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response();
        }
    };
    for packet in body.split(|b| *b == 0x1e) {
        // Backpressure: while the session's queue is over budget, its packets wait (the
        // heartbeat ends a session that stays so).
        p.wait_for(None, || {
            !conn.over_budget() || conn.ended().is_some() || conn.tcp.get().is_some()
        })
        .await;
        if conn.ended().is_some() {
            return refuse(1, "Session ID unknown");
        }
        let flow = {
            let mut st = p.packets.lock();
            // Checked under the lock that the session's end (`watch`) and the upgrade take
            // too: a packet after either must not act, or a `40` would open a session nothing
            // ever closes.
            if conn.ended().is_some() || conn.tcp.get().is_some() {
                return refuse(1, "Session ID unknown");
            }
            let _turn = TurnGuard::begin(conn.id);
            contained(conn, || handle(t, conn, &mut st, packet))
                .unwrap_or_else(|end| Err((end, 1011)))
        };
        match flow {
            Ok(()) => {}
            Err((End::Lost(Lost::BadPacket | Lost::InvalidUtf8), _)) => {
                conn.end(End::Lost(Lost::BadPacket));
                return refuse(3, "Bad request");
            }
            Err((end, _)) => {
                conn.end(end);
                break;
            }
        }
    }
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], "ok").into_response();
    if conn.out.lock().life.upgrading() {
        // The last post before the upgrade: see the noop in `poll`.
        r.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    r
}

/// One packet of a post: text, or a base64 binary attachment (`b...`).
fn handle(t: &Transport, conn: &Arc<Conn>, st: &mut Packets, packet: &[u8]) -> Flow {
    let bad = (End::Lost(Lost::BadPacket), 1002);
    if packet.first() == Some(&b'b') {
        if st.skip == 0 {
            return Err(bad);
        }
        st.skip -= 1;
        return Ok(());
    }
    if st.skip > 0 {
        return Err(bad);
    }
    let text = std::str::from_utf8(packet).map_err(|_| bad)?;
    on_packet(t, conn, st, text)
}

/// Marks `conn` as being upgraded by a WebSocket, unless it cannot be (not a polling session,
/// ended, or taken by another WebSocket already).
pub(super) fn begin_upgrade(conn: &Conn) -> bool {
    conn.out.lock().life.begin_upgrade()
}

/// The upgrading WebSocket went away before completing: the session stays on long-polling.
pub(super) fn abandon_upgrade(conn: &Conn) {
    conn.out.lock().life.abandon_upgrade();
}

/// The upgrade's probe came: the waiting poll is released with a noop, so that the client can
/// pause long-polling.
pub(super) fn release_poll(conn: &Conn) {
    conn.out.lock().life.release_poll();
    conn.wake.notify_one();
}

/// Completes the upgrade: from now on the session's queue is written to `tcp`, and its packets'
/// state moves to the WebSocket's task (`None` if the session ended meanwhile).
pub(super) fn complete_upgrade(conn: &Arc<Conn>, tcp: TcpStream) -> Option<Packets> {
    let p = conn.polling.as_ref()?;
    // A post's packet being handled finishes first: it holds the packets' lock (the caller
    // waited for the whole post, see [`post_in_flight`]).
    let mut packets = p.packets.lock();
    {
        let mut out = conn.out.lock();
        if out.life.ended().is_some() || !out.life.upgrading() {
            return None;
        }
        conn.tcp.set(tcp).ok()?;
        out.life.upgraded();
    }
    let taken = std::mem::take(&mut *packets);
    drop(packets);
    // A poll still waiting (a client that upgraded without a probe) is released now (an
    // upgraded session's polls all are), before the WebSocket's task waits on the same `wake`:
    // `notify_waiters` wakes exactly the waiters of this moment, so none is left to take a later
    // wake-up meant for that task.
    conn.wake.notify_waiters();
    // The long-polling side's watcher leaves; what was queued meanwhile goes out now.
    p.gone.notify_one();
    p.moved();
    Some(taken)
}

/// Whether a post of this session is being handled (its packets must all act on the polling
/// side before the session moves to its WebSocket).
pub(super) fn post_in_flight(conn: &Conn) -> bool {
    conn.out.lock().life.post_in_flight()
}
