//! Moderation's rules, pure: bans (a user id, or a client address or prefix, for a time), the
//! recent reports, and the auto-ban after enough distinct reporters. No I/O and no clock: every
//! operation takes the wall-clock time in ms since the Unix epoch (bans outlive a restart, so
//! they are kept in wall-clock time). The node keeps one [`Moderation`] behind its own lock and
//! persists what changes (`store`, or Redis in a cluster).

mod address;
mod evidence;

pub(crate) use address::{covers, narrow_enough, network_of, normalised, parse_address};
use address::{family, unmapped};
pub(crate) use evidence::Seen;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Most bans kept at once: an operator (or auto-bans) cannot grow the state without bound. A
/// ban beyond it is refused.
pub(crate) const MAX_BANS: usize = 100_000;
/// Most reports kept for the feed and for the auto-ban's counting; older ones are forgotten.
pub(crate) const MAX_REPORTS: usize = 10_000;
/// Longest ban: ten years.
pub(crate) const MAX_BAN_SECS: u64 = 10 * 365 * 24 * 3600;
/// The shortest address prefixes a ban takes without `force` (IPv4, IPv6): a shorter one
/// covers a sixteenth of the Internet or more, which is a mistake far more often than a wish.
pub(crate) const MIN_PREFIX: (u8, u8) = (8, 32);
/// The prefix a reporter's network is counted by (IPv4, IPv6): a home or an office usually
/// holds one /24 or one /48, so accounts made from it weigh as one.
pub(crate) const NETWORK_PREFIX: (u8, u8) = (24, 48);

/// What a ban applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Target {
    /// A user id.
    #[serde(rename = "userId")]
    User(String),
    /// A client address, or a prefix of addresses (`203.0.113.0/24`, `2001:db8::/32`).
    Address(IpNet),
}

/// Who decided a ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub(crate) enum Source {
    /// An operator, through the admin API.
    Operator,
    /// The auto-ban: this many distinct users reported the user within the window.
    Reports {
        /// Distinct reporters.
        reporters: usize,
        /// The window, in seconds.
        window_secs: u64,
    },
}

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ban {
    /// Its id, for `DELETE /admin/bans/{id}`.
    pub id: String,
    /// What it applies to.
    #[serde(flatten)]
    pub target: Target,
    /// Until when, ms since the epoch.
    pub until: u64,
    /// Why, for the operator and the banned client.
    pub reason: String,
    /// When it was made, ms since the epoch.
    pub created: u64,
    /// Who made it.
    pub source: Source,
    /// Made with `force`: an address prefix shorter than [`MIN_PREFIX`] on purpose.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

impl Ban {
    fn live(&self, now: u64) -> bool {
        now < self.until
    }
}

/// One `report-user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    /// Increasing, and ordered by time across the nodes of a cluster: the feed's cursor
    /// (`before`).
    pub id: u64,
    /// Who reported.
    pub reporter: String,
    /// Whom.
    pub reported: String,
    /// The reporter's words (at most 500 characters).
    pub reason: String,
    /// The room they shared, when they were in one.
    pub room_id: Option<String>,
    /// When, ms since the epoch.
    pub timestamp: u64,
    /// How long the reporter and the reported user had been in their room, ms (none when they
    /// were not in one together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_ms: Option<u64>,
    /// The reporter's network (`203.0.113.0/24`, `2001:db8:1::/48`, see [`network_of`]): the
    /// auto-ban counts networks, not accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The reporter's identity was verified (a JWT): the auto-ban counts it as a user of its
    /// own, whatever its network (honest users behind one carrier NAT each count).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verified: bool,
}

/// The auto-ban's settings: a user reported by `reporters` distinct networks within
/// `window_secs`, each after at least `min_call_ms` in a room with it, is banned for
/// `ban_secs`. `reporters == 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AutoBan {
    /// Distinct reporters needed (0: off).
    pub reporters: usize,
    /// The window, in seconds.
    pub window_secs: u64,
    /// How long the ban lasts, in seconds.
    pub ban_secs: u64,
    /// The least time, ms, a reporter must have spent in a room with the reported user for
    /// the report to count.
    pub min_call_ms: u64,
}

/// Why a ban was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// [`MAX_BANS`] bans are live already.
    Full,
    /// Its record could not be written: it would not survive a restart.
    NotDurable,
}

/// Bans and recent reports.
#[derive(Debug, Default)]
pub(crate) struct Moderation {
    bans: HashMap<String, Ban>,
    /// The live user bans by user (the longest-lasting one wins).
    by_user: HashMap<String, String>,
    /// Address bans by their prefix (host bits zero): a client's address is looked up once per
    /// prefix length in use, whatever the number of bans.
    by_address: HashMap<IpNet, Vec<String>>,
    /// The prefix lengths in use, per family (`true`: IPv6): an index over `by_address`'s keys.
    lengths: std::collections::BTreeSet<(bool, u8)>,
    /// The feed, newest last.
    reports: VecDeque<Report>,
    /// The auto-ban's evidence, per reported user.
    evidence: evidence::Evidence,
    next_report: u64,
    auto: AutoBan,
}

impl Moderation {
    /// Empty, with the auto-ban's settings.
    pub(crate) fn new(auto: AutoBan) -> Self {
        Moderation {
            auto,
            next_report: 1,
            ..Default::default()
        }
    }

    /// Adds `ban` (an id already present is replaced). When [`MAX_BANS`] are kept, the ended
    /// ones are dropped first.
    pub(crate) fn ban(&mut self, mut ban: Ban, now: u64) -> Result<(), Refused> {
        if let Target::Address(net) = &mut ban.target {
            *net = normalised(*net);
        }
        self.room_for(&ban.id, now)?;
        self.unban(&ban.id);
        match &ban.target {
            Target::User(u) => {
                let longer = self
                    .by_user
                    .get(u)
                    .and_then(|id| self.bans.get(id))
                    .is_none_or(|old| old.until <= ban.until);
                if longer {
                    self.by_user.insert(u.clone(), ban.id.clone());
                }
            }
            Target::Address(net) => {
                let key = net.trunc();
                let ids = self.by_address.entry(key).or_default();
                ids.push(ban.id.clone());
                self.lengths.insert(family(&key));
            }
        }
        self.bans.insert(ban.id.clone(), ban);
        Ok(())
    }

    /// Whether a ban with `id` would be taken now (not [`Refused::Full`]).
    pub(crate) fn room_for(&mut self, id: &str, now: u64) -> Result<(), Refused> {
        if !self.bans.contains_key(id) && self.bans.len() >= MAX_BANS {
            self.expire(now);
            if self.bans.len() >= MAX_BANS {
                return Err(Refused::Full);
            }
        }
        Ok(())
    }

    /// Removes a ban; returns it when there was one.
    pub(crate) fn unban(&mut self, id: &str) -> Option<Ban> {
        let ban = self.bans.remove(id)?;
        match &ban.target {
            Target::User(u) => {
                if self.by_user.get(u).is_some_and(|b| b == id) {
                    self.by_user.remove(u);
                    // Another, shorter ban of the same user still holds.
                    let next = self
                        .bans
                        .values()
                        .filter(|b| b.target == ban.target)
                        .max_by_key(|b| b.until)
                        .map(|b| b.id.clone());
                    if let Some(next) = next {
                        self.by_user.insert(u.clone(), next);
                    }
                }
            }
            Target::Address(net) => self.drop_address(&net.trunc(), id),
        }
        Some(ban)
    }

    /// The live ban of `user`, if any.
    pub(crate) fn user_ban(&self, user: &str, now: u64) -> Option<&Ban> {
        let ban = self.bans.get(self.by_user.get(user)?)?;
        ban.live(now).then_some(ban)
    }

    /// The live ban that covers `ip`, if any (the longest-lasting).
    pub(crate) fn address_ban(&self, ip: IpAddr, now: u64) -> Option<&Ban> {
        let ip = unmapped(ip);
        let v6 = ip.is_ipv6();
        self.lengths
            .iter()
            .filter(|(f, _)| *f == v6)
            .filter_map(|&(_, len)| IpNet::new(ip, len).ok())
            .filter_map(|net| self.by_address.get(&net.trunc()))
            .flatten()
            .filter_map(|id| self.bans.get(id))
            .filter(|b| b.live(now))
            .max_by_key(|b| b.until)
    }

    fn drop_address(&mut self, key: &IpNet, id: &str) {
        let Some(ids) = self.by_address.get_mut(key) else {
            return;
        };
        ids.retain(|b| b != id);
        if ids.is_empty() {
            self.by_address.remove(key);
            let f = family(key);
            if !self.by_address.keys().any(|k| family(k) == f) {
                self.lengths.remove(&f);
            }
        }
    }

    /// The live bans, the newest first.
    pub(crate) fn bans(&self, now: u64) -> Vec<Ban> {
        let mut out: Vec<Ban> = self
            .bans
            .values()
            .filter(|b| b.live(now))
            .cloned()
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        out
    }

    /// How many bans are live.
    pub(crate) fn active_bans(&self, now: u64) -> usize {
        self.bans.values().filter(|b| b.live(now)).count()
    }

    /// Drops the bans that ended (in one pass over them: it runs when the bans are full).
    pub(crate) fn expire(&mut self, now: u64) {
        self.evidence
            .expire(now.saturating_sub(self.window_secs() * 1000));
        let before = self.bans.len();
        self.bans.retain(|_, b| b.live(now));
        if self.bans.len() == before {
            return;
        }
        let bans = &self.bans;
        self.by_user.retain(|_, id| bans.contains_key(id));
        self.by_address.retain(|_, ids| {
            ids.retain(|id| bans.contains_key(id));
            !ids.is_empty()
        });
        self.lengths = self.by_address.keys().map(family).collect();
        // A user whose longest ban ended may still have another.
        for b in bans.values() {
            if let Target::User(u) = &b.target {
                let longer = self
                    .by_user
                    .get(u)
                    .and_then(|id| bans.get(id))
                    .is_none_or(|old| old.until < b.until);
                if longer {
                    self.by_user.insert(u.clone(), b.id.clone());
                }
            }
        }
    }

    /// Records a report (the oldest is forgotten from the feed beyond [`MAX_REPORTS`]) and
    /// returns it, with the auto-ban it triggers, if any: the reported user's first ban by
    /// reports once `reporters` distinct networks reported it within the window, each after
    /// at least `min_call_ms` in a room with it (reporting a stranger by id, or a partner of a
    /// moment, counts for the feed, not for the auto-ban, or anyone could have anyone banned
    /// with a few made-up ids). Reports of a user who is banned already trigger nothing. A
    /// repeat of a report (the same reporter about the same user within the window) is not
    /// recorded again: `None`.
    pub(crate) fn report(
        &mut self,
        reporter: &str,
        reported: &str,
        reason: &str,
        seen: Seen<'_>,
        now: u64,
    ) -> Option<(Report, Option<Ban>)> {
        let since = now.saturating_sub(self.window_secs() * 1000);
        let repeat = self
            .reports
            .iter()
            .rev()
            .take_while(|r| r.timestamp >= since)
            .any(|r| r.reporter == reporter && r.reported == reported);
        if repeat {
            return None;
        }
        // Ids follow the wall clock (ms × 1000, then a counter), so that the reports of several
        // nodes sort together in one feed.
        let id = self.next_report.max(now.saturating_mul(1000));
        let r = Report {
            id,
            reporter: reporter.to_owned(),
            reported: reported.to_owned(),
            reason: reason.to_owned(),
            room_id: seen.room_id.map(str::to_owned),
            timestamp: now,
            call_ms: seen.call_ms,
            network: seen.network.map(str::to_owned),
            verified: seen.verified,
        };
        self.push_report(r.clone());
        let auto = self.auto_ban(reported, now);
        Some((r, auto))
    }

    /// Whether `r` counts for the auto-ban: made in a room, after the minimum call.
    fn counts(&self, r: &Report) -> bool {
        r.room_id.is_some() && r.call_ms.is_some_and(|ms| ms >= self.auto.min_call_ms)
    }

    fn window_secs(&self) -> u64 {
        if self.auto.window_secs == 0 {
            3600
        } else {
            self.auto.window_secs
        }
    }

    /// Takes a report back in (after a restart, or from another node).
    pub(crate) fn push_report(&mut self, r: Report) {
        self.next_report = self.next_report.max(r.id + 1);
        if self
            .reports
            .iter()
            .any(|k| k.id == r.id && k.reporter == r.reporter)
        {
            return;
        }
        if self.counts(&r) {
            // At most twice the reporters needed per user: one per network, the newest.
            let cap = self.auto.reporters.saturating_mul(2).clamp(16, 4096);
            let since = r.timestamp.saturating_sub(self.window_secs() * 1000);
            // Not kept when the evidence is full of younger reports: the feed still has it.
            self.evidence.add(&r, cap, since);
        }
        if self.reports.len() >= MAX_REPORTS {
            self.reports.pop_front();
        }
        // Kept in id order (another node's reports may arrive late), so the feed pages by id.
        let at = self.reports.partition_point(|k| k.id <= r.id);
        self.reports.insert(at, r);
    }

    /// Distinct users who reported `user` within the auto-ban window (or the last hour when
    /// the auto-ban is off).
    pub(crate) fn distinct_reporters(&self, user: &str, now: u64) -> usize {
        let since = now.saturating_sub(self.window_secs() * 1000);
        let mut who: Vec<&str> = self
            .reports
            .iter()
            .rev()
            .take_while(|r| r.timestamp >= since)
            .filter(|r| r.reported == user)
            .map(|r| r.reporter.as_str())
            .collect();
        who.sort_unstable();
        who.dedup();
        who.len()
    }

    /// The reports to keep across a restart: the feed and the evidence, in id order (a report
    /// in both is listed once).
    pub(crate) fn live_reports(&self) -> Vec<Report> {
        let mut all: Vec<Report> = self.reports.iter().cloned().collect();
        let oldest = self.reports.front().map_or(u64::MAX, |r| r.id);
        // Evidence the feed still holds is not listed twice; older evidence is.
        all.extend(self.evidence.reports().filter(|r| r.id < oldest).cloned());
        all.sort_by_key(|r| r.id);
        all.dedup_by(|a, b| a.id == b.id && a.reporter == b.reporter);
        all
    }

    /// How many records the live state makes: bans, reports of the feed, evidence.
    pub(crate) fn live_records(&self) -> usize {
        self.bans.len() + self.reports.len() + self.evidence.len()
    }

    /// Reports kept about `user`.
    pub(crate) fn reports_about(&self, user: &str) -> usize {
        self.reports.iter().filter(|r| r.reported == user).count()
    }

    fn auto_ban(&mut self, user: &str, now: u64) -> Option<Ban> {
        let a = self.auto;
        if a.reporters == 0 || self.user_ban(user, now).is_some() {
            return None;
        }
        let since = now.saturating_sub(self.window_secs() * 1000);
        let reporters = self.evidence.networks(user, since);
        if reporters < a.reporters {
            return None;
        }
        let ban = Ban {
            id: new_ban_id(),
            target: Target::User(user.to_owned()),
            until: now + a.ban_secs.min(MAX_BAN_SECS) * 1000,
            reason: format!("reported by {reporters} users within {} s", a.window_secs),
            created: now,
            force: false,
            source: Source::Reports {
                reporters,
                window_secs: a.window_secs,
            },
        };
        self.ban(ban.clone(), now).ok()?;
        Some(ban)
    }

    /// The feed: up to `limit` reports older than report `before` (all when `None`), newest
    /// first.
    pub(crate) fn reports(&self, limit: usize, before: Option<u64>) -> Vec<Report> {
        self.reports
            .iter()
            .rev()
            .filter(|r| before.is_none_or(|b| r.id < b))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// A fresh ban id.
pub(crate) fn new_ban_id() -> String {
    format!("ban-{}", crate::model::uuid_v4().simple())
}

#[cfg(test)]
mod tests;
