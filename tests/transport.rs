//! Transports, origins and shutdown: what sits around the protocol.

mod common;

use std::time::Duration;

use common::{Client, TestServer};
use serde_json::{Value, json};

/// One long-polling Socket.IO session, spoken by hand over HTTP.
struct Polling {
    http: reqwest::Client,
    url: String,
}

impl Polling {
    async fn open(s: &TestServer) -> Polling {
        let http = reqwest::Client::new();
        let base = format!("{}/socket.io/?EIO=4&transport=polling", s.url());
        let open = http.get(&base).send().await.unwrap().text().await.unwrap();
        let v: Value = serde_json::from_str(open.strip_prefix('0').expect("open packet")).unwrap();
        let url = format!("{base}&sid={}", v["sid"].as_str().unwrap());
        let p = Polling { http, url };
        p.post("40").await;
        // The namespace reply may come after a ping under load: answer pings as a client does.
        let mut seen = Vec::new();
        for _ in 0..20 {
            let packets = p.poll().await;
            if packets.iter().any(|pk| pk.starts_with("40")) {
                return p;
            }
            if packets.iter().any(|pk| pk == "2") {
                p.post("3").await;
            }
            seen.extend(packets);
        }
        panic!("no namespace reply over polling: {seen:?}");
    }

    async fn post(&self, packet: &str) {
        let r = self
            .http
            .post(&self.url)
            .body(packet.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// One poll: the packets the server had queued, split on the record separator.
    async fn poll(&self) -> Vec<String> {
        let body = self
            .http
            .get(&self.url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        body.split('\u{1e}').map(str::to_string).collect()
    }

    async fn expect(&self, event: &str) -> Value {
        for _ in 0..20 {
            for pk in self.poll().await {
                if let Some(body) = pk.strip_prefix("42") {
                    let v: Value = serde_json::from_str(body).unwrap();
                    if v[0] == event {
                        return v[1].clone();
                    }
                }
            }
        }
        panic!("no {event} over polling");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_client_meets_a_websocket_client() {
    let s = TestServer::start(&[]).await;
    let p = Polling::open(&s).await;
    p.post(r#"42["authenticate",{"userId":"poller"}]"#).await;
    assert_eq!(p.expect("authenticated").await["userId"], "poller");
    p.post(r#"42["find-random-partner",{}]"#).await;
    p.expect("searching").await;
    let mut ws = s.user("socket").await;
    ws.emit_bare("find-random-partner").await;
    let m = ws.expect("matched").await;
    assert_eq!(m["partnerId"], "poller");
    let room = m["roomId"].as_str().unwrap().to_string();
    assert_eq!(p.expect("matched").await["partnerId"], "socket");
    ws.emit(
        "chat-message",
        json!({"roomId": room, "message": "over two transports"}),
    )
    .await;
    assert_eq!(
        p.expect("chat-message").await["message"],
        "over two transports"
    );
    assert_eq!(
        ws.expect("chat-message").await["message"],
        "over two transports"
    );
    p.post(&format!(
        r#"42["webrtc-answer",{{"roomId":"{room}","answer":{{"type":"answer","sdp":"v=0"}}}}]"#
    ))
    .await;
    assert_eq!(ws.expect("webrtc-answer").await["fromUserId"], "poller");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_checked_against_client_origin() {
    let s = TestServer::start(&[
        "--client-origin",
        "https://app.example,http://localhost:5173",
    ])
    .await;
    assert!(
        Client::connect_with_origin(s.addr, Some("https://app.example"))
            .await
            .is_ok()
    );
    assert!(
        Client::connect_with_origin(s.addr, None).await.is_ok(),
        "native apps send no Origin"
    );
    match Client::connect_with_origin(s.addr, Some("https://evil.example")).await {
        Err(code) => assert_eq!(code, 403),
        Ok(_) => panic!("a foreign origin was let in"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_the_configured_origins() {
    let s = TestServer::start(&["--client-origin", "https://app.example"]).await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/stats", s.url()))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let r = http
        .get(format!("{}/stats", s.url()))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // The polling handshake is refused outright for a foreign origin.
    let r = http
        .get(format!("{}/socket.io/?EIO=4&transport=polling", s.url()))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // Preflight for the allowed one.
    let r = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/socket.io/?EIO=4&transport=polling", s.url()),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );

    let open = TestServer::start(&[]).await;
    let r = http
        .get(format!("{}/health", open.url()))
        .header("origin", "https://anything.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_everyone_and_finishes_in_time_even_if_clients_stay() {
    let mut s = TestServer::start(&["--shutdown-timeout-ms", "2000"]).await;
    let (mut a, mut b, _) = s.pair("alice", "bob").await;
    let mut idle = Client::connect(s.addr).await;
    let started = tokio::time::Instant::now();
    let task = s.shutdown();
    for c in [&mut a, &mut b, &mut idle] {
        let seen = c.until_closed().await;
        let notice = seen
            .iter()
            .find(|(name, _)| name == "server-shutdown")
            .unwrap_or_else(|| panic!("no server-shutdown in {seen:?}"));
        assert!(notice.1["message"].is_string() && notice.1["timestamp"].is_u64());
    }
    let result = tokio::time::timeout(Duration::from_secs(4), task)
        .await
        .expect("the server stopped within its shutdown timeout");
    assert!(result.unwrap().is_ok());
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_503_while_shutting_down() {
    let mut s = TestServer::start(&["--shutdown-timeout-ms", "3000"]).await;
    let _a = s.user("alice").await;
    let url = s.url();
    s.shutdown();
    // The notice goes out first; /health answers 503 until the listener closes.
    let mut saw_503 = false;
    for _ in 0..50 {
        match reqwest::get(format!("{url}/health")).await {
            Ok(r) if r.status().as_u16() == 503 => {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["status"], "shutting-down");
                saw_503 = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => break,
        }
    }
    assert!(saw_503, "health never reported the shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_of_a_burst_is_answered() {
    // One address opening 300 connections at once: the per-address limits are off here.
    let s = TestServer::start(&[
        "--max-connections-per-ip",
        "0",
        "--max-new-connections-per-ip",
        "0",
    ])
    .await;
    let mut tasks = Vec::new();
    for i in 0..300 {
        let addr = s.addr;
        // Each client authenticates the moment its namespace connect is acknowledged.
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            c.authenticate(&format!("burst-{i}")).await;
            c
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.expect("every client authenticated"));
    }
    assert_eq!(s.get("/stats").await.1["connectedUsers"], 300);
    drop(clients);
    s.wait_stats("all gone", |v| v["connectedUsers"] == 0).await;
}
