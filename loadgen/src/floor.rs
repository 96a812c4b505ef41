//! `floor`: the least a server can do to carry the `relay` scenario, to measure Roulette's relay
//! against. It speaks only what the scenario's clients need (the WebSocket handshake, the
//! Engine.IO open packet, `40`, `authenticated`, `searching`, `matched`) and pairs connections in
//! the order they search; a `webrtc-ice-candidate` frame is unmasked and written to the partner's
//! socket as it came, with one `write` and no parsing, queue, limit, isolation or check. What a
//! relay costs here is the raw forwarding floor: the system calls and the framing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// A connection, shared with its partner, who writes to it.
type Writer = Arc<Sock>;

/// A connection's socket, and the turn to write to it (so that two frames never interleave).
struct Sock {
    tcp: TcpStream,
    turn: Mutex<()>,
}

impl Sock {
    /// Writes all of `bytes`: a `write` each time the socket takes some, nothing else.
    async fn write_all(&self, mut bytes: &[u8]) -> std::io::Result<()> {
        let _turn = self.turn.lock().await;
        while !bytes.is_empty() {
            self.tcp.writable().await?;
            match self.tcp.try_write(bytes) {
                Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what has arrived (0 at the end of the stream). A read shorter than `buf` emptied
    /// the socket, so its readiness is cleared there instead of by another `read` failing with
    /// `EAGAIN`: one `read` a relay, as Roulette does (`ws::websocket::read`), or the floor
    /// would pay a system call that the server does not.
    async fn read_some(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Read as _;
        loop {
            self.tcp.readable().await?;
            let mut got = 0;
            let r = self.tcp.try_io(Interest::READABLE, || {
                got = (&*socket2::SockRef::from(&self.tcp)).read(buf)?;
                if got > 0 && got < buf.len() {
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match r {
                Ok(()) => return Ok(got),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && got > 0 => return Ok(got),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// What the floor shares between connections.
#[derive(Default)]
struct Floor {
    /// The connection that searched and waits for the next one, with its writer: its partner's
    /// slot is filled when the next one searches.
    waiting: std::sync::Mutex<Option<(u64, Writer, PartnerSlot)>>,
    ids: AtomicU64,
}

/// Where a connection finds its partner's writer once paired.
type PartnerSlot = Arc<std::sync::Mutex<Option<Writer>>>;

/// Serves the floor on `listen` until the process is stopped.
pub async fn serve(listen: &str) -> Result<std::convert::Infallible> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    eprintln!("floor listening on {}", listener.local_addr()?);
    let floor = Arc::new(Floor::default());
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true).ok();
        let floor = floor.clone();
        tokio::spawn(async move {
            connection(floor, tcp).await.ok();
        });
    }
}

/// A text frame from the server (unmasked).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// One client: the handshake, then its frames until it closes.
async fn connection(floor: Arc<Floor>, mut tcp: TcpStream) -> Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        let mut chunk = [0u8; 2048];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed during the handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let key = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .context("no Sec-WebSocket-Key")?;
    let id = floor.ids.fetch_add(1, Ordering::Relaxed);
    let write: Writer = Arc::new(Sock {
        tcp,
        turn: Mutex::new(()),
    });
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    let mut out = answer.into_bytes();
    out.extend(frame(
        format!(r#"0{{"sid":"floor{id}","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#)
            .as_bytes(),
    ));
    write.write_all(&out).await?;
    let partner: PartnerSlot = Arc::default();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Every complete frame in the buffer.
        while let Some((opcode, start, end)) = parse(&mut buf)? {
            match opcode {
                0x8 => return Ok(()),
                0x1 => on_text(&floor, id, &write, &partner, &buf[start..end]).await?,
                _ => {}
            }
            buf.drain(..end);
        }
        let n = write.read_some(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One complete frame at the start of `buf`, its payload unmasked in place: its opcode and where
/// its payload starts and ends; `None` while incomplete.
fn parse(buf: &mut [u8]) -> Result<Option<(u8, usize, usize)>> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let (mut len, mut at) = (u64::from(b1 & 0x7f), 2usize);
    if len == 126 {
        let Some(b) = buf.get(2..4) else {
            return Ok(None);
        };
        len = u64::from(u16::from_be_bytes([b[0], b[1]]));
        at = 4;
    } else if len == 127 {
        let Some(b) = buf.get(2..10) else {
            return Ok(None);
        };
        len = u64::from_be_bytes(b.try_into()?);
        at = 10;
    }
    if b1 & 0x80 == 0 {
        bail!("an unmasked client frame");
    }
    let end = at + 4 + usize::try_from(len)?;
    if buf.len() < end {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    for (i, b) in buf[at + 4..end].iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(Some((b0 & 0x0f, at + 4, end)))
}

/// One Engine.IO text packet of a client.
async fn on_text(
    floor: &Floor,
    id: u64,
    write: &Writer,
    partner: &PartnerSlot,
    payload: &[u8],
) -> Result<()> {
    let reply = |text: String| async move { write.write_all(&frame(text.as_bytes())).await };
    if payload.starts_with(br#"42["webrtc-ice-candidate""#) {
        let to = partner.lock().expect("not poisoned").clone();
        if let Some(to) = to {
            to.write_all(&frame(payload)).await?;
        }
    } else if payload == b"40" {
        reply(format!(r#"40{{"sid":"floor{id}"}}"#)).await?;
    } else if payload.starts_with(br#"42["authenticate""#) {
        reply(format!(r#"42["authenticated",{{"userId":"floor{id}"}}]"#)).await?;
    } else if payload.starts_with(br#"42["find-random-partner""#) {
        let other = floor.waiting.lock().expect("not poisoned").take();
        match other {
            Some((oid, owrite, oslot)) => {
                *oslot.lock().expect("not poisoned") = Some(write.clone());
                *partner.lock().expect("not poisoned") = Some(owrite.clone());
                let room = format!("room{oid}-{id}");
                let matched = |p: u64| {
                    frame(
                        format!(r#"42["matched",{{"roomId":"{room}","partnerId":"floor{p}"}}]"#)
                            .as_bytes(),
                    )
                };
                owrite.write_all(&matched(id)).await?;
                write.write_all(&matched(oid)).await?;
            }
            None => {
                *floor.waiting.lock().expect("not poisoned") =
                    Some((id, write.clone(), partner.clone()));
                reply(r#"42["searching",{}]"#.to_string()).await?;
            }
        }
    }
    Ok(())
}
