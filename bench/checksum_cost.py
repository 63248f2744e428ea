"""What page checksums cost the engine: the same bins compacted with and without them, interleaved.

    .venv/bin/python bench/checksum_cost.py [--fragments 300] [--rows 5200] [--rounds 5]

Uses the bench's generator (drifted battle records); reports wall and CPU medians and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs

from fusou_compaction.engine import InputFile, LocalDirSink, MergeTuning, compact_bin
from fusou_compaction.synth import generate_fragments


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fragments", type=int, default=300)
    p.add_argument("--rows", type=int, default=5200)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = generate_fragments(
            root / "in", tables=["battle", "hougeki"], fragments=args.fragments, rows_per_fragment=args.rows, seed=7
        )
        by_table: dict[str, list[Path]] = {}
        for path in paths:
            by_table.setdefault(path.parent.name, []).append(path)
        times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        sizes: dict[bool, int] = {}
        for r in range(args.rounds):
            for checksums in (True, False) if r % 2 == 0 else (False, True):
                out = root / f"out-{checksums}-{r}"
                wall, cpu = time.perf_counter(), time.process_time()
                for table, files in by_table.items():
                    inputs = [
                        InputFile(id=f"{table}-{i}", path=str(f), size_bytes=f.stat().st_size, seq=i)
                        for i, f in enumerate(files)
                    ]
                    compact_bin(
                        inputs,
                        source_fs=pafs.LocalFileSystem(),
                        open_output=LocalDirSink(out / table),
                        tuning=MergeTuning(page_checksums=checksums),
                    )
                times[checksums].append((time.perf_counter() - wall, time.process_time() - cpu))
                sizes[checksums] = sum(f.stat().st_size for f in out.rglob("*.parquet"))
        for checksums in (False, True):
            walls = [w for w, _ in times[checksums]]
            cpus = [c for _, c in times[checksums]]
            print(
                f"checksums={checksums!s:5}  wall {statistics.median(walls):.2f} s  cpu {statistics.median(cpus):.2f} s"
                f"  output {sizes[checksums] / 1e6:.1f} MB"
            )
        ratio = statistics.median(w for w, _ in times[True]) / statistics.median(w for w, _ in times[False])
        cpu_ratio = statistics.median(c for _, c in times[True]) / statistics.median(c for _, c in times[False])
        print(f"with / without: wall {ratio:.3f}x, cpu {cpu_ratio:.3f}x ({len(paths)} fragments, {args.rounds} rounds)")


if __name__ == "__main__":
    main()
