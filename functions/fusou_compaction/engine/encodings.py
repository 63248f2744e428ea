"""Choose encodings: per-column dictionary, statistics and delta choices for one output, decided
from its first row group (all the output's row groups must agree: the stitcher joins them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from fusou_compaction.engine.tuning import MergeTuning


def _leaf_columns(
    name: str, arr: pa.ChunkedArray[Any] | pa.Array[Any], in_list: bool = False
) -> Iterator[tuple[str, pa.ChunkedArray[Any] | pa.Array[Any], bool]]:
    """(Parquet column path, values, inside a list?) for every leaf of a column, named as the
    writer names them. Whether a leaf sits under a list is tracked here, not read back from the
    path: a struct field may itself be called "list"."""
    t = arr.type
    if pat.is_struct(t):
        chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
        for i, f in enumerate(t):
            child = pa.chunked_array([c.field(i) for c in chunks], type=f.type)  # type: ignore[attr-defined]
            yield from _leaf_columns(f"{name}.{f.name}", child, in_list)
    elif pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t):
        # Fixed-size lists are written as Parquet lists too (their size lives in the Arrow schema).
        yield from _leaf_columns(f"{name}.list.element", pc.list_flatten(arr), True)
    elif pat.is_map(t):
        return  # rare in this lake: leave maps to the writer's default (dictionary)
    elif pat.is_dictionary(t):
        yield name, arr.cast(t.value_type), in_list
    else:
        yield name, arr, in_list


_DICTIONARY_SAMPLE = 65_536  # leaf values judged per column
_DICTIONARY_PREFIX = 8_192  # see the shortcut in dictionary_columns


def dictionary_columns(table: pa.Table, max_ratio: float, *, list_integers: bool = True) -> list[str]:
    """Leaf columns worth a dictionary, judged on a sample of the first row group.

    Dictionary pages shrink map ids, ship names, small enums and hp lists, and spare zstd work;
    on uuids or random int64 ids they only cost hashing until the writer falls back to plain.
    ``list_integers=False`` leaves integers inside lists out whatever their count of values.
    """
    sample = table.slice(0, min(table.num_rows, _DICTIONARY_SAMPLE))
    chosen: list[str] = []
    # Columns by position: two columns may share a name (a group of its own, engine/schema.py).
    for f, column in zip(sample.schema, sample.columns, strict=True):
        for path, values, in_list in _leaf_columns(f.name, column):
            sample_values = values.slice(0, _DICTIONARY_SAMPLE)
            valid = len(sample_values) - sample_values.null_count
            if pat.is_boolean(values.type) or pat.is_null(values.type):
                continue
            if not list_integers and in_list and pat.is_integer(values.type):
                continue
            limit = max(16, max_ratio * valid)
            # Exact shortcut for uuids and other near-unique values: a prefix that already holds
            # more distinct values than the limit proves the answer (the whole sample holds at
            # least as many), for an eighth of the hashing (~0.15 s a run, bench/RESULTS.md).
            try:
                if len(sample_values) > _DICTIONARY_PREFIX and (
                    pc.count_distinct(sample_values.slice(0, _DICTIONARY_PREFIX)).as_py() > limit
                ):
                    continue
                if valid == 0 or pc.count_distinct(sample_values).as_py() <= limit:
                    chosen.append(path)
            except pa.ArrowNotImplementedError:
                continue  # a leaf type Arrow cannot hash: the writer's plain encoding, no guess
    return chosen


def writer_options(first: pa.Table, tuning: MergeTuning) -> dict[str, Any]:
    """Per-column encoding choices for one output, decided from its first row group.

    - dictionary where the sample says values repeat (see ``dictionary_columns``), except for
      integers inside lists when ``tuning.delta_list_integers``: hashing every element of every
      list costs more than the dictionary saves over delta packing;
    - statistics on top-level scalar columns (ids, timestamps, map ids: what readers prune on),
      not on list and struct leaves, where min/max prune nothing and cost ~5% of encode time, nor
      on high-cardinality strings (uuids): their min/max span everything, and finding them costs
      a byte comparison per value (~1.5% of the run);
    - DELTA_BINARY_PACKED for timestamps and integers without a dictionary (upload-ordered times
      and ids shrink to a few bits per value, about half the encode cost of zstd on plain int64,
      and smaller); bench/RESULTS.md step 17. Strings without a dictionary (uuids) stay PLAIN:
      DELTA_LENGTH_BYTE_ARRAY was ~40% cheaper on them, but some readers of a lake still refuse it
      (Iceberg's vectorized reader before 1.11, Velox before 2026, Spark's before 3.4), and a file
      nobody can read is worse than 1% of CPU.
    """
    dictionary = dictionary_columns(first, tuning.dictionary_max_ratio, list_integers=not tuning.delta_list_integers)

    def prunable(f: pa.Field[Any]) -> bool:
        if pat.is_nested(f.type):
            return False
        byte_strings = pat.is_string(f.type) or pat.is_large_string(f.type) or pat.is_binary(f.type)
        return not byte_strings or f.name in dictionary  # a dictionary column has few distinct values

    scalars = [f.name for f in first.schema if prunable(f)]
    options: dict[str, Any] = {
        "use_dictionary": dictionary,
        "write_statistics": scalars if tuning.statistics == "scalars" else True,
    }
    if tuning.delta_encodings:
        chosen = set(dictionary)
        encodings: dict[str, str] = {}
        for f, column in zip(first.schema, first.columns, strict=True):
            for path, values, _ in _leaf_columns(f.name, column.slice(0, 0)):
                encoding = _delta_encoding(values.type)
                if encoding and path not in chosen:
                    encodings[path] = encoding
        if encodings:
            options["column_encoding"] = encodings
    return options


def _delta_encoding(t: pa.DataType) -> str | None:
    """The encoding for a leaf the dictionary does not take (too many distinct values), if any."""
    if pat.is_timestamp(t) or pat.is_integer(t):
        return "DELTA_BINARY_PACKED"
    return None
