"""The HTTPS API (REST API → one API function) and the register function for presigned uploads."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from constructs import Construct

from fusou_infra import config
from fusou_infra.lambda_factory import FunctionFactory
from fusou_infra.nag import acknowledge, checkov_skip
from fusou_infra.queues import Queues
from fusou_infra.secrets import Secrets
from fusou_infra.storage import DELETE, READ, WRITE, Storage

PARQUET_MEDIA_TYPES = ("application/vnd.apache.parquet", "application/octet-stream", "multipart/form-data")


@dataclass(frozen=True)
class Route:
    path: str  # under /api/compaction
    method: str
    admin_only: bool = False
    json_body: bool = False
    public: bool = False  # no caller identity: only the API's own description


# DESIGN's routes. Who may call is decided in the function (Supabase JWT, X-Admin-Token).
ROUTES = (
    Route("upload", "POST"),
    Route("upload-url", "POST", json_body=True),
    Route("sanitize-state", "POST", json_body=True),
    Route("trigger-scheduled", "POST", admin_only=True),
    Route("dlq-status", "GET", admin_only=True),
    Route("datasets/{dataset_id}", "GET"),
    Route("dlq-redrive", "POST", admin_only=True),
    Route("quarantine", "POST", admin_only=True, json_body=True),
    # The OpenAPI document the function serves (clients generate from it); it names no data.
    Route("openapi.json", "GET", public=True),
)

# API Gateway's own errors keep the service's error shape: {"error", "message", "details"}.
# messageString is already a quoted JSON string; validationErrorString is not escaped, so it stays out.
ERROR_TEMPLATE = '{"error": "%s", "message": $context.error.messageString, "details": null}'


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: str,
        factory: FunctionFactory,
        storage: Storage,
        queues: Queues,
        secrets: Secrets,
    ) -> None:
        super().__init__(scope, id)
        self.function = factory.function(
            self,
            "ApiFn",
            key="api",
            handler=f"{config.HANDLERS}.api.handler",
            asset="parquet",
            memory_mb=config.API_MEMORY_MB,
            timeout_seconds=config.API_TIMEOUT_SECONDS,
            description="HTTPS API: uploads, presigned URLs, triggers, status, DLQ status and redrive",
            failures="Invoked synchronously by API Gateway: a failure is the caller's 5xx response (alarmed)",
            environment={"FUSOU_AUTH_SECRET_ARN": secrets.auth.secret_arn},
        )
        fn = self.function
        storage.grant(fn, config.DATASETS_PREFIX, READ + WRITE)  # direct uploads, deduped by SHA-256
        storage.grant(fn, config.STAGING_PREFIX, WRITE)  # presigned PUTs are signed with this role
        queues.queue.grant_send_messages(fn)  # sanitize-state, trigger-scheduled, redrive
        queues.dlq.grant_consume_messages(fn)  # dlq-status (depth) and dlq-redrive (receive, delete)
        secrets.grant_catalog(fn)  # the catalog, and the Supabase URL: the tokens' issuer and JWKS
        secrets.grant_auth(fn)  # the only function that verifies callers
        # dlq-status reports the queue's oldest message age, which SQS publishes only to CloudWatch.
        # GetMetricStatistics has no resource-level permissions: "*" is the only resource it takes.
        metric_reader = iam.Policy(
            self,
            "ApiMetricsRead",
            statements=[iam.PolicyStatement(actions=["cloudwatch:GetMetricStatistics"], resources=["*"])],
        )
        fn.role.attach_inline_policy(metric_reader)  # type: ignore[union-attr]
        acknowledge(
            metric_reader,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:GetMetricStatistics supports no resource-level permission; it reads metrics only "
            "(the queue's ApproximateAgeOfOldestMessage for dlq-status)",
        )

        self.register = factory.function(
            self,
            "RegisterFn",
            key="register",
            handler=f"{config.HANDLERS}.register.handler",
            asset="parquet",
            memory_mb=config.REGISTER_MEMORY_MB,
            timeout_seconds=config.REGISTER_TIMEOUT_SECONDS,
            description="S3 ObjectCreated under staging/: validate and register a presigned upload",
            failures="Asynchronous: after 2 retries the event goes to the on-failure destination "
            "(register-retry queue, drained by this function; its DLQ is alarmed), which checkov does not read",
        )
        storage.grant(self.register, config.STAGING_PREFIX, READ + DELETE)
        storage.grant(self.register, config.DATASETS_PREFIX, READ + WRITE)
        queues.queue.grant_send_messages(self.register)
        secrets.grant_catalog(self.register)
        # A registration that fails after Lambda's retries is kept on a queue the same function
        # drains (handlers/register.py), never dropped: see Queues.register_retry.
        self.register.configure_async_invoke(
            retry_attempts=config.REGISTER_ASYNC_RETRIES,
            on_failure=destinations.SqsDestination(queues.register_retry),
        )
        self.register.add_event_source(
            sources.SqsEventSource(queues.register_retry, batch_size=1, report_batch_item_failures=True)
        )
        storage.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(self.register),
            # Only the uploads themselves: the upload tickets beside them end in .ticket.json.
            s3.NotificationKeyFilter(prefix=config.STAGING_PREFIX, suffix=".parquet"),
        )
        # CDK's own singleton function that configures bucket notifications (one per stack).
        notifications = next(
            c for c in Stack.of(self).node.children if c.node.id.startswith("BucketNotificationsHandler")
        )
        acknowledge(
            notifications.node.find_child("Role"),
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "CDK's bucket-notifications custom resource runs only at deploy time; its role is CDK's, "
            "with the AWS-managed basic execution policy for its logs",
        )
        checkov_skip(
            notifications,
            "CKV_AWS_116",
            "CDK's bucket-notifications custom resource, invoked by CloudFormation at deploy time: a "
            "failure fails the deployment, which rolls back",
        )

        api_name = config.resource_name(stage, "api")
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            log_group_name=f"/aws/apigateway/{api_name}/access",
            retention=config.LOG_RETENTION,
            removal_policy=RemovalPolicy.DESTROY,
        )
        admin_throttle = apigw.MethodDeploymentOptions(
            throttling_rate_limit=config.ADMIN_RATE_LIMIT,
            throttling_burst_limit=config.ADMIN_BURST_LIMIT,
        )
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=api_name,
            description="FUSOU compaction API",
            binary_media_types=list(PARQUET_MEDIA_TYPES),
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=stage,
                throttling_rate_limit=config.API_RATE_LIMIT,
                throttling_burst_limit=config.API_BURST_LIMIT,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigw.MethodLoggingLevel.INFO,
                data_trace_enabled=False,  # bodies carry tokens and Parquet: never log them
                metrics_enabled=True,
                tracing_enabled=True,
                method_options={f"/api/compaction/{r.path}/{r.method}": admin_throttle for r in ROUTES if r.admin_only},
            ),
        )
        api = self.rest_api
        acknowledge(
            api.node.find_child("CloudWatchRole"),
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account-level logging role; this AWS-managed policy is the documented one",
        )
        acknowledge(
            api.deployment_stage,
            "AwsSolutions-APIG3",
            "Throttled per stage and per admin route, callers authenticated in the function; a WAF web ACL "
            "can be attached per deployment when the API is exposed more widely",
        )
        self._gateway_responses(api)

        validator = api.add_request_validator(
            "Validator",
            request_validator_name="body-and-parameters",
            validate_request_body=True,
            validate_request_parameters=True,
        )
        json_object = api.add_model(
            "JsonObject",
            content_type="application/json",
            model_name="JsonObject",
            schema=apigw.JsonSchema(schema=apigw.JsonSchemaVersion.DRAFT4, type=apigw.JsonSchemaType.OBJECT),
        )
        integration = apigw.LambdaIntegration(fn, allow_test_invoke=False)
        root = api.root.add_resource("api").add_resource("compaction")
        self.methods: dict[str, apigw.Method] = {}
        for route in ROUTES:
            resource = root
            for part in route.path.split("/"):
                resource = resource.get_resource(part) or resource.add_resource(part)
            method = resource.add_method(
                route.method,
                integration,
                request_validator=validator,
                request_parameters={"method.request.path.dataset_id": True} if "{dataset_id}" in route.path else None,
                # Field-level checks belong to the function (422 with details); the gateway only
                # refuses a body that is not a JSON object (400), as the error contract says.
                request_models={"application/json": json_object} if route.json_body else None,
            )
            if route.public:
                reason = (
                    f"{route.method} /api/compaction/{route.path} is the API's OpenAPI description: "
                    "public on purpose, it reads no data and is throttled with the stage"
                )
            else:
                who = "X-Admin-Token (compared in constant time)" if route.admin_only else "the Supabase JWT"
                reason = (
                    f"{route.method} /api/compaction/{route.path} authenticates {who} in the function, "
                    "as the API contract requires (401/403 bodies in the service's error shape)"
                )
            cfn_method = method.node.default_child
            assert cfn_method is not None
            acknowledge(cfn_method, "AwsSolutions-APIG4", reason)
            acknowledge(cfn_method, "AwsSolutions-COG4", reason + "; users are Supabase's, not a Cognito pool's")
            self.methods[f"{route.method} /api/compaction/{route.path}"] = method

    @staticmethod
    def _gateway_responses(api: apigw.RestApi) -> None:
        for id, kind, code in (
            ("BadBody", apigw.ResponseType.BAD_REQUEST_BODY, "bad_request"),
            ("BadParameters", apigw.ResponseType.BAD_REQUEST_PARAMETERS, "bad_request"),
            ("Throttled", apigw.ResponseType.THROTTLED, "throttled"),
            ("Default4xx", apigw.ResponseType.DEFAULT_4_XX, "client_error"),
            ("Default5xx", apigw.ResponseType.DEFAULT_5_XX, "gateway_error"),
        ):
            api.add_gateway_response(id, type=kind, templates={"application/json": ERROR_TEMPLATE % code})

    @property
    def functions(self) -> list[lambda_.Function]:
        return [self.function, self.register]
