// A small Roulette client in TypeScript, typed by @roulette/types: every event name, payload
// field and error code below is checked by `tsc --noEmit -p clients/tsconfig.json` against the
// protocol (clients/contract/asyncapi.yaml). It signs in, searches, answers the WebRTC
// signaling with stand-ins (a real app hands them to an RTCPeerConnection), chats and skips.
import { io, type Socket } from "socket.io-client";
import type {
  Ack,
  ClientToServerEvents,
  ClientToServerEventsWithAck,
  ErrorCode,
  HttpBodies,
  Matched,
  Preferences,
  ServerToClientEvents,
} from "@roulette/types";

const url = process.env.ROULETTE_URL ?? "http://localhost:3001";
const userId = process.argv[2] ?? "typed-alice";
const preferences: Preferences = { language: "en", interests: ["music", "chess"] };

const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url, {
  transports: ["websocket"],
});

let room: Matched | null = null;

socket.on("connect", () => {
  socket.emit("authenticate", { userId, userInfo: { languages: ["en"], gender: "other" } });
});

socket.on("authenticated", async ({ userId, serverStats, resumeToken }) => {
  console.log(`signed in as ${userId}; ${serverStats.connectedUsers} online (resume token ${resumeToken.length} chars)`);
  // Acknowledgements: the same socket, seen with the events that carry a reply.
  const acked = socket as Socket<ServerToClientEvents, ClientToServerEventsWithAck>;
  const reply: Ack = await acked.emitWithAck("find-random-partner", { preferences });
  if (!reply.ok) console.warn(`search refused: ${reply.code} (${reply.message})`);
});

socket.on("queue-status", ({ position, totalWaiting, estimatedWaitTime, relaxed }) => {
  console.log(`position ${position} of ${totalWaiting}, about ${estimatedWaitTime} s${relaxed ? " (any partner now)" : ""}`);
});

socket.on("matched", (m) => {
  room = m;
  console.log(`matched with ${m.partnerId} in ${m.roomId}; shared interests: ${m.commonInterests.join(", ") || "none"}`);
  if (m.isInitiator) {
    socket.emit("webrtc-offer", {
      roomId: m.roomId,
      targetUserId: m.partnerId,
      offer: { type: "offer", sdp: "v=0\r\n" },
    });
  }
  socket.emit("chat-message", { roomId: m.roomId, message: "Hello from a typed client" });
});

socket.on("webrtc-offer", ({ roomId, fromUserId }) => {
  socket.emit("webrtc-answer", { roomId, targetUserId: fromUserId, answer: { type: "answer", sdp: "v=0\r\n" } });
});

socket.on("webrtc-ice-candidate", ({ candidate }) => {
  if (candidate === null) console.log("the partner has sent all its candidates");
});

socket.on("chat-message", ({ fromUserId, message, timestamp }) => {
  console.log(`[${new Date(timestamp).toISOString()}] ${fromUserId}: ${message}`);
  if (room && fromUserId === room.partnerId) socket.emit("next-partner");
});

socket.on("partner-left", ({ reason, canReconnect }) => {
  if (canReconnect) return console.log("the partner's connection dropped; it may come back");
  room = null;
  console.log(reason === "next-partner" ? "the partner skipped" : `the partner left (${reason})`);
});

socket.on("chat-ended", (e) => {
  // A discriminated union: roomId is a string exactly when the reason is "ended".
  if (e.reason === "ended") console.log(`left room ${e.roomId}`);
  else console.log("search cancelled");
});

const retryable: ErrorCode[] = ["rate-limited", "delivery-failed", "partner-away"];
socket.on("error", ({ code, message, event, retryAfterMs }) => {
  console.warn(`${event} refused: ${code}: ${message}${retryAfterMs ? `; retry in ${retryAfterMs} ms` : ""}${retryable.includes(code) ? " (retryable)" : ""}`);
});

socket.on("auth-error", ({ code }) => {
  console.error(`cannot sign in: ${code}`);
  socket.disconnect();
});

socket.on("server-shutdown", ({ reconnectInMs }) => {
  console.log(`the server restarts; back in ${reconnectInMs} ms`);
});

// The HTTP bodies are typed too.
async function stats(): Promise<HttpBodies["/stats"]> {
  const res = await fetch(new URL("/stats", url));
  return (await res.json()) as HttpBodies["/stats"];
}

stats().then((s) => console.log(`${s.waitingUsers} waiting, success rate ${s.quality.connectionSuccessRate ?? "n/a"}`),
  (e: unknown) => console.warn(`no /stats: ${String(e)}`));
