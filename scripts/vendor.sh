#!/usr/bin/env bash
# Copies the browser bundles the demo page and the dashboard load from the npm packages that
# clients/package-lock.json pins into public/vendor/, which the server builds into its binary.
# Run after changing either package's version; clients/test/vendor.test.js checks that the
# copies match the installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d clients/node_modules ] || npm ci --prefix clients --no-audit --no-fund
install -D -m 644 clients/node_modules/socket.io-client/dist/socket.io.min.js public/vendor/socket.io/socket.io.min.js
install -D -m 644 clients/node_modules/chart.js/dist/chart.umd.min.js public/vendor/chart.js/chart.umd.min.js
echo "public/vendor/ now holds socket.io-client $(node -p 'require("./clients/node_modules/socket.io-client/package.json").version') and chart.js $(node -p 'require("./clients/node_modules/chart.js/package.json").version')"
