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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::UserId;
use super::profile::{Gender, GenderWish, Preferences, Profile};

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
    /// The queued entry of `user`.
    fn get(&self, user: &str) -> Option<&Seeker>;
    /// Whether a waiting user stopped insisting on a shared interest.
    fn is_relaxed(&self, user: &str) -> bool;
    /// How many users wait.
    fn len(&self) -> usize;
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
}

/// Most blocks one user keeps; the oldest is forgotten first.
pub const MAX_BLOCKS_PER_USER: usize = 256;

/// What a waiting user asks of a partner: the key of its group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WishKey {
    gender: GenderWish,
    language: Option<String>,
    country: Option<String>,
    age: Option<(u8, u8)>,
}

impl WishKey {
    fn of(p: &Preferences) -> WishKey {
        WishKey {
            gender: p.gender,
            language: p.language.clone(),
            country: p.country.clone(),
            age: p.age_range,
        }
    }

    /// Whether users with these wishes accept `profile`.
    fn accepts(&self, profile: &Profile) -> bool {
        let gender = match self.gender {
            GenderWish::Any => true,
            GenderWish::Male => profile.gender == Some(Gender::Male),
            GenderWish::Female => profile.gender == Some(Gender::Female),
        };
        gender
            && self
                .language
                .as_ref()
                .is_none_or(|l| profile.languages.contains(l))
            && self
                .country
                .as_ref()
                .is_none_or(|c| profile.country.as_ref() == Some(c))
            && self
                .age
                .is_none_or(|(lo, hi)| profile.age.is_some_and(|a| (lo..=hi).contains(&a)))
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

/// An arrival-ordered list of `(seq, user)`; entries whose `seq` no longer matches the user's
/// queue entry are departed and skipped (and dropped when at the head).
type Fifo = VecDeque<(u64, UserId)>;

/// One selection of users, split by whether they have interests. Users without interests never
/// insist on sharing one; users with interests arrive in order and relax in the same order, so
/// the relaxed ones are always a prefix of `keen` and a walk can stop at the first insisting one.
#[derive(Debug, Default)]
struct Lists {
    plain: Fifo,
    keen: Fifo,
}

impl Lists {
    fn push(&mut self, item: (u64, UserId), keen: bool) {
        if keen {
            self.keen.push_back(item);
        } else {
            self.plain.push_back(item);
        }
    }
}

/// Users of one wish key and one gender.
#[derive(Debug, Default)]
struct Bucket {
    all: Lists,
    by_language: HashMap<String, Lists>,
    by_country: HashMap<String, Lists>,
    by_interest: HashMap<String, Fifo>,
    /// Live members, to know when the bucket (and its wish key) can be dropped.
    live: usize,
    /// List items of live members, and items left behind by departed ones.
    items: usize,
    stale: usize,
}

impl Bucket {
    fn every_fifo(&mut self) -> impl Iterator<Item = &mut Fifo> {
        let lists = std::iter::once(&mut self.all)
            .chain(self.by_language.values_mut())
            .chain(self.by_country.values_mut())
            .flat_map(|l| [&mut l.plain, &mut l.keen]);
        lists.chain(self.by_interest.values_mut())
    }
}

#[derive(Debug)]
struct Entry {
    seeker: Seeker,
    seq: u64,
    relaxed: bool,
    wish: WishKey,
}

impl Entry {
    fn items(&self) -> usize {
        let s = &self.seeker;
        1 + s.profile.languages.len()
            + usize::from(s.profile.country.is_some())
            + s.prefs.interests.len()
    }
}

/// The preference-aware, indexed matchmaker: see the module documentation for the rule.
#[derive(Debug)]
pub struct PreferenceMatchmaker {
    relax_after: Duration,
    seq: u64,
    entries: HashMap<UserId, Entry>,
    order: BTreeMap<u64, UserId>,
    groups: HashMap<WishKey, [Bucket; 4]>,
    /// Live wish keys, for the seeker's walk (a Vec: few keys, walked often).
    keys: Vec<WishKey>,
    blocks: HashMap<UserId, VecDeque<(UserId, Instant)>>,
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
    new: Option<(Rank, UserId)>,
    previous: Option<(Rank, UserId)>,
}

impl Best {
    fn offer(&mut self, rank: Rank, user: &UserId, previous: bool) {
        let slot = if previous {
            &mut self.previous
        } else {
            &mut self.new
        };
        if slot.as_ref().is_none_or(|(r, _)| rank > *r) {
            *slot = Some((rank, user.clone()));
        }
    }

    fn pick(self) -> Option<UserId> {
        self.new.or(self.previous).map(|(_, u)| u)
    }
}

impl PreferenceMatchmaker {
    /// An empty queue whose users with interests relax after `relax_after`.
    pub fn new(relax_after: Duration) -> Self {
        PreferenceMatchmaker {
            relax_after,
            seq: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            groups: HashMap::new(),
            keys: Vec::new(),
            blocks: HashMap::new(),
        }
    }

    fn blocked(&self, a: &str, b: &str, now: Instant) -> bool {
        let one = |x: &str, y: &str| {
            self.blocks
                .get(x)
                .is_some_and(|l| l.iter().any(|(u, until)| **u == *y && *until > now))
        };
        one(a, b) || one(b, a)
    }

    /// Whether a user with these preferences, searching since `since`, still insists on sharing
    /// an interest at `now`.
    fn insists(&self, prefs: &Preferences, since: Instant, now: Instant) -> bool {
        !prefs.interests.is_empty() && now.saturating_duration_since(since) < self.relax_after
    }

    /// The best waiting partner for `s` (who may itself be queued: it is skipped).
    fn find(&self, s: &Seeker, now: Instant) -> Option<UserId> {
        let s_insists = self.insists(&s.prefs, s.since, now);
        let mut best = Best::default();
        for key in &self.keys {
            if !key.accepts(&s.profile) {
                continue;
            }
            let group = &self.groups[key];
            for &slot in accepted_slots(s.prefs.gender) {
                let b = &group[slot];
                if b.live == 0 {
                    continue;
                }
                for tag in &s.prefs.interests {
                    if let Some(list) = b.by_interest.get(tag) {
                        self.walk(list, s, now, true, &mut best);
                    }
                }
                if s_insists {
                    continue;
                }
                // Partners that need not share: only those the seeker's own wishes select.
                let lists = match (&s.prefs.country, &s.prefs.language) {
                    (Some(c), _) => b.by_country.get(c),
                    (None, Some(l)) => b.by_language.get(l),
                    (None, None) => Some(&b.all),
                };
                if let Some(lists) = lists {
                    self.walk(&lists.plain, s, now, false, &mut best);
                    self.walk(&lists.keen, s, now, false, &mut best);
                }
            }
        }
        best.pick()
    }

    /// Walks `list` from its oldest entry to the first user `s` may pair with and offers it to
    /// `best`. A previous partner is offered as the last resort and the walk goes on.
    fn walk(&self, list: &Fifo, s: &Seeker, now: Instant, shares: bool, best: &mut Best) {
        for (seq, user) in list {
            let Some(e) = self.entries.get(user).filter(|e| e.seq == *seq) else {
                continue;
            };
            let w = &e.seeker;
            if w.user == s.user {
                continue;
            }
            if !shares && self.insists(&w.prefs, w.since, now) {
                // Only keen lists hold insisting users, and from here on every one insists.
                break;
            }
            if !s.prefs.accepts(&w.profile) || self.blocked(&s.user, &w.user, now) {
                continue;
            }
            let previous =
                s.previous.as_ref() == Some(&w.user) || w.previous.as_ref() == Some(&s.user);
            let rank = Rank {
                shares,
                older: std::cmp::Reverse(*seq),
            };
            best.offer(rank, user, previous);
            if !previous {
                return;
            }
        }
    }

    fn insert(&mut self, s: Seeker, now: Instant) {
        self.seq += 1;
        let seq = self.seq;
        let wish = WishKey::of(&s.prefs);
        let keen = !s.prefs.interests.is_empty();
        let relaxed = keen && !self.insists(&s.prefs, s.since, now);
        if !self.groups.contains_key(&wish) {
            self.keys.push(wish.clone());
        }
        let group = self.groups.entry(wish.clone()).or_default();
        let b = &mut group[gender_slot(s.profile.gender)];
        let item = (seq, s.user.clone());
        b.all.push(item.clone(), keen);
        for l in &s.profile.languages {
            b.by_language
                .entry(l.clone())
                .or_default()
                .push(item.clone(), keen);
        }
        if let Some(c) = &s.profile.country {
            b.by_country
                .entry(c.clone())
                .or_default()
                .push(item.clone(), keen);
        }
        for t in &s.prefs.interests {
            b.by_interest
                .entry(t.clone())
                .or_default()
                .push_back(item.clone());
        }
        let e = Entry {
            relaxed,
            seeker: s,
            seq,
            wish,
        };
        b.live += 1;
        b.items += e.items();
        self.order.insert(seq, e.seeker.user.clone());
        self.entries.insert(e.seeker.user.clone(), e);
    }

    /// Takes a user out. Its list items turn stale; they are dropped when they reach a head, or
    /// all at once when stale items outnumber live ones, so memory follows the live queue.
    fn take(&mut self, user: &str) -> Option<Entry> {
        let e = self.entries.remove(user)?;
        self.order.remove(&e.seq);
        let group = self
            .groups
            .get_mut(&e.wish)
            .expect("a live entry's group exists");
        let b = &mut group[gender_slot(e.seeker.profile.gender)];
        b.live -= 1;
        b.items -= e.items();
        b.stale += e.items();
        if b.live == 0 {
            *b = Bucket::default();
            if group.iter().all(|b| b.live == 0) {
                self.groups.remove(&e.wish);
                self.keys.retain(|k| *k != e.wish);
            }
        } else {
            let entries = &self.entries;
            let live = |(seq, u): &(u64, UserId)| entries.get(u).is_some_and(|x| x.seq == *seq);
            if b.stale > b.items + 64 {
                for f in b.every_fifo() {
                    f.retain(live);
                }
                b.by_language
                    .retain(|_, l| !(l.plain.is_empty() && l.keen.is_empty()));
                b.by_country
                    .retain(|_, l| !(l.plain.is_empty() && l.keen.is_empty()));
                b.by_interest.retain(|_, f| !f.is_empty());
                b.stale = 0;
            } else {
                for f in b.every_fifo() {
                    while f.front().is_some_and(|i| !live(i)) {
                        f.pop_front();
                    }
                }
            }
        }
        Some(e)
    }

    fn pair(&mut self, waiting_user: &UserId, seeker: Seeker) -> Pairing {
        let waiting = self.take(waiting_user).expect("found in the queue").seeker;
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
        debug_assert!(!self.entries.contains_key(&seeker.user));
        match self.find(&seeker, now) {
            Some(partner) => Some(self.pair(&partner, seeker)),
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
        self.entries.get(user).map(|e| &e.seeker)
    }

    fn is_relaxed(&self, user: &str) -> bool {
        self.entries.get(user).is_some_and(|e| e.relaxed)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn waiting(&self) -> Box<dyn Iterator<Item = &Seeker> + '_> {
        Box::new(self.order.values().map(|u| &self.entries[u].seeker))
    }

    fn relax(&mut self, now: Instant) -> Relaxation {
        let mut out = Relaxation::default();
        // Arrival order is waiting order, so the users due are a prefix of the keen ones.
        let due: Vec<UserId> = self
            .order
            .values()
            .map(|u| &self.entries[u])
            .filter(|e| !e.relaxed && !e.seeker.prefs.interests.is_empty())
            .take_while(|e| now.saturating_duration_since(e.seeker.since) >= self.relax_after)
            .map(|e| e.seeker.user.clone())
            .collect();
        for user in due {
            let Some(e) = self.entries.get_mut(&user) else {
                continue; // paired earlier in this walk
            };
            e.relaxed = true;
            out.relaxed.push(user.clone());
            let me = e.seeker.clone();
            if let Some(partner) = self.find(&me, now) {
                let me = self.take(&user).expect("present").seeker;
                out.pairs.push(self.pair(&partner, me));
            }
        }
        out
    }

    fn block(&mut self, by: &UserId, other: &UserId, until: Instant) {
        let list = self.blocks.entry(by.clone()).or_default();
        list.retain(|(u, _)| u != other);
        if list.len() >= MAX_BLOCKS_PER_USER {
            list.pop_front();
        }
        list.push_back((other.clone(), until));
    }
}

impl PreferenceMatchmaker {
    /// Forgets expired blocks.
    pub fn expire_blocks(&mut self, now: Instant) {
        self.blocks.retain(|_, l| {
            l.retain(|(_, until)| *until > now);
            !l.is_empty()
        });
    }
}

#[cfg(test)]
#[path = "matchmaker_tests.rs"]
mod tests;
