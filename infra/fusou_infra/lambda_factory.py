"""One place for the Lambda defaults: runtime, ARM64, JSON logs, tracing, an explicit log group,
and a role of its own that starts empty (every permission is a grant)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import Annotations, Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from fusou_infra import config
from fusou_infra.assets import MARKER, AssetName, resolve_code_dir
from fusou_infra.nag import acknowledge, checkov_skip


@dataclass
class AssetSource:
    """Where each asset's code comes from: `make build` output, or the package source for synth only."""

    build_dir: Path | None
    require_built: bool = False
    _code: dict[AssetName, lambda_.Code] = field(default_factory=dict)
    _warned: bool = False

    def code(self, scope: Construct, name: AssetName) -> lambda_.Code:
        if name not in self._code:
            path, built = resolve_code_dir(name, self.build_dir, require_built=self.require_built)
            if not built and not self._warned:
                Annotations.of(Stack.of(scope)).add_warning_v2(
                    "fusou:AssetsNotBuilt",
                    "Lambda code is the package source without dependencies: run `make build` before deploying.",
                )
                self._warned = True
            # A built asset ships the bytecode `make build` compiled for the runtime (Lambda's code
            # folder is read-only: without it every cold start compiles every module it imports);
            # the package source must not ship the developer's own interpreter's caches.
            exclude = [MARKER] if built else ["**/__pycache__", "**/*.pyc", MARKER]
            self._code[name] = lambda_.Code.from_asset(str(path), exclude=exclude)
        return self._code[name]


class FunctionFactory(Construct):
    """Creates every function of the stack with the same defaults; callers add grants."""

    def __init__(
        self, scope: Construct, id: str, *, stage: str, assets: AssetSource, environment: dict[str, str]
    ) -> None:
        super().__init__(scope, id)
        self.stage = stage
        self.assets = assets
        self.environment = environment
        self.functions: dict[str, lambda_.Function] = {}
        self.asset_of: dict[str, AssetName] = {}

    def function(
        self,
        scope: Construct,
        id: str,
        *,
        key: str,
        handler: str,
        asset: AssetName,
        memory_mb: int,
        timeout_seconds: int,
        description: str,
        failures: str,
        environment: dict[str, str] | None = None,
        reserved_concurrency: int | None = None,
    ) -> lambda_.Function:
        """``failures``: where a failed invocation goes instead of a Lambda DLQ (checkov's
        CKV_AWS_116 is acknowledged with it)."""
        name = config.resource_name(self.stage, key)
        log_group = logs.LogGroup(
            scope,
            f"{id}Logs",
            log_group_name=f"/aws/lambda/{name}",
            retention=config.LOG_RETENTION,
            removal_policy=RemovalPolicy.DESTROY,
        )
        role = iam.Role(
            scope,
            f"{id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{name}: only what this function needs",
        )
        fn = lambda_.Function(
            scope,
            id,
            function_name=name,
            description=description,
            code=self.assets.code(scope, asset),
            handler=handler,
            runtime=config.LAMBDA_RUNTIME,
            architecture=config.LAMBDA_ARCHITECTURE,
            memory_size=memory_mb,
            timeout=Duration.seconds(timeout_seconds),
            reserved_concurrent_executions=reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=log_group,
            role=role,
            environment={
                **self.environment,
                "FUSOU_REGION": Aws.REGION,
                "POWERTOOLS_LOG_LEVEL": "INFO",
                **(environment or {}),
            },
        )
        log_group.grant_write(role)
        # Tracing adds xray:PutTraceSegments/PutTelemetryRecords, which take no resource ARN.
        acknowledge(
            self.default_policy(fn),
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level permissions; "
            "no other statement of this role uses a wildcard resource",
        )
        checkov_skip(fn, "CKV_AWS_116", failures)
        self.functions[key] = fn
        self.asset_of[key] = asset
        return fn

    @staticmethod
    def default_policy(fn: lambda_.Function) -> iam.Policy:
        role = fn.role
        assert role is not None
        policy = role.node.try_find_child("DefaultPolicy")
        if not isinstance(policy, iam.Policy):
            raise RuntimeError(f"{fn.node.path} has no default policy yet")
        return policy
