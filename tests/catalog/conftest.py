from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from uuid import UUID, uuid4

import psycopg
import pytest

from fusou_compaction import keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.models import CatalogFile, CompactedOutput
from fusou_compaction.catalog.transport import PostgresRpc

_n = itertools.count()


@pytest.fixture
def catalog(database_url: str) -> Iterator[Catalog]:
    # As PostgREST would: every call runs as service_role, so grants are exercised too.
    c = Catalog(PostgresRpc(database_url, role="service_role", max_size=16))
    yield c
    c.close()


@pytest.fixture
def sql(database_url: str) -> Iterator[psycopg.Connection]:
    """A superuser connection for arranging clocks and reading raw state."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@dataclass
class World:
    catalog: Catalog
    owner: UUID
    dataset: UUID

    def fragment(
        self, table: str = "battle", rows: int = 10, size: int = 1000, content: str | None = None
    ) -> CatalogFile:
        sha = hashlib.sha256((content or f"frag-{next(_n)}").encode()).hexdigest()
        return self.catalog.register_fragment(
            dataset_id=self.dataset,
            owner_id=self.owner,
            table=table,
            object_key=keys.fragment_key(self.dataset, table, sha),
            size_bytes=size,
            row_count=rows,
            sha256=sha,
            schema_fingerprint="fp1",
        )

    def running_run(self, lease_seconds: int = 300) -> UUID:
        run = uuid4()
        self.catalog.begin_run(run_id=run, dataset_id=self.dataset, trigger="manual")
        assert self.catalog.acquire_lease(dataset_id=self.dataset, run_id=run, lease_seconds=lease_seconds).acquired
        self.catalog.record_run_status(run, "running")
        return run

    def output_for(self, run: UUID, inputs: list[CatalogFile], part: int = 0, table: str = "battle") -> CompactedOutput:
        return CompactedOutput(
            table_name=table,
            object_key=keys.compacted_key(self.dataset, table, run, part),
            size_bytes=sum(f.size_bytes for f in inputs),
            row_count=sum(f.row_count for f in inputs),
            schema_fingerprint="fp1",
            input_ids=[f.id for f in inputs],
        )


@pytest.fixture
def world(catalog: Catalog) -> World:
    return World(catalog=catalog, owner=uuid4(), dataset=uuid4())
