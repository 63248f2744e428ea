"""Real local parts for the whole suite: one PostgreSQL server and one moto server per session.

Each test that needs the catalog gets its own database, cloned from a template that already
has the migrations applied (cheap: a file copy inside PostgreSQL).

Mutation runs (``make mutate``, ``scripts/mutate_sql.py``) start one PostgreSQL and one moto server
and hand them to every test process through the environment, instead of paying for a server
start in each of hundreds of short runs:
``FUSOU_TEST_PG_PORT`` (a running server, trust auth as ``postgres``),
``FUSOU_TEST_CATALOG_TEMPLATE`` (a database there with the migrations applied) and
``FUSOU_TEST_AWS_PORT`` (a running moto server).
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from fusou_compaction.local.aws import LOCAL_CREDENTIALS, LocalAws
from fusou_compaction.local.postgres import PostgresServer
from fusou_compaction.observability import logger

EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    if os.environ.get("FUSOU_TEST_PG_PORT"):
        # Running already: not started (nor stopped) here.
        yield PostgresServer(base_dir=Path(tempfile.gettempdir()), port=int(os.environ["FUSOU_TEST_PG_PORT"]))
        return
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def catalog_template(pg_server: PostgresServer) -> str:
    from fusou_compaction.catalog.migrate import migrate

    if os.environ.get("FUSOU_TEST_CATALOG_TEMPLATE"):
        return os.environ["FUSOU_TEST_CATALOG_TEMPLATE"]
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE catalog_template")
    migrate(pg_server.url_for("catalog_template"))
    return "catalog_template"


@pytest.fixture
def database_url(pg_server: PostgresServer, catalog_template: str) -> Iterator[str]:
    name = f"t_{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {catalog_template}")
    yield pg_server.url_for(name)
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def empty_database_url(pg_server: PostgresServer) -> Iterator[str]:
    name = f"e_{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_server.url_for(name)
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAws]:
    if os.environ.get("FUSOU_TEST_AWS_PORT"):
        for k, v in LOCAL_CREDENTIALS.items():
            os.environ.setdefault(k, v)
        yield LocalAws(port=int(os.environ["FUSOU_TEST_AWS_PORT"]))  # running already: not started here
        return
    with LocalAws() as aws:
        yield aws


@pytest.fixture
def s3_client(local_aws: LocalAws) -> Any:
    return boto3.client("s3", endpoint_url=local_aws.endpoint_url, region_name=local_aws.region)


@pytest.fixture
def sqs_client(local_aws: LocalAws) -> Any:
    return boto3.client("sqs", endpoint_url=local_aws.endpoint_url, region_name=local_aws.region)


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"test-bucket-{os.getpid()}-{next(_db_counter)}"
    s3_client.create_bucket(Bucket=name)
    return name


def load_event(name: str) -> dict[str, Any]:
    """A sample payload from events/ (the same files the docs and `sam local`-style tools use)."""
    return json.loads((EVENTS_DIR / name).read_text())  # type: ignore[no-any-return]


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What the service logs (Powertools' JSON lines) while the test runs."""
    buffer = io.StringIO()
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    # Swapped without setStream's flush of the old stream: under mutmut, which runs pytest several
    # times in one process, that stream can be an earlier session's capture, closed by now.
    previous, handler.stream = handler.stream, buffer
    yield buffer
    handler.stream = previous
