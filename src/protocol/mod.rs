//! The wire protocol: event payloads in both directions and the error codes.
//!
//! Everything a client sends is parsed here into typed, bounded values before the core sees it.

// Input from the network reaches these parsers: an index or a string cut at an unchecked offset
// could panic a connection (`4é` did), so neither is allowed outside tests.
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

pub(crate) mod incoming;
pub(crate) mod outgoing;

pub(crate) use crate::echo::clip;
