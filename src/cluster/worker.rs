//! The node's cluster worker: runs the jobs its core queued.
//!
//! Jobs are spread over [`LANES`] lanes by user, and each lane runs its jobs one at a time in
//! the order the core queued them (a job without a Redis round trip runs at once when its lane
//! is idle): the `Search`, `Dequeue` and `Search` of a user who changes its
//! mind reach the lease holder in that order, while different users' Redis round trips (a
//! session held elsewhere) overlap.
//!
//! A search goes to the lease holder ([`crate::bus::holder`]), with the user's blocks; the
//! holder answers with a pairing (see [`super::inbox`]), and, every `queue-status` interval,
//! with the user's place in the cluster's queue.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use fred::prelude::*;
use tokio::sync::mpsc::UnboundedReceiver;

use super::inbox::to_holder;
use crate::bus::queue::Job;
use crate::bus::{Cluster, Entry, Msg};
use crate::node::Hub;
use crate::node::resume::finish;

/// How many users' jobs may be in flight at once.
pub(crate) const LANES: usize = 8;

/// Hands each job to its user's lane until the core's side of the channel closes. A job that
/// needs no Redis round trip (a search, a cancellation, a block: a message queued for the
/// holder) runs here at once when its lane has nothing in hand, which keeps the user's order and
/// spares a hop to the lane's task.
pub(crate) async fn run(hub: Arc<Hub>, cluster: Arc<Cluster>, mut jobs: UnboundedReceiver<Job>) {
    let lanes: Vec<_> = (0..LANES)
        .map(|_| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let busy = Arc::new(AtomicUsize::new(0));
            tokio::spawn(lane(hub.clone(), cluster.clone(), rx, busy.clone()));
            (tx, busy)
        })
        .collect();
    while let Some(job) = jobs.recv().await {
        let (tx, busy) = &lanes[rustc_hash::FxBuildHasher.hash_one(&**job.user()) as usize % LANES];
        // Only this task raises a lane's count: a lane found idle stays so while the job runs.
        if busy.load(Ordering::Acquire) == 0 && quick(&hub, &cluster, &job) {
            continue;
        }
        busy.fetch_add(1, Ordering::AcqRel);
        tx.send(job).ok();
    }
}

/// Runs `job` if it needs no Redis round trip; false otherwise (it was left undone).
fn quick(hub: &Hub, cluster: &Cluster, job: &Job) -> bool {
    match job {
        Job::Search(user, id) => search(hub, cluster, user, *id),
        Job::Dequeue(user) => {
            let node = cluster.node.to_string();
            to_holder(
                hub,
                cluster,
                Msg::Unseek {
                    user: user.to_string(),
                    node,
                },
            );
        }
        Job::Block { by, other, ttl } => {
            let msg = Msg::Block {
                by: by.to_string(),
                other: other.to_string(),
                ttl_ms: ttl.as_millis() as u64,
            };
            to_holder(hub, cluster, msg);
        }
        Job::Away(_) | Job::Resume { .. } => return false,
    }
    true
}

/// Runs one lane's jobs in order, counting down `busy` as each is done.
async fn lane(
    hub: Arc<Hub>,
    cluster: Arc<Cluster>,
    mut jobs: UnboundedReceiver<Job>,
    busy: Arc<AtomicUsize>,
) {
    while let Some(job) = jobs.recv().await {
        let result = match &job {
            _ if quick(&hub, &cluster, &job) => Ok(()),
            Job::Away(user) => away(&hub, &cluster, user).await,
            Job::Resume { user, token } => resume(&hub, &cluster, user, token.clone()).await,
            _ => Ok(()),
        };
        if let Err(e) = result {
            // Not the job itself: a `Resume` carries a secret.
            tracing::warn!(job = job.kind(), user = %job.user(), "cluster job failed: {e}");
            metrics::counter!("roulette_cluster_job_failures_total").increment(1);
        }
        busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Records that `user`'s session is held here, for as long as its grace lasts.
async fn away(hub: &Hub, cluster: &Cluster, user: &str) -> Result<(), fred::error::Error> {
    if hub.lock().away_token(user).is_none() {
        return Ok(());
    }
    let grace = hub.timings.reconnect_grace.as_millis().max(1) as i64;
    let _: () = cluster
        .client()
        .set(
            cluster.key(&format!("sess:{user}")),
            cluster.node.as_ref(),
            Some(fred::types::Expiration::PX(grace)),
            None,
            false,
        )
        .await?;
    Ok(())
}

/// Asks the node holding `user`'s session, if another one, to hand it over.
/// The parked `authenticate` is answered by that node's handover (or refusal), or here at once
/// as a fresh session when no other node holds one.
async fn resume(
    hub: &Hub,
    cluster: &Cluster,
    user: &str,
    token: Option<String>,
) -> Result<(), fred::error::Error> {
    let held: Result<Option<String>, _> = cluster
        .client()
        .get(cluster.key(&format!("sess:{user}")))
        .await;
    match held {
        Ok(Some(node)) if *node != *cluster.node => {
            cluster.send(
                &node,
                &Msg::Migrate {
                    user: user.to_string(),
                    token,
                    from: cluster.node.to_string(),
                },
            );
            Ok(())
        }
        other => {
            if let Some(p) = hub.take_pending(user) {
                finish(hub, p, None);
            }
            other.map(|_| ())
        }
    }
}

/// Queues the search of every local user who waits again, for a new lease holder (a search the
/// holder has already keeps its place there).
pub(crate) fn republish(hub: &Hub) {
    let core = hub.lock();
    let users: Vec<_> = core.waiting_users().cloned().collect();
    drop(core);
    tracing::info!(users = users.len(), "publishing this node's searches again");
    for u in users {
        hub.resubmit(u);
    }
}

/// Sends `user`'s search `id` (or its current one) to the lease holder, if it still waits.
fn search(hub: &Hub, cluster: &Cluster, user: &str, id: Option<u64>) {
    let msg = {
        let core = hub.lock();
        let current = core.queue().search_id(user);
        let (Some(s), Some(search)) = (core.waiting_entry(user), current) else {
            return;
        };
        if id.is_some_and(|id| id != search) {
            return;
        }
        let now = Instant::now();
        Msg::Seek {
            entry: Entry::of(s, search, &cluster.node, now),
            blocks: core.queue().blocks_of(user, now),
        }
    };
    to_holder(hub, cluster, msg);
}
