//! Where connections come in: the accept loop, the per-address cap on connections still in the
//! HTTP stage, and the two ways a connection is served: Roulette's own HTTP/1 path for
//! long-polling requests ([`super::http1`]) and hyper for everything else (pages, the API,
//! WebSocket upgrades).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use tokio::net::TcpListener;

/// The TCP connections each peer address holds in the HTTP stage (accepted, not yet closed or
/// upgraded): one address cannot hold thousands of idle sockets open until the header timeout.
#[derive(Default, Clone)]
struct InHttp(Arc<parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One connection's place in [`InHttp`], given back when dropped.
struct HttpSlot {
    of: InHttp,
    ip: std::net::IpAddr,
}

impl InHttp {
    /// A place for a connection from `ip`, unless it holds `max` already (0: no limit).
    fn admit(&self, ip: std::net::IpAddr, max: usize) -> Option<HttpSlot> {
        let mut map = self.0.lock();
        let n = map.entry(ip).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(HttpSlot {
            of: self.clone(),
            ip,
        })
    }
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        let mut map = self.of.0.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Largest HTTP/1 read buffer per connection. hyper's default lets it grow to about 400 KB and
/// the buffer of an upgraded connection is not given back while the WebSocket lives (measured:
/// 16 KB per idle connection with axum's `serve`); a Socket.IO handshake needs far less.
const HTTP_READ_BUFFER: usize = 8192;

/// Accepts connections and serves each with hyper's HTTP/1 (upgrades included) until `stop`
/// turns true; then lets the open connections finish their current request.
///
/// Written out instead of `axum::serve` to set what that cannot: TCP_NODELAY (Nagle's algorithm
/// holds small relayed packets back ~40 ms waiting for an ACK), the read buffer size, and the
/// client address for the limits (`ConnectInfo`).
pub(super) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    per_address: usize,
    max_body: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(HTTP_READ_BUFFER)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let http = Arc::new(http);
    let in_http = InHttp::default();
    // Linux gives an accepted socket the listener's TCP_NODELAY: set once here, it saves a
    // system call per connection (elsewhere each connection sets it).
    let inherited = cfg!(target_os = "linux")
        && socket2::SockRef::from(&listener)
            .set_tcp_nodelay(true)
            .is_ok();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            // The flag only ever turns true: any change means stop.
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let Some(slot) = in_http.admit(peer.ip(), per_address) else {
            tracing::debug!(ip = %peer.ip(), "connection dropped: too many in the HTTP stage");
            crate::metrics::http_connection_refused();
            continue;
        };
        if !inherited && let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let polling_router = router.clone();
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move {
                    use tower::ServiceExt;
                    router.oneshot(req.map(axum::body::Body::new)).await
                }
            });
        let http = http.clone();
        let mut stop = stop.clone();
        conns.spawn(async move {
            // Held until the connection's last response, or until an upgrade took the socket
            // (a WebSocket is counted by the transport from then on).
            let _slot = slot;
            // Long-polling requests first, on a path that keeps no buffer between them; the
            // first other request hands the socket to hyper, with what was read of it.
            let tcp = match super::http1::serve(tcp, peer, polling_router, max_body, stop.clone())
                .await
            {
                super::http1::Next::Done => return,
                super::http1::Next::Hyper(tcp) => tcp,
            };
            // Boxed: a connection that never gets here (long-polling only) does not carry
            // hyper's connection state in its task.
            let mut conn = Box::pin(
                http.serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades(),
            );
            tokio::select! {
                r = conn.as_mut() => { r.ok(); }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await.ok();
                }
            }
        });
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}
