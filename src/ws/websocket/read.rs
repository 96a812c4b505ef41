//! Reading a WebSocket session's socket: what arrived, turned into messages and handed to the
//! packet handler, within one read turn.

use std::ops::ControlFlow;
use std::sync::Arc;

use super::super::frame::{Fed, Message, Violation};
use super::super::{Conn, End, Lost, Transport, TurnGuard, contained, on_packet};
use super::Reading;

/// Reads per wake-up before other connections get the thread.
const READS_PER_TURN: usize = 8;

/// Bytes read at once. 16 KiB takes a burst of relays, or a 3 KB SDP, in one system call.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The read buffer, one per thread: an idle connection holds none.
    static READ_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Reads what the socket has, within one turn.
///
/// A read that returns less than asked for emptied the socket's receive queue, so readiness is
/// cleared right there instead of by one more `recv` failing with `EAGAIN`: one system call less
/// per message in a ping-pong. tokio's readiness ticks make this safe: data arriving after the
/// read started bumps the tick, and the stale clear is ignored; an end of stream is a final
/// readiness that is never cleared.
pub(super) fn on_readable(t: &Transport, conn: &Arc<Conn>, st: &mut Reading) -> Option<End> {
    use std::io::Read as _;
    let tcp = conn.tcp.get().expect("a session on a WebSocket");
    let _turn = TurnGuard::begin(conn.id);
    READ_BUF.with_borrow_mut(|buf| {
        for _ in 0..READS_PER_TURN {
            if st.paused {
                return None;
            }
            let mut got = 0;
            let r = tcp.try_io(tokio::io::Interest::READABLE, || {
                got = (&*socket2::SockRef::from(tcp)).read(buf)?;
                if got > 0 && got < buf.len() {
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match r {
                Ok(()) if got == 0 => return Some(End::Lost(Lost::TransportClose)),
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && got > 0 => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(_) => return Some(End::Lost(Lost::TransportError)),
            }
            if let Some(end) = on_bytes(t, conn, st, buf.get_mut(..got).unwrap_or_default()) {
                return Some(end);
            }
            if got < buf.len() {
                return None;
            }
        }
        None
    })
}

/// Handles the messages in bytes just read; a panic in that ends the connection with 1011.
pub(super) fn on_bytes(
    t: &Transport,
    conn: &Arc<Conn>,
    st: &mut Reading,
    bytes: &mut [u8],
) -> Option<End> {
    contained(conn, || read_messages(t, conn, st, bytes)).unwrap_or_else(|end| {
        st.close_code = Some(1011);
        Some(end)
    })
}

/// Handles the messages in bytes just read.
fn read_messages(
    t: &Transport,
    conn: &Arc<Conn>,
    st: &mut Reading,
    bytes: &mut [u8],
) -> Option<End> {
    let Reading {
        reader,
        packets,
        paused,
        close_code,
    } = st;
    let mut end = None;
    let max = t.conns.settings.max_message_bytes;
    // The turn's answers are still queued here (written at its end): reading stops once they
    // fill the budget.
    let pause = || conn.over_budget();
    let fed = reader.feed_until(bytes, max, &pause, &mut |m| {
        let outcome = match m {
            Message::Text(_) if packets.skip > 0 => Err((End::Lost(Lost::BadPacket), 1002)),
            Message::Text(text) => match std::str::from_utf8(text) {
                Ok(text) => on_packet(t, conn, packets, text),
                Err(_) => Err((End::Lost(Lost::InvalidUtf8), 1007)),
            },
            Message::Binary(_) if packets.skip > 0 => {
                packets.skip -= 1;
                Ok(())
            }
            Message::Binary(_) => Err((End::Lost(Lost::BadPacket), 1003)),
            Message::Ping(p) => {
                conn.push_pong(p);
                Ok(())
            }
            Message::Close(code) => Err((End::Lost(Lost::TransportClose), echo_close(code))),
        };
        match outcome {
            Ok(()) => ControlFlow::Continue(()),
            Err((e, code)) => {
                end = Some(e);
                if e != End::SentAway {
                    *close_code = Some(code);
                }
                ControlFlow::Break(())
            }
        }
    });
    match fed {
        Ok(fed) => *paused = fed == Fed::Paused,
        Err(v) => {
            *close_code = Some(v.code());
            return Some(End::Lost(match v {
                Violation::Protocol => Lost::ProtocolError,
                Violation::TooBig => Lost::MessageTooBig,
            }));
        }
    }
    end
}

/// The close code to answer a client's close with: its own, as RFC 6455 asks, except the codes
/// that must never be sent (1005 "no status", 1006, 1015) and those outside the ranges an
/// endpoint may send: those are answered with 1000.
fn echo_close(code: Option<u16>) -> u16 {
    code.filter(|c| matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999))
        .unwrap_or(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_that_must_not_be_sent_are_answered_with_1000() {
        assert_eq!(echo_close(Some(1001)), 1001);
        assert_eq!(echo_close(Some(4000)), 4000);
        assert_eq!(echo_close(Some(1005)), 1000);
        assert_eq!(echo_close(Some(1006)), 1000);
        assert_eq!(echo_close(None), 1000);
    }
}
