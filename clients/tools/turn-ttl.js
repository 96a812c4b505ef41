#!/usr/bin/env node
// What happens to a call forced through TURN that outlives its credentials: starts coturn on
// loopback (allocations capped at --lifetime seconds, so refreshes come early), Roulette with
// TURN_TTL=--ttl, and two relay-only demo pages in Chromium; then prints, every 10 s, each page's
// connection state and decoded frames, and coturn's refresh answers, for --seconds.
//
//   node tools/turn-ttl.js --ttl 60 --lifetime 60 --seconds 240
//
// Needs a built server (target/debug or target/release, or ROULETTE_BIN), coturn and Chromium.
import { parseArgs } from 'node:util';
import { spawn } from 'node:child_process';
import { chromium } from 'playwright-core';
import { startServer } from '../test/harness.js';

const { values: o } = parseArgs({
  options: {
    ttl: { type: 'string', default: '60' },
    lifetime: { type: 'string', default: '60' },
    seconds: { type: 'string', default: '240' },
  },
});
const SECRET = `ttl-${process.pid}`;
const port = 30000 + (process.pid % 10000);
let log = '';
const turn = spawn('turnserver', [
  '-n', '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1', `--listening-port=${port}`,
  '--min-port=45000', '--max-port=45100', '--use-auth-secret', `--static-auth-secret=${SECRET}`,
  '--realm=roulette.test', '--allow-loopback-peers', '--no-tls', '--no-dtls', '--no-cli',
  `--max-allocate-lifetime=${o.lifetime}`, '--log-file=stdout', '--simple-log', '--verbose',
]);
turn.stdout.on('data', (d) => { log += d; });
await new Promise((r) => setTimeout(r, 1000));
const server = await startServer(['--turn-secret', SECRET, '--turn-urls', `turn:127.0.0.1:${port}?transport=udp`,
  '--stun-urls', '', '--turn-ttl', o.ttl]);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--disable-background-networking', '--disable-component-update', '--no-first-run'],
});
const pages = [];
for (const user of ['ttl-a', 'ttl-b']) {
  const ctx = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await ctx.newPage();
  await page.goto(`${server.url}/?user=${user}&relay=1`);
  await page.waitForFunction(() => window.roulette?.userId);
  pages.push(page);
}
await pages[0].click('#startBtn');
await pages[0].waitForFunction(() => window.roulette.phase === 'searching');
await pages[1].click('#startBtn');
const t0 = Date.now();
const frames = (p) => p.evaluate(() => document.getElementById('remoteVideo').getVideoPlaybackQuality?.().totalVideoFrames ?? 0);
let last = [0, 0];
while (Date.now() - t0 < Number(o.seconds) * 1000) {
  await new Promise((r) => setTimeout(r, 10000));
  const states = await Promise.all(pages.map((p) => p.evaluate(() => window.roulette.connectionState)));
  const now = await Promise.all(pages.map(frames));
  const refreshes = log.split('\n').filter((l) => /REFRESH/.test(l));
  const ok = refreshes.filter((l) => /success/.test(l)).length;
  console.log(JSON.stringify({
    s: Math.round((Date.now() - t0) / 1000), states, newFrames: now.map((n, i) => n - last[i]),
    refreshesOk: ok, refreshesRefused: refreshes.length - ok,
  }));
  last = now;
}
console.log(log.split('\n').filter((l) => /REFRESH|expired|401/.test(l)).slice(0, 12).join('\n'));
await browser.close();
await server.stop();
turn.kill();
