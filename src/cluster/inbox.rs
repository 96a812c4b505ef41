//! What a node does with the messages for its users from other nodes (what an effect for a
//! remote partner becomes is the node's business: [`crate::node`]).
//!
//! One task reads this node's channels and the direct links ([`super::reader`]) and handles each
//! message to the end before the next, so messages from one node are applied in the order that
//! node sent them; each is checked
//! against the local core first (is this still the user's room? does it still wait?).

use std::sync::Arc;
use std::time::Instant;

use crate::bus::frame::In;
use crate::bus::holder::{IDLE_KEPT, Matcher, Out};
use crate::bus::{Cluster, Entry, Msg, RelayIn};
use crate::model::reason::Reason;
use crate::model::{ErrorCode, Reject};
use crate::node::recovered;
use crate::node::resume::{Handover, finish};
use crate::node::{CoreGuard, Hub, Link, SendError, send_error};
use crate::protocol::outgoing::now_ms;

/// Sends `msg` to the node that matches for the cluster; handled at once when that is this one.
/// With no holder known yet the message is dropped: the first holder makes every node publish
/// its searches again.
pub(crate) fn to_holder(hub: &Hub, cluster: &Cluster, msg: Msg) {
    match cluster.holder() {
        Some(h) if *h == *cluster.node => at_holder(hub, cluster, msg),
        Some(h) => cluster.send(&h, &msg),
        None => {}
    }
}

/// A message for the lease holder, arrived here.
fn at_holder(hub: &Hub, cluster: &Cluster, msg: Msg) {
    let out = {
        let mut m = cluster.matcher.lock();
        match &mut *m {
            Matcher::Holding(h) => h.handle(msg, Instant::now(), now_ms()),
            // Perhaps this node took the lease and has not heard so yet.
            Matcher::Idle(kept) => {
                if kept.len() < IDLE_KEPT {
                    kept.push(msg);
                }
                return;
            }
        }
    };
    dispatch(hub, cluster, out);
}

/// Sends the holder's messages: to other nodes over the bus, to this one at once.
pub(crate) fn dispatch(hub: &Hub, cluster: &Cluster, out: Out) {
    for (node, msg) in out {
        if *node == *cluster.node {
            handle(hub, cluster, msg);
        } else {
            cluster.send(&node, &msg);
        }
    }
}

/// Applies a frame's messages in order. Consecutive relays are emitted under one hold of the
/// core's lock, so that those for one recipient leave in one write.
pub(super) fn handle_all<'a>(hub: &Hub, cluster: &Cluster, msgs: impl Iterator<Item = In<'a>>) {
    let mut msgs = msgs.peekable();
    while let Some(msg) = msgs.next() {
        let relay = match msg {
            In::Other(msg) => {
                handle(hub, cluster, msg);
                continue;
            }
            In::Relay(relay) => relay,
        };
        let core = hub.lock();
        relay_in(hub, &core, cluster, relay);
        while let Some(In::Relay(next)) = msgs.next_if(|m| matches!(m, In::Relay(_))) {
            relay_in(hub, &core, cluster, next);
        }
    }
}

/// Emits a relay from another node to its local recipient, if the room is still its own, and
/// tells the sending node how it went when it asked (see [`crate::node::acks`]).
fn relay_in(hub: &Hub, core: &CoreGuard, cluster: &Cluster, relay: RelayIn<'_>) {
    let outcome = match core.inbound(&relay.to, &relay.room) {
        Some(Link::Local(socket)) => match socket.emit(&relay.event, relay.payload) {
            Ok(()) => {
                crate::metrics::relayed_in();
                Ok(())
            }
            // Its connection ended for good (a held session keeps what it is sent).
            Err(SendError::Closed) => Err(ErrorCode::DeliveryFailed),
            Err(e) => {
                // The recipient's send buffer is full (`SOCKET_BUFFER_PACKETS`).
                tracing::warn!(sid = %socket.id(), event = %relay.event, error = %e, "relay from another node not delivered");
                cluster.count_lost(1);
                Err(ErrorCode::DeliveryFailed)
            }
        },
        _ => {
            // Its session moved to another node since the partner's node sent this: that node
            // delivers it, and answers.
            if let Some(node) = hub.forwards.of(&relay.to, &relay.room) {
                cluster.send(&node, &relay.into_owned());
                return;
            }
            Err(ErrorCode::NotInRoom)
        }
    };
    let RelayIn {
        room,
        to,
        event,
        reply,
        ..
    } = relay;
    match (reply.and_then(|r| Some((r.ack?, r.node))), outcome) {
        (Some((id, node)), outcome) => cluster.send(
            &node,
            &Msg::Acked {
                id,
                code: outcome.err().map(|c| c.as_str().to_string()),
            },
        ),
        (None, Err(code)) => {
            // The sender is the recipient's partner in the room (a ghost here, reached through
            // its node), if the room is known here.
            let sender = core
                .room_of(&to)
                .filter(|r| *r.id == *room)
                .and_then(|r| r.partner_of(&to));
            let node = sender.and_then(|s| match core.kept_link(s) {
                Some(Link::Remote(n)) if cluster.answers(n) => Some(n.clone()),
                _ => None,
            });
            if let (Some(sender), Some(node)) = (sender, node) {
                cluster.send(
                    &node,
                    &Msg::Undelivered {
                        to: sender.to_string(),
                        room: room.into_owned(),
                        event: event.into_owned(),
                        code: code.as_str().to_string(),
                    },
                );
            }
        }
        (None, Ok(())) => {}
    }
}

/// Applies one message to the local core and emits what follows.
pub(crate) fn handle(hub: &Hub, cluster: &Cluster, msg: Msg) {
    let now = Instant::now();
    match msg {
        ref msg @ Msg::Deliver { .. } => {
            if let Some(relay) = RelayIn::of(msg) {
                relay_in(hub, &hub.lock(), cluster, relay);
            }
        }
        Msg::Ping { .. } => cluster.heard_own_ping(),
        Msg::Lookup { from, ask, user } => {
            if from != *cluster.node
                && let Some(view) = hub.view_here(&user)
                && let Ok(view) = serde_json::value::to_raw_value(&view)
            {
                cluster.send(&from, &Msg::Found { ask, view });
            }
        }
        Msg::Found { ask, view } => hub.found(ask, view.get()),
        Msg::Moderation { from, act } => {
            if from != *cluster.node {
                hub.adopt(act);
            }
        }
        Msg::Left { room, to, reason } => {
            let mut core = hub.lock();
            let effects = core.remote_left(&to, &room, Reason::from_peer(&reason), now);
            hub.deliver(&mut core, effects);
        }
        Msg::Migrate { user, token, from } => migrate(hub, cluster, user, token, from.into()),
        Msg::Refused { user } => {
            if let Some(p) = hub.take_pending(&user) {
                finish(hub, p, None);
            }
        }
        Msg::Handover {
            room,
            to,
            partner,
            partner_node,
            initiator,
            relink,
            missed,
        } => match hub.take_pending(&to) {
            Some(p) => finish(
                hub,
                p,
                Some(Handover {
                    room,
                    partner,
                    partner_node,
                    initiator,
                    relink,
                    missed,
                }),
            ),
            // The returning connection is gone again: the partner is on its own.
            None => cluster.send(
                &partner_node,
                &Msg::Left {
                    room,
                    to: partner,
                    reason: Reason::Disconnect.to_string(),
                },
            ),
        },
        Msg::Acked { id, code } => crate::node::acks::settle(hub, id, code.as_deref()),
        Msg::Undelivered {
            room,
            to,
            event,
            code,
        } => {
            let core = hub.lock();
            if let Some(Link::Local(socket)) = core.inbound(&to, &room) {
                send_error(socket, &event, &crate::node::acks::reject(&code));
            }
        }
        Msg::Recover {
            sid,
            offset,
            from,
            origin,
        } => recovered::asked(hub, sid, offset, from, &origin),
        Msg::Recovered {
            session,
            user,
            room,
            search,
            profile,
        } => recovered::arrived(
            hub,
            recovered::Arrival {
                session,
                user,
                room,
                search,
                profile,
            },
        ),
        Msg::Unrecovered { sid, retry, reason } => recovered::unrecovered(hub, sid, retry, &reason),
        Msg::Relink {
            room,
            to,
            node,
            recovered,
        } => {
            let mut core = hub.lock();
            let effects = core.relink(&to, &room, Link::Remote(node.into()), recovered);
            hub.deliver(&mut core, effects);
        }
        msg @ (Msg::Seek { .. } | Msg::Unseek { .. } | Msg::Block { .. }) => {
            at_holder(hub, cluster, msg)
        }
        Msg::Taken { user, search } => {
            if hub.lock().queue().search_id(&user) == Some(search) {
                refuse_taken(hub, &user);
            }
        }
        Msg::Again { user, search } => {
            let mut core = hub.lock();
            if core.queue().search_id(&user) == Some(search) {
                hub.search_again(&mut core, &user);
            }
        }
        Msg::Standing { total, users } => {
            let lost = hub.lock().queue_mut().set_standing(total, users);
            if !lost.is_empty() {
                tracing::warn!(
                    searches = lost.len(),
                    "searches the matching node never had: sent again"
                );
            }
            for user in lost {
                hub.resubmit(user);
            }
        }
        Msg::Paired {
            room,
            to,
            partner,
            initiator,
            search,
        } => paired(hub, cluster, room, to, partner, initiator, search),
    }
}

/// `to`, waiting here, was matched with `partner` in `room`: by the lease holder (`to` waited
/// longer and starts the call; this node opens the room and tells the partner's node), or by
/// the partner's node that did so (`to` answers the call). A pairing of a search `to` gave up
/// or replaced since is refused, and the partner searches again.
fn paired(
    hub: &Hub,
    cluster: &Cluster,
    room: String,
    to: String,
    partner: Entry,
    initiator: bool,
    search: Option<u64>,
) {
    let now = Instant::now();
    let mut core = hub.lock();
    let current = core.queue().search_id(&to);
    // Nodes of earlier versions name no search.
    let fresh = search.is_none() || search == current;
    if partner.node == *cluster.node {
        // Both wait here.
        let partner_fresh = core.queue().search_id(&partner.user) == Some(partner.search);
        let made = (fresh && partner_fresh)
            .then(|| core.pair_waiting(room.as_str().into(), &to, &partner.user, now))
            .flatten();
        match made {
            Some(effects) => hub.deliver(&mut core, effects),
            None => {
                for (u, ok) in [(&to, fresh), (&partner.user, partner_fresh)] {
                    if ok {
                        hub.search_again(&mut core, u);
                    }
                }
            }
        }
        return;
    }
    let node: Arc<str> = partner.node.as_str().into();
    // What the partner's node is told of `to`, taken before the room opens.
    let mine = core
        .waiting_entry(&to)
        .map(|s| Entry::of(s, current.unwrap_or_default(), &cluster.node, now));
    let seeker = partner.seeker(now);
    let made = fresh
        .then(|| {
            core.adopt(
                room.as_str().into(),
                &to,
                seeker,
                Link::Remote(node.clone()),
                initiator,
                now,
            )
        })
        .flatten();
    match (made, mine) {
        (Some(effects), Some(mine)) => {
            hub.deliver(&mut core, effects);
            if initiator {
                cluster.send(
                    &node,
                    &Msg::Paired {
                        room,
                        to: partner.user,
                        partner: mine,
                        initiator: false,
                        search: Some(partner.search),
                    },
                );
            }
        }
        _ => {
            // `to` stopped waiting while the match was made (if it still waits, the id was in
            // use here: it searches again).
            if fresh {
                hub.search_again(&mut core, &to);
            }
            if initiator {
                // The partner's node has heard nothing yet: its user searches again.
                cluster.send(
                    &node,
                    &Msg::Again {
                        user: partner.user,
                        search: partner.search,
                    },
                );
            } else {
                // Its partner's room is open on the other node: it hears this user left.
                cluster.send(
                    &node,
                    &Msg::Left {
                        room,
                        to: partner.user,
                        reason: Reason::UserEnded.to_string(),
                    },
                );
            }
        }
    }
}

/// A user of the same id waits on another node: this search ends, refused as `authenticate`
/// with a taken id would be on one node.
fn refuse_taken(hub: &Hub, user: &str) {
    let mut core = hub.lock();
    let Ok(effects) = core.end(user, Instant::now()) else {
        return;
    };
    if let Some(Link::Local(socket)) = core.link(user) {
        let reject = Reject::new(
            ErrorCode::UserIdTaken,
            "a user with this id is already searching on another server",
        );
        send_error(socket, "find-random-partner", &reject);
    }
    hub.deliver(&mut core, effects);
}

/// `user`, away from this node, came back through `from`: hand its room over, or refuse.
fn migrate(hub: &Hub, cluster: &Cluster, user: String, token: Option<String>, from: Arc<str>) {
    let mut core = hub.lock();
    let held = core.kept_link(&user).cloned();
    let Some(mut h) = core.hand_over(&user, token.as_deref(), Link::Remote(from.clone()), false)
    else {
        drop(core);
        cluster.send(&from, &Msg::Refused { user });
        return;
    };
    let partner_node = match &h.partner_link {
        Some(Link::Remote(n)) => n.clone(),
        _ => cluster.node.clone(),
    };
    // The handover leaves before the local partner hears `partner-reconnected`, so the
    // partner's next relays follow it on the same ordered path.
    let relink = h.partner_link.is_some() && partner_node != from;
    if h.partner_link.is_some() {
        // The partner's node hears of the move from `from`: until then its relays come here.
        hub.forwards.insert(&user, &h.room, &from);
    }
    // What its partner sent while it was away goes with it.
    let missed = match held {
        Some(Link::Local(held)) => held.take_kept(),
        _ => Vec::new(),
    };
    cluster.send(
        &from,
        &Msg::Handover {
            room: h.room.to_string(),
            to: user,
            partner: h.partner.to_string(),
            partner_node: partner_node.to_string(),
            initiator: h.initiator,
            relink,
            missed,
        },
    );
    let effects = std::mem::take(&mut h.effects);
    hub.deliver(&mut core, effects);
}
