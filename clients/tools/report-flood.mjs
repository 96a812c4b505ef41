// A flood of `report-user` from one address, for BENCHMARKS.md (issue 30): N official clients
// each report a new user id every `gapMs` for `secs` seconds (500-character reasons); prints the
// reports sent, refused (`rate-limited`) and taken (`/stats` reportsTotal), and the data file's
// size every 5 s when a path is given.
//   node clients/tools/report-flood.mjs http://127.0.0.1:3986 50 25 5 [/tmp/data/moderation.jsonl]
import { io } from 'socket.io-client';
import { statSync } from 'node:fs';

const [url, n = '50', secs = '25', gapMs = '5', file] = process.argv.slice(2);
const reason = 'x'.repeat(500);
let sent = 0;
let refused = 0;
const sockets = [];
for (let i = 0; i < Number(n); i++) {
  const s = io(url, { transports: ['websocket'], forceNew: true });
  s.on('error', (e) => { if (e?.code === 'rate-limited') refused++; });
  await new Promise((ok) => s.once('connect', ok));
  s.emit('authenticate', { userId: `flood${i}` });
  await new Promise((ok) => s.once('authenticated', ok));
  sockets.push(s);
}
const size = () => { try { return statSync(file).size; } catch { return 0; } };
let max = 0;
const start = Date.now();
const ticker = setInterval(() => {
  if (file) {
    max = Math.max(max, size());
    console.log(`t=${((Date.now() - start) / 1000).toFixed(0)}s file=${size()} B`);
  }
}, 5000);
let k = 0;
while (Date.now() - start < Number(secs) * 1000) {
  for (const s of sockets) {
    s.emit('report-user', { userId: `victim${k++}`, reason });
    sent++;
  }
  await new Promise((ok) => setTimeout(ok, Number(gapMs)));
  if (file) max = Math.max(max, size());
}
await new Promise((ok) => setTimeout(ok, 1000));
clearInterval(ticker);
const stats = await (await fetch(`${url}/stats`)).json();
console.log(JSON.stringify({ sent, refused, taken: stats.reportsTotal, maxFileBytes: max, fileBytes: file ? size() : null }));
for (const s of sockets) s.close();
