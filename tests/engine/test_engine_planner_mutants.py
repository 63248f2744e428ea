"""Planner behaviours that mutation testing (make mutate MODULE=planner) found untested."""

from __future__ import annotations

import pytest

from fusou_compaction.engine import InputFile, plan_table


def _file(i: int, size: int) -> InputFile:
    return InputFile(id=f"f{i:04d}", path=f"b/t/{i}.parquet", size_bytes=size, seq=i)


def _groups(sizes: list[int], target: int) -> list[list[int]]:
    return [
        [f.seq for f in b.inputs]
        for b in plan_table([_file(i, s) for i, s in enumerate(sizes)], target_file_size=target)
    ]


@pytest.mark.parametrize("target", [0, -1])
def test_a_target_that_is_not_positive_is_refused_by_name(target: int) -> None:
    with pytest.raises(ValueError, match=r"^target_file_size must be positive$"):
        plan_table([_file(0, 10)], target_file_size=target)


def test_a_midpoint_on_a_boundary_goes_to_the_later_bin_even_when_the_share_is_not_exact() -> None:
    # Given 4 + 4 + 1 + 8 = 17 bytes in bins of 3: 6 bins of 17/6 (not exact in floating point);
    # the 1-byte file's midpoint is 8.5 = 3 x 17/6, exactly the start of the fourth bin
    # Then it opens the fourth bin, as a midpoint exactly on a boundary does with an exact share
    # (in floats it fell into the third, beside the second file)
    assert _groups([4, 4, 1, 8], 3) == [[0], [1], [2], [3]]
    # And with an exact share (70 + 60 + 70 in bins of 100) the rule is the same
    assert _groups([70, 60, 70], 100) == [[0], [1, 2]]
