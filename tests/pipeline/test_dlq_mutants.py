"""logic/dlq.py: what mutation testing (make mutate MODULE=logic.dlq) found untested.

The DLQ tests run the whole local stack and check the receive count in the recorded error. Here
``describe`` and ``handle_dlq_message`` are called directly, with a catalog stand-in that keeps
what ``record_failure`` was given and alerts that keep what was published: each field of the
record, of the failure row and of the alert is pinned, for a workflow-failure envelope, a message
the consumer could not start and a message that is not one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import uuid4

import pytest

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.models import FailureRecorded
from fusou_compaction.logic.dlq import CONSUMER_STEP, DlqRecord, describe, handle_dlq_message, moved_after
from fusou_compaction.pipeline.models import DlqEnvelope

DATASET = uuid4()
RUN = uuid4()
ORIGINAL = json.dumps({"datasetId": str(DATASET), "priority": "manual"})
ENVELOPE = DlqEnvelope(
    message=json.loads(ORIGINAL),
    body=ORIGINAL,
    message_id="m-original",
    dataset_id=DATASET,
    run_id=RUN,
    error_step="Compact",
    error="CorruptInputError: truncated",
).model_dump_json(by_alias=True)
NOT_STARTED = "the consumer could not start a run (unknown dataset or orchestrator failure)"


@dataclass
class Recorder:
    """The catalog's record_failure: keeps its arguments; ``recorded`` says whether it was new."""

    recorded: bool = True
    calls: list[dict[str, Any]] = field(default_factory=list)

    def record_failure(self, **kwargs: Any) -> FailureRecorded:
        self.calls.append(kwargs)
        return FailureRecorded(recorded=self.recorded, failure_id=1 if self.recorded else None)


@dataclass
class Alerts:
    published: list[tuple[Any, Any]] = field(default_factory=list)

    def publish(self, subject: str, message: dict[str, Any]) -> None:
        self.published.append((subject, message))


def handle(body: str, catalog: Recorder, alerts: Alerts, receive_count: int | None = 4) -> tuple[DlqRecord, bool]:
    return handle_dlq_message(
        body,
        message_id="m-dlq",
        receive_count=receive_count,
        max_receive_count=3,
        catalog=cast(Catalog, catalog),
        alerts=alerts,
    )


def test_a_message_received_exactly_max_times_was_not_moved_by_the_queue() -> None:
    # Given a message sent to the DLQ directly and received by it as often as the queue's
    # maxReceiveCount; Then no moving count is stated (kills `>=` for `>`)
    assert moved_after(3, 3, None) is None
    assert moved_after(4, 3, None) == 3


def test_a_workflow_failure_envelope_is_described_by_its_own_fields() -> None:
    # Given a workflow-failure envelope in the DLQ, When described
    record = describe(ENVELOPE, "m-dlq", 4, max_receive_count=3)
    # Then every field comes from the envelope, in place (kills env = None, the body None, and
    # each field None or dropped)
    assert record == DlqRecord(DATASET, RUN, "Compact", "CorruptInputError: truncated", ORIGINAL, "m-original")


def test_a_message_the_consumer_could_not_start_names_its_dataset_and_why() -> None:
    # Given a valid compaction message the consumer gave up on (moved after three receives)
    record = describe(ORIGINAL, "m-dlq", 4, max_receive_count=3)
    # Then the record names its dataset, the Consumer step, the message and the reason (kills
    # dataset_id None, the reason None or changed, the step None, the message id None)
    assert record == DlqRecord(DATASET, None, CONSUMER_STEP, f"{NOT_STARTED} after 3 receives", ORIGINAL, "m-dlq")
    assert CONSUMER_STEP == "Consumer"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"datasetId": "not-a-uuid"}', "invalid message: Input should be a valid UUID"),
        ("{bad json", "invalid message: Invalid JSON"),
    ],
)
def test_a_message_that_is_not_one_says_pydantics_first_complaint(body: str, reason: str) -> None:
    # Given a body that is no compaction message, sent to the DLQ directly (one receive)
    record = describe(body, "m-dlq", 1, max_receive_count=3)
    # Then the reason is pydantic's first message, with nothing about receives after it (kills
    # reason None, `if errors() and False` (the whole error text) and "XXXX" for no receives)
    assert record.error.startswith(reason), record.error
    assert "\n" not in record.error and not record.error.endswith("XX")
    assert (record.dataset_id, record.error_step, record.message_id) == (None, CONSUMER_STEP, "m-dlq")


def test_a_new_failure_is_recorded_and_alerted_with_every_field() -> None:
    catalog, alerts = Recorder(), Alerts()
    # Given a workflow-failure envelope, When the DLQ function handles it
    _, new = handle(ENVELOPE, catalog, alerts)
    # Then the catalog gets each field of the record (kills each argument None or dropped)
    assert new is True
    assert catalog.calls == [
        {
            "source": "dlq",
            "error": "CorruptInputError: truncated",
            "message_id": "m-original",
            "dataset_id": DATASET,
            "run_id": RUN,
            "error_step": "Compact",
            "body": ORIGINAL,
        }
    ]
    # And one alert names the step and carries each field under its own key (kills the alert None,
    # its subject None or dropped, each key renamed)
    assert alerts.published == [
        (
            "FUSOU compaction failed at Compact",
            {
                "datasetId": DATASET,
                "runId": RUN,
                "errorStep": "Compact",
                "error": "CorruptInputError: truncated",
                "messageId": "m-original",
            },
        )
    ]


def test_the_dlq_message_id_reaches_the_record_of_a_consumer_failure() -> None:
    # Given a message the consumer could not start, When handled
    catalog, alerts = Recorder(), Alerts()
    record, _ = handle(ORIGINAL, catalog, alerts)
    # Then the failure row and the alert carry the DLQ message's id (kills describe(body, None, ...))
    assert record.message_id == "m-dlq"
    assert catalog.calls[0]["message_id"] == "m-dlq" and alerts.published[0][1]["messageId"] == "m-dlq"
    assert catalog.calls[0]["dataset_id"] == DATASET and catalog.calls[0]["error_step"] == CONSUMER_STEP


def test_a_failure_recorded_before_is_not_alerted_again() -> None:
    catalog, alerts = Recorder(recorded=False), Alerts()
    _, new = handle(ENVELOPE, catalog, alerts)
    assert new is False and alerts.published == []
