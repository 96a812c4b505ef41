//! What the core does for the Redis cluster: rooms whose other member is on another node.
//!
//! A node's core knows only its own users. When the cluster's matchmaker pairs one of them with
//! a user of another node, each node opens the same room (same id) in its own core, with the remote
//! member as a *ghost*: a user entry that holds the room's other half and the link to its node,
//! is never counted, never queued, and leaves with the room. Relays and departures then follow
//! the ordinary paths (`route`, `close_room_of`), and the signaling layer turns effects addressed
//! to a ghost into messages for its node. Everything here stays pure: the caller does the I/O.

use std::time::Instant;

use super::event::{Event, PartnerReconnected, Rejoined};
use super::matchmaker::{Matchmaker, Pairing, Seeker};
use super::rooms::Room;
use super::{Core, Effect, Joined, RoomId, User, UserId, new_token};
use crate::model::profile::Profile;
use crate::model::reason::Reason;
use std::sync::Arc;

/// A ghost room found by [`Core::ghosts_where`]: the local member, the room, the ghost.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GhostRoom {
    /// The member of this node.
    pub local: UserId,
    /// The room.
    pub room: RoomId,
    /// The member on the other node.
    pub ghost: UserId,
}

/// What a node gives up when its away user comes back through another node (see
/// [`Core::hand_over`]).
#[derive(Debug)]
pub(crate) struct Handover<L> {
    /// The user's room.
    pub room: RoomId,
    /// Its partner.
    pub partner: UserId,
    /// The partner's link when it is a ghost itself (on a third node); `None` when the partner
    /// is a user of this node, who stays here with the returning user as its ghost.
    pub partner_link: Option<L>,
    /// Whether the returning user starts the call.
    pub initiator: bool,
    /// `partner-reconnected` for a local partner.
    pub effects: Vec<Effect>,
}

/// A place in a room another node handed over (see [`Core::take_over`]).
#[derive(Debug, Clone)]
pub(crate) struct Seat {
    /// The room.
    pub room: RoomId,
    /// The partner.
    pub partner: UserId,
    /// Whether the user starts the call.
    pub initiator: bool,
}

impl<L: Clone + PartialEq, M: Matchmaker> Core<L, M> {
    /// The matchmaker.
    pub(crate) fn queue(&self) -> &M {
        &self.queue
    }

    /// The matchmaker, to change.
    pub(crate) fn queue_mut(&mut self) -> &mut M {
        &mut self.queue
    }

    /// The queue entry of a waiting user (what the cluster's matchmaker is sent).
    pub(crate) fn waiting_entry(&self, user: &str) -> Option<&Seeker> {
        self.queue.get(user)
    }

    /// Pairs two waiting users of this node that the cluster's matchmaker matched, in room `room`.
    /// `waiting` waited longer and starts the call. Changes nothing and returns `None` unless
    /// both still wait here.
    pub(crate) fn pair_waiting(
        &mut self,
        room: RoomId,
        waiting: &str,
        seeker: &str,
        now: Instant,
    ) -> Option<Vec<Effect>> {
        if waiting == seeker || !self.is_waiting(waiting) || !self.is_waiting(seeker) {
            return None;
        }
        let waiting = self.queue.claimed(waiting)?;
        let seeker = self.queue.claimed(seeker)?;
        Some(self.open_pair(room, waiting, seeker, now))
    }

    /// Opens `room` for two seekers the cluster's matchmaker paired; `waiting` starts the call.
    fn open_pair(
        &mut self,
        room: RoomId,
        waiting: Seeker,
        seeker: Seeker,
        now: Instant,
    ) -> Vec<Effect> {
        let common_interests = seeker.prefs.common_interests(&waiting.prefs);
        let mut out = Vec::with_capacity(2);
        self.pair_in(
            room,
            Pairing {
                waiting,
                seeker,
                common_interests,
            },
            now,
            &mut out,
        );
        out
    }

    /// Opens room `room` between `local`, a waiting user of this node, and `partner`, a user of
    /// another node reached through `link`. `local_initiates` says which side waited longer.
    /// Returns the `matched` for the local user, or `None` (changing nothing) when `local` no
    /// longer waits or `partner`'s id is in use here.
    pub(crate) fn adopt(
        &mut self,
        room: RoomId,
        local: &str,
        partner: Seeker,
        link: L,
        local_initiates: bool,
        now: Instant,
    ) -> Option<Vec<Effect>> {
        if !self.is_waiting(local) || self.users.contains_key(&partner.user) {
            return None;
        }
        let mine = self.queue.claimed(local)?;
        self.insert_ghost(&partner.user, link, &partner.profile, &partner.prefs);
        let (waiting, seeker) = if local_initiates {
            (mine, partner)
        } else {
            (partner, mine)
        };
        Some(self.open_pair(room, waiting, seeker, now))
    }

    /// Records `id`, a user of another node reached through `link`, as a ghost.
    fn insert_ghost(
        &mut self,
        id: &UserId,
        link: L,
        profile: &Arc<Profile>,
        prefs: &Arc<crate::model::profile::Preferences>,
    ) {
        self.users.insert(
            id.clone(),
            User {
                link,
                profile: profile.clone(),
                prefs: prefs.clone(),
                last_status: None,
                previous: None,
                resume_token: new_token(),
                away_until: None,
                missed: None,
                holds: false,
                ghost: true,
            },
        );
        self.ghosts.insert(id.clone());
    }

    /// The link of local user `to` for a message another node sends it from its partner in
    /// `room`: `None` unless that is still `to`'s room and `to` is connected. Room ids are
    /// unique, so the room names the sender.
    pub(crate) fn inbound(&self, to: &str, room: &str) -> Option<&L> {
        self.rooms.of_user(to).filter(|r| *r.id == *room)?;
        if self.ghosts.contains(to) {
            return None;
        }
        self.link(to)
    }

    /// Another node says the partner of local user `to` left `room` (or is gone with its node):
    /// the room closes and `to` is told `partner-left` with `reason`. Changes nothing when
    /// `room` is not `to`'s room any more.
    pub(crate) fn remote_left(
        &mut self,
        to: &str,
        room: &str,
        reason: Reason,
        now: Instant,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        let ghost = self
            .rooms
            .of_user(to)
            .filter(|r| *r.id == *room)
            .and_then(|r| r.partner_of(to))
            .filter(|p| self.ghosts.contains(*p))
            .cloned();
        if let Some(g) = ghost {
            self.close_room_of(&g, reason, now, &mut out);
        }
        out
    }

    /// The rooms whose ghost's link satisfies `pred` (the ghosts of a node that died).
    pub(crate) fn ghosts_where(&self, pred: impl Fn(&L) -> bool) -> Vec<GhostRoom> {
        self.ghosts
            .iter()
            .filter(|g| self.users.get(*g).is_some_and(|u| pred(&u.link)))
            .filter_map(|g| {
                let room = self.rooms.of_user(g)?;
                Some(GhostRoom {
                    local: room.partner_of(g)?.clone(),
                    room: room.id.clone(),
                    ghost: g.clone(),
                })
            })
            .collect()
    }

    /// Every ghost (a local user's partner on another node) and its link.
    pub(crate) fn ghost_links(&self) -> impl Iterator<Item = (&UserId, &L)> {
        self.ghosts
            .iter()
            .filter_map(|g| self.users.get(g).map(|u| (g, &u.link)))
    }

    /// A user whose connection dropped and whose room is held: its resume token.
    pub(crate) fn away_token(&self, user: &str) -> Option<&str> {
        self.users
            .get(user)
            .filter(|u| u.away_until.is_some() && !u.ghost)
            .map(|u| &*u.resume_token)
    }

    /// `user`, away from this node within its grace, came back through another node reached by
    /// `to`, presenting `token` (`None`: the other node verified its identity). Gives the room
    /// up: a local partner stays here with `user` as its ghost (and is told
    /// `partner-reconnected`); a partner that is itself a ghost leaves with the room, and the
    /// caller tells its node. `None`, changing nothing, when `user` is not away here with a room
    /// or the token is wrong.
    pub(crate) fn hand_over(
        &mut self,
        user: &str,
        token: Option<&str>,
        to: L,
        recovered: bool,
    ) -> Option<Handover<L>> {
        let u = self.users.get(user)?;
        let until = u.away_until?;
        if u.ghost || !token.is_none_or(|t| super::same_secret(t, &u.resume_token)) {
            return None;
        }
        let room = self.rooms.of_user(user)?.clone();
        let partner = room.partner_of(user)?.clone();
        let initiator = *room.initiator == *user;
        let (id, _) = self.users.get_key_value(user)?;
        let id = id.clone();
        self.away.remove(&(until, id.clone()));
        if self.ghosts.contains(&partner) {
            let partner_link = self.users.get(&partner).map(|p| p.link.clone());
            self.rooms.close(&room.id);
            self.calls.closed(&room.id);
            self.users.remove(&id);
            self.users.remove(&partner);
            self.ghosts.remove(&partner);
            return Some(Handover {
                room: room.id,
                partner,
                partner_link,
                initiator,
                effects: Vec::new(),
            });
        }
        let u = self.users.get_mut(&id)?;
        u.link = to;
        u.away_until = None;
        u.ghost = true;
        self.ghosts.insert(id.clone());
        let mut effects = Vec::new();
        self.tell_reconnected(&partner, &room.id, id, recovered, &mut effects);
        Some(Handover {
            room: room.id,
            partner,
            partner_link: None,
            initiator,
            effects,
        })
    }

    /// `user`, a ghost here (its partner is a user of this node), came back through this node
    /// and its old node handed the session over: it becomes a user of this node again, in the
    /// same room. It gets `rejoined`, its partner `partner-reconnected` (`recovered`: the
    /// client recovered its session and gets nothing).
    pub(crate) fn reclaim(
        &mut self,
        user: &str,
        link: L,
        profile: Option<Profile>,
        recovered: bool,
    ) -> Joined<L> {
        let token = new_token();
        let mut effects = Vec::new();
        if let Some(id) = self.users.get_key_value(user).map(|(id, _)| id.clone()) {
            let u = self.users.get_mut(&id).expect("just found");
            u.link = link;
            u.ghost = false;
            u.resume_token = token.clone();
            if let Some(p) = profile {
                u.profile = Arc::new(p);
            }
            self.ghosts.remove(&id);
            self.departed.retain(|g| *g != id);
            if let Some(room) = self.rooms.of_user(&id) {
                let partner = room.partner_of(&id).expect("a member").clone();
                // A recovered client never knew it left: nothing to tell it.
                if !recovered {
                    effects.push(Effect::new(
                        &id,
                        Event::Rejoined(Rejoined {
                            room_id: room.id.clone(),
                            partner_id: partner.clone(),
                            is_initiator: room.initiator == id,
                        }),
                    ));
                }
                let room_id = room.id.clone();
                self.tell_reconnected(&partner, &room_id, id, recovered, &mut effects);
            }
        }
        Joined {
            resume_token: token,
            resumed: true,
            replaced: None,
            held: None,
            effects,
        }
    }

    /// `partner-reconnected` for `partner`, if it is connected, about `back` in `room`.
    fn tell_reconnected(
        &self,
        partner: &UserId,
        room: &RoomId,
        back: UserId,
        recovered: bool,
        out: &mut Vec<Effect>,
    ) {
        if self.link(partner).is_some() {
            out.push(Effect::new(
                partner,
                Event::PartnerReconnected(PartnerReconnected {
                    room_id: room.clone(),
                    partner_id: back,
                    recovered,
                }),
            ));
        }
    }

    /// The other half of [`hand_over`](Self::hand_over): `user`, connected here, takes back
    /// its `seat` with the partner, reached through `link`. Returns its `rejoined` (nothing when
    /// `recovered`: its client never knew it left), or `None` when it is already in another
    /// room.
    pub(crate) fn take_over(
        &mut self,
        user: &str,
        seat: Seat,
        link: L,
        recovered: bool,
        now: Instant,
    ) -> Option<Vec<Effect>> {
        let Seat {
            room,
            partner,
            initiator,
        } = seat;
        let id = self.present(user).ok()?;
        if self.rooms.of_user(user).is_some() || self.users.contains_key(&partner) {
            return None;
        }
        self.queue.remove(user);
        self.insert_ghost(&partner, link, &Arc::default(), &Arc::default());
        let (initiator_id, responder) = if initiator {
            (id.clone(), partner.clone())
        } else {
            (partner.clone(), id.clone())
        };
        self.calls.opened(&room, now);
        self.rooms.open(Room {
            id: room.clone(),
            initiator: initiator_id,
            responder,
            created: now,
            deadline: now + self.cfg.max_room_duration,
        });
        if recovered {
            return Some(Vec::new());
        }
        Some(vec![Effect::new(
            &id,
            Event::Rejoined(Rejoined {
                room_id: room,
                partner_id: partner,
                is_initiator: initiator,
            }),
        )])
    }

    /// The ghost partner of local user `to` in `room` now lives behind `link` (it came back
    /// through another node): `to` is told `partner-reconnected`.
    pub(crate) fn relink(&mut self, to: &str, room: &str, link: L, recovered: bool) -> Vec<Effect> {
        let Some((to, room, ghost)) =
            self.rooms
                .of_user(to)
                .filter(|r| *r.id == *room)
                .and_then(|r| {
                    let ghost = r.partner_of(to).filter(|g| self.ghosts.contains(*g))?;
                    Some((r.partner_of(ghost)?.clone(), r.id.clone(), ghost.clone()))
                })
        else {
            return Vec::new();
        };
        if let Some(g) = self.users.get_mut(&ghost) {
            g.link = link;
        }
        let mut out = Vec::with_capacity(1);
        self.tell_reconnected(&to, &room, ghost, recovered, &mut out);
        out
    }

    /// The users waiting on this node, longest-waiting first.
    pub(crate) fn waiting_users(&self) -> impl Iterator<Item = &UserId> {
        self.queue.waiting().map(|s| &s.user)
    }

    /// Rooms whose other member is on another node.
    pub(crate) fn shared_rooms(&self) -> usize {
        self.ghosts
            .iter()
            .filter(|g| self.rooms.of_user(g).is_some())
            .count()
    }

    /// Whether `user` is a ghost: the partner of a local user, connected to another node.
    pub(crate) fn is_ghost(&self, user: &str) -> bool {
        self.ghosts.contains(user)
    }

    /// Forgets the ghosts whose room closed. Call it once the effects of the operation that
    /// closed their rooms were delivered.
    pub(crate) fn settle(&mut self) {
        for g in std::mem::take(&mut self.departed) {
            if self.rooms.of_user(&g).is_none() {
                self.users.remove(&g);
                self.ghosts.remove(&g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::super::event::Event;
    use super::*;
    use crate::core::{Claim, CoreConfig};
    use crate::model::ErrorCode;

    /// Links: a positive number is a local socket, a negative one the node of a ghost.
    type TestCore = Core<i32>;

    fn waiting(c: &mut TestCore, id: &str, link: i32, t: Instant) {
        c.join(id.into(), link, None, Claim::Named { resume: None })
            .unwrap();
        c.find(id, None, t).unwrap();
        assert!(c.is_waiting(id));
    }

    fn remote(id: &str, waited: Duration, now: Instant) -> Seeker {
        Seeker {
            user: id.into(),
            profile: Arc::default(),
            prefs: Arc::default(),
            since: now - waited,
            previous: None,
        }
    }

    /// Opens room `room` between waiting `local` and the ghost `far` (linked `-7`), who waited
    /// no longer: `local` starts the call.
    fn adopt_ghost(c: &mut TestCore, room: &str, local: &str, far: &str) -> Option<Vec<Effect>> {
        let t = Instant::now();
        c.adopt(
            room.into(),
            local,
            remote(far, Duration::ZERO, t),
            -7,
            true,
            t,
        )
    }

    fn names(out: &[Effect]) -> Vec<(&str, &'static str)> {
        out.iter().map(|e| (&*e.to, e.event.name())).collect()
    }

    #[test]
    fn a_ghost_lives_and_leaves_with_its_room() {
        let t = Instant::now();
        let mut c = TestCore::new(CoreConfig::default());
        waiting(&mut c, "local", 1, t);
        let out = c
            .adopt(
                "r1".into(),
                "local",
                remote("far", Duration::from_secs(2), t),
                -7,
                false,
                t,
            )
            .expect("local waits");
        // Only the local member is told here; the ghost's node tells its own user.
        assert_eq!(names(&out), [("local", "matched")]);
        let Event::Matched(m) = &out[0].event else {
            unreachable!()
        };
        assert!(!m.is_initiator, "the partner waited longer");
        assert_eq!(&*m.partner_id, "far");
        assert_eq!(
            c.live().connected_users,
            1,
            "a ghost is not a user of this node"
        );
        assert_eq!(c.live().active_rooms, 1);
        assert_eq!(c.shared_rooms(), 1);
        c.check_invariants().unwrap();

        // Relays to the ghost go to its node; messages from it reach the local member only in
        // the room they were sent for.
        let (to, link) = c.route("local", "r1", Some("far")).unwrap();
        assert_eq!((&**to, *link), ("far", -7));
        assert_eq!(c.inbound("local", "r1"), Some(&1));
        assert_eq!(c.inbound("local", "other-room"), None);
        assert_eq!(
            c.inbound("far", "r1"),
            None,
            "nothing is delivered to a ghost"
        );

        // The ghost's node says it left: the local member is told, the ghost goes.
        let out = c.remote_left("local", "r1", Reason::NextPartner, t);
        assert_eq!(names(&out), [("local", "partner-left")]);
        c.settle();
        assert!(!c.is_ghost("far"));
        assert_eq!(c.live().active_rooms, 0);
        c.check_invariants().unwrap();
        // A stale goodbye for the same room changes nothing.
        assert!(
            c.remote_left("local", "r1", Reason::NextPartner, t)
                .is_empty()
        );
    }

    #[test]
    fn leaving_a_shared_room_tells_the_ghost_and_forgets_it() {
        let t = Instant::now();
        let mut c = TestCore::new(CoreConfig::default());
        waiting(&mut c, "local", 1, t);
        adopt_ghost(&mut c, "r1", "local", "far").unwrap();
        let out = c.end("local", t).unwrap();
        assert_eq!(
            names(&out),
            [("far", "partner-left"), ("local", "chat-ended")]
        );
        // The effect for the ghost can still be routed until the caller settles.
        assert_eq!(c.link("far"), Some(&-7));
        c.settle();
        assert_eq!(c.link("far"), None);
        c.check_invariants().unwrap();
    }

    #[test]
    fn a_dead_nodes_rooms_are_found_and_adoption_is_refused_when_it_cannot_hold() {
        let t = Instant::now();
        let mut c = TestCore::new(CoreConfig::default());
        waiting(&mut c, "a", 1, t);
        adopt_ghost(&mut c, "r1", "a", "x").unwrap();
        // "a" no longer waits: a second adoption is refused and changes nothing.
        assert!(
            c.adopt(
                "r2".into(),
                "a",
                remote("y", Duration::ZERO, t),
                -8,
                true,
                t
            )
            .is_none()
        );
        // An id in use here cannot become a ghost, and a ghost's id cannot log in here.
        waiting(&mut c, "b", 2, t);
        assert!(
            c.adopt(
                "r3".into(),
                "b",
                remote("a", Duration::ZERO, t),
                -8,
                true,
                t
            )
            .is_none()
        );
        assert!(
            c.is_waiting("b"),
            "a refused adoption leaves the search alone"
        );
        let joined = c.join("x".into(), 3, None, Claim::Named { resume: None });
        assert!(matches!(joined, Err(ErrorCode::UserIdTaken)));
        let dead = c.ghosts_where(|l| *l == -7);
        assert_eq!(
            dead,
            [GhostRoom {
                local: "a".into(),
                room: "r1".into(),
                ghost: "x".into()
            }]
        );
        assert!(c.ghosts_where(|l| *l == -8).is_empty());
        c.check_invariants().unwrap();
    }
}
