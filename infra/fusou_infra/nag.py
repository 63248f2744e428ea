"""cdk-nag 3.x acknowledgements: one rule (or one finding) on one construct, always with a reason."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
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
