// The globals the demo page (public/app.js) and the dashboard (public/dashboard.js) use: the
// bundles built into the server define `io` and `Chart`, and the page publishes its state as
// `window.roulette` for tests. Only for type-checking them (tsconfig.browser.json).
import type { io as socketIo } from 'socket.io-client';
import type { Chart as ChartJs } from 'chart.js';

declare global {
  /** socket.io-client's `io`, from /vendor/socket.io/socket.io.min.js. */
  const io: typeof socketIo;
  /** Chart.js, from /vendor/chart.js/chart.umd.min.js. */
  const Chart: typeof ChartJs;
  interface Window {
    /** The demo page's state (its `DemoState`), read by tests and from the console. */
    roulette?: unknown;
  }
}
