//! Searching and pairing: the queue, `queue-status`, matches, blocks and reports, and the
//! time-driven work (room and search limits, relaxation).

use std::sync::Arc;
use std::time::Instant;

use super::event::{Event, Matched, QueueStatus, RoomEnded, SearchTimeout, Searching, SessionNote};
use super::history;
use super::matchmaker::{Matchmaker, Pairing, Seeker};
use super::rooms::Room;
use super::{Core, Effect, new_room_id};
use crate::model::profile::Preferences;
use crate::model::reason::Reason;
use crate::model::{ErrorCode, RoomId, UserId, WaitBasis};

impl<L: Clone + PartialEq, M: Matchmaker> Core<L, M> {
    /// Starts a search. `prefs` replaces the stored preferences when given. Pairs at once when a
    /// compatible user waits. Searching again while searching changes nothing unless the
    /// preferences changed, which starts a new search.
    pub(crate) fn find(
        &mut self,
        user: &str,
        prefs: Option<Preferences>,
        now: Instant,
    ) -> Result<Vec<Effect>, ErrorCode> {
        // A user who is away cannot act: its room waits for it as it was.
        let id = self.present(user)?;
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
                let position = match self.queue.standing(user) {
                    Some((p, _)) => Some(p),
                    None => self
                        .queue
                        .waiting()
                        .position(|s| *s.user == *user)
                        .map(|p| p + 1),
                };
                self.searching(&id, position.unwrap_or(0), now, &mut out);
                return Ok(out);
            }
            self.queue.remove(user);
        }
        match self.queue.offer(seeker, now) {
            Some(pairing) => self.pair(pairing, now, &mut out),
            // A new search is the newest: last in the queue (the whole cluster's, in a cluster).
            None => self.searching(&id, self.queue.total_waiting(), now, &mut out),
        }
        Ok(out)
    }

    /// `searching` and a first `queue-status` for a user who waits.
    pub(super) fn searching(
        &mut self,
        user: &UserId,
        position: usize,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        out.push(Effect::new(
            user,
            Event::Searching(Searching {
                relaxed: self.queue.is_relaxed(user),
            }),
        ));
        out.push(self.queue_status(user, position, now));
    }

    pub(super) fn queue_status(&mut self, user: &UserId, position: usize, now: Instant) -> Effect {
        let segment = self.users.get_mut(user).map(|u| {
            u.last_status = Some((position, now));
            history::segment_of(&u.prefs)
        });
        let since = self.queue.get(user).map_or(now, |s| s.since);
        let estimate = match self.queue.standing(user) {
            // The cluster's matching node's rate: it sees every match.
            Some((_, rate)) => history::wait_from(rate, position, self.left_ms(since, now)),
            None => self.estimate_wait(position, segment, since, now),
        };
        Effect::new(
            user,
            Event::QueueStatus(QueueStatus::new(
                position,
                self.queue.total_waiting(),
                estimate,
                self.queue.is_relaxed(user),
            )),
        )
    }

    /// The wait estimate of the user at `position` whose search began at `since`: bounded by
    /// the time its search has left before `search-timeout`.
    fn estimate_wait(
        &self,
        position: usize,
        segment: Option<history::Segment>,
        since: Instant,
        now: Instant,
    ) -> (u64, WaitBasis) {
        self.history
            .estimate_wait(position, segment, self.left_ms(since, now))
    }

    /// What is left, in ms, of a search begun at `since` before its `search-timeout`.
    fn left_ms(&self, since: Instant, now: Instant) -> u64 {
        let left = self
            .cfg
            .max_waiting_time
            .saturating_sub(now.saturating_duration_since(since));
        left.as_millis() as u64
    }

    /// Opens a room for two users the matchmaker paired. The one who waited in the queue starts
    /// the call (`isInitiator: true`).
    pub(super) fn pair(&mut self, p: Pairing, now: Instant, out: &mut Vec<Effect>) {
        self.pair_in(new_room_id(), p, now, out);
    }

    /// [`pair`](Self::pair) into a room whose id was chosen elsewhere (by the cluster node that
    /// made the match, so that both nodes name the room alike).
    pub(super) fn pair_in(&mut self, id: RoomId, p: Pairing, now: Instant, out: &mut Vec<Effect>) {
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
        if let Some(notes) = &mut self.sessions
            && !self.ghosts.contains(&waiting.user)
        {
            notes.push(SessionNote::Started {
                room_id: id.clone(),
                initiator: waiting.user.clone(),
                responder: seeker.user.clone(),
                waits_ms: waits.map(|w| w.as_millis() as u64),
            });
        }
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
                Event::Matched(Matched {
                    room_id: id.clone(),
                    partner_id: other.user.clone(),
                    is_initiator: initiator,
                    wait_time: wait.as_millis() as u64,
                    common_interests: common_interests.clone(),
                    relaxed: !me.prefs.interests.is_empty() && common_interests.is_empty(),
                }),
            ));
        }
    }

    /// `block-user`: `user` and `other` are never paired again (for the block lifetime).
    pub(crate) fn block(&mut self, user: &str, other: &str, now: Instant) -> Result<(), ErrorCode> {
        let id = self.present(user)?;
        if *id == *other {
            return Err(ErrorCode::InvalidPayload);
        }
        self.queue
            .block(&id, &UserId::from(other), now + self.cfg.block_ttl);
        Ok(())
    }

    /// `report-user`: blocks like [`block`](Self::block) and counts the report for moderation.
    pub(crate) fn report(
        &mut self,
        user: &str,
        other: &str,
        now: Instant,
    ) -> Result<(), ErrorCode> {
        self.block(user, other, now)?;
        self.reports += 1;
        Ok(())
    }

    /// Time-driven work: rooms past their maximum duration end (`room-ended` to both), searches
    /// past the maximum wait end (`search-timeout`), and waiting users whose position changed
    /// get a `queue-status` (at most one per `queue_status_interval` each).
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Effect> {
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
                self.room_closed(&room, Reason::MaxDuration, now);
                let duration = room.age(now).as_millis() as u64;
                for member in [&room.initiator, &room.responder] {
                    let ended = RoomEnded {
                        reason: Reason::MaxDuration,
                        room_id: room.id.clone(),
                        duration,
                    };
                    match self.users.get_mut(member) {
                        Some(u) if u.away_until.is_some() => u.missed = Some(ended),
                        _ => out.push(Effect::new(member, Event::RoomEnded(ended))),
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
                    Event::SearchTimeout(SearchTimeout {
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
            let standing = self.queue.standing(&s.user);
            let position = standing.map_or(i + 1, |(p, _)| p);
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
                let left = self.left_ms(s.since, now);
                let estimate = match standing {
                    Some((_, rate)) => history::wait_from(rate, position, left),
                    None => self.history.estimate_wait(position, segment, left),
                };
                out.push(Effect::new(
                    &s.user,
                    Event::QueueStatus(QueueStatus::new(
                        position,
                        total_waiting,
                        estimate,
                        self.queue.is_relaxed(&s.user),
                    )),
                ));
            }
        }
        out
    }
}
