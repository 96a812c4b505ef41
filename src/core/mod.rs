//! The pure core of Roulette: users, the waiting queue, rooms, and what happens between them.
//!
//! Nothing in here touches a socket, a clock or the network. Every operation takes the current
//! [`Instant`] and returns the [`Effect`]s (events for particular users) it decided on; the
//! signaling layer delivers them. That keeps every rule unit-testable and lets another
//! implementation (the Redis cluster) stand behind the same operations.
//!
//! Each fact is stored once: whether a user waits is the matchmaker's business, whether it is in
//! a room the [`Rooms`]' business. Counts are read from those structures, never kept by hand.

pub(crate) mod blocks;
pub(crate) mod event;
pub(crate) mod history;
pub(crate) mod matchmaker;
pub(crate) mod quality;
pub(crate) mod remote;
mod room;
pub(crate) mod rooms;
#[cfg(test)]
pub(crate) mod rule;
mod search;
mod session;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::ServerStats;
use crate::model::profile::{Preferences, Profile};
use event::{Event, RoomEnded};
use history::{MatchHistory, WaitSummary};
use matchmaker::{Matchmaker, PreferenceMatchmaker};
use quality::{CallQuality, QualitySummary};

use rooms::{Room, Rooms};

pub(crate) use crate::model::{RoomId, UserId};
pub(crate) use remote::Seat;

/// The timings the core enforces.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    /// A room is ended with `room-ended` after this long.
    pub max_room_duration: Duration,
    /// A search is ended with `search-timeout` after this long.
    pub max_waiting_time: Duration,
    /// Least time between two `queue-status` updates to one user.
    pub queue_status_interval: Duration,
    /// After this long a searching user with interests accepts partners who share none.
    pub preference_relax: Duration,
    /// How long `block-user` and `report-user` keep a pair apart.
    pub block_ttl: Duration,
    /// How long the room of a user whose connection dropped is held for it. Zero ends the room
    /// at once.
    pub reconnect_grace: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            max_room_duration: Duration::from_millis(1_800_000),
            max_waiting_time: Duration::from_millis(300_000),
            queue_status_interval: Duration::from_millis(1000),
            preference_relax: Duration::from_millis(5000),
            block_ttl: Duration::from_secs(24 * 3600),
            reconnect_grace: Duration::from_millis(10_000),
        }
    }
}

/// One event for one user.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Effect {
    /// The recipient.
    pub to: UserId,
    /// What to send.
    pub event: Event,
}

impl Effect {
    fn new(to: &UserId, event: Event) -> Self {
        Effect {
            to: to.clone(),
            event,
        }
    }
}

/// A user's state as an operator sees it (see [`Core::presence`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Presence {
    /// Its connection dropped and its room is held for the reconnect grace.
    pub away: bool,
    /// How long it has been searching, when it is.
    pub waiting_for: Option<Duration>,
    /// Its room, partner, and how long the room has been open.
    pub room: Option<(RoomId, UserId, Duration)>,
}

/// What the core keeps about an authenticated user.
#[derive(Debug)]
pub(crate) struct User<L> {
    /// How to reach the user (a socket in the server, anything in tests).
    pub link: L,
    /// The user's profile.
    pub profile: Arc<Profile>,
    /// The preferences of the user's latest search, reused by `next-partner`.
    pub prefs: Arc<Preferences>,
    /// The last `queue-status` sent: position and when.
    last_status: Option<(usize, Instant)>,
    /// The partner of the user's last room.
    previous: Option<UserId>,
    /// The secret that lets a new connection take this session over.
    resume_token: Arc<str>,
    /// Set while the user's connection is gone and its room is held: until when.
    away_until: Option<Instant>,
    /// The room that ended while the user was away, told when it comes back.
    missed: Option<RoomEnded>,
    /// While away: its link keeps what is sent to it, for its client to get when it recovers
    /// its session (Socket.IO connection state recovery), so relays to it are accepted.
    holds: bool,
    /// True for the partner of a local user who is connected to another node of the cluster:
    /// it exists here only as the other half of one room, and leaves with it.
    ghost: bool,
}

/// What proves that a new connection may take over a user's session.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Claim<'a> {
    /// The client only names the user (anonymous mode): it must present the session's
    /// `resumeToken` to take an existing session over.
    Named {
        /// The `resumeToken` it presented, if any.
        resume: Option<&'a str>,
    },
    /// The identity was verified (a valid JWT): the newest connection takes the session.
    Verified,
}

/// What [`Core::join`] decided.
#[derive(Debug)]
pub(crate) struct Joined<L> {
    /// The token to hand the client for a later resumption (a new one after each resumption).
    pub resume_token: Arc<str>,
    /// True when an earlier session was taken back with its token.
    pub resumed: bool,
    /// The connection that spoke for the user until now and must be closed.
    pub replaced: Option<L>,
    /// The link of the session held away, which kept what was sent to the user meanwhile: to
    /// be handed to the new connection after `rejoined`.
    pub held: Option<L>,
    /// Events for the user and its partner (`rejoined`, `partner-reconnected`, `room-ended`).
    pub effects: Vec<Effect>,
}

/// The figures behind `/stats`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CoreStats {
    /// Live counts.
    pub live: ServerStats,
    /// Users whose connection dropped and whose room is held for them.
    pub reconnecting_users: usize,
    /// Matches since start.
    pub total_matches: u64,
    /// Matches in the last minute.
    pub matches_last_minute: usize,
    /// Wait figures of the recent past.
    pub waits: WaitSummary,
    /// `report-user` events since start.
    pub reports: u64,
    /// Call outcomes and grades.
    pub quality: QualitySummary,
    /// Blocks kept in memory (`block-user`, `report-user`), at most `MAX_BLOCKS`.
    pub blocks: usize,
}

/// Users, queue and rooms of one server. `L` is how a user is reached; `M` is the matchmaker.
pub(crate) struct Core<L, M = PreferenceMatchmaker> {
    cfg: CoreConfig,
    users: HashMap<UserId, User<L>>,
    queue: M,
    rooms: Rooms,
    history: MatchHistory,
    reports: u64,
    /// Users away within their grace period, by deadline: the count of reconnecting users.
    away: BTreeSet<(Instant, UserId)>,
    calls: CallQuality,
    /// Partners on other nodes (see [`Core::adopt`]): not users of this node, never counted.
    ghosts: HashSet<UserId>,
    /// Ghosts whose room closed: kept until [`Core::settle`], so that the effects that tell
    /// their node can still be routed.
    departed: Vec<UserId>,
    /// Rooms opened and closed since the node last took them (`None`: nobody listens).
    sessions: Option<Vec<event::SessionNote>>,
}

impl<L: Clone + PartialEq> Core<L, PreferenceMatchmaker> {
    #[cfg(test)]
    /// A core with the preference-aware matchmaker.
    pub(crate) fn new(cfg: CoreConfig) -> Self {
        let queue = PreferenceMatchmaker::new(cfg.preference_relax);
        Core::with_matchmaker(cfg, queue)
    }
}

impl<L: Clone + PartialEq, M: Matchmaker> Core<L, M> {
    /// A core with the given matchmaker.
    pub(crate) fn with_matchmaker(cfg: CoreConfig, queue: M) -> Self {
        Core {
            cfg,
            users: HashMap::new(),
            queue,
            rooms: Rooms::default(),
            history: MatchHistory::default(),
            reports: 0,
            away: BTreeSet::new(),
            calls: CallQuality::default(),
            ghosts: HashSet::new(),
            departed: Vec::new(),
            sessions: None,
        }
    }

    /// The link of a connected user, or of one away whose link keeps what is sent to it (its
    /// session is held for recovery).
    pub(crate) fn link(&self, user: &str) -> Option<&L> {
        self.users
            .get(user)
            .filter(|u| u.away_until.is_none() || u.holds)
            .map(|u| &u.link)
    }

    /// The link kept for `user`, also while it is away (the connection it had when it left).
    pub(crate) fn kept_link(&self, user: &str) -> Option<&L> {
        self.users.get(user).map(|u| &u.link)
    }

    /// The profile `user` gave when it authenticated.
    pub(crate) fn profile(&self, user: &str) -> Option<&Profile> {
        self.users.get(user).map(|u| &*u.profile)
    }

    /// The room `user` is in.
    pub(crate) fn room_of(&self, user: &str) -> Option<&Room> {
        self.rooms.of_user(user)
    }

    /// From now on, keeps a note of every room that opens or closes, for [`take_sessions`].
    ///
    /// [`take_sessions`]: Self::take_sessions
    pub(crate) fn record_sessions(&mut self) {
        self.sessions.get_or_insert_with(Vec::new);
    }

    /// The rooms opened and closed since the last call.
    pub(crate) fn take_sessions(&mut self) -> Vec<event::SessionNote> {
        self.sessions
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// What the core knows of `user` for an operator, or `None` for a user it does not hold (a
    /// ghost, the partner of a local user on another node, is not held here).
    pub(crate) fn presence(&self, user: &str, now: Instant) -> Option<Presence> {
        let u = self.users.get(user).filter(|u| !u.ghost)?;
        let room = self.rooms.of_user(user).and_then(|r| {
            let partner = r.partner_of(user)?.clone();
            Some((r.id.clone(), partner, r.age(now)))
        });
        Some(Presence {
            away: u.away_until.is_some(),
            waiting_for: self
                .queue
                .get(user)
                .map(|s| now.saturating_duration_since(s.since)),
            room,
        })
    }

    /// The preferences of `user`'s search, while it waits.
    pub(crate) fn search_of(&self, user: &str) -> Option<Preferences> {
        self.queue
            .get(user)
            .and_then(|_| self.users.get(user))
            .map(|u| (*u.prefs).clone())
    }

    /// Whether `user` waits for a partner.
    pub(crate) fn is_waiting(&self, user: &str) -> bool {
        self.queue.get(user).is_some()
    }

    /// Live counts, read from the state.
    pub(crate) fn live(&self) -> ServerStats {
        ServerStats {
            connected_users: self.users.len() - self.away.len() - self.ghosts.len(),
            waiting_users: self.queue.len(),
            active_rooms: self.rooms.len(),
        }
    }

    /// Everything `/stats` reports about users, queue and matches.
    pub(crate) fn stats(&self, now: Instant) -> CoreStats {
        CoreStats {
            live: self.live(),
            reconnecting_users: self.away.len(),
            total_matches: self.history.total(),
            matches_last_minute: self.history.matches_last_minute(now),
            waits: self.history.wait_summary(now),
            reports: self.reports,
            quality: self.calls.summary(),
            blocks: self.queue.blocks(),
        }
    }

    /// Forgets every user, search and room (used at shutdown, where no disconnect handler runs).
    pub(crate) fn clear(&mut self) {
        let users: Vec<UserId> = self.users.keys().cloned().collect();
        for u in users {
            self.queue.remove(&u);
        }
        self.users.clear();
        self.away.clear();
        self.ghosts.clear();
        self.departed.clear();
        self.rooms = Rooms::default();
        self.calls.forget_open();
    }

    /// Checks the structural invariants: every room has two distinct connected members who map
    /// back to it, and nobody both waits and sits in a room, and every waiting user is connected.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let mut members = 0;
        for room in self.rooms.iter() {
            if room.initiator == room.responder {
                return Err(format!("room {} pairs a user with itself", room.id));
            }
            for m in [&room.initiator, &room.responder] {
                if !self.users.contains_key(m) {
                    return Err(format!("room {} has a missing member {m}", room.id));
                }
                if self.rooms.of_user(m).map(|r| &r.id) != Some(&room.id) {
                    return Err(format!("{m} does not map back to room {}", room.id));
                }
                if self.queue.get(m).is_some() {
                    return Err(format!("{m} waits while in room {}", room.id));
                }
                members += 1;
            }
        }
        if self.calls.tracked() != self.rooms.len() {
            return Err("call tracking disagrees with the open rooms".into());
        }
        if members != 2 * self.rooms.len() {
            return Err("a user is in two rooms".into());
        }
        for s in self.queue.waiting() {
            if self.link(&s.user).is_none() {
                return Err(format!("{} waits but is not connected", s.user));
            }
        }
        let away = self.users.values().filter(|u| u.away_until.is_some());
        if away.count() != self.away.len() {
            return Err("the away index disagrees with the users".into());
        }
        for (_, user) in &self.away {
            if self.rooms.of_user(user).is_none()
                && self.users.get(user).is_none_or(|u| u.missed.is_none())
            {
                return Err(format!(
                    "{user} is held away with neither a room nor news of one"
                ));
            }
        }
        for g in &self.ghosts {
            if self.rooms.of_user(g).is_none() && !self.departed.contains(g) {
                return Err(format!("ghost {g} outlived its room"));
            }
            if !self.users.get(g).is_some_and(|u| u.ghost) {
                return Err(format!("ghost {g} is not marked as one"));
            }
        }
        if self.queue.waiting().count() != self.queue.len() {
            return Err("queue order and entries disagree".into());
        }
        Ok(())
    }
}

/// A fresh room id: 128 random bits as hex.
pub(crate) fn new_room_id() -> RoomId {
    crate::model::uuid_v4().simple().to_string().into()
}

/// A fresh session secret: 128 random bits as hex.
fn new_token() -> Arc<str> {
    crate::model::uuid_v4().simple().to_string().into()
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests;
