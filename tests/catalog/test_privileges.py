"""Grants under Supabase's default privileges (migration 0005): anon and authenticated keep only
the reads row-level security is designed around, whatever Supabase grants on creation.

Every table, sequence and function is enumerated from the catalog, so an object a later migration
adds is checked without touching these tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.migrate import default_migrations_dir, discover, migrate
from fusou_compaction.catalog.transport import PostgresRpc

from .conftest import World

API_ROLES = ("anon", "authenticated")

# What a Supabase project runs at creation (supabase/postgres's init scripts), before any migration
# of ours: the API roles, and default grants on everything the migrating role creates in public.
SUPABASE_DEFAULT_PRIVILEGES = """
DO $$
BEGIN
  CREATE ROLE anon NOLOGIN NOINHERIT;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
DO $$
BEGIN
  CREATE ROLE authenticated NOLOGIN NOINHERIT;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
DO $$
BEGIN
  CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
"""

# The whole of what the API roles may do in public: a signed-in user reads (through RLS) their
# own datasets, files and runs.
INTENDED = {
    ("authenticated", "table", "datasets", "SELECT"),
    ("authenticated", "table", "dataset_files", "SELECT"),
    ("authenticated", "table", "compaction_runs", "SELECT"),
}

# Every privilege of the role on every object in public, PUBLIC's included; column-level grants
# count (has_any_column_privilege).
GRANTS_SQL = """
SELECT r.role, 'table', c.relname, p.priv
FROM pg_class c
CROSS JOIN unnest(%(roles)s::text[]) AS r(role)
CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p(priv)
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND CASE WHEN p.priv IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
           THEN has_any_column_privilege(r.role, c.oid, p.priv)
           ELSE has_table_privilege(r.role, c.oid, p.priv) END
UNION ALL
SELECT r.role, 'sequence', c.relname, p.priv
FROM pg_class c
CROSS JOIN unnest(%(roles)s::text[]) AS r(role)
CROSS JOIN unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) AS p(priv)
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S'
  AND has_sequence_privilege(r.role, c.oid, p.priv)
UNION ALL
SELECT r.role, 'function', f.oid::regprocedure::text, 'EXECUTE'
FROM pg_proc f
CROSS JOIN unnest(%(roles)s::text[]) AS r(role)
WHERE f.pronamespace = 'public'::regnamespace AND has_function_privilege(r.role, f.oid, 'EXECUTE')
"""


def _grants(conn: psycopg.Connection, roles: tuple[str, ...] = API_ROLES) -> set[tuple[str, str, str, str]]:
    return set(conn.execute(GRANTS_SQL, {"roles": list(roles)}).fetchall())


def _relations(conn: psycopg.Connection, kinds: tuple[str, ...]) -> list[str]:
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = ANY (%s) ORDER BY 1",
        (list(kinds),),
    ).fetchall()
    return [r[0] for r in rows]


def _tables(conn: psycopg.Connection) -> list[str]:
    return _relations(conn, ("r", "p"))


def _sequences(conn: psycopg.Connection) -> list[str]:
    return _relations(conn, ("S",))


def _first_column(conn: psycopg.Connection, table: str) -> str:
    row = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum LIMIT 1",
        (f"public.{table}",),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _not_refused(conn: psycopg.Connection, statements: list[sql.Composed]) -> list[str]:
    """The statements that were not refused for lack of privilege (autocommit: each stands alone)."""
    passed = []
    for statement in statements:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            continue
        except psycopg.Error as exc:  # got past the privilege check, then failed on something else
            passed.append(f"{statement.as_string(conn)} -> {type(exc).__name__}")
        else:
            passed.append(statement.as_string(conn))
    return passed


def _as_user(conn: psycopg.Connection, user: UUID) -> None:
    conn.execute("SET ROLE authenticated")
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (json.dumps({"sub": str(user)}),))


def _simulate_supabase(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SUPABASE_DEFAULT_PRIVILEGES)


@pytest.fixture
def supabase_url(empty_database_url: str) -> str:
    """A database given Supabase's default privileges first, then migrated by our runner."""
    _simulate_supabase(empty_database_url)
    migrate(empty_database_url)
    return empty_database_url


@pytest.fixture
def supabase_sql(supabase_url: str) -> Iterator[psycopg.Connection]:
    """The migrating role's connection (a superuser here; SET ROLE switches to an API role)."""
    with psycopg.connect(supabase_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def supabase_catalog(supabase_url: str) -> Iterator[Catalog]:
    # As PostgREST would with the service key: every call runs as service_role.
    c = Catalog(PostgresRpc(supabase_url, role="service_role", max_size=4))
    yield c
    c.close()


def test_the_simulation_grants_everything_new_to_the_api_roles(empty_database_url: str) -> None:
    # Given Supabase's default privileges on a database nothing was migrated into
    _simulate_supabase(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        # When the migrating role creates a table with a sequence
        conn.execute("CREATE TABLE probe (id bigserial PRIMARY KEY)")
        # Then both are open to anon, as on a Supabase project (the premise of the tests below)
        assert {("anon", "table", "probe", "TRUNCATE"), ("anon", "sequence", "probe_id_seq", "UPDATE")} <= _grants(
            conn, ("anon",)
        )


@pytest.mark.parametrize("url_fixture", ["supabase_url", "database_url"], ids=["supabase", "plain_postgres"])
def test_the_api_roles_hold_only_the_intended_selects(url_fixture: str, request: pytest.FixtureRequest) -> None:
    # Given the catalog migrated under Supabase's default privileges, or on a plain PostgreSQL
    url = request.getfixturevalue(url_fixture)
    with psycopg.connect(url, autocommit=True) as conn:
        # When every privilege of anon and authenticated on every object in public is listed
        granted = _grants(conn)
        tables = _tables(conn)
    # Then only the reads RLS is designed around remain, and the migrations table is among the checked
    assert "schema_migrations" in tables
    assert granted == INTENDED


@pytest.mark.parametrize("role", API_ROLES)
def test_the_api_roles_cannot_truncate_the_migrations_table(supabase_sql: psycopg.Connection, role: str) -> None:
    # Given a migrated database and a session as an API role
    versions = [m.version for m in discover(default_migrations_dir())]
    supabase_sql.execute(f"SET ROLE {role}")
    # When it tries to empty or rewrite the record of applied migrations
    for statement in (
        "TRUNCATE schema_migrations",
        "DELETE FROM schema_migrations",
        "INSERT INTO schema_migrations (version, name, checksum) VALUES ('9999', 'x', 'x')",
        "SELECT * FROM schema_migrations",
    ):
        # Then each is refused
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            supabase_sql.execute(statement)
    # And the record is intact
    supabase_sql.execute("RESET ROLE")
    rows = supabase_sql.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == versions


@pytest.mark.parametrize("role", API_ROLES)
def test_the_api_roles_cannot_write_any_table(supabase_sql: psycopg.Connection, role: str) -> None:
    # Given every table in public (enumerated, so a later table is covered)
    tables = _tables(supabase_sql)
    statements = []
    for table in tables:
        t, col = sql.Identifier("public", table), sql.Identifier(_first_column(supabase_sql, table))
        statements += [
            sql.SQL("INSERT INTO {} DEFAULT VALUES").format(t),
            sql.SQL("UPDATE {} SET {} = {} WHERE false").format(t, col, col),
            sql.SQL("DELETE FROM {} WHERE false").format(t),
            sql.SQL("TRUNCATE {}").format(t),
        ]
    # When the API role tries to insert, update, delete and truncate each
    supabase_sql.execute(f"SET ROLE {role}")
    passed = _not_refused(supabase_sql, statements)
    # Then every one is refused for lack of privilege
    assert len(tables) >= 6
    assert passed == []


@pytest.mark.parametrize("role", API_ROLES)
def test_the_api_roles_cannot_use_any_sequence(supabase_sql: psycopg.Connection, role: str) -> None:
    # Given every sequence in public
    sequences = _sequences(supabase_sql)
    statements = []
    for seq in sequences:
        name = sql.Literal(f"public.{seq}")
        statements += [
            sql.SQL("SELECT nextval({})").format(name),  # USAGE or UPDATE
            sql.SQL("SELECT setval({}, 1)").format(name),  # UPDATE
            sql.SQL("SELECT currval({})").format(name),  # USAGE or SELECT
            sql.SQL("SELECT last_value FROM {}").format(sql.Identifier("public", seq)),  # SELECT
        ]
    # When the API role tries to draw from, reset or read each
    supabase_sql.execute(f"SET ROLE {role}")
    passed = _not_refused(supabase_sql, statements)
    # Then every one is refused
    assert {"dataset_files_seq", "compaction_failures_id_seq"} <= set(sequences)
    assert passed == []


def test_the_api_roles_cannot_call_any_function(supabase_sql: psycopg.Connection) -> None:
    # Given every function in public
    functions = supabase_sql.execute(
        "SELECT oid::regprocedure::text FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
    )
    names = {r[0] for r in functions.fetchall()}
    # When EXECUTE is checked for anon and authenticated (PUBLIC's grant included)
    executable = {g for g in _grants(supabase_sql) if g[1] == "function"}
    # Then neither may call any of them
    assert "claim_pending_datasets(integer,text,integer,integer,integer)" in names and len(names) > 20
    assert executable == set()


def test_only_the_intended_selects_succeed_and_rls_still_filters_them(
    supabase_sql: psycopg.Connection, supabase_catalog: Catalog
) -> None:
    # Given two users with a dataset each (a fragment, a run) and a recorded failure
    mine = World(supabase_catalog, owner=uuid4(), dataset=uuid4())
    mine.fragment()
    mine.running_run()
    theirs = World(supabase_catalog, owner=uuid4(), dataset=uuid4())
    theirs.fragment()
    theirs.running_run()
    supabase_catalog.record_failure(source="dlq", error="boom", message_id="m-1", dataset_id=theirs.dataset)
    tables = _tables(supabase_sql)
    readable = {t for (_, kind, t, _) in INTENDED if kind == "table"}
    selects = {t: sql.SQL("SELECT * FROM {}").format(sql.Identifier("public", t)) for t in tables}

    # When anon reads every table
    supabase_sql.execute("SET ROLE anon")
    anon_passed = _not_refused(supabase_sql, list(selects.values()))
    supabase_sql.execute("RESET ROLE")
    # And the first user reads every table
    _as_user(supabase_sql, mine.owner)
    user_passed = _not_refused(supabase_sql, [s for t, s in selects.items() if t not in readable])
    datasets = supabase_sql.execute("SELECT id FROM datasets").fetchall()
    files = supabase_sql.execute("SELECT dataset_id FROM dataset_files").fetchall()
    runs = supabase_sql.execute("SELECT dataset_id FROM compaction_runs").fetchall()

    # Then anon reads nothing, the user only the three tables, and only their own rows of them
    assert anon_passed == []
    assert user_passed == []
    assert datasets == [(mine.dataset,)]
    assert files == [(mine.dataset,)]
    assert runs == [(mine.dataset,)]


def test_the_service_role_still_does_everything_the_service_needs(supabase_catalog: Catalog) -> None:
    # Given the catalog migrated under Supabase's default privileges, called as service_role
    world = World(supabase_catalog, owner=uuid4(), dataset=uuid4())
    # When the service registers (dataset_files_seq), compacts, records a failure
    # (compaction_failures_id_seq), redrives it and caches a schema
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    committed = supabase_catalog.commit_compaction(
        run_id=run, dataset_id=world.dataset, removed=[f.id for f in frags], outputs=[world.output_for(run, frags)]
    )
    recorded = supabase_catalog.record_failure(
        source="dlq", error="boom", message_id="m-2", dataset_id=world.dataset, body="{}"
    )
    redrivable = supabase_catalog.list_redrivable_failures()
    marked = supabase_catalog.mark_failures_redriven([f.id for f in redrivable])
    added = supabase_catalog.register_schemas({"a" * 64: "c2NoZW1h"})
    # Then every call succeeds
    assert committed.committed and [f.kind for f in supabase_catalog.list_live_files(world.dataset)] == ["compacted"]
    assert recorded.recorded and marked == 1 and added == 1
    assert supabase_catalog.get_schemas(["a" * 64]) == {"a" * 64: "c2NoZW1h"}


def test_new_objects_of_the_migrating_role_are_not_granted_to_the_api_roles(
    supabase_sql: psycopg.Connection,
) -> None:
    # Given a migrated database under Supabase's default privileges
    # When the migrating role later creates a table with a sequence, and a function, in public
    supabase_sql.execute("CREATE TABLE later (id bigserial PRIMARY KEY)")
    supabase_sql.execute("CREATE FUNCTION later_fn() RETURNS integer LANGUAGE sql AS 'SELECT 1'")
    explicit = supabase_sql.execute(
        "SELECT a.grantee::regrole::text FROM pg_proc p, aclexplode(p.proacl) a"
        " WHERE p.oid = 'later_fn()'::regprocedure AND a.grantee <> 0"
    ).fetchall()
    granted = {g for g in _grants(supabase_sql) if g[2] in ("later", "later_id_seq")}
    service = _grants(supabase_sql, ("service_role",))
    # Then anon and authenticated get nothing on the table or its sequence
    assert granted == set()
    # And no grant of their own on the function: PUBLIC's EXECUTE is PostgreSQL's global default,
    # which every migration adding a function revokes (the function test above checks that)
    assert {r[0] for r in explicit} & set(API_ROLES) == set()
    # And service_role keeps Supabase's defaults
    assert {
        ("service_role", "table", "later", "INSERT"),
        ("service_role", "sequence", "later_id_seq", "USAGE"),
    } <= service


def _acls(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    # Each ACL as a sorted list: the same grants in another order are the same ACL.
    rels = conn.execute(
        "SELECT relname, ARRAY(SELECT unnest(relacl)::text ORDER BY 1) FROM pg_class"
        " WHERE relnamespace = 'public'::regnamespace ORDER BY 1"
    ).fetchall()
    procs = conn.execute(
        "SELECT oid::regprocedure::text, ARRAY(SELECT unnest(proacl)::text ORDER BY 1) FROM pg_proc"
        " WHERE pronamespace = 'public'::regnamespace ORDER BY 1"
    ).fetchall()
    defaults = conn.execute(
        "SELECT defaclrole::regrole::text, defaclnamespace::regnamespace::text, defaclobjtype,"
        " ARRAY(SELECT unnest(defaclacl)::text ORDER BY 1) FROM pg_default_acl ORDER BY 1, 2, 3"
    ).fetchall()
    return [*rels, *procs, *defaults]


def test_applying_the_revocation_again_changes_nothing(supabase_sql: psycopg.Connection) -> None:
    # Given a migrated database
    (revocation,) = [m for m in discover(default_migrations_dir()) if m.version == "0005"]
    before = _acls(supabase_sql)
    # When the revoking migration runs a second time
    supabase_sql.execute(revocation.sql.encode())
    # Then every ACL is as it was
    assert _acls(supabase_sql) == before


def test_applied_like_supabase_db_push_without_the_runners_table(empty_database_url: str) -> None:
    # Given Supabase's default privileges, and the files applied one by one as `supabase db push`
    # does (it records them in supabase_migrations, so public.schema_migrations never exists)
    _simulate_supabase(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        for mig in discover(default_migrations_dir()):
            with conn.transaction():
                conn.execute(mig.sql.encode())
        # When the API roles' privileges are listed
        granted = _grants(conn)
        tables = _tables(conn)
    # Then the migrations applied, and only the intended reads remain
    assert "schema_migrations" not in tables
    assert granted == INTENDED
