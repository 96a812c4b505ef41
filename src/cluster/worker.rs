//! The node's cluster worker: runs the shared-queue jobs its core queued.
//!
//! Jobs are spread over [`LANES`] lanes by user, and each lane runs its jobs one at a time in
//! the order the core queued them: the `Search`, `Dequeue` and `Search` of a user who changes its
//! mind reach Redis in that order, while different users' searches overlap their round trips.
//! (Two users' searches racing for the same partner is what the atomic claim is for.)
//!
//! A search publishes the user's entry, reads the live queue, picks a partner with the shared
//! rule, and claims the pair with one atomic script. If someone else took the partner first,
//! the next best is tried from the same snapshot; if someone took the searcher, that node's
//! `paired` message is on its way. Once claimed, the room opens in this node's core (and, for a
//! partner of another node, in that node's core on receipt of `paired`).

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use fred::prelude::*;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::bus::queue::{Job, Queue};
use crate::bus::{Cluster, Entry, Msg, scripts};
use crate::core::rule::{Candidate, pick};
use crate::core::{RoomId, new_room_id};
use crate::model::{ErrorCode, Reject};
use crate::node::resume::finish;
use crate::node::{Hub, Link, send_error};
use crate::protocol::outgoing::now_ms;

/// How many partners one search tries to claim before it waits in the queue.
const CLAIM_ATTEMPTS: usize = 8;

/// How many users' jobs may be in flight at once.
pub(crate) const LANES: usize = 8;

/// Hands each job to its user's lane until the core's side of the channel closes.
pub(crate) async fn run(hub: Arc<Hub>, cluster: Arc<Cluster>, mut jobs: UnboundedReceiver<Job>) {
    let lanes: Vec<_> = (0..LANES)
        .map(|_| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(lane(hub.clone(), cluster.clone(), rx));
            tx
        })
        .collect();
    while let Some(job) = jobs.recv().await {
        let lane = rustc_hash::FxBuildHasher.hash_one(&**job.user()) as usize % LANES;
        lanes[lane].send(job).ok();
    }
}

/// Runs one lane's jobs in order.
async fn lane(hub: Arc<Hub>, cluster: Arc<Cluster>, mut jobs: UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        let result = match &job {
            Job::Search(user) => search(&hub, &cluster, user).await,
            Job::Dequeue(user) => scripts::dequeue(&cluster, user).await,
            Job::Away(user) => away(&hub, &cluster, user).await,
            Job::Resume { user, token } => resume(&hub, &cluster, user, token.clone()).await,
            Job::Block { by, other, ttl } => {
                scripts::block(&cluster, by, other, ttl.as_millis() as u64).await
            }
        };
        if let Err(e) = result {
            // Not the job itself: a `Resume` carries a secret.
            tracing::warn!(job = job.kind(), user = %job.user(), "cluster job failed: {e}");
            metrics::counter!("roulette_cluster_job_failures_total").increment(1);
        }
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

/// Queues a new search for every local user who waits: after Redis came back empty.
pub(crate) fn republish(hub: &Hub) {
    let core = hub.lock();
    let users: Vec<_> = core.waiting_users().cloned().collect();
    drop(core);
    tracing::info!(users = users.len(), "publishing this node's searches again");
    for u in users {
        hub.resubmit(u);
    }
}

async fn search(hub: &Hub, cluster: &Cluster, user: &str) -> Result<(), fred::error::Error> {
    let me = {
        let core = hub.lock();
        let (Some(s), Queue::Shared(q)) = (core.waiting_entry(user), core.queue()) else {
            return Ok(());
        };
        let id = q.search_id(user).unwrap_or_default();
        Entry::of(s, id, &cluster.node, Instant::now())
    };
    let Some((mut queue, blocks)) = scripts::search(cluster, &me).await? else {
        refuse_taken(hub, user);
        return Ok(());
    };
    {
        // An id that is also a user of this node (the same person on two nodes, or an impostor)
        // cannot be a ghost here: leave it to other nodes' searchers.
        let core = hub.lock();
        queue.retain(|e| e.user != me.user && (e.node == me.node || core.link(&e.user).is_none()));
    }
    let relax = hub.timings.preference_relax.as_millis() as u64;
    let now = now_ms();
    let insists = |e: &Entry| !e.prefs.interests.is_empty() && now < e.since + relax;
    let blocked = |a: &str, b: &str| {
        // Blocks are stored both ways, so the searcher's own set covers both directions.
        let other = if a == me.user { b } else { a };
        blocks.iter().any(|x| x == other)
    };
    for _ in 0..CLAIM_ATTEMPTS {
        let chosen = {
            let seeker = candidate(&me, insists(&me));
            let list: Vec<Candidate<'_>> = queue.iter().map(|e| candidate(e, insists(e))).collect();
            pick(&seeker, &list, &blocked)
        };
        let Some(i) = chosen else {
            return Ok(());
        };
        let partner = queue.remove(i);
        match scripts::claim(cluster, &me.user, &partner.user).await? {
            seq if seq > 0 => return open(hub, cluster, me, partner, seq).await,
            0 => continue,
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// A user of the same id waits on another node: this search ends, refused as `authenticate`
/// with a taken id would be on one node.
fn refuse_taken(hub: &Hub, user: &str) {
    let mut core = hub.lock();
    let Ok(effects) = core.end(user, Instant::now()) else {
        return;
    };
    if let Some(Link::Local(socket)) = core.link(user) {
        let reject = Reject::new(
            ErrorCode::UserIdTaken,
            "a user with this id is already searching on another server",
        );
        send_error(socket, "find-random-partner", &reject);
    }
    hub.deliver(&mut core, effects);
}

fn candidate(e: &Entry, insists: bool) -> Candidate<'_> {
    Candidate {
        user: &e.user,
        profile: &e.profile,
        prefs: &e.prefs,
        insists,
        previous: e.previous.as_deref(),
    }
}

/// Opens the room of a claimed pair: `partner` waited longer and starts the call.
async fn open(
    hub: &Hub,
    cluster: &Cluster,
    me: Entry,
    partner: Entry,
    partner_seq: i64,
) -> Result<(), fred::error::Error> {
    let room = new_room_id();
    if partner.node == me.node {
        open_here(hub, room, &me, &partner);
        return Ok(());
    }
    let node: Arc<str> = partner.node.as_str().into();
    if !adopt(hub, room.clone(), &me, &partner, &node) {
        // The searcher left meanwhile (or, if it still waits, searches again): its partner keeps
        // its place in the queue.
        hub.search_again(&mut hub.lock(), &me.user);
        return scripts::requeue(cluster, &partner, partner_seq).await;
    }
    cluster.send(
        &node,
        &Msg::Paired {
            room: room.to_string(),
            to: partner.user,
            partner: me,
            initiator: true,
        },
    );
    Ok(())
}

/// Both users are on this node.
fn open_here(hub: &Hub, room: RoomId, me: &Entry, partner: &Entry) {
    let mut core = hub.lock();
    match core.pair_waiting(room, &partner.user, &me.user, Instant::now()) {
        Some(effects) => hub.deliver(&mut core, effects),
        None => {
            // One of the two stopped waiting meanwhile: the other searches again.
            for u in [&partner.user, &me.user] {
                hub.search_again(&mut core, u);
            }
        }
    }
}

/// The partner is on `node`: the room opens here with it as a ghost. False when the searcher
/// stopped waiting meanwhile.
fn adopt(hub: &Hub, room: RoomId, me: &Entry, partner: &Entry, node: &Arc<str>) -> bool {
    let now = Instant::now();
    let mut core = hub.lock();
    let seeker = partner.seeker(now);
    match core.adopt(
        room,
        &me.user,
        seeker,
        Link::Remote(node.clone()),
        false,
        now,
    ) {
        Some(effects) => {
            hub.deliver(&mut core, effects);
            true
        }
        None => false,
    }
}
