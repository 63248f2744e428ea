"""Cold import time of each Lambda handler, with and without compiled bytecode.

    .venv/bin/python bench/cold_imports.py [--runs 5]

Each import runs in a fresh interpreter (as a cold start does). "without" points the bytecode
cache at an empty folder (PYTHONPYCACHEPREFIX) and writes nothing, as a read-only Lambda code
folder without .pyc behaves; "with" uses the .pyc that set-up compiled. This machine's Python
(3.11, x86_64) stands in for the runtime's (3.14, arm64): the assets' own bytecode is compiled for
3.14 by `make build`, which no interpreter here can load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HANDLERS = ("api", "register", "consumer", "dlq", "scheduled", "steps")
PROBE = "import time; t = time.perf_counter(); import fusou_compaction.handlers.{0}; print(time.perf_counter() - t)"


def timed(module: str, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module)], env=env, capture_output=True, text=True, check=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FUSOU_", "AWS_LAMBDA"))}
    base["PYTHONDONTWRITEBYTECODE"] = "1"
    with tempfile.TemporaryDirectory() as empty:
        without = {**base, "PYTHONPYCACHEPREFIX": empty}
        print(f"{'handler':10} {'without .pyc':>13} {'with .pyc':>10}  (median of {args.runs}, seconds)")
        for name in HANDLERS:
            cold = [timed(name, without) for _ in range(args.runs)]
            warm = [timed(name, base) for _ in range(args.runs)]
            print(f"{name:10} {statistics.median(cold):13.3f} {statistics.median(warm):10.3f}")


if __name__ == "__main__":
    main()
