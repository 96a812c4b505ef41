// The README's quick start, as a newcomer meets it: scripts/quickstart-test.sh clones the
// repository, runs `cargo run --release` in the clone and sets QUICKSTART_URL to the address it
// announced. Two Chromium pages then meet on `/` and talk, and `/dashboard` shows them. Without
// QUICKSTART_URL (the plain `npm test`) this file is skipped: the server under test is that one.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

const URL_ = process.env.QUICKSTART_URL;
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-quic',
  '--disable-sync',
];
const skip = !URL_ ? 'run by scripts/quickstart-test.sh' : !existsSync(CHROMIUM) && `no browser at ${CHROMIUM}`;

const until = (page, fn, what, ms = 30000) =>
  page.waitForFunction(fn, null, { timeout: ms, polling: 100 }).catch(() => {
    throw new Error(`${what} did not happen`);
  });

describe('the quick start from a fresh clone', { skip }, () => {
  let browser;
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  });
  after(async () => browser?.close());

  const open = async (path) => {
    const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('response', (r) => { if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`); });
    await page.goto(`${URL_}${path}`);
    return { page, errors };
  };

  it('two pages meet on / and talk; /dashboard shows them live', async () => {
    const a = await open('/');
    const b = await open('/');
    for (const { page } of [a, b]) await until(page, () => window.roulette?.userId, 'signing in');
    const online = await a.page.textContent('#online');
    assert.match(online, /^\d+ online$/, `the header counts the users: ${online}`);
    await a.page.click('#startBtn');
    await until(a.page, () => window.roulette.phase === 'searching', 'a searching');
    await b.page.click('#startBtn');
    for (const { page } of [a, b]) {
      await until(page, () => window.roulette.connectionState === 'connected', 'the WebRTC call connecting');
    }
    await a.page.fill('#chatInput', 'hello from a fresh clone');
    await a.page.click('#sendBtn');
    await until(b.page, () => document.getElementById('messages').textContent.includes('hello from a fresh clone'), 'the chat line arriving');

    const d = await open('/dashboard');
    await until(d.page, () => document.body.dataset.ready === '1', 'the dashboard rendering');
    await until(d.page, () => Number(document.getElementById('users-online').textContent) >= 2, 'the dashboard counting both users');
    assert.equal(await d.page.evaluate(() => typeof window.Chart), 'function', 'Chart.js loaded');
    assert.ok(await d.page.locator('canvas').count() >= 6, 'the charts are drawn');
    for (const { errors } of [a, b, d]) {
      assert.deepEqual(errors.filter((e) => !e.includes('/stats')), [], 'no failed load and no page error');
    }
  });
});
