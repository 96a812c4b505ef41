//! The protocol over real sockets: every event, the isolation rule, order, and errors.

mod common;

use std::time::Duration;

use common::{Client, TestServer};
use serde_json::{Value, json};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_returns_identity_and_live_stats() {
    let s = TestServer::start(&[]).await;
    let mut c = Client::connect(s.addr).await;
    let a = c.authenticate("alice").await;
    assert_eq!(a["socketId"], c.sid.as_str());
    assert_eq!(
        a["serverStats"],
        json!({"connectedUsers": 1, "waitingUsers": 0, "activeRooms": 0})
    );
    // Without a userId the server assigns one.
    let mut anon = Client::connect(s.addr).await;
    anon.send_raw(r#"42["authenticate"]"#).await;
    let a = anon.expect("authenticated").await;
    assert!(a["userId"].as_str().unwrap().starts_with("user-"));
    assert_eq!(a["serverStats"]["connectedUsers"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_needs_authentication_first() {
    let s = TestServer::start(&[]).await;
    let mut c = Client::connect(s.addr).await;
    for event in roulette::EVENTS
        .into_iter()
        .filter(|e| *e != "authenticate")
    {
        c.emit(event, json!({"roomId": "x"})).await;
        c.expect_error("not-authenticated", event).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_online_elsewhere_is_refused() {
    let s = TestServer::start(&[]).await;
    let mut alice = s.user("alice").await;
    let mut thief = Client::connect(s.addr).await;
    thief.emit("authenticate", json!({"userId": "alice"})).await;
    // Alice's connection answers the server's check (her client reads, and so pongs), so the
    // id stays hers; she notices nothing.
    let (e, ()) = tokio::join!(
        thief.expect("auth-error"),
        alice.expect_silence(Duration::from_secs(2))
    );
    assert_eq!(e["code"], "user-id-taken");
    // The same socket cannot switch identity either.
    let mut bob = s.user("bob").await;
    bob.emit("authenticate", json!({"userId": "carol"})).await;
    assert_eq!(
        bob.expect("auth-error").await["code"],
        "already-authenticated"
    );
    // Re-authenticating as itself is fine.
    bob.authenticate("bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_searchers_are_matched() {
    let s = TestServer::start(&[]).await;
    let mut a = s.user("alice").await;
    let mut b = s.user("bob").await;
    a.emit(
        "find-random-partner",
        json!({"preferences": {"interests": ["music"]}}),
    )
    .await;
    let searching = a.expect("searching").await;
    assert_eq!(searching["status"], "searching");
    assert!(searching["message"].is_string() && searching["timestamp"].is_u64());
    let q = a.expect("queue-status").await;
    assert_eq!(q["position"], 1);
    assert_eq!(q["totalWaiting"], 1);
    assert!(q.as_object().unwrap().contains_key("estimatedWaitTime"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.emit(
        "find-random-partner",
        json!({"preferences": {"interests": ["Music ", "chess"]}}),
    )
    .await;
    let ma = a.expect("matched").await;
    let mb = b.expect("matched").await;
    assert_eq!(ma["commonInterests"], json!(["music"]));
    assert_eq!(mb["commonInterests"], json!(["music"]));
    assert_eq!(ma["roomId"], mb["roomId"]);
    assert_eq!(ma["partnerId"], "bob");
    assert_eq!(mb["partnerId"], "alice");
    assert_ne!(ma["isInitiator"], mb["isInitiator"]);
    assert!(ma["waitTime"].as_u64().unwrap() >= 50);
    assert!(mb["waitTime"].as_u64().unwrap() < 50);
    let st = s.wait_stats("one room", |v| v["activeRooms"] == 1).await;
    assert_eq!(st["waitingUsers"], 0);
    assert_eq!(st["totalMatches"], 1);
    assert_eq!(st["matchesLastMinute"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searching_twice_never_matches_a_user_with_itself() {
    let s = TestServer::start(&[]).await;
    let mut a = s.user("alice").await;
    a.emit_bare("find-random-partner").await;
    a.emit_bare("find-random-partner").await;
    a.expect_silence(QUIET).await;
    let st = s.get("/stats").await.1;
    assert_eq!(st["waitingUsers"], 1);
    assert_eq!(st["activeRooms"], 0);
    // Once in a room, searching again is refused: nobody is in two rooms.
    let mut b = s.user("bob").await;
    b.emit_bare("find-random-partner").await;
    a.expect("matched").await;
    b.expect("matched").await;
    b.emit_bare("find-random-partner").await;
    b.expect_error("already-in-room", "find-random-partner")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_only_the_partner_intact() {
    let s = TestServer::start(&[]).await;
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    let offer =
        json!({"type": "offer", "sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"});
    a.emit(
        "webrtc-offer",
        json!({"roomId": room, "offer": offer, "targetUserId": "bob"}),
    )
    .await;
    let got = b.expect("webrtc-offer").await;
    assert_eq!(
        got,
        json!({"offer": offer, "fromUserId": "alice", "roomId": room})
    );
    let answer = json!({"type": "answer", "sdp": "v=0\r\n"});
    b.emit("webrtc-answer", json!({"roomId": room, "answer": answer}))
        .await;
    assert_eq!(
        a.expect("webrtc-answer").await,
        json!({"answer": answer, "fromUserId": "bob", "roomId": room})
    );
    let cand = json!({"candidate": "candidate:1 1 udp 2122260223 10.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    a.emit(
        "webrtc-ice-candidate",
        json!({"roomId": room, "candidate": cand}),
    )
    .await;
    assert_eq!(
        b.expect("webrtc-ice-candidate").await,
        json!({"candidate": cand, "fromUserId": "alice", "roomId": room})
    );
    a.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_cannot_reach_a_pair() {
    let s = TestServer::start(&[]).await;
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    let (mut c, mut d, other_room) = s.pair("carol", "dave").await;
    let mut e = s.user("eve").await;
    let events = [
        (
            "webrtc-offer",
            json!({"roomId": room, "offer": {"type": "offer", "sdp": "x"}}),
        ),
        (
            "webrtc-answer",
            json!({"roomId": room, "answer": {"type": "answer", "sdp": "x"}}),
        ),
        (
            "webrtc-ice-candidate",
            json!({"roomId": room, "candidate": {"candidate": "x"}}),
        ),
        ("chat-message", json!({"roomId": room, "message": "hi"})),
        ("typing", json!({"roomId": room, "isTyping": true})),
        (
            "quality-report",
            json!({"roomId": room, "quality": "good", "stats": {}}),
        ),
        (
            "connection-status",
            json!({"roomId": room, "status": "connected"}),
        ),
    ];
    for (event, payload) in &events {
        // A user in another room, and a user in no room.
        c.emit(event, payload.clone()).await;
        c.expect_error("not-in-room", event).await;
        e.emit(event, payload.clone()).await;
        e.expect_error("not-in-room", event).await;
        // A member naming a target who is not its partner.
        let mut wrong_target = payload.clone();
        wrong_target["targetUserId"] = json!("carol");
        a.emit(event, wrong_target).await;
        a.expect_error("not-in-room", event).await;
        // A member naming the other room.
        let mut wrong_room = payload.clone();
        wrong_room["roomId"] = json!(other_room);
        a.emit(event, wrong_room).await;
        a.expect_error("not-in-room", event).await;
    }
    for client in [&mut a, &mut b, &mut c, &mut d, &mut e] {
        client.expect_silence(QUIET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_goes_to_both_members_and_partner_events_to_the_partner() {
    let s = TestServer::start(&[]).await;
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    a.emit("chat-message", json!({"roomId": room, "message": "hello"}))
        .await;
    let to_b = b.expect("chat-message").await;
    let to_a = a.expect("chat-message").await;
    assert_eq!(to_a, to_b, "the sender's copy is the same message");
    assert_eq!(to_b["message"], "hello");
    assert_eq!(to_b["type"], "text");
    assert_eq!(to_b["fromUserId"], "alice");
    assert!(to_b["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(to_b["timestamp"].is_u64());

    a.emit("typing", json!({"roomId": room, "isTyping": true}))
        .await;
    let t = b.expect("partner-typing").await;
    assert_eq!(
        (t["fromUserId"].clone(), t["isTyping"].clone()),
        (json!("alice"), json!(true))
    );

    let stats = json!({"latency": 42.0, "packetLoss": 0.5, "bandwidth": 900.0, "timestamp": 1.0});
    b.emit(
        "quality-report",
        json!({"roomId": room, "quality": "excellent", "stats": stats}),
    )
    .await;
    let q = a.expect("partner-quality-report").await;
    assert_eq!(q["quality"], "excellent");
    assert_eq!(q["stats"], stats);
    assert_eq!(q["fromUserId"], "bob");

    b.emit(
        "connection-status",
        json!({"roomId": room, "status": "connected", "quality": "good"}),
    )
    .await;
    let c = a.expect("partner-connection-status").await;
    assert_eq!(
        (c["status"].clone(), c["quality"].clone()),
        (json!("connected"), json!("good"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_partner_requeues_the_skipper_and_frees_the_partner() {
    let s = TestServer::start(&[]).await;
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    a.emit_bare("next-partner").await;
    let left = b.expect("partner-left").await;
    assert_eq!(
        left,
        json!({"reason": "next-partner", "roomId": room, "canReconnect": false})
    );
    assert_eq!(a.expect("searching").await["status"], "searching");
    // The ended room is gone at once: no relays into it, and the partner can search at once.
    b.emit(
        "chat-message",
        json!({"roomId": room, "message": "still there?"}),
    )
    .await;
    b.expect_error("not-in-room", "chat-message").await;
    let mut c = s.user("carol").await;
    c.emit_bare("find-random-partner").await;
    assert_eq!(c.expect("matched").await["partnerId"], "alice");
    assert_eq!(a.expect("matched").await["partnerId"], "carol");
    b.emit_bare("find-random-partner").await;
    b.expect("searching").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_chat_tells_both_and_lets_both_search_again() {
    let s = TestServer::start(&[]).await;
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    b.emit_bare("end-chat").await;
    assert_eq!(
        a.expect("partner-left").await,
        json!({"reason": "user-ended", "roomId": room, "canReconnect": false})
    );
    assert_eq!(
        b.expect("chat-ended").await,
        json!({"roomId": room, "reason": "ended"})
    );
    s.wait_stats("no rooms", |v| v["activeRooms"] == 0).await;
    a.emit_bare("find-random-partner").await;
    a.expect("searching").await;
    b.emit_bare("find-random-partner").await;
    assert_eq!(b.expect("matched").await["partnerId"], "alice");
    // end-chat while searching cancels the search.
    let mut c = s.user("carol").await;
    c.emit_bare("find-random-partner").await;
    c.expect("searching").await;
    c.emit_bare("end-chat").await;
    assert_eq!(
        c.expect("chat-ended").await,
        json!({"roomId": null, "reason": "search-cancelled"})
    );
    c.emit_bare("end-chat").await;
    c.expect_error("not-in-room", "end-chat").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_frees_the_partner_and_the_queue() {
    // Without a reconnection grace a drop ends the room at once.
    let s = TestServer::start(&["--reconnect-grace-ms", "0"]).await;
    let (a, mut b, room) = s.pair("alice", "bob").await;
    a.drop_connection().await;
    assert_eq!(
        b.expect("partner-left").await,
        json!({"reason": "disconnect", "roomId": room, "canReconnect": false})
    );
    let mut c = s.user("carol").await;
    c.emit_bare("find-random-partner").await;
    c.expect("searching").await;
    c.drop_connection().await;
    s.wait_stats("only bob", |v| {
        v["connectedUsers"] == 1 && v["waitingUsers"] == 0 && v["activeRooms"] == 0
    })
    .await;
    // Nobody is matched with the departed searcher.
    b.emit_bare("find-random-partner").await;
    b.expect("searching").await;
    b.expect_silence(QUIET).await;
    drop(b);
    s.wait_stats("everyone gone", |v| {
        v["connectedUsers"] == 0 && v["waitingUsers"] == 0 && v["activeRooms"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_end_at_the_maximum_duration() {
    let s = TestServer::start(&["--max-room-duration-ms", "1000"]).await;
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    for c in [&mut a, &mut b] {
        let e = c.expect("room-ended").await;
        assert_eq!(e["reason"], "max-duration");
        assert_eq!(e["roomId"], room.as_str());
        assert!(e["duration"].as_u64().unwrap() >= 1000);
    }
    a.emit_bare("find-random-partner").await;
    a.expect("searching").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_end_at_the_maximum_wait() {
    let s = TestServer::start(&["--max-waiting-time-ms", "1000"]).await;
    let mut a = s.user("alice").await;
    a.emit_bare("find-random-partner").await;
    let t = a.expect("search-timeout").await;
    assert!(t["waitTime"].as_u64().unwrap() >= 1000);
    assert_eq!(s.get("/stats").await.1["waitingUsers"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_positions_are_pushed_when_they_change() {
    let s = TestServer::start(&["--queue-status-interval-ms", "100"]).await;
    let prefs = json!({"preferences": {"gender": "female"}});
    let mut users = Vec::new();
    for (i, name) in ["u1", "u2", "u3"].into_iter().enumerate() {
        let mut c = s.user(name).await;
        c.emit("find-random-partner", prefs.clone()).await;
        c.expect("searching").await;
        assert_eq!(c.next_event().await.1["position"], i + 1);
        users.push(c);
    }
    users[0].emit_bare("end-chat").await;
    users[0].expect("chat-ended").await;
    for (i, c) in users.iter_mut().enumerate().skip(1) {
        let q = c.expect("queue-status").await;
        assert_eq!(q["position"], i);
        assert_eq!(q["totalWaiting"], 2);
    }
}

/// A refusal is answered once: in the acknowledgement when the client asked for one, with no
/// `error` (nor `auth-error`) event; with an `error` event when it did not, as the Node server's
/// clients expect. Each acknowledged refusal is followed by a refusal without an
/// acknowledgement: events are answered in order, so an `error` for the first would come first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_goes_in_the_acknowledgement_alone_when_there_is_one() {
    let s = TestServer::start(&["--search-events-per-min", "2"]).await;
    let mut a = s.user("alice").await;
    let not_in_room = json!({"roomId": "unknown", "isTyping": true});

    a.emit_with_ack(1, "typing", not_in_room.clone()).await;
    let (name, ack) = a.next_event().await;
    assert_eq!(name, "ack:1");
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["code"], "not-in-room", "{ack}");
    assert!(ack["message"].is_string(), "{ack}");
    a.emit(
        "chat-message",
        json!({"roomId": "unknown", "message": "hi"}),
    )
    .await;
    assert_eq!(
        a.next_event().await,
        (
            "error".to_string(),
            json!({"code": "not-in-room", "event": "chat-message",
                   "message": "you are not in that room, or that user is not your partner"})
        ),
        "no error for the acknowledged refusal, one for the other"
    );

    // An identity refusal: in the acknowledgement, no `auth-error`.
    a.emit_with_ack(2, "authenticate", json!({"userId": "mallory"}))
        .await;
    let (name, ack) = a.next_event().await;
    assert_eq!(name, "ack:2");
    assert_eq!(ack["code"], "already-authenticated", "{ack}");
    a.emit("typing", not_in_room.clone()).await;
    a.expect_error("not-in-room", "typing").await;

    // A rate-limited event: the acknowledgement says when to retry, as the `error` would.
    let mut id = 10;
    let refused = loop {
        id += 1;
        assert!(id < 40, "the search budget never ran out");
        a.emit_with_ack(id, "end-chat", json!({})).await;
        a.emit_with_ack(id + 100, "find-random-partner", json!({}))
            .await;
        let ack = loop {
            let (name, v) = a.next_event().await;
            assert_ne!(name, "error", "{v}");
            if name == format!("ack:{}", id + 100) {
                break v;
            }
        };
        if ack["ok"] == false {
            break ack;
        }
    };
    assert_eq!(refused["code"], "rate-limited", "{refused}");
    assert!(refused["retryAfterMs"].as_u64().unwrap() > 0, "{refused}");
    a.emit("typing", not_in_room).await;
    a.expect_error("not-in-room", "typing").await;
}

/// `n` users who search for a female partner and say nothing of their own gender: none of
/// them can be paired. Returns them and the first `queue-status` of each.
async fn unpairable(s: &TestServer, n: usize) -> (Vec<Client>, Vec<Value>) {
    let prefs = json!({"preferences": {"gender": "female"}});
    let mut users = Vec::new();
    let mut statuses = Vec::new();
    for i in 0..n {
        let mut c = s.user(&format!("lonely{i}")).await;
        c.emit("find-random-partner", prefs.clone()).await;
        c.expect("searching").await;
        statuses.push(c.expect("queue-status").await);
        users.push(c);
    }
    (users, statuses)
}

/// The estimate never promises a wait past the search's end (`MAX_WAITING_TIME_MS`, 5 s here),
/// however many wait ahead; with nobody matched in the last minute, `message` says there is no
/// estimate, and `estimatedWaitTime` stays a number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_status_never_outlasts_the_search_and_says_when_it_cannot_estimate() {
    let s = TestServer::start(&[
        "--max-waiting-time-ms",
        "5000",
        "--queue-status-interval-ms",
        "100",
    ])
    .await;
    let (mut users, statuses) = unpairable(&s, 8).await;
    for (i, q) in statuses.iter().enumerate() {
        assert_eq!(q["position"], i + 1, "{q}");
        assert!(q["estimatedWaitMs"].as_u64().unwrap() <= 5000, "{q}");
        assert!(q["estimatedWaitTime"].as_u64().unwrap() <= 5, "{q}");
        if i > 0 {
            assert_eq!(
                q["message"],
                format!(
                    "Position {} of {}: no estimate, nobody was matched in the last minute",
                    i + 1,
                    i + 1
                )
            );
        }
    }
    // Positions move: the updates are bounded too.
    users[0].emit_bare("end-chat").await;
    users[0].expect("chat-ended").await;
    for c in users.iter_mut().skip(1) {
        let q = c.expect("queue-status").await;
        assert!(q["estimatedWaitMs"].as_u64().unwrap() <= 5000, "{q}");
        assert!(
            q["message"].as_str().unwrap().contains("no estimate"),
            "{q}"
        );
    }
}

/// After a match, the recent rate (2 users a minute) would put these users minutes away, past
/// the end of their 5 s search: they are told the search will likely end first, and the figure
/// is at most the time left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_that_says_longer_than_the_search_gives_the_time_left() {
    let s = TestServer::start(&["--max-waiting-time-ms", "5000"]).await;
    let (_a, _b, _room) = s.pair("alice", "bob").await;
    let (_users, statuses) = unpairable(&s, 4).await;
    for q in statuses.iter().skip(1) {
        assert!(q["estimatedWaitMs"].as_u64().unwrap() <= 5000, "{q}");
        assert!(
            q["message"]
                .as_str()
                .unwrap()
                .contains("no partner is likely before this search ends"),
            "{q}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_kept_under_a_burst() {
    // A send queue larger than the burst: this test is about order, the next one about overflow.
    let s = TestServer::start(&[
        "--socket-buffer-packets",
        "8192",
        "--signal-events-per-sec",
        "0",
    ])
    .await;
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    const N: usize = 5000;
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(N);
        for _ in 0..N {
            let c = b.expect("webrtc-ice-candidate").await;
            got.push(c["candidate"]["candidate"].as_str().unwrap().to_string());
        }
        (got, b)
    });
    // The sender writes as fast as its socket takes it; the partner reads as it arrives.
    for i in 0..N {
        a.emit(
            "webrtc-ice-candidate",
            json!({"roomId": room, "candidate": {"candidate": format!("candidate:{i}"), "sdpMLineIndex": 0}}),
        )
        .await;
    }
    let (got, mut b) = reader.await.unwrap();
    for (i, c) in got.iter().enumerate() {
        assert_eq!(c, &format!("candidate:{i}"), "at {i}");
    }
    a.expect_silence(QUIET).await;
    b.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_that_stops_reading_never_causes_a_silent_loss() {
    let s = TestServer::start(&[
        "--socket-buffer-packets",
        "64",
        "--signal-events-per-sec",
        "0",
    ])
    .await;
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    const N: usize = 3000;
    // Bob reads nothing while Alice bursts: the kernel buffers and then Bob's send queue fill.
    // Alice reads her own events as she goes, as a real client does.
    let mut refused = 0;
    let mut count_refusals = |events: Vec<(String, serde_json::Value)>| {
        for (name, e) in events {
            assert_eq!(
                (name.as_str(), e["code"].as_str()),
                ("error", Some("delivery-failed")),
                "{e}"
            );
            refused += 1;
        }
    };
    for i in 0..N {
        a.emit(
            "webrtc-ice-candidate",
            json!({"roomId": room, "candidate": {"candidate": format!("candidate:{i}"), "pad": "x".repeat(8000)}}),
        )
        .await;
        count_refusals(a.drain_ready().await);
    }
    while let Ok(ev) = tokio::time::timeout(QUIET, a.next_event()).await {
        count_refusals(vec![ev]);
    }
    let mut delivered = Vec::new();
    while delivered.len() + refused < N {
        let c = b.expect("webrtc-ice-candidate").await;
        let n: usize = c["candidate"]["candidate"].as_str().unwrap()["candidate:".len()..]
            .parse()
            .unwrap();
        delivered.push(n);
    }
    assert!(refused > 0, "the burst was meant to overflow the queue");
    assert!(
        delivered.windows(2).all(|w| w[0] < w[1]),
        "delivered out of order"
    );
    assert_eq!(
        delivered.len() + refused,
        N,
        "every candidate was delivered or refused"
    );
    b.expect_silence(QUIET).await;
}

/// Payloads that must each be answered with `error` (never a crash, never silence).
fn malformed() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("authenticate", "42", "invalid-payload"),
        ("authenticate", r#""alice""#, "invalid-payload"),
        ("authenticate", r#"{"userId": 7}"#, "invalid-payload"),
        (
            "authenticate",
            r#"{"userId": "has space"}"#,
            "invalid-payload",
        ),
        (
            "authenticate",
            r#"{"userId": "a", "userInfo": {"age": "old"}}"#,
            "invalid-payload",
        ),
        (
            "authenticate",
            r#"{"userId": "a", "userInfo": {"languages": ["english"]}}"#,
            "invalid-payload",
        ),
        ("find-random-partner", "[]", "invalid-payload"),
        (
            "find-random-partner",
            r#"{"preferences": 5}"#,
            "invalid-payload",
        ),
        (
            "find-random-partner",
            r#"{"preferences": {"ageRange": [40, 20]}}"#,
            "invalid-payload",
        ),
        (
            "find-random-partner",
            r#"{"preferences": {"gender": "robot"}}"#,
            "invalid-payload",
        ),
        ("webrtc-offer", "null", "invalid-payload"),
        ("webrtc-offer", r#"{"roomId": "r"}"#, "invalid-payload"),
        (
            "webrtc-offer",
            r#"{"roomId": 5, "offer": {}}"#,
            "invalid-payload",
        ),
        (
            "webrtc-offer",
            r#"{"roomId": "r", "offer": "sdp"}"#,
            "invalid-payload",
        ),
        ("webrtc-answer", r#"{"answer": {}}"#, "invalid-payload"),
        (
            "webrtc-ice-candidate",
            r#"{"roomId": "r"}"#,
            "invalid-payload",
        ),
        ("webrtc-ice-candidate", "true", "invalid-payload"),
        ("chat-message", "null", "invalid-payload"),
        (
            "chat-message",
            r#"{"roomId": "r", "message": ""}"#,
            "invalid-payload",
        ),
        (
            "chat-message",
            r#"{"roomId": "r", "message": 12}"#,
            "invalid-payload",
        ),
        ("typing", r#"{"roomId": "r"}"#, "invalid-payload"),
        (
            "quality-report",
            r#"{"roomId": "r", "quality": "superb"}"#,
            "invalid-payload",
        ),
        (
            "quality-report",
            r#"{"roomId": "r", "stats": {"packetLoss": -3}}"#,
            "invalid-payload",
        ),
        (
            "connection-status",
            r#"{"roomId": "r", "status": "meh"}"#,
            "invalid-payload",
        ),
        ("connection-status", "{}", "invalid-payload"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_get_an_error_and_harm_nobody() {
    let s = TestServer::start(&[]).await;
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    let mut m = s.user("mallory").await;
    for (event, payload, code) in malformed() {
        m.send_raw(&format!(r#"42["{event}",{payload}]"#)).await;
        m.expect_error(code, event).await;
    }
    // Oversized values.
    let long = "x".repeat(2001);
    m.emit("chat-message", json!({"roomId": room, "message": long}))
        .await;
    m.expect_error("payload-too-large", "chat-message").await;
    let big_sdp = "a".repeat(40_000);
    m.emit(
        "webrtc-offer",
        json!({"roomId": room, "offer": {"sdp": big_sdp}}),
    )
    .await;
    m.expect_error("payload-too-large", "webrtc-offer").await;
    m.emit("authenticate", json!({"userId": "x".repeat(65)}))
        .await;
    m.expect_error("payload-too-large", "authenticate").await;
    // Unknown events, and frames that are not events at all.
    m.emit("hack-the-planet", json!({})).await;
    m.expect_error("unknown-event", "hack-the-planet").await;
    m.send_raw(r#"42["authenticate",{"userId":"#).await;
    // The malformed frame is refused by the engine, or answered: either way the pair is unharmed.
    a.emit(
        "chat-message",
        json!({"roomId": room, "message": "still fine"}),
    )
    .await;
    assert_eq!(b.expect("chat-message").await["message"], "still fine");
    assert_eq!(a.expect("chat-message").await["message"], "still fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_authenticate_gets_an_identity_not_a_crash() {
    let s = TestServer::start(&[]).await;
    let mut c = Client::connect(s.addr).await;
    c.send_raw(r#"42["authenticate",null]"#).await;
    let a = c.expect("authenticated").await;
    assert!(a["userId"].is_string());
    let (_, health) = s.get("/health").await;
    assert_eq!(health["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_stats_report_the_live_state() {
    // A short grace: the pair's connections drop below, and their room is held for it.
    let s = TestServer::start(&["--reconnect-grace-ms", "300"]).await;
    let (code, h) = s.get("/health").await;
    assert_eq!(code, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["uptime"].is_number());
    let (a, b, _) = s.pair("alice", "bob").await;
    let st = s.wait_stats("a pair", |v| v["activeRooms"] == 1).await;
    for key in [
        "connectedUsers",
        "waitingUsers",
        "activeRooms",
        "totalMatches",
        "matchesLastMinute",
        "averageWaitTime",
        "p95WaitTime",
        "uptime",
    ] {
        assert!(st[key].is_number(), "{key} in {st}");
    }
    assert!(st["memory"]["rssBytes"].as_u64().unwrap() > 0);
    drop((a, b));
    let st = s
        .wait_stats("zero", |v| {
            v["connectedUsers"] == 0 && v["activeRooms"] == 0
        })
        .await;
    assert_eq!(st["waitingUsers"], 0);
    assert_eq!(st["totalMatches"], 1, "history is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_json_fields_are_ignored() {
    let s = TestServer::start(&[]).await;
    let mut c = Client::connect(s.addr).await;
    c.emit(
        "authenticate",
        json!({"userId": "alice", "userInfo": {"name": "Alice", "age": 30, "languages": ["EN"]}, "extra": [1, 2]}),
    )
    .await;
    c.expect("authenticated").await;
    c.emit(
        "find-random-partner",
        json!({"preferences": {"language": "en", "mood": "happy"}}),
    )
    .await;
    c.expect("searching").await;
}
