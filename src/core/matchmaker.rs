//! The waiting queue and the pairing rule, behind the [`Matchmaker`] trait.
//!
//! A matchmaker is pure and synchronous: it holds who waits and decides who pairs with whom,
//! nothing else. The [`Core`](super::Core) owns one and never looks inside it, so a smarter engine
//! can replace [`FifoMatchmaker`] without touching the core or the socket handlers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::UserId;
use super::profile::{Preferences, Profile, compatible};

/// A user looking for a partner.
#[derive(Debug, Clone)]
pub struct Seeker {
    /// Who.
    pub user: UserId,
    /// Their profile, shared with the user record.
    pub profile: Arc<Profile>,
    /// What they ask of a partner.
    pub prefs: Arc<Preferences>,
    /// When this search began (kept when preferences change mid-search).
    pub since: Instant,
}

/// The queue and its pairing rule.
pub trait Matchmaker: Send {
    /// Offers `seeker` to the queue. Returns the waiting user it is paired with (who leaves the
    /// queue), or `None` after queueing `seeker`. The seeker must not be queued already.
    fn offer(&mut self, seeker: Seeker) -> Option<Seeker>;
    /// Takes a user out of the queue.
    fn remove(&mut self, user: &str) -> Option<Seeker>;
    /// The queued entry of `user`.
    fn get(&self, user: &str) -> Option<&Seeker>;
    /// How many users wait.
    fn len(&self) -> usize;
    /// True when nobody waits.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every waiting user, longest-waiting first: the order of `queue-status` positions.
    fn waiting(&self) -> Box<dyn Iterator<Item = &Seeker> + '_>;
}

/// First come, first served among compatible users: a newcomer is paired with the
/// longest-waiting user whose hard filters and its own accept each other.
///
/// Cost is linear in the queue length in the worst case (nobody compatible); the indexed engine
/// of the matchmaking issue replaces it.
#[derive(Debug, Default)]
pub struct FifoMatchmaker {
    order: BTreeMap<(Instant, u64), UserId>,
    entries: HashMap<UserId, ((Instant, u64), Seeker)>,
    seq: u64,
}

impl FifoMatchmaker {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Matchmaker for FifoMatchmaker {
    fn offer(&mut self, seeker: Seeker) -> Option<Seeker> {
        debug_assert!(!self.entries.contains_key(&seeker.user));
        let found = self.order.iter().find_map(|(key, id)| {
            let (_, other) = &self.entries[id];
            (other.user != seeker.user
                && compatible(
                    (&seeker.profile, &seeker.prefs),
                    (&other.profile, &other.prefs),
                ))
            .then_some(*key)
        });
        if let Some(key) = found {
            let id = self.order.remove(&key).expect("key from the order map");
            return self.entries.remove(&id).map(|(_, s)| s);
        }
        self.seq += 1;
        let key = (seeker.since, self.seq);
        self.order.insert(key, seeker.user.clone());
        self.entries.insert(seeker.user.clone(), (key, seeker));
        None
    }

    fn remove(&mut self, user: &str) -> Option<Seeker> {
        let (key, seeker) = self.entries.remove(user)?;
        self.order.remove(&key);
        Some(seeker)
    }

    fn get(&self, user: &str) -> Option<&Seeker> {
        self.entries.get(user).map(|(_, s)| s)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn waiting(&self) -> Box<dyn Iterator<Item = &Seeker> + '_> {
        Box::new(self.order.values().map(|id| &self.entries[id].1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::profile::GenderWish;
    use std::time::Duration;

    fn seeker(id: &str, at: Instant) -> Seeker {
        Seeker {
            user: id.into(),
            profile: Arc::new(Profile::default()),
            prefs: Arc::new(Preferences::default()),
            since: at,
        }
    }

    #[test]
    fn pairs_with_the_longest_waiting_compatible_user() {
        let t = Instant::now();
        let mut m = FifoMatchmaker::new();
        assert!(m.offer(seeker("a", t)).is_none());
        assert!(m.offer(seeker("b", t)).is_none_or(|s| &*s.user == "a"));
        assert_eq!(m.len(), 0);
        m.offer(seeker("c", t));
        let mut picky = seeker("d", t + Duration::from_millis(1));
        picky.prefs = Arc::new(Preferences {
            gender: GenderWish::Female,
            ..Default::default()
        });
        assert!(
            m.offer(picky).is_none(),
            "c has no gender: d's wish is not met"
        );
        assert_eq!(m.len(), 2);
        let e = m.offer(seeker("e", t + Duration::from_millis(2))).unwrap();
        assert_eq!(
            &*e.user, "c",
            "c waited longest among those compatible with e"
        );
        assert_eq!(m.waiting().map(|s| &*s.user).collect::<Vec<_>>(), ["d"]);
    }

    #[test]
    fn removed_users_are_never_paired() {
        let t = Instant::now();
        let mut m = FifoMatchmaker::new();
        m.offer(seeker("a", t));
        assert!(m.remove("a").is_some());
        assert!(m.remove("a").is_none());
        assert!(m.offer(seeker("b", t)).is_none());
        assert!(m.get("b").is_some());
    }

    #[test]
    fn a_requeued_search_keeps_its_place() {
        let t = Instant::now();
        let mut m = FifoMatchmaker::new();
        let picky = |id: &str, at| {
            let mut s = seeker(id, at);
            s.prefs = Arc::new(Preferences {
                gender: GenderWish::Male,
                ..Default::default()
            });
            s
        };
        m.offer(picky("a", t));
        m.offer(picky("b", t + Duration::from_millis(1)));
        let a = m.remove("a").unwrap();
        m.offer(picky("a", a.since));
        assert_eq!(
            m.waiting().map(|s| &*s.user).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
