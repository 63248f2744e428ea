"""logic/uploads.py: what mutation testing (make mutate MODULE=logic.uploads) found untested.

``store_fragment`` against the real catalog (PostgreSQL) and S3 (moto): the caller's upload
limits, bytes the catalog already knows, and an object already under the fragment's key, young
(shared with a concurrent upload of the same bytes) or old (an orphan the sweep may be deleting:
written again under a key of its own), including the boundary age and the content type.
"""

from __future__ import annotations

import hashlib
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusou_compaction import keys
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import DatasetForbidden
from fusou_compaction.logic.uploads import (
    PARQUET_CONTENT_TYPE,
    SHARE_MAX_AGE,
    InvalidParquet,
    UploadLimits,
    ensure_may_write,
    inspect_parquet,
    store_fragment,
)

TABLE = "battle"


def parquet(rows: int = 3, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": [seed * 1000 + i for i in range(rows)], "name": ["x"] * rows}), buf)
    return buf.getvalue()


def store(catalog: Catalog, s3: S3ObjectStore, data: bytes, dataset: UUID, owner: UUID, **kw: Any) -> Any:
    return store_fragment(catalog, s3, owner_id=owner, dataset_id=dataset, table=TABLE, data=data, **kw)


def test_the_summary_counts_the_columns_and_the_default_limits_apply_without_any() -> None:
    # Given a two-column fragment, When inspected without limits, Then the defaults apply (kills
    # `limits and UploadLimits()`, which passes None on) and it has two columns (kills columns None)
    summary = inspect_parquet(parquet())
    assert (summary.rows, summary.columns) == (3, 2)


def test_the_callers_upload_limits_are_the_ones_applied(catalog: Catalog, store_: S3ObjectStore) -> None:
    # Given limits allowing one column only, When a two-column fragment is stored
    # Then it is refused (kills inspect_parquet(data, None) and the limits dropped in store_fragment,
    # and `limits and UploadLimits()` in inspect_parquet, which would apply the defaults)
    with pytest.raises(InvalidParquet):
        store(catalog, store_, parquet(), uuid4(), uuid4(), limits=UploadLimits(max_columns=1))
    with pytest.raises(InvalidParquet):
        inspect_parquet(parquet(), UploadLimits(max_columns=1))


@pytest.fixture
def store_(store: S3ObjectStore) -> S3ObjectStore:
    return store


def test_bytes_the_catalog_knows_are_not_written_again(catalog: Catalog, store_: S3ObjectStore) -> None:
    # Given a stored fragment whose object is gone since (compacted, deleted after the grace period)
    dataset, owner, data = uuid4(), uuid4(), parquet()
    first = store(catalog, store_, data, dataset, owner)
    key = keys.fragment_key(dataset, TABLE, hashlib.sha256(data).hexdigest())
    store_.delete_many([key])
    # When the same bytes are uploaded again
    again = store(catalog, store_, data, dataset, owner)
    # Then it is the same fragment, a duplicate of a dataset that was not created now, and no
    # object is written back (kills `known = None` and `if exists and False`, which write it;
    # dataset_created None/True on this path)
    assert (again.fragment_id, again.duplicate, again.dataset_created) == (first.fragment_id, True, False)
    assert first.dataset_created is True
    assert store_.head(key) is None


def existing_object(catalog: Catalog, store_: S3ObjectStore) -> tuple[UUID, UUID, bytes, str, datetime]:
    """A dataset, and bytes already under their fragment key but not registered (an orphan, or a
    concurrent upload's object before its registration)."""
    dataset, owner = uuid4(), uuid4()
    store(catalog, store_, parquet(seed=9), dataset, owner)  # the dataset exists
    data = parquet(seed=1)
    key = keys.fragment_key(dataset, TABLE, hashlib.sha256(data).hexdigest())
    store_.put(key, data)
    found = store_.head(key)
    assert found is not None
    return dataset, owner, data, key, found.last_modified


def registered_key(catalog: Catalog, dataset: UUID, fragment: UUID) -> str:
    return next(f.object_key for f in catalog.list_live_files(dataset) if f.id == fragment)


def test_a_young_object_under_the_key_is_shared(catalog: Catalog, store_: S3ObjectStore) -> None:
    # Given an object just written under the fragment's key
    dataset, owner, data, key, _ = existing_object(catalog, store_)
    # When the same bytes are stored, now (the clock of the machine: kills datetime.now(None))
    stored = store(catalog, store_, data, dataset, owner)
    # Then that object is registered (kills found None / head(None), `found is not None or`,
    # `+ SHARE_MAX_AGE`, which would each write a copy)
    assert registered_key(catalog, dataset, stored.fragment_id) == key


def test_an_object_exactly_as_old_as_the_limit_is_still_shared(catalog: Catalog, store_: S3ObjectStore) -> None:
    dataset, owner, data, key, written = existing_object(catalog, store_)
    stored = store(catalog, store_, data, dataset, owner, now=written + SHARE_MAX_AGE)
    # kills `<=` for `<`
    assert registered_key(catalog, dataset, stored.fragment_id) == key


def test_an_older_object_under_the_key_is_written_again_under_a_key_of_its_own(
    catalog: Catalog, store_: S3ObjectStore
) -> None:
    # Given an object under the key, judged at a time one microsecond past the share limit
    dataset, owner, data, key, written = existing_object(catalog, store_)
    now = written + SHARE_MAX_AGE + timedelta(microseconds=1)
    # When the same bytes are stored
    stored = store(catalog, store_, data, dataset, owner, now=now)
    # Then they are registered under a copy key of this upload, written as Parquet (kills
    # `if put_if_absent`, `found is None and`, and `now and datetime.now()`: by the real clock the
    # object is young and would be shared)
    copy = registered_key(catalog, dataset, stored.fragment_id)
    assert copy != key and copy.startswith(f"datasets/{dataset}/{TABLE}/")
    assert store_.get_bytes(copy) == data
    # And the copy key is the fragment's key with this upload's own UUID in it, the copy typed as
    # Parquet (kills each argument of fragment_copy_key and of the copy's put None or dropped)
    assert re.fullmatch(re.escape(key.removesuffix(".parquet")) + r"\.[0-9a-f-]{36}\.parquet", copy), copy
    head = store_.client.head_object(Bucket=store_.bucket, Key=copy)
    assert head["ContentType"] == PARQUET_CONTENT_TYPE
    assert not stored.duplicate and now > datetime.now(UTC)


def test_a_new_fragments_object_is_typed_as_parquet(catalog: Catalog, store_: S3ObjectStore) -> None:
    # Given a new fragment, When stored, Then its object has Parquet's content type (kills the
    # content type dropped from put_if_absent)
    dataset, data = uuid4(), parquet(seed=5)
    store(catalog, store_, data, dataset, uuid4())
    key = keys.fragment_key(dataset, TABLE, hashlib.sha256(data).hexdigest())
    head = store_.client.head_object(Bucket=store_.bucket, Key=key)
    assert head["ContentType"] == PARQUET_CONTENT_TYPE


class RegisteredMeanwhile:
    """The catalog, where another upload registers the same bytes under ``other_key`` just before
    this upload's own registration (after its find_fragment found nothing)."""

    def __init__(self, inner: Catalog, other_key: str) -> None:
        self.inner, self.other_key = inner, other_key

    def register_fragment(self, **kwargs: Any) -> Any:
        self.inner.register_fragment(**{**kwargs, "object_key": self.other_key})
        return self.inner.register_fragment(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def objects(store_: S3ObjectStore, dataset: UUID, data: bytes) -> set[str]:
    """The objects holding these bytes (under their key or a copy key)."""
    sha = hashlib.sha256(data).hexdigest()
    prefix = f"datasets/{dataset}/{TABLE}/fragments/{sha}"
    return {o["Key"] for o in store_.client.list_objects_v2(Bucket=store_.bucket, Prefix=prefix).get("Contents", [])}


def test_a_copy_is_deleted_when_another_upload_registered_the_bytes_under_their_key_first(
    catalog: Catalog, store_: S3ObjectStore
) -> None:
    # Given an old object under the key (this upload will write a copy), and another upload that
    # registers the same bytes under the content-addressed key meanwhile
    dataset, owner, data, key, written = existing_object(catalog, store_)
    racing = RegisteredMeanwhile(catalog, key)
    # When this upload registers
    stored = store(racing, store_, data, dataset, owner, now=written + 2 * SHARE_MAX_AGE)  # type: ignore[arg-type]
    # Then it is a duplicate of that fragment and its own copy is deleted (kills `reg.object_key ==
    # key`, `key == fragment_key(...)`, each argument of that fragment_key None or dropped, and
    # delete_many(None)): only the content-addressed object is left
    assert stored.duplicate and registered_key(catalog, dataset, stored.fragment_id) == key
    assert objects(store_, dataset, data) == {key}


def test_a_shared_object_is_kept_when_another_upload_registered_it_first(
    catalog: Catalog, store_: S3ObjectStore
) -> None:
    # Given a young object under the key (shared) that another upload registers meanwhile
    dataset, owner, data, key, _ = existing_object(catalog, store_)
    # When this upload registers the same bytes, Then it is a duplicate and the shared object stays
    # (kills `reg.duplicate or ...`, which deletes the object the fragment lives in)
    stored = store(RegisteredMeanwhile(catalog, key), store_, data, dataset, owner)  # type: ignore[arg-type]
    assert stored.duplicate and store_.head(key) is not None


def test_the_content_addressed_object_is_kept_when_another_upload_registered_a_copy_first(
    catalog: Catalog, store_: S3ObjectStore
) -> None:
    # Given new bytes that another upload registers meanwhile under a copy key of its own
    dataset, owner = uuid4(), uuid4()
    store(catalog, store_, parquet(seed=9), dataset, owner)
    data = parquet(seed=2)
    sha = hashlib.sha256(data).hexdigest()
    key, copy = keys.fragment_key(dataset, TABLE, sha), keys.fragment_copy_key(dataset, TABLE, sha, uuid4())
    store_.put(copy, data)
    # When this upload writes them under the content-addressed key and registers
    stored = store(RegisteredMeanwhile(catalog, copy), store_, data, dataset, owner)  # type: ignore[arg-type]
    # Then it is a duplicate and the content-addressed object is not deleted (kills `key ==
    # fragment_key(...)` and fragment_key(None, ...), which take it for this upload's own copy)
    assert stored.duplicate and registered_key(catalog, dataset, stored.fragment_id) == copy
    assert objects(store_, dataset, data) == {key, copy}


def test_may_write_says_whether_the_dataset_exists_and_names_anothers(catalog: Catalog, store_: S3ObjectStore) -> None:
    # Given Alice's dataset
    dataset, alice = uuid4(), uuid4()
    store(catalog, store_, parquet(), dataset, alice)
    # Then she may write to it (True), to a dataset nobody has yet (False: kills `return True`),
    # and Bob is told whose it is not (kills DatasetForbidden(None))
    assert ensure_may_write(catalog, dataset, alice) is True
    assert ensure_may_write(catalog, uuid4(), alice) is False
    with pytest.raises(DatasetForbidden, match=rf"^dataset {dataset} belongs to another user$"):
        ensure_may_write(catalog, dataset, uuid4())
