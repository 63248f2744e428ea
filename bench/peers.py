"""One compaction method as a whole process, started cold by ``bench/run.py`` (which times it).

    .venv/bin/python bench/peers.py METHOD --out OUT [--schemas FILE] TABLE_DIR...

Each TABLE_DIR holds one table's fragments (``*.parquet``, name order = upload order); the
output goes to ``OUT/<table>/``. The process does everything a user of that tool would do:
list the files, work out the schema if the tool needs one, read, write. Nothing is printed on
success; the driver measures wall time, CPU and peak RSS from outside and counts the rows out.

Methods:
- ``duckdb``: ``COPY (SELECT * FROM read_parquet([...], union_by_name=true)) TO ...`` with
  ``memory_limit='512MB'``, zstd, 122,880-row groups, 128 MiB files.
- ``polars``: reads each file's schema (``pl.read_parquet_schema``), unifies the distinct ones
  here (polars' own ``diagonal_relaxed`` concat fails on time-zone drift), then
  ``scan_parquet(schema=..., missing_columns="insert", cast_options=...)`` and ``sink_parquet``.
- ``ours-schema``: our engine in-process with the unified schema handed over (``--schemas``), as
  the Compact step gets it from the catalog.
- ``pyarrow``: ``pyarrow.dataset`` with the unified schema handed over (optional).
- ``decode-only``: decode every fragment, write nothing (a floor; optional).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
TARGET = 128 * MiB


def table_files(table_dir: Path) -> list[str]:
    return sorted(str(p) for p in table_dir.glob("*.parquet"))


def read_schemas(path: Path) -> dict[str, Any]:
    """The unified schema per table, as ``bench/run.py`` caches it (Arrow IPC, hex, in JSON)."""
    import pyarrow as pa

    raw = json.loads(path.read_bytes())
    return {t: pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(h))) for t, h in raw.items()}


# ---------------------------------------------------------------- duckdb
def run_duckdb(tables: list[Path], out: Path, schemas: Path | None) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute("SET memory_limit='512MB'")
    con.execute(f"SET temp_directory='{out / '.duckdb-tmp'}'")
    for table in tables:
        files = table_files(table)
        (out / table.name).mkdir(parents=True, exist_ok=True)
        con.execute(
            f"COPY (SELECT * FROM read_parquet({files!r}, union_by_name=true)) TO '{out / table.name}' "
            f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880, FILE_SIZE_BYTES {TARGET}, "
            "OVERWRITE_OR_IGNORE true)"
        )
    shutil.rmtree(out / ".duckdb-tmp", ignore_errors=True)


# ---------------------------------------------------------------- polars
_TIME_UNITS = ("ms", "us", "ns")


class SchemaConflict(ValueError):
    pass


def _polars_plain(dt: Any) -> Any:
    """Encodings folded: categorical/enum -> string, recursively."""
    import polars as pl

    if isinstance(dt, (pl.Categorical, pl.Enum)) or dt in (pl.Categorical, pl.Enum):
        return pl.String()
    if isinstance(dt, pl.List):
        return pl.List(_polars_plain(dt.inner))
    if isinstance(dt, pl.Array):
        return pl.Array(_polars_plain(dt.inner), dt.shape)
    if isinstance(dt, pl.Struct):
        return pl.Struct([pl.Field(f.name, _polars_plain(f.dtype)) for f in dt.fields])
    return dt


def _polars_merge(a: Any, b: Any, where: str) -> Any:  # noqa: PLR0911  (one return per type family)
    """The type both cast to losslessly, the rules our engine uses (and polars' casts allow)."""
    import polars as pl

    if a == b:
        return a
    if a == pl.Null:
        return b
    if b == pl.Null:
        return a
    if a.is_integer() and b.is_integer():
        if a.is_signed_integer() != b.is_signed_integer():
            raise SchemaConflict(f"{where}: {a} vs {b}")
        return a if _int_bits(a) >= _int_bits(b) else b
    if a.is_float() and b.is_float():
        return a if a == pl.Float64 else b
    if isinstance(a, pl.Datetime) and isinstance(b, pl.Datetime):
        unit = max(a.time_unit or "us", b.time_unit or "us", key=_TIME_UNITS.index)
        return pl.Datetime(unit, a.time_zone if a.time_zone == b.time_zone else "UTC")
    if isinstance(a, pl.List) and isinstance(b, pl.List):
        return pl.List(_polars_merge(a.inner, b.inner, where + "[]"))
    if isinstance(a, pl.Struct) and isinstance(b, pl.Struct):
        fields = {f.name: f.dtype for f in a.fields}
        for f in b.fields:
            fields[f.name] = (
                _polars_merge(fields[f.name], f.dtype, f"{where}.{f.name}") if f.name in fields else f.dtype
            )
        return pl.Struct(fields)
    raise SchemaConflict(f"{where}: {a} vs {b}")


def _int_bits(dt: Any) -> int:
    return int("".join(ch for ch in str(dt) if ch.isdigit()) or 64)


def polars_unified_schema(files: list[str]) -> Any:
    """Read every footer's schema with polars, unify the distinct ones (first-seen column order)."""
    import polars as pl

    distinct: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for f in files:
        schema = pl.read_parquet_schema(f)
        distinct.setdefault(tuple((k, repr(v)) for k, v in schema.items()), schema)
    unified: dict[str, Any] = {}
    for schema in distinct.values():
        for name, dt in schema.items():
            plain = _polars_plain(dt)
            unified[name] = _polars_merge(unified[name], plain, name) if name in unified else plain
    # A column that is null-typed everywhere stays null; polars writes it as such.
    return pl.Schema(unified)


def run_polars(tables: list[Path], out: Path, schemas: Path | None) -> None:
    import polars as pl

    for table in tables:
        files = table_files(table)
        schema = polars_unified_schema(files)
        (out / table.name).mkdir(parents=True, exist_ok=True)
        lf = pl.scan_parquet(
            files,
            schema=schema,
            missing_columns="insert",
            cast_options=pl.ScanCastOptions(
                integer_cast="upcast",
                float_cast="upcast",
                datetime_cast=["upcast", "convert-timezone"],
                missing_struct_fields="insert",
                categorical_to_string="allow",
            ),
        )
        lf.sink_parquet(out / table.name / "part-0.parquet", compression="zstd")


# ---------------------------------------------------------------- ours, schema handed over
def run_ours_schema(tables: list[Path], out: Path, schemas: Path | None) -> None:
    """The Compact step's path: the engine in-process, handed the unified schema."""
    sys.path.insert(0, str(ROOT / "functions"))
    from fusou_compaction.engine import (
        DEFAULT_TUNING,
        BinJob,
        InputFile,
        LocalDirSink,
        compact_bins,
        plan_table,
        use_system_allocator,
    )

    use_system_allocator()
    import pyarrow.fs as pafs  # after the engine: it picks Arrow's allocator before pyarrow loads

    if schemas is None:
        raise SystemExit("ours-schema needs --schemas")
    given = read_schemas(schemas)
    jobs = []
    for table in tables:
        inputs = [
            InputFile(id=p, path=os.path.realpath(p), size_bytes=os.path.getsize(p), seq=i)
            for i, p in enumerate(table_files(table))
        ]
        sink = LocalDirSink(out / table.name)
        jobs.extend(BinJob(b, sink, schema=given[table.name]) for b in plan_table(inputs, target_file_size=TARGET))
    compact_bins(jobs, source_fs=pafs.LocalFileSystem(), target_file_size=TARGET, tuning=DEFAULT_TUNING)


# ---------------------------------------------------------------- optional
def run_pyarrow(tables: list[Path], out: Path, schemas: Path | None) -> None:
    import pyarrow.dataset as ds

    if schemas is None:
        raise SystemExit("pyarrow needs --schemas")
    given = read_schemas(schemas)
    fmt = ds.ParquetFileFormat()
    for table in tables:
        dataset = ds.dataset(table_files(table), schema=given[table.name], format="parquet")
        ds.write_dataset(
            dataset,
            out / table.name,
            format="parquet",
            file_options=fmt.make_write_options(compression="zstd"),
            max_rows_per_file=4_000_000,
            max_rows_per_group=1_000_000,
            existing_data_behavior="overwrite_or_ignore",
        )


def run_decode_only(tables: list[Path], out: Path, schemas: Path | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def decode(path: str) -> int:
        with open(path, "rb") as f:
            return int(pq.read_table(pa.BufferReader(f.read()), use_threads=False).num_rows)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for table in tables:
            sum(pool.map(decode, table_files(table)))


METHODS = {
    "duckdb": run_duckdb,
    "polars": run_polars,
    "ours-schema": run_ours_schema,
    "pyarrow": run_pyarrow,
    "decode-only": run_decode_only,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", choices=sorted(METHODS))
    parser.add_argument("tables", nargs="+", type=Path, help="one folder per table")
    parser.add_argument("--out", "-o", type=Path, required=True)
    parser.add_argument("--schemas", type=Path, help="unified schemas (ours-schema, pyarrow)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        METHODS[args.method](args.tables, args.out, args.schemas)
    except Exception as exc:  # a peer that cannot read drifted data is a result, not a crash
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"FAILED {type(exc).__name__}: {first}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
