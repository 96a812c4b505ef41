//! Direct links between nodes: the same frames as on Redis, without Redis on their path.
//!
//! Every message to another node crosses Redis twice (a `PUBLISH`, then the subscriber's read)
//! and wakes Redis's process and two of fred's tasks on the way: about 75 µs of CPU a frame in
//! all, most of what a session across nodes costs beyond one node's (BENCHMARKS.md). With
//! `LINK_ADDRESS` set, a node listens there and advertises it in its heartbeat; every node
//! dials each live peer that advertises one and writes that peer's frames to it straight.
//!
//! - **Frames.** The dialer writes each frame as a 4-byte big-endian length and the frame's
//!   text, exactly what it would have published (stamped with its process and sequence numbers,
//!   [`super::frame`]); the listener hands it to the same inbox, under the node's own channel,
//!   so a message heard both ways is taken once ([`super::seen::Seen`]).
//! - **Acknowledgements.** The listener answers with 8 bytes: the last number its inbox took of
//!   the dialer's messages, by any path (sent at once when the link opens, then at most every
//!   [`ACK_EVERY`] while it grows). The publisher holds what it wrote until it is acknowledged
//!   and, when a link breaks or stops acknowledging, publishes what is still held on Redis: the
//!   oldest held message is never newer than the inbox's next, so nothing is lost or reordered.
//!   It writes a node's messages on the link only once the node has taken everything it
//!   published on Redis before, so a link frame can never overtake a published one.
//! - **Authentication, both ways.** The listener sends a random nonce; the dialer answers with
//!   its name, its process, a nonce of its own and an HMAC-SHA256 of them and the listener's
//!   nonce under a key derived from the cluster's shared key in Redis (`recovery-key`); the
//!   listener answers with an HMAC of both nonces, so a dialer writes no frame to, and believes
//!   no acknowledgement from, whoever answers at a node's address without the key. Anything
//!   else is closed. What follows the handshake is neither encrypted nor signed (one on the path
//!   could read the frames or forge an acknowledgement): like the Redis connection without TLS,
//!   a link belongs on the nodes' private network.
//! - **Bounded.** What a link's socket did not take yet is counted in bytes; past 16 MB the link
//!   is closed and Redis carries the channel. At most 64 connections at once may be proving
//!   themselves to a listener.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hmac::Mac;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

mod accept;
mod hello;

use hello::{Hello, NONCE, derive, listener_mac, mac};

/// What a node does with each frame a link brings (the inbox, which the cluster's handlers
/// hold).
pub(crate) type Handler = Arc<dyn Fn(&str) + Send + Sync>;

/// How often at most a link's acknowledgement is written while it grows: acknowledgements only
/// free the sender's copies and tell it when the link may take over, so they can wait and go
/// one for many frames.
const ACK_EVERY: Duration = Duration::from_millis(20);

/// A handshake or a write that takes longer ends the link.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes of a frame at most (a frame holds at most 256 KB of messages unless one message alone
/// is larger, and a message is far smaller than this).
const MAX_FRAME: usize = 16 << 20;

/// Bytes of a handshake's answer at most.
const MAX_HELLO: usize = 1024;

/// Bytes written to a link in one write at most (frames queued together go together).
const MAX_WRITE: usize = 1 << 20;

/// Bytes a link may hold that its socket did not take yet. A node that reads slower than this
/// one writes, yet acknowledges a little now and then, never trips the publisher's stall check:
/// past this the link is closed and Redis (whose output buffers are capped) carries the channel.
const MAX_QUEUED: usize = 16 << 20;

/// Numbers the links dialed by this process, so that the publisher tells a link from the one
/// that replaced it.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// An outgoing link's state.
const DIALING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A link this node dialed, to write another node's frames to.
pub(crate) struct Out {
    addr: SocketAddr,
    /// Which link this is (never the same twice in a process): what was written to an earlier
    /// link to the same node is not known to have reached it.
    generation: u64,
    state: AtomicU8,
    /// The last number of this process's messages the node said it took.
    acked: AtomicU64,
    /// The socket, once the handshake is done: the publisher writes to it itself while the
    /// socket takes what it is given (no wake-up of another task a frame).
    socket: OnceLock<Arc<OwnedWriteHalf>>,
    /// Bytes the socket did not take at once, for the link's writer, which waits until it can.
    rest: UnboundedSender<Vec<u8>>,
    /// How many of those the writer has not written yet: while any, the publisher queues
    /// behind them.
    queued: AtomicUsize,
    /// Their bytes (at most [`MAX_QUEUED`]).
    queued_bytes: AtomicUsize,
    /// Ends the link (its writer closes the socket).
    close: Notify,
    /// Told when the link goes down ([`Links::down`]).
    down: Arc<Notify>,
}

impl Out {
    /// A link to `addr`, not dialed yet.
    fn new(addr: SocketAddr, rest: UnboundedSender<Vec<u8>>, down: Arc<Notify>) -> Out {
        Out {
            addr,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed) + 1,
            state: AtomicU8::new(DIALING),
            acked: AtomicU64::new(0),
            socket: OnceLock::new(),
            rest,
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            close: Notify::new(),
            down,
        }
    }

    /// Which link this is: a link that replaced another has another number.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Writes a frame to the link, or queues it behind what waits for the socket (if the link
    /// breaks first, the publisher still holds its messages). Called by the publisher alone.
    /// Returns false when the link is down (the frame was not sent, and no later one may be).
    pub(crate) fn send(&self, frame: String) -> bool {
        if !self.up() {
            return false;
        }
        let len = (frame.len() as u32).to_be_bytes();
        let mut written = 0;
        if self.queued.load(Ordering::Acquire) == 0
            && let Some(socket) = self.socket.get()
        {
            let parts = [IoSlice::new(&len), IoSlice::new(frame.as_bytes())];
            match socket.try_write_vectored(&parts) {
                Ok(n) => written = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    self.close();
                    return false;
                }
            }
        }
        let whole = len.len() + frame.len();
        if written == whole {
            return true;
        }
        let left = whole - written;
        if self.queued_bytes.fetch_add(left, Ordering::AcqRel) + left > MAX_QUEUED {
            tracing::warn!(addr = %self.addr, "a direct link fell behind by more than 16 MB: Redis instead");
            self.queued_bytes.fetch_sub(left, Ordering::AcqRel);
            self.close();
            return false;
        }
        let mut rest = Vec::with_capacity(left);
        rest.extend_from_slice(len.get(written..).unwrap_or_default());
        rest.extend_from_slice(
            frame
                .as_bytes()
                .get(written.saturating_sub(len.len())..)
                .unwrap_or_default(),
        );
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.rest.send(rest).ok();
        true
    }

    /// The last number of this process's messages the node took.
    pub(crate) fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// Whether frames can be written to it.
    pub(crate) fn up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    /// Ends the link: it stopped acknowledging.
    pub(crate) fn close(&self) {
        self.fell();
        self.close.notify_one();
    }

    /// Marks the link down and tells the publisher, whose held messages go on Redis now.
    fn fell(&self) {
        if self.state.swap(DOWN, Ordering::AcqRel) == UP {
            self.down.notify_one();
        }
    }
}

/// An incoming link's acknowledgements, written back to its dialer.
struct Acks {
    latest: AtomicU64,
    grew: Notify,
}

/// This node's links.
pub(crate) struct Links {
    /// Where other nodes reach this node's link (`LINK_ADDRESS`), once it listens there.
    advertised: OnceLock<SocketAddr>,
    /// `LINK_ADDRESS` as set (a name is resolved when the node joins).
    wanted: Option<String>,
    key: OnceLock<[u8; 32]>,
    /// Links dialed, by node.
    out: Mutex<HashMap<Arc<str>, Arc<Out>>>,
    /// Links heard from, by the dialer's process.
    acks: Mutex<HashMap<u64, Arc<Acks>>>,
    /// Told when a link goes down: the publisher wakes to send what it held on Redis.
    pub(crate) down: Arc<Notify>,
}

impl Links {
    /// No link yet; `wanted` is where this node will listen (none: Redis alone).
    pub(super) fn new(wanted: Option<String>) -> Links {
        Links {
            advertised: OnceLock::new(),
            wanted,
            key: OnceLock::new(),
            out: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            down: Arc::new(Notify::new()),
        }
    }

    /// Where other nodes reach this node's link, once it listens.
    pub(crate) fn advertised(&self) -> Option<SocketAddr> {
        self.advertised.get().copied()
    }

    /// A link to `node` that frames can be written to.
    pub(crate) fn to(&self, node: &str) -> Option<Arc<Out>> {
        self.out.lock().get(node).filter(|o| o.up()).cloned()
    }

    /// How many links to other nodes are up.
    pub(crate) fn up(&self) -> usize {
        self.out.lock().values().filter(|o| o.up()).count()
    }

    /// Tells the dialer of process `boot`, if it is linked, that the inbox took its messages up
    /// to `last`.
    pub(crate) fn ack(&self, boot: u64, last: u64) {
        let acks = self.acks.lock().get(&boot).cloned();
        if let Some(a) = acks
            && a.latest.fetch_max(last, Ordering::AcqRel) < last
        {
            a.grew.notify_one();
        }
    }

    /// Sets the links' key (derived from the cluster's shared key) and listens at
    /// `LINK_ADDRESS`, handing each frame that arrives to `inbox` on the link's own task. Logs and goes on without a link when the
    /// address cannot be bound: Redis still carries everything.
    pub(crate) async fn listen(cluster: &Arc<super::Cluster>, shared: &[u8; 32], inbox: Handler) {
        let links = &cluster.links;
        let _ = links.key.set(derive(shared));
        let Some(wanted) = &links.wanted else {
            return;
        };
        let addr = match tokio::net::lookup_host(wanted.as_str()).await {
            Ok(mut all) => all.next(),
            Err(e) => {
                tracing::error!(%wanted, "LINK_ADDRESS does not resolve ({e}): messages to this node go through Redis");
                return;
            }
        };
        let Some(addr) = addr.filter(|a| !a.ip().is_unspecified()) else {
            tracing::error!(%wanted, "LINK_ADDRESS must be an address the other nodes reach, not 0.0.0.0 or [::]: messages to this node go through Redis");
            return;
        };
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                let _ = links.advertised.set(addr);
                tokio::spawn(accept::serve(Arc::downgrade(cluster), listener, inbox));
                tracing::info!(%addr, "listening for other nodes' direct links");
            }
            Err(e) => tracing::error!(
                %addr,
                "LINK_ADDRESS cannot be listened at ({e}): messages to this node go through Redis"
            ),
        }
    }

    /// Dials the live nodes that advertise a link and have none up (`(node, address)`), and
    /// forgets the links to nodes no longer live.
    pub(crate) fn set_peers<'a>(
        cluster: &Arc<super::Cluster>,
        live: impl IntoIterator<Item = (&'a str, Option<SocketAddr>)>,
    ) {
        let Some(key) = cluster.links.key.get().copied() else {
            return;
        };
        let mut out = cluster.links.out.lock();
        let mut keep = Vec::new();
        for (node, addr) in live {
            let Some(addr) = addr else { continue };
            if *node == *cluster.node {
                continue;
            }
            keep.push(node);
            if out
                .get(node)
                .is_some_and(|o| o.addr == addr && o.state.load(Ordering::Acquire) != DOWN)
            {
                continue;
            }
            if let Some(old) = out.get(node) {
                old.close();
            }
            let (rest, rx) = unbounded_channel();
            let link = Arc::new(Out::new(addr, rest, cluster.links.down.clone()));
            out.insert(node.into(), link.clone());
            let (from, to, boot) = (cluster.node.clone(), node.to_string(), cluster.seen.boot);
            tokio::spawn(async move {
                if let Err(e) = dial(&link, rx, &key, &from, &to, boot).await {
                    tracing::debug!(node = %to, %addr, "direct link down: {e}");
                }
                link.fell();
            });
        }
        out.retain(|node, link| {
            let live = keep.contains(&&**node);
            if !live {
                link.close();
            }
            live
        });
    }
}

/// Dials `link`'s address, says who this is, and writes what the socket did not take at once
/// until the link breaks.
async fn dial(
    link: &Arc<Out>,
    mut rest: UnboundedReceiver<Vec<u8>>,
    key: &[u8; 32],
    from: &str,
    to: &str,
    boot: u64,
) -> std::io::Result<()> {
    let socket = tokio::time::timeout(TIMEOUT, TcpStream::connect(link.addr)).await??;
    socket.set_nodelay(true)?;
    keepalive(&socket)?;
    let (read, mut write) = socket.into_split();
    let mut read = BufReader::new(read);
    let hello = tokio::time::timeout(TIMEOUT, async {
        let mut theirs = [0u8; NONCE];
        read.read_exact(&mut theirs).await?;
        let ours: [u8; NONCE] = rand::random();
        let tag = mac(key, &theirs, from, to, boot).finalize().into_bytes();
        let hello = serde_json::to_vec(&Hello {
            from: from.into(),
            to: to.into(),
            boot,
            mac: hex::encode(tag),
            nonce: hex::encode(ours),
        })?;
        write.write_u16(hello.len() as u16).await?;
        write.write_all(&hello).await?;
        let mut proof = [0u8; 32];
        read.read_exact(&mut proof).await?;
        if listener_mac(key, (&theirs, &ours), from, to, boot)
            .verify_slice(&proof)
            .is_err()
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the listener does not hold the cluster's key",
            ));
        }
        read.read_u64().await
    })
    .await??;
    link.acked.fetch_max(hello, Ordering::AcqRel);
    let write = Arc::new(write);
    let _ = link.socket.set(write.clone());
    link.state.store(UP, Ordering::Release);
    // Acknowledgements come back on the same socket, read beside the writes.
    let acks = {
        let link = link.clone();
        tokio::spawn(async move {
            while let Ok(last) = read.read_u64().await {
                link.acked.fetch_max(last, Ordering::AcqRel);
            }
            link.close();
        })
    };
    let result = loop {
        let buf = tokio::select! {
            biased;
            _ = link.close.notified() => break Ok(()),
            b = rest.recv() => b,
        };
        let Some(mut buf) = buf else { break Ok(()) };
        let mut n = 1;
        while buf.len() < MAX_WRITE
            && let Ok(more) = rest.try_recv()
        {
            buf.extend_from_slice(&more);
            n += 1;
        }
        match tokio::time::timeout(TIMEOUT, write_all(&write, &buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Err(e),
            Err(_) => break Err(std::io::ErrorKind::TimedOut.into()),
        }
        link.queued_bytes.fetch_sub(buf.len(), Ordering::AcqRel);
        link.queued.fetch_sub(n, Ordering::AcqRel);
    };
    link.fell();
    acks.abort();
    result
}

/// Probes an idle link, so that a peer whose host vanished (no FIN, no reset) is given up
/// within about half a minute on either side instead of holding its task and buffers for ever.
pub(super) fn keepalive(socket: &TcpStream) -> std::io::Result<()> {
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    socket2::SockRef::from(socket).set_tcp_keepalive(&probes)
}

/// Writes `buf` whole to a socket shared with the publisher (which does not write while this
/// has bytes to write).
async fn write_all(socket: &OwnedWriteHalf, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        socket.writable().await?;
        match socket.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_link_whose_peer_stops_reading_holds_at_most_its_budget_then_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dialed = TcpStream::connect(addr).await.unwrap();
        // Accepted and never read.
        let (_peer, _) = listener.accept().await.unwrap();
        let (_read, write) = dialed.into_split();
        let (rest, mut queued) = unbounded_channel();
        let down = Arc::new(Notify::new());
        let link = Out::new(addr, rest, down.clone());
        let _ = link.socket.set(Arc::new(write));
        link.state.store(UP, Ordering::Release);
        let frame = "x".repeat(1 << 20);
        let mut taken = 0;
        while link.send(frame.clone()) {
            taken += 1;
            assert!(taken < 64, "the link took {taken} MB its peer never read");
        }
        assert!(!link.up(), "closed, so that Redis carries the channel");
        assert!(link.queued_bytes.load(Ordering::Acquire) <= MAX_QUEUED);
        let mut held = 0;
        while let Ok(b) = queued.try_recv() {
            held += b.len();
        }
        assert!(held <= MAX_QUEUED, "{held} bytes queued");
        assert!(
            held > 0,
            "the socket's buffers took {taken} MB: nothing was queued"
        );
        // The publisher was told.
        tokio::time::timeout(Duration::from_secs(1), down.notified())
            .await
            .expect("the publisher is woken");
    }

    #[test]
    fn every_link_has_its_own_generation() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let down = Arc::new(Notify::new());
        let a = Out::new(addr, unbounded_channel().0, down.clone());
        let b = Out::new(addr, unbounded_channel().0, down);
        assert_ne!(a.generation(), b.generation());
        assert_ne!(a.generation(), 0, "0 is what a channel never linked holds");
    }
}
