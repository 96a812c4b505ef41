//! A test server on an ephemeral port and a minimal Socket.IO v5 client over WebSocket
//! (Engine.IO v4), speaking the same frames as the official socket.io-client.
#![allow(dead_code)]

pub(crate) mod raw;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use roulette::Config;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// Checks `check` every 50 ms until it holds (true) or `within` has passed (false).
pub(crate) async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a test waits for an expected event before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// A running server.
pub(crate) struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The server's state, to check its invariants.
    pub hub: std::sync::Arc<roulette::Hub>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Starts a server with the default settings plus `flags`.
    pub(crate) async fn start(flags: &[&str]) -> TestServer {
        // Bans and reports in memory unless the test names a directory: no run sees another's.
        let mut all = flags.to_vec();
        if !flags.contains(&"--data-dir") {
            all.extend(["--data-dir", ""]);
        }
        let config = Config::from_flags(all).expect("valid test flags");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let app = roulette::build(config).expect("a usable configuration");
        let hub = app.hub.clone();
        let task = tokio::spawn(roulette::serve(listener, app, async {
            rx.await.ok();
        }));
        // A cluster node takes sessions once it has joined (its Redis answered).
        let end = Instant::now() + Duration::from_secs(15);
        while hub.waiting_for_cluster() {
            assert!(
                Instant::now() < end,
                "the test server never joined its cluster"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        TestServer {
            addr,
            hub,
            stop: Some(tx),
            task,
        }
    }

    /// `http://addr`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// GETs a JSON route.
    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::get(format!("{}{path}", self.url())).await.unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    /// Begins shutdown (as SIGTERM does) and returns the task running the server.
    pub(crate) fn shutdown(&mut self) -> &mut JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.stop.take() {
            tx.send(()).ok();
        }
        &mut self.task
    }

    /// Connects and authenticates a client as `user`.
    pub(crate) async fn user(&self, user: &str) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.authenticate(user).await;
        c
    }

    /// Two authenticated users matched with each other; returns them and the room id.
    pub(crate) async fn pair(&self, a: &str, b: &str) -> (Client, Client, String) {
        let mut ca = self.user(a).await;
        let mut cb = self.user(b).await;
        ca.emit("find-random-partner", json!({})).await;
        ca.expect("searching").await;
        cb.emit("find-random-partner", json!({})).await;
        let ma = ca.expect("matched").await;
        let mb = cb.expect("matched").await;
        assert_eq!(ma["roomId"], mb["roomId"]);
        (ca, cb, ma["roomId"].as_str().unwrap().to_string())
    }

    /// Polls `/stats` until `pred` holds (or fails the test after [`WAIT`]).
    pub(crate) async fn wait_stats(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let end = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, s) = self.get("/stats").await;
            if pred(&s) {
                return s;
            }
            if tokio::time::Instant::now() > end {
                panic!("stats never showed {what}: {s}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Handshake options of [`Client::open`].
#[derive(Default)]
pub(crate) struct Opts<'a> {
    /// An `Origin` header.
    pub origin: Option<&'a str>,
    /// An `X-Forwarded-For` header.
    pub forwarded_for: Option<&'a str>,
    /// The Socket.IO handshake `auth` object.
    pub auth: Option<Value>,
}

/// Why a connection was not opened.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The HTTP handshake was refused with this status.
    Http(u16),
    /// The namespace connection was refused (`connect_error`) with this message.
    ConnectError(String),
}

/// One Socket.IO connection on the default namespace.
pub(crate) struct Client {
    ws: Ws,
    /// The Socket.IO socket id.
    pub sid: String,
    pending: VecDeque<(String, Value)>,
    /// True once the server closed the connection.
    pub closed: bool,
}

impl Client {
    /// Opens a WebSocket, completes the Engine.IO and Socket.IO handshakes.
    pub(crate) async fn connect(addr: SocketAddr) -> Client {
        Client::connect_with_origin(addr, None).await.unwrap()
    }

    /// Like [`connect`](Self::connect), sending an `Origin` header. Returns the HTTP status on
    /// refusal.
    pub(crate) async fn connect_with_origin(
        addr: SocketAddr,
        origin: Option<&str>,
    ) -> Result<Client, u16> {
        let opts = Opts {
            origin,
            ..Default::default()
        };
        match Client::open(addr, opts).await {
            Ok(c) => Ok(c),
            Err(Refused::Http(code)) => Err(code),
            Err(e) => panic!("connect failed: {e:?}"),
        }
    }

    /// Opens a connection with handshake options.
    pub(crate) async fn open(addr: SocketAddr, opts: Opts<'_>) -> Result<Client, Refused> {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let mut req = url.into_client_request().unwrap();
        if let Some(o) = opts.origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        if let Some(ip) = opts.forwarded_for {
            req.headers_mut()
                .insert("x-forwarded-for", ip.parse().unwrap());
        }
        let (ws, _) = match connect_async(req).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                return Err(Refused::Http(resp.status().as_u16()));
            }
            Err(e) => panic!("connect failed: {e}"),
        };
        let mut c = Client {
            ws,
            sid: String::new(),
            pending: VecDeque::new(),
            closed: false,
        };
        let open = c.next_text().await.expect("open packet");
        assert!(open.starts_with('0'), "engine.io open: {open}");
        match opts.auth {
            Some(auth) => c.send_raw(&format!("40{auth}")).await,
            None => c.send_raw("40").await,
        }
        loop {
            let t = c.next_text().await.expect("connect packet");
            if let Some(body) = t.strip_prefix("40") {
                let v: Value = serde_json::from_str(body).unwrap();
                c.sid = v["sid"].as_str().unwrap().to_string();
                break;
            }
            if let Some(body) = t.strip_prefix("44") {
                let v: Value = serde_json::from_str(body).unwrap();
                return Err(Refused::ConnectError(
                    v["message"].as_str().unwrap_or("").into(),
                ));
            }
        }
        Ok(c)
    }

    /// Sends a raw Engine.IO text frame, e.g. `42["event",{}]`.
    pub(crate) async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .unwrap();
    }

    /// Emits an event with one argument.
    pub(crate) async fn emit(&mut self, event: &str, data: Value) {
        let frame = format!("42{}", json!([event, data]));
        self.send_raw(&frame).await;
    }

    /// Emits an event; false when the connection is gone (for clients the server may cut off).
    pub(crate) async fn try_emit(&mut self, event: &str, data: Value) -> bool {
        let frame = format!("42{}", json!([event, data]));
        self.ws.send(Message::Text(frame.into())).await.is_ok()
    }

    /// Emits an event asking for an acknowledgement with id `id`; the reply arrives as the
    /// event `ack:<id>`.
    pub(crate) async fn emit_with_ack(&mut self, id: u64, event: &str, data: Value) {
        let frame = format!("42{id}{}", json!([event, data]));
        self.send_raw(&frame).await;
    }

    /// Sends a raw frame; false when the connection is gone.
    pub(crate) async fn try_send_raw(&mut self, text: &str) -> bool {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .is_ok()
    }

    /// Emits an event with no argument.
    pub(crate) async fn emit_bare(&mut self, event: &str) {
        self.send_raw(&format!("42{}", json!([event]))).await;
    }

    /// Sends `authenticate {userId}` and waits for `authenticated`.
    pub(crate) async fn authenticate(&mut self, user: &str) -> Value {
        self.emit("authenticate", json!({ "userId": user })).await;
        let v = self.expect("authenticated").await;
        assert_eq!(v["userId"], user);
        v
    }

    /// The next Engine.IO text frame, answering pings on the way. `None` once closed.
    async fn next_text(&mut self) -> Option<String> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("server sent nothing in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    if t.as_str() == "2" {
                        // A closing connection may refuse the pong; the read below sees the end.
                        self.ws.send(Message::Text("3".into())).await.ok();
                        continue;
                    }
                    return Some(t.to_string());
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    self.closed = true;
                    return None;
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Reads one event frame into the pending queue. False when the connection closed.
    async fn read_event(&mut self) -> bool {
        loop {
            let Some(t) = self.next_text().await else {
                return false;
            };
            if let Some(body) = t.strip_prefix("42") {
                let v: Value = serde_json::from_str(body).unwrap();
                let name = v[0].as_str().unwrap().to_string();
                self.pending
                    .push_back((name, v.get(1).cloned().unwrap_or(Value::Null)));
                return true;
            }
            if let Some(rest) = t.strip_prefix("43") {
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                let v: Value = serde_json::from_str(&rest[digits..]).unwrap();
                self.pending
                    .push_back((format!("ack:{}", &rest[..digits]), v[0].clone()));
                return true;
            }
            // Namespace disconnect (41) or other packets: nothing to queue.
            if t.starts_with("41") || t == "1" {
                self.closed = true;
                return false;
            }
        }
    }

    /// The next event, or `None` once the connection closed.
    pub(crate) async fn try_next_event(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if !self.read_event().await {
                return None;
            }
        }
    }

    /// The next event, whatever it is.
    pub(crate) async fn next_event(&mut self) -> (String, Value) {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return e;
            }
            assert!(self.read_event().await, "connection closed while waiting");
        }
    }

    /// Waits for `event`, skipping `queue-status` and `searching` updates (which come at times
    /// the tests do not control). Any other event first fails the test.
    pub(crate) async fn expect(&mut self, event: &str) -> Value {
        loop {
            let (name, data) = self.next_event().await;
            if name == event {
                return data;
            }
            if name == "queue-status" || name == "searching" {
                continue;
            }
            panic!("expected {event}, got {name}: {data}");
        }
    }

    /// Waits for an `error` event and returns it, checking its `code` and `event`.
    pub(crate) async fn expect_error(&mut self, code: &str, event: &str) -> Value {
        let e = self.expect("error").await;
        assert_eq!(e["code"], code, "{e}");
        assert_eq!(e["event"], event, "{e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        e
    }

    /// Asserts that no event other than queue updates arrives for `wait`.
    pub(crate) async fn expect_silence(&mut self, wait: Duration) {
        let end = tokio::time::Instant::now() + wait;
        loop {
            while let Some((name, data)) = self.pending.pop_front() {
                if name != "queue-status" && name != "searching" {
                    panic!("expected nothing, got {name}: {data}");
                }
            }
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match tokio::time::timeout(left, self.read_event()).await {
                Err(_) => return,
                Ok(false) => panic!("connection closed"),
                Ok(true) => {}
            }
        }
    }

    /// The events that have already arrived, without waiting for more.
    pub(crate) async fn drain_ready(&mut self) -> Vec<(String, Value)> {
        while let Ok(true) = tokio::time::timeout(Duration::ZERO, self.read_event()).await {}
        self.pending.drain(..).collect()
    }

    /// Waits until the server closes the connection; returns the events that came before.
    pub(crate) async fn until_closed(&mut self) -> Vec<(String, Value)> {
        let mut seen: Vec<(String, Value)> = self.pending.drain(..).collect();
        while self.read_event().await {
            seen.extend(self.pending.drain(..));
        }
        seen
    }

    /// Closes the WebSocket abruptly (no namespace disconnect).
    pub(crate) async fn drop_connection(mut self) {
        self.ws.close(None).await.ok();
    }

    /// Drops the TCP connection without a goodbye, as a phone losing its network does.
    pub(crate) fn abort(self) {
        drop(self);
    }
}

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server binary a test starts: `$ROULETTE_BIN` when set (a copy of one's own build, where
/// several checkouts share one target directory and so one `target/debug/roulette`), else the
/// one cargo built for these tests.
pub(crate) fn server_bin() -> String {
    std::env::var("ROULETTE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_roulette").to_string())
}

/// A server process a test started, once it announced its address.
pub(crate) struct Listening {
    /// The process, killed when dropped.
    pub proc: Proc,
    /// `127.0.0.1:port`, as it announced it.
    pub addr: String,
    /// Everything it writes to stdout, from its first line; read to the end in the background,
    /// so the server never blocks on a full pipe.
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Listening {
    /// `http://addr`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Spawns `cmd` (its stdout piped here) and waits up to 15 s for its "listening on" line.
pub(crate) fn spawn_listening(mut cmd: Command) -> Listening {
    use std::io::{BufRead, BufReader};
    if !cmd.get_envs().any(|(k, _)| k == "DATA_DIR") {
        cmd.env("DATA_DIR", "");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let out = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let addr: String = line[i + "listening on http://".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                addr_tx.send(addr).ok();
            }
            tx.send(line).ok();
        }
    });
    let proc = Proc(child);
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(15))
        .unwrap_or_else(|_| {
            panic!(
                "the server did not announce its address: {:?}",
                lines.try_iter().collect::<Vec<_>>()
            )
        });
    Listening { proc, addr, lines }
}

/// A child process, killed (SIGKILL) when dropped.
pub(crate) struct Proc(pub Child);

impl Proc {
    /// SIGKILL: no goodbye to anyone.
    pub(crate) fn kill(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-server` of this test's own, without persistence.
pub(crate) struct Redis {
    /// Its port.
    pub port: u16,
    child: Proc,
}

impl Redis {
    /// Starts one on `port` and waits until it accepts connections.
    pub(crate) fn start_on(port: u16) -> Redis {
        Redis::start_with(port, &["--port", &port.to_string()])
    }

    /// Starts one listening on `port` as `args` say (TLS, say) and waits until it accepts TCP
    /// connections there.
    pub(crate) fn start_with(port: u16, args: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the cluster tests start their own; install it \
                     (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis). \
                     scripts/test.sh checks this before it builds"
                )
            });
        let r = Redis {
            port,
            child: Proc(child),
        };
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// `redis://127.0.0.1:port`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn kill(&mut self) {
        self.child.kill();
    }
}

/// The names of the metrics a monitoring file uses: `roulette_…` and `process_…` tokens, a
/// histogram's `_bucket` taken back to its name.
pub(crate) fn metrics_named_in(path: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut names = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices(['r', 'p']) {
        let rest = &text[i..];
        if !(rest.starts_with("roulette_") || rest.starts_with("process_"))
            || text[..i]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let name = name.strip_suffix("_bucket").unwrap_or(&name).to_string();
        names.insert(name);
    }
    names
}

/// Every metric the Grafana dashboard and the alert rules of `deploy/monitoring/` name.
pub(crate) fn monitored_metrics() -> std::collections::BTreeSet<String> {
    let mut wanted = metrics_named_in("deploy/monitoring/grafana-dashboard.json");
    wanted.extend(metrics_named_in("deploy/monitoring/alerts.yml"));
    wanted
}

/// Checks the first scrape of a fresh node: every metric of `wanted` has a series, and every
/// counter and histogram among them is at 0 (a gauge whose figure is unknown yet, such as the
/// connection success ratio before any call, is NaN). Panics naming what is wrong.
pub(crate) fn assert_fresh_scrape(text: &str, wanted: &std::collections::BTreeSet<String>) {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text");
    let mut missing = wanted.clone();
    for sample in &scrape.samples {
        if !missing.remove(&sample.metric) && !wanted.contains(&sample.metric) {
            continue;
        }
        use prometheus_parse::Value as V;
        let zero = match &sample.value {
            V::Counter(n) => *n == 0.0,
            V::Histogram(buckets) => buckets.iter().all(|b| b.count == 0.0),
            V::Summary(_) | V::Untyped(_) | V::Gauge(_) => true,
        };
        assert!(
            zero,
            "{} {:?} is not 0 on a fresh node: {:?}",
            sample.metric, sample.labels, sample.value
        );
    }
    assert!(
        missing.is_empty(),
        "named by deploy/monitoring/ but not in the first scrape: {missing:?}\n{text}"
    );
}
