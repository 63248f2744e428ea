"""`fusou-compaction compact-files`: the engine alone on local Parquet files or folders."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fusou_compaction.cli.app import app

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


def parse_size(text: str) -> int:
    """'128MiB', '64MB', '1GiB', '1048576' -> bytes (KiB/MiB/GiB are powers of 1024, KB/MB of 1000)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise typer.BadParameter(f"{text!r} is not a size such as 128MiB, 64MB or 1048576")
    number, unit = float(m[1]), (m[2] or "").upper()
    factor = 1024 ** "BKMGT".index(unit[0]) if "I" in unit else _UNITS[unit.rstrip("B") or ""]
    size = int(number * factor)
    if size <= 0:
        raise typer.BadParameter("the size must be positive")
    return size


@dataclass
class TableInputs:
    name: str
    paths: list[Path] = field(default_factory=list)


def collect_tables(paths: Iterable[Path]) -> list[TableInputs]:
    """Group input files into tables: a file belongs to the table named after its folder.

    A folder given on the command line contributes its Parquet files (its own name is the table)
    and each sub-folder holding Parquet files (the sub-folder's path below it is the table).
    Files keep their name order inside a table: that is their upload order here.
    """
    tables: dict[str, TableInputs] = {}

    def add(table: str, file: Path) -> None:
        tables.setdefault(table, TableInputs(table)).paths.append(file)

    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*.parquet")):
                if any(part.startswith(".") for part in file.relative_to(path).parts):
                    continue  # temp files of an interrupted write
                rel_parent = file.parent.relative_to(path)
                add(path.resolve().name if rel_parent == Path() else rel_parent.as_posix(), file)
        elif path.is_file():
            add(path.resolve().parent.name, path)
        else:
            raise FileNotFoundError(str(path))
    for t in tables.values():
        t.paths = sorted(dict.fromkeys(t.paths))
    return sorted(tables.values(), key=lambda t: t.name)


@app.command("compact-files")
def compact_files(
    inputs: Annotated[list[Path], typer.Argument(help="Parquet files or folders (a folder per table)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for the compacted files")],
    target_file_size: Annotated[
        str, typer.Option("--target-file-size", help="target size per output file, e.g. 128MiB")
    ] = "128MiB",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bar on stderr")] = True,
) -> None:
    """Compact local Parquet files table by table into OUTPUT/<table>/part-*.parquet.

    Prints a JSON summary as the last line of stdout.
    """
    # The engine (and pyarrow) load here, not when the CLI starts: `--help` and the other
    # commands never pay for them.
    from fusou_compaction.engine import (
        DEFAULT_TARGET_FILE_SIZE,
        DEFAULT_TUNING,
        BinJob,
        EngineError,
        InputFile,
        LocalDirSink,
        compact_bins,
        plan_table,
        use_system_allocator,
    )

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    target = parse_size(target_file_size) if target_file_size else DEFAULT_TARGET_FILE_SIZE
    try:
        tables = collect_tables(inputs)
    except FileNotFoundError as exc:
        err.print(f"[red]error:[/] no such file or folder: {exc}")
        raise typer.Exit(2) from exc
    if not tables:
        err.print("[red]error:[/] no .parquet files found in the inputs")
        raise typer.Exit(2)

    import pyarrow.fs as pafs  # after the engine: it picks Arrow's allocator before pyarrow loads

    fs = pafs.LocalFileSystem()
    plans = []
    for t in tables:
        files = [
            InputFile(id=str(p), path=str(p.resolve()), size_bytes=p.stat().st_size, seq=i)
            for i, p in enumerate(t.paths)
        ]
        plans.append((t, files, plan_table(files, target_file_size=target)))
    total_bytes = sum(f.size_bytes for _, files, _ in plans for f in files)

    summary: dict[str, Any] = {"files_in": 0, "rows_in": 0, "files_out": 0, "rows_out": 0, "bytes_out": 0}
    per_table: dict[str, dict[str, int]] = {}
    sinks: list[LocalDirSink] = []
    started = time.perf_counter()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not progress,
        transient=False,
    )
    jobs: list[BinJob] = []
    job_tables: list[str] = []
    for t, _files, bins in plans:
        sink = LocalDirSink(output / t.name)
        sinks.append(sink)
        per_table[t.name] = {"files_in": 0, "rows_in": 0, "files_out": 0, "rows_out": 0, "bytes_out": 0}
        jobs.extend(BinJob(b, sink) for b in bins)
        job_tables.extend(t.name for _ in bins)
    use_system_allocator()
    try:
        with bar:
            task = bar.add_task(f"{len(tables)} tables, {len(jobs)} bins", total=total_bytes)
            results = compact_bins(
                jobs,
                source_fs=fs,
                target_file_size=target,
                tuning=DEFAULT_TUNING,  # one bin at a time: each encodes on every core
                on_input_read=lambda f: bar.advance(task, f.size_bytes),
            )
    except EngineError as exc:
        for sink in sinks:
            sink.discard_all()  # a failed run leaves nothing behind
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc

    for table, result in zip(job_tables, results, strict=True):
        stats = per_table[table]
        stats["files_in"] += result.files_in
        stats["rows_in"] += result.rows_in
        stats["files_out"] += len(result.outputs)
        stats["rows_out"] += result.rows_out
        stats["bytes_out"] += result.bytes_out
    for stats in per_table.values():
        for key, value in stats.items():
            summary[key] += value
    summary["tables"] = per_table
    summary["seconds"] = round(time.perf_counter() - started, 3)
    typer.echo(json.dumps(summary))
