#!/usr/bin/env bash
# Throughput of a small SELECT with wrk (HTTP keep-alive): straight to ClickHouse, through
# Switchyard with a policy and the cache off (every request reaches ClickHouse), and through
# Switchyard with the cache on (hits). Prints requests/s, latencies and the ratios to direct.
#
#   examples/clickhouse/bench.sh                 # 3 interleaved rounds of 10 s runs, 32 connections
#   DURATION=30s CONNECTIONS=64 examples/clickhouse/bench.sh
#   WORKERS=1 examples/clickhouse/bench.sh       # proxy runtime threads (default: one per core)
#
# Uses target/release/switchyard (built if missing), wrk, one ClickHouse instance of its own
# (examples/clickhouse/clickhouse.sh, query log off) and the example policies rw-split (cache off)
# and cache-rules (cache on). Everything listens on loopback and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
STATE=${BENCH_STATE:-/tmp/switchyard-bench}
export CH_INSTANCES=1 CH_HTTP_PORT_BASE=${CH_HTTP_PORT_BASE:-58323} CH_TCP_PORT_BASE=59300 CH_INTERSERVER_PORT_BASE=59400 CH_LOG_QUERIES=0
CH=127.0.0.1:$CH_HTTP_PORT_BASE
MISS_PORT=18325 HIT_PORT=18326
SQL='SELECT number FROM system.numbers LIMIT 10'
BIN=${SWITCHYARD_BIN:-target/release/switchyard}

log() { echo "[bench] $*" >&2; }
command -v wrk >/dev/null || { log "wrk is missing: apt-get install -y wrk"; exit 1; }
[ -x "$BIN" ] || { log "building switchyard (release)"; cargo build --release -p switchyard --quiet; }
[ -f policies/dist/cache-rules.wasm ] && [ -f policies/dist/rw-split.wasm ] || policies/build.sh >/dev/null

mkdir -p "$STATE"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  examples/clickhouse/clickhouse.sh stop "$STATE/clickhouse" >/dev/null 2>&1 || true
}
trap cleanup EXIT
examples/clickhouse/clickhouse.sh start "$STATE/clickhouse"

config() { # port policy cache(true|false)
  cat <<TOML
[[listener]]
name = "bench"
protocol = "clickhouse-http"
bind = "127.0.0.1:$1"
cluster = "ch"

[cluster.ch]
protocol = "clickhouse-http"

[cluster.ch.pool.reader]
role = "replica"
nodes = ["$CH"]
size = 256
auth = { user = "reader", password = "reader_pass" }

[cluster.ch.pool.writer]
role = "primary"
nodes = ["$CH"]
auth = { user = "writer", password = "writer_pass" }

[cache]
enabled = $3
max_ttl = "10m"

[policy]
path = "policies/dist/$2.wasm"
artifact_dir = "$STATE/artifacts"
watch = false
[policy.config]
default_ttl = "600000"

[[user]]
name = "bench"
password = "bench"

[log]
level = "warn"
${WORKERS:+
[server]
worker_threads = $WORKERS}
TOML
}

start_proxy() { # port policy cache
  config "$1" "$2" "$3" >"$STATE/proxy-$1.toml"
  "$BIN" run --config "$STATE/proxy-$1.toml" >"$STATE/proxy-$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    [ "$(curl -s --max-time 1 "http://127.0.0.1:$1/ping" 2>/dev/null)" = "Ok." ] && return 0
    sleep 0.1
  done
  log "proxy on $1 did not start:"; cat "$STATE/proxy-$1.log" >&2; exit 1
}
start_proxy "$MISS_PORT" rw-split false
MISS_PID=${pids[-1]}
start_proxy "$HIT_PORT" cache-rules true
HIT_PID=${pids[-1]}
CH_PID=$(cat "$STATE/clickhouse/"*/server.pid 2>/dev/null | head -n 1)
ticks() { [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

q=$(printf '%s' "$SQL" | sed 's/ /%20/g')
direct="http://$CH/?user=reader&password=reader_pass&query=$q"
miss="http://127.0.0.1:$MISS_PORT/?user=bench&password=bench&query=$q"
hit="http://127.0.0.1:$HIT_PORT/?user=bench&password=bench&query=$q"
[ "$(curl -s "$miss" | wc -l)" = 10 ] || { log "the proxy does not answer the query"; exit 1; }
curl -s -o /dev/null -D - "$hit" | grep -qi 'x-cache: MISS' && curl -s -o /dev/null -D - "$hit" | grep -qi 'x-cache: HIT' \
  || { log "the cache-on proxy does not hit"; exit 1; }

# CPU time per request (user + system, from /proc/PID/stat ticks) of the proxy and of ClickHouse:
# on a shared 2-core machine it says where the cycles go better than req/s alone.
measure() { # url proxy-pid -> "rps p50 p99 proxy-us/req ch-us/req errors"
  local p0 c0 p1 c1 out
  p0=$(ticks "$2"); c0=$(ticks "$CH_PID")
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1")
  p1=$(ticks "$2"); c1=$(ticks "$CH_PID")
  echo "$out" >>"$STATE/wrk.txt"
  local errors; errors=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' \n' ' ' || true)
  local reqs hz; reqs=$(awk '/requests in/ {print $1}' <<<"$out"); hz=$(getconf CLK_TCK)
  echo "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out") $(awk '$1 == "50%" {print $2}' <<<"$out") $(awk '$1 == "99%" {print $2}' <<<"$out")" \
    "$(awk -v t=$((p1 - p0)) -v n="$reqs" -v hz="$hz" 'BEGIN {printf "%.1f", n ? t * 1e6 / hz / n : 0}')" \
    "$(awk -v t=$((c1 - c0)) -v n="$reqs" -v hz="$hz" 'BEGIN {printf "%.1f", n ? t * 1e6 / hz / n : 0}')" "${errors:-}"
}

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION x $ROUNDS rounds (interleaved, median), keep-alive, GET ?query=$SQL"
echo "($(nproc) cores shared by wrk, ClickHouse and the proxy; proxy worker threads: ${WORKERS:-one per core})"
: >"$STATE/wrk.txt"
names=(direct miss hit)
labels=("direct to ClickHouse" "switchyard, cache off" "switchyard, cache on (hits)")
urls=("$direct" "$miss" "$hit")
proxy_pids=("" "$MISS_PID" "$HIT_PID")
for i in 0 1 2; do wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "${urls[$i]}" >/dev/null; done # warm-up
declare -A rows
for round in $(seq 1 "$ROUNDS"); do
  for i in 0 1 2; do
    rows[${names[$i]}]+="$(measure "${urls[$i]}" "${proxy_pids[$i]}")"$'\n'
  done
done
for i in 0 1 2; do
  all=${rows[${names[$i]}]}
  rps=$(awk 'NF {print $1}' <<<"$all" | median)
  line=$(awk -v r="$rps" 'NF && $1 == r {print; exit}' <<<"$all")
  printf '%-28s %10s req/s (rounds: %s)  p50 %-8s p99 %-8s CPU/req: proxy %s us, ClickHouse %s us %s\n' "${labels[$i]}" "$rps" \
    "$(awk 'NF {printf "%s%s", sep, $1; sep="/"}' <<<"$all")" "$(cut -d' ' -f2 <<<"$line")" "$(cut -d' ' -f3 <<<"$line")" \
    "$(cut -d' ' -f4 <<<"$line")" "$(cut -d' ' -f5 <<<"$line")" "$(cut -d' ' -f6- <<<"$line")"
  eval "RPS_${names[$i]}=$rps"
done
awk -v d="$RPS_direct" -v m="$RPS_miss" -v h="$RPS_hit" 'BEGIN {
  printf "ratios to direct (medians): cache off %.2fx (target >= 0.95x), cache hits %.2fx (target >= 5x)\n", m / d, h / d }'
