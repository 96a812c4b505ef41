// The protocol's contract (clients/contract/asyncapi.yaml) holds: it is a valid AsyncAPI document
// for the official parser, its validator refuses payloads that drifted, the TypeScript types are
// the ones generated from it and the clients that use them type-check, and a live server answers
// as it says. (Every payload of the interop, browser, cluster and TURN suites is checked against
// it too, by the harness.)
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';
import { Contract, DOCUMENT_PATH, contract, loadDocument } from '../contract/contract.js';
import { generateTypes, TYPES_PATH } from '../contract/generate-types.js';
import {
  startServer, connect, next, user, inspect, takeViolations, checkHttp, repoRoot, emitOffContract, offContract,
} from './harness.js';

const clients = path.join(repoRoot, 'clients');

describe('the AsyncAPI document', () => {
  it('parses with the official parser (@asyncapi/parser) without errors', async (t) => {
    const { document, diagnostics } = await new Parser().parse(readFileSync(DOCUMENT_PATH, 'utf8'), { source: DOCUMENT_PATH });
    const line = (d) => `${DiagnosticSeverity[d.severity]} ${d.code} at ${d.path.join('.') || '(root)'}: ${d.message}`;
    for (const d of diagnostics.filter((d) => d.severity !== DiagnosticSeverity.Error)) t.diagnostic(line(d));
    const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
    assert.deepEqual(errors.map(line), [], 'no error-level diagnostics');
    assert.ok(document, 'a parsed document');
    assert.equal(document.version(), '3.0.0');
    const names = document.messages().all().map((m) => m.name()).filter(Boolean);
    assert.ok(names.includes('matched') && names.includes('authenticate'), names.join(' '));
  });

  it('describes the events of both directions and the HTTP bodies', () => {
    const c = contract();
    assert.deepEqual([...c.clientEvents.keys()].sort(), [
      'authenticate', 'block-user', 'chat-message', 'connection-status', 'end-chat', 'find-random-partner',
      'next-partner', 'quality-report', 'report-user', 'typing', 'webrtc-answer', 'webrtc-ice-candidate', 'webrtc-offer',
    ]);
    for (const event of ['authenticated', 'matched', 'queue-status', 'searching', 'partner-left', 'chat-ended',
      'room-ended', 'rejoined', 'partner-reconnected', 'partner-reconnecting', 'server-shutdown', 'auth-error', 'error']) {
      assert.ok(c.serverEvents.has(event), `server event ${event}`);
    }
    assert.equal(c.ackSchema, 'Ack');
    assert.deepEqual([...c.http.keys()].sort(), ['/health', '/health/live', '/ice-servers', '/stats']);
  });

  it('has examples that fit their own schemas', () => {
    const c = contract();
    const doc = loadDocument();
    let n = 0;
    for (const [key, message] of Object.entries(doc.components.messages)) {
      for (const example of message.examples ?? []) {
        const schema = message.payload.$ref.split('/').pop();
        assert.equal(c.check(schema, example.payload), null, `example ${example.name} of ${key}`);
        n++;
      }
    }
    assert.ok(n >= 20, `${n} examples`);
  });
});

describe('the contract validator', () => {
  const c = new Contract();
  const matched = {
    roomId: '9b2f6c1e0d4a4e58a7c3b1f2e6d8a9c0', partnerId: 'bob', isInitiator: true, waitTime: 5,
    commonInterests: [], relaxed: false, iceServers: [{ urls: ['stun:stun.l.google.com:19302'] }],
  };
  const queueStatus = { position: 1, estimatedWaitTime: 60, estimatedWaitMs: 60000, message: 'm', totalWaiting: 1, relaxed: false };

  it('accepts well-formed payloads', () => {
    assert.equal(c.checkServerEvent('matched', [matched]), null);
    assert.equal(c.checkServerEvent('queue-status', [queueStatus]), null);
    assert.equal(c.checkClientEvent('next-partner', []), null);
    assert.equal(c.checkClientEvent('find-random-partner', []), null, 'the payload may be left out');
    assert.equal(c.checkAck([{ ok: false, code: 'not-in-room', message: 'm' }]), null);
  });

  it('refuses server payloads that drifted', () => {
    const { roomId, ...noRoom } = matched;
    const cases = [
      ['matched', noRoom, /Matched: \(payload\) must have required property 'roomId'/],
      ['queue-status', { ...queueStatus, estimatedWaitTime: '60' }, /\/estimatedWaitTime must be integer/],
      ['queue-status', { ...queueStatus, estimatedWaitTime: 1.5 }, /\/estimatedWaitTime must be integer/],
      ['matched', { ...matched, partner: 'bob' }, /must NOT have additional properties \(partner\)/],
      ['matched', { ...matched, iceServers: [{ url: 'stun:x' }] }, /\/iceServers\/0/],
      ['partner-left', { reason: 'next', roomId, canReconnect: false }, /\/reason must be equal to one of the allowed values/],
      ['chat-ended', { roomId: null, reason: 'ended' }, /ChatEnded/],
      ['error', { code: 'not-in-room', message: 'm' }, /must have required property 'event'/],
      ['error', { code: 'rate-limited', message: 'm', event: 'next-partner' }, /must have required property 'retryAfterMs'/],
      ['error', { code: 'no-such-code', message: 'm', event: 'x' }, /\/code must be equal to one of the allowed values/],
      ['auth-error', { code: 'not-in-room', message: 'm' }, /\/code must be equal to one of the allowed values/],
      ['partner-quality-report', { fromUserId: 'a', roomId, quality: 'good', stats: {}, timestamp: 1 }, /required property 'grade'/],
    ];
    for (const [event, payload, why] of cases) {
      const problem = c.checkServerEvent(event, [payload]);
      assert.match(problem ?? 'accepted', why, `${event} ${JSON.stringify(payload)}`);
      assert.match(problem, new RegExp(`"${event}"`), 'the problem names the event');
    }
    assert.match(c.checkServerEvent('partner-found', [{}]), /not in the contract/);
    assert.match(c.checkServerEvent('matched', []), /needs a Matched payload/);
    assert.match(c.checkServerEvent('matched', [matched, 1]), /2 arguments/);
    assert.match(c.checkAck([{ ok: true, code: 'not-in-room' }]), /Ack/);
  });

  it('refuses client payloads off the contract', () => {
    const cases = [
      ['chat-message', { roomID: 'r', message: 'hi' }, /additional properties \(roomID\)/],
      ['chat-message', { roomId: 'r', message: 'x'.repeat(2001) }, /\/message must NOT have more than 2000 characters/],
      ['find-random-partner', { preferences: { ageRange: [18] } }, /\/preferences\/ageRange/],
      ['connection-status', { roomId: 'r', status: 'open' }, /\/status must be equal to one of the allowed values/],
      ['authenticate', { userId: 'no spaces' }, /\/userId must match pattern/],
      ['webrtc-offer', { roomId: 'r', offer: 'v=0' }, /\/offer must be object/],
      ['webrtc-offer', { roomId: 'r' }, /required property 'offer'/],
    ];
    for (const [event, payload, why] of cases) {
      assert.match(c.checkClientEvent(event, [payload]) ?? 'accepted', why, `${event} ${JSON.stringify(payload)}`);
    }
    assert.match(c.checkClientEvent('next-partner', [{}]), /has no payload/);
    assert.match(c.checkClientEvent('chat-message', []), /needs a ChatMessage payload/);
    assert.match(c.checkClientEvent('no-such-event', [{}]), /not in the contract/);
  });

  it('records what does not fit for the harness to fail the test with', () => {
    const problem = inspect('in', 'a fake socket', 'matched', [{ partnerId: 'bob' }]);
    assert.match(problem, /"matched"/);
    const recorded = takeViolations();
    assert.equal(recorded.length, 1);
    assert.match(recorded[0], /^a fake socket: server → client event "matched" payload \{"partnerId":"bob"\} does not match Matched: .*'roomId'/);
    checkHttp('/stats', '<html>', 'a fake page');
    assert.match(takeViolations()[0], /not JSON/);
  });
});

describe('the TypeScript types', () => {
  it('are what the generator makes of the document (run `npm run generate:types --prefix clients` after changing it)', () => {
    const committed = readFileSync(TYPES_PATH, 'utf8');
    assert.ok(committed === generateTypes(), `${path.relative(repoRoot, TYPES_PATH)} is out of date: run \`npm run generate:types --prefix clients\``);
  });

  for (const config of ['tsconfig.json', 'tsconfig.browser.json']) {
    it(`type-check the clients that use them: tsc --noEmit -p clients/${config}`, () => {
      const tsc = path.join(clients, 'node_modules', '.bin', 'tsc');
      const run = spawnSync(tsc, ['--noEmit', '-p', path.join(clients, config)], { cwd: clients, encoding: 'utf8' });
      assert.equal(run.error, undefined, `tsc did not run: ${run.error}`);
      assert.equal(run.status, 0, `tsc found errors:\n${run.stdout}${run.stderr}`);
    });
  }
});

describe('a live server against the document', () => {
  let server;
  let secured;
  before(async () => {
    server = await startServer(['--turn-secret', 'contract-test-secret', '--turn-urls', 'turn:127.0.0.1:3478?transport=udp']);
    secured = await startServer(['--jwt-secret', 'a-contract-test-secret-of-32-bytes-or-more']);
  });
  after(async () => {
    await server?.stop();
    await secured?.stop();
  });

  it('answers the HTTP endpoints with the bodies of the document', async () => {
    const cases = [
      [server, '/health', 200], [server, '/health/live', 200], [server, '/stats', 200],
      [server, '/ice-servers', 200], [server, '/ice-servers?userId=alice', 200],
      [server, '/ice-servers?userId=not%20an%20id', 400], [secured, '/ice-servers', 401],
    ];
    for (const [s, route, status] of cases) {
      const res = await fetch(`${s.url}${route}`);
      assert.equal(res.status, status, route);
      checkHttp(new URL(route, s.url).pathname, await res.text(), route);
    }
    const turn = (await (await fetch(`${server.url}/ice-servers?userId=alice`)).json()).iceServers.find((s) => s.username);
    assert.match(turn.username, /^\d+:alice$/, 'TURN credentials, so the optional fields of IceServer are checked too');
    assert.deepEqual(takeViolations(), []);
  });

  it('knows every client event of the document, and its examples are payloads it accepts', async () => {
    const s = await user(server.url, 'alice', ['websocket'], { languages: ['en'] });
    try {
      const doc = loadDocument();
      for (const [event, spec] of contract().clientEvents) {
        const message = Object.values(doc.components.messages).find((m) => m.name === event && m.payload?.$ref?.endsWith(`/${spec.schema}`));
        const payloads = spec.payload === 'none' ? [undefined] : (message.examples ?? []).map((e) => e.payload);
        assert.ok(payloads.length, `${event} has an example`);
        for (const payload of payloads) {
          const args = payload === undefined ? [] : [payload];
          const reply = await s.timeout(5000).emitWithAck(event, ...args);
          // Refusals for what the user is doing (not in that room...) are fine; not the payload's.
          assert.ok(reply.ok || !['unknown-event', 'invalid-payload', 'payload-too-large', 'not-authenticated'].includes(reply.code),
            `${event} ${JSON.stringify(payload)}: ${JSON.stringify(reply)}`);
        }
      }
      const reply = await offContract(s, () => s.timeout(5000).emitWithAck('find-partner', {}));
      assert.equal(reply.code, 'unknown-event', 'an event the document does not have is not the server\'s either');
    } finally {
      s.disconnect();
    }
  });

  it('sends the error codes of auth-error as the document says', async () => {
    const s = await connect(secured.url, ['websocket']);
    try {
      const refused = next(s, 'auth-error');
      s.emit('authenticate', { userId: 'alice' });
      assert.equal((await refused).code, 'token-required');
      const invalid = next(s, 'auth-error');
      s.emit('authenticate', { token: 'not.a.jwt' });
      assert.equal((await invalid).code, 'token-invalid');
      // An off-contract payload on purpose: a number where the document has a string.
      const err = next(s, 'error');
      emitOffContract(s, 'authenticate', { userId: 42 });
      assert.deepEqual([(await err).code, (await err).event], ['invalid-payload', 'authenticate']);
    } finally {
      s.disconnect();
    }
  });
});
