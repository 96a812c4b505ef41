#!/usr/bin/env bash
# Every check and every test: formatting, lints, the Rust unit, property and integration tests
# (the cluster tests start their own redis-server),
# then the official-client interoperability suite and the browser end-to-end test (Node), whole
# sessions with python-socketio (installed from PyPI if missing), then a few seconds of every
# load-generator scenario.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets

echo "== node clients (official socket.io-client, Chromium end to end)"
cargo build --workspace --quiet
if [ ! -d clients/node_modules ] || [ clients/package-lock.json -nt clients/node_modules/.package-lock.json ]; then
  npm ci --prefix clients --no-audit --no-fund
fi
npm test --prefix clients

echo "== python-socketio (another implementation of the protocol), every transport"
if ! python3 -c 'import socketio, websocket' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "python-socketio[client]>=5,<6"
fi
python3 clients/test/python_client.py

echo "== load generator smoke run (every scenario, a few seconds each)"
./scripts/loadgen-smoke.sh
