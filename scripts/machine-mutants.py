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
import subprocess
import sys

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
    original = MACHINE.read_text()
    survived = []
    try:
        for name, (good, broken) in BREAKS.items():
            if good not in original:
                print(f"{name}: transition not found, update this script", file=sys.stderr)
                return 2
            MACHINE.write_text(original.replace(good, broken))
            run = subprocess.run(
                ["cargo", "test", "-q", "-p", "recon-engine", "--lib", "machine::"],
                capture_output=True,
                text=True,
            )
            failed = sorted(
                {line.strip() for line in run.stdout.splitlines() if line.startswith("    machine::")}
            )
            print(f"{name}: {len(failed)} failed")
            for test in failed:
                print(f"    {test}")
            if not failed:
                survived.append(name)
    finally:
        MACHINE.write_text(original)
    if survived:
        print(f"breaks no test caught: {survived}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
