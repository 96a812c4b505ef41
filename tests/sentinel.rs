//! A cluster rides out a Redis failover. With Sentinel: a master, a replica and three sentinels
//! (Debian's `redis-server`, each started here on free loopback ports in a directory of this
//! test's own), two Roulette nodes that find the master through the sentinels, a call across
//! them, and the master killed with SIGKILL mid-call. With a managed Redis's moving endpoint: the
//! replica promoted, the endpoint moved to it, the old primary demoted under the nodes.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Proc, eventually, free_port};
use serde_json::{Value, json};

/// The master's name the sentinels watch.
const MASTER: &str = "roulette-master";

/// A directory of this test's own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("roulette-sentinel-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// `redis-cli -p port args…`, its output as text ("" when it cannot connect).
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli (Debian: apt-get install redis-server, which brings redis-tools) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `redis-server` with `args` in `dir` and waits until `port` answers `PING`.
fn redis_server(dir: &TempDir, port: u16, args: &[&str]) -> Proc {
    let child = Command::new("redis-server")
        .args(args)
        .current_dir(&dir.0)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run redis-server ({e}): the Sentinel test starts its own; install it \
                 (Debian/Ubuntu: apt-get install redis-server)"
            )
        });
    let proc = Proc(child);
    let end = Instant::now() + Duration::from_secs(10);
    while !cli(port, &["PING"]).contains("PONG") {
        assert!(Instant::now() < end, "redis-server on {port} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    proc
}

/// `redis-server`'s arguments for a server on `port`, without persistence.
fn server_args(port: u16) -> Vec<String> {
    vec![
        "--port".to_string(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
        "--dbfilename".into(),
        format!("dump-{port}.rdb"),
    ]
}

/// Starts a Redis on `port` with `extra` arguments.
fn redis_on(dir: &TempDir, port: u16, extra: &[&str]) -> Proc {
    let mut args = server_args(port);
    args.extend(extra.iter().map(|a| a.to_string()));
    redis_server(
        dir,
        port,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// Waits until the replica on `port` is in sync with its master.
fn synced(port: u16) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cli(port, &["INFO", "replication"]).contains("master_link_status:up") {
        assert!(Instant::now() < end, "the replica never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A master, its replica and three sentinels watching them.
struct Sentinels {
    master: Proc,
    master_port: u16,
    replica_port: u16,
    sentinel_ports: [u16; 3],
    _procs: Vec<Proc>,
    _dir: TempDir,
}

impl Sentinels {
    fn start() -> Sentinels {
        let dir = TempDir::new();
        let (master_port, replica_port) = (free_port(), free_port());
        let master = redis_on(&dir, master_port, &[]);
        let replica = redis_on(
            &dir,
            replica_port,
            &["--replicaof", "127.0.0.1", &master_port.to_string()],
        );
        synced(replica_port);
        let mut procs = vec![replica];
        let sentinel_ports = [free_port(), free_port(), free_port()];
        for port in sentinel_ports {
            // A sentinel rewrites its configuration file: one each, in the test's directory.
            let conf = dir.0.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 2000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    dir = dir.0.display()
                ),
            )
            .unwrap();
            procs.push(redis_server(
                &dir,
                port,
                &[conf.to_str().unwrap(), "--sentinel"],
            ));
        }
        // Every sentinel knows the replica and the other two (they find each other through the
        // master's hello channel, every 2 s), so a failover can be agreed on. Redis alone is
        // involved here; on a loaded CI machine it once took longer than 20 s.
        let end = Instant::now() + Duration::from_secs(45);
        for port in sentinel_ports {
            while !cli(port, &["SENTINEL", "CKQUORUM", MASTER]).contains("3 usable")
                || !cli(port, &["SENTINEL", "REPLICAS", MASTER]).contains(&replica_port.to_string())
            {
                assert!(Instant::now() < end, "the sentinels never agreed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Sentinels {
            master,
            master_port,
            replica_port,
            sentinel_ports,
            _procs: procs,
            _dir: dir,
        }
    }

    /// `redis+sentinel://127.0.0.1:a,127.0.0.1:b,127.0.0.1:c/MASTER`.
    fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// Cuts the replica off its master: what is written from now on reaches only the master.
    /// The replica presents a password the master does not know, so it cannot sync again; the
    /// sentinels can still promote it (its link has been down for less than a second).
    fn cut_replication(&self) {
        assert!(cli(self.replica_port, &["CONFIG", "SET", "masterauth", "wrong"]).contains("OK"));
        cli(self.master_port, &["CLIENT", "KILL", "TYPE", "replica"]);
        let end = Instant::now() + Duration::from_secs(5);
        while !cli(self.replica_port, &["INFO", "replication"]).contains("master_link_status:down")
        {
            assert!(Instant::now() < end, "the replica stayed linked");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The port of the master the first sentinel names now.
    fn master_now(&self) -> Option<u16> {
        cli(
            self.sentinel_ports[0],
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER],
        )
        .lines()
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
    }
}

/// A Roulette process of the cluster.
struct Node {
    addr: SocketAddr,
    _child: Proc,
}

impl Node {
    async fn start(url: &str, id: &str, prefix: &str) -> Node {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_roulette"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--node-id", id, "--redis-prefix", prefix])
            .args(["--log-level", "warn"])
            .env_clear()
            .env("REDIS_URL", url)
            .env("DATA_DIR", "")
            .stdout(Stdio::null())
            .spawn()
            .expect("the roulette binary");
        let node = Node {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: Proc(child),
        };
        assert!(
            eventually(Duration::from_secs(20), async || node.health().await.0
                == 200)
            .await,
            "node {id} never became healthy through the sentinels"
        );
        node
    }

    async fn health(&self) -> (u16, Value) {
        match reqwest::get(format!("http://{}/health", self.addr)).await {
            Ok(r) => {
                let code = r.status().as_u16();
                (code, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn metrics(&self) -> String {
        match reqwest::get(format!("http://{}/metrics", self.addr)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn user(&self, name: &str) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.authenticate(name).await;
        c
    }
}

/// alice's `n`th ICE candidate for `room`, asking for an acknowledgement with id `n`.
async fn candidate(alice: &mut Client, room: &str, n: u64) {
    alice
        .emit_with_ack(
            n,
            "webrtc-ice-candidate",
            json!({"roomId": room, "candidate": {"candidate": format!("c{n}"), "sdpMid": "0"}}),
        )
        .await;
}

/// Every candidate alice was told `ok` for (of the `sent` she sent, ids `0..sent`) reaches bob,
/// in order, once.
async fn every_acknowledged_candidate_arrives(alice: &mut Client, bob: &mut Client, sent: u64) {
    let mut acked = Vec::new();
    let mut answered = 0;
    while answered < sent {
        let (name, v) = alice.next_event().await;
        if let Some(id) = name.strip_prefix("ack:") {
            answered += 1;
            if v["ok"] == true {
                acked.push(id.parse::<u64>().unwrap());
            }
        }
    }
    assert!(
        acked.len() as u64 >= sent - 10,
        "the relays were taken during the outage: {} of {sent} acknowledged",
        acked.len()
    );
    let last = *acked.last().expect("relays acknowledged");
    let mut heard = Vec::new();
    while heard.last() != Some(&last) {
        let c = bob.expect("webrtc-ice-candidate").await;
        let n: u64 = c["candidate"]["candidate"].as_str().unwrap()[1..]
            .parse()
            .unwrap();
        heard.push(n);
    }
    assert!(
        heard.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice: {heard:?}"
    );
    eprintln!(
        "{} of {sent} candidates acknowledged ok, {} delivered",
        acked.len(),
        heard.len()
    );
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !heard.contains(n))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}

/// Reads alice's events until the `webrtc-answer` bob sent, skipping the acknowledgements and
/// refusals of her candidates.
async fn expect_answer(alice: &mut Client, sdp: &str) {
    loop {
        // A candidate refused during the outage (if any) is refused in its acknowledgement;
        // an `error` is skipped too, as an older server sent both.
        match alice.next_event().await {
            (name, v) if name == "webrtc-answer" => {
                assert_eq!(v["answer"]["sdp"], sdp);
                break;
            }
            (name, _) if name == "error" || name.starts_with("ack:") => continue,
            (name, v) => panic!("expected webrtc-answer, got {name}: {v}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_mid_call_loses_no_acknowledged_relay_and_no_search() {
    let mut redis = Sentinels::start();
    let url = redis.url();
    let prefix = format!("test-sentinel-{}", std::process::id());
    let a = Node::start(&url, "node-a", &prefix).await;
    let b = Node::start(&url, "node-b", &prefix).await;

    // A call across the two nodes.
    let mut alice = a.user("alice").await;
    let mut bob = b.user("bob").await;
    alice.emit("find-random-partner", json!({})).await;
    alice.expect("searching").await;
    bob.emit("find-random-partner", json!({})).await;
    let room = alice.expect("matched").await["roomId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bob.expect("matched").await["roomId"], room);

    // carol and dave, both on B, are in a call of their own.
    let mut carol = b.user("carol").await;
    let mut dave = b.user("dave").await;
    carol.emit("find-random-partner", json!({})).await;
    carol.expect("searching").await;
    dave.emit("find-random-partner", json!({})).await;
    let local_room = carol.expect("matched").await["roomId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(dave.expect("matched").await["partnerId"], "carol");

    // erin starts waiting on A right before the master dies, and the replica never receives
    // her search: its link to the master is cut, and it cannot come back (the replica now
    // presents a password the master does not have).
    let mut erin = a.user("erin").await;
    redis.cut_replication();
    erin.emit("find-random-partner", json!({})).await;
    erin.expect("searching").await;
    // Time for her search to reach the master (not a measurement: the test holds either way).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        cli(redis.replica_port, &["INFO", "replication"]).contains("master_link_status:down"),
        "the replica missed the latest writes"
    );

    let mut sent = 0u64;
    for _ in 0..10 {
        candidate(&mut alice, &room, sent).await;
        sent += 1;
    }
    let killed = Instant::now();
    redis.master.kill();

    // alice keeps signaling through the whole failover; both nodes say Redis is down while it
    // lasts, and up again after.
    let mut down_seen = [false, false];
    let mut metrics_down_seen = false;
    let mut local_said = false;
    let deadline = Instant::now() + Duration::from_secs(25);
    let recovered = loop {
        assert!(Instant::now() < deadline, "the cluster never recovered");
        candidate(&mut alice, &room, sent).await;
        sent += 1;
        let mut healthy = 0;
        for (i, n) in [&a, &b].into_iter().enumerate() {
            let (code, body) = n.health().await;
            if code == 503 {
                assert_eq!(body["status"], "redis-down", "{body}");
                assert_eq!(body["cluster"]["redis"], "down", "{body}");
                down_seen[i] = true;
                if !metrics_down_seen {
                    metrics_down_seen = n.metrics().await.contains("roulette_cluster_redis_up 0");
                }
            }
            if code == 200 && down_seen[i] {
                healthy += 1;
            }
        }
        if healthy == 2 {
            break killed.elapsed();
        }
        if down_seen[1] && !local_said {
            // A call within one node does not need Redis at all.
            carol
                .emit(
                    "chat-message",
                    json!({"roomId": local_room, "message": "still here?"}),
                )
                .await;
            local_said = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(down_seen, [true, true], "/health showed the outage");
    assert!(metrics_down_seen, "/metrics showed the outage");
    assert!(local_said, "carol spoke during the outage");
    assert_eq!(dave.expect("chat-message").await["message"], "still here?");
    for n in [&a, &b] {
        assert!(n.metrics().await.contains("roulette_cluster_redis_up 1"));
    }
    // The sentinel asked may learn of the promotion after the nodes did (from the leader's
    // hello messages): it is asked again for a while.
    let mut promoted = redis.master_now();
    let until = Instant::now() + Duration::from_secs(10);
    while promoted != Some(redis.replica_port) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        promoted = redis.master_now();
    }
    assert_eq!(
        promoted,
        Some(redis.replica_port),
        "the sentinels promoted the replica"
    );
    assert_ne!(promoted, Some(redis.master_port));
    eprintln!(
        "failover: /health back to 200 on both nodes {:.1} s after the master was killed; \
         {sent} candidates sent",
        recovered.as_secs_f64()
    );
    for _ in 0..10 {
        candidate(&mut alice, &room, sent).await;
        sent += 1;
    }

    every_acknowledged_candidate_arrives(&mut alice, &mut bob, sent).await;

    // erin still waits and is matched after the promotion, across the nodes.
    let mut frank = b.user("frank").await;
    frank.emit("find-random-partner", json!({})).await;
    assert_eq!(frank.expect("matched").await["partnerId"], "erin");
    assert_eq!(erin.expect("matched").await["partnerId"], "frank");

    // The call itself goes on both ways.
    bob.emit(
        "webrtc-answer",
        json!({"roomId": room, "answer": {"type": "answer", "sdp": "after"}}),
    )
    .await;
    expect_answer(&mut alice, "after").await;
    for n in [&a, &b] {
        assert_eq!(n.health().await.0, 200);
    }
}

/// A managed Redis's endpoint: a TCP port that forwards each new connection to the Redis it
/// points at now. Moving it leaves the connections already made where they are, as a DNS name
/// that changes does.
struct Endpoint {
    port: u16,
    target: std::sync::Arc<std::sync::atomic::AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    async fn to(target: u16) -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(target));
        let to = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let port = to.load(std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    {
                        tokio::io::copy_bidirectional(&mut client, &mut server)
                            .await
                            .ok();
                    }
                });
            }
        });
        Endpoint { port, target, task }
    }

    fn point_at(&self, port: u16) {
        self.target.store(port, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_redis_failover_behind_a_moving_endpoint_is_followed() {
    // As ElastiCache or Memorystore do it: the replica is promoted, the endpoint moves to it, and
    // the old primary becomes a replica with the nodes' connections still open to it.
    let dir = TempDir::new();
    let (primary, standby) = (free_port(), free_port());
    let _primary = redis_on(&dir, primary, &[]);
    let _standby = redis_on(
        &dir,
        standby,
        &["--replicaof", "127.0.0.1", &primary.to_string()],
    );
    synced(standby);
    let endpoint = Endpoint::to(primary).await;
    let url = format!("redis://127.0.0.1:{}", endpoint.port);
    let prefix = format!("test-endpoint-{}", std::process::id());
    let a = Node::start(&url, "node-a", &prefix).await;
    let b = Node::start(&url, "node-b", &prefix).await;

    let mut alice = a.user("alice").await;
    let mut bob = b.user("bob").await;
    alice.emit("find-random-partner", json!({})).await;
    alice.expect("searching").await;
    bob.emit("find-random-partner", json!({})).await;
    let room = alice.expect("matched").await["roomId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bob.expect("matched").await["roomId"], room);
    let mut erin = a.user("erin").await;
    erin.emit("find-random-partner", json!({})).await;
    erin.expect("searching").await;

    let mut sent = 0u64;
    for _ in 0..10 {
        candidate(&mut alice, &room, sent).await;
        sent += 1;
    }
    assert!(cli(standby, &["REPLICAOF", "NO", "ONE"]).contains("OK"));
    endpoint.point_at(standby);
    assert!(cli(primary, &["REPLICAOF", "127.0.0.1", &standby.to_string()]).contains("OK"));

    // The nodes' writes to the demoted primary are refused (READONLY): they connect again, through
    // the endpoint, to the new primary, and their subscriptions follow.
    for _ in 0..40 {
        candidate(&mut alice, &room, sent).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(15), async || n.health().await.0 == 200).await,
            "the node never came back after the endpoint moved"
        );
    }
    for _ in 0..10 {
        candidate(&mut alice, &room, sent).await;
        sent += 1;
    }
    every_acknowledged_candidate_arrives(&mut alice, &mut bob, sent).await;
    // The nodes write to the new primary: a new search is kept there and matched.
    let mut frank = b.user("frank").await;
    frank.emit("find-random-partner", json!({})).await;
    assert_eq!(frank.expect("matched").await["partnerId"], "erin");
    assert_eq!(erin.expect("matched").await["partnerId"], "frank");
    bob.emit(
        "webrtc-answer",
        json!({"roomId": room, "answer": {"type": "answer", "sdp": "moved"}}),
    )
    .await;
    expect_answer(&mut alice, "moved").await;
}
