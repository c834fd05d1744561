#!/usr/bin/env bash
# N independent clickhouse-server instances (Debian's 18.16 package) on loopback, for the demo and
# the benchmark. Instance i is named ch<i> (its X-ClickHouse-Server-Display-Name) and has the
# users `default` (no password), `reader` (readonly=1) and `writer`.
#
# Usage: clickhouse.sh {start|stop|status} BASE_DIR
# Env (defaults): CH_INSTANCES=2, CH_HTTP_PORT_BASE=58123 (instance i: base+i),
#   CH_TCP_PORT_BASE=59000, CH_INTERSERVER_PORT_BASE=59100,
#   CH_READER_PASSWORD=reader_pass, CH_WRITER_PASSWORD=writer_pass, CH_OS_USER=clickhouse.
# As root the servers run as CH_OS_USER (created when missing); `start` installs the package
# with apt when it is missing. Idempotent: running instances are left alone.
set -euo pipefail

CMD=${1:-}
BASE=${2:-}
[ -n "$CMD" ] && [ -n "$BASE" ] || { echo "usage: $0 {start|stop|status} BASE_DIR" >&2; exit 2; }
N=${CH_INSTANCES:-2}
HTTP0=${CH_HTTP_PORT_BASE:-58123}; TCP0=${CH_TCP_PORT_BASE:-59000}; IS0=${CH_INTERSERVER_PORT_BASE:-59100}
READER_PW=${CH_READER_PASSWORD-reader_pass}; WRITER_PW=${CH_WRITER_PASSWORD-writer_pass}
OSU=${CH_OS_USER:-clickhouse}
BIN=/usr/sbin/clickhouse-server

log() { echo "[clickhouse] $*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }

ensure_installed() {
  if [ ! -x "$BIN" ]; then
    is_root || { log "clickhouse-server is missing: sudo apt-get install -y clickhouse-server clickhouse-client"; exit 1; }
    log "installing clickhouse-server clickhouse-client"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q clickhouse-server clickhouse-client >/dev/null
  fi
  if is_root && ! id -u "$OSU" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$OSU"
  fi
}

alive() { [ -f "$1/server.pid" ] && kill -0 "$(cat "$1/server.pid")" 2>/dev/null; }

xml_escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' <<<"$1"; }

write_configs() { # i dir
  local i=$1 d=$2
  cat >"$d/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$d/log/clickhouse-server.log</log><errorlog>$d/log/clickhouse-server.err.log</errorlog><size>100M</size><count>2</count></logger>
    <display_name>ch$i</display_name>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$((HTTP0 + i))</http_port>
    <tcp_port>$((TCP0 + i))</tcp_port>
    <interserver_http_port>$((IS0 + i))</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <max_connections>4096</max_connections>
    <keep_alive_timeout>10</keep_alive_timeout>
    <max_concurrent_queries>200</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <users_config>$d/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <query_log><database>system</database><table>query_log</table><flush_interval_milliseconds>1000</flush_interval_milliseconds></query_log>
</yandex>
XML
  local nets="<networks><ip>::1</ip><ip>127.0.0.1</ip></networks>"
  cat >"$d/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default><max_memory_usage>2000000000</max_memory_usage><log_queries>${CH_LOG_QUERIES:-1}</log_queries></default>
        <readonly><readonly>1</readonly><log_queries>${CH_LOG_QUERIES:-1}</log_queries></readonly>
    </profiles>
    <users>
        <default><password></password>$nets<profile>default</profile><quota>default</quota></default>
        <reader><password>$(xml_escape "$READER_PW")</password>$nets<profile>readonly</profile><quota>default</quota></reader>
        <writer><password>$(xml_escape "$WRITER_PW")</password>$nets<profile>default</profile><quota>default</quota></writer>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
}

do_start() {
  ensure_installed
  mkdir -p "$BASE"
  local i d
  for i in $(seq 0 $((N - 1))); do
    d=$BASE/ch$i
    mkdir -p "$d/data" "$d/tmp" "$d/log" "$d/user_files" "$d/format_schemas"
    if alive "$d"; then log "ch$i already running (http $((HTTP0 + i)))"; continue; fi
    rm -f "$d/server.pid"
    write_configs "$i" "$d"
    if is_root; then
      chown -R "$OSU" "$d"
      (cd "$d" && runuser -u "$OSU" -- "$BIN" --config-file="$d/config.xml" --pid-file="$d/server.pid" --daemon)
    else
      (cd "$d" && "$BIN" --config-file="$d/config.xml" --pid-file="$d/server.pid" --daemon)
    fi
  done
  for i in $(seq 0 $((N - 1))); do
    d=$BASE/ch$i
    local ok=
    for _ in $(seq 1 240); do
      if [ "$(curl -s --max-time 2 "http://127.0.0.1:$((HTTP0 + i))/?query=SELECT%201" 2>/dev/null)" = "1" ]; then ok=1; break; fi
      sleep 0.25
    done
    [ -n "$ok" ] || { log "ch$i did not answer on port $((HTTP0 + i)); see $d/log/"; exit 1; }
  done
  log "up: HTTP ports $(for i in $(seq 0 $((N - 1))); do printf '%s ' $((HTTP0 + i)); done)"
}

do_stop() {
  local d pid
  for d in "$BASE"/ch*; do
    [ -d "$d" ] || continue
    if alive "$d"; then
      pid=$(cat "$d/server.pid"); kill -TERM "$pid"
      for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      log "stopped $(basename "$d")"
    fi
    rm -f "$d/server.pid"
  done
}

do_status() {
  local d
  for d in "$BASE"/ch*; do
    [ -d "$d" ] || continue
    if alive "$d"; then echo "$(basename "$d"): running (pid $(cat "$d/server.pid"))"; else echo "$(basename "$d"): stopped"; fi
  done
}

case "$CMD" in
  start) do_start ;; stop) do_stop ;; status) do_status ;;
  *) echo "usage: $0 {start|stop|status} BASE_DIR" >&2; exit 2 ;;
esac
