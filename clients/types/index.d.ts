// Generated from clients/contract/asyncapi.yaml by clients/contract/generate-types.js: do not
// edit by hand. Regenerate with `npm run generate:types --prefix clients`.
// Roulette protocol 0.1.0.

/** A user id, 1-64 characters of letters, digits and `_-.:@`. */
export type UserId = string;

/** A room id, as `matched` gave it (opaque; at most 64 characters). */
export type RoomId = string;

/** Server time, ms since the Unix epoch. */
export type Timestamp = number;

/** The user's own gender. */
export type Gender = "male" | "female" | "other";

/** The gender wanted of a partner (`any` by default). */
export type GenderWish = "male" | "female" | "any";

/** A call-quality grade. */
export type Quality = "excellent" | "good" | "fair" | "poor";

/** An `RTCPeerConnection.connectionState` worth reporting. */
export type ConnectionState = "connecting" | "connected" | "disconnected" | "failed";

/**
 * A machine-readable reason, in `error`, `auth-error` and `Ack`. The words are part of the
 * protocol and never renamed.
 * - `not-authenticated`: send `authenticate` first.
 * - `invalid-payload`: wrong type, missing field, value out of range, unreadable frame.
 * - `payload-too-large`: a field is over its limit (message 2000 characters, SDP/candidate
 *   32 KiB, ids 64 bytes).
 * - `unknown-event`: not an event of this protocol.
 * - `binary-not-supported`: binary attachments are refused.
 * - `not-in-room`: not in that room, or the target is not your partner, or (for `end-chat`)
 *   nothing to end.
 * - `already-in-room`: `find-random-partner` while in a room: send `next-partner` or
 *   `end-chat`.
 * - `user-id-taken`: the id is connected elsewhere (as `auth-error`; as `error` for a search
 *   when a user of the same id searches on another node of a cluster).
 * - `already-authenticated`: this connection is another user.
 * - `delivery-failed`: the partner's connection is not reading: this message was not
 *   delivered.
 * - `shutting-down`: the server is stopping and accepts no new search.
 * - `partner-away`: a relay to a partner whose connection dropped (the room is held for it).
 * - `session-replaced`: another connection took this session with its `resumeToken`; this
 *   one is closed.
 * - `rate-limited`: over a rate limit; the `error` (or the acknowledgement) carries `retryAfterMs`.
 * - `token-required`, `token-expired`, `token-invalid` (bad signature, algorithm or shape),
 *   `token-wrong-audience` (audience or issuer): see `auth-error`.
 * - `banned`: the user or its address is banned until `until` (see `auth-error`).
 */
export type ErrorCode =
  | "not-authenticated"
  | "invalid-payload"
  | "payload-too-large"
  | "unknown-event"
  | "binary-not-supported"
  | "not-in-room"
  | "already-in-room"
  | "user-id-taken"
  | "already-authenticated"
  | "delivery-failed"
  | "shutting-down"
  | "partner-away"
  | "session-replaced"
  | "rate-limited"
  | "token-required"
  | "token-expired"
  | "token-invalid"
  | "token-wrong-audience"
  | "banned";

/**
 * Why `authenticate` was refused:
 * - `user-id-taken`: the id is connected elsewhere, or held for a dropped connection, and
 *   no valid `resumeToken` was given;
 * - `already-authenticated`: this connection is another user;
 * - `token-required`, `token-invalid`, `token-expired`, `token-wrong-audience`;
 * - `banned`: the user (or the connection's address) is banned until `until`.
 */
export type AuthErrorCode =
  | "user-id-taken"
  | "already-authenticated"
  | "token-required"
  | "token-expired"
  | "token-invalid"
  | "token-wrong-audience"
  | "banned";

/** An `RTCIceServer`, ready for `new RTCPeerConnection({iceServers})`. */
export interface IceServer {
  /** `stun:`, `turn:` or `turns:` URLs. */
  urls: string[];
  /** TURN username (`<expiry>:<userId>` for time-limited credentials). */
  username?: string;
  /** TURN credential. */
  credential?: string;
}

/** Live counts. */
export interface ServerStats {
  /** Authenticated users connected now. */
  connectedUsers: number;
  /** Users waiting for a partner now. */
  waitingUsers: number;
  /** Rooms (pairs) open now. */
  activeRooms: number;
}

/**
 * An `RTCSessionDescriptionInit` (`pc.localDescription.toJSON()`). The server only checks
 * that it is an object of at most 32 KiB of JSON and relays it byte for byte.
 */
export interface SessionDescription {
  type: "offer" | "answer" | "pranswer" | "rollback";
  sdp?: string;
  // Other fields are allowed, and relayed as they are.
}

/**
 * An `RTCIceCandidateInit` (`event.candidate.toJSON()`), or `null` for the end of the
 * candidates. At most 32 KiB of JSON, relayed byte for byte.
 */
export type IceCandidate = {
  candidate?: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
  usernameFragment?: string | null;
  // Other fields are allowed, and relayed as they are.
} | null;

/** A call's numbers as a member measured them; each is optional, non-negative and finite. */
export interface QualityStats {
  /** Round-trip time, ms. */
  latency?: number;
  /** Packet loss, %. */
  packetLoss?: number;
  /** Available bandwidth, kbit/s. */
  bandwidth?: number;
  /** Jitter, ms. */
  jitter?: number;
  /** When the member measured, ms since the Unix epoch. */
  timestamp?: number;
}

/** The Socket.IO handshake's `auth` object (`io(url, {auth})`). */
export interface HandshakeAuth {
  /** A JWT, for a server that requires one. */
  token?: string;
}

/** The user's profile; every field optional. */
export interface UserInfo {
  gender?: Gender;
  /** Age in years. */
  age?: number;
  /** ISO 639-1 codes (`DE` is read as `de`), up to 10. */
  languages?: string[];
  /** ISO 3166-1 alpha-2 code (`de` is read as `DE`). */
  country?: string;
}

/** `authenticate` payload. */
export interface Authenticate {
  userId?: UserId;
  userInfo?: UserInfo;
  /** A JWT, when the server requires one (or give it in the handshake `auth`). */
  token?: string;
  /** The `resumeToken` of an earlier `authenticated`, to take that session back. */
  resumeToken?: string;
}

/**
 * What a user asks of a partner. Hard filters (`language`, `gender`, `ageRange`, `country`)
 * hold both ways; `interests` are soft and relax after `PREFERENCE_RELAX_MS`.
 */
export interface Preferences {
  /** An ISO 639-1 code the partner must list. */
  language?: string;
  gender?: GenderWish;
  /** `[min, max]`, inclusive, of the partner's age (min <= max). */
  ageRange?: [number, number];
  /** The partner's ISO 3166-1 alpha-2 country code. */
  country?: string;
  /** Up to 10 tags of up to 32 characters; trimmed, lower-cased and deduplicated. */
  interests?: string[];
}

/** `find-random-partner` payload (may be left out). */
export interface FindRandomPartner {
  preferences?: Preferences;
}

/** `webrtc-offer` payload. `targetUserId`, when given, must be the partner. */
export interface WebrtcOffer {
  roomId: RoomId;
  offer: SessionDescription;
  targetUserId?: UserId;
}

/** `webrtc-answer` payload. */
export interface WebrtcAnswer {
  roomId: RoomId;
  answer: SessionDescription;
  targetUserId?: UserId;
}

/** `webrtc-ice-candidate` payload. */
export interface WebrtcIceCandidate {
  roomId: RoomId;
  candidate: IceCandidate;
  targetUserId?: UserId;
}

/** `chat-message` payload. */
export interface ChatMessage {
  roomId: RoomId;
  /** The text, up to 2000 characters, not only white space. */
  message: string;
  /** What kind of message (`text` when absent). */
  type?: string;
  targetUserId?: UserId;
}

/** `typing` payload. */
export interface Typing {
  roomId: RoomId;
  isTyping: boolean;
  targetUserId?: UserId;
}

/** `quality-report` payload. */
export interface QualityReport {
  roomId: RoomId;
  quality?: Quality;
  stats?: QualityStatsReport;
  targetUserId?: UserId;
}

/**
 * The numbers of a `quality-report`; each is optional, non-negative and finite. `rtt` is
 * read as `latency`.
 */
export interface QualityStatsReport {
  /** Round-trip time, ms. */
  latency?: number;
  /** The same as `latency` (the server echoes it as `latency`). */
  rtt?: number;
  /** Packet loss, %. */
  packetLoss?: number;
  /** Available bandwidth, kbit/s. */
  bandwidth?: number;
  /** Jitter, ms. */
  jitter?: number;
  /** When it was measured, ms since the Unix epoch. */
  timestamp?: number;
}

/** `connection-status` payload. */
export interface ConnectionStatus {
  roomId: RoomId;
  status: ConnectionState;
  quality?: Quality;
  targetUserId?: UserId;
}

/** `block-user` payload. */
export interface BlockUser {
  userId: UserId;
}

/** `report-user` payload. */
export interface ReportUser {
  userId: UserId;
  /** Why, up to 500 characters (logged). */
  reason?: string;
}

/** The acknowledgement of a client event emitted with a callback. */
export type Ack = AckOk | AckRefused;

/** The event was handled. */
export interface AckOk {
  ok: true;
}

/** The event was refused (told here only, with no `error` or `auth-error` event). */
export interface AckRefused {
  ok: false;
  code: ErrorCode;
  message: string;
  /** With `rate-limited`, when to try again, in ms. */
  retryAfterMs?: number;
  /** With `banned`, until when, ms since the Unix epoch. */
  until?: number;
}

/** `authenticated` payload. */
export interface Authenticated {
  userId: UserId;
  /** The Socket.IO socket id. */
  socketId: string;
  serverStats: ServerStats;
  /**
   * Keep it: with the same `userId` in a later `authenticate` it takes this session back
   * (it changes after each use).
   */
  resumeToken: string;
  /** True when this `authenticate` took back an earlier session. */
  resumed: boolean;
  /** STUN and TURN servers (use the fresher ones of `matched` for a call). */
  iceServers: IceServer[];
}

/** `rejoined` payload. */
export interface Rejoined {
  roomId: RoomId;
  partnerId: UserId;
  /** Whether this user sends the new offer. */
  isInitiator: boolean;
}

/** `partner-reconnected` payload. */
export interface PartnerReconnected {
  roomId: RoomId;
  partnerId: UserId;
  /** The partner recovered its session (connection state recovery): its peer connection never stopped and no new offer comes. False: it took the session back with its resume token and sets up a new peer connection (the initiator sends a new offer). */
  recovered: boolean;
}

/** `partner-reconnecting` payload. */
export interface PartnerReconnecting {
  roomId: RoomId;
  partnerId: UserId;
}

/** `searching` payload. */
export interface Searching {
  /** Human-readable status. */
  message: string;
  status: "searching";
  timestamp: Timestamp;
  /** True once the user's interests no longer restrict its partners. */
  relaxed: boolean;
}

/** `queue-status` payload. */
export interface QueueStatus {
  /** 1 for the longest-waiting user. */
  position: number;
  /** Expected remaining wait in whole **seconds** (as the Node server sent it), from the recent match rate, never more than the time the search has left before `search-timeout`. With nobody matched in the last minute there is no estimate: the number is then a placeholder (a minute per user ahead and this one, at most the time left) and `message` says so. */
  estimatedWaitTime: number;
  /** The same in ms. */
  estimatedWaitMs: number;
  /** The same for a person (`"Position 2 of 3, about 15 s"`), or what stands instead of an estimate: `"Position 150 of 200: at the recent rate, no partner is likely before this search ends, in about 4 min"`, `"Position 3 of 8: no estimate, nobody was matched in the last minute"`, or, to a user waiting alone, `"Nobody else is waiting right now: you will meet the next person who arrives"`. */
  message: string;
  /** Users waiting now. */
  totalWaiting: number;
  /** True once the user's interests no longer restrict its partners. */
  relaxed: boolean;
}

/** `matched` payload. */
export interface Matched {
  roomId: RoomId;
  partnerId: UserId;
  /** True for exactly one of the two (the one who waited): it sends the offer. */
  isInitiator: boolean;
  /** This user's own search time, ms. */
  waitTime: number;
  /** Interests both users listed. */
  commonInterests: string[];
  /** True when this user listed interests and was matched without a shared one. */
  relaxed: boolean;
  /** Fresh ICE servers for this call. */
  iceServers: IceServer[];
}

/** `webrtc-offer` from the partner. */
export interface WebrtcOfferRelay {
  offer: SessionDescription;
  fromUserId: UserId;
  roomId: RoomId;
}

/** `webrtc-answer` from the partner. */
export interface WebrtcAnswerRelay {
  answer: SessionDescription;
  fromUserId: UserId;
  roomId: RoomId;
}

/** `webrtc-ice-candidate` from the partner. */
export interface WebrtcIceCandidateRelay {
  candidate: IceCandidate;
  fromUserId: UserId;
  roomId: RoomId;
}

/** `chat-message` to both members of the room. */
export interface ChatMessageDelivered {
  /** A server-assigned id (the same in both copies). */
  id: string;
  fromUserId: UserId;
  roomId: RoomId;
  message: string;
  /** `text` unless the sender said otherwise. */
  type: string;
  timestamp: Timestamp;
}

/** `partner-typing` payload. */
export interface PartnerTyping {
  fromUserId: UserId;
  roomId: RoomId;
  isTyping: boolean;
  timestamp: Timestamp;
}

/** `partner-quality-report` payload. */
export interface PartnerQualityReport {
  fromUserId: UserId;
  roomId: RoomId;
  /** The partner's own grade (`null` when it gave none). */
  quality: Quality | null;
  /** The server's grade of the numbers (`null` without numbers). */
  grade: Quality | null;
  stats: QualityStats;
  timestamp: Timestamp;
}

/** `partner-connection-status` payload. */
export interface PartnerConnectionStatus {
  fromUserId: UserId;
  roomId: RoomId;
  status: ConnectionState;
  /** The partner's grade (`null` when it gave none). */
  quality: Quality | null;
  timestamp: Timestamp;
}

/** `partner-left` payload. */
export interface PartnerLeft {
  /**
   * `next-partner` (the partner skipped), `user-ended` (it ended the chat or searched
   * again), `disconnect` (its connection ended for good): the room is gone. With
   * `connection-lost` the partner's connection dropped and the room is held for it
   * (`canReconnect: true`).
   */
  reason: "next-partner" | "user-ended" | "disconnect" | "connection-lost";
  roomId: RoomId;
  /** Whether the partner may come back into this room. */
  canReconnect: boolean;
}

/** `chat-ended` payload, to the sender of `end-chat`. */
export type ChatEnded = ChatEndedRoom | ChatEndedSearch;

/** The user's room ended. */
export interface ChatEndedRoom {
  roomId: RoomId;
  reason: "ended";
}

/** The user's search was cancelled. */
export interface ChatEndedSearch {
  roomId: null;
  reason: "search-cancelled";
}

/** `room-ended` payload. */
export interface RoomEnded {
  /**
   * `max-duration`: the server ended the room after `MAX_ROOM_DURATION_MS` (to both);
   * `partner-left`: to a user who comes back after its partner left the room held for it.
   */
  reason: "max-duration" | "partner-left";
  roomId: RoomId;
  /** How long the room lasted, ms. */
  duration: number;
}

/** `search-timeout` payload. */
export interface SearchTimeout {
  message: string;
  /** How long the user waited, ms. */
  waitTime: number;
}

/** `server-shutdown` payload. */
export interface ServerShutdown {
  message: string;
  timestamp: Timestamp;
  /** Reconnect after this long (spread per client). */
  reconnectInMs: number;
}

/** `auth-error` payload; `until` comes with `banned` only. */
export interface AuthError {
  code: AuthErrorCode;
  message: string;
  until?: Timestamp;
}

/** `kicked` and `banned` payload; `until` comes with `banned` only. */
export interface Removed {
  /** The operator's reason (or the auto-ban's). */
  reason: string;
  /** For a person. */
  message: string;
  until?: Timestamp;
}

/**
 * `error` payload. `event` names the client event that was refused (the client's own text,
 * clipped; empty for a frame whose name was not a string); `retryAfterMs` comes with
 * `rate-limited` only, and always with it.
 */
export interface ServerError {
  code: ErrorCode;
  message: string;
  event: string;
  /** For `rate-limited`: when to try again, ms. */
  retryAfterMs?: number;
}

/** `GET /health` body (200 with `ok`, else 503). */
export interface Health {
  status: "ok" | "shutting-down" | "redis-down";
  /**
   * Where bans and reports are kept: `file` (`DATA_DIR`), `memory` (`DATA_DIR` empty),
   * `redis` (a cluster), or `failing`: `DATA_DIR` cannot be written, so they are kept in
   * memory and operators' bans are refused with 503 until a write succeeds.
   */
  moderationStore: "file" | "memory" | "redis" | "failing";
  cluster?: ClusterHealth;
  /** Seconds since start. */
  uptime: number;
  version: string;
  timestamp: Timestamp;
  stats: ServerStats;
}

/** In a cluster only. */
export interface ClusterHealth {
  /** This node's name. */
  node: string;
  redis: "up" | "down";
  /** Live nodes seen at the last heartbeat. */
  nodes: number;
}

/** `GET /health/live` body. */
export interface HealthLive {
  status: "alive";
}

/**
 * `GET /stats` body: the node's own figures, read from the live state; wait figures over
 * the users matched in the last 5 minutes.
 */
export interface Stats {
  connectedUsers: number;
  waitingUsers: number;
  /** Users whose connection dropped and whose room is held for them. */
  reconnectingUsers: number;
  activeRooms: number;
  usersInRooms: number;
  totalMatches: number;
  matchesLastMinute: number;
  /** ms. */
  averageWaitTime: number;
  /** ms. */
  p95WaitTime: number;
  reportsTotal: number;
  /** Blocks this node keeps (0 in a cluster, which keeps them in Redis). */
  blocks: number;
  quality: QualitySummary;
  /** Seconds since start. */
  uptime: number;
  memory: {
    rssBytes: number;
  };
  timestamp: Timestamp;
  cluster?: ClusterStats;
}

/** Call outcomes since start. */
export interface QualitySummary {
  callsMatched: number;
  callsConnected: number;
  callsFailed: number;
  callsUnreported: number;
  /** connected / (connected + failed), `null` before any outcome. */
  connectionSuccessRate: number | null;
  /** Time from `matched` to the first `connected`, over the last 2,000 calls (`null` without samples). */
  timeToConnectMs: {
    p50: number | null;
    p95: number | null;
  };
  failuresByReason: {
    "ice-failed"?: number;
    "ended-while-connecting"?: number;
    "ended-after-disconnect"?: number;
  };
  /** `quality-report`s by the grade the server computed. */
  grades: {
    excellent: number;
    good: number;
    fair: number;
    poor: number;
  };
}

/** In a cluster only; summed over the live nodes' heartbeats. */
export interface ClusterStats {
  node: string;
  redisUp: boolean;
  messagesLost: number;
  /** The node that matches for the cluster (holds the matching lease), as this node last saw it. */
  matcher: string | null;
  /** On the node that matches for the cluster only, the searches in the cluster's queue. */
  queued?: number;
  nodes: number;
  nodeIds: string[];
  connections: number;
  users: number;
  waiting: number;
  rooms: number;
  totalMatches: number;
}

/** `GET /ice-servers` body. */
export interface IceServersResponse {
  iceServers: IceServer[];
  /** Seconds the TURN credentials stay valid. */
  ttl: number;
}

/** The body of a refused HTTP request. */
export interface HttpError {
  code: ErrorCode;
  message: string;
}

/**
 * The body of the HTTP 503 (with `Retry-After: 2`) that answers a new Socket.IO handshake
 * while a cluster node has not reached Redis yet.
 */
export interface Unavailable {
  code: "unavailable";
  message: string;
}

/**
 * Events the server emits: `socket.on(name, (payload) => …)` on a
 * `Socket<ServerToClientEvents, ClientToServerEvents>` from socket.io-client 4.
 */
export interface ServerToClientEvents {
  /** `authenticate` succeeded. */
  authenticated: (payload: Authenticated) => void;
  /** After a resumed `authenticate` whose room is still open; set up a new peer connection. */
  rejoined: (payload: Rejoined) => void;
  /** The partner came back within the grace; expect a new offer (or send one as the initiator). */
  "partner-reconnected": (payload: PartnerReconnected) => void;
  /** The partner's connection dropped; the room is held for it for `RECONNECT_GRACE_MS` and what is sent to it meanwhile waits for it when its client recovers its session. Keep the call; `partner-reconnected` or `partner-left` follows. */
  "partner-reconnecting": (payload: PartnerReconnecting) => void;
  /** A search started (also after `next-partner`). */
  searching: (payload: Searching) => void;
  /**
   * The searching user's place in the queue.
   *
   * When the search starts, then whenever the position changes (at most once per
   * `QUEUE_STATUS_INTERVAL_MS`), and at once when the search relaxes (`relaxed: true`).
   */
  "queue-status": (payload: QueueStatus) => void;
  /** Paired; both members get the same `roomId`, exactly one gets `isInitiator: true`. */
  matched: (payload: Matched) => void;
  /** The partner's offer, byte for byte. */
  "webrtc-offer": (payload: WebrtcOfferRelay) => void;
  /** The partner's answer, byte for byte. */
  "webrtc-answer": (payload: WebrtcAnswerRelay) => void;
  /** The partner's ICE candidate, byte for byte. */
  "webrtc-ice-candidate": (payload: WebrtcIceCandidateRelay) => void;
  /** A chat line, to both members. */
  "chat-message": (payload: ChatMessageDelivered) => void;
  /** The partner started or stopped typing. */
  "partner-typing": (payload: PartnerTyping) => void;
  /** The partner's `quality-report`, with the server's own grade of its numbers. */
  "partner-quality-report": (payload: PartnerQualityReport) => void;
  /** The partner's `connection-status`. */
  "partner-connection-status": (payload: PartnerConnectionStatus) => void;
  /** The partner left the room, or its connection dropped and the room is held for it. */
  "partner-left": (payload: PartnerLeft) => void;
  /** To the sender of `end-chat`. */
  "chat-ended": (payload: ChatEnded) => void;
  /** The server ended the room. */
  "room-ended": (payload: RoomEnded) => void;
  /** A search reached `MAX_WAITING_TIME_MS`; search again to continue. */
  "search-timeout": (payload: SearchTimeout) => void;
  /** To everyone, before a graceful stop. */
  "server-shutdown": (payload: ServerShutdown) => void;
  /** An operator removed this connection (`POST /admin/kick`); the server closes it next. */
  kicked: (payload: Removed) => void;
  /** The user or its address was banned (by an operator or the auto-ban); the server closes the connection next, and refuses it at `authenticate` (or the handshake) until `until`. */
  banned: (payload: Removed) => void;
  /** `authenticate` refused for a reason of identity. */
  "auth-error": (payload: AuthError) => void;
  /** Any other refusal; `event` names the event that caused it. */
  error: (payload: ServerError) => void;
}

/** Events a client emits: `socket.emit(name, payload)`. */
export interface ClientToServerEvents {
  /**
   * Binds the connection to a user; answered with `authenticated` or `auth-error`.
   *
   * `userId` is the id to use (a random `user-…` id when absent). With a JWT key configured
   * the user is the token's `sub` instead (the token here or in the handshake `auth`).
   * `resumeToken` takes back an earlier session (after a dropped connection). Sending it
   * again on the same connection updates the profile.
   */
  authenticate: (payload: Authenticate) => void;
  /**
   * Starts a search; answered with `searching` and `queue-status`, or `matched` at once.
   *
   * The payload may be left out: the last preferences sent are kept (also for `next-partner`).
   * Sent again while searching with the same (or no) preferences it changes nothing; with new
   * ones it starts a new search. Refused with `already-in-room` while in a room.
   */
  "find-random-partner": (payload?: FindRandomPartner) => void;
  /**
   * Leaves the room (the partner gets `partner-left {reason: "next-partner"}`) and searches again.
   *
   * No payload. Outside a room it (re)starts the search with the last preferences.
   */
  "next-partner": () => void;
  /**
   * Leaves the room (the partner gets `partner-left {reason: "user-ended"}`, the sender `chat-ended`) or cancels the search.
   *
   * No payload. With neither a room nor a search it is refused with `not-in-room`.
   */
  "end-chat": () => void;
  /** A WebRTC offer for the partner; relayed as `webrtc-offer`. */
  "webrtc-offer": (payload: WebrtcOffer) => void;
  /** A WebRTC answer for the partner; relayed as `webrtc-answer`. */
  "webrtc-answer": (payload: WebrtcAnswer) => void;
  /** An ICE candidate for the partner (`null`, end of candidates, too); relayed as `webrtc-ice-candidate`. */
  "webrtc-ice-candidate": (payload: WebrtcIceCandidate) => void;
  /** A chat line; delivered as `chat-message` to both members (the sender's copy is its receipt). */
  "chat-message": (payload: ChatMessage) => void;
  /** Whether the user is typing; relayed as `partner-typing`. */
  typing: (payload: Typing) => void;
  /** The call's measured quality; relayed as `partner-quality-report` and counted in `/stats`. */
  "quality-report": (payload: QualityReport) => void;
  /** The `RTCPeerConnection` state; relayed as `partner-connection-status` and counted in `/stats`. */
  "connection-status": (payload: ConnectionStatus) => void;
  /** The sender and that user are never paired again (for `BLOCK_TTL_MS`). */
  "block-user": (payload: BlockUser) => void;
  /** Blocks like `block-user`, logs the report and counts it in `/stats` `reportsTotal`. */
  "report-user": (payload: ReportUser) => void;
}

/**
 * The same events with the acknowledgement the server sends to an event emitted with a
 * callback, for `emitWithAck`: view the socket as
 * `Socket<ServerToClientEvents, ClientToServerEventsWithAck>` to await `Ack` replies.
 */
export interface ClientToServerEventsWithAck {
  /**
   * Binds the connection to a user; answered with `authenticated` or `auth-error`.
   *
   * `userId` is the id to use (a random `user-…` id when absent). With a JWT key configured
   * the user is the token's `sub` instead (the token here or in the handshake `auth`).
   * `resumeToken` takes back an earlier session (after a dropped connection). Sending it
   * again on the same connection updates the profile.
   */
  authenticate: (payload: Authenticate, ack: (reply: Ack) => void) => void;
  /**
   * Starts a search; answered with `searching` and `queue-status`, or `matched` at once.
   *
   * The payload may be left out: the last preferences sent are kept (also for `next-partner`).
   * Sent again while searching with the same (or no) preferences it changes nothing; with new
   * ones it starts a new search. Refused with `already-in-room` while in a room.
   */
  "find-random-partner": (payload: FindRandomPartner | undefined, ack: (reply: Ack) => void) => void;
  /**
   * Leaves the room (the partner gets `partner-left {reason: "next-partner"}`) and searches again.
   *
   * No payload. Outside a room it (re)starts the search with the last preferences.
   */
  "next-partner": (ack: (reply: Ack) => void) => void;
  /**
   * Leaves the room (the partner gets `partner-left {reason: "user-ended"}`, the sender `chat-ended`) or cancels the search.
   *
   * No payload. With neither a room nor a search it is refused with `not-in-room`.
   */
  "end-chat": (ack: (reply: Ack) => void) => void;
  /** A WebRTC offer for the partner; relayed as `webrtc-offer`. */
  "webrtc-offer": (payload: WebrtcOffer, ack: (reply: Ack) => void) => void;
  /** A WebRTC answer for the partner; relayed as `webrtc-answer`. */
  "webrtc-answer": (payload: WebrtcAnswer, ack: (reply: Ack) => void) => void;
  /** An ICE candidate for the partner (`null`, end of candidates, too); relayed as `webrtc-ice-candidate`. */
  "webrtc-ice-candidate": (payload: WebrtcIceCandidate, ack: (reply: Ack) => void) => void;
  /** A chat line; delivered as `chat-message` to both members (the sender's copy is its receipt). */
  "chat-message": (payload: ChatMessage, ack: (reply: Ack) => void) => void;
  /** Whether the user is typing; relayed as `partner-typing`. */
  typing: (payload: Typing, ack: (reply: Ack) => void) => void;
  /** The call's measured quality; relayed as `partner-quality-report` and counted in `/stats`. */
  "quality-report": (payload: QualityReport, ack: (reply: Ack) => void) => void;
  /** The `RTCPeerConnection` state; relayed as `partner-connection-status` and counted in `/stats`. */
  "connection-status": (payload: ConnectionStatus, ack: (reply: Ack) => void) => void;
  /** The sender and that user are never paired again (for `BLOCK_TTL_MS`). */
  "block-user": (payload: BlockUser, ack: (reply: Ack) => void) => void;
  /** Blocks like `block-user`, logs the report and counts it in `/stats` `reportsTotal`. */
  "report-user": (payload: ReportUser, ack: (reply: Ack) => void) => void;
}

/** The names of the events the server emits. */
export type ServerEventName = keyof ServerToClientEvents;

/** The names of the events a client emits. */
export type ClientEventName = keyof ClientToServerEvents;

/** The JSON bodies of the HTTP endpoints (`GET`), by path. */
export interface HttpBodies {
  "/health": Health;
  "/health/live": HealthLive;
  "/stats": Stats;
  "/ice-servers": IceServersResponse | HttpError;
}
