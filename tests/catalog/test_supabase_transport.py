"""The deployed transport, supabase-py rpc(), over real HTTP against a PostgREST stand-in that runs
the same SQL functions in the real PostgreSQL as service_role."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from uuid import uuid4

import pytest

from fusou_compaction import keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import (
    CatalogError,
    CatalogNotFound,
    CatalogUnavailable,
    DatasetForbidden,
    LeaseNotHeld,
    error_from_code,
)
from fusou_compaction.catalog.transport import SupabaseRpc
from fusou_compaction.local.postgres import free_port
from fusou_compaction.local.postgrest import LocalPostgrest

from .conftest import World

SERVICE_KEY = "local-service-key"


@pytest.fixture
def postgrest(database_url: str) -> Iterator[LocalPostgrest]:
    with LocalPostgrest(database_url, SERVICE_KEY) as server:
        yield server


@pytest.fixture
def remote(postgrest: LocalPostgrest) -> Catalog:
    return Catalog(SupabaseRpc(postgrest.url, SERVICE_KEY))


def test_a_full_compaction_cycle_over_supabase_rpc_matches_the_direct_transport(
    remote: Catalog, catalog: Catalog, postgrest: LocalPostgrest
) -> None:
    # Given a world driven entirely through supabase-py
    w = World(remote, owner=uuid4(), dataset=uuid4())
    frags = [w.fragment(rows=2), w.fragment(rows=3)]
    run = w.running_run()
    # When it commits
    result = remote.commit_compaction(
        run_id=run, dataset_id=w.dataset, removed=[f.id for f in frags], outputs=[w.output_for(run, frags)]
    )
    # Then the HTTP path did the work and the direct connection sees the same state
    assert result.committed and result.run.rows_out == 5
    assert postgrest.calls >= 5
    assert remote.dataset_status(w.dataset) == catalog.dataset_status(w.dataset)


def test_sql_errors_arrive_as_the_same_typed_exceptions(remote: Catalog) -> None:
    w = World(remote, owner=uuid4(), dataset=uuid4())
    w.fragment()
    with pytest.raises(DatasetForbidden):
        World(remote, owner=uuid4(), dataset=w.dataset).fragment()
    with pytest.raises(CatalogNotFound):
        remote.get_dataset(uuid4())
    run = uuid4()
    remote.begin_run(run_id=run, dataset_id=w.dataset, trigger="manual")
    with pytest.raises(LeaseNotHeld):
        remote.commit_compaction(run_id=run, dataset_id=w.dataset, removed=[], outputs=[])


def test_uuid_arrays_and_json_arguments_bind_like_postgrest(remote: Catalog) -> None:
    # uuid[] from a JSON array and jsonb from an object are what PostgREST's binding produces.
    ws = [World(remote, owner=uuid4(), dataset=uuid4()) for _ in range(3)]
    for w in ws:
        w.fragment()
    claimed = remote.claim_pending_datasets(limit=10, claimer="cron")
    assert remote.release_claims(claimed, "cron") == 3


def test_schemas_are_recorded_and_read_back_over_http(remote: Catalog) -> None:
    # text[] and a jsonb object of strings bind as PostgREST binds them
    import pyarrow as pa

    from fusou_compaction.engine import schema_fingerprint, schema_from_base64, schema_to_base64

    schema = pa.schema([("battle_id", pa.string()), ("hp", pa.list_(pa.int16()))])
    fp = schema_fingerprint(schema)
    assert remote.register_schemas({fp: schema_to_base64(schema)}) == 1
    got = remote.get_schemas([fp, "0" * 64])
    assert list(got) == [fp] and schema_from_base64(got[fp]).equals(schema)


def test_a_wrong_service_key_is_refused(postgrest: LocalPostgrest) -> None:
    intruder = Catalog(SupabaseRpc(postgrest.url, "not-the-key"))
    with pytest.raises(CatalogError) as exc:
        intruder.list_recent_failures()
    assert exc.value.code == "PGRST301"


def test_an_unreachable_supabase_is_a_retryable_error() -> None:
    dead = Catalog(SupabaseRpc(f"http://127.0.0.1:{free_port()}", SERVICE_KEY, timeout=2))
    with pytest.raises(CatalogUnavailable):
        dead.get_dataset(uuid4())


def test_postgrest_without_its_database_is_a_retryable_error() -> None:
    # Given PostgREST up but its database not answering (the stand-in's pool waits 1 s)
    dead_db = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    # When a catalog function is called over HTTP, Then PostgREST's own code for it (PGRST003, no
    # pooled connection in time) arrives as CatalogUnavailable: retried, answered 503
    with (
        LocalPostgrest(dead_db, SERVICE_KEY, pool_timeout=1.0) as server,
        pytest.raises(CatalogUnavailable) as raised,
    ):
        Catalog(SupabaseRpc(server.url, SERVICE_KEY)).get_dataset(uuid4())
    assert raised.value.code == "PGRST003"


@pytest.mark.parametrize("code", ["PGRST000", "PGRST001", "PGRST002", "PGRST003", "502", "503", "504"])
def test_postgrests_outage_codes_and_the_gateways_statuses_are_retryable(code: str) -> None:
    assert isinstance(error_from_code(code, "down"), CatalogUnavailable)


@pytest.mark.parametrize("code", ["PGRST100", "PGRST202", "PGRST301", "500", "400", "401", "404", "42501"])
def test_other_postgrest_codes_are_not(code: str) -> None:
    # (an HTTP status of a page that is not PostgREST's JSON becomes the code: "400" is no SQLSTATE
    # of class 40, serialization failures)
    error = error_from_code(code, "no")
    assert type(error) is CatalogError and error.code == code


def test_a_gateway_error_page_in_front_of_postgrest_is_a_retryable_error() -> None:
    # Given a gateway answering 503 with an HTML page (PostgREST behind it not answering)
    class Gateway(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            page = b"<html><body>503 Service Temporarily Unavailable</body></html>"
            self.send_response(503)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    gateway = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    try:
        # When a catalog function is called, Then it is CatalogUnavailable with the status as code
        rpc = SupabaseRpc(f"http://127.0.0.1:{gateway.server_address[1]}", SERVICE_KEY)
        with pytest.raises(CatalogUnavailable) as raised:
            rpc.call("get_dataset", {"p_dataset_id": str(uuid4())})
        assert raised.value.code == "503"
    finally:
        gateway.shutdown()


def test_an_unknown_argument_is_refused_not_ignored(postgrest: LocalPostgrest) -> None:
    rpc = SupabaseRpc(postgrest.url, SERVICE_KEY)
    with pytest.raises(CatalogError) as exc:
        rpc.call("get_dataset", {"p_dataset_id": str(uuid4()), "p_oops": 1})
    assert exc.value.code == "PGRST202"


def test_a_fragment_registered_over_http_is_deduplicated(remote: Catalog) -> None:
    dataset, owner = uuid4(), uuid4()
    sha = hashlib.sha256(b"payload").hexdigest()
    args = {
        "dataset_id": dataset,
        "owner_id": owner,
        "table": "battle",
        "object_key": keys.fragment_key(dataset, "battle", sha),
        "size_bytes": 7,
        "row_count": 1,
        "sha256": sha,
        "schema_fingerprint": "fp",
    }
    assert not remote.register_fragment(**args).duplicate  # type: ignore[arg-type]
    assert remote.register_fragment(**args).duplicate  # type: ignore[arg-type]
