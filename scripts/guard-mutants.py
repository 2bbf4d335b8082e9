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
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import mutants  # noqa: E402

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
    return mutants.run(
        APPLY,
        BREAKS,
        ["cargo", "test", "-q", "-p", "recon-tests", "--test", "integration", "--", FILTER],
        FILTER,
    )


if __name__ == "__main__":
    sys.exit(main())
