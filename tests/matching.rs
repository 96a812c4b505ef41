//! Preference behaviour over the real protocol: hard filters, interests and their relaxation,
//! previous partners, blocks and reports.

mod common;

use std::time::Duration;

use common::{Client, TestServer};
use serde_json::{Value, json};

const QUIET: Duration = Duration::from_millis(300);

async fn profiled(s: &TestServer, id: &str, info: Value) -> Client {
    let mut c = Client::connect(s.addr).await;
    c.emit("authenticate", json!({"userId": id, "userInfo": info}))
        .await;
    c.expect("authenticated").await;
    c
}

async fn search(c: &mut Client, prefs: Value) {
    c.emit("find-random-partner", json!({ "preferences": prefs }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_filters_hold_both_ways() {
    let s = TestServer::start(&[]).await;
    let mut de = profiled(
        &s,
        "de",
        json!({"languages": ["de"], "gender": "female", "age": 30}),
    )
    .await;
    search(&mut de, json!({"language": "de"})).await;
    de.expect("searching").await;
    // Speaks English only: de's wish is not met.
    let mut en = profiled(
        &s,
        "en",
        json!({"languages": ["en"], "gender": "male", "age": 30}),
    )
    .await;
    search(&mut en, json!({})).await;
    en.expect("searching").await;
    // Speaks German but wants someone younger than de: de does not meet *its* wish.
    let mut young = profiled(&s, "young", json!({"languages": ["de", "en"], "age": 20})).await;
    search(&mut young, json!({"ageRange": [18, 25]})).await;
    young.expect("searching").await;
    de.expect_silence(QUIET).await;
    // Speaks German, wants a woman: both ways hold.
    let mut ok = profiled(&s, "ok", json!({"languages": ["de"], "gender": "male"})).await;
    search(&mut ok, json!({"gender": "female"})).await;
    assert_eq!(ok.expect("matched").await["partnerId"], "de");
    assert_eq!(de.expect("matched").await["partnerId"], "ok");
    // en and young are compatible with each other... but young wants 18-25 and en gave 30.
    en.expect_silence(QUIET).await;
    assert_eq!(s.get("/stats").await.1["waitingUsers"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interests_insist_then_relax_and_the_user_is_told() {
    let s = TestServer::start(&["--preference-relax-ms", "600"]).await;
    let mut a = s.user("a").await;
    search(&mut a, json!({"interests": ["music"]})).await;
    let searching = a.expect("searching").await;
    assert_eq!(searching["relaxed"], false);
    assert_eq!(a.expect("queue-status").await["relaxed"], false);
    let mut b = s.user("b").await;
    search(&mut b, json!({})).await;
    b.expect("searching").await;
    // a insists on sharing an interest for 600 ms, then accepts b; it is told it relaxed.
    let (name, data) = a.next_event().await;
    let matched = if name == "queue-status" {
        assert_eq!(data["relaxed"], true, "{data}");
        a.expect("matched").await
    } else {
        assert_eq!(name, "matched");
        data
    };
    assert_eq!(matched["partnerId"], "b");
    assert_eq!(matched["commonInterests"], json!([]));
    assert!(matched["waitTime"].as_u64().unwrap() >= 600);
    b.expect("matched").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_partner_is_not_met_again_while_others_wait() {
    let s = TestServer::start(&[]).await;
    let mut a = profiled(&s, "a", json!({"gender": "female"})).await;
    let mut b = profiled(&s, "b", json!({"gender": "male"})).await;
    search(&mut a, json!({})).await;
    a.expect("searching").await;
    search(&mut b, json!({})).await;
    b.expect("matched").await;
    a.expect("matched").await;
    // b skips a and waits; then w, who only wants women, waits behind it.
    b.emit_bare("next-partner").await;
    a.expect("partner-left").await;
    b.expect("searching").await;
    let mut w = profiled(&s, "w", json!({"gender": "male"})).await;
    search(&mut w, json!({"gender": "female"})).await;
    w.expect("searching").await;
    // b waited longest, but it is a's previous partner: a meets w.
    search(&mut a, json!({})).await;
    assert_eq!(a.expect("matched").await["partnerId"], "w");
    // With nobody else left, the previous partner is fine.
    a.emit_bare("end-chat").await;
    a.expect("chat-ended").await;
    search(&mut a, json!({})).await;
    assert_eq!(a.expect("matched").await["partnerId"], "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_and_reported_users_are_never_matched() {
    let s = TestServer::start(&[]).await;
    let (mut a, mut b, _) = s.pair("a", "b").await;
    a.emit("report-user", json!({"userId": "b", "reason": "rude"}))
        .await;
    a.emit_bare("end-chat").await;
    a.expect("chat-ended").await;
    b.expect("partner-left").await;
    search(&mut a, json!({})).await;
    a.expect("searching").await;
    search(&mut b, json!({})).await;
    b.expect("searching").await;
    a.expect_silence(QUIET).await;
    let st = s.get("/stats").await.1;
    assert_eq!(st["waitingUsers"], 2);
    assert_eq!(st["reportsTotal"], 1);
    let mut c = s.user("c").await;
    c.emit("block-user", json!({"userId": "a"})).await;
    search(&mut c, json!({})).await;
    assert_eq!(c.expect("matched").await["partnerId"], "b");
    // Bad moderation payloads are refused.
    a.emit("block-user", json!({})).await;
    a.expect_error("invalid-payload", "block-user").await;
    a.emit("block-user", json!({"userId": "a"})).await;
    a.expect_error("invalid-payload", "block-user").await;
    a.emit(
        "report-user",
        json!({"userId": "b", "reason": "x".repeat(501)}),
    )
    .await;
    a.expect_error("payload-too-large", "report-user").await;
}
