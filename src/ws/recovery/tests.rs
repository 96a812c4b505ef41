use super::*;
use crate::ws::{ConnRef, Gone, Handled};
use proptest::prelude::*;

struct Nobody;

impl Events for Nobody {
    fn event(&self, _: &ConnRef, _: &str, _: bool, _: Option<i64>) -> Handled {
        Handled::Done
    }
    fn closed(&self, _: &ConnRef, _: Gone) {}
}

fn session(offsets: bool) -> Recovery {
    Recovery::new(Sid::new(), Arc::new(Nobody), offsets)
}

/// Logs `n` events of `len` bytes as frames `frame..`.
fn send(r: &mut Recovery, frame: u64, n: usize, len: usize) {
    for i in 0..n {
        let body = vec![b'a' + (r.next() % 26) as u8; len];
        assert_eq!(r.log(frame + i as u64, &body, 1 << 20), Logging::Kept);
    }
}

fn firsts(v: &[&[u8]]) -> Vec<u8> {
    v.iter().map(|f| f[0]).collect()
}

#[test]
fn a_pid_names_its_session_and_nothing_else_opens() {
    let sid = Sid::new();
    let p = pid(sid);
    assert_eq!(p.len(), 38);
    assert_eq!(open_pid(&p), Some(Whose::Here(sid)));
    assert!(
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    // A changed tag, another sid with this tag, a cut pid, the bare sid: refused.
    let mut bad = p.clone().into_bytes();
    let last = bad.len() - 1;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(open_pid(std::str::from_utf8(&bad).unwrap()), None);
    let other = Sid::new();
    assert_eq!(open_pid(&format!("{other}{}", &p[16..])), None);
    assert_eq!(open_pid(&p[..30]), None);
    assert_eq!(open_pid(sid.as_str()), None);
    assert_eq!(open_pid("é".repeat(19).as_str()), None);
}

#[test]
fn with_an_offset_the_client_gets_exactly_what_follows_it() {
    let mut r = session(true);
    send(&mut r, 0, 5, 10);
    // It read events 0..=2.
    let missed = r.missed(Some("2")).unwrap();
    assert_eq!(missed.len(), 2);
    assert_eq!(firsts(&missed), vec![b'd', b'e']);
    // The last one: nothing missed.
    assert!(r.missed(Some("4")).unwrap().is_empty());
    // An offset this session never gave, or not a number.
    assert_eq!(r.missed(Some("5")).err(), Some(Refused::BadOffset));
    assert_eq!(r.missed(Some("x")).err(), Some(Refused::BadOffset));
    assert_eq!(r.missed(Some("-1")).err(), Some(Refused::BadOffset));
}

#[test]
fn a_pong_confirms_what_was_queued_before_its_ping() {
    let mut r = session(true);
    send(&mut r, 0, 3, 10);
    r.ping_sent();
    send(&mut r, 3, 2, 10);
    r.ponged();
    assert_eq!(r.held_bytes(), 20, "events 3 and 4 came after the ping");
    // An offset among the confirmed ones is still served: what follows it is all held.
    assert_eq!(firsts(&r.missed(Some("2")).unwrap()), vec![b'd', b'e']);
    // A pong without a ping confirms nothing.
    r.ponged();
    assert_eq!(r.held_bytes(), 20);
}

#[test]
fn past_its_budget_a_live_log_forgets_the_oldest_and_refuses_their_offsets() {
    let mut r = session(true);
    for i in 0..10u64 {
        assert_eq!(r.log(i, &[b'x'; 100], 350), Logging::Kept);
    }
    assert_eq!(r.held_bytes(), 300);
    // Events 0..=6 are gone: an offset of 5 would skip event 6.
    assert_eq!(r.missed(Some("5")).err(), Some(Refused::BadOffset));
    assert_eq!(r.missed(Some("6")).unwrap().len(), 3);
}

#[test]
fn a_held_session_over_its_budget_is_given_up() {
    let mut r = session(true);
    send(&mut r, 0, 2, 10);
    r.hold(100, std::iter::empty(), 150);
    assert_eq!(r.held_since(), 100);
    assert_eq!(r.log(2, &[b'x'; 100], 150), Logging::Kept);
    assert_eq!(r.log(3, &[b'x'; 100], 150), Logging::Overflow);
    assert!(r.overflowed());
    assert_eq!(r.held_bytes(), 0);
    assert_eq!(r.missed(Some("1")).err(), Some(Refused::Unknown));
}

/// Frames as the queue holds them.
fn frames(packets: &[&str]) -> Vec<crate::ws::frame::OutFrame> {
    packets
        .iter()
        .map(|p| {
            // Events are queued as encoded, whole.
            let encoded = crate::ws::frame::OutFrame::text(p);
            crate::ws::frame::OutFrame::rest(encoded.remaining())
        })
        .collect()
}

#[test]
fn without_offsets_the_events_still_queued_are_what_the_client_missed() {
    let mut r = session(false);
    assert!(
        !r.logs_live(),
        "nothing is copied while the connection lives"
    );
    // What was written counts as read; the queue holds an event, a ping and another event.
    let q = frames(&[r#"42["a",1]"#, "2", r#"42["b",2]"#]);
    r.hold(50, q.iter().map(|f| f.whole()), 1 << 20);
    let polled: Vec<&[u8]> = r
        .missed(None)
        .unwrap()
        .into_iter()
        .map(|f| crate::ws::frame::polled(f).unwrap())
        .collect();
    assert_eq!(polled, vec![&br#"42["a",1]"#[..], &br#"42["b",2]"#[..]]);
}

#[test]
fn without_offsets_more_queued_than_the_budget_gives_the_session_up() {
    let mut r = session(false);
    let big = format!(r#"42["a","{}"]"#, "x".repeat(100));
    let q = frames(&[big.as_str(); 3]);
    r.hold(50, q.iter().map(|f| f.whole()), 250);
    assert!(r.overflowed());
    assert_eq!(r.missed(None).err(), Some(Refused::Unknown));
}

#[test]
fn with_offsets_what_was_written_stays_until_the_client_says_it_read_it() {
    let mut r = session(true);
    assert!(r.logs_live());
    send(&mut r, 0, 4, 10);
    r.hold(50, std::iter::empty(), 1 << 20);
    assert_eq!(firsts(&r.missed(Some("1")).unwrap()), vec![b'c', b'd']);
}

#[test]
fn resuming_keeps_the_replayed_events_until_a_pong_and_turns_offsets_on() {
    let mut r = session(false);
    send(&mut r, 0, 3, 10);
    r.hold(50, std::iter::empty(), 1 << 20);
    r.resume(true, Some(0), 7);
    assert!(r.offsets);
    assert_eq!(r.held_since(), 0);
    assert_eq!(r.held_bytes(), 20);
    // Numbering goes on where it was.
    assert_eq!(r.next(), 3);
    r.ping_sent();
    r.ponged();
    assert_eq!(r.held_bytes(), 0);
}

#[test]
fn the_connect_payload_gives_pid_and_offset_only_as_strings() {
    assert_eq!(
        wanted(Some(r#"{"pid":"p","offset":"3","token":"t"}"#)),
        (Some("p".into()), Some("3".into()))
    );
    assert_eq!(wanted(Some(r#"{"pid":"p"}"#)), (Some("p".into()), None));
    assert_eq!(wanted(Some(r#"{"pid":1,"offset":2}"#)), (None, None));
    assert_eq!(wanted(Some("[1]")), (None, None));
    assert_eq!(wanted(Some("not json")), (None, None));
    assert_eq!(wanted(None), (None, None));
}

proptest! {
    /// Whatever the client read (any offset it was given), it gets back exactly the events
    /// after it, in order, as long as they are held; and never an event twice.
    #[test]
    fn what_is_missed_is_exactly_what_follows_the_offset(
        sent in 1usize..40,
        read in any::<prop::sample::Index>(),
        pings in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let mut r = session(true);
        let read = read.index(sent) as u64;
        let mut pongs: Vec<usize> = pings.iter().map(|p| p.index(sent)).collect();
        pongs.sort_unstable();
        for i in 0..sent {
            let body = (i as u32).to_le_bytes();
            prop_assert_eq!(r.log(i as u64, &body, 1 << 20), Logging::Kept);
            // A ping after event i, answered once the client read past it.
            if pongs.first() == Some(&i) && (i as u64) <= read {
                pongs.remove(0);
                r.ping_sent();
                r.ponged();
            }
        }
        let missed = r.missed(Some(&read.to_string())).unwrap();
        let got: Vec<u32> = missed
            .iter()
            .map(|f| u32::from_le_bytes((*f).try_into().unwrap()))
            .collect();
        let want: Vec<u32> = ((read as u32 + 1)..sent as u32).collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn a_cluster_pid_names_its_node_and_only_the_cluster_opens_it() {
    use base64::Engine as _;
    let key = [7u8; 32];
    let a = Identity {
        key,
        node: Some("node-a".into()),
    };
    let b = Identity {
        key,
        node: Some("node-b".into()),
    };
    let stranger = Identity {
        key: [8u8; 32],
        node: Some("node-b".into()),
    };
    let sid = Sid::new();
    let p = pid_by(&a, sid);
    assert_eq!(open_by(&a, &p), Some(Whose::Here(sid)));
    assert_eq!(open_by(&b, &p), Some(Whose::Node(sid, "node-a".into())));
    assert_eq!(open_by(&stranger, &p), None);
    // The same tag naming another node: refused.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forged = format!("{}{}", &p[..38], b64.encode("node-c"));
    assert_eq!(open_by(&b, &forged), None);
}

#[test]
fn a_session_moved_to_another_node_keeps_its_numbers_and_what_was_missed() {
    let mut r = session(true);
    let mut buf = Vec::new();
    for i in 0..5u64 {
        let start = crate::ws::frame::encode_text(&mut buf, |b| {
            b.extend_from_slice(format!("42[\"e\",{i},\"{i}\"]").as_bytes());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(r.log(i, &buf[start..], 1 << 20), Logging::Kept);
    }
    r.hold(100, std::iter::empty(), 1 << 20);
    let e = r.export();
    assert_eq!(e.next, 5);
    assert_eq!(e.log.len(), 5);
    assert_eq!(e.log[3], (3, "42[\"e\",3,\"3\"]".to_string()));
    let wire = serde_json::to_string(&e).unwrap();
    let back: Exported = serde_json::from_str(&wire).unwrap();
    let moved = Recovery::import(back, Arc::new(Nobody), 7).unwrap();
    assert_eq!(moved.sid, r.sid);
    assert_eq!(moved.next(), 5);
    // The same frames, byte for byte, from the same offset.
    assert_eq!(
        moved.missed(Some("2")).unwrap(),
        r.missed(Some("2")).unwrap()
    );
    assert_eq!(moved.missed(Some("9")).err(), Some(Refused::BadOffset));
    let bad = Exported {
        sid: "not a sid".into(),
        ..e
    };
    assert!(Recovery::import(bad, Arc::new(Nobody), 7).is_none());
}

/// A live session's log sits at its budget under steady traffic (a pong confirms it only every
/// ping interval): once held, what the client is missing takes the place of what it most likely
/// read, and it recovers from an offset after those; the session is given up only when what it
/// missed alone outgrows the budget.
#[test]
fn a_held_session_at_its_budget_makes_room_with_what_was_logged_live() {
    let budget = 1000;
    let mut r = session(true);
    for i in 0..20u64 {
        assert_eq!(r.log(i, &[b'l'; 100], budget), Logging::Kept);
    }
    assert_eq!(r.held_bytes(), 1000, "live: the oldest made room");
    r.hold(5, std::iter::empty(), budget);
    for i in 20..25u64 {
        assert_eq!(r.log(i, &[b'h'; 100], budget), Logging::Kept, "event {i}");
    }
    // The client read up to 19: it gets exactly the five it missed.
    let missed = r.missed(Some("19")).unwrap();
    assert_eq!(missed.len(), 5);
    assert!(missed.iter().all(|f| f[0] == b'h'));
    // One that read less than what made room cannot be served.
    assert_eq!(r.missed(Some("12")).err(), Some(Refused::BadOffset));
    // What it missed alone over the budget: given up.
    for i in 25..30u64 {
        assert_eq!(r.log(i, &[b'h'; 100], budget), Logging::Kept, "event {i}");
    }
    assert_eq!(r.log(30, &[b'h'; 100], budget), Logging::Overflow);
    assert_eq!(r.missed(Some("19")).err(), Some(Refused::Unknown));
}
