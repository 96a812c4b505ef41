//! Roulette: a Socket.IO signaling and matchmaking server for random one-to-one video chat.
//!
//! Layers, from the outside in:
//! - [`config`]: typed, validated settings from flags, environment and `.env`;
//! - [`app`]: wires the HTTP routes and the Socket.IO layer together and owns shutdown;
//! - [`http`]: health, statistics and the dashboard route;
//! - [`assets`]: the demo page, dashboard and client bundles, built in;
//! - `http1`: long-polling requests served without hyper's per-connection buffers (a leaf
//!   below `app`, which hands it the router);
//! - [`signaling`]: one small handler per Socket.IO event (parse, validate, call the core, emit);
//! - [`ws`]: the Engine.IO / Socket.IO transport (WebSocket, long-polling, the upgrade), which
//!   hands clients and their events to `signaling` through two traits and knows nothing of it;
//! - [`core`]: the pure, synchronous rules (queue, matching, rooms), free of I/O;
//! - [`cluster`]: with `REDIS_URL`, the same service over several nodes: the shared queue,
//!   delivery between nodes, heartbeats;
//! - [`protocol`]: the payloads and error codes on the wire;
//! - `echo`: how much of a client's own text a reply may repeat (a leaf);
//! - [`limits`], [`auth`], [`ice`] and [`metrics`]: abuse limits, token authentication, ICE
//!   servers for clients, Prometheus metrics; used by the layers above.

pub mod app;
pub mod assets;
pub mod auth;
pub mod bus;
pub mod cluster;
pub mod config;
pub mod core;
mod echo;
pub mod http;
mod http1;
pub mod ice;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod node;
pub mod protocol;
pub mod signaling;
pub mod ws;
