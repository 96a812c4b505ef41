// Two Roulette nodes sharing a redis-server of this test's own, driven with the official
// socket.io-client over both transports: users on different nodes meet, signal, chat and skip.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, next, pair, checkHttp, freePort, startRedis, haveRedis,
} from './harness.js';


describe('a cluster of two nodes, official client', { skip: !haveRedis && 'redis-server is not installed' }, () => {
  let redis;
  let nodes = [];
  before(async () => {
    const port = await freePort();
    redis = await startRedis(port);
    const flags = (id) => ['--redis-url', `redis://127.0.0.1:${port}`, '--redis-prefix', `js-${process.pid}`,
      '--node-id', id, '--max-new-connections-per-ip', '0'];
    nodes = [await startServer(flags('js-a')), await startServer(flags('js-b'))];
  });
  after(async () => {
    for (const n of nodes) await n.stop();
    redis.kill('SIGKILL');
  });

  it('answers /health and /stats with the cluster\'s figures, as the contract says', async () => {
    for (const node of nodes) {
      for (const route of ['/health', '/stats']) {
        const res = await fetch(`${node.url}${route}`);
        assert.equal(res.status, 200);
        const text = await res.text();
        assert.ok(JSON.parse(text).cluster, `${route} has the cluster part: ${text}`);
        checkHttp(route, text, `${node.url}${route}`); // a mismatch fails this test (the harness's hook)
      }
    }
  });

  for (const [mode, transports] of [['polling with upgrade', undefined], ['websocket only', ['websocket']]]) {
    it(`users on different nodes meet, signal, chat and skip (${mode})`, async () => {
      const tag = transports ? 'ws' : 'poll';
      const [alice, bob, roomId, a, b] = await pair(nodes[0].url, `alice-${tag}`, `bob-${tag}`, transports, nodes[1].url);
      try {
        assert.equal(a.roomId, b.roomId);
        assert.equal(a.partnerId, `bob-${tag}`);
        assert.equal(b.partnerId, `alice-${tag}`);
        assert.notEqual(a.isInitiator, b.isInitiator);

        // An offer and a burst of candidates cross the nodes in order.
        const got = [];
        const done = new Promise((resolve) => {
          bob.on('webrtc-ice-candidate', (c) => { got.push(c.candidate.candidate); if (got.length === 100) resolve(); });
        });
        const offer = next(bob, 'webrtc-offer');
        alice.emit('webrtc-offer', { roomId, offer: { type: 'offer', sdp: 'v=0\r\n' } });
        for (let i = 0; i < 100; i++) {
          alice.emit('webrtc-ice-candidate', { roomId, candidate: { candidate: `c${i}`, sdpMid: '0', sdpMLineIndex: 0 } });
        }
        assert.equal((await offer).fromUserId, `alice-${tag}`);
        await done;
        assert.deepEqual(got, Array.from({ length: 100 }, (_, i) => `c${i}`));

        const chat = next(alice, 'chat-message');
        bob.emit('chat-message', { roomId, message: 'hello across nodes' });
        assert.equal((await chat).message, 'hello across nodes');

        const left = next(alice, 'partner-left');
        bob.emit('next-partner');
        const l = await left;
        assert.equal(l.reason, 'next-partner');
        assert.equal(l.roomId, roomId);
      } finally {
        alice.disconnect();
        bob.disconnect();
      }
    });
  }
});
