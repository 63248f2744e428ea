"""The planner: deterministic, contiguous in upload order, and convergent over repeated runs."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq
from engine_testkit import input_files, run_bin

from fusou_compaction.engine import InputFile, MergeTuning, MiB, plan_table
from fusou_compaction.synth import generate_fragments

TARGET = 128 * MiB


def _frag(i: int, size: int, kind: str = "fragment") -> InputFile:
    return InputFile(id=f"f{i:04d}", path=f"b/t/{i}.parquet", size_bytes=size, seq=i, kind=kind)  # type: ignore[arg-type]


def test_same_inputs_in_any_order_give_the_same_plan() -> None:
    # Given 300 fragments of varied sizes
    rng = random.Random(3)
    files = [_frag(i, rng.randint(100_000, 4 * MiB)) for i in range(300)]
    shuffled = files[:]
    rng.shuffle(shuffled)

    # When planned from two different listing orders, Then the plans are identical
    assert plan_table(files) == plan_table(shuffled)


def test_bins_are_contiguous_in_upload_order_and_balanced() -> None:
    # Given 1,000 fragments of 1 MiB (~7.8 targets)
    files = [_frag(i, MiB) for i in range(1000)]

    # When planned
    bins = plan_table(files, target_file_size=TARGET)

    # Then 8 bins of ~125 fragments each, covering every fragment once, in upload order
    assert len(bins) == 8
    assert [f.seq for b in bins for f in b.inputs] == list(range(1000))
    assert all(124 <= len(b.inputs) <= 126 for b in bins)
    assert [b.index for b in bins] == list(range(8))
    assert all(b.estimated_bytes <= TARGET for b in bins)


def test_large_compacted_files_are_left_alone_and_small_ones_are_merged() -> None:
    # Given a big compacted file, a small compacted file and two new fragments
    files = [
        _frag(0, 100 * MiB, "compacted"),
        _frag(1, 10 * MiB, "compacted"),
        _frag(2, MiB),
        _frag(3, MiB),
    ]

    # When planned, Then one bin with the small compacted file and the fragments
    (only,) = plan_table(files, target_file_size=TARGET)
    assert [f.id for f in only.inputs] == ["f0001", "f0002", "f0003"]


def test_nothing_to_gain_gives_no_bin() -> None:
    # Given a table that is one compacted file (small or large), or nothing at all
    # When planned, Then no bin: rewriting it alone would only cost money
    assert plan_table([_frag(0, 10 * MiB, "compacted")]) == []
    assert plan_table([_frag(0, 100 * MiB, "compacted"), _frag(1, 90 * MiB, "compacted")]) == []
    assert plan_table([]) == []


def test_a_single_fragment_is_still_compacted() -> None:
    # Given one fresh fragment, When planned, Then it gets a bin (fragments are always retired)
    (only,) = plan_table([_frag(0, 1000)])
    assert only.inputs == [_frag(0, 1000)]


def test_repeated_compactions_converge_without_a_tail_of_small_files(tmp_path: Path) -> None:
    # Given a table that receives a few new fragments before every compaction run
    target = 256 * 1024
    tuning = MergeTuning(row_group_bytes=128 * 1024, read_ahead_bytes=256 * 1024)
    new = generate_fragments(tmp_path / "frags", tables=["ship_state"], fragments=48, rows_per_fragment=800)
    live: list[InputFile] = []
    seq = 0
    rows_expected = 0
    small_counts = []
    ratio = 1.0  # what the pipeline learns from the last run: bytes out / bytes in
    for run in range(8):
        for p in new[run * 6 : run * 6 + 6]:
            (f,) = input_files([p])
            live.append(InputFile(id=f"r{run}-{p.name}", path=f.path, size_bytes=f.size_bytes, seq=seq))
            rows_expected += pq.read_metadata(p).num_rows
            seq += 1

        # When the planner and engine run, and outputs replace their inputs as compacted files
        for b in plan_table(live, target_file_size=target, fragment_output_ratio=ratio):
            out_dir = tmp_path / f"run{run}"
            result = run_bin(b, out_dir, target_file_size=target, tuning=tuning)
            consumed = {f.id for f in b.inputs}
            fragment_bytes = sum(f.size_bytes for f in b.inputs if f.kind == "fragment")
            compacted_bytes = sum(f.size_bytes for f in b.inputs if f.kind == "compacted")
            if fragment_bytes:
                ratio = max(0.05, (result.bytes_out - compacted_bytes) / fragment_bytes)
            first_seq = b.inputs[0].seq
            outputs = [
                InputFile(
                    id=f"run{run}/{o.name}",
                    path=str(out_dir / o.name),
                    size_bytes=o.bytes,
                    seq=first_seq,
                    kind="compacted",
                )
                for o in result.outputs
            ]
            live = sorted([f for f in live if f.id not in consumed] + outputs, key=lambda f: (f.seq, f.id))
        small_counts.append(sum(1 for f in live if f.size_bytes < target / 2))

        # Then every row is still live exactly once
        assert sum(pq.read_metadata(f.path).num_rows for f in live) == rows_expected

    # Then after every run at most one file is below half the target: small files do not pile up
    assert max(small_counts) <= 1
    assert all(f.kind == "compacted" for f in live)
    total = sum(f.size_bytes for f in live)
    assert len(live) <= total // (target // 2) + 1
