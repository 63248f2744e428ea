"""S3 event notifications → Lambda's asynchronous invocation, locally.

Deployed, the bucket notifies the register function of every ``staging/*.parquet`` object; Lambda
invokes it asynchronously, retries a failed invocation twice, then sends the event to the
function's on-failure destination (the register-retry queue) wrapped in Lambda's record. Locally
moto sends the same notifications to a local-only queue (moto cannot invoke our code), and this
thread turns each one into what Lambda would do: the same event (moto leaves out a few fields
Lambda's event has), the same retries (delays scaled down), the same record on the destination.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fusou_compaction.adapters.sqs import SqsQueue
from fusou_compaction.local.runner import LocalContext
from fusou_compaction.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import NotificationConfigurationTypeDef

NOTIFICATION_ID = "register-staged-uploads"


def notification_configuration(queue_arn: str, prefix: str) -> NotificationConfigurationTypeDef:
    """The deployed bucket's notification (infra: api.Api), pointed at a local queue."""
    return {
        "QueueConfigurations": [
            {
                "Id": NOTIFICATION_ID,
                "QueueArn": queue_arn,
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {
                    "Key": {
                        "FilterRules": [{"Name": "prefix", "Value": prefix}, {"Name": "suffix", "Value": ".parquet"}]
                    }
                },
            }
        ]
    }


def lambda_event(notification: dict[str, Any]) -> dict[str, Any]:
    """The event S3 gives Lambda for a notification moto sent to SQS."""
    records = json.loads(json.dumps(notification["Records"]))
    for r in records:
        r.setdefault("userIdentity", {"principalId": "AWS:local"})
        r.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
        r.setdefault("responseElements", {"x-amz-request-id": uuid.uuid4().hex[:16], "x-amz-id-2": "local"})
        r["s3"]["bucket"].setdefault("ownerIdentity", {"principalId": "local"})
    return {"Records": records}


def failed_invocation_record(event: dict[str, Any], exc: BaseException, attempts: int, function: str) -> str:
    """What Lambda writes to an asynchronous invocation's on-failure destination."""
    return json.dumps(
        {
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(),
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"arn:aws:lambda:local:000000000000:function:{function}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": []},
        }
    )


class S3EventInvoker(threading.Thread):
    def __init__(
        self,
        notifications: SqsQueue,
        handler: Callable[[dict[str, Any], Any], Any],
        on_failure: SqsQueue,
        *,
        function: str = "register",
        retries: int = 2,
        retry_delay_seconds: float = 0.5,
    ) -> None:
        super().__init__(name=f"{function}-s3-events", daemon=True)
        self.notifications = notifications
        self.handler = handler
        self.on_failure = on_failure
        self.function = function
        self.retries = retries
        self.retry_delay = retry_delay_seconds  # Lambda waits about 1 min, then 2 min
        self.stop_event = threading.Event()

    def _invoke(self, event: dict[str, Any]) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                self.handler(event, LocalContext(function_name=self.function))
                return
            except Exception as exc:
                if attempt > self.retries:
                    logger.warning(
                        f"{self.function}: asynchronous invocation failed {attempt} times; sent to its on-failure "
                        "destination",
                        exc_info=True,
                    )
                    self.on_failure.send(failed_invocation_record(event, exc, attempt, self.function))
                    return
                if self.stop_event.wait(self.retry_delay * 2 ** (attempt - 1)):
                    return

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                got = self.notifications.receive(10, wait_seconds=0)
                if not got:
                    self.stop_event.wait(0.1)
                    continue
                for m in got:
                    body = json.loads(m.body)
                    if "Records" in body:  # not s3:TestEvent, which S3 sends when the configuration is set
                        self._invoke(lambda_event(body))
                    self.notifications.delete(m.receipt_handle)
            except Exception:  # the stand-in must outlive any one bad notification
                logger.exception(f"{self.function}: S3 event glue error")
                time.sleep(0.5)

    def stop(self) -> None:
        self.stop_event.set()
