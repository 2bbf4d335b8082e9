#!/usr/bin/env python3
"""Breaks one transition of the run machine at a time and runs its tests:
each break must fail at least one of them (issue 25: "the state machine's
property tests each fail against a deliberately broken transition").

    python3 scripts/machine-mutants.py

Edits crates/recon-engine/src/machine.rs in place for each break
and always restores it. Prints, per break, the tests that failed; exits 1
if a break failed none.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import mutants  # noqa: E402

MACHINE = pathlib.Path(__file__).resolve().parent.parent / "crates/recon-engine/src/machine.rs"

# name: (the transition as written, the broken one)
BREAKS = {
    "a recorded run writes its barrier again": (
        "(S::Recording(ending), O::Recorded) => S::Purging(ending),",
        "(S::Recording(ending), O::Recorded) => S::BarrierWriting(ending),",
    ),
    "a barrier goes straight to the purge, unrecorded": (
        "(S::BarrierWriting(ending), O::BarrierWritten) => S::Recording(ending),",
        "(S::BarrierWriting(ending), O::BarrierWritten) => S::Purging(ending),",
    ),
    "a paused run completes without its units": (
        "(S::Pausing, O::AllPaused) => S::Planning,",
        "(S::Pausing, O::AllPaused) => S::Completing,",
    ),
    "all units done skips the completion (floors)": (
        "(S::Working, O::AllUnitsDone) => S::Completing,",
        "(S::Working, O::AllUnitsDone) => S::Closing(Ending::Completed),",
    ),
    "a deposed leader starts a run": (
        "        (S::Requested, O::Started) => S::Pausing,",
        "        (S::Requested | S::Deposed, O::Started) => S::Pausing,",
    ),
}


def main() -> int:
    return mutants.run(
        MACHINE,
        BREAKS,
        ["cargo", "test", "-q", "-p", "recon-engine", "--lib", "machine::"],
        "machine::",
    )


if __name__ == "__main__":
    sys.exit(main())
