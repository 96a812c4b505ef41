#!/usr/bin/env bash
# Runs every load-generator scenario for a few seconds against a fresh server: each must connect,
# match and relay with no failure, loss or reordering (the load generator's exit status says so).
# A smoke test, not a measurement: BENCHMARKS.md has the real runs and their commands.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-debug}
SERVER=target/$PROFILE/roulette
LOADGEN=target/$PROFILE/roulette-loadgen
# The scenarios send far above a person's rate from a few addresses: the abuse limits are off.
SERVER_FLAGS=(--host 127.0.0.1 --port 0 --max-connections-per-ip 0 --max-new-connections-per-ip 0
  --signal-events-per-sec 0 --chat-events-per-sec 0 --search-events-per-min 0 --other-events-per-sec 0)

log=$(mktemp)
"$SERVER" "${SERVER_FLAGS[@]}" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | cut -d' ' -f3) || true
  [ -n "${url:-}" ] && break
  sleep 0.1
done
[ -n "${url:-}" ] || { echo "the server did not start:"; cat "$log"; exit 1; }

run() {
  echo "== roulette-loadgen $*"
  "$LOADGEN" --url "$url" --server-pid "$pid" "$@"
}
run idle 300 --hold 1
run sessions 20 3
run --polling sessions 20 3
run relay 10 3
run soak 6 --idle 200 --users 10 --pairs 5 --chaos 10

# Once every client has left (and the reconnection grace of the dropped ones has passed), the
# server holds nobody.
sleep 11
stats=$(curl -fsS "$url/stats")
echo "$stats" | grep -q '"connectedUsers":0,"waitingUsers":0,"reconnectingUsers":0,"activeRooms":0' \
  || { echo "the server still holds users after the run: $stats"; exit 1; }
echo "== load-generator smoke run passed"
