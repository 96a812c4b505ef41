//! Plain HTTP routes: `/health` for load balancers, `/stats` for operators.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router, routing::get};
use serde::Serialize;

use crate::protocol::outgoing::now_ms;
use crate::signaling::Hub;

/// The routes, bound to the hub.
pub fn routes(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/stats", get(stats))
        .with_state(hub)
}

/// `GET /health` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok`, or `shutting-down` (with status 503).
    pub status: &'static str,
    /// Seconds since start.
    pub uptime: f64,
    /// The server's version.
    pub version: &'static str,
    /// Server time, ms since the epoch.
    pub timestamp: u64,
    /// Live counts.
    pub stats: crate::protocol::outgoing::ServerStats,
}

async fn health(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    let stopping = hub.is_shutting_down();
    let body = Health {
        status: if stopping { "shutting-down" } else { "ok" },
        uptime: hub.started.elapsed().as_secs_f64(),
        version: env!("CARGO_PKG_VERSION"),
        timestamp: now_ms(),
        stats: hub.lock().live(),
    };
    let code = if stopping {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body))
}

/// `GET /stats` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Authenticated users connected now.
    pub connected_users: usize,
    /// Users waiting for a partner now.
    pub waiting_users: usize,
    /// Users whose connection dropped and whose room is held for them to come back.
    pub reconnecting_users: usize,
    /// Rooms open now.
    pub active_rooms: usize,
    /// Users in rooms now (twice the rooms).
    pub users_in_rooms: usize,
    /// Matches since start.
    pub total_matches: u64,
    /// Matches in the last 60 s.
    pub matches_last_minute: usize,
    /// Mean wait of users matched in the last 5 minutes, ms.
    pub average_wait_time: u64,
    /// 95th-percentile wait of users matched in the last 5 minutes, ms.
    pub p95_wait_time: u64,
    /// `report-user` events since start.
    pub reports_total: u64,
    /// Seconds since start.
    pub uptime: f64,
    /// Process memory.
    pub memory: Memory,
    /// Server time, ms since the epoch.
    pub timestamp: u64,
}

/// Process memory figures, from `/proc/self/statm` (zero where unavailable).
#[derive(Serialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

impl Memory {
    /// Reads the current figures.
    pub fn read() -> Memory {
        let rss_pages = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        Memory {
            rss_bytes: rss_pages * 4096,
        }
    }
}

async fn stats(State(hub): State<Arc<Hub>>) -> Json<Stats> {
    let s = hub.lock().stats(Instant::now());
    Json(Stats {
        connected_users: s.live.connected_users,
        waiting_users: s.live.waiting_users,
        reconnecting_users: s.reconnecting_users,
        active_rooms: s.live.active_rooms,
        users_in_rooms: 2 * s.live.active_rooms,
        total_matches: s.total_matches,
        matches_last_minute: s.matches_last_minute,
        average_wait_time: s.waits.average_ms,
        p95_wait_time: s.waits.p95_ms,
        reports_total: s.reports,
        uptime: hub.started.elapsed().as_secs_f64(),
        memory: Memory::read(),
        timestamp: now_ms(),
    })
}
