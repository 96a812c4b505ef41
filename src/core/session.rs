//! A user's session in the core: joining (or taking a session back), leaving, being displaced.

use std::sync::Arc;
use std::time::Instant;

use super::event::{Event, PartnerLeft, PartnerReconnected, PartnerReconnecting, Rejoined};
use super::matchmaker::Matchmaker;
use super::{Claim, Core, Effect, Joined, User, new_token, same_secret};
use crate::model::profile::{Preferences, Profile};
use crate::model::reason::Reason;
use crate::model::{ErrorCode, UserId};

impl<L: Clone + PartialEq, M: Matchmaker> Core<L, M> {
    /// Registers an authenticated user reachable through `link`.
    ///
    /// Authenticating again on the same link updates the profile (when one is given). An id held
    /// by another link is refused with [`ErrorCode::UserIdTaken`] unless the claim is verified or
    /// carries that session's resume token: then this link takes the session over (the old link, if still open, is
    /// returned to be closed), its room is rejoined and the partner told, or, when the room ended
    /// meanwhile, the user gets the `room-ended` it missed.
    pub(crate) fn join(
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
                    holds: false,
                    ghost: false,
                },
            );
            return Ok(Joined {
                resume_token: token,
                resumed: false,
                replaced: None,
                held: None,
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
                held: None,
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
        let holds = std::mem::replace(&mut existing.holds, false);
        let (replaced, held) = match existing.away_until.take() {
            Some(until) => {
                self.away.remove(&(until, user.clone()));
                (None, holds.then_some(old))
            }
            None => (Some(old), None),
        };
        let missed = existing.missed.take();
        let mut effects = Vec::new();
        if let Some(room) = self.rooms.of_user(&user) {
            let partner = room.partner_of(&user).expect("a member").clone();
            effects.push(Effect::new(
                &user,
                Event::Rejoined(Rejoined {
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
                    Event::PartnerReconnected(PartnerReconnected {
                        room_id: room.id.clone(),
                        partner_id: user.clone(),
                        recovered: false,
                    }),
                ));
            } else {
                // The partner dropped too: this new connection has not heard of it yet.
                effects.push(Effect::new(
                    &user,
                    Event::PartnerLeft(PartnerLeft {
                        reason: Reason::ConnectionLost,
                        room_id: room.id.clone(),
                        can_reconnect: true,
                    }),
                ));
            }
        } else if let Some(ended) = missed {
            effects.push(Effect::new(&user, Event::RoomEnded(ended)));
        }
        Ok(Joined {
            resume_token: token,
            resumed: true,
            replaced,
            held,
            effects,
        })
    }

    /// The user's connection `link` is gone. A waiting user leaves the queue at once. When the
    /// connection was `lost` (not closed on purpose) a user in a room is held for the
    /// reconnection grace: the partner is told `partner-reconnecting`, and the room ends only if
    /// the grace runs out (see [`tick`]) or the partner leaves. `held`: the link of the session
    /// held for the user to recover (the user is reached through it while away), and whether
    /// it keeps what is sent to it (then relays to it are accepted; not in a cluster, whose
    /// user may come back through another node).
    /// Otherwise, or without a grace, the room ends at once (`disconnect`). A link that no longer
    /// speaks for the user changes nothing.
    ///
    /// [`tick`]: Self::tick
    pub(crate) fn leave(
        &mut self,
        user: &str,
        link: &L,
        lost: bool,
        held: Option<(L, bool)>,
        now: Instant,
    ) -> Vec<Effect> {
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
            let partner_holds = self.users.get(&partner).is_some_and(|p| p.holds);
            let holds = held.as_ref().is_some_and(|(_, keeps)| *keeps);
            if self.is_away(&partner) && !(holds && partner_holds) {
                // Both gone, and one of them cannot be taken back as it was: nobody is left
                // to wait for. (Two held sessions wait for each other: a blip on both sides,
                // a server-side hiccup, ends no call.)
                self.close_room_of(user, Reason::Disconnect, now, &mut out);
                self.forget(&partner);
                self.users.remove(user);
                return out;
            }
            let until = now + grace;
            let u = self.users.get_mut(user).expect("present");
            u.away_until = Some(until);
            if let Some((h, keeps)) = held {
                u.link = h;
                u.holds = keeps;
            }
            self.away.insert((until, id.clone()));
            out.push(Effect::new(
                &partner,
                Event::PartnerReconnecting(PartnerReconnecting {
                    room_id,
                    partner_id: id,
                }),
            ));
            return out;
        }
        self.close_room_of(user, Reason::Disconnect, now, &mut out);
        self.users.remove(user);
        out
    }

    /// The shared id of a connected user: a user who is away cannot act.
    pub(super) fn present(&self, user: &str) -> Result<UserId, ErrorCode> {
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
    pub(crate) fn displace(&mut self, user: &str, now: Instant) -> Vec<Effect> {
        if !self.is_away(user) {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.close_room_of(user, Reason::Disconnect, now, &mut out);
        self.forget(user);
        out
    }

    /// The client of `user`, whose session was on `old`, recovered it on `new` (Socket.IO
    /// connection state recovery): the user is reachable through `new` again, as if it had never
    /// left; a partner who was told `partner-reconnecting` is told `partner-reconnected`, and a
    /// room that ended meanwhile is told to the user. A user the core no longer knows (it was
    /// not in a room when its connection dropped) is registered again. Refused when the id
    /// belongs to another connection now.
    pub(crate) fn recover(
        &mut self,
        user: UserId,
        old: &L,
        new: L,
    ) -> Result<Vec<Effect>, ErrorCode> {
        let Some(u) = self.users.get_mut(&user) else {
            return self
                .join(user, new, None, Claim::Named { resume: None })
                .map(|j| j.effects);
        };
        if u.link != *old || u.ghost {
            return Err(ErrorCode::UserIdTaken);
        }
        u.link = new;
        u.holds = false;
        let mut out = Vec::new();
        let Some(until) = u.away_until.take() else {
            return Ok(out);
        };
        let missed = u.missed.take();
        self.away.remove(&(until, user.clone()));
        if let Some(room) = self.rooms.of_user(&user) {
            let partner = room.partner_of(&user).expect("a member").clone();
            out.push(Effect::new(
                &partner,
                Event::PartnerReconnected(PartnerReconnected {
                    room_id: room.id.clone(),
                    partner_id: user.clone(),
                    recovered: true,
                }),
            ));
        } else if let Some(ended) = missed {
            out.push(Effect::new(&user, Event::RoomEnded(ended)));
        }
        Ok(out)
    }

    /// The session of `user` held on `link` can no longer be recovered (its buffer overflowed,
    /// or its grace ran out): it ends as a departure, as [`displace`](Self::displace) ends it.
    /// Nothing happens when the user is not away on that link.
    pub(crate) fn abandon(&mut self, user: &str, link: &L, now: Instant) -> Vec<Effect> {
        if self.users.get(user).is_none_or(|u| u.link != *link) {
            return Vec::new();
        }
        self.displace(user, now)
    }

    /// Whether `user` is away: its connection dropped and its grace period runs.
    pub(crate) fn is_away(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.away_until.is_some())
    }

    /// Removes a user who is away, with its entry in the deadline index.
    pub(super) fn forget(&mut self, user: &str) {
        if let Some((id, u)) = self.users.remove_entry(user)
            && let Some(until) = u.away_until
        {
            self.away.remove(&(until, id));
        }
    }
}
