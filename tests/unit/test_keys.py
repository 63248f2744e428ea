"""keys.py: the bucket's layout is a contract (lifecycle rules, IAM prefixes, the orphan sweep and
operators' tools all read it), so every key is pinned here whole, with each refusal."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import pytest

from fusou_compaction import keys

DATASET = UUID("11111111-1111-1111-1111-111111111111")
RUN = UUID("22222222-2222-2222-2222-222222222222")
UPLOAD = UUID("33333333-3333-3333-3333-333333333333")
SHA = "ab" * 32


def test_every_key_of_the_layout() -> None:
    d, r = f"datasets/{DATASET}", f"plans/{RUN}"
    assert keys.dataset_prefix(DATASET) == f"{d}/"
    assert keys.fragment_key(DATASET, "battle", SHA) == f"{d}/battle/fragments/{SHA}.parquet"
    assert keys.fragment_copy_key(DATASET, "battle", SHA, UPLOAD) == f"{d}/battle/fragments/{SHA}.{UPLOAD}.parquet"
    assert keys.staging_key(DATASET, "battle", UPLOAD) == f"staging/{DATASET}/battle/{UPLOAD}.parquet"
    assert keys.compacted_prefix(DATASET, "battle", RUN) == f"{d}/battle/compacted/{RUN}/"
    assert keys.compacted_key(DATASET, "battle", RUN, 7) == f"{d}/battle/compacted/{RUN}/part-00007.parquet"
    assert keys.plan_prefix(RUN) == f"{r}/"
    assert keys.plan_bin_key(RUN, "battle", 12) == f"{r}/bins/battle/00012.json"
    assert keys.manifest_key(RUN, "battle", 12) == f"{r}/results/battle/00012.json"
    assert keys.plan_items_key(RUN) == f"{r}/items.json"
    assert keys.map_results_prefix(RUN) == f"{r}/map-results"


def test_the_run_of_a_compacted_key_and_of_anything_else() -> None:
    assert keys.run_id_of_compacted_key(keys.compacted_key(DATASET, "battle", RUN, 0)) == RUN
    assert keys.run_id_of_compacted_key(keys.fragment_key(DATASET, "battle", SHA)) is None
    assert keys.run_id_of_compacted_key(f"x/{keys.compacted_key(DATASET, 'battle', RUN, 0)}") is None


@pytest.mark.parametrize("table", ["a", "battle_2", "a" + "b" * 62])
def test_table_names_that_are_accepted(table: str) -> None:
    assert keys.check_table_name(table) == table


@pytest.mark.parametrize("table", ["", "Battle", "2battle", "a-b", "a" + "b" * 63, "battle\n", "../x"])
def test_table_names_that_are_refused_say_the_rule(table: str) -> None:
    with pytest.raises(ValueError, match=r"must match \^\[a-z\]\[a-z0-9_\]\{0,62\}\$$"):
        keys.check_table_name(table)


@pytest.mark.parametrize(
    "make",
    [
        lambda t: keys.fragment_key(DATASET, t, SHA),
        lambda t: keys.staging_key(DATASET, t, UPLOAD),
        lambda t: keys.compacted_prefix(DATASET, t, RUN),
        lambda t: keys.plan_bin_key(RUN, t, 0),
        lambda t: keys.manifest_key(RUN, t, 0),
    ],
)
def test_every_key_with_a_table_checks_it(make: Callable[[str], str]) -> None:
    with pytest.raises(ValueError, match="table name"):
        make("../other")


@pytest.mark.parametrize("sha", ["AB" * 32, "ab" * 31, "ab" * 33, "zz" * 32, ""])
def test_a_fragment_key_needs_64_lowercase_hex_digits(sha: str) -> None:
    with pytest.raises(ValueError, match=r"^sha256 must be 64 lowercase hex digits$"):
        keys.fragment_key(DATASET, "battle", sha)
