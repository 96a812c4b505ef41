//! Open rooms: who is paired with whom, and until when.
//!
//! A room lives exactly as long as its pair: it is removed in the same step that ends it, so an
//! ended room can never be counted, relayed into, or block a new search.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::{RoomId, UserId};

/// Two users in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Room {
    /// The room id the clients use.
    pub id: RoomId,
    /// The member told `isInitiator: true`: it creates the WebRTC offer.
    pub initiator: UserId,
    /// The other member.
    pub responder: UserId,
    /// When the pair was made.
    pub created: Instant,
    /// When the server ends the room on its own (`MAX_ROOM_DURATION_MS`).
    pub deadline: Instant,
}

impl Room {
    /// The other member, if `user` is one.
    pub(crate) fn partner_of(&self, user: &str) -> Option<&UserId> {
        if *self.initiator == *user {
            Some(&self.responder)
        } else if *self.responder == *user {
            Some(&self.initiator)
        } else {
            None
        }
    }

    /// How long the room has been open at `now`.
    pub(crate) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }
}

/// Every open room, indexed by id, by member and by deadline.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    by_id: HashMap<RoomId, Room>,
    by_user: HashMap<UserId, RoomId>,
    deadlines: BTreeSet<(Instant, RoomId)>,
}

impl Rooms {
    /// Opens a room. Neither member may be in a room already.
    pub(crate) fn open(&mut self, room: Room) {
        debug_assert!(!self.by_user.contains_key(&room.initiator));
        debug_assert!(!self.by_user.contains_key(&room.responder));
        self.by_user.insert(room.initiator.clone(), room.id.clone());
        self.by_user.insert(room.responder.clone(), room.id.clone());
        self.deadlines.insert((room.deadline, room.id.clone()));
        self.by_id.insert(room.id.clone(), room);
    }

    /// Removes a room and returns it.
    pub(crate) fn close(&mut self, id: &str) -> Option<Room> {
        let room = self.by_id.remove(id)?;
        self.by_user.remove(&room.initiator);
        self.by_user.remove(&room.responder);
        self.deadlines.remove(&(room.deadline, room.id.clone()));
        Some(room)
    }

    /// The room `user` is in.
    pub(crate) fn of_user(&self, user: &str) -> Option<&Room> {
        self.by_user.get(user).and_then(|id| self.by_id.get(id))
    }

    /// Ids of the rooms whose deadline is at or before `now`, earliest first.
    pub(crate) fn due(&self, now: Instant) -> Vec<RoomId> {
        self.deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Open rooms.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no room is open.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every open room, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Room> {
        self.by_id.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str, a: &str, b: &str, at: Instant, life: u64) -> Room {
        Room {
            id: id.into(),
            initiator: a.into(),
            responder: b.into(),
            created: at,
            deadline: at + Duration::from_millis(life),
        }
    }

    #[test]
    fn a_closed_room_is_gone_from_every_index() {
        let t = Instant::now();
        let mut rooms = Rooms::default();
        rooms.open(room("r1", "a", "b", t, 10));
        assert_eq!(
            rooms
                .of_user("b")
                .unwrap()
                .partner_of("b")
                .unwrap()
                .as_ref(),
            "a"
        );
        assert!(rooms.close("r1").is_some());
        assert!(rooms.of_user("a").is_none());
        assert!(rooms.is_empty());
        assert!(rooms.due(t + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn due_lists_rooms_past_their_deadline() {
        let t = Instant::now();
        let mut rooms = Rooms::default();
        rooms.open(room("r1", "a", "b", t, 10));
        rooms.open(room("r2", "c", "d", t, 20));
        assert_eq!(
            rooms.due(t + Duration::from_millis(15)),
            vec![RoomId::from("r1")]
        );
    }
}
