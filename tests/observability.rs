//! Call quality aggregation, ICE servers, Prometheus metrics and the operator routes.

mod common;

use common::{Client, TestServer, assert_fresh_scrape, monitored_metrics, spawn_listening};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

async fn status(c: &mut Client, room: &str, status: &str) {
    c.emit(
        "connection-status",
        json!({"roomId": room, "status": status}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_outcomes_and_grades_are_aggregated_in_stats() {
    let s = TestServer::start(&[]).await;
    // A call that connects, with a good report, then ends.
    let (mut a, mut b, room) = s.pair("a", "b").await;
    status(&mut a, &room, "connecting").await;
    status(&mut a, &room, "connected").await;
    b.expect("partner-connection-status").await;
    b.expect("partner-connection-status").await;
    b.emit(
        "quality-report",
        json!({"roomId": room, "quality": "poor", "stats": {"packetLoss": 0.5, "latency": 40, "bandwidth": 900}}),
    )
    .await;
    let report = a.expect("partner-quality-report").await;
    assert_eq!(
        report["quality"], "poor",
        "the client's own grade is relayed"
    );
    assert_eq!(
        report["grade"], "excellent",
        "the server grades the numbers"
    );
    a.emit_bare("end-chat").await;
    a.expect("chat-ended").await;
    // A call whose ICE failed.
    let (mut c, _d, room2) = s.pair("c", "d").await;
    status(&mut c, &room2, "failed").await;
    // A call that never reports anything, skipped.
    let (mut e, _f, _) = s.pair("e", "f").await;
    e.emit_bare("end-chat").await;
    e.expect("chat-ended").await;
    let stats = s
        .wait_stats("three outcomes", |v| {
            let q = &v["quality"];
            q["callsConnected"] == 1 && q["callsFailed"] == 1 && q["callsUnreported"] == 1
        })
        .await;
    let q = &stats["quality"];
    assert_eq!(q["callsMatched"], 3);
    assert_eq!(q["connectionSuccessRate"], 0.5);
    assert_eq!(q["failuresByReason"], json!({"ice-failed": 1}));
    assert!(q["timeToConnectMs"]["p50"].is_u64());
    assert_eq!(
        q["grades"],
        json!({"excellent": 1, "good": 0, "fair": 0, "poor": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_ice_servers_with_turn_credentials() {
    let s = TestServer::start(&[
        "--stun-urls",
        "stun:stun.example.com:3478",
        "--turn-urls",
        "turn:turn.example.com:3478",
        "--turn-secret",
        "s3cr3t",
        "--turn-ttl",
        "600",
    ])
    .await;
    let mut a = Client::connect(s.addr).await;
    let auth = a.authenticate("alice").await;
    let ice = auth["iceServers"].as_array().unwrap();
    assert_eq!(ice[0], json!({"urls": ["stun:stun.example.com:3478"]}));
    let username = ice[1]["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice");
    let expiry: u64 = expiry.parse().unwrap();
    let now = roulette::unix_now();
    assert!((now + 590..=now + 610).contains(&expiry), "TTL applied");
    assert_eq!(
        ice[1]["credential"],
        roulette::turn_credential("s3cr3t", username)
    );
    let mut b = s.user("bob").await;
    a.emit_bare("find-random-partner").await;
    b.emit_bare("find-random-partner").await;
    let m = b.expect("matched").await;
    assert_eq!(
        m["iceServers"][1]["username"]
            .as_str()
            .unwrap()
            .split_once(':')
            .unwrap()
            .1,
        "bob"
    );

    let (code, body) = s.get("/ice-servers?userId=carol").await;
    assert_eq!(code, 200);
    assert_eq!(body["ttl"], 600);
    assert!(
        body["iceServers"][1]["username"]
            .as_str()
            .unwrap()
            .ends_with(":carol")
    );
    assert_eq!(s.get("/ice-servers?userId=not%20valid").await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_servers_need_a_token_when_tokens_are_on() {
    let secret = "an-hs256-secret-of-at-least-32-bytes";
    let s = TestServer::start(&[
        "--jwt-secret",
        secret,
        "--turn-urls",
        "turn:t",
        "--turn-secret",
        "x",
    ])
    .await;
    let (code, body) = s.get("/ice-servers?userId=mallory").await;
    assert_eq!((code, body["code"].as_str()), (401, Some("token-required")));
    let exp = jsonwebtoken::get_current_timestamp() + 60;
    let token = encode(
        &Header::default(),
        &json!({"sub": "alice", "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/ice-servers", s.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["iceServers"][1]["username"]
            .as_str()
            .unwrap()
            .ends_with(":alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_behind_the_admin_token() {
    let s = TestServer::start(&["--admin-token", "sesame"]).await;
    let (mut a, mut b, room) = s.pair("a", "b").await;
    a.emit(
        "webrtc-offer",
        json!({"roomId": room, "offer": {"type": "offer", "sdp": "v=0"}}),
    )
    .await;
    b.expect("webrtc-offer").await;
    a.emit_bare("nonsense").await;
    a.expect_error("unknown-event", "nonsense").await;

    let url = format!("{}/metrics", s.url());
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(
        http.get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let r = http.get(&url).bearer_auth("sesame").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| s.value.clone())
    };
    use prometheus_parse::Value as V;
    assert!(matches!(value("roulette_users_connected", None), Some(V::Gauge(n)) if n == 2.0));
    assert!(matches!(value("roulette_rooms_active", None), Some(V::Gauge(n)) if n == 1.0));
    assert!(matches!(value("roulette_connections", None), Some(V::Gauge(n)) if n == 2.0));
    assert!(matches!(value("roulette_matches_total", None), Some(V::Counter(n)) if n >= 1.0));
    assert!(matches!(
        value("roulette_relayed_messages_total", Some(("event", "webrtc-offer"))),
        Some(V::Counter(n)) if n >= 1.0
    ));
    assert!(matches!(
        value("roulette_errors_total", Some(("code", "unknown-event"))),
        Some(V::Counter(n)) if n >= 1.0
    ));
    assert!(
        matches!(value("roulette_wait_seconds", None), Some(V::Histogram(ref h)) if !h.is_empty()),
        "wait histogram: {text}"
    );
    assert!(matches!(value("process_resident_memory_bytes", None), Some(V::Gauge(n)) if n > 1e6));

    // The dashboard page is behind the same token.
    let dash = format!("{}/dashboard", s.url());
    assert_eq!(http.get(&dash).send().await.unwrap().status().as_u16(), 401);
    let ok = http
        .get(format!("{dash}?token=sesame"))
        .send()
        .await
        .unwrap();
    assert_ne!(ok.status().as_u16(), 401);
}

/// A single node exports, in its first scrape, every metric the dashboard and the alert rules
/// name, its counters at 0, except the cluster's own (`roulette_cluster_*`: a node without Redis
/// has none, and a `roulette_cluster_redis_up` of 0 would page an operator for nothing). Its
/// own process, so no other test's events are counted.
#[tokio::test]
async fn a_fresh_node_exports_every_monitored_metric_at_zero() {
    let mut cmd = std::process::Command::new(common::server_bin());
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--log-format", "text"])
        .env_clear()
        .stderr(std::process::Stdio::null());
    let server = spawn_listening(cmd);
    let text = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let wanted = monitored_metrics()
        .into_iter()
        .filter(|m| !m.starts_with("roulette_cluster_"))
        .collect();
    assert_fresh_scrape(&text, &wanted);
    assert!(
        !text.contains("roulette_cluster_"),
        "no cluster figures on a single node"
    );
}
