#!/usr/bin/env bash
# Issue 27's alternative, measured: what one matching decision would cost if the index lived in
# Redis, as a Lua script. A deliberately minimal index (a sorted set of waiting users per wish
# key, the head of each acceptable one compared, the entry decoded, the pair taken out; none of
# the language, country and interest lists, blocks or previous partners of the real rule), so
# the figure is a lower bound. Fills DEPTH users nobody can pair with, then runs 100,000
# decisions for newcomers and prints Redis's own CPU per call (INFO commandstats), with PUBLISH
# (what carries a search to the lease holder instead) for comparison.
# Usage: scripts/redis-index-probe.sh   (needs redis-server, redis-cli, redis-benchmark)
set -euo pipefail
P=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$P" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
trap 'redis-cli -p "$P" shutdown nosave >/dev/null 2>&1 || true' EXIT
sleep 0.3
LUA=$(cat <<'LUAEOF'
local keys = redis.call('SMEMBERS', 'wk')
local best, bestseq, bestkey = nil, nil, nil
for _, k in ipairs(keys) do
  local wish = cjson.decode(redis.call('HGET', 'wkdef', k))
  if wish.gender == nil then
    local head = redis.call('ZRANGE', 'b:' .. k, 0, 0, 'WITHSCORES')
    if head[1] and head[1] ~= ARGV[1] then
      local e = cjson.decode(redis.call('HGET', 'e', head[1]))
      if e and (bestseq == nil or tonumber(head[2]) < bestseq) then
        best, bestseq, bestkey = head[1], tonumber(head[2]), k
      end
    end
  end
end
if best then
  redis.call('ZREM', 'b:' .. bestkey, best)
  redis.call('HDEL', 'e', best)
  return best
end
local seq = redis.call('INCR', 'seq')
redis.call('ZADD', 'b:any', seq, ARGV[1])
redis.call('HSET', 'e', ARGV[1], ARGV[2])
return false
LUAEOF
)
ENTRY='{"user":"x","node":"n2","since":0,"profile":{"languages":["en"]},"prefs":{},"previous":null,"search":7}'
for DEPTH in 1000 10000 100000; do
  redis-cli -p "$P" flushall >/dev/null
  SHA=$(redis-cli -p "$P" script load "$LUA")
  redis-cli -p "$P" sadd wk mwf any >/dev/null
  redis-cli -p "$P" hset wkdef mwf '{"gender":"female"}' any '{}' >/dev/null
  python3 - "$P" "$DEPTH" <<'PYEOF'
import json, socket, sys, time
p, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", p))
def cmd(*a):
    out = b"*%d\r\n" % len(a)
    for x in a:
        x = str(x).encode()
        out += b"$%d\r\n%s\r\n" % (len(x), x)
    return out
entry = json.dumps({"user": "m", "node": "n1", "since": 0, "profile": {"gender": "male"},
                    "prefs": {"gender": "female"}, "previous": None, "search": 1})
for i in range(0, n, 1000):
    s.sendall(b"".join(cmd("ZADD", "b:mwf", j, "m%d" % j) + cmd("HSET", "e", "m%d" % j, entry)
                       for j in range(i, min(n, i + 1000))))
time.sleep(1.5)
PYEOF
  redis-cli -p "$P" config resetstat >/dev/null
  redis-benchmark -p "$P" -n 100000 -c 8 -r 1000000 -q evalsha "$SHA" 0 u:__rand_int__ "$ENTRY" >/dev/null
  echo "$DEPTH waiting ($(redis-cli -p "$P" zcard b:mwf) in Redis): $(redis-cli -p "$P" info commandstats | grep cmdstat_evalsha | tr -d '\r')"
done
redis-cli -p "$P" config resetstat >/dev/null
redis-benchmark -p "$P" -n 100000 -c 8 -q publish ch "$ENTRY" >/dev/null
echo "publish: $(redis-cli -p "$P" info commandstats | grep cmdstat_publish | tr -d '\r')"
