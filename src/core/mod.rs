//! The pure core of Roulette: users, the waiting queue, rooms, and what happens between them.
//!
//! Nothing in here touches a socket, a clock or the network. Every operation takes the current
//! [`Instant`] and returns the [`Effect`]s (events for particular users) it decided on; the
//! signaling layer delivers them. That keeps every rule unit-testable and lets another
//! implementation (the Redis cluster) stand behind the same operations.
//!
//! Each fact is stored once: whether a user waits is the matchmaker's business, whether it is in
//! a room the [`Rooms`]' business. Counts are read from those structures, never kept by hand.

pub mod blocks;
pub mod history;
pub mod matchmaker;
pub mod quality;
pub mod remote;
pub mod rooms;
pub mod rule;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::ErrorCode;
use crate::model::profile::{Preferences, Profile};
use crate::model::reason::Reason;
use crate::protocol::outgoing::{
    ChatEnded, Matched, PartnerLeft, PartnerReconnected, QueueStatus, Rejoined, RoomEnded,
    SearchTimeout, Searching, ServerEvent, ServerStats, now_ms,
};
use history::{MatchHistory, WaitSummary};
use matchmaker::{Matchmaker, Pairing, PreferenceMatchmaker, Seeker};
use quality::{CallQuality, QualitySummary};

use crate::model::call::{ConnectionState, Quality, QualityStats};
use rooms::{Room, Rooms};

pub use crate::model::{RoomId, UserId};

/// The timings the core enforces.
#[derive(Debug, Clone)]
pub struct CoreConfig {
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
    /// The partner of the user's last room.
    previous: Option<UserId>,
    /// The secret that lets a new connection take this session over.
    resume_token: Arc<str>,
    /// Set while the user's connection is gone and its room is held: until when.
    away_until: Option<Instant>,
    /// The room that ended while the user was away, told when it comes back.
    missed: Option<RoomEnded>,
    /// True for the partner of a local user who is connected to another node of the cluster:
    /// it exists here only as the other half of one room, and leaves with it.
    ghost: bool,
}

/// What proves that a new connection may take over a user's session.
#[derive(Debug, Clone, Copy)]
pub enum Claim<'a> {
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
pub struct Joined<L> {
    /// The token to hand the client for a later resumption (a new one after each resumption).
    pub resume_token: Arc<str>,
    /// True when an earlier session was taken back with its token.
    pub resumed: bool,
    /// The connection that spoke for the user until now and must be closed.
    pub replaced: Option<L>,
    /// Events for the user and its partner (`rejoined`, `partner-reconnected`, `room-ended`).
    pub effects: Vec<Effect>,
}

/// The figures behind `/stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreStats {
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
pub struct Core<L, M = PreferenceMatchmaker> {
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
}

impl<L: Clone + PartialEq> Core<L, PreferenceMatchmaker> {
    /// A core with the preference-aware matchmaker.
    pub fn new(cfg: CoreConfig) -> Self {
        let queue = PreferenceMatchmaker::new(cfg.preference_relax);
        Core::with_matchmaker(cfg, queue)
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
            reports: 0,
            away: BTreeSet::new(),
            calls: CallQuality::default(),
            ghosts: HashSet::new(),
            departed: Vec::new(),
        }
    }

    /// Registers an authenticated user reachable through `link`.
    ///
    /// Authenticating again on the same link updates the profile (when one is given). An id held
    /// by another link is refused with [`ErrorCode::UserIdTaken`] unless the claim is verified or
    /// carries that session's resume token: then this link takes the session over (the old link, if still open, is
    /// returned to be closed), its room is rejoined and the partner told, or, when the room ended
    /// meanwhile, the user gets the `room-ended` it missed.
    pub fn join(
        &mut self,
        user: UserId,
        link: L,
        profile: Option<Profile>,
        claim: Claim<'_>,
    ) -> Result<Joined<L>, ErrorCode> {
        if self.ghosts.contains(&user) {
            // The id is in a call through another node right now.
            return Err(ErrorCode::UserIdTaken);
        }
        let Some(existing) = self.users.get_mut(&user) else {
            let token = new_token();
            self.users.insert(
                user,
                User {
                    link,
                    profile: Arc::new(profile.unwrap_or_default()),
                    prefs: Arc::new(Preferences::default()),
                    last_status: None,
                    previous: None,
                    resume_token: token.clone(),
                    away_until: None,
                    missed: None,
                    ghost: false,
                },
            );
            return Ok(Joined {
                resume_token: token,
                resumed: false,
                replaced: None,
                effects: Vec::new(),
            });
        };
        // The profile changes only once the claim is known to be this user's own: a refused
        // `authenticate` (a stranger who learnt the id as a `partnerId`) must change nothing.
        if existing.link == link {
            if let Some(p) = profile {
                existing.profile = Arc::new(p);
            }
            return Ok(Joined {
                resume_token: existing.resume_token.clone(),
                resumed: false,
                replaced: None,
                effects: Vec::new(),
            });
        }
        let allowed = match claim {
            Claim::Verified => true,
            Claim::Named { resume } => {
                resume.is_some_and(|t| same_secret(t, &existing.resume_token))
            }
        };
        if !allowed {
            return Err(ErrorCode::UserIdTaken);
        }
        if let Some(p) = profile {
            existing.profile = Arc::new(p);
        }
        // A used token is spent: a copy of it that leaked cannot take the session again.
        existing.resume_token = new_token();
        let token = existing.resume_token.clone();
        let old = std::mem::replace(&mut existing.link, link);
        let replaced = match existing.away_until.take() {
            Some(until) => {
                self.away.remove(&(until, user.clone()));
                None
            }
            None => Some(old),
        };
        let missed = existing.missed.take();
        let mut effects = Vec::new();
        if let Some(room) = self.rooms.of_user(&user) {
            let partner = room.partner_of(&user).expect("a member").clone();
            effects.push(Effect::new(
                &user,
                ServerEvent::Rejoined(Rejoined {
                    room_id: room.id.clone(),
                    partner_id: partner.clone(),
                    is_initiator: room.initiator == user,
                }),
            ));
            if self
                .users
                .get(&partner)
                .is_some_and(|p| p.away_until.is_none())
            {
                effects.push(Effect::new(
                    &partner,
                    ServerEvent::PartnerReconnected(PartnerReconnected {
                        room_id: room.id.clone(),
                        partner_id: user.clone(),
                    }),
                ));
            } else {
                // The partner dropped too: this new connection has not heard of it yet.
                effects.push(Effect::new(
                    &user,
                    ServerEvent::PartnerLeft(PartnerLeft {
                        reason: Reason::ConnectionLost,
                        room_id: room.id.clone(),
                        can_reconnect: true,
                    }),
                ));
            }
        } else if let Some(ended) = missed {
            effects.push(Effect::new(&user, ServerEvent::RoomEnded(ended)));
        }
        Ok(Joined {
            resume_token: token,
            resumed: true,
            replaced,
            effects,
        })
    }

    /// Starts a search. `prefs` replaces the stored preferences when given. Pairs at once when a
    /// compatible user waits. Searching again while searching changes nothing unless the
    /// preferences changed, which starts a new search.
    pub fn find(
        &mut self,
        user: &str,
        prefs: Option<Preferences>,
        now: Instant,
    ) -> Result<Vec<Effect>, ErrorCode> {
        if let Some(room) = self.rooms.of_user(user) {
            // A partner whose connection dropped cannot be talked to; an old client that was told
            // `partner-left` searches again, which gives the room up.
            let partner = room.partner_of(user).expect("a member");
            if !self.is_away(partner) {
                return Err(ErrorCode::AlreadyInRoom);
            }
            let mut out = Vec::new();
            self.close_room_of(user, Reason::UserEnded, now, &mut out);
            out.extend(self.find(user, prefs, now)?);
            return Ok(out);
        }
        let id = self.present(user)?;
        let u = self.users.get_mut(user).expect("present above");
        let changed = prefs.as_ref().is_some_and(|p| *p != *u.prefs);
        if let Some(p) = prefs.filter(|_| changed) {
            u.prefs = Arc::new(p);
        }
        let seeker = Seeker {
            user: id.clone(),
            profile: u.profile.clone(),
            prefs: u.prefs.clone(),
            since: now,
            previous: u.previous.clone(),
        };
        let mut out = Vec::with_capacity(2);
        if self.queue.get(user).is_some() {
            if !changed {
                let position = self.queue.waiting().position(|s| *s.user == *user);
                self.searching(&id, position.map_or(0, |p| p + 1), now, &mut out);
                return Ok(out);
            }
            self.queue.remove(user);
        }
        match self.queue.offer(seeker, now) {
            Some(pairing) => self.pair(pairing, now, &mut out),
            // A new search is the newest: last in the queue.
            None => self.searching(&id, self.queue.len(), now, &mut out),
        }
        Ok(out)
    }

    /// `searching` and a first `queue-status` for a user who waits.
    fn searching(&mut self, user: &UserId, position: usize, now: Instant, out: &mut Vec<Effect>) {
        out.push(Effect::new(
            user,
            ServerEvent::Searching(Searching {
                message: "Looking for a partner...",
                status: "searching",
                timestamp: now_ms(),
                relaxed: self.queue.is_relaxed(user),
            }),
        ));
        out.push(self.queue_status(user, position, now));
    }

    fn queue_status(&mut self, user: &UserId, position: usize, now: Instant) -> Effect {
        let segment = self.users.get_mut(user).map(|u| {
            u.last_status = Some((position, now));
            history::segment_of(&u.prefs)
        });
        Effect::new(
            user,
            ServerEvent::QueueStatus(QueueStatus::new(
                position,
                self.queue.total_waiting(),
                self.history.estimate_wait_ms(position, segment),
                self.queue.is_relaxed(user),
            )),
        )
    }

    /// Opens a room for two users the matchmaker paired. The one who waited in the queue starts
    /// the call (`isInitiator: true`).
    fn pair(&mut self, p: Pairing, now: Instant, out: &mut Vec<Effect>) {
        self.pair_in(new_room_id(), p, now, out);
    }

    /// [`pair`](Self::pair) into a room whose id was chosen elsewhere (by the cluster node that
    /// made the match, so that both nodes name the room alike).
    fn pair_in(&mut self, id: RoomId, p: Pairing, now: Instant, out: &mut Vec<Effect>) {
        let Pairing {
            waiting,
            seeker,
            common_interests,
        } = p;
        let waits = [
            now.saturating_duration_since(waiting.since),
            now.saturating_duration_since(seeker.since),
        ];
        self.history.record(
            now,
            [
                (waits[0], history::segment_of(&waiting.prefs)),
                (waits[1], history::segment_of(&seeker.prefs)),
            ],
        );
        for s in [&waiting, &seeker] {
            if let Some(u) = self.users.get_mut(&s.user) {
                u.last_status = None;
            }
        }
        self.calls.opened(&id, now);
        self.rooms.open(Room {
            id: id.clone(),
            initiator: waiting.user.clone(),
            responder: seeker.user.clone(),
            created: now,
            deadline: now + self.cfg.max_room_duration,
        });
        for (me, other, initiator, wait) in [
            (&waiting, &seeker, true, waits[0]),
            (&seeker, &waiting, false, waits[1]),
        ] {
            if self.ghosts.contains(&me.user) {
                // Its own node tells it.
                continue;
            }
            out.push(Effect::new(
                &me.user,
                ServerEvent::Matched(Matched {
                    room_id: id.clone(),
                    partner_id: other.user.clone(),
                    is_initiator: initiator,
                    wait_time: wait.as_millis() as u64,
                    common_interests: common_interests.clone(),
                    relaxed: !me.prefs.interests.is_empty() && common_interests.is_empty(),
                    ice_servers: Vec::new(),
                }),
            ));
        }
    }

    /// Closes `user`'s room and tells the partner why (a partner who is away learns it as
    /// `room-ended` when it comes back). Returns the closed room.
    fn close_room_of(
        &mut self,
        user: &str,
        reason: Reason,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Option<Room> {
        let id = self.rooms.of_user(user)?.id.clone();
        let room = self.rooms.close(&id)?;
        self.room_closed(&room);
        let partner = room.partner_of(user).expect("user is a member").clone();
        match self.users.get_mut(&partner) {
            Some(p) if p.away_until.is_some() => {
                p.missed = Some(RoomEnded {
                    reason: Reason::PartnerLeft,
                    room_id: room.id.clone(),
                    duration: room.age(now).as_millis() as u64,
                });
            }
            _ => out.push(Effect::new(
                &partner,
                ServerEvent::PartnerLeft(PartnerLeft {
                    reason,
                    room_id: room.id.clone(),
                    can_reconnect: false,
                }),
            )),
        }
        Some(room)
    }

    /// The bookkeeping of every closed room: its call figures, the members' memory of each
    /// other, and the departure of a member that was only a ghost.
    fn room_closed(&mut self, room: &Room) {
        self.calls.closed(&room.id);
        self.remember_partners(room);
        for m in [&room.initiator, &room.responder] {
            if self.ghosts.contains(m) {
                self.departed.push(m.clone());
            }
        }
    }

    /// Each member of a closed room remembers the other, to be paired again only as a last resort.
    fn remember_partners(&mut self, room: &Room) {
        for (me, other) in [
            (&room.initiator, &room.responder),
            (&room.responder, &room.initiator),
        ] {
            if let Some(u) = self.users.get_mut(me) {
                u.previous = Some(other.clone());
            }
        }
    }

    /// `block-user`: `user` and `other` are never paired again (for the block lifetime).
    pub fn block(&mut self, user: &str, other: &str, now: Instant) -> Result<(), ErrorCode> {
        let id = self.present(user)?;
        if *id == *other {
            return Err(ErrorCode::InvalidPayload);
        }
        self.queue
            .block(&id, &UserId::from(other), now + self.cfg.block_ttl);
        Ok(())
    }

    /// `report-user`: blocks like [`block`](Self::block) and counts the report for moderation.
    pub fn report(&mut self, user: &str, other: &str, now: Instant) -> Result<(), ErrorCode> {
        self.block(user, other, now)?;
        self.reports += 1;
        Ok(())
    }

    /// `next-partner`: leaves the current room (the partner is told `next-partner`) and searches again
    /// with the last preferences. Outside a room it simply (re)starts the search.
    pub fn next(&mut self, user: &str, now: Instant) -> Result<Vec<Effect>, ErrorCode> {
        self.present(user)?;
        let mut out = Vec::new();
        self.close_room_of(user, Reason::NextPartner, now, &mut out);
        out.extend(self.find(user, None, now)?);
        Ok(out)
    }

    /// `end-chat`: leaves the room (the partner is told `user-ended`, the user gets `chat-ended`),
    /// or cancels a search. Neither in a room nor searching: [`ErrorCode::NotInRoom`].
    pub fn end(&mut self, user: &str, now: Instant) -> Result<Vec<Effect>, ErrorCode> {
        let id = self.present(user)?;
        let mut out = Vec::with_capacity(2);
        if let Some(room) = self.close_room_of(user, Reason::UserEnded, now, &mut out) {
            out.push(Effect::new(
                &id,
                ServerEvent::ChatEnded(ChatEnded {
                    room_id: Some(room.id),
                    reason: Reason::Ended,
                }),
            ));
        } else if self.queue.remove(user).is_some() {
            out.push(Effect::new(
                &id,
                ServerEvent::ChatEnded(ChatEnded {
                    room_id: None,
                    reason: Reason::SearchCancelled,
                }),
            ));
        } else {
            return Err(ErrorCode::NotInRoom);
        }
        Ok(out)
    }

    /// The user's connection `link` is gone. A waiting user leaves the queue at once. When the
    /// connection was `lost` (not closed on purpose) a user in a room is held for the
    /// reconnection grace: the partner is told `connection-lost` with `canReconnect: true`, and
    /// the room ends only if the grace runs out (see [`tick`]) or the partner leaves. Otherwise,
    /// or without a grace, the room ends at once (`disconnect`). A link that no longer speaks for
    /// the user changes nothing.
    ///
    /// [`tick`]: Self::tick
    pub fn leave(&mut self, user: &str, link: &L, lost: bool, now: Instant) -> Vec<Effect> {
        let Some((id, u)) = self.users.get_key_value(user) else {
            return Vec::new();
        };
        if u.link != *link || u.away_until.is_some() {
            return Vec::new();
        }
        let id = id.clone();
        let mut out = Vec::new();
        self.queue.remove(user);
        let grace = self.cfg.reconnect_grace;
        if let Some(room) = self
            .rooms
            .of_user(user)
            .filter(|_| lost && !grace.is_zero())
        {
            let partner = room.partner_of(user).expect("a member").clone();
            let room_id = room.id.clone();
            if self.is_away(&partner) {
                // Both gone: nobody is left to wait for.
                self.close_room_of(user, Reason::Disconnect, now, &mut out);
                self.forget(&partner);
                self.users.remove(user);
                return out;
            }
            let until = now + grace;
            self.users.get_mut(user).expect("present").away_until = Some(until);
            self.away.insert((until, id));
            out.push(Effect::new(
                &partner,
                ServerEvent::PartnerLeft(PartnerLeft {
                    reason: Reason::ConnectionLost,
                    room_id,
                    can_reconnect: true,
                }),
            ));
            return out;
        }
        self.close_room_of(user, Reason::Disconnect, now, &mut out);
        self.users.remove(user);
        out
    }

    /// The shared id of a connected user: a user who is away cannot act.
    fn present(&self, user: &str) -> Result<UserId, ErrorCode> {
        match self.users.get_key_value(user) {
            Some((id, u)) if u.away_until.is_none() => Ok(id.clone()),
            _ => Err(ErrorCode::NotAuthenticated),
        }
    }

    /// Ends the held session of `user`, who is away (its connection dropped, its room is held for
    /// the reconnect grace), as if its connection had closed for good now: the partner is told
    /// `partner-left`, as for any departure. Then a newcomer without the session's resume token
    /// can take the id, as the old clients that know no resume token do when they reconnect.
    /// Nothing happens to a user who is not away.
    pub fn displace(&mut self, user: &str, now: Instant) -> Vec<Effect> {
        if !self.is_away(user) {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.close_room_of(user, Reason::Disconnect, now, &mut out);
        self.forget(user);
        out
    }

    /// Whether `user` is away: its connection dropped and its grace period runs.
    pub fn is_away(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.away_until.is_some())
    }

    /// Removes a user who is away, with its entry in the deadline index.
    fn forget(&mut self, user: &str) {
        if let Some((id, u)) = self.users.remove_entry(user)
            && let Some(until) = u.away_until
        {
            self.away.remove(&(until, id));
        }
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
        let p = self.users.get(partner).ok_or(ErrorCode::NotInRoom)?;
        if p.away_until.is_some() {
            return Err(ErrorCode::PartnerAway);
        }
        Ok((partner, &p.link))
    }

    /// A member of `room_id` reported its WebRTC connection state (after [`route`] accepted the
    /// relay, so the room is the user's own).
    ///
    /// [`route`]: Self::route
    pub fn call_status(&mut self, room_id: &str, state: ConnectionState, now: Instant) {
        self.calls.status(room_id, state, now);
    }

    /// A member sent the numbers of its call: returns the grade the server gives them.
    pub fn call_report(&mut self, stats: &QualityStats) -> Option<Quality> {
        self.calls.report(stats)
    }

    /// Time-driven work: rooms past their maximum duration end (`room-ended` to both), searches
    /// past the maximum wait end (`search-timeout`), and waiting users whose position changed
    /// get a `queue-status` (at most one per `queue_status_interval` each).
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        while let Some((until, user)) = self.away.first().cloned() {
            if until > now {
                break;
            }
            self.away.pop_first();
            if let Some(u) = self.users.get_mut(&user) {
                u.away_until = None;
            }
            // The grace ran out: the room ends for good and the partner is told so.
            self.close_room_of(&user, Reason::Disconnect, now, &mut out);
            self.users.remove(&user);
        }
        for id in self.rooms.due(now) {
            if let Some(room) = self.rooms.close(&id) {
                self.room_closed(&room);
                let duration = room.age(now).as_millis() as u64;
                for member in [&room.initiator, &room.responder] {
                    let ended = RoomEnded {
                        reason: Reason::MaxDuration,
                        room_id: room.id.clone(),
                        duration,
                    };
                    match self.users.get_mut(member) {
                        Some(u) if u.away_until.is_some() => u.missed = Some(ended),
                        _ => out.push(Effect::new(member, ServerEvent::RoomEnded(ended))),
                    }
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
        self.history.prune(now);
        let relaxation = self.queue.relax(now);
        for p in relaxation.pairs {
            self.pair(p, now, &mut out);
        }
        for user in relaxation.relaxed {
            // Tell them at once, whatever the throttle says.
            if let Some(u) = self.users.get_mut(&user) {
                u.last_status = None;
            }
        }
        let total_waiting = self.queue.total_waiting();
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
                let segment = Some(history::segment_of(&u.prefs));
                out.push(Effect::new(
                    &s.user,
                    ServerEvent::QueueStatus(QueueStatus::new(
                        position,
                        total_waiting,
                        self.history.estimate_wait_ms(position, segment),
                        self.queue.is_relaxed(&s.user),
                    )),
                ));
            }
        }
        out
    }

    /// The link of a connected user.
    pub fn link(&self, user: &str) -> Option<&L> {
        self.users
            .get(user)
            .filter(|u| u.away_until.is_none())
            .map(|u| &u.link)
    }

    /// The link kept for `user`, also while it is away (the connection it had when it left).
    pub fn kept_link(&self, user: &str) -> Option<&L> {
        self.users.get(user).map(|u| &u.link)
    }

    /// The profile `user` gave when it authenticated.
    pub fn profile(&self, user: &str) -> Option<&Profile> {
        self.users.get(user).map(|u| &*u.profile)
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
            connected_users: self.users.len() - self.away.len() - self.ghosts.len(),
            waiting_users: self.queue.len(),
            active_rooms: self.rooms.len(),
        }
    }

    /// Everything `/stats` reports about users, queue and matches.
    pub fn stats(&self, now: Instant) -> CoreStats {
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
    pub fn clear(&mut self) {
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
pub fn new_room_id() -> RoomId {
    uuid::Uuid::new_v4().simple().to_string().into()
}

/// A fresh session secret: 128 random bits as hex.
fn new_token() -> Arc<str> {
    uuid::Uuid::new_v4().simple().to_string().into()
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
