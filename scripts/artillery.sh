#!/usr/bin/env bash
# Runs the seed's load test, `artillery run load-test.yml`, against a fresh server, with Artillery
# 2 pinned by clients/artillery/package-lock.json (installed there on first use), prints
# Artillery's summary, and fails when a virtual user failed (or none completed).
#
#   scripts/artillery.sh                            # the scenario's own phases (3.5 minutes)
#   ARTILLERY_DURATION=5 scripts/artillery.sh       # 5 s of arrivals, people who talk for 1 s
#
# ARTILLERY_DURATION: seconds of arrivals at ARTILLERY_RATE (default 10) a second, instead of the
#   scenario's phases, with its think times cut to 1 s (the test command's smoke run).
# ROULETTE_BIN: the server binary (default target/$PROFILE/roulette, PROFILE debug or release,
#   default debug). The server gets the per-address limits lifted, as load-test.yml says
#   (Artillery opens every virtual user from one address), and keeps its event budgets.
# ARTILLERY_REPORT: where to keep Artillery's JSON report (default: a temporary file).
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-debug}
SERVER=${ROULETTE_BIN:-target/$PROFILE/roulette}
[ -x "$SERVER" ] || { echo "no server binary at $SERVER: build it (cargo build, or cargo build --release with PROFILE=release), or set ROULETTE_BIN"; exit 1; }

dir=clients/artillery
if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
  echo "== npm ci in $dir (Artillery, pinned; no install scripts, no browser download)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$dir" --ignore-scripts --no-audit --no-fund
fi

log=$(mktemp)
report=${ARTILLERY_REPORT:-$(mktemp --suffix=.json)}
DATA_DIR= LOG_FORMAT=text LOG_LEVEL=info "$SERVER" --host 127.0.0.1 --port 0 \
  --max-connections-per-ip 0 --max-new-connections-per-ip 0 >"$log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  rm -f "$log"
  [ -n "${ARTILLERY_REPORT:-}" ] || rm -f "$report"
}
trap cleanup EXIT
for _ in $(seq 100); do
  url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | cut -d' ' -f3) || true
  [ -n "${url:-}" ] && break
  sleep 0.1
done
[ -n "${url:-}" ] || { echo "the server did not start:"; cat "$log"; exit 1; }

args=(run load-test.yml --target "$url" --output "$report")
if [ -n "${ARTILLERY_DURATION:-}" ]; then
  rate=${ARTILLERY_RATE:-10}
  args+=(--overrides "{\"config\":{\"phases\":[{\"name\":\"short\",\"duration\":$ARTILLERY_DURATION,\"arrivalRate\":$rate}]}}"
    --variables '{"talkSeconds":1,"afterSkipSeconds":1}')
fi
echo "== artillery ${args[*]}"
ARTILLERY_DISABLE_TELEMETRY=true NO_UPDATE_NOTIFIER=1 "$dir/node_modules/.bin/artillery" "${args[@]}"

# What the server spent: CPU time (user + system, 100 ticks a second) and its peak resident set.
cpu=$(awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$pid/stat" 2>/dev/null) || cpu="?"
peak=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null) || peak="?"
echo "server: ${cpu} s of CPU, peak RSS ${peak} MB; $(curl -fsS "$url/stats" 2>/dev/null | head -c 300 || true)"

# Artillery exits 0 whatever its virtual users went through: the report decides.
node -e '
  const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).aggregate.counters;
  const n = (k) => c[k] ?? 0;
  const errors = Object.keys(c).filter((k) => k.startsWith("errors."));
  console.log(`virtual users: ${n("vusers.created")} created, ${n("vusers.completed")} completed, ${n("vusers.failed")} failed; ${n("socketio.emit")} events emitted`);
  if (n("vusers.failed") > 0 || n("vusers.completed") === 0 || errors.length) {
    console.error(`failed: ${errors.map((k) => `${k}: ${c[k]}`).join(", ") || "no virtual user completed"}`);
    process.exit(1);
  }
' "$report"
echo "== artillery run passed"
