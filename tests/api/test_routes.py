"""sanitize-state, trigger-scheduled, dlq-status, datasets/{id}, dlq-redrive, quarantine: happy paths and
bad bodies."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID, uuid4

import pytest

from fusou_compaction.pipeline.models import DlqEnvelope

from .conftest import Api, call, error_of, parquet_bytes, sample_event

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def body_of(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


def status_event(dataset: object, headers: dict[str, str]) -> dict[str, Any]:
    event = sample_event("api_dataset_status.json", headers=headers)
    event["path"] = f"/api/compaction/datasets/{dataset}"
    return event


# -- sanitize-state ----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_sanitize_state_enqueues_one_manual_message(api: Api, who: str) -> None:
    # Given Alice's dataset
    dataset = uuid4()
    api.upload(api.alice, dataset, parquet_bytes())
    headers = api.bearer(api.alice) if who == "owner" else api.admin()
    # When the owner (or an admin) asks for compaction
    response = call(sample_event("api_sanitize_state.json", headers=headers, body={"datasetId": str(dataset)}))
    # Then 202 with the message id, and exactly that message is on the queue
    assert response["statusCode"] == 202, response
    assert body_of(response)["datasetId"] == str(dataset) and body_of(response)["messageId"]
    assert [(m["datasetId"], m["priority"]) for m in api.drain()] == [(str(dataset), "manual")]


def test_sanitize_state_of_an_unknown_dataset_is_404(api: Api) -> None:
    response = call(sample_event("api_sanitize_state.json", headers=api.admin(), body={"datasetId": str(uuid4())}))
    assert error_of(response)[:2] == (404, "not_found")
    assert api.drain() == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "bad_request"),
        ("", 400, "bad_request"),
        ("[1, 2]", 400, "bad_request"),
        ('"a string"', 400, "bad_request"),
        ("{}", 422, "invalid_field"),
        ('{"datasetId": "nope"}', 422, "invalid_field"),
        ('{"datasetId": 42}', 422, "invalid_field"),
        ('{"datasetId": "5f0c2a9e-1b7d-4c3e-9a51-3d2b8e7f6a10", "extra": 1}', 422, "invalid_field"),
    ],
)
def test_sanitize_state_bad_bodies(api: Api, body: str, status: int, code: str) -> None:
    event = sample_event("api_sanitize_state.json", headers=api.admin(), body=body)
    if body == "":
        event["body"] = None
    assert error_of(call(event))[:2] == (status, code)


# -- trigger-scheduled -------------------------------------------------------------------------


def test_trigger_scheduled_claims_pending_datasets_and_enqueues_them_once(api: Api) -> None:
    # Given two datasets that need compaction
    datasets = {uuid4(), uuid4()}
    for i, d in enumerate(datasets):
        api.upload(api.alice, d, parquet_bytes(seed=i))
    # When an admin triggers the scheduled run twice
    first = call(sample_event("api_trigger_scheduled.json", headers=api.admin()))
    second = call(sample_event("api_trigger_scheduled.json", headers=api.admin()))
    # Then both are enqueued once (the second call finds them claimed), with priority scheduled
    assert first["statusCode"] == 202, first
    assert set(map(UUID, body_of(first)["enqueued"])) == datasets and body_of(first)["failed"] == {}
    assert body_of(second) == {"enqueued": [], "failed": {}}
    messages = api.drain()
    assert sorted(m["datasetId"] for m in messages) == sorted(map(str, datasets))
    assert {m["priority"] for m in messages} == {"scheduled"}


def test_trigger_scheduled_honours_the_limit_and_an_empty_body(api: Api) -> None:
    for i in range(3):
        api.upload(api.alice, uuid4(), parquet_bytes(seed=i))
    limited = call(sample_event("api_trigger_scheduled.json", headers=api.admin(), body={"limit": 2}))
    assert len(body_of(limited)["enqueued"]) == 2
    event = sample_event("api_trigger_scheduled.json", headers=api.admin())
    event["body"] = None
    assert len(body_of(call(event))["enqueued"]) == 1


def test_trigger_scheduled_reports_failed_sends_honestly(api: Api) -> None:
    # Given a queue that does not exist (every send fails)
    dataset = uuid4()
    api.upload(api.alice, dataset, parquet_bytes())
    gone = api.sqs.create_queue(QueueName=f"gone-{uuid4().hex[:8]}")["QueueUrl"]
    api.sqs.delete_queue(QueueUrl=gone)
    api.deps.queue.url = gone  # type: ignore[misc]
    # When triggered, Then the dataset is reported failed, not enqueued, and its claim is released
    body = body_of(call(sample_event("api_trigger_scheduled.json", headers=api.admin())))
    assert body["enqueued"] == [] and list(body["failed"]) == [str(dataset)]
    assert api.deps.catalog.get_dataset(dataset).claimed_by is None


@pytest.mark.parametrize("body", [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"other": 1}])
def test_trigger_scheduled_bad_limits_are_422(api: Api, body: dict[str, Any]) -> None:
    assert error_of(call(sample_event("api_trigger_scheduled.json", headers=api.admin(), body=body)))[:2] == (
        422,
        "invalid_field",
    )


# -- datasets/{id} -----------------------------------------------------------------------------


def test_dataset_status_is_the_cli_status_body(api: Api) -> None:
    # Given two fragments in one table and one in another
    dataset = uuid4()
    a = api.upload(api.alice, dataset, parquet_bytes(3, seed=1))
    b = api.upload(api.alice, dataset, parquet_bytes(4, seed=2))
    c = api.upload(api.alice, dataset, parquet_bytes(5, seed=3), table="ships")
    # When the owner asks
    response = call(status_event(dataset, api.bearer(api.alice)))
    # Then the body is DESIGN's `status --json`
    assert response["statusCode"] == 200, response
    body = body_of(response)
    assert set(body) == {"datasetId", "compactionNeeded", "tables", "runs", "quarantined"}
    assert body["datasetId"] == str(dataset) and body["compactionNeeded"] is True and body["runs"] == []
    assert body["quarantined"] == []
    battles = body["tables"]["battles"]
    assert {k: v for k, v in battles.items() if k != "files"} == {
        "fragments": 2,
        "compacted": 0,
        "rows": 7,
        "bytes": a["sizeBytes"] + b["sizeBytes"],
    }
    assert battles["files"][0] == {
        "key": f"datasets/{dataset}/battles/fragments/{a['sha256']}.parquet",
        "kind": "fragment",
        "rows": 3,
        "bytes": a["sizeBytes"],
    }
    assert body["tables"]["ships"]["rows"] == 5 and body["tables"]["ships"]["bytes"] == c["sizeBytes"]


def test_dataset_status_lists_runs_newest_first(api: Api) -> None:
    dataset = uuid4()
    api.upload(api.alice, dataset, parquet_bytes())
    runs = [uuid4(), uuid4()]
    for run in runs:
        api.deps.catalog.begin_run(run_id=run, dataset_id=dataset, trigger="manual")
    api.deps.catalog.record_failure(
        source="workflow", error="boom", run_id=runs[1], dataset_id=dataset, error_step="Compact"
    )
    body = body_of(call(status_event(dataset, api.admin())))
    assert [r["runId"] for r in body["runs"]] == [str(runs[1]), str(runs[0])]
    assert body["runs"][0] == {
        "runId": str(runs[1]),
        "status": "failed",
        "trigger": "manual",
        "errorStep": "Compact",
        "error": "boom",
    }


def test_dataset_status_unknown_is_404_and_bad_id_is_422(api: Api) -> None:
    assert error_of(call(status_event(uuid4(), api.admin())))[:2] == (404, "not_found")
    assert error_of(call(status_event("not-a-uuid", api.admin())))[:2] == (422, "invalid_field")


# -- dlq-status --------------------------------------------------------------------------------


def test_dlq_status_is_the_cli_dlq_status_body(api: Api) -> None:
    # Given one message waiting, one in the DLQ, and one recorded failure
    dataset = uuid4()
    api.deps.queue.send(json.dumps({"datasetId": str(dataset), "priority": "manual"}))
    api.deps.dlq.send("{bad json")
    api.deps.catalog.record_failure(
        source="dlq", error="invalid message", message_id="m-1", error_step="Consumer", body="{bad json"
    )
    # When an admin asks
    response = call(sample_event("api_dlq_status.json", headers=api.admin()))
    # Then the body is DESIGN's `dlq-status --json`
    assert response["statusCode"] == 200, response
    body = body_of(response)
    assert set(body) == {"queue", "dlq", "recentFailures", "quarantined"}
    assert body["quarantined"] == {"fragments": 0, "datasets": 0, "rows": 0, "oldestAt": None}
    assert body["queue"]["visible"] == 1 and body["queue"]["inFlight"] == 0
    # The main queue's age comes from CloudWatch (absent on moto); the DLQ's is peeked.
    assert body["queue"]["oldestAgeSeconds"] is None
    assert body["dlq"]["visible"] == 1 and isinstance(body["dlq"]["oldestAgeSeconds"], int)
    [failure] = body["recentFailures"]
    assert set(failure) == {"datasetId", "runId", "errorStep", "error", "message", "at"}
    assert failure["message"] == "{bad json" and failure["errorStep"] == "Consumer" and failure["datasetId"] is None


def test_empty_queues_have_no_oldest_age(api: Api) -> None:
    body = body_of(call(sample_event("api_dlq_status.json", headers=api.admin())))
    assert body["queue"] == {"visible": 0, "inFlight": 0, "oldestAgeSeconds": None}
    assert body["recentFailures"] == []


def test_polling_dlq_status_never_moves_messages_to_the_dlq(api: Api) -> None:
    api.deps.queue.send(json.dumps({"datasetId": str(uuid4())}))
    for _ in range(4):
        call(sample_event("api_dlq_status.json", headers=api.admin()))
    assert api.deps.dlq.depth().visible == 0


# -- dlq-redrive -------------------------------------------------------------------------------


def test_dlq_redrive_moves_a_bounded_number_and_loses_none(api: Api) -> None:
    # Given three messages in the DLQ, one of them a workflow-failure envelope
    original = json.dumps({"datasetId": str(uuid4()), "priority": "manual"})
    envelope = DlqEnvelope(
        message=json.loads(original),
        body=original,
        message_id="m-9",
        dataset_id=None,
        run_id=None,
        error_step="Compact",
        error="Boom",
    ).model_dump_json(by_alias=True)
    bodies = [json.dumps({"datasetId": str(uuid4())}), json.dumps({"datasetId": str(uuid4())}), envelope]
    for b in bodies:
        api.deps.dlq.send(b)
    # When an admin redrives at most 2, then the rest
    first = call(sample_event("api_dlq_redrive.json", headers=api.admin(), body={"max": 2}))
    assert body_of(first) == {"moved": 2, "failed": 0}
    rest = call(sample_event("api_dlq_redrive.json", headers=api.admin(), body={"max": 10}))
    assert body_of(rest) == {"moved": 1, "failed": 0}
    # Then every message is on the main queue exactly once (the envelope as its original body)
    moved = sorted(json.dumps(m) for m in api.drain())
    expected = sorted(json.dumps(json.loads(b)) for b in [*bodies[:2], original])
    assert moved == expected
    assert api.deps.dlq.depth().visible == 0 and api.deps.dlq.depth().in_flight == 0


def test_redrive_resends_recorded_failures_once_the_dlq_lambda_acknowledged_them(api: Api) -> None:
    # Given failures the DLQ Lambda recorded (and acknowledged): one redrivable, one that never parsed
    dataset = uuid4()
    body = json.dumps({"datasetId": str(dataset), "triggeredAt": "2025-12-17T00:00:00Z", "priority": "manual"})
    api.deps.catalog.record_failure(
        source="dlq",
        error="Compact failed",
        message_id=f"m-{uuid4()}",
        dataset_id=dataset,
        error_step="Compact",
        body=body,
    )
    api.deps.catalog.record_failure(
        source="dlq", error="invalid message", message_id=f"m-{uuid4()}", error_step="Consumer", body="{bad json"
    )
    # When an admin redrives twice
    first = body_of(call(sample_event("api_dlq_redrive.json", headers=api.admin(), body={"max": 10})))
    again = body_of(call(sample_event("api_dlq_redrive.json", headers=api.admin(), body={"max": 10})))
    # Then the original body is back on the queue once; the unparseable one is not resent
    assert (first, again) == ({"moved": 1, "failed": 0}, {"moved": 0, "failed": 0})
    assert api.drain() == [json.loads(body)]


def test_redrive_of_an_empty_dlq_moves_nothing(api: Api) -> None:
    assert body_of(call(sample_event("api_dlq_redrive.json", headers=api.admin()))) == {"moved": 0, "failed": 0}


@pytest.mark.parametrize("body", [{"max": 0}, {"max": 101}, {"max": -1}, {"max": "all"}])
def test_redrive_count_is_bounded(api: Api, body: dict[str, Any]) -> None:
    assert error_of(call(sample_event("api_dlq_redrive.json", headers=api.admin(), body=body)))[:2] == (
        422,
        "invalid_field",
    )


def test_redrive_keeps_messages_it_could_not_send(api: Api) -> None:
    # Given a DLQ message and a main queue that no longer exists
    api.deps.dlq.send('{"datasetId": "5f0c2a9e-1b7d-4c3e-9a51-3d2b8e7f6a10"}')
    gone = api.sqs.create_queue(QueueName=f"gone-{uuid4().hex[:8]}")["QueueUrl"]
    api.sqs.delete_queue(QueueUrl=gone)
    api.deps.queue.url = gone  # type: ignore[misc]
    # When redriven, Then it is reported failed and still in the DLQ (in flight until its timeout)
    assert body_of(call(sample_event("api_dlq_redrive.json", headers=api.admin(), body={"max": 1}))) == {
        "moved": 0,
        "failed": 1,
    }
    depth = api.deps.dlq.depth()
    assert depth.visible + depth.in_flight == 1


# -- anything else -----------------------------------------------------------------------------


def test_unknown_route_is_404_in_the_error_shape(api: Api) -> None:
    event = sample_event("api_dlq_status.json", headers=api.admin())
    event["path"] = "/api/compaction/nope"
    assert error_of(call(event))[:2] == (404, "not_found")


def test_openapi_json_is_served(api: Api, http) -> None:  # type: ignore[no-untyped-def]
    r = http("GET", "/api/compaction/openapi.json")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert "/api/compaction/upload" in r.json()["paths"]


# -- quarantine --------------------------------------------------------------------------------


def _quarantined(api: Api, rows: int = 3) -> tuple[UUID, UUID, UUID]:
    """Alice's dataset with one fragment quarantined by a run (as the Compact step does it)."""
    dataset = uuid4()
    stored = api.upload(api.alice, dataset, parquet_bytes(rows, seed=rows))
    run = uuid4()
    catalog = api.deps.catalog
    catalog.begin_run(run_id=run, dataset_id=dataset, trigger="manual")
    assert catalog.acquire_lease(dataset_id=dataset, run_id=run, lease_seconds=60).acquired
    catalog.record_run_status(run, "running")
    catalog.quarantine_file(
        run_id=run,
        dataset_id=dataset,
        file_id=UUID(stored["fragmentId"]),
        step="Compact",
        reason="CorruptInputError: truncated",
    )
    catalog.record_run_status(run, "failed", {"error": "test"})
    return dataset, UUID(stored["fragmentId"]), run


def quarantine_event(api: Api, fragment: object, action: str) -> dict[str, Any]:
    body = {"fragmentId": str(fragment), "action": action}
    return sample_event("api_quarantine.json", headers=api.admin(), body=body)


def test_status_and_dlq_status_list_and_count_quarantined_fragments(api: Api) -> None:
    # Given a dataset whose fragment was quarantined
    dataset, fragment, run = _quarantined(api, rows=4)
    # When the owner asks for its status and an admin for the DLQ's
    status = body_of(call(status_event(dataset, api.bearer(api.alice))))
    dlq = body_of(call(sample_event("api_dlq_status.json", headers=api.admin())))
    # Then the fragment is listed with its reason, step and run, in no table, and counted
    [entry] = status["quarantined"]
    assert set(entry) == {"fragmentId", "table", "key", "reason", "step", "at", "runId", "rows"}
    assert (entry["fragmentId"], entry["table"], entry["step"], entry["runId"], entry["rows"]) == (
        str(fragment),
        "battles",
        "Compact",
        str(run),
        4,
    )
    assert entry["reason"] == "CorruptInputError: truncated" and entry["key"].startswith(f"datasets/{dataset}/")
    assert status["tables"] == {} and status["compactionNeeded"] is False
    assert (dlq["quarantined"]["fragments"], dlq["quarantined"]["datasets"], dlq["quarantined"]["rows"]) == (1, 1, 4)


def test_an_admin_readmits_a_quarantined_fragment(api: Api) -> None:
    # Given a quarantined fragment
    dataset, fragment, _ = _quarantined(api)
    # When an admin re-admits it
    response = call(quarantine_event(api, fragment, "readmit"))
    # Then it is live again and its dataset pending; doing it again changes nothing
    assert response["statusCode"] == 200, response
    assert body_of(response) == {
        "fragmentId": str(fragment),
        "datasetId": str(dataset),
        "action": "readmit",
        "changed": True,
        "compactionNeeded": True,
    }
    status = body_of(call(status_event(dataset, api.admin())))
    assert status["quarantined"] == [] and status["tables"]["battles"]["fragments"] == 1
    assert body_of(call(quarantine_event(api, fragment, "readmit")))["changed"] is False


def test_an_admin_deletes_a_quarantined_fragment_and_the_sweep_may_take_its_object(api: Api) -> None:
    dataset, fragment, _ = _quarantined(api)
    response = call(quarantine_event(api, fragment, "delete"))
    assert response["statusCode"] == 200, response
    assert body_of(response)["changed"] is True and body_of(response)["compactionNeeded"] is False
    status = body_of(call(status_event(dataset, api.admin())))
    assert status["quarantined"] == [] and status["tables"] == {}
    assert [g.id for g in api.deps.catalog.list_garbage()] == [fragment]
    # A deleted fragment cannot come back
    assert error_of(call(quarantine_event(api, fragment, "readmit")))[:2] == (409, "conflict")
    assert body_of(call(quarantine_event(api, fragment, "delete")))["changed"] is False


def test_only_a_quarantined_fragment_can_be_deleted_and_an_unknown_one_is_404(api: Api) -> None:
    dataset = uuid4()
    stored = api.upload(api.alice, dataset, parquet_bytes())
    assert error_of(call(quarantine_event(api, stored["fragmentId"], "delete")))[:2] == (422, "invalid_field")
    assert error_of(call(quarantine_event(api, uuid4(), "readmit")))[:2] == (404, "not_found")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("{}", 422),
        ('{"fragmentId": "nope", "action": "readmit"}', 422),
        (f'{{"fragmentId": "{uuid4()}", "action": "purge"}}', 422),
        (f'{{"fragmentId": "{uuid4()}"}}', 422),
        ("[1]", 400),
    ],
)
def test_a_bad_quarantine_body_is_refused(api: Api, body: str, status: int) -> None:
    assert error_of(call(sample_event("api_quarantine.json", headers=api.admin(), body=body)))[0] == status
