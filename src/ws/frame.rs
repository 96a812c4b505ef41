//! WebSocket frames (RFC 6455) for the server side: outgoing frames built in one allocation,
//! incoming bytes cut into messages. Header encoding and decoding are tungstenite's; what is
//! ours is the buffering, which keeps nothing allocated between messages.

use std::io::Cursor;
use std::ops::ControlFlow;

use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// Room left in front of a frame's payload for its header (2 + 8 bytes; servers do not mask).
const HEAD: usize = 10;

/// One frame to send, header included; `pos` counts what was already written.
#[derive(Debug)]
pub(crate) struct OutFrame {
    buf: Vec<u8>,
    pos: usize,
}

impl OutFrame {
    /// The unsent end of a frame, kept for later.
    pub(crate) fn rest(bytes: &[u8]) -> Self {
        OutFrame {
            buf: bytes.to_vec(),
            pos: 0,
        }
    }

    /// A text frame.
    pub(crate) fn text(payload: &str) -> Self {
        Self::with(OpCode::Data(Data::Text), payload.as_bytes())
    }

    /// A close frame with a status code.
    pub(crate) fn close(code: u16) -> Self {
        Self::with(OpCode::Control(Control::Close), &code.to_be_bytes())
    }

    /// The answer to a ping.
    pub(crate) fn pong(payload: &[u8]) -> Self {
        Self::with(OpCode::Control(Control::Pong), payload)
    }

    fn with(opcode: OpCode, payload: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(HEAD + payload.len());
        buf.resize(HEAD, 0);
        buf.extend_from_slice(payload);
        Self::finish(buf, opcode)
    }

    /// Writes the header right in front of the payload.
    fn finish(mut buf: Vec<u8>, opcode: OpCode) -> Self {
        let pos = put_header(&mut buf, opcode);
        OutFrame { buf, pos }
    }

    /// Everything queued of the frame, also what was written of it: the whole frame for one
    /// queued whole with [`rest`](Self::rest) (as events are); for one made here, its unused
    /// head room too.
    pub(crate) fn whole(&self) -> &[u8] {
        &self.buf
    }

    /// What is left to write.
    pub(crate) fn remaining(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Marks `n` more bytes as written; true once the whole frame is.
    pub(crate) fn advance(&mut self, n: usize) -> bool {
        self.pos += n;
        self.pos >= self.buf.len()
    }
}

/// Encodes a text frame into `buf` (emptied first) whose payload `write` appends; returns where
/// the frame starts in `buf`. Used with a reusable buffer, so that an event the kernel takes at
/// once costs no allocation.
pub(crate) fn encode_text<E>(
    buf: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<usize, E> {
    buf.clear();
    buf.resize(HEAD, 0);
    write(buf)?;
    Ok(put_header(buf, OpCode::Data(Data::Text)))
}

/// Writes the header of the payload at `buf[HEAD..]` right in front of it; returns where it
/// starts.
fn put_header(buf: &mut [u8], opcode: OpCode) -> usize {
    let len = (buf.len() - HEAD) as u64;
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let mut head = Cursor::new([0u8; HEAD]);
    header
        .format(len, &mut head)
        .expect("a frame header fits in 10 bytes");
    let n = head.position() as usize;
    let pos = HEAD - n;
    if let (Some(to), Some(from)) = (buf.get_mut(pos..HEAD), head.get_ref().get(..n)) {
        to.copy_from_slice(from);
    }
    pos
}

/// The Engine.IO packet a server frame carries, as a long-polling response holds it: a text
/// frame's payload, `1` (close) for a close frame, and nothing for the rest (pongs).
pub(crate) fn polled(frame: &[u8]) -> Option<&[u8]> {
    let (&first, rest) = frame.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let skip = match len & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let payload = rest.get(skip..)?;
    match first & 0x0f {
        0x1 => Some(payload),
        0x8 => Some(b"1"),
        _ => None,
    }
}

/// What the reader found in the incoming bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// A complete text message (not yet checked as UTF-8).
    Text(&'a [u8]),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A ping to answer with its payload.
    Ping(&'a [u8]),
    /// The client closes, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why a connection's input is unacceptable, as the close code to send.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Violation {
    /// 1002: not valid WebSocket framing (unmasked, reserved bits or opcodes, bad fragments).
    Protocol,
    /// 1009: a message larger than `MAX_MESSAGE_BYTES`.
    TooBig,
}

impl Violation {
    /// The close code that says so.
    pub(crate) fn code(self) -> u16 {
        match self {
            Violation::Protocol => 1002,
            Violation::TooBig => 1009,
        }
    }
}

/// Cuts a client's byte stream into messages. Holds bytes only while a frame or a fragmented
/// message is incomplete; an idle connection's reader owns no memory.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    /// The start of a frame whose end has not arrived.
    partial: Vec<u8>,
    /// The fragments of a message so far, and whether it is text.
    message: Vec<u8>,
    fragmented: Option<bool>,
}

/// Where [`Reader::feed_until`] stopped.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Fed {
    /// Every complete message was handled; an incomplete one is kept.
    All,
    /// `each` broke: the rest is dropped (the connection ends).
    Stopped,
    /// `pause` said so before a frame: that frame and the rest are kept, still masked, for
    /// the next call (which may bring no new bytes).
    Paused,
}

impl Reader {
    /// Whether it holds no bytes (no incomplete frame, no fragments, nothing kept at a pause).
    pub(crate) fn is_idle(&self) -> bool {
        self.partial.is_empty() && self.message.is_empty()
    }

    #[cfg(test)]
    /// Feeds bytes just read; calls `each` for every complete message, in order, until it breaks.
    /// `input` is unmasked in place.
    pub(crate) fn feed(
        &mut self,
        input: &mut [u8],
        max: usize,
        each: &mut dyn FnMut(Message<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, Violation> {
        Ok(match self.feed_until(input, max, &|| false, each)? {
            Fed::Stopped => ControlFlow::Break(()),
            Fed::All | Fed::Paused => ControlFlow::Continue(()),
        })
    }

    /// The same, asking `pause` before each frame whether to stop here and keep the rest: a
    /// connection whose replies fill its budget is not read further until they are written.
    pub(crate) fn feed_until(
        &mut self,
        input: &mut [u8],
        max: usize,
        pause: &dyn Fn() -> bool,
        each: &mut dyn FnMut(Message<'_>) -> ControlFlow<()>,
    ) -> Result<Fed, Violation> {
        if self.partial.is_empty() {
            let (used, fed) = self.frames(input, max, pause, each)?;
            if fed != Fed::Stopped && used < input.len() {
                self.partial = input.get(used..).unwrap_or_default().to_vec();
            }
            return Ok(fed);
        }
        let mut buf = std::mem::take(&mut self.partial);
        buf.extend_from_slice(input);
        let (used, fed) = self.frames(&mut buf, max, pause, each)?;
        if fed != Fed::Stopped && used < buf.len() {
            buf.drain(..used);
            self.partial = buf;
        }
        Ok(fed)
    }

    /// Handles every complete frame at the start of `buf`; returns how many bytes they took.
    fn frames(
        &mut self,
        buf: &mut [u8],
        max: usize,
        pause: &dyn Fn() -> bool,
        each: &mut dyn FnMut(Message<'_>) -> ControlFlow<()>,
    ) -> Result<(usize, Fed), Violation> {
        let mut at = 0;
        loop {
            if at < buf.len() && pause() {
                return Ok((at, Fed::Paused));
            }
            let mut cur = Cursor::new(buf.get(at..).unwrap_or_default());
            let Some((h, len)) = FrameHeader::parse(&mut cur).map_err(|_| Violation::Protocol)?
            else {
                return Ok((at, Fed::All));
            };
            if len > max as u64 {
                return Err(Violation::TooBig);
            }
            let start = at + cur.position() as usize;
            let end = start.saturating_add(len as usize);
            if end > buf.len() {
                return Ok((at, Fed::All));
            }
            let Some(mask) = h.mask else {
                return Err(Violation::Protocol);
            };
            if h.rsv1 || h.rsv2 || h.rsv3 {
                return Err(Violation::Protocol);
            }
            let payload = buf.get_mut(start..end).ok_or(Violation::Protocol)?;
            unmask(payload, mask);
            at = end;
            let flow = match h.opcode {
                OpCode::Data(Data::Text | Data::Binary) if self.fragmented.is_some() => {
                    return Err(Violation::Protocol);
                }
                OpCode::Data(d @ (Data::Text | Data::Binary)) => {
                    let text = d == Data::Text;
                    if h.is_final {
                        each(if text {
                            Message::Text(payload)
                        } else {
                            Message::Binary(payload)
                        })
                    } else {
                        self.fragmented = Some(text);
                        self.message.extend_from_slice(payload);
                        ControlFlow::Continue(())
                    }
                }
                OpCode::Data(Data::Continue) => {
                    let Some(text) = self.fragmented else {
                        return Err(Violation::Protocol);
                    };
                    if self.message.len() + payload.len() > max {
                        return Err(Violation::TooBig);
                    }
                    self.message.extend_from_slice(payload);
                    if h.is_final {
                        let whole = std::mem::take(&mut self.message);
                        self.fragmented = None;
                        each(if text {
                            Message::Text(&whole)
                        } else {
                            Message::Binary(&whole)
                        })
                    } else {
                        ControlFlow::Continue(())
                    }
                }
                OpCode::Control(_) if !h.is_final || len > 125 => {
                    return Err(Violation::Protocol);
                }
                OpCode::Control(Control::Close) => {
                    let code = match payload {
                        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
                        _ => None,
                    };
                    let _ = each(Message::Close(code));
                    ControlFlow::Break(())
                }
                OpCode::Control(Control::Ping) => each(Message::Ping(payload)),
                OpCode::Control(Control::Pong) => ControlFlow::Continue(()),
                OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                    return Err(Violation::Protocol);
                }
            };
            if flow.is_break() {
                return Ok((at, Fed::Stopped));
            }
        }
    }
}

/// Undoes the client's XOR mask.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let mut words = payload.chunks_exact_mut(4);
    for w in &mut words {
        w.iter_mut().zip(mask).for_each(|(b, m)| *b ^= m);
    }
    let tail = words.into_remainder();
    tail.iter_mut().zip(mask).for_each(|(b, m)| *b ^= m);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as browsers send them.
    fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut f = vec![opcode | if fin { 0x80 } else { 0 }];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        f
    }

    /// Everything the reader reports for `chunks` fed one after another.
    fn read(chunks: &[&[u8]], max: usize) -> Result<Vec<String>, Violation> {
        let mut r = Reader::default();
        let mut seen = Vec::new();
        for c in chunks {
            let mut c = c.to_vec();
            let flow = r.feed(&mut c, max, &mut |m| {
                seen.push(match m {
                    Message::Text(t) => format!("text {}", String::from_utf8_lossy(t)),
                    Message::Binary(b) => format!("binary {}", b.len()),
                    Message::Ping(p) => format!("ping {}", p.len()),
                    Message::Close(c) => format!("close {c:?}"),
                });
                ControlFlow::Continue(())
            })?;
            assert!(flow.is_continue());
        }
        assert!(
            r.partial.is_empty() && r.message.is_empty(),
            "nothing held after whole frames"
        );
        Ok(seen)
    }

    #[test]
    fn whole_frames_and_frames_split_anywhere_give_the_same_messages() {
        let long = "x".repeat(3000);
        let mut stream = client_frame(1, true, b"42[\"a\"]");
        stream.extend(client_frame(1, true, long.as_bytes()));
        stream.extend(client_frame(9, true, b"hi"));
        let want = vec![
            "text 42[\"a\"]".to_string(),
            format!("text {long}"),
            "ping 2".to_string(),
        ];
        assert_eq!(read(&[&stream], 65536).unwrap(), want);
        for cut in [1, 2, 5, 9, 100, stream.len() - 1] {
            let (a, b) = stream.split_at(cut);
            assert_eq!(read(&[a, b], 65536).unwrap(), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(read(&bytes, 65536).unwrap(), want);
    }

    #[test]
    fn fragments_are_joined() {
        let mut s = client_frame(1, false, b"42[\"a\",");
        s.extend(client_frame(9, true, b""));
        s.extend(client_frame(0, false, b"1"));
        s.extend(client_frame(0, true, b"]"));
        assert_eq!(
            read(&[&s], 100).unwrap(),
            vec!["ping 0".to_string(), "text 42[\"a\",1]".to_string()]
        );
    }

    #[test]
    fn violations_are_refused_with_their_code() {
        let unmasked = [0x81u8, 0x01, b'x'];
        assert_eq!(read(&[&unmasked], 100), Err(Violation::Protocol));
        assert_eq!(
            read(&[&client_frame(1, true, &[b'x'; 101])], 100),
            Err(Violation::TooBig)
        );
        assert_eq!(
            read(&[&client_frame(0, true, b"x")], 100),
            Err(Violation::Protocol)
        );
        assert_eq!(
            read(&[&client_frame(3, true, b"x")], 100),
            Err(Violation::Protocol)
        );
        assert_eq!(
            read(&[&client_frame(9, false, b"x")], 100),
            Err(Violation::Protocol)
        );
        let mut rsv = client_frame(1, true, b"x");
        rsv[0] |= 0x40;
        assert_eq!(read(&[&rsv], 100), Err(Violation::Protocol));
        let mut two = client_frame(1, false, &[b'x'; 60]);
        two.extend(client_frame(0, true, &[b'x'; 60]));
        assert_eq!(read(&[&two], 100), Err(Violation::TooBig));
        // A frame still arriving is kept, not judged, until it is whole.
        let whole = client_frame(1, true, b"42[]");
        let mut r = Reader::default();
        let mut n = 0;
        let mut count = |_: Message<'_>| {
            n += 1;
            ControlFlow::Continue(())
        };
        assert!(
            r.feed(&mut whole[..3].to_vec(), 100, &mut count)
                .unwrap()
                .is_continue()
        );
        assert_eq!(r.partial.len(), 3);
        assert!(
            r.feed(&mut whole[3..].to_vec(), 100, &mut count)
                .unwrap()
                .is_continue()
        );
        assert!(r.partial.is_empty());
        assert_eq!(n, 1);
    }

    #[test]
    fn close_stops_the_reading() {
        let mut s = client_frame(8, true, &1000u16.to_be_bytes());
        s.extend(client_frame(1, true, b"after"));
        let mut r = Reader::default();
        let mut seen = Vec::new();
        let flow = r
            .feed(&mut s, 100, &mut |m| {
                seen.push(format!("{m:?}"));
                ControlFlow::Continue(())
            })
            .unwrap();
        assert!(flow.is_break());
        assert_eq!(seen, vec!["Close(Some(1000))"]);
    }

    #[test]
    fn a_pause_keeps_the_rest_masked_for_later() {
        let mut s = Vec::new();
        for t in ["one", "two", "three"] {
            s.extend(client_frame(1, true, t.as_bytes()));
        }
        // A fragmented message after the pauses.
        s.extend(client_frame(1, false, b"fo"));
        s.extend(client_frame(0, true, b"ur"));
        let mut r = Reader::default();
        let seen = std::cell::RefCell::new(Vec::<String>::new());
        let budget = std::cell::Cell::new(1u32);
        let pause = || budget.get() == 0;
        let mut each = |m: Message<'_>| {
            if let Message::Text(t) = m {
                seen.borrow_mut()
                    .push(String::from_utf8_lossy(t).into_owned());
            }
            budget.set(budget.get().saturating_sub(1));
            ControlFlow::Continue(())
        };
        assert_eq!(
            r.feed_until(&mut s, 100, &pause, &mut each),
            Ok(Fed::Paused)
        );
        assert_eq!(*seen.borrow(), ["one"]);
        // Nothing new was read, and the kept bytes give the rest, one at a time.
        for want in ["two", "three"] {
            budget.set(1);
            let fed = r.feed_until(&mut [], 100, &pause, &mut each);
            assert_eq!(fed, Ok(Fed::Paused));
            assert_eq!(seen.borrow().last().unwrap(), want);
        }
        budget.set(1);
        assert_eq!(r.feed_until(&mut [], 100, &pause, &mut each), Ok(Fed::All));
        assert_eq!(*seen.borrow(), ["one", "two", "three", "four"]);
        assert!(r.partial.is_empty(), "nothing kept");
    }

    #[test]
    fn queued_frames_give_their_packets_to_a_poll() {
        for len in [0usize, 125, 126, 70_000] {
            let payload = "z".repeat(len);
            let f = OutFrame::text(&payload);
            assert_eq!(polled(f.remaining()), Some(payload.as_bytes()));
        }
        assert_eq!(polled(OutFrame::close(1000).remaining()), Some(&b"1"[..]));
        assert_eq!(polled(OutFrame::pong(b"x").remaining()), None);
    }

    #[test]
    fn outgoing_frames_carry_the_right_length_header() {
        for len in [0usize, 5, 125, 126, 65535, 65536] {
            let payload = "y".repeat(len);
            let f = OutFrame::text(&payload);
            let bytes = f.remaining();
            assert_eq!(bytes[0], 0x81);
            let (hl, n) = match bytes[1] {
                126 => (4, u16::from_be_bytes([bytes[2], bytes[3]]) as usize),
                127 => (
                    10,
                    u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                ),
                n => (2, n as usize),
            };
            assert_eq!(n, len);
            assert_eq!(&bytes[hl..], payload.as_bytes());
        }
        let c = OutFrame::close(1000);
        assert_eq!(c.remaining(), &[0x88, 2, 0x03, 0xe8]);
        let mut buf = vec![1, 2, 3];
        let start = encode_text(&mut buf, |b| {
            b.extend_from_slice(b"42[]");
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(&buf[start..], &[0x81, 4, b'4', b'2', b'[', b']']);
        let long = "z".repeat(300);
        let start = encode_text(&mut buf, |b| {
            b.extend_from_slice(long.as_bytes());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(&buf[start..start + 4], &[0x81, 126, 1, 44]);
        assert_eq!(
            OutFrame::rest(&buf[start + 4..]).remaining(),
            long.as_bytes()
        );
        let mut f = OutFrame::text("abc");
        assert!(!f.advance(3), "header and one byte written");
        assert_eq!(f.remaining(), b"bc");
        assert!(f.advance(2));
    }
}
