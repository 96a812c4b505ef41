//! A WebSocket client written by hand, so that a test can send what real clients never would
//! and read (or not read) byte by byte.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{TestServer, WAIT};

/// A WebSocket client written by hand, so a test can send what real clients never would.
pub(crate) struct Raw {
    /// The connection.
    pub tcp: TcpStream,
    /// Bytes read but not yet taken as frames.
    pub buf: Vec<u8>,
}

/// One frame from the server: opcode and payload.
pub(crate) type Frame = (u8, Vec<u8>);

impl Raw {
    /// Opens `/socket.io/` over WebSocket and checks the handshake answer.
    pub(crate) async fn open(s: &TestServer) -> Raw {
        Raw::open_with(s, None).await
    }

    /// The same with the client's receive buffer set to `rcvbuf` bytes: a client that does not
    /// read then stops taking the server's bytes after a few KB instead of a few MB, so what
    /// the server itself holds shows at once.
    pub(crate) async fn open_with(s: &TestServer, rcvbuf: Option<u32>) -> Raw {
        Raw::connect(s, "EIO=4&transport=websocket", rcvbuf).await
    }

    /// Opens `/socket.io/?<query>` over WebSocket (an upgrade gives its `sid`).
    pub(crate) async fn open_query(s: &TestServer, query: &str) -> Raw {
        Raw::connect(s, query, None).await
    }

    /// Opens `/socket.io/?<query>` over WebSocket with the given receive buffer.
    pub(crate) async fn connect(s: &TestServer, query: &str, rcvbuf: Option<u32>) -> Raw {
        Raw::connect_to(s.addr, query, rcvbuf).await
    }

    /// [`connect`](Self::connect) to the server at `addr` (a cluster node of its own process).
    #[allow(dead_code)]
    pub(crate) async fn connect_to(
        addr: std::net::SocketAddr,
        query: &str,
        rcvbuf: Option<u32>,
    ) -> Raw {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(n) = rcvbuf {
            sock.set_recv_buffer_size(n).unwrap();
        }
        let mut tcp = sock.connect(addr).await.unwrap();
        let req = format!(
            "GET /socket.io/?{query} HTTP/1.1\r\nHost: {}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            addr
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
    pub(crate) async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk))
            .await
            .expect("the server sent nothing in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Sends `frames` (built with [`Raw::encode`]) unless the server stops taking them for
    /// `patience`: how many bytes it took.
    pub(crate) async fn flood(&mut self, frames: &[u8], patience: std::time::Duration) -> usize {
        let mut sent = 0;
        while sent < frames.len() {
            match tokio::time::timeout(patience, self.tcp.write(&frames[sent..])).await {
                Ok(Ok(n)) if n > 0 => sent += n,
                _ => break,
            }
        }
        sent
    }

    /// One client frame, masked.
    pub(crate) fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![opcode | 0x80];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [9u8, 8, 7, 6];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Sends one frame, masked as a client must unless `masked` is false.
    pub(crate) async fn frame(&mut self, opcode: u8, fin: bool, payload: &[u8], masked: bool) {
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

    pub(crate) async fn text(&mut self, t: &str) {
        self.frame(1, true, t.as_bytes(), true).await;
    }

    /// The next frame, or `None` at the end of the stream.
    pub(crate) async fn next(&mut self) -> Option<Frame> {
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
    pub(crate) async fn next_text(&mut self) -> String {
        loop {
            let (op, p) = self.next().await.expect("connection open");
            if op == 1 && p != b"2" {
                return String::from_utf8(p).unwrap();
            }
        }
    }

    /// Joins `/` and returns the open packet.
    pub(crate) async fn join(&mut self) -> Value {
        let open = self.next_text().await;
        let open: Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
        self.text("40").await;
        let joined = self.next_text().await;
        assert!(joined.starts_with("40{\"sid\":"), "{joined}");
        open
    }

    /// Joins `/`, authenticates as `user` and starts a search: a user waiting in the queue,
    /// whose client then does whatever the test makes it do (usually nothing).
    pub(crate) async fn searching_as(&mut self, user: &str) {
        self.join().await;
        self.text(&format!(r#"42["authenticate",{{"userId":"{user}"}}]"#))
            .await;
        self.expect("authenticated").await;
        self.text(r#"42["find-random-partner",{}]"#).await;
        self.expect("searching").await;
    }

    /// The next event `name`, skipping queue updates.
    pub(crate) async fn expect(&mut self, name: &str) -> Value {
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
    pub(crate) async fn close_code(&mut self) -> Option<u16> {
        while let Some((op, p)) = self.next().await {
            if op == 8 {
                return Some(u16::from_be_bytes([p[0], p[1]]));
            }
        }
        None
    }
}
