// Connection state recovery with the official socket.io-client, over both transports: a call
// survives its signaling connection dropping, the partner is never told `partner-left` for a
// blip, and what was sent meanwhile arrives, in order, when the client is back.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, next, collect, user, meet, cut, upgraded, app,
} from './harness.js';

const MODES = [
  ['polling with upgrade', undefined],
  ['websocket only', ['websocket']],
];

/**
 * Cuts `socket`'s transport (once an upgrade under way is done); its client stays away `ms`
 * before it reconnects (no randomness). Returns the promise of its next `connect`, made before
 * the cut so that none is missed.
 */
function drop(socket, ms = 150) {
  socket.io.reconnectionDelay(ms);
  socket.io.reconnectionDelayMax(ms);
  socket.io.randomizationFactor(0);
  const back = next(socket, 'connect', ms + 10000);
  upgraded(socket).then(() => cut(socket));
  return back;
}

for (const [mode, transports] of MODES) {
  describe(`connection state recovery, ${mode}`, { timeout: 120000 }, () => {
    let server;
    let short;
    let n = 0;
    const id = (name) => `${name}-${transports ? 'ws' : 'poll'}-${++n}`;
    const sockets = [];
    const track = (s) => { sockets.push(s); return s; };
    before(async () => {
      server = await startServer(['--max-new-connections-per-ip', '0', '--signal-events-per-sec', '0',
        '--chat-events-per-sec', '0']);
      short = await startServer(['--max-new-connections-per-ip', '0', '--reconnect-grace-ms', '800']);
    });
    after(async () => {
      for (const s of sockets) s.disconnect();
      assert.equal(await server.stop(), 0);
      assert.equal(await short.stop(), 0);
    });

    /** The Node server's app as `a`, in a call with `b` (a plain client). */
    async function call(url) {
      const name = id('a');
      const a = track(app(url, name, transports));
      await next(a, 'authenticated');
      const b = track(await user(url, id('b'), transports));
      const [ma] = await meet(a, b);
      return [a, b, ma.roomId, name];
    }

    it('keeps the call of a client whose transport drops, and delivers what was sent meanwhile', async () => {
      const [a, b, room, name] = await call(server.url);
      const sid = a.id;
      const pid = a._pid;
      assert.equal(typeof pid, 'string', 'the 40 reply carries a pid');
      const left = collect(b, 'partner-left', 2500);
      const reconnecting = next(b, 'partner-reconnecting');
      const reconnected = next(b, 'partner-reconnected', 5000);
      const chats = [];
      a.on('chat-message', (m) => chats.push(m.message));
      const authed = next(a, 'authenticated', 5000);
      // Away for a second: the lines below are sent while it is.
      const back = drop(a, 1000);
      assert.deepEqual(await reconnecting, { roomId: room, partnerId: name });
      // While a is away its partner talks on: accepted, acknowledged, kept for a.
      const acks = [];
      for (const line of ['one', 'two', 'three']) {
        acks.push(await b.emitWithAck('chat-message', { roomId: room, message: line }));
      }
      assert.deepEqual(acks.map((x) => x.ok), [true, true, true]);
      await back;
      assert.equal(a.recovered, true, 'socket.recovered');
      assert.equal(a.id, sid, 'the same sid');
      assert.equal(a._pid, pid, 'the same pid');
      assert.deepEqual(await reconnected, { roomId: room, partnerId: name, recovered: true });
      // Its `authenticate` on connect is answered as a resumed session and changes nothing.
      const again = await authed;
      assert.equal(again.resumed, true);
      assert.deepEqual(chats, ['one', 'two', 'three'], 'missed lines, in order, once');
      assert.deepEqual(await left, [], 'no partner-left for a blip');
      // The call goes on both ways.
      const got = next(b, 'chat-message');
      await a.emitWithAck('chat-message', { roomId: room, message: 'back' });
      assert.equal((await got).message, 'back');
      const got2 = next(a, 'chat-message');
      await b.emitWithAck('chat-message', { roomId: room, message: 'welcome' });
      assert.equal((await got2).message, 'welcome');
    });

    it('replays exactly what follows the offset on a second drop', async () => {
      const [a, b, room] = await call(server.url);
      let back = drop(a);
      await next(b, 'partner-reconnecting');
      await back;
      assert.equal(a.recovered, true);
      // Now a takes offsets: every event carries one.
      const seen = [];
      a.on('chat-message', (m, offset) => seen.push([m.message, typeof offset]));
      for (let i = 0; i < 5; i++) await b.emitWithAck('chat-message', { roomId: room, message: `before-${i}` });
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(seen.length, 5);
      assert.ok(seen.every(([, t]) => t === 'string'), 'each event carries its offset');
      assert.equal(typeof a._lastOffset, 'string');
      back = drop(a, 1500);
      await next(b, 'partner-reconnecting');
      const acks = [];
      for (let i = 0; i < 20; i++) acks.push((await b.emitWithAck('chat-message', { roomId: room, message: `away-${i}` })).ok);
      assert.deepEqual(acks, Array(20).fill(true));
      await back;
      assert.equal(a.recovered, true);
      await new Promise((r) => setTimeout(r, 200));
      const lines = seen.map(([m]) => m);
      const want = [...Array(5).keys()].map((i) => `before-${i}`).concat([...Array(20).keys()].map((i) => `away-${i}`));
      assert.deepEqual(lines, want, 'every line once, in order');
    });

    it('gives a fresh session after the grace, and tells the partner then', async () => {
      const [a, b, room] = await call(short.url);
      const sid = a.id;
      const left = next(b, 'partner-left', 3000);
      const authed = next(a, 'authenticated', 8000);
      // Away longer than the grace (800 ms) and the heartbeat's tick that ends it.
      const back = drop(a, 2500);
      await next(b, 'partner-reconnecting');
      assert.deepEqual(await left, { reason: 'disconnect', roomId: room, canReconnect: false });
      await back;
      assert.equal(a.recovered, false);
      assert.notEqual(a.id, sid);
      assert.equal((await authed).resumed, false);
    });

    it('gives a fresh session for a pid it did not make, and an offset it did not give', async () => {
      for (const spoil of [(s) => { s._pid = `${s._pid.slice(0, 16)}${'A'.repeat(22)}`; },
        (s) => { s._lastOffset = '999999'; }]) {
        const [a, b] = await call(server.url);
        let back = drop(a);
        await next(b, 'partner-reconnecting');
        await back;
        assert.equal(a.recovered, true);
        const sid = a.id;
        spoil(a);
        back = drop(a);
        await back;
        assert.equal(a.recovered, false);
        assert.notEqual(a.id, sid);
      }
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      assert.match(metrics, /roulette_recoveries_refused_total\{reason="bad-pid"\} [1-9]/);
      assert.match(metrics, /roulette_recoveries_refused_total\{reason="offset-not-held"\} [1-9]/);
      assert.match(metrics, /roulette_sessions_recovered_total [1-9]/);
      assert.match(metrics, /roulette_events_replayed_total [1-9]/);
    });
  });
}
