"""The psycopg transport where psycopg is absent (the Lambda assets leave it out)."""

from __future__ import annotations

import sys

import pytest

from fusou_compaction.catalog.transport import PostgresRpc


def test_without_psycopg_the_postgres_transport_says_which_transport_to_use(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a Python where psycopg_pool cannot be imported (None in sys.modules makes import fail)
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)

    # When the postgres transport is built, Then the error names the fix instead of a bare ImportError
    with pytest.raises(RuntimeError, match="FUSOU_CATALOG_TRANSPORT=supabase"):
        PostgresRpc("postgresql://localhost/none")
