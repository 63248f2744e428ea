"""The Step Functions and SNS adapters against the AWS emulator (moto's server), over HTTP."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import boto3
import pytest

from fusou_compaction.adapters.alerts import SnsAlerts
from fusou_compaction.adapters.s3 import S3ObjectStore
from fusou_compaction.adapters.stepfunctions import StepFunctionsOrchestrator
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.local.aws import LocalAws
from fusou_compaction.logic.consumer import start_compaction
from fusou_compaction.pipeline.models import CompactionMessage, execution_name_for
from fusou_compaction.ports.messaging import ExecutionAlreadyStarted

from .conftest import seed_body, upload_fragments

ROLE = "arn:aws:iam::123456789012:role/fusou-compaction-pipeline"
PASS_THROUGH = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})


def client(local_aws: LocalAws, service: str) -> Any:
    return boto3.client(service, endpoint_url=local_aws.endpoint_url, region_name=local_aws.region)


@pytest.fixture
def state_machine(local_aws: LocalAws) -> tuple[Any, str]:
    sfn = client(local_aws, "stepfunctions")
    arn = sfn.create_state_machine(name=f"sm-{uuid4().hex[:12]}", definition=PASS_THROUGH, roleArn=ROLE)[
        "stateMachineArn"
    ]
    return sfn, arn


def test_a_name_used_by_a_closed_execution_raises_execution_already_started(state_machine: tuple[Any, str]) -> None:
    sfn, arn = state_machine
    orchestrator = StepFunctionsOrchestrator(sfn, arn)
    name = f"run-{uuid4()}"
    first = orchestrator.start_execution(name, {"execution": {"n": 1}})
    assert first.startswith("arn:") and first.endswith(name)
    assert json.loads(sfn.describe_execution(executionArn=first)["input"]) == {"execution": {"n": 1}}
    # While it runs, the same name and input is StartExecution's idempotent case: the same execution
    assert orchestrator.start_execution(name, {"execution": {"n": 1}}) == first
    # Once it is closed (or with another input), the name is taken: ExecutionAlreadyExists
    sfn.stop_execution(executionArn=first)
    with pytest.raises(ExecutionAlreadyStarted):
        orchestrator.start_execution(name, {"execution": {"n": 1}})
    with pytest.raises(ExecutionAlreadyStarted):
        orchestrator.start_execution(name, {"execution": {"n": 2}})


def test_a_redelivered_message_starts_one_execution_and_is_a_duplicate_once_it_ended(
    state_machine: tuple[Any, str], catalog: Catalog, store: S3ObjectStore
) -> None:
    # Given a dataset and the seed's message, delivered twice under one SQS message id
    sfn, arn = state_machine
    up = upload_fragments(catalog, store, tables=("battle",), fragments=1, rows=3)
    body, message_id = seed_body(up.dataset), str(uuid4())
    message = CompactionMessage.model_validate_json(body)
    orchestrator = StepFunctionsOrchestrator(sfn, arn)

    def deliver() -> str:
        return start_compaction(message, message_id=message_id, body=body, catalog=catalog, orchestrator=orchestrator)

    # When the first delivery starts the execution, which then ends, and the message comes again
    assert deliver() == "started"
    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    sfn.stop_execution(executionArn=execution["executionArn"])
    # Then the redelivery is a duplicate, and there is still one execution, named for the message
    assert deliver() == "duplicate"
    executions = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert [e["name"] for e in executions] == [execution_name_for(up.dataset, message_id)]


def test_an_alert_is_published_to_the_topic_and_received_by_a_subscriber(local_aws: LocalAws, catalog: Catalog) -> None:
    # Given a topic with an SQS queue subscribed (standing in for the operator's e-mail)
    sns, sqs = client(local_aws, "sns"), client(local_aws, "sqs")
    topic = sns.create_topic(Name=f"alerts-{uuid4().hex[:12]}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"alerts-{uuid4().hex[:12]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "false"})
    # When an alert is published as the DLQ logic publishes it
    dataset, message_id = uuid4(), str(uuid4())
    SnsAlerts(sns, topic).publish(
        "FUSOU compaction failed at Consumer",
        {"datasetId": dataset, "runId": None, "errorStep": "Consumer", "error": "boom", "messageId": message_id},
    )
    # Then it arrives once, with its subject, naming the dataset (UUIDs as strings) and the step
    got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert len(got) == 1
    envelope = json.loads(got[0]["Body"])
    assert envelope["Subject"] == "FUSOU compaction failed at Consumer"
    alert = json.loads(envelope["Message"])
    assert (alert["datasetId"], alert["messageId"], alert["errorStep"]) == (str(dataset), message_id, "Consumer")


def test_a_long_subject_is_cut_to_snss_100_characters(local_aws: LocalAws) -> None:
    sns = client(local_aws, "sns")
    topic = sns.create_topic(Name=f"alerts-{uuid4().hex[:12]}")["TopicArn"]
    # SNS refuses subjects over 100 characters: the adapter cuts them rather than lose the alert
    sqs = client(local_aws, "sqs")
    queue_url = sqs.create_queue(QueueName=f"alerts-{uuid4().hex[:12]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    SnsAlerts(sns, topic).publish("x" * 300, {"k": "v"})
    (got,) = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
    assert json.loads(got["Body"])["Subject"] == "x" * 100
