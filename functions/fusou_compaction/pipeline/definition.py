"""The one definition of the compaction state machine.

The CDK stack renders it to Amazon States Language and the local runner executes it; a test
checks that both agree. States, order, retries (backoff + jitter) and catches live only here.

Why Compact is a Distributed Map (issue 19, item 4): Step Functions fails a state whose input,
result or output is over 256 KB (States.DataLimitExceeded, which no States.ALL catcher catches)
and an execution whose history passes 25,000 events. An INLINE Map keeps every iteration's events
in the one execution (7 per bin) and gathers every bin's result into the state (~340 bytes each),
so a run of ~750 bins could never succeed. The Distributed Map reads its items (the plan's bins)
from S3, runs each bin as a child execution with a history of its own, and writes the results
to S3; the state only ever holds keys, so neither limit grows with the dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

# Lambda refused or dropped the invocation (throttled: the Compact function's reserved
# concurrency is the global budget; or Lambda's own hiccup). Nothing ran, so waiting is always safe:
# the first retrier of every task, patient enough (~14 min at most) that throttling never fails a run.
THROTTLE_ERRORS: tuple[str, ...] = (
    "Lambda.TooManyRequestsException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
)
# Failures worth retrying: the catalog or S3 were briefly unreachable, or the function died.
TRANSIENT_ERRORS: tuple[str, ...] = (
    "CatalogUnavailable",
    "ObjectStoreError",
    "Lambda.Unknown",
    "States.Timeout",
)


@dataclass(frozen=True)
class Retry:
    errors: tuple[str, ...]
    interval_seconds: int
    backoff_rate: float
    max_attempts: int
    max_delay_seconds: int
    jitter: Literal["FULL", "NONE"] = "FULL"

    def to_asl(self) -> dict[str, Any]:
        return {
            "ErrorEquals": list(self.errors),
            "IntervalSeconds": self.interval_seconds,
            "BackoffRate": self.backoff_rate,
            "MaxAttempts": self.max_attempts,
            "MaxDelaySeconds": self.max_delay_seconds,
            "JitterStrategy": self.jitter,
        }


THROTTLE_RETRY = Retry(THROTTLE_ERRORS, interval_seconds=2, backoff_rate=2.0, max_attempts=12, max_delay_seconds=120)
STEP_RETRY = Retry(TRANSIENT_ERRORS, interval_seconds=2, backoff_rate=2.0, max_attempts=3, max_delay_seconds=30)
COMPACT_RETRY = Retry(TRANSIENT_ERRORS, interval_seconds=5, backoff_rate=2.0, max_attempts=3, max_delay_seconds=60)
FAILURE_PATH_RETRY = Retry(("States.ALL",), interval_seconds=2, backoff_rate=2.0, max_attempts=5, max_delay_seconds=60)

FAILURE_STATE = "RecordFailure"


@dataclass(frozen=True)
class Task:
    name: str
    function: str  # key of the Lambda function (CDK) and of the local handler table
    result_path: str
    retry: Retry
    timeout_seconds: int
    next: str | None
    catch: bool = True  # failures go to RecordFailure with ResultPath $.failure.<name>
    throttle_retry: Retry | None = THROTTLE_RETRY

    @property
    def failure_path(self) -> str:
        return f"$.failure.{self.name}"

    @property
    def retries(self) -> tuple[Retry, ...]:
        """Retriers in ASL order: the first whose errors match decides, each counts its own attempts."""
        return (self.throttle_retry, self.retry) if self.throttle_retry is not None else (self.retry,)


@dataclass(frozen=True)
class MapOverBins:
    """A Map over the plan's bins, run by ``iterator`` (one Task) per bin.

    DISTRIBUTED (what the pipeline uses): the items are a JSON array in S3 at the key
    ``items_key_path`` names (ItemReader), each item runs as a child execution (STANDARD: a bin
    may retry for longer than an EXPRESS child's 5 minutes) and the results go to S3 under
    ``results_prefix_path`` (ResultWriter); the state gets ``{MapRunArn, ResultWriterDetails}``.
    Any failed child fails the Map Run (ToleratedFailurePercentage 0, as an INLINE Map fails on its
    first failed iteration), with States.ExceedToleratedFailureThreshold.
    INLINE: the items are in the state (``items_path``) and the results come back into it; kept so
    tests can show what the old design did at scale.
    """

    name: str
    item_selector: dict[str, str]
    max_concurrency: int
    iterator: Task
    result_path: str
    next: str
    mode: Literal["INLINE", "DISTRIBUTED"] = "DISTRIBUTED"
    items_path: str | None = None  # INLINE
    items_key_path: str | None = None  # DISTRIBUTED: the S3 key of the items (a JSON array)
    results_prefix_path: str | None = None  # DISTRIBUTED: the S3 prefix of the results
    tolerated_failure_percentage: float = 0

    @property
    def failure_path(self) -> str:
        return f"$.failure.{self.name}"


@dataclass(frozen=True)
class SkipChoice:
    name: str
    variable: str
    equals: str
    when_equal: str
    otherwise: str


@dataclass(frozen=True)
class SendToDlq:
    name: str
    message_path: str
    next: str
    retry: Retry = FAILURE_PATH_RETRY


@dataclass(frozen=True)
class Pipeline:
    start_at: str
    states: dict[str, Any] = field(default_factory=dict)

    def order(self) -> list[str]:
        return list(self.states)


def build_pipeline(map_max_concurrency: int = 8) -> Pipeline:
    states: dict[str, Any] = {}

    def add(state: Any) -> None:
        states[state.name] = state

    add(Task("Validate", "validate", "$.validate", STEP_RETRY, timeout_seconds=60, next="ShouldCompact"))
    add(SkipChoice("ShouldCompact", "$.validate.action", "skip", when_equal="Skipped", otherwise="GetMetadata"))
    add(Task("GetMetadata", "get_metadata", "$.plan", STEP_RETRY, timeout_seconds=120, next="Compact"))
    add(
        MapOverBins(
            name="Compact",
            mode="DISTRIBUTED",
            items_key_path="$.plan.itemsKey",
            results_prefix_path="$.plan.resultsPrefix",
            item_selector={
                "runId.$": "$.execution.runId",
                "datasetId.$": "$.execution.message.datasetId",
                "planKey.$": "$.plan.planKey",
                "bin.$": "$$.Map.Item.Value",
            },
            max_concurrency=map_max_concurrency,
            iterator=Task("CompactBin", "compact", "$", COMPACT_RETRY, timeout_seconds=900, next=None, catch=False),
            result_path="$.compact",  # {MapRunArn, ResultWriterDetails: {Bucket, Key}}: Update reads the rest
            next="Update",
        )
    )
    add(Task("Update", "update", "$.update", STEP_RETRY, timeout_seconds=120, next="Done"))
    # The failure path: never lose a failed message again.
    add(
        Task(
            FAILURE_STATE,
            "record_failure",
            "$.dlq",
            FAILURE_PATH_RETRY,
            timeout_seconds=60,
            next="SendToDlq",
            catch=False,
        )
    )
    add(SendToDlq("SendToDlq", message_path="$.dlq", next="Failed"))
    return Pipeline(start_at="Validate", states=states)


TERMINAL_SUCCEED = ("Skipped", "Done")
TERMINAL_FAIL = "Failed"


def to_asl(
    pipeline: Pipeline,
    function_arns: dict[str, str],
    dlq_url: str,
    bucket: str,
    *,
    comment: str = "FUSOU compaction",
) -> dict[str, Any]:
    """Amazon States Language for the pipeline, with each function key resolved to its ARN and the
    Distributed Map reading its items from and writing its results to ``bucket``."""

    def task(t: Task) -> dict[str, Any]:
        # The function's ARN as the resource: its return value is the result (no Payload wrapper),
        # as CDK's LambdaInvoke(payload_response_only=True) renders it.
        s: dict[str, Any] = {
            "Type": "Task",
            "Resource": function_arns[t.function],
            "TimeoutSeconds": t.timeout_seconds,
            "ResultPath": t.result_path,
            "Retry": [r.to_asl() for r in t.retries],
        }
        if t.catch:
            s["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": t.failure_path, "Next": FAILURE_STATE}]
        if t.next is None:
            s["End"] = True
        else:
            s["Next"] = t.next
        return s

    states: dict[str, Any] = {}
    for name, st in pipeline.states.items():
        if isinstance(st, Task):
            states[name] = task(st)
        elif isinstance(st, SkipChoice):
            states[name] = {
                "Type": "Choice",
                "Choices": [{"Variable": st.variable, "StringEquals": st.equals, "Next": st.when_equal}],
                "Default": st.otherwise,
            }
        elif isinstance(st, MapOverBins):
            states[name] = map_state(st, task, bucket)
        elif isinstance(st, SendToDlq):
            states[name] = {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage",
                "Parameters": {"QueueUrl": dlq_url, "MessageBody.$": st.message_path},
                "Retry": [st.retry.to_asl()],
                "ResultPath": None,
                "Next": st.next,
            }
    for name in TERMINAL_SUCCEED:
        states[name] = {"Type": "Succeed"}
    states[TERMINAL_FAIL] = {"Type": "Fail", "Error": "CompactionFailed", "Cause": "see RecordFailure and the DLQ"}
    return {"Comment": comment, "StartAt": pipeline.start_at, "States": states}


def map_state(st: MapOverBins, task: Callable[[Task], dict[str, Any]], bucket: str) -> dict[str, Any]:
    processor = {"StartAt": st.iterator.name, "States": {st.iterator.name: task(st.iterator)}}
    out: dict[str, Any] = {"Type": "Map"}
    if st.mode == "INLINE":
        out["ItemsPath"] = st.items_path
        out["ItemProcessor"] = {"ProcessorConfig": {"Mode": "INLINE"}, **processor}
    else:
        out["ItemReader"] = {
            "Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {"InputType": "JSON"},
            "Parameters": {"Bucket": bucket, "Key.$": st.items_key_path},
        }
        out["ItemProcessor"] = {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}, **processor}
        out["ToleratedFailurePercentage"] = st.tolerated_failure_percentage
        out["ResultWriter"] = {
            "Resource": "arn:aws:states:::s3:putObject",
            "Parameters": {"Bucket": bucket, "Prefix.$": st.results_prefix_path},
        }
    out.update(
        {
            "ItemSelector": st.item_selector,
            "MaxConcurrency": st.max_concurrency,
            "ResultPath": st.result_path,
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": st.failure_path, "Next": FAILURE_STATE}],
            "Next": st.next,
        }
    )
    return out
