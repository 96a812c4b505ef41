// Calls that only work through TURN: Debian's coturn on loopback, configured with the same
// shared secret as Roulette (TURN_SECRET), and two demo pages forced to relay (?relay=1, which
// sets iceTransportPolicy: 'relay'). Both must connect over a relay candidate pair, decoding each
// other's video, with the allocations visible in coturn's log; then a page whose credentials
// are signed with the same secret but already expired must not get a relay at all, so the
// credentials the server hands out are what coturn checks.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { startServer, watchPage } from './harness.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-quic',
  '--disable-sync',
];
const haveTurn = spawnSync('turnserver', ['--help']).error === undefined;
const skip = !existsSync(CHROMIUM) ? `no browser at ${CHROMIUM}`
  : !haveTurn ? 'no turnserver (apt-get install coturn)' : false;

const SECRET = `turn-test-${process.pid}`;
const until = (page, fn, what, ms = 20000) =>
  page.waitForFunction(fn, null, { timeout: ms, polling: 100 }).catch(() => {
    throw new Error(`${what} did not happen`);
  });

/** The type of the local and remote candidates of the pair the page's call uses. */
const selectedPair = (page) => page.evaluate(async () => {
  const stats = await window.roulette.pc.getStats();
  let pair;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) return null;
  return { local: stats.get(pair.localCandidateId)?.candidateType, remote: stats.get(pair.remoteCandidateId)?.candidateType };
});

describe('a call forced through TURN (coturn)', { skip }, () => {
  let turn;
  let turnLog = '';
  let server;
  let browser;
  let turnPort;

  before(async () => {
    turnPort = 20000 + (process.pid % 20000);
    const relayMin = 40000 + (process.pid % 10000);
    turn = spawn('turnserver', [
      '-n', '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1', `--listening-port=${turnPort}`,
      `--min-port=${relayMin}`, `--max-port=${relayMin + 40}`,
      '--use-auth-secret', `--static-auth-secret=${SECRET}`, '--realm=roulette.test',
      '--allow-loopback-peers', '--no-tls', '--no-dtls', '--no-cli', '--fingerprint',
      '--log-file=stdout', '--simple-log', '--verbose',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    turn.stdout.on('data', (d) => { turnLog += d; });
    turn.stderr.on('data', (d) => { turnLog += d; });
    const end = Date.now() + 10000;
    while (!/listener opened on|Total (UDP|General) servers/i.test(turnLog)) {
      if (Date.now() > end || turn.exitCode !== null) throw new Error(`coturn did not start:\n${turnLog}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    server = await startServer([
      '--turn-secret', SECRET, '--turn-urls', `turn:127.0.0.1:${turnPort}?transport=udp`, '--stun-urls', '',
    ]);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    turn?.kill('SIGTERM');
  });

  const open = async (user, initScript) => {
    const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
    const page = await context.newPage();
    if (initScript) await page.addInitScript(initScript.fn, initScript.arg);
    await watchPage(page, user); // the TURN credentials in authenticated and matched, too
    await page.goto(`${server.url}/?user=${user}&relay=1`);
    await until(page, () => window.roulette?.userId, `${user} signing in`);
    return page;
  };

  it('connects two relay-only pages through coturn with the server\'s credentials', async () => {
    const a = await open('relay-a');
    const b = await open('relay-b');
    const servers = await a.evaluate(() => window.roulette.iceServers);
    const turnEntry = servers.find((s) => String(s.urls).startsWith('turn:'));
    assert.ok(turnEntry?.username && turnEntry?.credential, `TURN credentials in authenticated: ${JSON.stringify(servers)}`);
    await a.click('#startBtn');
    await until(a, () => window.roulette.phase === 'searching', 'a searching');
    await b.click('#startBtn');
    for (const [name, page] of [['a', a], ['b', b]]) {
      await until(page, () => window.roulette.connectionState === 'connected', `${name} connected through the relay`, 30000);
    }
    for (const [name, page] of [['a', a], ['b', b]]) {
      const pair = await selectedPair(page);
      assert.equal(pair?.local, 'relay', `${name}'s own candidate is a relay: ${JSON.stringify(pair)}`);
      await until(page, () => document.getElementById('remoteVideo').videoWidth > 0, `${name} receiving video`);
    }
    const allocations = turnLog.split('\n').filter((l) => /ALLOCATE/.test(l) && /success/i.test(l));
    console.log(`coturn allocations for this call:\n${allocations.slice(0, 4).join('\n')}`);
    assert.ok(allocations.length >= 2, `coturn allocated a relay for each page:\n${turnLog.slice(-3000)}`);
  });

  it('refuses a relay to credentials signed with the same secret that have expired', async () => {
    const user = 'relay-expired';
    const username = `${Math.floor(Date.now() / 1000) - 3600}:${user}`;
    const credential = createHmac('sha1', SECRET).update(username).digest('base64');
    // The page's peer connections get the expired pair instead of the server's fresh one.
    const expire = {
      fn: ({ username, credential }) => {
        const Original = window.RTCPeerConnection;
        window.RTCPeerConnection = class extends Original {
          constructor(config = {}) {
            const iceServers = (config.iceServers || []).map((s) => (s.username ? { ...s, username, credential } : s));
            super({ ...config, iceServers });
          }
        };
      },
      arg: { username, credential },
    };
    const c = await open(user, expire);
    const d = await open('relay-fresh');
    await c.click('#startBtn');
    await until(c, () => window.roulette.phase === 'searching', 'c searching');
    await d.click('#startBtn');
    await until(c, () => window.roulette.pc !== null, 'c in a call');
    await c.waitForTimeout(8000);
    assert.notEqual(await c.evaluate(() => window.roulette.connectionState), 'connected', 'no call without a relay');
    const localRelays = await c.evaluate(async () => {
      let n = 0;
      (await window.roulette.pc.getStats()).forEach((s) => { if (s.type === 'local-candidate' && s.candidateType === 'relay') n += 1; });
      return n;
    });
    assert.equal(localRelays, 0, 'coturn gave the expired credentials no relay');
    const refused = turnLog.split('\n').filter((l) => l.includes(username) && /401|Unauthori[sz]ed|cannot find credentials/i.test(l));
    console.log(`coturn on the expired credentials:\n${refused.slice(0, 3).join('\n')}`);
    assert.ok(refused.length > 0, `coturn refused ${username}:\n${turnLog.slice(-3000)}`);
  });
});
