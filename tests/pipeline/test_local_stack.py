"""The whole pipeline on the local stack: real pollers, real handlers, the local state machine runner,
PostgreSQL and moto's SQS (with real redrive) and S3."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID, uuid4

import boto3

from fusou_compaction.adapters.alerts import LogAlerts
from fusou_compaction.handlers import consumer, dlq, scheduled, steps
from fusou_compaction.local.runner import LocalContext
from fusou_compaction.local.stack import LocalStack

from ..conftest import load_event
from .conftest import live_rows, row_multiset, seed_body, upload_fragments, wait_for

EVENT_DATASET = "3f1c2a5e-8b7d-4c1e-9f0a-2b6d8e4c7a91"


def event_for(name: str, dataset: UUID) -> dict[str, Any]:
    """A sample payload from events/, pointed at this test's dataset."""
    return json.loads(json.dumps(load_event(name)).replace(EVENT_DATASET, str(dataset)))


def sqs(stack: LocalStack) -> Any:
    assert stack.aws is not None
    return boto3.client("sqs", endpoint_url=stack.aws.endpoint_url, region_name=stack.aws.region)


def runs_of(stack: LocalStack, dataset: UUID) -> list[Any]:
    assert stack.deps is not None
    return stack.deps.catalog.dataset_status(dataset).runs


def settled(stack: LocalStack, dataset: UUID) -> bool:
    runs = runs_of(stack, dataset)
    return bool(runs) and all(r.status not in ("queued", "running") for r in runs)


def test_the_seeds_message_sent_with_sqs_compacts_the_dataset(stack: LocalStack) -> None:
    # Given a dataset with fragments
    deps = stack.deps
    assert deps is not None
    up = upload_fragments(deps.catalog, deps.store, fragments=4)
    # When the seed's exact body is sent to the queue, as `aws sqs send-message` would
    sqs(stack).send_message(QueueUrl=deps.queue.url, MessageBody=seed_body(up.dataset))
    # Then a run succeeds and every table holds exactly its uploaded rows
    wait_for(lambda: settled(stack, up.dataset))
    (run,) = runs_of(stack, up.dataset)
    assert run.status == "succeeded" and run.rows_in == run.rows_out
    for table, uploaded in up.rows.items():
        assert row_multiset(live_rows(deps.catalog, deps.store, up.dataset, table)) == row_multiset(uploaded)  # type: ignore[arg-type]


def test_five_concurrent_deliveries_of_one_message_commit_once(stack: LocalStack) -> None:
    # Given one SQS message delivered five times at once (same message id)
    deps = stack.deps
    assert deps is not None
    up = upload_fragments(deps.catalog, deps.store, fragments=3)
    event = event_for("sqs_compaction_batch.json", up.dataset)
    event["Records"] = event["Records"][:1]
    barrier = threading.Barrier(5)

    def deliver(_: int) -> Any:
        barrier.wait()
        return consumer.handler(event, LocalContext("consumer"))

    with ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(deliver, range(5)))
    # Then every delivery succeeds, one execution ran, one commit happened, no row doubled
    assert all(r == {"batchItemFailures": []} for r in responses)
    executions = [e for e in stack.sfn.executions.values() if e.name.startswith(str(up.dataset))]  # type: ignore[union-attr]
    assert len(executions) == 1
    wait_for(lambda: settled(stack, up.dataset))
    runs = runs_of(stack, up.dataset)
    assert [r.status for r in runs] == ["succeeded"]
    for table, uploaded in up.rows.items():
        assert row_multiset(live_rows(deps.catalog, deps.store, up.dataset, table)) == row_multiset(uploaded)  # type: ignore[arg-type]


def test_distinct_messages_for_one_dataset_never_double_compact(stack: LocalStack) -> None:
    deps = stack.deps
    assert deps is not None
    up = upload_fragments(deps.catalog, deps.store, fragments=3)
    client = sqs(stack)
    for _ in range(4):
        client.send_message(QueueUrl=deps.queue.url, MessageBody=seed_body(up.dataset))
    wait_for(lambda: len(runs_of(stack, up.dataset)) == 4 and settled(stack, up.dataset))
    statuses = sorted(r.status for r in runs_of(stack, up.dataset))
    assert statuses == ["skipped", "skipped", "skipped", "succeeded"]
    for table, uploaded in up.rows.items():
        assert row_multiset(live_rows(deps.catalog, deps.store, up.dataset, table)) == row_multiset(uploaded)  # type: ignore[arg-type]


def test_a_poison_message_reaches_the_dlq_after_exactly_three_receives_and_is_recorded(stack: LocalStack) -> None:
    deps = stack.deps
    assert deps is not None
    seen: list[str] = []
    original = consumer.handler

    def counting(event: dict[str, Any], context: Any) -> Any:
        seen.extend(r["body"] for r in event["Records"])
        return original(event, context)

    poller = next(t for t in stack._threads if t.name == "consumer")
    poller.handler = counting
    try:
        body = f'{{"datasetId": "not-a-uuid-{uuid4()}"}}'
        sqs(stack).send_message(QueueUrl=deps.queue.url, MessageBody=body)
        failure = wait_for(
            lambda: next((f for f in deps.catalog.list_recent_failures(50) if f.body == body), None), timeout=60
        )
    finally:
        poller.handler = original
    assert seen.count(body) == 3
    assert failure.error_step == "Consumer" and "invalid message" in failure.error


def test_a_message_for_an_unknown_dataset_ends_in_the_dlq_with_its_dataset(stack: LocalStack) -> None:
    deps = stack.deps
    assert deps is not None
    ghost = uuid4()
    sqs(stack).send_message(QueueUrl=deps.queue.url, MessageBody=seed_body(ghost))
    failure = wait_for(
        lambda: next((f for f in deps.catalog.list_recent_failures(50) if f.dataset_id == ghost), None), timeout=60
    )
    assert failure.error_step == "Consumer" and failure.body == seed_body(ghost)


def test_a_compact_failing_for_no_inputs_fault_fails_the_run_at_compact_and_reaches_the_dlq(
    stack: LocalStack,
) -> None:
    # Given a Compact step that fails with an error no input is to blame for (a bug, not retried)
    deps = stack.deps
    assert deps is not None
    up = upload_fragments(deps.catalog, deps.store, fragments=2, tables=("battle",))
    before = deps.catalog.list_live_files(up.dataset)
    runner = stack.sfn.runner  # type: ignore[union-attr]
    original = runner.handlers["compact"]

    def broken(event: dict[str, Any], context: Any) -> Any:
        raise RuntimeError("a bug in the step")

    runner.handlers["compact"] = broken
    try:
        # When the dataset is compacted
        sqs(stack).send_message(QueueUrl=deps.queue.url, MessageBody=seed_body(up.dataset))
        wait_for(lambda: settled(stack, up.dataset))
    finally:
        runner.handlers["compact"] = original
    # Then the run fails at Compact, the failure is recorded from the DLQ, nothing is quarantined
    (run,) = runs_of(stack, up.dataset)
    assert (run.status, run.error_step) == ("failed", "Compact")
    assert "a bug in the step" in (run.error or "")
    failure = wait_for(
        lambda: next((f for f in deps.catalog.list_recent_failures(50) if f.run_id == run.id), None), timeout=30
    )
    assert failure.error_step == "Compact" and failure.body == seed_body(up.dataset)
    assert [f.id for f in deps.catalog.list_live_files(up.dataset)] == [f.id for f in before]
    assert deps.catalog.list_quarantined(up.dataset) == []
    assert deps.catalog.get_dataset(up.dataset).lease_owner is None


def test_a_corrupt_or_missing_object_is_quarantined_and_the_run_succeeds(stack: LocalStack) -> None:
    # Given three fragments: one whose bytes are not Parquet any more, one whose object is gone
    deps = stack.deps
    assert deps is not None
    up = upload_fragments(deps.catalog, deps.store, fragments=3, tables=("battle",))
    corrupt, missing, good = deps.catalog.list_live_files(up.dataset)
    deps.store.put(corrupt.object_key, b"PAR1 this is not parquet PAR1")
    deps.store.delete_many([missing.object_key])
    # When the dataset is compacted
    sqs(stack).send_message(QueueUrl=deps.queue.url, MessageBody=seed_body(up.dataset))
    wait_for(lambda: settled(stack, up.dataset))
    # Then the run succeeded with the good fragment's rows, and the other two are quarantined
    (run,) = runs_of(stack, up.dataset)
    assert run.status == "succeeded" and run.rows_in == run.rows_out == good.row_count
    quarantined = {q.id: q for q in deps.catalog.list_quarantined(up.dataset)}
    assert set(quarantined) == {corrupt.id, missing.id}
    assert all(q.quarantined_by_run == run.id and q.quarantine_step == "Compact" for q in quarantined.values())
    assert "missing" in (quarantined[missing.id].quarantine_reason or "")
    assert [f.kind for f in deps.catalog.list_live_files(up.dataset)] == ["compacted"]
    assert not deps.catalog.get_dataset(up.dataset).compaction_needed


def test_a_fragment_uploaded_during_a_run_stays_live_and_pending(stack: LocalStack) -> None:
    # Given a run that is inside its Compact step when a new fragment arrives
    deps = stack.deps
    assert deps is not None
    up = upload_fragments(deps.catalog, deps.store, fragments=2, tables=("battle",))
    runner = stack.sfn.runner  # type: ignore[union-attr]
    original = runner.handlers["compact"]
    late: list[Any] = []

    def compact_with_upload(event: dict[str, Any], context: Any) -> Any:
        if not late:
            late.append(
                upload_fragments(
                    deps.catalog,
                    deps.store,
                    fragments=1,
                    tables=("battle",),
                    seed=99,
                    dataset=up.dataset,
                    owner=up.owner,
                )
            )
        return original(event, context)

    runner.handlers["compact"] = compact_with_upload
    try:
        sqs(stack).send_message(QueueUrl=deps.queue.url, MessageBody=seed_body(up.dataset))
        wait_for(lambda: settled(stack, up.dataset))
    finally:
        runner.handlers["compact"] = original
    # Then the run succeeded, the late fragment is live and the dataset still needs compaction
    assert runs_of(stack, up.dataset)[0].status == "succeeded"
    live = deps.catalog.list_live_files(up.dataset)
    assert [f.kind for f in live] == ["compacted", "fragment"]
    assert deps.catalog.get_dataset(up.dataset).compaction_needed


def test_a_transient_catalog_error_is_retried_by_the_state_machine(stack: LocalStack) -> None:
    from fusou_compaction.catalog.errors import CatalogUnavailable

    deps = stack.deps
    assert deps is not None
    up = upload_fragments(deps.catalog, deps.store, fragments=1, tables=("battle",))
    runner = stack.sfn.runner  # type: ignore[union-attr]
    original = runner.handlers["update"]
    calls: list[int] = []

    def flaky_update(event: dict[str, Any], context: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise CatalogUnavailable("connection reset")
        return original(event, context)

    runner.handlers["update"] = flaky_update
    try:
        sqs(stack).send_message(QueueUrl=deps.queue.url, MessageBody=seed_body(up.dataset))
        wait_for(lambda: settled(stack, up.dataset))
    finally:
        runner.handlers["update"] = original
    ex = next(e for e in stack.sfn.executions.values() if e.name.startswith(str(up.dataset)))  # type: ignore[union-attr]
    assert [(h.state, h.error) for h in ex.history if h.state == "Update"] == [
        ("Update", "CatalogUnavailable"),
        ("Update", None),
    ]
    assert runs_of(stack, up.dataset)[0].status == "succeeded"


def test_the_scheduled_handler_enqueues_pending_datasets_once(stack: LocalStack) -> None:
    deps = stack.deps
    assert deps is not None
    ups = [upload_fragments(deps.catalog, deps.store, fragments=1, tables=("battle",)) for _ in range(2)]
    first = scheduled.handler(load_event("eventbridge_scheduled.json"), LocalContext("scheduled"))
    second = scheduled.handler(load_event("eventbridge_scheduled.json"), LocalContext("scheduled"))
    assert {str(u.dataset) for u in ups} <= set(first["enqueued"])
    assert not {str(u.dataset) for u in ups} & set(second["enqueued"])
    for u in ups:
        wait_for(lambda u=u: settled(stack, u.dataset))
        assert runs_of(stack, u.dataset)[0].trigger == "scheduled"


def test_the_consumer_reports_only_the_bad_record_of_a_batch(stack: LocalStack) -> None:
    deps = stack.deps
    assert deps is not None
    up = upload_fragments(deps.catalog, deps.store, fragments=1, tables=("battle",))
    event = event_for("sqs_compaction_batch.json", up.dataset)
    result = consumer.handler(event, LocalContext("consumer"))
    assert result == {"batchItemFailures": [{"itemIdentifier": event["Records"][2]["messageId"]}]}
    wait_for(lambda: settled(stack, up.dataset))


def test_the_dlq_handler_records_every_message_and_never_fails(stack: LocalStack) -> None:
    deps = stack.deps
    assert deps is not None
    dataset = uuid4()
    event = event_for("sqs_dlq_batch.json", dataset)
    poison = f"{{not json {uuid4()}"  # unique on this stack: counted exactly below
    event["Records"][1]["body"] = poison
    for r in event["Records"]:
        r["messageId"] = str(uuid4())  # fresh ids: the handler records each message once
    alerts = deps.alerts
    assert isinstance(alerts, LogAlerts)
    alerted = len(alerts.published)
    # When the batch is delivered twice (SQS is at-least-once)
    assert dlq.handler(event, LocalContext("dlq")) == {"batchItemFailures": []}
    assert dlq.handler(event, LocalContext("dlq")) == {"batchItemFailures": []}
    # Then each message is recorded once and alerted once
    bodies = [f.body for f in deps.catalog.list_recent_failures(100)]
    envelope = json.loads(event["Records"][0]["body"])
    assert bodies.count(envelope["body"]) == 1 and bodies.count(poison) == 1
    # (a workflow failure is recorded under its original message's id, carried in the envelope)
    expected = sorted([envelope["messageId"], event["Records"][1]["messageId"]])
    assert sorted(m["messageId"] for _, m in alerts.published[alerted:] if m["messageId"] in expected) == expected
    recorded = next(f for f in deps.catalog.list_recent_failures(100) if f.dataset_id == dataset)
    assert (recorded.error_step, recorded.run_id) == ("Compact", UUID(envelope["runId"]))


def test_every_step_event_parses_into_its_model() -> None:
    from fusou_compaction.logic.steps import state_input
    from fusou_compaction.pipeline.definition import MapOverBins, Task, build_pipeline
    from fusou_compaction.pipeline.models import CompactItem, FailureInput, MapRunOutput, PlanResult

    assert state_input(load_event("step_validate.json")).message.priority == "manual"
    assert state_input(load_event("step_get_metadata.json")).run_id
    assert CompactItem.model_validate(load_event("step_compact.json")).bin.inputs[0].schema_fingerprint  # type: ignore[index]
    upd = load_event("step_update.json")
    assert PlanResult.model_validate(upd["plan"]).bin_count and MapRunOutput.model_validate(upd["compact"])
    failure = FailureInput.model_validate(load_event("step_record_failure.json"))
    assert "Compact" in failure.failure and failure.plan is not None
    # And every task of the state machine names a handler that exists (the events above feed them)
    pipeline = build_pipeline()
    tasks = [s for s in pipeline.states.values() if isinstance(s, Task)]
    tasks += [s.iterator for s in pipeline.states.values() if isinstance(s, MapOverBins)]
    assert {t.function for t in tasks} == {"validate", "get_metadata", "compact", "update", "record_failure"}
    assert all(callable(getattr(steps, t.function)) for t in tasks)
