"""The planner's numbers at their boundaries: bin size, the "small compacted file" mark, midpoints."""

from __future__ import annotations

import pytest

from fusou_compaction.engine import InputFile, MiB, plan_table

TARGET = 128 * MiB


def _file(i: int, size: int, kind: str = "fragment") -> InputFile:
    return InputFile(id=f"f{i:04d}", path=f"b/t/{i}.parquet", size_bytes=size, seq=i, kind=kind)  # type: ignore[arg-type]


def _groups(bins: list) -> list[list[int]]:  # type: ignore[type-arg]
    return [[f.seq for f in b.inputs] for b in bins]


def test_the_default_target_is_128_mib() -> None:
    # 128 fragments of exactly 1 MiB fill one bin; one byte more makes two
    assert len(plan_table([_file(i, MiB) for i in range(128)])) == 1
    assert len(plan_table([*(_file(i, MiB) for i in range(128)), _file(128, 1)])) == 2


@pytest.mark.parametrize(("count", "bins"), [(64, 1), (65, 2), (128, 2), (129, 3)])
def test_a_bin_never_holds_more_than_the_target(count: int, bins: int) -> None:
    # Given fragments of 2 MiB: exactly 64 fill one 128 MiB bin
    planned = plan_table([_file(i, 2 * MiB) for i in range(count)], target_file_size=TARGET)
    # Then one fragment more opens a new bin, and no bin's estimate passes the target
    assert len(planned) == bins
    assert all(b.estimated_bytes <= TARGET for b in planned)
    assert sum(b.estimated_bytes for b in planned) == count * 2 * MiB


@pytest.mark.parametrize(("size", "merged"), [(TARGET // 2 - 1, True), (TARGET // 2, False)])
def test_a_compacted_file_below_half_the_target_is_merged_and_one_at_half_is_left(size: int, merged: bool) -> None:
    planned = plan_table([_file(0, size, "compacted"), _file(1, MiB), _file(2, MiB)], target_file_size=TARGET)
    assert _groups(planned) == ([[0, 1, 2]] if merged else [[1, 2]])


def test_a_large_fragment_is_always_compacted() -> None:
    # Only compacted files are ever "done": a fragment over the target still goes into a bin
    (only,) = plan_table([_file(0, 2 * TARGET)], target_file_size=TARGET)
    assert _groups([only]) == [[0]] and only.estimated_bytes == 2 * TARGET


def test_a_file_goes_to_the_bin_where_its_midpoint_falls() -> None:
    # 70 + 60 + 70 = 200 bytes in bins of 100: the middle file's midpoint is exactly 100
    assert _groups(plan_table([_file(0, 70), _file(1, 60), _file(2, 70)], target_file_size=100)) == [[0], [1, 2]]
    # 99 + 1 + 100: the 1-byte file's midpoint is 99.5, inside the first bin
    assert _groups(plan_table([_file(0, 99), _file(1, 1), _file(2, 100)], target_file_size=100)) == [[0, 1], [2]]


def test_a_file_spanning_several_bins_leaves_none_behind() -> None:
    # 10 + 300 + 10 in bins of 100 (4 bins of 80): the big file's bin is followed by an empty one
    planned = plan_table([_file(0, 10), _file(1, 300), _file(2, 10)], target_file_size=100)
    assert [f for g in _groups(planned) for f in g] == [0, 1, 2]
    assert [b.index for b in planned] == list(range(len(planned)))


def test_estimates_use_the_output_ratio_for_fragments_only_and_count_empty_files() -> None:
    files = [_file(0, 10 * MiB, "compacted"), _file(1, 10 * MiB), _file(2, 0)]
    (only,) = plan_table(files, target_file_size=TARGET, fragment_output_ratio=0.5)
    # 10 MiB (compacted, as is) + 5 MiB (fragment, halved) + 1 byte (an empty file still costs a slot)
    assert only.estimated_bytes == 10 * MiB + 5 * MiB + 1


def test_a_target_must_be_positive_and_one_byte_is_enough() -> None:
    with pytest.raises(ValueError, match="positive"):
        plan_table([_file(0, 10)], target_file_size=0)
    assert _groups(plan_table([_file(0, 1), _file(1, 1)], target_file_size=1)) == [[0], [1]]
