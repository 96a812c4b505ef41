//! Long-polling requests on the server's own HTTP/1.1 path (`src/app/http1.rs`), spoken over raw TCP:
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

/// The server process's resident memory, in KB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A post that promises a large body and sends little of it costs the server what arrived, not
/// what was promised: 100 such posts of 1 MB each (the largest the settings allow) sent 1 KB.
#[tokio::test]
async fn a_promised_body_costs_what_arrived() {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roulette"));
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--log-format", "text"])
        .args(["--max-message-bytes", "1000000"])
        .args(["--max-http-connections-per-ip", "0"])
        .args(["--max-new-connections-per-ip", "0"])
        .stderr(std::process::Stdio::null());
    let server = common::spawn_listening(cmd);
    let pid = server.proc.0.id();
    // One session to post to, and the process warmed up.
    let mut tcp = TcpStream::connect(&server.addr).await.unwrap();
    tcp.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = answer(&mut tcp, &mut Vec::new()).await;
    assert_eq!(status, 200);
    let sid = body[1..].split('"').nth(3).unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kb(pid);
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut c = TcpStream::connect(&server.addr).await.unwrap();
        let head = format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: h\r\n\
             Content-Length: 1000000\r\n\r\n"
        );
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(&[b'x'; 1024]).await.unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_kb(pid).saturating_sub(before);
    // Promised: 100 MB. Arrived: 100 KB, plus what each connection costs.
    assert!(grown < 20_000, "RSS grew by {grown} KB");
    drop(held);
}

/// `Content-Length` is `1*DIGIT` (RFC 9110): a sign or anything else is refused as hyper refuses
/// it, and a client cannot make this path and a proxy in front of it disagree on a body's end.
#[tokio::test]
async fn content_length_is_digits_only() {
    let s = TestServer::start(&[]).await;
    for (value, want) in [
        ("+2", 400),
        ("-2", 400),
        ("0x2", 400),
        ("2a", 400),
        ("2", 200),
    ] {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let (_, _, body) = answer(&mut tcp, &mut buf).await;
        let sid = body[1..].split('"').nth(3).unwrap().to_string();
        let post = format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: h\r\n\
             Content-Length: {value}\r\n\r\n40"
        );
        tcp.write_all(post.as_bytes()).await.unwrap();
        let (status, _, body) = answer(&mut tcp, &mut buf).await;
        assert_eq!(status, want, "Content-Length: {value}: {body}");
    }
}

/// A client that half-closes its connection right after sending a poll has not made its next
/// poll a second one: each time, its session goes on (its next poll, on another connection, is
/// answered), however the server's reading of the two events interleaves.
#[tokio::test]
async fn a_poll_half_closed_at_once_leaves_the_session_usable() {
    let s = TestServer::start(&["--max-new-connections-per-ip", "0"]).await;
    for round in 0..20 {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let (_, _, body) = answer(&mut tcp, &mut buf).await;
        let sid = body[1..].split('"').nth(3).unwrap().to_string();
        let poll = format!(
            "GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: h\r\n\r\n"
        );
        let mut gone = TcpStream::connect(s.addr).await.unwrap();
        gone.write_all(poll.as_bytes()).await.unwrap();
        gone.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(gone);
        let post = format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: h\r\n\
             Content-Length: 2\r\n\r\n40"
        );
        tcp.write_all(post.as_bytes()).await.unwrap();
        let (status, _, body) = answer(&mut tcp, &mut buf).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "round {round}");
        tcp.write_all(poll.as_bytes()).await.unwrap();
        let (status, _, body) = answer(&mut tcp, &mut buf).await;
        assert_eq!(status, 200, "round {round}: {body}");
        assert!(body.starts_with("40{"), "round {round}: {body}");
    }
}
