//! The domain's vocabulary, below everything else: ids, profiles and preferences, call states,
//! error codes and the reasons a room or search ends. The core and the wire protocol both speak
//! it; neither depends on the other.

pub mod call;
pub mod errors;
pub mod profile;
pub mod reason;

use std::sync::Arc;

pub use errors::{ErrorCode, Reject};

/// A user id: cheap to clone, shared by every index that names the user.
pub type UserId = Arc<str>;
/// A room id.
pub type RoomId = Arc<str>;
