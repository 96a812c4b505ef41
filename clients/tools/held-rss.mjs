#!/usr/bin/env node
// What held sessions can make the server keep: --pairs pairs in calls from one address at the
// default limits; one user of each pair drops (no goodbye, no reconnection), and its partner
// sends chat lines of --bytes as fast as the limits let it, for the grace, into the session held
// for the dropped one. Prints the server's RSS (from /proc/--pid) before, at the end and after the
// grace, and the lines accepted and refused.
//
//   node tools/held-rss.mjs --url http://127.0.0.1:3001 --pid <server pid> [--pairs 25] [--bytes 1000] [--seconds 9]
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { io } from 'socket.io-client';

const { values: o } = parseArgs({ options: {
  url: { type: 'string', default: 'http://127.0.0.1:3001' }, pid: { type: 'string' },
  pairs: { type: 'string', default: '25' }, bytes: { type: 'string', default: '1000' },
  seconds: { type: 'string', default: '9' },
} });
const rss = () => Number(readFileSync(`/proc/${o.pid}/statm`, 'utf8').split(' ')[1]) * 4096;
const once = (s, e) => new Promise((r, j) => { const t = setTimeout(() => j(new Error(`no ${e}`)), 10000); s.once(e, (d) => { clearTimeout(t); r(d); }); });
const user = async (name) => {
  const s = io(o.url, { forceNew: true, reconnection: false, transports: ['websocket'] });
  await once(s, 'connect');
  s.emit('authenticate', { userId: name });
  await once(s, 'authenticated');
  return s;
};
const before = rss();
const tag = Math.random().toString(36).slice(2, 7);
const pairs = [];
for (let i = 0; i < Number(o.pairs); i++) {
  const a = await user(`ha${i}-${tag}`); const b = await user(`hb${i}-${tag}`);
  const m = once(b, 'matched');
  a.emit('find-random-partner', { preferences: { interests: [`h-${tag}-${i}`] } });
  await once(a, 'searching');
  b.emit('find-random-partner', { preferences: { interests: [`h-${tag}-${i}`] } });
  pairs.push([a, b, (await m).roomId]);
}
const inCalls = rss();
for (const [a] of pairs) a.io.engine.transport.ws._socket.destroy();
let ok = 0; let refused = 0;
const line = 'x'.repeat(Number(o.bytes));
const end = Date.now() + Number(o.seconds) * 1000;
await Promise.all(pairs.map(async ([, b, roomId]) => {
  while (Date.now() < end) {
    const r = await b.timeout(5000).emitWithAck('chat-message', { roomId, message: line }).catch(() => ({ ok: false }));
    if (r.ok) ok++; else { refused++; await new Promise((x) => setTimeout(x, r.retryAfterMs ?? 50)); }
  }
}));
const atEnd = rss();
await new Promise((r) => setTimeout(r, 3000));
const after = rss();
console.log(JSON.stringify({ pairs: pairs.length, bytes: Number(o.bytes), accepted: ok, refused,
  rssBefore: before, rssInCalls: inCalls, rssHeldAtEnd: atEnd, rssAfterGrace: after }));
for (const [, b] of pairs) b.disconnect();
process.exit(0);
