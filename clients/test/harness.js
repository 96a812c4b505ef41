// Starts a Roulette server for a test and gives small promise helpers around socket.io-client.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { io } from 'socket.io-client';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');

/** The server binary: $ROULETTE_BIN, else the debug build, else the release build. */
export function serverBinary() {
  if (process.env.ROULETTE_BIN) return process.env.ROULETTE_BIN;
  for (const profile of ['debug', 'release']) {
    const p = path.join(repoRoot, 'target', profile, 'roulette');
    if (existsSync(p)) return p;
  }
  throw new Error('no server binary: run `cargo build` first or set ROULETTE_BIN');
}

/** The environment for a test server: the caller's, minus anything that would change its settings. */
function serverEnv() {
  const env = { ...process.env, LOG_FORMAT: 'text', LOG_LEVEL: 'info', NO_COLOR: '1' };
  delete env.RUST_LOG;
  return env;
}

/**
 * Starts the server on a free loopback port with extra flags; resolves once it listens.
 * Returns { url, proc, stop() }.
 */
export function startServer(flags = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(serverBinary(), ['--host', '127.0.0.1', '--port', '0', ...flags], {
      cwd: repoRoot,
      env: serverEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    let announced = false;
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), 15000);
    const onData = (chunk) => {
      log += chunk.toString();
      const m = log.match(/listening on (http:\/\/[\d.:]+)/);
      if (m && !announced) {
        announced = true;
        clearTimeout(timer);
        // A cluster node takes sessions once it has joined (its /health turns 200).
        ready(m[1]).then(() => resolve({
          url: m[1],
          proc,
          log: () => log,
          stop: () => new Promise((done) => {
            if (proc.exitCode !== null) return done(proc.exitCode);
            proc.once('exit', (code) => done(code));
            proc.kill('SIGTERM');
          }),
        }), reject);
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${log}`));
    });
  });
}

/** Resolves once `url`/health answers 200 (at once on one node; after joining, in a cluster). */
async function ready(url) {
  const end = Date.now() + 15000;
  while (Date.now() < end) {
    try {
      if ((await fetch(`${url}/health`)).ok) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url}/health never answered 200`);
}

/** Connects with the official client; resolves once the namespace is connected. */
export function connect(url, transports) {
  const socket = io(url, {
    forceNew: true,
    reconnection: false,
    ...(transports ? { transports } : {}),
  });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

/** Resolves with the next `event` on `socket` (fails after `ms`). */
export function next(socket, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, on);
      reject(new Error(`no ${event} within ${ms} ms`));
    }, ms);
    const on = (data) => {
      clearTimeout(timer);
      resolve(data);
    };
    socket.once(event, on);
  });
}

/** Resolves with every `event` received during `ms`. */
export function collect(socket, event, ms) {
  const seen = [];
  const on = (data) => seen.push(data);
  socket.on(event, on);
  return new Promise((resolve) => setTimeout(() => {
    socket.off(event, on);
    resolve(seen);
  }, ms));
}

/** Connects and authenticates as `userId`. */
export async function user(url, userId, transports, userInfo) {
  const socket = await connect(url, transports);
  const authed = next(socket, 'authenticated');
  socket.emit('authenticate', { userId, ...(userInfo ? { userInfo } : {}) });
  await authed;
  return socket;
}

/**
 * Two users matched with each other: [a, b, roomId, matchedA, matchedB]. `b` connects to `urlB`
 * (another node of a cluster) when given.
 */
export async function pair(url, a, b, transports, urlB = url) {
  const sa = await user(url, a, transports);
  const sb = await user(urlB, b, transports);
  const [matchedA, matchedB] = await meet(sa, sb);
  return [sa, sb, matchedA.roomId, matchedA, matchedB];
}

/** `sa` searches, then `sb`: resolves with both `matched` payloads. */
export async function meet(sa, sb) {
  const searching = next(sa, 'searching');
  sa.emit('find-random-partner', {});
  await searching;
  const ma = next(sa, 'matched');
  const mb = next(sb, 'matched');
  sb.emit('find-random-partner', {});
  return Promise.all([ma, mb]);
}
