#!/usr/bin/env bash
# A cluster run over many one-unit tenants, as an operator would run it:
# a monolith on PostgreSQL seeded with TENANTS small tenants, two replicas
# (`recon serve`) on etcd reconciling an empty replica database, and
# `recon reconcile --cluster --wait` asking for a run and following it to
# its barrier. Prints how long the run took and its outcome; fails if the
# run does not complete.
#
#   scripts/run-many-units.sh [TENANTS]        (default 5000)
#
# Needs RECON_TEST_POSTGRES_URL (a PostgreSQL URL allowed to create
# databases) and RECON_TEST_ETCD_ENDPOINTS, as scripts/test.sh sets them,
# and the recon binary (built here in debug).
set -euo pipefail
cd "$(dirname "$0")/.."

TENANTS=${1:-5000}
: "${RECON_TEST_POSTGRES_URL:?RECON_TEST_POSTGRES_URL must name a PostgreSQL server}"
: "${RECON_TEST_ETCD_ENDPOINTS:?RECON_TEST_ETCD_ENDPOINTS must name etcd}"

cargo build --quiet -p recon
RECON=target/debug/recon
WORK=$(mktemp -d /tmp/recon-many-units.XXXXXX)
SUFFIX=$$
SERVICE="many-units-$SUFFIX"
BASE=${RECON_TEST_POSTGRES_URL%/*}
MONOLITH_DB="many_units_monolith_$SUFFIX"
REPLICA_DB="many_units_replica_$SUFFIX"
PIDS=()

log() { printf '[run-many-units] %s\n' "$*"; }

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$RECON_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $MONOLITH_DB" >/dev/null 2>&1 || true
  psql "$RECON_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $REPLICA_DB" >/dev/null 2>&1 || true
  log "logs in $WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

psql "$RECON_TEST_POSTGRES_URL" -qc "CREATE DATABASE $MONOLITH_DB"
psql "$RECON_TEST_POSTGRES_URL" -qc "CREATE DATABASE $REPLICA_DB"
MONOLITH_URL="$BASE/$MONOLITH_DB"
REPLICA_URL="$BASE/$REPLICA_DB"

log "seeding $TENANTS tenants"
"$RECON" seed --database-url "$MONOLITH_URL" --tenants "$TENANTS" \
  --users-per-tenant-mean 2 --max-users-per-tenant 4 >"$WORK/seed.log" 2>&1

SOURCE_PORT=$(free_port)
"$RECON" monolith --database-url "$MONOLITH_URL" --listen "127.0.0.1:$SOURCE_PORT" \
  >"$WORK/monolith.log" 2>&1 &
PIDS+=($!)

# The replicas refuse a store that is not migrated.
"$RECON" store migrate --database-url "$REPLICA_URL" >"$WORK/migrate.log" 2>&1

for member in r1 r2; do
  port=$(free_port)
  RUST_LOG=info "$RECON" serve --database-url "$REPLICA_URL" \
    --kafka-bootstrap-servers "127.0.0.1:$(free_port)" \
    --admin-listen "127.0.0.1:$port" \
    --etcd-endpoints "$RECON_TEST_ETCD_ENDPOINTS" --service "$SERVICE" \
    --member-id "$member" --source-url "http://127.0.0.1:$SOURCE_PORT" \
    --max-pause-secs 3600 >"$WORK/$member.log" 2>&1 &
  PIDS+=($!)
done

# The replicas join once the Kafka access check gave up (no broker here).
sleep 15
log "asking for a run over every tenant"
started=$(date +%s)
set +e
"$RECON" reconcile --cluster --wait --etcd-endpoints "$RECON_TEST_ETCD_ENDPOINTS" \
  --service "$SERVICE" --allow-mass-delete >"$WORK/reconcile.log" 2>&1
code=$?
set -e
ended=$(date +%s)
tail -n 5 "$WORK/reconcile.log"
log "$TENANTS tenants: the run ended after $((ended - started)) s with exit code $code (0: completed)"
exit "$code"
