#!/usr/bin/env node
// Measures the server's resident memory per idle authenticated connection: opens N connections
// with the official client (at its default transports, long-polling then the upgrade to
// WebSocket, unless told otherwise), authenticates each, waits, reads the server's RSS from /proc
// (the server must run on this machine), then disconnects everyone and reads it again.
//
//   node tools/idle-memory.js --url http://127.0.0.1:3001 --pid <server pid> --count 8000 \
//     --procs 4 [--transports polling,websocket | polling | websocket] [--settle 2000]
//
// The connections are spread over --procs client processes (each keeps well under its open-file
// limit, and one Node process is too slow to drive thousands of polling sessions). Prints one
// JSON line per phase; `tookMs` runs from the first connection attempt to the last
// `authenticated`; RSS is read --settle ms after that.
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { io } from 'socket.io-client';

const { values: o } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:3001' },
    pid: { type: 'string' },
    count: { type: 'string', default: '2000' },
    procs: { type: 'string', default: '1' },
    transports: { type: 'string', default: 'polling,websocket' },
    settle: { type: 'string', default: '2000' },
    child: { type: 'string' },
  },
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (o.child !== undefined) {
  // One client process: open its share, report, disconnect when told.
  const n = Number(o.count);
  const transports = o.transports.split(',');
  const sockets = [];
  let authenticated = 0;
  let failed = 0;
  const startedAt = Date.now();
  await new Promise((done) => {
    // A connection that neither authenticates nor fails within 30 s is counted as stuck.
    setTimeout(done, 30_000);
    const settle = () => authenticated + failed === n && done();
    for (let i = 0; i < n; i++) {
      const s = io(o.url, { transports, forceNew: true, reconnection: false });
      s.on('connect', () => s.emit('authenticate', { userId: `idle-${o.child}-${process.pid}-${i}` }));
      s.on('authenticated', () => { authenticated++; settle(); });
      s.on('connect_error', () => { failed++; settle(); });
      s.on('auth-error', () => { failed++; settle(); });
      sockets.push(s);
    }
  });
  const stuck = {};
  for (const s of sockets.filter((x) => !x.connected)) {
    const k = `${s.io.engine?.transport?.name}:${s.io.engine?.readyState}`;
    stuck[k] = (stuck[k] || 0) + 1;
  }
  process.send({ authenticated, failed, stuck, startedAt, doneAt: Date.now(),
    upgraded: sockets.filter((s) => s.io.engine?.transport?.name === 'websocket').length });
  process.on('message', async () => {
    for (const s of sockets) s.disconnect();
    await sleep(500);
    process.exit(0);
  });
} else {
  if (!o.pid) {
    console.error('usage: node tools/idle-memory.js --url URL --pid PID [--count N] [--procs P] [--transports LIST]');
    process.exit(2);
  }
  const n = Number(o.count);
  const procs = Number(o.procs);
  const pageSize = 4096;
  const rss = () => Number(readFileSync(`/proc/${o.pid}/statm`, 'utf8').split(' ')[1]) * pageSize;
  const before = rss();
  const me = fileURLToPath(import.meta.url);
  const children = [];
  const reports = [];
  await new Promise((done) => {
    for (let p = 0; p < procs; p++) {
      const share = Math.floor(n / procs) + (p < n % procs ? 1 : 0);
      const c = fork(me, ['--child', String(p), '--url', o.url, '--count', String(share),
        '--transports', o.transports]);
      c.on('message', (m) => { reports.push(m); if (reports.length === procs) done(); });
      children.push(c);
    }
  });
  const sum = (k) => reports.reduce((a, r) => a + r[k], 0);
  const tookMs = Math.max(...reports.map((r) => r.doneAt)) - Math.min(...reports.map((r) => r.startedAt));
  await sleep(Number(o.settle));
  const held = rss();
  console.log(JSON.stringify({
    phase: 'held', count: n, procs, transports: o.transports,
    authenticated: sum('authenticated'), failed: sum('failed'), upgraded: sum('upgraded'), tookMs,
    stuck: reports.map((r) => r.stuck).filter((x) => Object.keys(x).length),
    rssBefore: before, rssHeld: held, bytesPerConnection: Math.round((held - before) / n),
  }));
  await Promise.all(children.map((c) => new Promise((r) => { c.on('exit', r); c.send('leave'); })));
  await sleep(1500);
  console.log(JSON.stringify({ phase: 'left', rssAfterAllLeft: rss() }));
  process.exit(0);
}
