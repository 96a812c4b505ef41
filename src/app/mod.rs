//! Wiring: the transport, the HTTP routes, CORS and origin checks, the timer, and an orderly
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{Config, Environment, Origins};
use accept::accept_loop;

mod accept;
pub(crate) mod http1;
use crate::node::Hub;
use crate::protocol::outgoing::{ServerShutdown, now_ms};

/// How often time-driven work (room and search expiry, queue positions) runs.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// The assembled application: the router to serve and the shared state.
pub struct App {
    /// Every HTTP route, Socket.IO included.
    pub router: Router,
    /// Shared state.
    pub hub: Arc<Hub>,
    /// The settings it was built from (for serving: shutdown, the cluster, the HTTP stage).
    pub config: Config,
}

/// Builds the application from its settings, or says why they cannot work.
pub fn build(config: Config) -> Result<App, String> {
    let origins = Arc::new(config.client_origin.clone());
    let assets = Arc::new(config.assets());
    let hub = Hub::new(config.node())?;
    if let Some(w) = hub.ice.warning() {
        tracing::warn!("{w}");
    }
    crate::metrics::init();
    let transport = crate::ws::Transport {
        conns: hub.conns.clone(),
        upper: hub.clone(),
    };

    let web = crate::http::Settings {
        admin_token: config.admin_token.clone(),
        assets: config.assets(),
    };
    let router = crate::http::routes(hub.clone(), web)
        .merge(crate::admin::routes(
            hub.clone(),
            config.admin_token.clone(),
        ))
        .fallback_service(axum::routing::any(crate::assets::serve).with_state(assets))
        .layer(middleware::from_fn_with_state(
            transport,
            crate::ws::intercept,
        ))
        .layer(cors(&origins))
        .layer(middleware::from_fn_with_state(origins, check_origin))
        .layer(middleware::from_fn_with_state(
            hub.clone(),
            limit_per_address,
        ));
    Ok(App {
        router,
        hub,
        config,
    })
}

/// Per-address limits on the HTTP side: a request that opens a new Engine.IO connection (a
/// `/socket.io/` request without a session id) counts against `MAX_NEW_CONNECTIONS_PER_IP`, any
/// other request except `/health` and an existing session's traffic against
/// `RATE_LIMIT_MAX_REQUESTS`. Over the limit: 429 with `Retry-After` and the JSON error.
async fn limit_per_address(State(hub): State<Arc<Hub>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let Some(ip) = hub.limits.client_ip(req.headers(), peer) else {
        return next.run(req).await;
    };
    let verdict = if path.starts_with("/socket.io") {
        let new_session = !req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("sid=")));
        if new_session && hub.is_shutting_down() {
            // Its sessions are being handed over: a client comes back through another node.
            return unavailable("The server is restarting; try again in a moment", "1");
        }
        if new_session && hub.waiting_for_cluster() {
            // A node that would match alone splits the queue: no session until Redis answers.
            return unavailable(
                "The server is waiting for Redis; try again in a moment",
                "2",
            );
        }
        if new_session && let Some(ban) = hub.address_ban(ip) {
            let body = axum::Json(serde_json::json!({
                "code": "banned",
                "message": "Connections from your address are banned",
                "until": ban.until,
            }));
            return (StatusCode::FORBIDDEN, body).into_response();
        }
        if new_session {
            hub.limits
                .admit_connection(ip)
                .map_err(|w| (w, "connections"))
        } else {
            Ok(())
        }
    } else if path == "/health" || path == "/health/live" {
        Ok(())
    } else {
        hub.limits.admit_request(ip).map_err(|w| (w, "requests"))
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err((wait, what)) => {
            tracing::debug!(%ip, path, "rate-limited");
            crate::metrics::rate_limited(if what == "connections" {
                "connection"
            } else {
                "request"
            });
            let r = crate::model::Reject::rate_limited(what, wait);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let body = axum::Json(serde_json::json!({
                "code": r.code,
                "message": r.message,
                "retryAfterMs": r.retry_after_ms,
            }));
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.max(1).to_string())],
                body,
            )
                .into_response()
        }
    }
}

fn cors(origins: &Origins) -> CorsLayer {
    let base = CorsLayer::new().allow_methods([Method::GET, Method::POST, Method::OPTIONS]);
    match origins {
        Origins::Any => base
            .allow_origin(tower_http::cors::Any)
            .allow_headers(tower_http::cors::Any),
        Origins::List(list) => base
            .allow_origin(AllowOrigin::list(
                list.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
            ))
            .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
            .allow_credentials(true),
    }
}

/// Browsers do not apply CORS to WebSocket upgrades, so the Socket.IO endpoint checks the
/// `Origin` header itself. Requests without one (native apps, servers) are let through.
async fn check_origin(State(origins): State<Arc<Origins>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/socket.io")
        && let Some(origin) = req.headers().get(header::ORIGIN)
        && !origin.to_str().is_ok_and(|o| origins.allows(o))
    {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    next.run(req).await
}

/// Serves on `listener` until `shutdown` resolves, then shuts down within the configured
/// timeout: `/health` turns 503, every client gets `server-shutdown`, connections close.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if config.node_env == Environment::Production && config.client_origin == Origins::Any {
        tracing::warn!("CLIENT_ORIGIN is `*` in production: any web page may connect");
    }
    for (key, set) in [
        ("CLIENT_BUNDLE_DIR", config.client_bundle_dir.is_some()),
        ("CHART_BUNDLE_DIR", config.chart_bundle_dir.is_some()),
    ] {
        if set {
            tracing::warn!(
                "{key} no longer exists and is ignored: the client bundles are built in \
                 (STATIC_DIR/vendor/ overrides them)"
            );
        }
    }
    if config.native_websocket.is_some() {
        tracing::warn!(
            "NATIVE_WEBSOCKET no longer exists and is ignored: every client is served by \
             Roulette's own transport"
        );
    }
    if config.node_env == Environment::Production && config.admin_token.is_none() {
        tracing::warn!(
            "ADMIN_TOKEN is unset in production: /metrics and /dashboard are open to anyone who \
             reaches this port"
        );
    }
    let app =
        build(config).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    serve(listener, app, shutdown).await
}

/// `503` with `message`, to try again after `retry_after` seconds.
fn unavailable(message: &str, retry_after: &'static str) -> Response {
    let body = axum::Json(serde_json::json!({
        "code": "unavailable",
        "message": message,
    }));
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, retry_after)],
        body,
    )
        .into_response()
}

/// A node of a cluster that shuts down hands its sessions over: every connection closes as a
/// transport close (no Socket.IO disconnect, so the official client reconnects by itself, and
/// through another node, as this one refuses new sessions), its session is held here, and the
/// node its client comes back through asks for it (`node::recovered`). This node serves those
/// requests until it holds no session any more, or until a second before `deadline`.
async fn hand_over_sessions(hub: &crate::node::Hub, deadline: Instant) {
    for conn in hub.conns.all() {
        conn.close_for_shutdown();
    }
    let until = deadline
        - Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now()) / 2);
    let start = Instant::now();
    hub.conns
        .wait_drained(tokio::time::Instant::from_std(until), || {
            hub.conns.is_empty() && hub.conns.holding().sessions == 0
        })
        .await;
    let left = hub.conns.holding().sessions;
    tracing::info!(
        waited_ms = start.elapsed().as_millis() as u64,
        sessions_left = left,
        "sessions handed over to the other nodes"
    );
}

/// Serves an application built with [`build`] (tests keep its hub to inspect the state).
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let App {
        router,
        hub,
        config,
    } = app;
    let joining = tokio::spawn(crate::cluster::join(hub.clone(), config.bus()));
    let timeout = config.shutdown_timeout();
    let spread = config.reconnect_spread_ms;

    let ticker = tokio::spawn({
        let hub = hub.clone();
        async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0u64.. {
                every.tick().await;
                hub.tick(Instant::now());
                if n % 20 == 0 {
                    crate::metrics::upkeep();
                }
                if n % 40 == 0 {
                    hub.limits.prune();
                    let live = hub.all_sockets().iter().map(|s| s.id()).collect();
                    hub.limits.retain_open(&live);
                }
            }
        }
    });

    let heartbeat = tokio::spawn(hub.conns.clone().heartbeat());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let per_address = config.http_connections_per_ip();
    let max_body = config.max_message_bytes as usize;
    let server = tokio::spawn(accept_loop(
        listener,
        router,
        per_address,
        max_body,
        stop_rx,
    ));

    shutdown.await;
    let deadline = Instant::now() + timeout;
    tracing::info!(timeout_ms = timeout.as_millis() as u64, "shutting down");
    hub.begin_shutdown();
    let left = |d: Instant| d.saturating_duration_since(Instant::now());
    // One notice per socket, each with its own delay, so clients come back spread out.
    let notify = |socket: &crate::node::Sock| {
        let notice = ServerShutdown {
            message: "The server is restarting; reconnect in a moment",
            timestamp: now_ms(),
            reconnect_in_ms: 1000 + rand::random_range(0..=spread),
        };
        socket.emit("server-shutdown", &notice)
    };
    for socket in hub.all_sockets() {
        if let Err(e) = notify(&socket) {
            tracing::debug!(sid = %socket.id(), error = %e, "server-shutdown not sent");
        }
    }
    // Let the notice reach the wire before the transports close.
    tokio::time::sleep(left(deadline).min(Duration::from_millis(200))).await;
    if !joining.is_finished() {
        joining.abort();
    }
    let joined = joining.await.ok().flatten();
    if joined.is_some() && config.recovery_buffer_bytes > 0 {
        hand_over_sessions(&hub, deadline).await;
    }
    ticker.abort();
    if let Some((cluster, tasks)) = joined {
        crate::cluster::leave(&hub, &cluster, &tasks).await;
    }
    // Closing the server does not run disconnect handlers: forget everyone explicitly.
    hub.lock().clear();
    heartbeat.abort();
    for conn in hub.conns.all() {
        conn.close_for_shutdown();
    }
    // Each session's task writes its goodbye and ends; wait (within the deadline) until the
    // last is gone.
    hub.conns
        .wait_drained(tokio::time::Instant::from_std(deadline), || {
            hub.conns.is_empty()
        })
        .await;
    stop_tx.send(true).ok();
    match tokio::time::timeout(left(deadline), server).await {
        Ok(Ok(Ok(()))) => tracing::info!("stopped"),
        Ok(Ok(Err(e))) => return Err(e),
        Ok(Err(e)) => tracing::error!("server task failed: {e}"),
        Err(_) => tracing::warn!("connections still open at the shutdown deadline; exiting anyway"),
    }
    Ok(())
}
