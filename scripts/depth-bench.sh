#!/usr/bin/env bash
# Issue 27's figures: what a session costs behind a deep queue, on one node and across the nodes
# of a cluster, in one run of this script.
#
# For each DEPTH: DEPTH users wait who can pair with nobody here (men who insist on a woman,
# `roulette-loadgen idle --waiting`), then two session generators run at once for SECS seconds,
# USERS loops each, side a and side b (`sessions --side`): a user of one side meets only a user
# of the other, so every session pairs one of each.
#   single:  one node (no Redis), both generators on it;
#   cluster: NODES nodes over one redis-server, the waiting users spread over all of them, side a
#            on node 1 (which holds the matching lease: it started first) and side b on node 2,
#            so that every session crosses nodes.
#   then the same cluster with both sides on node 2: matched by node 1 over the bus, every call
#            within node 2 (what separates it from the row above is the calls' relays).
# Prints sessions per second, search -> matched, and CPU ms per session: the node(s) and Redis,
# also less what the same processes spent in as long before the sessions (holding the waiting
# users: their places every second).
# A node holds at most ~19,000 connections here (the file limit is 20,000 a process), so the
# single node stops at 10,000 waiting and the cluster runs 6 nodes for 100,000.
#
# Usage: scripts/depth-bench.sh [USERS=25] [SECS=10] [DEPTHS="2000 1000 10000 100000"] [RUNS=1]
# The cluster's nodes have direct links (LINK_ADDRESS) unless LINKS=0.
# RUNS > 1 measures each depth that many times, one node and the cluster in turn, and prints each
# run's ratio (across nodes against one node, both less their idle cost) and their median: on a
# shared machine one run's ratio is noise (1.6 to 2.4 for the same build, BENCHMARKS.md).
# Needs a release build (cargo build --release --workspace) and redis-server; TARGET_DIR (or
# CARGO_TARGET_DIR) names the target directory whose release binaries run.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${1:-25}
SECS=${2:-10}
DEPTHS=${3:-"2000 1000 10000 100000"}
RUNS=${4:-1}
# Each measurement's label and CPU ms per session less the idle cost, for the ratios.
RESULTS=$(mktemp)
# The binaries of another build (an A/B comparison): TARGET_DIR, else CARGO_TARGET_DIR, else target.
TARGET_DIR=${TARGET_DIR:-${CARGO_TARGET_DIR:-target}}
SERVER=$TARGET_DIR/release/roulette
LOADGEN=$TARGET_DIR/release/roulette-loadgen
FLAGS=(--max-connections-per-ip 0 --max-new-connections-per-ip 0 --signal-events-per-sec 0
  --chat-events-per-sec 0 --search-events-per-min 0 --other-events-per-sec 0
  --rate-limit-max-requests 0 --max-waiting-time-ms 3600000 --log-level warn)
# A generous node timeout: 100,000 connections opened at once saturate this machine for a while.
CLUSTER_FLAGS=(--node-timeout-ms 60000)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }
stat_of() { curl -s --max-time 2 "127.0.0.1:$1/stats" | python3 -c "import json,sys; d=json.load(sys.stdin); print($2)" 2>/dev/null || echo -1; }

pids=()
redis_port=""
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  if [ -n "$redis_port" ]; then redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; fi
  redis_port=""
}
trap 'stop_all; rm -f "$RESULTS"' EXIT

# crowd PORT N: N waiting users on the node at PORT, held for long enough (in the background).
crowd() {
  local port=$1 n=$2 i
  while [ "$n" -gt 0 ]; do
    i=$((n > 18000 ? 18000 : n))
    "$LOADGEN" --url "http://127.0.0.1:$port" idle "$i" --waiting --hold 600 >/dev/null 2>&1 &
    pids+=($!)
    n=$((n - i))
  done
}

# wait_for PORT EXPR N: until the Python expression over /stats `d` reads N.
wait_for() {
  for _ in $(seq 900); do
    [ "$(stat_of "$1" "$2")" -ge "$3" ] && return 0
    sleep 1
  done
  echo "   never reached $3: $2" >&2
  return 1
}

# measure LABEL PORT_A PORT_B PID...: both generators at once; CPU of the PIDs over the run.
measure() {
  local label=$1 pa=$2 pb=$3
  shift 3
  local before=() idle=0
  # What the processes spend holding the waiting users alone (queue-status, places), first.
  for p in "$@"; do before+=("$(cpu "$p")"); done
  sleep "$SECS"
  local i=0
  for p in "$@"; do
    idle=$(echo "$idle + $(cpu "$p") - ${before[$i]}" | bc)
    i=$((i + 1))
  done
  before=()
  for p in "$@"; do before+=("$(cpu "$p")"); done
  "$LOADGEN" --url "http://127.0.0.1:$pa" --json /tmp/depth-a.json sessions "$USERS" "$SECS" --side a >/dev/null &
  local ga=$!
  "$LOADGEN" --url "http://127.0.0.1:$pb" --json /tmp/depth-b.json sessions "$USERS" "$SECS" --side b >/dev/null &
  local gb=$!
  wait "$ga" "$gb"
  local spent=0 each=""
  i=0
  for p in "$@"; do
    local d
    d=$(echo "$(cpu "$p") - ${before[$i]}" | bc)
    spent=$(echo "$spent + $d" | bc)
    each="$each $d"
    i=$((i + 1))
  done
  python3 - "$label" "$spent" "$each" "$SECS" "$idle" "$RESULTS" <<'EOF'
import json, sys
label, spent, each, secs = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(), float(sys.argv[4])
idle = float(sys.argv[5])
a, b = (json.load(open(f"/tmp/depth-{s}.json")) for s in "ab")
sessions = a["sessionsCompleted"] + b["sessionsCompleted"]
fails = sum(sum(x["failures"].values()) if isinstance(x["failures"], dict) else x["failures"] for x in (a, b))
p = [x["searchToMatched"] for x in (a, b)]
print(f"   {label}: {sessions / secs:.0f} sessions/s ({2 * sessions / secs:.0f} searches decided/s), "
      f"search->matched p50 {max(q['p50Ms'] for q in p)} / p99 {max(q['p99Ms'] for q in p)} ms, "
      f"CPU {1000 * spent / max(sessions, 1):.3f} ms per session (CPU s each: {' '.join(each)}), "
      f"{1000 * (spent - idle) / max(sessions, 1):.3f} ms without the {idle:.2f} CPU s the same {secs:.0f} s cost before the sessions, failures {fails}")
kind = "single" if label.startswith("single") else "across" if label.startswith("cluster") else "within"
with open(sys.argv[6], "a") as f:
    f.write(f"{kind} {1000 * (spent - idle) / max(sessions, 1):.6f}\n")
EOF
}

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; nodes, Redis and generators on it"
for depth in $DEPTHS; do
  : >"$RESULTS"
  for run in $(seq 1 "$RUNS"); do
    if [ "$RUNS" -gt 1 ]; then echo " -- $depth waiting, run $run of $RUNS"; fi
    if [ "$depth" -le 18000 ]; then
      port=$(free_port)
      "$SERVER" --host 127.0.0.1 --port "$port" "${FLAGS[@]}" &
      node=$!
      pids+=($node)
      until curl -sf "127.0.0.1:$port/health" >/dev/null; do sleep 0.1; done
      crowd "$port" "$depth"
      wait_for "$port" 'd["waitingUsers"]' $((depth * 99 / 100))
      sleep 2
      measure "single node, $(stat_of "$port" 'd["waitingUsers"]') waiting" "$port" "$port" "$node"
      stop_all
    fi

    nodes=$((depth > 18000 ? 6 : 2))
    redis_port=$(free_port)
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
    sleep 0.3
    redis_pid=$(pgrep -n -f "redis-server.*:$redis_port")
    ports=()
    node_pids=()
    for i in $(seq 1 "$nodes"); do
      port=$(free_port)
      # Direct links between the nodes (LINK_ADDRESS, read from the environment so that an
      # earlier build without them runs the same command); LINKS=0: Redis carries everything.
      link=""
      if [ "${LINKS:-1}" != 0 ]; then link="127.0.0.1:$(free_port)"; fi
      ${link:+env LINK_ADDRESS=$link} "$SERVER" --host 127.0.0.1 --port "$port" --redis-url "redis://127.0.0.1:$redis_port" \
        --node-id "node-$i" "${FLAGS[@]}" "${CLUSTER_FLAGS[@]}" &
      pids+=($!)
      node_pids+=($!)
      ports+=("$port")
      until curl -sf "127.0.0.1:$port/health" >/dev/null; do sleep 0.1; done
    done
    for i in $(seq 0 $((nodes - 1))); do crowd "${ports[$i]}" $((depth / nodes)); done
    # A few of a 100,000 crowd may fail to connect on this machine: 99 % of it waiting will do.
    wait_for "${ports[0]}" 'd["cluster"].get("queued", -1)' $((depth / nodes * nodes * 99 / 100))
    sleep 2
    measure "cluster of $nodes, $(stat_of "${ports[0]}" 'd["cluster"]["queued"]') waiting, every session across nodes" \
      "${ports[0]}" "${ports[1]}" "${node_pids[@]}" "$redis_pid"
    # The same cluster, both sides on node 2: matched by node 1 over the bus, the calls within
    # node 2. What is left of the difference is the calls' relays between nodes.
    measure "the same cluster, every session on node 2 (matched by node 1)" \
      "${ports[1]}" "${ports[1]}" "${node_pids[@]}" "$redis_pid"
    stop_all
  done
  # Each run's ratio (across nodes against one node), and the median of the runs.
  python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
single = [float(v) for k, v in rows if k == "single"]
across = [float(v) for k, v in rows if k == "across"]
ratios = [c / s for s, c in zip(single, across) if s > 0]
if ratios:
    print(f"   ratio across nodes / one node, each run: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f}")
EOF
done
