#!/usr/bin/env bash
# PostgreSQL benchmark: pgbench -S (read-only, one primary-key lookup per transaction) straight to
# the primary, through PgBouncer, and through Switchyard; and the memory an idle client costs.
#
#   examples/postgres/bench.sh tps    # TPS table: direct, pgbouncer, haproxy (TCP relay), switchyard
#                                     # (cache off, cache off and multiplexed, cache on, reads split to
#                                     # the replicas) x -c 32/200
#                                     # x -M modes, with the CPU each process spends per transaction
#   examples/postgres/bench.sh rss    # VmRSS of pgbouncer and switchyard before/with 1000 idle
#                                     # clients, KiB per client
#   examples/postgres/bench.sh callgrind  # instructions the proxy executes per transaction
#                                     # (sy-split under valgrind --tool=callgrind), per SPLIT_VARIANTS;
#                                     # CALLGRIND_TARGET=sy-nocache or sy-mux measures that one instead
#   examples/postgres/bench.sh all    # tps and rss
#   examples/postgres/bench.sh down   # stop the proxies and the cluster (the data stays in
#                                     # BENCH_STATE for the next run)
#
# Each section starts what it needs (examples/postgres/cluster.sh, `pgbench -i` once, PgBouncer,
# Switchyard), and stops the proxies it started when it ends; the cluster keeps running.
#
# Env (defaults): DURATION=15 (s per run)  HOT_KEYS (unset: pgbench -S; N: the same query over
#   accounts 1..N only, the workload for measuring cache hits: TARGETS="direct sy-cache")  CLIENTS="32 200"  MODES="simple extended prepared"
#   WORKLOAD="-S" (pgbench's workload options, e.g. "-b simple-update", "-b tpcb-like",
#   "-b select-only@9 -b simple-update@1"; before every run the replicas are waited for)
#   ROUNDS=1: repeat the whole matrix this many times, so slow drifts of the machine's load hit
#   every target alike; with ROUNDS > 1 a `round` column tells the runs apart and a second table
#   gives the median of every column over the rounds
#   SPLIT_VARIANTS (unset: sy-split as configured below): run sy-split once per listed variant,
#   a fresh process each time; a variant is a comma-separated list of [cluster.main] keys, e.g.
#   "consistency=session consistency=eventual" or
#   "consistency=session,wal_poll_interval=10ms,causal_wait=5ms"; even rounds take the variants
#   in reverse order
#   WARMUP=0: seconds of unmeasured reads before each proxied run (pgbench -S, then a read inside
#   a transaction, which fills the primary's pool too): warm server connections after a restart
#   STMT_COUNTS=0: 1 counts the statements each node ran (pg_stat_statements, preloaded on every
#   node by a one-time restart of the cluster) and prints a second table: reads on the primary
#   and on the replicas, writes, the proxy's WAL position probes (per transaction) and polls (per
#   second, all nodes); for Switchyard also SHOW STATS causal_reads_on_primary per transaction
#   CALLGRIND_TX="2000 6000" CALLGRIND_CLIENTS=8 CALLGRIND_IDLE=5 (callgrind: per variant, after
#   a warm-up and one unmeasured run of the workload, an idle period and one pgbench -t run per
#   count; the proxy's counters are zeroed before and dumped after each. Per transaction: each run
#   alone, less what the idle process executes in as long (pollers and timers, inflated by
#   valgrind's slowness), and the difference of the first and last runs divided by the difference
#   of their transactions, which cancels what does not depend on the count, such as the clients'
#   logins)
#   THREADS=2 (pgbench -j)  SCALE=10 (pgbench -i -s)  RSS_CLIENTS=1000
#   TARGETS="direct pgbouncer haproxy sy-nocache sy-mux sy-cache sy-split" (any subset, in this order;
#   sy-nocache has multiplexing off, sy-mux is sy-nocache with `multiplex = { enabled = true,
#   max_depth = MUX_DEPTH }`, MUX_DEPTH=8; sy-cache and sy-split keep the default)
#   BENCH_STATE=/tmp/switchyard-pg-bench
#   PG_PRIMARY_PORT=55532 PG_REPLICA1_PORT=55533 PG_REPLICA2_PORT=55534 (not the demo's ports,
#   so both can run)  PGBOUNCER_PORT=56432  HAPROXY_PORT=56433  SY_PORT_BASE=16432 (+0 cache off, +1 cache on,
#   +2 split, +3 multiplexed)  SWITCHYARD_BIN=target/release/switchyard (built when missing)
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
# primary's postmaster, its live children and the children it reaped: /proc/PID/stat cutime; the
# two replicas' likewise, in a column of their own) and pgbench's (bash `time`), each divided by
# the transactions pgbench counted. Together they are what the 2 cores had to give to each
# transaction.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
STATE=${BENCH_STATE:-/tmp/switchyard-pg-bench}
DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-32 200}
MODES=${MODES:-simple extended prepared}
WORKLOAD=${WORKLOAD:--S}
ROUNDS=${ROUNDS:-1}
SPLIT_VARIANTS=${SPLIT_VARIANTS:-}
SPLIT_KEYS= # the variant sy-split runs with now
STMT_COUNTS=${STMT_COUNTS:-0}
WARMUP=${WARMUP:-0}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
RSS_CLIENTS=${RSS_CLIENTS:-1000}
TARGETS=${TARGETS:-direct pgbouncer haproxy sy-nocache sy-mux sy-cache sy-split}
MUX_DEPTH=${MUX_DEPTH:-8}
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
DB=appdb APP_USER=app ADMIN_USER=bench_admin # (the admin console: SHOW STATS)
export PGPASSWORD=app_pass PGCONNECT_TIMEOUT=5

log() { echo "[bench] $*" >&2; }
die() { log "error: $*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
as_root() {
  if is_root; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) for: $*"; fi
}

sy_port() { case $1 in sy-nocache) echo "$SY_BASE" ;; sy-cache) echo $((SY_BASE + 1)) ;; sy-split) echo $((SY_BASE + 2)) ;; sy-mux) echo $((SY_BASE + 3)) ;; esac; }
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

split_keys() { # name -> the [cluster.main] keys of the sy-split variant running now
  if [ "$1" = sy-split ] && [ -n "$SPLIT_KEYS" ]; then
    tr ',' '\n' <<<"$SPLIT_KEYS" | sed 's/^\([a-z_]*\)=\(.*\)$/\1 = "\2"/'
  fi
}

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
$(split_keys "$1")

[cluster.main.defaults]
size = 20
mode = "transaction"
$(case $1 in sy-mux) echo "multiplex = { enabled = true, max_depth = $MUX_DEPTH }" ;; sy-nocache) echo "multiplex = { enabled = false }" ;; esac)

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

[[user]]
name = "$ADMIN_USER"
password = "$PGPASSWORD"
admin = true

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

start_switchyard() { # name [command to run it under, e.g. valgrind ...]
  local name=$1 port; port=$(sy_port "$1"); shift
  if sy_pid "$name" >/dev/null; then log "$name already running (pid $(sy_pid "$name"))"; return 0; fi
  sy_config "$name" >"$STATE/$name.toml"
  "$BIN" config check "$STATE/$name.toml" >/dev/null || die "$STATE/$name.toml does not pass 'switchyard config check'"
  setsid "$@" "$BIN" run --config "$STATE/$name.toml" >"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
  local i tries=150 # 30 s; under a wrapper (valgrind) 5 minutes
  [ $# = 0 ] || tries=1500
  for i in $(seq 1 "$tries"); do
    psql_app "$port" -Atc 'SELECT 1' >/dev/null 2>&1 && {
      log "$name up on 127.0.0.1:$port (pid $(sy_pid "$name"))$(split_keys "$name" | tr '\n' ' ' | sed 's/^./: &/')"; return 0; }
    sy_pid "$name" >/dev/null || { tail -n 20 "$STATE/$name.log" >&2; die "$name exited (log above)"; }
    sleep 0.2
  done
  tail -n 20 "$STATE/$name.log" >&2
  die "$name does not accept logins on $port within $((tries / 5)) s"
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
  for t in sy-nocache sy-mux sy-cache sy-split; do stop_switchyard "$t"; done
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

pg_ticks() { # [node dir] -> clock ticks of the node (primary): postmaster, its live children,
  # the children it reaped
  local pm; pm=$(head -1 "$PG_BASE/${1:-primary}/postmaster.pid")
  # (cat, not awk on the files: a process may exit between the glob and the read)
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
    awk -v pm="$pm" '$2 == "(postgres)" && ($1 == pm || $4 == pm) { t += $14 + $15 } $1 == pm && $2 == "(postgres)" { t += $16 + $17 } END { print t + 0 }'
}

# ---------------------------------------------------------------- statements per node (STMT_COUNTS=1)

stmt_setup() { # pg_stat_statements preloaded on every node (one restart), its view on the primary
  local n restart=0
  for n in primary 1 2; do
    if [[ $("$CLUSTER" psql "$n" -Atc 'SHOW shared_preload_libraries') != *pg_stat_statements* ]]; then
      # (ALTER SYSTEM works on a standby too: it writes the node's own postgresql.auto.conf)
      "$CLUSTER" psql "$n" -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'" >/dev/null
      restart=1
    fi
  done
  if [ "$restart" = 1 ]; then
    log "restarting the cluster with pg_stat_statements preloaded"
    stop_proxies # (their server connections would die with the restart)
    "$CLUSTER" stop "$PG_BASE" && "$CLUSTER" start "$PG_BASE"
  fi
  "$CLUSTER" psql primary -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' >/dev/null
  wait_replicas
}

stmt_reset() { local n; for n in primary 1 2; do "$CLUSTER" psql "$n" -Atc 'SELECT pg_stat_statements_reset()' >/dev/null; done; }

stmt_counts() { # node -> "reads writes probes polls other" since stmt_reset
  # The probe is the session's `SELECT pg_current_wal_insert_lsn()`, the poll the one statement
  # naming pg_is_in_recovery() (backend/postgres/wal_poll.rs); "other" is BEGIN/END, settings
  # replays, health checks. (Run over the unix socket as postgres: not counted by the proxy.)
  "$CLUSTER" psql "$1" -AtF ' ' -c "
    SELECT coalesce(sum(calls) FILTER (WHERE k = 'read'), 0), coalesce(sum(calls) FILTER (WHERE k = 'write'), 0),
           coalesce(sum(calls) FILTER (WHERE k = 'probe'), 0), coalesce(sum(calls) FILTER (WHERE k = 'poll'), 0),
           coalesce(sum(calls) FILTER (WHERE k = 'other'), 0)
    FROM (SELECT calls, CASE
            WHEN query LIKE '%pg_stat_statements%' THEN 'ours'
            WHEN query LIKE '%pg_is_in_recovery()%' THEN 'poll'
            WHEN query = 'SELECT pg_current_wal_insert_lsn()' THEN 'probe'
            WHEN query ~* '^\s*select' AND query LIKE '%pgbench_%' THEN 'read'
            WHEN query ~* '^\s*(update|insert|delete)' THEN 'write'
            ELSE 'other' END AS k FROM pg_stat_statements) s"
}

sy_stat() { # target name -> a counter of the proxy's admin console (SHOW STATS), "-" if none
  psql -X -q -h 127.0.0.1 -p "$(sy_port "$1")" -U "$ADMIN_USER" -d switchyard -Atc 'SHOW STATS' 2>/dev/null |
    awk -F'|' -v k="$2" '$1 == k { v = $2 } END { print (v == "" ? "-" : v) }'
}

counts_per_tx() { # counts.tsv -> label clients mode round, then per run: % of reads on the
  # replicas, per transaction: reads on the primary, on the replicas, writes, probes, causal
  # reads on the primary (SHOW STATS), other statements; polls per second
  # counts.tsv: label clients mode round txs seconds, the primary's reads writes probes polls
  # other (7-11), the replicas' (12-16), causal reads the proxy sent to the primary (17)
  awk -F'\t' -v OFS='\t' '
    function d(a, b) { return (a != "-" && b > 0) ? sprintf("%.3f", a / b) : "-" }
    { n = $5; pr = $7; rr = $12
      print $1, $2, $3, $4, (pr + rr > 0 ? sprintf("%.1f", 100 * rr / (pr + rr)) : "-"), d(pr, n), d(rr, n),
        d($8 + $13, n), d($9 + $14, n), d($17, n), d($11 + $16, n), d($10 + $15, $6) }' "$1"
}

print_counts() { # output of counts_per_tx [show the round column] -> markdown
  awk -F'\t' -v rounds="${2:-0}" '
    BEGIN {
      r = rounds ? " round |" : ""; rs = rounds ? " ---: |" : ""
      print "| target | clients | mode |" r " reads on replicas | primary reads/tx | replica reads/tx | writes/tx | probes/tx | causal reads on primary/tx | other statements/tx | polls/s (3 nodes) |"
      print "| --- | ---: | --- |" rs " ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    }
    { printf "| %s | %s | %s |%s %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, (rounds ? " " $4 " |" : ""),
        ($5 == "-" ? "-" : $5 " %"), $6, $7, $8, $9, $10, $11, $12 }' "$1"
}

per_tx() { # seconds transactions -> microseconds per transaction
  awk -v t="$1" -v n="${2:-0}" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / n; else printf "-" }'
}

warm_up() { # port clients seconds: unmeasured reads, so a fresh proxy's server connections are open
  # The read inside a transaction goes to the primary and fills its pool too; it writes nothing,
  # so no connection is left with a WAL position probe outstanding when the clients hang up.
  printf '\\set aid random(1, 100000)\nBEGIN;\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\nEND;\n' >"$STATE/warm.sql"
  pgbench -n -S -c "$2" -j "$THREADS" -T "$3" -h 127.0.0.1 -p "$1" -U "$APP_USER" "$DB" >/dev/null 2>&1 || true
  pgbench -n -f "$STATE/warm.sql" -c "$2" -j "$THREADS" -T "$3" -h 127.0.0.1 -p "$1" -U "$APP_USER" "$DB" >/dev/null 2>&1 || true
}

run_pgbench() { # target clients mode round [label] -> appends a line to $RESULTS (and $COUNTS)
  local target=$1 c=$2 mode=$3 round=$4 label=${5:-$1} port out rc=0 tps lat failed foreign fs sp status
  local pid p0 p1 g0 g1 r0 r1 txs hz proxy_us=- pg_us rep_us bench_us s0=- s1=- t0 t1
  port=$(target_port "$target")
  pid=$(proxy_pid "$target") || true
  if [ "$WARMUP" != 0 ] && [ "$target" != direct ]; then warm_up "$port" "$c" "$WARMUP"; fi
  wait_replicas
  wait_idle
  if [ "$STMT_COUNTS" = 1 ]; then
    stmt_reset
    if [[ $target == sy-* ]]; then s0=$(sy_stat "$target" causal_reads_on_primary); fi
  fi
  fs=$(mktemp); foreign_sampler "$fs" & sp=$!
  SAMPLER=$sp # stopped by the EXIT trap if this run dies
  local workload
  read -ra workload <<<"$WORKLOAD"
  if [ -n "${HOT_KEYS:-}" ]; then
    # The cache benchmark: the same -S query over only HOT_KEYS accounts, so repeated reads can
    # be cache hits (plain -S draws from scale x 100,000 accounts and rarely repeats).
    printf '\\set aid random(1, %s)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n' "$HOT_KEYS" >"$STATE/hot.sql"
    workload=(-f "$STATE/hot.sql")
  fi
  p0=$(ticks_of "$pid"); g0=$(pg_ticks); r0=$(( $(pg_ticks replica1) + $(pg_ticks replica2) )); t0=$(date +%s%N)
  local TIMEFORMAT='%U %S'
  rm -f "$STATE"/txlog.*
  { time pgbench -n "${workload[@]}" -M "$mode" -c "$c" -j "$THREADS" -T "$DURATION" -h 127.0.0.1 -p "$port" -U "$APP_USER" "$DB" \
      --log --log-prefix="$STATE/txlog" >"$STATE/pgbench.out" 2>&1; } 2>"$STATE/pgbench.time" || rc=$?
  p1=$(ticks_of "$pid"); g1=$(pg_ticks); r1=$(( $(pg_ticks replica1) + $(pg_ticks replica2) )); t1=$(date +%s%N)
  out=$(cat "$STATE/pgbench.out")
  kill "$sp" 2>/dev/null; wait "$sp" 2>/dev/null || true
  txs=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  hz=$(getconf CLK_TCK)
  if [ -n "$pid" ]; then proxy_us=$(per_tx "$(awk -v t=$((p1 - p0)) -v hz="$hz" 'BEGIN { print t / hz }')" "$txs"); fi
  pg_us=$(per_tx "$(awk -v t=$((g1 - g0)) -v hz="$hz" 'BEGIN { print t / hz }')" "$txs")
  rep_us=$(per_tx "$(awk -v t=$((r1 - r0)) -v hz="$hz" 'BEGIN { print t / hz }')" "$txs")
  bench_us=$(per_tx "$(awk '{ print $1 + $2 }' "$STATE/pgbench.time")" "$txs")
  foreign=$(cat "$fs" 2>/dev/null || echo '?'); rm -f "$fs" "$fs.tmp"
  printf '### %s c=%s M=%s round %s rc=%s\n%s\n\n' "$label" "$c" "$mode" "$round" "$rc" "$out" >>"$STATE/pgbench.log"
  if [ "$STMT_COUNTS" = 1 ]; then
    if [ "$s0" != - ]; then s1=$(sy_stat "$target" causal_reads_on_primary); fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$c" "$mode" "$round" "${txs:-0}" \
      "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')" \
      "$(stmt_counts primary | tr ' ' '\t')" \
      "$(paste -d ' ' <(stmt_counts 1) <(stmt_counts 2) | awk '{ for (i = 1; i <= 5; i++) printf "%s%d", (i > 1 ? "\t" : ""), $i + $(i + 5) }')" \
      "$(if [ "$s0" != - ] && [ "$s1" != - ]; then echo $((s1 - s0)); else echo -; fi)" >>"$COUNTS"
  fi
  tps=$(sed -n 's/^tps = \([0-9.]*\) (\(without initial connection time\|including reconnection times\))/\1/p' <<<"$out") # (the latter: -C)
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
  # p50 and p99 of every transaction's latency (pgbench --log: the third field, µs), in ms
  local pct
  pct=$(cat "$STATE"/txlog.* 2>/dev/null | awk '{ print $3 }' | sort -n | awk '{ v[NR] = $1 }
    END { if (NR) printf "%.3f %.3f", v[int((NR - 1) * 0.5) + 1] / 1000, v[int((NR - 1) * 0.99) + 1] / 1000; else print "- -" }')
  rm -f "$STATE"/txlog.*
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
  status=ok
  if [ "$rc" != 0 ] || [ -z "$tps" ]; then
    status=FAILED
    log "$label c=$c -M $mode FAILED (rc $rc): $(grep -m1 -iE 'error|fatal|abort' <<<"$out" || tail -n1 <<<"$out")"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$c" "$mode" "${tps:--}" "${lat:--}" "${failed:-0}" "$foreign" "$status" \
    "$proxy_us" "$pg_us" "$bench_us" "$rep_us" "$round" "${pct%% *}" "${pct##* }" >>"$RESULTS"
  log "$(printf '%-10s c=%-3s %-8s round %s %10s tps  %7s ms (p50/p99 %s)  foreign %s%%  %s  us/tx: proxy %s primary %s replicas %s pgbench %s' "$label" "$c" "$mode" "$round" "${tps:--}" "${lat:--}" "${pct/ //}" "$foreign" "$status" "$proxy_us" "$pg_us" "$rep_us" "$bench_us")"
}

# results.tsv: label clients mode tps latency failed foreign% status proxy primary pgbench
# replicas round p50 p99 (the CPU columns in µs per transaction, latencies in ms)
print_table() { # results.tsv [show the round column] -> markdown
  # (ratios against direct and PgBouncer of the same round)
  awk -F'\t' -v rounds="${2:-0}" '
    { key = $2 SUBSEP $3 SUBSEP $13; tps[$1, key] = ($8 == "ok") ? $4 : ""; row[NR] = $0 }
    function ratio(a, b) { return (a != "" && b != "" && b > 0) ? sprintf("%.2fx", a / b) : "-" }
    END {
      r = rounds ? " round |" : ""; rs = rounds ? " ---: |" : ""
      print "| target | clients | mode |" r " TPS | avg latency ms | p50 ms | p99 ms | failed tx | vs direct | vs pgbouncer | proxy µs/tx | primary µs/tx | replicas µs/tx | pgbench µs/tx | foreign% |"
      print "| --- | ---: | --- |" rs " ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
      for (i = 1; i <= NR; i++) {
        split(row[i], f, "\t"); key = f[2] SUBSEP f[3] SUBSEP f[13]
        t = (f[8] == "ok") ? f[4] : ""
        printf "| %s | %s | %s |%s %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3],
          (rounds ? " " f[13] " |" : ""),
          (t == "" ? "FAILED" : sprintf("%.0f", t)), f[5], (f[14] == "" ? "-" : f[14]), (f[15] == "" ? "-" : f[15]), f[6],
          (f[1] == "direct" ? "1.00x" : ratio(t, tps["direct", key])),
          (f[1] == "pgbouncer" ? (t == "" ? "-" : "1.00x") : ratio(t, tps["pgbouncer", key])),
          f[9], f[10], f[12], f[11], f[7]
      }
    }' "$1"
}

medians() { # tsv round-column status-column -> one row per target, clients and mode: the median
  # over the rounds of every numeric column (failed runs left out; a target that failed every
  # round keeps its first row)
  awk -F'\t' -v OFS='\t' -v rc="$2" -v sc="$3" '
    { k = $1 SUBSEP $2 SUBSEP $3
      if (!(k in n)) { order[++keys] = k; first[k] = $0; n[k] = 0; fails[k] = 0 }
      if (sc && $sc != "ok") { fails[k]++; next }
      n[k]++; for (i = 4; i <= NF; i++) v[k, i, n[k]] = $i; nf[k] = NF }
    function median(k, i,   m, j, l, x, a) {
      m = 0
      for (j = 1; j <= n[k]; j++) if (v[k, i, j] ~ /^-?[0-9.]+$/) { x = v[k, i, j] + 0; for (l = ++m; l > 1 && a[l - 1] > x; l--) a[l] = a[l - 1]; a[l] = x }
      if (m == 0) return v[k, i, 1]
      x = sprintf("%.3f", (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2)
      sub(/\.?0+$/, "", x); return x
    }
    END {
      for (o = 1; o <= keys; o++) {
        k = order[o]
        if (n[k] == 0) { print first[k]; continue }
        split(k, id, SUBSEP); line = id[1] OFS id[2] OFS id[3]
        for (i = 4; i <= nf[k]; i++)
          line = line OFS (i == rc ? "median" : median(k, i))
        print line
      }
    }' "$1"
}

# ---------------------------------------------------------------- sections

section_tps() {
  install_missing
  ensure_data
  trap stop_proxies EXIT
  if [ "$STMT_COUNTS" = 1 ]; then stmt_setup; fi
  local t
  for t in $TARGETS; do
    wanted "$t" || continue
    case $t in
      pgbouncer) start_pgbouncer ;;
      haproxy) start_haproxy ;;
      sy-split) [ -n "$SPLIT_VARIANTS" ] || start_switchyard "$t" ;; # (else: one process per run)
      sy-*) start_switchyard "$t" ;;
    esac
  done
  RESULTS=$STATE/tps-$(date +%Y%m%d-%H%M%S).tsv
  COUNTS=${RESULTS%.tsv}-statements.tsv
  : >"$RESULTS"
  if [ "$STMT_COUNTS" = 1 ]; then : >"$COUNTS"; fi
  log "pgbench -n $WORKLOAD -T $DURATION -j $THREADS, clients: $CLIENTS, modes: $MODES, targets: $TARGETS, rounds: $ROUNDS${SPLIT_VARIANTS:+, sy-split variants: $SPLIT_VARIANTS} (raw output: $STATE/pgbench.log)"
  local c m r v variants
  for r in $(seq 1 "$ROUNDS"); do
    for c in $CLIENTS; do
      for m in $MODES; do
        for t in $TARGETS; do
          wanted "$t" || continue
          if [ "$t" = sy-split ] && [ -n "$SPLIT_VARIANTS" ]; then
            variants=$SPLIT_VARIANTS
            if [ $((r % 2)) = 0 ]; then variants=$(tr ' ' '\n' <<<"$SPLIT_VARIANTS" | tac | tr '\n' ' '); fi
            for v in $variants; do
              SPLIT_KEYS=$v; start_switchyard sy-split
              run_pgbench "$t" "$c" "$m" "$r" "sy-split $v"
              stop_switchyard sy-split # (its WAL pollers stay out of the other runs)
            done
          else
            run_pgbench "$t" "$c" "$m" "$r"
          fi
        done
      done
    done
  done
  local shown=0; [ "$ROUNDS" -gt 1 ] && shown=1
  {
    echo
    echo "pgbench -n $WORKLOAD -T $DURATION -j $THREADS, scale $SCALE, $(nproc) cores shared by pgbench, PostgreSQL and the proxies"
    echo
    print_table "$RESULTS" "$shown"
    if [ "$ROUNDS" -gt 1 ]; then
      echo; echo "Medians over the $ROUNDS rounds"; echo
      print_table <(medians "$RESULTS" 13 8)
    fi
    if [ "$STMT_COUNTS" = 1 ]; then
      echo; echo "Statements on the nodes (pg_stat_statements) and reads the proxy sent to the primary for causality (SHOW STATS)"; echo
      print_counts <(counts_per_tx "$COUNTS") "$shown"
      if [ "$ROUNDS" -gt 1 ]; then echo; print_counts <(medians <(counts_per_tx "$COUNTS") 4 0) 0; fi
    fi
    echo
  } | tee "$STATE/tps.md"
  log "tables saved in $STATE/tps.md, raw figures in $RESULTS$(if [ "$STMT_COUNTS" = 1 ]; then echo " and $COUNTS"; fi)"
  stop_proxies; trap - EXIT
}

# ---------------------------------------------------------------- callgrind

cg_take() { # pid -> "Ir Ir-in-server-logins" counted since the last zeroing; dumps them (which
  # zeroes). A server login is a SCRAM exchange (PBKDF2, 4096 rounds of HMAC-SHA-256), ~57
  # million instructions under valgrind (no SHA extensions there): counted apart, since how many
  # a run needs depends on how its clients happen to end (a client that hangs up while the WAL
  # position probe after its last write is unanswered leaves that server connection closed)
  local before after f
  before=$(find "$STATE" -maxdepth 1 -name "callgrind.out.$1.*" | wc -l)
  callgrind_control -d "$1" >/dev/null 2>&1
  for _ in $(seq 1 300); do
    after=$(find "$STATE" -maxdepth 1 -name "callgrind.out.$1.*" | wc -l)
    [ "$after" -gt "$before" ] && break
    sleep 0.1
  done
  f=$(ls -t "$STATE/callgrind.out.$1".* | head -1)
  printf '%s %s\n' "$(awk '/^(summary|totals):/ { print $2; exit }' "$f")" \
    "$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null |
      awk '/ScramClient::server_first/ { gsub(",", "", $1); print $1; found = 1; exit } END { if (!found) print 0 }')"
}

section_callgrind() {
  install_missing
  command -v callgrind_control >/dev/null || {
    log "installing valgrind (apt)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q valgrind >/dev/null; }
  ensure_data
  trap stop_proxies EXIT
  local target=${CALLGRIND_TARGET:-sy-split}
  local variants=${SPLIT_VARIANTS:-consistency=session consistency=eventual}
  # Variants are sy-split's; another target runs once, as configured.
  [ "$target" = sy-split ] || variants=$target
  local c=${CALLGRIND_CLIENTS:-8} idle=${CALLGRIND_IDLE:-5} mode=${MODES%% *} workload v n pid port
  local out=$STATE/callgrind-$(date +%Y%m%d-%H%M%S).tsv t0 t1 s0 s1 l0 l1 ir txs
  read -ra workload <<<"$WORKLOAD"
  port=$(sy_port "$target")
  : >"$out"
  stop_switchyard "$target"
  for v in $variants; do
    SPLIT_KEYS=$v
    # Names uncompressed: every dump is read on its own (callgrind_annotate FILE), and a later
    # dump of a compressed run refers to names only the first one spells out.
    start_switchyard "$target" valgrind --tool=callgrind --compress-strings=no \
      --callgrind-out-file="$STATE/callgrind.out.%p"
    pid=$(sy_pid "$target")
    warm_up "$port" "$c" "$([ "$WARMUP" = 0 ] && echo 5 || echo "$WARMUP")"
    # and the workload itself once, unmeasured: every server connection it needs is opened (a
    # SCRAM login costs the proxy ~57 million instructions here) before the counting starts
    n=${CALLGRIND_TX:-2000 6000}; n=${n%% *}
    pgbench -n "${workload[@]}" -M "$mode" -c "$c" -j "$THREADS" -t $((n / c)) -h 127.0.0.1 -p "$port" -U "$APP_USER" "$DB" >/dev/null 2>&1 || true
    # What the idle process executes per second (pollers, timers): to subtract from the runs,
    # which last ~50 times longer under valgrind than natively.
    wait_replicas; callgrind_control -z "$pid" >/dev/null 2>&1
    t0=$(date +%s%N); sleep "$idle"; ir=$(cg_take "$pid"); t1=$(date +%s%N)
    printf '%s\tidle\t0\t%s\t%s\t-\t0\t0\n' "$v" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')" "${ir%% *}" >>"$out"
    for n in ${CALLGRIND_TX:-2000 6000}; do
      wait_replicas
      s0=$(sy_stat "$target" causal_reads_on_primary); l0=$(sy_stat "$target" server_connects)
      callgrind_control -z "$pid" >/dev/null 2>&1
      t0=$(date +%s%N)
      pgbench -n "${workload[@]}" -M "$mode" -c "$c" -j "$THREADS" -t $((n / c)) -h 127.0.0.1 -p "$port" -U "$APP_USER" "$DB" \
        >"$STATE/pgbench.out" 2>&1 || log "pgbench failed: $(tail -n1 "$STATE/pgbench.out")"
      ir=$(cg_take "$pid"); t1=$(date +%s%N)
      s1=$(sy_stat "$target" causal_reads_on_primary); l1=$(sy_stat "$target" server_connects)
      txs=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$STATE/pgbench.out")
      printf '### callgrind %s c=%s -t %s\n%s\n\n' "$v" "$c" $((n / c)) "$(cat "$STATE/pgbench.out")" >>"$STATE/pgbench.log"
      printf '%s\trun\t%s\t%s\t%s\t%s\t%s\t%s\n' "$v" "${txs:-0}" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')" \
        "${ir%% *}" "$((s1 - s0))" "$((l1 - l0))" "${ir##* }" >>"$out"
      log "callgrind $v: $txs transactions, ${ir%% *} instructions (${ir##* } in $((l1 - l0)) server logins), $((s1 - s0)) causal reads on the primary"
    done
    stop_switchyard "$target"
  done
  # out: variant kind(idle|run) transactions seconds Ir causal-reads-on-primary server-logins
  # Ir-in-server-logins
  {
    echo
    echo "Instructions the proxy executed (callgrind, all threads), pgbench -n $WORKLOAD -M $mode -c $c -t N, $target"
    echo
    awk -F'\t' '
      $2 == "idle" { rate[$1] = $5 / $4; idle[$1] = $4; order[++nv] = $1; next }
      { k = $1; m = ++runs[k]; tx[k, m] = $3; sec[k, m] = $4; ir[k, m] = $5; cp[k, m] = $6; lg[k, m] = $7; li[k, m] = $8 }
      # net: less what the idle process executes in as long, less server logins
      function net(k, m) { return ir[k, m] - rate[k] * sec[k, m] - li[k, m] }
      END {
        print "| variant | transactions | seconds | instructions | server logins (their instructions) | per tx | per tx less idle and logins | causal reads on primary/tx |"
        print "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        for (o = 1; o <= nv; o++) {
          k = order[o]
          printf "| %s | idle | %.1f | %.0f/s | | | | |\n", k, idle[k], rate[k]
          for (m = 1; m <= runs[k]; m++)
            printf "| %s | %d | %.1f | %.0f | %d (%.0f) | %.0f | %.0f | %.3f |\n", k, tx[k, m], sec[k, m], ir[k, m], lg[k, m], li[k, m],
              ir[k, m] / tx[k, m], net(k, m) / tx[k, m], cp[k, m] / tx[k, m]
          if (runs[k] >= 2) {
            a = 1; b = runs[k]; dn = tx[k, b] - tx[k, a]
            printf "| %s | difference | | | | %.0f | **%.0f** | |\n", k, (ir[k, b] - ir[k, a]) / dn, (net(k, b) - net(k, a)) / dn
          }
        }
      }' "$out"
    echo
  } | tee "$STATE/callgrind.md"
  log "table saved in $STATE/callgrind.md, raw figures in $out, profiles in $STATE/callgrind.out.*"
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
  callgrind) section_callgrind ;;
  rss) section_rss ;;
  all) section_tps; section_rss ;;
  down) section_down ;;
  *) echo "usage: $0 {tps|rss|callgrind|all|down}" >&2; exit 2 ;;
esac
