//! Roulette: a Socket.IO signaling and matchmaking server for random one-to-one video chat.
//!
//! The modules form layers; each uses only those of the lines before its own (the whole map,
//! and where a new event, setting or metric goes, is `ARCHITECTURE.md`; `scripts/layers.py`
//! checks the graph in the test command):
//! - `model`: the vocabulary (ids, profiles, call states, error codes, reasons), a leaf;
//! - `echo`, `assets` and `ws` (the Engine.IO / Socket.IO transport, which hands clients up
//!   through two traits and knows nothing above it);
//! - `protocol`: the payloads on the wire;
//! - `core` and `moderation`: the pure, synchronous rules (queue, matching, rooms; bans,
//!   reports, the auto-ban), free of I/O and clocks;
//! - `limits`, `auth`, `ice`, `bus` (the cluster's Redis connection, messages, the cluster's matchmaker and
//!   scripts), `metrics` (rendered from a snapshot), `store` (moderation's file) and `webhook`;
//! - `node`: the node's state and its one delivery funnel, taking a session back, moderation
//!   applied to connections;
//! - `signaling` (one handler per Socket.IO event), `cluster` (what a node does with the bus),
//!   `http` (health, statistics, ICE servers, the dashboard) and `admin` (the operators' API);
//! - `config`: every setting, and each module's slice of it;
//! - `app`: wires it all together, serves and shuts down; its accept loop serves long-polling
//!   requests on an HTTP/1 path of its own (`app::http1`, without hyper's buffers) and the rest
//!   with hyper.

// Private by default: an item is `pub` only when it is part of the surface re-exported below.
#![warn(missing_docs, unreachable_pub)]

pub(crate) mod admin;
pub(crate) mod app;
pub(crate) mod assets;
pub(crate) mod auth;
pub(crate) mod bus;
pub(crate) mod cluster;
pub(crate) mod config;
pub(crate) mod core;
pub(crate) mod echo;
pub(crate) mod http;
pub(crate) mod ice;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod moderation;
pub(crate) mod node;
pub(crate) mod protocol;
pub(crate) mod signaling;
pub(crate) mod store;
pub(crate) mod webhook;
pub(crate) mod ws;

// The library's public surface: what the binary, the integration tests and the benchmarks use.
pub use app::{App, build, run, serve};
pub use auth::Verifier;
pub use config::{Config, LogFormat};
pub use core::matchmaker::{Matchmaker, PreferenceMatchmaker, Seeker};
pub use ice::{turn_credential, unix_now};
pub use model::profile::{Gender, GenderWish, Preferences, Profile};
pub use node::{Hub, Link};
pub use signaling::handlers::EVENTS;
