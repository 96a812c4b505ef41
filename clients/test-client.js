#!/usr/bin/env node
// @ts-check
// Roulette's command-line test client: connects with the official socket.io-client, authenticates,
// searches, prints every event it receives, and lets you chat.
//
//   node test-client.js [--url http://localhost:3001] [--user alice] [--token JWT] [--language en]
//                       [--interests music,chess] [--websocket]
//
// Type a line to send it as a chat message. Commands: /next, /end, /find, /stats, /quit. When its
// output is not a terminal (a pipe, a file), it prints plain lines without the prompt.
// Type-checked against the protocol's types (types/, generated from contract/asyncapi.yaml) by
// `tsc -p tsconfig.json`.
import { parseArgs } from 'node:util';
import readline from 'node:readline';
import { io } from 'socket.io-client';

/** @typedef {import('@roulette/types').ServerToClientEvents} ServerToClientEvents */
/** @typedef {import('@roulette/types').ClientToServerEvents} ClientToServerEvents */

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string', default: process.env.ROULETTE_URL ?? 'http://localhost:3001' },
    user: { type: 'string' },
    token: { type: 'string', default: process.env.ROULETTE_TOKEN },
    language: { type: 'string' },
    interests: { type: 'string' },
    websocket: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (opts.help) {
  console.log(`usage: node test-client.js [--url URL] [--user ID] [--token JWT] [--language CODE] [--interests a,b] [--websocket]

Connects to a Roulette server, searches for a partner and prints every event.
--token (or ROULETTE_TOKEN) is a JWT for a server started with JWT_SECRET or JWT_PUBLIC_KEY: it is
sent in the handshake and in authenticate, and the server takes the user id from it.
Type a line to chat; /next skips, /end ends the chat or search, /find searches again,
/stats shows the server's statistics, /quit leaves.`);
  process.exit(0);
}

/** @type {import('@roulette/types').Preferences} */
const preferences = {};
if (opts.language) preferences.language = opts.language;
if (opts.interests) preferences.interests = opts.interests.split(',').map((s) => s.trim()).filter(Boolean);

/** @type {string | null} */
let roomId = null;
/** @type {string | null} */
let partnerId = null;

const time = () => new Date().toISOString().slice(11, 19);
// A terminal gets the prompt kept below the output; a pipe or a file gets plain lines.
const tty = Boolean(process.stdout.isTTY);
/** @param {string} line */
const say = (line) => {
  if (tty) {
    readline.clearLine(process.stdout, 0);
    readline.cursorTo(process.stdout, 0);
  }
  console.log(`[${time()}] ${line}`);
  if (tty) rl.prompt(true);
};

const rl = readline.createInterface({
  input: process.stdin,
  output: tty ? process.stdout : undefined,
  prompt: '> ',
  terminal: tty,
});
/** @type {import('socket.io-client').Socket<ServerToClientEvents, ClientToServerEvents>} */
const socket = io(opts.url, {
  transports: opts.websocket ? ['websocket'] : ['polling', 'websocket'],
  ...(opts.token ? { auth: { token: opts.token } } : {}),
});

/**
 * How an event is printed, by name; the others are printed as JSON.
 * @type {{ [E in keyof ServerToClientEvents]?: (data: Parameters<ServerToClientEvents[E]>[0]) => string }}
 */
const describers = {
  authenticated: (data) => `authenticated as ${data.userId} (${data.serverStats.connectedUsers} online, ${data.serverStats.waitingUsers} waiting, ${data.serverStats.activeRooms} rooms)`,
  searching: (data) => `searching: ${data.message}`,
  'queue-status': (data) => `queue: ${data.message}`,
  matched: (data) => `matched with ${data.partnerId} in room ${data.roomId} after ${data.waitTime} ms${data.isInitiator ? ' (you start the call)' : ''}${data.relaxed ? ' (no shared interest: your search had widened)' : ''}`,
  'chat-message': (data) => (data.fromUserId === partnerId ? `${data.fromUserId}: ${data.message}` : `you: ${data.message} (delivered)`),
  'partner-typing': (data) => (data.isTyping ? `${data.fromUserId} is typing…` : `${data.fromUserId} stopped typing`),
  'partner-left': (data) => `partner left (${data.reason})${data.canReconnect ? ', may come back' : ''}`,
  'chat-ended': (data) => (data.roomId ? 'chat ended' : 'search cancelled'),
  'room-ended': (data) => `room ended (${data.reason}) after ${Math.round(data.duration / 1000)} s`,
  'search-timeout': (data) => `no partner found in ${Math.round(data.waitTime / 1000)} s; /find to try again`,
  error: (data) => `error ${data.code} on ${data.event}: ${data.message}`,
  'auth-error': (data) => `authentication refused: ${data.code}: ${data.message}`,
  'server-shutdown': (data) => `server shutting down: ${data.message}`,
};

/**
 * One line for an event.
 * @param {string} event
 * @param {unknown} data
 */
function describe(event, data) {
  const describer = /** @type {((data: unknown) => string) | undefined} */ (
    Object.hasOwn(describers, event) ? describers[/** @type {keyof ServerToClientEvents} */ (event)] : undefined);
  return describer ? describer(data) : `${event} ${JSON.stringify(data)}`;
}

socket.on('connect', () => {
  say(`connected to ${opts.url} as socket ${socket.id} over ${socket.io.engine.transport.name}`);
  const auth = {};
  if (opts.user) auth.userId = opts.user;
  if (opts.token) auth.token = opts.token;
  socket.emit('authenticate', auth);
});
socket.io.engine?.on('upgrade', (t) => say(`transport upgraded to ${t.name}`));
socket.on('disconnect', (reason) => say(`disconnected: ${reason}`));
socket.on('connect_error', (e) => say(`cannot connect: ${e.message}`));

// Every event is printed (onAny listeners run before the ones of each event below).
socket.onAny((event, data) => say(describe(event, data)));
socket.on('authenticated', () => socket.emit('find-random-partner', { preferences }));
socket.on('matched', (data) => {
  roomId = data.roomId;
  partnerId = data.partnerId;
});
for (const event of /** @type {const} */ (['partner-left', 'chat-ended', 'room-ended'])) {
  socket.on(event, () => {
    roomId = null;
    partnerId = null;
  });
}

rl.on('line', async (line) => {
  const text = line.trim();
  if (!text) return tty && rl.prompt();
  switch (text) {
    case '/next':
      roomId = null;
      socket.emit('next-partner');
      break;
    case '/end':
      socket.emit('end-chat');
      break;
    case '/find':
      socket.emit('find-random-partner', { preferences });
      break;
    case '/stats': {
      const res = await fetch(new URL('/stats', opts.url));
      say(`stats ${JSON.stringify(await res.json())}`);
      break;
    }
    case '/quit':
      socket.disconnect();
      rl.close();
      return;
    default:
      if (!roomId) say('not in a chat yet');
      else socket.emit('chat-message', { roomId, message: text });
  }
  if (tty) rl.prompt();
});
rl.on('close', () => {
  socket.disconnect();
  process.exit(0);
});
if (tty) rl.prompt();
