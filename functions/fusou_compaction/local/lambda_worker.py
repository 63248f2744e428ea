"""One Lambda execution environment, locally: ``python -m fusou_compaction.local.lambda_worker``.

Started by :class:`fusou_compaction.local.lambda_process.LambdaFunction` with the function's
configuration as its environment (``FUSOU_*``, ``AWS_LAMBDA_FUNCTION_NAME``,
``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``, ...): importing the handler's module is its cold start, as in
Lambda (``handlers.deps.cold_start`` builds the dependencies from settings). Then it serves
invocations one at a time, each a JSON line on stdin answered by one on the protocol pipe:
``{"result": ...}`` or ``{"error": {"name", "type", "message"}}``. Whatever the function prints or
logs goes to stderr, which the parent forwards as Lambda forwards it to the log group.

An allocation that fails (``MemoryError``, Arrow's out-of-memory) is reported as Lambda reports a
function that ran out of memory, and the environment ends: Lambda does not reuse it either.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any

OUT_OF_MEMORY_EXIT = 86  # the worker's exit status after an allocation failed


def main() -> None:
    # The protocol gets its own descriptor; fd 1 becomes stderr, so that nothing the function
    # prints (Powertools' log lines and metric blobs go to stdout) can corrupt it.
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    handler_path = sys.argv[1]
    module_name, function_name = handler_path.rsplit(".", 1)
    handler = getattr(importlib.import_module(module_name), function_name)

    from fusou_compaction.local.runner import LocalContext

    for line in sys.stdin:
        request = json.loads(line)
        context = LocalContext(
            function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local"),
            memory_limit_in_mb=int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")),
            aws_request_id=request["requestId"],
            timeout_seconds=int(request["timeoutSeconds"]),
        )
        try:
            response: dict[str, Any] = {"result": handler(request["event"], context)}
        except MemoryError as exc:
            _report_out_of_memory(protocol, exc)
        except Exception as exc:
            if _is_arrow_out_of_memory(exc):
                _report_out_of_memory(protocol, exc)
            traceback.print_exc()
            name = str(getattr(exc, "error_name", None) or type(exc).__name__)
            response = {"error": {"name": name, "type": type(exc).__name__, "message": str(exc)}}
        protocol.write(json.dumps(response, default=str) + "\n")


def _is_arrow_out_of_memory(exc: BaseException) -> bool:
    arrow = sys.modules.get("pyarrow")
    return arrow is not None and isinstance(exc, arrow.ArrowMemoryError)


def _report_out_of_memory(protocol: Any, exc: BaseException) -> None:
    message = f"Runtime exited with error: allocation failed ({type(exc).__name__}: {exc})"
    error = {"name": "Lambda.Unknown", "type": "Runtime.OutOfMemory", "message": message}
    protocol.write(json.dumps({"error": error}) + "\n")
    protocol.flush()
    os._exit(OUT_OF_MEMORY_EXIT)


if __name__ == "__main__":
    main()
