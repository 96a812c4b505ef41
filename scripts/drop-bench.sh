#!/usr/bin/env bash
# Issue 29's drop benchmark: calls whose users lose their connection, with the official client
# (clients/tools/drop-bench.js), on one node and on two nodes over one Redis behind a "load
# balancer" without stickiness (each connection, and each reconnect, goes to a node at random).
#
# Usage: scripts/drop-bench.sh [PAIRS=40] [SECONDS=20] [DROP=0.15]
# Needs a release build (cargo build --release), redis-server and clients/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${1:-40}
SECS=${2:-20}
DROP=${3:-0.15}
BIN=${ROULETTE_BIN:-target/release/roulette}
FLAGS=(--host 127.0.0.1 --max-connections-per-ip 0 --max-new-connections-per-ip 0
  --signal-events-per-sec 0 --chat-events-per-sec 0 --log-level warn)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done; sleep 0.5; }
trap cleanup EXIT
wait_up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return; sleep 0.1; done; echo "node on $1 did not start" >&2; exit 1; }
bench() { (cd clients && node tools/drop-bench.js --urls "$1" --pairs "$PAIRS" --seconds "$SECS" --drop "$DROP"); }

echo "== one node"
P1=$(free_port)
DATA_DIR= "$BIN" "${FLAGS[@]}" --port "$P1" & pids+=($!)
wait_up "$P1"
bench "http://127.0.0.1:$P1"
cleanup; pids=()

echo "== two nodes over one Redis, no stickiness"
R=$(free_port)
redis-server --port "$R" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!)
sleep 0.3
P1=$(free_port); P2=$(free_port)
for p in "$P1" "$P2"; do
  DATA_DIR= "$BIN" "${FLAGS[@]}" --port "$p" --redis-url "redis://127.0.0.1:$R" --node-id "n$p" & pids+=($!)
done
wait_up "$P1"; wait_up "$P2"
bench "http://127.0.0.1:$P1,http://127.0.0.1:$P2"
cleanup; pids=()

echo "== rolling restart: two nodes, no drops; each node in turn gets SIGTERM and starts again"
R=$(free_port)
redis-server --port "$R" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & redis=$!
pids+=($redis)
sleep 0.3
P1=$(free_port); P2=$(free_port)
declare -A node
start() { DATA_DIR= "$BIN" "${FLAGS[@]}" --port "$1" --redis-url "redis://127.0.0.1:$R" --node-id "n$1-$2" & node[$1]=$!; pids+=(${node[$1]}); }
start "$P1" 1; start "$P2" 1
wait_up "$P1"; wait_up "$P2"
(cd clients && node tools/drop-bench.js --urls "http://127.0.0.1:$P1,http://127.0.0.1:$P2" \
  --pairs 30 --seconds 16 --drop 0) & bench_pid=$!
for p in "$P1" "$P2"; do
  sleep 5
  t0=$(date +%s%N)
  kill -TERM "${node[$p]}"; wait "${node[$p]}" || true
  echo "node on $p stopped in $(( ($(date +%s%N) - t0) / 1000000 )) ms" >&2
  start "$p" 2; wait_up "$p"
done
wait "$bench_pid"
