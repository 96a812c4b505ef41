//! Clients that try to make the server hold memory: they send what provokes output and never
//! read it, or hold sockets open without a request. Each attack runs for a bounded time against
//! the given URL (a server on this machine) and reports the server's RSS before, at its peak, and
//! a moment after the attackers left.
//!
//! The attackers shrink their receive buffer, so the kernel does not absorb on their behalf what
//! the server would otherwise have to hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::Common;
use crate::proc;
use crate::scenarios::Report;

/// What the attacking clients do.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// One client sends WebSocket pings (each answered with a pong) and reads nothing.
    Pings,
    /// One client asks for a 60 KB namespace again and again and reads nothing (each refusal
    /// used to repeat the namespace).
    Namespaces,
    /// CONNS clients send unknown events with 60 KB names at 9 a second each (under the event
    /// limits) and read nothing (each `error` used to repeat the name).
    Names,
    /// A client relays 30 KB offers at 45 a second (under the signalling limit) to its own
    /// second connection, which reads nothing.
    Relay,
    /// CONNS TCP connections that never send a request.
    IdleTcp,
}

/// The receive buffer of an attacking client.
const RCVBUF: u32 = 4096;

/// A WebSocket that never reads unless told to.
struct Attacker {
    ws: WebSocketStream<TcpStream>,
}

impl Attacker {
    /// Connects to `/socket.io/` over WebSocket with a small receive buffer.
    async fn open(c: &Common) -> Result<Attacker> {
        let (addr, host) = target(c)?;
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(RCVBUF)?;
        let tcp = socket.connect(addr).await.context("connect")?;
        tcp.set_nodelay(true)?;
        let url = format!("ws://{host}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio::time::timeout(c.timeout(), client_async(url, tcp))
            .await
            .context("WebSocket handshake timed out")?
            .context("WebSocket handshake")?;
        Ok(Attacker { ws })
    }

    /// Reads text frames until one starts with `prefix` (answering pings on the way).
    async fn until(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        loop {
            let m = tokio::time::timeout(timeout, self.ws.next())
                .await
                .map_err(|_| anyhow!("no {prefix} in time"))?;
            match m {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => self.text("3").await?,
                Some(Ok(Message::Text(t))) if t.starts_with(prefix) => return Ok(t.to_string()),
                Some(Ok(_)) => {}
                _ => bail!("closed while waiting for {prefix}"),
            }
        }
    }

    /// Joins `/`, and authenticates as `user` if given.
    async fn join(&mut self, user: Option<&str>, timeout: Duration) -> Result<()> {
        self.until("0", timeout).await?;
        self.text("40").await?;
        self.until("40", timeout).await?;
        if let Some(u) = user {
            self.text(&format!("42{}", json!(["authenticate", {"userId": u}])))
                .await?;
            self.until(r#"42["authenticated""#, timeout).await?;
        }
        Ok(())
    }

    async fn text(&mut self, t: &str) -> Result<()> {
        self.ws
            .send(Message::Text(t.to_string().into()))
            .await
            .context("send")
    }

    /// Sends `m` unless the server has stopped taking bytes for a second: whether it went.
    async fn push(&mut self, m: Message) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(1), self.ws.send(m)).await,
            Ok(Ok(()))
        )
    }
}

/// The server's address and `host:port`.
fn target(c: &Common) -> Result<(std::net::SocketAddr, String)> {
    let host = c
        .url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("the URL must start with http://"))?
        .trim_end_matches('/')
        .to_string();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)?
        .next()
        .ok_or_else(|| anyhow!("{host} has no address"))?;
    Ok((addr, host))
}

/// Sends `make()` on `a` until `until`, at most `per_sec` a second (0: as fast as it goes);
/// counts what went.
async fn send_until(
    a: &mut Attacker,
    until: Instant,
    per_sec: u32,
    sent: &AtomicU64,
    make: impl Fn() -> Message,
) {
    let gap = (per_sec > 0).then(|| Duration::from_secs(1) / per_sec);
    while Instant::now() < until {
        if !a.push(make()).await {
            // Not read from: keep the pressure on until the end.
            continue;
        }
        sent.fetch_add(1, Ordering::Relaxed);
        if let Some(g) = gap {
            tokio::time::sleep(g).await;
        }
    }
}

/// Runs attack `kind` for `seconds` with `conns` clients where the attack takes a count.
pub async fn run(c: &Common, kind: Kind, seconds: u64, conns: usize) -> Result<Report> {
    let before = proc::sample(c.server_pid);
    let peak = Arc::new(AtomicU64::new(before.map_or(0, |s| s.rss_bytes)));
    let sampler = tokio::spawn({
        let (peak, pid) = (peak.clone(), c.server_pid);
        async move {
            loop {
                if let Some(s) = proc::sample(pid) {
                    peak.fetch_max(s.rss_bytes, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let until = Instant::now() + Duration::from_secs(seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let mut extra = json!({});
    match kind {
        Kind::Pings => {
            let mut a = Attacker::open(c).await?;
            send_until(&mut a, until, 0, &sent, || {
                Message::Ping(vec![b'p'; 125].into())
            })
            .await;
        }
        Kind::Namespaces => {
            let mut a = Attacker::open(c).await?;
            let ns = format!("40/{},", "n".repeat(60_000));
            send_until(&mut a, until, 0, &sent, || Message::Text(ns.clone().into())).await;
        }
        Kind::Names => {
            let mut tasks = Vec::new();
            let frame = format!("42[\"{}\"]", "x".repeat(60_000));
            for _ in 0..conns {
                let mut a = Attacker::open(c).await?;
                a.join(None, c.timeout()).await?;
                let (frame, sent) = (frame.clone(), sent.clone());
                tasks.push(tokio::spawn(async move {
                    send_until(&mut a, until, 9, &sent, || {
                        Message::Text(frame.clone().into())
                    })
                    .await;
                    a
                }));
            }
            for t in tasks {
                t.await.ok();
            }
        }
        Kind::Relay => {
            let mut victim = Attacker::open(c).await?;
            victim.join(Some("attack-victim"), c.timeout()).await?;
            victim.text(r#"42["find-random-partner",{}]"#).await?;
            victim.until(r#"42["searching""#, c.timeout()).await?;
            let mut a = Attacker::open(c).await?;
            a.join(Some("attack-sender"), c.timeout()).await?;
            a.text(r#"42["find-random-partner",{}]"#).await?;
            let matched = a.until(r#"42["matched""#, c.timeout()).await?;
            let v: Value = serde_json::from_str(&matched[2..])?;
            let room = v[1]["roomId"].clone();
            let offer = format!(
                "42{}",
                json!(["webrtc-offer", {"roomId": room, "offer": {"type": "offer", "sdp": "v".repeat(30_000)}}])
            );
            // The victim reads nothing from here on; the sender reads nothing either (its
            // `delivery-failed` errors are small).
            send_until(&mut a, until, 45, &sent, || {
                Message::Text(offer.clone().into())
            })
            .await;
            drop(victim);
        }
        Kind::IdleTcp => {
            let (addr, _) = target(c)?;
            let mut held = Vec::new();
            for _ in 0..conns {
                match TcpStream::connect(addr).await {
                    Ok(t) => held.push(t),
                    Err(_) => break,
                }
            }
            let opened = held.len();
            tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
            // A connection the server closed reads as the end of the stream at once.
            let mut closed = 0;
            for t in &mut held {
                let mut b = [0u8; 1];
                if let Ok(Ok(0)) =
                    tokio::time::timeout(Duration::from_millis(5), t.read(&mut b)).await
                {
                    closed += 1;
                }
            }
            extra = json!({"opened": opened, "closedByServer": closed});
        }
    }
    let at_end = proc::sample(c.server_pid);
    // The attackers are gone (dropped above): what does the server still hold a moment later?
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = proc::sample(c.server_pid);
    sampler.abort();
    let mb = |b: u64| (b as f64 / 1e6 * 10.0).round() / 10.0;
    let json = json!({
        "attack": format!("{kind:?}"),
        "seconds": seconds,
        "framesSent": sent.load(Ordering::Relaxed),
        "rssBeforeMb": before.map(|s| mb(s.rss_bytes)),
        "rssPeakMb": before.map(|_| mb(peak.load(Ordering::Relaxed))),
        "rssAtEndMb": at_end.map(|s| mb(s.rss_bytes)),
        "rssAfterLeavingMb": after.map(|s| mb(s.rss_bytes)),
        "extra": extra,
    });
    Ok(Report::plain(json))
}
