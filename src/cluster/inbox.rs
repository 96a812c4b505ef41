//! What a node does with the messages for its users from other nodes (what an effect for a
//! remote partner becomes is the node's business: [`crate::node`]).
//!
//! One task reads this node's channel and handles each message to the end before the next, so
//! messages from one node are applied in the order that node sent them; each is checked
//! against the local core first (is this still the user's room? does it still wait?).

use std::sync::Arc;
use std::time::Instant;

use fred::clients::SubscriberClient;
use fred::prelude::*;

use crate::bus::{Cluster, Msg};
use crate::model::reason::Reason;
use crate::node::resume::{Handover, finish};
use crate::node::{Hub, Link, SendError};

/// Reads this node's channel until the subscriber closes.
pub(crate) async fn run(hub: Arc<Hub>, cluster: Arc<Cluster>, subscriber: SubscriberClient) {
    let mut rx = subscriber.message_rx();
    loop {
        match rx.recv().await {
            Ok(m) => {
                let Some(text) = m.value.as_str() else {
                    continue;
                };
                // Published again after its answer was lost: taken already.
                if !cluster.seen.first_time(&m.channel, &text) {
                    continue;
                }
                match serde_json::from_str::<Msg>(&text) {
                    Ok(msg) => handle(&hub, &cluster, msg),
                    Err(e) => tracing::warn!("unreadable cluster message: {e}"),
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::error!(
                    lost = n,
                    "the cluster inbox fell behind; messages were lost"
                );
                cluster.count_lost(n);
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// Applies one message to the local core and emits what follows.
pub(crate) fn handle(hub: &Hub, cluster: &Cluster, msg: Msg) {
    let now = Instant::now();
    match msg {
        Msg::Deliver {
            room,
            to,
            event,
            payload,
        } => {
            let core = hub.lock();
            if let Some(Link::Local(socket)) = core.inbound(&to, &room) {
                match socket.emit(&event, &payload) {
                    Ok(()) => {
                        metrics::counter!("roulette_cluster_relays_in_total").increment(1);
                    }
                    // Its disconnect handling is on its way: not a loss on the way.
                    Err(SendError::Closed) => {}
                    Err(e) => {
                        // The recipient's send buffer is full (`SOCKET_BUFFER_PACKETS`).
                        tracing::warn!(sid = %socket.id(), %event, error = %e, "relay from another node not delivered");
                        cluster.count_lost(1);
                    }
                }
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
        Msg::Relink { room, to, node } => {
            let mut core = hub.lock();
            let effects = core.relink(&to, &room, Link::Remote(node.into()));
            hub.deliver(&mut core, effects);
        }
        Msg::Paired {
            room,
            to,
            partner,
            initiator,
        } => {
            let mut core = hub.lock();
            let node: Arc<str> = partner.node.as_str().into();
            let seeker = partner.seeker(now);
            match core.adopt(
                room.as_str().into(),
                &to,
                seeker,
                Link::Remote(node.clone()),
                initiator,
                now,
            ) {
                Some(effects) => hub.deliver(&mut core, effects),
                None => {
                    // `to` stopped waiting while the match was made (if it still waits, the id
                    // was in use here: it searches again); its partner hears it left.
                    hub.search_again(&mut core, &to);
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
}

/// `user`, away from this node, came back through `from`: hand its room over, or refuse.
fn migrate(hub: &Hub, cluster: &Cluster, user: String, token: Option<String>, from: Arc<str>) {
    let mut core = hub.lock();
    let Some(mut h) = core.hand_over(&user, token.as_deref(), Link::Remote(from.clone())) else {
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
    cluster.send(
        &from,
        &Msg::Handover {
            room: h.room.to_string(),
            to: user,
            partner: h.partner.to_string(),
            partner_node: partner_node.to_string(),
            initiator: h.initiator,
            relink,
        },
    );
    let effects = std::mem::take(&mut h.effects);
    hub.deliver(&mut core, effects);
}
