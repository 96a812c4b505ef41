//! The operators' controls over real sockets: the admin API and its token, kicks, bans by user
//! id and by address (at `authenticate`, at the handshake, and for a user who is online), a ban
//! that outlives a restart, the auto-ban after enough distinct reporters, and the reports feed.

mod common;

use common::{Client, Opts, Refused, TestServer};
use serde_json::{Value, json};

const TOKEN: &str = "operator-secret-token";

/// An admin API request: `(status, body)`.
async fn admin(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", s.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    admin(s, reqwest::Method::GET, path, Some(TOKEN), None).await
}

async fn post(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    admin(s, reqwest::Method::POST, path, Some(TOKEN), Some(body)).await
}

async fn server(extra: &[&str]) -> TestServer {
    let mut flags = vec!["--admin-token", TOKEN];
    flags.extend_from_slice(extra);
    TestServer::start(&flags).await
}

/// A client from `ip` (the server trusts one proxy's `X-Forwarded-For`).
async fn from(s: &TestServer, ip: &str) -> Result<Client, Refused> {
    Client::open(
        s.addr,
        Opts {
            forwarded_for: Some(ip),
            ..Default::default()
        },
    )
    .await
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_is_rate_limited_like_the_other_routes() {
    let s = server(&[
        "--rate-limit-max-requests",
        "6",
        "--rate-limit-window-ms",
        "60000",
    ])
    .await;
    let (code, body) = admin(&s, reqwest::Method::GET, "/admin/bans", None, None).await;
    assert_eq!((code, body["code"].as_str()), (401, Some("unauthorized")));
    let (code, _) = admin(&s, reqwest::Method::GET, "/admin/bans", Some("wrong"), None).await;
    assert_eq!(code, 401);
    let (code, _) = admin(
        &s,
        reqwest::Method::POST,
        "/admin/kick",
        Some("wrong"),
        Some(json!({"userId": "a"})),
    )
    .await;
    assert_eq!(code, 401, "refused before the body is read");
    let (code, body) = get(&s, "/admin/bans").await;
    assert_eq!((code, &body["bans"]), (200, &json!([])));
    // Six requests in the window, the seventh is refused.
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(get(&s, "/admin/bans").await.0);
    }
    assert_eq!(
        codes,
        [200, 200, 429, 429],
        "the limit counts the admin routes too"
    );

    // Without ADMIN_TOKEN the API does not exist.
    let open = TestServer::start(&[]).await;
    let (code, body) = admin(
        &open,
        reqwest::Method::GET,
        "/admin/bans",
        Some("anything"),
        None,
    )
    .await;
    assert_eq!((code, body["code"].as_str()), (404, Some("admin-disabled")));
}

#[tokio::test]
async fn bad_bodies_are_refused_with_a_code_and_change_nothing() {
    let s = server(&[]).await;
    for body in [
        json!({"durationSec": 60, "reason": "x"}),
        json!({"userId": "eve", "address": "10.0.0.1", "durationSec": 60, "reason": "x"}),
        json!({"userId": "eve", "durationSec": 0, "reason": "x"}),
        json!({"userId": "not a valid id!", "durationSec": 60, "reason": "x"}),
        json!({"address": "10.0.0.0/40", "durationSec": 60, "reason": "x"}),
        json!({"userId": "eve", "durationSec": 60, "reason": "x".repeat(501)}),
        json!({"userId": "eve", "durationSec": "soon", "reason": "x"}),
        json!({"userId": "eve", "durationSec": 60, "reason": "x", "extra": 1}),
    ] {
        let (code, r) = post(&s, "/admin/bans", body.clone()).await;
        assert_eq!(code, 400, "{body}: {r}");
        assert_eq!(r["code"], "invalid-payload", "{body}: {r}");
        assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (code, r) = post(&s, "/admin/kick", json!({"user": "eve"})).await;
    assert_eq!((code, r["code"].as_str()), (400, Some("invalid-payload")));
    let (code, _) = get(&s, "/admin/reports?limit=many").await;
    assert_eq!(code, 400);
    assert_eq!(get(&s, "/admin/bans").await.1["bans"], json!([]));
    let (code, r) = get(&s, "/admin/users/nobody").await;
    assert_eq!((code, r["code"].as_str()), (404, Some("not-found")));
    let (code, _) = admin(
        &s,
        reqwest::Method::DELETE,
        "/admin/bans/ban-none",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_kicked_user_is_told_and_closed_and_its_partner_told_as_for_any_departure() {
    let s = server(&[]).await;
    let (mut alice, mut bob, room) = s.pair("alice", "bob").await;
    let (code, view) = get(&s, "/admin/users/alice").await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["connected"], true);
    assert_eq!(view["roomId"], room.as_str());
    assert_eq!(view["partnerId"], "bob");
    assert_eq!(view["node"], "local");

    let (code, r) = post(
        &s,
        "/admin/kick",
        json!({"userId": "alice", "reason": "abuse"}),
    )
    .await;
    assert_eq!((code, r["kicked"].as_bool()), (200, Some(true)), "{r}");
    let seen = alice.until_closed().await;
    let kicked = seen
        .iter()
        .find(|(e, _)| e == "kicked")
        .expect("told first");
    assert_eq!(kicked.1["reason"], "abuse");
    let left = bob.expect("partner-left").await;
    assert_eq!(left["reason"], "disconnect");
    assert_eq!(left["roomId"], room.as_str());
    // Kicked, not banned: alice may come back.
    s.user("alice").await;
    let (code, _) = post(&s, "/admin/kick", json!({"userId": "zed"})).await;
    assert_eq!(code, 404, "not connected");
}

#[tokio::test]
async fn a_banned_user_is_removed_at_once_and_refused_at_authenticate_until_unbanned() {
    let s = server(&[]).await;
    let (mut eve, mut bob, _room) = s.pair("eve", "bob").await;
    let (code, made) = post(
        &s,
        "/admin/bans",
        json!({"userId": "eve", "durationSec": 3600, "reason": "spam"}),
    )
    .await;
    assert_eq!(code, 201, "{made}");
    let until = made["until"].as_u64().unwrap();
    let seen = eve.until_closed().await;
    let banned = seen
        .iter()
        .find(|(e, _)| e == "banned")
        .expect("told first");
    assert_eq!(
        (banned.1["reason"].as_str(), banned.1["until"].as_u64()),
        (Some("spam"), Some(until))
    );
    assert_eq!(bob.expect("partner-left").await["reason"], "disconnect");

    let mut again = Client::connect(s.addr).await;
    again.emit("authenticate", json!({"userId": "eve"})).await;
    let refused = again.expect("auth-error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["until"].as_u64()),
        (Some("banned"), Some(until)),
        "{refused}"
    );

    let (_, list) = get(&s, "/admin/bans").await;
    assert_eq!(list["bans"][0]["userId"], "eve", "{list}");
    assert_eq!(list["bans"][0]["id"], made["id"]);
    assert_eq!(list["bans"][0]["source"]["kind"], "operator");
    let (code, view) = get(&s, "/admin/users/eve").await;
    assert_eq!(
        (code, view["connected"].as_bool()),
        (200, Some(false)),
        "known by its ban: {view}"
    );
    assert_eq!(view["ban"]["id"], made["id"]);

    let path = format!("/admin/bans/{}", made["id"].as_str().unwrap());
    let (code, _) = admin(&s, reqwest::Method::DELETE, &path, Some(TOKEN), None).await;
    assert_eq!(code, 200);
    s.user("eve").await;
}

#[tokio::test]
async fn an_address_ban_refuses_the_handshake_and_removes_who_is_online_from_it() {
    let s = server(&["--trust-proxy", "1"]).await;
    let mut online = from(&s, "203.0.113.7").await.unwrap();
    online.authenticate("mallory").await;
    let mut elsewhere = from(&s, "198.51.100.1").await.unwrap();
    elsewhere.authenticate("carol").await;
    let mut v6 = from(&s, "2001:db8::5").await.unwrap();
    v6.authenticate("trent").await;

    let (code, made) = post(
        &s,
        "/admin/bans",
        json!({"address": "203.0.113.0/24", "durationSec": 600, "reason": "botnet"}),
    )
    .await;
    assert_eq!(code, 201, "{made}");
    let seen = online.until_closed().await;
    assert!(
        seen.iter()
            .any(|(e, v)| e == "banned" && v["reason"] == "botnet"),
        "{seen:?}"
    );
    match from(&s, "203.0.113.99").await {
        Err(Refused::Http(403)) => {}
        other => panic!(
            "a banned address is refused at the handshake: {:?}",
            other.map(|_| ())
        ),
    }
    let (code, made6) = post(
        &s,
        "/admin/bans",
        json!({"address": "2001:db8::/32", "durationSec": 600, "reason": "v6"}),
    )
    .await;
    assert_eq!(code, 201, "{made6}");
    assert!(v6.until_closed().await.iter().any(|(e, _)| e == "banned"));
    assert!(matches!(
        from(&s, "2001:db8:ffff::1").await,
        Err(Refused::Http(403))
    ));
    // Others are untouched.
    elsewhere.emit("find-random-partner", json!({})).await;
    elsewhere.expect("searching").await;
    assert!(from(&s, "198.51.100.2").await.is_ok());
}

#[tokio::test]
async fn a_ban_outlives_a_restart_of_a_single_node() {
    let dir = std::env::temp_dir().join(format!("roulette-moderation-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let data = dir.to_str().unwrap().to_owned();
    let id = {
        let mut s = server(&["--data-dir", &data]).await;
        let (code, made) = post(
            &s,
            "/admin/bans",
            json!({"userId": "eve", "durationSec": 3600, "reason": "spam"}),
        )
        .await;
        assert_eq!(code, 201);
        let mut r = s.user("rita").await;
        r.emit("report-user", json!({"userId": "zed", "reason": "rude"}))
            .await;
        s.wait_stats("the report", |v| v["reportsTotal"] == 1).await;
        s.shutdown().await.unwrap().unwrap();
        made["id"].clone()
    };
    assert!(dir.join("moderation.jsonl").exists(), "created on demand");
    let s = server(&["--data-dir", &data]).await;
    let (_, list) = get(&s, "/admin/bans").await;
    assert_eq!(list["bans"][0]["id"], id, "{list}");
    let mut eve = Client::connect(s.addr).await;
    eve.emit("authenticate", json!({"userId": "eve"})).await;
    assert_eq!(eve.expect("auth-error").await["code"], "banned");
    let (_, feed) = get(&s, "/admin/reports").await;
    assert_eq!(feed["reports"][0]["reported"], "zed", "{feed}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn k_distinct_reporters_ban_a_user_and_k_reports_from_one_do_not() {
    let s = server(&[
        "--auto-ban-reporters",
        "3",
        "--auto-ban-window-sec",
        "600",
        "--auto-ban-duration-sec",
        "120",
        "--auto-ban-min-call-ms",
        "200",
        "--trust-proxy",
        "1",
    ])
    .await;
    let mut eve = s.user("eve").await;
    // Each reporter meets eve first, from a network of its own, and talks with her a moment:
    // only such reporters count.
    let mut total = 0;
    let reporters = [
        ("alice", "198.51.100.7"),
        ("bob", "203.0.113.7"),
        ("carol", "2001:db8:1::7"),
    ];
    for (n, (r, ip)) in reporters.into_iter().enumerate() {
        let mut c = from(&s, ip).await.unwrap();
        c.authenticate(r).await;
        eve.emit("find-random-partner", json!({})).await;
        eve.expect("searching").await;
        c.emit("find-random-partner", json!({})).await;
        c.expect("matched").await;
        eve.expect("matched").await;
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let times = if r == "alice" { 5 } else { 1 };
        for _ in 0..times {
            c.emit("report-user", json!({"userId": "eve", "reason": "rude"}))
                .await;
        }
        total += times;
        s.wait_stats("the reports", |v| v["reportsTotal"] == total)
            .await;
        if n == 0 {
            let (_, view) = get(&s, "/admin/users/eve").await;
            assert_eq!(
                (view["recentReporters"].as_u64(), view["reports"].as_u64()),
                (Some(1), Some(1)),
                "five reports from alice are one: {view}"
            );
            assert!(
                view["ban"].is_null(),
                "one reporter, however often, bans nobody: {view}"
            );
        }
        if n < 2 {
            c.emit("end-chat", json!({})).await;
            eve.expect("partner-left").await;
        }
    }
    // A stranger's report counts for the feed only.
    let mut stranger = s.user("sybil").await;
    stranger
        .emit("report-user", json!({"userId": "carol", "reason": "x"}))
        .await;
    let seen = eve.until_closed().await;
    let banned = seen
        .iter()
        .find(|(e, _)| e == "banned")
        .expect("the third reporter bans");
    assert!(
        banned.1["reason"].as_str().unwrap().contains("3 users"),
        "{banned:?}"
    );
    let (_, list) = get(&s, "/admin/bans").await;
    let ban = &list["bans"][0];
    assert_eq!(
        (ban["userId"].as_str(), ban["source"]["kind"].as_str()),
        (Some("eve"), Some("reports")),
        "{list}"
    );
    assert_eq!(ban["source"]["reporters"], 3, "the operator sees why");
}

#[tokio::test]
async fn the_reports_feed_is_newest_first_and_paged() {
    let s = server(&[]).await;
    let (mut rita, _zed, room) = s.pair("rita", "zed").await;
    rita.emit("report-user", json!({"userId": "zed", "reason": "first"}))
        .await;
    for i in 0..4 {
        rita.emit(
            "report-user",
            json!({"userId": format!("u{i}"), "reason": format!("r{i}")}),
        )
        .await;
    }
    s.wait_stats("five reports", |v| v["reportsTotal"] == 5)
        .await;
    let (code, page) = get(&s, "/admin/reports?limit=2").await;
    assert_eq!(code, 200);
    let reasons = |p: &Value| {
        p["reports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["reason"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(reasons(&page), ["r3", "r2"]);
    let next = page["nextBefore"].as_u64().unwrap();
    let (_, page2) = get(&s, &format!("/admin/reports?limit=2&before={next}")).await;
    assert_eq!(reasons(&page2), ["r1", "r0"]);
    let next = page2["nextBefore"].as_u64().unwrap();
    let (_, last) = get(&s, &format!("/admin/reports?limit=2&before={next}")).await;
    assert_eq!(reasons(&last), ["first"]);
    assert!(last["nextBefore"].is_null(), "the last page");
    let first = &last["reports"][0];
    assert_eq!(
        (first["reporter"].as_str(), first["reported"].as_str()),
        (Some("rita"), Some("zed"))
    );
    assert_eq!(first["roomId"], room.as_str(), "the room they shared");
    assert!(first["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(
        page["reports"][0]["roomId"].is_null(),
        "u3 was not rita's partner"
    );
}
