//! The two paths into the inbox: this node's Redis channels and the direct links of other
//! nodes ([`crate::bus::link`]), read by one task.

use std::sync::Arc;

use fred::clients::SubscriberClient;
use fred::prelude::*;

use super::inbox::handle_all;
use crate::bus::{Cluster, frame};
use crate::node::Hub;

/// Reads this node's channels, and the frames of the direct links from other nodes
/// ([`crate::bus::link`]), until the subscriber closes. One task reads both, so a sender's
/// frames are taken in its numbers' order whichever path each took.
pub(crate) async fn run(
    hub: Arc<Hub>,
    cluster: Arc<Cluster>,
    subscriber: SubscriberClient,
    mut linked: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut rx = subscriber.message_rx();
    let own = cluster.channel(&cluster.node);
    loop {
        let heard = tokio::select! {
            m = rx.recv() => m,
            Some(text) = linked.recv() => {
                take(&hub, &cluster, &own, &text, true);
                continue;
            }
        };
        match heard {
            Ok(m) => {
                let Some(text) = m.value.as_str() else {
                    continue;
                };
                take(&hub, &cluster, &m.channel, &text, *m.channel == *own);
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

/// Applies a frame heard on `channel` (skipping what was taken already: published again after
/// its answer was lost, or heard over both paths); on this node's own channel, tells the
/// sender's direct link how far its messages were taken.
fn take(hub: &Hub, cluster: &Cluster, channel: &str, text: &str, own: bool) {
    let frame = match frame::decode(text) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("unreadable cluster message: {e}");
            return;
        }
    };
    let (taken, last) = cluster.seen.take(channel, frame.stamp, frame.msgs.len());
    handle_all(hub, cluster, frame.msgs.skip(taken));
    if let (true, Some((boot, _))) = (own, frame.stamp) {
        cluster.links.ack(boot, last);
    }
}
