"""compact_bins: several bins in one call, results in job order, the first error stops the rest."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from engine_testkit import all_files, input_files, output_paths, rows_of_input, rows_of_output

from fusou_compaction.engine import (
    BinJob,
    BinResult,
    CorruptInputError,
    InputFile,
    LocalDirSink,
    MergeTuning,
    PlannedBin,
    compact_bins,
)
from fusou_compaction.synth import generate_fragments

SMALL = MergeTuning(row_group_bytes=64 * 1024, read_ahead_bytes=128 * 1024)


def _bins(paths: list[Path], per_bin: int) -> list[PlannedBin]:
    inputs = input_files(paths)
    return [PlannedBin(index=n, inputs=inputs[i : i + per_bin]) for n, i in enumerate(range(0, len(inputs), per_bin))]


def _run(bins: list[PlannedBin], out: Path, *, parallel: int = 1, on_input_read=None) -> list[BinResult]:  # type: ignore[no-untyped-def]
    jobs = [BinJob(b, LocalDirSink(out / f"bin-{b.index}")) for b in bins]
    return compact_bins(
        jobs, source_fs=pafs.LocalFileSystem(), tuning=SMALL, max_parallel=parallel, on_input_read=on_input_read
    )


@pytest.mark.parametrize("parallel", [1, 2])
def test_each_bin_gets_its_own_rows_and_results_come_back_in_job_order(tmp_path: Path, parallel: int) -> None:
    # Given four bins of drifted fragments, the last one smaller
    paths = generate_fragments(tmp_path / "in", tables=["battle"], fragments=11, rows_per_fragment=1500)
    bins = _bins(paths, per_bin=3)

    # When they are compacted in one call, one at a time or two side by side
    results = _run(bins, tmp_path / "out", parallel=parallel)

    # Then result i describes bin i, and an independent reader finds every row of bin i, in
    # upload order, in bin i's outputs
    assert [r.files_in for r in results] == [3, 3, 3, 2]
    for b, result in zip(bins, results, strict=True):
        expected = [row for i in b.inputs for row in rows_of_input(Path(i.path))]
        actual = [row for p in output_paths(tmp_path / "out" / f"bin-{b.index}") for row in rows_of_output(p)]
        assert actual == expected
        assert result.rows_in == result.rows_out == len(expected)


def test_one_at_a_time_bins_are_read_in_upload_order(tmp_path: Path) -> None:
    # Given three bins
    paths = generate_fragments(tmp_path / "in", tables=["hougeki"], fragments=9, rows_per_fragment=800)
    bins = _bins(paths, per_bin=3)
    seen: list[str] = []
    lock = threading.Lock()

    def record(inp: InputFile) -> None:
        with lock:
            seen.append(inp.id)

    # When they run one at a time, recording when each input has been read (the CLI's progress)
    _run(bins, tmp_path / "out", on_input_read=record)

    # Then every input was reported once, in upload order across bins
    assert seen == [i.id for b in bins for i in b.inputs]


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_failing_bin_stops_the_later_ones_and_its_error_is_raised(tmp_path: Path, parallel: int) -> None:
    # Given three bins, the middle one holding a truncated fragment
    paths = generate_fragments(tmp_path / "in", tables=["battle"], fragments=9, rows_per_fragment=1500)
    bad = paths[4]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    bins = _bins(paths, per_bin=3)

    # When they run
    with pytest.raises(CorruptInputError) as info:
        _run(bins, tmp_path / "out", parallel=parallel)

    # Then the error names the bad input and the failed bin left nothing, not even a temp file;
    # the bin before it finished its file (the caller discards it, as the CLI does)
    assert info.value.input_id == "in-0004"
    assert all_files(tmp_path / "out" / "bin-1") == []
    assert len(output_paths(tmp_path / "out" / "bin-0")) == 1
    if parallel == 1:  # one at a time: the bin after the failed one never started
        assert all_files(tmp_path / "out" / "bin-2") == []
