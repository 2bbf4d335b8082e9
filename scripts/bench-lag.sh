#!/usr/bin/env bash
# Runs `recon bench lag` against a throw-away PostgreSQL and Apache Kafka
# (scripts/bench-services.sh): replication lag during a run that pauses the
# consumers and during one that leaves them running, side by side.
# Arguments go to the bench, e.g. `scripts/bench-lag.sh --scale 0.1`.
# RECON_BENCH_PROFILE=debug runs a debug build (a quick check of the bench
# itself, not a figure).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[bench-lag.sh] %s\n' "$*" >&2; }

# shellcheck source=scripts/bench-services.sh
. "$ROOT/scripts/bench-services.sh"
start_services lag

cd "$ROOT"
PROFILE="${RECON_BENCH_PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -p recon
else
  cargo build --locked -p recon
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# A private copy: the bench starts children from its own executable.
cp "$TARGET_DIR/$PROFILE/recon" "$WORK_DIR/recon"
RECON_MONOLITH_DATABASE_URL="$(create_database bench_lag_monolith)" \
RECON_DATABASE_URL="$(create_database bench_lag_replica)" \
  "$WORK_DIR/recon" bench lag --kafka-bootstrap-servers "127.0.0.1:$KAFKA_PORT" "$@"
