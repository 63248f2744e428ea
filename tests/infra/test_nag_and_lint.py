"""cdk-nag AwsSolutionsChecks with zero unacknowledged findings, acknowledgements scoped and explained;
cfn-lint without errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import lint
from cfnlint.config import ManualArgs

from tests.infra.conftest import Synthesized


def _violations(synth: Synthesized, plugin: str) -> list[tuple[str, str, str]]:
    return [
        (v["severity"], v["ruleName"], c["constructPath"])
        for p in synth.report["pluginReports"]
        if p["pluginName"] == plugin
        for v in p["violations"]
        for c in v["violatingConstructs"]
    ]


def test_aws_solutions_checks_validate_the_app_and_find_nothing_unacknowledged(synth: Synthesized) -> None:
    assert synth.nag is not None and synth.nag.read_pack_name == "AwsSolutions"
    assert synth.synth_error is None, _violations(synth, "AwsSolutions")
    assert _violations(synth, "AwsSolutions") == []


def test_aws_solutions_checks_fail_synthesis_on_a_finding(tmp_path: Path) -> None:
    # The control for the test above: in this environment, an unacknowledged finding fails synthesis
    # and is reported by rule and construct (a one-queue app synthesizes in a few seconds).
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Control")
    sqs.Queue(stack, "Plain")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    found = {
        (v["ruleName"], c["constructPath"])
        for p in report["pluginReports"]
        if p["pluginName"] == "AwsSolutions"
        for v in p["violations"]
        for c in v["violatingConstructs"]
    }
    assert ("AwsSolutions-SQS4", "Control/Plain/Resource") in found


def test_the_only_warning_is_the_unbuilt_assets_notice(synth: Synthesized) -> None:
    # Tests synthesize from the package source on purpose (no `make build`); nothing else may warn.
    warnings = [
        (path, e["data"])
        for path, entries in synth.metadata.items()
        for e in entries
        if e["type"] in {"aws:cdk:warning", "aws:cdk:error"}
    ]
    assert len(warnings) == 1 and "make build" in str(warnings[0][1]), warnings


def _acknowledgements(synth: Synthesized) -> list[tuple[str, str, str]]:
    out = []
    for path, entries in synth.metadata.items():
        for entry in entries:
            if entry["type"] == "aws:cdk:acknowledged-rules":
                out += [(path.lstrip("/"), rule, reason) for rule, reason in entry["data"].items()]
    return out


def test_each_acknowledgement_is_on_one_resource_with_a_reason(synth: Synthesized) -> None:
    acks = _acknowledgements(synth)
    assert acks, "expected the acknowledgements of fusou_infra to be recorded"
    resource_paths = [
        path.lstrip("/")
        for path, entries in synth.metadata.items()
        if any(e["type"] == "aws:cdk:logicalId" for e in entries)
    ]
    for path, rule, reason in acks:
        assert "AwsSolutions-" in rule, rule
        assert len(reason.split()) >= 6, (path, rule, reason)
        covered = [p for p in resource_paths if p == path or p.startswith(path + "/")]
        assert len(covered) == 1, (path, rule, covered)


def test_wildcard_acknowledgements_name_their_exact_finding(synth: Synthesized) -> None:
    # IAM5 is acknowledged per finding (Resource::..., Action::...), never for the whole rule.
    for path, rule, _ in _acknowledgements(synth):
        if "IAM5" in rule or "IAM4" in rule:
            assert rule.endswith("]") and "[" in rule, (path, rule)


def test_cfn_lint_finds_no_errors(synth: Synthesized) -> None:
    matches = lint(json.dumps(synth.template), config=ManualArgs(regions=["us-east-1"]))
    errors = [f"{m.rule.id} {m.message} at {'/'.join(map(str, m.path))}" for m in matches if m.rule.id.startswith("E")]
    assert errors == []


def _checkov_skips(resource: dict) -> dict[str, str]:  # type: ignore[type-arg]
    skips = resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    return {s["id"]: s["comment"] for s in skips}


def test_every_checkov_acknowledgement_has_a_reason(synth: Synthesized) -> None:
    acknowledged = 0
    for lid, resource in synth.resources.items():
        for check, reason in _checkov_skips(resource).items():
            assert check.startswith("CKV_AWS_") and len(reason) >= 40, (lid, check, reason)
            acknowledged += 1
    assert acknowledged >= 70  # make lint: checkov reports 0 failed, every finding skipped here


def test_each_function_says_where_its_failures_go_instead_of_a_lambda_dlq(synth: Synthesized) -> None:
    reasons = {
        r["Properties"].get("FunctionName", lid): _checkov_skips(r).get("CKV_AWS_116")
        for lid, r in synth.of_type("AWS::Lambda::Function").items()
    }
    assert all(reasons.values()), [name for name, reason in reasons.items() if not reason]
    assert "on-failure destination" in reasons["dev-kc-compaction-register"]  # type: ignore[operator]
    assert "Retry and Catch" in reasons["dev-kc-compaction-step-compact"]  # type: ignore[operator]
