"""The catalog client's calls (catalog/client.py, models.py, errors.py): what mutation testing
(make mutate, catalog.client) found untested. Each argument the client takes must reach its SQL
function (seen in the database's effects), its defaults must be the documented ones, and the
error mapping must sort retryable SQLSTATEs from the others."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from fusou_compaction import keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import (
    CatalogError,
    CatalogNotFound,
    CatalogUnavailable,
    InputsNotLive,
    error_from_code,
)
from fusou_compaction.catalog.models import AdmissionPolicy, OrphanSweepDataset, RetryBackoff
from fusou_compaction.catalog.transport import PostgresRpc, RpcTransport

from .conftest import World


class _Recording:
    """The real transport, with every call the client asked of it written down."""

    def __init__(self, inner: RpcTransport) -> None:
        self.inner = inner
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, function: str, params: Mapping[str, Any]) -> Any:
        self.calls.append((function, dict(params)))
        return self.inner.call(function, params)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def recording(database_url: str) -> Iterator[_Recording]:
    transport = _Recording(PostgresRpc(database_url, role="service_role", max_size=4))
    yield transport
    transport.close()


def _backdate_admissions(sql: psycopg.Connection, seconds: int) -> None:
    sql.execute("UPDATE compaction_admissions SET admitted_at = admitted_at - make_interval(secs => %s)", (seconds,))


def _policy(**overrides: int) -> AdmissionPolicy:
    values = {"budget": 10, "reserve": 0, "max_weight": 1, "target_bytes": 1_000_000, "stale_seconds": 60}
    return AdmissionPolicy(**(values | overrides))


# -- the documented defaults ------------------------------------------------------------------


def _next_sweep_datasets(catalog: Catalog) -> list[OrphanSweepDataset]:
    assert catalog.begin_orphan_sweep(owner="a", lease_seconds=60, lookback_seconds=60).acquired
    return catalog.next_orphan_sweep_datasets(owner="a")


DEFAULTS: list[tuple[str, Callable[[Catalog, World], Any], str, str, int]] = [
    ("dataset_status", lambda c, w: c.dataset_status(w.dataset), "dataset_status", "p_runs", 10),
    (
        "claim_pending_datasets",
        lambda c, w: c.claim_pending_datasets(limit=1, claimer="cron"),
        "claim_pending_datasets",
        "p_claim_seconds",
        3600,
    ),
    ("admission_status", lambda c, w: c.admission_status(), "admission_status", "p_stale_seconds", 900),
    ("list_recent_failures", lambda c, w: c.list_recent_failures(), "list_recent_failures", "p_limit", 20),
    ("list_redrivable_failures", lambda c, w: c.list_redrivable_failures(), "list_redrivable_failures", "p_limit", 10),
    ("list_garbage", lambda c, w: c.list_garbage(), "list_garbage", "p_limit", 1000),
    (
        "next_orphan_sweep_datasets",
        lambda c, w: _next_sweep_datasets(c),
        "next_orphan_sweep_datasets",
        "p_limit",
        100,
    ),
]


@pytest.mark.parametrize(("call", "function", "param", "expected"), [pytest.param(*d[1:], id=d[0]) for d in DEFAULTS])
def test_a_call_without_its_optional_argument_sends_the_documented_default(
    recording: _Recording, call: Callable[[Catalog, World], Any], function: str, param: str, expected: int
) -> None:
    # Given a client over the real transport, and a dataset with a fragment
    catalog = Catalog(recording)
    world = World(catalog, owner=uuid4(), dataset=uuid4())
    world.fragment()
    # When the call is made without its optional argument
    call(catalog, world)
    # Then the function was called with the client's documented default, spelled out
    sent = [params for name, params in recording.calls if name == function]
    assert sent and sent[-1][param] == expected


# -- arguments reach their SQL function ------------------------------------------------------


def test_a_fragment_names_the_dataset_it_creates(catalog: Catalog) -> None:
    # Given a first fragment of a new dataset, registered with a dataset name
    dataset, owner = uuid4(), uuid4()
    sha = hashlib.sha256(b"named").hexdigest()
    registered = catalog.register_fragment(
        dataset_id=dataset,
        owner_id=owner,
        table="battle",
        object_key=keys.fragment_key(dataset, "battle", sha),
        size_bytes=10,
        row_count=1,
        sha256=sha,
        schema_fingerprint="fp1",
        dataset_name="spring-event",
    )
    # Then the dataset it created carries that name
    assert registered.dataset_created
    assert catalog.get_dataset(dataset).name == "spring-event"


def test_dataset_status_returns_as_many_runs_as_asked(world: World) -> None:
    # Given a dataset with two runs
    world.fragment()
    for _ in range(2):
        world.catalog.begin_run(run_id=uuid4(), dataset_id=world.dataset, trigger="manual")
    # When its status is asked with one run, Then one run comes back (the default would give both)
    assert len(world.catalog.dataset_status(world.dataset, runs=1).runs) == 1
    assert len(world.catalog.dataset_status(world.dataset).runs) == 2


def test_a_claim_lasts_the_seconds_asked(world: World, sql: psycopg.Connection) -> None:
    # Given a dataset that needs compaction
    world.fragment()
    before = sql.execute("SELECT now()").fetchone()
    # When it is claimed for 60 seconds
    assert world.catalog.claim_pending_datasets(limit=1, claimer="cron", claim_seconds=60) == [world.dataset]
    after = sql.execute("SELECT now()").fetchone()
    # Then its claim ends 60 seconds after the claim was made (not the default hour)
    assert before is not None and after is not None
    expires = world.catalog.get_dataset(world.dataset).claim_expires_at
    assert expires is not None
    assert before[0] + timedelta(seconds=60) <= expires <= after[0] + timedelta(seconds=60)


def test_a_runs_weight_follows_the_policys_max_weight_and_target_bytes(world: World) -> None:
    # Given a dataset of 350 bytes in one table
    world.fragment(size=350)
    # When a run is admitted with bins of 100 bytes and a weight of at most 8
    admission = world.catalog.admit_run(
        run_id=uuid4(), dataset_id=world.dataset, priority="manual", policy=_policy(max_weight=8, target_bytes=100)
    )
    # Then it weighs 350 // 100 + one partial bin = 4 (the SQL defaults would make it 1)
    assert admission.admitted and admission.weight == 4
    # And the weight is capped by max_weight
    capped = world.catalog.admit_run(
        run_id=uuid4(), dataset_id=world.dataset, priority="manual", policy=_policy(max_weight=2, target_bytes=100)
    )
    assert capped.weight == 2


def test_an_admission_goes_stale_after_the_policys_stale_seconds(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a budget of one held by an admission two minutes old whose run never began
    first, second = (World(catalog, owner=uuid4(), dataset=uuid4()) for _ in range(2))
    first.fragment()
    second.fragment()
    assert catalog.admit_run(run_id=uuid4(), dataset_id=first.dataset, priority="manual", policy=_policy(budget=1))
    _backdate_admissions(sql, 120)
    # When another run is admitted with admissions stale after 60 seconds
    admission = catalog.admit_run(
        run_id=uuid4(), dataset_id=second.dataset, priority="manual", policy=_policy(budget=1)
    )
    # Then the old one no longer holds the budget (with the default 900 s it still would)
    assert admission.admitted and admission.in_flight == 0


def test_admission_status_counts_only_admissions_younger_than_stale_seconds(
    catalog: Catalog, sql: psycopg.Connection
) -> None:
    # Given an admission two minutes old and a fresh one
    old, fresh = (World(catalog, owner=uuid4(), dataset=uuid4()) for _ in range(2))
    old.fragment()
    fresh.fragment()
    catalog.admit_run(run_id=uuid4(), dataset_id=old.dataset, priority="manual", policy=_policy())
    _backdate_admissions(sql, 120)
    catalog.admit_run(run_id=uuid4(), dataset_id=fresh.dataset, priority="scheduled", policy=_policy(stale_seconds=900))
    # Then with 60 s only the fresh one is in flight; with the default 900 s both are
    assert catalog.admission_status(stale_seconds=60) == {"runs": 1, "weight": 1, "scheduled_weight": 1}
    assert catalog.admission_status()["runs"] == 2


def test_a_released_admission_frees_its_weight_once(world: World) -> None:
    # Given an admitted run
    world.fragment()
    run = uuid4()
    assert world.catalog.admit_run(run_id=run, dataset_id=world.dataset, priority="manual", policy=_policy()).admitted
    assert world.catalog.admission_status()["runs"] == 1
    # When its admission is released, Then it was there, and the budget holds nothing
    assert world.catalog.release_admission(run) is True
    assert world.catalog.admission_status() == {"runs": 0, "weight": 0, "scheduled_weight": 0}
    # And releasing it again finds nothing
    assert world.catalog.release_admission(run) is False


def test_a_run_keeps_its_execution_and_message(world: World, sql: psycopg.Connection) -> None:
    # Given a dataset
    world.fragment()
    run_id = uuid4()
    # When a run begins with its execution and the message that started it
    run = world.catalog.begin_run(
        run_id=run_id,
        dataset_id=world.dataset,
        trigger="realtime",
        execution_id="arn:aws:states:execution:1",
        message={"dataset_id": str(world.dataset), "reason": "upload"},
    )
    # Then both are recorded
    assert run.execution_id == "arn:aws:states:execution:1"
    row = sql.execute("SELECT execution_id, message FROM compaction_runs WHERE id = %s", (run_id,)).fetchone()
    assert row == ("arn:aws:states:execution:1", {"dataset_id": str(world.dataset), "reason": "upload"})


def test_a_commit_without_grace_makes_its_inputs_garbage_at_once(world: World) -> None:
    # Given a run compacting two fragments
    frags = [world.fragment(), world.fragment()]
    run = world.running_run()
    # When it commits with no grace period
    result = world.catalog.commit_compaction(
        run_id=run,
        dataset_id=world.dataset,
        removed=[f.id for f in frags],
        outputs=[world.output_for(run, frags)],
        grace_seconds=0,
    )
    # Then the inputs' objects may be deleted now (the default grace is a day)
    assert result.committed
    assert {g.id for g in world.catalog.list_garbage()} == {f.id for f in frags}


def test_failure_lists_return_as_many_as_asked(catalog: Catalog) -> None:
    # Given two redrivable failures
    for n in range(2):
        catalog.record_failure(source="dlq", error="boom", message_id=f"m{n}", dataset_id=uuid4(), body="{}")
    # Then a limit of one returns one of each list (the defaults would return both)
    assert len(catalog.list_recent_failures(limit=1)) == 1
    assert len(catalog.list_redrivable_failures(limit=1)) == 1
    assert len(catalog.list_recent_failures()) == len(catalog.list_redrivable_failures()) == 2


def test_a_rejected_upload_is_listed_as_a_failure_but_never_redrivable(catalog: Catalog) -> None:
    # Given a rejected presigned upload's failure and a compaction step's, each with dataset and body
    dataset = uuid4()
    catalog.record_failure(
        source="workflow",
        error="upload rejected: x",
        message_id="register:k",
        dataset_id=dataset,
        error_step="RegisterUpload",
        body='{"key": "k"}',
    )
    catalog.record_failure(
        source="workflow", error="boom", message_id="run:1", dataset_id=dataset, error_step="Compact", body="{}"
    )
    # Then both are listed, and only the step's is redrivable (migration 0012; NULL steps stay
    # redrivable: kills IS DISTINCT FROM as <> and the condition dropped)
    catalog.record_failure(source="dlq", error="bad", message_id="m", dataset_id=dataset, body="{}")
    assert len(catalog.list_recent_failures()) == 3
    assert sorted(f.body for f in catalog.list_redrivable_failures()) == ["{}", "{}"]


def test_the_next_sweep_datasets_are_as_many_as_asked(catalog: Catalog, sql: psycopg.Connection) -> None:
    # Given a touched sweep whose window holds two datasets
    for _ in range(2):
        World(catalog, owner=uuid4(), dataset=uuid4()).fragment()
    sql.execute("UPDATE orphan_sweeps SET watermark = now() - interval '1 hour' WHERE sweep = 'touched'")
    window = catalog.begin_orphan_sweep(owner="a", lease_seconds=60, lookback_seconds=3600)
    assert window.acquired and window.pending == 2
    # Then asking for one gives one
    assert len(catalog.next_orphan_sweep_datasets(owner="a", limit=1)) == 1
    assert len(catalog.next_orphan_sweep_datasets(owner="a")) == 2


# -- the client's memory of recorded schemas ---------------------------------------------------


def _schemas(start: int, count: int) -> dict[str, str]:
    return {hashlib.sha256(str(n).encode()).hexdigest(): "AAAA" for n in range(start, start + count)}


def _stored(sql: psycopg.Connection) -> int:
    row = sql.execute("SELECT count(*) FROM arrow_schemas").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(("recorded", "sent_again"), [(4096, 0), (4097, 1)])
def test_a_client_remembers_up_to_4096_schemas(
    catalog: Catalog, sql: psycopg.Connection, recorded: int, sent_again: int
) -> None:
    # Given a client that recorded 4096 (or 4097) schemas, then one more
    first = _schemas(0, recorded)
    assert catalog.register_schemas(first) == recorded
    assert catalog.register_schemas(_schemas(recorded, 1)) == 1
    # When one of the first is recorded again after the catalog lost them
    sql.execute("DELETE FROM arrow_schemas")
    catalog.register_schemas(dict(list(first.items())[:1]))
    # Then it was not sent at 4096 (still within the bound), and sent again past it (the client's
    # memory was cleared)
    assert _stored(sql) == sent_again


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["08006", "53300", "57P01", "40001", "40P01"])
def test_connection_resource_operator_and_serialization_states_are_retryable(code: str) -> None:
    error = error_from_code(code, "try again", {"attempt": 1})
    assert type(error) is CatalogUnavailable
    assert (error.code, error.message, error.details) == (code, "try again", {"attempt": 1})


@pytest.mark.parametrize("code", ["22P02", "23505", "42883", "P0001", "PGRST301", "0", "4"])
def test_other_unknown_states_are_plain_catalog_errors(code: str) -> None:
    error = error_from_code(code, "no", "detail")
    assert type(error) is CatalogError
    assert (error.code, error.message, error.details) == (code, "no", "detail")


def test_an_error_without_a_state_keeps_the_base_code() -> None:
    error = error_from_code(None, "what happened", None)
    assert type(error) is CatalogError and error.code == "FC000" and error.message == "what happened"
    assert error_from_code("", "empty").code == "FC000"


def test_known_states_keep_their_details() -> None:
    error = error_from_code("FC404", "unknown dataset", {"id": 1})
    assert type(error) is CatalogNotFound and error.details == {"id": 1} and error.code == "FC404"


def test_a_sql_error_detail_reaches_the_typed_error(world: World) -> None:
    # Given a commit whose input another run already removed
    frag = world.fragment()
    first = world.running_run()
    world.catalog.commit_compaction(
        run_id=first, dataset_id=world.dataset, removed=[frag.id], outputs=[world.output_for(first, [frag])]
    )
    second = world.running_run()
    # When another commit names it, Then the error's details name the input (the SQL's DETAIL)
    with pytest.raises(InputsNotLive) as exc:
        world.catalog.commit_compaction(
            run_id=second, dataset_id=world.dataset, removed=[frag.id], outputs=[world.output_for(second, [frag], 1)]
        )
    assert str(frag.id) in str(exc.value.details)


# -- the scheduler's backoff, as the client computes it -----------------------------------------


def test_no_failure_means_no_backoff() -> None:
    backoff = RetryBackoff(base_seconds=60, max_seconds=3600)
    assert backoff.delay_seconds(0) == 0.0
    assert backoff.delay_seconds(-3) == 0.0
    assert backoff.delay_seconds(1) == 60.0


def test_the_backoff_doubling_stops_at_2_to_the_40th() -> None:
    # A maximum high enough not to bind: the exponent's own cap is what limits the delay
    backoff = RetryBackoff(base_seconds=1, max_seconds=2**60)
    assert backoff.delay_seconds(41) == float(2**40)
    assert backoff.delay_seconds(100) == float(2**40)
