//! Clients that know no resume token get back in (anonymous mode): the Node server's clients
//! send `authenticate {userId}` again after every reconnection. A dropped session's id is taken
//! at once; a live-looking one is asked first, and keeps its id if it answers.

mod common;

use std::time::{Duration, Instant};

use common::raw::Raw;
use common::{Client, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_drop_a_client_without_its_token_starts_afresh_and_the_partner_is_told() {
    let s = TestServer::start(&["--reconnect-grace-ms", "30000"]).await;
    let (a, mut b, room) = s.pair("alice", "bob").await;
    a.abort();
    assert_eq!(
        b.expect("partner-reconnecting").await,
        json!({"roomId": room, "partnerId": "alice"})
    );
    let mut a = Client::connect(s.addr).await;
    let asked = Instant::now();
    a.emit("authenticate", json!({"userId": "alice"})).await;
    let auth = a.expect("authenticated").await;
    assert!(asked.elapsed() < Duration::from_secs(3));
    assert_eq!(auth["userId"], "alice");
    assert_eq!(auth["resumed"], false, "a fresh session");
    assert_eq!(
        b.expect("partner-left").await,
        json!({"reason": "disconnect", "roomId": room, "canReconnect": false}),
        "the held room ended as for any departure"
    );
    s.wait_stats("alice back, alone", |v| {
        v["reconnectingUsers"] == 0 && v["connectedUsers"] == 2 && v["activeRooms"] == 0
    })
    .await;
    // And she can search and be matched again.
    a.emit("find-random-partner", json!({})).await;
    a.expect("searching").await;
    b.emit("find-random-partner", json!({})).await;
    assert_eq!(a.expect("matched").await["partnerId"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_asked_and_loses_its_id_to_the_newcomer() {
    let s = TestServer::start(&[]).await;
    // Alice's phone changes networks: its connection stays open but nothing answers any more.
    let mut silent = Raw::open(&s).await;
    silent.searching_as("alice").await;
    let mut b = s.user("bob").await;
    b.emit("find-random-partner", json!({})).await;
    let room = b.expect("matched").await["roomId"].clone();
    // From here on `silent` reads nothing and answers no ping.
    let mut a = Client::connect(s.addr).await;
    let asked = Instant::now();
    // With an acknowledgement: it comes once the probe has settled, after `authenticated`, and
    // says ok (no early answer while the old connection is asked).
    a.emit_with_ack(5, "authenticate", json!({"userId": "alice"}))
        .await;
    let (name, auth) = a.next_event().await;
    assert_eq!(name, "authenticated", "{auth}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "answered within 3 s: {:?}",
        asked.elapsed()
    );
    assert_eq!(auth["resumed"], false);
    assert_eq!(
        a.next_event().await,
        ("ack:5".to_string(), json!({"ok": true}))
    );
    let left = b.expect("partner-left").await;
    assert_eq!(left["roomId"], room);
    assert_eq!(left["canReconnect"], false);
    s.wait_stats("the silent connection gone", |v| {
        v["connectedUsers"] == 2 && v["activeRooms"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_take_the_id_of_a_connection_that_answers() {
    let s = TestServer::start(&[]).await;
    let (mut alice, mut bob, room) = s.pair("alice", "bob").await;
    let mut thief = Client::connect(s.addr).await;
    let asked = Instant::now();
    thief.emit("authenticate", json!({"userId": "alice"})).await;
    // Alice's client reads meanwhile (and so answers the server's ping).
    let (e, ()) = tokio::join!(
        thief.expect("auth-error"),
        alice.expect_silence(Duration::from_secs(2))
    );
    assert_eq!(e["code"], "user-id-taken");
    assert!(asked.elapsed() < Duration::from_secs(3));
    // Asked with an acknowledgement, the answer waits for the probe too, and is the refusal,
    // in the acknowledgement alone: no early `{ok: true}`, no `auth-error`.
    let mut thief = Client::connect(s.addr).await;
    thief
        .emit_with_ack(1, "authenticate", json!({"userId": "alice"}))
        .await;
    let ((name, ack), ()) = tokio::join!(
        thief.next_event(),
        alice.expect_silence(Duration::from_secs(2))
    );
    assert_eq!(name, "ack:1", "{ack}");
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["code"], "user-id-taken", "{ack}");
    thief
        .emit("typing", json!({"roomId": room, "isTyping": true}))
        .await;
    assert_eq!(
        thief.next_event().await.0,
        "error",
        "the next answer is this refusal's: no auth-error came with the acknowledgement"
    );
    // Alice noticed nothing and is still in her call.
    alice
        .emit(
            "chat-message",
            json!({"roomId": room, "message": "still here"}),
        )
        .await;
    assert_eq!(bob.expect("chat-message").await["message"], "still here");
}
