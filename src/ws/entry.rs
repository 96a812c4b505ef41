//! Every `/socket.io/` request starts here, and goes to long-polling or WebSocket.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::{Transport, polling, refuse, websocket};

/// The query of an Engine.IO request.
pub(super) struct Query<'a> {
    eio: Option<&'a str>,
    transport: Option<&'a str>,
    pub(super) sid: Option<&'a str>,
}

impl<'a> Query<'a> {
    fn parse(query: Option<&'a str>) -> Query<'a> {
        let mut q = Query {
            eio: None,
            transport: None,
            sid: None,
        };
        for kv in query.unwrap_or("").split('&') {
            match kv.split_once('=') {
                Some(("EIO", v)) => q.eio = Some(v),
                Some(("transport", v)) => q.transport = Some(v),
                Some(("sid", v)) => q.sid = Some(v),
                _ => {}
            }
        }
        q
    }
}

/// Serves every `/socket.io/` request: the long-polling handshake, polls and posts, and
/// WebSocket connections (direct, or the upgrade of a polling session). Anything else under
/// that path is refused with 400, as the protocol says.
pub(crate) async fn intercept(State(t): State<Transport>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path != "/socket.io" && !path.starts_with("/socket.io/") {
        return next.run(req).await;
    }
    let q = Query::parse(req.uri().query());
    if q.eio != Some("4") {
        return refuse(5, "Unsupported protocol version");
    }
    let sid = q.sid.map(str::to_owned);
    match q.transport {
        Some("polling") => polling::serve(t, req, sid.as_deref()).await,
        Some("websocket") => websocket::serve(t, req, sid.as_deref()),
        _ => refuse(0, "Transport unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read_by_key() {
        let q = Query::parse(Some("EIO=4&transport=polling&t=abc&sid=xyz"));
        assert_eq!(
            (q.eio, q.transport, q.sid),
            (Some("4"), Some("polling"), Some("xyz"))
        );
        let q = Query::parse(None);
        assert_eq!((q.eio, q.transport, q.sid), (None, None, None));
    }
}
