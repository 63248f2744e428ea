"""Step Functions adapter of the Orchestrator port."""

from __future__ import annotations

import json
from typing import Any

from fusou_compaction.ports.messaging import ExecutionAlreadyStarted


class StepFunctionsOrchestrator:
    def __init__(self, client: Any, state_machine_arn: str) -> None:
        self._sfn = client
        self._arn = state_machine_arn

    def start_execution(self, name: str, payload: dict[str, Any]) -> str:
        try:
            resp = self._sfn.start_execution(stateMachineArn=self._arn, name=name, input=json.dumps(payload))
        except self._sfn.exceptions.ExecutionAlreadyExists as exc:
            # Standard workflows dedupe by name for 90 days: a redelivered message lands here.
            raise ExecutionAlreadyStarted(name) from exc
        return str(resp["executionArn"])
