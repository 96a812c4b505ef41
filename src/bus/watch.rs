//! Watching the node's Redis connections: an outage shows at once, and the subscriber follows
//! the command connection to a promoted primary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fred::prelude::*;
use tokio::sync::broadcast::error::RecvError;

use super::Cluster;
use crate::protocol::outgoing::now_ms;

/// Marks Redis down as soon as one of the node's connections drops (the clients' error events),
/// so `/health` and `/metrics` show the whole outage, a Sentinel failover included, even one
/// shorter than a heartbeat. The next heartbeat that succeeds marks it up again and publishes
/// this node's searches anew ([`crate::cluster::liveness`]): a promoted replica may lack the
/// latest of them, as replication is asynchronous.
///
/// Also moves the subscriber with the command connection when only the latter dropped: behind a
/// managed service's endpoint, the command connection finds the promoted primary (its writes to
/// the demoted one were refused with READONLY), while a subscription, which writes nothing, would
/// stay on the demoted one and hear only what replication brings it (and `PUBLISH` on the new
/// primary would not count it). A subscriber that dropped too is finding the master on its own.
pub(super) fn watch(cluster: &Arc<Cluster>, subscriber: fred::clients::SubscriberClient) {
    // When each connection last dropped (Unix ms): the command one, the subscriber.
    let dropped: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    for (i, mut rx) in [cluster.client.error_rx(), subscriber.error_rx()]
        .into_iter()
        .enumerate()
    {
        let (cluster, dropped) = (Arc::downgrade(cluster), dropped.clone());
        tokio::spawn(async move {
            loop {
                let e = match rx.recv().await {
                    Ok((e, _)) => e,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                };
                dropped[i].store(now_ms(), Ordering::Release);
                let Some(cluster) = cluster.upgrade() else {
                    break;
                };
                if cluster.set_redis_up(false) {
                    tracing::error!("lost the connection to Redis (connecting again): {e}");
                }
            }
        });
    }
    let mut reconnected = cluster.client.reconnect_rx();
    tokio::spawn(async move {
        loop {
            match reconnected.recv().await {
                Ok(server) => {
                    let [command, sub] = [0, 1].map(|i| dropped[i].load(Ordering::Acquire));
                    // Both dropped about together (a master that died): the subscriber is on
                    // its way already.
                    if sub + 5_000 >= command && sub != 0 {
                        continue;
                    }
                    tracing::info!(%server, "connected to Redis again; the subscriber follows");
                    if let Err(e) = subscriber.force_reconnection().await {
                        tracing::warn!("the subscriber could not reconnect yet: {e}");
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
    });
}
