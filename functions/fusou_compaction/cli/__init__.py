"""Console entry point. Each command module registers itself on ``app`` when imported."""

from __future__ import annotations

from fusou_compaction.cli import compact  # noqa: F401
from fusou_compaction.cli import db, demo, dev, ops  # noqa: F401  (registers commands)
from fusou_compaction.cli.app import app


def main() -> None:
    app()
