"""pytest plugin for ``scripts/mutate_sql.py``: which catalog tests call which SQL functions.

With ``FUSOU_SQL_CALLS_OUT`` set (and the server's ``track_functions = 'all'``), each test that
gets a database of its own (``database_url``, ``empty_database_url``) appends
``{"test": nodeid, "functions": [...]}`` (every function its database executed, nested calls and
triggers included) to that file; a test without one is recorded with ``"functions": null`` (run
for every mutant) if it reaches the server, ``[]`` if not. With ``FUSOU_SQL_SELECT`` set (a file
of node ids or test files, one a line), only those tests run, in that order: a mutant of a
function only runs the tests that execute it.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest


@pytest.fixture(autouse=True)
def _record_sql_calls(request: pytest.FixtureRequest) -> Iterator[None]:
    out = os.environ.get("FUSOU_SQL_CALLS_OUT")
    if not out:
        yield
        return
    database = next((f for f in ("database_url", "empty_database_url") if f in request.fixturenames), None)
    if database is None:
        yield
        # No database of its own: none if it never reaches the server, unknown if it might.
        reaches = {"pg_server", "catalog_template"} & set(request.fixturenames)
        with open(out, "a") as f:
            f.write(json.dumps({"test": request.node.nodeid, "functions": None if reaches else []}) + "\n")
        return
    url = request.getfixturevalue(database)
    yield
    with psycopg.connect(url, autocommit=True) as conn:
        # Other sessions flush their function statistics when they end: wait for them to end.
        deadline = time.monotonic() + 10
        names: list[str] | None = None  # still busy at the deadline: unknown, so run it for every mutant
        while time.monotonic() < deadline:
            others = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            if others is not None and others[0] == 0:
                conn.execute("SELECT pg_stat_clear_snapshot()")
                names = [r[0] for r in conn.execute("SELECT funcname FROM pg_stat_user_functions WHERE calls > 0")]
                break
            time.sleep(0.02)
    if names is not None:
        # PostgreSQL counts a call only when it returns: a call that raises (a refused argument)
        # is not in the statistics. So a test also counts as calling what its code names.
        names = sorted(set(names) | _named_in(request))
    with open(out, "a") as f:
        f.write(json.dumps({"test": request.node.nodeid, "functions": names}) + "\n")


def _named_in(request: pytest.FixtureRequest) -> set[str]:
    """Identifiers in the test's source and in the module-level helpers and strings it uses (one level)."""
    words = set(re.findall(r"\w+", inspect.getsource(request.function)))
    for word in list(words):
        helper = getattr(request.module, word, None)
        if inspect.isfunction(helper) and helper.__module__ == request.module.__name__:
            words |= set(re.findall(r"\w+", inspect.getsource(helper)))
        elif isinstance(helper, str):  # a module-level SQL statement
            words |= set(re.findall(r"\w+", helper))
    return words


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    select = os.environ.get("FUSOU_SQL_SELECT")
    if not select:
        return
    order = {nodeid: i for i, nodeid in enumerate(Path(select).read_text().splitlines())}

    def rank(item: pytest.Item) -> int | None:  # a node id, or a file for all of its tests
        return order.get(item.nodeid, order.get(item.nodeid.split("::")[0]))

    kept = sorted((item for item in items if rank(item) is not None), key=lambda item: rank(item) or 0)
    deselected = [item for item in items if rank(item) is None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = kept
