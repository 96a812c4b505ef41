//! Long-polling requests on the server's own HTTP/1.1 path (`src/http1.rs`), spoken over raw TCP:
//! several requests on one kept-alive connection, pipelined requests, a request for another
//! route on the same connection (handed to hyper), a body that path leaves to hyper (chunked),
//! the answer's framing and CORS headers, and a client that goes away during its poll.

mod common;

use std::time::Duration;

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 answer read off `tcp`: status, lower-cased head, body (by Content-Length or
/// chunks).
async fn answer(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String, String) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
            let status: u16 = head[9..12].parse().unwrap();
            let rest_at = at + 4;
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map(|v| v.trim().parse::<usize>().unwrap())
            {
                while buf.len() < rest_at + len {
                    read_more(tcp, buf, end).await;
                }
                let body = String::from_utf8_lossy(&buf[rest_at..rest_at + len]).into_owned();
                buf.drain(..rest_at + len);
                return (status, head, body);
            }
            assert!(head.contains("transfer-encoding: chunked"), "{head}");
            loop {
                let tail = &buf[rest_at..];
                if let Some(done) = tail.windows(5).position(|w| w == b"0\r\n\r\n") {
                    let raw = String::from_utf8_lossy(&tail[..done]).into_owned();
                    // "<hex>\r\n<data>\r\n" pieces.
                    let mut body = String::new();
                    let mut parts = raw.split("\r\n");
                    while let (Some(_len), Some(data)) = (parts.next(), parts.next()) {
                        body.push_str(data);
                    }
                    buf.drain(..rest_at + done + 5);
                    return (status, head, body);
                }
                read_more(tcp, buf, end).await;
            }
        }
        read_more(tcp, buf, end).await;
    }
}

async fn read_more(tcp: &mut TcpStream, buf: &mut Vec<u8>, end: tokio::time::Instant) {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout_at(end, tcp.read(&mut chunk))
        .await
        .expect("an answer in time")
        .unwrap();
    assert!(
        n > 0,
        "the connection closed early: {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

fn get(query: &str) -> String {
    format!(
        "GET /socket.io/?EIO=4&transport=polling{query} HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\n\r\n"
    )
}

fn post(sid: &str, body: &str) -> String {
    format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn sid_of(open: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    v["sid"].as_str().unwrap().to_string()
}

/// One client connection: requests written, answers read in order.
struct Wire {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    async fn open(s: &TestServer) -> Wire {
        Wire {
            tcp: TcpStream::connect(s.addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, raw: &str) {
        self.tcp.write_all(raw.as_bytes()).await.unwrap();
    }

    async fn answer(&mut self) -> (u16, String, String) {
        answer(&mut self.tcp, &mut self.buf).await
    }

    /// Sends `raw` and reads its answer.
    async fn ask(&mut self, raw: &str) -> (u16, String, String) {
        self.send(raw).await;
        self.answer().await
    }

    /// A session joined to `/` on this connection: its id.
    async fn joined_session(&mut self) -> String {
        let sid = sid_of(&self.ask(&get("")).await.2);
        assert_eq!(self.ask(&post(&sid, "40")).await.2, "ok");
        let joined = self.ask(&get(&format!("&sid={sid}"))).await.2;
        assert!(joined.starts_with("40{\"sid\":"), "{joined}");
        sid
    }
}

#[tokio::test]
async fn one_kept_alive_connection_carries_a_whole_session_then_another_route() {
    let s = TestServer::start(&[]).await;
    let mut w = Wire::open(&s).await;
    let (status, head, open) = w.ask(&get("")).await;
    assert_eq!(status, 200);
    assert!(open.starts_with("0{"), "{open}");
    assert!(
        head.contains("access-control-allow-origin: "),
        "CORS as on every route: {head}"
    );
    assert!(head.contains("content-type: text/plain"), "{head}");
    assert!(head.contains("date: "), "{head}");
    // Join `/`, then poll for the answer: all on the same connection.
    w.joined_session().await;

    // Another route on the same connection: served (by hyper) as usual.
    let (status, _, health) = w.ask("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    // And long-polling still works there.
    let sid = sid_of(&w.ask(&get("")).await.2);
    assert_eq!(w.ask(&post(&sid, "40")).await.0, 200);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let s = TestServer::start(&[]).await;
    let mut w = Wire::open(&s).await;
    w.send(&format!("{}{}", get(""), get(""))).await;
    let a = sid_of(&w.answer().await.2);
    let b = sid_of(&w.answer().await.2);
    assert_ne!(a, b, "two sessions, two answers");
    // A handshake and a request for another route in one write.
    w.send(&format!(
        "{}GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        get("")
    ))
    .await;
    assert!(w.answer().await.2.starts_with("0{"));
    assert!(w.answer().await.2.contains("\"status\""));
}

#[tokio::test]
async fn a_chunked_post_is_served_too() {
    let s = TestServer::start(&[]).await;
    let mut w = Wire::open(&s).await;
    let sid = sid_of(&w.ask(&get("")).await.2);
    let chunked = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n40\r\n0\r\n\r\n"
    );
    assert_eq!(w.ask(&chunked).await.2, "ok");
    assert!(
        w.ask(&get(&format!("&sid={sid}")))
            .await
            .2
            .starts_with("40{")
    );
}

#[tokio::test]
async fn a_client_that_goes_away_during_its_poll_can_poll_again_elsewhere() {
    let s = TestServer::start(&[]).await;
    let mut w = Wire::open(&s).await;
    let sid = w.joined_session().await;
    // A poll that waits, then its connection closes.
    w.send(&get(&format!("&sid={sid}"))).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(w);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The session lives on: a new poll is not a second one at once, and it gets what is sent.
    let mut poll = Wire::open(&s).await;
    poll.send(&get(&format!("&sid={sid}"))).await;
    let mut other = Wire::open(&s).await;
    let event = r#"42["find-random-partner",{}]"#;
    assert_eq!(other.ask(&post(&sid, event)).await.2, "ok");
    let (status, _, body) = poll.answer().await;
    assert_eq!(status, 200);
    assert!(
        body.contains("not-authenticated") || body.contains("searching"),
        "{body}"
    );
}

/// A connection that never sends a request is closed after the head timeout (10 s, as hyper's
/// was), not held for the keep-alive idle time.
#[tokio::test]
async fn a_silent_connection_is_closed_at_the_head_timeout() {
    let s = TestServer::start(&[]).await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut byte))
        .await
        .expect("closed within 20 s, not kept for the 90 s idle time");
    assert_eq!(closed.unwrap_or(0), 0, "closed without an answer");
}
