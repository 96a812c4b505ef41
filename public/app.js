// @ts-check
// Roulette demo client: random video chat over WebRTC, signaled through the Roulette server.
// URL parameters: ?user=ID (else anonymous), ?lang=en, ?interests=a,b, ?relay=1 (calls only
// through the TURN servers the server hands out, as behind a strict NAT).
// Type-checked against the protocol's types (clients/types, generated from
// clients/contract/asyncapi.yaml) by `tsc -p clients/tsconfig.browser.json`.
(() => {
  'use strict';

  /** @typedef {import('@roulette/types').ServerToClientEvents} ServerToClientEvents */
  /** @typedef {import('@roulette/types').ClientToServerEvents} ClientToServerEvents */
  /** @typedef {import('@roulette/types').Quality} Quality */
  /** @typedef {import('@roulette/types').Rejoined} Call the room, partner and role of a call */
  /**
   * What tests and curious developers can read from the console (`window.roulette`).
   * @typedef {object} DemoState
   * @property {'idle' | 'searching' | 'matched'} phase
   * @property {string | null} userId
   * @property {string | null} roomId
   * @property {string | null} partnerId
   * @property {boolean} isInitiator
   * @property {RTCPeerConnection | null} pc
   * @property {RTCPeerConnectionState} connectionState
   * @property {Quality | null} lastQuality
   * @property {{ event: string, data: unknown, at: number }[]} events every event received
   * @property {string} [resumeToken]
   * @property {import('@roulette/types').IceServer[]} [iceServers]
   * @property {number} [online]
   * @property {import('socket.io-client').Socket} [socket] the page's connection to the server
   */

  /**
   * The element of the page with this id (the page has them all).
   * @template {HTMLElement} [T=HTMLElement]
   * @param {string} id
   * @returns {T}
   */
  const $ = (id) => /** @type {T} */ (document.getElementById(id));
  const params = new URLSearchParams(location.search);
  /**
   * @type {{ online: HTMLElement, overlay: HTMLElement, spinner: HTMLElement, headline: HTMLElement,
   *   subline: HTMLElement, quality: HTMLElement, qualityLabel: HTMLElement, partnerBadge: HTMLElement,
   *   remoteVideo: HTMLVideoElement, localVideo: HTMLVideoElement, start: HTMLButtonElement,
   *   next: HTMLButtonElement, stop: HTMLButtonElement, messages: HTMLElement, typing: HTMLElement,
   *   composer: HTMLFormElement, input: HTMLInputElement, send: HTMLButtonElement }}
   */
  const ui = {
    online: $('online'), overlay: $('overlay'), spinner: $('spinner'), headline: $('headline'),
    subline: $('subline'), quality: $('quality'), qualityLabel: $('qualityLabel'),
    partnerBadge: $('partnerBadge'), remoteVideo: $('remoteVideo'), localVideo: $('localVideo'),
    start: $('startBtn'), next: $('nextBtn'), stop: $('stopBtn'), messages: $('messages'),
    typing: $('typing'), composer: $('composer'), input: $('chatInput'), send: $('sendBtn'),
  };

  // What tests and curious developers can read from the console.
  const state = window.roulette = /** @type {DemoState} */ ({
    phase: 'idle', userId: null, roomId: null, partnerId: null, isInitiator: false,
    pc: null, connectionState: 'new', lastQuality: null, events: [],
  });

  /** @type {import('@roulette/types').Preferences} */
  const preferences = {};
  if (params.get('lang')) preferences.language = /** @type {string} */ (params.get('lang'));
  if (params.get('interests')) preferences.interests = /** @type {string} */ (params.get('interests')).split(',');

  /** @type {MediaStream | null} */
  let localStream = null;
  /** @type {number | undefined} */
  let statsTimer;
  /** @type {number | undefined} */
  let typingTimer;
  /** @type {Promise<unknown>} */
  let signalChain = Promise.resolve();

  if (typeof io !== 'function') {
    // The bundle is built into the server; only a STATIC_DIR without it gets here.
    $('headline').textContent = 'The socket.io client did not load';
    $('subline').textContent = '/vendor/socket.io/socket.io.min.js is missing from STATIC_DIR: unset STATIC_DIR, or copy it there (scripts/vendor.sh).';
    return;
  }
  /** @type {import('socket.io-client').Socket<ServerToClientEvents, ClientToServerEvents>} */
  const socket = io({ transports: ['polling', 'websocket'] });
  state.socket = socket;

  // ---- screen -------------------------------------------------------------------------------
  /**
   * @param {DemoState['phase']} phase
   * @param {string} [headline]
   * @param {string} [subline]
   */
  function setPhase(phase, headline, subline) {
    state.phase = phase;
    const inRoom = phase === 'matched';
    ui.overlay.hidden = inRoom;
    ui.spinner.hidden = phase !== 'searching';
    if (headline) ui.headline.textContent = headline;
    ui.subline.textContent = subline || '';
    ui.start.disabled = phase === 'searching' || inRoom;
    ui.next.disabled = !(phase === 'searching' || inRoom);
    ui.stop.disabled = !(phase === 'searching' || inRoom);
    ui.input.disabled = !inRoom;
    ui.send.disabled = !inRoom;
    ui.partnerBadge.hidden = !inRoom;
    if (!inRoom) {
      ui.typing.hidden = true;
      setQuality(null);
    }
  }

  /**
   * @param {string} text
   * @param {'system' | 'mine' | 'theirs'} [kind]
   */
  function say(text, kind = 'system') {
    const li = document.createElement('li');
    li.className = kind;
    li.textContent = text;
    ui.messages.appendChild(li);
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  /** @param {Quality | null} grade */
  function setQuality(grade) {
    state.lastQuality = grade;
    ui.quality.dataset.grade = grade || 'none';
    ui.qualityLabel.textContent = grade || (state.phase === 'matched' ? state.connectionState : 'no call');
  }

  // ---- media & WebRTC -------------------------------------------------------------------------
  async function camera() {
    if (localStream) return localStream;
    localStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    ui.localVideo.srcObject = localStream;
    return localStream;
  }

  function closeCall() {
    clearInterval(statsTimer);
    statsTimer = undefined;
    if (state.pc) {
      state.pc.ontrack = state.pc.onicecandidate = state.pc.onconnectionstatechange = null;
      state.pc.close();
    }
    state.pc = null;
    state.connectionState = 'new';
    state.roomId = null;
    state.partnerId = null;
    ui.remoteVideo.srcObject = null;
    signalChain = Promise.resolve();
  }

  // Signaling steps run one after another: a candidate is only added once the description it
  // belongs to has been applied.
  /** @param {() => Promise<void>} step */
  function inOrder(step) {
    signalChain = signalChain.then(step).catch((e) => console.warn('signaling step failed', e));
    return signalChain;
  }

  /** @param {Call} call */
  function startCall({ roomId, partnerId, isInitiator }) {
    closeCall();
    Object.assign(state, { roomId, partnerId, isInitiator });
    const pc = state.pc = new RTCPeerConnection({
      iceServers: state.iceServers || [],
      ...(params.get('relay') === '1' ? { iceTransportPolicy: 'relay' } : {}),
    });
    for (const track of /** @type {MediaStream} */ (localStream).getTracks()) pc.addTrack(track, /** @type {MediaStream} */ (localStream));
    pc.ontrack = (e) => { ui.remoteVideo.srcObject = e.streams[0]; };
    pc.onicecandidate = (e) => {
      socket.emit('webrtc-ice-candidate', {
        roomId, targetUserId: partnerId, candidate: e.candidate ? e.candidate.toJSON() : null,
      });
    };
    pc.onconnectionstatechange = () => {
      state.connectionState = pc.connectionState;
      if (!state.lastQuality) setQuality(null);
      if (['connecting', 'connected', 'disconnected', 'failed'].includes(pc.connectionState)) {
        socket.emit('connection-status', {
          roomId, status: /** @type {import('@roulette/types').ConnectionState} */ (pc.connectionState), ...(state.lastQuality ? { quality: state.lastQuality } : {}),
        });
      }
    };
    statsTimer = setInterval(reportQuality, 2000);
    if (isInitiator) {
      inOrder(async () => {
        await pc.setLocalDescription(await pc.createOffer());
        socket.emit('webrtc-offer', { roomId, targetUserId: partnerId, offer: /** @type {RTCSessionDescription} */ (pc.localDescription).toJSON() });
      });
    }
  }

  // Grades as the earlier client did: loss %, round-trip ms, available kbit/s.
  /**
   * @param {{ packetLoss: number, latency: number, bandwidth?: number }} stats
   * @returns {Quality}
   */
  function grade({ packetLoss, latency, bandwidth }) {
    /** @type {(loss: number, rtt: number, bw: number) => boolean} */
    const ok = (loss, rtt, bw) => packetLoss < loss && latency < rtt && (bandwidth === undefined || bandwidth > bw);
    if (ok(1, 100, 500)) return 'excellent';
    if (ok(3, 200, 300)) return 'good';
    if (ok(5, 400, 150)) return 'fair';
    return 'poor';
  }

  async function reportQuality() {
    const pc = state.pc;
    if (!pc || pc.connectionState !== 'connected') return;
    const report = await pc.getStats();
    let latency = 0, jitter = 0, lost = 0, received = 0;
    /** @type {number | undefined} */
    let bandwidth;
    report.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        latency = (s.currentRoundTripTime || 0) * 1000;
        if (s.availableOutgoingBitrate) bandwidth = s.availableOutgoingBitrate / 1000;
      }
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        lost += s.packetsLost || 0;
        received += s.packetsReceived || 0;
        jitter = Math.max(jitter, (s.jitter || 0) * 1000);
      }
    });
    const packetLoss = received + lost > 0 ? (100 * lost) / (received + lost) : 0;
    const stats = { latency, packetLoss, jitter, timestamp: Date.now(), ...(bandwidth ? { bandwidth } : {}) };
    const quality = grade(stats);
    setQuality(quality);
    socket.emit('quality-report', { roomId: /** @type {string} */ (state.roomId), quality, stats });
  }

  // ---- server events --------------------------------------------------------------------------
  socket.onAny((event, data) => state.events.push({ event, data, at: Date.now() }));

  socket.on('connect', () => {
    if (socket.recovered) {
      // socket.io-client 4.6+ got the session back (connection state recovery): the call never
      // stopped, and what was sent meanwhile has arrived.
      ui.online.textContent = state.online ? `${state.online} online` : '';
      if (state.phase === 'matched') say('Reconnected.');
    } else if (state.pc) {
      // A fresh session: this call is over, unless the resume token takes the room back
      // (`rejoined` sets a new one up).
      closeCall();
      setPhase('idle', 'Connection lost', 'Reconnecting to the server…');
    }
    /** @type {import('@roulette/types').Authenticate} */
    const auth = { userInfo: preferences.language ? { languages: [preferences.language] } : {} };
    if (params.get('user')) auth.userId = /** @type {string} */ (params.get('user'));
    // Back after a dropped connection: take the session (and the call's room) back.
    if (state.userId && state.resumeToken) Object.assign(auth, { userId: state.userId, resumeToken: state.resumeToken });
    socket.emit('authenticate', auth);
  });
  // The call's media flows peer to peer: a dropped signaling connection does not end it. The
  // server holds the session for the reconnect grace; `connect` says whether it came back.
  socket.on('disconnect', (reason) => {
    ui.online.textContent = 'disconnected, reconnecting…';
    if (!socket.active) {
      // The server sent us away (or we left): no automatic reconnection.
      closeCall();
      setPhase('idle', 'Disconnected', reason);
    }
  });
  /** @param {number} n */
  const showOnline = (n) => { state.online = n; ui.online.textContent = `${n} online`; };
  socket.on('authenticated', ({ userId, serverStats, resumeToken, iceServers }) => {
    Object.assign(state, { userId, resumeToken, iceServers });
    showOnline(serverStats.connectedUsers);
  });
  // The count changes as people come and go: read it again every 10 s while the tab is shown.
  setInterval(async () => {
    if (document.hidden || !socket.connected) return;
    try {
      const r = await fetch('/stats', { cache: 'no-store' });
      if (r.ok) showOnline(/** @type {import('@roulette/types').Stats} */ (await r.json()).connectedUsers);
    } catch { /* the next round tries again */ }
  }, 10000);
  // Our connection came back within the grace: the room is still ours, set the call up again.
  socket.on('rejoined', (r) => {
    setPhase('matched');
    say('Reconnected.');
    startCall(r);
  });
  socket.on('partner-reconnecting', () => say('Your partner lost its connection; waiting for it to come back…'));
  // The partner came back. After a recovered connection the call never stopped; after a resume
  // with its token it starts a new peer connection, so must we.
  socket.on('partner-reconnected', ({ recovered }) => {
    say('Your partner is back.');
    if (!recovered) startCall(/** @type {Call} */ ({ roomId: state.roomId, partnerId: state.partnerId, isInitiator: state.isInitiator }));
  });
  socket.on('auth-error', (e) => setPhase('idle', 'Cannot sign in', e.message));

  socket.on('searching', () => setPhase('searching', 'Looking for someone…', ''));
  socket.on('queue-status', ({ message }) => {
    if (state.phase !== 'searching') return;
    // The server's own words: position, how many wait, and the estimate in s or min.
    ui.subline.textContent = message;
  });
  socket.on('matched', (m) => {
    ui.messages.replaceChildren();
    say('You are now talking to a stranger. Say hi!');
    if (m.commonInterests?.length) say(`You both like ${m.commonInterests.join(', ')}.`);
    ui.partnerBadge.textContent = 'Stranger';
    setPhase('matched');
    setQuality(null);
    if (m.iceServers) state.iceServers = m.iceServers;
    startCall(m);
  });

  socket.on('webrtc-offer', ({ offer, roomId }) => inOrder(async () => {
    if (!state.pc || roomId !== state.roomId) return;
    await state.pc.setRemoteDescription(offer);
    await state.pc.setLocalDescription(await state.pc.createAnswer());
    socket.emit('webrtc-answer', { roomId, targetUserId: /** @type {string} */ (state.partnerId), answer: /** @type {RTCSessionDescription} */ (state.pc.localDescription).toJSON() });
  }));
  socket.on('webrtc-answer', ({ answer, roomId }) => inOrder(async () => {
    if (state.pc && roomId === state.roomId) await state.pc.setRemoteDescription(answer);
  }));
  socket.on('webrtc-ice-candidate', ({ candidate, roomId }) => inOrder(async () => {
    if (state.pc && roomId === state.roomId && candidate) await state.pc.addIceCandidate(candidate);
  }));

  socket.on('chat-message', ({ fromUserId, message }) => {
    say(message, fromUserId === state.userId ? 'mine' : 'theirs');
    if (fromUserId !== state.userId) ui.typing.hidden = true;
  });
  socket.on('partner-typing', ({ isTyping }) => { ui.typing.hidden = !isTyping; });

  /** @type {(headline: string, subline: string) => void} */
  const ended = (headline, subline) => {
    closeCall();
    setPhase('idle', headline, subline);
    say(headline);
  };
  socket.on('partner-left', ({ reason, canReconnect }) => {
    if (canReconnect) {
      say('Your partner lost its connection; waiting a few seconds for it to come back…');
      return;
    }
    ended(reason === 'next-partner' ? 'Your partner skipped' : 'Your partner left', 'Press Start to meet someone new.');
  });
  socket.on('chat-ended', ({ roomId }) => ended(roomId ? 'You ended the chat' : 'Search stopped', 'Press Start when you are ready.'));
  socket.on('room-ended', () => ended('Time is up for this chat', 'Press Start to meet someone new.'));
  socket.on('search-timeout', () => ended('Nobody is around right now', 'Press Start to try again.'));
  socket.on('server-shutdown', (n) => say(n.message));
  socket.on('error', (e) => console.warn('server error', e));

  // ---- controls -------------------------------------------------------------------------------
  ui.start.onclick = async () => {
    try {
      await camera();
    } catch (e) {
      setPhase('idle', 'Camera unavailable', 'Allow camera and microphone access, then press Start.');
      return;
    }
    socket.emit('find-random-partner', { preferences });
  };
  ui.next.onclick = () => {
    closeCall();
    socket.emit('next-partner');
  };
  ui.stop.onclick = () => socket.emit('end-chat');

  ui.composer.onsubmit = (e) => {
    e.preventDefault();
    const message = ui.input.value.trim();
    if (!message || !state.roomId) return;
    socket.emit('chat-message', { roomId: state.roomId, message });
    // Sent: not typing any more, and the next key starts a new "typing" (a timer left running
    // here would swallow it).
    clearTimeout(typingTimer);
    typingTimer = undefined;
    socket.emit('typing', { roomId: state.roomId, isTyping: false });
    ui.input.value = '';
  };
  ui.input.oninput = () => {
    if (!state.roomId) return;
    if (!typingTimer) socket.emit('typing', { roomId: state.roomId, isTyping: true });
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => {
      typingTimer = undefined;
      if (state.roomId) socket.emit('typing', { roomId: state.roomId, isTyping: false });
    }, 1500);
  };

  setPhase('idle');
})();
