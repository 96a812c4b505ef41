//! One simulated client connection: Engine.IO v4 / Socket.IO v5 over a WebSocket.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

/// Where to connect, parsed once.
#[derive(Clone)]
pub struct Target {
    addr: SocketAddr,
    host: String,
    spread: bool,
}

impl Target {
    /// `http://host:port` → a target. Source addresses are spread over 127.0.0.0/8 when the
    /// server is on loopback and `spread` is true: one source address has only ~28,000
    /// ephemeral ports towards one server port.
    pub fn new(url: &str, spread: bool) -> Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .ok_or_else(|| anyhow!("the URL must start with http:// or ws://"))?;
        let host = rest.trim_end_matches('/').to_string();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .ok_or_else(|| anyhow!("{host} has no address"))?;
        let spread = spread && addr.ip().is_loopback() && addr.is_ipv4();
        Ok(Target { addr, host, spread })
    }

    fn source(&self) -> Option<SocketAddr> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if !self.spread {
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // 127.0.1.1 .. 127.250.250.250, skipping 127.0.0.x (where the server usually is).
        let (a, b, c) = (1 + (n / 62_500) % 250, 1 + (n / 250) % 250, 1 + n % 250);
        let ip = Ipv4Addr::new(127, a as u8, b as u8, c as u8);
        Some(SocketAddr::new(IpAddr::V4(ip), 0))
    }
}

/// Whether clients connect as socket.io-client does by default (see [`Conn::open`]).
pub static POLLING_FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One HTTP/1.1 exchange on a kept-alive connection: the response's status and body.
async fn http(
    tcp: &mut TcpStream,
    method: &str,
    target: &str,
    host: &str,
    body: &str,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain;charset=UTF-8\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes())
        .await
        .context("HTTP request")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tcp.read(&mut chunk).await.context("HTTP response")?;
        if n == 0 {
            bail!("the server closed the HTTP connection");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {head:.80}"))?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .ok_or_else(|| anyhow!("an HTTP response without Content-Length"))?;
    while buf.len() < head_end + len {
        let n = tcp.read(&mut chunk).await.context("HTTP body")?;
        if n == 0 {
            bail!("the server closed the HTTP connection mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
    ))
}

/// An open, namespace-connected Socket.IO client.
pub struct Conn {
    ws: WebSocketStream<TcpStream>,
    pending: VecDeque<(String, Value)>,
    timeout: Duration,
}

impl Conn {
    /// Connects and completes the Engine.IO and Socket.IO handshakes: over WebSocket directly,
    /// or with [`POLLING_FIRST`] as socket.io-client does by default (the long-polling
    /// handshake, `40` over polling, then the upgrade: `2probe`, `3probe`, `5`).
    pub async fn open(t: &Target, timeout: Duration) -> Result<Conn> {
        if POLLING_FIRST.load(std::sync::atomic::Ordering::Relaxed) {
            return tokio::time::timeout(timeout * 2, Conn::open_polling_first(t, timeout))
                .await
                .context("the polling handshake and upgrade timed out")?;
        }
        let tcp = Conn::connect_tcp(t, timeout).await?;
        let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", t.host);
        let (ws, _) = tokio::time::timeout(timeout, client_async(url, tcp))
            .await
            .context("WebSocket handshake timed out")?
            .context("WebSocket handshake")?;
        let mut c = Conn {
            ws,
            pending: VecDeque::new(),
            timeout,
        };
        let open = c.text().await?;
        if !open.starts_with('0') {
            bail!("expected the Engine.IO open packet, got {open:.80}");
        }
        c.send("40").await?;
        loop {
            let t = c.text().await?;
            if t.starts_with("40") {
                return Ok(c);
            }
            if let Some(e) = t.strip_prefix("44") {
                bail!("namespace connection refused: {e:.120}");
            }
        }
    }

    async fn connect_tcp(t: &Target, timeout: Duration) -> Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        if let Some(src) = t.source() {
            socket.bind(src).context("binding a source address")?;
        }
        let tcp = tokio::time::timeout(timeout, socket.connect(t.addr))
            .await
            .context("connect timed out")?
            .context("connect")?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    async fn open_polling_first(t: &Target, timeout: Duration) -> Result<Conn> {
        let mut poll = Conn::connect_tcp(t, timeout).await?;
        let base = "/socket.io/?EIO=4&transport=polling";
        let (status, open) = http(&mut poll, "GET", base, &t.host, "").await?;
        if status != 200 || !open.starts_with('0') {
            bail!("polling handshake: {status} {open:.80}");
        }
        let v: Value = serde_json::from_str(&open[1..]).context("the open packet")?;
        let sid = v["sid"]
            .as_str()
            .ok_or_else(|| anyhow!("no sid"))?
            .to_string();
        let with_sid = format!("{base}&sid={sid}");
        let (status, _) = http(&mut poll, "POST", &with_sid, &t.host, "40").await?;
        if status != 200 {
            bail!("posting 40: {status}");
        }
        // The `40` reply may come behind other packets (a noop, a ping), or in a later poll.
        loop {
            let (status, body) = http(&mut poll, "GET", &with_sid, &t.host, "").await?;
            if status != 200 {
                bail!("namespace connection over polling: {status}");
            }
            let mut packets = body.split('\x1e');
            if packets.clone().any(|p| p == "2") {
                http(&mut poll, "POST", &with_sid, &t.host, "3").await?;
            }
            if packets.any(|p| p.starts_with("40")) {
                break;
            }
            if body.contains("44") {
                bail!("namespace connection refused over polling: {body:.120}");
            }
        }
        let tcp = Conn::connect_tcp(t, timeout).await?;
        let url = format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket&sid={sid}",
            t.host
        );
        let (ws, _) = client_async(url, tcp).await.context("upgrade handshake")?;
        let mut c = Conn {
            ws,
            pending: VecDeque::new(),
            timeout,
        };
        c.send("2probe").await?;
        let probe = c.text().await?;
        if probe != "3probe" {
            bail!("expected 3probe, got {probe:.80}");
        }
        c.send("5").await?;
        drop(poll);
        Ok(c)
    }

    /// Sends a raw Engine.IO text frame.
    pub async fn send(&mut self, frame: &str) -> Result<()> {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .context("send")
    }

    /// Emits `event` with `data`.
    pub async fn emit(&mut self, event: &str, data: &Value) -> Result<()> {
        self.send(&format!("42{}", json!([event, data]))).await
    }

    /// The next text frame, answering pings on the way.
    async fn text(&mut self) -> Result<String> {
        loop {
            let msg = tokio::time::timeout(self.timeout, self.ws.next())
                .await
                .map_err(|_| anyhow!("nothing from the server in {:?}", self.timeout))?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    if t.as_str() == "2" {
                        self.send("3").await?;
                        continue;
                    }
                    return Ok(t.to_string());
                }
                Some(Ok(Message::Close(_))) | None => bail!("the server closed the connection"),
                Some(Err(e)) => bail!("connection error: {e}"),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next event.
    pub async fn event(&mut self) -> Result<(String, Value)> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(e);
        }
        loop {
            let t = self.text().await?;
            if let Some(body) = t.strip_prefix("42") {
                let v: Value = serde_json::from_str(body).context("event frame")?;
                let name = v[0].as_str().unwrap_or_default().to_string();
                return Ok((name, v.get(1).cloned().unwrap_or(Value::Null)));
            }
            if t.starts_with("41") || t == "1" {
                bail!("disconnected by the server");
            }
        }
    }

    /// Waits for `name`, skipping queue updates; an `error` or anything else first is a failure.
    pub async fn expect(&mut self, name: &str) -> Result<Value> {
        loop {
            let (n, v) = self.event().await?;
            if n == name {
                return Ok(v);
            }
            match n.as_str() {
                "queue-status" | "searching" | "partner-typing" => continue,
                _ => bail!("expected {name}, got {n}: {v:.200}"),
            }
        }
    }

    /// Closes with a WebSocket close frame (a goodbye).
    pub async fn close(mut self) {
        self.ws.close(None).await.ok();
    }

    /// Drops the TCP connection without a goodbye (a phone losing its network).
    pub fn abort(self) {
        drop(self);
    }

    /// Holds the connection, answering pings, until `stop` fires. Fails if the server closes it.
    pub async fn hold(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> Result<()> {
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                msg = self.ws.next() => match msg {
                    Some(Ok(Message::Text(t))) if t.as_str() == "2" => self.send("3").await?,
                    Some(Ok(_)) => {}
                    _ => bail!("the server closed an idle connection"),
                },
            }
        }
    }
}

/// Connects and authenticates as `user`; returns the connection and the `authenticated` body.
/// A `cohort` (a made-up country code) is put in the profile: searches with
/// [`find_body`] then meet only users of the same cohort, which keeps the scenarios of a soak
/// run from meeting each other.
pub async fn user(
    t: &Target,
    timeout: Duration,
    user: &str,
    cohort: Option<&str>,
) -> Result<(Conn, Value)> {
    let mut c = Conn::open(t, timeout).await?;
    let info = cohort.map_or(json!({}), |c| json!({ "country": c }));
    c.emit("authenticate", &json!({ "userId": user, "userInfo": info }))
        .await?;
    let a = c.expect("authenticated").await?;
    Ok((c, a))
}

/// The `find-random-partner` payload for a cohort (see [`user`]).
pub fn find_body(cohort: Option<&str>) -> Value {
    match cohort {
        Some(c) => json!({ "preferences": { "country": c } }),
        None => json!({}),
    }
}
