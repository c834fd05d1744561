#!/usr/bin/env bash
# PostgreSQL benchmark: pgbench -S (read-only, one primary-key lookup per transaction) straight to
# the primary, through PgBouncer, and through Switchyard; and the memory an idle client costs.
#
#   examples/postgres/bench.sh tps    # TPS table: direct, pgbouncer, haproxy (TCP relay), switchyard
#                                     # (cache off, cache on, reads split to the replicas) x -c 32/200
#                                     # x -M modes, with the CPU each process spends per transaction
#   examples/postgres/bench.sh rss    # VmRSS of pgbouncer and switchyard before/with 1000 idle
#                                     # clients, KiB per client
#   examples/postgres/bench.sh all    # both
#   examples/postgres/bench.sh down   # stop the proxies and the cluster (the data stays in
#                                     # BENCH_STATE for the next run)
#
# Each section starts what it needs (examples/postgres/cluster.sh, `pgbench -i` once, PgBouncer,
# Switchyard), and stops the proxies it started when it ends; the cluster keeps running.
#
# Env (defaults): DURATION=15 (s per run)  HOT_KEYS (unset: pgbench -S; N: the same query over
#   accounts 1..N only, the workload for measuring cache hits: TARGETS="direct sy-cache")  CLIENTS="32 200"  MODES="simple extended prepared"
#   THREADS=2 (pgbench -j)  SCALE=10 (pgbench -i -s)  RSS_CLIENTS=1000
#   TARGETS="direct pgbouncer haproxy sy-nocache sy-cache sy-split" (any subset, in this order)
#   BENCH_STATE=/tmp/switchyard-pg-bench
#   PG_PRIMARY_PORT=55532 PG_REPLICA1_PORT=55533 PG_REPLICA2_PORT=55534 (not the demo's ports,
#   so both can run)  PGBOUNCER_PORT=56432  HAPROXY_PORT=56433  SY_PORT_BASE=16432 (+0 cache off, +1 cache on,
#   +2 split)  SWITCHYARD_BIN=target/release/switchyard (built when missing)
#   BENCH_SKIP_SWITCHYARD=1: leave Switchyard out (no build, no policies)
#   WORKERS=N: Switchyard's runtime threads ([server] worker_threads; default one per core)
#   BENCH_WAIT_IDLE=10: before each run, wait up to this many seconds for the CPU to be >= 90 %
#   idle; the table's foreign% column is the share of the run during which some other process
#   (a parallel build...) was running, which makes the figure suspect.
#
# PgBouncer: the Debian package (1.18), transaction mode, default_pool_size 20, SCRAM with the
# verifiers copied from pg_authid, ignore_startup_parameters = extra_float_digits,options,
# max_client_conn 2000. Switchyard: pool size 20, transaction mode, policy rw-split (cache off,
# split) or cache-rules with default_ttl (cache on). In transaction mode `-M prepared` fails on
# PgBouncer 1.18; that run is kept and shown as FAILED.
#
# HAProxy (Debian package, `mode tcp`, one server connection per client, no pooling, no parsing)
# is the floor: the least work any proxy can do per transaction is relaying bytes both ways, and
# what that costs in system time on loopback is in its "proxy us/tx" column.
#
# CPU per transaction: the proxy's user + system time (/proc/PID/stat), PostgreSQL's (the
# primary's postmaster, its live children and the children it reaped: /proc/PID/stat cutime) and
# pgbench's (bash `time`), each divided by the transactions pgbench counted. The three together
# are what the 2 cores had to give to each transaction.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
STATE=${BENCH_STATE:-/tmp/switchyard-pg-bench}
DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-32 200}
MODES=${MODES:-simple extended prepared}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
RSS_CLIENTS=${RSS_CLIENTS:-1000}
TARGETS=${TARGETS:-direct pgbouncer haproxy sy-nocache sy-cache sy-split}
export PG_PRIMARY_PORT=${PG_PRIMARY_PORT:-55532}
export PG_REPLICA1_PORT=${PG_REPLICA1_PORT:-55533}
export PG_REPLICA2_PORT=${PG_REPLICA2_PORT:-55534}
export PG_BASE=$STATE/pg
PGB_PORT=${PGBOUNCER_PORT:-56432}
HAP_PORT=${HAPROXY_PORT:-56433}
SY_BASE=${SY_PORT_BASE:-16432}
BIN=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
SKIP_SY=${BENCH_SKIP_SWITCHYARD:-0}
CLUSTER=$ROOT/examples/postgres/cluster.sh
PGB_DIR=$STATE/pgbouncer
PGB_OS_USER=${PG_OS_USER:-postgres}
DB=appdb APP_USER=app
export PGPASSWORD=app_pass PGCONNECT_TIMEOUT=5

log() { echo "[bench] $*" >&2; }
die() { log "error: $*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
as_root() {
  if is_root; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) for: $*"; fi
}

sy_port() { case $1 in sy-nocache) echo "$SY_BASE" ;; sy-cache) echo $((SY_BASE + 1)) ;; sy-split) echo $((SY_BASE + 2)) ;; esac; }
target_port() {
  case $1 in
    direct) echo "$PG_PRIMARY_PORT" ;;
    pgbouncer) echo "$PGB_PORT" ;;
    haproxy) echo "$HAP_PORT" ;;
    sy-*) sy_port "$1" ;;
    *) die "unknown target $1" ;;
  esac
}
wanted() { [[ " $TARGETS " == *" $1 "* ]] && { [[ $1 != sy-* ]] || [ "$SKIP_SY" != 1 ]; }; }

# ---------------------------------------------------------------- prerequisites

install_missing() {
  local need=()
  command -v pgbench >/dev/null || need+=(postgresql-contrib)
  command -v pgbouncer >/dev/null || need+=(pgbouncer)
  if wanted haproxy; then command -v haproxy >/dev/null || need+=(haproxy); fi
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} (apt)"
    as_root apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need[@]}" >/dev/null
  fi
  if [ "$SKIP_SY" != 1 ]; then
    if [ ! -f policies/dist/rw-split.wasm ] || [ ! -f policies/dist/cache-rules.wasm ]; then
      log "building the example policies (policies/build.sh)"
      policies/build.sh >/dev/null
    fi
    if [ ! -x "$BIN" ]; then
      log "building switchyard (cargo build --release -p switchyard)"
      cargo build --release -p switchyard --quiet
      [ -x "$BIN" ] || die "$BIN was not built"
    fi
  fi
}

psql_app() { # port, psql args...
  local port=$1; shift
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$APP_USER" -d "$DB" "$@"
}

wait_replicas() { # until both replicas replayed the primary's current WAL position
  local lsn n i
  lsn=$("$CLUSTER" psql primary -Atc 'SELECT pg_current_wal_lsn()')
  for n in 1 2; do
    for i in $(seq 1 600); do
      [ "$("$CLUSTER" psql "$n" -Atc "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '$lsn') >= 0")" = t ] && break
      [ "$i" = 600 ] && die "replica$n did not catch up with $lsn within 60 s"
      sleep 0.1
    done
  done
}

ensure_data() {
  mkdir -p "$STATE"
  "$CLUSTER" start "$PG_BASE"
  local have
  have=$(psql_app "$PG_PRIMARY_PORT" -Atc "SELECT count(*) FROM pgbench_branches" 2>/dev/null || echo 0)
  if [ "$have" != "$SCALE" ]; then
    log "pgbench -i -s $SCALE on the primary"
    local t0; t0=$(date +%s%N)
    pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PRIMARY_PORT" -U "$APP_USER" "$DB" >"$STATE/pgbench-init.log" 2>&1 ||
      { cat "$STATE/pgbench-init.log" >&2; die "pgbench -i failed"; }
    log "pgbench -i took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  fi
  wait_replicas
}

# ---------------------------------------------------------------- PgBouncer

pgb_pid() { [ -s "$PGB_DIR/pgbouncer.pid" ] && kill -0 "$(cat "$PGB_DIR/pgbouncer.pid")" 2>/dev/null && cat "$PGB_DIR/pgbouncer.pid"; }

start_pgbouncer() {
  if pgb_pid >/dev/null; then log "pgbouncer already running (pid $(pgb_pid))"; return 0; fi
  mkdir -p "$PGB_DIR"
  # the same SCRAM verifiers as the server: pgbouncer checks clients with them and logs in to
  # PostgreSQL with the keys the client's SCRAM exchange gave it
  "$CLUSTER" psql primary -Atc "SELECT format('\"%s\" \"%s\"', rolname, rolpassword) FROM pg_authid WHERE rolname = '$APP_USER'" >"$PGB_DIR/userlist.txt"
  grep -q SCRAM-SHA-256 "$PGB_DIR/userlist.txt" || die "no SCRAM verifier for $APP_USER in pg_authid"
  cat >"$PGB_DIR/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=$PG_PRIMARY_PORT dbname=$DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $PGB_DIR/userlist.txt
pool_mode = transaction
default_pool_size = 20
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 2000
max_db_connections = 0
server_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits,options
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
  chmod 700 "$PGB_DIR"; chmod 600 "$PGB_DIR/userlist.txt" "$PGB_DIR/pgbouncer.ini"
  rm -f "$PGB_DIR/pgbouncer.pid"
  # pgbouncer refuses to run as root. runuser goes through pam_limits, which puts the soft
  # nofile limit back to 1024: raise it to the hard limit inside the unprivileged shell.
  # shellcheck disable=SC2016 # expanded by the inner shell
  local run=(sh -c 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec pgbouncer -d "$1"' sh "$PGB_DIR/pgbouncer.ini")
  if is_root; then
    id -u "$PGB_OS_USER" >/dev/null 2>&1 ||
      useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PGB_OS_USER"
    chown -R "$PGB_OS_USER" "$PGB_DIR"
    (cd "$PGB_DIR" && runuser -u "$PGB_OS_USER" -- "${run[@]}")
  else
    (cd "$PGB_DIR" && "${run[@]}")
  fi
  local i
  for i in $(seq 1 100); do
    psql_app "$PGB_PORT" -Atc 'SELECT 1' >/dev/null 2>&1 && { log "pgbouncer up on 127.0.0.1:$PGB_PORT (pid $(pgb_pid))"; return 0; }
    sleep 0.1
  done
  tail -n 5 "$PGB_DIR/pgbouncer.log" >&2
  die "pgbouncer does not answer on $PGB_PORT"
}

stop_pgbouncer() {
  local pid
  pid=$(pgb_pid) || return 0
  kill -TERM "$pid" # 1.18: SIGTERM = immediate shutdown
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  log "stopped pgbouncer"
}

# ---------------------------------------------------------------- HAProxy

hap_pid() { [ -s "$STATE/haproxy.pid" ] && kill -0 "$(head -1 "$STATE/haproxy.pid")" 2>/dev/null && head -1 "$STATE/haproxy.pid"; }

start_haproxy() {
  if hap_pid >/dev/null; then log "haproxy already running (pid $(hap_pid))"; return 0; fi
  cat >"$STATE/haproxy.cfg" <<EOF
# Written by examples/postgres/bench.sh: a plain TCP relay to the primary
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen pg
  bind 127.0.0.1:$HAP_PORT
  server primary 127.0.0.1:$PG_PRIMARY_PORT
EOF
  rm -f "$STATE/haproxy.pid"
  haproxy -q -D -f "$STATE/haproxy.cfg" -p "$STATE/haproxy.pid" || die "haproxy did not start"
  local i
  for i in $(seq 1 100); do
    psql_app "$HAP_PORT" -Atc 'SELECT 1' >/dev/null 2>&1 && { log "haproxy up on 127.0.0.1:$HAP_PORT (pid $(hap_pid))"; return 0; }
    sleep 0.1
  done
  die "haproxy does not relay on $HAP_PORT"
}

stop_haproxy() {
  local pid
  pid=$(hap_pid) || return 0
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  log "stopped haproxy"
}

# ---------------------------------------------------------------- Switchyard

sy_config() { # name
  local port; port=$(sy_port "$1")
  local policy=rw-split cache=false
  [ "$1" = sy-cache ] && policy=cache-rules cache=true
  cat <<TOML
# Written by examples/postgres/bench.sh ($1)
[[listener]]
name = "pg"
protocol = "postgres"
bind = "127.0.0.1:$port"
cluster = "main"

[cluster.main]
protocol = "postgres"
database = "$DB"

[cluster.main.defaults]
size = 20
mode = "transaction"

[cluster.main.pool.primary]
role = "primary"
nodes = ["127.0.0.1:$PG_PRIMARY_PORT"]
TOML
  if [ "$1" = sy-split ]; then
    cat <<TOML

[cluster.main.pool.replicas]
role = "replica"
nodes = ["127.0.0.1:$PG_REPLICA1_PORT", "127.0.0.1:$PG_REPLICA2_PORT"]
max_replica_lag_bytes = "16MiB"
fallback_pool = "primary"
TOML
  fi
  cat <<TOML

[[user]]
name = "$APP_USER"
password = "$PGPASSWORD"

[cache]
enabled = $cache
max_ttl = "10m"

[policy]
path = "$ROOT/policies/dist/$policy.wasm"
artifact_dir = "$STATE/artifacts"
watch = false
TOML
  if [ "$1" = sy-cache ]; then
    printf '[policy.config]\ndefault_ttl = "600000"\n'
  fi
  cat <<TOML

[server]
drain_timeout = "2s"${WORKERS:+
worker_threads = $WORKERS}

[log]
level = "warn"
TOML
}

sy_pid() { # name
  local f=$STATE/$1.pid
  [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

start_switchyard() { # name
  local name=$1 port; port=$(sy_port "$1")
  if sy_pid "$name" >/dev/null; then log "$name already running (pid $(sy_pid "$name"))"; return 0; fi
  sy_config "$name" >"$STATE/$name.toml"
  "$BIN" config check "$STATE/$name.toml" >/dev/null || die "$STATE/$name.toml does not pass 'switchyard config check'"
  setsid "$BIN" run --config "$STATE/$name.toml" >"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
  local i
  for i in $(seq 1 150); do
    psql_app "$port" -Atc 'SELECT 1' >/dev/null 2>&1 && { log "$name up on 127.0.0.1:$port (pid $(sy_pid "$name"))"; return 0; }
    sy_pid "$name" >/dev/null || { tail -n 20 "$STATE/$name.log" >&2; die "$name exited (log above)"; }
    sleep 0.2
  done
  tail -n 20 "$STATE/$name.log" >&2
  die "$name does not accept logins on $port within 30 s"
}

stop_switchyard() { # name
  local pid
  pid=$(sy_pid "$1") || { rm -f "$STATE/$1.pid"; return 0; }
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  rm -f "$STATE/$1.pid"
  log "stopped $1"
}

stop_proxies() {
  local t
  if [ -n "${SAMPLER:-}" ]; then kill "$SAMPLER" 2>/dev/null || true; SAMPLER=; fi
  for t in sy-nocache sy-cache sy-split; do stop_switchyard "$t"; done
  stop_haproxy
  stop_pgbouncer
}

# ---------------------------------------------------------------- measuring

cpu_idle() { # % idle over 1 s, from /proc/stat
  local a1 a2 a3 a4 a5 b1 b2 b3 b4 b5 total
  read -r _ a1 a2 a3 a4 a5 _ </proc/stat; sleep 1; read -r _ b1 b2 b3 b4 b5 _ </proc/stat
  total=$(( (b1 + b2 + b3 + b4 + b5) - (a1 + a2 + a3 + a4 + a5) ))
  echo $(( 100 * (b4 - a4) / (total > 0 ? total : 1) ))
}

wait_idle() {
  local i
  for i in $(seq 1 "${BENCH_WAIT_IDLE:-10}"); do [ "$(cpu_idle)" -ge 90 ] && return 0; done
  return 0
}

# Share of 0.2 s samples in which a process other than the benchmarked ones was running
# (R state; kernel threads excluded): a parallel build skews the figures.
foreign_sampler() { # outfile
  local n=0 busy=0
  while :; do
    n=$((n + 1))
    if awk '$3 == "R" && $4 != 2 && $1 != 2 && $2 !~ /^\((postgres|pgbench|pgbouncer|haproxy|switchyard|tokio-rt.*|awk|bash|sleep)\)$/ { f = 1 } END { exit !f }' \
        /proc/[0-9]*/stat 2>/dev/null; then busy=$((busy + 1)); fi
    echo "$(( 100 * busy / n ))" >"$1.tmp"; mv -f "$1.tmp" "$1"
    sleep 0.2
  done
}

proxy_pid() { # target -> pid of the process relaying it (none for direct)
  case $1 in
    direct) return 0 ;;
    pgbouncer) pgb_pid ;;
    haproxy) hap_pid ;;
    sy-*) sy_pid "$1" ;;
  esac
}

ticks_of() { # pid -> user + system clock ticks so far (0 without a pid)
  if [ -n "$1" ]; then awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; else echo 0; fi
}

pg_ticks() { # clock ticks of the primary: postmaster, its live children, the children it reaped
  local pm; pm=$(head -1 "$PG_BASE/primary/postmaster.pid")
  # (cat, not awk on the files: a process may exit between the glob and the read)
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
    awk -v pm="$pm" '$2 == "(postgres)" && ($1 == pm || $4 == pm) { t += $14 + $15 } $1 == pm && $2 == "(postgres)" { t += $16 + $17 } END { print t + 0 }'
}

per_tx() { # seconds transactions -> microseconds per transaction
  awk -v t="$1" -v n="${2:-0}" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / n; else printf "-" }'
}

run_pgbench() { # target clients mode -> appends a line to $RESULTS
  local target=$1 c=$2 mode=$3 port out rc=0 tps lat failed foreign fs sp status
  local pid p0 p1 g0 g1 txs hz proxy_us=- pg_us bench_us
  port=$(target_port "$target")
  pid=$(proxy_pid "$target") || true
  wait_idle
  fs=$(mktemp); foreign_sampler "$fs" & sp=$!
  SAMPLER=$sp # stopped by the EXIT trap if this run dies
  local workload=(-S)
  if [ -n "${HOT_KEYS:-}" ]; then
    # The cache benchmark: the same -S query over only HOT_KEYS accounts, so repeated reads can
    # be cache hits (plain -S draws from scale x 100,000 accounts and rarely repeats).
    printf '\\set aid random(1, %s)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n' "$HOT_KEYS" >"$STATE/hot.sql"
    workload=(-f "$STATE/hot.sql")
  fi
  p0=$(ticks_of "$pid"); g0=$(pg_ticks)
  local TIMEFORMAT='%U %S'
  { time pgbench -n "${workload[@]}" -M "$mode" -c "$c" -j "$THREADS" -T "$DURATION" -h 127.0.0.1 -p "$port" -U "$APP_USER" "$DB" \
      >"$STATE/pgbench.out" 2>&1; } 2>"$STATE/pgbench.time" || rc=$?
  p1=$(ticks_of "$pid"); g1=$(pg_ticks)
  out=$(cat "$STATE/pgbench.out")
  kill "$sp" 2>/dev/null; wait "$sp" 2>/dev/null || true
  txs=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  hz=$(getconf CLK_TCK)
  if [ -n "$pid" ]; then proxy_us=$(per_tx "$(awk -v t=$((p1 - p0)) -v hz="$hz" 'BEGIN { print t / hz }')" "$txs"); fi
  pg_us=$(per_tx "$(awk -v t=$((g1 - g0)) -v hz="$hz" 'BEGIN { print t / hz }')" "$txs")
  bench_us=$(per_tx "$(awk '{ print $1 + $2 }' "$STATE/pgbench.time")" "$txs")
  foreign=$(cat "$fs" 2>/dev/null || echo '?'); rm -f "$fs" "$fs.tmp"
  printf '### %s c=%s M=%s rc=%s\n%s\n\n' "$target" "$c" "$mode" "$rc" "$out" >>"$STATE/pgbench.log"
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
  status=ok
  if [ "$rc" != 0 ] || [ -z "$tps" ]; then
    status=FAILED
    log "$target c=$c -M $mode FAILED (rc $rc): $(grep -m1 -iE 'error|fatal|abort' <<<"$out" || tail -n1 <<<"$out")"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$c" "$mode" "${tps:--}" "${lat:--}" "${failed:-0}" "$foreign" "$status" \
    "$proxy_us" "$pg_us" "$bench_us" >>"$RESULTS"
  log "$(printf '%-10s c=%-3s %-8s %10s tps  %7s ms  foreign %s%%  %s  us/tx: proxy %s postgres %s pgbench %s' "$target" "$c" "$mode" "${tps:--}" "${lat:--}" "$foreign" "$status" "$proxy_us" "$pg_us" "$bench_us")"
}

print_table() { # results.tsv
  awk -F'\t' '
    { key = $2 SUBSEP $3; tps[$1, key] = ($8 == "ok") ? $4 : ""; row[NR] = $0 }
    function ratio(a, b) { return (a != "" && b != "" && b > 0) ? sprintf("%.2fx", a / b) : "-" }
    END {
      print "| target | clients | mode | TPS | avg latency ms | failed tx | vs direct | vs pgbouncer | proxy µs/tx | PostgreSQL µs/tx | pgbench µs/tx | foreign% |"
      print "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
      for (i = 1; i <= NR; i++) {
        split(row[i], f, "\t"); key = f[2] SUBSEP f[3]
        t = (f[8] == "ok") ? f[4] : ""
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3],
          (t == "" ? "FAILED" : sprintf("%.0f", t)), f[5], f[6],
          (f[1] == "direct" ? "1.00x" : ratio(t, tps["direct", key])),
          (f[1] == "pgbouncer" ? (t == "" ? "-" : "1.00x") : ratio(t, tps["pgbouncer", key])),
          f[9], f[10], f[11], f[7]
      }
    }' "$1"
}

# ---------------------------------------------------------------- sections

section_tps() {
  install_missing
  ensure_data
  trap stop_proxies EXIT
  local t
  for t in $TARGETS; do
    wanted "$t" || continue
    case $t in
      pgbouncer) start_pgbouncer ;;
      haproxy) start_haproxy ;;
      sy-*) start_switchyard "$t" ;;
    esac
  done
  RESULTS=$STATE/tps-$(date +%Y%m%d-%H%M%S).tsv
  : >"$RESULTS"
  log "pgbench -n -S -T $DURATION -j $THREADS, clients: $CLIENTS, modes: $MODES, targets: $TARGETS (raw output: $STATE/pgbench.log)"
  local c m
  for c in $CLIENTS; do
    for m in $MODES; do
      for t in $TARGETS; do
        wanted "$t" || continue
        run_pgbench "$t" "$c" "$m"
      done
    done
  done
  echo
  echo "pgbench -n -S -T $DURATION -j $THREADS, scale $SCALE, $(nproc) cores shared by pgbench, PostgreSQL and the proxies"
  echo
  print_table "$RESULTS" | tee "$STATE/tps.md"
  echo
  log "table saved in $STATE/tps.md, raw figures in $RESULTS"
  stop_proxies; trap - EXIT
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

established() { # server port -> client connections accepted on it
  ss -Htn state established "( sport = :$1 )" 2>/dev/null | wc -l
}

measure_rss() { # name port pid
  local name=$1 port=$2 pid=$3 before during n i pb script
  script=$STATE/idle.sql
  printf 'SELECT 1;\n\\sleep 300 s\n' >"$script"
  before=$(rss_kib "$pid")
  pgbench -n -c "$RSS_CLIENTS" -j "$THREADS" -T 300 -f "$script" -h 127.0.0.1 -p "$port" -U "$APP_USER" "$DB" \
    >"$STATE/rss-$name.log" 2>&1 &
  pb=$!
  # wait (at most 2 minutes, or until pgbench reports an error) until every client is connected,
  # let it settle, measure, hang up
  n=0
  for i in $(seq 1 1200); do
    n=$(established "$port")
    [ "$n" -ge "$RSS_CLIENTS" ] && break
    kill -0 "$pb" 2>/dev/null || break
    grep -q 'error' "$STATE/rss-$name.log" && break
    sleep 0.1
  done
  sleep 2
  n=$(established "$port")
  during=$(rss_kib "$pid")
  # (SIGINT would be ignored: background jobs of a non-interactive shell ignore it)
  kill -TERM "$pb" 2>/dev/null || true
  wait "$pb" 2>/dev/null || true
  if [ "$n" -lt "$RSS_CLIENTS" ]; then
    log "$name: only $n of $RSS_CLIENTS clients connected ($STATE/rss-$name.log: $(grep -m1 -iE 'error|fatal' "$STATE/rss-$name.log" || true))"
  fi
  log "$name: VmRSS $before KiB idle, $during KiB with $n clients"
  awk -v name="$name" -v b="$before" -v d="$during" -v n="$n" 'BEGIN {
    printf "| %s | %d | %d | %d | %s |\n", name, b, d, n, (n > 0 ? sprintf("%.1f", (d - b) / n) : "-") }'
}

section_rss() {
  install_missing
  ensure_data
  trap stop_proxies EXIT
  # fresh processes, so "before" is an idle proxy
  stop_proxies
  local rows=() pid
  if wanted pgbouncer; then
    start_pgbouncer
    rows+=("$(measure_rss pgbouncer "$PGB_PORT" "$(pgb_pid)")")
    stop_pgbouncer
  fi
  if wanted sy-nocache; then
    start_switchyard sy-nocache
    psql_app "$(sy_port sy-nocache)" -Atc 'SELECT 1' >/dev/null # one query: the policy and the pool are warm
    pid=$(sy_pid sy-nocache)
    rows+=("$(measure_rss switchyard "$(sy_port sy-nocache)" "$pid")")
    stop_switchyard sy-nocache
  fi
  echo
  echo "$RSS_CLIENTS idle clients (pgbench -c $RSS_CLIENTS, each ran SELECT 1 and sleeps), transaction pooling, pool size 20"
  echo
  { echo "| process | VmRSS before (KiB) | VmRSS with clients (KiB) | clients connected | KiB per client |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${rows[@]}"; } | tee "$STATE/rss.md"
  echo
  trap - EXIT
}

section_down() {
  stop_proxies
  if [ -d "$PG_BASE" ]; then "$CLUSTER" stop "$PG_BASE"; fi
  log "down (data kept in $STATE; remove it with: rm -rf $STATE)"
}

case "${1:-}" in
  tps) section_tps ;;
  rss) section_rss ;;
  all) section_tps; section_rss ;;
  down) section_down ;;
  *) echo "usage: $0 {tps|rss|all|down}" >&2; exit 2 ;;
esac
