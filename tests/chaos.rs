//! Chaos: hundreds of clients doing random things (searching, skipping, relaying, chatting,
//! sending garbage, dropping their connection and coming back with or without their resume
//! token) for a bounded time. The server's invariants are checked throughout, and once everyone
//! has gone `/stats` must read zero.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Client, TestServer};
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

const CLIENTS: usize = 200;
const RUN: Duration = Duration::from_secs(4);

/// What a chaos client believes about itself, from the events it has seen.
#[derive(Default)]
struct Believed {
    room: Option<String>,
    token: Option<String>,
}

impl Believed {
    fn observe(&mut self, events: &[(String, Value)]) {
        for (name, v) in events {
            match name.as_str() {
                "matched" | "rejoined" => self.room = v["roomId"].as_str().map(str::to_string),
                "partner-left" | "room-ended" | "chat-ended" => self.room = None,
                "authenticated" => self.token = v["resumeToken"].as_str().map(str::to_string),
                _ => {}
            }
        }
    }
}

async fn login(s: &TestServer, id: &str, token: Option<&str>, b: &mut Believed) -> Client {
    let mut c = Client::connect(s.addr).await;
    c.emit(
        "authenticate",
        json!({"userId": id, "resumeToken": token, "userInfo": {"gender": "female"}}),
    )
    .await;
    // The id may still be held for a dropped connection without a token: use a fresh one then.
    loop {
        let (name, v) = c.next_event().await;
        if name == "authenticated" {
            b.observe(&[(name, v)]);
            break;
        }
        if name == "auth-error" {
            let fresh = format!("{id}-{}", rand::random::<u32>());
            c.emit("authenticate", json!({ "userId": fresh })).await;
        }
    }
    c
}

async fn chaos_client(servers: Arc<Vec<TestServer>>, i: usize, stop: Arc<AtomicBool>) -> usize {
    let mut rng = StdRng::seed_from_u64(i as u64);
    let id = format!("u{i}");
    let mut b = Believed::default();
    let mut s = &servers[i % servers.len()];
    let mut c = login(s, &id, None, &mut b).await;
    let mut actions = 0;
    while !stop.load(Ordering::Relaxed) {
        let events = c.drain_ready().await;
        b.observe(&events);
        actions += 1;
        let ok = match rng.random_range(0..100) {
            0..=24 => {
                let prefs = if rng.random_bool(0.3) {
                    json!({"preferences": {"interests": ["music", "chess"]}})
                } else {
                    json!({})
                };
                c.try_emit("find-random-partner", prefs).await
            }
            25..=39 => c.try_emit("next-partner", json!({})).await,
            40..=49 => c.try_emit("end-chat", json!({})).await,
            50..=69 => match &b.room {
                Some(room) => {
                    let payload = json!({"roomId": room, "candidate": {"candidate": "x"}});
                    c.try_emit("webrtc-ice-candidate", payload).await
                }
                None => true,
            },
            70..=79 => match &b.room {
                Some(room) => {
                    let payload = json!({"roomId": room, "message": "hi"});
                    c.try_emit("chat-message", payload).await
                }
                None => true,
            },
            80..=84 => {
                let garbage = [json!(null), json!([1, 2]), json!({"roomId": 5}), json!("x")];
                let pick = garbage[rng.random_range(0..garbage.len())].clone();
                let event =
                    ["authenticate", "webrtc-offer", "typing", "nonsense"][rng.random_range(0..4)];
                c.try_emit(event, pick).await
            }
            85..=92 => {
                // A phone losing its network, then coming back (mostly with its token), to any
                // node of a cluster.
                c.abort();
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
                let token = b.token.clone().filter(|_| rng.random_bool(0.8));
                b.room = None;
                s = &servers[rng.random_range(0..servers.len())];
                c = login(s, &id, token.as_deref(), &mut b).await;
                true
            }
            _ => {
                c.drop_connection().await;
                b = Believed::default();
                c = login(s, &id, None, &mut b).await;
                true
            }
        };
        if !ok {
            b = Believed::default();
            c = login(s, &id, None, &mut b).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
    }
    c.abort();
    actions
}

/// Flags of every chaos server: a short grace, and no limits for clients from one address.
const FLAGS: [&str; 8] = [
    "--reconnect-grace-ms",
    "500",
    "--max-connections-per-ip",
    "0",
    "--max-new-connections-per-ip",
    "0",
    "--search-events-per-min",
    "0",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_clients_never_break_the_invariants_and_leave_nothing_behind() {
    chaos(vec![TestServer::start(&FLAGS).await]).await;
}

/// The same on two nodes of a cluster sharing a `redis-server` of the test's own: clients start
/// on either node and come back to either one; each node's invariants hold throughout, and
/// nothing is left on either node or in the cluster's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_clients_across_two_nodes_leave_nothing_behind() {
    let redis = common::Redis::start_on(common::free_port());
    let prefix = format!("chaos-{}", std::process::id());
    let url = redis.url();
    let mut flags: Vec<&str> = FLAGS.to_vec();
    flags.extend([
        "--redis-url",
        url.as_str(),
        "--redis-prefix",
        prefix.as_str(),
    ]);
    let nodes = vec![
        TestServer::start(&flags).await,
        TestServer::start(&flags).await,
    ];
    let nodes = chaos(nodes).await;
    // The nodes' last cancellations may still be on their way to the node that matches.
    let queued = async || {
        let mut n = 0;
        for s in nodes.iter() {
            n += s.get("/stats").await.1["cluster"]["queued"]
                .as_u64()
                .unwrap_or(0);
        }
        n
    };
    let end = Instant::now() + Duration::from_secs(5);
    while queued().await != 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(queued().await, 0, "the cluster's queue is empty");
}

/// Runs [`CLIENTS`] chaos clients over `servers` for [`RUN`], checking every server's invariants
/// throughout, then waits for every server to be empty; returns the servers.
async fn chaos(servers: Vec<TestServer>) -> Arc<Vec<TestServer>> {
    let servers = Arc::new(servers);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let servers = servers.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut checks = 0;
            while !stop.load(Ordering::Relaxed) {
                for s in servers.iter() {
                    if let Err(e) = s.hub.check_invariants() {
                        panic!("invariant broken mid-run: {e}");
                    }
                }
                checks += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            checks
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(chaos_client(servers.clone(), i, stop.clone())))
        .collect();
    let started = Instant::now();
    tokio::time::sleep(RUN).await;
    let mut mid = Vec::new();
    for s in servers.iter() {
        mid.push(s.get("/stats").await.1);
    }
    stop.store(true, Ordering::Relaxed);
    let mut actions = 0;
    for c in clients {
        actions += c.await.expect("a chaos client panicked");
    }
    let checks = watcher.await.expect("the invariant watcher panicked");
    assert!(actions > CLIENTS * 10, "the clients did things: {actions}");
    assert!(checks > 10, "the invariants were checked: {checks}");
    assert!(
        mid.iter().all(|m| m["totalMatches"].as_u64().unwrap() > 0),
        "pairs were made on every server: {mid:?}"
    );
    for s in servers.iter() {
        assert_eq!(s.hub.check_invariants(), Ok(()));
        // Everyone dropped abruptly: rooms are held for the grace, then nothing is left.
        let end = s
            .wait_stats("an empty server", |v| {
                v["connectedUsers"] == 0
                    && v["waitingUsers"] == 0
                    && v["activeRooms"] == 0
                    && v["reconnectingUsers"] == 0
            })
            .await;
        println!(
            "chaos: {actions} actions by {CLIENTS} clients in {:?}, {checks} invariant checks; \
             at the end {end}",
            started.elapsed(),
        );
    }
    servers
}
