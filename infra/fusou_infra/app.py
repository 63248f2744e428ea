"""Builds the CDK app from context: used by infra/app.py (`make synth`, the CDK CLI) and the tests."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from aws_cdk import App, Aspects, Validations
from cdk_nag import AwsSolutionsChecks, NagPack

from fusou_infra import config
from fusou_infra.assets import ROOT
from fusou_infra.lambda_factory import AssetSource
from fusou_infra.nag import CheckovAccepted
from fusou_infra.stack import CompactionStack


def cdk_json_context() -> dict[str, Any]:
    """cdk.json's context, for runs without the CDK CLI (which passes it itself)."""
    path = ROOT / "cdk.json"
    return dict(json.loads(path.read_text()).get("context", {})) if path.is_file() else {}


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in {"1", "true", "yes"}


def _compact_memory_mb(value: Any) -> int:
    low, high = config.COMPACT_MEMORY_RANGE_MB
    if value is None or value == "":
        return config.COMPACT_MEMORY_MB
    try:
        mb = int(value)
    except (TypeError, ValueError):
        mb = -1
    if not low <= mb <= high:
        raise ValueError(
            f"context compactMemoryMb={value!r}: give whole MB from {low} to {high} "
            "(1769 = one vCPU, 3538 = two; Lambda allocates CPU in proportion to memory)"
        )
    return mb


class BuiltApp(NamedTuple):
    app: App
    stack: CompactionStack
    nag: NagPack | None  # the cdk-nag pack that validates the app at synthesis


def build_app(context: Mapping[str, Any] | None = None, *, outdir: str | None = None) -> BuiltApp:
    """Context keys: stage (dev), assetsDir (build), requireBuiltAssets (false), mapMaxConcurrency,
    compactionBudget (100), compactMemoryMb (1769), alertEmail, nag (true). Context from the CLI or cdk.json wins over
    ``context``."""
    merged = {**cdk_json_context(), **(context or {})}
    app = App(context=merged, outdir=os.environ.get("CDK_OUTDIR") or outdir or str(ROOT / "cdk.out"))
    ctx = app.node.try_get_context
    stage = str(ctx("stage") or "dev")
    assets_dir = ctx("assetsDir")
    assets = AssetSource(
        build_dir=(ROOT / str(assets_dir)) if assets_dir else None,
        require_built=_flag(ctx("requireBuiltAssets")),
    )
    stack = CompactionStack(
        app,
        f"{stage}-kc-compaction",
        stage=stage,
        assets=assets,
        map_max_concurrency=int(ctx("mapMaxConcurrency") or config.DEFAULT_MAP_MAX_CONCURRENCY),
        compaction_budget=int(ctx("compactionBudget") or config.DEFAULT_COMPACTION_BUDGET),
        compact_memory_mb=_compact_memory_mb(ctx("compactMemoryMb")),
        alert_email=ctx("alertEmail") or None,
        description=f"FUSOU compaction ({stage}): API, SQS, Step Functions, S3; catalog in Supabase",
    )
    Aspects.of(stack).add(CheckovAccepted())
    nag = None
    if ctx("nag") is None or _flag(ctx("nag")):
        nag = AwsSolutionsChecks(app)
        Validations.of(app).add_plugins(nag)
    return BuiltApp(app, stack, nag)
