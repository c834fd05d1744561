#!/usr/bin/env bash
# PostgreSQL 15 on loopback for the Switchyard examples and benchmarks: one primary and two
# streaming hot-standby replicas (physical slots replica1, replica2).
#
# Usage: examples/postgres/cluster.sh COMMAND [DIR]
#   start              initialise what is missing, start what is not running, wait for queries
#   stop               fast shutdown of every node under DIR
#   status             running/stopped per node
#   lag                replication state (bytes not yet replayed per replica)
#   stop-replica N     immediate (crash-like) stop of replica N (1 or 2)
#   start-replica N    start replica N again and wait until it answers
#   pause-replay N     pause WAL replay on replica N (it keeps receiving WAL)
#   resume-replay N    resume it
#   psql NODE [args]   superuser psql on NODE (primary, replica1, replica2, 1, 2) over the unix
#                      socket; DIR comes from $PG_BASE here
#   destroy            stop, then remove DIR
# DIR: the data directory (default $PG_BASE, else /tmp/switchyard-pgcluster).
#
# Env (defaults):
#   PG_PRIMARY_PORT=55432 PG_REPLICA1_PORT=55433 PG_REPLICA2_PORT=55434
#   PG_DB=appdb  PG_APP_USER=app  PG_APP_PASSWORD=app_pass           owner of PG_DB
#   PG_RO_USER=readonly PG_RO_PASSWORD=readonly_pass                  pg_read_all_data, read-only
#   PG_MD5_USER=md5user PG_MD5_PASSWORD=md5_pass                      md5-hashed, md5 auth over TCP
#   PG_REPL_USER=replicator PG_REPL_PASSWORD=repl_pass                REPLICATION, for the standbys
#   PG_OS_USER=postgres    OS user the servers run as when started by root (created if absent)
#   PG_MAX_CONNECTIONS=300 PG_BIN=/usr/lib/postgresql/15/bin
#   PG_FSYNC=off   a scratch cluster: no fsync (a start takes ~1 s instead of ~10 s here); an OS
#                  crash may lose it. Set PG_FSYNC=on for a durable one (read-only benchmarks
#                  are not affected).
# TCP (127.0.0.1 only) uses scram-sha-256 (md5 for PG_MD5_USER); the unix socket in DIR/run
# trusts everybody: `psql -h DIR/run -p 55432 -U postgres` is a superuser session.
# Installs postgresql-15 and postgresql-contrib (pgbench) with apt when missing (root or sudo).
set -euo pipefail

usage() {
  echo "usage: $0 {start|stop|status|lag|stop-replica N|start-replica N|pause-replay N|resume-replay N|psql NODE [args]|destroy} [DIR]" >&2
  exit 2
}

CMD=${1:-}; shift || true
N=; NODE=
case "$CMD" in
  stop-replica|start-replica|pause-replay|resume-replay) N=${1:-}; shift || true ;;
  psql) NODE=${1:-primary}; shift || true ;;
  start|stop|status|lag|destroy) ;;
  *) usage ;;
esac
if [ "$CMD" = psql ]; then BASE=${PG_BASE:-/tmp/switchyard-pgcluster}; else BASE=${1:-${PG_BASE:-/tmp/switchyard-pgcluster}}; fi

P0=${PG_PRIMARY_PORT:-55432}; P1=${PG_REPLICA1_PORT:-55433}; P2=${PG_REPLICA2_PORT:-55434}
DB=${PG_DB:-appdb}
APP_USER=${PG_APP_USER:-app};          APP_PW=${PG_APP_PASSWORD:-app_pass}
RO_USER=${PG_RO_USER:-readonly};       RO_PW=${PG_RO_PASSWORD:-readonly_pass}
MD5_USER=${PG_MD5_USER:-md5user};      MD5_PW=${PG_MD5_PASSWORD:-md5_pass}
REPL_USER=${PG_REPL_USER:-replicator}; REPL_PW=${PG_REPL_PASSWORD:-repl_pass}
OSU=${PG_OS_USER:-postgres}
MAXCONN=${PG_MAX_CONNECTIONS:-300}
PGBIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
FSYNC=${PG_FSYNC:-off}
RUN=$BASE/run; LOG=$BASE/log

log() { echo "[pg-cluster] $*" >&2; }
die() { log "error: $*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# root runs apt itself; others go through sudo when it is there
as_root() {
  if is_root; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root for: $*"; fi
}

ensure_installed() {
  if [ -x "$PGBIN/postgres" ] && [ -x "$PGBIN/pg_basebackup" ] && command -v pgbench >/dev/null; then return 0; fi
  log "installing postgresql-15 postgresql-contrib (apt)"
  as_root apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    postgresql-15 postgresql-contrib >/dev/null
  [ -x "$PGBIN/postgres" ] || die "$PGBIN/postgres is still missing after the install (set PG_BIN?)"
}

ensure_user() {
  is_root || return 0
  id -u "$OSU" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$OSU"
}

# PostgreSQL refuses to run as root: as root, run as the unprivileged OS user
as_pg() {
  if is_root; then (cd "$BASE" && runuser -u "$OSU" -- "$@"); else (cd "$BASE" && "$@"); fi
}

node_name() {
  case $1 in
    primary|0) echo primary ;;
    1|replica1) echo replica1 ;;
    2|replica2) echo replica2 ;;
    *) die "unknown node '$1' (primary, replica1, replica2, 1 or 2)" ;;
  esac
}
node_port() {
  case $(node_name "$1") in primary) echo "$P0" ;; replica1) echo "$P1" ;; replica2) echo "$P2" ;; esac
}
replica_n() {
  case $1 in 1|2) echo "$1" ;; replica1) echo 1 ;; replica2) echo 2 ;; *) die "replica number must be 1 or 2, got '$1'" ;; esac
}

running() { [ -f "$1/PG_VERSION" ] && [ -d "$BASE" ] && as_pg "$PGBIN/pg_ctl" -D "$1" status >/dev/null 2>&1; }

su_psql() { # port, psql args... : superuser over the unix socket
  local port=$1; shift
  as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$port" -U postgres -d postgres "$@"
}

wait_ready() { # port: until the app user can run a query over TCP
  local i
  for i in $(seq 1 240); do
    if PGPASSWORD=$APP_PW PGCONNECT_TIMEOUT=2 "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$1" -U "$APP_USER" -d "$DB" \
        -tAc 'SELECT 1' >/dev/null 2>&1; then return 0; fi
    [ "$i" = 1 ] || sleep 0.25
  done
  die "port $1 did not accept queries within 60s (logs in $LOG)"
}

pg_start() { # dir port
  local name; name=$(basename "$1")
  if running "$1"; then log "$name already running on port $2"; return 0; fi
  as_pg "$PGBIN/pg_ctl" -D "$1" -l "$LOG/$name.log" -w -t 60 start >/dev/null ||
    { tail -n 20 "$LOG/$name.log" >&2; die "$name did not start (log: $LOG/$name.log)"; }
}

init_primary() {
  local d=$BASE/primary
  if [ ! -f "$d/PG_VERSION" ]; then
    log "initdb primary"
    rm -rf "$d"
    as_pg "$PGBIN/initdb" -D "$d" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 --no-sync >"$LOG/initdb.log" 2>&1 || { cat "$LOG/initdb.log" >&2; die "initdb failed"; }
    cat >>"$d/postgresql.conf" <<EOF
# --- examples/postgres/cluster.sh ---
listen_addresses = '127.0.0.1'
port = $P0
unix_socket_directories = '$RUN'
max_connections = $MAXCONN
password_encryption = 'scram-sha-256'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
hot_standby_feedback = on
wal_keep_size = '256MB'
wal_retrieve_retry_interval = '1s'
cluster_name = 'primary'
fsync = $FSYNC
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    cat >"$d/pg_hba.conf" <<EOF
# TYPE  DATABASE     USER         ADDRESS        METHOD
local   all          all                         trust
local   replication  all                         trust
host    all          $MD5_USER    127.0.0.1/32   md5
host    all          all          127.0.0.1/32   scram-sha-256
host    replication  all          127.0.0.1/32   scram-sha-256
EOF
  fi
  pg_start "$d" "$P0"
  # roles and database; idempotent, passwords re-applied on every start
  su_psql "$P0" >/dev/null <<EOF
SET client_min_messages = warning;
SELECT format('CREATE ROLE %I LOGIN', '$APP_USER') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_USER') \gexec
SELECT format('CREATE ROLE %I LOGIN', '$RO_USER') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$RO_USER') \gexec
SELECT format('CREATE ROLE %I LOGIN', '$MD5_USER') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$MD5_USER') \gexec
SELECT format('CREATE ROLE %I LOGIN REPLICATION', '$REPL_USER') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$REPL_USER') \gexec
ALTER ROLE "$APP_USER" PASSWORD '$APP_PW';
ALTER ROLE "$RO_USER" PASSWORD '$RO_PW';
ALTER ROLE "$REPL_USER" PASSWORD '$REPL_PW';
ALTER ROLE "$RO_USER" SET default_transaction_read_only = on;
GRANT pg_read_all_data TO "$RO_USER";
SET password_encryption = 'md5';
ALTER ROLE "$MD5_USER" PASSWORD '$MD5_PW';
RESET password_encryption;
SELECT format('CREATE DATABASE %I OWNER %I', '$DB', '$APP_USER') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB') \gexec
EOF
}

init_replica() { # n port
  local n=$1 port=$2 d=$BASE/replica$1
  if [ ! -f "$d/PG_VERSION" ]; then
    log "pg_basebackup replica$n"
    rm -rf "$d"
    # a slot left by an earlier replica of the same name would hold WAL from the wrong position
    su_psql "$P0" -c "SELECT pg_drop_replication_slot('replica$n') FROM pg_replication_slots WHERE slot_name = 'replica$n' AND NOT active" >/dev/null
    as_pg env PGPASSWORD="$REPL_PW" PGAPPNAME="replica$n" "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$P0" \
      -U "$REPL_USER" -D "$d" -R -X stream -C -S "replica$n" -c fast --no-sync >"$LOG/basebackup$n.log" 2>&1 ||
      { cat "$LOG/basebackup$n.log" >&2; die "pg_basebackup for replica$n failed"; }
    cat >>"$d/postgresql.conf" <<EOF
# --- replica$n ---
port = $port
cluster_name = 'replica$n'
EOF
  fi
  pg_start "$d" "$port"
}

do_start() {
  ensure_installed
  ensure_user
  mkdir -p "$BASE" "$RUN" "$LOG"
  if is_root; then chown "$OSU" "$BASE" "$RUN" "$LOG"; fi
  chmod 700 "$BASE"
  local t0; t0=$(date +%s%N)
  init_primary
  wait_ready "$P0"
  init_replica 1 "$P1"
  init_replica 2 "$P2"
  wait_ready "$P1"
  wait_ready "$P2"
  log "up in $(( ($(date +%s%N) - t0) / 1000000 )) ms: primary 127.0.0.1:$P0, replicas 127.0.0.1:$P1 127.0.0.1:$P2 (db $DB, users $APP_USER/$APP_PW $RO_USER/$RO_PW $MD5_USER/$MD5_PW)"
}

do_stop() {
  local n
  [ -d "$BASE" ] || return 0
  for n in replica2 replica1 primary; do
    if running "$BASE/$n"; then as_pg "$PGBIN/pg_ctl" -D "$BASE/$n" -m fast -w stop >/dev/null && log "stopped $n"; fi
  done
}

do_status() {
  local n
  for n in primary replica1 replica2; do
    if running "$BASE/$n"; then
      echo "$n: running (pid $(head -1 "$BASE/$n/postmaster.pid"), port $(node_port "$n"))"
    else
      echo "$n: stopped"
    fi
  done
}

do_lag() {
  running "$BASE/primary" || die "the primary is not running"
  echo "== on the primary (pg_stat_replication) =="
  su_psql "$P0" -c "SELECT application_name, state, sent_lsn, replay_lsn,
      pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) AS replay_lag_bytes, replay_lag
    FROM pg_stat_replication ORDER BY application_name"
  local n
  for n in 1 2; do
    running "$BASE/replica$n" || { echo "== replica$n: stopped =="; continue; }
    echo "== on replica$n =="
    su_psql "$(node_port "$n")" -c "SELECT pg_is_in_recovery(), pg_is_wal_replay_paused() AS paused,
        pg_last_wal_receive_lsn() AS receive_lsn, pg_last_wal_replay_lsn() AS replay_lsn,
        pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) AS unreplayed_bytes"
  done
}

replica_cmd() {
  local n d port
  n=$(replica_n "$N"); d=$BASE/replica$n; port=$(node_port "$n")
  [ -f "$d/PG_VERSION" ] || die "replica$n does not exist under $BASE (run: $0 start $BASE)"
  case "$CMD" in
    stop-replica)
      if running "$d"; then as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null; fi
      log "replica$n stopped (immediate = crash-like)" ;;
    start-replica)
      pg_start "$d" "$port"; wait_ready "$port"; log "replica$n up on port $port" ;;
    pause-replay)
      su_psql "$port" -c "SELECT pg_wal_replay_pause()" >/dev/null; log "replay paused on replica$n" ;;
    resume-replay)
      su_psql "$port" -c "SELECT pg_wal_replay_resume()" >/dev/null; log "replay resumed on replica$n" ;;
  esac
}

case "$CMD" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  lag) do_lag ;;
  stop-replica|start-replica|pause-replay|resume-replay) replica_cmd ;;
  psql) su_psql "$(node_port "$NODE")" "$@" ;;
  destroy) do_stop; rm -rf "$BASE"; log "removed $BASE" ;;
esac
