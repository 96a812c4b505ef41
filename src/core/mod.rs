//! The pure core of Roulette: users, the waiting queue, rooms, and what happens between them.
//!
//! Nothing in here touches a socket, a clock or the network. Every operation takes the current
//! [`Instant`] and returns the [`Effect`]s (events for particular users) it decided on; the
//! signaling layer delivers them. That keeps every rule unit-testable and lets another
//! implementation (the Redis cluster) stand behind the same operations.
//!
//! Each fact is stored once: whether a user waits is the matchmaker's business, whether it is in
//! a room the [`Rooms`]' business. Counts are read from those structures, never kept by hand.

pub mod history;
pub mod matchmaker;
pub mod profile;
pub mod rooms;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::ErrorCode;
use crate::protocol::outgoing::{
    ChatEnded, Matched, PartnerLeft, QueueStatus, RoomEnded, SearchTimeout, Searching, ServerEvent,
    ServerStats, now_ms,
};
use history::{MatchHistory, WaitSummary};
use matchmaker::{FifoMatchmaker, Matchmaker, Seeker};
use profile::{Preferences, Profile};
use rooms::{Room, Rooms};

/// A user id: cheap to clone, shared by every index that names the user.
pub type UserId = Arc<str>;
/// A room id.
pub type RoomId = Arc<str>;

/// The timings the core enforces.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// A room is ended with `room-ended` after this long.
    pub max_room_duration: Duration,
    /// A search is ended with `search-timeout` after this long.
    pub max_waiting_time: Duration,
    /// Least time between two `queue-status` updates to one user.
    pub queue_status_interval: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            max_room_duration: Duration::from_millis(1_800_000),
            max_waiting_time: Duration::from_millis(300_000),
            queue_status_interval: Duration::from_millis(1000),
        }
    }
}

/// One event for one user.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    /// The recipient.
    pub to: UserId,
    /// What to send.
    pub event: ServerEvent,
}

impl Effect {
    fn new(to: &UserId, event: ServerEvent) -> Self {
        Effect {
            to: to.clone(),
            event,
        }
    }
}

/// What the core keeps about an authenticated user.
#[derive(Debug)]
pub struct User<L> {
    /// How to reach the user (a socket in the server, anything in tests).
    pub link: L,
    /// The user's profile.
    pub profile: Arc<Profile>,
    /// The preferences of the user's latest search, reused by `next-partner`.
    pub prefs: Arc<Preferences>,
    /// The last `queue-status` sent: position and when.
    last_status: Option<(usize, Instant)>,
}

/// The figures behind `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreStats {
    /// Live counts.
    pub live: ServerStats,
    /// Matches since start.
    pub total_matches: u64,
    /// Matches in the last minute.
    pub matches_last_minute: usize,
    /// Wait figures of the recent past.
    pub waits: WaitSummary,
}

/// Users, queue and rooms of one server. `L` is how a user is reached; `M` is the matchmaker.
pub struct Core<L, M = FifoMatchmaker> {
    cfg: CoreConfig,
    users: HashMap<UserId, User<L>>,
    queue: M,
    rooms: Rooms,
    history: MatchHistory,
}

impl<L: Clone + PartialEq> Core<L, FifoMatchmaker> {
    /// A core with the FIFO matchmaker.
    pub fn new(cfg: CoreConfig) -> Self {
        Core::with_matchmaker(cfg, FifoMatchmaker::new())
    }
}

impl<L: Clone + PartialEq, M: Matchmaker> Core<L, M> {
    /// A core with the given matchmaker.
    pub fn with_matchmaker(cfg: CoreConfig, queue: M) -> Self {
        Core {
            cfg,
            users: HashMap::new(),
            queue,
            rooms: Rooms::default(),
            history: MatchHistory::default(),
        }
    }

    /// Registers an authenticated user reachable through `link`. Authenticating again on the
    /// same link updates the profile; an id held by another link is refused.
    pub fn join(&mut self, user: UserId, link: L, profile: Profile) -> Result<(), ErrorCode> {
        match self.users.get_mut(&user) {
            Some(existing) if existing.link == link => {
                existing.profile = Arc::new(profile);
                Ok(())
            }
            Some(_) => Err(ErrorCode::UserIdTaken),
            None => {
                self.users.insert(
                    user,
                    User {
                        link,
                        profile: Arc::new(profile),
                        prefs: Arc::new(Preferences::default()),
                        last_status: None,
                    },
                );
                Ok(())
            }
        }
    }

    /// Starts (or, when already searching, updates) a search. `prefs` replaces the stored
    /// preferences when given. Pairs at once when a compatible user waits.
    pub fn find(
        &mut self,
        user: &str,
        prefs: Option<Preferences>,
        now: Instant,
    ) -> Result<Vec<Effect>, ErrorCode> {
        if self.rooms.of_user(user).is_some() {
            return Err(ErrorCode::AlreadyInRoom);
        }
        let id = self
            .users
            .get_key_value(user)
            .ok_or(ErrorCode::NotAuthenticated)?
            .0
            .clone();
        let u = self.users.get_mut(user).expect("present above");
        if let Some(p) = prefs {
            u.prefs = Arc::new(p);
        }
        let seeker = Seeker {
            user: id,
            profile: u.profile.clone(),
            prefs: u.prefs.clone(),
            since: self.queue.remove(user).map_or(now, |s| s.since),
        };
        let mut out = Vec::with_capacity(2);
        match self.queue.offer(seeker.clone()) {
            Some(partner) => self.pair(partner, seeker, now, &mut out),
            None => {
                out.push(Effect::new(
                    &seeker.user,
                    ServerEvent::Searching(Searching {
                        message: "Looking for a partner...",
                        status: "searching",
                        timestamp: now_ms(),
                    }),
                ));
                let position = self.queue.waiting().position(|s| s.user == seeker.user);
                let position = position.map_or(self.queue.len(), |p| p + 1);
                out.push(self.queue_status(&seeker.user, position, now));
            }
        }
        Ok(out)
    }

    fn queue_status(&mut self, user: &UserId, position: usize, now: Instant) -> Effect {
        if let Some(u) = self.users.get_mut(user) {
            u.last_status = Some((position, now));
        }
        Effect::new(
            user,
            ServerEvent::QueueStatus(QueueStatus {
                position,
                estimated_wait_time: self.history.estimate_wait_ms(position, now),
                total_waiting: self.queue.len(),
            }),
        )
    }

    /// Opens a room for two users the matchmaker paired. `waiting` waited longer and starts the
    /// call (`isInitiator: true`).
    fn pair(&mut self, waiting: Seeker, newcomer: Seeker, now: Instant, out: &mut Vec<Effect>) {
        let id: RoomId = uuid::Uuid::new_v4().simple().to_string().into();
        let waits = [
            now.saturating_duration_since(waiting.since),
            now.saturating_duration_since(newcomer.since),
        ];
        self.history.record(now, waits);
        for s in [&waiting, &newcomer] {
            if let Some(u) = self.users.get_mut(&s.user) {
                u.last_status = None;
            }
        }
        self.rooms.open(Room {
            id: id.clone(),
            initiator: waiting.user.clone(),
            responder: newcomer.user.clone(),
            created: now,
            deadline: now + self.cfg.max_room_duration,
        });
        for (me, other, initiator, wait) in [
            (&waiting, &newcomer, true, waits[0]),
            (&newcomer, &waiting, false, waits[1]),
        ] {
            out.push(Effect::new(
                &me.user,
                ServerEvent::Matched(Matched {
                    room_id: id.clone(),
                    partner_id: other.user.clone(),
                    is_initiator: initiator,
                    wait_time: wait.as_millis() as u64,
                }),
            ));
        }
    }

    /// Closes `user`'s room and tells the partner why. Returns the closed room.
    fn close_room_of(
        &mut self,
        user: &str,
        reason: &'static str,
        out: &mut Vec<Effect>,
    ) -> Option<Room> {
        let id = self.rooms.of_user(user)?.id.clone();
        let room = self.rooms.close(&id)?;
        let partner = room.partner_of(user).expect("user is a member").clone();
        out.push(Effect::new(
            &partner,
            ServerEvent::PartnerLeft(PartnerLeft {
                reason,
                room_id: room.id.clone(),
                can_reconnect: false,
            }),
        ));
        Some(room)
    }

    /// `next-partner`: leaves the current room (the partner is told `next`) and searches again
    /// with the last preferences. Outside a room it simply (re)starts the search.
    pub fn next(&mut self, user: &str, now: Instant) -> Result<Vec<Effect>, ErrorCode> {
        if !self.users.contains_key(user) {
            return Err(ErrorCode::NotAuthenticated);
        }
        let mut out = Vec::new();
        self.close_room_of(user, "next", &mut out);
        out.extend(self.find(user, None, now)?);
        Ok(out)
    }

    /// `end-chat`: leaves the room (the partner is told `ended`, the user gets `chat-ended`),
    /// or cancels a search. Neither in a room nor searching: [`ErrorCode::NotInRoom`].
    pub fn end(&mut self, user: &str) -> Result<Vec<Effect>, ErrorCode> {
        let id = self
            .users
            .get_key_value(user)
            .ok_or(ErrorCode::NotAuthenticated)?
            .0
            .clone();
        let mut out = Vec::with_capacity(2);
        if let Some(room) = self.close_room_of(user, "ended", &mut out) {
            out.push(Effect::new(
                &id,
                ServerEvent::ChatEnded(ChatEnded {
                    room_id: Some(room.id),
                    reason: "ended",
                }),
            ));
        } else if self.queue.remove(user).is_some() {
            out.push(Effect::new(
                &id,
                ServerEvent::ChatEnded(ChatEnded {
                    room_id: None,
                    reason: "search-cancelled",
                }),
            ));
        } else {
            return Err(ErrorCode::NotInRoom);
        }
        Ok(out)
    }

    /// The user's connection `link` is gone: it leaves the queue and its room at once (the
    /// partner is told `disconnect`). A link that no longer speaks for the user changes nothing.
    pub fn leave(&mut self, user: &str, link: &L) -> Vec<Effect> {
        if self.users.get(user).is_none_or(|u| u.link != *link) {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.queue.remove(user);
        self.close_room_of(user, "disconnect", &mut out);
        self.users.remove(user);
        out
    }

    /// Whom a relay from `user` into `room_id` goes to: the partner's id and link. Refused unless
    /// `room_id` is the user's current room and `target` (when given) is its partner.
    pub fn route(
        &self,
        user: &str,
        room_id: &str,
        target: Option<&str>,
    ) -> Result<(&UserId, &L), ErrorCode> {
        let room = self
            .rooms
            .of_user(user)
            .filter(|r| *r.id == *room_id)
            .ok_or(ErrorCode::NotInRoom)?;
        let partner = room.partner_of(user).ok_or(ErrorCode::NotInRoom)?;
        if target.is_some_and(|t| **partner != *t) {
            return Err(ErrorCode::NotInRoom);
        }
        let link = &self.users.get(partner).ok_or(ErrorCode::NotInRoom)?.link;
        Ok((partner, link))
    }

    /// Time-driven work: rooms past their maximum duration end (`room-ended` to both), searches
    /// past the maximum wait end (`search-timeout`), and waiting users whose position changed
    /// get a `queue-status` (at most one per `queue_status_interval` each).
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        for id in self.rooms.due(now) {
            if let Some(room) = self.rooms.close(&id) {
                let duration = room.age(now).as_millis() as u64;
                for member in [&room.initiator, &room.responder] {
                    out.push(Effect::new(
                        member,
                        ServerEvent::RoomEnded(RoomEnded {
                            reason: "max-duration",
                            room_id: room.id.clone(),
                            duration,
                        }),
                    ));
                }
            }
        }
        let expired: Vec<UserId> = self
            .queue
            .waiting()
            .take_while(|s| now.saturating_duration_since(s.since) >= self.cfg.max_waiting_time)
            .map(|s| s.user.clone())
            .collect();
        for user in expired {
            if let Some(s) = self.queue.remove(&user) {
                out.push(Effect::new(
                    &user,
                    ServerEvent::SearchTimeout(SearchTimeout {
                        message: "No partner was found in time; search again to keep looking",
                        wait_time: now.saturating_duration_since(s.since).as_millis() as u64,
                    }),
                ));
            }
        }
        let total_waiting = self.queue.len();
        for (i, s) in self.queue.waiting().enumerate() {
            let position = i + 1;
            let Some(u) = self.users.get_mut(&s.user) else {
                continue;
            };
            let due = match u.last_status {
                None => true,
                Some((p, at)) => {
                    p != position
                        && now.saturating_duration_since(at) >= self.cfg.queue_status_interval
                }
            };
            if due {
                u.last_status = Some((position, now));
                out.push(Effect::new(
                    &s.user,
                    ServerEvent::QueueStatus(QueueStatus {
                        position,
                        estimated_wait_time: self.history.estimate_wait_ms(position, now),
                        total_waiting,
                    }),
                ));
            }
        }
        out
    }

    /// The link of a connected user.
    pub fn link(&self, user: &str) -> Option<&L> {
        self.users.get(user).map(|u| &u.link)
    }

    /// Every connected user's link.
    pub fn links(&self) -> impl Iterator<Item = &L> {
        self.users.values().map(|u| &u.link)
    }

    /// The room `user` is in.
    pub fn room_of(&self, user: &str) -> Option<&Room> {
        self.rooms.of_user(user)
    }

    /// Whether `user` waits for a partner.
    pub fn is_waiting(&self, user: &str) -> bool {
        self.queue.get(user).is_some()
    }

    /// Live counts, read from the state.
    pub fn live(&self) -> ServerStats {
        ServerStats {
            connected_users: self.users.len(),
            waiting_users: self.queue.len(),
            active_rooms: self.rooms.len(),
        }
    }

    /// Everything `/stats` reports about users, queue and matches.
    pub fn stats(&self, now: Instant) -> CoreStats {
        CoreStats {
            live: self.live(),
            total_matches: self.history.total(),
            matches_last_minute: self.history.matches_last_minute(now),
            waits: self.history.wait_summary(now),
        }
    }

    /// Forgets every user, search and room (used at shutdown, where no disconnect handler runs).
    pub fn clear(&mut self) {
        let users: Vec<UserId> = self.users.keys().cloned().collect();
        for u in users {
            self.queue.remove(&u);
        }
        self.users.clear();
        self.rooms = Rooms::default();
    }

    /// Checks the structural invariants: every room has two distinct connected members who map
    /// back to it, and nobody both waits and sits in a room, and every waiting user is connected.
    pub fn check_invariants(&self) -> Result<(), String> {
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
        if members != 2 * self.rooms.len() {
            return Err("a user is in two rooms".into());
        }
        for s in self.queue.waiting() {
            if !self.users.contains_key(&s.user) {
                return Err(format!("{} waits but is not connected", s.user));
            }
        }
        if self.queue.waiting().count() != self.queue.len() {
            return Err("queue order and entries disagree".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
