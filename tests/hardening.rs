//! Abuse limits, token authentication, session resumption and the reconnection grace, over
//! the real protocol.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Opts, Refused, TestServer};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

/// Authenticates `c` as `user` and returns its resume token.
async fn token_of(c: &mut Client, user: &str) -> String {
    let v = c.authenticate(user).await;
    assert_eq!(v["resumed"], false);
    v["resumeToken"].as_str().unwrap().to_string()
}

/// Pairs two fresh users and returns them with the room and alice's resume token.
async fn pair_with_token(s: &TestServer) -> (Client, Client, String, String) {
    let mut a = Client::connect(s.addr).await;
    let token = token_of(&mut a, "alice").await;
    let mut b = s.user("bob").await;
    a.emit("find-random-partner", json!({})).await;
    a.expect("searching").await;
    b.emit("find-random-partner", json!({})).await;
    let room = a.expect("matched").await["roomId"]
        .as_str()
        .unwrap()
        .to_string();
    b.expect("matched").await;
    (a, b, room, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_comes_back_within_the_grace_rejoins_its_room() {
    let s = TestServer::start(&[]).await;
    let (a, mut b, room, token) = pair_with_token(&s).await;
    a.abort();
    assert_eq!(
        b.expect("partner-reconnecting").await,
        json!({"roomId": room, "partnerId": "alice"})
    );
    // Relays to a partner who is away are kept for it (its session is held), not refused.
    b.emit(
        "chat-message",
        json!({"roomId": room, "message": "still there?"}),
    )
    .await;
    // Chat goes to both members: its own copy, and no `partner-away` before it.
    assert_eq!(b.expect("chat-message").await["message"], "still there?");
    s.wait_stats("alice reconnecting", |v| {
        v["reconnectingUsers"] == 1 && v["connectedUsers"] == 1 && v["activeRooms"] == 1
    })
    .await;

    let mut a = Client::connect(s.addr).await;
    a.emit(
        "authenticate",
        json!({"userId": "alice", "resumeToken": token}),
    )
    .await;
    let auth = a.expect("authenticated").await;
    assert_eq!(auth["resumed"], true);
    assert_ne!(auth["resumeToken"], token.as_str(), "a used token is spent");
    assert_eq!(
        a.expect("rejoined").await,
        json!({"roomId": room, "partnerId": "bob", "isInitiator": true})
    );
    assert_eq!(
        b.expect("partner-reconnected").await,
        json!({"roomId": room, "partnerId": "alice", "recovered": false})
    );
    // What was sent while it was away arrives after `rejoined`.
    assert_eq!(a.expect("chat-message").await["message"], "still there?");
    // The call can be renegotiated in the same room.
    a.emit(
        "webrtc-offer",
        json!({"roomId": room, "targetUserId": "bob", "offer": {"type": "offer", "sdp": "v=0"}}),
    )
    .await;
    assert_eq!(b.expect("webrtc-offer").await["fromUserId"], "alice");
    s.wait_stats("both back", |v| {
        v["reconnectingUsers"] == 0 && v["connectedUsers"] == 2 && v["activeRooms"] == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_comes_back_too_late_starts_afresh() {
    let s = TestServer::start(&["--reconnect-grace-ms", "300"]).await;
    let (a, mut b, room, token) = pair_with_token(&s).await;
    a.abort();
    assert_eq!(b.expect("partner-reconnecting").await["partnerId"], "alice");
    assert_eq!(
        b.expect("partner-left").await,
        json!({"reason": "disconnect", "roomId": room, "canReconnect": false})
    );
    let mut a = Client::connect(s.addr).await;
    a.emit(
        "authenticate",
        json!({"userId": "alice", "resumeToken": token}),
    )
    .await;
    assert_eq!(a.expect("authenticated").await["resumed"], false);
    a.expect_silence(Duration::from_millis(200)).await;
    s.wait_stats("no room", |v| {
        v["activeRooms"] == 0 && v["connectedUsers"] == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_who_skips_during_the_grace_ends_the_room() {
    let s = TestServer::start(&[]).await;
    let (a, mut b, room, token) = pair_with_token(&s).await;
    a.abort();
    b.expect("partner-reconnecting").await;
    b.emit_bare("next-partner").await;
    b.expect("searching").await;
    let mut a = Client::connect(s.addr).await;
    a.emit(
        "authenticate",
        json!({"userId": "alice", "resumeToken": token}),
    )
    .await;
    assert_eq!(a.expect("authenticated").await["resumed"], true);
    let ended = a.expect("room-ended").await;
    assert_eq!(ended["reason"], "partner-left");
    assert_eq!(ended["roomId"], room.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_token_moves_a_live_session_to_a_new_connection() {
    let s = TestServer::start(&[]).await;
    let (mut old, mut b, room, token) = pair_with_token(&s).await;
    let mut new = Client::connect(s.addr).await;
    new.emit(
        "authenticate",
        json!({"userId": "alice", "resumeToken": token}),
    )
    .await;
    assert_eq!(new.expect("authenticated").await["resumed"], true);
    assert_eq!(new.expect("rejoined").await["roomId"], room.as_str());
    assert_eq!(b.expect("partner-reconnected").await["partnerId"], "alice");
    let seen = old.until_closed().await;
    assert!(
        seen.iter()
            .any(|(n, v)| n == "error" && v["code"] == "session-replaced"),
        "{seen:?}"
    );
    assert!(old.closed);
    // The old connection's departure does not touch the moved session.
    b.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(s.hub.check_invariants(), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_and_skips_are_rate_limited_then_a_flooder_is_cut_off() {
    let s = TestServer::start(&[
        "--search-events-per-min",
        "6",
        "--flood-disconnect-after",
        "20",
    ])
    .await;
    let mut c = s.user("spammer").await;
    for _ in 0..10 {
        c.emit_bare("next-partner").await;
    }
    for _ in 0..10 {
        c.expect("searching").await;
    }
    c.emit_bare("next-partner").await;
    let e = c.expect_error("rate-limited", "next-partner").await;
    let retry = e["retryAfterMs"].as_u64().unwrap();
    assert!(retry > 0 && retry <= 10_000, "{e}");
    for _ in 0..40 {
        c.emit_bare("next-partner").await;
    }
    let seen = c.until_closed().await;
    let refused = seen.iter().filter(|(n, _)| n == "error").count();
    assert!(
        (19..=21).contains(&refused),
        "refused about 20 times before the cut: {refused}"
    );
    s.wait_stats("the flooder gone", |v| v["connectedUsers"] == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_next_door_costs_a_well_behaved_pair_nothing() {
    let s = TestServer::start(&[]).await;
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    let mut flooder = s.user("flooder").await;
    let flood = tokio::spawn(async move {
        let mut sent = 0;
        for i in 0..5000 {
            let msg = json!({"roomId": "x", "message": i.to_string()});
            if !flooder.try_emit("chat-message", msg).await {
                break;
            }
            sent += 1;
        }
        (sent, flooder.until_closed().await)
    });
    let mut latencies = Vec::new();
    for i in 0..100 {
        let sent = Instant::now();
        a.emit(
            "webrtc-ice-candidate",
            json!({"roomId": room, "candidate": {"candidate": format!("c{i}")}}),
        )
        .await;
        let got = b.expect("webrtc-ice-candidate").await;
        latencies.push(sent.elapsed());
        assert_eq!(got["candidate"]["candidate"], format!("c{i}"), "in order");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (sent, seen) = flood.await.unwrap();
    assert!(sent < 5000, "the flooder was cut off after {sent} events");
    assert!(
        seen.iter()
            .any(|(n, v)| n == "error" && v["code"] == "rate-limited"),
        "the flooder was told"
    );
    latencies.sort();
    println!(
        "pair relay latency during the flood: p50 {:?}, max {:?}",
        latencies[50], latencies[99]
    );
    s.wait_stats("the flooder gone", |v| v["connectedUsers"] == 2)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped_and_counted_behind_a_trusted_proxy() {
    let s = TestServer::start(&["--max-connections-per-ip", "2", "--trust-proxy", "1"]).await;
    let from = |ip| Opts {
        forwarded_for: Some(ip),
        ..Default::default()
    };
    let c1 = Client::open(s.addr, from("203.0.113.1")).await.unwrap();
    let _c2 = Client::open(s.addr, from("203.0.113.1")).await.unwrap();
    match Client::open(s.addr, from("203.0.113.1")).await {
        Err(Refused::ConnectError(m)) => assert!(m.contains("rate-limited"), "{m}"),
        other => panic!(
            "a third connection was not refused: {:?}",
            other.map(|c| c.sid)
        ),
    }
    let _other = Client::open(s.addr, from("203.0.113.2"))
        .await
        .expect("another address has its own budget");
    c1.drop_connection().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Client::open(s.addr, from("203.0.113.1")).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("a freed slot was not reusable: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_and_http_requests_are_limited_per_window() {
    let s = TestServer::start(&[
        "--max-new-connections-per-ip",
        "2",
        "--rate-limit-max-requests",
        "3",
    ])
    .await;
    let _a = Client::connect(s.addr).await;
    let _b = Client::connect(s.addr).await;
    assert!(matches!(
        Client::open(s.addr, Opts::default()).await,
        Err(Refused::Http(429))
    ));
    for _ in 0..3 {
        assert_eq!(s.get("/stats").await.0, 200);
    }
    let r = reqwest::get(format!("{}/stats", s.url())).await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate-limited");
    assert!(body["retryAfterMs"].as_u64().unwrap() > 0);
    assert_eq!(
        s.get("/health").await.0,
        200,
        "health checks are never limited"
    );
}

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes";

fn jwt(claims: Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn in_secs(s: i64) -> i64 {
    jsonwebtoken::get_current_timestamp() as i64 + s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_jwt_key_the_user_is_the_tokens_subject() {
    let s = TestServer::start(&["--jwt-secret", SECRET, "--jwt-audience", "roulette"]).await;
    let good = jwt(
        json!({"sub": "alice", "exp": in_secs(300), "aud": "roulette"}),
        SECRET,
    );
    // In the handshake; the claimed userId is ignored.
    let mut a = Client::open(
        s.addr,
        Opts {
            auth: Some(json!({"token": good})),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    a.emit("authenticate", json!({"userId": "mallory"})).await;
    assert_eq!(a.expect("authenticated").await["userId"], "alice");

    // In the event.
    let mut b = Client::connect(s.addr).await;
    let tok = jwt(
        json!({"sub": "bob", "exp": in_secs(300), "aud": "roulette"}),
        SECRET,
    );
    b.emit("authenticate", json!({"token": tok})).await;
    assert_eq!(b.expect("authenticated").await["userId"], "bob");

    let mut c = Client::connect(s.addr).await;
    let refused = [
        (json!({"userId": "carol"}), "token-required"),
        (
            json!({"token": jwt(json!({"sub": "carol", "exp": in_secs(300), "aud": "roulette"}), "forged-secret-forged-secret-forged!")}),
            "token-invalid",
        ),
        (
            json!({"token": jwt(json!({"sub": "carol", "exp": in_secs(-3600), "aud": "roulette"}), SECRET)}),
            "token-expired",
        ),
        (
            json!({"token": jwt(json!({"sub": "carol", "exp": in_secs(300), "aud": "elsewhere"}), SECRET)}),
            "token-wrong-audience",
        ),
    ];
    for (payload, code) in refused {
        c.emit("authenticate", payload).await;
        let e = c.expect("auth-error").await;
        assert_eq!(e["code"], code, "{e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    c.emit_bare("find-random-partner").await;
    c.expect_error("not-authenticated", "find-random-partner")
        .await;

    // A second device with a valid token for alice takes her session; the first is closed.
    let again = jwt(
        json!({"sub": "alice", "exp": in_secs(300), "aud": "roulette"}),
        SECRET,
    );
    let mut second = Client::connect(s.addr).await;
    second.emit("authenticate", json!({"token": again})).await;
    let auth = second.expect("authenticated").await;
    assert_eq!(
        (auth["userId"].as_str(), auth["resumed"].as_bool()),
        (Some("alice"), Some(true))
    );
    let seen = a.until_closed().await;
    assert!(
        seen.iter()
            .any(|(n, v)| n == "error" && v["code"] == "session-replaced")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_each_client_when_to_come_back() {
    let mut s = TestServer::start(&["--reconnect-spread-ms", "4000"]).await;
    let mut a = s.user("alice").await;
    let mut b = s.user("bob").await;
    s.shutdown();
    for c in [&mut a, &mut b] {
        let n = c.expect("server-shutdown").await;
        let delay = n["reconnectInMs"].as_u64().unwrap();
        assert!((1000..=5000).contains(&delay), "{n}");
        assert!(n["message"].as_str().is_some() && n["timestamp"].as_u64().is_some());
    }
}
