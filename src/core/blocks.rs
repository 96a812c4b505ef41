//! Who must not meet whom, and until when: the blocks of `block-user` and `report-user`.
//!
//! Bounded by construction: each blocker keeps at most [`MAX_BLOCKS_PER_USER`] and the whole
//! set at most a configured total, the oldest going first either way. Expiry walks a time-ordered
//! index, so its work is what expires, not what is kept (a scan of every block on every tick
//! cost 210 ms of CPU every 10 s with a million blocks, under the core lock).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::UserId;

/// Most blocks one user keeps; the oldest is forgotten first.
pub(crate) const MAX_BLOCKS_PER_USER: usize = 256;

/// The default bound on all blocks together (`MAX_BLOCKS`).
pub(crate) const DEFAULT_MAX_BLOCKS: usize = 100_000;

/// When a block ends, and a number that makes the key unique (blocks made in the same instant).
type Key = (Instant, u64);

/// Every live block.
#[derive(Debug)]
pub(crate) struct Blocks {
    /// Most blocks kept in all; 0 is no bound.
    max: usize,
    seq: u64,
    /// Each blocker's blocks, oldest first.
    by: FxHashMap<UserId, VecDeque<(UserId, Key)>>,
    /// Every block by its end: the first entry is the next to expire (and, since every block
    /// lasts the same time, the oldest).
    ends: BTreeMap<Key, UserId>,
}

impl Default for Blocks {
    fn default() -> Self {
        Blocks::new(DEFAULT_MAX_BLOCKS)
    }
}

impl Blocks {
    /// No blocks, and room for at most `max` (0: no bound).
    pub(crate) fn new(max: usize) -> Blocks {
        Blocks {
            max,
            seq: 0,
            by: FxHashMap::default(),
            ends: BTreeMap::new(),
        }
    }

    /// How many blocks are kept.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    #[cfg(test)]
    /// Whether none is.
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// `by` does not want to meet `other` until `until`. Blocking again renews the block.
    pub(crate) fn add(&mut self, by: &UserId, other: &UserId, until: Instant) {
        let list = self.by.entry(by.clone()).or_default();
        if let Some(i) = list.iter().position(|(u, _)| u == other) {
            let (_, key) = list.remove(i).expect("found");
            self.ends.remove(&key);
        } else if list.len() >= MAX_BLOCKS_PER_USER
            && let Some((_, key)) = list.pop_front()
        {
            self.ends.remove(&key);
        }
        let key = (until, self.seq);
        self.seq += 1;
        list.push_back((other.clone(), key));
        self.ends.insert(key, by.clone());
        while self.max != 0 && self.ends.len() > self.max {
            self.forget_first();
        }
    }

    /// Whether either of `a` and `b` blocked the other, at `now`.
    pub(crate) fn blocked(&self, a: &str, b: &str, now: Instant) -> bool {
        if self.ends.is_empty() {
            return false;
        }
        let one = |x: &str, y: &str| {
            self.by
                .get(x)
                .is_some_and(|l| l.iter().any(|(u, (until, _))| **u == *y && *until > now))
        };
        one(a, b) || one(b, a)
    }

    /// The live blocks `by` made, and when each ends: what a cluster node tells the node that
    /// matches for the cluster along with `by`'s search.
    pub(crate) fn of(&self, by: &str, now: Instant) -> Vec<(UserId, Instant)> {
        self.by.get(by).map_or_else(Vec::new, |l| {
            l.iter()
                .filter(|(_, (until, _))| *until > now)
                .map(|(u, (until, _))| (u.clone(), *until))
                .collect()
        })
    }

    /// Forgets the blocks that ended by `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while self
            .ends
            .first_key_value()
            .is_some_and(|((until, _), _)| *until <= now)
        {
            self.forget_first();
        }
    }

    /// Forgets the block that ends first.
    fn forget_first(&mut self) {
        let Some((key, by)) = self.ends.pop_first() else {
            return;
        };
        if let Some(list) = self.by.get_mut(&by) {
            // Blocks of one user end in the order they were made: it is nearly always the front.
            if let Some(i) = list.iter().position(|(_, k)| *k == key) {
                list.remove(i);
            }
            if list.is_empty() {
                self.by.remove(&by);
            }
        }
    }

    #[cfg(test)]
    /// Checks that the two indexes hold the same blocks (for tests).
    pub(crate) fn check(&self) -> Result<(), String> {
        let listed: usize = self.by.values().map(VecDeque::len).sum();
        if listed != self.ends.len() {
            return Err(format!(
                "{listed} blocks by user, {} by end",
                self.ends.len()
            ));
        }
        for (by, list) in &self.by {
            if list.is_empty() {
                return Err(format!("{by} keeps an empty list"));
            }
            for (_, key) in list {
                if self.ends.get(key) != Some(by) {
                    return Err(format!("a block of {by} is missing from the index"));
                }
            }
        }
        if self.max != 0 && self.ends.len() > self.max {
            return Err(format!(
                "{} blocks, more than {}",
                self.ends.len(),
                self.max
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn id(s: &str) -> UserId {
        UserId::from(s)
    }

    #[test]
    fn blocks_hold_both_ways_until_they_end() {
        let t0 = Instant::now();
        let mut b = Blocks::new(10);
        b.add(&id("a"), &id("b"), t0 + Duration::from_secs(10));
        assert!(b.blocked("a", "b", t0) && b.blocked("b", "a", t0));
        assert!(!b.blocked("a", "c", t0));
        assert!(!b.blocked("a", "b", t0 + Duration::from_secs(10)));
        b.expire(t0 + Duration::from_secs(9));
        assert_eq!(b.len(), 1);
        b.expire(t0 + Duration::from_secs(10));
        assert!(b.is_empty());
        assert!(b.by.is_empty(), "no list is kept for a user without blocks");
    }

    #[test]
    fn the_total_is_bounded_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let mut b = Blocks::new(3);
        for i in 0..5u64 {
            b.add(
                &id(&format!("u{i}")),
                &id("x"),
                t0 + Duration::from_secs(100 + i),
            );
        }
        assert_eq!(b.len(), 3);
        assert!(!b.blocked("u0", "x", t0) && !b.blocked("u1", "x", t0));
        assert!(b.blocked("u2", "x", t0) && b.blocked("u4", "x", t0));
        b.check().unwrap();
    }

    #[test]
    fn one_user_keeps_at_most_its_share() {
        let t0 = Instant::now();
        let mut b = Blocks::new(0);
        for i in 0..MAX_BLOCKS_PER_USER + 10 {
            b.add(
                &id("a"),
                &id(&format!("v{i}")),
                t0 + Duration::from_secs(60),
            );
        }
        assert_eq!(b.len(), MAX_BLOCKS_PER_USER);
        assert!(!b.blocked("a", "v0", t0));
        assert!(b.blocked("a", &format!("v{}", MAX_BLOCKS_PER_USER + 9), t0));
        b.check().unwrap();
    }

    #[test]
    fn expiring_a_few_of_many_blocks_keeps_the_rest() {
        let t0 = Instant::now();
        let mut b = Blocks::new(0);
        let users: Vec<UserId> = (0..4000).map(|i| id(&format!("u{i}"))).collect();
        for i in 0..200_000usize {
            let until = t0 + Duration::from_millis(1 + i as u64);
            b.add(&users[i % 4000], &users[(i / 4000 + 1 + i) % 4000], until);
        }
        let kept = b.len();
        assert_eq!(kept, 200_000);
        b.expire(t0 + Duration::from_millis(1000));
        assert_eq!(b.len(), kept - 1000);
        b.check().unwrap();
    }

    proptest! {
        #[test]
        fn the_indexes_agree_with_a_plain_list(ops in proptest::collection::vec((0u8..6, 0u8..6, 1u64..50, any::<bool>()), 1..200)) {
            let t0 = Instant::now();
            let mut b = Blocks::new(8);
            // The reference: (by, other, until), newest last.
            let mut model: Vec<(u8, u8, u64)> = Vec::new();
            let mut clock = 0u64;
            for (by, other, ttl, tick) in ops {
                if tick {
                    clock += 5;
                    b.expire(t0 + Duration::from_millis(clock));
                    model.retain(|e| e.2 > clock);
                    continue;
                }
                if by == other { continue; }
                let until = clock + ttl;
                b.add(&id(&by.to_string()), &id(&other.to_string()), t0 + Duration::from_millis(until));
                model.retain(|e| !(e.0 == by && e.1 == other));
                model.push((by, other, until));
                while model.len() > 8 {
                    // The one that ends first goes (the first made among equals).
                    let first = model.iter().enumerate().min_by_key(|(i, e)| (e.2, *i)).map(|(i, _)| i).unwrap();
                    model.remove(first);
                }
                b.check().map_err(TestCaseError::fail)?;
                prop_assert_eq!(b.len(), model.len());
            }
            let now = t0 + Duration::from_millis(clock);
            for x in 0u8..6 {
                for y in 0u8..6 {
                    let want = model.iter().any(|e| ((e.0 == x && e.1 == y) || (e.0 == y && e.1 == x)) && e.2 > clock);
                    prop_assert_eq!(b.blocked(&x.to_string(), &y.to_string(), now), want);
                }
            }
        }
    }
}
