"""register_schemas / get_schemas (migration 0004): Arrow schemas by fingerprint, recorded at upload
and after each compaction, read by the Compact step to skip reading every footer first."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pyarrow as pa
import pytest

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import InvalidCatalogArgument
from fusou_compaction.catalog.transport import PostgresRpc
from fusou_compaction.engine import schema_fingerprint, schema_from_base64, schema_to_base64

BATTLE = pa.schema([("battle_id", pa.string()), ("hp", pa.list_(pa.int16())), ("at", pa.timestamp("ms", "UTC"))])
NEWER = BATTLE.append(pa.field("drop_ship_id", pa.int32()))


def _record(schema: pa.Schema) -> dict[str, str]:
    return {schema_fingerprint(schema): schema_to_base64(schema)}


def test_a_recorded_schema_comes_back_equal_and_unknown_ones_are_absent(catalog: Catalog) -> None:
    # Given one recorded schema
    assert catalog.register_schemas(_record(BATTLE)) == 1

    # When both it and an unrecorded one are asked for
    got = catalog.get_schemas([schema_fingerprint(BATTLE), schema_fingerprint(NEWER)])

    # Then only the recorded one comes back, and it decodes to the same schema
    assert list(got) == [schema_fingerprint(BATTLE)]
    assert schema_from_base64(got[schema_fingerprint(BATTLE)]).equals(BATTLE)


def test_recording_again_changes_nothing(catalog: Catalog, database_url: str, sql: psycopg.Connection) -> None:
    # Given a recorded schema
    catalog.register_schemas(_record(BATTLE))
    other_client = Catalog(PostgresRpc(database_url, role="service_role"))
    try:
        # When another client (no memory of it) records it again, together with a new one
        added = other_client.register_schemas(_record(BATTLE) | _record(NEWER))
    finally:
        other_client.close()

    # Then only the new one was added; one row per fingerprint
    assert added == 1
    assert sql.execute("SELECT count(*) FROM arrow_schemas").fetchone() == (2,)


def test_a_client_does_not_send_what_it_already_recorded(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a schema this client recorded, then removed behind its back
    catalog.register_schemas(_record(BATTLE))
    sql.execute("DELETE FROM arrow_schemas")

    # When it is recorded again through the same client
    added = catalog.register_schemas(_record(BATTLE))

    # Then no call was made (a warm upload Lambda skips the round trip for schemas it has seen)
    assert added == 0
    assert sql.execute("SELECT count(*) FROM arrow_schemas").fetchone() == (0,)


@pytest.mark.parametrize(
    "schemas",
    [
        pytest.param({"not-a-sha256": "AAAA"}, id="bad-fingerprint"),
        pytest.param({"a" * 64: ""}, id="empty-schema"),
    ],
)
def test_bad_records_are_refused_and_nothing_is_written(
    catalog: Catalog, sql: psycopg.Connection, schemas: dict[str, str]
) -> None:
    with pytest.raises(InvalidCatalogArgument):
        catalog.register_schemas(_record(BATTLE) | schemas)
    assert sql.execute("SELECT count(*) FROM arrow_schemas").fetchone() == (0,)


def test_a_non_object_argument_is_refused(sql: psycopg.Connection) -> None:
    with pytest.raises(psycopg.Error, match="fingerprint: base64") as info:
        sql.execute("SELECT register_schemas('[1, 2]'::jsonb)")
    assert info.value.sqlstate == "FC422"  # what the client maps to InvalidCatalogArgument


def test_concurrent_recorders_of_the_same_schemas_add_each_once(database_url: str, sql: psycopg.Connection) -> None:
    # Given eight upload Lambdas that see the same two new schemas at the same moment
    records = _record(BATTLE) | _record(NEWER)
    start = threading.Barrier(8)

    def record(_: int) -> int:
        client = Catalog(PostgresRpc(database_url, role="service_role"))
        try:
            start.wait()
            return client.register_schemas(records)
        finally:
            client.close()

    # When they all record them
    with ThreadPoolExecutor(8) as pool:
        added = list(pool.map(record, range(8)))

    # Then nobody failed, each schema was added exactly once, and all agree on what is stored
    assert sum(added) == 2
    assert sql.execute("SELECT count(*) FROM arrow_schemas").fetchone() == (2,)


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_only_the_service_role_reads_or_writes_schemas(database_url: str, role: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"SET ROLE {role}")
        for statement in (
            "SELECT get_schemas(ARRAY['x'])",
            "SELECT register_schemas('{}'::jsonb)",
            "SELECT * FROM arrow_schemas",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
