//! The cluster's one matchmaker, as the node that holds the matching lease runs it.
//!
//! Every node forwards its users' searches ([`Msg::Seek`]), cancellations ([`Msg::Unseek`]) and
//! blocks ([`Msg::Block`]) to the lease holder, which keeps the whole cluster's queue in the same
//! indexed [`PreferenceMatchmaker`] a single node uses: one node's rule (hard filters both ways,
//! shared interests first, the longest-waiting first, relaxation, previous partners last, blocks)
//! over the whole queue, at the cost of one node's decision whatever its depth. A pairing goes
//! back as [`Msg::Paired`] to each user's node, which opens the room (a node that already gave
//! the search up refuses it: the search id says which search was matched).
//!
//! The holder keeps nothing another node could not give it again: when the lease moves, every
//! node sends its waiting users' searches (and their blocks) to the new holder. It is pure and
//! synchronous (the time is an argument), so the model test drives it without Redis.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::{Entry, Msg};
use crate::core::history::{self, MatchHistory};
use crate::core::matchmaker::{Matchmaker, Pairing, PreferenceMatchmaker, Seeker};
use crate::core::{UserId, new_room_id};

/// A waiting user's place for its node: its id, its position in the cluster's queue, and the
/// matching node's rate estimate of its wait (ms), when there is one.
type Place = (String, usize, Option<u64>);

/// Messages to send: to which node, what.
pub(crate) type Out = Vec<(Arc<str>, Msg)>;

/// What this node does with the messages for the lease holder.
#[derive(Debug)]
pub(crate) enum Matcher {
    /// It does not hold the lease: such messages are kept (a few) in case it has just taken it
    /// and not heard so yet, and dropped once another holder is known (whose arrival makes
    /// every node publish its searches again).
    Idle(Vec<Msg>),
    /// It holds the lease (boxed: the idle state is the common one, and small).
    Holding(Box<Holder>),
}

impl Default for Matcher {
    fn default() -> Self {
        Matcher::Idle(Vec::new())
    }
}

/// Most messages an idle matcher keeps.
pub(crate) const IDLE_KEPT: usize = 10_000;

/// The whole cluster's queue.
#[derive(Debug)]
pub(crate) struct Holder {
    mm: PreferenceMatchmaker,
    /// Each waiting user's node and search id.
    at: FxHashMap<UserId, (Arc<str>, u64)>,
    /// The cluster's recent matches, for the wait estimates.
    history: MatchHistory,
    /// Matches made and not yet added to the cluster's counter in Redis.
    unsaved: u64,
    /// The pairings of the last [`RECENT`] sent to a node for a partner of another node: when
    /// that node dies, the partner may never have heard of it, and searches again.
    recent: VecDeque<Recent>,
    /// Searches heard while the holder settles (see [`Holder::settling`]), in arrival order.
    pending: Vec<Seeker>,
    /// Until when searches are gathered rather than matched.
    settle_until: Option<Instant>,
}

/// A pairing sent to the node of its user who waited longer.
#[derive(Debug)]
struct Recent {
    /// When it was made.
    at: Instant,
    /// The node it was sent to.
    to: Arc<str>,
    /// The partner's node.
    node: Arc<str>,
    /// The partner.
    user: String,
    /// The partner's search.
    search: u64,
}

/// How long a pairing is remembered for [`Holder::drop_node`]: a node is found dead within
/// `NODE_TIMEOUT_MS` (at most ten minutes) of its last heartbeat.
const RECENT: Duration = Duration::from_secs(600);

/// Most pairings remembered.
const MAX_RECENT: usize = 100_000;

impl Holder {
    /// An empty queue whose users with interests relax after `relax_after`, keeping at most
    /// `max_blocks` blocks.
    pub(crate) fn new(relax_after: Duration, max_blocks: usize) -> Holder {
        Holder {
            mm: PreferenceMatchmaker::new(relax_after).with_max_blocks(max_blocks),
            at: FxHashMap::default(),
            history: MatchHistory::default(),
            unsaved: 0,
            recent: VecDeque::new(),
            pending: Vec::new(),
            settle_until: None,
        }
    }

    /// The same holder, gathering the searches it hears until `until` and then queueing them
    /// longest-waiting first. A new holder hears every node's waiting users again, in whatever
    /// order the nodes' messages reach it (each node when its own heartbeat sees the new holder),
    /// while the matchmaker's queue order is its waiting order: queued as they came, a search
    /// that began long ago would stand behind searches that began after it, for every later
    /// arrival and for relaxation. Each search carries its start ([`Entry::since`]), so once
    /// every node has had time to send them, they are queued in that order, as one node would
    /// have queued the same arrivals.
    pub(crate) fn settling(mut self, until: Instant) -> Holder {
        self.settle_until = Some(until);
        self
    }

    /// How many users wait in the cluster.
    pub(crate) fn len(&self) -> usize {
        self.mm.len() + self.pending.len()
    }

    /// Once the settling time is over, queues the searches gathered meanwhile, longest-waiting
    /// first (each offered in turn, so compatible ones pair as they would have on one node).
    fn settle(&mut self, now: Instant, wall: u64) -> Out {
        if self.settle_until.is_none_or(|until| now < until) {
            return Vec::new();
        }
        self.settle_until = None;
        let mut pending = std::mem::take(&mut self.pending);
        // Stable: searches that began in the same instant keep their arrival order.
        pending.sort_by_key(|s| s.since);
        let mut out = Vec::new();
        for s in pending {
            if let Some(p) = self.mm.offer(s, now) {
                out.extend(self.paired(p, now, wall));
            }
        }
        out
    }

    /// The matches made since the last call (for the cluster's match counter).
    pub(crate) fn take_unsaved(&mut self) -> u64 {
        std::mem::take(&mut self.unsaved)
    }

    /// `entry`'s user searches (the wall clock reads `wall` at `now`). A search the holder has
    /// already (the same node and id: its node published it again) keeps its place; a new search
    /// of a waiting user replaces the old one; a user of the same id waiting on another node
    /// makes the search [`Msg::Taken`].
    pub(crate) fn seek(
        &mut self,
        entry: Entry,
        blocks: &[(String, u64)],
        now: Instant,
        wall: u64,
    ) -> Out {
        let mut out = self.settle(now, wall);
        let user: UserId = entry.user.as_str().into();
        let node: Arc<str> = entry.node.as_str().into();
        if let Some((at, search)) = self.at.get(&user) {
            if *at != node {
                out.push((
                    node,
                    Msg::Taken {
                        user: entry.user,
                        search: entry.search,
                    },
                ));
                return out;
            }
            if *search == entry.search {
                return out;
            }
            self.mm.remove(&user);
            self.pending.retain(|s| s.user != user);
        }
        for (other, ms) in blocks {
            let until = now + Duration::from_millis(*ms);
            self.mm.block(&user, &other.as_str().into(), until);
        }
        self.at.insert(user, (node, entry.search));
        let seeker = entry.seeker_at(now, wall);
        if self.settle_until.is_some() {
            self.pending.push(seeker);
        } else if let Some(p) = self.mm.offer(seeker, now) {
            out.extend(self.paired(p, now, wall));
        }
        out
    }

    /// `user` of `node` stopped searching.
    pub(crate) fn unseek(&mut self, user: &str, node: &str) {
        if self.at.get(user).is_some_and(|(n, _)| **n == *node) {
            self.at.remove(user);
            self.mm.remove(user);
            self.pending.retain(|s| *s.user != *user);
        }
    }

    /// `by` never meets `other` again until `until`.
    pub(crate) fn block(&mut self, by: &str, other: &str, until: Instant) {
        self.mm.block(&by.into(), &other.into(), until);
    }

    /// Forgets the searches of `node` (it died), and tells the nodes of the partners it was
    /// recently paired with to search again ([`Msg::Again`]: a partner that had its room
    /// opened meanwhile no longer waits with that search, and ignores it).
    pub(crate) fn drop_node(&mut self, node: &str) -> Out {
        let gone: Vec<UserId> = self
            .at
            .iter()
            .filter(|(_, (n, _))| **n == *node)
            .map(|(u, _)| u.clone())
            .collect();
        for u in &gone {
            self.at.remove(u);
            self.mm.remove(u);
        }
        self.pending.retain(|s| !gone.contains(&s.user));
        self.recent
            .iter()
            .filter(|r| *r.to == *node)
            .map(|r| {
                let again = Msg::Again {
                    user: r.user.clone(),
                    search: r.search,
                };
                (r.node.clone(), again)
            })
            .collect()
    }

    /// Time-driven work: relaxation, and the pairs it makes possible.
    pub(crate) fn tick(&mut self, now: Instant, wall: u64) -> Out {
        self.history.prune(now);
        while self
            .recent
            .front()
            .is_some_and(|r| now.saturating_duration_since(r.at) > RECENT)
        {
            self.recent.pop_front();
        }
        let mut out = self.settle(now, wall);
        let pairs = self.mm.relax(now).pairs;
        for p in pairs {
            out.extend(self.paired(p, now, wall));
        }
        out
    }

    /// Every node's [`Msg::Standing`]: the cluster's total, and its users' places and
    /// estimated waits. Each of `nodes` (the live ones) hears, even of none: a node whose
    /// searches all went missing learns so.
    pub(crate) fn standings(&self, nodes: &[String]) -> Out {
        let total = self.len();
        let mut per: FxHashMap<Arc<str>, Vec<Place>> = nodes
            .iter()
            .map(|n| (n.as_str().into(), Vec::new()))
            .collect();
        // Searches still gathered take their places after the queued ones, by their start.
        let mut pending: Vec<&Seeker> = self.pending.iter().collect();
        pending.sort_by_key(|s| s.since);
        for (i, s) in self.mm.waiting().chain(pending).enumerate() {
            let Some((node, _)) = self.at.get(&s.user) else {
                continue;
            };
            let position = i + 1;
            let segment = Some(history::segment_of(&s.prefs));
            per.entry(node.clone()).or_default().push((
                s.user.to_string(),
                position,
                self.history.rate_estimate_ms(position, segment),
            ));
        }
        per.into_iter()
            .map(|(node, users)| (node, Msg::Standing { total, users }))
            .collect()
    }

    /// The message that tells the waiting user's node of a pairing: it opens the room (it
    /// starts the call) and tells the seeker's node in turn, so that a room exists on the
    /// first node before the second hears of it.
    fn paired(&mut self, p: Pairing, now: Instant, wall: u64) -> Out {
        let Pairing {
            waiting, seeker, ..
        } = p;
        self.unsaved += 1;
        self.history.record(
            now,
            [
                (
                    now.saturating_duration_since(waiting.since),
                    history::segment_of(&waiting.prefs),
                ),
                (
                    now.saturating_duration_since(seeker.since),
                    history::segment_of(&seeker.prefs),
                ),
            ],
        );
        let (Some((wn, ws)), Some((sn, ss))) =
            (self.at.remove(&waiting.user), self.at.remove(&seeker.user))
        else {
            // Every queued user has a node: not reached.
            return Vec::new();
        };
        if wn != sn {
            if self.recent.len() >= MAX_RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(Recent {
                at: now,
                to: wn.clone(),
                node: sn.clone(),
                user: seeker.user.to_string(),
                search: ss,
            });
        }
        vec![(
            wn,
            Msg::Paired {
                room: new_room_id().to_string(),
                to: waiting.user.to_string(),
                partner: Entry::at(&seeker, ss, &sn, now, wall),
                initiator: true,
                search: Some(ws),
            },
        )]
    }

    /// Applies one message for the lease holder; returns what to send.
    pub(crate) fn handle(&mut self, msg: Msg, now: Instant, wall: u64) -> Out {
        match msg {
            Msg::Seek { entry, blocks } => self.seek(entry, &blocks, now, wall),
            Msg::Unseek { user, node } => {
                self.unseek(&user, &node);
                Vec::new()
            }
            Msg::Block { by, other, ttl_ms } => {
                self.block(&by, &other, now + Duration::from_millis(ttl_ms));
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
