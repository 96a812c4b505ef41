//! A session's long-polling side, and the waits that its moves end.

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Packets;

/// A session's long-polling side (what its polls, posts and upgrade are doing is its machine's
/// [`Side`](super::super::machine::Side)).
#[derive(Default)]
pub(in crate::ws) struct Polling {
    /// What the client's packets built up; taken by the WebSocket when the session upgrades.
    pub(in crate::ws) packets: Mutex<Packets>,
    /// Wakes the long-polling side's own task when the session ends (or is upgraded).
    pub(in crate::ws) gone: Notify,
    /// Wakes whoever waits for the long-polling side to move on: a poll took the queue, a post
    /// ended, the session ended or upgraded. What waits on it is a post held back by a full
    /// queue, the goodbye waiting for the client's last poll, and an upgrade waiting for a post
    /// in flight (see [`Polling::wait_for`]).
    moved: Notify,
}

impl Polling {
    /// Tells whoever waits in [`wait_for`](Self::wait_for) to look again.
    pub(in crate::ws) fn moved(&self) {
        self.moved.notify_waiters();
    }

    /// Waits until `done` holds, looking again each time the side [moved](Self::moved), or
    /// until `until` (`None`: no deadline) passes; whether `done` held (see
    /// [`wait_until`](super::super::wait_until)).
    pub(in crate::ws) async fn wait_for(
        &self,
        until: Option<tokio::time::Instant>,
        done: impl FnMut() -> bool,
    ) -> bool {
        super::super::wait_until(&self.moved, until, done).await
    }
}
