//! The wire protocol: event payloads in both directions and the error codes.
//!
//! Everything a client sends is parsed here into typed, bounded values before the core sees it.

pub(crate) mod incoming;
pub(crate) mod outgoing;

pub(crate) use crate::echo::clip;
