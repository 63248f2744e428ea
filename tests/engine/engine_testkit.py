"""Helpers for the engine tests: write fragments, run a bin, read outputs with an independent reader.

Row comparison is done on plain Python values read by DuckDB (outputs) and pyarrow (inputs), after
a normalization that only erases differences unification is allowed to make: integer width,
dictionary encoding, timestamp unit and zone (compared as UTC instants), a missing nullable column
or struct field vs a null one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fusou_compaction.engine import BinResult, InputFile, LocalDirSink, MergeTuning, PlannedBin, compact_bin

Row = tuple[tuple[str, Any], ...]


def write_fragment(path: Path, table: pa.Table, *, row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy", row_group_size=row_group_size)
    return path


def input_files(paths: Sequence[Path], *, kind: str = "fragment") -> list[InputFile]:
    return [
        InputFile(id=f"in-{i:04d}", path=str(p), size_bytes=p.stat().st_size, seq=i, kind=kind)  # type: ignore[arg-type]
        for i, p in enumerate(paths)
    ]


def run_bin(
    inputs: Sequence[InputFile] | PlannedBin,
    out_dir: Path,
    *,
    target_file_size: int = 128 * 1024 * 1024,
    tuning: MergeTuning | None = None,
) -> BinResult:
    kwargs: dict[str, Any] = {"tuning": tuning} if tuning is not None else {}
    return compact_bin(
        inputs if isinstance(inputs, PlannedBin) else list(inputs),
        source_fs=pafs.LocalFileSystem(),
        open_output=LocalDirSink(out_dir),
        target_file_size=target_file_size,
        **kwargs,
    )


def normalize(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value
    if isinstance(value, dict):
        return tuple(sorted((k, normalize(v)) for k, v in value.items() if v is not None))
    if isinstance(value, list | tuple):
        return tuple(normalize(v) for v in value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value


def normalize_row(row: dict[str, Any]) -> Row:
    return tuple(sorted((k, normalize(v)) for k, v in row.items() if v is not None))


def rows_of_input(path: Path) -> list[Row]:
    """Rows of one input, read by pyarrow (naive timestamps taken as UTC, as the engine does)."""
    table = pq.read_table(path)
    return [normalize_row(r) for r in table.to_pylist()]


def rows_of_output(path: Path) -> list[Row]:
    """Rows of one output, read by DuckDB in file order (independent of the engine and of pyarrow)."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        cur = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
        names = [d[0] for d in cur.description]
        return [normalize_row(dict(zip(names, r, strict=True))) for r in cur.fetchall()]
    finally:
        con.close()


def output_paths(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("*.parquet"))


def all_files(out_dir: Path) -> list[Path]:
    return sorted(p for p in out_dir.rglob("*") if p.is_file()) if out_dir.exists() else []


DAMAGES = ["truncated", "not-parquet", "missing", "corrupt-page"]


def damage(path: Path, how: str) -> None:
    """Break an input the ways a lake breaks: cut short, not Parquet at all, gone, a bad page."""
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "not-parquet":
        path.write_text("battle_id,map_id\n1,1-1\n")
    elif how == "missing":
        path.unlink()
    elif how == "corrupt-page":
        data = bytearray(path.read_bytes())
        data[4:64] = b"\xff" * 60  # first page header: the footer stays valid, decoding fails
        path.write_bytes(bytes(data))
    else:
        raise ValueError(how)
