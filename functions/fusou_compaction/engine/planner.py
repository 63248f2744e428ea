"""The planner: which live files of one (dataset, table) merge into which output bin."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

MiB = 1024 * 1024
DEFAULT_TARGET_FILE_SIZE = 128 * MiB


@dataclass(frozen=True, slots=True)
class InputFile:
    id: str
    path: str  # path on the pyarrow filesystem handed to compact_bin
    size_bytes: int
    row_count: int | None = None  # as recorded at upload; checked against the footer when known
    seq: int = 0  # upload order
    kind: Literal["fragment", "compacted"] = "fragment"


@dataclass(frozen=True, slots=True)
class PlannedBin:
    index: int
    inputs: list[InputFile] = field(default_factory=list)
    estimated_bytes: int = 0


def plan_table(
    files: Iterable[InputFile],
    *,
    target_file_size: int = DEFAULT_TARGET_FILE_SIZE,
    small_fraction: float = 0.5,
    fragment_output_ratio: float = 1.0,
) -> list[PlannedBin]:
    """Pack one table's live files, in upload order, into contiguous bins near the target size.

    - Compacted files of at least ``small_fraction * target_file_size`` are done; they are left
      alone. Smaller compacted files join the next merge, so repeated runs converge instead of
      leaving a tail of small files.
    - The candidates are split into ``ceil(total / target)`` bins of equal share: no tiny last
      bin. A file goes to the bin where its midpoint falls, so bins stay contiguous (order of
      upload is preserved from bin to bin) and a file is never split.
    - A bin holding a single compacted file would only rewrite it: it is dropped.
    - Sizes are estimated in output bytes: a fragment counts ``fragment_output_ratio`` times its
      size (clients write snappy, we write zstd: pass the table's last ``bytes_out / bytes_in``),
      a compacted file its own size. An accurate ratio keeps every output above the small mark.
    - Deterministic: ties in ``seq`` break on ``id``.
    """
    if target_file_size <= 0:
        raise ValueError("target_file_size must be positive")
    ordered = sorted(files, key=lambda f: (f.seq, f.id))
    small = small_fraction * target_file_size
    candidates = [f for f in ordered if f.kind == "fragment" or f.size_bytes < small]
    if not candidates:
        return []
    sizes = [max(1, round(f.size_bytes * (fragment_output_ratio if f.kind == "fragment" else 1.0))) for f in candidates]
    total = sum(sizes)
    n_bins = max(1, math.ceil(total / target_file_size))
    buckets: list[list[tuple[InputFile, int]]] = [[] for _ in range(n_bins)]
    start = 0
    for f, size in zip(candidates, sizes, strict=True):
        # The bin of the midpoint, start + size / 2, in shares of total / n_bins, in integers: in floats
        # a midpoint exactly on a boundary fell in the earlier bin whenever the share was inexact.
        buckets[min(n_bins - 1, (2 * start + size) * n_bins // (2 * total))].append((f, size))
        start += size
    bins: list[PlannedBin] = []
    for bucket in buckets:
        if not bucket or (len(bucket) == 1 and bucket[0][0].kind == "compacted"):
            continue
        bins.append(PlannedBin(len(bins), [f for f, _ in bucket], sum(size for _, size in bucket)))
    return bins
