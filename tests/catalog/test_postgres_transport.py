"""The psycopg transport: where psycopg is absent (the Lambda assets leave it out), where the
database does not answer, and what a server error keeps."""

from __future__ import annotations

import sys

import pytest

from fusou_compaction.catalog.errors import CatalogNotFound, CatalogUnavailable
from fusou_compaction.catalog.transport import PostgresRpc
from fusou_compaction.local.postgres import free_port


def test_without_psycopg_the_postgres_transport_says_which_transport_to_use(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a Python where psycopg_pool cannot be imported (None in sys.modules makes import fail)
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)

    # When the postgres transport is built, Then the error names the fix instead of a bare ImportError
    with pytest.raises(RuntimeError, match="FUSOU_CATALOG_TRANSPORT=supabase"):
        PostgresRpc("postgresql://localhost/none")


def test_a_database_that_does_not_answer_is_a_retryable_outage() -> None:
    # Given the direct transport pointed at a port nothing listens on, waiting 1 s for a connection
    rpc = PostgresRpc(f"postgresql://postgres@127.0.0.1:{free_port()}/none", timeout=1.0)
    try:
        # When a catalog function is called, Then it is CatalogUnavailable (what the API answers
        # 503 and the state machine retries), not a plain CatalogError: psycopg_pool's PoolTimeout
        # is a psycopg.OperationalError without a SQLSTATE
        with pytest.raises(CatalogUnavailable, match=r"^catalog unreachable: ") as raised:
            rpc.call("get_dataset", {"p_dataset_id": "00000000-0000-0000-0000-000000000000"})
        assert raised.value.code == "08000"
    finally:
        rpc.close()


def test_a_bad_role_is_refused_before_a_pool_is_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg_pool

    opened: list[object] = []
    monkeypatch.setattr(psycopg_pool, "ConnectionPool", lambda *a, **k: opened.append(a))
    with pytest.raises(ValueError, match="bad role name"):
        PostgresRpc("postgresql://localhost/none", role="service_role; DROP TABLE datasets")
    assert opened == []


def test_a_server_error_keeps_its_sqlstate_and_class(database_url: str) -> None:
    # Given the direct transport on the real server, When a SQL function raises a SQLSTATE of its
    # own (an unknown dataset: FC404), Then that code arrives, not the outage's
    rpc = PostgresRpc(database_url, max_size=1)
    try:
        with pytest.raises(CatalogNotFound) as raised:
            rpc.call("dataset_status", {"p_dataset_id": "00000000-0000-0000-0000-000000000000"})
        assert raised.value.code == "FC404"
    finally:
        rpc.close()
