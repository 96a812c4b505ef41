//! The model test: the cluster pairs exactly as one node does, for the same arrivals spread over
//! nodes, with every search, cancellation and block carried as the bus carries it (JSON).

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::core::matchmaker::Seeker;
use crate::core::matchmaker::tests::{RELAX, arb_seeker};

/// A message as another node reads it off the bus.
fn wire(m: &Msg) -> Msg {
    serde_json::from_str(&serde_json::to_string(m).unwrap()).unwrap()
}

/// The holder's handling of one message from a node, as the inbox does it.
fn at_holder(h: &mut Holder, m: Msg, now: Instant, wall: u64) -> Out {
    h.handle(wire(&m), now, wall)
}

/// The pairs (waiting, seeker) that the holder's messages tell the waiting users' nodes of.
fn pairs(out: Out, nodes: &HashMap<String, Arc<str>>) -> Vec<(String, String)> {
    out.into_iter()
        .map(|(node, m)| {
            let Msg::Paired {
                to,
                partner,
                initiator,
                ..
            } = wire(&m)
            else {
                panic!("unexpected {m:?}");
            };
            assert_eq!(nodes[&to], node, "told to its own node");
            assert_eq!(
                nodes[&partner.user].as_ref(),
                partner.node,
                "the partner's node"
            );
            assert!(initiator, "the one who waited starts the call");
            (to, partner.user)
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Offer(Seeker, u8),
    Remove(u8),
    Block(u8, u8),
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => ((0u8..8).prop_flat_map(arb_seeker), 0u8..3).prop_map(|(s, n)| Op::Offer(s, n)),
        2 => (0u8..8).prop_map(Op::Remove),
        1 => (0u8..8, 0u8..8).prop_map(|(a, b)| Op::Block(a, b)),
        2 => (0u16..4000).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Users arriving on three nodes are paired by the holder exactly as one node's matchmaker
    /// pairs the same arrivals, relaxations included; the cluster-wide positions are the one
    /// node's.
    #[test]
    fn a_cluster_pairs_as_one_node_does(ops in proptest::collection::vec(op(), 1..120)) {
        let start = Instant::now();
        let wall0 = 1_700_000_000_000u64;
        let mut now = start;
        let mut one = PreferenceMatchmaker::new(RELAX);
        let mut holder = Holder::new(RELAX, 0);
        let mut nodes: HashMap<String, Arc<str>> = HashMap::new();
        let mut search = 0u64;
        for op in ops {
            let wall = wall0 + now.duration_since(start).as_millis() as u64;
            let expected: Vec<(String, String)> = one
                .relax(now)
                .pairs
                .into_iter()
                .map(|p| (p.waiting.user.to_string(), p.seeker.user.to_string()))
                .collect();
            let got = pairs(holder.tick(now, wall), &nodes);
            prop_assert_eq!(got, expected, "relaxation");
            match op {
                Op::Offer(mut s, n) => {
                    if one.get(&s.user).is_some() {
                        continue;
                    }
                    s.since = now;
                    let node: Arc<str> = format!("node-{n}").into();
                    nodes.insert(s.user.to_string(), node.clone());
                    search += 1;
                    let expected: Vec<(String, String)> = one
                        .offer(s.clone(), now)
                        .map(|p| (p.waiting.user.to_string(), p.seeker.user.to_string()))
                        .into_iter()
                        .collect();
                    let entry = Entry::at(&s, search, &node, now, wall);
                    let out = at_holder(&mut holder, Msg::Seek { entry, blocks: Vec::new() }, now, wall);
                    prop_assert_eq!(pairs(out, &nodes), expected, "offer of {}", s.user);
                }
                Op::Remove(u) => {
                    let id = u.to_string();
                    one.remove(&id);
                    if let Some(node) = nodes.get(&id) {
                        let m = Msg::Unseek { user: id.clone(), node: node.to_string() };
                        at_holder(&mut holder, m, now, wall);
                    }
                }
                Op::Block(a, b) => {
                    let until = start + Duration::from_secs(3600);
                    one.block(&a.to_string().into(), &b.to_string().into(), until);
                    let m = Msg::Block {
                        by: a.to_string(),
                        other: b.to_string(),
                        ttl_ms: until.duration_since(now).as_millis() as u64,
                    };
                    at_holder(&mut holder, m, now, wall);
                }
                Op::Wait(ms) => now += Duration::from_millis(ms as u64),
            }
            prop_assert_eq!(holder.len(), one.len());
            let mut places: HashMap<String, (usize, usize)> = HashMap::new();
            for (_, m) in holder.standings(&[]) {
                let Msg::Standing { total, users } = wire(&m) else { unreachable!() };
                for (u, p, _) in users {
                    places.insert(u, (p, total));
                }
            }
            for (i, s) in one.waiting().enumerate() {
                prop_assert_eq!(places.get(&*s.user), Some(&(i + 1, one.len())), "{}'s place", s.user);
            }
        }
    }
}

/// A holder that took over learns the blocks of the users its nodes publish again, so a block
/// made under the previous holder still keeps the two apart.
#[test]
fn a_new_holder_keeps_the_blocks_its_nodes_send() {
    let now = Instant::now();
    let wall = 1_700_000_000_000u64;
    let mut h = Holder::new(RELAX, 0);
    let seeker = |id: &str| Seeker {
        user: id.into(),
        profile: Default::default(),
        prefs: Default::default(),
        since: now,
        previous: None,
    };
    let a = Entry::at(&seeker("a"), 1, "n1", now, wall);
    let out = h.seek(a, &[("b".to_string(), 60_000)], now, wall);
    assert!(out.is_empty());
    let b = Entry::at(&seeker("b"), 2, "n2", now, wall);
    assert!(h.seek(b, &[], now, wall).is_empty(), "a blocked b");
    let c = Entry::at(&seeker("c"), 3, "n2", now, wall);
    let out = h.seek(c, &[], now, wall);
    assert!(
        matches!(&out[..], [(n, Msg::Paired { to, partner, .. })] if &**n == "n1" && to == "a" && partner.user == "c"),
        "c pairs with a, across nodes: {out:?}"
    );
    // The same id on another node waits no second time.
    let again = Entry::at(&seeker("b"), 9, "n1", now, wall);
    let out = h.seek(again, &[], now, wall);
    assert!(
        matches!(&out[..], [(n, Msg::Taken { user, search: 9 })] if &**n == "n1" && user == "b")
    );
    // A search published again (the lease moved back) keeps its place.
    let b = Entry::at(&seeker("b"), 2, "n2", now, wall);
    assert!(h.seek(b, &[], now, wall).is_empty());
    assert_eq!(h.len(), 1);
    // n1 dies: b's node (n2) hears nothing of it, and c's node, whose search went to a's node
    // n1 in a pairing, is told to search again.
    let again = h.drop_node("n1");
    assert_eq!(h.len(), 1);
    assert!(
        matches!(&again[..], [(n, Msg::Again { user, search: 3 })] if &**n == "n2" && user == "c"),
        "{again:?}"
    );
    assert!(h.drop_node("n2").is_empty());
    assert_eq!(h.len(), 0);
}

/// A new holder hears the waiting users of its nodes in whatever order their messages come (one
/// node sends after the other, each at its own heartbeat): it queues them longest-waiting
/// first, as one node queued the same arrivals, so the next compatible newcomer meets the one
/// who waited longest, and places count from it.
#[test]
fn a_new_holder_queues_the_searches_it_hears_again_longest_waiting_first() {
    let start = Instant::now();
    let wall0 = 1_700_000_000_000u64;
    // The users began their searches one second apart, "u0" first, alternately on two nodes.
    let began = |i: u64| start + Duration::from_secs(i);
    let seeker = |i: u64| Seeker {
        user: format!("u{i}").as_str().into(),
        profile: Default::default(),
        prefs: Default::default(),
        since: began(i),
        previous: None,
    };
    // Blocked from each other, so that they wait together (as a queue's users do: nobody
    // there can pair with anyone else there).
    let blocks = |i: u64| -> Vec<(String, u64)> {
        (0..6)
            .filter(|j| *j != i)
            .map(|j| (format!("u{j}"), 3_600_000))
            .collect()
    };
    // The lease moves at 10 s; node n2's searches arrive before n1's, newest first.
    let now = began(10);
    let wall = wall0 + 10_000;
    let entry = |i: u64| {
        let node = if i.is_multiple_of(2) { "n1" } else { "n2" };
        Entry::at(&seeker(i), i + 1, node, began(i), wall0 + i * 1000)
    };
    let mut h = Holder::new(RELAX, 0).settling(now + Duration::from_millis(200));
    for i in [5, 3, 1, 4, 2, 0] {
        let msg = Msg::Seek {
            entry: entry(i),
            blocks: blocks(i),
        };
        assert!(at_holder(&mut h, msg, now, wall).is_empty(), "u{i} waits");
    }
    assert_eq!(h.len(), 6);
    // Published again by its node while gathered: keeps its place, counted once.
    let msg = Msg::Seek {
        entry: entry(3),
        blocks: blocks(3),
    };
    assert!(at_holder(&mut h, msg, now, wall).is_empty());
    let gathered = places(&h);
    assert_eq!(gathered.len(), 6);
    let later = now + Duration::from_millis(300);
    assert!(h.tick(later, wall + 300).is_empty(), "nobody pairs");
    let queued = places(&h);
    for i in 0..6 {
        assert_eq!(queued[&format!("u{i}")], i as usize + 1, "u{i}'s place");
    }
    assert_eq!(gathered, queued, "places while gathering already by wait");
    // A newcomer who can meet anyone meets the one who waited longest.
    let newcomer = Seeker {
        user: "new".into(),
        profile: Default::default(),
        prefs: Default::default(),
        since: later,
        previous: None,
    };
    let out = h.seek(
        Entry::at(&newcomer, 99, "n2", later, wall + 300),
        &[],
        later,
        wall + 300,
    );
    assert!(
        matches!(&out[..], [(n, Msg::Paired { to, partner, .. })] if &**n == "n1" && to == "u0" && partner.user == "new"),
        "{out:?}"
    );
    // Without the gathering, the same arrivals are queued as they came: the order this fixes.
    let mut plain = Holder::new(RELAX, 0);
    for i in [5, 3, 1, 4, 2, 0] {
        plain.seek(entry(i), &blocks(i), now, wall);
    }
    assert_eq!(places(&plain)["u5"], 1);
}

/// Each waiting user's place in the holder's queue.
fn places(h: &Holder) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (_, m) in h.standings(&[]) {
        let Msg::Standing { users, .. } = wire(&m) else {
            unreachable!()
        };
        out.extend(users.into_iter().map(|(u, p, _)| (u, p)));
    }
    out
}

/// A search gathered by a settling holder can still be given up, replaced, or lost with its
/// node, and is matched with the others once they are queued.
#[test]
fn a_settling_holder_forgets_searches_given_up_and_pairs_compatible_ones_once_queued() {
    let now = Instant::now();
    let wall = 1_700_000_000_000u64;
    let seeker = |id: &str, waited: u64| Seeker {
        user: id.into(),
        profile: Default::default(),
        prefs: Default::default(),
        since: now - Duration::from_secs(waited),
        previous: None,
    };
    let mut h = Holder::new(RELAX, 0).settling(now + Duration::from_millis(200));
    for (id, waited, search, node) in [("a", 5, 1, "n1"), ("b", 9, 2, "n2"), ("c", 7, 3, "n3")] {
        let e = Entry::at(&seeker(id, waited), search, node, now, wall);
        assert!(
            h.seek(e, &[], now, wall).is_empty(),
            "gathered, not matched"
        );
    }
    h.unseek("a", "n1");
    assert_eq!(h.len(), 2);
    assert!(h.drop_node("n3").is_empty());
    assert_eq!(h.len(), 1);
    let d = Entry::at(&seeker("d", 1), 4, "n1", now, wall);
    assert!(h.seek(d, &[], now, wall).is_empty());
    // b replaces its search while gathered: one entry still.
    let b = Entry::at(&seeker("b", 9), 5, "n2", now, wall);
    assert!(h.seek(b, &[], now, wall).is_empty());
    assert_eq!(h.len(), 2);
    let later = now + Duration::from_millis(250);
    let out = h.tick(later, wall + 250);
    assert!(
        matches!(&out[..], [(n, Msg::Paired { to, partner, search: Some(5), .. })] if &**n == "n2" && to == "b" && partner.user == "d"),
        "b waited longer: it is told, of its new search: {out:?}"
    );
    assert_eq!(h.len(), 0);
}
