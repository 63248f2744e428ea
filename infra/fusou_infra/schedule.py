"""EventBridge cron(0 2 * * ? *) → the scheduled function (stranded uploads, claim pending datasets,
housekeeping)."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from fusou_compaction.topology import SCHEDULE_CRON
from fusou_infra import config
from fusou_infra.lambda_factory import FunctionFactory
from fusou_infra.queues import Queues
from fusou_infra.secrets import Secrets
from fusou_infra.storage import DELETE, READ, Storage


class Schedule(Construct):
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
    ) -> None:
        super().__init__(scope, id)
        self.function = factory.function(
            self,
            "ScheduledFn",
            key="scheduled",
            handler=f"{config.HANDLERS}.scheduled.handler",
            asset="light",
            memory_mb=config.LIGHT_MEMORY_MB,
            timeout_seconds=config.SCHEDULED_TIMEOUT_SECONDS,
            description="Daily: re-send stranded uploads, enqueue pending datasets, sweep leases, delete "
            "replaced objects and orphans (touched datasets daily, the inventory report weekly)",
            failures="Invoked by EventBridge once a day; every run redoes all of the work (idempotent), and "
            "its errors are on the dashboard; a DLQ would hold only an empty scheduled event",
            environment={
                "FUSOU_REGISTER_RETRY_QUEUE_URL": queues.register_retry.queue_url,
                "FUSOU_INVENTORY_BUCKET": storage.inventory.bucket_name,
            },
        )
        queues.queue.grant_send_messages(self.function)
        queues.scheduled_queue.grant_send_messages(self.function)
        # A drain that outlasts the invocation continues in an asynchronous invocation of itself.
        # The ARN is built from the function's fixed name: a reference to the function itself would
        # make its own policy depend on it (a cycle).
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[
                    Stack.of(self).format_arn(
                        service="lambda",
                        resource="function",
                        resource_name=config.resource_name(stage, "scheduled"),
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        # Replaced objects past grace, orphans; an inventory's orphan is looked at (HEAD) before it goes.
        storage.grant(self.function, config.DATASETS_PREFIX, (*READ, *DELETE))
        storage.grant_inventory_read(self.function)
        # Presigned uploads whose S3 event was lost: listed under staging/ (ListBucket, granted above
        # for the whole bucket) and handed to the register function through its retry queue; the
        # register function reads, validates and registers them, as it does its S3 events.
        queues.register_retry.grant_send_messages(self.function)
        secrets.grant_catalog(self.function)
        self.rule = events.Rule(
            self,
            "Daily",
            rule_name=config.resource_name(stage, "daily"),
            description="Daily compaction at 02:00 UTC",
            schedule=events.Schedule.expression(SCHEDULE_CRON),
            targets=[
                targets.LambdaFunction(
                    self.function,
                    retry_attempts=2,
                    max_event_age=Duration.hours(1),
                )
            ],
        )
