//! The node's side of the shared queue: who of this node waits, in order.
//!
//! In a cluster the pairing happens in Redis (see [`super::worker`]), so the core's matchmaker
//! only keeps this node's waiting users, for `queue-status`, timeouts and relaxation, and
//! queues a [`Job`] for the node's cluster worker whenever a search starts, stops or relaxes.
//! Sending a job is a synchronous channel push, so the core stays free of I/O and the jobs of
//! one user run in the order its events arrived.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::sync::mpsc::UnboundedSender;

use crate::core::UserId;
use crate::core::matchmaker::{Matchmaker, Pairing, PreferenceMatchmaker, Relaxation, Seeker};

/// Work for the cluster worker, in the order the core decided it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Job {
    /// Publish the user's search in the shared queue and look for a partner there.
    Search(UserId),
    /// Take the user out of the shared queue.
    Dequeue(UserId),
    /// The user's connection dropped and its room is held: record where, so that another node
    /// can take the session over if the user comes back there.
    Away(UserId),
    /// The user, new on this node, presented a resume token (or a verified JWT): if its session
    /// is held on another node, ask for it.
    Resume {
        /// Who.
        user: UserId,
        /// The token presented (`None` for a verified JWT).
        token: Option<String>,
    },
    /// `by` blocked `other` for `ttl`.
    Block {
        /// Who blocked.
        by: UserId,
        /// Whom.
        other: UserId,
        /// For how long.
        ttl: Duration,
    },
}

impl Job {
    /// The user whose order the job must keep.
    pub(crate) fn user(&self) -> &UserId {
        match self {
            Job::Search(u) | Job::Dequeue(u) | Job::Away(u) => u,
            Job::Resume { user, .. } => user,
            Job::Block { by, .. } => by,
        }
    }

    /// The job's name, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Job::Search(_) => "search",
            Job::Dequeue(_) => "dequeue",
            Job::Away(_) => "away",
            Job::Resume { .. } => "resume",
            Job::Block { .. } => "block",
        }
    }
}

/// This node's waiting users, in arrival order; the pairing itself is the cluster's.
#[derive(Debug)]
pub(crate) struct SharedQueue {
    relax_after: Duration,
    seq: u64,
    order: BTreeMap<u64, Seeker>,
    /// Each waiting user's place in `order` and the random id of its search.
    index: FxHashMap<UserId, (u64, u64)>,
    relaxed: HashSet<UserId>,
    jobs: UnboundedSender<Job>,
    /// Users waiting on the other nodes at the last heartbeat.
    elsewhere: AtomicUsize,
}

impl SharedQueue {
    /// An empty queue whose jobs go to `jobs`.
    pub(crate) fn new(relax_after: Duration, jobs: UnboundedSender<Job>) -> Self {
        SharedQueue {
            relax_after,
            seq: 0,
            order: BTreeMap::new(),
            index: FxHashMap::default(),
            relaxed: HashSet::new(),
            jobs,
            elsewhere: AtomicUsize::new(0),
        }
    }

    /// Records how many users wait on the other nodes (from the heartbeats).
    pub(crate) fn note_waiting_elsewhere(&self, n: usize) {
        self.elsewhere.store(n, Ordering::Relaxed);
    }

    /// Gives `user`'s search a new id: a claimed search that did not become a room is published
    /// again under it (the claim marker holds the old id).
    pub(crate) fn renew_search(&mut self, user: &str) {
        if let Some((_, id)) = self.index.get_mut(user) {
            *id = rand::random::<u64>() >> 12;
        }
    }

    /// The id of `user`'s current search.
    pub(crate) fn search_id(&self, user: &str) -> Option<u64> {
        self.index.get(user).map(|&(_, id)| id)
    }

    fn job(&self, job: Job) {
        // The worker only stops with the server.
        self.jobs.send(job).ok();
    }
}

impl Matchmaker for SharedQueue {
    fn offer(&mut self, seeker: Seeker, _now: Instant) -> Option<Pairing> {
        self.seq += 1;
        let user = seeker.user.clone();
        self.index
            .insert(user.clone(), (self.seq, rand::random::<u64>() >> 12));
        self.order.insert(self.seq, seeker);
        self.job(Job::Search(user));
        None
    }

    fn remove(&mut self, user: &str) -> Option<Seeker> {
        let s = self.claimed(user)?;
        self.job(Job::Dequeue(s.user.clone()));
        Some(s)
    }

    fn claimed(&mut self, user: &str) -> Option<Seeker> {
        // The claim script took the entry out of Redis already: no `Dequeue` round trip.
        let (seq, _) = self.index.remove(user)?;
        self.relaxed.remove(user);
        self.order.remove(&seq)
    }

    fn get(&self, user: &str) -> Option<&Seeker> {
        self.order.get(&self.index.get(user)?.0)
    }

    fn is_relaxed(&self, user: &str) -> bool {
        self.relaxed.contains(user)
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn total_waiting(&self) -> usize {
        // This node's part is exact; the others' is as of the last heartbeat.
        self.order.len() + self.elsewhere.load(Ordering::Relaxed)
    }

    fn waiting(&self) -> Box<dyn Iterator<Item = &Seeker> + '_> {
        Box::new(self.order.values())
    }

    fn relax(&mut self, now: Instant) -> Relaxation {
        let due: Vec<UserId> = self
            .order
            .values()
            .filter(|s| {
                !s.prefs.interests.is_empty()
                    && !self.relaxed.contains(&s.user)
                    && now.saturating_duration_since(s.since) >= self.relax_after
            })
            .map(|s| s.user.clone())
            .collect();
        for u in &due {
            self.relaxed.insert(u.clone());
            // Look again: partners who share no interest are acceptable now.
            self.job(Job::Search(u.clone()));
        }
        Relaxation {
            relaxed: due,
            pairs: Vec::new(),
        }
    }

    fn block(&mut self, by: &UserId, other: &UserId, until: Instant) {
        self.job(Job::Block {
            by: by.clone(),
            other: other.clone(),
            ttl: until.saturating_duration_since(Instant::now()),
        });
    }

    /// A cluster keeps its blocks in Redis, none here.
    fn blocks(&self) -> usize {
        0
    }
}

/// The matchmaker of a node: its own indexed queue, or its share of the cluster's.
// One per process, never moved: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Queue {
    /// A single node: pairs in memory.
    Local(PreferenceMatchmaker),
    /// A cluster node: pairs through Redis.
    Shared(SharedQueue),
}

macro_rules! each {
    ($self:ident, $q:ident => $e:expr) => {
        match $self {
            Queue::Local($q) => $e,
            Queue::Shared($q) => $e,
        }
    };
}

impl Matchmaker for Queue {
    fn offer(&mut self, seeker: Seeker, now: Instant) -> Option<Pairing> {
        each!(self, q => q.offer(seeker, now))
    }
    fn remove(&mut self, user: &str) -> Option<Seeker> {
        each!(self, q => q.remove(user))
    }
    fn claimed(&mut self, user: &str) -> Option<Seeker> {
        each!(self, q => q.claimed(user))
    }
    fn get(&self, user: &str) -> Option<&Seeker> {
        each!(self, q => q.get(user))
    }
    fn is_relaxed(&self, user: &str) -> bool {
        each!(self, q => q.is_relaxed(user))
    }
    fn len(&self) -> usize {
        each!(self, q => q.len())
    }
    fn total_waiting(&self) -> usize {
        each!(self, q => q.total_waiting())
    }
    fn waiting(&self) -> Box<dyn Iterator<Item = &Seeker> + '_> {
        each!(self, q => q.waiting())
    }
    fn relax(&mut self, now: Instant) -> Relaxation {
        each!(self, q => q.relax(now))
    }
    fn block(&mut self, by: &UserId, other: &UserId, until: Instant) {
        each!(self, q => q.block(by, other, until))
    }
    fn blocks(&self) -> usize {
        each!(self, q => q.blocks())
    }
}
