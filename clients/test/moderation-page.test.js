// The moderation page (/dashboard/moderation) in a real browser: Debian's Chromium, driven by
// playwright-core. An operator signs in with the token typed into the page, sees a report made by
// a socket.io-client user in the feed, bans the reported user from the page (its next
// `authenticate` is refused with `banned`), lifts the ban from the page (it signs in again), and
// the token is in neither the page's address nor the server's log.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { startServer, connect, next, pair } from './harness.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--no-first-run', '--disable-quic', '--disable-sync',
];
// Long and unusual, so that finding it anywhere cannot be a coincidence.
const TOKEN = 'mod-page-secret-7f3c9a1e5b';

/** Resolves once `fn` (run in the page) returns truthy; fails with `what` after `ms`. */
async function until(page, fn, arg, what, ms = 10000) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 100 });
  } catch {
    const notice = await page.evaluate(() => document.getElementById('notice')?.textContent);
    throw new Error(`${what} did not happen (notice: ${JSON.stringify(notice)})`);
  }
}

/** Authenticates a new connection as `userId`: the first of `authenticated` or `auth-error`. */
async function tryAuthenticate(url, userId) {
  const socket = await connect(url);
  const answer = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer to ${userId}'s authenticate`)), 5000);
    for (const event of ['authenticated', 'auth-error']) {
      socket.once(event, (data) => {
        clearTimeout(timer);
        resolve({ event, data });
      });
    }
  });
  socket.emit('authenticate', { userId });
  try {
    return await answer;
  } finally {
    socket.close();
  }
}

describe('moderation page in Chromium', { skip: !existsSync(CHROMIUM) && `no browser at ${CHROMIUM}` }, () => {
  let server;
  let browser;
  before(async () => {
    // At debug level the server logs the most it ever does about requests and sessions.
    server = await startServer(['--admin-token', TOKEN, '--log-level', 'debug']);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  async function open(path = '/dashboard/moderation') {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    // The browser logs the 401 of the wrong token tried on purpose; any other error is a fault.
    page.on('console', (m) => {
      if (m.type() === 'error' && !m.text().includes('status of 401')) errors.push(m.text());
    });
    const response = await page.goto(`${server.url}${path}`);
    return { page, response, errors };
  }

  async function signIn(page) {
    await page.fill('#token', TOKEN);
    await page.click('#signin-btn');
    await until(page, () => document.body.dataset.signedIn === '1', null, 'signing in');
  }

  it('shows a report, bans the reported user until lifted, and keeps the token out of URLs and logs', async () => {
    const [reporter, mallory] = await pair(server.url, 'rita', 'mallory');
    const banned = next(mallory, 'banned', 10000);
    reporter.emit('report-user', { userId: 'mallory', reason: 'rude <b>words</b>' });

    const { page, response, errors } = await open();
    // The page's own protections: same-origin scripts only, no framing, no form submission.
    const csp = response.headers()['content-security-policy'];
    for (const directive of ["script-src 'self'", "frame-ancestors 'none'", "form-action 'none'"]) {
      assert.ok(csp?.includes(directive), `CSP has ${directive}: ${csp}`);
    }
    assert.equal(response.headers()['x-frame-options'], 'DENY');

    // A wrong token is refused and the page stays signed out.
    await page.fill('#token', 'not-the-token');
    await page.click('#signin-btn');
    await until(page, () => document.getElementById('signin-error').textContent === 'Wrong token.', null, 'a wrong token refused');
    assert.equal(await page.evaluate(() => document.getElementById('app').hidden), true);

    await signIn(page);
    assert.equal(await page.evaluate(() => document.getElementById('token').value), '', 'the field is cleared');

    // The report is in the feed, newest first, its reason shown as text (not markup).
    await until(page, () => [...document.querySelectorAll('#reports-body tr')]
      .some((tr) => tr.cells[2]?.textContent === 'mallory'), null, 'the report in the feed');
    const row = await page.evaluate(() => {
      const tr = [...document.querySelectorAll('#reports-body tr')].find((t) => t.cells[2]?.textContent === 'mallory');
      return { reporter: tr.cells[1].textContent, reason: tr.cells[3].textContent, bold: tr.querySelector('b') !== null };
    });
    assert.deepEqual(row, { reporter: 'rita', reason: 'rude <b>words</b>', bold: false });

    // Clicking the reported user looks it up: online, in a room, reported once.
    await page.click('#reports-body button[data-user="mallory"]');
    await until(page, () => document.getElementById('lookup-result').dataset.user === 'mallory', null, 'the lookup');
    const lookup = await page.evaluate(() => {
      const dl = document.getElementById('lookup-result');
      const dts = [...dl.querySelectorAll('dt')].map((d) => d.textContent);
      const dds = [...dl.querySelectorAll('dd')].map((d) => d.textContent);
      return Object.fromEntries(dts.map((k, i) => [k, dds[i]]));
    });
    assert.equal(lookup.Online, 'yes');
    assert.match(lookup.Room, /with rita/);
    assert.match(lookup['Reports against it'], /^1 kept/);
    assert.equal(lookup.Ban, 'none');

    // Ban for an hour from the page (the lookup filled in the user id).
    assert.equal(await page.inputValue('#ban-target'), 'mallory');
    await page.fill('#ban-duration', '1');
    await page.selectOption('#ban-unit', '3600');
    await page.fill('#ban-reason', 'abuse seen on the page');
    await page.click('#ban-form button[type="submit"]');
    await until(page, () => document.querySelector('#bans-body tr[data-target="mallory"]') !== null, null, 'the ban listed');
    const told = await banned;
    assert.equal(told.reason, 'abuse seen on the page');
    const hour = told.until - Date.now();
    assert.ok(hour > 3000_000 && hour <= 3600_000, `banned for an hour: ${hour} ms left`);

    // Its next authenticate is refused.
    const refused = await tryAuthenticate(server.url, 'mallory');
    assert.equal(refused.event, 'auth-error');
    assert.equal(refused.data.code, 'banned');
    assert.equal(refused.data.until, told.until);

    // Lifted from the page: it signs in again.
    await page.click('#bans-body tr[data-target="mallory"] button.lift');
    await until(page, () => document.querySelector('#bans-body tr[data-target="mallory"]') === null, null, 'the ban gone from the list');
    const again = await tryAuthenticate(server.url, 'mallory');
    assert.equal(again.event, 'authenticated', JSON.stringify(again));

    // The token was never in the page's address, and the server never logged it.
    assert.ok(!page.url().includes(TOKEN), page.url());
    assert.ok(!(await page.evaluate(() => location.href)).includes(TOKEN));
    assert.ok(!server.log().includes(TOKEN), 'the token is in the server log');
    assert.deepEqual(errors, []);
    reporter.close();
    mallory.close();
    await page.context().close();
  });

  it('takes a token out of the address at once and does not sign in with it', async () => {
    const { page, errors } = await open(`/dashboard/moderation?token=${TOKEN}`);
    await page.waitForLoadState('load');
    assert.equal(new URL(page.url()).search, '', page.url());
    assert.match(await page.textContent('#signin-error'), /not taken from the address/);
    assert.equal(await page.evaluate(() => document.body.dataset.signedIn), undefined);
    // Signed in by typing: the session survives a reload of the page, still without a URL token.
    await signIn(page);
    await page.reload();
    await until(page, () => document.body.dataset.signedIn === '1', null, 'still signed in after a reload');
    assert.ok(!page.url().includes(TOKEN));
    // Signing out forgets the token.
    await page.click('#signout');
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    assert.ok(!server.log().includes(TOKEN), 'the token is in the server log');
    assert.deepEqual(errors, []);
    await page.context().close();
  });

  it('refuses the admin API to a request without the bearer header, cookies or not', async () => {
    for (const headers of [{}, { Cookie: `token=${TOKEN}` }]) {
      const r = await fetch(`${server.url}/admin/bans`, { headers });
      assert.equal(r.status, 401);
    }
    const r = await fetch(`${server.url}/admin/bans?token=${TOKEN}`);
    assert.equal(r.status, 401, 'a token in the URL does not count');
  });
});
