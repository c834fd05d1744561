#!/usr/bin/env bash
# One command for a local MariaDB + Switchyard demo: a primary and a GTID replica
# (examples/mysql/cluster.sh) behind Switchyard's MySQL frontend, reads split to the replica by
# the built-in default policy, reads after a client's own write kept where that write is visible
# (consistency = "session", by GTID), transaction pooling.
#
#   examples/mysql/demo.sh up       # install what is missing, build, start everything, show
#                                   # where a read and a write land
#   examples/mysql/demo.sh down     # stop the proxy and the cluster
#   examples/mysql/demo.sh status
#
# Env: DEMO_STATE (/tmp/switchyard-my-demo: config, logs, pid file, the cluster's data),
#      SWITCHYARD_PORT (3307), SWITCHYARD_ADMIN_PORT (9181: the admin API, token in
#      $DEMO_STATE/admin.token), MY_PRIMARY_PORT (53306; the replica listens on the next port),
#      SWITCHYARD_BIN (target/release/switchyard, under $CARGO_TARGET_DIR when that is set),
#      DEMO_SKIP_BUILD=1 (use the binary as it is: no cargo build).
# Needs Debian/Ubuntu (apt, as root or with sudo) for MariaDB, and Rust (rustup) for the build.
set -euo pipefail
CALLER_PWD=$(pwd)
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
STATE=${DEMO_STATE:-/tmp/switchyard-my-demo}
PORT=${SWITCHYARD_PORT:-3307}
ADMIN_PORT=${SWITCHYARD_ADMIN_PORT:-9181}
export MY_PRIMARY_PORT=${MY_PRIMARY_PORT:-53306}
export MY_REPLICAS=1
export MY_BASE=$STATE/my
REPLICA_PORT=$(( MY_PRIMARY_PORT + 1 ))
CLUSTER=$ROOT/examples/mysql/cluster.sh
CONFIG=$STATE/switchyard.toml
PIDFILE=$STATE/switchyard.pid
TOKENFILE=$STATE/admin.token
LOGFILE=$STATE/switchyard.log
DB=appdb APP_USER=app APP_PW=app_pass
# mariadb is in /usr/bin, but a fresh install may not be on a non-root user's PATH yet
PATH=$PATH:/usr/sbin:/usr/local/sbin

log() { echo "[demo] $*" >&2; }
die() { log "error: $*"; exit 1; }

# cargo resolves a relative CARGO_TARGET_DIR against the directory it runs in: pin it to the
# caller's, since this script runs cargo from the repository root
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$CALLER_PWD/$CARGO_TARGET_DIR ;; esac
  export CARGO_TARGET_DIR
fi

target_dir() { # where cargo puts the build: CARGO_TARGET_DIR, a build.target-dir in cargo's config, else target/
  local dir=
  if command -v cargo >/dev/null; then
    dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
      grep -o '"target_directory":"[^"]*"' | head -n 1 | cut -d '"' -f 4) || dir=
  fi
  echo "${dir:-${CARGO_TARGET_DIR:-$ROOT/target}}"
}
if [ -n "${SWITCHYARD_BIN:-}" ]; then BIN=$SWITCHYARD_BIN; else BIN=$(target_dir)/release/switchyard; fi

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) for: $*"; fi
}

install_missing() {
  # MariaDB server and client: cluster.sh installs them on its first start; the client here
  if ! command -v mariadb >/dev/null || ! command -v mariadbd >/dev/null; then
    log "installing mariadb-server mariadb-client (apt)"
    as_root apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
      mariadb-server mariadb-client >/dev/null
  fi
  [ "${DEMO_SKIP_BUILD:-0}" = 1 ] && return 0
  command -v cargo >/dev/null || die "cargo is missing: install Rust first (https://rustup.rs)"
}

build() {
  if [ "${DEMO_SKIP_BUILD:-0}" = 1 ]; then
    [ -x "$BIN" ] || die "$BIN is missing (DEMO_SKIP_BUILD=1)"
    return 0
  fi
  log "building switchyard (cargo build --release -p switchyard --bin switchyard): a first build takes ~10 minutes on 2 cores"
  local t0; t0=$(date +%s)
  cargo build --release -p switchyard --bin switchyard
  [ -x "$BIN" ] || die "$BIN was not built (SWITCHYARD_BIN points elsewhere?)"
  log "built $BIN in $(( $(date +%s) - t0 )) s"
}

admin_token() { # made once per demo state directory, so it survives a restart of the proxy
  if [ ! -s "$TOKENFILE" ]; then
    head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$TOKENFILE"
    chmod 600 "$TOKENFILE"
  fi
  cat "$TOKENFILE"
}

write_config() {
  local token; token=$(admin_token)
  cat >"$CONFIG" <<TOML
# Written by examples/mysql/demo.sh; every key is described in CONFIG.md.
[[listener]]
name = "my"
protocol = "mysql"
bind = "127.0.0.1:$PORT"
cluster = "main"

[cluster.main]
protocol = "mysql"
databases = ["$DB"]
# consistency = "session" (the default): a read on the replica must have seen the client's own
# writes (by MariaDB GTID), else it goes to the primary.

[cluster.main.defaults]
size = 20
mode = "transaction"
auth = { user = "$APP_USER", password = "$APP_PW" }

[cluster.main.pool.primary]
role = "primary"
nodes = ["127.0.0.1:$MY_PRIMARY_PORT"]

[cluster.main.pool.replicas]
role = "replica"
nodes = ["127.0.0.1:$REPLICA_PORT"]
fallback_pool = "primary"

# The client logs in to Switchyard with mysql_native_password; Switchyard logs in to MariaDB
# with the pools' auth.
[[user]]
name = "$APP_USER"
password = "$APP_PW"

# No [policy]: the built-in default decides (reads outside a transaction to the replica).

# The admin API: health, Prometheus metrics, policy upload/shadow, cache purge, config reload.
[admin]
bind = "127.0.0.1:$ADMIN_PORT"
token = "$token"

[log]
level = "info"
slow_query_threshold = "200ms"
TOML
}

# alive = the pid file names a live process running this demo's config (not a reused pid)
proxy_alive() {
  local pid
  [ -s "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONFIG"
}

proxy_sql() { # mariadb args... through the proxy as the app user
  mariadb --no-defaults --protocol=tcp --connect-timeout=3 -h 127.0.0.1 -P "$PORT" -u "$APP_USER" -p"$APP_PW" "$DB" "$@"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_proxy() {
  if proxy_alive; then log "switchyard already running (pid $(cat "$PIDFILE"))"; return 0; fi
  if port_busy "$PORT"; then die "127.0.0.1:$PORT is taken by another process (set SWITCHYARD_PORT)"; fi
  if port_busy "$ADMIN_PORT"; then die "127.0.0.1:$ADMIN_PORT is taken by another process (set SWITCHYARD_ADMIN_PORT)"; fi
  log "starting switchyard on 127.0.0.1:$PORT (log $LOGFILE)"
  setsid "$BIN" run --config "$CONFIG" >"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local i
  for i in $(seq 1 150); do
    if proxy_sql -N -B -e 'SELECT 1' >/dev/null 2>&1; then log "switchyard accepts logins"; return 0; fi
    proxy_alive || { tail -n 20 "$LOGFILE" >&2; die "switchyard exited (log above)"; }
    [ "$i" = 1 ] || sleep 0.2
  done
  tail -n 20 "$LOGFILE" >&2
  die "no mariadb login through switchyard within 30 s (log above)"
}

demonstrate() {
  cat <<TXT

Switchyard (MySQL protocol) is up:
  mariadb -h 127.0.0.1 -P $PORT -u $APP_USER -p$APP_PW $DB
Primary 127.0.0.1:$MY_PRIMARY_PORT, replica 127.0.0.1:$REPLICA_PORT.
Admin shell on a node: MY_BASE=$MY_BASE $CLUSTER mariadb primary
Admin API: http://127.0.0.1:$ADMIN_PORT token $(admin_token)
  curl -H "Authorization: Bearer $(admin_token)" http://127.0.0.1:$ADMIN_PORT/metrics
Proxy log: $LOGFILE    Stop everything: $0 down

TXT
  local i
  echo "-- a read (outside a transaction) goes to the replica:"
  for i in 1 2 3; do
    proxy_sql -N -B -e 'SELECT @@port' | awk '{ print "   @@port=" $1 }'
  done
  echo "-- writes go to the primary, and a read right after the client's own write goes where that"
  echo "   write is visible (the primary, until the replica's GTID position shows it applied):"
  proxy_sql -N -B -e 'CREATE TABLE IF NOT EXISTS demo (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(100) NULL)'
  proxy_sql -N -B -e "INSERT INTO demo (note) VALUES ('hello'); SELECT @@port, count(*) FROM demo" |
    awk '{ print "   @@port=" $1 "  rows in demo=" $2 }'
  cat <<TXT

Connect:
  mariadb -h 127.0.0.1 -P $PORT -u $APP_USER -p$APP_PW $DB

TXT
}

up() {
  install_missing
  build
  mkdir -p "$STATE"
  if ! proxy_alive; then # the config first: a binary that refuses it fails before the cluster starts
    write_config
    "$BIN" config check "$CONFIG" >/dev/null || die "$CONFIG does not pass 'switchyard config check'"
  fi
  "$CLUSTER" start "$MY_BASE"
  start_proxy
  demonstrate
}

down() {
  if proxy_alive; then
    local pid; pid=$(cat "$PIDFILE")
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    log "stopped switchyard (pid $pid)"
  fi
  rm -f "$PIDFILE"
  if [ -d "$MY_BASE" ]; then "$CLUSTER" stop "$MY_BASE"; fi
  log "down"
}

status() {
  if proxy_alive; then echo "switchyard: running (pid $(cat "$PIDFILE"), 127.0.0.1:$PORT)"; else echo "switchyard: stopped"; fi
  if [ -d "$MY_BASE" ]; then "$CLUSTER" status "$MY_BASE"; fi
  return 0
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 {up|down|status}" >&2; exit 2 ;;
esac
