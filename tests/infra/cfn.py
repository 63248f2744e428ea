"""Reading synthesized CloudFormation in tests."""

from __future__ import annotations

from typing import Any


def join_strings(value: Any) -> str:
    """A Fn::Join of literals and references, with each reference as <LogicalId>."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return str(sep).join(join_strings(p) for p in parts)
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return f"<{value['Fn::GetAtt'][0]}>"
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    raise AssertionError(f"unexpected intrinsic {value!r}")
