//! Roulette's own WebSocket transport (direct WebSocket clients), spoken byte by byte where the
//! official clients cannot misbehave: framing, fragments, limits, heartbeats, namespaces, binary
//! packets.

mod common;

use std::time::Duration;

use common::TestServer;
use common::raw::Raw;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_fragments_and_control_frames_follow_the_rfc() {
    let s = TestServer::start(&["--ping-interval-ms", "4000"]).await;
    let mut c = Raw::open(&s).await;
    let open = c.join().await;
    assert_eq!(
        open["upgrades"],
        json!([]),
        "a direct WebSocket has nowhere to upgrade"
    );
    assert_eq!(open["pingInterval"], 4000);
    assert_eq!(open["maxPayload"], 65536);
    // One event in three fragments, with a ping between them.
    c.frame(1, false, br#"42["authenticate",{"use"#, true).await;
    c.frame(9, true, b"are you there", true).await;
    c.frame(0, false, br#"rId":"frag"#, true).await;
    c.frame(0, true, br#"ment"}]"#, true).await;
    assert_eq!(c.next().await, Some((10, b"are you there".to_vec())));
    assert_eq!(c.expect("authenticated").await["userId"], "fragment");
    assert_eq!(s.hub.sockets(), 1, "served by the native transport");
    // An unmasked client frame is a protocol error: close 1002.
    c.frame(1, true, b"42[\"ping\"]", false).await;
    assert_eq!(c.close_code().await, Some(1002));
    s.wait_stats("the user gone", |v| v["connectedUsers"] == 0)
        .await;
    assert_eq!(s.hub.sockets(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_packets_close_with_their_codes() {
    let s = TestServer::start(&["--max-message-bytes", "4096"]).await;
    let mut big = Raw::open(&s).await;
    big.join().await;
    big.text(&format!("42[\"chat-message\",\"{}\"]", "x".repeat(5000)))
        .await;
    assert_eq!(big.close_code().await, Some(1009), "message too big");

    let mut utf = Raw::open(&s).await;
    utf.join().await;
    utf.frame(1, true, b"42[\"\xff\"]", true).await;
    assert_eq!(utf.close_code().await, Some(1007), "invalid UTF-8");

    let mut junk = Raw::open(&s).await;
    junk.join().await;
    junk.text("9hello").await;
    assert_eq!(
        junk.close_code().await,
        Some(1002),
        "not an Engine.IO packet"
    );

    let mut bye = Raw::open(&s).await;
    bye.join().await;
    bye.frame(8, true, &1001u16.to_be_bytes(), true).await;
    assert_eq!(
        bye.close_code().await,
        Some(1001),
        "the close code is echoed"
    );

    // 1005 means "no code given" and must never be sent (RFC 6455, 7.4.1): answered with 1000.
    let mut odd = Raw::open(&s).await;
    odd.join().await;
    odd.frame(8, true, &1005u16.to_be_bytes(), true).await;
    assert_eq!(odd.close_code().await, Some(1000), "1005 is not echoed");

    // None of that harmed anyone else.
    let (mut a, mut b, room) = s.pair("alice", "bob").await;
    a.emit(
        "chat-message",
        json!({"roomId": room, "message": "still here"}),
    )
    .await;
    assert_eq!(b.expect("chat-message").await["message"], "still here");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_namespaces_and_binary_events_are_refused_without_closing() {
    let s = TestServer::start(&[]).await;
    let mut c = Raw::open(&s).await;
    c.next_text().await;
    c.text("40/admin,").await;
    assert_eq!(
        c.next_text().await,
        r#"44/admin,{"message":"Invalid namespace"}"#
    );
    c.text("40").await;
    assert!(c.next_text().await.starts_with("40{"));
    c.text(r#"451-["authenticate",{"_placeholder":true,"num":0}]"#)
        .await;
    c.frame(2, true, &[1, 2, 3], true).await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], "binary-not-supported");
    assert_eq!(e["event"], "authenticate");
    // Acknowledgements come back as `43<id>[...]`.
    c.text(r#"427["authenticate",{"userId":"after-binary"}]"#)
        .await;
    assert_eq!(c.expect("authenticated").await["userId"], "after-binary");
    assert_eq!(c.next_text().await, r#"437[{"ok":true}]"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_dropped_and_its_partner_told() {
    let s = TestServer::start(&["--ping-interval-ms", "1000", "--ping-timeout-ms", "1000"]).await;
    let mut silent = Raw::open(&s).await;
    silent.searching_as("silent").await;
    let mut b = s.user("bob").await;
    b.emit("find-random-partner", json!({})).await;
    b.expect("matched").await;
    // `silent` reads but never answers the pings: gone after interval + timeout.
    let away = tokio::time::timeout(Duration::from_secs(4), b.expect("partner-reconnecting"))
        .await
        .expect("the partner is told within interval + timeout");
    assert_eq!(away["partnerId"], "silent");
    assert_eq!(silent.close_code().await, None, "the connection is cut");
    s.wait_stats("bob alone", |v| v["connectedUsers"] == 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_released_while_its_user_is_away() {
    let s = TestServer::start(&["--reconnect-grace-ms", "30000"]).await;
    let (a, mut b, _room) = s.pair("alice", "bob").await;
    a.abort();
    assert_eq!(b.expect("partner-reconnecting").await["partnerId"], "alice");
    // Alice is away for the grace, and the core still links her old connection, but the
    // connection itself (its socket, its file descriptor) is gone.
    // Her session is held (what is sent to her is kept): she is reached through it, and it
    // has no socket.
    match s.hub.link_of("alice") {
        Some(roulette::Link::Local(r)) => assert!(!r.is_open(), "the held session has no socket"),
        other => panic!("alice should be held: {other:?}"),
    }
    match s.hub.kept_link_of("alice") {
        Some(roulette::Link::Local(r)) => {
            assert!(!r.is_open(), "the socket of an away user is closed")
        }
        other => panic!("alice should be away with her old link: {other:?}"),
    }
    assert_eq!(s.hub.sockets(), 1);
}

/// A client may send its first frames right behind its handshake, before the 101 comes: they
/// are read after it, not lost with the request's head (the server takes the head off the
/// socket itself and leaves what follows there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_with_the_handshake_are_answered_after_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(&[]).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut req = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        s.addr
    )
    .into_bytes();
    req.extend(Raw::encode(1, b"40"));
    tcp.write_all(&req).await.unwrap();
    let find = |got: &[u8], what: &[u8]| got.windows(what.len()).position(|w| w == what);
    let mut got = Vec::new();
    while find(&got, b"40{\"sid\"").is_none() {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk))
            .await
            .expect("the server answers the pipelined `40`")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    let head = &text[..text.find("\r\n\r\n").expect("a whole head")];
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(lower.contains("connection: upgrade"), "{head}");
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(
        !lower.contains("content-length"),
        "a 101 has no length: {head}"
    );
    let open = find(&got, b"0{\"sid\"").unwrap();
    let joined = find(&got, b"40{\"sid\"").unwrap();
    assert!(
        open < joined,
        "the open packet, then the `40` reply: {text}"
    );
}
