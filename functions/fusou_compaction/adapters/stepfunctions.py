"""Step Functions adapter of the Orchestrator port."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from fusou_compaction.ports.messaging import ExecutionAlreadyStarted, OrchestratorThrottled

# What StartExecution answers when the account's rate is exceeded (after boto3's own retries).
THROTTLING_CODES = frozenset({"ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"})


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
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in THROTTLING_CODES:
                raise OrchestratorThrottled(str(exc)) from exc
            raise
        return str(resp["executionArn"])
