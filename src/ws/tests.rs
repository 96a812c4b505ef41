//! The transport against a layer above that panics: whatever a handler does, the connection's
//! resources come back, on both transports.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// What the fake layer above saw.
#[derive(Default)]
struct Seen {
    admitted: Vec<Sid>,
    released: Vec<Sid>,
    /// Sessions told their client is gone, and whether it was lost.
    closed: Vec<(Sid, bool)>,
}

/// A layer above whose handler of the event `boom` panics.
#[derive(Default)]
struct Fake(Mutex<Seen>);

impl Upper for Fake {
    fn client_ip(&self, _: &http::HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        peer.map(|p| p.ip())
    }
    fn admit(&self, _: IpAddr, id: Sid) -> bool {
        self.0.lock().admitted.push(id);
        true
    }
    fn release(&self, _: IpAddr, id: Sid) {
        self.0.lock().released.push(id);
    }
    fn join(
        self: Arc<Self>,
        _: &ConnRef,
        _: Option<IpAddr>,
        _: Option<&str>,
    ) -> Result<Arc<dyn Events>, &'static str> {
        Ok(self)
    }
}

impl Events for Fake {
    fn event(&self, _: &ConnRef, data: &str, _: bool, _: Option<i64>) -> Handled {
        assert!(!data.contains("boom"), "a handler's bug");
        Handled::Done
    }
    fn closed(&self, conn: &ConnRef, gone: Gone) {
        self.0.lock().closed.push((conn.id(), gone != Gone::Left));
    }
}

/// Serves the transport on a loopback port, as the server's accept loop does (hyper's HTTP/1
/// with upgrades, the TCP stream handed to the WebSocket).
async fn serve(t: Transport) -> SocketAddr {
    use hyper_util::rt::TokioIo;
    let router = axum::Router::new()
        .fallback(|| async { "nothing here" })
        .layer(axum::middleware::from_fn_with_state(t, intercept));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                return;
            };
            let router = router.clone();
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let router = router.clone();
                async move {
                    use tower::ServiceExt;
                    router.oneshot(req.map(axum::body::Body::new)).await
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(super::Prefixed::new(Vec::new(), tcp)), service)
                    .with_upgrades(),
            );
        }
    });
    addr
}

fn transport(fake: &Arc<Fake>) -> Transport {
    Transport {
        conns: Arc::new(Conns::new(Settings {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_message_bytes: 65_536,
            buffer_packets: 1024,
            buffer_bytes: 262_144,
            recovery_grace: Duration::ZERO,
            recovery_bytes: 65_536,
        })),
        upper: fake.clone(),
    }
}

/// Waits until the session is fully given back: out of the registry, its address's place
/// released, the layer above told that its client was lost.
async fn assert_released(t: &Transport, fake: &Fake) {
    for _ in 0..200 {
        let done = {
            let seen = fake.0.lock();
            t.conns.is_empty() && !seen.released.is_empty() && !seen.closed.is_empty()
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let seen = fake.0.lock();
    assert!(t.conns.is_empty(), "the session is still registered");
    assert_eq!(seen.released, seen.admitted, "the address's place is back");
    assert_eq!(seen.closed.len(), 1, "the layer above was told once");
    assert_eq!(seen.closed[0].0, seen.admitted[0]);
    assert!(seen.closed[0].1, "as a lost connection");
}

/// Runs `test` on one thread with a recorder of its own, and returns what it counted.
fn with_metrics(test: impl AsyncFnOnce()) -> String {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || rt.block_on(test()));
    handle.render()
}

#[test]
fn a_panicking_handler_on_a_websocket_releases_everything() {
    let counted = with_metrics(async || {
        let fake = Arc::new(Fake::default());
        let t = transport(&fake);
        let addr = serve(t.clone()).await;
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let open = ws.next().await.unwrap().unwrap();
        assert!(open.to_text().unwrap().starts_with("0{"));
        ws.send(Message::text("40")).await.unwrap();
        let joined = ws.next().await.unwrap().unwrap();
        assert!(joined.to_text().unwrap().starts_with("40{"));
        ws.send(Message::text(r#"42["boom"]"#)).await.unwrap();
        // The server closes with 1011 (internal error), not by dropping the socket.
        let mut code = None;
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(Some(f)) = m {
                code = Some(u16::from(f.code));
            }
        }
        assert_eq!(code, Some(1011));
        assert_released(&t, &fake).await;
    });
    assert!(
        counted.contains("roulette_connection_panics_total 1"),
        "{counted}"
    );
}

#[test]
fn a_panicking_handler_on_long_polling_releases_everything() {
    let counted = with_metrics(async || {
        let fake = Arc::new(Fake::default());
        let t = transport(&fake);
        let addr = serve(t.clone()).await;
        let base = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
        let http = reqwest::Client::new();
        let open = http.get(&base).send().await.unwrap().text().await.unwrap();
        let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
        let url = format!("{base}&sid={}", open["sid"].as_str().unwrap());
        let post = |body: &'static str| http.post(&url).body(body).send();
        assert_eq!(post("40").await.unwrap().status(), 200);
        assert!(post(r#"42["boom"]"#).await.is_ok());
        // The session is over: the client is told so.
        let after = post("3").await.unwrap();
        assert_eq!(after.status(), 400);
        assert_released(&t, &fake).await;
    });
    assert!(
        counted.contains("roulette_connection_panics_total 1"),
        "{counted}"
    );
}

/// Within a batch (the core's lock is held through one), an event for a WebSocket is queued,
/// not written: the socket sees it only once the batch ends, in the order it was sent.
#[tokio::test]
async fn a_batch_writes_nothing_until_it_ends() {
    let fake = Arc::new(Fake::default());
    let t = transport(&fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let conn = t.conns.open(Sid::new(), None, true, Some(server));
    let handle = conn.handle();
    let mut got = [0u8; 64];
    {
        let _batch = Batch::begin();
        handle.emit("one", &1).unwrap();
        handle.emit("two", &2).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let early = client.try_read(&mut got);
        assert!(
            matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "written during the batch: {early:?}"
        );
    }
    let mut all = Vec::new();
    while all.len() < 2 * 2 + r#"42["one",1]42["two",2]"#.len() {
        client.readable().await.unwrap();
        if let Ok(n) = client.try_read(&mut got) {
            all.extend_from_slice(&got[..n]);
        }
    }
    // Two unmasked text frames, in order.
    assert_eq!(&all[2..13], br#"42["one",1]"#);
    assert_eq!(&all[15..], br#"42["two",2]"#);
}
