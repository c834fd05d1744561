#!/usr/bin/env bash
# The best case of a thread-per-core layout, measured without building it: one Switchyard
# process with 2 runtime threads and a pool of 20, against two processes with 1 thread and a
# pool of 10 each (no wake-ups across threads, a share of the pool per core), the clients split
# evenly between them (one pgbench per process). pgbench -S; alternated ROUNDS times; proxy CPU
# per transaction from /proc/PID/stat (both processes together in the second case).
#
#   examples/postgres/bench.sh tps          # once before, with TARGETS including sy-mux: it
#                                           # starts the cluster and writes sy-mux's config
#   CLIENTS=200 ROUNDS=2 examples/postgres/bench-per-core.sh
#
# Env: CLIENTS=200 T=8 (s per run) ROUNDS=2 MODE=simple SWITCHYARD_BIN=target/release/switchyard
#   BENCH_STATE=/tmp/switchyard-pg-bench (where bench.sh left sy-mux.toml; the cluster must run)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${SWITCHYARD_BIN:-target/release/switchyard}
STATE=${BENCH_STATE:-/tmp/switchyard-pg-bench}
S=$STATE/per-core; mkdir -p "$S"
base=$STATE/sy-mux.toml
[ -f "$base" ] || { echo "no $base: run examples/postgres/bench.sh tps with sy-mux first" >&2; exit 1; }
CLIENTS=${CLIENTS:-200}; T=${T:-8}; ROUNDS=${ROUNDS:-2}; MODE=${MODE:-simple}
mk() { # port size workers
  sed -e "s/127.0.0.1:16435/127.0.0.1:$1/" -e "s/^size = 20/size = $2/" \
      -e "s/^\[server\]/[server]\nworker_threads = $3/" "$base" > "$S/p$1.toml"
  "$BIN" run --config "$S/p$1.toml" >"$S/p$1.log" 2>&1 &
  echo $!
}
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
pgb() { PGPASSWORD=app_pass pgbench -n -S -M "$MODE" -h 127.0.0.1 -p "$1" -U app -c "$2" -j "$3" -T "$T" appdb 2>/dev/null | awk '/^tps/ {print $3}'; }
warm() { PGPASSWORD=app_pass pgbench -n -S -h 127.0.0.1 -p "$1" -U app -c "$2" -j 1 -T 2 appdb >/dev/null 2>&1 || true; }
hz=$(getconf CLK_TCK)
for r in $(seq 1 "$ROUNDS"); do
  p=$(mk 17001 20 2); sleep 1.5; warm 17001 "$CLIENTS"
  t0=$(ticks $p); tps=$(pgb 17001 "$CLIENTS" 2); t1=$(ticks $p)
  echo "one process (2 threads, pool 20): $tps tps, proxy $(echo "($t1-$t0)*1000000/$hz/($tps*$T)" | bc -l | cut -c1-5) us/tx"
  kill $p; wait $p 2>/dev/null || true
  a=$(mk 17002 10 1); b=$(mk 17003 10 1); sleep 1.5; half=$((CLIENTS / 2))
  warm 17002 $half & warm 17003 $half; wait
  a0=$(ticks $a); b0=$(ticks $b)
  pgb 17002 $half 1 > $S/ta & pgb 17003 $half 1 > $S/tb; wait
  a1=$(ticks $a); b1=$(ticks $b)
  tps=$(echo "$(cat $S/ta) + $(cat $S/tb)" | bc -l)
  echo "two processes (1 thread, pool 10 each): $tps tps, proxy $(echo "($a1-$a0+$b1-$b0)*1000000/$hz/($tps*$T)" | bc -l | cut -c1-5) us/tx"
  kill $a $b; wait $a $b 2>/dev/null || true
done
