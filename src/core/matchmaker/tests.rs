//! The pairing rule, checked directly and against a brute-force reference (its generators are
//! shared with the cluster matchmaker's model test, `bus::holder`).

use super::*;
use crate::model::profile::{Gender, GenderWish, Preferences, Profile};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const RELAX: Duration = Duration::from_secs(5);

fn seeker(id: &str, at: Instant) -> Seeker {
    Seeker {
        user: id.into(),
        profile: Arc::new(Profile::default()),
        prefs: Arc::new(Preferences::default()),
        since: at,
        previous: None,
    }
}

fn with(mut s: Seeker, profile: Profile, prefs: Preferences) -> Seeker {
    s.profile = Arc::new(profile);
    s.prefs = Arc::new(prefs);
    s
}

fn male() -> Profile {
    Profile {
        gender: Some(Gender::Male),
        ..Default::default()
    }
}

fn female() -> Profile {
    Profile {
        gender: Some(Gender::Female),
        ..Default::default()
    }
}

fn wants_female() -> Preferences {
    Preferences {
        gender: GenderWish::Female,
        ..Default::default()
    }
}

fn interests(tags: &[&str]) -> Preferences {
    Preferences {
        interests: tags.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn fifo_among_equals() {
    let t = Instant::now();
    let mut m = PreferenceMatchmaker::new(RELAX);
    assert!(
        m.offer(with(seeker("a", t), male(), wants_female()), t)
            .is_none()
    );
    assert!(
        m.offer(with(seeker("b", t), male(), wants_female()), t)
            .is_none()
    );
    let p = m
        .offer(with(seeker("c", t), female(), Preferences::default()), t)
        .unwrap();
    assert_eq!(&*p.waiting.user, "a", "a waited longest");
    assert_eq!(m.waiting().map(|s| &*s.user).collect::<Vec<_>>(), ["b"]);
}

#[test]
fn a_shared_interest_beats_a_longer_wait() {
    let t = Instant::now();
    let mut m = PreferenceMatchmaker::new(RELAX);
    m.offer(with(seeker("a", t), male(), wants_female()), t);
    let mut b_prefs = wants_female();
    b_prefs.interests = vec!["music".into()];
    m.offer(with(seeker("b", t), male(), b_prefs), t);
    let p = m
        .offer(
            with(seeker("c", t), female(), interests(&["music", "chess"])),
            t,
        )
        .unwrap();
    assert_eq!(&*p.waiting.user, "b");
    assert_eq!(p.common_interests, ["music"]);
}

#[test]
fn interests_insist_until_relaxed() {
    let t = Instant::now();
    let mut m = PreferenceMatchmaker::new(RELAX);
    assert!(
        m.offer(
            with(seeker("a", t), Profile::default(), interests(&["music"])),
            t
        )
        .is_none()
    );
    assert!(
        m.offer(
            with(seeker("b", t), Profile::default(), interests(&["chess"])),
            t
        )
        .is_none()
    );
    assert!(
        m.offer(seeker("plain", t), t).is_none(),
        "a and b insist on sharing"
    );
    let r = m.relax(t + Duration::from_secs(4));
    assert!(r.relaxed.is_empty() && r.pairs.is_empty());
    let later = t + RELAX;
    let r = m.relax(later);
    assert_eq!(
        r.relaxed.len(),
        1,
        "a relaxed, then paired, before b's turn came"
    );
    assert_eq!(r.pairs.len(), 1);
    let p = &r.pairs[0];
    assert_eq!(
        (&*p.seeker.user, &*p.waiting.user),
        ("a", "b"),
        "b waited longest"
    );
    assert!(p.common_interests.is_empty());
    assert_eq!(m.waiting().map(|s| &*s.user).collect::<Vec<_>>(), ["plain"]);
    // A newcomer with interests insists: not the plain user, but one who shares.
    let chess = |id: &str| with(seeker(id, later), Profile::default(), interests(&["chess"]));
    assert!(m.offer(chess("c"), later).is_none());
    let p = m.offer(chess("d"), later).unwrap();
    assert_eq!(&*p.waiting.user, "c");
    assert_eq!(p.common_interests, ["chess"]);
}

#[test]
fn previous_partners_are_a_last_resort() {
    let t = Instant::now();
    let mut m = PreferenceMatchmaker::new(RELAX);
    let mut b = with(seeker("b", t), male(), wants_female());
    b.previous = Some("a".into());
    m.offer(b, t);
    m.offer(with(seeker("c", t), male(), wants_female()), t);
    let mut a = with(seeker("a", t), female(), Preferences::default());
    a.previous = Some("b".into());
    let p = m.offer(a.clone(), t).unwrap();
    assert_eq!(&*p.waiting.user, "c", "b waited longer, but a just left b");
    let mut a2 = a;
    a2.user = "a2".into();
    a2.previous = Some("b".into());
    assert_eq!(
        &*m.offer(a2, t).unwrap().waiting.user,
        "b",
        "nobody else: b it is"
    );
}

#[test]
fn blocked_pairs_never_meet() {
    let t = Instant::now();
    let mut m = PreferenceMatchmaker::new(RELAX);
    m.block(&"a".into(), &"b".into(), t + Duration::from_secs(60));
    m.offer(seeker("a", t), t);
    assert!(m.offer(seeker("b", t), t).is_none(), "b is blocked by a");
    assert_eq!(&*m.offer(seeker("c", t), t).unwrap().waiting.user, "a");
    // Blocks expire.
    let later = t + Duration::from_secs(61);
    m.offer(seeker("d", later), later);
    m.remove("d");
    m.remove("b");
    m.offer(seeker("a2", later), later);
    m.block(&"a2".into(), &"b2".into(), later);
    assert!(
        m.offer(seeker("b2", later), later).is_some(),
        "an expired block"
    );
}

#[test]
fn hard_filters_narrow_by_language_and_country() {
    let t = Instant::now();
    let mut m = PreferenceMatchmaker::new(RELAX);
    let speaker = |id: &str, lang: &str, country: &str| {
        with(
            seeker(id, t),
            Profile {
                languages: vec![lang.into()],
                country: Some(country.into()),
                ..Default::default()
            },
            Preferences::default(),
        )
    };
    // Picky users who do not accept each other wait side by side.
    let picky = |mut s: Seeker| {
        s.prefs = Arc::new(Preferences {
            age_range: Some((30, 40)),
            ..Default::default()
        });
        s
    };
    m.offer(picky(speaker("en-us", "en", "US")), t);
    m.offer(picky(speaker("de-de", "de", "DE")), t);
    m.offer(picky(speaker("de-at", "de", "AT")), t);
    let seeker_with = |id: &str, prefs: Preferences| {
        with(
            seeker(id, t),
            Profile {
                age: Some(35),
                ..Default::default()
            },
            prefs,
        )
    };
    let at = Preferences {
        country: Some("AT".into()),
        ..Default::default()
    };
    assert_eq!(
        &*m.offer(seeker_with("x", at), t).unwrap().waiting.user,
        "de-at"
    );
    let de = Preferences {
        language: Some("de".into()),
        ..Default::default()
    };
    assert_eq!(
        &*m.offer(seeker_with("y", de), t).unwrap().waiting.user,
        "de-de"
    );
    let fr = Preferences {
        language: Some("fr".into()),
        ..Default::default()
    };
    assert!(m.offer(seeker_with("z", fr), t).is_none());
}

#[test]
fn memory_follows_the_live_queue() {
    let t = Instant::now();
    let mut m = PreferenceMatchmaker::new(RELAX);
    // One long waiter at the head, and heavy churn behind it.
    m.offer(with(seeker("old", t), male(), wants_female()), t);
    for i in 0..10_000 {
        let id = format!("u{i}");
        m.offer(with(seeker(&id, t), male(), wants_female()), t);
        m.remove(&id);
    }
    let items: usize = m
        .groups
        .iter()
        .flat_map(|(_, g)| g.iter())
        .map(|b| b.all.plain.len() + b.all.keen.len())
        .sum();
    assert!(items < 200, "stale list items are compacted: {items}");
    // Ever new interest tags do not pile up either.
    for i in 0..1000 {
        let id = format!("t{i}");
        let tags = [format!("tag{i}a"), format!("tag{i}b")];
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        m.offer(with(seeker(&id, t), male(), interests(&tags)), t);
        m.remove(&id);
    }
    assert_eq!(m.interned(), 0, "only the live queue's strings are kept");
    m.remove("old");
    assert!(m.groups.is_empty() && m.group_of.is_empty());
}

// ---- the reference ------------------------------------------------------------------------------

fn insists(s: &Seeker, now: Instant) -> bool {
    !s.prefs.interests.is_empty() && now.saturating_duration_since(s.since) < RELAX
}

fn blocked(blocks: &[(String, String)], a: &str, b: &str) -> bool {
    blocks
        .iter()
        .any(|(x, y)| (x == a && y == b) || (x == b && y == a))
}

fn candidate(s: &Seeker, now: Instant) -> crate::core::rule::Candidate<'_> {
    crate::core::rule::Candidate {
        user: &s.user,
        profile: &s.profile,
        prefs: &s.prefs,
        insists: insists(s, now),
        previous: s.previous.as_deref(),
    }
}

/// Whether `s` and `w` may pair at `now`, and whether they share an interest.
fn eligible(s: &Seeker, w: &Seeker, blocks: &[(String, String)], now: Instant) -> Option<bool> {
    let blocked = |a: &str, b: &str| blocked(blocks, a, b);
    crate::core::rule::eligible(&candidate(s, now), &candidate(w, now), &blocked)
}

/// The partner the rule ([`crate::core::rule::pick`]) names for `s` among `queue` (in arrival
/// order).
fn reference_pick(
    s: &Seeker,
    queue: &[Seeker],
    blocks: &[(String, String)],
    now: Instant,
) -> Option<UserId> {
    let blocked = |a: &str, b: &str| blocked(blocks, a, b);
    let list: Vec<_> = queue.iter().map(|w| candidate(w, now)).collect();
    crate::core::rule::pick(&candidate(s, now), &list, &blocked).map(|i| queue[i].user.clone())
}

pub(crate) fn arb_seeker(id: u8) -> impl Strategy<Value = Seeker> {
    let gender = prop_oneof![
        Just(None),
        Just(Some(Gender::Male)),
        Just(Some(Gender::Female))
    ];
    let wish = prop_oneof![
        4 => Just(GenderWish::Any),
        1 => Just(GenderWish::Male),
        1 => Just(GenderWish::Female)
    ];
    let langs = proptest::sample::subsequence(vec!["en", "de", "fr"], 0..=2);
    let lang_wish = prop_oneof![4 => Just(None), 1 => Just(Some("en")), 1 => Just(Some("de"))];
    let country = prop_oneof![Just(None), Just(Some("US")), Just(Some("DE"))];
    let country_wish = prop_oneof![5 => Just(None), 1 => Just(Some("DE"))];
    let age = prop_oneof![Just(None), (18u8..40).prop_map(Some)];
    let age_wish = prop_oneof![5 => Just(None), 1 => Just(Some((20u8, 30u8)))];
    let tags = proptest::sample::subsequence(vec!["music", "chess", "art"], 0..=2);
    let previous = prop_oneof![4 => Just(None), 1 => (0u8..8).prop_map(Some)];
    (
        gender,
        wish,
        langs,
        lang_wish,
        country,
        country_wish,
        age,
        age_wish,
        tags,
        previous,
    )
        .prop_map(
            move |(g, gw, langs, lw, c, cw, age, aw, tags, prev)| Seeker {
                user: id.to_string().into(),
                profile: Arc::new(Profile {
                    gender: g,
                    age,
                    languages: langs.into_iter().map(String::from).collect(),
                    country: c.map(String::from),
                }),
                prefs: Arc::new(Preferences {
                    language: lw.map(String::from),
                    gender: gw,
                    age_range: aw,
                    country: cw.map(String::from),
                    interests: tags.into_iter().map(String::from).collect(),
                }),
                since: Instant::now(),
                previous: prev.map(|p| p.to_string().into()),
            },
        )
}

#[derive(Debug, Clone)]
enum Op {
    Offer(Seeker),
    Remove(u8),
    Block(u8, u8),
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8).prop_flat_map(arb_seeker).prop_map(Op::Offer),
        2 => (0u8..8).prop_map(Op::Remove),
        1 => (0u8..8, 0u8..8).prop_map(|(a, b)| Op::Block(a, b)),
        2 => (0u16..4000).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The engine picks exactly the partner the rule names, never pairs the ineligible, and
    /// leaves no two waiting users who could pair.
    #[test]
    fn the_engine_follows_the_rule(ops in proptest::collection::vec(op(), 1..120)) {
        let start = Instant::now();
        let mut now = start;
        let mut m = PreferenceMatchmaker::new(RELAX);
        let mut queue: Vec<Seeker> = Vec::new();
        let mut blocks: Vec<(String, String)> = Vec::new();
        for op in ops {
            // Time first, as the server's tick does.
            for p in m.relax(now).pairs {
                prop_assert!(eligible(&p.seeker, &p.waiting, &blocks, now).is_some());
                queue.retain(|w| w.user != p.seeker.user && w.user != p.waiting.user);
            }
            match op {
                Op::Offer(mut s) => {
                    if queue.iter().any(|w| w.user == s.user) {
                        continue;
                    }
                    s.since = now;
                    let expected = reference_pick(&s, &queue, &blocks, now);
                    let got = m.offer(s.clone(), now).map(|p| p.waiting.user);
                    prop_assert_eq!(&got, &expected);
                    match got {
                        Some(w) => queue.retain(|x| x.user != w),
                        None => queue.push(s),
                    }
                }
                Op::Remove(u) => {
                    let id = u.to_string();
                    prop_assert_eq!(m.remove(&id).is_some(), queue.iter().any(|w| *w.user == *id));
                    queue.retain(|w| *w.user != *id);
                }
                Op::Block(a, b) => {
                    m.block(&a.to_string().into(), &b.to_string().into(), start + Duration::from_secs(3600));
                    blocks.push((a.to_string(), b.to_string()));
                }
                Op::Wait(ms) => now += Duration::from_millis(ms as u64),
            }
            prop_assert_eq!(m.len(), queue.len());
            let order: Vec<&str> = m.waiting().map(|s| &*s.user).collect();
            let expected: Vec<&str> = queue.iter().map(|s| &*s.user).collect();
            prop_assert_eq!(order, expected, "arrival order");
            for (i, a) in queue.iter().enumerate() {
                for b in &queue[i + 1..] {
                    // Users whose relaxation is due but not yet processed are the tick's job.
                    let due = |s: &Seeker| !s.prefs.interests.is_empty() && !m.is_relaxed(&s.user) && !insists(s, now);
                    if due(a) || due(b) {
                        continue;
                    }
                    prop_assert!(eligible(a, b, &blocks, now).is_none(), "{} and {} both wait but could pair", a.user, b.user);
                }
            }
        }
    }
}
