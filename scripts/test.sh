#!/usr/bin/env bash
# Every check and every test: formatting, lints, the Rust unit, property and integration tests,
# then the official-client interoperability suite and the browser end-to-end test (Node).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets

echo "== node clients (official socket.io-client, Chromium end to end)"
cargo build --quiet
if [ ! -d clients/node_modules ] || [ clients/package-lock.json -nt clients/node_modules/.package-lock.json ]; then
  npm ci --prefix clients --no-audit --no-fund
fi
npm test --prefix clients
