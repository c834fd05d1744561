#!/usr/bin/env bash
# One command for a local PostgreSQL + Switchyard demo: a primary and two streaming replicas
# (examples/postgres/cluster.sh) behind Switchyard, reads split to the replicas by the built-in
# default policy, transaction pooling.
#
#   examples/postgres/demo.sh up       # install what is missing, build, start everything, show
#                                      # where a read and a write land
#   examples/postgres/demo.sh down     # stop the proxy and the cluster
#   examples/postgres/demo.sh status
#
# Env: DEMO_STATE (/tmp/switchyard-pg-demo: config, logs, pid file, the cluster's data),
#      SWITCHYARD_PORT (6432), SWITCHYARD_ADMIN_PORT (9180: the admin API, token in
#      $DEMO_STATE/admin.token), PG_PRIMARY_PORT (55432), PG_REPLICA1_PORT (55433),
#      PG_REPLICA2_PORT (55434), DEMO_POLICY (empty: the built-in default policy; or a .wasm),
#      SWITCHYARD_BIN (target/release/switchyard), DEMO_SKIP_BUILD=1 (use the binary and the
#      policy as they are: no policies/build.sh, no cargo build).
# Needs Debian/Ubuntu (apt, as root or with sudo) for PostgreSQL, and Rust (rustup) for the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
STATE=${DEMO_STATE:-/tmp/switchyard-pg-demo}
PORT=${SWITCHYARD_PORT:-6432}
ADMIN_PORT=${SWITCHYARD_ADMIN_PORT:-9180}
export PG_PRIMARY_PORT=${PG_PRIMARY_PORT:-55432}
export PG_REPLICA1_PORT=${PG_REPLICA1_PORT:-55433}
export PG_REPLICA2_PORT=${PG_REPLICA2_PORT:-55434}
export PG_BASE=$STATE/pg
# Empty (the default): the built-in default policy (reads outside a transaction to the replicas,
# everything else to the primary). A path: that Wasm policy, e.g. policies/dist/rw-split.wasm.
POLICY=${DEMO_POLICY:-}
BIN=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
CLUSTER=$ROOT/examples/postgres/cluster.sh
CONFIG=$STATE/switchyard.toml
PIDFILE=$STATE/switchyard.pid
TOKENFILE=$STATE/admin.token
LOGFILE=$STATE/switchyard.log
DB=appdb APP_USER=app APP_PW=app_pass

log() { echo "[demo] $*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) for: $*"; fi
}

install_missing() {
  # PostgreSQL 15 server and contrib: cluster.sh installs them on its first start; psql here
  if ! command -v psql >/dev/null || [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then
    log "installing postgresql-15 postgresql-contrib (apt)"
    as_root apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
      postgresql-15 postgresql-contrib >/dev/null
  fi
  [ "${DEMO_SKIP_BUILD:-0}" = 1 ] && return 0
  command -v cargo >/dev/null || die "cargo is missing: install Rust first (https://rustup.rs)"
  if command -v rustup >/dev/null && ! rustup target list --installed | grep -x wasm32-wasip2 >/dev/null; then
    log "adding the wasm32-wasip2 target (rustup)"
    rustup target add wasm32-wasip2
  fi
}

build() {
  if [ "${DEMO_SKIP_BUILD:-0}" = 1 ]; then
    [ -x "$BIN" ] || die "$BIN is missing (DEMO_SKIP_BUILD=1)"
    [ -z "$POLICY" ] || [ -f "$POLICY" ] || die "$POLICY is missing (DEMO_SKIP_BUILD=1)"
    return 0
  fi
  if [ -n "$POLICY" ]; then
    log "building the example policies (policies/build.sh)"
    policies/build.sh >/dev/null
    [ -f "$POLICY" ] || die "policy $POLICY not found after policies/build.sh"
  fi
  log "building switchyard (cargo build --release -p switchyard)"
  cargo build --release -p switchyard --quiet
  [ -x "$BIN" ] || die "$BIN was not built"
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
# Written by examples/postgres/demo.sh; every key is described in CONFIG.md.
[[listener]]
name = "pg"
protocol = "postgres"
bind = "127.0.0.1:$PORT"
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

[cluster.main.pool.replicas]
role = "replica"
nodes = ["127.0.0.1:$PG_REPLICA1_PORT", "127.0.0.1:$PG_REPLICA2_PORT"]
max_replica_lag_bytes = "16MiB"
fallback_pool = "primary"

# The client logs in to Switchyard with SCRAM-SHA-256; Switchyard logs in to PostgreSQL as the
# same user with the same password.
[[user]]
name = "$APP_USER"
password = "$APP_PW"

$(if [ -n "$POLICY" ]; then printf '[policy]\npath = "%s"\nartifact_dir = "%s/artifacts"\n' "$POLICY" "$STATE"; else echo '# No [policy]: the built-in default decides (DEMO_POLICY=policies/dist/rw-split.wasm for Wasm).'; fi)

# The admin API: health, Prometheus metrics, policy upload/shadow, cache purge, config reload.
[admin]
bind = "127.0.0.1:$ADMIN_PORT"
token = "$token"

[log]
level = "info"
slow_query_threshold = "200ms"
TOML
}

proxy_alive() { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

proxy_psql() { # psql args... through the proxy as the app user
  PGPASSWORD=$APP_PW PGCONNECT_TIMEOUT=3 psql -X -h 127.0.0.1 -p "$PORT" -U "$APP_USER" -d "$DB" "$@"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_proxy() {
  if proxy_alive; then log "switchyard already running (pid $(cat "$PIDFILE"))"; return 0; fi
  if port_busy "$PORT"; then die "127.0.0.1:$PORT is taken by another process (set SWITCHYARD_PORT)"; fi
  if port_busy "$ADMIN_PORT"; then die "127.0.0.1:$ADMIN_PORT is taken by another process (set SWITCHYARD_ADMIN_PORT)"; fi
  write_config
  "$BIN" config check "$CONFIG" >/dev/null || die "$CONFIG does not pass 'switchyard config check'"
  log "starting switchyard on 127.0.0.1:$PORT (log $LOGFILE)"
  setsid "$BIN" run --config "$CONFIG" >"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local i
  for i in $(seq 1 150); do
    if proxy_psql -qAtc 'SELECT 1' >/dev/null 2>&1; then log "switchyard accepts logins"; return 0; fi
    proxy_alive || { tail -n 20 "$LOGFILE" >&2; die "switchyard exited (log above)"; }
    [ "$i" = 1 ] || sleep 0.2
  done
  tail -n 20 "$LOGFILE" >&2
  die "no psql login through switchyard within 30 s (log above)"
}

demonstrate() {
  cat <<TXT

Switchyard (PostgreSQL) is up:
  psql "postgres://$APP_USER:$APP_PW@127.0.0.1:$PORT/$DB"
Primary 127.0.0.1:$PG_PRIMARY_PORT, replicas 127.0.0.1:$PG_REPLICA1_PORT and 127.0.0.1:$PG_REPLICA2_PORT.
Superuser shell on a node: PG_BASE=$PG_BASE $CLUSTER psql primary
Admin API: http://127.0.0.1:$ADMIN_PORT token $(admin_token)
  curl -H "Authorization: Bearer $(admin_token)" http://127.0.0.1:$ADMIN_PORT/metrics
Proxy log: $LOGFILE    Stop everything: $0 down

TXT
  local i
  echo "-- a read (outside a transaction) goes to a replica:"
  for i in 1 2 3; do
    proxy_psql -qAt -F ' ' -v ON_ERROR_STOP=1 -c 'SELECT pg_is_in_recovery(), inet_server_port()' |
      awk '{ print "   pg_is_in_recovery=" $1 "  inet_server_port=" $2 }'
  done
  echo "-- writes go to the primary:"
  proxy_psql -q -v ON_ERROR_STOP=1 \
    -c 'CREATE TABLE IF NOT EXISTS demo (id bigserial PRIMARY KEY, note text NOT NULL, at timestamptz NOT NULL DEFAULT now())'
  proxy_psql -qAt -F ' ' -v ON_ERROR_STOP=1 \
    -c "INSERT INTO demo (note) VALUES ('hello from demo.sh') RETURNING id, inet_server_port()" |
    awk '{ print "   inserted id=" $1 "  inet_server_port=" $2 }'
  echo "-- so does everything inside a transaction:"
  proxy_psql -qAt -v ON_ERROR_STOP=1 -c 'BEGIN' -c 'SELECT inet_server_port()' -c 'COMMIT' |
    awk '{ print "   inet_server_port=" $1 }'
  echo
}

up() {
  install_missing
  build
  mkdir -p "$STATE"
  "$CLUSTER" start "$PG_BASE"
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
  if [ -d "$PG_BASE" ]; then "$CLUSTER" stop "$PG_BASE"; fi
  log "down"
}

status() {
  if proxy_alive; then echo "switchyard: running (pid $(cat "$PIDFILE"), 127.0.0.1:$PORT)"; else echo "switchyard: stopped"; fi
  if [ -d "$PG_BASE" ]; then "$CLUSTER" status "$PG_BASE"; fi
  return 0
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 {up|down|status}" >&2; exit 2 ;;
esac
