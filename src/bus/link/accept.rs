//! The listening side of the direct links: checks a dialer, hands its frames to the inbox on
//! the link's own task, and writes back how far the inbox took them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::Mac;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::hello::{Hello, NONCE, listener_mac, mac};
use super::{ACK_EVERY, Acks, Handler, MAX_FRAME, MAX_HELLO, TIMEOUT};
use crate::bus::Cluster;

/// Connections that have not yet proved they come from a node, at most: each holds a socket
/// for up to [`TIMEOUT`], and the HTTP listener needs the same file descriptors. Past it, new
/// ones are closed at once (a node refused so dials again at its next heartbeat, and Redis
/// carries its messages meanwhile).
const MAX_UNPROVEN: usize = 64;

/// Takes links until the cluster is gone.
pub(super) async fn serve(
    cluster: std::sync::Weak<Cluster>,
    listener: TcpListener,
    inbox: Handler,
) {
    let unproven = Arc::new(tokio::sync::Semaphore::new(MAX_UNPROVEN));
    loop {
        let socket = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("a direct link could not be accepted: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(c) = cluster.upgrade() else { break };
        let Ok(permit) = unproven.clone().try_acquire_owned() else {
            tracing::debug!("a direct link was refused: too many handshakes at once");
            continue;
        };
        let inbox = inbox.clone();
        tokio::spawn(async move {
            if let Err(e) = take(&c, socket, permit, inbox).await {
                tracing::debug!("a direct link ended: {e}");
            }
        });
    }
}

/// Checks a dialer, then reads its frames into the inbox and acknowledges what the inbox took.
async fn take(
    cluster: &Arc<Cluster>,
    socket: TcpStream,
    unproven: tokio::sync::OwnedSemaphorePermit,
    inbox: Handler,
) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    socket.set_nodelay(true)?;
    super::keepalive(&socket)?;
    let Some(key) = cluster.links.key.get().copied() else {
        return Ok(());
    };
    let (mut read, mut write) = socket.into_split();
    let nonce: [u8; NONCE] = rand::random();
    let hello = tokio::time::timeout(TIMEOUT, async {
        write.write_all(&nonce).await?;
        let len = read.read_u16().await? as usize;
        if len > MAX_HELLO {
            return Err(Error::new(ErrorKind::InvalidData, "hello too long"));
        }
        let mut hello = vec![0; len];
        read.read_exact(&mut hello).await?;
        serde_json::from_slice::<Hello>(&hello).map_err(|e| Error::new(ErrorKind::InvalidData, e))
    })
    .await??;
    let genuine = hex::decode(&hello.mac).is_ok_and(|t| {
        mac(&key, &nonce, &hello.from, &hello.to, hello.boot)
            .verify_slice(&t)
            .is_ok()
    });
    let theirs = hex::decode(&hello.nonce).ok().filter(|n| n.len() == NONCE);
    let (true, Some(theirs)) = (genuine && hello.to == *cluster.node, theirs) else {
        tracing::warn!(from = %crate::echo::clip(&hello.from), "a direct link was refused: wrong key or node");
        return Ok(());
    };
    let proof = listener_mac(&key, (&nonce, &theirs), &hello.from, &hello.to, hello.boot);
    tokio::time::timeout(TIMEOUT, write.write_all(&proof.finalize().into_bytes())).await??;
    drop(unproven);
    // A reading buffer only once the dialer is known to be a node of the cluster.
    let mut read = BufReader::with_capacity(64 * 1024, read);
    let own = cluster.channel(&cluster.node);
    let acks = Arc::new(Acks {
        latest: AtomicU64::new(0),
        grew: Notify::new(),
    });
    // Registered before the first figure is read: a frame from Redis taken in between is
    // acknowledged through it, not lost to a figure read too early.
    cluster.links.acks.lock().insert(hello.boot, acks.clone());
    acks.latest
        .fetch_max(cluster.seen.had(hello.boot, &own), Ordering::AcqRel);
    let writer = tokio::spawn(acknowledge(acks.clone(), write));
    let result = async {
        let mut frame = Vec::new();
        loop {
            let len = read.read_u32().await? as usize;
            if len > MAX_FRAME {
                return Err(Error::new(ErrorKind::InvalidData, "frame too long"));
            }
            frame.resize(len, 0);
            read.read_exact(&mut frame).await?;
            let text =
                std::str::from_utf8(&frame).map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
            inbox(text);
            // A large frame's buffer is not kept for the small ones after it.
            if frame.capacity() > 1 << 20 {
                frame = Vec::new();
            }
        }
    }
    .await;
    writer.abort();
    let mut all = cluster.links.acks.lock();
    if all.get(&hello.boot).is_some_and(|a| Arc::ptr_eq(a, &acks)) {
        all.remove(&hello.boot);
    }
    result
}

/// Writes a link's acknowledgements: the first at once, then each growth, at most every
/// [`ACK_EVERY`].
async fn acknowledge(acks: Arc<Acks>, mut write: tokio::net::tcp::OwnedWriteHalf) {
    let mut written = None;
    loop {
        let last = acks.latest.load(Ordering::Acquire);
        if written != Some(last) {
            match tokio::time::timeout(TIMEOUT, write.write_u64(last)).await {
                Ok(Ok(())) => written = Some(last),
                _ => return,
            }
            tokio::time::sleep(ACK_EVERY).await;
            continue;
        }
        acks.grew.notified().await;
    }
}
