//! The node's side of the cluster's queue: who of this node waits, in order.
//!
//! In a cluster the pairing happens at the lease holder (see [`super::holder`]), so the core's
//! matchmaker here only keeps this node's waiting users, for timeouts, relaxation and
//! `queue-status` (whose place and total the holder sends), and queues a [`Job`] for the node's
//! cluster worker whenever a search starts or stops or a user blocks another. Sending a job is a
//! synchronous channel push, so the core stays free of I/O and the jobs of one user run in the
//! order its events arrived.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::sync::mpsc::UnboundedSender;

use crate::core::UserId;
use crate::core::blocks::Blocks;
use crate::core::matchmaker::{Matchmaker, Pairing, PreferenceMatchmaker, Relaxation, Seeker};

/// Work for the cluster worker, in the order the core decided it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Job {
    /// Send the user's search to the lease holder: search `.1` (skipped when the user searched
    /// again since: the newer search has its own job), or whatever search is current (`None`:
    /// publishing again).
    Search(UserId, Option<u64>),
    /// Tell the lease holder the user stopped searching.
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
            Job::Search(u, _) | Job::Dequeue(u) | Job::Away(u) => u,
            Job::Resume { user, .. } => user,
            Job::Block { by, .. } => by,
        }
    }

    /// The job's name, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Job::Search(..) => "search",
            Job::Dequeue(_) => "dequeue",
            Job::Away(_) => "away",
            Job::Resume { .. } => "resume",
            Job::Block { .. } => "block",
        }
    }
}

/// Most searches a node sends again per word of the holder (see [`SharedQueue::set_standing`]).
const RESEND: usize = 1000;

/// This node's waiting users, in arrival order; the pairing itself is the lease holder's.
#[derive(Debug)]
pub(crate) struct SharedQueue {
    relax_after: Duration,
    seq: u64,
    order: BTreeMap<u64, Seeker>,
    /// Each waiting user's place in `order` and the random id of its search.
    index: FxHashMap<UserId, (u64, u64)>,
    relaxed: HashSet<UserId>,
    jobs: UnboundedSender<Job>,
    /// The blocks this node's users made: sent along with their searches, so that a holder
    /// that took over knows them.
    blocks: Blocks,
    /// The holder's last word: each local waiting user's place and estimated wait.
    standing: FxHashMap<UserId, (usize, Option<u64>)>,
    /// The holder's last count of the cluster's waiting users (`None` before the first).
    total: Option<usize>,
    /// Local users who left the queue since that count, and who were in it.
    gone: usize,
    /// Local users waiting who arrived since that count.
    unranked: usize,
    /// The arrival number of the last search made before the holder's previous word.
    asked_before: u64,
    /// Where the next look for lost searches starts (see [`SharedQueue::set_standing`]).
    resend_from: u64,
}

impl SharedQueue {
    /// An empty queue whose jobs go to `jobs`, keeping at most `max_blocks` blocks.
    pub(crate) fn new(
        relax_after: Duration,
        max_blocks: usize,
        jobs: UnboundedSender<Job>,
    ) -> Self {
        SharedQueue {
            relax_after,
            seq: 0,
            order: BTreeMap::new(),
            index: FxHashMap::default(),
            relaxed: HashSet::new(),
            jobs,
            blocks: Blocks::new(max_blocks),
            standing: FxHashMap::default(),
            total: None,
            gone: 0,
            unranked: 0,
            asked_before: 0,
            resend_from: 0,
        }
    }

    /// Records the holder's count of the cluster's waiting users and the places of this node's.
    /// Returns the users whose search the holder should have had for a while and has not (its
    /// message was lost: a subscriber that fell behind drops what overflows): their searches
    /// are sent again (the holder ignores one it has).
    pub(crate) fn set_standing(
        &mut self,
        total: usize,
        users: Vec<(String, usize, Option<u64>)>,
    ) -> Vec<UserId> {
        self.standing = users
            .into_iter()
            .filter(|(u, _, _)| self.index.contains_key(u.as_str()))
            .map(|(u, p, e)| (u.into(), (p, e)))
            .collect();
        self.total = Some(total);
        self.gone = 0;
        self.unranked = self.index.len() - self.standing.len();
        // Searches made before the holder's previous word had a whole interval to reach it. At
        // most [`RESEND`] go again per word, the longest-waiting first: sent all at once, the
        // searches of a whole node could overflow the holder's inbox again.
        // The next word goes on after the last one sent (and starts again from the oldest once
        // a word finds fewer).
        let lost: Vec<(u64, UserId)> = self
            .order
            .range(self.resend_from..=self.asked_before.max(self.resend_from))
            .filter(|(_, s)| !self.standing.contains_key(&s.user))
            .take(RESEND)
            .map(|(&seq, s)| (seq, s.user.clone()))
            .collect();
        self.resend_from = match lost.last() {
            Some(&(seq, _)) if lost.len() == RESEND => seq + 1,
            _ => 0,
        };
        self.asked_before = self.seq;
        lost.into_iter().map(|(_, u)| u).collect()
    }

    /// Whom `user` blocked, and for how many more ms each.
    pub(crate) fn blocks_of(&self, user: &str, now: Instant) -> Vec<(String, u64)> {
        self.blocks
            .of(user, now)
            .into_iter()
            .map(|(u, until)| {
                let left = until.saturating_duration_since(now).as_millis() as u64;
                (u.to_string(), left)
            })
            .collect()
    }

    /// Gives `user`'s search a new id: a pairing of the old one that arrives late is refused.
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
        let id = rand::random::<u64>() >> 12;
        self.index.insert(user.clone(), (self.seq, id));
        self.order.insert(self.seq, seeker);
        self.unranked += 1;
        self.job(Job::Search(user, Some(id)));
        None
    }

    fn remove(&mut self, user: &str) -> Option<Seeker> {
        let s = self.claimed(user)?;
        self.job(Job::Dequeue(s.user.clone()));
        Some(s)
    }

    fn claimed(&mut self, user: &str) -> Option<Seeker> {
        let (seq, _) = self.index.remove(user)?;
        self.relaxed.remove(user);
        if self.standing.remove(user).is_some() {
            self.gone += 1;
        } else {
            self.unranked = self.unranked.saturating_sub(1);
        }
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
        // The holder's count, less this node's users who left since, plus its newcomers.
        match self.total {
            Some(t) => t.saturating_sub(self.gone) + self.unranked,
            None => self.order.len(),
        }
    }

    fn standing(&self, user: &str) -> Option<(usize, Option<u64>)> {
        match self.standing.get(user) {
            Some(&(p, rate)) => Some((p, rate)),
            // Arrived since the holder's last word: last in the queue.
            None => self
                .index
                .contains_key(user)
                .then(|| (self.total_waiting(), None)),
        }
    }

    fn waiting(&self) -> Box<dyn Iterator<Item = &Seeker> + '_> {
        Box::new(self.order.values())
    }

    fn relax(&mut self, now: Instant) -> Relaxation {
        self.blocks.expire(now);
        // The holder relaxes the same users at the same time (their wait is carried in their
        // searches): here they are only told so.
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
        }
        Relaxation {
            relaxed: due,
            pairs: Vec::new(),
        }
    }

    fn block(&mut self, by: &UserId, other: &UserId, until: Instant) {
        self.blocks.add(by, other, until);
        self.job(Job::Block {
            by: by.clone(),
            other: other.clone(),
            ttl: until.saturating_duration_since(Instant::now()),
        });
    }

    fn blocks(&self) -> usize {
        self.blocks.len()
    }
}

/// The matchmaker of a node: its own indexed queue, or its share of the cluster's.
// One per process, never moved: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Queue {
    /// A single node: pairs in memory.
    Local(PreferenceMatchmaker),
    /// A cluster node: pairs through the lease holder.
    Shared(SharedQueue),
}

/// What only a cluster's queue does; nothing on a single node.
impl Queue {
    /// See [`SharedQueue::renew_search`].
    pub(crate) fn renew_search(&mut self, user: &str) {
        if let Queue::Shared(q) = self {
            q.renew_search(user);
        }
    }

    /// See [`SharedQueue::search_id`]; `None` on a single node.
    pub(crate) fn search_id(&self, user: &str) -> Option<u64> {
        match self {
            Queue::Shared(q) => q.search_id(user),
            Queue::Local(_) => None,
        }
    }

    /// See [`SharedQueue::blocks_of`].
    pub(crate) fn blocks_of(&self, user: &str, now: Instant) -> Vec<(String, u64)> {
        match self {
            Queue::Shared(q) => q.blocks_of(user, now),
            Queue::Local(_) => Vec::new(),
        }
    }

    /// See [`SharedQueue::set_standing`].
    pub(crate) fn set_standing(
        &mut self,
        total: usize,
        users: Vec<(String, usize, Option<u64>)>,
    ) -> Vec<UserId> {
        match self {
            Queue::Shared(q) => q.set_standing(total, users),
            Queue::Local(_) => Vec::new(),
        }
    }
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
    fn standing(&self, user: &str) -> Option<(usize, Option<u64>)> {
        each!(self, q => q.standing(user))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn seeker(id: &str, since: Instant) -> Seeker {
        Seeker {
            user: id.into(),
            profile: Arc::default(),
            prefs: Arc::default(),
            since,
            previous: None,
        }
    }

    /// The holder's word gives each waiting user its place in the cluster; a search it should
    /// have had for a whole interval and has not (a lost message) is sent again, a newer one
    /// (maybe on its way) is not.
    #[test]
    fn places_come_from_the_holder_and_lost_searches_go_again() {
        let (tx, mut jobs) = tokio::sync::mpsc::unbounded_channel();
        let mut q = SharedQueue::new(Duration::from_secs(5), 0, tx);
        let now = Instant::now();
        for u in ["a", "b"] {
            assert!(q.offer(seeker(u, now), now).is_none());
        }
        assert!(matches!(jobs.try_recv(), Ok(Job::Search(u, Some(_))) if &*u == "a"));
        let at = |p| ("a".to_string(), p, Some(1000));
        assert!(
            q.set_standing(40, vec![at(7)]).is_empty(),
            "b may be on its way"
        );
        assert_eq!(q.standing("a"), Some((7, Some(1000))));
        assert_eq!(q.standing("b"), Some((41, None)), "b counts last");
        assert_eq!(q.total_waiting(), 41);
        q.offer(seeker("c", now), now);
        assert_eq!(q.total_waiting(), 42);
        let lost = q.set_standing(40, vec![at(6)]);
        assert_eq!(
            lost,
            vec![UserId::from("b")],
            "b had a whole interval; c is new"
        );
        q.remove("a");
        assert_eq!(q.total_waiting(), 39 + 2, "a left; b and c unranked");
    }
}
