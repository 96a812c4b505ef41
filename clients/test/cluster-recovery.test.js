// Connection state recovery across a cluster, with the official socket.io-client over both
// transports: a client whose connection drops comes back through another node (as behind a
// load balancer without stickiness) and gets its session there, with its call and every line
// sent meanwhile; a node that gets SIGTERM hands its sessions over to the other nodes.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, next, collect, user, meet, freePort, startRedis, haveRedis, cut, upgraded, app,
} from './harness.js';

/**
 * From now on `socket` reconnects to `url`, `ms` after it lost its connection. Returns the
 * promise of its next `connect` (made before anything can cut it).
 */
function moveTo(socket, url, ms = 300, within = 15000) {
  socket.io.reconnectionDelay(ms);
  socket.io.reconnectionDelayMax(ms);
  socket.io.randomizationFactor(0);
  socket.io.on('reconnect_attempt', () => { socket.io.uri = url; });
  return next(socket, 'connect', ms + within);
}

/** A chat line both ways in `room`: the call goes on. */
async function talk(a, b, room) {
  const got = next(b, 'chat-message');
  assert.equal((await a.emitWithAck('chat-message', { roomId: room, message: 'there' })).ok, true);
  assert.equal((await got).message, 'there');
  const got2 = next(a, 'chat-message');
  assert.equal((await b.emitWithAck('chat-message', { roomId: room, message: 'back' })).ok, true);
  assert.equal((await got2).message, 'back');
}

const MODES = [
  ['polling with upgrade', undefined],
  ['websocket only', ['websocket']],
];

describe('connection state recovery across nodes', { skip: !haveRedis && 'redis-server is not installed', timeout: 180000 }, () => {
  let redis;
  let port;
  let nodes = [];
  const sockets = [];
  const track = (s) => { sockets.push(s); return s; };
  let n = 0;
  const id = (name) => `${name}-${++n}`;
  // The nodes write to each other over direct links (LINK_ADDRESS); cluster.test.js runs
  // its nodes with Redis alone.
  const flags = async (node) => ['--redis-url', `redis://127.0.0.1:${port}`, '--redis-prefix', `rec-${process.pid}`,
    '--node-id', node, '--max-new-connections-per-ip', '0', '--chat-events-per-sec', '0',
    '--link-address', `127.0.0.1:${await freePort()}`];

  before(async () => {
    port = await freePort();
    redis = await startRedis(port);
    nodes = [await startServer(await flags('rec-a')), await startServer(await flags('rec-b'))];
  });
  after(async () => {
    for (const s of sockets) s.disconnect();
    for (const node of nodes) await node.stop();
    redis.kill('SIGKILL');
  });

  for (const [mode, transports] of MODES) {
    for (const partnerOn of [0, 1]) {
      it(`${mode}: a client back through the other node recovers its call and the lines it missed (partner on node ${'ab'[partnerOn]})`, async () => {
        const [na, nb] = nodes;
        const name = id('a');
        const a = track(app(na.url, name, transports));
        await next(a, 'authenticated');
        const b = track(await user(nodes[partnerOn].url, id('b'), transports));
        const [ma] = await meet(a, b);
        const room = ma.roomId;
        const sid = a.id;
        const left = collect(b, 'partner-left', 4000);
        const reconnecting = next(b, 'partner-reconnecting');
        const reconnected = next(b, 'partner-reconnected', 10000);
        const chats = [];
        a.on('chat-message', (m) => { if (m.message !== 'there' && m.message !== 'back') chats.push(m.message); });
        const authed = next(a, 'authenticated', 10000);
        const back = moveTo(a, nb.url, 1000);
        await upgraded(a);
        cut(a);
        assert.deepEqual(await reconnecting, { roomId: room, partnerId: name });
        const acks = [];
        for (const line of ['one', 'two', 'three']) {
          acks.push(await b.emitWithAck('chat-message', { roomId: room, message: line }));
        }
        assert.deepEqual(acks.map((x) => x.ok), [true, true, true]);
        await back;
        assert.equal(a.recovered, true, 'socket.recovered through the other node');
        assert.equal(a.id, sid, 'the same sid');
        assert.deepEqual(await reconnected, { roomId: room, partnerId: name, recovered: true });
        assert.equal((await authed).resumed, true);
        assert.deepEqual(chats, ['one', 'two', 'three'], 'missed lines, in order, once');
        await talk(a, b, room);
        assert.deepEqual(await left, [], 'no partner-left for a blip');
        // A second drop, back to the first node: recovered again, from its offset.
        const again = moveTo(a, na.url, 300);
        const lines = [];
        const more = next(b, 'partner-reconnected', 10000);
        await upgraded(a);
        cut(a);
        await next(b, 'partner-reconnecting');
        for (const line of ['four', 'five']) {
          lines.push((await b.emitWithAck('chat-message', { roomId: room, message: line })).ok);
        }
        await again;
        assert.equal(a.recovered, true, 'recovered on the first node again');
        await more;
        assert.deepEqual(lines, [true, true]);
        await talk(a, b, room);
        assert.deepEqual(chats, ['one', 'two', 'three', 'four', 'five'], 'each line once, in order');
      });
    }
  }

  it('both partners dropped at once come back each through the other\'s node, and talk on', async () => {
    const [na, nb] = nodes;
    const [an, bn] = [id('a'), id('b')];
    const a = track(app(na.url, an, ['websocket']));
    const b = track(app(nb.url, bn, ['websocket']));
    await Promise.all([next(a, 'authenticated'), next(b, 'authenticated')]);
    const [ma] = await meet(a, b);
    const lefts = [a, b].map((s) => collect(s, 'partner-left', 5000));
    const backs = [moveTo(a, nb.url, 300), moveTo(b, na.url, 300)];
    cut(a);
    cut(b);
    await Promise.all(backs);
    assert.equal(a.recovered, true);
    assert.equal(b.recovered, true);
    await talk(a, b, ma.roomId);
    for (const l of lefts) assert.deepEqual(await l, [], 'no partner-left');
  });

  it('an offset the other node does not hold gets a fresh session', async () => {
    const [na, nb] = nodes;
    const a = track(app(na.url, id('a'), ['websocket']));
    await next(a, 'authenticated');
    // Searching: its session is held when it drops.
    const searching = next(a, 'searching');
    a.emit('find-random-partner', {});
    await searching;
    const back = moveTo(a, nb.url, 200);
    a._lastOffset = '999999';
    cut(a);
    await back;
    assert.equal(a.recovered, false);
    const metrics = await (await fetch(`${nb.url}/metrics`)).text();
    assert.match(metrics, /roulette_recoveries_refused_total\{reason="offset-not-held"\} [1-9]/);
  });

  it('a node that gets SIGTERM hands its calls over: their clients come back through the other node', async () => {
    const extra = await startServer(await flags('rec-c'));
    const [, nb] = nodes;
    try {
      // One call within the dying node, one across nodes.
      const [a1, a2, c] = [id('a'), id('a'), id('c')];
      const s1 = track(app(extra.url, a1, ['websocket']));
      const s2 = track(app(extra.url, a2, ['websocket']));
      const s3 = track(app(extra.url, c, ['websocket']));
      await Promise.all([next(s1, 'authenticated'), next(s2, 'authenticated'), next(s3, 'authenticated')]);
      const [m1] = await meet(s1, s2);
      const d = track(await user(nb.url, id('d'), ['websocket']));
      const [m3] = await meet(s3, d);
      const lefts = [s1, s2, d].map((s) => collect(s, 'partner-left', 6000));
      const backs = [s1, s2, s3].map((s) => moveTo(s, nb.url, 300));
      const code = extra.stop();
      await Promise.all(backs);
      for (const s of [s1, s2, s3]) assert.equal(s.recovered, true, 'recovered through the other node');
      assert.equal(await code, 0);
      await talk(s1, s2, m1.roomId);
      await talk(s3, d, m3.roomId);
      for (const l of lefts) assert.deepEqual(await l, [], 'no partner-left for a restart');
    } finally {
      await extra.stop();
    }
  });
});
