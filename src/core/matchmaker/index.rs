//! The index's parts: interned strings, wish keys, the arrival-ordered lists and buckets, and
//! the ranking of candidates.

use std::collections::VecDeque;

use super::Seeker;
use crate::model::profile::{Gender, GenderWish};
use rustc_hash::FxHashMap;

/// A language, country or interest tag, interned: comparing and hashing it costs an integer's.
pub(super) type Sym = u32;

/// The strings of waiting users' profiles and wishes, numbered and counted: a string is
/// forgotten (and its number reused) when the last waiting user holding it leaves, so clients
/// sending ever new interest tags cannot grow it beyond what the live queue holds.
#[derive(Debug, Default)]
pub(super) struct Interner {
    pub(super) ids: FxHashMap<Box<str>, Sym>,
    /// Per number: how many holders, and the string.
    pub(super) slots: Vec<(u32, Option<Box<str>>)>,
    pub(super) free: Vec<Sym>,
}

impl Interner {
    pub(super) fn get(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).copied()
    }

    /// The number of `s`, counting one more holder.
    pub(super) fn intern(&mut self, s: &str) -> Sym {
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
    pub(super) fn release(&mut self, id: Sym) {
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
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Up to ten symbols inline: a profile's languages or a search's interests (both capped at ten
/// by the protocol), kept without a heap allocation.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Syms {
    pub(super) len: u8,
    pub(super) ids: [Sym; 10],
}

impl Syms {
    pub(super) fn collect(it: impl Iterator<Item = Sym>) -> Syms {
        let mut s = Syms::default();
        for id in it.take(10) {
            s.ids[s.len as usize] = id;
            s.len += 1;
        }
        s
    }

    pub(super) fn as_slice(&self) -> &[Sym] {
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
pub(super) struct WishKey {
    pub(super) gender: GenderWish,
    pub(super) language: Option<Sym>,
    pub(super) country: Option<Sym>,
    pub(super) age: Option<(u8, u8)>,
}

/// A profile's interned attributes, as the wish keys test them.
pub(super) struct Traits<'a> {
    pub(super) gender: Option<Gender>,
    pub(super) age: Option<u8>,
    pub(super) languages: &'a [Sym],
    pub(super) country: Option<Sym>,
}

impl WishKey {
    /// Whether users with these wishes accept a user with `t`.
    pub(super) fn accepts(&self, t: &Traits<'_>) -> bool {
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
pub(super) fn gender_slot(g: Option<Gender>) -> usize {
    match g {
        Some(Gender::Male) => 0,
        Some(Gender::Female) => 1,
        Some(Gender::Other) => 2,
        None => 3,
    }
}

/// The sub-groups a seeker's gender wish accepts.
pub(super) fn accepted_slots(w: GenderWish) -> &'static [usize] {
    match w {
        GenderWish::Any => &[0, 1, 2, 3],
        GenderWish::Male => &[0],
        GenderWish::Female => &[1],
    }
}

/// An arrival-ordered list of `(seq, slot)`: an item is live while the entry in `slot` still
/// carries `seq`; departed users' items are skipped, and dropped when they reach the head.
pub(super) type Fifo = VecDeque<(u64, u32)>;

/// One selection of users, split by whether they have interests. Users without interests never
/// insist on sharing one; users with interests arrive in order and relax in the same order, so
/// the relaxed ones are always a prefix of `keen` and a walk can stop at the first insisting one.
#[derive(Debug, Default)]
pub(super) struct Lists {
    pub(super) plain: Fifo,
    pub(super) keen: Fifo,
}

impl Lists {
    pub(super) fn pick(&mut self, keen: bool) -> &mut Fifo {
        if keen {
            &mut self.keen
        } else {
            &mut self.plain
        }
    }
}

/// Users of one wish key and one gender.
#[derive(Debug, Default)]
pub(super) struct Bucket {
    pub(super) all: Lists,
    pub(super) by_language: FxHashMap<Sym, Lists>,
    pub(super) by_country: FxHashMap<Sym, Lists>,
    pub(super) by_interest: FxHashMap<Sym, Fifo>,
    /// Live members, to know when the bucket (and its wish key) can be dropped.
    pub(super) live: usize,
    /// List items of live members, and items left behind by departed ones.
    pub(super) items: usize,
    pub(super) stale: usize,
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) seeker: Seeker,
    pub(super) seq: u64,
    /// Copies of the profile fields the walks read, so that a walk reads the entry alone and not
    /// the profile behind its `Arc` (a cache miss per candidate in a long queue).
    pub(super) gender: Option<Gender>,
    pub(super) age: Option<u8>,
    pub(super) relaxed: bool,
    pub(super) wish: WishKey,
    pub(super) languages: Syms,
    pub(super) country: Option<Sym>,
    pub(super) interests: Syms,
}

impl Entry {
    pub(super) fn keen(&self) -> bool {
        !self.interests.is_empty()
    }

    pub(super) fn items(&self) -> usize {
        1 + self.languages.len() + usize::from(self.country.is_some()) + self.interests.len()
    }
}

/// How good a candidate is: sharing an interest first, then the longest wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Rank {
    pub(super) shares: bool,
    pub(super) older: std::cmp::Reverse<u64>,
}

/// The best candidate seen so far, and the best previous partner (the last resort).
#[derive(Default)]
pub(super) struct Best {
    pub(super) new: Option<(Rank, u32)>,
    pub(super) previous: Option<(Rank, u32)>,
}

impl Best {
    pub(super) fn offer(&mut self, rank: Rank, slot: u32, previous: bool) {
        let best = if previous {
            &mut self.previous
        } else {
            &mut self.new
        };
        if best.is_none_or(|(r, _)| rank > r) {
            *best = Some((rank, slot));
        }
    }

    pub(super) fn pick(self) -> Option<u32> {
        self.new.or(self.previous).map(|(_, s)| s)
    }
}

/// A seeker, with its strings looked up once for the whole search.
pub(super) struct Probe<'a> {
    pub(super) s: &'a Seeker,
    /// The seeker's own slot when it is queued (relaxation walks), to skip itself.
    pub(super) own: Option<u32>,
    pub(super) languages: Syms,
    pub(super) country: Option<Sym>,
    /// The seeker's wished language and country; `Err` when no waiting user has that value.
    pub(super) language_wish: Option<Result<Sym, ()>>,
    pub(super) country_wish: Option<Result<Sym, ()>>,
    pub(super) interests: Syms,
}
