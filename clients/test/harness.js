// Starts a Roulette server for a test and gives small promise helpers around socket.io-client.
// Every socket made here (and every demo page given to watchPage) is held to the protocol's
// contract, clients/contract/asyncapi.yaml: each event sent and received, each acknowledgement
// and each HTTP body is validated against its schema, and a test during which one did not fit
// fails (in the hooks below) with the event, the payload and what is wrong with it.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { after, afterEach } from 'node:test';
import { io as connectIo } from 'socket.io-client';
import { contract } from '../contract/contract.js';

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
  // DATA_DIR empty: bans and reports stay in memory, so no run sees another's.
  const env = { DATA_DIR: '', ...process.env, LOG_FORMAT: 'text', LOG_LEVEL: 'info', NO_COLOR: '1' };
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
    let res;
    try {
      res = await fetch(`${url}/health`);
    } catch { /* not yet */ }
    if (res?.ok) {
      checkHttp('/health', await res.text(), `${url}/health`);
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url}/health never answered 200`);
}

// ---- the contract ----------------------------------------------------------------------------

const violations = [];
const OFF_CONTRACT = Symbol('off contract');
let sockets = 0;

/**
 * Checks one message against the contract and records it when it does not fit. `direction` is
 * `out` (client → server event), `in` (server → client event) or `ack` (an acknowledgement).
 * Returns the violation, or null.
 */
export function inspect(direction, label, event, args) {
  const c = contract();
  const problem = direction === 'out' ? c.checkClientEvent(event, args)
    : direction === 'in' ? c.checkServerEvent(event, args)
      : c.checkAck(args);
  if (problem) violations.push(`${label}: ${problem}`);
  return problem;
}

/** Checks the text of an HTTP body of GET `pathname` and records it when it does not fit. */
export function checkHttp(pathname, text, label = pathname) {
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    violations.push(`${label}: GET ${pathname} answered ${JSON.stringify(text.slice(0, 200))}, not JSON`);
    return;
  }
  const problem = contract().checkHttp(pathname, body);
  if (problem) violations.push(`${label}: ${problem}`);
}

/** Hands back (and forgets) the violations recorded so far. */
export function takeViolations() {
  return violations.splice(0);
}

/** Throws when any payload did not fit the contract since the last check. */
export function assertContract() {
  const found = takeViolations();
  if (found.length) {
    throw new Error(`${found.length} payload(s) do not fit the protocol's contract (clients/contract/asyncapi.yaml):\n- ${found.join('\n- ')}`);
  }
}

// Every test of a file that imports the harness fails when a payload during it did not fit;
// whatever arrives after its last test (in after hooks) fails the file. (Not for a tool that
// borrows startServer, such as tools/turn-ttl.js: it is no test.)
if (process.env.NODE_TEST_CONTEXT !== undefined || /\.test\.[cm]?js$/.test(process.argv[1] ?? '')) {
  afterEach(assertContract);
  after(assertContract);
}

/** Holds `socket` to the contract: every event both ways and every acknowledgement it gets. */
export function watch(socket, label = `socket ${++sockets}`) {
  const name = () => `${label}${socket.id ? ` (${socket.id})` : ''}`;
  socket.onAnyOutgoing((event, ...args) => {
    if (!socket[OFF_CONTRACT]) inspect('out', name(), event, args);
  });
  socket.onAny((event, ...args) => inspect('in', name(), event, args));
  // Acknowledgements do not pass through onAny: read them off the manager's decoder as they are
  // decoded (3: ACK, 6: BINARY_ACK), before the socket puts a null in front of them for a
  // callback with a timeout. The tests' sockets have a manager each.
  socket.io.decoder.on('decoded', (packet) => {
    if ((packet.type === 3 || packet.type === 6) && packet.nsp === socket.nsp) inspect('ack', name(), '', packet.data);
  });
  return socket;
}

/**
 * Runs `send`, which emits on `socket` a payload that is off the contract on purpose (to check
 * that the server refuses it): what it emits at once is not validated. Returns what `send`
 * returns (the promise of an `emitWithAck`, say). `socket` must be connected, or the packet
 * would be buffered and checked when it goes out.
 */
export function offContract(socket, send) {
  if (!socket.connected) throw new Error('offContract needs a connected socket');
  socket[OFF_CONTRACT] = true;
  try {
    return send();
  } finally {
    socket[OFF_CONTRACT] = false;
  }
}

/** `socket.emit(event, ...args)` with a payload that is off the contract on purpose. */
export function emitOffContract(socket, event, ...args) {
  offContract(socket, () => socket.emit(event, ...args));
}

/** socket.io-client's `io`, with the socket held to the contract. */
export function io(...args) {
  return watch(connectIo(...args));
}

/**
 * Holds a demo or dashboard page to the contract: the socket it makes with the `io` of the
 * bundle (wrapped before the page's scripts run; the page itself is untouched) reports every
 * event and acknowledgement here, and every JSON body of an HTTP endpoint of the contract it
 * fetches is checked. Call before `page.goto`.
 */
export async function watchPage(page, label) {
  await page.exposeFunction('__rouletteContract', (direction, event, args) => {
    inspect(direction, `page ${label}`, event, args);
  });
  await page.addInitScript(() => {
    let real;
    const report = (direction, event, args) => window.__rouletteContract(direction, event, args);
    const watchSocket = (socket) => {
      socket.onAnyOutgoing((event, ...args) => report('out', event, args));
      socket.onAny((event, ...args) => report('in', event, args));
      socket.io.decoder.on('decoded', (p) => {
        if ((p.type === 3 || p.type === 6) && p.nsp === socket.nsp) report('ack', '', p.data);
      });
      return socket;
    };
    // The bundle sets `globalThis.io`: hand the page a function that makes the same sockets.
    Object.defineProperty(window, 'io', {
      configurable: true,
      get: () => real,
      set: (lookup) => {
        real = typeof lookup !== 'function' ? lookup
          : Object.assign(function io(...a) { return watchSocket(lookup.apply(this, a)); }, lookup);
      },
    });
  });
  page.on('response', async (res) => {
    const { pathname } = new URL(res.url());
    if (res.request().method() !== 'GET' || !contract().http.has(pathname)) return;
    let text;
    try {
      text = await res.text();
    } catch {
      return; // the page went away before the body could be read
    }
    checkHttp(pathname, text, `page ${label}`);
  });
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

/** A free loopback port. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Starts redis-server on `port`; resolves once it accepts connections. */
export async function startRedis(port) {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    const up = await new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => { c.end(); resolve(true); });
      c.once('error', () => resolve(false));
    });
    if (up) return proc;
    await new Promise((r) => setTimeout(r, 25));
  }
  proc.kill('SIGKILL');
  throw new Error('redis-server did not start');
}

export const haveRedis = spawnSync('redis-server', ['--version']).status === 0;

/**
 * Resolves once a client that may upgrade is on its WebSocket (at most 3 s). A cut lands on the
 * transport the session ends on: cutting long-polling closes the client's engine, which says
 * goodbye to the server (a close packet), and a session closed so is rightly not held. A cut
 * right after a reconnect could land before the upgrade and fail a test by its timing alone.
 */
export function upgraded(socket) {
  const engine = socket.io.engine;
  if (socket.io.opts.transports?.length === 1 || engine.transport?.name === 'websocket') {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const timer = setTimeout(done, 3000);
    function done() {
      clearTimeout(timer);
      engine.off('upgrade', done);
      resolve();
    }
    engine.once('upgrade', done);
  });
}

/**
 * Cuts the client's transport under it: a WebSocket's socket is destroyed, with no goodbye; on
 * long-polling the client's engine closes, which sends a close packet (see [`upgraded`]).
 */
export function cut(socket) {
  const t = socket.io.engine.transport;
  if (t.ws) {
    t.ws._socket?.destroy();
  } else {
    socket.io.engine._onError(new Error('cut'));
  }
}

/** A client as the Node server's app makes it: reconnection on, `authenticate` on every connect. */
export function app(url, userId, transports) {
  const s = io(url, {
    forceNew: true,
    reconnection: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 200,
    ...(transports ? { transports } : {}),
  });
  s.on('connect', () => s.emit('authenticate', { userId }));
  return s;
}

