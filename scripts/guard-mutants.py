#!/usr/bin/env python3
"""Breaks one guard of the store's apply path at a time and runs the
interleaving tests (tests/it/store/interleavings.rs): each break must fail
at least one of them (issue 26: "each seen failing against a deliberately
broken guard").

    python3 scripts/guard-mutants.py

Needs what the integration tests need (RECON_TEST_POSTGRES_URL or a local
PostgreSQL; see scripts/test.sh). Edits crates/recon-store/src/apply.rs in
place for each break and always restores it. Prints, per break, the tests
that failed; exits 1 if a break failed none.
"""

import pathlib
import subprocess
import sys

APPLY = pathlib.Path(__file__).resolve().parent.parent / "crates/recon-store/src/apply.rs"
FILTER = "store::interleavings"

# name: (the guard as written, the broken one)
BREAKS = {
    "a reconciliation write ignores the page's watermark": (
        '" WHERE ({name}.generation, {name}.sequence) <= ({}, {})",',
        '" WHERE (({name}.generation, {name}.sequence) <= ({}, {}) OR TRUE)",',
    ),
    "an event replaces a newer row": (
        '" WHERE ({name}.generation, {name}.sequence) < (excluded.generation, excluded.sequence)",',
        '" WHERE (({name}.generation, {name}.sequence) < (excluded.generation, excluded.sequence) OR TRUE)",',
    ),
    "an event below the generation floor applies": (
        "change.version().generation >= floors.floor_for(change.tenant_id())",
        "(change.version().generation >= floors.floor_for(change.tenant_id()) || true)",
    ),
}


def main() -> int:
    original = APPLY.read_text()
    survived = []
    try:
        for name, (good, broken) in BREAKS.items():
            if good not in original:
                print(f"{name}: guard not found, update this script", file=sys.stderr)
                return 2
            APPLY.write_text(original.replace(good, broken))
            run = subprocess.run(
                ["cargo", "test", "-q", "-p", "recon-tests", "--test", "integration", "--", FILTER],
                capture_output=True,
                text=True,
            )
            failed = sorted(
                {
                    line.split()[0]
                    for line in run.stdout.splitlines()
                    if line.startswith("    store::interleavings")
                }
            )
            print(f"{name}: {len(failed)} failed")
            for test in failed:
                print(f"    {test}")
            if not failed:
                survived.append(name)
    finally:
        APPLY.write_text(original)
    if survived:
        print(f"breaks no test caught: {survived}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
