//! WebSocket connections, direct or upgrading a long-polling session.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{Message, OutFrame, Reader};
use super::{Conn, End, Lost, Packets, Sid, Transport, TurnGuard, finish, packet, polling, refuse};

mod hand;
mod read;

pub(crate) use hand::SocketHand;
use hand::{Source, write_head};

use read::{on_bytes, on_readable};

/// How long a client may take between opening its upgrade WebSocket and completing the upgrade
/// (Node's engine.io `upgradeTimeout`).
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whom a WebSocket request is for.
enum Target {
    /// A new session.
    Direct { id: Sid, counted: bool },
    /// The upgrade of this long-polling session.
    Upgrade(Arc<Conn>),
    /// A second WebSocket for a session that has (or is getting) its own: opened and closed at
    /// once, the session untouched, as Node's engine.io does (the protocol's test suite waits
    /// for its `close`).
    Extra,
}

/// Answers a WebSocket request with 101 and serves the connection on its own task.
pub(super) fn serve(t: Transport, mut req: Request, sid: Option<&str>) -> Response {
    let Some(key) = websocket_key(&req) else {
        return refuse(3, "Bad request");
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = t.upper.client_ip(req.headers(), peer);
    let target = match sid {
        None => {
            // The connection holds a place of its address from its first byte, not only once
            // it joins `/`: connections that never join count too.
            let id = Sid::new();
            let counted = ip.is_none_or(|ip| t.upper.admit(ip, id));
            Target::Direct { id, counted }
        }
        Some(sid) => match sid.parse().ok().and_then(|id| t.conns.get(id)) {
            Some(conn) if polling::begin_upgrade(&conn) => Target::Upgrade(conn),
            // Upgraded, or upgrading, already: one WebSocket per session.
            Some(conn) if conn.ended().is_none() => Target::Extra,
            // Unknown or ended.
            _ => return refuse(1, "Session ID unknown"),
        },
    };
    // The server's own HTTP/1 path hands the socket over itself; hyper upgrades the rest.
    let source = match req.extensions_mut().remove::<SocketHand>() {
        Some(hand) => Source::Own(hand),
        None => Source::Hyper(hyper::upgrade::on(&mut req)),
    };
    drop(req);
    // The task's future is allocated for the session's whole life at the size of its largest
    // state: what only the upgrade's handshake, a second WebSocket or the end's lingering need
    // is boxed, and the session's loop keeps no I/O future of its own (see [`serve_socket`]).
    tokio::spawn(async move {
        let Some((tcp, early, head)) = source.take().await else {
            match target {
                Target::Direct { id, .. } => {
                    if let Some(ip) = ip {
                        t.upper.release(ip, id);
                    }
                }
                Target::Upgrade(conn) => polling::abandon_upgrade(&conn),
                Target::Extra => {}
            }
            return;
        };
        let (mut held, early) = match target {
            Target::Direct { id, counted } => {
                // Written before the session is registered: nothing sent to it (a shutdown's
                // notice, a ban) can reach its client ahead of its 101 and its open packet.
                let Some(tcp) = Box::pin(write_head(tcp, greeting(&t, id, head))).await else {
                    if let Some(ip) = ip {
                        t.upper.release(ip, id);
                    }
                    return;
                };
                (direct(t, id, ip, counted, tcp), early)
            }
            Target::Upgrade(conn) => {
                let Some(tcp) = Box::pin(write_head(tcp, head)).await else {
                    polling::abandon_upgrade(&conn);
                    return;
                };
                match Box::pin(upgrade_session(&conn, tcp, early)).await {
                    Some(st) => (Held::new(t, conn, st), Vec::new()),
                    None => return,
                }
            }
            Target::Extra => {
                if let Some(tcp) = Box::pin(write_head(tcp, head)).await {
                    Box::pin(close_extra(tcp)).await;
                }
                return;
            }
        };
        serve_socket(&mut held, early).await;
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

/// Closes a second WebSocket of a session at once (1008), within the upgrade timeout.
async fn close_extra(mut tcp: TcpStream) {
    let close = OutFrame::close(1008);
    tokio::time::timeout(UPGRADE_TIMEOUT, tcp.write_all(close.remaining()))
        .await
        .ok();
    tcp.shutdown().await.ok();
}

/// The `Sec-WebSocket-Key` of a valid WebSocket upgrade request.
fn websocket_key(req: &Request) -> Option<String> {
    if req.method() != http::Method::GET {
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

/// The socket of an upgraded request, and what the client sent after its head, taken back from
/// hyper.
async fn take_socket(upgrade: hyper::upgrade::OnUpgrade) -> Option<(TcpStream, Vec<u8>)> {
    let upgraded = upgrade
        .await
        .map_err(|e| tracing::debug!("websocket upgrade failed: {e}"))
        .ok()?;
    // Taking the TCP stream back out of hyper frees hyper's read buffer, which the upgraded
    // connection would otherwise keep for its whole life.
    let parts = upgraded
        .downcast::<TokioIo<super::Prefixed>>()
        .map_err(|_| tracing::error!("websocket upgrade over an unexpected connection"))
        .ok()?;
    // What the HTTP/1 path read before hyper and hyper had not read yet comes first.
    let (tcp, mut early) = parts.io.into_inner().into_parts();
    early.extend_from_slice(&parts.read_buf);
    Some((tcp, early))
}

/// What a direct WebSocket is sent first, in one write: the 101's head when the session writes
/// it (see [`SocketHand`]), and the Engine.IO open packet.
fn greeting(t: &Transport, id: Sid, head: Vec<u8>) -> Vec<u8> {
    let s = *t.conns.settings;
    let open = OutFrame::text(&packet::open(
        id.as_str(),
        s.ping_interval.as_millis() as u64,
        s.ping_timeout.as_millis() as u64,
        s.max_message_bytes,
        false,
    ));
    let mut first = head;
    first.extend_from_slice(open.remaining());
    first
}

/// A direct WebSocket session opened (its [`greeting`] written): registered.
fn direct(
    t: Transport,
    id: Sid,
    ip: Option<std::net::IpAddr>,
    counted: bool,
    tcp: TcpStream,
) -> Held {
    let conn = t.conns.open(id, ip, counted, Some(tcp));
    Held::new(t, conn, Reading::default())
}

/// The upgrade of a long-polling session: `2probe` is answered with `3probe` (and the pending
/// poll released with a noop), `5` moves the session onto this socket. Until then the session
/// goes on over long-polling, and a connection that does not complete the upgrade in time is
/// closed without harm to it. What the upgraded session's reading starts from, once it moved.
async fn upgrade_session(
    conn: &Arc<Conn>,
    mut tcp: TcpStream,
    mut buf: Vec<u8>,
) -> Option<Reading> {
    let max = conn.settings.max_message_bytes;
    let mut reader = Reader::default();
    let deadline = tokio::time::Instant::now() + UPGRADE_TIMEOUT;
    let upgraded = AtomicBool::new(false);
    let ok = loop {
        let mut replies: Vec<OutFrame> = Vec::new();
        let mut probed = false;
        let mut stop = false;
        let fed = {
            let pause = || upgraded.load(Ordering::Relaxed);
            reader.feed_until(&mut buf, max, &pause, &mut |m| {
                match m {
                    Message::Text(b"2probe") => {
                        replies.push(OutFrame::text("3probe"));
                        probed = true;
                    }
                    Message::Text(b"5") => upgraded.store(true, Ordering::Relaxed),
                    Message::Ping(p) => replies.push(OutFrame::pong(p)),
                    // A close, or anything but the upgrade's packets: the upgrade is off.
                    _ => stop = true,
                }
                if stop {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        };
        buf.clear();
        if probed {
            polling::release_poll(conn);
        }
        for r in replies {
            if tcp.write_all(r.remaining()).await.is_err() {
                stop = true;
            }
        }
        if stop || fed.is_err() || conn.ended().is_some() {
            break false;
        }
        if upgraded.load(Ordering::Relaxed) {
            break true;
        }
        let mut chunk = vec![0u8; 4096];
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            _ => break false,
        }
    };
    if !ok {
        polling::abandon_upgrade(conn);
        tcp.shutdown().await.ok();
        return None;
    }
    // A conforming client pauses polling before it sends `5`; one that did not has its post
    // finish first, so that no packet of it acts after the switch.
    let settled = match &conn.polling {
        Some(p) => {
            p.wait_for(Some(deadline), || !polling::post_in_flight(conn))
                .await
        }
        None => !polling::post_in_flight(conn),
    };
    if !settled {
        polling::abandon_upgrade(conn);
        tcp.shutdown().await.ok();
        return None;
    }
    let paused = !reader.is_idle();
    let packets = polling::complete_upgrade(conn, tcp)?;
    Some(Reading {
        reader,
        packets,
        paused,
        close_code: None,
    })
}

/// What a WebSocket connection's task keeps between reads.
#[derive(Default)]
struct Reading {
    reader: Reader,
    packets: Packets,
    /// Whether the reader stopped before a message because the queue was over budget (or at
    /// the upgrade): those bytes are handled once it is not, before anything more is read.
    paused: bool,
    /// The close code to answer with when the connection ends.
    close_code: Option<u16>,
}

/// A WebSocket session's hold on what it took: the registry's entry, its address's place and the
/// layer above's session (in `st`). [`run`] gives them back when the session ends; if its task
/// ends any other way (a panic anywhere in it, outside the contained handling of input),
/// dropping this gives them back all the same, exactly as a lost connection does.
struct Held {
    t: Transport,
    conn: Arc<Conn>,
    st: Reading,
    released: bool,
}

impl Held {
    /// Gives everything back, once.
    fn release(&mut self, end: End) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        // Settled (held, if it can be recovered) before it leaves the registry, so that a client
        // already back finds its session in one place or the other.
        finish(&self.t, &self.conn, self.st.packets.session.take(), end);
        self.t.conns.remove(&self.conn);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.released {
            tracing::error!(sid = %self.conn.id, "a connection's task ended without closing it: released");
            metrics::counter!("roulette_connection_panics_total").increment(1);
            self.conn.end(End::Lost(Lost::Panic));
            self.release(End::Lost(Lost::Panic));
        }
    }
}

impl Held {
    /// A session's hold, taken from its first byte on this socket.
    fn new(t: Transport, conn: Arc<Conn>, st: Reading) -> Held {
        Held {
            t,
            conn,
            st,
            released: false,
        }
    }
}

/// What woke a session's loop.
enum Woke {
    /// Its queue has something to write, or it ended.
    Queue,
    /// The socket can be read.
    Readable(std::io::Result<()>),
    /// The socket can be written.
    Writable(std::io::Result<()>),
}

/// Runs a session over its WebSocket until it ends, then ends it.
///
/// The loop waits on the socket's readiness through `poll_read_ready`/`poll_write_ready`,
/// which keep their waker in the socket's registration, instead of on `readable()` and
/// `writable()` futures (152 bytes each) that every idle session's task would carry.
async fn serve_socket(held: &mut Held, mut early: Vec<u8>) {
    let (t, conn) = (held.t.clone(), held.conn.clone());
    let Some(tcp) = conn.tcp.get() else {
        held.release(End::Lost(Lost::TransportError));
        return;
    };
    let st = &mut held.st;
    let mut end = None;
    if !early.is_empty() {
        let _turn = TurnGuard::begin(conn.id);
        end = on_bytes(&t, &conn, st, &mut early);
    }
    drop(early);
    let mut woken = std::pin::pin!(conn.wake.notified());
    let end = loop {
        if let Some(e) = end.or_else(|| conn.ended()) {
            break e;
        }
        // Backpressure: while the client's queue is over budget nothing more is read from it,
        // so what it provokes (replies, pongs, errors) cannot outgrow the budget.
        let (want_write, over) = conn.pending();
        if st.paused && !over {
            let _turn = TurnGuard::begin(conn.id);
            end = on_bytes(&t, &conn, st, &mut []);
            continue;
        }
        let read = !over && !st.paused;
        let woke = std::future::poll_fn(|cx| {
            if woken.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::Queue);
            }
            if read && let Poll::Ready(r) = tcp.poll_read_ready(cx) {
                return Poll::Ready(Woke::Readable(r));
            }
            if want_write && let Poll::Ready(r) = tcp.poll_write_ready(cx) {
                return Poll::Ready(Woke::Writable(r));
            }
            Poll::Pending
        })
        .await;
        end = match woke {
            Woke::Queue => {
                woken.set(conn.wake.notified());
                None
            }
            Woke::Readable(Ok(())) => on_readable(&t, &conn, st),
            Woke::Writable(r) => r
                .and_then(|()| conn.flush())
                .err()
                .map(|_| End::Lost(Lost::TransportError)),
            Woke::Readable(Err(_)) => Some(End::Lost(Lost::TransportError)),
        };
    };
    {
        let mut out = conn.out.lock();
        out.end(end);
        if let Some(code) = st.close_code {
            out.push(OutFrame::close(code));
        }
    }
    // Best effort: what the kernel takes now (a goodbye) is sent, the rest dropped.
    conn.flush().ok();
    // A client that closed its side, or a broken connection, has nothing left to drain: the
    // close that dropping the socket makes is its goodbye.
    let gone = matches!(end, End::Lost(Lost::TransportClose | Lost::TransportError));
    if !gone {
        socket2::SockRef::from(tcp)
            .shutdown(std::net::Shutdown::Write)
            .ok();
    }
    held.release(end);
    if !gone {
        // Boxed: only a session the server ends needs the linger's timer.
        Box::pin(linger(tcp)).await;
    }
}

/// Longest a closed connection's input is drained before the socket is dropped.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Most bytes drained so: a client that keeps sending past this gets its connection reset.
const LINGER_BYTES: usize = 64 * 1024;

/// Drains what the client still sends after the server's goodbye, until it closes its side,
/// [`LINGER`] passes or [`LINGER_BYTES`] came. A socket closed with unread input is reset by the
/// kernel, and a reset can destroy the goodbye (`41`, the close frame) before the client reads
/// it: a client cut off for flooding saw "transport close" instead of "io server disconnect".
async fn linger(tcp: &TcpStream) {
    let until = tokio::time::Instant::now() + LINGER;
    let mut drained = 0;
    while drained < LINGER_BYTES {
        tokio::select! {
            r = tcp.readable() => {
                if r.is_err() {
                    return;
                }
                let mut sink = [0u8; 4096];
                match tcp.try_read(&mut sink) {
                    Ok(0) => return,
                    Ok(n) => drained += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
            _ = tokio::time::sleep_until(until) => return,
        }
    }
}
