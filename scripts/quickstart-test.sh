#!/usr/bin/env bash
# The README's quick start on a fresh clone: clones this repository (its committed HEAD) into a
# temporary directory, runs the first quick-start command there exactly as written
# (`cargo run --release`; PORT and HOST only keep it on a free loopback port), and drives the
# demo page in two Chromium pages through a call and the dashboard to a live figure
# (clients/test/quickstart.test.js). The build reuses this checkout's target directory, so only
# the first run is a cold release build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
chromium=${CHROMIUM_PATH:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  echo "skipped: no Chromium at $chromium (apt-get install chromium)"
  exit 0
fi
[ -d "$root/clients/node_modules" ] || npm ci --prefix "$root/clients" --no-audit --no-fund

tmp=$(mktemp -d)
log="$tmp/server.log"
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
git clone --quiet "$root" "$tmp/roulette"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cd "$tmp/roulette"
echo "== cargo run --release   (in a fresh clone at $tmp/roulette)"
PORT=$port HOST=127.0.0.1 CARGO_TARGET_DIR="$root/target" cargo run --release >"$log" 2>&1 &
pid=$!
for _ in $(seq 1800); do
  grep -q "listening on http://" "$log" && break
  kill -0 "$pid" 2>/dev/null || { echo "cargo run --release failed:"; cat "$log"; exit 1; }
  sleep 0.5
done
grep -q "listening on http://" "$log" || { echo "the server did not start within 15 minutes:"; tail -50 "$log"; exit 1; }
grep "listening on" "$log"

QUICKSTART_URL="http://127.0.0.1:$port" node --test "$root/clients/test/quickstart.test.js"
