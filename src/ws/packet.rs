//! Engine.IO v4 and Socket.IO v5 packets as they travel in WebSocket text messages: reading what
//! a client sends, writing what the server sends. Pure functions, no I/O.
//!
//! An Engine.IO packet is one type digit and its data (`3` pong, `4` message, `1` close...). A
//! message carries one Socket.IO packet: `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`.

use std::fmt::Write as _;

/// What one text message from a client asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    /// Engine.IO `3`: the answer to the server's ping.
    Pong,
    /// Engine.IO `1`: the client closes the transport.
    Close,
    /// Engine.IO `6` (and a client's own `2` ping, which v4 clients do not send): nothing to do.
    Noop,
    /// Socket.IO `0`: join a namespace, with the handshake's `auth` object as JSON.
    Connect {
        /// The namespace (`/` by default).
        ns: &'a str,
        /// The `auth` object, if the client gave one.
        auth: Option<&'a str>,
    },
    /// Socket.IO `1`: leave a namespace.
    Disconnect {
        /// The namespace.
        ns: &'a str,
    },
    /// Socket.IO `2` (or `5` with binary attachments): an event.
    Event {
        /// The namespace.
        ns: &'a str,
        /// The acknowledgement id when the client waits for an answer.
        ack: Option<i64>,
        /// The JSON array `["name", ...args]`.
        data: &'a str,
        /// How many binary WebSocket messages follow with the attachments.
        attachments: u32,
    },
    /// Socket.IO `3`/`6`: an acknowledgement. The server never asks for one; a binary one's
    /// attachments still have to be read past.
    Ack {
        /// How many binary WebSocket messages follow.
        attachments: u32,
    },
}

/// A text message that is not an Engine.IO / Socket.IO packet this server understands; the
/// connection is closed, as the Socket.IO protocol says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadPacket;

/// Reads one text message. Total over every string: the packet's structure is all ASCII, so the
/// text is only ever split where an ASCII byte was found (`split_once`, `strip_prefix`), never at
/// a byte offset that could fall inside a character (`4é` once panicked here).
pub(crate) fn parse(text: &str) -> Result<Incoming<'_>, BadPacket> {
    if let Some(p) = text.strip_prefix('4') {
        return socket_io(p);
    }
    match text.as_bytes().first() {
        Some(b'3') => Ok(Incoming::Pong),
        Some(b'1') => Ok(Incoming::Close),
        Some(b'2' | b'6') => Ok(Incoming::Noop),
        _ => Err(BadPacket),
    }
}

/// Splits off the leading run of ASCII digits (which may be empty).
fn digits(s: &str) -> (&str, &str) {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    // `n` bytes of ASCII digits end on a character boundary, so this never fails.
    s.split_at_checked(n).unwrap_or(("", s))
}

/// Reads the Socket.IO packet inside an Engine.IO message.
fn socket_io(p: &str) -> Result<Incoming<'_>, BadPacket> {
    let (kind, mut rest) = match p.as_bytes().first() {
        Some(k @ b'0'..=b'6') => (*k, p.get(1..).ok_or(BadPacket)?),
        _ => return Err(BadPacket),
    };
    let mut attachments = 0;
    if kind == b'5' || kind == b'6' {
        let (count, after) = rest.split_once('-').ok_or(BadPacket)?;
        attachments = count.parse().map_err(|_| BadPacket)?;
        rest = after;
    }
    let mut ns = "/";
    if rest.starts_with('/') {
        (ns, rest) = rest.split_once(',').unwrap_or((rest, ""));
    }
    match kind {
        b'0' => Ok(Incoming::Connect {
            ns,
            auth: (!rest.is_empty()).then_some(rest),
        }),
        b'1' => Ok(Incoming::Disconnect { ns }),
        b'2' | b'5' => {
            let (id, data) = digits(rest);
            let ack = if id.is_empty() {
                None
            } else {
                Some(id.parse().map_err(|_| BadPacket)?)
            };
            Ok(Incoming::Event {
                ns,
                ack,
                data,
                attachments,
            })
        }
        b'3' | b'6' => Ok(Incoming::Ack { attachments }),
        _ => Err(BadPacket),
    }
}

/// The Engine.IO handshake: `0{"sid":...}`. A long-polling session may upgrade to WebSocket;
/// a direct WebSocket connection has nowhere to upgrade.
pub(crate) fn open(
    sid: &str,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload: usize,
    upgrades: bool,
) -> String {
    let upgrades = if upgrades { r#"["websocket"]"# } else { "[]" };
    format!(
        r#"0{{"sid":"{sid}","upgrades":{upgrades},"pingInterval":{ping_interval_ms},"pingTimeout":{ping_timeout_ms},"maxPayload":{max_payload}}}"#
    )
}

/// The answer to a namespace connect: `40{"sid":...}`, with the session's `pid` when it can be
/// recovered (`40{"sid":...,"pid":...}`). Both are ids of URL-safe characters.
pub(crate) fn connected(sid: &str, pid: Option<&str>) -> String {
    match pid {
        Some(pid) => format!(r#"40{{"sid":"{sid}","pid":"{pid}"}}"#),
        None => format!(r#"40{{"sid":"{sid}"}}"#),
    }
}

/// A refused namespace connect: `44[/ns,]{"message":...}`. The namespace is the client's own
/// text: only its first [`crate::echo::ECHO_BYTES`] bytes are repeated back.
pub(crate) fn connect_error(ns: &str, message: &str) -> String {
    let mut s = String::from("44");
    if ns != "/" {
        s.push_str(crate::echo::clip(ns));
        s.push(',');
    }
    let body = serde_json::json!({ "message": message });
    write!(s, "{body}").expect("writing to a String cannot fail");
    s
}

/// The server's ping.
pub(crate) const PING: &str = "2";

/// The server's namespace disconnect: the client must not reconnect on its own.
pub(crate) const DISCONNECT: &str = "41";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_io_packets_are_read() {
        assert_eq!(parse("3"), Ok(Incoming::Pong));
        assert_eq!(parse("1"), Ok(Incoming::Close));
        assert_eq!(parse("6"), Ok(Incoming::Noop));
        assert_eq!(parse(""), Err(BadPacket));
        assert_eq!(parse("5"), Err(BadPacket));
        assert_eq!(parse("x"), Err(BadPacket));
        assert_eq!(parse("4"), Err(BadPacket));
    }

    #[test]
    fn connects_carry_namespace_and_auth() {
        assert_eq!(
            parse("40"),
            Ok(Incoming::Connect {
                ns: "/",
                auth: None
            })
        );
        assert_eq!(
            parse(r#"40{"token":"t"}"#),
            Ok(Incoming::Connect {
                ns: "/",
                auth: Some(r#"{"token":"t"}"#)
            })
        );
        assert_eq!(
            parse(r#"40/admin,{"a":1}"#),
            Ok(Incoming::Connect {
                ns: "/admin",
                auth: Some(r#"{"a":1}"#)
            })
        );
        assert_eq!(parse("41"), Ok(Incoming::Disconnect { ns: "/" }));
        assert_eq!(
            parse("41/admin,"),
            Ok(Incoming::Disconnect { ns: "/admin" })
        );
    }

    #[test]
    fn events_carry_ack_ids_and_attachments() {
        assert_eq!(
            parse(r#"42["ping",{}]"#),
            Ok(Incoming::Event {
                ns: "/",
                ack: None,
                data: r#"["ping",{}]"#,
                attachments: 0
            })
        );
        assert_eq!(
            parse(r#"4217["next"]"#),
            Ok(Incoming::Event {
                ns: "/",
                ack: Some(17),
                data: r#"["next"]"#,
                attachments: 0
            })
        );
        assert_eq!(
            parse(r#"451-/x,3["up",{"_placeholder":true,"num":0}]"#),
            Ok(Incoming::Event {
                ns: "/x",
                ack: Some(3),
                data: r#"["up",{"_placeholder":true,"num":0}]"#,
                attachments: 1
            })
        );
        assert_eq!(parse("462-5[]"), Ok(Incoming::Ack { attachments: 2 }));
        assert_eq!(parse("45x-[]"), Err(BadPacket));
        assert_eq!(parse("45[]"), Err(BadPacket));
        assert_eq!(parse("4299999999999999999999[]"), Err(BadPacket));
        assert_eq!(parse("47[]"), Err(BadPacket));
    }

    #[test]
    fn a_character_after_a_type_digit_is_a_bad_packet_not_a_panic() {
        assert_eq!(parse("4é"), Err(BadPacket));
        assert_eq!(parse("é"), Err(BadPacket));
        assert_eq!(parse("45é-[]"), Err(BadPacket));
        assert_eq!(parse("4\u{10FFFF}"), Err(BadPacket));
        assert_eq!(
            parse("40/é"),
            Ok(Incoming::Connect {
                ns: "/é",
                auth: None
            })
        );
        assert!(matches!(
            parse("42é"),
            Ok(Incoming::Event {
                data: "é",
                ack: None,
                ..
            })
        ));
    }

    proptest::proptest! {
        /// Every string is either a packet or a bad one; none panics the parser.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC*", prefix in "[0-6]{0,3}") {
            let whole = format!("4{prefix}{text}");
            let _ = parse(&whole);
            let _ = parse(&text);
        }
    }

    #[test]
    fn server_packets_are_what_socket_io_clients_expect() {
        assert_eq!(
            open("abc", 25000, 20000, 65536, false),
            r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":65536}"#
        );
        assert!(open("abc", 300, 200, 1_000_000, true).contains(r#""upgrades":["websocket"]"#));
        assert_eq!(connected("s1", None), r#"40{"sid":"s1"}"#);
        assert_eq!(connected("s1", Some("p1")), r#"40{"sid":"s1","pid":"p1"}"#);
        assert_eq!(
            connect_error("/", "rate-limited"),
            r#"44{"message":"rate-limited"}"#
        );
        assert_eq!(
            connect_error("/a", "Invalid namespace"),
            r#"44/a,{"message":"Invalid namespace"}"#
        );
        let long = format!("/{}", "n".repeat(60_000));
        let refused = connect_error(&long, "Invalid namespace");
        assert!(refused.len() < 120, "{} bytes", refused.len());
        assert!(
            refused.starts_with(&format!("44{},", &long[..64])),
            "{refused}"
        );
    }
}
