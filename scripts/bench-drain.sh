#!/usr/bin/env bash
# Runs `recon bench drain` against a throw-away PostgreSQL and Apache Kafka.
#
# Starts a PostgreSQL cluster with the server's default durability (fsync
# and synchronous_commit on) and one Apache Kafka 4.1 KRaft node
# (scripts/kafka.sh) in a temporary directory on free loopback ports, builds
# the release binary, and drains a backlog of each workload (fresh inserts,
# then the mixed one) into a fresh database; everything is stopped and
# removed again whatever the outcome. Arguments go to each bench run, e.g.
# `scripts/bench-drain.sh --events 300000`.
#
# RECON_BENCH_BASELINE=<commit> also builds that commit (as
# scripts/bench-reconcile.sh does) and drains each workload with it first,
# on the same broker and PostgreSQL, into a database of its own: old and new
# side by side in one run, the ratio printed per workload.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[bench-drain.sh] %s\n' "$*" >&2; }

WORK_DIR=""
PG_BIN=""
KAFKA_PID=""
cleanup() {
  local status=$?
  if [ -n "$KAFKA_PID" ]; then kill "$KAFKA_PID" 2>/dev/null || true; wait "$KAFKA_PID" 2>/dev/null || true; fi
  if [ -n "$PG_BIN" ] && [ -f "$WORK_DIR/pg/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK_DIR/pg" -m fast stop >/dev/null 2>&1 || true
  fi
  [ -n "$WORK_DIR" ] && rm -rf "$WORK_DIR"
  exit "$status"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_postgres() {
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  PG_PORT="$(free_port)"
  mkdir -p "$WORK_DIR/pg"
  chown postgres "$WORK_DIR" "$WORK_DIR/pg"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK_DIR/pg" -A trust -U postgres >/dev/null
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK_DIR/pg" -w -l "$WORK_DIR/pg/log" \
    -o "-p $PG_PORT -k $WORK_DIR/pg -c listen_addresses=127.0.0.1 -c shared_buffers=512MB -c max_wal_size=4GB" \
    start >/dev/null
  log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT, default durability"
}

create_database() {
  runuser -u postgres -- "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt \
    -c "CREATE DATABASE $1" >/dev/null
  printf 'postgres://postgres@127.0.0.1:%s/%s' "$PG_PORT" "$1"
}

start_kafka() {
  # Two consecutive free ports: the broker's and its controller's.
  KAFKA_PORT="$(python3 -c 'import socket
for port in range(39000, 40000, 2):
    try:
        a = socket.socket(); a.bind(("127.0.0.1", port)); b = socket.socket(); b.bind(("127.0.0.1", port + 1))
        print(port); break
    except OSError: pass')"
  bash "$ROOT/scripts/kafka.sh" run "$WORK_DIR/kafka" "$KAFKA_PORT" >"$WORK_DIR/kafka.log" 2>&1 &
  KAFKA_PID=$!
  for _ in $(seq 1 300); do
    if grep -q "Kafka Server started" "$WORK_DIR/kafka.log" 2>/dev/null; then
      log "Apache Kafka 4.1.1 on 127.0.0.1:$KAFKA_PORT"
      return
    fi
    sleep 0.2
  done
  log "Kafka did not start"; tail -30 "$WORK_DIR/kafka.log" >&2; return 1
}

WORK_DIR="$(mktemp -d /tmp/recon-bench-drain.XXXXXX)"
chmod 755 "$WORK_DIR"
start_postgres
start_kafka

cd "$ROOT"
cargo build --release --locked -p recon
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cp "$TARGET_DIR/release/recon" "$WORK_DIR/recon"
BINARIES=(recon)
if [ -n "${RECON_BENCH_BASELINE:-}" ]; then
  # shellcheck source=scripts/baseline.sh
  . "$ROOT/scripts/baseline.sh"
  build_baseline "$RECON_BENCH_BASELINE" "$WORK_DIR/recon-baseline"
  BINARIES=(recon-baseline recon)
fi
# The steady-state rate a drain printed.
steady_rate() { sed -n 's/^steady state .*: \([0-9]*\) events\/s over .*/\1/p' "$1"; }
for workload in inserts mixed; do
  for binary in "${BINARIES[@]}"; do
    database_url="$(create_database "drain_${workload}_${binary//-/_}")"
    log "$binary bench drain --workload $workload $*"
    "$WORK_DIR/$binary" bench drain --kafka-bootstrap-servers "127.0.0.1:$KAFKA_PORT" \
      --database-url "$database_url" --workload "$workload" "$@" | tee "$WORK_DIR/$binary.$workload.out"
  done
  if [ "${#BINARIES[@]}" -eq 2 ]; then
    old="$(steady_rate "$WORK_DIR/recon-baseline.$workload.out")"
    new="$(steady_rate "$WORK_DIR/recon.$workload.out")"
    python3 -c "import sys; o, n = int(sys.argv[1]), int(sys.argv[2]); print(f'{sys.argv[3]}: baseline {o} events/s, new {n} events/s, new/baseline {n / o:.2f}')" \
      "$old" "$new" "$workload"
  fi
done
