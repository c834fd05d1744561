#!/usr/bin/env bash
# sysbench through Switchyard's MySQL frontend against a direct connection to MariaDB, in one run
# on this machine: connection concentration (many client connections onto a fixed pool of
# server connections), with a Wasm policy deciding every statement.
#
#   examples/mysql/bench.sh            # the table in BENCHMARKS.md ("MySQL: sysbench")
#
# For each workload (BENCH_WORKLOADS, default "oltp_point_select oltp_read_only") and thread
# count (BENCH_THREADS, default "1 8 64 256 1024"), sysbench runs BENCH_TIME seconds (default 20)
# directly against the primary and then through Switchyard (pool of BENCH_POOL = 32 server
# connections, transaction mode, policy policies/dist/rw-split.wasm, or BENCH_POLICY=none for
# the built-in default). Reported: TPS, p95
# latency, and CPU per transaction of the proxy, of MariaDB and of sysbench (user + system time
# from /proc/PID/stat over the run). Then the proxy's RSS per idle logged-in client
# (BENCH_IDLE_CLIENTS, default 1000).
#
# sysbench runs with --db-ps-mode=disable on both sides: a client holding server-side prepared
# statements keeps its server connection (statement ids live there), which would defeat
# concentration; the text protocol is what the comparison is about.
#
# Env: SWITCHYARD_BIN (target/release/switchyard), BENCH_STATE (/tmp/switchyard-my-bench),
#      MY_PRIMARY_PORT (54406), SWITCHYARD_PORT (54490), BENCH_TABLES (4), BENCH_TABLE_SIZE (10000).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
STATE=${BENCH_STATE:-/tmp/switchyard-my-bench}
export MY_BASE=$STATE/maria MY_PRIMARY_PORT=${MY_PRIMARY_PORT:-54406} MY_REPLICAS=0
PORT=${SWITCHYARD_PORT:-54490}
BIN=${SWITCHYARD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/switchyard}
WORKLOADS=${BENCH_WORKLOADS:-oltp_point_select oltp_read_only}
THREADS=${BENCH_THREADS:-1 8 64 256 1024}
TIME=${BENCH_TIME:-20}
POOL=${BENCH_POOL:-32}
TABLES=${BENCH_TABLES:-4}
TABLE_SIZE=${BENCH_TABLE_SIZE:-10000}
IDLE=${BENCH_IDLE_CLIENTS:-1000}
PY=$ROOT/target/pyenv/bin/python

log() { echo "[bench] $*" >&2; }
die() { log "error: $*"; exit 1; }

[ -x "$BIN" ] || die "no binary at $BIN: cargo build --release -p switchyard --bin switchyard"
[ "${BENCH_POLICY:-rw-split}" = none ] || [ -f "policies/dist/${BENCH_POLICY:-rw-split}.wasm" ] ||
  die "policies/dist/${BENCH_POLICY:-rw-split}.wasm is missing: policies/build.sh"
if ! command -v sysbench >/dev/null; then
  [ "$(id -u)" = 0 ] || die "sysbench is missing: apt-get install -y sysbench"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q sysbench >/dev/null
fi
"$PY" -c 'import pymysql' 2>/dev/null || die "PyMySQL is missing in target/pyenv: tests/run.sh installs it"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$STATE"
# BENCH_POLICY=none: the built-in default policy (no Wasm call), to see what the call costs.
POLICY_TOML=""
if [ "${BENCH_POLICY:-rw-split}" != none ]; then
  POLICY_TOML=$(printf '[policy]\npath = "%s"\nwatch = false\n' "$ROOT/policies/dist/${BENCH_POLICY:-rw-split}.wasm")
fi

examples/mysql/cluster.sh start >&2
MARIA_PID=$(cat "$MY_BASE/primary/mysqld.pid" 2>/dev/null || true)
[ -n "$MARIA_PID" ] || die "no mariadbd pid"

cat >"$STATE/switchyard.toml" <<TOML
[[listener]]
name = "my"
protocol = "mysql"
bind = "127.0.0.1:$PORT"
cluster = "main"
max_connections = 20000

[cluster.main]
protocol = "mysql"
databases = ["appdb"]

[cluster.main.defaults]
size = $POOL
mode = "transaction"
checkout_timeout = "30s"
auth = { user = "app", password = "app_pass" }

[cluster.main.pool.primary]
role = "primary"
nodes = ["127.0.0.1:$MY_PRIMARY_PORT"]

[[user]]
name = "app"
password = "app_pass"

$POLICY_TOML

[log]
level = "warn"
TOML
"$BIN" config check "$STATE/switchyard.toml" >&2
"$BIN" run --config "$STATE/switchyard.toml" >"$STATE/switchyard.log" 2>&1 &
PROXY_PID=$!
trap 'kill $PROXY_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

sb() { # port threads workload command...
  local port=$1 threads=$2 workload=$3; shift 3
  sysbench "$workload" --mysql-host=127.0.0.1 --mysql-port="$port" --mysql-user=app \
    --mysql-password=app_pass --mysql-db=appdb --tables="$TABLES" --table-size="$TABLE_SIZE" \
    --db-ps-mode=disable --threads="$threads" "$@"
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
tck=$(getconf CLK_TCK)

log "preparing $TABLES tables of $TABLE_SIZE rows"
sb "$MY_PRIMARY_PORT" 4 oltp_read_only cleanup >/dev/null 2>&1 || true
sb "$MY_PRIMARY_PORT" 4 oltp_read_only prepare >/dev/null

echo "| workload | threads | direct TPS | Switchyard TPS | ratio | direct p95 ms | Switchyard p95 ms | proxy CPU µs/tx | MariaDB CPU µs/tx direct / proxied | sysbench CPU µs/tx direct / proxied |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for workload in $WORKLOADS; do
  for threads in $THREADS; do
    declare -A tps p95 dbcpu sbcpu
    proxy_cpu=0
    for side in direct proxy; do
      port=$MY_PRIMARY_PORT; [ "$side" = proxy ] && port=$PORT
      out=$STATE/$workload-$threads-$side.txt
      db0=$(cpu_ticks "$MARIA_PID"); px0=$(cpu_ticks "$PROXY_PID")
      # sysbench's own CPU comes from `time` (it is the child here).
      /usr/bin/time -f '%U %S' -o "$STATE/time.txt" \
        bash -c "$(declare -f sb); TABLES=$TABLES TABLE_SIZE=$TABLE_SIZE; sb $port $threads $workload --time=$TIME --report-interval=0 run" >"$out" 2>&1 || true
      db1=$(cpu_ticks "$MARIA_PID"); px1=$(cpu_ticks "$PROXY_PID")
      tx=$(awk '/transactions:/ { print $2 }' "$out")
      if [ -z "$tx" ] || [ "$tx" -le 0 ]; then
        log "no transactions in $out"; tail -5 "$out" >&2; tx=1
      fi
      tps[$side]=$(awk '/transactions:/ { gsub(/\(/, "", $3); print $3 }' "$out")
      p95[$side]=$(awk '/95th percentile:/ { print $3 }' "$out")
      errors=$(awk '/ignored errors:/ { print $3 }' "$out")
      [ "${errors:-0}" = 0 ] || log "$side $workload $threads: $errors ignored errors"
      dbcpu[$side]=$(( (db1 - db0) * 1000000 / tck / tx ))
      sbcpu[$side]=$(awk -v tx="$tx" '{ printf "%d", ($1 + $2) * 1000000 / tx }' "$STATE/time.txt")
      [ "$side" = proxy ] && proxy_cpu=$(( (px1 - px0) * 1000000 / tck / tx ))
    done
    ratio=$(awk -v a="${tps[proxy]}" -v b="${tps[direct]}" 'BEGIN { printf "%.2f", a / b }')
    echo "| $workload | $threads | ${tps[direct]} | ${tps[proxy]} | ${ratio}× | ${p95[direct]} | ${p95[proxy]} | $proxy_cpu | ${dbcpu[direct]} / ${dbcpu[proxy]} | ${sbcpu[direct]} / ${sbcpu[proxy]} |"
  done
done

# RSS per idle client: logged in, doing nothing. Measured between 100 and 100 + IDLE idle
# clients, so what the first connections of a run warm up (buffers, pools) is not counted.
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
rm -f "$STATE/idle.step1" "$STATE/idle.step2" "$STATE/idle.go"
"$PY" - "$PORT" "$IDLE" "$STATE" <<'PY' &
import os, sys, time, pymysql
port, n, state = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def connect():
    return pymysql.connect(host="127.0.0.1", port=port, user="app", password="app_pass", database="appdb")
first = [connect() for _ in range(100)]
open(os.path.join(state, "idle.step1"), "w").close()
while not os.path.exists(os.path.join(state, "idle.go")):
    time.sleep(0.05)
more = [connect() for _ in range(n)]
open(os.path.join(state, "idle.step2"), "w").close()
time.sleep(60)
PY
IDLE_PID=$!
for _ in $(seq 1 600); do [ -f "$STATE/idle.step1" ] && break; sleep 0.1; done
sleep 2
before=$(rss "$PROXY_PID")
touch "$STATE/idle.go"
for _ in $(seq 1 1200); do [ -f "$STATE/idle.step2" ] && break; sleep 0.1; done
sleep 2
after=$(rss "$PROXY_PID")
kill "$IDLE_PID" 2>/dev/null || true
echo
echo "RSS of the proxy: $before KiB with 100 idle clients, $after KiB with $((100 + IDLE)): $(( (after - before) * 1024 / IDLE )) bytes per idle client"
