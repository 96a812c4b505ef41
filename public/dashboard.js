// @ts-check
// The live dashboard: polls /stats every 2 s and keeps the last ten minutes of samples.
// Type-checked against the /stats body of the protocol's types (clients/types, generated from
// clients/contract/asyncapi.yaml) by `tsc -p clients/tsconfig.browser.json`.
(() => {
  /** @typedef {import('@roulette/types').Stats} Stats */
  const POLL_MS = 2000;
  const KEEP = 300; // samples: ten minutes at one every 2 s
  const token = new URLSearchParams(location.search).get('token');
  /** @type {Record<string, string>} */
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  /**
   * The element of the page with this id (the page has them all).
   * @template {HTMLElement} [T=HTMLElement]
   * @param {string} id
   * @returns {T}
   */
  const $ = (id) => /** @type {T} */ (document.getElementById(id));
  const palette = ['#5b8cff', '#35d49a', '#ffc857', '#ff5b6e', '#7c5bff'];

  if (typeof Chart !== 'function') {
    // Chart.js is built into the server; only a STATIC_DIR without it gets here.
    const note = document.createElement('p');
    note.className = 'missing';
    note.textContent = 'Chart.js did not load: /vendor/chart.js/chart.umd.min.js is missing from STATIC_DIR (unset STATIC_DIR, or copy it there with scripts/vendor.sh).';
    document.body.prepend(note);
    return;
  }

  Chart.defaults.color = '#9aa3b2';
  Chart.defaults.borderColor = '#232733';
  Chart.defaults.animation = false; // redrawn every 2 s: animations would only cost CPU

  /** @param {string[]} labels */
  const series = (labels) => labels.map((label, i) => ({
    label, data: [], borderColor: palette[i], backgroundColor: palette[i], pointRadius: 0, tension: 0.25,
  }));
  /** @type {(id: string, labels: string[], yMax?: number) => import('chart.js').Chart<'line', (number | null)[], string>} */
  const line = (id, labels, yMax) => new Chart(/** @type {HTMLCanvasElement} */ ($(id)), {
    type: 'line',
    data: { labels: [], datasets: series(labels) },
    options: {
      responsive: true, maintainAspectRatio: false,
      scales: { x: { ticks: { maxTicksLimit: 6 } }, y: { beginAtZero: true, ...(yMax ? { max: yMax } : {}) } },
      plugins: { legend: { display: labels.length > 1 } },
    },
  });
  const charts = {
    users: line('chart-users', ['online', 'waiting', 'rooms']),
    matches: line('chart-matches', ['matches / min']),
    wait: line('chart-wait', ['average', 'p95']),
    success: line('chart-success', ['success %'], 100),
    connect: line('chart-connect', ['p50', 'p95']),
  };
  const grades = new Chart(/** @type {HTMLCanvasElement} */ ($('chart-grades')), {
    type: 'bar',
    data: {
      labels: ['excellent', 'good', 'fair', 'poor'],
      datasets: [{ label: 'reports', data: [0, 0, 0, 0], backgroundColor: ['#35d49a', '#5b8cff', '#ffc857', '#ff5b6e'] }],
    },
    options: { responsive: true, maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
  });

  /** @type {(chart: import('chart.js').Chart<'line', (number | null)[], string>, label: string, values: (number | null | undefined)[]) => void} */
  const push = (chart, label, values) => {
    /** @type {string[]} */ (chart.data.labels).push(label);
    values.forEach((v, i) => chart.data.datasets[i].data.push(v ?? null));
    if (/** @type {string[]} */ (chart.data.labels).length > KEEP) {
      /** @type {string[]} */ (chart.data.labels).shift();
      chart.data.datasets.forEach((d) => d.data.shift());
    }
    chart.update('none');
  };
  /** @type {(id: string, v: string | number) => void} */
  const show = (id, v) => { $(id).textContent = /** @type {string} */ (v); };
  /** @type {(r: number | null | undefined) => string} */
  const percent = (r) => (r == null ? '—' : `${Math.round(r * 100)} %`);
  /** @type {(s: number) => string} */
  const duration = (s) => {
    const h = Math.floor(s / 3600); const m = Math.floor((s % 3600) / 60);
    return h ? `${h} h ${m} min` : m ? `${m} min` : `${Math.floor(s)} s`;
  };

  /** @param {Stats} s the /stats body */
  function render(s) {
    /** @type {Partial<Stats['quality']>} */
    const q = s.quality || {};
    const rate = q.connectionSuccessRate;
    show('users-online', s.connectedUsers);
    show('waiting', s.waitingUsers);
    show('reconnecting', s.reconnectingUsers ?? '—');
    show('rooms', s.activeRooms);
    show('matches-per-minute', s.matchesLastMinute);
    show('total-matches', s.totalMatches);
    show('connection-success', percent(rate));
    show('memory', `${Math.round((s.memory?.rssBytes || 0) / 1e6)} MB`);
    show('uptime', duration(s.uptime));
    // In a cluster the figures above are this node's; the whole cluster's go in one line.
    const c = s.cluster;
    $('cluster-box').hidden = !c;
    if (c) {
      show('cluster-label', `Cluster (this is ${c.node})`);
      show('cluster', `${c.nodes} nodes · ${c.users} users · ${c.waiting} waiting · ${c.rooms} rooms · Redis ${c.redisUp ? 'up' : 'DOWN'}`);
    }
    const t = new Date(s.timestamp).toLocaleTimeString();
    push(charts.users, t, [s.connectedUsers, s.waitingUsers, s.activeRooms]);
    push(charts.matches, t, [s.matchesLastMinute]);
    push(charts.wait, t, [s.averageWaitTime, s.p95WaitTime]);
    push(charts.success, t, [rate == null ? null : rate * 100]);
    push(charts.connect, t, [q.timeToConnectMs?.p50, q.timeToConnectMs?.p95]);
    if (q.grades) {
      grades.data.datasets[0].data = /** @type {const} */ (['excellent', 'good', 'fair', 'poor']).map((g) => /** @type {Stats['quality']['grades']} */ (q.grades)[g]);
      grades.update('none');
    }
  }

  /** @type {number | undefined} */
  let timer;
  async function poll() {
    try {
      const r = await fetch('/stats', { headers, cache: 'no-store' });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      render(await r.json());
      $('status').textContent = `live · updated ${new Date().toLocaleTimeString()}`;
      $('status').classList.remove('down');
      document.body.dataset.ready = '1';
    } catch (e) {
      $('status').textContent = `connection lost (${/** @type {Error} */ (e).message}); retrying…`;
      $('status').classList.add('down');
    }
    timer = setTimeout(poll, POLL_MS);
  }
  // A hidden tab needs no charts: stop polling until it is shown again.
  document.addEventListener('visibilitychange', () => {
    clearTimeout(timer);
    if (!document.hidden) poll();
  });
  poll();
})();
