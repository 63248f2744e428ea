"""The synthesized stack, stood up on the emulators: each function's environment exactly as the
template gives it, with every reference resolved to a resource created in moto's server from the
template's own properties, and secrets in their deployed shape.

Only two things are added to a function's environment, both what AWS itself provides: the
emulator's endpoint (FUSOU_AWS_ENDPOINT_URL, unset in AWS) and credentials. The catalog is
reached as deployed, over supabase-py's HTTP transport, here served by the local PostgREST
stand-in on a real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from fusou_compaction.local.aws import LOCAL_CREDENTIALS, LocalAws
from fusou_compaction.local.postgres import free_port

MOTO_ACCOUNT = "123456789012"  # moto's default account id


class Unresolved(LookupError):
    pass


@contextlib.contextmanager
def isolated_aws() -> Iterator[LocalAws]:
    """moto's server in a process of its own. The in-process servers of one test session share
    moto's backends (module-level state), so a queue another test created under the same name
    (the local stack's ``dev-kc-compaction-dlq``, other attributes) made CreateQueue fail here."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.05)
        for k, v in LOCAL_CREDENTIALS.items():
            os.environ.setdefault(k, v)
        yield LocalAws(port=port)  # an address only: the server is the process above
    finally:
        server.terminate()
        server.wait(timeout=10)


@dataclass
class DeployedStack:
    """moto resources for the template's resources, by logical id (what ``Ref`` gives)."""

    template: dict[str, Any]
    aws: LocalAws
    refs: dict[str, str] = field(default_factory=dict)
    arns: dict[str, str] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.aws.endpoint_url, region_name=self.aws.region)

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.template["Resources"].items() if r["Type"] == kind}

    # -- standing up -------------------------------------------------------------------------
    def create(self, secret_values: dict[str, dict[str, Any]]) -> DeployedStack:
        """Buckets, queues (DLQ first, redrive from the template), topics, secrets (values by the
        secret's Name: the operator's part) and state machines."""
        s3, sqs, sns, sm, sfn = (self.client(s) for s in ("s3", "sqs", "sns", "secretsmanager", "stepfunctions"))
        for lid, r in self.resources("AWS::S3::Bucket").items():
            name = self.resolve(r["Properties"].get("BucketName")) or f"deployed-{lid.lower()}"
            s3.create_bucket(Bucket=name)
            self.refs[lid] = name
        queues = self.resources("AWS::SQS::Queue")
        # Queues without a redrive policy (the DLQs) first: the others' policies name their ARNs.
        for lid, r in sorted(queues.items(), key=lambda kv: "RedrivePolicy" in kv[1]["Properties"]):
            props = r["Properties"]
            attributes = {
                k: str(self.resolve(props[k]))
                for k in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds")
                if k in props
            }
            if "RedrivePolicy" in props:
                attributes["RedrivePolicy"] = json.dumps(self.resolve(props["RedrivePolicy"]))
            url = sqs.create_queue(QueueName=self.resolve(props.get("QueueName")) or lid, Attributes=attributes)[
                "QueueUrl"
            ]
            self.refs[lid] = url
            self.arns[lid] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
        for lid, r in self.resources("AWS::SNS::Topic").items():
            self.refs[lid] = sns.create_topic(Name=self.resolve(r["Properties"].get("TopicName")) or lid)["TopicArn"]
        for lid, r in self.resources("AWS::SecretsManager::Secret").items():
            name = self.resolve(r["Properties"]["Name"])
            if name not in secret_values:
                raise Unresolved(f"no deployed value given for the secret {name}")
            self.refs[lid] = sm.create_secret(Name=name, SecretString=json.dumps(secret_values[name]))["ARN"]
        for lid, r in self.resources("AWS::StepFunctions::StateMachine").items():
            name = self.resolve(r["Properties"].get("StateMachineName")) or lid
            definition = {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}
            self.refs[lid] = sfn.create_state_machine(
                name=name, definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/sfn"
            )["stateMachineArn"]
        return self

    # -- references --------------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self._ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            lid, attr = value["Fn::GetAtt"]
            if attr == "Arn" and lid in self.arns:
                return self.arns[lid]
            raise Unresolved(f"GetAtt {lid}.{attr}")
        if set(value) == {"Fn::Join"}:
            sep, parts = value["Fn::Join"]
            return sep.join(str(self.resolve(p)) for p in parts)
        return {k: self.resolve(v) for k, v in value.items()}

    def _ref(self, ref: str) -> str:
        pseudo = {"AWS::Region": self.aws.region, "AWS::AccountId": MOTO_ACCOUNT, "AWS::Partition": "aws"}
        if ref in pseudo:
            return pseudo[ref]
        if ref in self.refs:
            return self.refs[ref]
        raise Unresolved(f"Ref {ref}: no emulated resource")

    def function(self, short: str, stage: str = "dev") -> dict[str, Any]:
        name = f"{stage}-kc-compaction-{short}"
        (fn,) = [
            r["Properties"]
            for r in self.resources("AWS::Lambda::Function").values()
            if r["Properties"].get("FunctionName") == name
        ]
        return fn  # type: ignore[no-any-return]

    def environment(self, short: str) -> dict[str, str]:
        """The function's environment as AWS would set it, plus the emulator's endpoint."""
        fn = self.function(short)
        env = {k: str(self.resolve(v)) for k, v in fn["Environment"]["Variables"].items()}
        return {
            **env,
            **LOCAL_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.aws.region,
            "AWS_LAMBDA_FUNCTION_NAME": fn["FunctionName"],
            "FUSOU_AWS_ENDPOINT_URL": self.aws.endpoint_url,
        }


@contextlib.contextmanager
def deployed_environment(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` holding exactly the function's FUSOU_* settings (no leftovers of the test
    process), settings and dependencies rebuilt from it, and both restored afterwards."""
    from fusou_compaction.handlers.deps import use_dependencies
    from fusou_compaction.settings import get_settings

    saved = dict(os.environ)
    try:
        for k in [k for k in os.environ if k.startswith(("FUSOU_", "POWERTOOLS_"))]:
            del os.environ[k]
        os.environ.update(env)
        get_settings.cache_clear()
        use_dependencies(None)
        yield
    finally:
        use_dependencies(None)
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
