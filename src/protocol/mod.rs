//! The wire protocol: event payloads in both directions and the error codes.
//!
//! Everything a client sends is parsed here into typed, bounded values before the core sees it.

pub mod incoming;
pub mod outgoing;

pub use crate::echo::{ECHO_BYTES, clip, clip_to};
