"""Handlers for the local Lambda stand-in's tests (fusou_compaction.local.lambda_process)."""

from __future__ import annotations

import os
import time
from typing import Any

from fusou_compaction.ports.object_store import ObjectStoreError

_kept: list[bytearray] = []


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "event": event,
        "memory": context.memory_limit_in_mb,
        "function": context.function_name,
        "pid": os.getpid(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("FUSOU_", "AWS_LAMBDA_", "ARROW_"))},
    }


def hog(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Holds ``mb`` MiB, touched page by page (resident, as a decode's buffers are)."""
    block = bytearray(event["mb"] * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    if event.get("keep"):
        _kept.append(block)
    return {"held": len(block), "pid": os.getpid()}


def arrow_hog(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Asks Arrow for ``mb`` MiB at once (the allocation itself fails under an address-space limit)."""
    import pyarrow as pa

    buf = pa.allocate_buffer(event["mb"] * 1024 * 1024)
    return {"held": buf.size}


def fail(event: dict[str, Any], context: Any) -> None:
    raise ObjectStoreError("S3 is down")


def sleep(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(event["seconds"])
    return {"slept": event["seconds"]}


def say(event: dict[str, Any], context: Any) -> None:
    print("a line the function printed", flush=True)


def dispatch(event: dict[str, Any], context: Any) -> Any:
    """One handler for every test: ``event["do"]`` names the function above to run."""
    return globals()[event.pop("do")](event, context)
