//! Conformance with the Engine.IO v4 and Socket.IO v5 protocol documents, spoken byte by byte on
//! both transports, with the settings the official protocol test suite runs a server with
//! (`PING_INTERVAL_MS=300 PING_TIMEOUT_MS=200 MAX_MESSAGE_BYTES=1000000`): the handshake, the
//! heartbeat, closing, the upgrade, and the Socket.IO checks that hold for any server (unknown
//! namespace, invalid packets, no handshake).

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::raw::Raw;
use serde_json::{Value, json};

const FLAGS: [&str; 6] = [
    "--ping-interval-ms",
    "300",
    "--ping-timeout-ms",
    "200",
    "--max-message-bytes",
    "1000000",
];

/// A long-polling client: plain HTTP requests, as the protocol describes them.
struct Poll {
    http: reqwest::Client,
    base: String,
}

impl Poll {
    /// A poll of `sid` left waiting in the background: its status and body once answered.
    fn pending(&self, sid: &str) -> tokio::task::JoinHandle<(u16, String)> {
        let (http, url) = (self.http.clone(), format!("{}&sid={sid}", self.base));
        tokio::spawn(async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }

    fn new(s: &TestServer) -> Poll {
        Poll {
            http: reqwest::Client::new(),
            base: format!("{}/socket.io/?EIO=4&transport=polling", s.url()),
        }
    }

    /// Opens a session; its id and open packet.
    async fn open(&self) -> (String, Value) {
        let (status, body) = self.get_url(&self.base).await;
        assert_eq!(status, 200);
        let open: Value = serde_json::from_str(body.strip_prefix('0').expect("open")).unwrap();
        (open["sid"].as_str().unwrap().to_string(), open)
    }

    async fn get_url(&self, url: &str) -> (u16, String) {
        let r = self.http.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get(&self, sid: &str) -> (u16, String) {
        self.get_url(&format!("{}&sid={sid}", self.base)).await
    }

    async fn post(&self, sid: &str, body: &str) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}&sid={sid}", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Polls until a packet other than a ping comes (answering pings).
    async fn next(&self, sid: &str) -> Vec<String> {
        loop {
            let (status, body) = self.get(sid).await;
            assert_eq!(status, 200, "{body}");
            let packets: Vec<String> = body
                .split('\x1e')
                .filter(|p| *p != "2")
                .map(str::to_string)
                .collect();
            if body.split('\x1e').any(|p| p == "2") {
                assert_eq!(self.post(sid, "3").await.0, 200);
            }
            if !packets.is_empty() {
                return packets;
            }
        }
    }
}

/// A WebSocket request's status line, without completing anything.
async fn ws_status(s: &TestServer, query: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET /socket.io/?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Checks an open packet as the official suite does: exactly its five keys, and the settings
/// the server was started with.
fn check_open(open: &Value, upgrades: Value) {
    let mut keys: Vec<&str> = open
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    assert_eq!(open["sid"].as_str().map(str::len), Some(16));
    assert_eq!(open["upgrades"], upgrades);
    assert_eq!(open["pingInterval"], 300);
    assert_eq!(open["pingTimeout"], 200);
    assert_eq!(open["maxPayload"], 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_on_both_transports_say_what_the_protocol_says() {
    let s = TestServer::start(&FLAGS).await;
    let p = Poll::new(&s);
    let (_, open) = p.open().await;
    check_open(&open, json!(["websocket"]));
    let mut ws = Raw::open(&s).await;
    let open: Value =
        serde_json::from_str(ws.next_text().await.strip_prefix('0').unwrap()).unwrap();
    // A WebSocket has nowhere to upgrade.
    check_open(&open, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_handshakes_are_refused_with_400() {
    let s = TestServer::start(&FLAGS).await;
    let p = Poll::new(&s);
    let url = |q: &str| format!("{}/socket.io/?{q}", s.url());
    for q in [
        "transport=polling",
        "EIO=abc&transport=polling",
        "EIO=4",
        "EIO=4&transport=abc",
    ] {
        assert_eq!(p.get_url(&url(q)).await.0, 400, "{q}");
    }
    for method in [reqwest::Method::POST, reqwest::Method::PUT] {
        let r = p
            .http
            .request(method.clone(), url("EIO=4&transport=polling"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{method} without a session");
    }
    assert_eq!(p.get(&"x".repeat(16)).await.0, 400, "an unknown session id");
    for q in [
        "transport=websocket",
        "EIO=abc&transport=websocket",
        "EIO=4",
        "EIO=4&transport=abc",
    ] {
        let line = ws_status(&s, q).await;
        assert!(line.contains(" 400 "), "{q}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_heartbeat_pings_after_the_interval_and_closes_after_the_timeout() {
    let s = TestServer::start(&FLAGS).await;
    let p = Poll::new(&s);
    let (sid, _) = p.open().await;
    for i in 0..3 {
        let asked = Instant::now();
        let (status, body) = p.get(&sid).await;
        assert_eq!((status, body.as_str()), (200, "2"), "ping {i}");
        assert!(
            asked.elapsed() >= Duration::from_millis(200),
            "the ping comes after pingInterval, not at once ({:?})",
            asked.elapsed()
        );
        assert_eq!(p.post(&sid, "3").await, (200, "ok".to_string()));
    }
    // A session that stops answering is gone once interval + timeout have passed.
    let (quiet, _) = p.open().await;
    tokio::time::sleep(Duration::from_millis(300 + 200)).await;
    assert_eq!(p.get(&quiet).await.0, 400);
    s.wait_stats("nobody left", |v| v["connectedUsers"] == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_heartbeat_and_timeout() {
    let s = TestServer::start(&FLAGS).await;
    let mut ws = Raw::open(&s).await;
    ws.next().await.expect("the open packet");
    for _ in 0..3 {
        assert_eq!(ws.next().await, Some((1, b"2".to_vec())));
        ws.text("3").await;
    }
    // Silent: closed within interval + timeout (and a heartbeat tick).
    let started = Instant::now();
    ws.close_code().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_ends_the_session_on_both_transports() {
    let s = TestServer::start(&FLAGS).await;
    let p = Poll::new(&s);
    let (sid, _) = p.open().await;
    let (pending, closed) = tokio::join!(p.get(&sid), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        p.post(&sid, "1").await
    });
    assert_eq!(closed.0, 200);
    assert_eq!(
        pending,
        (200, "6".to_string()),
        "the pending poll gets a noop"
    );
    assert_eq!(p.get(&sid).await.0, 400, "the session is gone");

    let mut ws = Raw::open(&s).await;
    ws.next_text().await;
    ws.text("1").await;
    assert!(ws.close_code().await.is_some_and(|c| c == 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_polls_at_once_close_the_session() {
    let s = TestServer::start(&FLAGS).await;
    let p = Poll::new(&s);
    let (sid, _) = p.open().await;
    let (first, second) = tokio::join!(p.get(&sid), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        p.get(&sid).await
    });
    assert_eq!(
        first,
        (200, "1".to_string()),
        "the first poll gets the close packet"
    );
    assert_eq!(second.0, 400);
    assert_eq!(p.get(&sid).await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_moves_a_session_to_its_websocket_and_closes_the_polling_side() {
    let s = TestServer::start(&FLAGS).await;
    let p = Poll::new(&s);
    let (sid, _) = p.open().await;
    // A poll is waiting when the WebSocket comes.
    let pending = p.pending(&sid);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut ws = Raw::open_query(&s, &format!("EIO=4&transport=websocket&sid={sid}")).await;
    ws.text("2probe").await;
    assert_eq!(ws.next().await, Some((1, b"3probe".to_vec())));
    assert_eq!(
        pending.await.unwrap(),
        (200, "6".to_string()),
        "the pending poll is released with a noop"
    );
    ws.text("5").await;
    // The session lives on the WebSocket now: it joins there, and polling is refused.
    ws.text("40").await;
    let joined = ws.next_text().await;
    assert!(joined.starts_with("40{\"sid\":"), "{joined}");
    assert_eq!(
        p.get(&sid).await.0,
        400,
        "polling refused after the upgrade"
    );
    // One WebSocket per session: a second one is opened and closed at once (the protocol's
    // suite: "should ignore WebSocket connection with same sid after upgrade").
    let mut second = Raw::open_query(&s, &format!("EIO=4&transport=websocket&sid={sid}")).await;
    assert_eq!(second.close_code().await, Some(1008));
    ws.text(r#"42["authenticate",{"userId":"upgraded"}]"#).await;
    assert_eq!(ws.expect("authenticated").await["userId"], "upgraded");
    assert_eq!(s.hub.transports().websocket, 1);
    assert_eq!(s.hub.transports().polling, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_sent_to_a_session_is_lost_or_reordered_across_its_upgrade() {
    let s = TestServer::start(&["--signal-events-per-sec", "0"]).await;
    let p = Poll::new(&s);
    let (sid, _) = p.open().await;
    // Joined and authenticated over long-polling, in one post of three packets.
    let (status, _) = p
        .post(
            &sid,
            "40\x1e42[\"authenticate\",{\"userId\":\"poller\"}]\x1e42[\"find-random-partner\",{}]",
        )
        .await;
    assert_eq!(status, 200);
    let mut seen = Vec::new();
    while !seen.iter().any(|p: &String| p.contains("\"searching\"")) {
        seen.extend(p.next(&sid).await);
    }
    assert!(seen[0].starts_with("40{"), "{seen:?}");
    let mut partner = s.user("partner").await;
    partner.emit("find-random-partner", json!({})).await;
    let room = partner.expect("matched").await["roomId"].clone();
    // The partner relays candidates before, during and after the upgrade.
    let send = |n: usize| json!({"roomId": room, "candidate": {"candidate": format!("c{n}")}});
    for n in 0..20 {
        partner.emit("webrtc-ice-candidate", send(n)).await;
    }
    let mut ws = Raw::open_query(&s, &format!("EIO=4&transport=websocket&sid={sid}")).await;
    ws.text("2probe").await;
    assert_eq!(ws.next().await, Some((1, b"3probe".to_vec())));
    for n in 20..40 {
        partner.emit("webrtc-ice-candidate", send(n)).await;
    }
    ws.text("5").await;
    for n in 40..60 {
        partner.emit("webrtc-ice-candidate", send(n)).await;
    }
    // What the polling side had not handed out comes over the WebSocket, first.
    let mut got = Vec::new();
    for packet in &seen {
        if let Some(c) = candidate(packet) {
            got.push(c);
        }
    }
    while got.len() < 60 {
        let t = ws.next_text().await;
        if let Some(c) = candidate(&t) {
            got.push(c);
        }
    }
    let want: Vec<String> = (0..60).map(|n| format!("c{n}")).collect();
    assert_eq!(got, want);
}

/// The candidate a relayed `webrtc-ice-candidate` packet carries.
fn candidate(packet: &str) -> Option<String> {
    let v: Value = serde_json::from_str(packet.strip_prefix("42")?).ok()?;
    (v[0] == "webrtc-ice-candidate")
        .then(|| v[1]["candidate"]["candidate"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_refusals_and_invalid_packets() {
    let s = TestServer::start(&FLAGS).await;
    // An unknown namespace is refused, the connection kept.
    let mut ws = Raw::open(&s).await;
    ws.next_text().await;
    ws.text("40/random").await;
    assert_eq!(
        ws.next_text().await,
        r#"44/random,{"message":"Invalid namespace"}"#
    );
    // Invalid packets close the connection: an unknown packet type, an event that is no array,
    // an ack id that is no number.
    for bad in [
        "4abc",
        "42{}",
        r#"42abc["message-with-ack",1,"2",{"3":[false]}]"#,
    ] {
        let mut ws = Raw::open(&s).await;
        ws.join().await;
        ws.text(bad).await;
        assert!(
            ws.close_code().await.is_some(),
            "{bad} closes the connection"
        );
    }
    // The same over long-polling: 400, and the session is gone.
    let p = Poll::new(&s);
    for bad in ["4abc", "40\x1e42{}"] {
        let (sid, _) = p.open().await;
        assert_eq!(p.post(&sid, bad).await.0, 400, "{bad:?}");
        assert_eq!(p.get(&sid).await.0, 400);
    }
    // A well-formed event with a bad payload is answered, and the connection kept.
    let mut ws = Raw::open(&s).await;
    ws.join().await;
    ws.text(r#"42["authenticate",5]"#).await;
    let e = ws.expect("error").await;
    assert_eq!(e["code"], "invalid-payload");
    ws.text(r#"42["authenticate",{"userId":"kept"}]"#).await;
    assert_eq!(ws.expect("authenticated").await["userId"], "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_joins_is_closed() {
    let s = TestServer::start(&FLAGS).await;
    let mut ws = Raw::open(&s).await;
    let started = Instant::now();
    // It does not answer pings either: closed after interval + timeout.
    ws.close_code().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    s.wait_stats("nothing left", |v| v["connectedUsers"] == 0)
        .await;
    assert!(s.hub.sockets() == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_without_a_probe_releases_the_poll_and_the_session_still_ends_on_time() {
    let s = TestServer::start(&FLAGS).await;
    let p = Poll::new(&s);
    let (sid, _) = p.open().await;
    let pending = p.pending(&sid);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut ws = Raw::open_query(&s, &format!("EIO=4&transport=websocket&sid={sid}")).await;
    ws.text("5").await;
    let released = tokio::time::timeout(Duration::from_secs(3), pending)
        .await
        .expect("the waiting poll is released, not left hanging")
        .unwrap();
    assert_eq!(released, (200, "6".to_string()));
    ws.text("40").await;
    assert!(ws.next_text().await.starts_with("40{"));
    // Silent from here on: the heartbeat on the WebSocket ends it (the released poll took no
    // wake-up meant for the WebSocket's task).
    let started = Instant::now();
    while s.hub.sockets() != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the upgraded session outlived its ping timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
