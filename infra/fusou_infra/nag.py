"""cdk-nag 3.x acknowledgements: one rule (or one finding) on one construct, always with a reason."""

from __future__ import annotations

import jsii
from aws_cdk import Acknowledgment, CfnResource, IAspect, Stack, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    if not reason.strip():
        raise ValueError(f"acknowledging {rule} needs a reason")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))


def logical_id(construct: IConstruct) -> str:
    """The resolved logical id of a construct's CloudFormation resource, as cdk-nag prints it."""
    stack = Stack.of(construct)
    cfn = construct.node.default_child or construct
    return str(stack.resolve(stack.get_logical_id(cfn)))  # type: ignore[arg-type]


# -- checkov --------------------------------------------------------------------------------------
# checkov (make lint) reads CloudFormation metadata: Metadata.checkov.skip = [{id, comment}] on the
# resource it would flag. Findings accepted for every resource of a type are listed here once,
# with the reason; findings whose reason differs per resource are acknowledged where the resource
# is made (e.g. CKV_AWS_116 in each function's construct). A finding not acknowledged fails lint.
CHECKOV_ACCEPTED: dict[tuple[str, str], str] = {
    ("AWS::Lambda::Function", "CKV_AWS_117"): (
        "No VPC: the functions reach S3, SQS, Step Functions and Secrets Manager through AWS's endpoints "
        "and Supabase over TLS on the internet; a VPC would add a NAT gateway (~$32/month per AZ) and "
        "no control over who these functions can reach that IAM does not already give"
    ),
    ("AWS::Lambda::Function", "CKV_AWS_173"): (
        "The environment holds only names, URLs and ARNs (no secret: those are in Secrets Manager); "
        "Lambda encrypts it at rest with the AWS-managed key"
    ),
    ("AWS::Lambda::Function", "CKV_AWS_115"): (
        "Concurrency is bounded by what invokes each function: the SQS event sources (batch size and "
        "queue depth), the state machine's Map (MaxConcurrency), API Gateway's throttling; reserved "
        "concurrency per function would carve the account's pool without a global budget"
    ),
    ("AWS::Logs::LogGroup", "CKV_AWS_158"): (
        "Logs hold ids, keys and error messages, never credentials or users' rows (5xx details are "
        "logged, not returned); CloudWatch Logs encrypts them at rest; a CMK would add cost and a key "
        "policy to maintain for no change in who may read them (IAM decides)"
    ),
    ("AWS::SecretsManager::Secret", "CKV_AWS_149"): (
        "Encrypted with the aws/secretsmanager key; who may read each secret is decided by the "
        "functions' roles (asserted in tests/infra/test_lambdas.py), which a CMK would not change"
    ),
    ("AWS::SQS::Queue", "CKV_AWS_27"): (
        "SQS-managed server-side encryption (SqsManagedSseEnabled); the messages hold dataset ids and "
        "error text, no credentials; checkov only recognises a KMS key"
    ),
    ("AWS::ApiGateway::Method", "CKV_AWS_59"): (
        "The API authenticates every caller in the function (Supabase JWT for owners, X-Admin-Token "
        "for operators: tests/api/test_auth.py); API Gateway throttles per stage and per admin route"
    ),
    ("AWS::ApiGateway::Stage", "CKV_AWS_120"): (
        "No caching: responses depend on the caller and on state that changes with every upload and "
        "run (status, DLQ depth); a cache would serve stale or another caller's answers"
    ),
}


def checkov_skip(construct: IConstruct, check: str, reason: str) -> None:
    """Acknowledge one checkov finding on the construct's CloudFormation resource, with a reason."""
    if not reason.strip():
        raise ValueError(f"acknowledging {check} needs a reason")
    cfn = construct if isinstance(construct, CfnResource) else construct.node.default_child
    if not isinstance(cfn, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource to acknowledge {check} on")
    metadata = cfn.get_metadata("checkov") or {}
    skips = [s for s in metadata.get("skip", []) if s["id"] != check]
    cfn.add_metadata("checkov", {**metadata, "skip": [*skips, {"id": check, "comment": reason}]})


@jsii.implements(IAspect)
class CheckovAccepted:
    """Applies CHECKOV_ACCEPTED to every resource of the listed types."""

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, CfnResource):
            for (kind, check), reason in CHECKOV_ACCEPTED.items():
                if node.cfn_resource_type == kind:
                    checkov_skip(node, check, reason)
