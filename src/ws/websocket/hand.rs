//! Where a WebSocket request's socket comes from: hyper's upgrade, or the server's own HTTP/1
//! path, which leaves the 101's head for the session to write with its first frames.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{UPGRADE_TIMEOUT, take_socket};

/// A WebSocket request's socket, handed over by the server's own HTTP/1 path
/// (`app::http1`) instead of hyper's upgrade, once the router answered 101: the socket with the
/// request's head taken off, what the path read of the client's bytes after the head, and the
/// answer's head, which the session writes itself, so that a direct WebSocket's 101 and its
/// Engine.IO open packet leave in one write.
#[derive(Clone)]
pub(crate) struct SocketHand(Arc<parking_lot::Mutex<Option<HandRx>>>);

/// What the HTTP path hands over: the socket, the bytes it read after the request's head, and
/// the 101's head.
pub(crate) type Handed = (TcpStream, Vec<u8>, Vec<u8>);

/// The receiving end of a [`SocketHand`].
type HandRx = tokio::sync::oneshot::Receiver<Handed>;

impl SocketHand {
    /// A hand for one request (to put in its extensions), and the sender the HTTP path gives
    /// the socket, the bytes it read after the request's head, and the 101's head to.
    pub(crate) fn new() -> (tokio::sync::oneshot::Sender<Handed>, SocketHand) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (tx, SocketHand(Arc::new(parking_lot::Mutex::new(Some(rx)))))
    }
}

/// Where a WebSocket request's socket comes from.
pub(super) enum Source {
    /// hyper, which wrote the 101.
    Hyper(hyper::upgrade::OnUpgrade),
    /// The server's own HTTP/1 path, which leaves the 101 to the session.
    Own(SocketHand),
}

impl Source {
    /// The socket, what the client sent after its head (read by hyper or by the own path), and
    /// the 101's head still to write (from the own path).
    pub(super) async fn take(self) -> Option<(TcpStream, Vec<u8>, Vec<u8>)> {
        match self {
            Source::Hyper(upgrade) => {
                let (tcp, early) = take_socket(upgrade).await?;
                Some((tcp, early, Vec::new()))
            }
            Source::Own(hand) => {
                let rx = hand.0.lock().take()?;
                rx.await.ok()
            }
        }
    }
}

/// Writes `head` (the 101's head when the session has it to write, and for a direct WebSocket
/// its open packet) before anything else, within the upgrade timeout.
pub(super) async fn write_head(mut tcp: TcpStream, head: Vec<u8>) -> Option<TcpStream> {
    if head.is_empty() {
        return Some(tcp);
    }
    match tokio::time::timeout(UPGRADE_TIMEOUT, tcp.write_all(&head)).await {
        Ok(Ok(())) => Some(tcp),
        _ => None,
    }
}
