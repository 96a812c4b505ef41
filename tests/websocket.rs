//! Roulette's own WebSocket transport (direct WebSocket clients), spoken byte by byte where the
//! official clients cannot misbehave: framing, fragments, limits, heartbeats, namespaces, binary
//! packets. And the same clients through socketioxide when `NATIVE_WEBSOCKET` is off.

mod common;

use std::time::Duration;

use common::{Client, TestServer, WAIT};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A WebSocket client written by hand, so a test can send what real clients never would.
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// One frame from the server: opcode and payload.
type Frame = (u8, Vec<u8>);

impl Raw {
    /// Opens `/socket.io/` over WebSocket and checks the handshake answer.
    async fn open(s: &TestServer) -> Raw {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        let req = format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            s.addr
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Raw {
            tcp,
            buf: Vec::new(),
        };
        let head = loop {
            if let Some(end) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(raw.buf[..end].to_vec()).unwrap();
                raw.buf.drain(..end + 4);
                break head;
            }
            assert!(raw.fill().await, "closed during the handshake");
        };
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // RFC 6455's own example key and answer.
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        raw
    }

    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk))
            .await
            .expect("the server sent nothing in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Sends one frame, masked as a client must unless `masked` is false.
    async fn frame(&mut self, opcode: u8, fin: bool, payload: &[u8], masked: bool) {
        let mut f = vec![opcode | if fin { 0x80 } else { 0 }];
        let bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(bit | n as u8),
            n if n < 65536 => {
                f.push(bit | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(bit | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [9u8, 8, 7, 6];
        if masked {
            f.extend_from_slice(&mask);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        self.tcp.write_all(&f).await.unwrap();
    }

    async fn text(&mut self, t: &str) {
        self.frame(1, true, t.as_bytes(), true).await;
    }

    /// The next frame, or `None` at the end of the stream.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 2 {
                let (mut len, mut at) = ((self.buf[1] & 0x7f) as usize, 2);
                if len == 126 && self.buf.len() >= 4 {
                    len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
                    at = 4;
                } else if len == 127 && self.buf.len() >= 10 {
                    len = u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize;
                    at = 10;
                }
                if len < 126 || at > 2 {
                    assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                    if self.buf.len() >= at + len {
                        let op = self.buf[0] & 0x0f;
                        let payload = self.buf[at..at + len].to_vec();
                        self.buf.drain(..at + len);
                        return Some((op, payload));
                    }
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next text message that is not a ping.
    async fn next_text(&mut self) -> String {
        loop {
            let (op, p) = self.next().await.expect("connection open");
            if op == 1 && p != b"2" {
                return String::from_utf8(p).unwrap();
            }
        }
    }

    /// Joins `/` and returns the open packet.
    async fn join(&mut self) -> Value {
        let open = self.next_text().await;
        let open: Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
        self.text("40").await;
        let joined = self.next_text().await;
        assert!(joined.starts_with("40{\"sid\":"), "{joined}");
        open
    }

    /// The next event `name`, skipping queue updates.
    async fn expect(&mut self, name: &str) -> Value {
        loop {
            let t = self.next_text().await;
            let v: Value = serde_json::from_str(t.strip_prefix("42").expect("an event")).unwrap();
            if v[0] == name {
                return v[1].clone();
            }
            assert!(v[0] == "queue-status" || v[0] == "searching", "{t}");
        }
    }

    /// Reads until the server closes; returns the close frame's status code, if one came.
    async fn close_code(&mut self) -> Option<u16> {
        while let Some((op, p)) = self.next().await {
            if op == 8 {
                return Some(u16::from_be_bytes([p[0], p[1]]));
            }
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_fragments_and_control_frames_follow_the_rfc() {
    let s = TestServer::start(&["--ping-interval-ms", "4000"]).await;
    let mut c = Raw::open(&s).await;
    let open = c.join().await;
    assert_eq!(
        open["upgrades"],
        json!([]),
        "a direct WebSocket has nowhere to upgrade"
    );
    assert_eq!(open["pingInterval"], 4000);
    assert_eq!(open["maxPayload"], 65536);
    // One event in three fragments, with a ping between them.
    c.frame(1, false, br#"42["authenticate",{"use"#, true).await;
    c.frame(9, true, b"are you there", true).await;
    c.frame(0, false, br#"rId":"frag"#, true).await;
    c.frame(0, true, br#"ment"}]"#, true).await;
    assert_eq!(c.next().await, Some((10, b"are you there".to_vec())));
    assert_eq!(c.expect("authenticated").await["userId"], "fragment");
    assert_eq!(s.hub.conns.len(), 1, "served by the native transport");
    // An unmasked client frame is a protocol error: close 1002.
    c.frame(1, true, b"42[\"ping\"]", false).await;
    assert_eq!(c.close_code().await, Some(1002));
    s.wait_stats("the user gone", |v| v["connectedUsers"] == 0)
        .await;
    assert_eq!(s.hub.conns.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_packets_close_with_their_codes() {
    let s = TestServer::start(&["--max-message-bytes", "4096"]).await;
    let mut big = Raw::open(&s).await;
    big.join().await;
    big.text(&format!("42[\"chat-message\",\"{}\"]", "x".repeat(5000)))
        .await;
    assert_eq!(big.close_code().await, Some(1009), "message too big");

    let mut utf = Raw::open(&s).await;
    utf.join().await;
    utf.frame(1, true, b"42[\"\xff\"]", true).await;
    assert_eq!(utf.close_code().await, Some(1007), "invalid UTF-8");

    let mut junk = Raw::open(&s).await;
    junk.join().await;
    junk.text("9hello").await;
    assert_eq!(
        junk.close_code().await,
        Some(1002),
        "not an Engine.IO packet"
    );

    let mut bye = Raw::open(&s).await;
    bye.join().await;
    bye.frame(8, true, &1001u16.to_be_bytes(), true).await;
    assert_eq!(
        bye.close_code().await,
        Some(1001),
        "the close code is echoed"
    );

    // None of that harmed anyone else.
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    a.emit(
        "chat-message",
        json!({"roomId": room, "message": "still here"}),
    )
    .await;
    assert_eq!(b.expect("chat-message").await["message"], "still here");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_namespaces_and_binary_events_are_refused_without_closing() {
    let s = TestServer::start(&[]).await;
    let mut c = Raw::open(&s).await;
    c.next_text().await;
    c.text("40/admin,").await;
    assert_eq!(
        c.next_text().await,
        r#"44/admin,{"message":"Invalid namespace"}"#
    );
    c.text("40").await;
    assert!(c.next_text().await.starts_with("40{"));
    c.text(r#"451-["authenticate",{"_placeholder":true,"num":0}]"#)
        .await;
    c.frame(2, true, &[1, 2, 3], true).await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], "binary-not-supported");
    assert_eq!(e["event"], "authenticate");
    // Acknowledgements come back as `43<id>[...]`.
    c.text(r#"427["authenticate",{"userId":"after-binary"}]"#)
        .await;
    assert_eq!(c.expect("authenticated").await["userId"], "after-binary");
    assert_eq!(c.next_text().await, r#"437[{"ok":true}]"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_dropped_and_its_partner_told() {
    let s = TestServer::start(&["--ping-interval-ms", "1000", "--ping-timeout-ms", "1000"]).await;
    let mut silent = Raw::open(&s).await;
    silent.join().await;
    silent
        .text(r#"42["authenticate",{"userId":"silent"}]"#)
        .await;
    silent.expect("authenticated").await;
    silent.text(r#"42["find-random-partner",{}]"#).await;
    silent.expect("searching").await;
    let mut b = s.user("bob").await;
    b.emit("find-random-partner", json!({})).await;
    b.expect("matched").await;
    // `silent` reads but never answers the pings: gone after interval + timeout.
    let left = tokio::time::timeout(Duration::from_secs(4), b.expect("partner-left"))
        .await
        .expect("the partner is told within interval + timeout");
    assert_eq!(left["reason"], "connection-lost");
    assert_eq!(left["canReconnect"], true);
    assert_eq!(silent.close_code().await, None, "the connection is cut");
    s.wait_stats("bob alone", |v| v["connectedUsers"] == 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_native_websocket_off_socketioxide_serves_the_same_clients() {
    let s = TestServer::start(&["--native-websocket", "false"]).await;
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    assert_eq!(s.hub.conns.len(), 0, "nothing on the native transport");
    assert_eq!(s.hub.sockets(), 2);
    a.emit(
        "webrtc-ice-candidate",
        json!({"roomId": room, "candidate": {"candidate": "c1"}}),
    )
    .await;
    assert_eq!(
        b.expect("webrtc-ice-candidate").await["candidate"]["candidate"],
        "c1"
    );
    let mut c = Client::connect(s.addr).await;
    c.authenticate("carol").await;
    assert_eq!(s.hub.sockets(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_released_while_its_user_is_away() {
    let s = TestServer::start(&["--reconnect-grace-ms", "30000"]).await;
    let (a, mut b, _room) = s.pair("alice", "bob").await;
    a.abort();
    let left = b.expect("partner-left").await;
    assert_eq!(left["reason"], "connection-lost");
    // Alice is away for the grace, and the core still links her old connection, but the
    // connection itself (its socket, its file descriptor) is gone.
    let core = s.hub.lock();
    assert!(core.link("alice").is_none(), "away");
    match core.kept_link("alice") {
        Some(roulette::signaling::Link::Local(roulette::signaling::Sock::Ws(r))) => {
            assert!(!r.is_open(), "the socket of an away user is closed")
        }
        other => panic!("alice should be away with her old link: {other:?}"),
    }
    drop(core);
    assert_eq!(s.hub.conns.len(), 1);
}
