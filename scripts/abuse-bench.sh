#!/usr/bin/env bash
# Runs every memory attack of `roulette-loadgen attack` against a fresh server each, with default
# settings (only the address-spread limits off where an attack needs several connections), and
# prints one line per attack: RSS before, at its peak, at its end and 2 s after the attackers left.
#
#   scripts/abuse-bench.sh [SERVER_BINARY] [SECONDS]
#
# SERVER_BINARY defaults to target/release/roulette; give another build to compare (BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER=${1:-target/release/roulette}
SECONDS_EACH=${2:-8}
LOADGEN=target/release/roulette-loadgen

run() {
  local kind=$1
  shift
  local log
  log=$(mktemp)
  "$SERVER" --host 127.0.0.1 --port 0 "$@" >"$log" 2>&1 &
  local pid=$!
  local url=
  for _ in $(seq 100); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | cut -d' ' -f3) || true
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "the server did not start:"; cat "$log"; kill $pid; exit 1; }
  local out
  out=$("$LOADGEN" --url "$url" --server-pid "$pid" --json - attack "$kind" "$SECONDS_EACH" --conns "${CONNS:-20}" \
    | python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{\n"):]); print(" ".join(f"{k}={j[k]}" for k in ["attack","framesSent","rssBeforeMb","rssPeakMb","rssAtEndMb","rssAfterLeavingMb"]), j["extra"] or "")')
  echo "$out"
  kill $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  rm -f "$log"
}

run pings
run namespaces
run names
run relay
CONNS=5000 run idle-tcp
