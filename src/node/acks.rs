//! `ok` means delivered, across nodes too: a relay acknowledged by its sender and bound for a
//! user of another node is answered once that node said it delivered it (or why not), not when
//! it was published. A relay sent without an acknowledgement is answered only when it failed
//! (an `error` event, as on one node).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Hub, Sock, answer};
use crate::model::{ErrorCode, Reject};

/// How long a sender waits for the other node's word before it is told `delivery-failed`.
const WAIT: Duration = Duration::from_secs(5);

/// Most acknowledgements waiting at once; beyond, a relay is acknowledged when published (as
/// with nodes of earlier versions), so that nothing a client sends grows this without bound.
const MOST: usize = 100_000;

/// The acknowledgements waiting for another node's word, by this node's number for each.
#[derive(Default)]
pub(crate) struct Acks {
    waiting: Mutex<HashMap<u64, Waiting>>,
    next: AtomicU64,
}

/// An acknowledgement a sender waits for.
struct Waiting {
    socket: Sock,
    ack: i64,
    event: Box<str>,
    since: Instant,
}

impl Acks {
    /// `socket`'s relay of `event`, acknowledged as `ack`, waits for the receiving node's word:
    /// its number, or `None` when too many wait already.
    pub(crate) fn wait(&self, socket: &Sock, ack: i64, event: &str) -> Option<u64> {
        let mut waiting = self.waiting.lock();
        if waiting.len() >= MOST {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        waiting.insert(
            id,
            Waiting {
                socket: socket.clone(),
                ack,
                event: event.into(),
                since: Instant::now(),
            },
        );
        Some(id)
    }

    /// Forgets relay `id` (it could not be sent).
    pub(crate) fn forget(&self, id: u64) {
        self.waiting.lock().remove(&id);
    }
}

/// The receiving node's word on relay `id`: delivered (`code` none) or not.
pub(crate) fn settle(hub: &Hub, id: u64, code: Option<&str>) {
    let Some(w) = hub.acks.waiting.lock().remove(&id) else {
        return;
    };
    let outcome = code.map(reject);
    answer(
        &w.socket,
        Some(w.ack),
        &w.event,
        outcome.as_ref().map_or(Ok(()), Err),
    );
}

/// The refusal a node named by its code (`delivery-failed` for one this node does not know).
pub(crate) fn reject(code: &str) -> Reject {
    ErrorCode::ALL
        .into_iter()
        .find(|c| c.as_str() == code)
        .unwrap_or(ErrorCode::DeliveryFailed)
        .into()
}

/// Tells the senders whose relay got no word within [`WAIT`] (the receiving node died, or
/// Redis lost the message) that it was not delivered.
pub(crate) fn expire(hub: &Hub, now: Instant) {
    let late: Vec<Waiting> = {
        let mut waiting = hub.acks.waiting.lock();
        if waiting.is_empty() {
            return;
        }
        waiting
            .extract_if(|_, w| now.saturating_duration_since(w.since) > WAIT)
            .map(|(_, w)| w)
            .collect()
    };
    let failed: Reject = ErrorCode::DeliveryFailed.into();
    for w in late {
        answer(&w.socket, Some(w.ack), &w.event, Err(&failed));
    }
}
