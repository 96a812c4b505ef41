// The Node.js server Roulette replaces, as far as the load generator drives it: socket.io 4 in one
// file, FIFO matching, relays to the room, the events and payloads of the seed README and
// PROTOCOL-NOTES. It exists to be measured against (BENCHMARKS.md, "Against the Node.js server"),
// with the same `roulette-loadgen` scenarios: `idle`, `sessions` (both transports) and `relay`.
// It does less than the original did (no validation, no statistics, no per-address limits, no
// waiting timers), so what it costs is a floor for that server, never more than it cost.
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { Server } from 'socket.io';

const port = Number(process.env.PORT || 3972);
const http = createServer((req, res) => {
  if (req.url === '/health') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ status: 'ok' }));
  } else {
    res.statusCode = 404;
    res.end();
  }
});
const io = new Server(http, { cors: { origin: '*' }, pingInterval: 25000, pingTimeout: 20000 });

/** socket id -> { userId, roomId } */
const users = new Map();
/** sockets waiting, oldest first */
const waiting = [];

function leave(socket, reason) {
  const u = users.get(socket.id);
  const i = waiting.indexOf(socket);
  if (i >= 0) waiting.splice(i, 1);
  if (!u || !u.roomId) return;
  const roomId = u.roomId;
  socket.to(roomId).emit('partner-left', { reason, roomId, canReconnect: false });
  for (const s of io.sockets.adapter.rooms.get(roomId) ?? []) {
    const other = io.sockets.sockets.get(s);
    if (other) {
      other.leave(roomId);
      const o = users.get(s);
      if (o) o.roomId = null;
    }
  }
  u.roomId = null;
}

io.on('connection', (socket) => {
  socket.on('authenticate', (data) => {
    const userId = data?.userId ?? randomUUID();
    users.set(socket.id, { userId, roomId: null, since: 0 });
    socket.emit('authenticated', {
      userId,
      socketId: socket.id,
      serverStats: { activeUsers: users.size, waitingUsers: waiting.length },
    });
  });

  socket.on('find-random-partner', () => {
    const u = users.get(socket.id);
    if (!u) return socket.emit('error', { message: 'Not authenticated' });
    leave(socket, 'user-skipped');
    let other;
    while ((other = waiting.shift()) && !other.connected);
    if (!other) {
      waiting.push(socket);
      u.since = Date.now();
      socket.emit('searching', { message: 'Looking for a partner...', status: 'searching', timestamp: Date.now() });
      socket.emit('queue-status', {
        position: waiting.length,
        estimatedWaitTime: waiting.length * 2,
        totalWaiting: waiting.length,
      });
      return;
    }
    const o = users.get(other.id);
    const roomId = randomUUID();
    socket.join(roomId);
    other.join(roomId);
    u.roomId = roomId;
    o.roomId = roomId;
    const waitTime = Date.now() - o.since;
    other.emit('matched', { roomId, partnerId: u.userId, isInitiator: true, waitTime });
    socket.emit('matched', { roomId, partnerId: o.userId, isInitiator: false, waitTime: 0 });
  });

  for (const [event, field] of [
    ['webrtc-offer', 'offer'],
    ['webrtc-answer', 'answer'],
    ['webrtc-ice-candidate', 'candidate'],
  ]) {
    socket.on(event, (data) => {
      const u = users.get(socket.id);
      if (!u || !data?.roomId) return;
      socket.to(data.roomId).emit(event, { [field]: data[field], fromUserId: u.userId, roomId: data.roomId });
    });
  }

  socket.on('chat-message', (data) => {
    const u = users.get(socket.id);
    if (!u || !data?.roomId) return;
    io.to(data.roomId).emit('chat-message', {
      id: randomUUID(),
      fromUserId: u.userId,
      message: data.message,
      type: data.type ?? 'text',
      timestamp: Date.now(),
    });
  });

  socket.on('end-chat', () => {
    const u = users.get(socket.id);
    const roomId = u?.roomId;
    leave(socket, 'user-ended');
    socket.emit('chat-ended', { roomId });
  });

  socket.on('disconnect', () => {
    leave(socket, 'disconnected');
    users.delete(socket.id);
  });
});

http.listen(port, '127.0.0.1', () => console.log(`node reference listening on ${port}`));
