use super::*;
use proptest::prelude::*;
use std::net::IpAddr;

const T: u64 = 1_800_000_000_000;

fn ban(id: &str, target: Target, until: u64) -> Ban {
    Ban {
        id: id.into(),
        target,
        until,
        reason: "spam".into(),
        created: T,
        source: Source::Operator,
        force: false,
    }
}

fn user(u: &str) -> Target {
    Target::User(u.into())
}

fn addr(a: &str) -> Target {
    Target::Address(parse_address(a).unwrap())
}

#[test]
fn a_user_ban_holds_until_it_ends_or_is_lifted() {
    let mut m = Moderation::new(AutoBan::default());
    m.ban(ban("b1", user("eve"), T + 1000), T).unwrap();
    assert_eq!(m.user_ban("eve", T).map(|b| b.id.as_str()), Some("b1"));
    assert!(m.user_ban("bob", T).is_none());
    assert!(m.user_ban("eve", T + 1000).is_none(), "ended");
    assert_eq!(m.unban("b1").map(|b| b.id), Some("b1".into()));
    assert!(m.user_ban("eve", T).is_none(), "lifted");
    assert!(m.unban("b1").is_none());
}

#[test]
fn lifting_the_longer_of_two_bans_leaves_the_shorter() {
    let mut m = Moderation::new(AutoBan::default());
    m.ban(ban("short", user("eve"), T + 1000), T).unwrap();
    m.ban(ban("long", user("eve"), T + 9000), T).unwrap();
    assert_eq!(m.user_ban("eve", T).unwrap().id, "long");
    m.unban("long");
    assert_eq!(m.user_ban("eve", T).unwrap().id, "short");
}

#[test]
fn address_bans_cover_their_prefix_in_both_families() {
    let mut m = Moderation::new(AutoBan::default());
    m.ban(ban("v4", addr("203.0.113.9/24"), T + 1000), T)
        .unwrap();
    m.ban(ban("v6", addr("2001:db8::/32"), T + 1000), T)
        .unwrap();
    m.ban(ban("one", addr("198.51.100.7"), T + 1000), T)
        .unwrap();
    let hit = |ip: &str| m.address_ban(ip.parse().unwrap(), T).map(|b| b.id.clone());
    assert_eq!(hit("203.0.113.200").as_deref(), Some("v4"));
    assert_eq!(hit("203.0.114.1"), None);
    assert_eq!(hit("2001:db8:1::5").as_deref(), Some("v6"));
    assert_eq!(hit("2001:db9::1"), None);
    assert_eq!(hit("198.51.100.7").as_deref(), Some("one"));
    assert_eq!(hit("198.51.100.8"), None);
    // An IPv4 client seen through an IPv6 socket.
    assert_eq!(hit("::ffff:203.0.113.5").as_deref(), Some("v4"));
    assert_eq!(
        parse_address("203.0.113.9/24").unwrap().to_string(),
        "203.0.113.0/24"
    );
    assert!(parse_address("not an address").is_none());
    assert!(parse_address("10.0.0.0/33").is_none());
}

#[test]
fn bans_are_capped() {
    let mut m = Moderation::new(AutoBan::default());
    for i in 0..MAX_BANS {
        m.ban(ban(&format!("b{i}"), user(&format!("u{i}")), T + 1000), T)
            .unwrap();
    }
    assert_eq!(
        m.ban(ban("over", user("x"), T + 1000), T),
        Err(Refused::Full)
    );
    assert!(
        m.user_ban("x", T).is_none(),
        "a refused ban changes nothing"
    );
    // Once they end, there is room again.
    assert!(m.ban(ban("later", user("x"), T + 5000), T + 1000).is_ok());
    assert_eq!(m.active_bans(T + 1000), 1);
}

#[test]
fn a_shorter_ban_holds_after_the_longer_one_ends_in_an_expiry_sweep() {
    let mut m = Moderation::new(AutoBan::default());
    m.ban(ban("long", user("eve"), T + 5000), T).unwrap();
    m.ban(ban("short", user("eve"), T + 1000), T).unwrap();
    m.ban(ban("net", addr("10.0.0.0/8"), T + 1000), T).unwrap();
    m.expire(T + 2000);
    assert_eq!(m.user_ban("eve", T + 2000).unwrap().id, "long");
    assert!(
        m.address_ban("10.1.2.3".parse().unwrap(), T + 2000)
            .is_none()
    );
    assert_eq!(m.active_bans(T + 2000), 1);
}

#[test]
fn the_feed_is_newest_first_and_pages_by_id() {
    let mut m = Moderation::new(AutoBan::default());
    // Two in the same millisecond: still distinct, in order.
    let ids: Vec<u64> = (0..5)
        .map(|i| {
            m.report(&format!("r{i}"), "eve", "rude", call("room"), T + i / 2)
                .unwrap()
                .0
                .id
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let page = m.reports(2, None);
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    let next = m.reports(2, Some(page[1].id));
    assert_eq!(
        next.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
    assert_eq!(m.reports(10, Some(ids[0])), []);
    assert_eq!(page[0].room_id.as_deref(), Some("room"));
}

#[test]
fn reports_are_capped() {
    let mut m = Moderation::new(AutoBan::default());
    for i in 0..MAX_REPORTS as u64 + 10 {
        m.report(&format!("a{i}"), "b", "", Seen::default(), T + i);
    }
    let all = m.reports(usize::MAX, None);
    assert_eq!(all.len(), MAX_REPORTS);
    assert_eq!(
        all.last().unwrap().timestamp,
        T + 10,
        "the oldest went first"
    );
}

fn auto(k: usize) -> AutoBan {
    AutoBan {
        reporters: k,
        window_secs: 60,
        ban_secs: 3600,
        min_call_ms: 5000,
    }
}

/// A report made after a minute in room `room`, from a network of its own.
fn call(room: &str) -> Seen<'_> {
    Seen {
        room_id: Some(room),
        call_ms: Some(60_000),
        network: None,
        verified: false,
    }
}

/// A report by someone who shared a room with `to`; the auto-ban it made, if any.
fn met(m: &mut Moderation, from: &str, to: &str, now: u64) -> Option<Ban> {
    m.report(from, to, "", call("room"), now)
        .and_then(|(_, b)| b)
}

#[test]
fn k_distinct_reporters_ban_and_k_reports_from_one_do_not() {
    let mut m = Moderation::new(auto(3));
    assert!(met(&mut m, "alice", "eve", T).is_none());
    for _ in 0..4 {
        assert!(
            m.report("alice", "eve", "", call("room"), T).is_none(),
            "a repeat is not recorded again"
        );
    }
    assert_eq!(m.reports_about("eve"), 1);
    assert!(met(&mut m, "bob", "eve", T).is_none());
    let b = met(&mut m, "carol", "eve", T + 1).expect("the third distinct reporter bans");
    assert_eq!(b.target, user("eve"));
    assert_eq!(b.until, T + 1 + 3_600_000);
    assert_eq!(
        b.source,
        Source::Reports {
            reporters: 3,
            window_secs: 60
        }
    );
    assert!(m.user_ban("eve", T + 2).is_some());
    // Banned already: more reports make no second ban.
    assert!(met(&mut m, "dave", "eve", T + 3).is_none());
}

#[test]
fn reports_of_a_stranger_count_for_the_feed_and_not_for_the_auto_ban() {
    let mut m = Moderation::new(auto(2));
    for r in ["sock1", "sock2", "sock3"] {
        let (_, b) = m.report(r, "victim", "", Seen::default(), T).unwrap();
        assert!(b.is_none(), "never in a room with the victim");
    }
    assert_eq!(m.distinct_reporters("victim", T), 3);
    assert!(m.user_ban("victim", T).is_none());
}

#[test]
fn reports_older_than_the_window_do_not_count() {
    let mut m = Moderation::new(auto(2));
    met(&mut m, "alice", "eve", T);
    assert!(met(&mut m, "bob", "eve", T + 61_000).is_none());
    assert!(met(&mut m, "carol", "eve", T + 62_000).is_some());
}

#[test]
fn the_auto_ban_is_off_with_zero() {
    let mut m = Moderation::new(auto(0));
    for i in 0..50 {
        assert!(met(&mut m, &format!("r{i}"), "eve", T).is_none());
    }
    assert_eq!(m.distinct_reporters("eve", T), 50);
}

#[test]
fn a_late_report_from_another_node_is_paged_in_id_order() {
    let mut m = Moderation::new(AutoBan::default());
    let a = m.report("a", "x", "", Seen::default(), T + 10).unwrap().0;
    m.push_report(Report {
        id: (T + 5) * 1000,
        reporter: "b".into(),
        reported: "y".into(),
        reason: String::new(),
        room_id: None,
        timestamp: T + 5,
        call_ms: None,
        network: None,
        verified: false,
    });
    let ids: Vec<u64> = m.reports(10, None).iter().map(|r| r.id).collect();
    assert_eq!(ids, [a.id, (T + 5) * 1000], "newest first by id");
    assert_eq!(
        parse_address("::ffff:203.0.113.7").unwrap().to_string(),
        "203.0.113.7/32",
        "a mapped address is the IPv4 one"
    );
}

/// A report after `ms` in a room with `to`, from network `net`; the auto-ban it made.
fn from_net(m: &mut Moderation, from: &str, to: &str, net: &str, ms: u64, now: u64) -> Option<Ban> {
    let seen = Seen {
        room_id: Some("room"),
        call_ms: Some(ms),
        network: Some(net),
        verified: false,
    };
    m.report(from, to, "", seen, now).and_then(|(_, b)| b)
}

#[test]
fn verified_reporters_count_as_themselves_whatever_their_network() {
    let mut m = Moderation::new(auto(3));
    let mut ban = None;
    for who in ["v1", "v2", "v3"] {
        let seen = Seen {
            room_id: Some("room"),
            call_ms: Some(60_000),
            network: Some("100.64.0.0/24"),
            verified: true,
        };
        ban = m.report(who, "eve", "", seen, T).and_then(|(_, b)| b);
    }
    assert!(ban.is_some(), "three verified users behind one carrier NAT");
}

#[test]
fn accounts_from_one_network_count_once_and_three_networks_ban() {
    let mut m = Moderation::new(auto(3));
    for sock in ["sock1", "sock2", "sock3", "sock4"] {
        assert!(from_net(&mut m, sock, "victim", "198.51.100.0/24", 60_000, T).is_none());
    }
    assert!(
        m.user_ban("victim", T).is_none(),
        "four accounts, one network"
    );
    assert!(from_net(&mut m, "a", "eve", "198.51.100.0/24", 60_000, T).is_none());
    assert!(from_net(&mut m, "b", "eve", "203.0.113.0/24", 60_000, T).is_none());
    let ban = from_net(&mut m, "c", "eve", "2001:db8:1::/48", 60_000, T);
    assert!(ban.is_some(), "three networks ban");
}

#[test]
fn a_report_after_a_short_call_counts_for_the_feed_only() {
    let mut m = Moderation::new(auto(2));
    assert!(from_net(&mut m, "a", "eve", "10.0.1.0/24", 4999, T).is_none());
    assert!(from_net(&mut m, "b", "eve", "10.0.2.0/24", 200, T).is_none());
    assert!(
        m.user_ban("eve", T).is_none(),
        "calls shorter than min_call_ms"
    );
    assert_eq!(m.distinct_reporters("eve", T), 2, "the feed has them");
    assert!(from_net(&mut m, "c", "eve", "10.0.3.0/24", 5000, T).is_none());
    assert!(from_net(&mut m, "d", "eve", "10.0.4.0/24", 5000, T).is_some());
}

#[test]
fn a_flood_against_one_user_never_erases_the_evidence_against_another() {
    let mut m = Moderation::new(auto(3));
    from_net(&mut m, "h1", "abuser", "10.0.1.0/24", 60_000, T);
    from_net(&mut m, "h2", "abuser", "10.0.2.0/24", 60_000, T);
    // A flood, both as strangers and as partners of a long call, from many networks.
    for i in 0..MAX_REPORTS as u64 + 500 {
        let net = format!("172.{}.{}.0/24", (i >> 8) & 255, i & 255);
        let seen = Seen {
            room_id: Some("r"),
            call_ms: Some(60_000),
            network: Some(&net),
            verified: false,
        };
        m.report(&format!("bot{i}"), &format!("x{}", i % 2), "", seen, T + 1);
    }
    assert!(
        m.reports(usize::MAX, None)
            .iter()
            .all(|r| r.reported != "abuser"),
        "the feed forgot them"
    );
    assert!(
        m.live_reports()
            .iter()
            .filter(|r| r.reported == "abuser")
            .count()
            == 2,
        "kept across a restart as evidence"
    );
    let ban = from_net(&mut m, "h3", "abuser", "10.0.3.0/24", 60_000, T + 2);
    assert!(ban.is_some(), "the third honest report bans");
}

#[test]
fn evidence_is_bounded_per_user() {
    let mut m = Moderation::new(auto(3));
    m.ban(ban("b", user("target"), T + 10_000_000), T).unwrap();
    for i in 0..1000u32 {
        let net = format!("10.{}.{}.0/24", i >> 8, i & 255);
        from_net(&mut m, &format!("r{i}"), "target", &net, 60_000, T);
    }
    let kept = m.live_records() - m.reports(usize::MAX, None).len() - 1;
    assert!(kept <= 16, "one user's evidence is capped: {kept}");
}

#[test]
fn networks_prefixes_and_mapped_addresses() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(network_of(ip("203.0.113.77")), "203.0.113.0/24");
    assert_eq!(network_of(ip("::ffff:203.0.113.77")), "203.0.113.0/24");
    assert_eq!(network_of(ip("2001:db8:1:2::5")), "2001:db8:1::/48");
    for (text, ok) in [
        ("203.0.113.9/0", false),
        ("10.0.0.0/7", false),
        ("10.0.0.0/8", true),
        ("2001:db8::/31", false),
        ("2001:db8::/32", true),
        ("::ffff:203.0.113.7", true),
    ] {
        assert_eq!(narrow_enough(&parse_address(text).unwrap()), ok, "{text}");
    }
    let mapped: IpNet = "::ffff:203.0.113.0/120".parse().unwrap();
    assert_eq!(normalised(mapped).to_string(), "203.0.113.0/24");
    // A mapped ban that came from the file or another node matches its IPv4 clients.
    let mut m = Moderation::new(AutoBan::default());
    m.ban(ban("m", Target::Address(mapped), T + 1000), T)
        .unwrap();
    assert!(m.address_ban(ip("203.0.113.5"), T).is_some());
}

proptest! {
    /// Whatever the reports, a ban by reports comes exactly when the K-th distinct reporter
    /// within the window reports, and never for a user with fewer; repeats count once.
    #[test]
    fn auto_ban_matches_a_count_of_distinct_reporters(
        k in 1usize..5,
        reports in prop::collection::vec((0u8..6, 0u8..3, 0u64..120), 0..60),
    ) {
        let mut m = Moderation::new(auto(k));
        let mut sorted = reports.clone();
        sorted.sort_by_key(|r| r.2);
        let mut banned: HashMap<String, bool> = HashMap::new();
        let mut seen: Vec<(String, String, u64)> = Vec::new();
        for (from, to, secs) in sorted {
            let (from, to, now) = (format!("r{from}"), format!("u{to}"), T + secs * 1000);
            // A repeat within the window is not recorded (the earlier report stands).
            let repeat = seen
                .iter()
                .any(|(f, t, at)| *f == from && *t == to && *at + 60_000 >= now);
            if !repeat {
                seen.push((from.clone(), to.clone(), now));
            }
            let b = met(&mut m, &from, &to, now);
            let mut who: Vec<&str> = seen
                .iter()
                .filter(|(_, t, at)| *t == to && *at + 60_000 >= now)
                .map(|(f, _, _)| f.as_str())
                .collect();
            who.sort_unstable();
            who.dedup();
            let was = banned.get(&to).copied().unwrap_or(false);
            let expect = !was && who.len() >= k;
            prop_assert_eq!(b.is_some(), expect, "{} by {} at {}", to, from, secs);
            if expect {
                banned.insert(to.clone(), true);
            }
        }
    }
}

proptest! {
    /// The indexed address lookup finds exactly the bans a scan of every ban finds.
    #[test]
    fn the_address_index_agrees_with_a_scan(
        bans in prop::collection::vec((any::<[u8; 4]>(), 8u8..=32, 1u64..5), 0..40),
        lifted in prop::collection::vec(0usize..40, 0..10),
        probes in prop::collection::vec(any::<[u8; 4]>(), 1..40),
    ) {
        let mut m = Moderation::new(AutoBan::default());
        let mut all = Vec::new();
        for (i, (a, len, secs)) in bans.iter().enumerate() {
            let net = parse_address(&format!("{}/{len}", IpAddr::from(*a))).unwrap();
            let b = ban(&format!("b{i}"), Target::Address(net), T + secs * 1000);
            m.ban(b.clone(), T).unwrap();
            all.push(b);
        }
        for i in lifted {
            if i < all.len() {
                m.unban(&all[i].id);
                all[i].until = 0;
            }
        }
        m.expire(T + 2000);
        for p in probes {
            let ip = IpAddr::from(p);
            let now = T + 2000;
            let want = all
                .iter()
                .filter(|b| b.until > now)
                .filter(|b| matches!(&b.target, Target::Address(n) if n.contains(&ip)))
                .map(|b| b.until)
                .max();
            prop_assert_eq!(m.address_ban(ip, now).map(|b| b.until), want);
        }
    }
}
