"""The compaction pipeline: consumer → Step Functions (the one pipeline definition) → DLQ handler.

The state machine is rendered by ``fusou_compaction.pipeline.definition.to_asl``, the same
definition the local runner executes; only the function ARNs, the DLQ URL and the bucket's name
are CDK tokens.
"""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from fusou_compaction import keys
from fusou_compaction.pipeline.definition import MapOverBins, Pipeline, Task, build_pipeline, to_asl
from fusou_compaction.topology import QUEUES, state_machine_name
from fusou_infra import config
from fusou_infra.lambda_factory import FunctionFactory
from fusou_infra.nag import acknowledge, logical_id
from fusou_infra.queues import Queues
from fusou_infra.secrets import Secrets
from fusou_infra.storage import READ, WRITE, Storage


def task_timeouts(pipeline: Pipeline) -> dict[str, int]:
    """Each function's timeout is its state's TimeoutSeconds: Lambda never outlives the task."""
    out: dict[str, int] = {}
    for state in pipeline.states.values():
        task = state.iterator if isinstance(state, MapOverBins) else state
        if isinstance(task, Task):
            out[task.function] = max(out.get(task.function, 0), task.timeout_seconds)
    return out


class CompactionPipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: str,
        factory: FunctionFactory,
        queues: Queues,
        storage: Storage,
        secrets: Secrets,
        alerts: sns.ITopic,
        alerts_key: kms.IKey,
        map_max_concurrency: int,
        compaction_budget: int = config.DEFAULT_COMPACTION_BUDGET,
        compact_memory_mb: int = config.COMPACT_MEMORY_MB,
    ) -> None:
        super().__init__(scope, id)
        self.definition = build_pipeline(map_max_concurrency)
        timeouts = task_timeouts(self.definition)

        self.steps: dict[str, lambda_.Function] = {}
        for key, (handler, memory) in config.STEP_FUNCTIONS.items():
            self.steps[key] = factory.function(
                self,
                f"{''.join(p.title() for p in key.split('_'))}Fn",
                key=f"step-{key.replace('_', '-')}",
                handler=handler,
                asset="parquet",
                memory_mb=compact_memory_mb if key == "compact" else memory,
                timeout_seconds=timeouts[key],
                description=f"Compaction pipeline step: {key}",
                failures="Invoked synchronously by the state machine: its Retry and Catch handle a failure "
                "(RecordFailure, then the compaction DLQ)",
                # Arrow's system allocator returns memory between bins (bench/RESULTS.md: -70 MB);
                # it must be set before pyarrow loads, so it is the function's environment.
                environment={"ARROW_DEFAULT_MEMORY_POOL": "system"} if key == "compact" else None,
                # The global budget, enforced by Lambda itself: never more Compact invocations at
                # once, account-wide, and always that many available whatever else runs. The
                # consumer's admissions keep demand within it; what overshoots is throttled and the
                # state machine's throttle retrier waits it out.
                reserved_concurrency=compaction_budget if key == "compact" else None,
            )
            secrets.grant_catalog(self.steps[key])
        # Plans and manifests travel through plans/; Parquet is read and written under datasets/.
        storage.grant(self.steps["get_metadata"], config.PLANS_PREFIX, WRITE)
        storage.grant(self.steps["compact"], config.PLANS_PREFIX, READ + WRITE)
        storage.grant(self.steps["compact"], config.DATASETS_PREFIX, READ + WRITE)
        storage.grant(self.steps["update"], config.PLANS_PREFIX, READ)  # manifests and the Compact Map's export
        # A failed Compact Map's export holds the failed bin's own error (the Map's only says one failed)
        storage.grant(self.steps["record_failure"], config.PLANS_PREFIX, READ)

        self.log_group = logs.LogGroup(
            self,
            "ExecutionLogs",
            log_group_name=f"/aws/vendedlogs/states/{state_machine_name(stage)}",
            retention=config.LOG_RETENTION,
            removal_policy=RemovalPolicy.DESTROY,
        )
        asl = to_asl(
            self.definition,
            {k: fn.function_arn for k, fn in self.steps.items()},
            queues.dlq.queue_url,
            storage.bucket.bucket_name,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=state_machine_name(stage),
            state_machine_type=sfn.StateMachineType.STANDARD,  # exactly-once names: redelivery never runs twice
            # json.dumps, not Stack.to_json_string: that one drops nulls, and `"ResultPath": null` means
            # something in ASL. The only tokens are ARNs and a queue URL: nothing in them needs escaping.
            definition_body=sfn.DefinitionBody.from_string(json.dumps(asl)),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
        )
        role = self.state_machine.role
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[fn.function_arn for fn in self.steps.values()],
            )
        )
        queues.dlq.grant_send_messages(role)
        self._grant_distributed_map(role, stage, storage)
        acknowledge(
            self.state_machine.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5[Resource::*]",
            "Log delivery (logs:CreateLogDelivery and friends) and X-Ray actions support no resource-level "
            "permissions; Lambda invokes and the DLQ send are scoped to their ARNs",
        )

        self.consumer = factory.function(
            self,
            "ConsumerFn",
            key="consumer",
            handler=f"{config.HANDLERS}.consumer.handler",
            asset="light",
            memory_mb=config.LIGHT_MEMORY_MB,
            timeout_seconds=QUEUES.consumer_timeout_seconds,
            description="SQS compaction queue -> one Step Functions execution per message",
            failures="SQS event source: a failed message returns to the queue, which redrives it to the "
            "compaction DLQ after 3 receives",
            environment={"FUSOU_STATE_MACHINE_ARN": self.state_machine.state_machine_arn},
        )
        # Two mappings, one function: the main queue (manual, realtime, `aws sqs send-message`) and
        # the low-priority scheduled queue. Maximum concurrency bounds each mapping's batches in
        # flight, so a backlog of 100,000 deferred messages churns at a bounded rate.
        for queue, max_concurrency in (
            (queues.queue, QUEUES.consumer_max_concurrency),
            (queues.scheduled_queue, QUEUES.scheduled_consumer_max_concurrency),
        ):
            self.consumer.add_event_source(
                sources.SqsEventSource(
                    queue,
                    batch_size=QUEUES.consumer_batch_size,
                    max_batching_window=Duration.seconds(QUEUES.consumer_batching_window_seconds),
                    report_batch_item_failures=True,
                    max_concurrency=max_concurrency,
                )
            )
        # Refused messages wait as delayed copies in their priority's queue.
        queues.queue.grant_send_messages(self.consumer)
        queues.scheduled_queue.grant_send_messages(self.consumer)
        self.state_machine.grant_start_execution(self.consumer)
        secrets.grant_catalog(self.consumer)

        self.dlq_handler = factory.function(
            self,
            "DlqFn",
            key="dlq",
            handler=f"{config.HANDLERS}.dlq.handler",
            asset="light",
            memory_mb=config.LIGHT_MEMORY_MB,
            timeout_seconds=config.DLQ_HANDLER_TIMEOUT_SECONDS,
            description="DLQ -> record the failure in the catalog, metric, alert; always acknowledges",
            failures="SQS event source on the DLQ itself; a record it cannot store is logged whole and "
            "alarmed (DlqRecordErrors)",
            environment={"FUSOU_ALERT_TOPIC_ARN": alerts.topic_arn},
        )
        self.dlq_handler.add_event_source(
            sources.SqsEventSource(
                queues.dlq,
                batch_size=QUEUES.dlq_batch_size,
                max_batching_window=Duration.seconds(QUEUES.dlq_batching_window_seconds),
                report_batch_item_failures=True,
            )
        )
        # Publishing to the KMS-encrypted topic: exactly the two key actions SNS needs, on that key.
        self.dlq_handler.add_to_role_policy(iam.PolicyStatement(actions=["sns:Publish"], resources=[alerts.topic_arn]))
        self.dlq_handler.add_to_role_policy(
            iam.PolicyStatement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[alerts_key.key_arn])
        )
        secrets.grant_catalog(self.dlq_handler)

    def _grant_distributed_map(self, role: iam.IRole, stage: str, storage: Storage) -> None:
        """What the Compact Map needs, and no more: starting its child executions (executions of this
        very state machine, named by its name: its ARN would be a dependency cycle), watching and
        stopping them, reading the plan's items file and writing its results under the run's
        plans/<run>/map-results/ (multipart, as Step Functions writes large exports)."""
        name = state_machine_name(stage)
        stack = Stack.of(self)
        machine = stack.format_arn(
            service="states", resource="stateMachine", resource_name=name, arn_format=ArnFormat.COLON_RESOURCE_NAME
        )
        executions = stack.format_arn(
            service="states", resource="execution", resource_name=f"{name}/*", arn_format=ArnFormat.COLON_RESOURCE_NAME
        )
        role.add_to_principal_policy(iam.PolicyStatement(actions=["states:StartExecution"], resources=[machine]))
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["states:DescribeExecution", "states:StopExecution"], resources=[executions])
        )
        items = storage.bucket.arn_for_objects(f"{keys.PLANS_PREFIX}*/{keys.PLAN_ITEMS}")
        role.add_to_principal_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[items]))
        results = storage.bucket.arn_for_objects(f"{keys.PLANS_PREFIX}*/{keys.MAP_RESULTS}/*")
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"],
                resources=[results],
            )
        )
        policy = role.node.find_child("DefaultPolicy")
        bucket = logical_id(storage.bucket)
        for finding, reason in (
            (
                f"arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:{name}/*",
                "The Compact Map's child executions are named by Step Functions per Map Run; the grant is "
                "scoped to executions of this one state machine",
            ),
            (
                f"<{bucket}.Arn>/{keys.PLANS_PREFIX}*/{keys.PLAN_ITEMS}",
                "The plan's items file of any run (the run id is the wildcard, fusou_compaction.keys); read only",
            ),
            (
                f"<{bucket}.Arn>/{keys.PLANS_PREFIX}*/{keys.MAP_RESULTS}/*",
                "The Compact Map's export under any run's plan prefix (run and Map Run ids are the wildcards)",
            ),
        ):
            acknowledge(policy, f"AwsSolutions-IAM5[Resource::{finding}]", reason)

    @property
    def functions(self) -> list[lambda_.Function]:
        return [*self.steps.values(), self.consumer, self.dlq_handler]
