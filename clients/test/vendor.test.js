// The browser bundles built into the server (public/vendor/) are exactly the files of the npm
// packages clients/package-lock.json pins: a version bump without scripts/vendor.sh fails here.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from './harness.js';

const pairs = [
  ['socket.io-client/dist/socket.io.min.js', 'public/vendor/socket.io/socket.io.min.js'],
  ['chart.js/dist/chart.umd.min.js', 'public/vendor/chart.js/chart.umd.min.js'],
];

describe('vendored bundles', () => {
  for (const [pkgFile, vendored] of pairs) {
    it(`${vendored} is the installed ${pkgFile}`, () => {
      const installed = readFileSync(path.join(repoRoot, 'clients/node_modules', pkgFile));
      const ours = readFileSync(path.join(repoRoot, vendored));
      assert.ok(installed.length > 10000, `${pkgFile} is a real bundle`);
      assert.ok(installed.equals(ours), `${vendored} differs from ${pkgFile}: run scripts/vendor.sh`);
    });
  }
});
