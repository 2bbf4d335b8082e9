#!/usr/bin/env bash
# Runs `recon demo` N times (default 10) and prints `N passed, M failed`.
# Not used by CI: a soak check of the README's main command. Each failing
# run's output is kept in a temporary directory, named at the end.
# Usage: scripts/demo-loop.sh [N] [extra demo arguments...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${1:-10}"
shift || true
LOG_DIR="$(mktemp -d -t recon-demo-loop-XXXXXX)"

cargo build --quiet --manifest-path "$ROOT/Cargo.toml" -p recon
BINARY="$ROOT/target/debug/recon"

passed=0
failed=0
for run in $(seq 1 "$RUNS"); do
  log="$LOG_DIR/run-$run.log"
  if "$BINARY" demo "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    rm -f "$log"
    printf 'run %d: passed\n' "$run" >&2
  else
    failed=$((failed + 1))
    printf 'run %d: FAILED (%s): %s\n' "$run" "$log" "$(grep -m1 'FAILED' "$log" || tail -1 "$log")" >&2
  fi
done
echo "$passed passed, $failed failed"
if [ "$failed" -eq 0 ]; then rm -rf "$LOG_DIR"; else echo "logs of failed runs: $LOG_DIR" >&2; fi
[ "$failed" -eq 0 ]
