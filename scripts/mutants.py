"""Shared by the mutant scripts: applies one deliberate break at a time to a
source file, runs a test command, and reports which tests each break
failed; the file is always restored.
"""

import pathlib
import subprocess
import sys


def run(target: pathlib.Path, breaks: dict, command: list, test_prefix: str) -> int:
    """Applies each of `breaks` (name: (as written, broken)) to `target`,
    runs `command`, and prints the tests (lines of its output starting
    with four spaces and `test_prefix`) that failed. 0 if every break
    failed at least one test, 1 if one failed none, 2 if a break no longer
    matches the file."""
    original = target.read_text()
    survived = []
    try:
        for name, (good, broken) in breaks.items():
            if good not in original:
                print(f"{name}: not found in {target.name}, update the script", file=sys.stderr)
                return 2
            target.write_text(original.replace(good, broken))
            result = subprocess.run(command, capture_output=True, text=True)
            failed = sorted(
                {
                    line.split()[0]
                    for line in result.stdout.splitlines()
                    if line.startswith("    " + test_prefix)
                }
            )
            print(f"{name}: {len(failed)} failed")
            for test in failed:
                print(f"    {test}")
            if not failed:
                survived.append(name)
    finally:
        target.write_text(original)
    if survived:
        print(f"breaks no test caught: {survived}", file=sys.stderr)
        return 1
    return 0
