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

# shellcheck source=scripts/bench-services.sh
. "$ROOT/scripts/bench-services.sh"
start_services drain

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
