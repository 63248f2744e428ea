"""Queue consumer logic: one message → one state machine execution, never two."""

from __future__ import annotations

from typing import Literal

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import CatalogNotFound
from fusou_compaction.pipeline.models import CompactionMessage, ExecutionInput, execution_name_for, run_id_for
from fusou_compaction.ports.messaging import ExecutionAlreadyStarted, Orchestrator


class UnknownDataset(Exception):
    """The message names a dataset the catalog does not know; it will end in the DLQ."""


def start_compaction(
    message: CompactionMessage, *, message_id: str, body: str, catalog: Catalog, orchestrator: Orchestrator
) -> Literal["started", "duplicate"]:
    try:
        catalog.get_dataset(message.dataset_id)
    except CatalogNotFound as exc:
        raise UnknownDataset(f"unknown dataset {message.dataset_id}") from exc
    execution = ExecutionInput(
        message=message,
        message_id=message_id,
        body=body,
        run_id=run_id_for(message_id),
        execution_name=execution_name_for(message.dataset_id, message_id),
    )
    try:
        orchestrator.start_execution(execution.execution_name, {"execution": execution.to_json_dict()})
    except ExecutionAlreadyStarted:
        return "duplicate"
    return "started"
