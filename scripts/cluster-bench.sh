#!/usr/bin/env bash
# The cluster figures of BENCHMARKS.md: a redis-server of its own, NODES Roulette nodes, then
#  1. cross-node relay: PAIRS pairs, one member on node 1 and the other on node 2, ping-ponging
#     ICE candidates with 1, 8 and 64 in flight per direction (throughput, latency, loss, order,
#     and the CPU seconds of both nodes and of Redis);
#  2. idle: CONNS authenticated connections spread evenly over all nodes, held while /stats of
#     node 1 shows the cluster's totals, with every node's RSS.
# Usage: scripts/cluster-bench.sh [NODES=6] [CONNS=100002] [PAIRS=50] [SECONDS=10]
# Needs a release build (cargo build --release --workspace) and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${1:-6}
CONNS=${2:-100002}
PAIRS=${3:-50}
SECS=${4:-10}
SERVER=target/release/roulette
LOADGEN=target/release/roulette-loadgen
REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE=$((41000 + RANDOM % 1000))
FLAGS=(--max-connections-per-ip 0 --max-new-connections-per-ip 0 --signal-events-per-sec 0
  --chat-events-per-sec 0 --search-events-per-min 0 --other-events-per-sec 0 --log-level warn)

pids=()
cleanup() {
  # Nodes first (they take their keys out of Redis as they stop), then Redis.
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
sleep 0.3
for i in $(seq 1 "$NODES"); do
  "$SERVER" --host 127.0.0.1 --port $((BASE + i)) --redis-url "redis://127.0.0.1:$REDIS_PORT" \
    --node-id "node-$i" "${FLAGS[@]}" &
  pids+=($!)
done
for i in $(seq 1 "$NODES"); do
  until curl -sf "127.0.0.1:$((BASE + i))/health" >/dev/null; do sleep 0.1; done
done
redis_pid=$(pgrep -n -f "redis-server.*:$REDIS_PORT")
cpu() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; $NODES nodes + Redis + load generator on it"
echo "== node RSS at start (KB): $(for p in "${pids[@]}"; do echo -n "$(rss_kb "$p") "; done)"

for w in 1 8 64; do
  a1=$(cpu "${pids[0]}"); a2=$(cpu "${pids[1]}"); ar=$(cpu "$redis_pid")
  echo "== relay $PAIRS pairs across node 1 and node 2, window $w, ${SECS}s"
  "$LOADGEN" --url "http://127.0.0.1:$((BASE + 1))" --partner-url "http://127.0.0.1:$((BASE + 2))" \
    relay "$PAIRS" "$SECS" --window "$w" | grep -E 'latency|lost|relayed|relaysPerSecond|reordered|failures'
  echo "   CPU s: node 1 $(echo "$(cpu "${pids[0]}") - $a1" | bc), node 2 $(echo "$(cpu "${pids[1]}") - $a2" | bc), redis $(echo "$(cpu "$redis_pid") - $ar" | bc)"
done

per=$((CONNS / NODES))
echo "== idle: $per authenticated connections on each of $NODES nodes"
lg=()
for i in $(seq 1 "$NODES"); do
  "$LOADGEN" --url "http://127.0.0.1:$((BASE + i))" --json "/tmp/cluster-idle-$i.json" idle "$per" --hold 20 >/dev/null &
  lg+=($!)
done
want=$((per * NODES))
for _ in $(seq 600); do
  got=$(curl -s --max-time 2 "127.0.0.1:$((BASE + 1))/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster"]["users"])' 2>/dev/null || echo 0)
  [ "$got" -ge "$want" ] && break
  sleep 1
done
sleep 2
curl -s "127.0.0.1:$((BASE + 1))/stats" | python3 -c 'import json,sys; c=json.load(sys.stdin)["cluster"]; print("   cluster /stats:", json.dumps({k: c[k] for k in ("nodes","connections","users","messagesLost")}))'
echo "   node RSS (KB): $(for p in "${pids[@]}"; do echo -n "$(rss_kb "$p") "; done)  redis RSS (KB): $(rss_kb "$redis_pid")"
for p in "${lg[@]}"; do wait "$p"; done
for i in $(seq 1 "$NODES"); do
  python3 -c "import json; d=json.load(open('/tmp/cluster-idle-$i.json')); print('   node $i: authenticated', d['authenticated'], 'all within', d['allAuthenticatedAfterMs'], 'ms, failures', d['failures'])"
done
