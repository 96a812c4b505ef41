//! The waiting queue and the pairing rule, behind the [`Matchmaker`] trait.
//!
//! A matchmaker is pure and synchronous: it holds who waits and decides who pairs with whom,
//! nothing else. The [`Core`](super::Core) owns one and never looks inside it, so another engine
//! can replace [`PreferenceMatchmaker`] without touching the core or the socket handlers.
//!
//! # The rule
//! Two waiting users may pair when each one's hard filters (language, gender, age range,
//! country) accept the other's profile, neither has blocked the other, and either they share an
//! interest or neither still insists on one. A user with interests insists until it has waited
//! `relax_after`; then it is *relaxed* and accepts anyone compatible. Among the partners a seeker
//! may have, those sharing an interest come first, then the rest; within each group the one
//! waiting longest wins; a user's previous partner is taken only when nobody else qualifies.
//!
//! # The index
//! Scanning the queue would make every decision cost as much as the queue is long. Instead the
//! waiting users are grouped by their *wish key* (what they ask of a partner) and, inside it, by
//! their own gender. A seeker looks only at the live wish keys that accept its profile (few: most
//! users wish for nothing) and the genders it accepts, and in each of those groups at the head
//! of the one list its own wishes select: everyone, or the speakers of its wished language, or
//! the people of its wished country, or the holders of each of its interest tags. Lists keep
//! arrival order and drop departed users lazily, when they reach the head.

use std::sync::Arc;
use std::time::Instant;

use super::UserId;
use crate::model::profile::{Preferences, Profile};

/// A user looking for a partner.
#[derive(Debug, Clone)]
pub struct Seeker {
    /// Who.
    pub user: UserId,
    /// Their profile, shared with the user record.
    pub profile: Arc<Profile>,
    /// What they ask of a partner.
    pub prefs: Arc<Preferences>,
    /// When this search began.
    pub since: Instant,
    /// The partner of the user's last room: paired again only when nobody else qualifies.
    pub previous: Option<UserId>,
}

/// Two users the matchmaker paired: `waiting` was in the queue, `seeker` arrived (or relaxed).
#[derive(Debug, Clone)]
pub struct Pairing {
    /// The user who waited in the queue.
    pub waiting: Seeker,
    /// The user whose offer (or relaxation) made the pair.
    pub seeker: Seeker,
    /// Interests both share, in the seeker's order.
    pub common_interests: Vec<String>,
}

/// What time did to the queue: who relaxed, and the pairs relaxation made possible.
#[derive(Debug, Default)]
pub struct Relaxation {
    /// Users who stopped insisting on a shared interest (they are told `relaxed: true`).
    pub relaxed: Vec<UserId>,
    /// Pairs made among relaxed users.
    pub pairs: Vec<Pairing>,
}

/// The queue and its pairing rule.
pub trait Matchmaker: Send {
    /// Offers `seeker` to the queue at `now`: returns the pair it makes, or `None` after queueing
    /// it. The seeker must not be queued already.
    fn offer(&mut self, seeker: Seeker, now: Instant) -> Option<Pairing>;
    /// Takes a user out of the queue.
    fn remove(&mut self, user: &str) -> Option<Seeker>;
    /// Takes a user out of the queue because a match was made elsewhere (by the cluster's
    /// cluster's matchmaker, which already took it out of its queue).
    fn claimed(&mut self, user: &str) -> Option<Seeker> {
        self.remove(user)
    }
    /// The queued entry of `user`.
    fn get(&self, user: &str) -> Option<&Seeker>;
    /// Whether a waiting user stopped insisting on a shared interest.
    fn is_relaxed(&self, user: &str) -> bool;
    /// How many users wait.
    fn len(&self) -> usize;
    /// How many users wait in the whole service (`queue-status.totalWaiting`): [`len`] for one
    /// node; the cluster's count for a node of a cluster.
    ///
    /// [`len`]: Matchmaker::len
    fn total_waiting(&self) -> usize {
        self.len()
    }
    /// `user`'s place in the whole service's queue (1 is next) and the wait the recent match
    /// rate gives that place, in ms (`None` without a match in the last minute): `None` on one
    /// node, where the core counts both itself from [`waiting`](Matchmaker::waiting) and its own
    /// match history; a cluster's node learns both from the node that matches for the cluster,
    /// which sees every waiting user and every match.
    fn standing(&self, _user: &str) -> Option<(usize, Option<u64>)> {
        None
    }
    /// True when nobody waits.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every waiting user, longest-waiting first: the order of `queue-status` positions.
    fn waiting(&self) -> Box<dyn Iterator<Item = &Seeker> + '_>;
    /// Relaxes the users who have waited long enough and pairs those who now can.
    fn relax(&mut self, now: Instant) -> Relaxation;
    /// Records that `by` never wants to meet `other` again (until `until`).
    fn block(&mut self, by: &UserId, other: &UserId, until: Instant);
    /// How many blocks this node keeps in memory.
    fn blocks(&self) -> usize;
}

mod index;
mod preference;

pub use preference::PreferenceMatchmaker;

#[cfg(test)]
pub(crate) mod tests;
