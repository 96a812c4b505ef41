// The protocol, driven with the official socket.io-client 4 over both transports. Every payload
// sent and received is checked against the contract (clients/contract/asyncapi.yaml) by the
// harness; the malformed ones sent on purpose go through emitOffContract.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io, startServer, connect, next, collect, user, pair, meet, emitOffContract } from './harness.js';

const MODES = [
  ['polling with upgrade', undefined],
  ['websocket only', ['websocket']],
];

const RELAYED = ['webrtc-offer', 'webrtc-answer', 'webrtc-ice-candidate', 'chat-message',
  'typing', 'quality-report', 'connection-status'];

function relayPayload(event, roomId) {
  switch (event) {
    case 'webrtc-offer': return { roomId, offer: { type: 'offer', sdp: 'v=0\r\n' } };
    case 'webrtc-answer': return { roomId, answer: { type: 'answer', sdp: 'v=0\r\n' } };
    case 'webrtc-ice-candidate': return { roomId, candidate: { candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMid: '0', sdpMLineIndex: 0 } };
    case 'chat-message': return { roomId, message: 'hi' };
    case 'typing': return { roomId, isTyping: true };
    case 'quality-report': return { roomId, quality: 'good', stats: { latency: 80, packetLoss: 1, bandwidth: 800 } };
    case 'connection-status': return { roomId, status: 'connected', quality: 'good' };
    case 'find-random-partner': return {};
    default: return undefined; // next-partner, end-chat: no payload
  }
}

for (const [mode, transports] of MODES) {
  describe(`official client, ${mode}`, () => {
    let server;
    let n = 0;
    const id = (name) => `${name}-${transports ? 'ws' : 'poll'}-${++n}`;
    const sockets = [];
    const track = (...s) => { sockets.push(...s); return s; };
    // This suite opens many connections from one address and bursts 2,000 candidates: the
    // per-address and signaling limits are off here and tested on their own below.
    before(async () => {
      server = await startServer(['--max-new-connections-per-ip', '0', '--signal-events-per-sec', '0']);
    });
    after(async () => {
      for (const s of sockets) s.disconnect();
      assert.equal(await server.stop(), 0, 'the server exits 0 on SIGTERM');
    });

    it('connects on the expected transport', async () => {
      const s = io(server.url, { forceNew: true, reconnection: false, ...(transports ? { transports } : {}) });
      track(s);
      const first = s.io.engine.transport.name;
      const upgraded = transports ? null : new Promise((resolve) => s.io.engine.once('upgrade', resolve));
      await next(s, 'connect');
      if (transports) {
        assert.equal(first, 'websocket');
      } else {
        assert.equal(first, 'polling', 'the official client starts on long-polling');
        await upgraded;
        assert.equal(s.io.engine.transport.name, 'websocket');
      }
    });

    it('authenticates', async () => {
      const s = await connect(server.url, transports);
      track(s);
      const authed = next(s, 'authenticated');
      const userId = id('alice');
      s.emit('authenticate', { userId, userInfo: { gender: 'female', age: 30, languages: ['en'] } });
      const a = await authed;
      assert.equal(a.userId, userId);
      assert.equal(a.socketId, s.id);
      assert.deepEqual(Object.keys(a.serverStats).sort(), ['activeRooms', 'connectedUsers', 'waitingUsers']);
    });

    it('refuses every event before authenticate', async () => {
      const s = await connect(server.url, transports);
      track(s);
      for (const event of ['find-random-partner', 'next-partner', 'end-chat', ...RELAYED]) {
        const err = next(s, 'error');
        s.emit(event, relayPayload(event, 'r'));
        const e = await err;
        assert.deepEqual([e.code, e.event], ['not-authenticated', event]);
        assert.ok(e.message);
      }
    });

    it('lets a client that knows no resume token and no recovery back in after its transport dropped', async () => {
      // The Node server's browser client: reconnection on, `authenticate {userId}` on every
      // connect, no resume token; and here as a client before socket.io 4.6, which knows no
      // connection state recovery (recovery.test.js has the client as it is).
      const name = id('dropped');
      const a = io(server.url, { forceNew: true, reconnection: true, reconnectionDelay: 100,
        ...(transports ? { transports } : {}) });
      track(a);
      let auths = 0;
      const errors = [];
      a.on('connect', () => a.emit('authenticate', { userId: name }));
      a.on('auth-error', (e) => errors.push(e));
      const first = next(a, 'authenticated');
      await first;
      auths++;
      // In a call with a partner, then the transport drops under the client.
      const partner = await user(server.url, id('partner'), transports);
      track(partner);
      const room = (await meet(a, partner))[0].roomId;
      const told = collect(partner, 'partner-left', 3000);
      const again = next(a, 'authenticated', 5000);
      const dropped = Date.now();
      a._pid = undefined;
      a.io.engine.close();
      const back = await again;
      auths++;
      assert.equal(back.userId, name);
      assert.equal(back.resumed, false, 'a fresh session');
      assert.ok(Date.now() - dropped < 4000, 'back within the reconnection delay and 3 s');
      assert.deepEqual(errors, [], 'never user-id-taken');
      // The partner was told only that the held room ended, when the newcomer took the id.
      assert.deepEqual(await told, [
        { reason: 'disconnect', roomId: room, canReconnect: false },
      ]);
      assert.equal(auths, 2);
    });

    it('sends queue-status in whole seconds with a message, and says when a match relaxed', async () => {
      // Zulu speakers only: nobody else of this suite can be matched with them.
      const zulu = { languages: ['zu'] };
      const waiter = await user(server.url, id('q'), transports, zulu);
      track(waiter);
      const status = next(waiter, 'queue-status');
      waiter.emit('find-random-partner', { preferences: { language: 'zu', interests: [`rare-${id('i')}`] } });
      const q = await status;
      assert.ok(Number.isInteger(q.estimatedWaitTime) && q.estimatedWaitTime > 0, JSON.stringify(q));
      assert.equal(typeof q.message, 'string');
      assert.ok(Number.isInteger(q.estimatedWaitMs));
      const other = await user(server.url, id('q2'), transports, zulu);
      track(other);
      const mine = next(waiter, 'matched', 10000);
      other.emit('find-random-partner', { preferences: { language: 'zu' } });
      const m = await mine;
      // The waiter insisted on an interest nobody shares until its search relaxed.
      assert.equal(m.relaxed, true);
      assert.deepEqual(m.commonInterests, []);
    });

    it('refuses a user id that is online', async () => {
      const name = id('taken');
      track(await user(server.url, name, transports));
      const thief = await connect(server.url, transports);
      track(thief);
      const err = next(thief, 'auth-error');
      thief.emit('authenticate', { userId: name });
      assert.equal((await err).code, 'user-id-taken');
    });

    it('matches two searchers', async () => {
      const a = await user(server.url, id('a'), transports);
      const b = await user(server.url, id('b'), transports);
      track(a, b);
      const searching = next(a, 'searching');
      const status = next(a, 'queue-status');
      a.emit('find-random-partner', { preferences: { interests: ['music'] } });
      assert.equal((await searching).status, 'searching');
      const q = await status;
      assert.equal(q.position, 1);
      assert.ok('estimatedWaitTime' in q && 'totalWaiting' in q);
      const [ma, mb] = [next(a, 'matched'), next(b, 'matched')];
      b.emit('find-random-partner', { preferences: { interests: ['Music', 'chess'] } });
      const [x, y] = await Promise.all([ma, mb]);
      assert.equal(x.roomId, y.roomId);
      assert.deepEqual(x.commonInterests, ['music']);
      assert.equal(q.relaxed, false);
      assert.notEqual(x.isInitiator, y.isInitiator);
      assert.equal(typeof x.waitTime, 'number');
    });

    it('relays signals intact and only to the partner', async () => {
      const [a, b, roomId, matchedA, matchedB] = await pair(server.url, id('a'), id('b'), transports);
      const outsider = await user(server.url, id('eve'), transports);
      track(a, b, outsider);
      const offer = { type: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n' };
      const got = next(b, 'webrtc-offer');
      a.emit('webrtc-offer', { roomId, offer, targetUserId: matchedA.partnerId });
      assert.deepEqual(await got, { offer, fromUserId: matchedB.partnerId, roomId });
      const answer = { type: 'answer', sdp: 'v=0\r\n' };
      const gotAnswer = next(a, 'webrtc-answer');
      b.emit('webrtc-answer', { roomId, answer });
      assert.deepEqual((await gotAnswer).answer, answer);
      const candidate = { candidate: 'candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host', sdpMid: '0', sdpMLineIndex: 0 };
      const gotCand = next(b, 'webrtc-ice-candidate');
      a.emit('webrtc-ice-candidate', { roomId, candidate });
      assert.deepEqual((await gotCand).candidate, candidate);
      // The outsider reaches nobody.
      const leaks = [collect(a, 'webrtc-offer', 300), collect(b, 'webrtc-offer', 300)];
      const err = next(outsider, 'error');
      outsider.emit('webrtc-offer', { roomId, offer });
      assert.equal((await err).code, 'not-in-room');
      assert.deepEqual(await Promise.all(leaks), [[], []]);
    });

    it('sends chat to both and partner events to the partner', async () => {
      const [a, b, roomId] = await pair(server.url, id('a'), id('b'), transports);
      track(a, b);
      const [toA, toB] = [next(a, 'chat-message'), next(b, 'chat-message')];
      a.emit('chat-message', { roomId, message: 'hello there' });
      const [ca, cb] = await Promise.all([toA, toB]);
      assert.deepEqual(ca, cb);
      assert.equal(cb.message, 'hello there');
      assert.equal(cb.type, 'text');
      for (const [event, reply] of [['typing', 'partner-typing'], ['quality-report', 'partner-quality-report'], ['connection-status', 'partner-connection-status']]) {
        const got = next(b, reply);
        a.emit(event, relayPayload(event, roomId));
        const r = await got;
        assert.equal(r.roomId, roomId);
        assert.ok(r.fromUserId && r.timestamp);
      }
    });

    it('keeps order in a burst of candidates', async () => {
      const [a, b, roomId] = await pair(server.url, id('a'), id('b'), transports);
      track(a, b);
      const N = 2000;
      const seen = [];
      const done = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${seen.length} of ${N} arrived`)), 20000);
        b.on('webrtc-ice-candidate', (c) => {
          seen.push(c.candidate.n);
          if (seen.length === N) { clearTimeout(timer); resolve(); }
        });
      });
      for (let i = 0; i < N; i++) a.emit('webrtc-ice-candidate', { roomId, candidate: { candidate: 'c', n: i } });
      await done;
      assert.deepEqual(seen, [...Array(N).keys()]);
    });

    it('skips with next-partner and ends with end-chat', async () => {
      const [a, b, roomId] = await pair(server.url, id('a'), id('b'), transports);
      track(a, b);
      const left = next(b, 'partner-left');
      const searching = next(a, 'searching');
      a.emit('next-partner');
      assert.deepEqual(await left, { reason: 'next-partner', roomId, canReconnect: false });
      await searching;
      // The skipper is back in the queue: cancel its search so the next pair meets each other.
      const cancelled = next(a, 'chat-ended');
      a.emit('end-chat');
      assert.deepEqual(await cancelled, { roomId: null, reason: 'search-cancelled' });
      const [c, d, room2] = await pair(server.url, id('c'), id('d'), transports);
      track(c, d);
      const [leftC, ended] = [next(c, 'partner-left'), next(d, 'chat-ended')];
      d.emit('end-chat');
      assert.deepEqual(await leftC, { reason: 'user-ended', roomId: room2, canReconnect: false });
      assert.deepEqual(await ended, { roomId: room2, reason: 'ended' });
    });

    it('tells the partner when a user disconnects', async () => {
      const [a, b, roomId] = await pair(server.url, id('a'), id('b'), transports);
      track(b);
      const left = next(b, 'partner-left');
      a.disconnect();
      assert.deepEqual(await left, { reason: 'disconnect', roomId, canReconnect: false });
    });

    it('holds the room for a dropped connection and gives it back with the resume token', async () => {
      const name = id('phone');
      const a = await connect(server.url, transports);
      const authed = next(a, 'authenticated');
      a.emit('authenticate', { userId: name });
      const { resumeToken } = await authed;
      assert.equal(typeof resumeToken, 'string');
      const bName = id('b');
      const b = await user(server.url, bName, transports);
      track(b);
      const { roomId } = (await meet(a, b))[0];
      // The transport dies without a goodbye, as when a phone changes networks.
      const away = next(b, 'partner-reconnecting');
      a.io.engine.close();
      assert.deepEqual(await away, { roomId, partnerId: name });
      const back = await connect(server.url, transports);
      track(back);
      const [resumed, rejoined, reconnected] = [
        next(back, 'authenticated'), next(back, 'rejoined'), next(b, 'partner-reconnected')];
      back.emit('authenticate', { userId: name, resumeToken });
      assert.equal((await resumed).resumed, true);
      assert.deepEqual(await rejoined, { roomId, partnerId: bName, isInitiator: true });
      assert.deepEqual(await reconnected, { roomId, partnerId: name, recovered: false });
      const chat = next(b, 'chat-message');
      back.emit('chat-message', { roomId, message: 'back again' });
      assert.equal((await chat).message, 'back again');
    });

    it('answers malformed payloads with error codes', async () => {
      const s = await user(server.url, id('m'), transports);
      track(s);
      const cases = [
        ['find-random-partner', { preferences: { ageRange: [50, 20] } }, 'invalid-payload'],
        ['find-random-partner', 'not an object', 'invalid-payload'],
        ['webrtc-offer', null, 'invalid-payload'],
        ['webrtc-offer', { roomId: 'r' }, 'invalid-payload'],
        ['chat-message', { roomId: 'r', message: 'x'.repeat(2001) }, 'payload-too-large'],
        ['quality-report', { roomId: 'r', quality: 'superb' }, 'invalid-payload'],
        ['no-such-event', {}, 'unknown-event'],
        ['end-chat', undefined, 'not-in-room'],
      ];
      for (const [event, payload, code] of cases) {
        const err = next(s, 'error');
        // Malformed on purpose (all but the last, refused for what the user is doing).
        if (code === 'not-in-room') s.emit(event, payload);
        else emitOffContract(s, event, payload);
        const e = await err;
        assert.deepEqual([e.code, e.event], [code, event], JSON.stringify(e));
      }
      const err = next(s, 'error');
      emitOffContract(s, 'chat-message', { roomId: 'r', message: 'bin', blob: new Uint8Array([1, 2, 3]) });
      assert.equal((await err).code, 'binary-not-supported');
    });

    it('acknowledges events sent with a callback, a refusal in the acknowledgement alone', async () => {
      const s = await user(server.url, id('ack'), transports);
      track(s);
      const errors = [];
      s.on('error', (e) => errors.push(e));
      assert.deepEqual(await s.timeout(5000).emitWithAck('find-random-partner', {}), { ok: true });
      const refused = await s.timeout(5000).emitWithAck('chat-message', { roomId: 'nope', message: 'x' });
      assert.equal(refused.ok, false);
      assert.equal(refused.code, 'not-in-room');
      // Told once: the next `error` is that of an event sent without a callback. Events are
      // answered in order, so an `error` for the acknowledged refusal would have come first.
      const err = next(s, 'error');
      s.emit('typing', { roomId: 'nope', isTyping: true });
      assert.equal((await err).event, 'typing');
      assert.deepEqual(errors.map((e) => e.event), ['typing']);
    });
  });
}

describe('limits with the official client', () => {
  it('answers a flood of skips with rate-limited, then disconnects the flooder', async () => {
    const server = await startServer(['--search-events-per-min', '6', '--flood-disconnect-after', '10']);
    try {
      const s = await user(server.url, 'skipper', ['websocket']);
      const errors = [];
      s.on('error', (e) => errors.push(e));
      const gone = next(s, 'disconnect');
      for (let i = 0; i < 40; i++) s.emit('next-partner');
      assert.equal(await gone, 'io server disconnect');
      assert.ok(errors.length >= 1, 'told before being cut off');
      for (const e of errors) {
        assert.deepEqual([e.code, e.event], ['rate-limited', 'next-partner']);
        assert.ok(e.retryAfterMs > 0);
      }
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  it('refuses connections over MAX_CONNECTIONS_PER_IP with a connect_error', async () => {
    const server = await startServer(['--max-connections-per-ip', '2']);
    try {
      const held = [await connect(server.url, ['websocket']), await connect(server.url, ['websocket'])];
      await assert.rejects(connect(server.url, ['websocket']), /rate-limited/);
      held[0].disconnect();
      await new Promise((r) => setTimeout(r, 200));
      const again = await connect(server.url, ['websocket']);
      again.disconnect();
      held[1].disconnect();
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
});

describe('shutdown with the official client', () => {
  it('sends server-shutdown to everyone and exits 0', async () => {
    const server = await startServer(['--shutdown-timeout-ms', '3000']);
    const [a, b] = await pair(server.url, 'sa', 'sb');
    const idle = await connect(server.url, ['websocket']);
    const notices = [a, b, idle].map((s) => next(s, 'server-shutdown'));
    const gone = [a, b, idle].map((s) => next(s, 'disconnect'));
    const started = Date.now();
    const exit = server.stop();
    for (const n of await Promise.all(notices)) {
      assert.equal(typeof n.message, 'string');
      assert.equal(typeof n.timestamp, 'number');
      assert.ok(n.reconnectInMs >= 1000, 'a delay to come back after');
    }
    await Promise.all(gone);
    assert.equal(await exit, 0);
    assert.ok(Date.now() - started < 3500);
  });
});

describe('moderation with the official client', () => {
  it('a kicked user and a banned user are told, closed, and the banned one refused at authenticate', async () => {
    const token = 'interop-admin-token';
    const server = await startServer(['--admin-token', token]);
    const adminPost = (path, body) => fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    try {
      const [a, b] = await pair(server.url, 'kick-a', 'kick-b');
      const kicked = next(a, 'kicked');
      const aGone = next(a, 'disconnect');
      const left = next(b, 'partner-left');
      assert.equal((await adminPost('/admin/kick', { userId: 'kick-a', reason: 'abuse' })).status, 200);
      assert.equal((await kicked).reason, 'abuse');
      await aGone;
      assert.equal((await left).reason, 'disconnect');

      const banned = next(b, 'banned');
      const res = await adminPost('/admin/bans', { userId: 'kick-b', durationSec: 60, reason: 'spam' });
      assert.equal(res.status, 201);
      const { until } = await res.json();
      const told = await banned;
      assert.deepEqual([told.reason, told.until], ['spam', until]);
      const again = await connect(server.url, ['websocket']);
      const refused = next(again, 'auth-error');
      again.emit('authenticate', { userId: 'kick-b' });
      const r = await refused;
      assert.deepEqual([r.code, r.until], ['banned', until]);
      again.disconnect();
      b.disconnect();
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
});
