//! Several Roulette processes sharing one real `redis-server` (started here on a free port):
//! users on different nodes meet, talk and skip; a killed node's users' partners are told in
//! time and its waiting users are never matched; Redis restarts and the cluster recovers.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Client, Proc, Redis, assert_fresh_scrape, eventually, free_port, metrics_named_in,
    monitored_metrics,
};
use serde_json::{Value, json};

/// A Roulette process in the cluster.
struct Node {
    addr: SocketAddr,
    /// Where it takes other nodes' direct links (none: Redis carries everything).
    link: Option<SocketAddr>,
    child: Proc,
}

/// A flag of these tests alone: the node gets no `--link-address`, so Redis carries every
/// message (every other node of these tests has a direct link).
const REDIS_ONLY: &str = "--redis-only";

impl Node {
    async fn start(redis: &Redis, id: &str, extra: &[&str]) -> Node {
        let node = Node::spawn(&redis.url(), id, extra, Stdio::null()).await;
        assert!(
            eventually(Duration::from_secs(15), async || node.health().await == 200).await,
            "node {id} never became healthy"
        );
        node
    }

    /// A node of Redis `url`, once it answers HTTP (healthy or not).
    async fn spawn(url: &str, id: &str, extra: &[&str], out: Stdio) -> Node {
        let port = free_port();
        let link =
            (!extra.contains(&REDIS_ONLY)).then(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let link_flags = link.map(|l| ["--link-address".to_string(), l.to_string()]);
        let child = Command::new(common::server_bin())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--redis-url", url, "--node-id", id])
            .args(["--log-level", "warn"])
            .args(link_flags.iter().flatten())
            .args(extra.iter().filter(|f| **f != REDIS_ONLY))
            .env_clear()
            // Bans and reports in memory: no run sees another's.
            .env("DATA_DIR", "")
            .stdout(out)
            .spawn()
            .expect("the roulette binary");
        let node = Node {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            link,
            child: Proc(child),
        };
        assert!(
            eventually(Duration::from_secs(15), async || node.health().await != 0).await,
            "node {id} never answered HTTP"
        );
        node
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        match reqwest::get(format!("http://{}{path}", self.addr)).await {
            Ok(r) => {
                let code = r.status().as_u16();
                (code, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn health(&self) -> u16 {
        self.get("/health").await.0
    }

    /// `/metrics`, as text.
    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn user(&self, name: &str) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.authenticate(name).await;
        c
    }

    /// SIGTERM: an orderly shutdown.
    fn terminate(&mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .expect("kill");
        self.child.0.wait().ok();
    }

    /// SIGKILL: no goodbye to anyone.
    fn kill(&mut self) {
        self.child.kill();
    }
}

/// A unique Redis key prefix per node set, so runs never share state.
fn prefix(test: &str) -> String {
    format!("test-{test}-{}", std::process::id())
}

/// `a` searches, then `b`: both get `matched` for one room. Returns the room.
async fn meet(a: &mut Client, b: &mut Client) -> String {
    a.emit("find-random-partner", json!({})).await;
    a.expect("searching").await;
    b.emit("find-random-partner", json!({})).await;
    let ma = a.expect("matched").await;
    let mb = b.expect("matched").await;
    assert_eq!(ma["roomId"], mb["roomId"]);
    // The one whose search reached Redis first starts the call: exactly one of them.
    assert_ne!(ma["isInitiator"], mb["isInitiator"], "{ma} {mb}");
    ma["roomId"].as_str().unwrap().to_string()
}

/// Nodes named `ids` on `redis`, with a key prefix of `test`'s own and `extra` flags.
async fn nodes<const N: usize>(
    redis: &Redis,
    test: &str,
    ids: [&str; N],
    extra: &[&str],
) -> [Node; N] {
    let p = prefix(test);
    let mut flags = vec!["--redis-prefix", p.as_str()];
    flags.extend_from_slice(extra);
    let mut out = Vec::new();
    for id in ids {
        out.push(Node::start(redis, id, &flags).await);
    }
    out.try_into().ok().expect("one node per id")
}

/// alice on `a` and bob on `b`, matched: both clients and the room.
async fn pair_across(a: &Node, b: &Node) -> (Client, Client, String) {
    let mut alice = a.user("alice").await;
    let mut bob = b.user("bob").await;
    let room = meet(&mut alice, &mut bob).await;
    (alice, bob, room)
}

/// A user of `node` who speaks `languages`, authenticated.
async fn speaker(node: &Node, name: &str, languages: &[&str]) -> Client {
    let mut c = Client::connect(node.addr).await;
    c.emit(
        "authenticate",
        json!({"userId": name, "userInfo": {"languages": languages}}),
    )
    .await;
    c.expect("authenticated").await;
    c
}

/// `c` searches with `body` and is told it waits.
async fn search(c: &mut Client, body: Value) {
    c.emit("find-random-partner", body).await;
    c.expect("searching").await;
}

/// A user of `node` who searched and waits.
async fn waiting(node: &Node, name: &str) -> Client {
    let mut c = node.user(name).await;
    search(&mut c, json!({})).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_different_nodes_meet_talk_and_skip() {
    let redis = Redis::start_on(free_port());
    // Redis alone carries their messages: the direct links are tested apart.
    let [a, b] = nodes(&redis, "meet", ["node-a", "node-b"], &[REDIS_ONLY]).await;
    let (mut alice, mut bob, room) = pair_across(&a, &b).await;

    // Signaling crosses the nodes, in order, with the sender named.
    alice
        .emit(
            "webrtc-offer",
            json!({"roomId": room, "offer": {"type": "offer", "sdp": "v=0 a"}}),
        )
        .await;
    for i in 0..50 {
        alice
            .emit(
                "webrtc-ice-candidate",
                json!({"roomId": room, "candidate": {"candidate": format!("c{i}"), "sdpMid": "0"}}),
            )
            .await;
    }
    let offer = bob.expect("webrtc-offer").await;
    assert_eq!(offer["fromUserId"], "alice");
    assert_eq!(offer["offer"]["sdp"], "v=0 a");
    for i in 0..50 {
        let c = bob.expect("webrtc-ice-candidate").await;
        assert_eq!(
            c["candidate"]["candidate"],
            format!("c{i}"),
            "candidates in order"
        );
    }
    bob.emit(
        "webrtc-answer",
        json!({"roomId": room, "answer": {"type": "answer", "sdp": "v=0 b"}}),
    )
    .await;
    assert_eq!(alice.expect("webrtc-answer").await["fromUserId"], "bob");
    bob.emit(
        "chat-message",
        json!({"roomId": room, "message": "hi from b"}),
    )
    .await;
    assert_eq!(alice.expect("chat-message").await["message"], "hi from b");
    assert_eq!(bob.expect("chat-message").await["message"], "hi from b");

    // Both nodes and the cluster totals see it.
    let (_, stats) = a.get("/stats").await;
    assert_eq!(stats["cluster"]["node"], "node-a", "{stats}");
    assert!(
        eventually(Duration::from_secs(5), async || {
            let (_, s) = b.get("/stats").await;
            s["cluster"]["nodes"] == 2 && s["cluster"]["rooms"] == 1 && s["cluster"]["users"] == 2
        })
        .await,
        "cluster figures never showed 2 nodes, 1 room, 2 users"
    );
    let wanted = [
        "roulette_cluster_redis_up 1",
        "roulette_cluster_nodes 2",
        "roulette_cluster_rooms_active 1",
        "roulette_rooms_active 1",
    ];
    assert!(
        eventually(Duration::from_secs(5), async || {
            let metrics = a.metrics().await;
            wanted.iter().all(|w| metrics.lines().any(|l| l == *w))
        })
        .await,
        "/metrics never showed {wanted:?}"
    );

    // Skipping on one node ends the room on the other; both can meet someone new.
    bob.emit("next-partner", json!({})).await;
    let left = alice.expect("partner-left").await;
    assert_eq!(left["reason"], "next-partner");
    assert_eq!(left["roomId"], room.as_str());
    // A relay into the ended room is refused, not delivered.
    alice
        .emit(
            "webrtc-ice-candidate",
            json!({"roomId": room, "candidate": {"candidate": "late"}}),
        )
        .await;
    alice
        .expect_error("not-in-room", "webrtc-ice-candidate")
        .await;

    let mut carol = a.user("carol").await;
    carol.emit("find-random-partner", json!({})).await;
    let to_bob = bob.expect("matched").await;
    let to_carol = carol.expect("matched").await;
    assert_eq!(to_bob["partnerId"], "carol");
    assert_eq!(to_carol["partnerId"], "bob");
    assert_ne!(to_bob["roomId"], room.as_str());

    // end-chat across nodes.
    carol.emit("end-chat", json!({})).await;
    assert_eq!(carol.expect("chat-ended").await["reason"], "ended");
    assert_eq!(bob.expect("partner-left").await["reason"], "user-ended");
    // Nothing from the old room ever reaches bob in between.
    bob.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_and_blocks_hold_across_nodes() {
    let redis = Redis::start_on(free_port());
    // hugo below polls `find-random-partner` faster than a person would.
    let [a, b] = nodes(
        &redis,
        "prefs",
        ["node-a", "node-b"],
        &["--search-events-per-min", "0"],
    )
    .await;

    // A German speaker waits on A; an English-only seeker on B must not get them, a German one must.
    // `searching` comes before the node's worker sends the search to the node that matches
    // (A, the first node, holds the lease): each is waited for in the cluster's queue, or on a
    // loaded machine greta could search before dieter is in it.
    let in_queue = |n: i64| {
        let a = &a;
        async move {
            assert!(
                eventually(Duration::from_secs(5), async || {
                    a.get("/stats").await.1["cluster"]["queued"] == n
                })
                .await,
                "{n} searches in the cluster's queue: {:?}",
                a.get("/stats").await
            );
        }
    };
    let mut dieter = speaker(&a, "dieter", &["de"]).await;
    search(&mut dieter, json!({"preferences": {"language": "de"}})).await;
    in_queue(1).await;
    let mut emma = speaker(&b, "emma", &["en"]).await;
    search(&mut emma, json!({})).await;
    in_queue(2).await;
    let mut greta = speaker(&b, "greta", &["de", "en"]).await;
    greta.emit("find-random-partner", json!({})).await;
    // greta waited less than emma, but emma does not speak German: dieter takes greta... and
    // emma, who accepts anyone, takes nobody (dieter is gone).
    let m = greta.expect("matched").await;
    assert_eq!(m["partnerId"], "dieter", "{m}");
    assert_eq!(dieter.expect("matched").await["partnerId"], "greta");
    emma.expect_silence(Duration::from_millis(300)).await;

    // greta blocks dieter; both search again: they never meet again, though nobody else waits.
    greta.emit("block-user", json!({"userId": "dieter"})).await;
    greta.emit("end-chat", json!({})).await;
    greta.expect("chat-ended").await;
    dieter.expect("partner-left").await;
    emma.emit("end-chat", json!({})).await;
    emma.expect("chat-ended").await;
    search(&mut dieter, json!({"preferences": {"language": "de"}})).await;
    search(&mut greta, json!({})).await;
    dieter.expect_silence(Duration::from_millis(500)).await;
    greta.expect_silence(Duration::from_millis(100)).await;

    // `queue-status.totalWaiting` counts the whole cluster: dieter and hugo here, greta on B.
    let mut hugo = speaker(&a, "hugo", &["fr"]).await;
    let wish = json!({"preferences": {"language": "fr"}});
    assert!(
        eventually(Duration::from_secs(5), async || {
            hugo.emit("find-random-partner", wish.clone()).await;
            hugo.expect("queue-status").await["totalWaiting"] == 3
        })
        .await,
        "totalWaiting never counted the users of both nodes"
    );

    // Ids are unique in the cluster: an impostor on B cannot take hugo's place in the queue.
    let mut impostor = b.user("hugo").await;
    impostor.emit("find-random-partner", wish.clone()).await;
    impostor.expect("searching").await;
    impostor
        .expect_error("user-id-taken", "find-random-partner")
        .await;
    assert_eq!(
        impostor.expect("chat-ended").await["reason"],
        "search-cancelled"
    );
    // While the impostor is connected to B, B cannot hold hugo as a partner; once it has gone,
    // a French speaker on B meets the real hugo.
    impostor.drop_connection().await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            b.get("/stats").await.1["connectedUsers"] == 2
        })
        .await,
        "the impostor never left B"
    );
    let mut marie = speaker(&b, "marie", &["fr"]).await;
    marie.emit("find-random-partner", wish.clone()).await;
    assert_eq!(marie.expect("matched").await["partnerId"], "hugo");
    assert_eq!(hugo.expect("matched").await["partnerId"], "marie");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_partners_are_told_and_its_queue_is_purged() {
    let redis = Redis::start_on(free_port());
    let timeout = ["--node-timeout-ms", "2000"];
    let [a, mut b] = nodes(&redis, "kill", ["node-a", "node-b"], &timeout).await;
    let (mut alice, _bob, room) = pair_across(&a, &b).await;
    // carol waits on B; B dies with her in the queue.
    let _carol = waiting(&b, "carol").await;

    b.kill();
    let killed = Instant::now();
    let left = alice.expect("partner-left").await;
    let took = killed.elapsed();
    assert_eq!(left["roomId"], room.as_str());
    assert_eq!(left["reason"], "disconnect");
    // The node timeout is the promise; the client's own wait bounds the test.
    assert!(
        took <= Duration::from_millis(2000 + 500),
        "partner-left after {took:?}"
    );

    // Nobody is matched with carol, a user of the dead node.
    let mut dave = waiting(&a, "dave").await;
    dave.expect_silence(Duration::from_millis(500)).await;
    // alice and dave (both alive, both on A) still meet.
    alice.emit("find-random-partner", json!({})).await;
    let m = alice.expect("matched").await;
    assert_eq!(m["partnerId"], "dave");
    assert!(
        eventually(Duration::from_secs(5), async || {
            let (_, s) = a.get("/stats").await;
            s["cluster"]["nodes"] == 1 && s["cluster"]["waiting"] == 0
        })
        .await,
        "the dead node still counts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_recovers_after_a_redis_restart() {
    let port = free_port();
    let mut redis = Redis::start_on(port);
    let [a, b] = nodes(&redis, "restart", ["node-a", "node-b"], &[]).await;
    // A pair across the nodes lives through the outage.
    let (mut alice, mut bob, room) = pair_across(&a, &b).await;
    // erin waits on A across the outage.
    let mut erin = waiting(&a, "erin").await;
    assert!(
        eventually(Duration::from_secs(10), async || links_up(&a).await == 1
            && links_up(&b).await == 1)
        .await,
        "the nodes never linked"
    );

    redis.kill();
    for n in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(5), async || n.health().await == 503).await,
            "/health did not report Redis down"
        );
    }
    let (_, h) = a.get("/health").await;
    assert_eq!(h["status"], "redis-down", "{h}");
    // The pair's relays go on over the nodes' direct link while Redis is down, in order, also
    // once the publisher's rounds to Redis wait out their timeout (2 s) instead of failing at
    // once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let began = std::time::Instant::now();
    for i in 0..5 {
        alice
            .emit(
                "chat-message",
                json!({"roomId": room, "message": format!("outage {i}")}),
            )
            .await;
    }
    for i in 0..5 {
        let got = loop {
            let (name, v) = bob.next_event().await;
            if name == "chat-message" {
                break v;
            }
        };
        assert_eq!(got["message"], format!("outage {i}"), "{got}");
    }
    eprintln!(
        "5 relays across the link during the outage: {:?}",
        began.elapsed()
    );

    let _redis = Redis::start_on(port);
    for n in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(10), async || n.health().await == 200).await,
            "/health did not recover"
        );
    }
    // Delivery works again (the channels were subscribed again) ...
    assert!(
        eventually(Duration::from_secs(5), async || {
            alice
                .emit("chat-message", json!({"roomId": room, "message": "back?"}))
                .await;
            loop {
                match tokio::time::timeout(Duration::from_millis(200), bob.next_event()).await {
                    Ok((name, v)) if name == "chat-message" => return v["message"] == "back?",
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        })
        .await,
        "relays across nodes did not come back"
    );
    // ... and matching too: erin's search was published again, frank on B finds her.
    let mut frank = b.user("frank").await;
    frank.emit("find-random-partner", json!({})).await;
    assert_eq!(frank.expect("matched").await["partnerId"], "erin");
    assert_eq!(erin.expect("matched").await["partnerId"], "frank");
}

/// Reconnects as `user` with its resume token on `node` and expects the room back.
async fn come_back(node: &Node, user: &str, token: &str, room: &str, partner: &str) -> Client {
    let mut c = Client::connect(node.addr).await;
    c.emit(
        "authenticate",
        json!({"userId": user, "resumeToken": token}),
    )
    .await;
    let auth = c.expect("authenticated").await;
    assert_eq!(auth["resumed"], true, "{auth}");
    let back = c.expect("rejoined").await;
    assert_eq!(back["roomId"], room);
    assert_eq!(back["partnerId"], partner);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_reconnects_to_another_node_rejoins_its_room() {
    let redis = Redis::start_on(free_port());
    let [a, b, c] = nodes(&redis, "resume", ["node-a", "node-b", "node-c"], &[]).await;

    let mut alice = Client::connect(a.addr).await;
    alice.emit("authenticate", json!({"userId": "alice"})).await;
    let token = alice.expect("authenticated").await["resumeToken"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bob = b.user("bob").await;
    let room = meet(&mut alice, &mut bob).await;

    // alice's phone changes networks: her connection to A dies, she comes back through C.
    alice.abort();
    let away = bob.expect("partner-reconnecting").await;
    assert_eq!(away, json!({"roomId": room, "partnerId": "alice"}));
    let mut alice = come_back(&c, "alice", &token, &room, "bob").await;
    let back = bob.expect("partner-reconnected").await;
    assert_eq!(back["partnerId"], "alice");
    alice
        .emit(
            "webrtc-offer",
            json!({"roomId": room, "offer": {"type": "offer", "sdp": "again"}}),
        )
        .await;
    assert_eq!(bob.expect("webrtc-offer").await["offer"]["sdp"], "again");
    bob.emit(
        "webrtc-answer",
        json!({"roomId": room, "answer": {"type": "answer", "sdp": "ok"}}),
    )
    .await;
    assert_eq!(alice.expect("webrtc-answer").await["answer"]["sdp"], "ok");

    // A stolen user id without the token gets nothing: the session stays where it is.
    let mut mallory = Client::connect(a.addr).await;
    mallory
        .emit(
            "authenticate",
            json!({"userId": "alice", "resumeToken": "0".repeat(32)}),
        )
        .await;
    let auth = mallory.expect("authenticated").await;
    assert_eq!(auth["resumed"], false, "{auth}");
    mallory.expect_silence(Duration::from_millis(200)).await;

    // Her token was spent; the new one brings her back again, this time to bob's own node.
    let token = {
        alice.emit("authenticate", json!({"userId": "alice"})).await;
        alice.expect("authenticated").await["resumeToken"]
            .as_str()
            .unwrap()
            .to_string()
    };
    alice.abort();
    assert_eq!(
        bob.expect("partner-reconnecting").await["partnerId"],
        "alice"
    );
    let mut alice = come_back(&b, "alice", &token, &room, "bob").await;
    bob.expect("partner-reconnected").await;
    bob.emit(
        "chat-message",
        json!({"roomId": room, "message": "same node now"}),
    )
    .await;
    assert_eq!(
        alice.expect("chat-message").await["message"],
        "same node now"
    );
    assert_eq!(bob.expect("chat-message").await["message"], "same node now");
    // And the room still ends properly for both.
    alice.emit("end-chat", json!({})).await;
    assert_eq!(alice.expect("chat-ended").await["roomId"], room.as_str());
    assert_eq!(bob.expect("partner-left").await["reason"], "user-ended");
}

/// A node that gets SIGTERM holds its sessions for their clients to come back through the
/// other nodes (connection state recovery): a partner elsewhere hears `partner-reconnecting` at
/// once, and `partner-left` when the node gives up the sessions nobody came back for, before
/// its shutdown deadline (not after the node timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_shuts_down_hands_its_calls_over_and_tells_partners_nobody_came_back_for() {
    let redis = Redis::start_on(free_port());
    // The default node timeout (10 s): the goodbye must not wait for it.
    let [a, mut b] = nodes(
        &redis,
        "term",
        ["node-a", "node-b"],
        &["--shutdown-timeout-ms", "3000"],
    )
    .await;
    let (mut alice, _bob, room) = pair_across(&a, &b).await;
    let _carol = waiting(&b, "carol").await;

    let stopping = Instant::now();
    b.terminate();
    let away = alice.expect("partner-reconnecting").await;
    assert_eq!(away["roomId"], room.as_str());
    let left = alice.expect("partner-left").await;
    assert_eq!(left["roomId"], room.as_str());
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "told after {:?}",
        stopping.elapsed()
    );
    // carol left the queue with her node: dave waits instead of meeting her.
    let mut dave = waiting(&a, "dave").await;
    dave.expect_silence(Duration::from_millis(300)).await;
}

/// A node started while its Redis is down serves HTTP at once, answers 503 on `/health` (so a
/// readiness probe keeps traffic away) and refuses Socket.IO sessions, instead of exiting; once
/// Redis starts it joins and serves.
#[tokio::test]
async fn a_node_started_before_its_redis_waits_for_it() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let p = prefix("early");
    let node = Node::spawn(&url, "early", &["--redis-prefix", &p], Stdio::null()).await;
    let (code, h) = node.get("/health").await;
    assert_eq!(
        (code, h["status"].as_str()),
        (503, Some("redis-down")),
        "{h}"
    );
    let handshake = reqwest::get(format!(
        "http://{}/socket.io/?EIO=4&transport=polling",
        node.addr
    ))
    .await
    .unwrap();
    assert_eq!(
        handshake.status(),
        503,
        "no session before the cluster is joined"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node.health().await, 503, "still waiting, still alive");

    let _redis = Redis::start_on(port);
    assert!(
        eventually(Duration::from_secs(15), async || node.health().await == 200).await,
        "the node joined once Redis answered"
    );
    let mut a = node.user("early-a").await;
    let mut b = node.user("early-b").await;
    meet(&mut a, &mut b).await;
}

/// Managed Redis services speak TLS: `rediss://` with the server's certificate checked against
/// `REDIS_CA_FILE` (a CA made here). Without that CA the certificate is not trusted and the
/// node never joins.
#[tokio::test]
async fn redis_over_tls_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = std::env::temp_dir().join(format!("roulette-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Roulette test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let file = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let ca_file = file("ca.pem", ca.pem());
    let cert_file = file("server.pem", server.pem());
    let key_file = file("server.key", server_key.serialize_pem());

    let port = free_port();
    let _redis = Redis::start_with(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert_file,
            "--tls-key-file",
            &key_file,
            "--tls-ca-cert-file",
            &ca_file,
            "--tls-auth-clients",
            "no",
        ],
    );
    let url = format!("rediss://127.0.0.1:{port}");
    let p = prefix("tls");
    let trusted = Node::spawn(
        &url,
        "tls-a",
        &["--redis-prefix", &p, "--redis-ca-file", &ca_file],
        Stdio::null(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(15), async || trusted.health().await
            == 200)
        .await,
        "a node that trusts the CA joins over TLS"
    );
    let (_, h) = trusted.get("/health").await;
    assert_eq!(h["cluster"]["redis"], "up", "{h}");
    let mut a = trusted.user("tls-a1").await;
    let mut b = trusted.user("tls-a2").await;
    meet(&mut a, &mut b).await;

    let untrusting = Node::spawn(&url, "tls-b", &["--redis-prefix", &p], Stdio::null()).await;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        untrusting.health().await,
        503,
        "a certificate from an unknown CA is refused"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Every metric the Grafana dashboard and the alert rules of `deploy/monitoring/` use appears in
/// a live scrape of a cluster node that served a little of everything: calls that connect and
/// fail, a quality report, relays, an error, a rate-limited search.
#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_name_is_exported() {
    let redis = Redis::start_on(free_port());
    let [node] = nodes(&redis, "monitoring", ["mon-a"], &[]).await;
    let mut alice = node.user("mon-alice").await;
    let mut bob = node.user("mon-bob").await;
    let room = meet(&mut alice, &mut bob).await;
    let status = json!({"roomId": room, "status": "connected"});
    alice.emit("connection-status", status).await;
    bob.expect("partner-connection-status").await;
    bob.emit(
        "quality-report",
        json!({"roomId": room, "quality": "good", "stats": {"packetLoss": 0.5, "latency": 40}}),
    )
    .await;
    alice.expect("partner-quality-report").await;
    alice
        .emit(
            "webrtc-offer",
            json!({"roomId": room, "offer": {"type": "offer", "sdp": "v=0"}}),
        )
        .await;
    bob.expect("webrtc-offer").await;
    alice.emit("webrtc-offer", json!({})).await;
    alice.expect_error("invalid-payload", "webrtc-offer").await;
    let mut carol = node.user("mon-carol").await;
    let mut dave = node.user("mon-dave").await;
    let room2 = meet(&mut carol, &mut dave).await;
    carol
        .emit(
            "connection-status",
            json!({"roomId": room2, "status": "failed"}),
        )
        .await;
    let mut eve = node.user("mon-eve").await;
    // Past the burst of 10 searches: refused.
    for _ in 0..14 {
        eve.emit("find-random-partner", json!({})).await;
    }
    let mut refused = false;
    while !refused {
        let (name, v) = eve.next_event().await;
        refused = name == "error" && v["code"] == "rate-limited";
    }

    // The dashboard imports as is: one Prometheus input, every panel querying through it.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/monitoring/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    for panel in dashboard["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{panel}");
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{t}");
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{t}");
        }
    }
    let rules = metrics_named_in("deploy/monitoring/alerts.yml");
    let wanted = monitored_metrics();
    assert!(
        rules.len() >= 5 && wanted.len() >= 20,
        "{rules:?} {wanted:?}"
    );
    let mut missing = Vec::new();
    let ok = eventually(Duration::from_secs(10), async || {
        let text = node.metrics().await;
        let exported: std::collections::BTreeSet<String> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l[..l.find(['{', ' ']).unwrap_or(l.len())].to_string())
            .map(|n| n.strip_suffix("_bucket").unwrap_or(&n).to_string())
            .collect();
        missing = wanted
            .iter()
            .filter(|w| !exported.contains(*w))
            .cloned()
            .collect();
        missing.is_empty()
    })
    .await;
    assert!(
        ok,
        "named by deploy/monitoring/ but not exported: {missing:?}"
    );
}

/// A cluster node that has just joined exports, in its first scrape, every metric the dashboard
/// and the alert rules name, its counters at 0: panels show 0 rather than "no data", and
/// `rate()` sees the first refusal or failed call.
#[tokio::test]
async fn a_fresh_cluster_node_exports_every_monitored_metric_at_zero() {
    let redis = Redis::start_on(free_port());
    let [node] = nodes(&redis, "fresh-metrics", ["fresh-a"], &[]).await;
    assert_fresh_scrape(&node.metrics().await, &monitored_metrics());
}

/// An admin API request to `node`: `(status, body)`.
async fn admin(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{}{path}", node.addr))
        .bearer_auth("cluster-admin-token");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_or_a_kick_made_on_one_node_takes_effect_on_every_node() {
    let redis = Redis::start_on(free_port());
    let flags = ["--admin-token", "cluster-admin-token"];
    let [a, b] = nodes(&redis, "moderation", ["mod-a", "mod-b"], &flags).await;
    let mut eve = b.user("eve").await;
    let mut zed = b.user("zed").await;

    // Banned through A, eve (on B) is told and closed within a second.
    let t = Instant::now();
    let (code, made) = admin(
        &a,
        reqwest::Method::POST,
        "/admin/bans",
        Some(json!({"userId": "eve", "durationSec": 600, "reason": "spam"})),
    )
    .await;
    assert_eq!(code, 201, "{made}");
    let seen = eve.until_closed().await;
    let took = t.elapsed();
    assert!(
        seen.iter()
            .any(|(e, v)| e == "banned" && v["reason"] == "spam"),
        "{seen:?}"
    );
    assert!(
        took < Duration::from_secs(1),
        "the ban reached the other node in {took:?}"
    );
    let mut again = Client::connect(b.addr).await;
    again.emit("authenticate", json!({"userId": "eve"})).await;
    assert_eq!(
        again.expect("auth-error").await["code"],
        "banned",
        "B refuses eve too"
    );

    // Kicked through A, zed (on B) is removed: A forwards the kick to every node.
    let (code, r) = admin(
        &a,
        reqwest::Method::POST,
        "/admin/kick",
        Some(json!({"userId": "zed", "reason": "abuse"})),
    )
    .await;
    assert_eq!(
        (code, r["kicked"].as_str()),
        (202, Some("forwarded")),
        "{r}"
    );
    let seen = zed.until_closed().await;
    assert!(
        seen.iter()
            .any(|(e, v)| e == "kicked" && v["reason"] == "abuse"),
        "{seen:?}"
    );

    // A report on B counts on A too (one feed), and a node that joins later knows the ban.
    let mut rita = b.user("rita").await;
    // A user on B looked up through A: B answers for it.
    let (code, view) = admin(&a, reqwest::Method::GET, "/admin/users/rita", None).await;
    assert_eq!(
        (code, view["node"].as_str(), view["connected"].as_bool()),
        (200, Some("mod-b"), Some(true)),
        "{view}"
    );
    let (code, _) = admin(&a, reqwest::Method::GET, "/admin/users/nobody-at-all", None).await;
    assert_eq!(code, 404);
    rita.emit(
        "report-user",
        json!({"userId": "mallory", "reason": "rude"}),
    )
    .await;
    let p = prefix("moderation");
    let c = Node::start(
        &redis,
        "mod-c",
        &[
            "--redis-prefix",
            p.as_str(),
            "--admin-token",
            "cluster-admin-token",
        ],
    )
    .await;
    let (_, bans) = admin(&c, reqwest::Method::GET, "/admin/bans", None).await;
    assert_eq!(bans["bans"][0]["id"], made["id"], "kept in Redis: {bans}");
    assert!(
        eventually(Duration::from_secs(5), async || {
            admin(&a, reqwest::Method::GET, "/admin/reports", None)
                .await
                .1["reports"][0]["reported"]
                == "mallory"
        })
        .await,
        "B's report is in A's feed"
    );
    let (_, feed_c) = admin(&c, reqwest::Method::GET, "/admin/reports", None).await;
    assert_eq!(
        feed_c["reports"][0]["reported"], "mallory",
        "and in the feed of a node that joined later: {feed_c}"
    );

    // Lifted through C, eve may come back on B.
    let path = format!("/admin/bans/{}", made["id"].as_str().unwrap());
    assert_eq!(admin(&c, reqwest::Method::DELETE, &path, None).await.0, 200);
    assert!(
        eventually(Duration::from_secs(5), async || {
            let mut c = Client::connect(b.addr).await;
            c.emit("authenticate", json!({"userId": "eve"})).await;
            c.next_event().await.0 == "authenticated"
        })
        .await,
        "the lift reached B"
    );
}

/// `n` users of `node` named `<name>-<i>`, each a man who insists on a woman, waiting.
async fn insisting_men(node: &Node, name: &str, n: usize) -> Vec<Client> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let batch = chunk.iter().map(|i| async move {
            let mut c = Client::connect(node.addr).await;
            c.emit(
                "authenticate",
                json!({"userId": format!("{name}-{i}"), "userInfo": {"gender": "male"}}),
            )
            .await;
            c.expect("authenticated").await;
            search(&mut c, json!({"preferences": {"gender": "female"}})).await;
            c
        });
        out.extend(futures_util::future::join_all(batch).await);
    }
    out
}

/// The flags of a node that holds thousands of test clients from one address.
const CROWD: [&str; 8] = [
    "--max-connections-per-ip",
    "0",
    "--max-new-connections-per-ip",
    "0",
    "--rate-limit-max-requests",
    "0",
    "--search-events-per-min",
    "0",
];

/// 2,000 men who insist on a woman wait on two nodes, so nobody can pair with them; then two
/// users who speak a rare language and want exactly each other arrive, one on each node: the
/// cluster pairs them at once (it matches against its whole queue, as one node does), and a
/// newcomer's `queue-status` counts every waiting user of the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_behind_thousands_of_incompatible_users_meets_and_places_count_the_cluster() {
    let redis = Redis::start_on(free_port());
    let [a, b] = nodes(&redis, "depth", ["node-a", "node-b"], &CROWD).await;
    let _on_a = insisting_men(&a, "a", 1000).await;
    let _on_b = insisting_men(&b, "b", 1000).await;
    assert!(
        eventually(Duration::from_secs(15), async || {
            a.get("/stats").await.1["cluster"]["queued"] == 2000
        })
        .await,
        "2,000 searches in the cluster's queue: {:?}",
        a.get("/stats").await
    );

    // A newcomer on B is the 2,001st: its place and the total count both nodes' users.
    let mut late = b.user("late").await;
    late.emit(
        "find-random-partner",
        json!({"preferences": {"gender": "female"}}),
    )
    .await;
    let mut seen = Vec::new();
    let counted = eventually(Duration::from_secs(5), async || {
        let (name, s) = late.next_event().await;
        seen.push(format!("{name} {s}"));
        name == "queue-status" && s["position"] == 2001 && s["totalWaiting"] == 2001
    })
    .await;
    assert!(counted, "queue-status never counted the cluster: {seen:?}");

    let mut ana = speaker(&a, "ana", &["eu"]).await;
    search(&mut ana, json!({"preferences": {"language": "eu"}})).await;
    let mut jon = speaker(&b, "jon", &["eu"]).await;
    jon.emit(
        "find-random-partner",
        json!({"preferences": {"language": "eu"}}),
    )
    .await;
    assert_eq!(jon.expect("matched").await["partnerId"], "ana");
    let m = ana.expect("matched").await;
    assert_eq!(m["partnerId"], "jon");
    assert_eq!(m["isInitiator"], true, "ana waited longer");
}

/// The node that matches for the cluster is killed: another node takes the lease within the
/// node timeout, the users waiting on the living nodes are in its queue again (their nodes send
/// them), and matching goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_matching_lease_moves_when_its_holder_dies() {
    let redis = Redis::start_on(free_port());
    let timeout = ["--node-timeout-ms", "2000"];
    let [mut a, b, c] = nodes(&redis, "lease", ["node-a", "node-b", "node-c"], &timeout).await;
    let stats = b.get("/stats").await;
    assert_eq!(stats.1["cluster"]["matcher"], "node-a", "{stats:?}");
    // Waiting on B while A matches: in A's queue only.
    let mut bea = waiting(&b, "bea").await;
    // Someone bea cannot meet, on C: blocks and hard filters must survive the move.
    let mut cid = speaker(&c, "cid", &["eu"]).await;
    search(&mut cid, json!({"preferences": {"language": "eu"}})).await;

    a.kill();
    assert!(
        eventually(Duration::from_secs(5), async || {
            let m = b.get("/stats").await.1["cluster"]["matcher"].clone();
            m == "node-b" || m == "node-c"
        })
        .await,
        "nobody took the lease"
    );
    let holder = b.get("/stats").await.1["cluster"]["matcher"].clone();
    let holder = if holder == "node-b" { &b } else { &c };
    assert!(
        eventually(Duration::from_secs(5), async || {
            holder.get("/stats").await.1["cluster"]["queued"] == 2
        })
        .await,
        "the new holder never had the waiting users"
    );
    // A newcomer on C meets bea, who waited on B through the move (cid wants a Basque speaker).
    let mut dan = c.user("dan").await;
    dan.emit("find-random-partner", json!({})).await;
    assert_eq!(dan.expect("matched").await["partnerId"], "bea");
    assert_eq!(bea.expect("matched").await["partnerId"], "dan");
    cid.expect_silence(Duration::from_millis(300)).await;
}

/// One arrival of the model scenario: a user, its profile, its wishes, whom it blocks first.
struct Arrival {
    name: String,
    info: Value,
    prefs: Value,
    blocks: Option<String>,
}

/// A fixed, varied sequence of arrivals (a small generator, so the case is the same every run):
/// genders and gender wishes, languages and language wishes, ages and age ranges, countries,
/// and a few blocks of earlier users.
fn arrivals() -> Vec<Arrival> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    (0..40)
        .map(|i| {
            let gender = ["male", "female", "other"][next(3) as usize];
            let langs =
                [vec!["en"], vec!["de"], vec!["en", "de"], vec!["fr"]][next(4) as usize].clone();
            let age = 18 + next(30);
            let country = ["US", "DE", "FR"][next(3) as usize];
            let mut prefs = serde_json::Map::new();
            match next(6) {
                0 => prefs.insert("gender".into(), json!("female")),
                1 => prefs.insert("gender".into(), json!("male")),
                _ => None,
            };
            if next(4) == 0 {
                prefs.insert(
                    "language".into(),
                    json!(["en", "de", "fr"][next(3) as usize]),
                );
            }
            if next(5) == 0 {
                prefs.insert("ageRange".into(), json!([20, 35]));
            }
            if next(6) == 0 {
                prefs.insert("country".into(), json!(["US", "DE"][next(2) as usize]));
            }
            let blocks = (i > 0 && next(5) == 0).then(|| format!("u{}", next(i)));
            Arrival {
                name: format!("u{i}"),
                info: json!({"gender": gender, "languages": langs, "age": age, "country": country}),
                prefs: Value::Object(prefs),
                blocks,
            }
        })
        .collect()
}

/// Runs the arrivals against `addrs` (arrival `i` on `addrs[i % len]`), each once the previous
/// one was decided (`settled` waits for that), and returns the pairs made, as
/// `(initiator, responder)`, sorted.
async fn run_arrivals(
    addrs: &[SocketAddr],
    mut settled: impl AsyncFnMut(usize) -> bool,
) -> Vec<(String, String)> {
    let mut clients = Vec::new();
    for (i, a) in arrivals().into_iter().enumerate() {
        let mut c = Client::connect(addrs[i % addrs.len()]).await;
        c.emit(
            "authenticate",
            json!({"userId": a.name, "userInfo": a.info}),
        )
        .await;
        c.expect("authenticated").await;
        if let Some(other) = &a.blocks {
            c.emit("block-user", json!({"userId": other})).await;
        }
        c.emit("find-random-partner", json!({"preferences": a.prefs}))
            .await;
        // A single node decides before it answers; a cluster node answers `searching` first.
        let (event, data) = c.next_event().await;
        assert!(event == "searching" || event == "matched", "{event} {data}");
        assert!(settled(i).await, "arrival {i} was never decided");
        clients.push((a.name, c, vec![(event, data)]));
    }
    let mut pairs = Vec::new();
    for (name, c, seen) in clients.iter_mut() {
        for (event, data) in seen.drain(..) {
            if event == "matched" && data["isInitiator"] == true {
                pairs.push((
                    name.clone(),
                    data["partnerId"].as_str().unwrap().to_string(),
                ));
            }
        }
        while let Ok(Some((event, data))) =
            tokio::time::timeout(Duration::from_millis(100), c.try_next_event()).await
        {
            if event == "matched" && data["isInitiator"] == true {
                pairs.push((
                    name.clone(),
                    data["partnerId"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    pairs.sort();
    pairs
}

/// The model test over real processes: the same arrivals, spread over three nodes of a
/// cluster, make exactly the pairs (and initiators) one node makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_makes_the_pairs_one_node_makes() {
    // No relaxation during the run: arrivals are decided in order, at their own pace.
    let flags = [
        "--preference-relax-ms",
        "600000",
        "--rate-limit-max-requests",
        "0",
    ];
    let one = common::TestServer::start(&flags).await;
    let single = run_arrivals(&[one.addr], async |_| true).await;
    assert!(single.len() >= 5, "the scenario pairs some: {single:?}");

    let redis = Redis::start_on(free_port());
    let [a, b, c] = nodes(&redis, "model", ["node-a", "node-b", "node-c"], &flags).await;
    // Each arrival either waits or takes one waiting user: the holder's (A's) queue grows or
    // shrinks by one. The next arrival comes once it has.
    let mut queued = 0i64;
    let cluster = run_arrivals(&[a.addr, b.addr, c.addr], async |_| {
        eventually(Duration::from_secs(5), async || {
            let now = a.get("/stats").await.1["cluster"]["queued"]
                .as_i64()
                .unwrap_or(-1);
            if now == queued + 1 || now == queued - 1 {
                queued = now;
                return true;
            }
            false
        })
        .await
    })
    .await;
    assert_eq!(cluster, single);
}

/// `ok` means delivered across nodes too: an acknowledged relay to a user of another node is
/// answered `ok` once that node delivered it, and `delivery-failed` when that node could not
/// (here: its user stopped reading and its queue is over its byte budget), never `ok` then
/// silence. A relay sent without an acknowledgement that fails there gets an `error` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_relay_across_nodes_is_answered_as_it_went() {
    let redis = Redis::start_on(free_port());
    let [a, b] = nodes(
        &redis,
        "acks",
        ["node-a", "node-b"],
        &["--signal-events-per-sec", "0"],
    )
    .await;
    let mut bob =
        common::raw::Raw::connect_to(b.addr, "EIO=4&transport=websocket", Some(4096)).await;
    bob.searching_as("bob").await;
    let mut alice = a.user("alice").await;
    alice.emit("find-random-partner", json!({})).await;
    let room = alice.expect("matched").await["roomId"].clone();
    bob.expect("matched").await;
    // Delivered: answered ok, and bob has it.
    let small =
        json!({"roomId": room, "candidate": {"candidate": "c", "sdpMid": "0", "sdpMLineIndex": 0}});
    alice
        .emit_with_ack(1, "webrtc-ice-candidate", small.clone())
        .await;
    assert_eq!(alice.expect("ack:1").await["ok"], true);
    assert_eq!(
        bob.expect("webrtc-ice-candidate").await["candidate"]["candidate"],
        "c"
    );
    // Bob reads nothing from here on: offers of 30 KB, each acknowledged, until one is refused.
    let offer = json!({"roomId": room, "offer": {"type": "offer", "sdp": "v".repeat(30_000)}});
    let mut refused = None;
    for id in 2..400u64 {
        alice.emit_with_ack(id, "webrtc-offer", offer.clone()).await;
        let ack = alice.expect(&format!("ack:{id}")).await;
        if ack["ok"] != true {
            refused = Some(ack);
            break;
        }
    }
    let refused = refused.expect("a partner that does not read cannot take 12 MB");
    assert_eq!(refused["code"], "delivery-failed", "{refused}");
    // Without an acknowledgement: an error event.
    alice.emit("webrtc-offer", offer).await;
    let e = alice.expect_error("delivery-failed", "webrtc-offer").await;
    assert_eq!(e["code"], "delivery-failed");
}

/// How many `PUBLISH` commands `redis` ran.
fn publishes(redis: &Redis) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "info", "commandstats"])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
        .and_then(|l| l.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// A node's `roulette_cluster_links_up`.
async fn links_up(node: &Node) -> u64 {
    node.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("roulette_cluster_links_up "))
        .map_or(0, |v| v.trim().parse().unwrap_or(0))
}

/// A candidate numbered `id`.
fn candidate(room: &str, id: u64) -> Value {
    json!({"roomId": room, "candidate": {"candidate": id.to_string(), "sdpMid": "0", "sdpMLineIndex": 0}})
}

/// Alice sends `ids` as candidates, each acknowledged `ok`; bob gets each once, in order.
async fn relay_in_order(
    alice: &mut Client,
    bob: &mut Client,
    room: &str,
    ids: std::ops::Range<u64>,
) {
    for id in ids.clone() {
        alice
            .emit_with_ack(id, "webrtc-ice-candidate", candidate(room, id))
            .await;
    }
    for id in ids.clone() {
        assert_eq!(
            alice.expect(&format!("ack:{id}")).await["ok"],
            true,
            "line {id}"
        );
    }
    for id in ids {
        assert_eq!(
            bob.expect("webrtc-ice-candidate").await["candidate"]["candidate"],
            id.to_string()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_link_carries_the_messages_and_redis_takes_over_when_it_breaks() {
    let redis = Redis::start_on(free_port());
    let [a, b] = nodes(
        &redis,
        "links",
        ["node-a", "node-b"],
        &["--chat-events-per-sec", "0", "--signal-events-per-sec", "0"],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), async || links_up(&a).await == 1
            && links_up(&b).await == 1)
        .await,
        "each node dials the other"
    );
    let (mut alice, mut bob, room) = pair_across(&a, &b).await;
    // Over the link: Redis publishes only the nodes' pings to themselves meanwhile.
    let before = publishes(&redis);
    relay_in_order(&mut alice, &mut bob, &room, 1..301).await;
    let published = publishes(&redis) - before;
    assert!(published < 30, "300 relays, {published} PUBLISH");
    // The link to b breaks while alice's candidates are on their way: what it did not acknowledge
    // goes through Redis, once and in order.
    let port = b.link.unwrap().port().to_string();
    for id in 301..501u64 {
        alice
            .emit_with_ack(id, "webrtc-ice-candidate", candidate(&room, id))
            .await;
        if id == 340 {
            let killed = Command::new("ss")
                .args(["-K", "dst", "127.0.0.1", "dport", "=", &port])
                .output()
                .expect("ss (iproute2)");
            assert!(
                String::from_utf8_lossy(&killed.stdout).contains(&port),
                "a link was cut"
            );
        }
    }
    for id in 301..501u64 {
        assert_eq!(
            alice.expect(&format!("ack:{id}")).await["ok"],
            true,
            "line {id}"
        );
    }
    for id in 301..501u64 {
        assert_eq!(
            bob.expect("webrtc-ice-candidate").await["candidate"]["candidate"],
            id.to_string()
        );
    }
    let during = publishes(&redis) - before - published;
    assert!(during > 0, "Redis carried them while the link was down");
    // The link comes back at a's next heartbeat and carries the call again.
    assert!(
        eventually(Duration::from_secs(10), async || links_up(&a).await == 1).await,
        "the link is dialed again"
    );
    relay_in_order(&mut alice, &mut bob, &room, 501..601).await;
    relay_in_order(&mut bob, &mut alice, &room, 601..701).await;
    // Nothing more arrived: each candidate once.
    bob.expect_silence(Duration::from_millis(300)).await;
    alice.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_direct_link_takes_only_the_clusters_nodes() {
    let redis = Redis::start_on(free_port());
    let [a] = nodes(&redis, "link-key", ["node-a"], &[]).await;
    let link = a.link.unwrap();
    // A stranger that cannot sign the hello is cut off, and the node is unharmed.
    for hello in [&b"\x00\x05hello"[..], b"\xff\xff", &[0u8; 64][..]] {
        let mut s = tokio::net::TcpStream::connect(link).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut nonce = [0u8; 16];
        s.read_exact(&mut nonce).await.unwrap();
        s.write_all(hello).await.ok();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(6), s.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "closed without a word: {read:?} {rest:?}"
        );
    }
    assert_eq!(a.health().await, 200);
}
