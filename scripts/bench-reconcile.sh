#!/usr/bin/env bash
# Runs `recon bench reconcile` against a throw-away PostgreSQL.
#
# Starts a PostgreSQL cluster in a temporary directory on a free loopback
# port, with the server's default durability (fsync and synchronous_commit
# on), creates the monolith and replica databases, installs reladiff if it
# is missing, builds the release binary and runs the bench; everything is
# stopped and removed again whatever the outcome. Arguments go to the bench,
# e.g. `scripts/bench-reconcile.sh --scale 0.1 --json /tmp/bench.json`.
#
# RECON_BENCH_BASELINE=<commit> also builds that commit (in a git worktree
# and target directory of its own under ~/.cache/recon-bench-baseline, kept
# for the next time) and measures it side by side (`--baseline-binary`,
# with a replica database of its own).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[bench-reconcile.sh] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

WORK_DIR=""
PG_BIN=""
cleanup() {
  local status=$?
  if [ -n "$PG_BIN" ] && [ -f "$WORK_DIR/pg/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK_DIR/pg" -m fast stop >/dev/null 2>&1 || true
  fi
  [ -n "$WORK_DIR" ] && rm -rf "$WORK_DIR"
  exit "$status"
}
trap cleanup EXIT INT TERM

install_missing_packages() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing postgresql"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if ! python3 -c 'import reladiff, psycopg2' >/dev/null 2>&1; then
    log "installing reladiff"
    python3 -m pip install -q 'reladiff[postgresql]' || log "could not install reladiff (the bench goes on without it)"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_postgres() {
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  PG_PORT="${RECON_BENCH_PG_PORT:-$(free_port)}"
  mkdir -p "$WORK_DIR/pg"
  chown postgres "$WORK_DIR" "$WORK_DIR/pg"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK_DIR/pg" -A trust -U postgres >/dev/null
  # Default durability: no fsync=off, no synchronous_commit=off. A bigger
  # shared_buffers than the 128 MB default so that W1 (about 1.5 GB) is
  # mostly served from memory, as on a production server.
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK_DIR/pg" -w -l "$WORK_DIR/pg/log" \
    -o "-p $PG_PORT -k $WORK_DIR/pg -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=1GB -c max_wal_size=4GB" \
    start >/dev/null
  for database in bench_monolith bench_replica bench_baseline_replica; do
    runuser -u postgres -- "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt \
      -c "CREATE DATABASE $database" >/dev/null
  done
  log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT (data in $WORK_DIR/pg)"
}

install_missing_packages
WORK_DIR="$(mktemp -d /tmp/recon-bench.XXXXXX)"
chmod 755 "$WORK_DIR"
start_postgres

cd "$ROOT"
cargo build --release --locked -p recon
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# Run a private copy: the bench starts children from its own executable, and
# a build in a shared target directory must not swap it mid-run.
cp "$TARGET_DIR/release/recon" "$WORK_DIR/recon"
if [ -n "${RECON_BENCH_BASELINE:-}" ]; then
  # shellcheck source=scripts/baseline.sh
  . "$ROOT/scripts/baseline.sh"
  build_baseline "$RECON_BENCH_BASELINE" "$WORK_DIR/recon-baseline"
  export RECON_BENCH_BASELINE_BINARY="$WORK_DIR/recon-baseline"
  export RECON_BENCH_BASELINE_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/bench_baseline_replica"
fi
export RECON_MONOLITH_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/bench_monolith"
export RECON_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/bench_replica"
log "recon bench reconcile $*"
"$WORK_DIR/recon" bench reconcile "$@"
