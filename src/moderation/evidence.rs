//! The auto-ban's evidence, kept per reported user and apart from the reports feed: a flood of
//! reports against one user (or against many) pushes old reports out of the feed, never the
//! evidence against someone else. Only reports that count are kept (made in a room, after a
//! call of the minimum length), one per reporting network (see [`super::Report::network`]), so
//! a few accounts from one network weigh as one; a verified reporter (a JWT) counts as itself.

use std::collections::{HashMap, VecDeque};

use super::Report;

/// What the node saw of a report besides its words: the room the two shared, how long they had
/// been in it, and the reporter's network.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Seen<'a> {
    /// Their room, when the reported user is the reporter's partner.
    pub room_id: Option<&'a str>,
    /// How long that room has been open, ms.
    pub call_ms: Option<u64>,
    /// The reporter's network ([`super::network_of`] its address).
    pub network: Option<&'a str>,
    /// The reporter's identity was verified (a JWT).
    pub verified: bool,
}

/// Most reports kept as evidence, all users together; beyond it, a new one is not kept until
/// older evidence expires (each needs a call of the minimum length from a network of its own
/// per reported user, so filling it takes an attacker hours of real calls).
pub(crate) const MAX_KEPT: usize = 50_000;

/// The evidence of every reported user.
#[derive(Debug, Default)]
pub(super) struct Evidence {
    by_user: HashMap<String, VecDeque<Report>>,
    /// Reports kept, all users together.
    total: usize,
}

/// Who a report counts as: its reporter when verified (a JWT) or when the network is unknown,
/// else its network. A reporter id and a network never look alike (a network has a `/`, an id
/// cannot).
fn key(r: &Report) -> &str {
    match &r.network {
        Some(net) if !r.verified => net,
        _ => &r.reporter,
    }
}

impl Evidence {
    /// Keeps `r` as evidence against `r.reported`, at most `cap` reports per user (one per
    /// network: a newer report from a network replaces its older one). Returns false when it
    /// was not kept ([`MAX_KEPT`] reports younger than `since` are kept already).
    pub(super) fn add(&mut self, r: &Report, cap: usize, since: u64) -> bool {
        if self.total >= MAX_KEPT {
            self.expire(since);
            if self.total >= MAX_KEPT {
                return false;
            }
        }
        let list = self.by_user.entry(r.reported.clone()).or_default();
        let before = list.len();
        list.retain(|k| key(k) != key(r) && k.timestamp >= since);
        list.push_back(r.clone());
        while list.len() > cap.max(1) {
            list.pop_front();
        }
        self.total = self.total - before + list.len();
        true
    }

    /// Distinct networks that reported `user` since `since` (ms).
    pub(super) fn networks(&self, user: &str, since: u64) -> usize {
        let Some(list) = self.by_user.get(user) else {
            return 0;
        };
        let mut keys: Vec<&str> = list
            .iter()
            .filter(|r| r.timestamp >= since)
            .map(key)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.len()
    }

    /// Forgets evidence older than `since`.
    pub(super) fn expire(&mut self, since: u64) {
        let mut total = 0;
        self.by_user.retain(|_, list| {
            list.retain(|r| r.timestamp >= since);
            total += list.len();
            !list.is_empty()
        });
        self.total = total;
    }

    /// Every report kept.
    pub(super) fn reports(&self) -> impl Iterator<Item = &Report> {
        self.by_user.values().flatten()
    }

    /// How many reports are kept.
    pub(super) fn len(&self) -> usize {
        self.total
    }
}
