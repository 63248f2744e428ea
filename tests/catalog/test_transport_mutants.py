"""The catalog's transports and migration runner (catalog/transport.py, migrate.py): what mutation
testing (make mutate, catalog.transport) found untested.

The PostgreSQL transport is driven against a small ``probe`` schema of functions written for these
tests (who is calling, an OUT parameter, an empty set, a chosen SQLSTATE with a DETAIL), so what it
binds, runs as and reports is seen from the database's side; the Supabase transport is driven over
real HTTP against the PostgREST stand-in."""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import pytest

from fusou_compaction.catalog import migrate as migrate_module
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import (
    CatalogError,
    CatalogNotFound,
    CatalogUnavailable,
    InputsNotLive,
    InvalidCatalogArgument,
    LeaseNotHeld,
)
from fusou_compaction.catalog.migrate import MigrationError, default_migrations_dir, discover, migrate
from fusou_compaction.catalog.transport import PostgresRpc, SupabaseRpc
from fusou_compaction.local.postgres import free_port
from fusou_compaction.local.postgrest import LocalPostgrest

from .conftest import World

SERVICE_KEY = "local-service-key"

PROBE_SCHEMA = """
CREATE SCHEMA probe;
GRANT USAGE ON SCHEMA probe TO service_role;
CREATE FUNCTION probe.whoami() RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('user', current_user, 'application', current_setting('application_name'))
$$;
CREATE FUNCTION probe.twice(p_n integer, OUT p_twice integer) LANGUAGE sql AS $$ SELECT p_n * 2 $$;
CREATE FUNCTION probe.nothing() RETURNS SETOF integer LANGUAGE sql AS $$ SELECT 1 WHERE false $$;
CREATE FUNCTION probe.fail(p_code text, p_message text, p_detail text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_message, DETAIL = p_detail;
END
$$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA probe TO service_role;
"""


@pytest.fixture
def probe_url(database_url: str, sql: psycopg.Connection) -> str:
    sql.execute(PROBE_SCHEMA.encode())
    return database_url


@pytest.fixture
def probe(probe_url: str) -> Iterator[PostgresRpc]:
    rpc = PostgresRpc(probe_url, schema="probe", role="service_role", max_size=2)
    yield rpc
    rpc.close()


# -- the PostgreSQL transport: its connections ------------------------------------------------


def test_calls_run_as_the_role_and_under_the_services_application_name(probe: PostgresRpc) -> None:
    # When a function without arguments is called through a transport given a role
    who = probe.call("whoami", {})
    # Then it ran as that role (as PostgREST runs a call as the key's role), on a connection the
    # database knows as the compaction service
    assert who == {"user": "service_role", "application": "fusou-compaction"}


def test_without_a_role_calls_run_as_the_connecting_user(probe_url: str) -> None:
    rpc = PostgresRpc(probe_url, schema="probe")
    try:
        assert rpc.call("whoami", {})["user"] == "postgres"
    finally:
        rpc.close()


def test_the_pool_keeps_one_connection_and_grows_to_eight(probe_url: str) -> None:
    rpc = PostgresRpc(probe_url, schema="probe")
    try:
        stats = rpc._pool.get_stats()
        assert (stats["pool_min"], stats["pool_max"]) == (1, 8)
        assert rpc._pool.name == "fusou-catalog"
    finally:
        rpc.close()


def test_the_pool_is_opened_explicitly(probe: PostgresRpc) -> None:
    # psycopg_pool warns (DeprecationWarning) on the first call of a pool opened by default
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert probe.call("twice", {"p_n": 1}) == 2


def test_a_call_after_close_names_the_closed_pool(probe_url: str) -> None:
    rpc = PostgresRpc(probe_url, schema="probe")
    rpc.close()
    with pytest.raises(CatalogError) as exc:
        rpc.call("whoami", {})
    assert exc.value.message == "the pool 'fusou-catalog' is already closed"


def test_a_role_that_is_not_an_identifier_is_refused(probe_url: str) -> None:
    with pytest.raises(ValueError, match=r"bad role name 'service_role; RESET ROLE'"):
        PostgresRpc(probe_url, role="service_role; RESET ROLE")


def test_without_psycopg_pool_the_error_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    with pytest.raises(RuntimeError) as exc:
        PostgresRpc("postgresql://localhost/none")
    assert str(exc.value) == (
        "the postgres catalog transport needs psycopg and psycopg-pool, which are not installed "
        "(the Lambda assets leave them out): set FUSOU_CATALOG_TRANSPORT=supabase, or install them"
    )


# -- the PostgreSQL transport: binding and results --------------------------------------------


def test_a_function_with_an_out_parameter_is_bound_by_its_in_arguments(probe: PostgresRpc) -> None:
    # proargnames also lists OUT parameters, proargtypes only the IN ones
    assert probe.call("twice", {"p_n": 21}) == 42


def test_a_function_returning_no_row_returns_none(probe: PostgresRpc) -> None:
    assert probe.call("nothing", {}) is None


def test_a_functions_signature_is_read_once(probe: PostgresRpc, sql: psycopg.Connection) -> None:
    # Given a function called once, then dropped
    assert probe.call("twice", {"p_n": 1}) == 2
    sql.execute("DROP FUNCTION probe.twice(integer)")
    # When it is called again, Then the transport binds it from the signature it read the first
    # time, and it is PostgreSQL that finds no such function (not the transport's own lookup)
    with pytest.raises(CatalogError) as exc:
        probe.call("twice", {"p_n": 1})
    assert exc.value.code == "42883"


def test_an_unknown_function_is_refused_like_postgrest(probe: PostgresRpc) -> None:
    with pytest.raises(InvalidCatalogArgument) as exc:
        probe.call("no_such_function", {})
    assert exc.value.code == "PGRST202"
    assert exc.value.message == "no single catalog function named 'no_such_function'"


def test_a_bad_function_name_is_named_in_the_error(probe: PostgresRpc) -> None:
    with pytest.raises(InvalidCatalogArgument) as exc:
        probe.call("whoami; DROP SCHEMA probe", {})
    assert exc.value.message == "bad function name 'whoami; DROP SCHEMA probe'"


def test_an_unknown_argument_is_named_in_the_error(probe: PostgresRpc) -> None:
    with pytest.raises(InvalidCatalogArgument) as exc:
        probe.call("twice", {"p_n": 1, "p_oops": 2, "p_also": 3})
    assert exc.value.code == "PGRST202"
    assert exc.value.message == "twice() has no argument(s) ['p_also', 'p_oops']"


@pytest.mark.parametrize(
    ("code", "kind"),
    [("FC409", LeaseNotHeld), ("FC410", InputsNotLive), ("40001", CatalogUnavailable), ("22023", CatalogError)],
)
def test_a_raised_sqlstate_arrives_typed_with_its_message_and_detail(
    probe: PostgresRpc, code: str, kind: type[CatalogError]
) -> None:
    with pytest.raises(CatalogError) as exc:
        probe.call("fail", {"p_code": code, "p_message": "it went wrong", "p_detail": '["a", "b"]'})
    assert type(exc.value) is kind
    assert (exc.value.code, exc.value.message, exc.value.details) == (code, "it went wrong", '["a", "b"]')


def test_a_failure_outside_psycopg_is_a_catalog_error_carrying_its_cause(probe: PostgresRpc) -> None:
    # Given arguments json cannot encode (a list that contains itself)
    looped: list[Any] = []
    looped.append(looped)
    # Then the call fails as a catalog error whose message says why
    with pytest.raises(CatalogError) as exc:
        probe.call("twice", {"p_n": looped})
    assert exc.value.message == "catalog unreachable: Circular reference detected"


# -- the Supabase transport --------------------------------------------------------------------


@pytest.fixture
def postgrest(database_url: str) -> Iterator[LocalPostgrest]:
    with LocalPostgrest(database_url, SERVICE_KEY) as server:
        yield server


@pytest.mark.parametrize(("url", "key"), [("http://127.0.0.1:1", None), (None, SERVICE_KEY), (None, None)])
def test_supabase_needs_both_a_url_and_a_key_or_credentials(url: str | None, key: str | None) -> None:
    with pytest.raises(ValueError, match=r"^SupabaseRpc needs a URL and a service key, or credentials$"):
        SupabaseRpc(url, key)


def test_supabase_requests_time_out_after_30_seconds_unless_told(postgrest: LocalPostgrest) -> None:
    default, told = SupabaseRpc(postgrest.url, SERVICE_KEY), SupabaseRpc(postgrest.url, SERVICE_KEY, timeout=2.5)
    try:
        assert default._http.timeout == httpx.Timeout(30.0)
        assert told._http.timeout == httpx.Timeout(2.5)
    finally:
        default.close()
        told.close()


def test_supabase_calls_go_through_the_transports_own_http_client(postgrest: LocalPostgrest) -> None:
    # Given a transport that answered once, then was closed
    rpc = SupabaseRpc(postgrest.url, SERVICE_KEY)
    assert rpc.call("list_recent_failures", {"p_limit": 1}) == []
    rpc.close()
    # When it is called again, Then the request is not sent: it used the client that close() closed
    calls = postgrest.calls
    with pytest.raises(CatalogUnavailable) as exc:
        rpc.call("list_recent_failures", {"p_limit": 1})
    assert exc.value.message.startswith("Supabase unreachable: ")
    assert postgrest.calls == calls


def test_supabase_builds_one_client_per_credentials(postgrest: LocalPostgrest, monkeypatch: pytest.MonkeyPatch) -> None:
    import supabase

    built: list[tuple[str, str]] = []
    real = supabase.create_client

    def counting(url: str, key: str, **kwargs: Any) -> Any:
        built.append((url, key))
        return real(url, key, **kwargs)

    monkeypatch.setattr(supabase, "create_client", counting)
    creds = [(postgrest.url, SERVICE_KEY)]
    rpc = SupabaseRpc(credentials=lambda: creds[-1])
    try:
        # When three calls are made with the same credentials, Then one client served them
        for _ in range(3):
            rpc.call("list_recent_failures", {"p_limit": 1})
        assert built == [(postgrest.url, SERVICE_KEY)]
        # And a rotated key gets a new one
        creds.append((postgrest.url + "/", SERVICE_KEY))
        rpc.call("list_recent_failures", {"p_limit": 1})
        assert len(built) == 2
    finally:
        rpc.close()


def test_supabase_credentials_that_cannot_be_read_are_a_retryable_error() -> None:
    def unreadable() -> tuple[str, str]:
        raise OSError("secrets manager unreachable")

    with pytest.raises(CatalogUnavailable) as exc:
        SupabaseRpc(credentials=unreadable).call("list_recent_failures", {})
    assert exc.value.message == "catalog credentials unavailable: secrets manager unreachable"


def test_supabase_unreachable_says_so() -> None:
    rpc = SupabaseRpc(f"http://127.0.0.1:{free_port()}", SERVICE_KEY, timeout=2)
    with pytest.raises(CatalogUnavailable) as exc:
        rpc.call("list_recent_failures", {})
    assert exc.value.message.startswith("Supabase unreachable: ")


def test_supabase_errors_keep_the_sql_message_and_detail(postgrest: LocalPostgrest) -> None:
    remote = Catalog(SupabaseRpc(postgrest.url, SERVICE_KEY))
    # An unknown dataset: the SQL's message, word for word
    missing = uuid4()
    with pytest.raises(CatalogNotFound) as not_found:
        remote.get_dataset(missing)
    assert not_found.value.message == f"unknown dataset {missing}"
    # A commit naming an input already removed: the SQL's DETAIL names it
    w = World(remote, owner=uuid4(), dataset=uuid4())
    frag = w.fragment()
    first = w.running_run()
    remote.commit_compaction(
        run_id=first, dataset_id=w.dataset, removed=[frag.id], outputs=[w.output_for(first, [frag])]
    )
    second = w.running_run()
    with pytest.raises(InputsNotLive) as gone:
        remote.commit_compaction(
            run_id=second, dataset_id=w.dataset, removed=[frag.id], outputs=[w.output_for(second, [frag], 1)]
        )
    assert gone.value.message == f'inputs no longer live: ["{frag.id}"]'
    assert gone.value.details == f'["{frag.id}"]'


class _Answers(BaseHTTPRequestHandler):
    """A PostgREST-like server that answers every call with one fixed error body."""

    protocol_version = "HTTP/1.1"
    body = b""

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


def test_supabase_errors_without_a_message_keep_the_body_as_their_message() -> None:
    # Given an API answering an error that carries a code and details but no message
    handler = type("NoMessage", (_Answers,), {"body": b'{"code": "FC409", "details": "held by run 7"}'})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rpc = SupabaseRpc(f"http://127.0.0.1:{server.server_address[1]}", SERVICE_KEY, timeout=5)
    try:
        # When a call fails with it
        with pytest.raises(LeaseNotHeld) as exc:
            rpc.call("release_lease", {})
    finally:
        rpc.close()
        server.shutdown()
        server.server_close()
    # Then the error is typed by its code, keeps its details, and its message is the error as sent
    assert exc.value.details == "held by run 7"
    assert "FC409" in exc.value.message and "held by run 7" in exc.value.message


# -- migrations --------------------------------------------------------------------------------


def _write(directory: Path, name: str, text: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode()).fetchall()


def test_migrations_added_after_applied_ones_are_applied(empty_database_url: str, tmp_path: Path) -> None:
    # Given two migrations applied
    d = tmp_path / "migrations"
    _write(d, "0001_one.sql", "CREATE TABLE one (x int);")
    _write(d, "0002_two.sql", "CREATE TABLE two (x int);")
    assert migrate(empty_database_url, d) == ["0001", "0002"]
    # When a third is added, Then it alone is applied, past the applied ones
    _write(d, "0003_three.sql", "CREATE TABLE three (x int);")
    assert migrate(empty_database_url, d) == ["0003"]
    assert _rows(empty_database_url, "SELECT version, name FROM schema_migrations ORDER BY 1") == [
        ("0001", "one"),
        ("0002", "two"),
        ("0003", "three"),
    ]


def test_a_failing_migration_keeps_the_ones_before_it(empty_database_url: str, tmp_path: Path) -> None:
    # Given a good migration followed by a failing one
    d = tmp_path / "migrations"
    _write(d, "0001_good.sql", "CREATE TABLE good (x int);")
    _write(d, "0002_bad.sql", "CREATE TABLE bad (x int); SELECT 1 / 0;")
    # When they are applied, Then the failure stops the run
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(empty_database_url, d)
    # And the good one stays applied and recorded (each migration is its own transaction), the bad one not at all
    assert _rows(empty_database_url, "SELECT version FROM schema_migrations") == [("0001",)]
    assert _rows(empty_database_url, "SELECT to_regclass('good') IS NOT NULL, to_regclass('bad') IS NULL") == [
        (True, True)
    ]
    # And the advisory lock was released: the fixed migration applies at once
    _write(d, "0002_bad.sql", "CREATE TABLE bad (x int);")
    assert migrate(empty_database_url, d) == ["0002"]


def test_an_edited_migration_is_refused_with_the_way_forward(empty_database_url: str, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    _write(d, "0001_one.sql", "CREATE TABLE one (x int);")
    migrate(empty_database_url, d)
    _write(d, "0001_one.sql", "CREATE TABLE one (x bigint);")
    with pytest.raises(MigrationError) as exc:
        migrate(empty_database_url, d)
    assert str(exc.value) == (
        "migration 0001_one.sql changed after it was applied; add a new migration instead of editing an applied one"
    )


def test_duplicate_versions_are_refused_naming_the_directory(tmp_path: Path) -> None:
    _write(tmp_path, "0001_one.sql", "SELECT 1;")
    _write(tmp_path, "0001_other.sql", "SELECT 1;")
    with pytest.raises(MigrationError) as exc:
        discover(tmp_path)
    assert str(exc.value) == f"duplicate migration versions in {tmp_path}"


def test_without_a_migrations_directory_above_it_the_runner_says_what_to_pass(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given the runner installed where no parent holds infra/supabase/migrations
    installed = tmp_path / "site-packages" / "fusou_compaction" / "catalog" / "migrate.py"
    monkeypatch.setattr(migrate_module, "__file__", str(installed))
    with pytest.raises(MigrationError) as exc:
        default_migrations_dir()
    assert str(exc.value) == "infra/supabase/migrations not found; pass --migrations-dir"
