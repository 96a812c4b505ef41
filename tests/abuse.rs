//! What one client can make the server hold, measured on the server itself: bytes queued for
//! clients (`Conns::output`), connections counted per address, TCP connections held. Each
//! attack here grew the server by hundreds of MB to GB before output was budgeted in bytes.
//!
//! The attacking clients shrink their receive buffer, so that the few MB the kernel would
//! otherwise absorb on their behalf do not hide what the server holds.

mod common;

use std::time::Duration;

use common::raw::Raw;
use common::{Client, TestServer, eventually};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client that reads nothing takes this much before its window closes.
const SMALL_RCVBUF: Option<u32> = Some(4096);

/// How long a flood may wait for the server to take more before the test calls it stopped.
const PATIENCE: Duration = Duration::from_millis(1500);

/// Bytes the server holds queued for its clients, all connections together.
fn queued(s: &TestServer) -> usize {
    s.hub.output().queued_bytes
}

/// Sends all of `flood` on a client that reads nothing (the server keeps reading it), lets the
/// server handle it, and returns the bytes the server then holds queued.
async fn held_after(s: &TestServer, c: &mut Raw, flood: &[u8]) -> usize {
    let sent = c.flood(flood, PATIENCE).await;
    assert_eq!(sent, flood.len(), "the server kept reading");
    settle().await;
    queued(s)
}

/// Lets the server finish what it has read (the flood's last frames are still being handled
/// when the client's last write returns).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_from_a_client_that_never_reads_leave_one_pong_queued() {
    let s = TestServer::start(&[]).await;
    let mut c = Raw::open_with(&s, SMALL_RCVBUF).await;
    // 8 MB of pings with the largest payload a ping may carry; every one asks for a pong.
    let flood = Raw::encode(9, &[b'p'; 125]).repeat(64_000);
    // Pongs never fill the budget: reading goes on.
    let held = held_after(&s, &mut c, &flood).await;
    assert!(
        held <= 4096,
        "{held} bytes queued for a client that only pings (64,000 pongs would be 8 MB)"
    );
    assert_eq!(s.hub.sockets(), 1, "and the connection is still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_namespaces_are_repeated_back_by_their_first_64_bytes_only() {
    let s = TestServer::start(&[]).await;
    let ns = format!("40/{},", "n".repeat(60_000));
    let mut c = Raw::open_with(&s, SMALL_RCVBUF).await;
    let flood = Raw::encode(1, ns.as_bytes()).repeat(100);
    let held = held_after(&s, &mut c, &flood).await;
    assert!(
        held <= 16 * 1024,
        "{held} bytes queued after 100 refusals of a 60 KB namespace (6 MB if repeated whole)"
    );
    // What a refusal says.
    let mut d = Raw::open(&s).await;
    d.next_text().await;
    d.text(&ns).await;
    let reply = d.next_text().await;
    assert!(
        reply.starts_with(&format!("44/{},", "n".repeat(63))),
        "{}",
        &reply[..80.min(reply.len())]
    );
    assert!(reply.len() < 120, "a {}-byte refusal", reply.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_repeat_at_most_the_first_64_bytes_of_an_event_name() {
    let s = TestServer::start(&[]).await;
    let name = "x".repeat(60_000);
    let mut c = Raw::open_with(&s, SMALL_RCVBUF).await;
    c.join().await;
    // 40 unknown events: under the flood-disconnect threshold, each answered with an `error`
    // that names the event.
    let flood = Raw::encode(1, format!("42[\"{name}\"]").as_bytes()).repeat(40);
    let held = held_after(&s, &mut c, &flood).await;
    assert!(
        held <= 16 * 1024,
        "{held} bytes queued after 40 errors about a 60 KB name (2.4 MB if repeated whole)"
    );
    assert_eq!(s.hub.sockets(), 1, "not a flooder: still connected");
    let mut d = Client::connect(s.addr).await;
    d.emit_bare(&name).await;
    let e = d.expect("error").await;
    assert_eq!(e["code"], "unknown-event");
    assert_eq!(e["event"].as_str().unwrap(), &name[..64]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_to_a_partner_that_does_not_read_stop_at_its_byte_budget() {
    let s = TestServer::start(&[]).await;
    let mut bob = Raw::open_with(&s, SMALL_RCVBUF).await;
    bob.searching_as("bob").await;
    let mut alice = s.user("alice").await;
    alice.emit("find-random-partner", json!({})).await;
    let room = alice.expect("matched").await["roomId"].clone();
    // Bob reads nothing from here on. Alice sends 140 offers of 30 KB (4.2 MB), inside the
    // signalling rate limit's burst.
    let offer = json!({"roomId": room, "offer": {"type": "offer", "sdp": "v".repeat(30_000)}});
    for _ in 0..140 {
        alice.emit("webrtc-offer", offer.clone()).await;
    }
    let e = alice.expect_error("delivery-failed", "webrtc-offer").await;
    assert_eq!(e["code"], "delivery-failed");
    let held = queued(&s);
    let budget = 262_144;
    assert!(
        held <= budget + 64 * 1024,
        "{held} bytes queued for a partner that does not read (budget {budget})"
    );
    assert_eq!(s.hub.output().paused, 1, "bob's queue is full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_budget_is_not_read_from_and_then_closed() {
    let s = TestServer::start(&[
        "--socket-buffer-bytes",
        "16384",
        "--other-events-per-sec",
        "0",
        "--ping-interval-ms",
        "1000",
        "--ping-timeout-ms",
        "1500",
    ])
    .await;
    let mut c = Raw::open_with(&s, SMALL_RCVBUF).await;
    c.join().await;
    // Each unknown event of a 64-byte name provokes a 150-byte error: 200,000 of them would be
    // 30 MB of replies. The 15 MB they take to send is more than the kernel buffers on both
    // sides hold for a reader that stopped.
    let flood = Raw::encode(1, format!("42[\"{}\"]", "y".repeat(64)).as_bytes()).repeat(200_000);
    let sent = c.flood(&flood, PATIENCE).await;
    assert!(
        sent < flood.len(),
        "the server stopped reading once the replies filled the budget"
    );
    let out = s.hub.output();
    assert_eq!(out.paused, 1);
    assert!(
        out.queued_bytes <= 16_384 + 64 * 1024,
        "{} bytes queued, budget 16384",
        out.queued_bytes
    );
    // It cannot answer pings now (nothing of it is read): gone within interval + timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.hub.sockets() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still connected while over budget"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(queued(&s), 0, "and what it was owed is freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_join_count_toward_the_address_limit() {
    let s = TestServer::start(&["--max-connections-per-ip", "2"]).await;
    let idle = Raw::open(&s).await;
    let _idle2 = Raw::open(&s).await;
    // Neither sent `40`: both hold a slot anyway.
    let mut third = Raw::open(&s).await;
    third.next_text().await;
    third.text("40").await;
    let reply = third.next_text().await;
    assert!(
        reply.starts_with("44{") && reply.contains("rate-limited"),
        "{reply}"
    );
    assert_eq!(third.close_code().await, Some(1000), "refused and closed");
    drop(idle);
    let freed = eventually(Duration::from_secs(5), async || {
        let mut again = Raw::open(&s).await;
        again.next_text().await;
        again.text("40").await;
        again.next_text().await.starts_with("40{")
    })
    .await;
    assert!(freed, "a freed slot was never reusable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_per_address_are_capped_before_their_first_request() {
    let s = TestServer::start(&["--max-http-connections-per-ip", "4"]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(s.addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), extra.read(&mut buf))
        .await
        .expect("the fifth idle connection is closed at once, not left open");
    assert_eq!(n.unwrap_or(0), 0, "closed without an answer");
    // A place freed is a place again, and a request in it is served.
    drop(held.pop());
    let served = eventually(Duration::from_secs(5), async || {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.ok();
        answer.starts_with(b"HTTP/1.1 200")
    })
    .await;
    assert!(served, "the freed place was never given again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_bounded_and_counted_in_stats_and_metrics() {
    let s = TestServer::start(&["--max-blocks", "3"]).await;
    let mut a = s.user("alice").await;
    for i in 0..5 {
        a.emit("block-user", json!({"userId": format!("u{i}")}))
            .await;
    }
    let stats: Value = s.wait_stats("the blocks", |v| v["blocks"] == 3).await;
    assert_eq!(stats["blocks"], 3, "the oldest two were forgotten");
    let text = reqwest::get(format!("{}/metrics", s.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.lines().any(|l| l == "roulette_blocks 3"), "{text}");
    assert!(text.contains("roulette_output_queued_bytes"));
    assert!(text.contains("roulette_connections_paused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_file_needs_the_admin_token_as_the_dashboard_does() {
    let s = TestServer::start(&["--admin-token", "let-me-in"]).await;
    for path in ["/dashboard", "/dashboard.html"] {
        let r = reqwest::get(format!("{}{path}", s.url())).await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} without the token");
    }
    let r = reqwest::Client::new()
        .get(format!("{}/dashboard.html", s.url()))
        .bearer_auth("let-me-in")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status().as_u16(), 401);
}

/// The moderation page holds no data, so it is served without the token (the operator types the
/// token into it); what protects it is its headers: scripts from this server only, no framing,
/// no form submission anywhere. Its file name gets the same headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moderation_page_is_served_with_its_protections() {
    let s = TestServer::start(&["--admin-token", "let-me-in"]).await;
    for path in ["/dashboard/moderation", "/moderation.html"] {
        let r = reqwest::get(format!("{}{path}", s.url())).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        let page = r.text().await.unwrap();
        assert!(
            page.contains("<script src=\"/moderation.js\"></script>"),
            "{path}"
        );
        assert!(!page.contains("let-me-in"), "{path}");
    }
}

/// Opens a long-polling session; its id.
async fn polling_session(s: &TestServer, http: &reqwest::Client) -> String {
    let body = http
        .get(format!("{}/socket.io/?EIO=4&transport=polling", s.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open: Value = serde_json::from_str(body.strip_prefix('0').unwrap()).unwrap();
    open["sid"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_session_that_never_polls_holds_little_and_its_address_place() {
    let s = TestServer::start(&["--max-connections-per-ip", "2"]).await;
    let http = reqwest::Client::new();
    let sid = polling_session(&s, &http).await;
    let url = format!("{}/socket.io/?EIO=4&transport=polling&sid={sid}", s.url());
    // 100 posts of a 60 KB namespace each, and never a poll for the refusals.
    let ns = format!("40/{},", "n".repeat(60_000));
    for _ in 0..100 {
        let r = http.post(&url).body(ns.clone()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let held = queued(&s);
    assert!(
        held <= 16 * 1024,
        "{held} bytes queued for a session that never polls (6 MB if repeated whole)"
    );
    // Two sessions that never joined fill the address's two places.
    let _second = polling_session(&s, &http).await;
    let mut third = Raw::open(&s).await;
    third.next_text().await;
    third.text("40").await;
    let reply = third.next_text().await;
    assert!(reply.contains("rate-limited"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_session_that_never_reads_leaves_one_pong_queued() {
    let s = TestServer::start(&[]).await;
    let http = reqwest::Client::new();
    let sid = polling_session(&s, &http).await;
    let mut c = Raw::connect(
        &s,
        &format!("EIO=4&transport=websocket&sid={sid}"),
        SMALL_RCVBUF,
    )
    .await;
    c.text("2probe").await;
    assert_eq!(c.next().await, Some((1, b"3probe".to_vec())));
    c.text("5").await;
    let flood = Raw::encode(9, &[b'p'; 125]).repeat(64_000);
    let held = held_after(&s, &mut c, &flood).await;
    assert!(
        held <= 4096,
        "{held} bytes queued for an upgraded session that only pings"
    );
    assert_eq!(s.hub.transports().websocket, 1);
}

/// A long-polling client's post whose replies fill its queue waits for the client to poll, and
/// goes on as soon as a poll takes the queue (not at a timer's next look): none of its packets
/// is dropped, and the queue never holds much more than its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_held_back_by_a_full_queue_goes_on_when_the_client_polls() {
    let s = TestServer::start(&[
        "--socket-buffer-bytes",
        "16384",
        "--other-events-per-sec",
        "0",
    ])
    .await;
    let http = reqwest::Client::new();
    let sid = polling_session(&s, &http).await;
    let url = format!("{}/socket.io/?EIO=4&transport=polling&sid={sid}", s.url());
    assert_eq!(
        http.post(&url).body("40").send().await.unwrap().status(),
        200
    );
    let joined = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(joined.starts_with("40"), "{joined}");
    // 400 unknown events of a 64-byte name: each is answered with a 150-byte error, 60 KB in
    // all against a budget of 16 KB.
    const EVENTS: usize = 400;
    let event = format!("42[\"{}\"]", "y".repeat(64));
    let body = vec![event; EVENTS].join("\u{1e}");
    let post = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.post(&url).body(body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    assert!(
        eventually(Duration::from_secs(5), async || s.hub.output().paused == 1).await,
        "the post's replies fill the queue"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !post.is_finished(),
        "the post waits while the queue is full"
    );
    assert!(
        queued(&s) <= 16_384 + 1024,
        "{} bytes queued, budget 16384",
        queued(&s)
    );
    // Each poll takes the queue; the post goes on and fills it again, until all its packets
    // were handled.
    let mut errors = 0;
    while errors < EVENTS {
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            http.get(&url).send().await.unwrap().text().await.unwrap()
        })
        .await
        .expect("a poll is answered at once while errors wait");
        errors += got.matches("42[\"error\"").count();
    }
    assert_eq!(errors, EVENTS, "every packet of the post was answered once");
    let (status, text) = tokio::time::timeout(Duration::from_secs(5), post)
        .await
        .expect("the post ends once its last packet was handled")
        .unwrap();
    assert_eq!((status, text.as_str()), (200, "ok"));
}
