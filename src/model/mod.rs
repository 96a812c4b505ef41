//! The domain's vocabulary, below everything else: ids, profiles and preferences, call states,
//! error codes, the reasons a room or search ends, what a wait estimate rests on. The core and the wire protocol both speak
//! it; neither depends on the other.

pub(crate) mod call;
pub(crate) mod errors;
pub(crate) mod profile;
pub(crate) mod reason;
pub(crate) mod wait;

use std::sync::Arc;

use serde::Serialize;

pub(crate) use errors::{ErrorCode, Reject};
pub(crate) use wait::WaitBasis;

/// A user id: cheap to clone, shared by every index that names the user.
pub(crate) type UserId = Arc<str>;

/// A random (version 4) UUID from the thread's CSPRNG. `Uuid::new_v4` asks the kernel
/// (`getrandom`) each time unless uuid's `fast-rng` brings a second version of `rand`: five
/// system calls of every session (its id, resume token, room) come to none.
pub(crate) fn uuid_v4() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// A room id.
pub(crate) type RoomId = Arc<str>;

/// The live counts sent inside `authenticated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerStats {
    /// Authenticated users connected now.
    pub connected_users: usize,
    /// Users waiting for a partner now.
    pub waiting_users: usize,
    /// Rooms (pairs) open now.
    pub active_rooms: usize,
}
