"""The engine's knobs, and what the process needs before it compacts (allocator, CPUs)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from fusou_compaction.engine.planner import MiB


@dataclass(frozen=True, slots=True)
class MergeTuning:
    """Knobs measured in bench/RESULTS.md; the defaults are what won there."""

    row_group_bytes: int = 12 * MiB  # decoded Arrow bytes per output row group (~1.5-4 MiB zstd here)
    max_row_group_rows: int = 1_048_576
    read_ahead_bytes: int = 12 * MiB  # decoded bytes in flight ahead of the writer
    whole_file_max_bytes: int = 32 * MiB  # inputs up to this size are fetched in one read
    # Small inputs decoded together as one task (one cast per schema, one table): up to this many
    # estimated decoded bytes, and up to batch_inputs inputs (None: 64 on a local disk; 4 on an
    # object store, where each GET waits and tasks side by side are what hide it).
    batch_bytes: int = 1 * MiB
    batch_inputs: int | None = None
    # Concurrent fetch+decode per bin. None: one per CPU (at least 2) on a local disk, 16 on an
    # object store, where each small GET waits ~30 ms and only concurrency hides it (memory stays
    # bounded by read-ahead).
    io_threads: int | None = None
    # Row groups of one output encoded at once (each on its own thread, joined in order after).
    # None: one per available CPU, at most 8; row groups waiting for or in the encoders are capped
    # at this number (memory: that many row groups of row_group_bytes; one more queued bought
    # nothing but memory, bench/RESULTS.md).
    encode_threads: int | None = None
    compression_level: int = 1  # zstd 1: ~25% cheaper to encode than 3 for ~0% size on this data
    dictionary_max_ratio: float = 0.1  # dictionary-encode a leaf column if distinct/values <= this
    statistics: Literal["all", "scalars"] = "scalars"  # see writer_options
    # Parsed footers kept from phase 1 for small inputs, ~30 KB each in memory: memory that grows
    # with the number of inputs, for ~1% CPU saved (bench/RESULTS.md). Inputs read row group by
    # row group always keep theirs (they are few and large).
    cached_footers: int = 0
    delta_encodings: bool = True  # see writer_options
    # Integers inside lists (hp, ship and equipment ids, damage: most of the values in this lake)
    # delta-packed instead of dictionary-encoded: ~6-9% less CPU for the whole run, +4% output
    # (still smaller than every peer); bench/RESULTS.md step 18.
    delta_list_integers: bool = True
    # A CRC32 in every page header (see _encode_part); measured in bench/RESULTS.md.
    page_checksums: bool = True


DEFAULT_TUNING = MergeTuning()


def use_system_allocator() -> None:
    """Make Arrow's Python-level default pool malloc (see engine/_arrow_env.py for the C++ one).

    Call once at start-up of a process that runs compactions (the CLI; the compaction Lambda's
    cold start, which should also set ARROW_DEFAULT_MEMORY_POOL=system in its environment).
    """
    pa.set_memory_pool(pa.system_memory_pool())


def available_cpus() -> int:
    """CPUs this process may run on (a Lambda's vCPUs; a container's CPU set), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
