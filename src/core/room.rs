//! A room's life after the match: relays routed to the partner, call status, skips and ends.

use std::time::Instant;

use super::event::{ChatEnded, Event, PartnerLeft, RoomEnded, SessionNote};
use super::matchmaker::Matchmaker;
use super::rooms::Room;
use super::{Core, Effect};
use crate::model::call::{ConnectionState, Quality, QualityStats};
use crate::model::reason::Reason;
use crate::model::{ErrorCode, UserId};

impl<L: Clone + PartialEq, M: Matchmaker> Core<L, M> {
    /// Closes `user`'s room and tells the partner why (a partner who is away learns it as
    /// `room-ended` when it comes back). Returns the closed room.
    pub(super) fn close_room_of(
        &mut self,
        user: &str,
        reason: Reason,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Option<Room> {
        let id = self.rooms.of_user(user)?.id.clone();
        let room = self.rooms.close(&id)?;
        self.room_closed(&room, reason, now);
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
                Event::PartnerLeft(PartnerLeft {
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
    pub(super) fn room_closed(&mut self, room: &Room, reason: Reason, now: Instant) {
        let call = self.calls.closed(&room.id);
        if let Some(notes) = &mut self.sessions
            && !self.ghosts.contains(&room.initiator)
        {
            notes.push(SessionNote::Ended {
                room_id: room.id.clone(),
                initiator: room.initiator.clone(),
                responder: room.responder.clone(),
                duration_ms: room.age(now).as_millis() as u64,
                reason,
                call,
            });
        }
        self.remember_partners(room);
        for m in [&room.initiator, &room.responder] {
            if self.ghosts.contains(m) {
                self.departed.push(m.clone());
            }
        }
    }

    /// Each member of a closed room remembers the other, to be paired again only as a last resort.
    pub(super) fn remember_partners(&mut self, room: &Room) {
        for (me, other) in [
            (&room.initiator, &room.responder),
            (&room.responder, &room.initiator),
        ] {
            if let Some(u) = self.users.get_mut(me) {
                u.previous = Some(other.clone());
            }
        }
    }

    /// `next-partner`: leaves the current room (the partner is told `next-partner`) and searches again
    /// with the last preferences. Outside a room it simply (re)starts the search.
    pub(crate) fn next(&mut self, user: &str, now: Instant) -> Result<Vec<Effect>, ErrorCode> {
        self.present(user)?;
        let mut out = Vec::new();
        self.close_room_of(user, Reason::NextPartner, now, &mut out);
        out.extend(self.find(user, None, now)?);
        Ok(out)
    }

    /// `end-chat`: leaves the room (the partner is told `user-ended`, the user gets `chat-ended`),
    /// or cancels a search. Neither in a room nor searching: [`ErrorCode::NotInRoom`].
    pub(crate) fn end(&mut self, user: &str, now: Instant) -> Result<Vec<Effect>, ErrorCode> {
        let id = self.present(user)?;
        let mut out = Vec::with_capacity(2);
        if let Some(room) = self.close_room_of(user, Reason::UserEnded, now, &mut out) {
            out.push(Effect::new(
                &id,
                Event::ChatEnded(ChatEnded {
                    room_id: Some(room.id),
                    reason: Reason::Ended,
                }),
            ));
        } else if self.queue.remove(user).is_some() {
            out.push(Effect::new(
                &id,
                Event::ChatEnded(ChatEnded {
                    room_id: None,
                    reason: Reason::SearchCancelled,
                }),
            ));
        } else {
            return Err(ErrorCode::NotInRoom);
        }
        Ok(out)
    }

    /// Whom a relay from `user` into `room_id` goes to: the partner's id and link. Refused unless
    /// `room_id` is the user's current room and `target` (when given) is its partner.
    pub(crate) fn route(
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
        if p.away_until.is_some() && !p.holds {
            return Err(ErrorCode::PartnerAway);
        }
        Ok((partner, &p.link))
    }

    /// A member of `room_id` reported its WebRTC connection state (after [`route`] accepted the
    /// relay, so the room is the user's own).
    ///
    /// [`route`]: Self::route
    pub(crate) fn call_status(&mut self, room_id: &str, state: ConnectionState, now: Instant) {
        self.calls.status(room_id, state, now);
    }

    /// A member sent the numbers of its call: returns the grade the server gives them.
    pub(crate) fn call_report(&mut self, stats: &QualityStats) -> Option<Quality> {
        self.calls.report(stats)
    }
}
