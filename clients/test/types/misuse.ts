// Mistakes the protocol's types must catch. Each `@ts-expect-error` line below has to be a type
// error: if the types let one through (say a payload became `any`), the directive is unused and
// `tsc --noEmit -p clients/tsconfig.json` fails (TS2578), which the contract test checks.
import type { Socket } from "socket.io-client";
import type { ClientToServerEvents, HttpBodies, ServerToClientEvents } from "@roulette/types";

export function misuse(socket: Socket<ServerToClientEvents, ClientToServerEvents>, stats: HttpBodies["/stats"]): void {
  // @ts-expect-error: not an event of the protocol
  socket.emit("find-partner", {});
  // @ts-expect-error: a misspelt field (`roomID` for `roomId`)
  socket.emit("chat-message", { roomID: "r", message: "hi" });
  // @ts-expect-error: a required field left out (`message`)
  socket.emit("chat-message", { roomId: "r" });
  // @ts-expect-error: not a connection state
  socket.emit("connection-status", { roomId: "r", status: "open" });
  // @ts-expect-error: ageRange is a [min, max] pair
  socket.emit("find-random-partner", { preferences: { ageRange: [18] } });
  // @ts-expect-error: next-partner takes no payload
  socket.emit("next-partner", { roomId: "r" });
  // @ts-expect-error: not an event the server sends
  socket.on("partner-found", () => {});
  socket.on("queue-status", (q) => {
    // @ts-expect-error: estimatedWaitTime is a number (whole seconds)
    q.estimatedWaitTime.toUpperCase();
  });
  socket.on("matched", (m) => {
    // @ts-expect-error: matched has no `room` field (it is `roomId`)
    console.log(m.room);
  });
  socket.on("partner-left", (p) => {
    // @ts-expect-error: not a reason the server gives (it says `next-partner`)
    if (p.reason === "next") console.log("skipped");
  });
  socket.on("error", (e) => {
    // @ts-expect-error: not an error code
    if (e.code === "not-found") console.log(e.message);
  });
  socket.on("partner-quality-report", (r) => {
    // @ts-expect-error: the grade may be null
    r.grade.toUpperCase();
  });
  // @ts-expect-error: /stats has no `users` field (it is `connectedUsers`)
  console.log(stats.users);
}
