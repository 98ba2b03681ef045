"""A real ingest run that the crash and concurrency tests start, and may SIGKILL.

    python tests/reliability/crash_worker.py LAKE PATH [PATH ...] [--landing L]
        [--force] [--batch-size N] [--lab X --condition Y --timepoint Z] [--no-publish]
        [--go-file PATH] [--publish-only]

It imports the pipeline and warms the QC gate first, prints ``READY`` (so the
parent can time its kill against the ingest itself, not the imports), runs
:func:`transforms.ingest.ingest_paths` (stage, QC gate, Delta commits, ingest_log
commit point, prune, publish), then prints one ``OUTCOME <json>`` line per file
and ``DONE``. ``--publish-only`` rebuilds the catalog only. ``GO`` is printed when
the work starts (after the go-file appeared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("lake")
    p.add_argument("paths", nargs="*")
    p.add_argument("--landing")
    p.add_argument("--force", action="store_true")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--lab")
    p.add_argument("--condition")
    p.add_argument("--timepoint")
    p.add_argument("--no-publish", action="store_true")
    p.add_argument("--go-file", help="after READY, wait until this file exists (a start line)")
    p.add_argument("--publish-only", action="store_true", help="only rebuild the catalog")
    args = p.parse_args()

    from transforms.pipeline import ingest_paths, qc

    if not args.publish_only:
        qc._batch_definition()  # the GX context: the slow part of the first validation
    print("READY", flush=True)
    deadline = time.monotonic() + 900
    while args.go_file and not Path(args.go_file).exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # concurrent writers all start at the same moment
    if args.publish_only:
        from transforms.lake.catalog import publish

        print("GO", flush=True)
        publish(lake=args.lake)
        print("DONE", flush=True)
        return 0
    print("GO", flush=True)
    summary = ingest_paths(
        args.paths,
        lake=args.lake,
        landing=args.landing,
        lab=args.lab,
        condition=args.condition,
        timepoint=args.timepoint,
        force=args.force,
        batch_size=args.batch_size,
        publish=not args.no_publish,
    )
    for o in summary.outcomes:
        print("OUTCOME " + json.dumps(o.as_dict()), flush=True)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
