"""One synthesis of the whole app per test session (with cdk-nag), shared by every infra test."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "infra"))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

STAGE = "dev"


@dataclass
class Synthesized:
    template: dict[str, Any]
    metadata: dict[str, list[dict[str, Any]]]  # construct path -> metadata entries
    report: dict[str, Any]  # the validation report (cdk-nag and construct annotations)
    synth_error: str | None
    stack: Any  # fusou_infra.stack.CompactionStack
    nag: Any  # the cdk-nag pack registered on the app
    outdir: Path

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template["Resources"]  # type: ignore[no-any-return]

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.resources.items() if r["Type"] == kind}

    def props(self, logical_id: str) -> dict[str, Any]:
        return self.resources[logical_id]["Properties"]  # type: ignore[no-any-return]

    def logical_id(self, construct: Any) -> str:
        from fusou_infra.nag import logical_id

        return logical_id(construct)

    def function(self, key: str) -> dict[str, Any]:
        """Properties of the Lambda function with short name `key` (e.g. "consumer", "step-compact")."""
        name = f"{STAGE}-kc-compaction-{key}"
        matches = [
            r["Properties"]
            for r in self.of_type("AWS::Lambda::Function").values()
            if r["Properties"].get("FunctionName") == name
        ]
        assert len(matches) == 1, f"no single function named {name}"
        return matches[0]


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    from fusou_infra.app import build_app

    outdir = tmp_path_factory.mktemp("cdk-out")
    # assetsDir "" = package source, never build/: tests must not depend on (or copy) `make build`.
    app, stack, nag = build_app({"stage": STAGE, "assetsDir": ""}, outdir=str(outdir))
    error: str | None = None
    try:
        app.synth()
    except RuntimeError as exc:  # cdk-nag findings fail synthesis; the report says which
        error = str(exc)
    template = json.loads((outdir / f"{stack.artifact_id}.template.json").read_text())
    metadata = json.loads((outdir / f"{stack.artifact_id}.metadata.json").read_text())
    report_file = outdir / "validation-report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {"pluginReports": []}
    return Synthesized(template, metadata, report, error, stack, nag, outdir)


@pytest.fixture(scope="session")
def template(synth: Synthesized) -> Any:
    from aws_cdk.assertions import Template

    return Template.from_json(synth.template)
