# Sourced by bench.sh and callgrind.sh: the proxy's config for a ClickHouse benchmark.
# Needs CH (host:port of the ClickHouse node) and STATE; WORKERS sets [server] worker_threads.

config() { # port policy cache(true|false)
  cat <<TOML
[[listener]]
name = "bench"
protocol = "clickhouse-http"
bind = "127.0.0.1:$1"
cluster = "ch"

[cluster.ch]
protocol = "clickhouse-http"

[cluster.ch.pool.reader]
role = "replica"
nodes = ["$CH"]
size = 256
auth = { user = "reader", password = "reader_pass" }

[cluster.ch.pool.writer]
role = "primary"
nodes = ["$CH"]
auth = { user = "writer", password = "writer_pass" }

[cache]
enabled = $3
max_ttl = "10m"

[policy]
path = "policies/dist/$2.wasm"
artifact_dir = "$STATE/artifacts"
watch = false
[policy.config]
default_ttl = "600000"

[[user]]
name = "bench"
password = "bench"

[log]
level = "warn"
${WORKERS:+
[server]
worker_threads = $WORKERS}
TOML
}
