//! The operators' API, behind `ADMIN_TOKEN` (`Authorization: Bearer …`): look a user up, kick
//! it, ban a user id or an address for a time, lift a ban, read the reports. Every answer is
//! JSON; a refusal is `{code, message}`. Without `ADMIN_TOKEN` the API does not exist (404).
//!
//! Nothing of a request is read before its caller is known: the token is checked from the
//! request's head (a layer in front of every route), and only then is a body read, at most
//! [`MAX_BODY`] bytes within [`BODY_WAIT`]. A stranger cannot make the node hold more than the
//! connection's read buffer, whatever it sends or however slowly.

use std::sync::Arc;

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::moderation::{
    Ban, MAX_BAN_SECS, MIN_PREFIX, Refused, Source, Target, narrow_enough, new_ban_id,
    parse_address,
};
use crate::node::Hub;
use crate::node::moderator::Kick;
use crate::protocol::incoming::{MAX_REASON_CHARS, check_user_id};
use crate::protocol::outgoing::now_ms;

/// Most reports one page of the feed holds.
const MAX_PAGE: usize = 500;
/// Largest admin request body: a ban or a kick is a few hundred bytes.
pub(crate) const MAX_BODY: usize = 4096;
/// How long an admin request body may take to arrive.
pub(crate) const BODY_WAIT: Duration = Duration::from_secs(3);

/// The admin routes' state.
#[derive(Clone)]
struct Admin {
    hub: Arc<Hub>,
    token: Option<Arc<str>>,
}

/// The routes, bound to the node; `token` is `ADMIN_TOKEN`.
pub(crate) fn routes(hub: Arc<Hub>, token: Option<String>) -> Router {
    let admin = Admin {
        hub,
        token: token.map(Into::into),
    };
    Router::new()
        .route("/admin/users/{user_id}", get(user))
        .route("/admin/kick", post(kick))
        .route("/admin/bans", post(ban).get(bans))
        .route("/admin/bans/{id}", delete(unban))
        .route("/admin/reports", get(reports))
        // Runs once the route matched and before any extractor: the body is still unread.
        .route_layer(middleware::from_fn_with_state(admin.clone(), guard))
        .with_state(admin)
}

/// Refuses a request whose token is missing or wrong (or every request without
/// `ADMIN_TOKEN`) from its head alone; the body is dropped unread.
async fn guard(State(a): State<Admin>, req: Request, next: Next) -> Response {
    match unauthorized(&a, req.headers()) {
        Some(refusal) => refusal,
        None => next.run(req).await,
    }
}

/// The body of an authorized request: at most [`MAX_BODY`] bytes, arrived within
/// [`BODY_WAIT`]; otherwise the refusal to answer.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    match tokio::time::timeout(BODY_WAIT, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("an admin request body has at most {MAX_BODY} bytes"),
        )),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the body did not arrive within {} s", BODY_WAIT.as_secs()),
        )),
    }
}

/// A refusal: the status and `{code, message}`.
fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = Json(serde_json::json!({"code": code, "message": message.into()}));
    if status == StatusCode::UNAUTHORIZED {
        return (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
    }
    (status, body).into_response()
}

/// Checks the bearer token (in constant time): `Some` is the refusal to answer instead.
fn unauthorized(admin: &Admin, headers: &HeaderMap) -> Option<Response> {
    let Some(want) = &admin.token else {
        return Some(refuse(
            StatusCode::NOT_FOUND,
            "admin-disabled",
            "the admin API needs ADMIN_TOKEN to be set",
        ));
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match got {
        Some(got) if crate::http::token_matches(want, got) => None,
        Some(_) => Some(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong token",
        )),
        None => Some(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <ADMIN_TOKEN>",
        )),
    }
}

/// A JSON body of type `T`, or why it is not one.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| crate::echo::clip_to(&e.to_string(), 200).to_owned())
}

/// `GET /admin/users/{userId}`.
async fn user(State(a): State<Admin>, Path(id): Path<String>) -> Response {
    match a.hub.lookup_anywhere(&id).await {
        Some(view) => Json(view).into_response(),
        None => refuse(StatusCode::NOT_FOUND, "not-found", "no such user here"),
    }
}

/// `POST /admin/kick {userId, reason?}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KickIn {
    user_id: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn kick(State(a): State<Admin>, raw: Body) -> Response {
    let raw = match read_body(raw).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let k: KickIn = match body(&raw) {
        Ok(k) => k,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid-payload", e),
    };
    let reason = k.reason.unwrap_or_default();
    if let Err(r) = check_user_id(&k.user_id).and(check_reason(&reason)) {
        return refuse(StatusCode::BAD_REQUEST, r.code.as_str(), r.message);
    }
    match a.hub.kick(&k.user_id, &reason) {
        Kick::Done => {
            Json(serde_json::json!({"kicked": true, "userId": k.user_id})).into_response()
        }
        Kick::Forwarded => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"kicked": "forwarded", "userId": k.user_id})),
        )
            .into_response(),
        Kick::NotConnected => refuse(
            StatusCode::NOT_FOUND,
            "not-found",
            "that user is not connected",
        ),
    }
}

/// `POST /admin/bans {userId | address, durationSec, reason}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BanIn {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    address: Option<String>,
    duration_sec: u64,
    reason: String,
    /// Takes an address prefix shorter than /8 (IPv4) or /32 (IPv6).
    #[serde(default)]
    force: bool,
}

fn check_reason(reason: &str) -> Result<(), crate::model::Reject> {
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(crate::model::Reject::invalid(format!(
            "reason may have at most {MAX_REASON_CHARS} characters"
        )));
    }
    Ok(())
}

async fn ban(State(a): State<Admin>, raw: Body) -> Response {
    let raw = match read_body(raw).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let b: BanIn = match body(&raw) {
        Ok(b) => b,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid-payload", e),
    };
    let bad = |m: &str| refuse(StatusCode::BAD_REQUEST, "invalid-payload", m);
    let target = match (b.user_id, b.address) {
        (Some(u), None) => match check_user_id(&u) {
            Ok(()) => Target::User(u),
            Err(r) => return bad(&r.message),
        },
        (None, Some(addr)) => match parse_address(&addr) {
            Some(net) if !narrow_enough(&net) && !b.force => {
                let (v4, v6) = MIN_PREFIX;
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "prefix-too-broad",
                    format!(
                        "{net} covers too many addresses: give a prefix of /{v4} (IPv4) or \
                         /{v6} (IPv6) or longer, or \"force\": true"
                    ),
                );
            }
            Some(net) => Target::Address(net),
            None => {
                return bad("address must be an IPv4 or IPv6 address or prefix (203.0.113.0/24)");
            }
        },
        _ => return bad("give exactly one of userId and address"),
    };
    if !(1..=MAX_BAN_SECS).contains(&b.duration_sec) {
        return bad(&format!("durationSec must be 1 to {MAX_BAN_SECS}"));
    }
    if let Err(r) = check_reason(&b.reason) {
        return bad(&r.message);
    }
    let now = now_ms();
    let made = a
        .hub
        .ban(Ban {
            id: new_ban_id(),
            target,
            until: now + b.duration_sec * 1000,
            reason: b.reason,
            created: now,
            source: Source::Operator,
            force: b.force,
        })
        .await;
    match made {
        Ok(ban) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"id": ban.id, "until": ban.until})),
        )
            .into_response(),
        Err(Refused::Full) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-bans",
            "the node keeps at most 100000 bans; lift some first",
        ),
        Err(Refused::NotDurable) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "the ban could not be written to DATA_DIR and would not survive a restart: nothing \
             was banned (see the server's log)",
        ),
    }
}

/// `GET /admin/bans`.
async fn bans(State(a): State<Admin>) -> Response {
    Json(serde_json::json!({"bans": a.hub.bans()})).into_response()
}

/// `DELETE /admin/bans/{id}`.
async fn unban(State(a): State<Admin>, Path(id): Path<String>) -> Response {
    match a.hub.unban(&id) {
        Some(ban) => Json(serde_json::json!({"removed": ban})).into_response(),
        None => refuse(StatusCode::NOT_FOUND, "not-found", "no such ban"),
    }
}

/// `GET /admin/reports?limit=&before=`.
#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    before: Option<u64>,
}

async fn reports(
    State(a): State<Admin>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(page)) = page else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid-payload",
            "limit and before must be whole numbers",
        );
    };
    let limit = page.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    // One more than asked tells whether there is a next page.
    let mut reports = a.hub.reports(limit + 1, page.before);
    let more = reports.len() > limit;
    reports.truncate(limit);
    // The cursor of the next page: the oldest report of this one.
    let next = more.then(|| reports.last().map(|r| r.id)).flatten();
    Json(serde_json::json!({"reports": reports, "nextBefore": next})).into_response()
}
