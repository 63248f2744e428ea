"""The one stack: it only wires the constructs together."""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from fusou_compaction.topology import QUEUES
from fusou_infra import config
from fusou_infra.api import Api
from fusou_infra.lambda_factory import AssetSource, FunctionFactory
from fusou_infra.monitoring import Monitoring
from fusou_infra.pipeline import CompactionPipeline
from fusou_infra.queues import Queues
from fusou_infra.schedule import Schedule
from fusou_infra.secrets import Secrets
from fusou_infra.storage import Storage


class CompactionStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: str,
        assets: AssetSource,
        map_max_concurrency: int,
        compaction_budget: int = config.DEFAULT_COMPACTION_BUDGET,
        compact_memory_mb: int = config.COMPACT_MEMORY_MB,
        alert_email: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, id, **kwargs)  # type: ignore[arg-type]
        storage = Storage(self, "Storage", stage=stage)
        queues = Queues(self, "Queues", stage=stage)
        secrets = Secrets(self, "Secrets", stage=stage)
        monitoring = Monitoring(self, "Monitoring", stage=stage, alert_email=alert_email)
        # Every function's settings are FUSOU_<FIELD> of fusou_compaction.settings.Settings.
        factory = FunctionFactory(
            self,
            "Functions",
            stage=stage,
            assets=assets,
            environment={
                "FUSOU_STAGE": stage,
                "FUSOU_BUCKET": storage.bucket.bucket_name,
                "FUSOU_QUEUE_URL": queues.queue.queue_url,
                "FUSOU_SCHEDULED_QUEUE_URL": queues.scheduled_queue.queue_url,
                "FUSOU_COMPACTION_BUDGET": str(compaction_budget),
                "FUSOU_MAP_MAX_CONCURRENCY": str(map_max_concurrency),
                "FUSOU_DLQ_URL": queues.dlq.queue_url,
                "FUSOU_CATALOG_TRANSPORT": "supabase",
                "FUSOU_CATALOG_SECRET_ARN": secrets.catalog.secret_arn,
            },
        )
        pipeline = CompactionPipeline(
            self,
            "Pipeline",
            stage=stage,
            factory=factory,
            queues=queues,
            storage=storage,
            secrets=secrets,
            alerts=monitoring.topic,
            alerts_key=monitoring.key,
            map_max_concurrency=map_max_concurrency,
            compaction_budget=compaction_budget,
            compact_memory_mb=compact_memory_mb,
        )
        api = Api(self, "Api", stage=stage, factory=factory, storage=storage, queues=queues, secrets=secrets)
        schedule = Schedule(
            self, "Schedule", stage=stage, factory=factory, queues=queues, storage=storage, secrets=secrets
        )
        monitoring.watch(
            queues=queues,
            state_machine=pipeline.state_machine,
            step_functions=pipeline.steps,
            api=api.rest_api,
            functions=[*pipeline.functions, *api.functions, schedule.function],
            register=api.register,
        )

        self.storage, self.queues, self.secrets, self.monitoring = storage, queues, secrets, monitoring
        self.pipeline, self.api, self.schedule, self.factory = pipeline, api, schedule, factory

        for name, value, description in (
            ("ApiUrl", api.rest_api.url, "Base URL of the HTTPS API (routes under api/compaction/)"),
            ("QueueUrl", queues.queue.queue_url, "aws sqs send-message --queue-url <this>"),
            ("DlqUrl", queues.dlq.queue_url, f"DLQ (after {QUEUES.max_receive_count} receives)"),
            ("BucketName", storage.bucket.bucket_name, "Parquet fragments and compacted files"),
            ("StateMachineArn", pipeline.state_machine.state_machine_arn, "Compaction state machine"),
            ("CatalogSecretArn", secrets.catalog.secret_arn, "Fill supabase_url and supabase_service_key"),
            ("AuthSecretArn", secrets.auth.secret_arn, "Fill jwt_secret (or jwks_url); admin_token is generated"),
            ("AlertTopicArn", monitoring.topic.topic_arn, "Alarms and DLQ alerts; subscribe here"),
            ("DashboardName", monitoring.dashboard.dashboard_name, "CloudWatch dashboard"),
        ):
            CfnOutput(self, name, value=value, description=description)
