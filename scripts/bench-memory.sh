#!/usr/bin/env bash
# Peak memory of a reconciliation against tenant size (DESIGN §6: constant
# memory). For each size N, seeds a monolith with ONE tenant of N users (and
# its groups and memberships; SQLite), serves it, and runs `recon reconcile`
# twice into a SQLite replica:
#   * full load: the replica is empty (every row is written);
#   * drift: 1% of the replica's users changed, 1% deleted and 1% phantoms
#     added, 1% of its memberships deleted — both walks run, rows are
#     written AND deleted (the phantoms are held, then tombstoned).
# Prints, per run, the rows compared, what was found, the seconds and the
# peak RSS the run reports, then the 1M/100k ratio of the peak RSS.
#
# A figure counts only for a run that did its job: the script stops with an
# error when a run does not exit 0 (it failed, or completed with problems
# such as deletions withheld by the delete guard), or when the replica does
# not equal the monolith afterwards (checked with plain SQL over both
# databases, sharing no code with recon).
#
#   scripts/bench-memory.sh [users...]        (default: 100000 1000000)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release --locked -p recon >&2
RECON="$ROOT/target/release/recon"
WORK="$(mktemp -d /tmp/recon-bench-memory.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
SIZES=("$@")
[ "${#SIZES[@]}" -gt 0 ] || SIZES=(100000 1000000)
PORT=18571

fail() { printf '[bench-memory.sh] %s\n' "$*" >&2; exit 1; }
printf '%10s %-10s %10s %8s %8s %8s %8s %8s %14s\n' \
  users run compared missing changed phantom deleted seconds peak_rss_MiB | tee "$WORK/table"

reconcile() { # size, run name
  local report="$WORK/report-$1-$2.json" status=0
  "$RECON" reconcile --database-url "$REPLICA" --source-url "http://127.0.0.1:$PORT" \
    --output json --no-progress > "$report" || status=$?
  if [ "$status" -ne 0 ]; then
    cat "$report" >&2 2>/dev/null || true
    fail "recon reconcile ($1 users, $2) exited $status: no figure for a run that did not complete cleanly"
  fi
  python3 - "$report" "$1" "$2" <<'PY' | tee -a "$WORK/table"
import json, sys
report = json.load(open(sys.argv[1]))
units = report["units"]
total = lambda field: sum(unit[field] for unit in units)
deleted = total("phantom") - total("skipped_by_guard")
print(f'{sys.argv[2]:>10} {sys.argv[3]:<10} {total("compared"):>10} {total("missing"):>8} '
      f'{total("changed"):>8} {total("phantom"):>8} {deleted:>8} {report["seconds"]:>8.1f} '
      f'{report["peak_rss_bytes"] / 2**20:>14.1f}')
PY
  converged "$1" "$2"
}

converged() { # size, run name: the replica's live rows equal the monolith's
  python3 - "$WORK/monolith-$1.db" "$WORK/replica-$1.db" "$1" "$2" <<'PY' || fail "the replica does not equal the monolith after $2 ($1 users)"
import sqlite3, sys
db = sqlite3.connect(sys.argv[2])
db.execute("ATTACH DATABASE ? AS monolith", (sys.argv[1],))
tables = {  # monolith table: (replica table, columns)
    "tenants": ("replica_tenants", "id, name"),
    "users": ("replica_users", "tenant_id, id, email, display_name, status"),
    '"groups"': ("replica_groups", "tenant_id, id, name"),
    "memberships": ("replica_memberships", "tenant_id, group_id, user_id"),
}
differing = 0
for source, (replica, columns) in tables.items():
    columns += ", generation, sequence"
    truth = f"SELECT {columns} FROM monolith.{source}"
    copy = f"SELECT {columns} FROM {replica} WHERE NOT deleted"
    only_source = db.execute(f"SELECT count(*) FROM ({truth} EXCEPT {copy})").fetchone()[0]
    only_replica = db.execute(f"SELECT count(*) FROM ({copy} EXCEPT {truth})").fetchone()[0]
    if only_source or only_replica:
        print(f"{sys.argv[4]} ({sys.argv[3]} users): {source}: {only_source} rows missing or different "
              f"in the replica, {only_replica} only there", file=sys.stderr)
    differing += only_source + only_replica
sys.exit(1 if differing else 0)
PY
}

for USERS in "${SIZES[@]}"; do
  MONOLITH="sqlite://$WORK/monolith-$USERS.db?mode=rwc"
  REPLICA="sqlite://$WORK/replica-$USERS.db?mode=rwc"
  "$RECON" store migrate --database-url "$REPLICA" >/dev/null
  # A Pareto mean of 6x the cap (tail index 1.2) puts the one tenant at the cap.
  "$RECON" seed --database-url "$MONOLITH" --tenants 1 \
    --users-per-tenant-mean "$((USERS * 6))" --max-users-per-tenant "$USERS" >/dev/null
  "$RECON" monolith --database-url "$MONOLITH" --listen "127.0.0.1:$PORT" 2>/dev/null &
  SERVER=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || fail "the monolith did not answer on port $PORT"
  reconcile "$USERS" full-load
  python3 - "$WORK/replica-$USERS.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
users = "SELECT rowid FROM replica_users WHERE NOT deleted"
db.execute(f"UPDATE replica_users SET display_name = 'drift ' || display_name WHERE rowid IN ({users} AND rowid % 100 = 1)")
db.execute(f"DELETE FROM replica_users WHERE rowid IN ({users} AND rowid % 100 = 2)")
db.execute("INSERT INTO replica_users (tenant_id, id, email, display_name, status, generation, sequence, deleted) "
           f"SELECT tenant_id, id || '-phantom', email, display_name, status, generation, sequence, 0 FROM replica_users WHERE rowid IN ({users} AND rowid % 100 = 3)")
db.execute("DELETE FROM replica_memberships WHERE rowid % 100 = 4")
db.commit()
PY
  reconcile "$USERS" drift
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
done
python3 - "$WORK/table" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1]).read().splitlines()[1:]]
peak = {}
for row in rows:
    peak.setdefault(int(row[0]), []).append(float(row[-1]))
if len(peak) >= 2:
    small, large = min(peak), max(peak)
    print(f'peak RSS {large} vs {small} users: {max(peak[large]) / max(peak[small]):.2f}x')
PY
