//! The preference-aware matchmaker over the index: insert, find, take, relax.

use std::time::Duration;
use std::time::Instant;

use super::index::{
    Best, Bucket, Entry, Fifo, Interner, Probe, Rank, Syms, Traits, WishKey, accepted_slots,
    gender_slot,
};
use super::{Matchmaker, Pairing, Relaxation, Seeker};
use crate::core::blocks::Blocks;
use crate::model::UserId;
use crate::model::profile::{Gender, GenderWish, Preferences};
use rustc_hash::FxHashMap;

/// The preference-aware, indexed matchmaker: see the module documentation for the rule.
#[derive(Debug)]
pub struct PreferenceMatchmaker {
    pub(super) relax_after: Duration,
    pub(super) seq: u64,
    /// Entries by slot; list items point here, so checking one needs no hashing.
    pub(super) slab: Vec<Option<Entry>>,
    pub(super) free: Vec<u32>,
    pub(super) index: FxHashMap<UserId, u32>,
    /// Every waiting user in arrival order (stale items skipped, trimmed at the head).
    pub(super) order: Fifo,
    pub(super) order_stale: usize,
    /// Users with interests who have not relaxed yet, in arrival order: the only ones a tick's
    /// relaxation can concern (stale items are skipped and dropped at the head).
    pub(super) unrelaxed: Fifo,
    /// The live wish keys and their buckets, in a Vec because every search walks them all (they
    /// are few), with `group_of` to find one by key on insert and removal.
    pub(super) groups: Vec<(WishKey, [Bucket; 4])>,
    pub(super) group_of: FxHashMap<WishKey, usize>,
    pub(super) syms: Interner,
    pub(super) blocks: Blocks,
}

impl PreferenceMatchmaker {
    /// An empty queue whose users with interests relax after `relax_after`.
    pub fn new(relax_after: Duration) -> Self {
        PreferenceMatchmaker {
            relax_after,
            seq: 0,
            slab: Vec::new(),
            free: Vec::new(),
            index: FxHashMap::default(),
            order: Fifo::new(),
            unrelaxed: Fifo::new(),
            order_stale: 0,
            groups: Vec::new(),
            group_of: FxHashMap::default(),
            syms: Interner::default(),
            blocks: Blocks::default(),
        }
    }

    /// The same queue, keeping at most `max` blocks in all (0: no bound).
    pub fn with_max_blocks(mut self, max: usize) -> Self {
        self.blocks = Blocks::new(max);
        self
    }

    pub(super) fn entry(&self, slot: u32) -> &Entry {
        self.slab[slot as usize].as_ref().expect("a live slot")
    }

    pub(super) fn live(slab: &[Option<Entry>], (seq, slot): (u64, u32)) -> Option<&Entry> {
        slab[slot as usize].as_ref().filter(|e| e.seq == seq)
    }

    pub(super) fn blocked(&self, a: &str, b: &str, now: Instant) -> bool {
        self.blocks.blocked(a, b, now)
    }

    /// Whether a user with these preferences, searching since `since`, still insists on sharing
    /// an interest at `now`.
    pub(super) fn insists(&self, prefs: &Preferences, since: Instant, now: Instant) -> bool {
        !prefs.interests.is_empty() && now.saturating_duration_since(since) < self.relax_after
    }

    /// `own` is the seeker's slot when it is queued (relaxation), so the walks skip it.
    pub(super) fn probe<'a>(&self, s: &'a Seeker, own: Option<u32>) -> Probe<'a> {
        let known = |v: &Option<String>| v.as_deref().map(|x| self.syms.get(x).ok_or(()));
        Probe {
            s,
            own,
            languages: Syms::collect(s.profile.languages.iter().filter_map(|l| self.syms.get(l))),
            country: s.profile.country.as_deref().and_then(|c| self.syms.get(c)),
            language_wish: known(&s.prefs.language),
            country_wish: known(&s.prefs.country),
            interests: Syms::collect(s.prefs.interests.iter().filter_map(|t| self.syms.get(t))),
        }
    }

    /// The slot of the best waiting partner for `s`; `own` is its slot when it is queued itself.
    pub(super) fn find(&self, s: &Seeker, own: Option<u32>, now: Instant) -> Option<u32> {
        let p = self.probe(s, own);
        let traits = Traits {
            gender: s.profile.gender,
            age: s.profile.age,
            languages: &p.languages,
            country: p.country,
        };
        let s_insists = self.insists(&s.prefs, s.since, now);
        let mut best = Best::default();
        // The buckets of users whose wishes the seeker meets, and whose own gender it accepts.
        let buckets = self
            .groups
            .iter()
            .filter(|(key, _)| key.accepts(&traits))
            .flat_map(|(_, group)| accepted_slots(s.prefs.gender).iter().map(|&i| &group[i]))
            .filter(|b| b.live > 0);
        // Sharing an interest ranks first: walk those lists before any other, so that a hit
        // makes every list of partners who need not share irrelevant.
        let mut others: smallvec::SmallVec<[&Fifo; 32]> = smallvec::SmallVec::new();
        for b in buckets {
            for tag in p.interests.iter() {
                if let Some(list) = b.by_interest.get(tag) {
                    self.walk(list, &p, now, true, &mut best);
                }
            }
            if s_insists {
                continue;
            }
            // Partners that need not share: only those the seeker's own wishes select.
            let lists = match (p.country_wish, p.language_wish) {
                (Some(Ok(c)), _) => b.by_country.get(&c),
                (Some(Err(())), _) | (None, Some(Err(()))) => None,
                (None, Some(Ok(l))) => b.by_language.get(&l),
                (None, None) => Some(&b.all),
            };
            if let Some(lists) = lists {
                others.extend(
                    [&lists.plain, &lists.keen]
                        .into_iter()
                        .filter(|l| !l.is_empty()),
                );
            }
        }
        if best.new.is_some_and(|(r, _)| r.shares) {
            return best.pick();
        }
        // Oldest heads first: once a candidate is found, lists whose head is younger are skipped
        // without reading a single entry.
        others.sort_unstable_by_key(|l| l.front().map(|&(seq, _)| seq));
        for list in others {
            self.walk(list, &p, now, false, &mut best);
        }
        best.pick()
    }

    /// Walks `list` from its oldest entry to the first user the seeker may pair with and offers
    /// it to `best`. A previous partner is offered as the last resort and the walk goes on.
    pub(super) fn walk(
        &self,
        list: &Fifo,
        p: &Probe<'_>,
        now: Instant,
        shares: bool,
        best: &mut Best,
    ) {
        let s = p.s;
        for &(seq, slot) in list {
            // Items come oldest first: none from here on can beat the best found so far.
            if best.new.is_some_and(|(r, _)| {
                (r.shares && !shares) || (r.shares == shares && seq > r.older.0)
            }) {
                return;
            }
            let Some(e) = Self::live(&self.slab, (seq, slot)) else {
                continue;
            };
            let w = &e.seeker;
            if p.own == Some(slot) {
                continue;
            }
            // `insists`, from the entry's own copy of whether it listed interests.
            if !shares && e.keen() && now.saturating_duration_since(w.since) < self.relax_after {
                // Only keen lists hold insisting users, and from here on every one insists.
                break;
            }
            if !Self::wishes_met(p, e) || self.blocked(&s.user, &w.user, now) {
                continue;
            }
            let previous =
                s.previous.as_ref() == Some(&w.user) || w.previous.as_ref() == Some(&s.user);
            let rank = Rank {
                shares,
                older: std::cmp::Reverse(seq),
            };
            best.offer(rank, slot, previous);
            if !previous {
                return;
            }
        }
    }

    /// Whether the seeker's hard filters accept a waiting entry (the interned form of
    /// [`Preferences::accepts`]: integers compared, no strings).
    pub(super) fn wishes_met(p: &Probe<'_>, e: &Entry) -> bool {
        let wish = &p.s.prefs;
        let gender = match wish.gender {
            GenderWish::Any => true,
            GenderWish::Male => e.gender == Some(Gender::Male),
            GenderWish::Female => e.gender == Some(Gender::Female),
        };
        // A wished value no waiting user holds (`Err`) is met by nobody.
        gender
            && p.language_wish
                .is_none_or(|l| l.is_ok_and(|l| e.languages.contains(&l)))
            && p.country_wish
                .is_none_or(|c| c.is_ok_and(|c| e.country == Some(c)))
            && wish
                .age_range
                .is_none_or(|(lo, hi)| e.age.is_some_and(|a| (lo..=hi).contains(&a)))
    }

    pub(super) fn insert(&mut self, s: Seeker, now: Instant) {
        self.seq += 1;
        let seq = self.seq;
        let syms = &mut self.syms;
        let languages = Syms::collect(s.profile.languages.iter().map(|l| syms.intern(l)));
        let country = s.profile.country.as_deref().map(|c| syms.intern(c));
        let interests = Syms::collect(s.prefs.interests.iter().map(|t| syms.intern(t)));
        let wish = WishKey {
            gender: s.prefs.gender,
            language: s.prefs.language.as_deref().map(|l| syms.intern(l)),
            country: s.prefs.country.as_deref().map(|c| syms.intern(c)),
            age: s.prefs.age_range,
        };
        let keen = !interests.is_empty();
        let relaxed = keen && !self.insists(&s.prefs, s.since, now);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slab.push(None);
            (self.slab.len() - 1) as u32
        });
        let g = *self.group_of.entry(wish).or_insert_with(|| {
            self.groups.push((wish, Default::default()));
            self.groups.len() - 1
        });
        let b = &mut self.groups[g].1[gender_slot(s.profile.gender)];
        let item = (seq, slot);
        b.all.pick(keen).push_back(item);
        for l in languages.iter() {
            b.by_language
                .entry(*l)
                .or_default()
                .pick(keen)
                .push_back(item);
        }
        if let Some(c) = country {
            b.by_country
                .entry(c)
                .or_default()
                .pick(keen)
                .push_back(item);
        }
        for t in interests.iter() {
            b.by_interest.entry(*t).or_default().push_back(item);
        }
        let e = Entry {
            gender: s.profile.gender,
            age: s.profile.age,
            seeker: s,
            seq,
            relaxed,
            wish,
            languages,
            country,
            interests,
        };
        b.live += 1;
        b.items += e.items();
        self.order.push_back((seq, slot));
        if keen && !relaxed {
            self.unrelaxed.push_back((seq, slot));
        }
        self.index.insert(e.seeker.user.clone(), slot);
        self.slab[slot as usize] = Some(e);
    }

    /// Takes a user out. Its list items turn stale; the heads of its own lists are trimmed, and
    /// a bucket whose stale items outnumber its live ones is compacted, so memory follows the
    /// live queue.
    pub(super) fn take(&mut self, user: &str) -> Option<Entry> {
        let slot = self.index.remove(user)?;
        let e = self.slab[slot as usize]
            .take()
            .expect("indexed slots are live");
        self.free.push(slot);
        self.order_stale += 1;
        let slab = &self.slab;
        if self.order_stale > self.index.len() + 64 {
            self.order.retain(|i| Self::live(slab, *i).is_some());
            self.order_stale = 0;
        } else {
            while self
                .order
                .front()
                .is_some_and(|i| Self::live(slab, *i).is_none())
            {
                self.order.pop_front();
                self.order_stale -= 1;
            }
        }
        let g = self.group_of[&e.wish];
        let group = &mut self.groups[g].1;
        let b = &mut group[gender_slot(e.seeker.profile.gender)];
        b.live -= 1;
        b.items -= e.items();
        b.stale += e.items();
        if b.live == 0 {
            *b = Bucket::default();
            if group.iter().all(|b| b.live == 0) {
                self.group_of.remove(&e.wish);
                self.groups.swap_remove(g);
                if let Some((moved, _)) = self.groups.get(g) {
                    self.group_of.insert(*moved, g);
                }
            }
            self.release_syms(&e);
            return Some(e);
        }
        let slab = &self.slab;
        let live = |i: &(u64, u32)| Self::live(slab, *i).is_some();
        let trim = |f: &mut Fifo| {
            while f.front().is_some_and(|i| !live(i)) {
                f.pop_front();
            }
        };
        if b.stale > b.items + 64 {
            let lists = std::iter::once(&mut b.all)
                .chain(b.by_language.values_mut())
                .chain(b.by_country.values_mut());
            for l in lists {
                l.plain.retain(live);
                l.keen.retain(live);
            }
            for f in b.by_interest.values_mut() {
                f.retain(live);
            }
            b.by_language
                .retain(|_, l| !(l.plain.is_empty() && l.keen.is_empty()));
            b.by_country
                .retain(|_, l| !(l.plain.is_empty() && l.keen.is_empty()));
            b.by_interest.retain(|_, f| !f.is_empty());
            b.stale = 0;
        } else {
            let keen = e.keen();
            trim(b.all.pick(keen));
            for l in e.languages.iter() {
                if let Some(x) = b.by_language.get_mut(l) {
                    trim(x.pick(keen));
                }
            }
            if let Some(x) = e.country.and_then(|c| b.by_country.get_mut(&c)) {
                trim(x.pick(keen));
            }
            for t in e.interests.iter() {
                if let Some(f) = b.by_interest.get_mut(t) {
                    trim(f);
                }
            }
        }
        self.release_syms(&e);
        Some(e)
    }

    /// Drops a departed entry's holds on its strings. Lists still keyed by a freed number hold
    /// only stale items, so reusing the number for another string is harmless.
    pub(super) fn release_syms(&mut self, e: &Entry) {
        let held = e.languages.iter().chain(e.interests.iter()).copied();
        let held = held
            .chain(e.country)
            .chain(e.wish.language)
            .chain(e.wish.country);
        for id in held {
            self.syms.release(id);
        }
    }

    /// Distinct strings held by waiting users (for tests of memory bounds).
    #[cfg(test)]
    pub(super) fn interned(&self) -> usize {
        self.syms.len()
    }

    pub(super) fn pair(&mut self, waiting_slot: u32, seeker: Seeker) -> Pairing {
        let user = self.entry(waiting_slot).seeker.user.clone();
        let waiting = self.take(&user).expect("found in the queue").seeker;
        let common_interests = seeker.prefs.common_interests(&waiting.prefs);
        Pairing {
            waiting,
            seeker,
            common_interests,
        }
    }
}

impl Matchmaker for PreferenceMatchmaker {
    fn offer(&mut self, seeker: Seeker, now: Instant) -> Option<Pairing> {
        debug_assert!(!self.index.contains_key(&seeker.user));
        // A newcomer is not queued: no slot of its own to skip (and no index look-up for one).
        match self.find(&seeker, None, now) {
            Some(partner) => Some(self.pair(partner, seeker)),
            None => {
                self.insert(seeker, now);
                None
            }
        }
    }

    fn remove(&mut self, user: &str) -> Option<Seeker> {
        self.take(user).map(|e| e.seeker)
    }

    fn get(&self, user: &str) -> Option<&Seeker> {
        self.index.get(user).map(|s| &self.entry(*s).seeker)
    }

    fn is_relaxed(&self, user: &str) -> bool {
        self.index.get(user).is_some_and(|s| self.entry(*s).relaxed)
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn waiting(&self) -> Box<dyn Iterator<Item = &Seeker> + '_> {
        Box::new(
            self.order
                .iter()
                .filter_map(|i| Self::live(&self.slab, *i))
                .map(|e| &e.seeker),
        )
    }

    fn relax(&mut self, now: Instant) -> Relaxation {
        let mut out = Relaxation::default();
        self.expire_blocks(now);
        // Arrival order is waiting order, so the users due are a prefix of the unrelaxed ones:
        // the work is the number due, not the number waiting.
        let mut due: Vec<u32> = Vec::new();
        while let Some(&(seq, slot)) = self.unrelaxed.front() {
            match Self::live(&self.slab, (seq, slot)) {
                Some(e) if e.relaxed => {}
                Some(e) if now.saturating_duration_since(e.seeker.since) < self.relax_after => {
                    break;
                }
                Some(_) => due.push(slot),
                // Left the queue meanwhile.
                None => {}
            }
            self.unrelaxed.pop_front();
        }
        for slot in due {
            // Paired earlier in this walk?
            let Some(e) = self.slab[slot as usize].as_mut().filter(|e| !e.relaxed) else {
                continue;
            };
            e.relaxed = true;
            let me = e.seeker.clone();
            out.relaxed.push(me.user.clone());
            if let Some(partner) = self.find(&me, Some(slot), now) {
                let me = self.take(&me.user).expect("present").seeker;
                out.pairs.push(self.pair(partner, me));
            }
        }
        out
    }

    fn block(&mut self, by: &UserId, other: &UserId, until: Instant) {
        self.blocks.add(by, other, until);
    }

    fn blocks(&self) -> usize {
        self.blocks.len()
    }
}

impl PreferenceMatchmaker {
    /// Forgets expired blocks.
    pub fn expire_blocks(&mut self, now: Instant) {
        self.blocks.expire(now);
    }
}
