"""A reader process for the kill campaign: query the published catalog until told to stop.

    python tests/reliability/catalog_reader.py LAKE STOP_FILE

In a loop, until ``STOP_FILE`` exists: open ``<lake>/catalog.duckdb`` read-only
(as an analyst would, while writers are killed and catalogs swapped underneath)
and check that every file ``published`` names is whole and alone in every data
view (:func:`tests.reliability.check_published`). Prints one JSON summary line,
``READER {...}``: checks done, checks that saw a problem, the problems, and errors
opening or querying the catalog.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

#: Pause between two checks.
PAUSE_S = 0.2


def main() -> int:
    lake, stop = Path(sys.argv[1]), Path(sys.argv[2])
    from tests.reliability import check_published
    from transforms import spec

    checks = bad = files_seen = rows_seen = 0
    problems: list[str] = []
    errors: Counter[str] = Counter()
    print("READY", flush=True)
    while not stop.exists():
        if not (lake / spec.CATALOG_FILE).exists():
            time.sleep(0.05)
            continue
        try:
            seen = check_published(lake)
        except Exception as exc:  # a catalog that cannot be read is a finding too
            errors[f"{type(exc).__name__}: {str(exc)[:160]}"] += 1
            time.sleep(0.05)
            continue
        checks += 1
        time.sleep(PAUSE_S)  # leave the 2 cores to the writers most of the time
        files_seen += seen.files
        rows_seen += seen.rows
        if seen.problems:
            bad += 1
            problems.extend(seen.problems[:3])
    summary = {
        "checks": checks,
        "checks_with_problems": bad,
        "problems": problems[:20],
        "errors": dict(errors),
        "files_seen": files_seen,
        "rows_seen": rows_seen,
    }
    print("READER " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
