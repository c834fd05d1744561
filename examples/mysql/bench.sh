#!/usr/bin/env bash
# sysbench through Switchyard's MySQL frontend against a direct connection to MariaDB, in one run
# on this machine: connection concentration (many client connections onto a fixed pool of
# server connections), with a Wasm policy deciding every statement.
#
#   examples/mysql/bench.sh            # the table in BENCHMARKS.md ("MySQL: sysbench")
#   examples/mysql/bench.sh callgrind  # instructions the proxy executes per statement (valgrind
#                                      # --tool=callgrind), with the policy and with none
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
# callgrind: the proxy runs under `valgrind --tool=callgrind` (all threads counted together),
# once with the policy (BENCH_POLICY, default rw-split) and once with BENCH_POLICY=none, each a
# fresh process. After an unmeasured warm-up (BENCH_EVENTS / 4 point selects: the server
# connections and the policy's instances are created then), the counters are zeroed, the idle
# process is counted for BENCH_CALLGRIND_IDLE seconds (default 5: timers, health checks, the Wasm
# epoch ticker, inflated by valgrind's slowness), and then over one sysbench oltp_point_select
# run of BENCH_EVENTS statements (default 12000; --events=N --time=0) at BENCH_CALLGRIND_THREADS
# (default 8). Reported per statement: all the proxy's instructions (Ir), the same less what the
# idle process executes in as long, and, from callgrind_annotate, the inclusive Ir of the session
# task (mysql::session::Session::run), of the policy decision (PolicyHandle::decide: the Wasm
# call, or the built-in default) and of the Wasm call alone (LoadedPolicy::call). Profiles stay
# in BENCH_STATE/callgrind.out.*.
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

MODE=${1:-table}
case $MODE in
  table | callgrind) ;;
  *) echo "usage: $0 [table|callgrind]" >&2; exit 2 ;;
esac
POLICY=${BENCH_POLICY:-rw-split}
EVENTS=${BENCH_EVENTS:-12000}
CG_THREADS=${BENCH_CALLGRIND_THREADS:-8}
CG_IDLE=${BENCH_CALLGRIND_IDLE:-5}

[ -x "$BIN" ] || die "no binary at $BIN: cargo build --release -p switchyard --bin switchyard"
[ "$POLICY" = none ] || [ -f "policies/dist/$POLICY.wasm" ] ||
  die "policies/dist/$POLICY.wasm is missing: policies/build.sh"
if ! command -v sysbench >/dev/null; then
  [ "$(id -u)" = 0 ] || die "sysbench is missing: apt-get install -y sysbench"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q sysbench >/dev/null
fi
if [ "$MODE" = callgrind ]; then
  if ! command -v callgrind_control >/dev/null || ! command -v callgrind_annotate >/dev/null; then
    [ "$(id -u)" = 0 ] || die "valgrind is missing: apt-get install -y valgrind"
    log "installing valgrind (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q valgrind >/dev/null
  fi
else
  "$PY" -c 'import pymysql' 2>/dev/null || die "PyMySQL is missing in target/pyenv: tests/run.sh installs it"
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$STATE"

examples/mysql/cluster.sh start >&2
MARIA_PID=$(cat "$MY_BASE/primary/mysqld.pid" 2>/dev/null || true)
[ -n "$MARIA_PID" ] || die "no mariadbd pid"

write_config() { # policy (a module in policies/dist, or none: the built-in default, no Wasm call)
  local policy_toml=""
  if [ "$1" != none ]; then
    policy_toml=$(printf '[policy]\npath = "%s"\nwatch = false\n' "$ROOT/policies/dist/$1.wasm")
  fi
  cat >"$STATE/switchyard.toml" <<TOML
[[listener]]
name = "my"
protocol = "mysql"
bind = "127.0.0.1:$PORT"
cluster = "main"
max_connections = 20000
# sysbench opens all its connections at once from one address: above the default 100 logins
# pending per address, the 1024-thread runs were refused (ERR 1040) before they started.
max_pending_logins = 20000
max_pending_logins_per_source = 20000

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

$policy_toml

[log]
level = "warn"
TOML
}

PROXY_PID=
start_proxy() { # policy [command to run the proxy under, e.g. valgrind ...]
  local policy=$1 tries=100 # 10 s; under a wrapper (valgrind) 5 minutes
  shift
  [ $# = 0 ] || tries=3000
  write_config "$policy"
  "$BIN" config check "$STATE/switchyard.toml" >&2
  "$@" "$BIN" run --config "$STATE/switchyard.toml" >"$STATE/switchyard.log" 2>&1 &
  PROXY_PID=$!
  for _ in $(seq 1 "$tries"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    kill -0 "$PROXY_PID" 2>/dev/null || { tail -n 20 "$STATE/switchyard.log" >&2; die "the proxy exited (log above)"; }
    sleep 0.1
  done
  tail -n 20 "$STATE/switchyard.log" >&2
  die "the proxy does not listen on $PORT within $((tries / 10)) s"
}

stop_proxy() { # (under valgrind the exit takes a while: the last profile is written then)
  [ -n "$PROXY_PID" ] || return 0
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  for _ in $(seq 1 600); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=
}
trap stop_proxy EXIT

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

# ---------------------------------------------------------------- callgrind

cg_dump() { # pid -> the profile of what ran since the last zeroing (dumping zeroes the counters)
  local before after=0
  before=$(find "$STATE" -maxdepth 1 -name "callgrind.out.$1.*" | wc -l)
  callgrind_control -d "$1" >/dev/null 2>&1 || true
  for _ in $(seq 1 600); do
    after=$(find "$STATE" -maxdepth 1 -name "callgrind.out.$1.*" | wc -l)
    [ "$after" -gt "$before" ] && break
    sleep 0.1
  done
  [ "$after" -gt "$before" ] || die "callgrind_control -d $1 wrote no profile"
  sleep 0.5 # (the file may still be being written)
  # shellcheck disable=SC2012 # (names of our own making)
  ls -t "$STATE/callgrind.out.$1".* | head -1
}

cg_figures() { # profile -> "Ir Ir-in-the-session-task Ir-in-PolicyHandle::decide
  # Ir-in-LoadedPolicy::call" (inclusive; a function inlined into its caller has no entry of its
  # own and counts 0; one that callgrind splits by source file counts its outermost part)
  local f=$1 total
  total=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
  callgrind_annotate --inclusive=yes --threshold=100 "$f" >"$f.annotate" 2>/dev/null || true
  inclusive() { # regex -> the largest inclusive Ir of the functions it matches
    awk -v re="$1" '$0 ~ re { n = $1; gsub(",", "", n); if (n + 0 > max) max = n + 0 }
      END { printf "%d\n", max }' "$f.annotate"
  }
  echo "$total $(inclusive 'mysql::session::Session::run') $(inclusive 'PolicyHandle::decide') $(inclusive 'LoadedPolicy::call')"
}

section_callgrind() {
  local policies=$POLICY policy out pid warm t0 t1 idle_f run_f sbout stmts errors
  [ "$POLICY" = none ] || policies="$POLICY none"
  out=$STATE/callgrind-$(date +%Y%m%d-%H%M%S).tsv
  : >"$out"
  warm=$((EVENTS / 4))
  for policy in $policies; do
    start_proxy "$policy" valgrind --tool=callgrind --callgrind-out-file="$STATE/callgrind.out.%p"
    pid=$PROXY_PID
    log "callgrind, policy $policy: proxy pid $pid; warm-up of $warm point selects"
    sb "$PORT" "$CG_THREADS" oltp_point_select --events="$warm" --time=0 --report-interval=0 run \
      >"$STATE/callgrind-warmup.txt" 2>&1 || { tail -5 "$STATE/callgrind-warmup.txt" >&2; die "warm-up failed"; }
    # What the idle process executes (to subtract from the run, which lasts many times longer
    # under valgrind than natively).
    callgrind_control -z "$pid" >/dev/null 2>&1 || die "callgrind_control -z $pid failed"
    t0=$(date +%s%N); sleep "$CG_IDLE"; idle_f=$(cg_dump "$pid"); t1=$(date +%s%N)
    printf '%s\tidle\t0\t%s\t%s\n' "$policy" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')" \
      "$(cg_figures "$idle_f" | tr ' ' '\t')" >>"$out"
    sbout=$STATE/callgrind-$policy.txt
    callgrind_control -z "$pid" >/dev/null 2>&1 || die "callgrind_control -z $pid failed"
    t0=$(date +%s%N)
    sb "$PORT" "$CG_THREADS" oltp_point_select --events="$EVENTS" --time=0 --report-interval=0 run >"$sbout" 2>&1 ||
      log "sysbench failed: $(tail -n1 "$sbout")"
    run_f=$(cg_dump "$pid"); t1=$(date +%s%N)
    stmts=$(awk '/^ +total:/ { print $2; exit }' "$sbout")
    errors=$(awk '/ignored errors:/ { print $3 }' "$sbout")
    [ "${errors:-0}" = 0 ] || log "policy $policy: $errors ignored errors"
    if [ -z "$stmts" ] || [ "$stmts" -le 0 ]; then tail -5 "$sbout" >&2; die "no statements in $sbout"; fi
    printf '%s\trun\t%s\t%s\t%s\n' "$policy" "$stmts" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')" \
      "$(cg_figures "$run_f" | tr ' ' '\t')" >>"$out"
    log "callgrind, policy $policy: $stmts statements, profile $run_f"
    stop_proxy
  done
  # out: policy kind(idle|run) statements seconds Ir Ir-in-session-task Ir-in-decide Ir-in-Wasm-call
  {
    echo
    echo "Instructions the proxy executed (callgrind, all threads), sysbench oltp_point_select --threads=$CG_THREADS --events=$EVENTS --time=0, pool of $POOL"
    echo
    awk -F'\t' '
      $2 == "idle" { rate[$1] = $5 / $4; idle[$1] = $4; next }
      {
        printf "| %s | %d | %.1f | %.0f | %.0f/s | %.0f | **%.0f** | %.0f | %.0f | %s |\n", $1, $3, $4, $5, rate[$1],
          $5 / $3, ($5 - rate[$1] * $4) / $3, $6 / $3, $7 / $3, ($8 > 0 ? sprintf("%.0f", $8 / $3) : "-")
      }
      BEGIN {
        print "| policy | statements | seconds | instructions | idle process | per statement | per statement less idle | session task per statement | policy decision per statement | Wasm call per statement |"
        print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      }' "$out"
    echo
  } | tee "$STATE/callgrind.md"
  log "table saved in $STATE/callgrind.md, raw figures in $out, profiles in $STATE/callgrind.out.*"
}

if [ "$MODE" = callgrind ]; then
  section_callgrind
  exit 0
fi

# ---------------------------------------------------------------- table

start_proxy "$POLICY"

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
