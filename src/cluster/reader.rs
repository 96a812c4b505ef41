//! The two paths into the inbox: this node's Redis channels, read by one task, and the direct
//! links of other nodes ([`crate::bus::link`]), each read by a task of its own that applies
//! its frames itself (a hand-over to another task would cost a wake-up a frame). Both take
//! [`Inbox::turn`] around each frame, so a sender's frames are taken in its numbers' order
//! whichever path each took.

use std::sync::{Arc, Weak};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use parking_lot::Mutex;

use super::inbox::handle_all;
use crate::bus::{Cluster, frame};
use crate::node::Hub;

/// What the paths into the inbox share.
pub(crate) struct Inbox {
    hub: Arc<Hub>,
    cluster: Weak<Cluster>,
    /// This node's own channel (the direct links carry its frames).
    own: String,
    /// Held while a frame is checked against what was taken and applied: one frame at a time.
    turn: Mutex<()>,
}

impl Inbox {
    pub(crate) fn new(hub: Arc<Hub>, cluster: &Arc<Cluster>) -> Arc<Inbox> {
        Arc::new(Inbox {
            hub,
            own: cluster.channel(&cluster.node),
            cluster: Arc::downgrade(cluster),
            turn: Mutex::new(()),
        })
    }

    /// What a direct link does with each frame it reads.
    pub(crate) fn for_links(self: &Arc<Self>) -> Arc<dyn Fn(&str) + Send + Sync> {
        let inbox = self.clone();
        Arc::new(move |text: &str| {
            if let Some(cluster) = inbox.cluster.upgrade() {
                inbox.take(&cluster, &inbox.own, text, true);
            }
        })
    }

    /// Applies a frame heard on `channel` (skipping what was taken already: published again
    /// after its answer was lost, or heard over both paths); on this node's own channel, tells
    /// the sender's direct link how far its messages were taken.
    fn take(&self, cluster: &Cluster, channel: &str, text: &str, own: bool) {
        let frame = match frame::decode(text) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("unreadable cluster message: {e}");
                return;
            }
        };
        let last = {
            let _turn = self.turn.lock();
            let (taken, last) = cluster.seen.take(channel, frame.stamp, frame.msgs.len());
            handle_all(&self.hub, cluster, frame.msgs.skip(taken));
            last
        };
        if let (true, Some((boot, _))) = (own, frame.stamp) {
            cluster.links.ack(boot, last);
        }
    }
}

/// Reads this node's Redis channels until the subscriber closes.
pub(crate) async fn run(inbox: Arc<Inbox>, cluster: Arc<Cluster>, subscriber: SubscriberClient) {
    let mut rx = subscriber.message_rx();
    loop {
        match rx.recv().await {
            Ok(m) => {
                let Some(text) = m.value.as_str() else {
                    continue;
                };
                let own = *m.channel == *inbox.own;
                inbox.take(&cluster, &m.channel, &text, own);
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::error!(
                    lost = n,
                    "the cluster inbox fell behind; messages were lost"
                );
                cluster.count_lost(n);
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
}
