// End to end in a real browser: Debian's Chromium, driven by playwright-core, with fake camera and
// microphone. Two pages meet through the server, connect over WebRTC, see each other's video and
// chat; then one skips, is matched with a third page, and the one left behind is told. The live
// dashboard then shows those calls. Every event the pages send and receive, and every body of
// /stats and /health they read, is checked against the contract (watchPage in the harness).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, repoRoot, watchPage } from './harness.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = path.join(repoRoot, 'artifacts');

const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-quic',
  '--disable-sync',
];

/** Resolves once `fn` (run in the page) returns truthy; fails with `what` after `ms`. */
async function until(page, fn, what, ms = 20000) {
  try {
    await page.waitForFunction(fn, null, { timeout: ms, polling: 100 });
  } catch (e) {
    const state = await page.evaluate(() => ({
      phase: window.roulette?.phase, connection: window.roulette?.connectionState,
      events: window.roulette?.events.map((e) => e.event),
    }));
    throw new Error(`${what} did not happen: ${JSON.stringify(state)}`);
  }
}

/** Counts decoded frames of the remote video over `ms`: above zero means live video. */
async function framesDecoded(page, ms = 1500) {
  return page.evaluate((ms) => new Promise((resolve) => {
    const v = document.getElementById('remoteVideo');
    const before = v.getVideoPlaybackQuality().totalVideoFrames;
    setTimeout(() => resolve({
      frames: v.getVideoPlaybackQuality().totalVideoFrames - before,
      width: v.videoWidth,
      height: v.videoHeight,
    }), ms);
  }), ms);
}

describe('demo page in Chromium', { skip: !existsSync(CHROMIUM) && `no browser at ${CHROMIUM}` }, () => {
  let server;
  let browser;
  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    server = await startServer(['--admin-token', 'dashboard-secret']);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  async function open(userId, viewport = { width: 1100, height: 720 }) {
    const context = await browser.newContext({ viewport, permissions: ['camera', 'microphone'] });
    const page = await context.newPage();
    page.on('pageerror', (e) => console.error(`[${userId}] page error:`, e));
    await watchPage(page, userId);
    await page.goto(`${server.url}/?user=${userId}`);
    await until(page, () => window.roulette?.userId, `${userId} signing in`);
    return page;
  }

  it('pairs two pages over WebRTC, chats, and re-pairs on Next', async () => {
    const alice = await open('alice');
    const bob = await open('bob', { width: 390, height: 844 });
    await alice.click('#startBtn');
    await until(alice, () => window.roulette.phase === 'searching', 'alice searching');
    await bob.click('#startBtn');
    for (const [name, page] of [['alice', alice], ['bob', bob]]) {
      await until(page, () => window.roulette.connectionState === 'connected', `${name} WebRTC connected`);
    }
    for (const [name, page] of [['alice', alice], ['bob', bob]]) {
      await until(page, () => document.getElementById('remoteVideo').videoWidth > 0, `${name} receiving video`);
      const v = await framesDecoded(page);
      assert.ok(v.frames > 0, `${name} decodes the partner's frames: ${JSON.stringify(v)}`);
    }

    await alice.fill('#chatInput', 'Hello from Alice');
    await until(bob, () => !document.getElementById('typing').hidden, 'bob seeing alice typing');
    await alice.click('#sendBtn');
    await until(bob, () => document.getElementById('messages').textContent.includes('Hello from Alice'), 'bob receiving chat');
    await until(alice, () => document.querySelector('#messages li.mine')?.textContent === 'Hello from Alice', 'alice seeing her receipt');
    // Sending ends "typing"; typing again at once (within the 1.5 s pause) starts it again.
    await until(bob, () => document.getElementById('typing').hidden, 'bob no longer seeing alice typing');
    await alice.fill('#chatInput', 'and');
    await until(bob, () => !document.getElementById('typing').hidden, 'bob seeing alice typing again right after her message', 3000);
    await alice.fill('#chatInput', '');

    // The quality indicator is fed by getStats and reported to the server.
    await until(alice, () => window.roulette.lastQuality !== null, 'a quality grade', 10000);
    await until(bob, () => window.roulette.events.some((e) => e.event === 'partner-quality-report'), 'bob getting alice\'s quality');
    await until(bob, () => window.roulette.events.some((e) => e.event === 'partner-connection-status' && e.data.status === 'connected'), 'bob getting alice\'s connection status');

    await alice.screenshot({ path: path.join(ARTIFACTS, 'browser-alice.png') });
    await bob.screenshot({ path: path.join(ARTIFACTS, 'browser-bob-phone.png') });

    // Carol waits; Alice skips Bob and meets Carol; Bob is told.
    const carol = await open('carol');
    await carol.click('#startBtn');
    await until(carol, () => window.roulette.phase === 'searching', 'carol searching');
    // The header's count follows the server: alice signed in with 2 online, now there are 3.
    await until(alice, () => document.getElementById('online').textContent === '3 online', 'alice\'s header counting carol', 15000);
    await alice.click('#nextBtn');
    await until(bob, () => window.roulette.events.some((e) => e.event === 'partner-left' && e.data.reason === 'next-partner'), 'bob told alice left');
    await until(bob, () => window.roulette.phase === 'idle', 'bob back to idle');
    for (const [name, page] of [['alice', alice], ['carol', carol]]) {
      await until(page, () => window.roulette.partnerId !== null && window.roulette.connectionState === 'connected', `${name} connected to the new partner`);
    }
    assert.equal(await alice.evaluate(() => window.roulette.partnerId), 'carol');
    assert.equal(await carol.evaluate(() => window.roulette.partnerId), 'alice');
    const v = await framesDecoded(carol);
    assert.ok(v.frames > 0, `carol decodes alice's frames: ${JSON.stringify(v)}`);
    await alice.screenshot({ path: path.join(ARTIFACTS, 'browser-alice-after-next.png') });
    await carol.screenshot({ path: path.join(ARTIFACTS, 'browser-carol.png') });
    await bob.screenshot({ path: path.join(ARTIFACTS, 'browser-bob-left.png') });
  });

  it('keeps a call through a dropped signaling connection, and delivers a chat line sent meanwhile', async () => {
    const dave = await open('dave');
    const erin = await open('erin');
    await dave.click('#startBtn');
    await until(dave, () => window.roulette.phase === 'searching', 'dave searching');
    await erin.click('#startBtn');
    for (const [name, page] of [['dave', dave], ['erin', erin]]) {
      await until(page, () => window.roulette.connectionState === 'connected', `${name} WebRTC connected`);
      await until(page, () => document.getElementById('remoteVideo').videoWidth > 0, `${name} receiving video`);
    }
    await erin.evaluate(() => { window.callBefore = window.roulette.pc; });
    // Erin's signaling connection drops (a network blip); her call's media does not need it.
    await erin.evaluate(() => {
      const t = window.roulette.socket.io.engine.transport;
      if (t.ws) t.ws.close(); else t.close();
    });
    await until(erin, () => !window.roulette.socket.connected, 'erin disconnected', 5000);
    await until(dave, () => window.roulette.events.some((e) => e.event === 'partner-reconnecting'), 'dave told erin is reconnecting');
    await dave.fill('#chatInput', 'Still there, Erin?');
    await dave.click('#sendBtn');
    await until(erin, () => window.roulette.socket.connected && window.roulette.socket.recovered, 'erin recovered her session', 10000);
    await until(erin, () => document.getElementById('messages').textContent.includes('Still there, Erin?'), 'erin getting the line sent while she was away');
    assert.equal(await erin.evaluate(() => window.roulette.pc === window.callBefore), true, 'the same peer connection');
    for (const [name, page] of [['dave', dave], ['erin', erin]]) {
      assert.equal(await page.evaluate(() => window.roulette.phase), 'matched', `${name} still in the call`);
      const v = await framesDecoded(page);
      assert.ok(v.frames > 0, `${name} still decodes the partner's frames: ${JSON.stringify(v)}`);
    }
    const daveSaw = await dave.evaluate(() => window.roulette.events.map((e) => e.event));
    assert.ok(!daveSaw.includes('partner-left'), `no partner-left for a blip: ${daveSaw}`);
    assert.ok(daveSaw.includes('partner-reconnected'), 'dave told erin is back');
    await erin.screenshot({ path: path.join(ARTIFACTS, 'browser-erin-after-blip.png') });
  });

  it('shows the calls on the live dashboard, behind the admin token', async () => {
    assert.equal((await fetch(`${server.url}/dashboard`)).status, 401, 'no token, no dashboard');
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => console.error('[dashboard] page error:', e));
    await watchPage(page, 'dashboard');
    await page.goto(`${server.url}/dashboard?token=dashboard-secret`);
    await until(page, () => document.body.dataset.ready === '1', 'the dashboard rendering');
    assert.equal(await page.evaluate(() => typeof window.Chart), 'function', 'charts come from Chart.js');
    assert.ok(await page.locator('canvas').count() >= 6);
    // Both calls of the test above reported `connected`, and none failed.
    await until(page, () => document.getElementById('connection-success').textContent === '100 %', 'a 100 % connection success');
    const online = Number(await page.textContent('#users-online'));
    assert.ok(online >= 3, `alice, bob and carol are online: ${online}`);
    await page.waitForTimeout(2500); // a second sample on the charts
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
  });
});
