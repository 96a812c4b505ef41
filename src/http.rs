//! Plain HTTP routes: `/health` for load balancers, `/stats`, `/metrics`, `/dashboard` and
//! `/dashboard/moderation` for operators, `/ice-servers` for clients.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use serde::Serialize;

use crate::node::Hub;
use crate::protocol::outgoing::now_ms;

/// What the HTTP routes need of the settings besides the node (built by [`crate::config`]).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `ADMIN_TOKEN`: the operator routes' bearer token (open when unset).
    pub admin_token: Option<String>,
    /// Where the dashboard page comes from.
    pub assets: crate::assets::Settings,
}

/// The routes' state: the node and the settings.
#[derive(Clone)]
struct Web {
    hub: Arc<Hub>,
    settings: Arc<Settings>,
}

impl axum::extract::FromRef<Web> for Arc<Hub> {
    fn from_ref(web: &Web) -> Self {
        web.hub.clone()
    }
}

impl axum::extract::FromRef<Web> for Arc<Settings> {
    fn from_ref(web: &Web) -> Self {
        web.settings.clone()
    }
}

/// The routes, bound to the node.
pub(crate) fn routes(hub: Arc<Hub>, settings: Settings) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/stats", get(stats))
        .route("/ice-servers", get(ice_servers))
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/dashboard", get(dashboard))
        // The page's own file name too: the static files would serve it without the token.
        .route("/dashboard.html", get(dashboard))
        .route("/dashboard/moderation", get(moderation_page))
        // Its file name too: the static files would serve it without its headers.
        .route("/moderation.html", get(moderation_page))
        .with_state(Web {
            hub,
            settings: Arc::new(settings),
        })
}

/// `GET /health` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Health {
    /// `ok`, `shutting-down` or `redis-down` (both with status 503).
    pub status: &'static str,
    /// In a cluster: this node's name and whether Redis answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
    /// Seconds since start.
    pub uptime: f64,
    /// The server's version.
    pub version: &'static str,
    /// Server time, ms since the epoch.
    pub timestamp: u64,
    /// Live counts.
    pub stats: crate::model::ServerStats,
    /// Where bans and reports are kept: `file`, `memory`, `redis`, or `failing` (`DATA_DIR`
    /// cannot be written: kept in memory, operators' bans refused with 503).
    pub moderation_store: &'static str,
}

async fn health(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    let stopping = hub.is_shutting_down();
    let cluster = hub.peers.cluster().map(|c| ClusterHealth {
        node: c.node.to_string(),
        redis: if c.redis_up() { "up" } else { "down" },
        nodes: c.figures().nodes,
    });
    let redis_down =
        cluster.as_ref().is_some_and(|c| c.redis == "down") || hub.waiting_for_cluster();
    let body = Health {
        status: if stopping {
            "shutting-down"
        } else if redis_down {
            "redis-down"
        } else {
            "ok"
        },
        cluster,
        uptime: hub.started.elapsed().as_secs_f64(),
        version: env!("CARGO_PKG_VERSION"),
        timestamp: now_ms(),
        stats: hub.lock().live(),
        moderation_store: hub.moderation_store(),
    };
    let code = if stopping || redis_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body))
}

/// `GET /health/live`: the process serves HTTP. Unlike `/health` it ignores Redis and
/// shutdown: a liveness probe that restarted nodes during a Redis outage would end calls that
/// carry on without it.
async fn live() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "alive" }))
}

/// The cluster part of `/health`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClusterHealth {
    /// This node's name.
    pub node: String,
    /// `up` or `down`.
    pub redis: &'static str,
    /// Live nodes seen at the last heartbeat.
    pub nodes: usize,
}

/// `GET /stats` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stats {
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
    /// Blocks this node keeps (`block-user`, `report-user`), at most `MAX_BLOCKS`.
    pub blocks: usize,
    /// Call outcomes, connection success, time to connect and grades.
    pub quality: crate::core::quality::QualitySummary,
    /// Seconds since start.
    pub uptime: f64,
    /// Process memory.
    pub memory: Memory,
    /// Server time, ms since the epoch.
    pub timestamp: u64,
    /// In a cluster: this node's name and the whole cluster's figures (the fields above are this
    /// node's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStats>,
}

/// The cluster part of `/stats`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClusterStats {
    /// This node's name.
    pub node: String,
    /// Whether Redis answers.
    pub redis_up: bool,
    /// Messages to or from other nodes that were lost (publish failed, inbox fell behind).
    pub messages_lost: u64,
    /// The node that matches for the cluster (holds the matching lease), as last seen.
    pub matcher: Option<String>,
    /// On that node only: the searches in the cluster's queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<usize>,
    /// Figures summed over the live nodes at the last heartbeat.
    #[serde(flatten)]
    pub figures: crate::bus::ClusterFigures,
}

/// Process memory figures, from `/proc/self/statm` (zero where unavailable).
#[derive(Serialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Memory {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

impl Memory {
    /// Reads the current figures.
    pub(crate) fn read() -> Memory {
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
        blocks: s.blocks,
        quality: s.quality,
        uptime: hub.started.elapsed().as_secs_f64(),
        memory: Memory::read(),
        timestamp: now_ms(),
        cluster: hub.peers.cluster().map(|c| ClusterStats {
            node: c.node.to_string(),
            redis_up: c.redis_up(),
            messages_lost: c.lost(),
            matcher: c.holder().map(|h| h.to_string()),
            queued: c.queued(),
            figures: c.figures(),
        }),
    })
}

/// The `token` query parameter some routes accept.
#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<String>,
}

/// The bearer token of a request, from `Authorization: Bearer …` or `?token=`.
fn bearer<'a>(headers: &'a HeaderMap, query: &'a TokenQuery) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query.token.as_deref())
}

/// Whether an operator route may be served: always without `ADMIN_TOKEN`, else only with it.
fn admin_allowed(settings: &Settings, headers: &HeaderMap, query: &TokenQuery) -> bool {
    match &settings.admin_token {
        None => true,
        Some(want) => bearer(headers, query).is_some_and(|got| token_matches(want, got)),
    }
}

/// Whether `got` is the operator token `want`, compared in constant time.
pub(crate) fn token_matches(want: &str, got: &str) -> bool {
    got.len() == want.len()
        && got
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// An operator request: extracting it refuses the request with 401 unless [`admin_allowed`].
struct Admin;

impl axum::extract::FromRequestParts<Web> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        web: &Web,
    ) -> Result<Self, Self::Rejection> {
        let q = Query::<TokenQuery>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .unwrap_or(TokenQuery {
                token: None,
                user_id: None,
            });
        if admin_allowed(&web.settings, &parts.headers, &q) {
            return Ok(Admin);
        }
        Err((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "ADMIN_TOKEN required\n",
        )
            .into_response())
    }
}

/// What `/metrics` shows of the node, read under one lock.
fn snapshot(hub: &Hub) -> crate::metrics::Snapshot {
    crate::metrics::Snapshot {
        stats: hub.lock().stats(Instant::now()),
        connections: hub.sockets(),
        output: hub.conns.output(),
        held: hub.conns.holding(),
        bans: hub.active_bans(),
        webhook_queue: hub.webhooks.as_ref().map(|w| w.queued()),
        moderation_store_failing: hub.moderation_store() == "failing",
        cluster: hub
            .peers
            .cluster()
            .map(|c| (c.redis_up(), c.figures(), c.links.up())),
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(_: Admin, State(hub): State<Arc<Hub>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&snapshot(&hub)),
    )
        .into_response()
}

/// `GET /dashboard`: the live dashboard page (built in, or `STATIC_DIR/dashboard.html`).
async fn dashboard(_: Admin, State(settings): State<Arc<Settings>>) -> Response {
    match crate::assets::get(&settings.assets, "dashboard.html").await {
        Some(page) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            page.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no dashboard.html\n").into_response(),
    }
}

/// The moderation page's Content-Security-Policy: its script and style come from this server
/// only (no inline script, so injected markup cannot run), it talks only to this server, no
/// other site may frame it (its buttons cannot be clicked through a disguise), and its sign-in
/// form can be submitted nowhere (a token typed into it never travels in a URL, even with the
/// script blocked).
const MODERATION_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// `GET /dashboard/moderation`: the operators' moderation page (built in, or
/// `STATIC_DIR/moderation.html`). The page itself is served to anyone: it holds no data, and
/// everything it shows or does goes through the admin API with the token the operator types
/// into it, sent as `Authorization: Bearer` (never in a URL, never in a cookie, so another site
/// can neither read the token nor make the browser act with it).
async fn moderation_page(State(settings): State<Arc<Settings>>) -> Response {
    match crate::assets::get(&settings.assets, "moderation.html").await {
        Some(page) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::CONTENT_SECURITY_POLICY, MODERATION_CSP),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::REFERRER_POLICY, "no-referrer"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            page.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no moderation.html\n").into_response(),
    }
}

/// `GET /ice-servers` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IceServersOut {
    /// RTCIceServer objects.
    pub ice_servers: Vec<crate::protocol::outgoing::IceServer>,
    /// Seconds the TURN credentials stay valid.
    pub ttl: u64,
}

/// `GET /ice-servers`: STUN/TURN servers with fresh credentials. With JWT authentication on, a
/// valid token (`Authorization: Bearer …`) is required and names the user; otherwise `?userId=`
/// (or `anonymous`) is the name inside the TURN username.
async fn ice_servers(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    let user = match &hub.verifier {
        Some(v) => match bearer(&headers, &q).map(|t| v.verify(t)) {
            Some(Ok(sub)) => sub,
            Some(Err(r)) => return error_response(StatusCode::UNAUTHORIZED, &r),
            None => {
                let r = crate::model::ErrorCode::TokenRequired.into();
                return error_response(StatusCode::UNAUTHORIZED, &r);
            }
        },
        None => match q.user_id {
            Some(id) => match crate::protocol::incoming::check_user_id(&id) {
                Ok(()) => id,
                Err(r) => return error_response(StatusCode::BAD_REQUEST, &r),
            },
            None => "anonymous".into(),
        },
    };
    Json(IceServersOut {
        ice_servers: hub.ice.servers(&user, crate::ice::unix_now()),
        ttl: hub.ice.ttl_secs(),
    })
    .into_response()
}

fn error_response(code: StatusCode, r: &crate::model::Reject) -> Response {
    (
        code,
        Json(serde_json::json!({"code": r.code, "message": r.message})),
    )
        .into_response()
}
