//! Rules of the core, checked without sockets.

use super::event::{
    ChatEnded, Matched, PartnerLeft, PartnerReconnected, PartnerReconnecting, Rejoined,
    SearchTimeout,
};
use super::*;
use crate::model::ErrorCode;
use crate::model::ServerStats;
use crate::model::profile::{Gender, GenderWish};
use crate::model::reason::Reason;
use proptest::prelude::*;

type TestCore = Core<u32>;

fn core() -> TestCore {
    Core::new(CoreConfig {
        max_room_duration: Duration::from_secs(60),
        max_waiting_time: Duration::from_secs(30),
        queue_status_interval: Duration::from_secs(1),
        preference_relax: Duration::from_secs(5),
        ..Default::default()
    })
}

fn join(c: &mut TestCore, id: &str, link: u32) {
    c.join(id.into(), link, None, Claim::Named { resume: None })
        .unwrap();
}

fn events_for<'a>(out: &'a [Effect], user: &str) -> Vec<&'a Event> {
    out.iter()
        .filter(|e| &*e.to == user)
        .map(|e| &e.event)
        .collect()
}

fn matched(out: &[Effect], user: &str) -> Matched {
    events_for(out, user)
        .into_iter()
        .find_map(|e| match e {
            Event::Matched(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{user} was not matched: {out:?}"))
}

#[test]
fn two_searchers_are_paired_with_one_initiator() {
    let t = Instant::now();
    let mut c = core();
    join(&mut c, "a", 1);
    join(&mut c, "b", 2);
    let out = c.find("a", None, t).unwrap();
    let names: Vec<_> = out.iter().map(|e| e.event.name()).collect();
    assert_eq!(names, ["searching", "queue-status"]);
    let out = c.find("b", None, t + Duration::from_millis(250)).unwrap();
    let (ma, mb) = (matched(&out, "a"), matched(&out, "b"));
    assert_eq!(ma.room_id, mb.room_id);
    assert_eq!(&*ma.partner_id, "b");
    assert_eq!(&*mb.partner_id, "a");
    assert!(ma.is_initiator ^ mb.is_initiator);
    assert_eq!(ma.wait_time, 250);
    assert_eq!(mb.wait_time, 0);
    assert_eq!(c.live().active_rooms, 1);
    assert_eq!(c.live().waiting_users, 0);
    c.check_invariants().unwrap();
}

#[test]
fn searching_twice_never_pairs_a_user_with_itself() {
    let t = Instant::now();
    let mut c = core();
    join(&mut c, "a", 1);
    c.find("a", None, t).unwrap();
    let out = c.find("a", None, t).unwrap();
    assert!(out.iter().all(|e| e.event.name() != "matched"));
    assert_eq!(c.live().waiting_users, 1);
    c.check_invariants().unwrap();
}

#[test]
fn searching_while_in_a_room_is_refused() {
    let t = Instant::now();
    let mut c = core();
    join(&mut c, "a", 1);
    join(&mut c, "b", 2);
    c.find("a", None, t).unwrap();
    c.find("b", None, t).unwrap();
    assert_eq!(c.find("a", None, t), Err(ErrorCode::AlreadyInRoom));
}

#[test]
fn next_tells_the_partner_and_requeues_the_skipper() {
    let t = Instant::now();
    let mut c = core();
    for (i, u) in ["a", "b", "c"].iter().enumerate() {
        join(&mut c, u, i as u32);
    }
    c.find("a", None, t).unwrap();
    let room = matched(&c.find("b", None, t).unwrap(), "a").room_id;
    let out = c.next("a", t).unwrap();
    assert_eq!(
        events_for(&out, "b"),
        [&Event::PartnerLeft(PartnerLeft {
            reason: Reason::NextPartner,
            room_id: room.clone(),
            can_reconnect: false
        })]
    );
    assert_eq!(events_for(&out, "a")[0].name(), "searching");
    assert!(c.room_of("a").is_none() && c.room_of("b").is_none());
    assert!(c.is_waiting("a"));
    // The skipper is found by the next searcher.
    let out = c.find("c", None, t).unwrap();
    assert_eq!(&*matched(&out, "c").partner_id, "a");
    // The partner left behind may search at once: the old room does not linger.
    assert!(c.find("b", None, t).is_ok());
    c.check_invariants().unwrap();
}

#[test]
fn end_chat_closes_the_room_for_both() {
    let t = Instant::now();
    let mut c = core();
    join(&mut c, "a", 1);
    join(&mut c, "b", 2);
    c.find("a", None, t).unwrap();
    let room = matched(&c.find("b", None, t).unwrap(), "a").room_id;
    let out = c.end("b", t).unwrap();
    assert_eq!(events_for(&out, "a")[0].name(), "partner-left");
    match events_for(&out, "a")[0] {
        Event::PartnerLeft(l) => {
            assert_eq!(l.reason, Reason::UserEnded, "the Node server's word")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        events_for(&out, "b"),
        [&Event::ChatEnded(ChatEnded {
            room_id: Some(room),
            reason: Reason::Ended
        })]
    );
    assert_eq!(c.live().active_rooms, 0);
    assert_eq!(c.end("b", t), Err(ErrorCode::NotInRoom));
    // A search can be cancelled with end-chat too.
    c.find("a", None, t).unwrap();
    let out = c.end("a", t).unwrap();
    assert!(matches!(
        out[0].event,
        Event::ChatEnded(ChatEnded { room_id: None, .. })
    ));
    assert_eq!(c.live().waiting_users, 0);
}

#[test]
fn leaving_removes_the_user_everywhere() {
    let t = Instant::now();
    let mut c = core();
    for (i, u) in ["a", "b", "c"].iter().enumerate() {
        join(&mut c, u, i as u32);
    }
    c.find("a", None, t).unwrap();
    c.find("b", None, t).unwrap();
    c.find("c", None, t).unwrap();
    let out = c.leave("a", &0, true, None, t);
    assert_eq!(events_for(&out, "b")[0].name(), "partner-reconnecting");
    assert!(
        c.leave("c", &99, true, None, t).is_empty(),
        "a stale link changes nothing"
    );
    assert!(c.is_waiting("c"));
    c.leave("c", &2, true, None, t);
    c.leave("b", &1, true, None, t);
    assert_eq!(
        c.live(),
        ServerStats {
            connected_users: 0,
            waiting_users: 0,
            active_rooms: 0
        }
    );
}

#[test]
fn routes_only_to_the_current_partner() {
    let t = Instant::now();
    let mut c = core();
    for (i, u) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        join(&mut c, u, i as u32);
    }
    c.find("a", None, t).unwrap();
    let ab = matched(&c.find("b", None, t).unwrap(), "a").room_id;
    c.find("c", None, t).unwrap();
    let cd = matched(&c.find("d", None, t).unwrap(), "c").room_id;
    assert_eq!(c.route("a", &ab, Some("b")).unwrap(), (&"b".into(), &1));
    assert_eq!(c.route("a", &ab, None).unwrap().0.as_ref(), "b");
    assert_eq!(c.route("a", &ab, Some("c")), Err(ErrorCode::NotInRoom));
    assert_eq!(
        c.route("c", &ab, None),
        Err(ErrorCode::NotInRoom),
        "another room"
    );
    assert_eq!(
        c.route("e", &ab, None),
        Err(ErrorCode::NotInRoom),
        "no room"
    );
    assert_eq!(c.route("a", &cd, None), Err(ErrorCode::NotInRoom));
    c.end("a", t).unwrap();
    assert_eq!(
        c.route("b", &ab, None),
        Err(ErrorCode::NotInRoom),
        "ended room"
    );
}

#[test]
fn hard_filters_hold_both_ways() {
    let t = Instant::now();
    let mut c = core();
    c.join(
        "m".into(),
        1,
        Some(Profile {
            gender: Some(Gender::Male),
            ..Default::default()
        }),
        Claim::Named { resume: None },
    )
    .unwrap();
    c.join(
        "f".into(),
        2,
        Some(Profile {
            gender: Some(Gender::Female),
            ..Default::default()
        }),
        Claim::Named { resume: None },
    )
    .unwrap();
    let wants_female = Preferences {
        gender: GenderWish::Female,
        ..Default::default()
    };
    c.find("f", Some(wants_female.clone()), t).unwrap();
    let out = c.find("m", Some(wants_female), t).unwrap();
    assert!(out.iter().all(|e| e.event.name() != "matched"));
    assert_eq!(c.live().waiting_users, 2);
}

#[test]
fn rooms_end_at_their_maximum_duration() {
    let t = Instant::now();
    let mut c = core();
    join(&mut c, "a", 1);
    join(&mut c, "b", 2);
    c.find("a", None, t).unwrap();
    c.find("b", None, t).unwrap();
    assert!(c.tick(t + Duration::from_secs(59)).is_empty());
    let out = c.tick(t + Duration::from_secs(60));
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|e| matches!(
        &e.event,
        Event::RoomEnded(RoomEnded {
            reason: Reason::MaxDuration,
            duration: 60_000,
            ..
        })
    )));
    assert_eq!(c.live().active_rooms, 0);
    assert!(c.find("a", None, t).is_ok());
}

#[test]
fn searches_time_out() {
    let t = Instant::now();
    let mut c = core();
    join(&mut c, "a", 1);
    c.find("a", None, t).unwrap();
    let out = c.tick(t + Duration::from_secs(30));
    assert!(matches!(
        &out[0].event,
        Event::SearchTimeout(SearchTimeout {
            wait_time: 30_000,
            ..
        })
    ));
    assert!(!c.is_waiting("a"));
}

#[test]
fn queue_status_follows_position_changes_throttled() {
    let t = Instant::now();
    let mut c = core();
    let picky = Preferences {
        gender: GenderWish::Male,
        ..Default::default()
    };
    for (i, u) in ["a", "b", "c"].iter().enumerate() {
        join(&mut c, u, i as u32);
        c.find(u, Some(picky.clone()), t).unwrap();
    }
    assert!(c.tick(t).is_empty(), "positions were sent on enqueue");
    c.end("a", t).unwrap();
    // Positions changed, but the last update was less than a second ago.
    assert!(c.tick(t + Duration::from_millis(500)).is_empty());
    let out = c.tick(t + Duration::from_millis(1000));
    let positions: Vec<(String, usize, usize)> = out
        .iter()
        .map(|e| match &e.event {
            Event::QueueStatus(q) => (e.to.to_string(), q.position, q.total_waiting),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(positions, [("b".into(), 1, 2), ("c".into(), 2, 2)]);
    assert!(
        c.tick(t + Duration::from_millis(3000)).is_empty(),
        "no change, no update"
    );
}

#[test]
fn a_wait_estimate_never_goes_past_the_search_timeout() {
    let t = Instant::now();
    let mut c = core();
    let picky = Preferences {
        gender: GenderWish::Male,
        ..Default::default()
    };
    let status = |out: &[Effect], user: &str| {
        events_for(out, user).into_iter().find_map(|e| match e {
            Event::QueueStatus(q) => Some(q.clone()),
            _ => None,
        })
    };
    // 60 users nobody can pair: a minute for each user ahead would be an hour for the last.
    for i in 0..60u32 {
        let u = format!("u{i}");
        join(&mut c, &u, i);
        let out = c.find(&u, Some(picky.clone()), t).unwrap();
        let q = status(&out, &u).expect("a first queue-status");
        assert!(q.estimated_wait_ms <= 30_000, "{q:?}");
        assert_eq!(q.basis, crate::model::WaitBasis::Unknown);
    }
    // 20 s later the first leaves: everyone's update is within the 10 s their search has left.
    c.end("u0", t).unwrap();
    let out = c.tick(t + Duration::from_secs(20));
    let mut updates = 0;
    for i in 1..60 {
        if let Some(q) = status(&out, &format!("u{i}")) {
            updates += 1;
            assert!(q.estimated_wait_ms <= 10_000, "{q:?}");
        }
    }
    assert_eq!(updates, 59, "every position moved");
}

#[test]
fn a_taken_user_id_is_refused() {
    let mut c = core();
    join(&mut c, "a", 1);
    assert_eq!(
        c.join("a".into(), 2, None, Claim::Named { resume: None })
            .map(|_| ()),
        Err(ErrorCode::UserIdTaken)
    );
    assert_eq!(
        c.join(
            "a".into(),
            2,
            None,
            Claim::Named {
                resume: Some("not-the-token")
            }
        )
        .map(|_| ()),
        Err(ErrorCode::UserIdTaken)
    );
    assert!(
        c.join("a".into(), 1, None, Claim::Named { resume: None })
            .is_ok()
    );
}

#[test]
fn a_refused_claim_changes_nothing_of_the_users_profile() {
    let mut c = core();
    let own = Profile {
        gender: Some(Gender::Female),
        age: Some(30),
        languages: vec!["en".into()],
        country: Some("GB".into()),
    };
    c.join(
        "a".into(),
        1,
        Some(own.clone()),
        Claim::Named { resume: None },
    )
    .unwrap();
    // A stranger who learnt the id (every partner does, as `partnerId`) tries to rewrite it.
    let forged = Profile {
        gender: Some(Gender::Male),
        age: Some(18),
        languages: vec!["de".into()],
        country: Some("DE".into()),
    };
    for resume in [None, Some("not-the-token")] {
        assert_eq!(
            c.join("a".into(), 2, Some(forged.clone()), Claim::Named { resume })
                .map(|_| ()),
            Err(ErrorCode::UserIdTaken)
        );
        assert_eq!(c.profile("a"), Some(&own), "refused, so nothing changed");
    }
    // The user itself, on its own link, may change it.
    c.join(
        "a".into(),
        1,
        Some(forged.clone()),
        Claim::Named { resume: None },
    )
    .unwrap();
    assert_eq!(c.profile("a"), Some(&forged));
}

#[derive(Debug, Clone)]
enum Op {
    Join(u8),
    Find(u8, bool),
    Next(u8),
    End(u8),
    Leave(u8, bool, bool),
    Resume(u8),
    Recover(u8),
    Abandon(u8),
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..12).prop_map(Op::Join),
        (0u8..12, any::<bool>()).prop_map(|(u, p)| Op::Find(u, p)),
        (0u8..12).prop_map(Op::Next),
        (0u8..12).prop_map(Op::End),
        (0u8..12, any::<bool>(), any::<bool>())
            .prop_map(|(u, lost, holds)| Op::Leave(u, lost, holds)),
        (0u8..12).prop_map(Op::Resume),
        (0u8..12).prop_map(Op::Recover),
        (0u8..12).prop_map(Op::Abandon),
        (0u16..40_000).prop_map(Op::Tick),
    ]
}

proptest! {
    /// Whatever users do, the structure stays sound, every pair is made only of compatible users,
    /// and once everybody leaves nothing is left behind.
    #[test]
    fn random_sessions_keep_the_invariants(ops in proptest::collection::vec(op(), 1..200)) {
        let mut c = core();
        let mut now = Instant::now();
        let profile = |u: u8| Profile {
            gender: Some(if u.is_multiple_of(2) { Gender::Male } else { Gender::Female }),
            ..Default::default()
        };
        // Each user's current connection and latest resume token.
        let mut links: HashMap<u8, u32> = HashMap::new();
        let mut tokens: HashMap<u8, Arc<str>> = HashMap::new();
        let mut next_link = 100u32;
        for op in ops {
            let out = match op {
                Op::Join(u) => {
                    let link = *links.entry(u).or_insert(u as u32);
                    if let Ok(j) = c.join(u.to_string().into(), link, Some(profile(u)), Claim::Named { resume: None }) {
                        tokens.insert(u, j.resume_token);
                    }
                    vec![]
                }
                Op::Resume(u) => {
                    next_link += 1;
                    let token = tokens.get(&u).cloned();
                    match c.join(u.to_string().into(), next_link, None, Claim::Named { resume: token.as_deref() }) {
                        Ok(j) => {
                            links.insert(u, next_link);
                            tokens.insert(u, j.resume_token);
                            j.effects
                        }
                        Err(_) => vec![],
                    }
                }
                Op::Find(u, picky) => {
                    let prefs = picky.then(|| Preferences { gender: GenderWish::Female, ..Default::default() });
                    c.find(&u.to_string(), prefs, now).unwrap_or_default()
                }
                Op::Next(u) => c.next(&u.to_string(), now).unwrap_or_default(),
                Op::End(u) => c.end(&u.to_string(), now).unwrap_or_default(),
                Op::Leave(u, lost, holds) => {
                    let old = links.get(&u).copied().unwrap_or(u as u32);
                    next_link += 1;
                    let held = holds.then_some(next_link);
                    let out = c.leave(&u.to_string(), &old, lost, held.map(|l| (l, true)), now);
                    if c.kept_link(&u.to_string()) == held.as_ref() && held.is_some() {
                        links.insert(u, next_link);
                    }
                    out
                }
                Op::Recover(u) => {
                    next_link += 1;
                    let old = links.get(&u).copied().unwrap_or(u as u32);
                    match c.recover(u.to_string().into(), &old, next_link) {
                        Ok(effects) => {
                            links.insert(u, next_link);
                            effects
                        }
                        Err(_) => vec![],
                    }
                }
                Op::Abandon(u) => c.abandon(&u.to_string(), &links.get(&u).copied().unwrap_or(u as u32), now),
                Op::Tick(ms) => { now += Duration::from_millis(ms as u64); c.tick(now) }
            };
            for e in &out {
                prop_assert!(c.link(&e.to).is_some(), "event for a user who is not connected: {e:?}");
                if let Event::Matched(m) = &e.event {
                    prop_assert_ne!(&m.partner_id, &e.to);
                    let me = &c.users[&e.to];
                    let other = &c.users[&m.partner_id];
                    prop_assert!(crate::model::profile::compatible((&me.profile, &me.prefs), (&other.profile, &other.prefs)));
                }
            }
            prop_assert_eq!(c.check_invariants(), Ok(()));
        }
        for u in 0..12u8 {
            c.leave(&u.to_string(), &links.get(&u).copied().unwrap_or(u as u32), true, None, now);
        }
        // Nobody is connected or waits; a room whose two users are both held away stays, for
        // them to come back to.
        let live = c.live();
        prop_assert_eq!((live.connected_users, live.waiting_users), (0, 0));
        // Rooms are held for users who dropped, until the grace runs out.
        c.tick(now + Duration::from_secs(11));
        prop_assert_eq!(c.live(), ServerStats { connected_users: 0, waiting_users: 0, active_rooms: 0 });
        prop_assert_eq!(c.stats(now).reconnecting_users, 0);
        prop_assert!(c.users.is_empty());
    }
}

/// Two users paired in a room, with their resume tokens.
fn paired(c: &mut TestCore, t: Instant) -> (Arc<str>, Arc<str>, RoomId) {
    let ta = c
        .join("a".into(), 1, None, Claim::Named { resume: None })
        .unwrap()
        .resume_token;
    let tb = c
        .join("b".into(), 2, None, Claim::Named { resume: None })
        .unwrap()
        .resume_token;
    c.find("a", None, t).unwrap();
    let room = matched(&c.find("b", None, t).unwrap(), "b").room_id;
    (ta, tb, room)
}

fn left(out: &[Effect], user: &str) -> PartnerLeft {
    events_for(out, user)
        .into_iter()
        .find_map(|e| match e {
            Event::PartnerLeft(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{user} got no partner-left: {out:?}"))
}

#[test]
fn a_dropped_user_is_held_and_rejoins_within_the_grace() {
    let t = Instant::now();
    let mut c = core();
    let (ta, _, room) = paired(&mut c, t);
    let out = c.leave("a", &1, true, None, t);
    assert_eq!(
        out,
        vec![Effect::new(
            &"b".into(),
            Event::PartnerReconnecting(PartnerReconnecting {
                room_id: room.clone(),
                partner_id: "a".into()
            })
        )],
        "a blip is not a departure: no partner-left"
    );
    assert_eq!(c.stats(t).reconnecting_users, 1);
    assert_eq!(c.live().connected_users, 1);
    assert_eq!(c.live().active_rooms, 1, "the room is held");
    assert_eq!(
        c.route("b", &room, None).map(|_| ()),
        Err(ErrorCode::PartnerAway)
    );

    assert_eq!(
        c.join("a".into(), 7, None, Claim::Named { resume: None })
            .map(|_| ()),
        Err(ErrorCode::UserIdTaken),
        "nobody takes a held session without its token"
    );
    let j = c
        .join("a".into(), 7, None, Claim::Named { resume: Some(&ta) })
        .unwrap();
    assert!(j.resumed);
    assert!(j.replaced.is_none(), "the old link was already gone");
    assert_ne!(j.resume_token, ta, "a used token is spent");
    assert_eq!(
        j.effects,
        vec![
            Effect::new(
                &"a".into(),
                Event::Rejoined(Rejoined {
                    room_id: room.clone(),
                    partner_id: "b".into(),
                    is_initiator: true
                })
            ),
            Effect::new(
                &"b".into(),
                Event::PartnerReconnected(PartnerReconnected {
                    room_id: room.clone(),
                    partner_id: "a".into(),
                    recovered: false
                })
            ),
        ]
    );
    assert_eq!(c.stats(t).reconnecting_users, 0);
    assert!(c.route("b", &room, Some("a")).is_ok());
    assert_eq!(c.link("a"), Some(&7));
    assert!(
        c.tick(t + Duration::from_secs(20))
            .iter()
            .all(|e| e.event.name() != "partner-left"),
        "the old deadline is gone"
    );
    assert_eq!(c.check_invariants(), Ok(()));
}

#[test]
fn the_room_ends_when_the_grace_runs_out() {
    let t = Instant::now();
    let mut c = core();
    let (ta, _, room) = paired(&mut c, t);
    c.leave("a", &1, true, None, t);
    assert!(c.tick(t + Duration::from_millis(9_900)).is_empty());
    let out = c.tick(t + Duration::from_millis(10_000));
    let pl = left(&out, "b");
    assert_eq!(
        (pl.reason, pl.can_reconnect, pl.room_id),
        (Reason::Disconnect, false, room)
    );
    assert_eq!(c.live().active_rooms, 0);
    assert_eq!(c.live().connected_users, 1);
    let j = c
        .join("a".into(), 7, None, Claim::Named { resume: Some(&ta) })
        .unwrap();
    assert!(!j.resumed, "too late: a new session");
    assert!(j.effects.is_empty());
    assert_eq!(c.check_invariants(), Ok(()));
}

#[test]
fn a_partner_who_skips_during_the_grace_ends_the_room() {
    let t = Instant::now();
    let mut c = core();
    let (ta, _, room) = paired(&mut c, t);
    c.leave("a", &1, true, None, t);
    let out = c.next("b", t + Duration::from_secs(2)).unwrap();
    assert!(events_for(&out, "a").is_empty(), "a cannot be reached");
    assert_eq!(c.live().active_rooms, 0);
    assert!(c.is_waiting("b"));
    let j = c
        .join("a".into(), 7, None, Claim::Named { resume: Some(&ta) })
        .expect("still within the grace");
    assert!(j.resumed);
    assert_eq!(
        j.effects,
        vec![Effect::new(
            &"a".into(),
            Event::RoomEnded(RoomEnded {
                reason: Reason::PartnerLeft,
                room_id: room,
                duration: 2000
            })
        )]
    );
    assert_eq!(c.check_invariants(), Ok(()));
}

#[test]
fn searching_again_gives_up_a_room_whose_partner_is_away() {
    let t = Instant::now();
    let mut c = core();
    paired(&mut c, t);
    c.leave("a", &1, true, None, t);
    let out = c.find("b", None, t).unwrap();
    assert_eq!(events_for(&out, "b")[0].name(), "searching");
    assert_eq!(c.live().active_rooms, 0);
    assert_eq!(c.check_invariants(), Ok(()));
}

#[test]
fn a_waiting_user_who_drops_leaves_the_queue_at_once() {
    let t = Instant::now();
    let mut c = core();
    join(&mut c, "a", 1);
    c.find("a", None, t).unwrap();
    assert!(c.leave("a", &1, true, None, t).is_empty());
    assert!(!c.is_waiting("a"));
    assert_eq!(c.live().connected_users, 0);
    assert_eq!(c.stats(t).reconnecting_users, 0);
    join(&mut c, "b", 2);
    let out = c.find("b", None, t).unwrap();
    assert_eq!(events_for(&out, "b")[0].name(), "searching", "no ghost");
}

#[test]
fn a_token_takes_over_a_live_session_and_the_old_link_is_closed() {
    let t = Instant::now();
    let mut c = core();
    let (ta, _, room) = paired(&mut c, t);
    let j = c
        .join("a".into(), 7, None, Claim::Named { resume: Some(&ta) })
        .unwrap();
    assert_eq!(j.replaced, Some(1));
    assert_eq!(j.effects.len(), 2, "rejoined and partner-reconnected");
    assert!(
        c.leave("a", &1, true, None, t).is_empty(),
        "the old link no longer speaks"
    );
    assert_eq!(c.room_of("a").map(|r| r.id.clone()), Some(room));
}

#[test]
fn leaving_on_purpose_ends_the_room_at_once() {
    let t = Instant::now();
    let mut c = core();
    paired(&mut c, t);
    let pl = left(&c.leave("a", &1, false, None, t), "b");
    assert_eq!((pl.reason, pl.can_reconnect), (Reason::Disconnect, false));
    assert_eq!(c.live().active_rooms, 0);
    assert_eq!(c.stats(t).reconnecting_users, 0);
}

#[test]
fn without_a_grace_a_drop_ends_the_room_at_once() {
    let t = Instant::now();
    let mut c = Core::new(CoreConfig {
        reconnect_grace: Duration::ZERO,
        ..Default::default()
    });
    let (_, _, _) = paired(&mut c, t);
    let pl = left(&c.leave("a", &1, true, None, t), "b");
    assert_eq!((pl.reason, pl.can_reconnect), (Reason::Disconnect, false));
    assert_eq!(c.live().active_rooms, 0);
}

#[test]
fn a_verified_identity_takes_its_session_without_a_token() {
    let t = Instant::now();
    let mut c = core();
    let (_, _, room) = paired(&mut c, t);
    let j = c.join("a".into(), 9, None, Claim::Verified).unwrap();
    assert!(j.resumed);
    assert_eq!(j.replaced, Some(1));
    assert_eq!(c.room_of("a").map(|r| r.id.clone()), Some(room));
}

#[test]
fn a_held_user_gets_relays_and_recovers_its_session_unseen() {
    let t = Instant::now();
    let mut c = core();
    let (_, _, room) = paired(&mut c, t);
    c.leave("a", &1, true, Some((11, true)), t);
    // The link that holds its session keeps what is sent meanwhile: relays are accepted.
    assert_eq!(c.route("b", &room, Some("a")).map(|(_, l)| *l), Ok(11));
    // Only the link that holds the session can recover it.
    assert_eq!(c.recover("a".into(), &1, 6), Err(ErrorCode::UserIdTaken));
    let out = c.recover("a".into(), &11, 8).unwrap();
    assert_eq!(
        out,
        vec![Effect::new(
            &"b".into(),
            Event::PartnerReconnected(PartnerReconnected {
                room_id: room.clone(),
                partner_id: "a".into(),
                recovered: true
            })
        )],
        "no rejoined: the client's call never stopped"
    );
    assert_eq!(c.link("a"), Some(&8));
    assert_eq!(c.stats(t).reconnecting_users, 0);
    assert_eq!(c.room_of("a").map(|r| r.id.clone()), Some(room.clone()));
    assert!(
        c.tick(t + Duration::from_secs(20)).is_empty(),
        "the grace's deadline is gone"
    );
    assert_eq!(c.check_invariants(), Ok(()));
}

#[test]
fn a_user_without_a_held_session_is_still_refused_relays_while_away() {
    let t = Instant::now();
    let mut c = core();
    let (_, _, room) = paired(&mut c, t);
    c.leave("a", &1, true, None, t);
    assert_eq!(
        c.route("b", &room, None).map(|_| ()),
        Err(ErrorCode::PartnerAway)
    );
}

#[test]
fn an_abandoned_held_session_ends_as_a_departure() {
    let t = Instant::now();
    let mut c = core();
    let (_, _, room) = paired(&mut c, t);
    c.leave("a", &1, true, Some((11, true)), t);
    assert!(
        c.abandon("a", &1, t).is_empty(),
        "another link's word changes nothing"
    );
    let pl = left(&c.abandon("a", &11, t), "b");
    assert_eq!(
        (pl.reason, pl.can_reconnect, pl.room_id),
        (Reason::Disconnect, false, room)
    );
    assert_eq!(c.live().active_rooms, 0);
    assert!(c.link("a").is_none());
    // A recovery that comes after: a fresh registration, no room.
    assert_eq!(c.recover("a".into(), &11, 3), Ok(vec![]));
    assert!(c.room_of("a").is_none());
}

#[test]
fn two_held_users_wait_for_each_other() {
    let t = Instant::now();
    let mut c = core();
    let (_, _, room) = paired(&mut c, t);
    c.leave("a", &1, true, Some((11, true)), t);
    let out = c.leave(
        "b",
        &2,
        true,
        Some((12, true)),
        t + Duration::from_millis(100),
    );
    assert_eq!(events_for(&out, "a")[0].name(), "partner-reconnecting");
    assert_eq!(c.live().active_rooms, 1, "the room is still held");
    assert_eq!(c.stats(t).reconnecting_users, 2);
    let back = c.recover("a".into(), &11, 21).unwrap();
    assert_eq!(back[0].event.name(), "partner-reconnected");
    assert_eq!(
        back[0].to.as_ref(),
        "b",
        "told to b's held session, which keeps it"
    );
    c.recover("b".into(), &12, 22).unwrap();
    assert_eq!(c.room_of("a").map(|r| r.id.clone()), Some(room));
    assert_eq!(c.check_invariants(), Ok(()));
}

#[test]
fn a_session_held_without_keeping_refuses_relays_and_is_still_recovered() {
    // A cluster's node: the client may come back elsewhere, so nothing is kept for it here.
    let t = Instant::now();
    let mut c = core();
    let (_, _, room) = paired(&mut c, t);
    c.leave("a", &1, true, Some((11, false)), t);
    assert_eq!(
        c.route("b", &room, None).map(|_| ()),
        Err(ErrorCode::PartnerAway)
    );
    assert!(c.recover("a".into(), &11, 12).is_ok());
    assert_eq!(c.route("b", &room, None).map(|(_, l)| *l), Ok(12));
}

/// A session recovered through another node: the old node hands the room over as recovered
/// (the local partner hears `partner-reconnected {recovered: true}`, and keeps the user as its
/// ghost on the new node), and the new node seats the user without `rejoined`, which its
/// client, that never knew it left, must not get.
#[test]
fn a_session_recovered_through_another_node_moves_its_room_without_rejoined() {
    let t = Instant::now();
    let mut old = core();
    let (_, _, room) = paired(&mut old, t);
    // `a`'s session is held on link 10, keeping what is sent to it.
    old.leave("a", &1, true, Some((10, true)), t);
    let h = old
        .hand_over("a", None, 99, true)
        .expect("away with a room");
    assert_eq!(h.room, room);
    assert_eq!(&*h.partner, "b");
    assert!(
        h.partner_link.is_none(),
        "the partner stays on the old node"
    );
    assert_eq!(
        h.effects,
        vec![Effect::new(
            &"b".into(),
            Event::PartnerReconnected(PartnerReconnected {
                room_id: room.clone(),
                partner_id: "a".into(),
                recovered: true,
            })
        )]
    );
    assert!(old.is_ghost("a"), "a lives on the new node now");
    assert_eq!(old.route("b", &room, None).map(|_| ()), Ok(()));

    let mut new = core();
    join(&mut new, "a", 5);
    let seat = |initiator| Seat {
        room: room.clone(),
        partner: "b".into(),
        initiator,
    };
    let out = new.take_over("a", seat(h.initiator), 77, true, t);
    assert_eq!(out, Some(Vec::new()), "no rejoined for a recovered client");
    assert_eq!(new.room_of("a").map(|r| r.id.clone()), Some(room.clone()));
    // The same handover by resume token tells the client where it is.
    let mut other = core();
    join(&mut other, "a", 5);
    let out = other
        .take_over("a", seat(h.initiator), 77, false, t)
        .unwrap();
    assert!(matches!(
        events_for(&out, "a").as_slice(),
        [Event::Rejoined(Rejoined { .. })]
    ));
}
