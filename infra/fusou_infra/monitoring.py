"""Alerts topic, alarms and the dashboard."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from fusou_compaction.observability import NAMESPACE, SERVICE
from fusou_infra import config
from fusou_infra.queues import Queues

FIVE_MINUTES = Duration.minutes(5)


def service_metric(name: str, stage: str, statistic: str = "Sum") -> cw.Metric:
    """A metric the functions emit with Powertools (EMF): namespace, `service` and `stage` (every
    function adds its stage, fusou_compaction.observability), so one stage's failures never move
    another stage's alarms."""
    return cw.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"service": SERVICE, "stage": stage},
        statistic=statistic,
        period=FIVE_MINUTES,
    )


class Monitoring(Construct):
    """Created first (functions need the topic), then told what to watch."""

    def __init__(self, scope: Construct, id: str, *, stage: str, alert_email: str | None = None) -> None:
        super().__init__(scope, id)
        self.stage = stage
        # Encrypts only alert messages in transit through the topic: nothing to keep after a teardown.
        self.key = kms.Key(
            self,
            "AlertsKey",
            description=f"{config.resource_name(stage, 'alerts')} topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        # CloudWatch alarms publish to an encrypted topic only if they may use its key.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )
        self.topic = sns.Topic(
            self, "Alerts", topic_name=config.resource_name(stage, "alerts"), master_key=self.key, enforce_ssl=True
        )
        # enforce_ssl gives the topic a policy of its own (a Deny without TLS), which replaces SNS's
        # default policy: without this statement CloudWatch may not publish, and alarms would
        # deploy cleanly and reach nobody. Only this account's alarms may publish.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarms",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )
        if alert_email:
            self.topic.add_subscription(subs.EmailSubscription(alert_email))
        self.alarms: dict[str, cw.Alarm] = {}

    def _alarm(self, id: str, what: str, metric: cw.IMetric, threshold: float, description: str) -> cw.Alarm:
        alarm = cw.Alarm(
            self,
            id,
            alarm_name=config.resource_name(self.stage, what),
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        self.alarms[what] = alarm
        return alarm

    def watch(
        self,
        *,
        queues: Queues,
        state_machine: sfn.StateMachine,
        step_functions: dict[str, lambda_.Function],
        api: apigw.RestApi,
        functions: list[lambda_.Function],
        register: lambda_.Function,
    ) -> None:
        dlq_visible = queues.dlq.metric_approximate_number_of_messages_visible(
            period=Duration.minutes(1), statistic="Maximum"
        )
        queue_age = queues.queue.metric_approximate_age_of_oldest_message(period=FIVE_MINUTES, statistic="Maximum")
        failed = state_machine.metric_failed(period=FIVE_MINUTES, statistic="Sum")
        api_5xx = api.metric_server_error(period=FIVE_MINUTES, statistic="Sum")

        self._alarm(
            "DlqNotEmpty",
            "dlq-not-empty",
            dlq_visible,
            1,
            "Messages wait on the compaction DLQ (the DLQ function is failing or disabled)",
        )
        self._alarm(
            "DlqReceived",
            "dlq-received",
            service_metric("DlqMessages", self.stage),
            1,
            "A compaction message reached the DLQ and was recorded (see dlq-status)",
        )
        self._alarm(
            "QueueAge",
            "queue-age",
            queue_age,
            config.QUEUE_AGE_ALARM_SECONDS,
            "The oldest compaction message waited over 15 minutes: the consumer is not consuming",
        )
        self._alarm(
            "FailedExecutions",
            "failed-executions",
            failed,
            1,
            "A compaction execution failed (RecordFailure sent it to the DLQ)",
        )
        self._alarm("Api5xx", "api-5xx", api_5xx, config.API_5XX_ALARM_COUNT, "The API answered 5xx")
        self._alarm(
            "DlqRecordErrors",
            "dlq-record-errors",
            service_metric("DlqRecordErrors", self.stage),
            1,
            "The DLQ function could not record a DLQ message in the catalog; it acknowledged it, so the "
            "message body is only in its log group (/aws/lambda/<stage>-kc-compaction-dlq): re-send it",
        )
        self._alarm(
            "RegisterErrors",
            "register-errors",
            register.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
            1,
            "Registering a presigned upload failed; Lambda retries, then the register-retry queue does",
        )
        self._alarm(
            "RegisterRetryExhausted",
            "register-retry-exhausted",
            queues.register_retry_dlq.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            1,
            "A presigned upload could not be registered for a day; its staged object expires 2 days after "
            "upload: fix the cause, then move the message back to the register-retry queue",
        )

        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=config.resource_name(self.stage, "overview"))
        q, d = queues.queue, queues.dlq
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Queue depth",
                width=8,
                left=[
                    q.metric_approximate_number_of_messages_visible(label="visible", period=FIVE_MINUTES),
                    q.metric_approximate_number_of_messages_not_visible(label="in flight", period=FIVE_MINUTES),
                ],
            ),
            cw.GraphWidget(title="Queue oldest message age (s)", width=8, left=[queue_age]),
            cw.GraphWidget(
                title="DLQ depth",
                width=8,
                left=[
                    d.metric_approximate_number_of_messages_visible(label="visible", period=FIVE_MINUTES),
                    service_metric("DlqMessages", self.stage).with_(label="recorded"),
                ],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Executions",
                width=12,
                left=[
                    state_machine.metric_started(period=FIVE_MINUTES, label="started"),
                    state_machine.metric_succeeded(period=FIVE_MINUTES, label="succeeded"),
                    failed.with_(label="failed"),
                    state_machine.metric_timed_out(period=FIVE_MINUTES, label="timed out"),
                ],
            ),
            cw.GraphWidget(
                title="Step durations (p90, ms)",
                width=12,
                left=[
                    fn.metric_duration(period=FIVE_MINUTES, statistic="p90", label=key)
                    for key, fn in step_functions.items()
                ],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Bytes compacted", width=8, left=[service_metric("BytesCompacted", self.stage)]),
            cw.GraphWidget(
                title="Files compacted",
                width=8,
                left=[
                    service_metric("FilesCompacted", self.stage).with_(label="files in"),
                    service_metric("FilesWritten", self.stage).with_(label="files out"),
                    service_metric("RowsCompacted", self.stage).with_(label="rows"),
                ],
            ),
            cw.GraphWidget(title="Runs failed", width=8, left=[service_metric("RunsFailed", self.stage)]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="API 4xx / 5xx",
                width=12,
                left=[
                    api.metric_client_error(period=FIVE_MINUTES, statistic="Sum", label="4xx"),
                    api_5xx.with_(label="5xx"),
                ],
            ),
            cw.GraphWidget(
                title="API latency (ms)",
                width=12,
                left=[
                    api.metric_latency(period=FIVE_MINUTES, statistic="p50", label="p50"),
                    api.metric_latency(period=FIVE_MINUTES, statistic="p99", label="p99"),
                ],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Lambda errors",
                width=12,
                left=[fn.metric_errors(period=FIVE_MINUTES, statistic="Sum", label=fn.node.id) for fn in functions],
            ),
            cw.GraphWidget(
                title="Lambda throttles",
                width=12,
                left=[fn.metric_throttles(period=FIVE_MINUTES, statistic="Sum", label=fn.node.id) for fn in functions],
            ),
        )
        self.dashboard.add_widgets(cw.AlarmStatusWidget(title="Alarms", width=24, alarms=list(self.alarms.values())))
