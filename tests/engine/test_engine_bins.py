"""compact_bins: bins one after another, the next one starting while the last finishes encoding."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from engine_testkit import all_files, input_files, output_paths, rows_of_input, rows_of_output

from fusou_compaction.engine import (
    BinJob,
    CorruptInputError,
    InputFile,
    LocalDirSink,
    MergeTuning,
    PlannedBin,
    compact_bins,
)
from fusou_compaction.synth import generate_fragments

SMALL = {"row_group_bytes": 64 * 1024, "read_ahead_bytes": 128 * 1024}


def _bins(paths: list[Path], per_bin: int) -> list[PlannedBin]:
    inputs = input_files(paths)
    return [PlannedBin(index=n, inputs=inputs[i : i + per_bin]) for n, i in enumerate(range(0, len(inputs), per_bin))]


def _run(bins: list[PlannedBin], out: Path, *, overlap: bool, on_input_read=None):  # type: ignore[no-untyped-def]
    jobs = [BinJob(b, LocalDirSink(out / f"bin-{b.index}")) for b in bins]
    return compact_bins(
        jobs,
        source_fs=pafs.LocalFileSystem(),
        tuning=MergeTuning(**SMALL, overlap_bins=overlap),
        on_input_read=on_input_read,
    )


def test_overlapping_bins_write_the_same_files_as_bins_run_one_after_another(tmp_path: Path) -> None:
    # Given four bins of drifted fragments, each several row groups long
    paths = generate_fragments(tmp_path / "in", tables=["battle"], fragments=12, rows_per_fragment=1500)
    bins = _bins(paths, per_bin=3)

    # When they are compacted with and without overlapping a bin's start with the last one's end
    serial = _run(bins, tmp_path / "serial", overlap=False)
    overlapped = _run(bins, tmp_path / "overlap", overlap=True)

    # Then every bin's outputs are byte for byte the same, results come back in job order, and
    # an independent reader finds every input row, in upload order, in that bin's outputs
    assert [[o.sha256 for o in r.outputs] for r in overlapped] == [[o.sha256 for o in r.outputs] for r in serial]
    assert [r.rows_in for r in overlapped] == [r.rows_in for r in serial]
    for b in bins:
        expected = [row for i in b.inputs for row in rows_of_input(Path(i.path))]
        actual = [row for p in output_paths(tmp_path / "overlap" / f"bin-{b.index}") for row in rows_of_output(p)]
        assert actual == expected


def test_a_bin_starts_only_after_the_previous_one_has_read_every_input(tmp_path: Path) -> None:
    # Given three bins
    paths = generate_fragments(tmp_path / "in", tables=["hougeki"], fragments=9, rows_per_fragment=800)
    bins = _bins(paths, per_bin=3)
    seen: list[str] = []
    lock = threading.Lock()

    def record(inp: InputFile) -> None:
        with lock:
            seen.append(inp.id)

    # When they run overlapped, recording when each input has been read
    _run(bins, tmp_path / "out", overlap=True, on_input_read=record)

    # Then inputs were read in upload order across bins: only one bin reads at a time
    assert seen == [i.id for b in bins for i in b.inputs]


def test_a_failing_bin_stops_the_later_ones_and_its_error_is_raised(tmp_path: Path) -> None:
    # Given three bins, the middle one holding a truncated fragment
    paths = generate_fragments(tmp_path / "in", tables=["battle"], fragments=9, rows_per_fragment=1500)
    bad = paths[4]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    bins = _bins(paths, per_bin=3)

    # When they run overlapped
    with pytest.raises(CorruptInputError) as info:
        _run(bins, tmp_path / "out", overlap=True)

    # Then the error names the bad input; the failed bin left nothing, not even a temp file; the
    # bin after it never opened an output (it waits for the failed bin to finish reading); the
    # bin before it finished its files (the caller discards them, as the CLI does)
    assert info.value.input_id == "in-0004"
    assert all_files(tmp_path / "out" / "bin-1") == []
    assert all_files(tmp_path / "out" / "bin-2") == []
    assert len(output_paths(tmp_path / "out" / "bin-0")) == 1


def test_an_error_in_the_first_bin_is_raised_even_when_a_later_bin_also_fails(tmp_path: Path) -> None:
    # Given two bins whose inputs are both missing
    missing = [InputFile(id=f"gone-{n}", path=str(tmp_path / f"gone-{n}.parquet"), size_bytes=1) for n in range(2)]
    jobs = [BinJob(PlannedBin(index=n, inputs=[m]), LocalDirSink(tmp_path / "out")) for n, m in enumerate(missing)]

    # When compacted overlapped
    with pytest.raises(CorruptInputError) as info:
        compact_bins(jobs, source_fs=pafs.LocalFileSystem(), tuning=MergeTuning(overlap_bins=True))

    # Then the first bin's error is the one raised
    assert info.value.input_id == "gone-0"
