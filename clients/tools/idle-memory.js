#!/usr/bin/env node
// Measures the server's resident memory per idle authenticated connection: opens N WebSocket
// connections with the official client, authenticates each, waits, reads the server's RSS from
// /proc (the server must run on this machine), then disconnects everyone and reads it again.
//
//   node tools/idle-memory.js --url http://127.0.0.1:3001 --pid <server pid> --count 2000
//
// Prints one JSON line per phase. Opens every connection from one process: keep --count well
// under the open-file limit (ulimit -n) of both processes.
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { io } from 'socket.io-client';

const { values: o } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:3001' },
    pid: { type: 'string' },
    count: { type: 'string', default: '2000' },
  },
});
if (!o.pid) {
  console.error('usage: node tools/idle-memory.js --url URL --pid PID [--count N]');
  process.exit(2);
}
const n = Number(o.count);
const pageSize = 4096;
const rss = () => Number(readFileSync(`/proc/${o.pid}/statm`, 'utf8').split(' ')[1]) * pageSize;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const before = rss();
const started = Date.now();
const sockets = [];
let authenticated = 0;
let failed = 0;
await new Promise((done) => {
  const settle = () => authenticated + failed === n && done();
  for (let i = 0; i < n; i++) {
    const s = io(o.url, { transports: ['websocket'], forceNew: true, reconnection: false });
    s.on('connect', () => s.emit('authenticate', { userId: `idle-${process.pid}-${i}` }));
    s.on('authenticated', () => { authenticated++; settle(); });
    s.on('connect_error', () => { failed++; settle(); });
    s.on('auth-error', () => { failed++; settle(); });
    sockets.push(s);
  }
});
const tookMs = Date.now() - started;
await sleep(2000);
const held = rss();
console.log(JSON.stringify({
  phase: 'held', count: n, authenticated, failed, tookMs,
  rssBefore: before, rssHeld: held, bytesPerConnection: Math.round((held - before) / n),
}));
for (const s of sockets) s.disconnect();
await sleep(1500);
console.log(JSON.stringify({ phase: 'left', rssAfterAllLeft: rss() }));
process.exit(0);
