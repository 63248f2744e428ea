"""Runs before pyarrow loads (imported first by the engine package): pick Arrow's allocator.

Arrow's C++ default memory pool is chosen once, from ARROW_DEFAULT_MEMORY_POOL, when pyarrow
first loads; ``pa.set_memory_pool`` later only changes the pool Python-level calls use. With
mimalloc, two bins side by side peaked ~70 MB higher (about 290 vs 220 MB) for the same CPU
(bench/RESULTS.md), because its per-thread heaps keep what the decode threads freed. A process
that set the variable itself, or imported pyarrow first, keeps its choice.
"""

from __future__ import annotations

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
