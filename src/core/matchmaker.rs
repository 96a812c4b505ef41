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

use super::blocks::Blocks;
use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::UserId;
use crate::model::profile::{Gender, GenderWish, Preferences, Profile};

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
    /// shared queue, which already took it out there).
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

pub use super::blocks::MAX_BLOCKS_PER_USER;

/// A language, country or interest tag, interned: comparing and hashing it costs an integer's.
type Sym = u32;

/// The strings of waiting users' profiles and wishes, numbered and counted: a string is
/// forgotten (and its number reused) when the last waiting user holding it leaves, so clients
/// sending ever new interest tags cannot grow it beyond what the live queue holds.
#[derive(Debug, Default)]
struct Interner {
    ids: FxHashMap<Box<str>, Sym>,
    /// Per number: how many holders, and the string.
    slots: Vec<(u32, Option<Box<str>>)>,
    free: Vec<Sym>,
}

impl Interner {
    fn get(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).copied()
    }

    /// The number of `s`, counting one more holder.
    fn intern(&mut self, s: &str) -> Sym {
        let id = match self.ids.get(s) {
            Some(&id) => id,
            None => {
                let id = self.free.pop().unwrap_or_else(|| {
                    self.slots.push((0, None));
                    (self.slots.len() - 1) as Sym
                });
                self.slots[id as usize].1 = Some(s.into());
                self.ids.insert(s.into(), id);
                id
            }
        };
        self.slots[id as usize].0 += 1;
        id
    }

    /// One holder of `id` is gone.
    fn release(&mut self, id: Sym) {
        let slot = &mut self.slots[id as usize];
        slot.0 -= 1;
        if slot.0 == 0
            && let Some(name) = slot.1.take()
        {
            self.ids.remove(&name);
            self.free.push(id);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Up to ten symbols inline: a profile's languages or a search's interests (both capped at ten
/// by the protocol), kept without a heap allocation.
#[derive(Debug, Clone, Copy, Default)]
struct Syms {
    len: u8,
    ids: [Sym; 10],
}

impl Syms {
    fn collect(it: impl Iterator<Item = Sym>) -> Syms {
        let mut s = Syms::default();
        for id in it.take(10) {
            s.ids[s.len as usize] = id;
            s.len += 1;
        }
        s
    }

    fn as_slice(&self) -> &[Sym] {
        &self.ids[..self.len as usize]
    }
}

impl std::ops::Deref for Syms {
    type Target = [Sym];
    fn deref(&self) -> &[Sym] {
        self.as_slice()
    }
}

/// What a waiting user asks of a partner: the key of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct WishKey {
    gender: GenderWish,
    language: Option<Sym>,
    country: Option<Sym>,
    age: Option<(u8, u8)>,
}

/// A profile's interned attributes, as the wish keys test them.
struct Traits<'a> {
    gender: Option<Gender>,
    age: Option<u8>,
    languages: &'a [Sym],
    country: Option<Sym>,
}

impl WishKey {
    /// Whether users with these wishes accept a user with `t`.
    fn accepts(&self, t: &Traits<'_>) -> bool {
        let gender = match self.gender {
            GenderWish::Any => true,
            GenderWish::Male => t.gender == Some(Gender::Male),
            GenderWish::Female => t.gender == Some(Gender::Female),
        };
        gender
            && self.language.is_none_or(|l| t.languages.contains(&l))
            && self.country.is_none_or(|c| t.country == Some(c))
            && self
                .age
                .is_none_or(|(lo, hi)| t.age.is_some_and(|a| (lo..=hi).contains(&a)))
    }
}

/// Index of a user's own gender among a group's four sub-groups.
fn gender_slot(g: Option<Gender>) -> usize {
    match g {
        Some(Gender::Male) => 0,
        Some(Gender::Female) => 1,
        Some(Gender::Other) => 2,
        None => 3,
    }
}

/// The sub-groups a seeker's gender wish accepts.
fn accepted_slots(w: GenderWish) -> &'static [usize] {
    match w {
        GenderWish::Any => &[0, 1, 2, 3],
        GenderWish::Male => &[0],
        GenderWish::Female => &[1],
    }
}

/// An arrival-ordered list of `(seq, slot)`: an item is live while the entry in `slot` still
/// carries `seq`; departed users' items are skipped, and dropped when they reach the head.
type Fifo = VecDeque<(u64, u32)>;

/// One selection of users, split by whether they have interests. Users without interests never
/// insist on sharing one; users with interests arrive in order and relax in the same order, so
/// the relaxed ones are always a prefix of `keen` and a walk can stop at the first insisting one.
#[derive(Debug, Default)]
struct Lists {
    plain: Fifo,
    keen: Fifo,
}

impl Lists {
    fn pick(&mut self, keen: bool) -> &mut Fifo {
        if keen {
            &mut self.keen
        } else {
            &mut self.plain
        }
    }
}

/// Users of one wish key and one gender.
#[derive(Debug, Default)]
struct Bucket {
    all: Lists,
    by_language: FxHashMap<Sym, Lists>,
    by_country: FxHashMap<Sym, Lists>,
    by_interest: FxHashMap<Sym, Fifo>,
    /// Live members, to know when the bucket (and its wish key) can be dropped.
    live: usize,
    /// List items of live members, and items left behind by departed ones.
    items: usize,
    stale: usize,
}

#[derive(Debug)]
struct Entry {
    seeker: Seeker,
    seq: u64,
    /// Copies of the profile fields the walks read, so that a walk reads the entry alone and not
    /// the profile behind its `Arc` (a cache miss per candidate in a long queue).
    gender: Option<Gender>,
    age: Option<u8>,
    relaxed: bool,
    wish: WishKey,
    languages: Syms,
    country: Option<Sym>,
    interests: Syms,
}

impl Entry {
    fn keen(&self) -> bool {
        !self.interests.is_empty()
    }

    fn items(&self) -> usize {
        1 + self.languages.len() + usize::from(self.country.is_some()) + self.interests.len()
    }
}

/// The preference-aware, indexed matchmaker: see the module documentation for the rule.
#[derive(Debug)]
pub struct PreferenceMatchmaker {
    relax_after: Duration,
    seq: u64,
    /// Entries by slot; list items point here, so checking one needs no hashing.
    slab: Vec<Option<Entry>>,
    free: Vec<u32>,
    index: FxHashMap<UserId, u32>,
    /// Every waiting user in arrival order (stale items skipped, trimmed at the head).
    order: Fifo,
    order_stale: usize,
    /// Users with interests who have not relaxed yet, in arrival order: the only ones a tick's
    /// relaxation can concern (stale items are skipped and dropped at the head).
    unrelaxed: Fifo,
    /// The live wish keys and their buckets, in a Vec because every search walks them all (they
    /// are few), with `group_of` to find one by key on insert and removal.
    groups: Vec<(WishKey, [Bucket; 4])>,
    group_of: FxHashMap<WishKey, usize>,
    syms: Interner,
    blocks: Blocks,
}

/// How good a candidate is: sharing an interest first, then the longest wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    shares: bool,
    older: std::cmp::Reverse<u64>,
}

/// The best candidate seen so far, and the best previous partner (the last resort).
#[derive(Default)]
struct Best {
    new: Option<(Rank, u32)>,
    previous: Option<(Rank, u32)>,
}

impl Best {
    fn offer(&mut self, rank: Rank, slot: u32, previous: bool) {
        let best = if previous {
            &mut self.previous
        } else {
            &mut self.new
        };
        if best.is_none_or(|(r, _)| rank > r) {
            *best = Some((rank, slot));
        }
    }

    fn pick(self) -> Option<u32> {
        self.new.or(self.previous).map(|(_, s)| s)
    }
}

/// A seeker, with its strings looked up once for the whole search.
struct Probe<'a> {
    s: &'a Seeker,
    /// The seeker's own slot when it is queued (relaxation walks), to skip itself.
    own: Option<u32>,
    languages: Syms,
    country: Option<Sym>,
    /// The seeker's wished language and country; `Err` when no waiting user has that value.
    language_wish: Option<Result<Sym, ()>>,
    country_wish: Option<Result<Sym, ()>>,
    interests: Syms,
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

    fn entry(&self, slot: u32) -> &Entry {
        self.slab[slot as usize].as_ref().expect("a live slot")
    }

    fn live(slab: &[Option<Entry>], (seq, slot): (u64, u32)) -> Option<&Entry> {
        slab[slot as usize].as_ref().filter(|e| e.seq == seq)
    }

    fn blocked(&self, a: &str, b: &str, now: Instant) -> bool {
        self.blocks.blocked(a, b, now)
    }

    /// Whether a user with these preferences, searching since `since`, still insists on sharing
    /// an interest at `now`.
    fn insists(&self, prefs: &Preferences, since: Instant, now: Instant) -> bool {
        !prefs.interests.is_empty() && now.saturating_duration_since(since) < self.relax_after
    }

    /// `own` is the seeker's slot when it is queued (relaxation), so the walks skip it.
    fn probe<'a>(&self, s: &'a Seeker, own: Option<u32>) -> Probe<'a> {
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
    fn find(&self, s: &Seeker, own: Option<u32>, now: Instant) -> Option<u32> {
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
    fn walk(&self, list: &Fifo, p: &Probe<'_>, now: Instant, shares: bool, best: &mut Best) {
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
    fn wishes_met(p: &Probe<'_>, e: &Entry) -> bool {
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

    fn insert(&mut self, s: Seeker, now: Instant) {
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
    fn take(&mut self, user: &str) -> Option<Entry> {
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
    fn release_syms(&mut self, e: &Entry) {
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
    fn interned(&self) -> usize {
        self.syms.len()
    }

    fn pair(&mut self, waiting_slot: u32, seeker: Seeker) -> Pairing {
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

#[cfg(test)]
#[path = "matchmaker_tests.rs"]
mod tests;
