"""What a person sees of a local stack, and where everything else goes.

Deployed, every function writes JSON log lines and EMF metric blobs to CloudWatch. Locally the
same lines go to a file under the data dir (``logs/stack.log``), as a log group would hold them,
and the terminal gets one readable line per thing that happened: a request answered, a run
started or ended, an upload registered, a failure recorded, a scheduled run, a warning. The lines
are written by the local glue (the API bridge, the runner, the pollers), never by the handlers,
which log as they do in AWS.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fusou_compaction.observability import logger

Feed = Callable[[str], None]


def short(value: Any) -> str:
    """A dataset or run id as a person reads it in a feed: its first 8 characters."""
    return str(value)[:8]


@dataclass
class Terminal:
    """The process's real standard streams, kept while the standard names point at the log file."""

    stdout: TextIO
    stderr: TextIO
    log_path: Path


class _Lines(logging.Handler):
    """One readable line for what the feed does not already tell (the JSON stays in the log file):
    a library's warning, or an exception anywhere. The service's other records are the events the
    glue reports itself (runs, DLQ records, uploads), or retries on their way to one of those."""

    def __init__(self, feed: Feed) -> None:
        super().__init__(level=logging.WARNING)
        self.feed = feed

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name == logger.name or record.name.startswith(f"{logger.name}.")
        if ours and not (record.levelno >= logging.ERROR and record.exc_info):
            return
        try:
            details = ", ".join(
                f"{k}={short(v) if k.endswith('Id') else v}"
                for k in ("datasetId", "runId", "key", "errorStep", "error", "reason")
                if (v := getattr(record, k, None)) not in (None, "", "None")
            )
            text = record.getMessage().split("\n", 1)[0]
            self.feed(f"{record.levelname.lower()}: {text}" + (f" ({details})" if details else ""))
        except Exception:  # a feed must never break the code that logs
            self.handleError(record)


@contextlib.contextmanager
def logs_to_file(log_path: Path, *, feed: Feed | None = None) -> Iterator[Terminal]:
    """Send every log line and metric blob of this process to ``log_path``; yield the terminal.

    Powertools' logger writes to the stream it was created with, its metrics ``print`` to
    ``sys.stdout``, other libraries log through the root logger or warn: all of them go to the
    file while this is active. With ``feed``, warnings and errors also get one line there.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    terminal = Terminal(stdout=sys.stdout, stderr=sys.stderr, log_path=log_path)
    log = log_path.open("a", buffering=1, encoding="utf-8")  # line-buffered: tail -f works
    lock = threading.Lock()

    class _LockedFile:
        # Threads print EMF blobs and log lines at once: whole lines, never interleaved.
        def write(self, text: str) -> int:
            with lock:
                return log.write(text)

        def flush(self) -> None:
            with lock:
                log.flush()

        def isatty(self) -> bool:
            return False

    file = _LockedFile()
    powertools = logger.registered_handler
    previous_stream = powertools.setStream(file) if isinstance(powertools, logging.StreamHandler) else None  # type: ignore[arg-type]
    root = logging.getLogger()
    file_handler = logging.StreamHandler(file)  # type: ignore[arg-type]
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # The service's own records propagate here too; Powertools' handler already wrote them as JSON.
    file_handler.addFilter(lambda r: r.name != logger.name and not r.name.startswith(f"{logger.name}."))
    previous_root = (root.handlers[:], root.level)
    root.handlers = [file_handler]
    root.setLevel(logging.WARNING)
    lines = _Lines(feed) if feed else None
    if lines:
        root.addHandler(lines)  # the service's records propagate to the root logger: seen once
    logging.captureWarnings(True)
    previous_excepthook = threading.excepthook

    def thread_crashed(args: threading.ExceptHookArgs) -> None:
        logging.getLogger("fusou-compaction.local").error(
            f"thread {args.thread.name if args.thread else '?'} crashed",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
        )

    threading.excepthook = thread_crashed
    sys.stdout = file  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield terminal
    finally:
        sys.stdout = terminal.stdout
        threading.excepthook = previous_excepthook
        logging.captureWarnings(False)
        root.handlers, level = previous_root
        root.setLevel(level)
        if isinstance(powertools, logging.StreamHandler) and previous_stream is not None:
            powertools.setStream(previous_stream)
        with lock:
            log.close()


def run_summary(name: str, data: dict[str, Any] | None, status: str, seconds: float) -> str:
    """One line for a finished execution of the state machine."""
    data = data or {}
    dataset = short(((data.get("execution") or {}).get("message") or {}).get("datasetId", name))
    update, validate, dlq = data.get("update"), data.get("validate") or {}, data.get("dlq")
    if update:
        return (
            f"run {dataset}: compacted {update.get('filesIn', 0)} files → {update.get('filesOut', 0)}, "
            f"{update.get('rowsIn', 0):,} rows in = {update.get('rowsOut', 0):,} out, "
            f"{update.get('bytesIn', 0) / 1e6:.1f} MB → {update.get('bytesOut', 0) / 1e6:.1f} MB ({seconds:.1f}s)"
        )
    if validate.get("action") == "skip":
        return f"run {dataset}: skipped ({validate.get('reason')})"
    if dlq:
        error = str(dlq.get("error", "")).split("\n", 1)[0][:200]
        return f"run {dataset}: FAILED at {dlq.get('errorStep')}: {error} ({seconds:.1f}s; sent to the DLQ)"
    return f"run {dataset}: {status.lower()} ({seconds:.1f}s)"


def scheduled_line(result: dict[str, Any]) -> str:
    parts = [f"scheduled run: {len(result.get('enqueued', []))} datasets enqueued"]
    for key, what in (
        ("strandedUploadsResent", "stranded uploads re-sent"),
        ("expiredLeases", "expired leases freed"),
        ("garbageDeleted", "replaced objects deleted"),
        ("orphansDeleted", "orphans deleted"),
    ):
        if result.get(key):
            parts.append(f"{result[key]} {what}")
    if result.get("failed"):
        parts.append(f"{len(result['failed'])} not sent")
    line = ", ".join(parts)
    return line + (f"; errors: {'; '.join(result['errors'])[:300]}" if result.get("errors") else "")


def _failed_ids(result: Any) -> set[str]:
    failures = result.get("batchItemFailures", []) if isinstance(result, dict) else []
    return {f.get("itemIdentifier") for f in failures}


def dlq_lines(event: dict[str, Any], result: Any, *, max_receive_count: int) -> list[str]:
    """What the DLQ function just recorded, as a person reads it."""
    from fusou_compaction.logic.dlq import describe

    lines = []
    for r in event.get("Records", []):
        if r.get("messageId") in _failed_ids(result):
            continue
        receives = (r.get("attributes") or {}).get("ApproximateReceiveCount")
        rec = describe(
            r.get("body", ""), r.get("messageId", ""), int(receives) if receives else None,
            max_receive_count=max_receive_count,
        )  # fmt: skip
        who = f"dataset {short(rec.dataset_id)}" if rec.dataset_id else "a message"
        lines.append(f"DLQ: {who} failed at {rec.error_step}: {rec.error.splitlines()[0][:200]} (recorded)")
    return lines


def register_lines(event: dict[str, Any], result: Any) -> list[str]:
    """What the register function did with presigned uploads (its S3 event, or its retry queue)."""
    if isinstance(result, dict) and "results" in result:
        lines = []
        for o in result["results"]:
            fragment = o.get("fragment") or {}
            if o.get("status") in ("registered", "duplicate"):
                lines.append(
                    f"upload {o['status']}: dataset {short(fragment.get('datasetId'))} {fragment.get('table')} "
                    f"+{fragment.get('rowCount', 0):,} rows (presigned)"
                )
            elif o.get("status") == "rejected":
                lines.append(f"upload rejected: {o.get('key')}: {o.get('reason')}")
        return lines
    handled = [r for r in event.get("Records", []) if r.get("messageId") not in _failed_ids(result)]
    return [f"register-retry: {len(handled)} staged upload(s) handled"] if handled else []
