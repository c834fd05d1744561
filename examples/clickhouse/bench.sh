#!/usr/bin/env bash
# Throughput of a small SELECT with wrk (HTTP keep-alive): straight to ClickHouse, through nginx
# (a plain HTTP relay with upstream keep-alive: the least work an HTTP proxy can do), through
# Switchyard with a policy and the cache off (every request reaches ClickHouse), and through
# Switchyard with the cache on (hits). Prints requests/s, latencies, the ratios to direct and the
# CPU that wrk, ClickHouse and the proxy spend per request.
#
#   examples/clickhouse/bench.sh                 # 3 interleaved rounds of 10 s runs, 32 connections
#   DURATION=30s CONNECTIONS=64 examples/clickhouse/bench.sh
#   WORKERS=1 examples/clickhouse/bench.sh       # proxy runtime threads (default: one per core)
#
# Uses target/release/switchyard (built if missing), wrk, nginx (NGINX=0 leaves it out), one ClickHouse instance of its own
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
MISS_PORT=18325 HIT_PORT=18326 NGINX_PORT=18327
NGINX=${NGINX:-1}
SQL='SELECT number FROM system.numbers LIMIT 10'
BIN=${SWITCHYARD_BIN:-target/release/switchyard}

log() { echo "[bench] $*" >&2; }
command -v wrk >/dev/null || { log "wrk is missing: apt-get install -y wrk"; exit 1; }
if [ "$NGINX" = 1 ] && ! command -v nginx >/dev/null; then log "nginx is missing: apt-get install -y nginx-light (or NGINX=0)"; exit 1; fi
[ -x "$BIN" ] || { log "building switchyard (release)"; cargo build --release -p switchyard --quiet; }
[ -f policies/dist/cache-rules.wasm ] && [ -f policies/dist/rw-split.wasm ] || policies/build.sh >/dev/null

mkdir -p "$STATE"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -s "$STATE/nginx/nginx.pid" ]; then kill -TERM "$(cat "$STATE/nginx/nginx.pid")" 2>/dev/null || true; fi
  examples/clickhouse/clickhouse.sh stop "$STATE/clickhouse" >/dev/null 2>&1 || true
}
trap cleanup EXIT
examples/clickhouse/clickhouse.sh start "$STATE/clickhouse"

# shellcheck source=examples/clickhouse/bench-config.sh
source examples/clickhouse/bench-config.sh

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
NGINX_PID=
if [ "$NGINX" = 1 ]; then
  # one worker, like one proxy process; the master only supervises
  mkdir -p "$STATE/nginx/tmp"
  cat >"$STATE/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $STATE/nginx/nginx.pid;
error_log $STATE/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $STATE/nginx/tmp/body;
  proxy_temp_path $STATE/nginx/tmp/proxy;
  upstream clickhouse { server $CH; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://clickhouse;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  nginx -q -p "$STATE/nginx" -c "$STATE/nginx/nginx.conf"
  for _ in $(seq 1 50); do [ -s "$STATE/nginx/nginx.pid" ] && break; sleep 0.1; done
  NGINX_PID=$(pgrep -P "$(cat "$STATE/nginx/nginx.pid")" | head -n 1)
fi
ticks() { [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

q=$(printf '%s' "$SQL" | sed 's/ /%20/g')
direct="http://$CH/?user=reader&password=reader_pass&query=$q"
miss="http://127.0.0.1:$MISS_PORT/?user=bench&password=bench&query=$q"
hit="http://127.0.0.1:$HIT_PORT/?user=bench&password=bench&query=$q"
relay="http://127.0.0.1:$NGINX_PORT/?user=reader&password=reader_pass&query=$q"
if [ "$NGINX" = 1 ]; then [ "$(curl -s "$relay" | wc -l)" = 10 ] || { log "nginx does not relay the query"; exit 1; }; fi
[ "$(curl -s "$miss" | wc -l)" = 10 ] || { log "the proxy does not answer the query"; exit 1; }
curl -s -o /dev/null -D - "$hit" | grep -qi 'x-cache: MISS' && curl -s -o /dev/null -D - "$hit" | grep -qi 'x-cache: HIT' \
  || { log "the cache-on proxy does not hit"; exit 1; }

# CPU time per request (user + system, from /proc/PID/stat ticks) of the proxy and of ClickHouse:
# on a shared 2-core machine it says where the cycles go better than req/s alone.
measure() { # url proxy-pid -> "rps p50 p99 proxy-us/req ch-us/req wrk-us/req errors"
  local p0 c0 p1 c1 out TIMEFORMAT='%U %S'
  p0=$(ticks "$2"); c0=$(ticks "$CH_PID")
  { time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1" >"$STATE/wrk.out"; } 2>"$STATE/wrk.time"
  out=$(cat "$STATE/wrk.out")
  p1=$(ticks "$2"); c1=$(ticks "$CH_PID")
  echo "$out" >>"$STATE/wrk.txt"
  local errors; errors=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' \n' ' ' || true)
  local reqs hz; reqs=$(awk '/requests in/ {print $1}' <<<"$out"); hz=$(getconf CLK_TCK)
  echo "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out") $(awk '$1 == "50%" {print $2}' <<<"$out") $(awk '$1 == "99%" {print $2}' <<<"$out")" \
    "$(awk -v t=$((p1 - p0)) -v n="$reqs" -v hz="$hz" 'BEGIN {printf "%.1f", n ? t * 1e6 / hz / n : 0}')" \
    "$(awk -v t=$((c1 - c0)) -v n="$reqs" -v hz="$hz" 'BEGIN {printf "%.1f", n ? t * 1e6 / hz / n : 0}')" \
    "$(awk -v n="$reqs" '{printf "%.1f", n ? ($1 + $2) * 1e6 / n : 0}' "$STATE/wrk.time")" "${errors:-}"
}

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION x $ROUNDS rounds (interleaved, median), keep-alive, GET ?query=$SQL"
echo "($(nproc) cores shared by wrk, ClickHouse and the proxy; proxy worker threads: ${WORKERS:-one per core})"
: >"$STATE/wrk.txt"
names=(direct miss hit)
labels=("direct to ClickHouse" "switchyard, cache off" "switchyard, cache on (hits)")
urls=("$direct" "$miss" "$hit")
proxy_pids=("" "$MISS_PID" "$HIT_PID")
if [ "$NGINX" = 1 ]; then
  names+=(relay); labels+=("nginx relay (keep-alive)"); urls+=("$relay"); proxy_pids+=("$NGINX_PID")
fi
for i in "${!names[@]}"; do wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "${urls[$i]}" >/dev/null; done # warm-up
declare -A rows
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!names[@]}"; do
    rows[${names[$i]}]+="$(measure "${urls[$i]}" "${proxy_pids[$i]}")"$'\n'
  done
done
for i in "${!names[@]}"; do
  all=${rows[${names[$i]}]}
  rps=$(awk 'NF {print $1}' <<<"$all" | median)
  line=$(awk -v r="$rps" 'NF && $1 == r {print; exit}' <<<"$all")
  printf '%-28s %10s req/s (rounds: %s)  p50 %-8s p99 %-8s CPU/req: proxy %s us, ClickHouse %s us, wrk %s us %s\n' "${labels[$i]}" "$rps" \
    "$(awk 'NF {printf "%s%s", sep, $1; sep="/"}' <<<"$all")" "$(cut -d' ' -f2 <<<"$line")" "$(cut -d' ' -f3 <<<"$line")" \
    "$(cut -d' ' -f4 <<<"$line")" "$(cut -d' ' -f5 <<<"$line")" "$(cut -d' ' -f6 <<<"$line")" "$(cut -d' ' -f7- <<<"$line")"
  eval "RPS_${names[$i]}=$rps"
done
awk -v d="$RPS_direct" -v m="$RPS_miss" -v h="$RPS_hit" -v r="${RPS_relay:-0}" 'BEGIN {
  printf "ratios to direct (medians): cache off %.2fx (target >= 0.95x), cache hits %.2fx (target >= 5x)", m / d, h / d
  if (r > 0) printf ", nginx relay %.2fx", r / d
  printf "\n" }'
