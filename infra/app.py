"""The CDK app: `make synth` (offline, no AWS credentials, no Docker) or `npx aws-cdk@2 ... --app cdk.out`.

Run directly it reads cdk.json's context itself and accepts CDK-style overrides:
    .venv/bin/python infra/app.py -c stage=prod -c requireBuiltAssets=true
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

INFRA = Path(__file__).resolve().parent
sys.path[:0] = [str(INFRA), str(INFRA.parent / "functions")]
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def parse_context(argv: list[str]) -> dict[str, str]:
    context: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        if arg in ("-c", "--context"):
            key, _, value = next(args, "").partition("=")
            if not key or not _:
                raise SystemExit(f"expected -c key=value, got {arg}")
            context[key] = value
        else:
            raise SystemExit(f"unknown argument {arg!r} (only -c key=value)")
    return context


def main() -> None:
    from fusou_infra.app import build_app

    started = time.monotonic()
    app, stack, _ = build_app(parse_context(sys.argv[1:]))
    assembly = app.synth()
    print(
        f"synthesized {stack.stack_name} to {assembly.directory} in {time.monotonic() - started:.1f} s", file=sys.stderr
    )


if __name__ == "__main__":
    main()
