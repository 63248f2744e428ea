"""register_fragment: dataset creation, ownership, content dedupe, key safety."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import psycopg
import pytest

from fusou_compaction import keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import DatasetForbidden, InvalidCatalogArgument

from .conftest import World


def test_first_fragment_creates_the_dataset_for_its_owner(world: World) -> None:
    # Given a dataset id nobody has used
    # When its first fragment is registered
    frag = world.fragment(rows=7, size=700)
    # Then the dataset exists, belongs to the uploader and needs compaction
    ds = world.catalog.get_dataset(world.dataset)
    assert frag.dataset_created and not frag.duplicate
    assert ds.owner_id == world.owner
    assert ds.compaction_needed
    assert (ds.live_fragments, ds.live_rows, ds.live_bytes) == (1, 7, 700)


def test_another_owners_dataset_is_refused_and_nothing_is_written(world: World, sql: psycopg.Connection) -> None:
    # Given a dataset owned by someone
    world.fragment()
    intruder = World(world.catalog, owner=uuid4(), dataset=world.dataset)
    # When another user registers a fragment into it
    with pytest.raises(DatasetForbidden):
        intruder.fragment()
    # Then only the owner's fragment exists
    assert sql.execute("SELECT count(*) FROM dataset_files").fetchone() == (1,)


def test_duplicate_content_is_reported_and_stored_once(world: World, sql: psycopg.Connection) -> None:
    # Given a registered fragment
    first = world.fragment(content="same-bytes")
    # When the same bytes are registered again
    again = world.fragment(content="same-bytes")
    # Then the second call reports the first fragment as a duplicate; counters do not move
    assert again.duplicate and again.id == first.id
    assert sql.execute("SELECT count(*) FROM dataset_files").fetchone() == (1,)
    assert world.catalog.get_dataset(world.dataset).live_fragments == 1


def test_same_content_in_another_table_is_not_a_duplicate(world: World) -> None:
    world.fragment(table="battle", content="bytes")
    other = world.fragment(table="ship_state", content="bytes")
    assert not other.duplicate


def test_a_key_outside_the_datasets_prefix_is_refused(world: World, catalog: Catalog) -> None:
    # Given a key that belongs to another dataset
    other = keys.fragment_key(uuid4(), "battle", "a" * 64)
    # When it is registered for this dataset, Then it is refused as an invalid argument
    with pytest.raises(InvalidCatalogArgument, match="not under"):
        catalog.register_fragment(
            dataset_id=world.dataset,
            owner_id=world.owner,
            table="battle",
            object_key=other,
            size_bytes=1,
            row_count=1,
            sha256="a" * 64,
            schema_fingerprint="fp",
        )


@pytest.mark.parametrize("table", ["Battle", "1battle", "bat-tle", "", "a" * 64, "drop table"])
def test_unsafe_table_names_are_refused(world: World, catalog: Catalog, table: str) -> None:
    with pytest.raises(InvalidCatalogArgument):
        catalog.register_fragment(
            dataset_id=world.dataset,
            owner_id=world.owner,
            table=table,
            object_key=f"datasets/{world.dataset}/{table}/fragments/x.parquet",
            size_bytes=1,
            row_count=1,
            sha256="a" * 64,
            schema_fingerprint="fp",
        )


def test_a_malformed_sha256_is_an_invalid_argument(world: World, catalog: Catalog) -> None:
    with pytest.raises(InvalidCatalogArgument):
        catalog.register_fragment(
            dataset_id=world.dataset,
            owner_id=world.owner,
            table="battle",
            object_key=f"datasets/{world.dataset}/battle/fragments/x.parquet",
            size_bytes=1,
            row_count=1,
            sha256="NOT-HEX",
            schema_fingerprint="fp",
        )


def test_concurrent_registrations_of_the_same_bytes_store_one_fragment(world: World, sql: psycopg.Connection) -> None:
    # Given eight uploaders racing with identical bytes on separate connections
    barrier = threading.Barrier(8)

    def upload() -> bool:
        barrier.wait()
        return world.fragment(content="raced").duplicate

    with ThreadPoolExecutor(8) as pool:
        duplicates = list(pool.map(lambda _: upload(), range(8)))
    # Then exactly one created it and seven were told it is a duplicate
    assert sorted(duplicates) == [False] + [True] * 7
    assert sql.execute("SELECT count(*) FROM dataset_files").fetchone() == (1,)


def test_two_owners_racing_to_create_one_dataset_leave_one_owner(catalog: Catalog) -> None:
    # Given two users racing to create the same new dataset
    dataset = uuid4()
    owners = [uuid4(), uuid4()]
    barrier = threading.Barrier(2)

    def upload(owner: object) -> str:
        barrier.wait()
        sha = hashlib.sha256(str(owner).encode()).hexdigest()
        try:
            catalog.register_fragment(
                dataset_id=dataset,
                owner_id=owner,
                table="battle",  # type: ignore[arg-type]
                object_key=keys.fragment_key(dataset, "battle", sha),
                size_bytes=1,
                row_count=1,
                sha256=sha,
                schema_fingerprint="fp",
            )
            return "ok"
        except DatasetForbidden:
            return "forbidden"

    with ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(upload, owners))
    # Then one wins and the other is refused
    assert results == ["forbidden", "ok"]
    assert catalog.get_dataset(dataset).owner_id in owners


def test_find_fragment_knows_bytes_live_or_compacted_per_table(world: World, sql: psycopg.Connection) -> None:
    # Given a fragment, later marked removed (as a commit retires it)
    frag = world.fragment(table="battle", content="bytes-1")
    sha = hashlib.sha256(b"bytes-1").hexdigest()
    found = world.catalog.find_fragment(world.dataset, "battle", sha)
    assert found is not None and found.id == frag.id and found.removed_at is None
    sql.execute("UPDATE dataset_files SET removed_at = now(), delete_after = now() WHERE id = %s", (frag.id,))
    # Then it is still found (its bytes are known), only in its own table, and unknown bytes are not
    removed = world.catalog.find_fragment(world.dataset, "battle", sha)
    assert removed is not None and removed.id == frag.id and removed.removed_at is not None
    assert world.catalog.find_fragment(world.dataset, "ship_state", sha) is None
    assert world.catalog.find_fragment(world.dataset, "battle", hashlib.sha256(b"other").hexdigest()) is None
    assert world.catalog.find_fragment(uuid4(), "battle", sha) is None
