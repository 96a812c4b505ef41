#!/usr/bin/env bash
# Every check and every test: the module layering (scripts/layers.py), formatting, lints, the Rust
# unit, property and integration tests
# (the cluster and Sentinel tests start their own redis-server),
# then the official-client interoperability suite and the browser end-to-end test (Node), whole
# sessions with python-socketio (installed from PyPI if missing), a few seconds of every
# load-generator scenario and of the Artillery scenario (load-test.yml; Artillery from npm,
# pinned), and the README's quick start on a fresh clone of the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need, checked before anything is built. As root on Debian/Ubuntu the system
# packages are installed here (as .ci/run does); elsewhere the missing ones are named with the
# command that installs them.
missing=()
apt=()
command -v cargo >/dev/null 2>&1 || missing+=("cargo (Rust stable: https://rustup.rs)")
if ! command -v node >/dev/null 2>&1 || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  missing+=("Node.js 20 or later (https://nodejs.org, or: apt-get install nodejs npm)")
fi
command -v npm >/dev/null 2>&1 || missing+=("npm (apt-get install npm)")
command -v python3 >/dev/null 2>&1 || missing+=("python3 (apt-get install python3 python3-pip)")
command -v redis-server >/dev/null 2>&1 || apt+=(redis-server)
# tests/sentinel.rs drives its master, replica and sentinels with redis-cli (redis-tools).
command -v redis-cli >/dev/null 2>&1 || apt+=(redis-tools)
command -v curl >/dev/null 2>&1 || apt+=(curl)
if [ ${#apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== apt-get install ${apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt[@]}" >/dev/null
  else
    missing+=("${apt[*]} (Debian/Ubuntu: sudo apt-get install ${apt[*]}; macOS: brew install redis)")
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "The tests need what this machine lacks:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] ||
  echo "note: no Chromium at ${CHROMIUM_PATH:-/usr/bin/chromium}: the browser tests will be skipped (apt-get install chromium)"
command -v turnserver >/dev/null 2>&1 ||
  echo "note: no turnserver: the call forced through TURN will be skipped (apt-get install coturn)"

echo "== dependencies point one way (scripts/layers.py over cargo-modules' graph; files <= 500 lines)"
if ! cargo modules --version 2>/dev/null | grep -q "0\.27"; then
  echo "installing cargo-modules 0.27 (the last release that builds with this toolchain)"
  cargo install cargo-modules --version 0.27.0 --locked --quiet
fi
python3 scripts/layers.py

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== promtool check rules deploy/monitoring/alerts.yml"
if command -v promtool >/dev/null 2>&1; then
  promtool check rules deploy/monitoring/alerts.yml
else
  echo "skipped: no promtool (apt-get install prometheus)"
fi
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

echo "== the seed's Artillery scenario (load-test.yml), briefly: no virtual user may fail"
ARTILLERY_DURATION=3 ./scripts/artillery.sh

echo "== the README's quick start on a fresh clone (cargo run --release, two browser pages, the dashboard)"
./scripts/quickstart-test.sh
