//! Engine.IO long-polling requests, and WebSocket handshakes, served without hyper's connection
//! state.
//!
//! A long-polling session keeps one request waiting for the server at all times (the poll), and
//! the official client sends its posts on a second connection; under hyper each of those TCP
//! connections held an 8 KiB read buffer, a write buffer and its connection state for the whole
//! life of the session: about 30 KB of the server's memory per idle polling-only session, four
//! times a WebSocket's. Here a connection whose next request is a plain long-polling `GET` or
//! `POST` is served by a loop that holds no buffer between requests: the request head is read
//! from the socket into a buffer of the request's own, parsed with httparse, handed to the same
//! router (every layer of it:
//! CORS, the `Origin` check, the limits, the transport), and the answer written back.
//!
//! A WebSocket request to `/socket.io/` (`GET`, no body) is served the same way, up to the
//! router's answer: a 101 hands the socket, the head taken off, to the transport
//! (`ws::SocketHand`), which writes the 101's head with its first frames, so that a direct
//! WebSocket's 101 and its open packet leave in one write, without hyper's parse, upgrade and
//! second read of the head.
//!
//! Anything else (another route, `Expect`, a chunked body, HTTP/1.0, a head that has not arrived
//! whole, a head larger than [`MAX_HEAD`]) goes to hyper with the socket, for the rest of its
//! life, the bytes read of it in front ([`crate::ws::Prefixed`]): this path never has to be a
//! general HTTP server. (It used to peek at the head and then read it: two system calls a
//! request where one does.)

// Input from the network reaches these parsers: an index or a string cut at an unchecked offset
// could panic a connection (`4é` did), so neither is allowed outside tests.
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{HeaderName, HeaderValue, Request, StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// Largest request head served here (the official clients send 200–600 bytes; a browser with
/// cookies may send more, and hyper serves it).
const MAX_HEAD: usize = 4096;

/// Most headers a request served here may carry.
const MAX_HEADERS: usize = 32;

/// How long a new connection may take to send its first request (hyper's head timeout, which
/// closed silent connections before this path took them first).
const FIRST_REQUEST: Duration = Duration::from_secs(10);

/// How long a connection may sit between requests. A polling client sends its next poll at once
/// and a post at least every ping interval; a connection silent this long is gone.
const IDLE: Duration = Duration::from_secs(90);

/// How long a request body may take to arrive once its head has (hyper's head timeout).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an answer may take to be written: a client that stops reading does not keep its
/// connection (and the answer) forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do with a connection once [`serve`] returns.
pub(crate) enum Next {
    /// Closed, or to be closed: nothing more to do.
    Done,
    /// Its next request is not one for this path: serve it with hyper, from the bytes read of
    /// it.
    Hyper(crate::ws::Prefixed),
}

/// What the bytes read of a request hold.
enum Peeked {
    /// A request of this path: its head is `head_len` bytes, its body `body_len`; a WebSocket
    /// request (`websocket`) has none.
    Ours {
        req: Box<Request<()>>,
        head_len: usize,
        body_len: usize,
        close: bool,
        websocket: bool,
    },
    /// Something else, or not all of it yet.
    Other,
    /// Nothing to read after all (a spurious wake-up).
    Nothing,
    /// The peer closed the connection or it failed.
    Closed,
}

/// Serves `tcp`'s requests while they are long-polling requests (see the module's text), with
/// `router`; at most `max_body` bytes of body each (larger ones go to hyper, which refuses them
/// as the transport says). Returns when the connection ends, `stop` turns true, or hyper is to
/// take over.
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    max_body: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Next {
    let mut tcp = tcp;
    let mut silence = FIRST_REQUEST;
    // Bytes read past the last request (a pipelined next one): empty, and unallocated, for a
    // client that waits for each answer.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        // Between requests: no buffer, only the socket and this future.
        if carry.is_empty() {
            tokio::select! {
                r = tcp.readable() => if r.is_err() { return Next::Done },
                _ = stop.changed() => return Next::Done,
                _ = tokio::time::sleep(silence) => return Next::Done,
            }
        }
        let mut buf = std::mem::take(&mut carry);
        let (req, head_len, body_len, close, websocket) = match read_head(&tcp, &mut buf, max_body)
        {
            Peeked::Ours {
                req,
                head_len,
                body_len,
                close,
                websocket,
            } => (req, head_len, body_len, close, websocket),
            Peeked::Other => return Next::Hyper(crate::ws::Prefixed::new(buf, tcp)),
            Peeked::Nothing => continue,
            Peeked::Closed => return Next::Done,
        };
        // What was read past the head is the body's first bytes, and past the body the next
        // request's. The rest of the body grows its buffer as it arrives (a promised length
        // costs nothing until its bytes come), all of it within the body timeout.
        let taken = head_len + body_len.min(buf.len().saturating_sub(head_len));
        carry = buf.split_off(taken.min(buf.len()));
        let body = if body_len == 0 {
            Vec::new()
        } else {
            buf.drain(..head_len.min(buf.len()));
            buf
        };
        let Some(body) = read_body(&mut tcp, body, body_len).await else {
            return Next::Done;
        };
        let mut req = (*req).map(|()| Body::from(body));
        req.extensions_mut().insert(ConnectInfo(peer));
        // A WebSocket request that the router answers with 101 takes the socket (see
        // `ws::SocketHand`); one it refuses is answered here like any other request.
        let hand = websocket.then(|| {
            let (tx, hand) = crate::ws::SocketHand::new();
            req.extensions_mut().insert(hand);
            tx
        });

        // The router answers at once: a poll's wait is in its body (see `ws::polling`).
        let Ok(res) = Box::pin(router.clone().oneshot(req)).await;
        if let Some(tx) = hand
            && res.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            // The session writes the head with its first frames, and reads the client's frames
            // that came with the request (`carry`) first. Were it gone already, the socket
            // closes with the unsent pair.
            tx.send((tcp, carry, switching(&res.into_parts().0))).ok();
            return Next::Done;
        }
        let released = res
            .extensions()
            .get::<crate::ws::Released>()
            .map(|r| r.0.clone());
        let (parts, body) = res.into_parts();
        // Boxed: it exists only while an answer is produced, not between requests.
        let mut body = Box::pin(axum::body::to_bytes(body, usize::MAX));
        let mut watch = true;
        let body = loop {
            tokio::select! {
                // The answer first: one that is ready at once (a handshake, a post, a poll with
                // packets waiting) goes without a look at the socket, whose readiness is still
                // that of the request just read (the look would find nothing: a system call
                // for nothing).
                biased;
                b = body.as_mut() => break b,
                // A poll can wait for a long time: notice a client that went away meanwhile
                // (as hyper does), so that its session sees the poll end.
                r = tcp.readable(), if watch => {
                    if r.is_err() {
                        return Next::Done;
                    }
                    match gone(&tcp) {
                        Some(true) => return Next::Done,
                        // The next request, pipelined: it waits its turn.
                        Some(false) => watch = false,
                        None => {}
                    }
                }
            }
        };
        let Ok(body) = body else {
            return Next::Done;
        };
        let close = close
            || released.is_some_and(|r| r.load(std::sync::atomic::Ordering::Acquire))
            || parts
                .headers
                .get(header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let out = encode(&parts, &body, close);
        drop(body);
        if !matches!(
            tokio::time::timeout(WRITE_TIMEOUT, tcp.write_all(&out)).await,
            Ok(Ok(()))
        ) {
            return Next::Done;
        }
        drop(out);
        silence = IDLE;
        if close {
            tcp.shutdown().await.ok();
            return Next::Done;
        }
    }
}

/// Reads the rest of a request's body of `body_len` bytes after the `body` that came with its
/// head, within [`BODY_TIMEOUT`]; `None` when it does not arrive whole in time. The buffer grows
/// with what arrives (at most twice what arrived, and 4 KiB ahead), never to the length the head
/// promised before those bytes came.
async fn read_body(tcp: &mut TcpStream, mut body: Vec<u8>, body_len: usize) -> Option<Vec<u8>> {
    let read = async {
        while body.len() < body_len {
            let want = body_len - body.len();
            body.reserve(want.min(body.len().max(4096)));
            let mut rest = (&mut *tcp).take(want as u64);
            if rest.read_buf(&mut body).await.ok()? == 0 {
                return None;
            }
        }
        Some(body)
    };
    tokio::time::timeout(BODY_TIMEOUT, read).await.ok()?
}

/// Reads what the socket holds after `buf` (bytes carried from the last read), up to
/// [`MAX_HEAD`] in all, and says what it is.
fn read_head(tcp: &TcpStream, buf: &mut Vec<u8>, max_body: usize) -> Peeked {
    if buf.len() < MAX_HEAD {
        // On the heap, for this request only: an array here would live in every connection
        // task's future (4 KiB each, for the whole life of the connection's first stage).
        buf.reserve_exact(MAX_HEAD - buf.len());
        match tcp.try_read_buf(buf) {
            Ok(0) if buf.is_empty() => return Peeked::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if buf.is_empty() {
                    return Peeked::Nothing;
                }
            }
            Err(_) => return Peeked::Closed,
        }
    }
    parse(buf, max_body)
}

/// Whether a client whose request is pending closed its side: `Some(true)` closed or failed,
/// `Some(false)` sent more (a pipelined request), `None` nothing after all.
fn gone(tcp: &TcpStream) -> Option<bool> {
    let r = tcp.try_io(Interest::READABLE, || {
        let mut one = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        socket2::SockRef::from(tcp).peek(&mut one)
    });
    match r {
        Ok(0) => Some(true),
        Ok(_) => Some(false),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(_) => Some(true),
    }
}

/// A request head in `buf`, if it is whole and a long-polling request this path serves.
fn parse(buf: &[u8], max_body: usize) -> Peeked {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Peeked::Other,
    };
    let (Some(method), Some(target), Some(1)) = (head.method, head.path, head.version) else {
        return Peeked::Other;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let engine = path == "/socket.io" || path == "/socket.io/";
    let polling = engine && query.split('&').any(|kv| kv == "transport=polling");
    let websocket = engine && query.split('&').any(|kv| kv == "transport=websocket");
    if !(polling && matches!(method, "GET" | "POST") || websocket && method == "GET") {
        return Peeked::Other;
    }
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .version(http::Version::HTTP_11);
    let mut body_len = None;
    let mut close = false;
    for h in head.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") && !websocket
            || name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
        {
            return Peeked::Other;
        }
        if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = content_length(h.value) else {
                return Peeked::Other;
            };
            if body_len.is_some_and(|b| b != n) {
                return Peeked::Other;
            }
            body_len = Some(n);
        }
        if name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            close = true;
        }
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Peeked::Other;
        };
        builder = builder.header(n, v);
    }
    let body_len = body_len.unwrap_or(0);
    // A post must say its length; a body above the limit is hyper's to refuse.
    if (method == "POST"
        && head
            .headers
            .iter()
            .all(|h| !h.name.eq_ignore_ascii_case("content-length")))
        || body_len > max_body
        || websocket && body_len > 0
    {
        return Peeked::Other;
    }
    match builder.body(()) {
        Ok(req) => Peeked::Ours {
            req: Box::new(req),
            head_len,
            body_len,
            close,
            websocket,
        },
        Err(_) => Peeked::Other,
    }
}

/// A `Content-Length` value as RFC 9110 defines it, `1*DIGIT` (around it only the optional
/// white space of any field value), that fits a `usize`. Anything else (a sign, a list, hex) is
/// not this path's to read: hyper gets the request and refuses it, so this path and hyper (and
/// a proxy that reads the same way) never disagree on where a body ends.
fn content_length(value: &[u8]) -> Option<usize> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The HTTP/1.1 head of a 101 answer, its headers as the router set them (`upgrade`,
/// `connection`, the accept key, CORS), with no length: nothing follows it but the WebSocket.
fn switching(parts: &http::response::Parts) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    put_head(&mut out, parts, true);
    out.extend_from_slice(b"\r\n");
    out
}

/// An answer's status line, the router's headers and a `date`, without the blank line that
/// ends them. Never a length (the caller writes it or, for a 101, none); `connection` only when
/// `keep_connection` (an answer that may close says so itself).
fn put_head(out: &mut Vec<u8>, parts: &http::response::Parts, keep_connection: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || (name == header::CONNECTION && !keep_connection)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The HTTP/1.1 bytes of an answer; `connection: close` when `close`.
fn encode(parts: &http::response::Parts, body: &[u8], close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    put_head(&mut out, parts, false);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(raw: &str) -> &'static str {
        match parse(raw.as_bytes(), 1000) {
            Peeked::Ours {
                websocket: false, ..
            } => "polling",
            Peeked::Ours {
                websocket: true, ..
            } => "websocket",
            Peeked::Other => "other",
            Peeked::Nothing => "nothing",
            Peeked::Closed => "closed",
        }
    }

    #[test]
    fn only_whole_plain_polling_and_websocket_requests_are_taken() {
        let get = "GET /socket.io/?EIO=4&transport=polling&t=x HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(kind(get), "polling");
        let post = "POST /socket.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n40";
        assert_eq!(kind(post), "polling");
        let ws = "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert_eq!(kind(ws), "websocket");
        match parse(post.as_bytes(), 1000) {
            Peeked::Ours {
                head_len, body_len, ..
            } => assert_eq!((head_len + body_len, body_len), (post.len(), 2)),
            _ => unreachable!(),
        }
        for other in [
            // Not whole yet.
            "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\n",
            // Other routes, transports, methods, versions.
            "GET /health HTTP/1.1\r\n\r\n",
            "POST /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nab",
            "GET /socket.io/?EIO=4&transport=pollingx HTTP/1.1\r\n\r\n",
            "OPTIONS /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n\r\n",
            "GET /socket.io/?EIO=4&transport=polling HTTP/1.0\r\n\r\n",
            // Bodies this path does not read.
            "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n\r\n",
            "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: 5000\r\n\r\n",
            "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: +2\r\n\r\n",
            "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n",
            "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            // Not HTTP.
            "\x16\x03\x01\x02\x00",
        ] {
            assert_eq!(kind(other), "other", "{other:?}");
        }
        match parse(
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
            1000,
        ) {
            Peeked::Ours { close, .. } => assert!(close),
            _ => unreachable!(),
        }
    }
}
