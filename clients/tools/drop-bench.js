#!/usr/bin/env node
// Calls under dropped connections, with the official socket.io-client as the Node server's app
// uses it (reconnection on, `authenticate {userId}` on every `connect`, no resume token):
// --pairs pairs in calls, each user sending --rate candidates a second with an acknowledgement;
// every second --drop of the users lose their TCP connection (destroyed, no goodbye) and the
// client reconnects by itself after 0.2-0.4 s. Prints what was sent, acknowledged `ok`,
// delivered (once each), delivered twice, out of order, acknowledged `ok` and never delivered,
// refused, and the `partner-left`, `partner-reconnecting` and recoveries seen.
//
//   node tools/drop-bench.js --urls http://127.0.0.1:3001[,http://127.0.0.1:3002] \
//     [--pairs 40] [--rate 20] [--drop 0.15] [--seconds 20] [--transports websocket]
//
// Several --urls: every connection (the first and each reconnect) goes to one of them at random,
// as behind a load balancer without stickiness (so the default transport is WebSocket only:
// long-polling needs stickiness there).
import { parseArgs } from 'node:util';
import { io } from 'socket.io-client';

const { values: o } = parseArgs({
  options: {
    urls: { type: 'string', default: 'http://127.0.0.1:3001' },
    pairs: { type: 'string', default: '40' },
    rate: { type: 'string', default: '20' },
    drop: { type: 'string', default: '0.15' },
    seconds: { type: 'string', default: '20' },
    settle: { type: 'string', default: '3000' },
    transports: { type: 'string', default: 'websocket' },
  },
});
const urls = o.urls.split(',');
const PAIRS = Number(o.pairs);
const RATE = Number(o.rate);
const DROP = Number(o.drop);
const SECONDS = Number(o.seconds);
const transports = o.transports.split(',');
const run = Math.random().toString(36).slice(2, 8);

const totals = {
  sent: 0, acked: 0, refused: 0, unanswered: 0, delivered: 0, duplicates: 0, reordered: 0,
  ackedNotDelivered: 0, partnerLeft: 0, partnerReconnecting: 0, drops: 0, recovered: 0, fresh: 0,
};
const refusals = {};

/** A user as the Node server's app makes it, its transport picked at random at every connect. */
function makeUser(name) {
  const pick = () => urls[Math.floor(Math.random() * urls.length)];
  const socket = io(pick(), {
    forceNew: true,
    reconnection: true,
    reconnectionDelay: 200,
    reconnectionDelayMax: 400,
    randomizationFactor: 0,
    transports,
  });
  // Each reconnect goes to a node picked again (no stickiness).
  socket.io.on('reconnect_attempt', () => { socket.io.uri = pick(); });
  const user = { name, socket, seq: 0, got: new Map(), okSeqs: new Set(), room: null, partner: null };
  socket.on('connect', () => {
    if (socket.recovered) totals.recovered++;
    else if (user.connectedOnce) totals.fresh++;
    user.connectedOnce = true;
    socket.emit('authenticate', { userId: name });
  });
  socket.on('partner-left', () => { totals.partnerLeft++; });
  socket.on('partner-reconnecting', () => { totals.partnerReconnecting++; });
  socket.on('webrtc-ice-candidate', ({ candidate, fromUserId }) => {
    const seq = Number(candidate.sdpMid);
    const seen = user.got.get(fromUserId) ?? { last: -1, set: new Set() };
    user.got.set(fromUserId, seen);
    if (seen.set.has(seq)) totals.duplicates++;
    else {
      seen.set.add(seq);
      if (seq < seen.last) totals.reordered++;
    }
    seen.last = Math.max(seen.last, seq);
  });
  return user;
}

function once(socket, event, ms = 10000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event}`)), ms);
    socket.once(event, (d) => { clearTimeout(t); resolve(d); });
  });
}

async function pairUp(i) {
  const a = makeUser(`a${i}-${run}`);
  const b = makeUser(`b${i}-${run}`);
  await Promise.all([once(a.socket, 'authenticated'), once(b.socket, 'authenticated')]);
  const matched = once(a.socket, 'matched');
  a.socket.emit('find-random-partner', { preferences: { interests: [`drop-${run}-${i}`] } });
  await once(a.socket, 'searching');
  const mb = once(b.socket, 'matched');
  b.socket.emit('find-random-partner', { preferences: { interests: [`drop-${run}-${i}`] } });
  const [ma] = await Promise.all([matched, mb]);
  a.room = b.room = ma.roomId;
  a.partner = b;
  b.partner = a;
  return [a, b];
}

const users = [];
for (let i = 0; i < PAIRS; i++) {
  // Pairs are made one after another on a quiet queue: each pair shares an interest of its own.
  users.push(...await pairUp(i));
}
console.error(`${PAIRS} pairs in calls; sending ${RATE}/s each for ${SECONDS} s, dropping ${DROP * 100}% every second`);

let sending = true;
const senders = users.map((u) => setInterval(() => {
  if (!sending) return;
  const seq = u.seq++;
  totals.sent++;
  u.socket.timeout(8000).emitWithAck('webrtc-ice-candidate', {
    roomId: u.room, candidate: { candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMid: String(seq), sdpMLineIndex: 0 },
  }).then((ack) => {
    if (ack.ok) {
      totals.acked++;
      u.okSeqs.add(seq);
    } else {
      totals.refused++;
      refusals[ack.code] = (refusals[ack.code] ?? 0) + 1;
    }
  }, () => { totals.unanswered++; });
}, 1000 / RATE));

const dropper = setInterval(() => {
  for (const u of users) {
    if (Math.random() >= DROP || !u.socket.connected) continue;
    totals.drops++;
    const t = u.socket.io.engine?.transport;
    if (t?.ws) t.ws._socket?.destroy();
    else u.socket.io.engine?._onError(new Error('dropped'));
  }
}, 1000);

await new Promise((r) => setTimeout(r, SECONDS * 1000));
sending = false;
clearInterval(dropper);
for (const s of senders) clearInterval(s);
await new Promise((r) => setTimeout(r, Number(o.settle)));

for (const u of users) {
  const seen = u.partner.got.get(u.name);
  for (const seq of u.okSeqs) if (!seen?.set.has(seq)) totals.ackedNotDelivered++;
  totals.delivered += seen?.set.size ?? 0;
}
for (const u of users) u.socket.disconnect();
console.log(JSON.stringify({ urls: urls.length, pairs: PAIRS, rate: RATE, drop: DROP, seconds: SECONDS, transports, ...totals, refusals }));
process.exit(0);
