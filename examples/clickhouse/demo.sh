#!/usr/bin/env bash
# One command for a local ClickHouse + Switchyard demo.
#
#   examples/clickhouse/demo.sh up     # install what is missing, start 2 ClickHouse nodes and the
#                                      # proxy (examples/clickhouse/demo.toml), print the URL
#   examples/clickhouse/demo.sh down   # stop all of it
#   examples/clickhouse/demo.sh status
#
# Env: DEMO_STATE (/tmp/switchyard-demo), DEMO_PORT (8124), DEMO_ADMIN_PORT (9181: the admin
# API, token in $DEMO_STATE/admin.token), CH_HTTP_PORT_BASE (58123),
# DEMO_POLICY (policies/dist/rw-split.wasm, the default policy as a module; try
# policies/dist/cache-rules.wasm to see X-Cache: HIT).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
STATE=${DEMO_STATE:-/tmp/switchyard-demo}
PORT=${DEMO_PORT:-8124}
ADMIN_PORT=${DEMO_ADMIN_PORT:-9181}
TOKENFILE=$STATE/admin.token
export CH_HTTP_PORT_BASE=${CH_HTTP_PORT_BASE:-58123}
export CH_TCP_PORT_BASE=${CH_TCP_PORT_BASE:-59000}
export CH_INTERSERVER_PORT_BASE=${CH_INTERSERVER_PORT_BASE:-59100}
export CH_INSTANCES=2
BIN=$ROOT/target/release/switchyard

log() { echo "[demo] $*" >&2; }

install_missing() {
  local need=()
  command -v curl >/dev/null || need+=(curl)
  [ -x /usr/sbin/clickhouse-server ] || need+=(clickhouse-server clickhouse-client)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { log "missing: ${need[*]} (run as root, or: sudo apt-get install -y ${need[*]})"; exit 1; }
    log "installing ${need[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
  fi
  command -v cargo >/dev/null || { log "cargo is missing: install Rust (https://rustup.rs) first"; exit 1; }
}

build() {
  if [ ! -x "$BIN" ] || [ -n "$(find host/src host/Cargo.toml -newer "$BIN" -print -quit)" ]; then
    log "building switchyard (release)"
    cargo build --release -p switchyard --quiet
  fi
  local policy=${DEMO_POLICY:-policies/dist/rw-split.wasm}
  if [ ! -f "$policy" ]; then
    log "building the example policies"
    policies/build.sh >/dev/null
  fi
}

admin_token() { # made once per demo state directory, so it survives a restart of the proxy
  if [ ! -s "$TOKENFILE" ]; then
    head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$TOKENFILE"
    chmod 600 "$TOKENFILE"
  fi
  cat "$TOKENFILE"
}

proxy_alive() { [ -f "$STATE/switchyard.pid" ] && kill -0 "$(cat "$STATE/switchyard.pid")" 2>/dev/null; }

up() {
  install_missing
  build
  mkdir -p "$STATE"
  examples/clickhouse/clickhouse.sh start "$STATE/clickhouse"
  if proxy_alive; then
    log "switchyard already running (pid $(cat "$STATE/switchyard.pid"))"
  else
    DEMO_LISTEN=127.0.0.1:$PORT DEMO_STATE=$STATE DEMO_ADMIN=127.0.0.1:$ADMIN_PORT \
    DEMO_ADMIN_TOKEN=$(admin_token) DEMO_CH0=127.0.0.1:$CH_HTTP_PORT_BASE DEMO_CH1=127.0.0.1:$((CH_HTTP_PORT_BASE + 1)) \
      "$BIN" config check examples/clickhouse/demo.toml >/dev/null
    DEMO_LISTEN=127.0.0.1:$PORT DEMO_STATE=$STATE DEMO_ADMIN=127.0.0.1:$ADMIN_PORT \
    DEMO_ADMIN_TOKEN=$(admin_token) DEMO_CH0=127.0.0.1:$CH_HTTP_PORT_BASE DEMO_CH1=127.0.0.1:$((CH_HTTP_PORT_BASE + 1)) \
      setsid "$BIN" run --config examples/clickhouse/demo.toml >"$STATE/switchyard.log" 2>&1 </dev/null &
    echo $! >"$STATE/switchyard.pid"
    for _ in $(seq 1 100); do
      [ "$(curl -s --max-time 1 "http://127.0.0.1:$PORT/ping" 2>/dev/null)" = "Ok." ] && break
      proxy_alive || { log "switchyard exited; its log:"; tail -20 "$STATE/switchyard.log" >&2; exit 1; }
      sleep 0.1
    done
  fi
  local url="http://127.0.0.1:$PORT"
  cat <<TXT

Switchyard (ClickHouse HTTP) is up: $url   user demo, password demo
  curl '$url/?user=demo&password=demo' --data-binary 'SELECT version()'
  curl -i '$url/?user=demo&password=demo&query=SELECT%20number%20FROM%20system.numbers%20LIMIT%203'
  curl '$url/?user=demo&password=demo' --data-binary 'CREATE TABLE t (a UInt32) ENGINE = Memory'
  printf '1\n2\n' | curl '$url/?user=demo&password=demo&query=INSERT%20INTO%20t%20FORMAT%20CSV' --data-binary @-
ClickHouse nodes: http://127.0.0.1:$CH_HTTP_PORT_BASE and :$((CH_HTTP_PORT_BASE + 1)) (user default)
Admin API: http://127.0.0.1:$ADMIN_PORT token $(admin_token)
  curl -H "Authorization: Bearer $(admin_token)" http://127.0.0.1:$ADMIN_PORT/metrics
Proxy log: $STATE/switchyard.log    Stop everything: $0 down
TXT
}

down() {
  if proxy_alive; then
    local pid; pid=$(cat "$STATE/switchyard.pid")
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    log "stopped switchyard"
  fi
  rm -f "$STATE/switchyard.pid"
  [ -d "$STATE/clickhouse" ] && examples/clickhouse/clickhouse.sh stop "$STATE/clickhouse"
  log "down"
}

status() {
  if proxy_alive; then echo "switchyard: running (pid $(cat "$STATE/switchyard.pid"), http://127.0.0.1:$PORT)"; else echo "switchyard: stopped"; fi
  [ -d "$STATE/clickhouse" ] && examples/clickhouse/clickhouse.sh status "$STATE/clickhouse"
  return 0
}

case "${1:-}" in
  up) up ;; down) down ;; status) status ;;
  *) echo "usage: $0 {up|down|status}" >&2; exit 2 ;;
esac
