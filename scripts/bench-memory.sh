#!/usr/bin/env bash
# Peak memory of a reconciliation against tenant size (DESIGN §6: constant
# memory). Seeds a monolith with ONE tenant of N users (SQLite), serves it,
# reconciles it into an empty replica with `recon reconcile`, and prints the
# peak RSS the run reports — for 20k and 200k users by default.
#
#   scripts/bench-memory.sh [users...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release --locked -p recon >&2
RECON="$ROOT/target/release/recon"
WORK="$(mktemp -d /tmp/recon-bench-memory.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
SIZES=("$@")
[ "${#SIZES[@]}" -gt 0 ] || SIZES=(20000 200000)
PORT=18571
printf '%10s %12s %10s %14s\n' users rows seconds peak_rss_MiB
for USERS in "${SIZES[@]}"; do
  MONOLITH="sqlite://$WORK/monolith-$USERS.db?mode=rwc"
  REPLICA="sqlite://$WORK/replica-$USERS.db?mode=rwc"
  # A Pareto mean of 6x the cap (tail index 1.2) puts the one tenant at the cap.
  "$RECON" seed --database-url "$MONOLITH" --tenants 1 \
    --users-per-tenant-mean "$((USERS * 6))" --max-users-per-tenant "$USERS" >/dev/null
  "$RECON" monolith --database-url "$MONOLITH" --listen "127.0.0.1:$PORT" 2>/dev/null &
  SERVER=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  "$RECON" reconcile --database-url "$REPLICA" --source-url "http://127.0.0.1:$PORT" \
    --output json --no-progress > "$WORK/report-$USERS.json" || true
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  python3 - "$WORK/report-$USERS.json" "$USERS" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
rows = sum(unit["compared"] for unit in report["units"])
print(f'{sys.argv[2]:>10} {rows:>12} {report["seconds"]:>10.1f} {report["peak_rss_bytes"] / 2**20:>14.1f}')
PY
done
