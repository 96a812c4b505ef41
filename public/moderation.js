// @ts-check
// The moderation page (/dashboard/moderation): the reports feed, a user's lookup, kick, ban for
// a time, and the bans in force with lift, all through the admin API (README, "Moderation: the
// admin API"). Type-checked by `tsc -p clients/tsconfig.browser.json`.
//
// Why the token is handled this way: the operator types it in; it is kept in this tab's
// sessionStorage (gone when the tab closes) and sent only as `Authorization: Bearer` on fetch().
// No cookie carries authority, so another site cannot make the browser act with it (no CSRF),
// and it is never in a URL, so it reaches neither history, bookmarks, Referer headers nor a
// proxy's access log. Everything the API returns is written with textContent, never as markup:
// reasons and user ids come from users.
(() => {
  /**
   * @typedef {{id: number, reporter: string, reported: string, reason: string,
   *   roomId: string | null, timestamp: number, callMs?: number, network?: string,
   *   verified?: boolean}} Report
   * @typedef {{kind: 'operator'} | {kind: 'reports', reporters: number, windowSecs: number}} BanSource
   * @typedef {{id: string, userId?: string, address?: string, until: number, reason: string,
   *   created: number, source: BanSource, force?: boolean}} Ban
   * @typedef {{userId: string, connected: boolean, away: boolean, waitingMs: number | null,
   *   roomId: string | null, partnerId: string | null, roomMs: number | null,
   *   node: string | null, recentReporters: number, reports: number, ban: Ban | null}} UserView
   */
  const KEY = 'roulette.adminToken';
  const PAGE = 50;
  const REFRESH_MS = 10000;

  /**
   * The element of the page with this id (the page has them all).
   * @template {HTMLElement} [T=HTMLElement]
   * @param {string} id
   * @returns {T}
   */
  const $ = (id) => /** @type {T} */ (document.getElementById(id));
  /** @type {(id: string) => HTMLInputElement} */
  const input = (id) => $(id);

  /**
   * A new element with text or children.
   * @param {string} tag
   * @param {string | null} [className]
   * @param {...(string | Node)} children
   */
  function el(tag, className, ...children) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    e.append(...children);
    return e;
  }

  // A token in the address (the dashboard's `?token=` habit) is taken out of it at once and
  // not used: the page signs in only with a typed token.
  const here = new URL(location.href);
  if (here.searchParams.has('token')) {
    here.searchParams.delete('token');
    history.replaceState(null, '', here.pathname + here.search + here.hash);
    $('signin-error').textContent = 'The token is not taken from the address: type it here.';
  }

  /** @type {string | null} */
  let token = sessionStorage.getItem(KEY);

  /** An answer of the admin API that is not 2xx: its status and `{code, message}`. */
  class ApiError extends Error {
    /** @param {number} status @param {string} code @param {string} message */
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /**
   * Calls the admin API with the token; resolves with the JSON answer and its status.
   * @param {'GET' | 'POST' | 'DELETE'} method
   * @param {string} path
   * @param {object} [body]
   * @returns {Promise<{status: number, data: any}>}
   */
  async function api(method, path, body) {
    if (!token) throw new ApiError(401, 'unauthorized', 'sign in first');
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
    /** @type {any} */
    let data = null;
    try {
      data = await r.json();
    } catch { /* not JSON: the status says enough */ }
    if (!r.ok) {
      const err = new ApiError(r.status, data?.code ?? `http-${r.status}`, data?.message ?? r.statusText);
      if (r.status === 401) signOut('The token was refused: sign in again.');
      throw err;
    }
    return { status: r.status, data };
  }

  /** @param {string} text @param {boolean} [bad] */
  function notify(text, bad = false) {
    const n = $('notice');
    n.textContent = text;
    n.classList.toggle('bad', bad);
  }
  /** @param {unknown} e */
  const why = (e) => (e instanceof ApiError ? `${e.message} (${e.code})` : String(/** @type {Error} */ (e)?.message ?? e));

  /** @type {(ms: number) => string} */
  const when = (ms) => new Date(ms).toLocaleString();
  /** @type {(ms: number | null | undefined) => string} */
  const span = (ms) => {
    if (ms == null) return '—';
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
  };

  // ---- signing in and out ----------------------------------------------------------------

  /** @type {number | undefined} */
  let timer;

  function showSignedIn() {
    $('signin-panel').hidden = true;
    $('app').hidden = false;
    $('signout').hidden = false;
    $('status').textContent = 'signed in';
    document.body.dataset.signedIn = '1';
    loadReports();
    loadBans();
    clearInterval(timer);
    // The newest page follows new reports by itself; an older page stays as it is.
    timer = setInterval(() => {
      if (!document.hidden && pages.length === 1) loadReports();
    }, REFRESH_MS);
  }

  /** @param {string} [message] */
  function signOut(message = '') {
    token = null;
    sessionStorage.removeItem(KEY);
    clearInterval(timer);
    $('app').hidden = true;
    $('signout').hidden = true;
    $('signin-panel').hidden = false;
    $('status').textContent = 'signed out';
    $('signin-error').textContent = message;
    delete document.body.dataset.signedIn;
  }

  $('signin').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const field = input('token');
    token = field.value.trim();
    field.value = '';
    $('signin-error').textContent = '';
    try {
      // Any admin call checks the token; this one is cheap.
      await api('GET', '/admin/bans');
      sessionStorage.setItem(KEY, token);
      showSignedIn();
    } catch (e) {
      const msg = e instanceof ApiError && e.code === 'admin-disabled'
        ? 'The admin API is off: start the server with ADMIN_TOKEN set.'
        : e instanceof ApiError && e.status === 401 ? 'Wrong token.' : `Could not sign in: ${why(e)}`;
      signOut(msg);
    }
  });
  $('signout').addEventListener('click', () => signOut());

  // ---- the reports feed --------------------------------------------------------------------

  /** The `before` cursor of each page shown so far: the first is the newest page. */
  /** @type {(number | null)[]} */
  let pages = [null];
  /** @type {number | null} */
  let nextBefore = null;

  /** A user id that fills the lookup, kick and ban forms when clicked. @param {string} id */
  function userButton(id) {
    const b = el('button', 'link', id);
    b.setAttribute('type', 'button');
    b.dataset.user = id;
    b.title = 'look this user up';
    b.addEventListener('click', () => lookup(id));
    return b;
  }

  async function loadReports() {
    const before = pages[pages.length - 1];
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (before !== null) q.set('before', String(before));
    try {
      const { data } = await api('GET', `/admin/reports?${q}`);
      /** @type {Report[]} */
      const reports = data.reports;
      nextBefore = data.nextBefore ?? null;
      const body = $('reports-body');
      body.replaceChildren(...reports.map((r) => {
        const tr = el('tr', null,
          el('td', null, when(r.timestamp)),
          el('td', null, userButton(r.reporter), r.verified ? ' ✓' : ''),
          el('td', null, userButton(r.reported)),
          el('td', 'reason', r.reason),
          el('td', null, r.roomId ?? '—'),
          el('td', null, span(r.callMs)),
          el('td', null, r.network ?? '—'));
        tr.dataset.reportId = String(r.id);
        return tr;
      }));
      if (!reports.length) body.append(el('tr', null, Object.assign(el('td', 'empty', 'No reports.'), { colSpan: 7 })));
      /** @type {HTMLButtonElement} */ ($('reports-older')).disabled = nextBefore === null;
      $('reports-page').textContent = pages.length === 1 ? 'Newest reports.' : `Page ${pages.length}.`;
    } catch (e) {
      notify(`Reports: ${why(e)}`, true);
    }
  }
  $('reports-refresh').addEventListener('click', loadReports);
  $('reports-newest').addEventListener('click', () => { pages = [null]; loadReports(); });
  $('reports-older').addEventListener('click', () => {
    if (nextBefore === null) return;
    pages.push(nextBefore);
    loadReports();
  });

  // ---- a user's lookup -----------------------------------------------------------------------

  /** @param {string} id */
  async function lookup(id) {
    input('lookup-id').value = id;
    input('kick-id').value = id;
    /** @type {HTMLSelectElement} */ ($('ban-kind')).value = 'userId';
    onKind();
    input('ban-target').value = id;
    const out = $('lookup-result');
    out.hidden = false;
    try {
      /** @type {{data: UserView}} */
      const { data: v } = await api('GET', `/admin/users/${encodeURIComponent(id)}`);
      /** @type {[string, string | Node][]} */
      const rows = [
        ['User', v.userId],
        ['Online', v.connected ? 'yes' : v.away ? 'reconnecting' : 'no'],
        ['Node', v.node ?? '—'],
        ['Searching', v.waitingMs == null ? 'no' : `for ${span(v.waitingMs)}`],
        ['Room', v.roomId == null ? '—' : `${v.roomId} with ${v.partnerId ?? '?'} for ${span(v.roomMs)}`],
        ['Reports against it', `${v.reports} kept · ${v.recentReporters} distinct reporters recently`],
        ['Ban', v.ban ? banCell(v.ban) : 'none'],
      ];
      out.replaceChildren(...rows.flatMap(([k, val]) => [el('dt', null, k), el('dd', null, val)]));
      out.dataset.user = v.userId;
      out.dataset.connected = String(v.connected);
    } catch (e) {
      out.replaceChildren(el('dt', null, id), el('dd', null, e instanceof ApiError && e.status === 404 ? 'nothing is known of this user' : why(e)));
      delete out.dataset.user;
    }
  }
  $('lookup-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    lookup(input('lookup-id').value.trim());
  });

  /** A ban's words and a lift button. @param {Ban} b */
  function banCell(b) {
    return el('span', null, `until ${when(b.until)} (${b.reason}) `, liftButton(b));
  }

  // ---- kick ----------------------------------------------------------------------------------

  $('kick-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const userId = input('kick-id').value.trim();
    const reason = input('kick-reason').value;
    try {
      const { status } = await api('POST', '/admin/kick', { userId, ...(reason ? { reason } : {}) });
      notify(status === 202 ? `Kick of ${userId} sent to the other nodes.` : `Kicked ${userId}.`);
    } catch (e) {
      notify(e instanceof ApiError && e.status === 404 ? `${userId} is not connected.` : `Kick: ${why(e)}`, true);
    }
    refreshLookup(userId);
  });

  // ---- ban -----------------------------------------------------------------------------------

  function onKind() {
    const address = /** @type {HTMLSelectElement} */ ($('ban-kind')).value === 'address';
    input('ban-target').placeholder = address ? '203.0.113.0/24 or 2001:db8::/48' : 'user id';
    $('ban-force-label').hidden = !address;
    if (!address) input('ban-force').checked = false;
  }
  $('ban-kind').addEventListener('change', onKind);

  $('ban-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const kind = /** @type {HTMLSelectElement} */ ($('ban-kind')).value;
    const target = input('ban-target').value.trim();
    const durationSec = Math.round(Number(input('ban-duration').value) * Number(/** @type {HTMLSelectElement} */ ($('ban-unit')).value));
    const reason = input('ban-reason').value;
    const force = input('ban-force').checked;
    try {
      const { data } = await api('POST', '/admin/bans', {
        [kind === 'address' ? 'address' : 'userId']: target, durationSec, reason, ...(force ? { force } : {}),
      });
      notify(`Banned ${target} until ${when(data.until)}.`);
    } catch (e) {
      const code = e instanceof ApiError ? e.code : '';
      notify(code === 'prefix-too-broad' ? `${why(e)}. Tick "force" if you mean it.`
        : code === 'store-unavailable' ? `Not banned: the server could not write the ban to disk (${why(e)}).`
          : `Ban: ${why(e)}`, true);
    }
    loadBans();
    if (kind === 'userId') refreshLookup(target);
  });

  /** Looks the user up again if it is the one shown. @param {string} id */
  function refreshLookup(id) {
    if ($('lookup-result').dataset.user === id) lookup(id);
  }

  // ---- bans in force ---------------------------------------------------------------------------

  /** @param {Ban} b */
  function liftButton(b) {
    const lift = el('button', 'lift', 'Lift');
    lift.setAttribute('type', 'button');
    lift.dataset.banId = b.id;
    lift.addEventListener('click', async () => {
      try {
        await api('DELETE', `/admin/bans/${encodeURIComponent(b.id)}`);
        notify(`Lifted the ban on ${b.userId ?? b.address}.`);
      } catch (e) {
        notify(`Lift: ${why(e)}`, true);
      }
      loadBans();
      if (b.userId) refreshLookup(b.userId);
    });
    return lift;
  }

  async function loadBans() {
    try {
      const { data } = await api('GET', '/admin/bans');
      /** @type {Ban[]} */
      const bans = data.bans;
      const body = $('bans-body');
      body.replaceChildren(...bans.map((b) => {
        const tr = el('tr', null,
          el('td', null, b.userId !== undefined ? userButton(b.userId) : `address ${b.address}${b.force ? ' (forced)' : ''}`),
          el('td', null, when(b.until)),
          el('td', 'reason', b.reason),
          el('td', null, b.source.kind === 'operator' ? 'operator' : `auto-ban: ${b.source.reporters} networks in ${span(b.source.windowSecs * 1000)}`),
          el('td', null, when(b.created)),
          el('td', null, liftButton(b)));
        tr.dataset.banId = b.id;
        tr.dataset.target = b.userId ?? b.address ?? '';
        return tr;
      }));
      if (!bans.length) body.append(el('tr', null, Object.assign(el('td', 'empty', 'No bans in force.'), { colSpan: 6 })));
    } catch (e) {
      notify(`Bans: ${why(e)}`, true);
    }
  }
  $('bans-refresh').addEventListener('click', loadBans);

  if (token) showSignedIn();
})();
