#!/usr/bin/env bash
# Instructions Switchyard executes per ClickHouse HTTP request, under valgrind --tool=callgrind:
# a count that does not move with the machine's load, so a change to the request path can be
# judged on a shared machine. Two proxies, as in bench.sh: cache off (rw-split, every request is
# a miss that reaches ClickHouse) and cache on (cache-rules, hits after the first).
#
#   examples/clickhouse/callgrind.sh          # REQUESTS="1000 3000": per-request figure is
#                                             # (Ir of the larger run - Ir of the smaller) /
#                                             # (difference of their requests)
#
# Each run is one curl process sending the requests one after another over one keep-alive
# connection. The profiles stay in BENCH_STATE (callgrind.out.*) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/../.."
REQUESTS=${REQUESTS:-"1000 3000"}
STATE=${BENCH_STATE:-/tmp/switchyard-ch-callgrind}
export CH_INSTANCES=1 CH_HTTP_PORT_BASE=${CH_HTTP_PORT_BASE:-58333} CH_TCP_PORT_BASE=59310 CH_INTERSERVER_PORT_BASE=59410 CH_LOG_QUERIES=0
CH=127.0.0.1:$CH_HTTP_PORT_BASE
MISS_PORT=18335 HIT_PORT=18336
SQL='SELECT+number+FROM+system.numbers+LIMIT+10'
BIN=${SWITCHYARD_BIN:-target/release/switchyard}

log() { echo "[callgrind] $*" >&2; }
command -v valgrind >/dev/null || { log "valgrind is missing: apt-get install -y valgrind"; exit 1; }
[ -x "$BIN" ] || { log "building switchyard (release)"; cargo build --release -p switchyard --quiet; }
[ -f policies/dist/cache-rules.wasm ] && [ -f policies/dist/rw-split.wasm ] || policies/build.sh >/dev/null

mkdir -p "$STATE"
rm -f "$STATE"/callgrind.out.*
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  examples/clickhouse/clickhouse.sh stop "$STATE/clickhouse" >/dev/null 2>&1 || true
}
trap cleanup EXIT
examples/clickhouse/clickhouse.sh start "$STATE/clickhouse"

# shellcheck source=examples/clickhouse/bench-config.sh
source examples/clickhouse/bench-config.sh

start_proxy() { # port policy cache
  config "$1" "$2" "$3" >"$STATE/proxy-$1.toml"
  valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$STATE/callgrind.out.%p" \
    "$BIN" run --config "$STATE/proxy-$1.toml" >"$STATE/proxy-$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 600); do
    [ "$(curl -s --max-time 2 "http://127.0.0.1:$1/ping" 2>/dev/null)" = "Ok." ] && return 0
    sleep 0.2
  done
  log "proxy on $1 did not start:"; cat "$STATE/proxy-$1.log" >&2; exit 1
}

take() { # pid -> Ir since the last dump (dumping zeroes the counters)
  local before after f
  before=$(find "$STATE" -maxdepth 1 -name "callgrind.out.$1.*" | wc -l)
  callgrind_control -d "$1" >/dev/null 2>&1
  for _ in $(seq 1 300); do
    after=$(find "$STATE" -maxdepth 1 -name "callgrind.out.$1.*" | wc -l)
    [ "$after" -gt "$before" ] && break
    sleep 0.1
  done
  f=$(ls -t "$STATE/callgrind.out.$1".* | head -1)
  awk '/^(summary|totals):/ { print $2; exit }' "$f"
}

requests() { # port count: one curl, one keep-alive connection, count requests in a row
  local url="http://127.0.0.1:$1/?query=$SQL&user=bench&password=bench" i
  for i in $(seq 1 "$2"); do echo "url = \"$url\""; echo "output = /dev/null"; done >"$STATE/curl-$1.cfg"
  curl -s --fail --config "$STATE/curl-$1.cfg"
}

echo "| proxy | requests | Ir | Ir/request |"
echo "| --- | ---: | ---: | ---: |"
for run in "miss $MISS_PORT rw-split false" "hit $HIT_PORT cache-rules true"; do
  read -r name port policy cache <<<"$run"
  start_proxy "$port" "$policy" "$cache"
  pid=${pids[-1]}
  requests "$port" 200 # warm-up: backend connections, the classifier's and the cache's entries
  take "$pid" >/dev/null
  first=
  for n in $REQUESTS; do
    requests "$port" "$n"
    ir=$(take "$pid")
    echo "| $name | $n | $ir | $((ir / n)) |"
    if [ -z "$first" ]; then first="$n $ir"; else last="$n $ir"; fi
  done
  read -r n0 ir0 <<<"$first"
  read -r n1 ir1 <<<"$last"
  echo "| $name | difference | | **$(((ir1 - ir0) / (n1 - n0)))** |"
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
log "profiles in $STATE/callgrind.out.* (callgrind_annotate --inclusive=yes FILE)"
