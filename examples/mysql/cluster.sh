#!/usr/bin/env bash
# MariaDB 10.11 on loopback for the Switchyard examples and benchmarks: one primary (binlog, GTID)
# and N GTID replicas of it (CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos), each a private
# mariadbd of its own. The system service and /etc/mysql are never used: every server and client
# gets --defaults-file (or --no-defaults).
#
# Usage: examples/mysql/cluster.sh COMMAND [DIR]
#   start                initialise what is missing, start what is not running, restart stopped
#                        replication threads, wait until every replica has applied the primary's binlog
#   stop                 clean shutdown (SIGTERM) of every node under DIR
#   status               running/stopped per node, replication threads, GTID positions
#   lag                  replication state (transactions received, applied, behind the primary)
#   stop-replica N       clean shutdown of replica N
#   start-replica N      start replica N (seed it first when it does not exist), wait until caught up
#   pause-replay N       stop applying on replica N (STOP SLAVE SQL_THREAD; it keeps receiving the binlog)
#   resume-replay N      apply again (START SLAVE SQL_THREAD) and wait until caught up
#   mariadb NODE [args]  admin mariadb shell on NODE (primary, replica1, replica2, ..., 0, 1, 2, ...)
#                        over its unix socket; DIR comes from $MY_BASE here
#   destroy              stop, then remove DIR
# DIR: the data directory (default $MY_BASE, else /tmp/switchyard-mycluster).
#
# Env (defaults):
#   MY_PRIMARY_PORT=53306   the primary; replica N listens on MY_PRIMARY_PORT+N (53307, 53308, ...)
#   MY_REPLICAS=1           replicas `start` creates and starts (1..N); stop, status and lag cover
#                           every replica under DIR
#   MY_DB=appdb  MY_APP_USER=app  MY_APP_PASSWORD=app_pass        ALL on MY_DB, plus BINLOG MONITOR
#                                                                 and SLAVE MONITOR (GTID positions)
#   MY_RO_USER=readonly MY_RO_PASSWORD=readonly_pass               SELECT on MY_DB
#   MY_REPL_USER=replicator MY_REPL_PASSWORD=repl_pass             REPLICATION SLAVE, for the replicas
#   MY_OS_USER=mysql        OS user the servers run as when started by root (created if absent)
#   MY_MAX_CONNECTIONS=2000 MY_BUFFER_POOL=256M (innodb_buffer_pool_size per node)
#   MY_CATCHUP_TIMEOUT=60   seconds start/start-replica/resume-replay wait for a replica to catch up
#   MY_FSYNC=off   a scratch cluster: no flush at commit (innodb_flush_log_at_trx_commit = 2,
#                  sync_binlog = 0, no doublewrite); an OS crash may lose the last second. Set
#                  MY_FSYNC=on for a durable one (read-only benchmarks are not affected).
# Every account exists as 'x'@'%', 'x'@'localhost' and 'x'@'127.0.0.1' with
# mysql_native_password; TCP listens on 127.0.0.1 only and the replicas are read_only. The admin
# account is root (or, not run as root, the current OS user) by unix_socket on each node's
# socket: `MY_BASE=DIR examples/mysql/cluster.sh mariadb primary` is an admin shell.
#
# Layout: DIR/primary and DIR/replicaN, each {my.cnf,data/,mysqld.sock,mysqld.pid,error.log}.
# The primary writes a binlog (server_id 1, log_bin, binlog_format ROW, gtid_strict_mode); replica
# N has server_id 1+N, read_only, gtid_strict_mode and no binlog of its own. A new replica is
# seeded from a consistent mariadb-dump of the primary (--single-transaction --gtid, its databases
# and accounts), then replicates from the dump's GTID position. A primary created afresh makes
# the replicas under DIR be seeded again (they follow an older history).
# Installs mariadb-server and mariadb-client with apt when missing (root or sudo); the package's
# own service is left alone.
set -euo pipefail
# mariadbd lives in /usr/sbin, often not on a non-root user's PATH
PATH=$PATH:/usr/sbin:/usr/local/sbin

usage() {
  echo "usage: $0 {start|stop|status|lag|stop-replica N|start-replica N|pause-replay N|resume-replay N|mariadb NODE [args]|destroy} [DIR]" >&2
  exit 2
}

CMD=${1:-}; shift || true
N=; NODE=
case "$CMD" in
  stop-replica|start-replica|pause-replay|resume-replay) N=${1:-}; shift || true ;;
  mariadb) NODE=${1:-primary}; shift || true ;;
  start|stop|status|lag|destroy) ;;
  *) usage ;;
esac
if [ "$CMD" = mariadb ]; then BASE=${MY_BASE:-/tmp/switchyard-mycluster}; else BASE=${1:-${MY_BASE:-/tmp/switchyard-mycluster}}; fi

PORT=${MY_PRIMARY_PORT:-53306}
REPLICAS=${MY_REPLICAS:-1}
DB=${MY_DB:-appdb}
APP_USER=${MY_APP_USER:-app};          APP_PW=${MY_APP_PASSWORD:-app_pass}
RO_USER=${MY_RO_USER:-readonly};       RO_PW=${MY_RO_PASSWORD:-readonly_pass}
REPL_USER=${MY_REPL_USER:-replicator}; REPL_PW=${MY_REPL_PASSWORD:-repl_pass}
OSU=${MY_OS_USER:-mysql}
MAXCONN=${MY_MAX_CONNECTIONS:-2000}
BUFFER_POOL=${MY_BUFFER_POOL:-256M}
CATCHUP=${MY_CATCHUP_TIMEOUT:-60}
FSYNC=${MY_FSYNC:-off}
ADMIN=$(id -un)

log() { echo "[my-cluster] $*" >&2; }
die() { log "error: $*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

[[ $PORT =~ ^[1-9][0-9]*$ ]] || die "MY_PRIMARY_PORT must be a port number, got '$PORT'"
[[ $REPLICAS =~ ^[0-9]+$ ]] || die "MY_REPLICAS must be a number, got '$REPLICAS'"
case "$FSYNC" in on|off) ;; *) die "MY_FSYNC must be on or off, got '$FSYNC'" ;; esac

# root runs apt itself; others go through sudo when it is there
as_root() {
  if is_root; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root for: $*"; fi
}

ensure_installed() {
  local p missing=
  for p in mariadbd mariadb-install-db mariadb mariadb-dump; do command -v "$p" >/dev/null || missing=1; done
  [ -n "$missing" ] || return 0
  log "installing mariadb-server mariadb-client (apt)"
  as_root apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    mariadb-server mariadb-client >/dev/null
  for p in mariadbd mariadb-install-db mariadb mariadb-dump; do
    command -v "$p" >/dev/null || die "$p is still missing after the install"
  done
}

ensure_user() {
  is_root || return 0
  id -u "$OSU" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$OSU"
}

# node 0 is the primary, node N >= 1 is replica N
node_dir()  { if [ "$1" = 0 ]; then echo "$BASE/primary"; else echo "$BASE/replica$1"; fi; }
node_name() { if [ "$1" = 0 ]; then echo primary; else echo "replica$1"; fi; }
node_port() { echo $(( PORT + $1 )); }
node_n() { # primary|replicaN|N -> N
  case $1 in
    primary) echo 0 ;;
    replica*) [[ ${1#replica} =~ ^[1-9][0-9]*$ ]] || die "unknown node '$1' (primary, replica1, replica2, ... or 0, 1, 2, ...)"; echo "${1#replica}" ;;
    *) [[ $1 =~ ^(0|[1-9][0-9]*)$ ]] || die "unknown node '$1' (primary, replica1, replica2, ... or 0, 1, 2, ...)"; echo "$1" ;;
  esac
}
replica_n() { [[ $1 =~ ^[1-9][0-9]*$ ]] || die "replica number must be 1, 2, ...; got '$1'"; echo "$1"; }
node_pid() { cat "$(node_dir "$1")/mysqld.pid" 2>/dev/null || true; }

# running = the pid file names a live mariadbd (a stale pid reused by another process does not count)
running() {
  local pid; pid=$(node_pid "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = mariadbd ]
}

# replicas that exist on disk, ascending
existing_replicas() {
  local d
  for d in "$BASE"/replica*; do
    if [ -f "$d/my.cnf" ] && [[ ${d##*/replica} =~ ^[1-9][0-9]*$ ]]; then echo "${d##*/replica}"; fi
  done | sort -n
}
all_replicas() { { if [ "$REPLICAS" -gt 0 ]; then seq 1 "$REPLICAS"; fi; existing_replicas; } | sort -nu; }

su_sql() { # node, mariadb args...: the admin account over the node's unix socket
  local d; d=$(node_dir "$1"); shift
  mariadb --defaults-file="$d/my.cnf" --protocol=socket -u"$ADMIN" "$@"
}
su_val() { su_sql "$1" -N -B -e "$2"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_cnf() { # node
  local n=$1 d p; d=$(node_dir "$1"); p=$(node_port "$1")
  {
    cat <<EOF
# Written by examples/mysql/cluster.sh on every start of this node: edits here are lost.
[client]
socket = $d/mysqld.sock
port = $p

[mariadbd]
EOF
    if is_root; then echo "user = $OSU"; fi
    cat <<EOF
datadir = $d/data
socket = $d/mysqld.sock
pid-file = $d/mysqld.pid
log-error = $d/error.log
bind-address = 127.0.0.1
port = $p
skip-name-resolve
max_connections = $MAXCONN
max_connect_errors = 1000000
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
performance_schema = OFF
loose-feedback = OFF
innodb_buffer_pool_size = $BUFFER_POOL
innodb_log_file_size = 128M
# io_uring and libaio need locked memory, which containers ration
innodb_use_native_aio = OFF
server_id = $(( n + 1 ))
gtid_strict_mode = ON
EOF
    if [ "$FSYNC" = off ]; then
      printf '%s\n' "innodb_flush_log_at_trx_commit = 2" "innodb_doublewrite = OFF" "sync_binlog = 0"
    else
      printf '%s\n' "innodb_flush_log_at_trx_commit = 1" "innodb_doublewrite = ON" "sync_binlog = 1"
    fi
    if [ "$n" = 0 ]; then
      printf '%s\n' "log_bin = mysql-bin" "binlog_format = ROW" "binlog_expire_logs_seconds = 86400"
    else
      cat <<EOF
read_only = ON
relay_log = relay-bin
report_host = 127.0.0.1
report_port = $p
slave_net_timeout = 10
EOF
    fi
  } >"$d/my.cnf"
}

init_datadir() { # node: mariadb-install-db into node/data (root by unix_socket only)
  local n=$1 d; d=$(node_dir "$1")
  log "$(node_name "$n"): mariadb-install-db"
  rm -rf "$d/data"
  local who=(--auth-root-socket-user="$ADMIN")
  if is_root; then who=(--user="$OSU"); fi
  mariadb-install-db --defaults-file="$d/my.cnf" "${who[@]}" --auth-root-authentication-method=socket \
    --skip-test-db >"$d/install.log" 2>&1 ||
    { tail -n 20 "$d/install.log" >&2; die "mariadb-install-db failed for $(node_name "$n") (log: $d/install.log)"; }
}

node_start() { # node: write my.cnf, initialise the data directory when missing, start, wait until root can query
  local n=$1 d name port t0; d=$(node_dir "$1"); name=$(node_name "$1"); port=$(node_port "$1")
  if running "$n"; then log "$name already running (pid $(node_pid "$n"), port $port)"; return 0; fi
  if port_busy "$port"; then die "127.0.0.1:$port ($name) is taken by another process (set MY_PRIMARY_PORT)"; fi
  [ "${#d}" -le 94 ] || die "$d is too long for a unix socket path (choose a shorter MY_BASE)"
  t0=$(date +%s%N)
  mkdir -p "$d"
  if is_root; then chown "$OSU" "$d"; fi
  write_cnf "$n"
  if [ ! -d "$d/data/mysql" ]; then init_datadir "$n"; fi
  rm -f "$d/mysqld.pid"
  # as root mariadbd drops to user=$OSU itself; setsid detaches it from this shell, and the whole
  # subshell is redirected so that `cluster.sh start | tee` does not wait for the server
  (cd "$d" && exec setsid mariadbd --defaults-file="$d/my.cnf") </dev/null >>"$d/stdout.log" 2>&1 &
  local launched=$! i
  for i in $(seq 1 300); do
    if su_sql "$n" -e 'SELECT 1' >/dev/null 2>&1; then
      log "$name up in $(ms_since "$t0") ms (pid $(node_pid "$n"), port $port)"
      return 0
    fi
    if ! kill -0 "$launched" 2>/dev/null && ! running "$n"; then
      tail -n 20 "$d/error.log" >&2 2>/dev/null || true
      die "$name exited during its start (log: $d/error.log)"
    fi
    sleep 0.2
  done
  tail -n 20 "$d/error.log" >&2 2>/dev/null || true
  die "$name did not accept queries within 60 s (log: $d/error.log)"
}

node_stop() { # node: SIGTERM (a clean shutdown), SIGKILL after 60 s
  local n=$1 pid
  running "$n" || { rm -f "$(node_dir "$n")/mysqld.pid"; return 0; }
  pid=$(node_pid "$n")
  kill -TERM "$pid"
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "$(node_name "$n") did not exit within 60 s: SIGKILL"; kill -KILL "$pid"; fi
  log "stopped $(node_name "$n") (pid $pid)"
}

wait_ready() { # node: until the app user can run a query over TCP
  local i p; p=$(node_port "$1")
  for i in $(seq 1 100); do
    if mariadb --no-defaults --protocol=tcp --connect-timeout=2 -h 127.0.0.1 -P "$p" -u "$APP_USER" -p"$APP_PW" \
        "$DB" -N -B -e 'SELECT 1' >/dev/null 2>&1; then return 0; fi
    [ "$i" = 1 ] || sleep 0.2
  done
  die "$(node_name "$1"): $APP_USER cannot log in over TCP on port $p (log: $(node_dir "$1")/error.log)"
}

setup_primary() { # database and accounts; idempotent, passwords re-applied on every start (and replicated)
  local host sql="CREATE DATABASE IF NOT EXISTS \`$DB\`;"
  for host in % localhost 127.0.0.1; do
    sql+="
CREATE USER IF NOT EXISTS '$APP_USER'@'$host' IDENTIFIED VIA mysql_native_password USING PASSWORD('$APP_PW');
ALTER USER '$APP_USER'@'$host' IDENTIFIED VIA mysql_native_password USING PASSWORD('$APP_PW');
GRANT ALL PRIVILEGES ON \`$DB\`.* TO '$APP_USER'@'$host';
GRANT BINLOG MONITOR, SLAVE MONITOR ON *.* TO '$APP_USER'@'$host';
CREATE USER IF NOT EXISTS '$RO_USER'@'$host' IDENTIFIED VIA mysql_native_password USING PASSWORD('$RO_PW');
ALTER USER '$RO_USER'@'$host' IDENTIFIED VIA mysql_native_password USING PASSWORD('$RO_PW');
GRANT SELECT ON \`$DB\`.* TO '$RO_USER'@'$host';
CREATE USER IF NOT EXISTS '$REPL_USER'@'$host' IDENTIFIED VIA mysql_native_password USING PASSWORD('$REPL_PW');
ALTER USER '$REPL_USER'@'$host' IDENTIFIED VIA mysql_native_password USING PASSWORD('$REPL_PW');
GRANT REPLICATION SLAVE ON *.* TO '$REPL_USER'@'$host';"
  done
  su_sql 0 -e "$sql" || die "creating the database and accounts on the primary failed"
}

# "SHOW SLAVE STATUS\G" text -> the value of one field
sfield() { awk -v k="$2" '{ f=$0; sub(/^ */, "", f) } index(f, k ": ") == 1 { print substr(f, length(k) + 3); exit }' <<<"$1"; }
# transactions in GTID position $1 that are not in $2 (over replication domains, the seq_no difference)
gtid_behind() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    gsub(/[ \n]/, "", a); gsub(/[ \n]/, "", b)
    m = split(b, B, ","); for (i = 1; i <= m; i++) if (split(B[i], x, "-") == 3) s[x[1]] = x[3]
    m = split(a, A, ","); t = 0
    for (i = 1; i <= m; i++) if (split(A[i], x, "-") == 3) { d = x[3] - ((x[1] in s) ? s[x[1]] : 0); if (d > 0) t += d }
    print t }'
}

seed_replica() { # N: a fresh data directory loaded from a consistent dump of the primary, then replication from its GTID
  local n=$1 d name t0 dbs gtid; d=$(node_dir "$1"); name=$(node_name "$1"); t0=$(date +%s%N)
  node_stop "$n"
  mkdir -p "$d"
  rm -rf "$d/data" "$d/seeded" "$d/seed.sql"
  node_start "$n"
  dbs=$(su_val 0 "SELECT schema_name FROM information_schema.schemata
        WHERE schema_name NOT IN ('mysql','information_schema','performance_schema','sys') ORDER BY 1" | tr '\n' ' ')
  log "$name: seeding from a mariadb-dump of the primary (databases: ${dbs% }; accounts)"
  # shellcheck disable=SC2086 # one word per database
  mariadb-dump --defaults-file="$(node_dir 0)/my.cnf" --protocol=socket -u"$ADMIN" --single-transaction \
    --master-data=2 --gtid --routines --events --triggers --system=users --insert-ignore \
    --databases $dbs >"$d/seed.sql" 2>"$d/seed.err" ||
    { cat "$d/seed.err" >&2; die "$name: mariadb-dump of the primary failed"; }
  gtid=$(grep -m1 -o "gtid_slave_pos='[^']*'" "$d/seed.sql" | sed "s/^gtid_slave_pos='//; s/'\$//") ||
    die "$name: no gtid_slave_pos in the dump ($d/seed.sql)"
  su_sql "$n" <"$d/seed.sql" || die "$name: loading the dump failed"
  su_sql "$n" <<EOF || die "$name: CHANGE MASTER failed"
SET GLOBAL gtid_slave_pos = '$gtid';
CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = $PORT, MASTER_USER = '$REPL_USER',
  MASTER_PASSWORD = '$REPL_PW', MASTER_CONNECT_RETRY = 1, MASTER_USE_GTID = slave_pos;
START SLAVE;
EOF
  rm -f "$d/seed.sql"
  touch "$d/seeded"
  log "$name: seeded at GTID '$gtid' in $(ms_since "$t0") ms, replicating from 127.0.0.1:$PORT (MASTER_USE_GTID=slave_pos)"
}

wait_caught_up() { # N: until the replica has applied the primary's current binlog position
  local n=$1 name target r t0 ss; name=$(node_name "$1"); t0=$(date +%s%N)
  running 0 || { log "$name: the primary is not running; not waiting for catch-up"; return 0; }
  target=$(su_val 0 'SELECT @@gtid_binlog_pos')
  r=$(su_val "$n" "SELECT MASTER_GTID_WAIT('$target', $CATCHUP)")
  if [ "$r" = 0 ]; then log "$name caught up to GTID '$target' in $(ms_since "$t0") ms"; return 0; fi
  ss=$(su_sql "$n" -e 'SHOW SLAVE STATUS\G')
  die "$name did not apply up to '$target' within ${CATCHUP} s: gtid_slave_pos=$(su_val "$n" 'SELECT @@gtid_slave_pos')" \
      "Slave_IO_Running=$(sfield "$ss" Slave_IO_Running) Slave_SQL_Running=$(sfield "$ss" Slave_SQL_Running)" \
      "Last_IO_Error='$(sfield "$ss" Last_IO_Error)' Last_SQL_Error='$(sfield "$ss" Last_SQL_Error)'"
}

ensure_replica() { # N: seed when missing, start when stopped, restart stopped replication threads, wait for catch-up
  local n=$1 d name ss io sql; d=$(node_dir "$1"); name=$(node_name "$1")
  if [ -f "$d/seeded" ] && [ -d "$d/data/mysql" ]; then
    node_start "$n"
    ss=$(su_sql "$n" -e 'SHOW SLAVE STATUS\G')
    io=$(sfield "$ss" Slave_IO_Running); sql=$(sfield "$ss" Slave_SQL_Running)
    if [ "$io" != Yes ] || [ "$sql" != Yes ]; then
      log "$name: START SLAVE (was Slave_IO_Running=$io Slave_SQL_Running=$sql)"
      su_sql "$n" -e 'START SLAVE'
    fi
  else
    running 0 || die "$name has never been seeded and the primary is not running (run: $0 start $BASE)"
    seed_replica "$n"
  fi
  wait_ready "$n"
  wait_caught_up "$n"
}

prepare_base() {
  mkdir -p "$BASE"
  if is_root; then
    chown "$OSU" "$BASE"
    runuser -u "$OSU" -- test -x "$BASE" ||
      die "the $OSU OS user cannot reach $BASE (a parent directory is closed to it): choose another MY_BASE"
  fi
  chmod 700 "$BASE"
}

do_start() {
  ensure_installed
  ensure_user
  prepare_base
  local t0 n ports=; t0=$(date +%s%N)
  if [ ! -d "$BASE/primary/data/mysql" ]; then
    # a new primary starts a new GTID history: replicas of an earlier one are seeded again
    for n in $(existing_replicas); do
      node_stop "$n"
      rm -rf "$(node_dir "$n")/data" "$(node_dir "$n")/seeded"
    done
  fi
  node_start 0
  setup_primary
  wait_ready 0
  [ "$(su_val 0 'SELECT @@log_bin')" = 1 ] || die "the primary runs without a binlog: run $0 stop $BASE, then start again"
  if [ "$REPLICAS" -gt 0 ]; then
    for n in $(seq 1 "$REPLICAS"); do ensure_replica "$n"; ports+=" 127.0.0.1:$(node_port "$n")"; done
  fi
  log "up in $(ms_since "$t0") ms: primary 127.0.0.1:$PORT${ports:+, replicas$ports} (db $DB, users $APP_USER/$APP_PW $RO_USER/$RO_PW)"
}

do_stop() {
  local n
  [ -d "$BASE" ] || return 0
  for n in $(existing_replicas | sort -rn); do node_stop "$n"; done
  node_stop 0
}

do_status() {
  local ppos='' n d ss spos
  if running 0; then
    ppos=$(su_val 0 'SELECT @@gtid_current_pos' 2>/dev/null || true)
    echo "primary: running (pid $(node_pid 0), port $PORT) gtid_current_pos=$ppos"
  else
    echo "primary: stopped"
  fi
  for n in $(all_replicas); do
    d=$(node_dir "$n")
    if [ ! -d "$d/data/mysql" ]; then echo "replica$n: not created"; continue; fi
    if ! running "$n"; then echo "replica$n: stopped"; continue; fi
    ss=$(su_sql "$n" -e 'SHOW SLAVE STATUS\G' 2>/dev/null || true)
    spos=$(su_val "$n" 'SELECT @@gtid_slave_pos' 2>/dev/null || true)
    echo "replica$n: running (pid $(node_pid "$n"), port $(node_port "$n")) Slave_IO_Running=$(sfield "$ss" Slave_IO_Running)" \
         "Slave_SQL_Running=$(sfield "$ss" Slave_SQL_Running) gtid_slave_pos=$spos${ppos:+ trx_behind=$(gtid_behind "$ppos" "$spos")}"
  done
}

do_lag() {
  running 0 || die "the primary is not running"
  local ppos n ss spos iopos
  ppos=$(su_val 0 'SELECT @@gtid_current_pos')
  echo "== primary 127.0.0.1:$PORT: gtid_current_pos=$ppos binlog=$(su_val 0 'SHOW MASTER STATUS' | awk '{ print $1 ":" $2 }') =="
  echo "connected replicas (SHOW SLAVE HOSTS: server_id host port):"
  su_val 0 'SHOW SLAVE HOSTS' | awk '{ print "  " $1 " " $2 " " $3 }'
  for n in $(all_replicas); do
    if ! running "$n"; then
      echo "== replica$n: $([ -d "$(node_dir "$n")/data/mysql" ] && echo stopped || echo 'not created') =="
      continue
    fi
    ss=$(su_sql "$n" -e 'SHOW SLAVE STATUS\G')
    spos=$(su_val "$n" 'SELECT @@gtid_slave_pos'); iopos=$(sfield "$ss" Gtid_IO_Pos)
    echo "== replica$n 127.0.0.1:$(node_port "$n") =="
    echo "  Slave_IO_Running=$(sfield "$ss" Slave_IO_Running) Slave_SQL_Running=$(sfield "$ss" Slave_SQL_Running)" \
         "Seconds_Behind_Master=$(sfield "$ss" Seconds_Behind_Master)"
    echo "  received Gtid_IO_Pos=$iopos  applied gtid_slave_pos=$spos  primary gtid_current_pos=$ppos"
    echo "  unapplied (received - applied)=$(gtid_behind "$iopos" "$spos") trx, behind the primary=$(gtid_behind "$ppos" "$spos") trx"
    echo "  Last_IO_Error='$(sfield "$ss" Last_IO_Error)' Last_SQL_Error='$(sfield "$ss" Last_SQL_Error)'"
  done
}

replica_cmd() {
  local n d port
  n=$(replica_n "$N"); d=$(node_dir "$n"); port=$(node_port "$n")
  if [ "$CMD" = start-replica ]; then
    ensure_installed; ensure_user; prepare_base
    ensure_replica "$n"; log "replica$n up on 127.0.0.1:$port"
    return 0
  fi
  [ -f "$d/my.cnf" ] || die "replica$n does not exist under $BASE (create it: MY_REPLICAS=$n $0 start $BASE)"
  case "$CMD" in
    stop-replica)
      node_stop "$n"; log "replica$n stopped (clean shutdown)" ;;
    pause-replay)
      running "$n" || die "replica$n is not running"
      su_sql "$n" -e 'STOP SLAVE SQL_THREAD'
      log "replay paused on replica$n (STOP SLAVE SQL_THREAD; it keeps receiving the binlog)" ;;
    resume-replay)
      running "$n" || die "replica$n is not running"
      su_sql "$n" -e 'START SLAVE SQL_THREAD'
      log "replay resumed on replica$n (START SLAVE SQL_THREAD)"
      wait_caught_up "$n" ;;
  esac
}

admin_shell() {
  local n; n=$(node_n "$NODE")
  [ -f "$(node_dir "$n")/my.cnf" ] || die "$(node_name "$n") does not exist under $BASE"
  running "$n" || die "$(node_name "$n") is not running"
  su_sql "$n" "$@"
}

case "$CMD" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  lag) do_lag ;;
  stop-replica|start-replica|pause-replay|resume-replay) replica_cmd ;;
  mariadb) admin_shell "$@" ;;
  destroy) do_stop; rm -rf "$BASE"; log "removed $BASE" ;;
esac
