"""Driver for the release-history race tests: one release action in its own process.

    python release_driver.py promote ROOT BEHAVIOR VECTOR_FILE [--pause-before-save MARKER]
    python release_driver.py hold-lock ROOT MARKER

``promote`` releases a vector file's bytes (``steerkit.catalog.releases.promote``); with
``--pause-before-save`` it writes MARKER once the version's copy is on disk and then hangs before the
history is saved (so a test can SIGKILL it mid-release). ``hold-lock`` takes the history's lock,
writes MARKER and hangs (a writer stuck or killed while holding it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from steerkit.catalog import releases  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=("promote", "hold-lock"))
    ap.add_argument("root")
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--pause-before-save")
    args = ap.parse_args()
    if args.action == "hold-lock":
        with releases.locked(args.root):
            Path(args.rest[0]).write_text("holding")
            time.sleep(300)
        return
    behavior, vector = args.rest
    if args.pause_before_save:
        marker = Path(args.pause_before_save)

        def stall(self: releases.History) -> None:  # the copy is written; the history is not
            marker.write_text("copied")
            time.sleep(300)

        releases.History.save = stall  # type: ignore[method-assign]
    data = Path(vector).read_bytes()
    releases.promote(args.root, behavior, "tiny", "bipo", data, source=vector, why="driver", who="driver")


if __name__ == "__main__":
    main()
